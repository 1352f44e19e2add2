"""Cross-modal outpainting of a joint model, measured (paper Fig. 9).

  python -m gcd_jax.experiments.outpainting --workdir=RUN --out=RUN_outpainting.json \\
      [--num_images=200] [--segnet=SEGNET]

On the first N test pairs, with their captions, the joint model's RePaint
sampler (`config.sample.repaint_method` / `repaint_steps`, guidance as the
config's) keeps one modality and generates the other:

  image -> layout  (segmentation by outpainting), R = 1 and R = 5 resamplings
                   per step: mIoU of the generated layouts against the true
                   layouts; beside it, the mIoU of the trained segmentation
                   network (--segnet) on the same images, the supervised answer.
  layout -> image  (semantic image synthesis), R = 5: mIoU of the segmenter's
                   reading of the generated images (the exact oracle on
                   synthetic_scenes) against the given layouts, and fd_seg of the
                   generated images against the real ones (--segnet features).

95 % intervals bootstrap over images; the replicates of fd_seg and kid_seg are
centred on the value, since resampling inflates a distance between feature sets.
mIoU is over the classes present in either layout of the pooled confusion
(gcd_jax.metrics.layout_metrics.miou).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
from typing import TYPE_CHECKING, Any, Sequence
import time

from absl import flags
import numpy as np

from gcd_jax import cli
from gcd_jax import fileio

if TYPE_CHECKING:
  from gcd_jax import run as run_lib


def _miou_stat(pred, target, num_classes, ignore):
  from gcd_jax.metrics import layout_metrics  # pylint: disable=g-import-not-at-top
  return lambda idx: layout_metrics.miou(pred[idx], target[idx], num_classes, ignore)[0]


# Distances between feature sets: resampling inflates them, so their bootstrap
# replicates are centred on the value (the paper-claim report does the same).
_CENTRED = ("fd_seg", "kid_seg")


def _with_interval(stat, n, replicates, seed, centred: bool = False) -> dict:
  from gcd_jax.evaluators import base  # pylint: disable=g-import-not-at-top
  value = float(stat(np.arange(n)))
  entry = {"value": value, "interval": list(base.bootstrap_interval(
      stat, n, replicates, seed, centre_on=value if centred else None))}
  if centred:
    entry["interval_method"] = "percentile, replicates centred on the value"
  return entry


def generate(run: run_lib.Run, captions: Sequence[str], known: dict, resample: int,
             batch_size: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
  """The RePaint sampler over all captions in padded batches: ({"image", "layout"} numpy,
  the sampler's settings)."""
  from gcd_jax import sampling  # pylint: disable=g-import-not-at-top
  cfg = sampling.SamplerConfig.from_config(run.config.sample, known=True, resample=resample)
  n = len(captions)
  outs = {"image": [], "layout": []}
  for start, stop, index in sampling.padded_batches(n, batch_size):
    caps = [captions[i] for i in index]
    chunk = {k: np.asarray(v)[index] for k, v in known.items()}
    out = run.sample(caps, seed=seed + start, cfg=cfg, known=chunk)
    for k in outs:
      outs[k].append(np.asarray(out[k])[: stop - start])
  return {k: np.concatenate(v) for k, v in outs.items()}, dataclasses.asdict(cfg)


def run_outpainting(workdir: str, *, num_images: int = 200, segnet: str | None = None,
                    resamples: Sequence[int] = (1, 5), batch_size: int = 50, seed: int = 0,
                    bootstrap: int = 200) -> dict:
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax import visualize  # pylint: disable=g-import-not-at-top
  from gcd_jax.evaluators import base, suite  # pylint: disable=g-import-not-at-top
  from gcd_jax.evaluators import metrics as ev_metrics  # pylint: disable=g-import-not-at-top
  run = run_lib.load(workdir)
  if not run.has_layout:
    raise ValueError(f"{workdir}: an image-only model has no layout to outpaint")
  c = run.config
  ref = suite.load_reference(run.dataset, c.data.eval_split, num_images, (c.data.height, c.data.width),
                             c.data.data_dir or None)
  judges = suite.make_judges(ref, segnet=segnet, cache_dir=run.workdir / "eval" / "reference")
  ctx = base.Context(ref, judges, replicates=bootstrap, seed=seed)
  num_classes, ignore = ref.classes.num_classes, ref.classes.ignore_id
  n = len(ref.captions)
  real_image = ref.images.astype(np.float32) / 127.5 - 1
  everything = np.ones(ref.layouts.shape, bool)
  record = {"workdir": str(pathlib.Path(workdir).absolute()), "checkpoint_step": run.step,
            "dataset": run.dataset, "split": c.data.eval_split, "num_images": n,
            "segmenter": judges.segmenter_identity, "image_to_layout": {}, "layout_to_image": {}}

  for r in resamples:
    t = time.time()
    out, cfg = generate(run, ref.captions, {"image": real_image, "image_mask": everything},
                        r, batch_size, seed)
    record["image_to_layout"][f"R={r}"] = {
        "miou": _with_interval(_miou_stat(out["layout"], ref.layouts, num_classes, ignore), n, bootstrap, seed),
        "sampler": cfg, "seconds": time.time() - t}
  if judges.segnet_features is not None:
    from gcd_jax import segnet as segnet_lib  # pylint: disable=g-import-not-at-top
    net = segnet_lib.load(segnet)
    pred = np.asarray(net(ref.images))
    record["image_to_layout"]["segnet"] = {
        "miou": _with_interval(_miou_stat(pred, ref.layouts, num_classes, ignore), n, bootstrap, seed),
        "identity": net.identity}

  t = time.time()
  out, cfg = generate(run, ref.captions, {"layout": ref.layouts.astype(np.int32), "layout_mask": everything},
                      5, batch_size, seed)
  samples = base.Samples(visualize.to_uint8(out["image"]), None, judges)
  entry = {"miou": _with_interval(_miou_stat(samples.image_layouts, ref.layouts, num_classes, ignore), n,
                                  bootstrap, seed), "sampler": cfg, "seconds": time.time() - t}
  if judges.segnet_features is not None:
    for name, stat in ev_metrics.FDSeg().statistics(ctx, samples).items():
      entry[name] = _with_interval(stat, n, bootstrap, seed, centred=name in _CENTRED)
  record["layout_to_image"]["R=5"] = entry
  return record


PROG = "python -m gcd_jax.experiments.outpainting"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A training workdir.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "The JSON record.", required=True, flag_values=fv)
  flags.DEFINE_integer("num_images", 200, "Test images.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("segnet", None, "A trained segmentation network (fd_seg, the segnet mIoU).",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 50, "Samples per compiled call.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
  flags.DEFINE_integer("bootstrap", 200, "Bootstrap resamplings.", lower_bound=0, flag_values=fv)


def _command(args) -> None:
  record = run_outpainting(args.workdir, num_images=args.num_images, segnet=args.segnet,
                           batch_size=args.batch_size, seed=args.seed, bootstrap=args.bootstrap)
  fileio.atomic_write_text(pathlib.Path(args.out), json.dumps(record, indent=1))
  print(json.dumps({k: record[k] for k in ("image_to_layout", "layout_to_image")}, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, _command, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
