"""Evaluate a trained run: image fidelity and text-image correspondence, with guidance sweeps.

  python -m gcd_jax.evaluate --workdir=workdirs/shapes --num_samples=1000 --guidance=1,2,3,5

For each guidance scale g, N samples are drawn from captions of the evaluation
split (the first N images, one seeded caption each; batched, jitted, EMA
weights) and scored by the registered evaluators (`gcd_jax/evaluators`). One
judge for every model: text-image correspondence is read off the generated
*image* by the segmenter (the exact oracle on synthetic_scenes), for joint and
image-only models alike; the joint model's own layout is scored beside it.

Each sweep point goes to <workdir>/eval/<step>/<point>/ (metrics.json with 95 %
bootstrap intervals and the identity of every judge, samples.npz) and to
TensorBoard (<workdir>/eval, tags "g=<g>/<metric>"). A point's directory is
keyed by everything that changes its samples (checkpoint, step, every sampler
setting, N, seed, split); within it a metric is reused only if it was computed
by the same judges, and a requested metric the point lacks is computed from
the stored samples. A sweep also writes sweep.md and sweep.png (fidelity
against image-side correspondence, as the paper's figures 6 and 7).

The cascade: with --sr_workdir (a super-resolution stage after --workdir),
the guidance sweep applies to the base stage and the SR stage samples with its
own settings (guidance 1, augmentation level 0.2 unless --lowres_level); the
final outputs are scored at the SR size against the SR stage's dataset, and the
results go under <sr_workdir>/eval/cascade_<base step>_<sr step>/ (keyed by
both checkpoints and both samplers). Evaluate the base stage alone at its own
size without --sr_workdir.

The baseline an SR stage must beat: --sr_workdir=SR --sr_baseline=bilinear
scores the base stage's outputs for the same captions and seeds, upsampled to
the SR size without a model (image bilinear, layout nearest-neighbour), by the
same judges against the same reference (results under
<sr_workdir>/eval/upsampled_<base step>/).

Metrics (--metrics=a,b, default: every one whose judges are available; docs/metrics.md):
  correspondence         semantic_recall, attribute_accuracy (+ _count, _position,
                         _size, _variant; synthetic_scenes) of the generated image
  layout_correspondence  the same of the generated layout (layout_semantic_recall, ...)
  image_fsd, fsd         FSD of the segmenter's layouts of the images / of the generated layouts
  miou                   generated layout vs the segmenter's reading of the generated image
  fd_seg                 fd_seg, kid_seg (+ _std): Frechet / kernel distance in the features
                         of a trained segmentation network (--segnet; a domain metric, not FID)
  fid                    fid, kid (+ _std) with --inception=WEIGHTS
  clip_score             with --clip=CHECKPOINT_DIR (raw cosine, as the paper)
"""

from __future__ import annotations

import json
import os
import sys
import time
import types
from typing import Sequence

from absl import flags
import numpy as np

from gcd_jax import cli
from gcd_jax import fileio
from gcd_jax import sampling

# For the sweep table and plot: fidelity (lower is better) against image-side
# correspondence (higher is better); the layout's own numbers follow in the table.
FIDELITY = ("fd_seg", "image_fsd", "fid", "kid_seg", "kid", "fsd")
CORRESPONDENCE = ("semantic_recall", "attribute_accuracy", "clip_score")
LAYOUT_SIDE = ("layout_semantic_recall", "layout_attribute_accuracy", "miou")


PROG = "python -m gcd_jax.evaluate"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A training workdir.", required=True, flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
  flags.DEFINE_integer("num_samples", 1000, "Samples per sweep point (the first N captions).",
                       lower_bound=2, flag_values=fv)
  flags.DEFINE_list("guidance", None,
                    "Guidance scales of the sweep, image and layout (default: the config's).",
                    flag_values=fv)
  flags.DEFINE_float("guidance_layout", None,
                     "A separate layout guidance scale (default: the same as --guidance).",
                     flag_values=fv)
  cli.define_sampler_flags(fv)
  flags.DEFINE_integer("batch_size", 50, "Samples per compiled call.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_string("split", None, "Caption and reference split (default: config.data.eval_split).",
                      flag_values=fv)
  flags.DEFINE_list("metrics", None,
                    "Evaluators (default: every one whose judges are available).", flag_values=fv)
  flags.DEFINE_string(
      "segmenter", None, "'oracle', a trained segmenter directory (python -m gcd_jax.segnet "
      "train), or module.path:callable (default: the oracle on synthetic_scenes, else --segnet).",
      flag_values=fv)
  flags.DEFINE_string("segnet", None,
                      "A trained segmentation network directory: enables fd_seg and kid_seg.",
                      flag_values=fv)
  flags.DEFINE_string("inception", None, "FID Inception weights file (enables FID and KID).",
                      flag_values=fv)
  flags.DEFINE_string("clip", None,
                      "A local Hugging Face CLIP checkpoint directory (enables the CLIP score).",
                      flag_values=fv)
  flags.DEFINE_integer("bootstrap", 200, "Bootstrap resamplings (0: no intervals).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
  cli.define_cascade_flags(fv, "evaluate the cascade's outputs at its size, against its "
                           "dataset (results under its workdir).")
  flags.DEFINE_enum("sr_baseline", None, ["bilinear"],
                    "With --sr_workdir: score the baseline instead of the SR stage, the base "
                    "stage's outputs upsampled to the SR size (image bilinear, layout nearest).",
                    flag_values=fv)
  flags.DEFINE_string("json", None, "Also write the records of every point (metrics, intervals, "
                      "sampler, key, directory of the stored samples) to this JSON file.",
                      flag_values=fv)


def parse_args(argv: Sequence[str] | None = None) -> types.SimpleNamespace:
  return cli.parse(define_flags, argv, prog=PROG, doc=__doc__)


class Evaluation:
  """The run, its reference split, judges and evaluators, across sweep points."""

  def __init__(self, args: types.SimpleNamespace):
    from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
    from gcd_jax.evaluators import base, suite  # pylint: disable=g-import-not-at-top

    self.args = args
    self.run = run_lib.load(args.workdir, step=args.step)
    self.cascade = self.sr_cfg = None
    over = cli.sr_sampler_overrides(args)
    if args.sr_baseline and not args.sr_workdir:
      raise cli.InputError("--sr_baseline needs --sr_workdir (the stage whose size and data "
                           "the baseline is scored at)")
    if args.sr_baseline and over:
      raise cli.InputError("--sr_baseline runs no SR model: --sr_steps, --sr_guidance_* and "
                           "--lowres_level do not apply")
    if args.sr_workdir:
      self.cascade = run_lib.Cascade(self.run, run_lib.load(args.sr_workdir, step=args.sr_step))
      self.sr_cfg = sampling.SamplerConfig.from_config(self.cascade.sr.config.sample, **over)
    elif self.run.is_sr:
      raise ValueError(f"{args.workdir} is a super-resolution stage: evaluate it in its cascade "
                       "(--workdir=BASE --sr_workdir=SR)")
    # The stage whose outputs are scored: the cascade's at the SR size and data.
    self.final = self.cascade.sr if self.cascade else self.run
    c = self.final.config
    self.split = args.split or c.data.eval_split
    self.reference = suite.load_reference(
        self.final.dataset, self.split, args.num_samples, (c.data.height, c.data.width),
        c.data.data_dir or None, args.batch_size)
    judges = suite.make_judges(self.reference, segmenter=args.segmenter, segnet=args.segnet,
                               inception=args.inception, clip=args.clip,
                               cache_dir=self.final.workdir / "eval" / "reference")
    self.context = base.Context(self.reference, judges, replicates=args.bootstrap, seed=0)
    names = ([n.strip() for n in args.metrics if n.strip()] if args.metrics
             else base.available(self.context, self.run.has_layout))
    self.evaluators = base.from_names(names)
    for ev in self.evaluators:
      missing = ev.missing(self.context, self.run.has_layout)
      if missing:
        raise ValueError(f"--metrics {ev.name}: needs {', '.join(missing)}"
                         + (" (an image-only model has no layout)" if "layout" in missing else ""))
    if args.sr_baseline:
      self.root = self.final.workdir / "eval" / f"upsampled_{self.run.step}"
    elif self.cascade:
      self.root = self.final.workdir / "eval" / f"cascade_{self.run.step}_{self.final.step}"
    else:
      self.root = self.run.workdir / "eval" / str(self.run.step)

  def sampler_config(self, guidance: float) -> sampling.SamplerConfig:
    a = self.args
    over = cli.sampler_overrides(a)
    over["guidance_image"] = guidance
    over["guidance_layout"] = a.guidance_layout if a.guidance_layout is not None else guidance
    return sampling.SamplerConfig.from_config(self.run.config.sample, **over)

  def point(self, cfg: sampling.SamplerConfig) -> dict:
    """The record of one sweep point, from the cache where it is valid."""
    from gcd_jax.evaluators import base, suite  # pylint: disable=g-import-not-at-top
    a = self.args
    key = suite.point_key(checkpoint=str(self.run.workdir), step=self.run.step,
                          sampler=cfg.record(sr=False), num_samples=a.num_samples, seed=a.seed,
                          dataset=self.final.dataset, split=self.split, batch_size=a.batch_size,
                          compute=suite.compute_identity(self.final.model.config),
                          data_dir=self.final.config.data.data_dir,
                          weights=self.run.weights_digest)
    if a.sr_baseline:
      size = [self.final.config.data.height, self.final.config.data.width]
      key["sr"] = {"baseline": "bilinear image, nearest-neighbour layout", "size": size}
    elif self.cascade:
      key["sr"] = {"checkpoint": str(self.cascade.sr.workdir), "step": self.cascade.sr.step,
                   "weights": self.cascade.sr.weights_digest,
                   "sampler": self.sr_cfg.record(sr=True)}
    if self.cascade:  # the base stage's kernels make its samples too
      key["sr"]["base_compute"] = suite.compute_identity(self.run.model.config)
    directory = suite.point_dir(self.root, key)
    cached = suite.read_point(directory, key)
    samples = suite.read_samples(directory, self.context.judges) if cached is not None else None
    t = time.time()
    t_sample, batch_seconds = 0.0, []
    if samples is None:
      cached = None  # records without their samples are not reused
      if a.sr_baseline:
        sample_fn = lambda caps, seed: self.cascade.upsampled(caps, seed, cfg)
      elif self.cascade:
        sample_fn = lambda caps, seed: self.cascade.sample(caps, seed, cfg, self.sr_cfg)
      else:
        sample_fn = lambda caps, seed: self.run.sample(caps, seed=seed, cfg=cfg)
      images, layouts = suite.generate(
          sample_fn, self.reference.captions,
          a.batch_size, a.seed, desc=f"g={cfg.guidance_image:g} sampling", batch_seconds=batch_seconds)
      samples = base.Samples(images, layouts, self.context.judges)
      suite.write_samples(directory, samples)
      t_sample = time.time() - t
    result = base.evaluate(self.evaluators, self.context, samples, cached=cached,
                           has_layout=self.run.has_layout)
    # The file keeps every metric ever computed on these samples, each with the
    # identity of its judges; what this call returns (and prints, plots and logs)
    # is only what was asked for now, by the judges of now.
    stored = dict(cached or {})
    for part in ("metrics", "intervals", "judges"):
      stored[part] = {**(cached or {}).get(part, {}), **result[part]}
    common = dict(key=key, guidance=cfg.guidance_image, guidance_layout=cfg.guidance_layout,
                  checkpoint_step=self.run.step, num_samples=a.num_samples, split=self.split,
                  sampler=cfg.record(sr=False),
                  bootstrap={"replicates": a.bootstrap, "seed": 0, "level": 0.95})
    if self.cascade:
      common["sr"] = key["sr"]
    stored.update(common)
    if result["computed"] or cached is None:
      stored.setdefault("seconds", {})
      seconds = {"sampling": t_sample, "total": time.time() - t}
      if len(batch_seconds) > 1:
        # Without the first batch (the compile): the sampler's own cost.
        seconds["per_sample_steady"] = float(np.median(batch_seconds[1:])) / a.batch_size
        seconds["first_batch"] = batch_seconds[0]
      stored["seconds"] = seconds if t_sample else {**stored["seconds"], "total": seconds["total"]}
      fileio.atomic_write_text(directory / "metrics.json", json.dumps(stored, indent=1))
    record = {**common, "metrics": result["metrics"], "intervals": result["intervals"],
              "judges": result["judges"], "seconds": stored.get("seconds", {}),
              "_reused": not result["computed"] and cached is not None, "_dir": str(directory)}
    return record


def _fmt(record: dict, key: str) -> str:
  v = record["metrics"][key]
  lo, hi = record.get("intervals", {}).get(key, (float("nan"), float("nan")))
  return f"{v:.4f} [{lo:.4f}, {hi:.4f}]" if np.isfinite(lo) else f"{v:.4f}"


def sweep_table(points: list[dict]) -> str:
  """Markdown: one row per point; value [95 % bootstrap interval] per metric."""
  order = FIDELITY + CORRESPONDENCE + LAYOUT_SIDE
  present = {k for p in points for k in p["metrics"]}
  keys = [k for k in order if k in present] + sorted(present - set(order))
  rows = ["| guidance | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for p in points:
    vals = [_fmt(p, k) if k in p["metrics"] else "" for k in keys]
    rows.append(f"| {p['guidance']:g} | " + " | ".join(vals) + " |")
  return "\n".join(rows) + "\n"


def sweep_plot(points: list[dict], path: str | os.PathLike) -> None:
  """Each fidelity metric against each image-side correspondence metric, with intervals."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fid_keys = [k for k in FIDELITY if all(k in p["metrics"] for p in points)]
  cor_keys = [k for k in CORRESPONDENCE if all(k in p["metrics"] for p in points)]
  if not fid_keys or not cor_keys:
    return
  fig, axes = plt.subplots(len(fid_keys), len(cor_keys), squeeze=False,
                           figsize=(3.4 * len(cor_keys), 2.9 * len(fid_keys)))

  def err(key, values):
    iv = np.array([p.get("intervals", {}).get(key, (np.nan, np.nan)) for p in points], np.float64)
    return np.abs(np.stack([values - iv[:, 0], iv[:, 1] - values]))

  for i, fk in enumerate(fid_keys):
    for j, ck in enumerate(cor_keys):
      ax = axes[i][j]
      xs = np.array([p["metrics"][ck] for p in points])
      ys = np.array([p["metrics"][fk] for p in points])
      ax.errorbar(xs, ys, xerr=err(ck, xs), yerr=err(fk, ys), fmt="o-", capsize=2)
      for p, x, y in zip(points, xs, ys):
        ax.annotate(f"{p['guidance']:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=8)
      ax.set_xlabel(f"{ck} (image; higher: better)", fontsize=8)
      ax.set_ylabel(f"{fk} (lower: better)", fontsize=8)
  fig.suptitle("guidance sweep (95% bootstrap intervals)")
  fig.tight_layout()
  fileio.atomic_save_figure(fig, path, dpi=100)


def run(args: types.SimpleNamespace) -> list[dict]:
  """The command, callable from Python; returns one record per sweep point."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top

  print(f"Loading {args.workdir} ...", file=sys.stderr)
  ev = Evaluation(args)
  c = ev.run.config
  try:
    scales = ([float(g) for g in args.guidance] if args.guidance
              else [float(c.sample.guidance_image)])
  except ValueError:
    raise cli.InputError(f"--guidance={','.join(args.guidance)}: expected numbers, e.g. 1,2,3") from None
  print(f"Evaluators: {', '.join(e.name for e in ev.evaluators)}; segmenter: "
        f"{ev.context.judges.segmenter_identity or 'none'}", file=sys.stderr)
  writer = metric_writers.create_default_writer(str(ev.final.workdir / "eval"), asynchronous=False)
  tag = (f"upsampled_{ev.run.step}/" if args.sr_baseline
         else f"cascade_{ev.run.step}/" if ev.cascade else "")
  points = []
  for g in scales:
    cfg = ev.sampler_config(g)
    t = time.time()
    record = ev.point(cfg)
    record["directory"] = record.pop("_dir")
    if record.pop("_reused"):
      print(f"g={g:g}: already evaluated ({record['directory']})", file=sys.stderr)
    else:
      writer.write_scalars(ev.final.step,
                           {f"{tag}g={g:g}/{k}": v for k, v in record["metrics"].items()})
      print(f"g={g:g}: " + ", ".join(f"{k} {_fmt(record, k)}" for k in record["metrics"])
            + f" ({time.time() - t:.0f} s)", file=sys.stderr)
    points.append(record)
  writer.flush()
  if len(points) > 1:
    fileio.atomic_write_text(ev.root / "sweep.md", sweep_table(points))
    sweep_plot(points, ev.root / "sweep.png")
    print(f"Wrote {ev.root / 'sweep.md'} and {ev.root / 'sweep.png'}", file=sys.stderr)
  if args.json:
    fileio.atomic_write_text(args.json, json.dumps(points, indent=1))
  return points


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, run, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
