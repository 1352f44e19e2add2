"""The registered evaluators (see `base.py` for the contract).

| name                    | keys                                                   | needs             |
| ----------------------- | ------------------------------------------------------ | ----------------- |
| `correspondence`        | semantic_recall, attribute_accuracy[_count, _position, _size, _variant] | segmenter |
| `layout_correspondence` | layout_semantic_recall, layout_attribute_accuracy[...]  | layout            |
| `image_fsd`             | image_fsd                                              | segmenter         |
| `fsd`                   | fsd                                                    | layout            |
| `miou`                  | miou                                                   | layout, segmenter |
| `fd_seg`                | fd_seg, kid_seg, kid_seg_std                           | segnet            |
| `fid`                   | fid, kid, kid_std                                      | inception         |
| `clip_score`            | clip_score                                             | clip              |

Text-image correspondence (`correspondence`) is read off the generated
*image* by the segmenter, for joint and image-only models alike; the joint
model's own layout is scored beside it (`layout_correspondence`, `fsd`, and
`miou`: generated layout against the segmenter's reading of the generated
image). Attribute accuracy exists where captions parse exactly
(synthetic_scenes). Every computation is a tested function of
`gcd_jax.metrics`; nothing here re-implements a metric.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from gcd_jax.evaluators import base
from gcd_jax.metrics import correspondence as corr
from gcd_jax.metrics import frechet
from gcd_jax.metrics import layout_metrics

if TYPE_CHECKING:
  import os

  from gcd_jax.metrics import fid

_ATTRIBUTE_KEYS = ("attribute_accuracy",) + tuple(f"attribute_accuracy_{a}" for a in corr.ATTRIBUTES)


def _nanmean(values: np.ndarray) -> float:
  values = values[~np.isnan(values)]
  return float(values.mean()) if values.size else float("nan")


def _named_fn(ref: base.Reference):
  if ref.synthetic:
    return corr.scenes_named_classes
  return functools.partial(corr.named_classes_by_name, classes=ref.classes)


def _correspondence_keys(ref: base.Reference, prefix: str) -> tuple[str, ...]:
  keys = ("semantic_recall",) + (_ATTRIBUTE_KEYS if ref.synthetic else ())
  return tuple(prefix + k for k in keys)


def correspondence_arrays(ref: base.Reference, layouts: np.ndarray, images: np.ndarray
                          ) -> dict[str, np.ndarray]:
  """Per sample, what the correspondence statistics are made of: "recall" [N]
  (NaN where the caption names no class) and, on synthetic_scenes,
  "attribute_correct" and "attribute_total" [N, 4] (`corr.attribute_counts`)."""
  arrays = {"recall": corr.per_sample_recall(ref.captions, layouts, _named_fn(ref),
                                             presence=corr.presence_rule(ref.dataset))}
  if ref.synthetic:
    arrays["attribute_correct"], arrays["attribute_total"] = corr.attribute_counts(
        ref.captions, layouts, images, corr.presence_rule(ref.dataset))
  return arrays


def correspondence_from_arrays(arrays: dict[str, np.ndarray], prefix: str = ""
                               ) -> dict[str, base.Statistic]:
  """The bootstrap statistics of `correspondence_arrays`."""
  recall = arrays["recall"]
  stats = {prefix + "semantic_recall": lambda idx: _nanmean(recall[idx])}
  if "attribute_correct" in arrays:
    correct, total = arrays["attribute_correct"], arrays["attribute_total"]

    def share(key):
      return lambda idx: corr.attribute_shares(correct[idx], total[idx])[key]

    stats[prefix + "attribute_accuracy"] = share("all")
    for a in corr.ATTRIBUTES:
      stats[f"{prefix}attribute_accuracy_{a}"] = share(a)
  return stats


def correspondence_statistics(ref: base.Reference, layouts: np.ndarray, images: np.ndarray,
                              prefix: str = ""
                              ) -> dict[str, base.Statistic]:
  """Semantic recall (and, on synthetic_scenes, attribute accuracy) of the
  captions against (layouts, images), as bootstrap statistics."""
  return correspondence_from_arrays(correspondence_arrays(ref, layouts, images), prefix)


@base.register
class Correspondence(base.Evaluator):
  """Text-image correspondence on the generated image, read by the segmenter."""

  name = "correspondence"
  requires = ("segmenter",)

  def keys_for(self, ctx: base.Context) -> tuple[str, ...]:
    return _correspondence_keys(ctx.reference, "")

  def identity(self, ctx: base.Context) -> str:
    return f"{ctx.judges.segmenter_identity}|{corr.presence_rule(ctx.reference.dataset).describe()}"

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    return correspondence_statistics(ctx.reference, samples.image_layouts, samples.images)


@base.register
class LayoutCorrespondence(base.Evaluator):
  """Text-layout correspondence of the joint model's own generated layout."""

  name = "layout_correspondence"
  requires = ("layout",)

  def keys_for(self, ctx: base.Context) -> tuple[str, ...]:
    return _correspondence_keys(ctx.reference, "layout_")

  def identity(self, ctx: base.Context) -> str:
    return corr.presence_rule(ctx.reference.dataset).describe()

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    return correspondence_statistics(ctx.reference, samples.layouts, samples.images, "layout_")


def fsd_statistic(ref: base.Reference, layouts: np.ndarray,
                  real_layouts: np.ndarray | None = None) -> base.Statistic:
  """FSD of the given layouts (resampled) against real layouts (default: the split's)."""
  num_classes, ignore = ref.classes.num_classes, ref.classes.ignore_id
  real_layouts = ref.layouts if real_layouts is None else real_layouts
  real = frechet.FrechetReference(layout_metrics.class_percentages(real_layouts, num_classes, ignore))
  gen = layout_metrics.class_percentages(layouts, num_classes, ignore)
  return lambda idx: real.distance(gen[idx])


@base.register
class ImageFSD(base.Evaluator):
  """FSD of the segmenter's layouts of the generated images against its layouts
  of the real images (comparable across arms; the segmenter's own errors
  cancel, so real images score about 0 whatever the segmenter)."""

  name = "image_fsd"
  keys = ("image_fsd",)
  requires = ("segmenter",)

  def identity(self, ctx: base.Context) -> str:
    return ctx.judges.segmenter_identity

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    real = base.Samples(ctx.reference.images, None, ctx.judges).image_layouts
    return {"image_fsd": fsd_statistic(ctx.reference, samples.image_layouts, real)}


@base.register
class FSD(base.Evaluator):
  """FSD of the generated layouts."""

  name = "fsd"
  keys = ("fsd",)
  requires = ("layout",)

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    return {"fsd": fsd_statistic(ctx.reference, samples.layouts)}


@base.register
class MIoU(base.Evaluator):
  """Generated layout vs the segmenter's reading of the generated image
  (`correspondence.image_layout_agreement`; ignore-id pixels left out)."""

  name = "miou"
  keys = ("miou",)
  requires = ("layout", "segmenter")

  def identity(self, ctx: base.Context) -> str:
    return ctx.judges.segmenter_identity

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    num_classes, ignore = ctx.reference.classes.num_classes, ctx.reference.classes.ignore_id
    layouts, seg = samples.layouts, samples.image_layouts
    if ignore is not None:  # as image_layout_agreement: ignored in either layout
      seg = np.where(layouts == ignore, ignore, seg)
    # Per image: true positives, target and prediction counts per class; their
    # sums over any subset give that subset's confusion-matrix IoU exactly.
    counts = np.zeros((len(layouts), 3, num_classes), np.int64)
    for i, (pred, target) in enumerate(zip(layouts, seg)):
      c = layout_metrics.confusion_matrix(pred, target, num_classes, ignore)
      counts[i] = np.diag(c), c.sum(1), c.sum(0)

    def stat(idx):
      tp, target, pred = counts[idx].sum(0)
      return layout_metrics.mean_present(layout_metrics.iou_from_counts(tp, target, pred, ignore))

    return {"miou": stat}


def kid_subset_size(n: int) -> int:
  """KID subsets: half the samples, at most 1000 (smaller than N, so the spread over subsets means something)."""
  return max(2, min(1000, n // 2))


def reference_features(extractor: fid.FeatureExtractor, ref: base.Reference,
                       cache_dir: str | os.PathLike | None) -> np.ndarray:
  """[N, D] `extractor` features of the reference images (cached in `cache_dir`)."""
  from gcd_jax.metrics import fid  # pylint: disable=g-import-not-at-top
  key = f"{ref.dataset}-{ref.split}-n{len(ref.images)}"
  if cache_dir is not None:
    return fid.reference_statistics(extractor, key, lambda: ref.images, cache_dir).features
  return fid.Reference.from_features(key, extractor.identity,
                                     fid.compute_features(extractor, ref.images)).features


def feature_statistics(extractor: fid.FeatureExtractor, ref: base.Reference, images: np.ndarray,
                       cache_dir: str | os.PathLike | None, prefix: tuple[str, str]
                       ) -> dict[str, base.Statistic]:
  """Frechet distance and KID (mean and spread over subsets) of `extractor` features."""
  from gcd_jax.metrics import fid  # pylint: disable=g-import-not-at-top
  return features_from_arrays(fid.compute_features(extractor, images),
                              reference_features(extractor, ref, cache_dir), prefix)


def features_from_arrays(generated: np.ndarray, real: np.ndarray, prefix: tuple[str, str]
                         ) -> dict[str, base.Statistic]:
  """`feature_statistics` of the features of the generated and the reference images."""
  gen = np.asarray(generated, np.float64)
  reference = frechet.FrechetReference(real)
  m = kid_subset_size(len(gen))
  everything = np.arange(len(gen))
  memo = {}

  def kid(idx, which):
    if len(idx) == len(gen) and np.array_equal(idx, everything):
      if "full" not in memo:
        memo["full"] = frechet.kernel_distance(gen, real, num_subsets=100, subset_size=m)
      return memo["full"][which]
    if which == 1:
      return float("nan")  # the spread over subsets has no bootstrap interval
    # A bootstrap replicate: its distinct samples (duplicates would leak k(x, x)
    # into the unbiased estimate), 10 subsets each to keep the intervals affordable.
    distinct = gen[np.unique(idx)]
    return frechet.kernel_distance(distinct, real, num_subsets=10,
                                   subset_size=min(m, len(distinct)))[0]

  fd_key, kid_key = prefix
  return {fd_key: lambda idx: reference.distance(gen[idx]),
          kid_key: lambda idx: kid(idx, 0),
          kid_key + "_std": lambda idx: kid(idx, 1)}


@base.register
class FDSeg(base.Evaluator):
  """Frechet distance and KID in the trained segmentation network's features:
  a domain image-fidelity metric that needs no Inception weights (not FID)."""

  name = "fd_seg"
  keys = ("fd_seg", "kid_seg", "kid_seg_std")
  requires = ("segnet",)

  def identity(self, ctx: base.Context) -> str:
    return ctx.judges.segnet_features.identity

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    return feature_statistics(ctx.judges.segnet_features, ctx.reference, samples.images,
                              ctx.judges.cache_dir, ("fd_seg", "kid_seg"))


@base.register
class FID(base.Evaluator):
  """FID and KID with the FID InceptionV3 weights."""

  name = "fid"
  keys = ("fid", "kid", "kid_std")
  requires = ("inception",)

  def identity(self, ctx: base.Context) -> str:
    return ctx.judges.inception.identity

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    return feature_statistics(ctx.judges.inception, ctx.reference, samples.images,
                              ctx.judges.cache_dir, ("fid", "kid"))


@base.register
class CLIPScore(base.Evaluator):
  """Mean raw CLIP cosine between generated images and their captions."""

  name = "clip_score"
  keys = ("clip_score",)
  requires = ("clip",)

  def identity(self, ctx: base.Context) -> str:
    return getattr(ctx.judges.clip, "identity", repr(ctx.judges.clip))

  def statistics(self, ctx: base.Context, samples: base.Samples) -> dict[str, base.Statistic]:
    scores = np.asarray(ctx.judges.clip.score(samples.images, ctx.reference.captions), np.float64)
    return {"clip_score": lambda idx: float(scores[idx].mean())}
