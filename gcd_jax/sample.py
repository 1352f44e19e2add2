"""Sample images and layouts from a trained run.

  python -m gcd_jax.sample --workdir=workdirs/shapes --text="A large red ball on the left." \\
      --samples_per_caption=4 --guidance_image=2 --guidance_layout=2 --seed=0 --out=samples/

Text -> image + layout by default; with --layout=in.png, layout -> image
(semantic image synthesis); with --image=in.png, image -> layout (segmentation).
--layout_mask / --image_mask (PNG, white = known) restrict what is known to a
region, for inpainting and outpainting of either modality. Known regions use
RePaint with R resamplings per step (--resample; default 5 with a known layout,
1 otherwise, as in the paper) and the config's one-step sampler
(`sample.repaint_method` / `repaint_steps`).

Writes per sample `NNNN_image.png`, `NNNN_layout.png` (class ids),
`NNNN_layout_color.png`, `NNNN_overlay.png`; `grid.png` of all samples; and
`manifest.json` (captions, seeds, steps, guidance, checkpoint step). The model
config, the noise schedules and the text encoder come from the checkpoint.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
import types
from typing import Sequence

from absl import flags
import numpy as np
from PIL import Image
import tqdm

from gcd_jax import cli
from gcd_jax import fileio
from gcd_jax import sampling
from gcd_jax import visualize
from gcd_jax.data.features import colorize

PROG = "python -m gcd_jax.sample"
InputError = cli.InputError


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A training workdir (its latest checkpoint).",
                      required=True, flag_values=fv)
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", flag_values=fv)
  flags.DEFINE_multi_string("text", [], "A caption (repeat the flag for more).", flag_values=fv)
  flags.DEFINE_string("text_file", None, "Captions, one per line.", flag_values=fv)
  flags.DEFINE_string("layout", None, "Known layout: PNG of class ids (mode L or P).",
                      flag_values=fv)
  flags.DEFINE_string("layout_mask", None, "PNG, white where the layout is known (default: all).",
                      flag_values=fv)
  flags.DEFINE_string("image", None, "Known image (RGB).", flag_values=fv)
  flags.DEFINE_string("image_mask", None, "PNG, white where the image is known (default: all).",
                      flag_values=fv)
  flags.DEFINE_bool("resize", False,
                    "Resize --image/--layout of another size to the model's (else: reject).",
                    flag_values=fv)
  flags.DEFINE_integer("samples_per_caption", 4, "Samples per caption (seeds seed, seed+1, ...).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("batch_size", 8, "Samples per compiled call.", lower_bound=1,
                       flag_values=fv)
  cli.define_sampler_flags(fv)
  flags.DEFINE_float("guidance_image", None, "Guidance scale of the image (default: the config's).",
                     flag_values=fv)
  flags.DEFINE_float("guidance_layout", None,
                     "Guidance scale of the layout (default: the config's).", flag_values=fv)
  flags.DEFINE_integer("resample", None, "RePaint resamplings per step (known regions only).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the first sample.", flag_values=fv)
  flags.DEFINE_string("out", None, "Output directory.", required=True, flag_values=fv)


def parse_args(argv: Sequence[str] | None = None) -> types.SimpleNamespace:
  return cli.parse(define_flags, argv, prog=PROG, doc=__doc__)


def read_captions(args: types.SimpleNamespace) -> list[str]:
  captions = list(args.text)
  if args.text_file:
    path = pathlib.Path(args.text_file)
    if not path.is_file():
      raise InputError(f"--text_file {path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
      if not line.strip():
        raise InputError(f"--text_file {path}, line {i}: empty caption")
    captions += [l.strip() for l in lines]
  if not captions:
    raise InputError("give at least one caption with --text or --text_file")
  for c in captions:
    if not c.strip():
      raise InputError("--text: empty caption; use a real one")
  return captions


def _open(path: str, flag: str) -> Image.Image:
  p = pathlib.Path(path)
  if not p.is_file():
    raise InputError(f"{flag} {p}: no such file")
  try:
    img = Image.open(p)
    img.load()
    return img
  except Exception as e:  # PIL raises many types for corrupt files
    raise InputError(f"{flag} {p}: not a readable image ({e})") from None


def _fit(img: Image.Image, size, flag, path, resize: bool, resample) -> Image.Image:
  h, w = size
  if img.size == (w, h):
    return img
  if not resize:
    raise InputError(f"{flag} {path} is {img.size[0]}x{img.size[1]} (WxH) but the model makes "
                     f"{w}x{h}; pass --resize to resize it")
  return img.resize((w, h), resample)


def load_layout(path: str, size: tuple[int, int], num_classes: int, ignore_id: int | None,
                resize: bool) -> np.ndarray:
  img = _open(path, "--layout")
  if img.mode not in ("L", "P", "I", "I;16"):
    raise InputError(f"--layout {path}: mode {img.mode}; expected a single-channel PNG of class ids")
  ids = np.asarray(_fit(img, size, "--layout", path, resize, Image.NEAREST)).astype(np.int64)
  bad = ids >= num_classes
  if ignore_id is not None:
    bad &= ids != ignore_id
  if bad.any():
    raise InputError(f"--layout {path}: class id {int(ids[bad].max())} >= K = {num_classes} "
                     f"at {int(bad.sum())} pixels")
  return ids.astype(np.int32)


def load_image(path: str, size: tuple[int, int], resize: bool) -> np.ndarray:
  img = _open(path, "--image").convert("RGB")
  arr = np.asarray(_fit(img, size, "--image", path, resize, Image.LANCZOS), np.float32)
  return arr / 127.5 - 1.0


def load_mask(path: str, size: tuple[int, int], flag: str, resize: bool) -> np.ndarray:
  img = _open(path, flag).convert("L")
  return np.asarray(_fit(img, size, flag, path, resize, Image.NEAREST)) >= 128


def run(args: types.SimpleNamespace) -> dict:
  """The command, callable from Python; returns the manifest."""
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top  (slow import: after arg checks)

  captions = read_captions(args)
  t0 = time.time()
  print(f"Loading {args.workdir} ...", file=sys.stderr)
  r = run_lib.load(args.workdir, step=args.step)
  h, w = r.config.data.height, r.config.data.width
  known, what = {}, "text -> image + layout" if r.has_layout else "text -> image"
  if args.layout:
    if not r.has_layout:
      raise InputError(f"--layout: {args.workdir} is an image-only model")
    known["layout"] = load_layout(args.layout, (h, w), r.classes.num_classes, r.classes.ignore_id,
                                  args.resize)
    known["layout_mask"] = (load_mask(args.layout_mask, (h, w), "--layout_mask", args.resize)
                            if args.layout_mask else np.ones((h, w), bool))
    if r.classes.ignore_id is not None:
      known["layout_mask"] &= known["layout"] != r.classes.ignore_id
    what = "layout -> image"
  if args.image:
    known["image"] = load_image(args.image, (h, w), args.resize)
    known["image_mask"] = (load_mask(args.image_mask, (h, w), "--image_mask", args.resize)
                           if args.image_mask else np.ones((h, w), bool))
    what = "image -> layout" if not args.layout else "image + layout inpainting"
  if args.layout_mask and not args.layout or args.image_mask and not args.image:
    raise InputError("--layout_mask needs --layout and --image_mask needs --image")

  overrides = cli.sampler_overrides(args)
  overrides.update({k: getattr(args, k) for k in ("guidance_image", "guidance_layout")
                    if getattr(args, k) is not None})
  overrides["resample"] = args.resample or (5 if "layout" in known else 1)
  if "steps" in overrides and not 1 <= overrides["steps"] <= r.sched.num_steps:
    raise InputError(f"--steps {overrides['steps']} not in [1, {r.sched.num_steps}]")
  cfg = sampling.SamplerConfig.from_config(r.config.sample, known=bool(known), **overrides)

  jobs = [(c, args.seed + i) for c in captions for i in range(args.samples_per_caption)]
  out_dir = pathlib.Path(args.out)
  out_dir.mkdir(parents=True, exist_ok=True)
  images, layouts, entries = [], [], []
  print(f"{what}: {len(jobs)} samples, {cfg.steps} steps, guidance image {cfg.guidance_image} / "
        f"layout {cfg.guidance_layout}, checkpoint step {r.step}", file=sys.stderr)
  bar = tqdm.tqdm(total=len(jobs), desc="sampling", unit="sample", file=sys.stderr)
  batch_known = {k: np.broadcast_to(v, (args.batch_size,) + v.shape) for k, v in known.items()}
  for start, stop, index in sampling.padded_batches(len(jobs), args.batch_size):
    chunk = jobs[start:stop]
    out = r.sample([jobs[i][0] for i in index], seed=chunk[0][1], cfg=cfg,
                   known=batch_known or None)
    bar.update(stop - start)
    for i, (caption, seed) in enumerate(chunk):
      n = len(entries)
      img_u8 = visualize.to_uint8(out["image"][i])
      visualize.save_png(img_u8, out_dir / f"{n:04d}_image.png")
      entry = {"index": n, "caption": caption, "seed": seed, "batch_seed": chunk[0][1],
               "image": f"{n:04d}_image.png"}
      images.append(out["image"][i])
      if "layout" in out:
        lay = out["layout"][i].astype(np.uint8)
        rgb = colorize(lay, r.classes)
        visualize.save_png(lay, out_dir / f"{n:04d}_layout.png")
        visualize.save_png(rgb, out_dir / f"{n:04d}_layout_color.png")
        visualize.save_png(visualize.overlay(img_u8, rgb), out_dir / f"{n:04d}_overlay.png")
        entry.update(layout=f"{n:04d}_layout.png", layout_color=f"{n:04d}_layout_color.png",
                     overlay=f"{n:04d}_overlay.png")
        layouts.append(out["layout"][i])
      entries.append(entry)
  bar.close()
  grid = visualize.sample_grid(np.stack(images), np.stack(layouts) if layouts else None,
                               [e["caption"] for e in entries], r.classes if layouts else None)
  visualize.save_png(grid, out_dir / "grid.png")
  manifest = {
      "workdir": str(pathlib.Path(args.workdir).absolute()),
      "checkpoint_step": r.step,
      "task": what,
      "sampler": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
      "schedules": r.sched.describe(),
      "inputs": {"layout": args.layout, "layout_mask": args.layout_mask, "image": args.image,
                 "image_mask": args.image_mask, "resize": args.resize},
      "classes": list(r.classes.names),
      "samples": entries,
  }
  fileio.atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1))
  print(f"Wrote {len(entries)} samples and grid.png to {out_dir} in {time.time() - t0:.0f} s.",
        file=sys.stderr)
  return manifest


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, run, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
