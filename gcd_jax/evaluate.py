"""Evaluate a trained run: fidelity and text-image-layout correspondence, with guidance sweeps.

  python -m gcd_jax.evaluate --workdir workdirs/shapes --num-samples 1000 --guidance 1,2,3,5

For each guidance scale g (the same g for the image and the layout), N samples
are drawn from captions of the evaluation split (batched, jitted, EMA weights)
and scored; each sweep point is written to
<workdir>/eval/<checkpoint step>/<point>/metrics.json and to TensorBoard
(<workdir>/eval, tags "g=<g>/<metric>"), and is skipped when it already exists.
A sweep also writes sweep.md (a table) and sweep.png (each fidelity metric
against each correspondence metric, as the paper's figures 6 and 7).

Metrics (gcd_jax/metrics):
  semantic_recall      classes named in the caption present in the generated layout
  attribute_accuracy   count / position / size / colour stated in the caption hold
                       (synthetic_scenes only: checked exactly through caption_facts)
  miou                 generated layout vs the segmenter's reading of the generated image
  fsd                  Frechet distance of per-class pixel counts, generated vs real layouts
  fid, kid             with --inception WEIGHTS (see gcd_jax/metrics/fid.py for the format)
  clip_score           with --clip CHECKPOINT_DIR (raw cosine, as the paper)
An image-only model (the baseline) is scored on the segmenter's layout of its images.
The segmenter is the exact oracle on synthetic_scenes, else --segmenter module:callable.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

from gcd_jax import fileio
from gcd_jax import sampling

FIDELITY = ("fid", "kid", "fsd")  # lower is better
CORRESPONDENCE = ("semantic_recall", "attribute_accuracy", "miou", "clip_score")  # higher is better


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m gcd_jax.evaluate", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--num-samples", type=int, default=1000)
  p.add_argument("--guidance", default=None, help="comma-separated scales (default: the config's)")
  p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the config's)")
  p.add_argument("--batch-size", type=int, default=50)
  p.add_argument("--split", default=None, help="caption and reference split (default: config.data.eval_split)")
  p.add_argument("--inception", default=None, help="FID Inception weights file (enables FID and KID)")
  p.add_argument("--clip", default=None, help="local Hugging Face CLIP checkpoint dir (enables CLIP score)")
  p.add_argument("--segmenter", default=None,
                 help="module.path:callable segmenting uint8 [N,H,W,3] images (default: the oracle "
                      "on synthetic_scenes)")
  p.add_argument("--seed", type=int, default=0)
  return p.parse_args(argv)


def _to_uint8(images):
  return np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255).astype(np.uint8)


class Evaluator:
  """Holds the run, the reference data and the metric back ends across sweep points."""

  def __init__(self, args):
    from gcd_jax import inference  # pylint: disable=g-import-not-at-top
    from gcd_jax import train  # pylint: disable=g-import-not-at-top
    from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    from gcd_jax.metrics import segmenters  # pylint: disable=g-import-not-at-top

    self.args = args
    self.run = inference.load_run(args.workdir)
    c = self.run.config
    self.split = args.split or c.data.eval_split
    self.dataset = train.dataset_name(c)
    self.synthetic = c.data.name == "synthetic_scenes"
    n = args.num_samples
    # The evaluation captions and the real reference: the first N examples of the
    # split, in order (one seeded caption per image).
    it = pipeline.make_eval_iterator(self.dataset, split=self.split, image_size=(c.data.height, c.data.width),
                                     batch_size=min(args.batch_size, n), data_dir=c.data.data_dir or None)
    captions, images, layouts = [], [], []
    for batch in it:
      captions += [str(x) for x in batch["caption"]]
      images.append(_to_uint8(batch["image"]))
      layouts.append(batch["layout"])
      if len(captions) >= n:
        break
    if len(captions) < n:
      raise ValueError(f"--num-samples {n}: split {self.split!r} of {self.dataset} has only {len(captions)}")
    self.captions = captions[:n]
    self.real_images = np.concatenate(images)[:n]
    self.real_layouts = np.concatenate(layouts)[:n]
    if args.segmenter:
      self.segmenter = segmenters.load_segmenter(args.segmenter)
    elif self.synthetic:
      self.segmenter = segmenters.OracleSegmenter()
    else:
      self.segmenter = None
    self.inception = self.clip = None
    if args.inception:
      from gcd_jax.metrics import fid  # pylint: disable=g-import-not-at-top
      self.inception = fid.InceptionFeatures.from_file(args.inception)
    if args.clip:
      from gcd_jax.metrics import clip_score  # pylint: disable=g-import-not-at-top
      self.clip = clip_score.load_clip(args.clip)

  def point_dir(self, cfg: sampling.SamplerConfig) -> pathlib.Path:
    name = (f"g{cfg.guidance_image:g}_s{cfg.steps}_{cfg.method}_n{self.args.num_samples}"
            f"_seed{self.args.seed}_{self.split}")
    return self.run.workdir / "eval" / str(self.run.step) / name

  def generate(self, cfg: sampling.SamplerConfig, progress) -> tuple[np.ndarray, np.ndarray | None]:
    bs = self.args.batch_size
    images, layouts = [], []
    n = len(self.captions)
    for start in range(0, n, bs):
      caps = self.captions[start:start + bs]
      caps = caps + [caps[-1]] * (bs - len(caps))  # one compiled shape for every batch
      out = self.run.sample(caps, seed=self.args.seed * 1_000_003 + start, cfg=cfg)
      images.append(_to_uint8(out["image"]))
      if "layout" in out:
        layouts.append(out["layout"])
      progress(min(start + bs, n), n)
    images = np.concatenate(images)[:n]
    layouts = np.concatenate(layouts)[:n] if layouts else None
    return images, layouts

  def score(self, images, layouts) -> dict:
    from gcd_jax.metrics import correspondence, layout_metrics  # pylint: disable=g-import-not-at-top
    k = self.run.classes.num_classes
    m = {}
    seg = self.segmenter(images) if self.segmenter is not None else None
    if layouts is None:  # image-only baseline: its layout is the segmenter's
      if seg is None:
        raise ValueError("an image-only model needs --segmenter for its layout metrics")
      layouts = seg
    else:
      if seg is not None:
        m["miou"] = layout_metrics.miou(layouts, seg, k, self.run.classes.ignore_id)[0]
    m["fsd"] = layout_metrics.fsd(layouts, self.real_layouts, k, self.run.classes.ignore_id)
    if self.synthetic:
      m["semantic_recall"] = correspondence.semantic_recall_synthetic(self.captions, layouts)
      acc = correspondence.attribute_accuracy(self.captions, layouts, images)
      m["attribute_accuracy"] = acc["all"]
      m.update({f"attribute_accuracy_{a}": v for a, v in acc.items() if a != "all"})
    else:
      m["semantic_recall"] = correspondence.semantic_recall_by_name(
          self.captions, layouts, self.run.classes)
    if self.inception is not None:
      from gcd_jax.metrics import fid  # pylint: disable=g-import-not-at-top
      ref = fid.reference_statistics(
          self.inception, f"{self.dataset}-{self.split}-n{len(self.captions)}",
          lambda: self.real_images, self.run.workdir / "eval" / "reference")
      features = fid.compute_features(self.inception, images)
      m["fid"] = fid.fid_from_features(features, ref)
      m["kid"] = fid.kid_from_features(features, ref)[0]
    if self.clip is not None:
      m["clip_score"] = float(np.mean(self.clip.score(images, self.captions)))
    return {key: float(v) for key, v in m.items()}


def _progress(label):
  t0 = time.time()

  def report(done, total):
    rate = done / max(time.time() - t0, 1e-9)
    eta = (total - done) / rate if rate > 0 else float("nan")
    print(f"\r  {label}: {done}/{total} samples, {rate:.1f}/s, ETA {eta:.0f} s", end="",
          file=sys.stderr, flush=True)
    if done == total:
      print(file=sys.stderr)

  return report


def sweep_table(points: list[dict]) -> str:
  keys = [k for k in FIDELITY + CORRESPONDENCE if any(k in p["metrics"] for p in points)]
  rows = ["| guidance | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for p in points:
    vals = [f"{p['metrics'][k]:.4f}" if k in p["metrics"] else "" for k in keys]
    rows.append(f"| {p['guidance']:g} | " + " | ".join(vals) + " |")
  return "\n".join(rows) + "\n"


def sweep_plot(points: list[dict], path: pathlib.Path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fid_keys = [k for k in FIDELITY if all(k in p["metrics"] for p in points)]
  cor_keys = [k for k in CORRESPONDENCE if all(k in p["metrics"] for p in points)]
  fig, axes = plt.subplots(len(fid_keys), len(cor_keys), squeeze=False,
                           figsize=(3.2 * len(cor_keys), 2.8 * len(fid_keys)))
  for i, fk in enumerate(fid_keys):
    for j, ck in enumerate(cor_keys):
      ax = axes[i][j]
      xs = [p["metrics"][ck] for p in points]
      ys = [p["metrics"][fk] for p in points]
      ax.plot(xs, ys, "o-")
      for p, x, y in zip(points, xs, ys):
        ax.annotate(f"{p['guidance']:g}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=8)
      ax.set_xlabel(ck)
      ax.set_ylabel(f"{fk} (lower is better)")
  fig.suptitle("guidance sweep")
  fig.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=100)
  plt.close(fig)
  os.replace(tmp, path)


def run(args) -> list[dict]:
  """The command, callable from Python; returns one record per sweep point."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top

  if args.num_samples < 2 or args.batch_size < 1:
    raise ValueError("--num-samples must be >= 2 and --batch-size >= 1")
  print(f"Loading {args.workdir} ...", file=sys.stderr)
  ev = Evaluator(args)
  c = ev.run.config
  scales = ([float(g) for g in args.guidance.split(",")] if args.guidance
            else [float(c.sample.guidance_image)])
  writer = metric_writers.create_default_writer(ev.run.workdir / "eval", asynchronous=False)
  points = []
  for g in scales:
    over = {"guidance_image": g, "guidance_layout": g}
    if args.steps:
      over["steps"] = args.steps
    cfg = sampling.SamplerConfig.from_config(c.sample, **over)
    out = ev.point_dir(cfg) / "metrics.json"
    if out.is_file():
      record = json.loads(out.read_text())
      print(f"g={g:g}: already evaluated ({out})", file=sys.stderr)
    else:
      t = time.time()
      images, layouts = ev.generate(cfg, _progress(f"g={g:g} sampling"))
      t_sample = time.time() - t
      metrics = ev.score(images, layouts)
      record = {"guidance": g, "checkpoint_step": ev.run.step, "num_samples": args.num_samples,
                "split": ev.split, "sampler": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                "metrics": metrics, "seconds": {"sampling": t_sample, "total": time.time() - t}}
      fileio.atomic_write_text(out, json.dumps(record, indent=1))
      writer.write_scalars(ev.run.step, {f"g={g:g}/{k}": v for k, v in metrics.items()})
      print(f"g={g:g}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
            + f" ({time.time() - t:.0f} s)", file=sys.stderr)
    points.append(record)
  writer.flush()
  if len(points) > 1:
    base = ev.run.workdir / "eval" / str(ev.run.step)
    fileio.atomic_write_text(base / "sweep.md", sweep_table(points))
    sweep_plot(points, base / "sweep.png")
    print(f"Wrote {base / 'sweep.md'} and {base / 'sweep.png'}", file=sys.stderr)
  return points


def main(argv=None):
  args = parse_args(argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
