"""The evaluator registry, the data evaluators see, and bootstrap intervals.

In the manner of big_vision's `evaluators/common.from_config`: each metric
family is a small evaluator registered under a name, configured by that name,
and called the same way by the `evaluate` command line and by training.

  evs = from_names(["correspondence", "image_fsd"])
  record = evaluate(evs, context, samples)     # {"metrics", "intervals", "judges", ...}

An evaluator maps (Context, Samples) to named *statistics*: functions of a
vector of sample indices returning a float. Its value is the statistic of all
samples; its 95 % bootstrap interval is the 2.5 / 97.5 percentiles of the
statistic of `replicates` resamplings (with replacement) of the generated
samples against the fixed reference. One rule serves every metric: a mean of
per-sample scores, a ratio of sums, a Frechet distance of a resampled set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gcd_jax.data.features import LayoutClasses

# Bumped whenever an evaluator's numbers would change for the same samples and
# judges, so that cached sweep points computed by older code are recomputed.
VERSION = 5  # 5: intervals from replicates centred on the value

Statistic = Callable[[np.ndarray], float]


@dataclasses.dataclass
class Reference:
  """The evaluation split: N captions (one per image) and the real pairs they came with."""

  dataset: str
  split: str
  captions: list[str]
  images: np.ndarray  # [N, H, W, 3] uint8
  layouts: np.ndarray  # [N, H, W] class ids
  classes: LayoutClasses

  @property
  def synthetic(self) -> bool:
    """synthetic_scenes: captions parse exactly and the oracle judges images."""
    return self.dataset.split("/")[0] == "synthetic_scenes"


@dataclasses.dataclass
class Judges:
  """The networks that read generated samples; None where not available.

  segmenter: images -> layouts (`metrics.segmenters.Segmenter`), for every
    image-side metric; `segmenter_identity` names it in result caches.
  segnet_features, inception, clip: feature extractors (`metrics.fid.FeatureExtractor`)
    and a CLIP scorer; each carries an `identity`.
  cache_dir: where reference statistics are cached (None: not cached).
  """

  segmenter: Any = None
  segmenter_identity: str = ""
  segnet_features: Any = None
  inception: Any = None
  clip: Any = None
  cache_dir: Any = None


@dataclasses.dataclass
class Context:
  reference: Reference
  judges: Judges
  replicates: int = 200  # bootstrap resamplings (0: no intervals)
  seed: int = 0  # of the bootstrap


class Samples:
  """Generated samples: images [N, H, W, 3] uint8 and layouts [N, H, W] (or None,
  image-only models). The segmenter's reading of the images is computed once."""

  def __init__(self, images: np.ndarray, layouts: np.ndarray | None, judges: Judges):
    self.images = np.asarray(images)
    self.layouts = None if layouts is None else np.asarray(layouts)
    if self.layouts is not None and self.layouts.ndim == 4:
      self.layouts = self.layouts[..., 0]
    self._judges = judges
    self._image_layouts = None

  def __len__(self) -> int:
    return len(self.images)

  @property
  def image_layouts(self) -> np.ndarray:
    """The segmenter's layouts of the generated images, [N, H, W] int32."""
    if self._image_layouts is None:
      from gcd_jax.metrics import correspondence  # pylint: disable=g-import-not-at-top
      if self._judges.segmenter is None:
        raise ValueError("no segmenter: image-side metrics need --segmenter (or the oracle)")
      self._image_layouts = correspondence.layout_for_image_only(self.images, self._judges.segmenter)
    return self._image_layouts


class Evaluator:
  """One metric family. Subclasses set `name`, `keys` and `requires`, and define
  `statistics` (and `identity` when a judge network or rule determines the numbers).

  requires: any of "layout" (the model generates layouts), "segmenter",
  "segnet", "inception", "clip".
  """

  name: str = ""
  keys: tuple[str, ...] = ()
  requires: tuple[str, ...] = ()

  def missing(self, ctx: Context, has_layout: bool) -> list[str]:
    """What this evaluator needs and does not have."""
    have = {"layout": has_layout, "segmenter": ctx.judges.segmenter is not None,
            "segnet": ctx.judges.segnet_features is not None,
            "inception": ctx.judges.inception is not None, "clip": ctx.judges.clip is not None}
    return [r for r in self.requires if not have[r]]

  def identity(self, ctx: Context) -> str:
    """What determines this evaluator's numbers besides the samples (judges, rules)."""
    return ""

  def keys_for(self, ctx: Context) -> tuple[str, ...]:
    """The metric keys this evaluator writes on this reference."""
    return self.keys

  def statistics(self, ctx: Context, samples: Samples) -> dict[str, Statistic]:
    raise NotImplementedError


REGISTRY: dict[str, type[Evaluator]] = {}


def register(cls: type[Evaluator]) -> type[Evaluator]:
  if not cls.name or cls.name in REGISTRY:
    raise ValueError(f"evaluator {cls.__name__}: missing or duplicate name {cls.name!r}")
  REGISTRY[cls.name] = cls
  return cls


def from_names(names: Sequence[str]) -> list[Evaluator]:
  """Evaluators by registered name, in the given order."""
  # Importing the module registers the evaluators.
  from gcd_jax.evaluators import metrics  # pylint: disable=g-import-not-at-top,unused-import
  unknown = [n for n in names if n not in REGISTRY]
  if unknown:
    raise ValueError(f"unknown evaluator(s) {unknown}; known: {sorted(REGISTRY)}")
  return [REGISTRY[n]() for n in dict.fromkeys(names)]


def available(ctx: Context, has_layout: bool) -> list[str]:
  """Names of every registered evaluator whose requirements are met, in registry order."""
  from gcd_jax.evaluators import metrics  # pylint: disable=g-import-not-at-top,unused-import
  return [n for n, cls in REGISTRY.items() if not cls().missing(ctx, has_layout)]


def full_identity(ev: Evaluator, ctx: Context) -> str:
  """The cache identity of an evaluator's numbers: code version, judges, bootstrap."""
  return f"v{VERSION}|{ev.name}|{ev.identity(ctx)}|boot{ctx.replicates}s{ctx.seed}"


def bootstrap_replicates(stat: Statistic, n: int, replicates: int, seed: int) -> np.ndarray:
  """`stat` of `replicates` resamplings of n indices (with replacement): the finite values."""
  rng = np.random.default_rng(seed)
  values = np.array([stat(rng.integers(0, n, n)) for _ in range(replicates)], np.float64)
  return values[np.isfinite(values)]


def bootstrap_interval(stat: Statistic, n: int, replicates: int, seed: int,
                       centre_on: float | None = None) -> tuple[float, float]:
  """95 % percentile interval of `stat` over `replicates` resamplings of n indices.

  centre_on: shift the replicates by their bias (their mean minus this value, the
  statistic of all n) before taking the percentiles. Resampling with replacement
  duplicates samples, which inflates a Frechet or kernel distance by a roughly
  constant amount; the plain percentiles can then miss the value itself.
  """
  if replicates <= 0 or n < 2:
    return float("nan"), float("nan")
  values = bootstrap_replicates(stat, n, replicates, seed)
  if not values.size:
    return float("nan"), float("nan")
  if centre_on is not None:
    values = values - (values.mean() - centre_on)
  lo, hi = np.percentile(values, [2.5, 97.5])
  return float(lo), float(hi)


def evaluate(evaluators: Sequence[Evaluator], ctx: Context, samples: Samples,
             cached: dict | None = None, has_layout: bool | None = None) -> dict:
  """Runs evaluators on samples; returns {"metrics", "intervals", "judges", "computed"}
  ("computed": the names of the evaluators that ran, rather than being read back).

  `cached` is an earlier record for the same samples: an evaluator whose
  identity is unchanged and whose keys are all there is not run again, so a
  request for a new metric computes only that one. An evaluator whose
  requirements are missing raises ValueError naming them.
  """
  has_layout = samples.layouts is not None if has_layout is None else has_layout
  out = {"metrics": {}, "intervals": {}, "judges": {}, "computed": []}
  cached = cached or {}
  old_metrics, old_intervals = cached.get("metrics", {}), cached.get("intervals", {})
  n = len(samples)
  everything = np.arange(n)
  for ev in evaluators:
    missing = ev.missing(ctx, has_layout)
    if missing:
      raise ValueError(f"evaluator {ev.name!r} needs {', '.join(missing)}")
    identity = full_identity(ev, ctx)
    keys = ev.keys_for(ctx)
    if cached.get("judges", {}).get(ev.name) == identity and all(k in old_metrics for k in keys):
      for k in keys:
        out["metrics"][k] = old_metrics[k]
        if k in old_intervals:
          out["intervals"][k] = old_intervals[k]
    else:
      for k, stat in ev.statistics(ctx, samples).items():
        out["metrics"][k] = float(stat(everything))
        # Centred: resampling inflates the distances (fd_seg, FID, FSD), whose plain
        # percentile intervals can miss the value; for means the shift is about 0.
        out["intervals"][k] = list(bootstrap_interval(stat, n, ctx.replicates, ctx.seed,
                                                      centre_on=out["metrics"][k]))
      out["computed"].append(ev.name)
    out["judges"][ev.name] = identity
  return out
