"""A super-resolution stage against bilinear upsampling, paired on the same inputs.

  python -m gcd_jax.experiments.sr_cascade --base=workdirs/shapes --sr=workdirs/shapes_sr \\
      --segnet=workdirs/segnet_64 --out=workdirs/sr_cascade --results=docs/results/sr_cascade \\
      [--num_samples=1000] [--guidance=2] [--levels=0,0.1,0.2] [--inputs=generated,real]

What an SR stage must beat is its own low-resolution input upsampled without a
model (image bilinear, layout nearest-neighbour). Two inputs, each against its
own upsampling:

  generated  the base stage's outputs for the first N test captions (guidance
             --guidance, the base config's sampler otherwise): the cascade. The
             two stages use evaluate's per-batch seeds, so these are the
             samples of `evaluate --sr_workdir` (and of `--sr_baseline=bilinear`).
  real       the first N test pairs at the SR size, brought down to the low size
             as in SR training (antialiased image, nearest-neighbour layout): the
             SR stage alone, without the base stage's errors. Their fidelity
             (fd_seg, image_fsd) is measured against the very test images they
             were made from: a reconstruction score, beside PSNR.

The base stage samples once; the baseline and every SR augmentation level
(--levels) read its stored outputs. Every output is scored at the SR size by
the same judges (the oracle's reading of the image for correspondence,
image_fsd and miou on synthetic_scenes; the --segnet features for fd_seg, but
not KID, whose bootstrap would take minutes per point), by how far the output
strays from its input (lowres_mae: the output brought down to the low size
against the input, in uint8 levels), and, for the real input, by its PSNR
against the true high-resolution images. Every SR point is compared with the
upsampling of its input: SR minus bilinear for each metric, with a paired 95 % bootstrap interval over captions (one index
vector per replicate for all points; the replicates of every point are centred
on its value, because resampling inflates distances between feature sets; as
the paper-claim report). With --base_segnet (a segnet at the base size) the
base outputs are also scored at their own size, by the judges of that size.

Each point's samples are kept in --out with the key of everything that makes
them, so a rerun samples only what is missing. --results receives
sr_cascade.json (every number) and sr_cascade.md (the tables).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
import zipfile
from typing import Sequence

from absl import flags
import numpy as np

from gcd_jax import cli
from gcd_jax import fileio

PROG = "python -m gcd_jax.experiments.sr_cascade"
INPUTS = ("generated", "real")
# The table's columns, in this order where present (higher is better unless lower).
TABLE_KEYS = ("semantic_recall", "attribute_accuracy", "fd_seg", "image_fsd", "miou",
              "layout_semantic_recall", "lowres_mae", "psnr")
LOWER_IS_BETTER = ("fd_seg", "kid_seg", "image_fsd", "fsd", "fid", "kid", "lowres_mae")


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("base", None, "The base stage's workdir.", required=True, flag_values=fv)
  flags.DEFINE_string("sr", None, "The SR stage's workdir.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "Where the samples of every point are kept (resumable).",
                      required=True, flag_values=fv)
  flags.DEFINE_string("results", None, "Where sr_cascade.json and sr_cascade.md are written "
                      "(default: --out).", flag_values=fv)
  flags.DEFINE_integer("num_samples", 1000, "Test captions / pairs (the first N).", lower_bound=2,
                       flag_values=fv)
  flags.DEFINE_float("guidance", 2.0, "The base stage's guidance (image and layout).",
                     lower_bound=0.0, flag_values=fv)
  flags.DEFINE_integer("steps", None, "The base stage's sampling steps (default: its config's).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("sr_steps", None, "The SR stage's sampling steps (default: its config's).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_list("levels", ["0.2"], "The SR stage's augmentation levels of its input, in [0, 1].",
                    flag_values=fv)
  flags.DEFINE_list("inputs", list(INPUTS), f"Which inputs: {', '.join(INPUTS)}.", flag_values=fv)
  flags.DEFINE_string("segnet", None, "A segnet at the SR size (fd_seg).", flag_values=fv)
  flags.DEFINE_string("base_segnet", None, "A segnet at the base size: also score the base "
                      "outputs at their own size.", flag_values=fv)
  flags.DEFINE_list("metrics", None, "Evaluators (default: every one whose judges are available).",
                    flag_values=fv)
  flags.DEFINE_integer("batch_size", 50, "Samples per compiled call.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Sampling seed (evaluate's --seed).", flag_values=fv)
  flags.DEFINE_integer("bootstrap", 1000, "Bootstrap replicates (each recomputes every metric of "
                       "every point).", lower_bound=10, flag_values=fv)
  flags.DEFINE_integer("step", None, "The base stage's checkpoint step (default: the latest).",
                       flag_values=fv)
  flags.DEFINE_integer("sr_step", None, "The SR stage's checkpoint step (default: the latest).",
                       flag_values=fv)


def _levels(args) -> list[float]:
  try:
    levels = [float(x) for x in args.levels if x.strip()]
  except ValueError:
    raise cli.InputError(f"--levels={','.join(args.levels)}: expected numbers in [0, 1]") from None
  bad = [x for x in levels if not 0.0 <= x <= 1.0]
  if not levels or bad:
    raise cli.InputError(f"--levels={','.join(args.levels)}: expected numbers in [0, 1]")
  return list(dict.fromkeys(levels))


def _layouts(layouts: np.ndarray) -> np.ndarray:
  """Class ids in the smallest dtype that holds them (as evaluators.suite.write_samples)."""
  return layouts.astype(np.uint8 if layouts.max(initial=0) < 256 else np.int32)


class Study:
  """The two stages, the reference at the SR size, its judges, and the store of the points."""

  def __init__(self, args):
    from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
    from gcd_jax import sampling  # pylint: disable=g-import-not-at-top
    from gcd_jax.evaluators import base, suite  # pylint: disable=g-import-not-at-top

    self.args = args
    self.levels = _levels(args)
    unknown = sorted(set(args.inputs) - set(INPUTS))
    if unknown or not args.inputs:
      raise cli.InputError(f"--inputs={','.join(args.inputs)}: expected some of {', '.join(INPUTS)}")
    if args.base_segnet and "generated" not in args.inputs:
      raise cli.InputError("--base_segnet scores the base stage's outputs: it needs "
                           "'generated' in --inputs")
    self.cascade = run_lib.Cascade(run_lib.load(args.base, step=args.step),
                                   run_lib.load(args.sr, step=args.sr_step))
    self.lowres_cfg = self.cascade.lowres
    b, s = self.cascade.base, self.cascade.sr
    trained = s.config.lowres.max_level
    if any(x > trained for x in self.levels):
      print(f"Warning: --levels={','.join(f'{x:g}' for x in self.levels)}: {args.sr} trained on "
            f"augmentation levels below {trained:g} only", file=sys.stderr)
    base_over = {"guidance_image": args.guidance, "guidance_layout": args.guidance}
    if args.steps:
      base_over["steps"] = args.steps
    self.base_cfg = sampling.SamplerConfig.from_config(b.config.sample, **base_over)
    self.sr_over = {"steps": args.sr_steps} if args.sr_steps else {}
    c = s.config
    self.size = (c.data.height, c.data.width)
    self.reference = suite.load_reference(s.dataset, c.data.eval_split, args.num_samples, self.size,
                                          c.data.data_dir or None, args.batch_size)
    self.out = fileio.as_path(args.out)
    judges = suite.make_judges(self.reference, segnet=args.segnet,
                               cache_dir=self.out / "reference")
    self.context = base.Context(self.reference, judges, replicates=args.bootstrap, seed=0)
    names = ([n.strip() for n in args.metrics if n.strip()] if args.metrics
             else base.available(self.context, s.has_layout))
    self.evaluators = base.from_names(names)
    for ev in self.evaluators:
      missing = ev.missing(self.context, s.has_layout)
      if missing:
        raise cli.InputError(f"--metrics {ev.name}: needs {', '.join(missing)}")
    self.common = {"num_samples": args.num_samples, "seed": args.seed,
                   "batch_size": args.batch_size, "dataset": s.dataset,
                   "split": c.data.eval_split, "data_dir": str(c.data.data_dir or "")}
    self.seconds: dict[str, float] = {}

  def sr_sampler(self, level: float):
    from gcd_jax import sampling  # pylint: disable=g-import-not-at-top
    return sampling.SamplerConfig.from_config(self.cascade.sr.config.sample, lowres_level=level,
                                              **self.sr_over)

  # --- the store ----------------------------------------------------------------

  def _stored(self, name: str, key: dict, make) -> dict[str, np.ndarray]:
    """The arrays of point `name` under `key`: read from --out, else made and kept.

    The file is named by a digest of the key (as evaluate's points), so a file
    is only ever read back for the key it was made for.
    """
    key = json.loads(json.dumps(key))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path, meta = self.out / f"{name}_{digest}.npz", self.out / f"{name}_{digest}.json"
    if path.is_file() and meta.is_file():
      try:
        record = json.loads(meta.read_text())
        if record.get("key") == key:
          with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
          self.seconds[name] = record.get("seconds")
          return arrays
      except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    t = time.time()
    arrays = make()
    self.seconds[name] = time.time() - t
    fileio.atomic_write_npz(path, arrays)
    fileio.atomic_write_text(meta, json.dumps({"key": key, "seconds": self.seconds[name]}, indent=1))
    print(f"{name}: {self.seconds[name]:.0f} s", file=sys.stderr)
    return arrays

  def _batches(self):
    from gcd_jax import sampling  # pylint: disable=g-import-not-at-top
    return sampling.padded_batches(len(self.reference.captions), self.args.batch_size)

  def _batch_seed(self, start: int) -> int:
    from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
    return suite.batch_seed(self.args.seed, start)  # as evaluate

  # --- inputs -------------------------------------------------------------------

  def base_key(self) -> dict:
    from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
    b = self.cascade.base
    return {**self.common, "checkpoint": str(b.workdir), "step": b.step,
            "weights": b.weights_digest, "sampler": self.base_cfg.record(sr=False),
            "compute": suite.compute_identity(b.model.config)}

  def generated_input(self) -> dict[str, np.ndarray]:
    """The base stage's outputs: image [N, h, w, 3] float32 in [-1, 1], layout [N, h, w] int32."""
    def make():
      b, caps, n = self.cascade.base, self.reference.captions, len(self.reference.captions)
      parts: dict[str, list] = {}
      for start, stop, index in self._batches():
        out = b.sample([caps[i] for i in index], seed=self._batch_seed(start), cfg=self.base_cfg)
        for k in ("image", "layout"):
          if k in out:
            parts.setdefault(k, []).append(np.asarray(out[k])[: stop - start])
      return {k: np.concatenate(v)[:n] for k, v in parts.items()}
    arrays = self._stored("input_generated", self.base_key(), make)
    return {k: arrays[k].astype(np.float32 if k == "image" else np.int32) for k in arrays}

  def real_input(self) -> dict[str, np.ndarray]:
    """The reference brought down to the low size as in SR training."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    from gcd_jax.diffusion import lowres  # pylint: disable=g-import-not-at-top
    ref = pipeline.to_model_dtypes({"image": self.reference.images,
                                    "layout": self.reference.layouts})
    out = {"image": np.asarray(lowres.downsample_image(self.lowres_cfg, jnp.asarray(ref["image"])),
                               np.float32)}
    if self.cascade.sr.has_layout:
      out["layout"] = np.asarray(lowres.downsample_layout(self.lowres_cfg,
                                                          jnp.asarray(ref["layout"])), np.int32)
    return out

  def input_key(self, name: str) -> dict:
    if name == "generated":
      return {"generated": self.base_key()}
    return {"real": {k: self.common[k] for k in ("dataset", "split", "num_samples", "data_dir")},
            "lowres": self.lowres_cfg.describe()}

  # --- outputs ------------------------------------------------------------------

  def upsampled(self, name: str, low: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`low` upsampled to the SR size without a model (run.Cascade.upsample)."""
    from gcd_jax import visualize  # pylint: disable=g-import-not-at-top

    def make():
      up = self.cascade.upsample(low)
      out = {"images": visualize.to_uint8(up["image"])}
      if "layout" in up:
        out["layouts"] = _layouts(up["layout"])
      return out
    key = {"input": self.input_key(name), "upsampling": "bilinear image, nearest-neighbour layout",
           "size": list(self.size)}
    return self._stored(f"{name}_bilinear", key, make)

  def super_resolved(self, name: str, low: dict[str, np.ndarray], level: float
                     ) -> dict[str, np.ndarray]:
    """The SR stage on `low` at augmentation `level`, with evaluate's per-batch seeds."""
    from gcd_jax import visualize  # pylint: disable=g-import-not-at-top
    from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
    s, cfg = self.cascade.sr, self.sr_sampler(level)

    def make():
      caps, n = self.reference.captions, len(self.reference.captions)
      images, layouts = [], []
      for start, stop, index in self._batches():
        out = s.sample([caps[i] for i in index], seed=self._batch_seed(start), cfg=cfg,
                       lowres={k: v[index] for k, v in low.items()})
        images.append(visualize.to_uint8(out["image"])[: stop - start])
        if out.get("layout") is not None:
          layouts.append(np.asarray(out["layout"])[: stop - start])
      arrays = {"images": np.concatenate(images)[:n]}
      if layouts:
        arrays["layouts"] = _layouts(np.concatenate(layouts)[:n])
      return arrays
    key = {"input": self.input_key(name), "checkpoint": str(s.workdir), "step": s.step,
           "weights": s.weights_digest, "sampler": cfg.record(sr=True),
           "compute": suite.compute_identity(s.model.config),
           **self.common}
    return self._stored(f"{name}_sr_level{level:g}", key, make)

  # --- scores -------------------------------------------------------------------

  def statistics(self, arrays: dict[str, np.ndarray], low: dict[str, np.ndarray],
                 truth: np.ndarray | None = None) -> dict:
    """The statistics (functions of sample indices) of these outputs: the evaluators',
    and two of the pixels.

    lowres_mae  mean |down(output) - input| per pixel and channel, in uint8 levels,
                with the stage's own downsampling: how far the output strays from
                the low-res input it was given (an SR stage at augmentation level 0
                should keep it; bilinear upsampling keeps it up to the round trip).
    psnr        with `truth` (the real high-resolution images of a real input): the
                mean over samples of 10 log10(255^2 / MSE) against them.
    """
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    from gcd_jax.diffusion import lowres  # pylint: disable=g-import-not-at-top
    stats = evaluator_statistics(self.evaluators, self.context, arrays["images"],
                                 arrays.get("layouts"), self.cascade.sr.has_layout)
    out = arrays["images"].astype(np.float32)
    down = np.asarray(lowres.downsample_image(self.lowres_cfg, jnp.asarray(out)), np.float64)
    mae = np.abs(down - (low["image"].astype(np.float64) + 1.0) * 127.5).mean(axis=(1, 2, 3))
    stats["lowres_mae"] = lambda idx: float(mae[idx].mean())
    if truth is not None:
      mse = ((out.astype(np.float64) - truth.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
      psnr = 10.0 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
      stats["psnr"] = lambda idx: float(psnr[idx].mean())
    return stats


# Not scored here: a spread over subsets has no interval of its own (the `_std`
# keys), and a KID bootstrap replicate recomputes 10 kernel estimates (minutes
# per point at N = 1000); fd_seg is the distance between feature sets here.
_LEFT_OUT = ("kid", "kid_seg")


def evaluator_statistics(evaluators, ctx, images: np.ndarray, layouts: np.ndarray | None,
                         has_layout: bool) -> dict:
  """The statistics of the evaluators whose judges `ctx` has, less `_LEFT_OUT` and
  the `_std` keys."""
  from gcd_jax.evaluators import base  # pylint: disable=g-import-not-at-top
  samples = base.Samples(images, layouts, ctx.judges)
  stats = {}
  for ev in evaluators:
    if not ev.missing(ctx, has_layout):
      stats.update(ev.statistics(ctx, samples))
  return {k: v for k, v in stats.items() if not k.endswith("_std") and k not in _LEFT_OUT}


def paired_scores(points: dict[str, dict], n: int, pairs: Sequence[tuple[str, str]] = (),
                  replicates: int = 1000, seed: int = 0) -> dict:
  """Values, centred 95 % intervals, and paired differences a - b for `pairs`.

  points: name -> {metric: statistic(indices)}, all over the same n samples
  (sample i answers caption i everywhere), so one index vector per replicate
  resamples every point (`claim_report.paired_indices`), and each point's
  replicates are centred on its value (`claim_report.replicate_table`).
  """
  from gcd_jax.experiments import claim_report  # pylint: disable=g-import-not-at-top
  names = list(points)
  keys = sorted(set.intersection(*(set(points[p]) for p in names)))
  records = [claim_report.PointStats(
      {"metrics": {k: float(points[p][k](np.arange(n))) for k in keys}}, points[p], n)
      for p in names]
  reps = claim_report.replicate_table(records, keys, claim_report.paired_indices(n, replicates, seed))
  out = {"points": {}, "differences": {}}
  for j, p in enumerate(names):
    out["points"][p] = {k: {"value": records[j].metrics[k],
                            "interval": claim_report.percentile_interval(reps[:, j, i])}
                        for i, k in enumerate(keys)}
  for a, b in pairs:
    ja, jb = names.index(a), names.index(b)
    out["differences"][f"{a} - {b}"] = {
        k: {"difference": records[ja].metrics[k] - records[jb].metrics[k],
            "interval": claim_report.percentile_interval(reps[:, ja, i] - reps[:, jb, i])}
        for i, k in enumerate(keys)}
  return out


def run_study(args) -> dict:
  study = Study(args)
  n = args.num_samples
  t0 = time.time()
  labels, scores = {}, {"points": {}, "differences": {}}
  for name in args.inputs:
    # Each input with its own points: the real input has the true images (psnr).
    low = study.generated_input() if name == "generated" else study.real_input()
    truth = study.reference.images if name == "real" else None
    bil = f"{name}_bilinear"
    stats = {bil: study.statistics(study.upsampled(name, low), low, truth)}
    labels[bil] = {"input": name, "output": "bilinear"}
    pairs = []
    for level in study.levels:
      p = f"{name}_sr_level{level:g}"
      stats[p] = study.statistics(study.super_resolved(name, low, level), low, truth)
      labels[p] = {"input": name, "output": "sr", "level": level}
      pairs.append((p, bil))
    for part, values in paired_scores(stats, n, pairs, args.bootstrap).items():
      scores[part].update(values)
  b, s = study.cascade.base, study.cascade.sr
  record = {
      "base": {"workdir": str(b.workdir), "step": b.step, "sampler": study.base_cfg.record(sr=False),
               "size": [b.config.data.height, b.config.data.width]},
      "sr": {"workdir": str(s.workdir), "step": s.step, "lowres": study.lowres_cfg.describe(),
             "sampler": {str(lv): study.sr_sampler(lv).record(sr=True) for lv in study.levels},
             "size": list(study.size)},
      "dataset": s.dataset, "split": study.common["split"], "num_samples": n,
      "seed": args.seed, "bootstrap": {"replicates": args.bootstrap, "level": 0.95,
                                       "paired": True, "centred": True},
      "judges": {"segmenter": study.context.judges.segmenter_identity,
                 "segnet": getattr(study.context.judges.segnet_features, "identity", None)},
      "labels": labels, **scores,
      "seconds": dict(study.seconds),
  }
  if args.base_segnet and "generated" in args.inputs:
    record["base_at_own_size"] = score_base_at_own_size(study, args)
  record["wall_s"] = time.time() - t0
  return record


def scene_agreement(layouts: np.ndarray, other: np.ndarray) -> float:
  """How far two sets of layouts show the same scenes, at any two sizes: `other`
  brought to the size of `layouts` (nearest neighbour), then per image the
  pixels where both agree on a class other than 0 over the pixels where either
  has one; the mean over images (about 0.89 for synthetic_scenes/64 against /32,
  about 0.02 for other scenes)."""
  n, h, w = layouts.shape
  rows = (np.arange(h) * other.shape[1]) // h
  cols = (np.arange(w) * other.shape[2]) // w
  other = other[:, rows][:, :, cols]
  fg = (layouts > 0) | (other > 0)
  agree = ((layouts == other) & fg).sum((1, 2))
  return float(np.mean(agree / np.maximum(fg.sum((1, 2)), 1)))


def score_base_at_own_size(study: Study, args) -> dict:
  """The base outputs scored at the base size by the judges of that size."""
  from gcd_jax import visualize  # pylint: disable=g-import-not-at-top
  from gcd_jax.evaluators import base, suite  # pylint: disable=g-import-not-at-top
  b = study.cascade.base
  c = b.config
  ref = suite.load_reference(b.dataset, c.data.eval_split, args.num_samples,
                             (c.data.height, c.data.width), c.data.data_dir or None,
                             args.batch_size)
  # The base stage answered the SR dataset's captions (synthetic_scenes captions
  # the same scenes differently at each resolution): correspondence is read against
  # those, fidelity against the same scenes at the base size.
  if ref.layouts is not None and study.reference.layouts is not None:
    agreement = scene_agreement(ref.layouts, study.reference.layouts)
    if agreement < 0.5:
      raise cli.InputError(
          f"--base_segnet: {b.dataset} ({c.data.eval_split}) and {study.cascade.sr.dataset} "
          f"({study.common['split']}) do not hold the same scenes in the same order (their "
          f"layouts agree on {agreement:.0%} of the object pixels): the base outputs cannot be "
          "scored at their own size against the captions they answered")
  ref = dataclasses.replace(ref, captions=list(study.reference.captions))
  judges = suite.make_judges(ref, segnet=args.base_segnet, cache_dir=study.out / "reference_base")
  ctx = base.Context(ref, judges, replicates=args.bootstrap, seed=0)
  low = study.generated_input()
  stats = evaluator_statistics(study.evaluators, ctx, visualize.to_uint8(low["image"]),
                               low.get("layout"), b.has_layout)
  scores = paired_scores({"base": stats}, args.num_samples, (), args.bootstrap)["points"]["base"]
  return {"size": [c.data.height, c.data.width], "dataset": b.dataset,
          "captions": f"{study.cascade.sr.dataset} ({study.common['split']}), as sampled",
          "segnet": getattr(judges.segnet_features, "identity", None), "metrics": scores}


def _fmt(entry: dict, value_key: str = "value") -> str:
  v = entry[value_key]
  lo, hi = entry.get("interval", (float("nan"), float("nan")))
  digits = 4 if abs(v) < 0.1 and v != 0 else 3
  if np.isfinite(lo):
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
  return f"{v:.{digits}f}"


def markdown(record: dict) -> str:
  """The study's tables: every point's values, then SR minus bilinear, paired."""
  present = {k for p in record["points"].values() for k in p}
  keys = [k for k in TABLE_KEYS if k in present] + sorted(present - set(TABLE_KEYS))
  b, s = record["base"], record["sr"]
  lines = [
      "# A super-resolution stage against bilinear upsampling", "",
      f"Base stage: `{b['workdir']}` at step {b['step']} ({b['size'][0]}x{b['size'][1]}), "
      f"guidance {b['sampler']['guidance_image']:g}, {b['sampler']['method']} "
      f"{b['sampler']['steps']} steps. SR stage: `{s['workdir']}` at step {s['step']} "
      f"({s['lowres']['height']}x{s['lowres']['width']} -> {s['size'][0]}x{s['size'][1]}).",
      f"N = {record['num_samples']} test captions/pairs of {record['dataset']} "
      f"({record['split']}), seed {record['seed']}. Judges: {record['judges']['segmenter']}"
      + (f", fd_seg from {record['judges']['segnet']}" if record['judges']['segnet'] else "") + ".",
      f"95 % paired bootstrap intervals over captions ({record['bootstrap']['replicates']} "
      "replicates, each point's replicates centred on its value).",
      "", "Inputs: *generated*, the base stage's outputs (the cascade); *real*, the test pairs "
      "brought down to the low size as in SR training (the SR stage alone; its fidelity is "
      "measured against the very images they were made from).", "",
      "## Every output", "",
      "| input | output | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  for name, lab in record["labels"].items():
    what = "bilinear / nearest" if lab["output"] == "bilinear" else f"SR, level {lab['level']:g}"
    point = record["points"][name]
    lines.append(f"| {lab['input']} | {what} | "
                 + " | ".join(_fmt(point[k]) if k in point else "" for k in keys) + " |")
  lower = [k for k in keys if k in LOWER_IS_BETTER]
  lines += ["", "## SR minus bilinear, paired", "",
            (f"Lower is better for {', '.join(lower)}: a negative difference there, and a "
             "positive one elsewhere, favours the SR stage." if lower
             else "A positive difference favours the SR stage."),
            "", "| input | level | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
  for pair, diff in record["differences"].items():
    lab = record["labels"][pair.split(" - ")[0]]
    lines.append(f"| {lab['input']} | {lab['level']:g} | "
                 + " | ".join(_fmt(diff[k], "difference") if k in diff else "" for k in keys)
                 + " |")
  own = record.get("base_at_own_size")
  if own:
    okeys = [k for k in keys if k in own["metrics"]]
    lines += ["", f"## The base outputs at their own size ({own['size'][0]}x{own['size'][1]})", "",
              f"Judged at that size (fd_seg from {own['segnet']}); not comparable with the "
              "distances above, which another segnet measures.", "",
              "| " + " | ".join(okeys) + " |", "|" + "---|" * len(okeys),
              "| " + " | ".join(_fmt(own["metrics"][k]) for k in okeys) + " |"]
  secs = {k: v for k, v in record.get("seconds", {}).items() if v}
  if secs:
    lines += ["", "## Time (sampling seconds, as stored with each point)", "", "| point | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in secs.items()]
  return "\n".join(lines) + "\n"


def _command(args) -> None:
  record = run_study(args)
  results = fileio.as_path(args.results or args.out)
  fileio.atomic_write_text(results / "sr_cascade.json", json.dumps(record, indent=1))
  text = markdown(record)
  fileio.atomic_write_text(results / "sr_cascade.md", text)
  print(text)


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, _command, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
