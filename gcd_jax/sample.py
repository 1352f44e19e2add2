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

The cascade: with --sr_workdir (a super-resolution stage, e.g. configs/shapes_sr.py),
the base stage of --workdir samples at its size and the SR stage upsamples
its image and layout, at its own augmentation level (--lowres_level, 0.2 by
default as released) and guidance (1). Known inputs are then given at the SR
size: the base stage sees them downsampled, and both stages keep them.

  python -m gcd_jax.sample --workdir=workdirs/shapes --sr_workdir=workdirs/shapes_sr \
      --text="A large red ball on the left." --out=out/cascade

Writes per sample `NNNN_image.png`, `NNNN_layout.png` (class ids),
`NNNN_layout_color.png`, `NNNN_overlay.png`; `grid.png` of all samples; and
`manifest.json` (captions, seeds, steps, guidance, checkpoint step); in a
cascade those are the SR stage's, beside `NNNN_base_*.png` and `grid_base.png`
of the base stage, and the manifest records both checkpoints. The model
config, the noise schedules and the text encoder come from the checkpoint.
"""

from __future__ import annotations

import io
import json
import sys
import time
import types
from typing import Sequence

from absl import flags
from etils import epath
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
  cli.define_cascade_flags(fv, "sample the cascade (inputs and outputs at its size; base_* "
                           "files at the base size).")
  flags.DEFINE_string("out", None, "Output directory.", required=True, flag_values=fv)


def parse_args(argv: Sequence[str] | None = None) -> types.SimpleNamespace:
  return cli.parse(define_flags, argv, prog=PROG, doc=__doc__)


def read_captions(args: types.SimpleNamespace) -> list[str]:
  captions = list(args.text)
  if args.text_file:
    path = fileio.as_path(args.text_file)
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
  p = fileio.as_path(path)
  if not p.is_file():
    raise InputError(f"{flag} {p}: no such file")
  try:
    img = Image.open(io.BytesIO(p.read_bytes()))
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
  # Slow imports: after the flags are checked.
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax import train_lib  # pylint: disable=g-import-not-at-top

  captions = read_captions(args)
  t0 = time.time()
  print(f"Loading {args.workdir} ...", file=sys.stderr)
  r = run_lib.load(args.workdir, step=args.step)
  cascade = None
  sr_over = cli.sr_sampler_overrides(args)
  if args.sr_workdir:
    print(f"Loading the SR stage {args.sr_workdir} ...", file=sys.stderr)
    try:
      cascade = run_lib.Cascade(r, run_lib.load(args.sr_workdir, step=args.sr_step))
    except ValueError as e:
      raise InputError(f"--sr_workdir: {e}") from None
  final = cascade.sr if cascade else r  # the stage whose size the inputs and outputs have
  if final.is_sr and cascade is None:
    raise InputError(f"{args.workdir} is a super-resolution stage: give its base stage as "
                     f"--workdir and it as --sr_workdir")
  h, w = final.config.data.height, final.config.data.width
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
  sr_cfg = None
  if cascade:
    # The SR stage's own settings (guidance 1, level 0.2 as released) unless given.
    sr_over["resample"] = overrides["resample"]
    if "steps" in sr_over and not 1 <= sr_over["steps"] <= cascade.sr.sched.num_steps:
      raise InputError(f"--sr_steps {sr_over['steps']} not in [1, {cascade.sr.sched.num_steps}]")
    sr_cfg = sampling.SamplerConfig.from_config(cascade.sr.config.sample, known=bool(known),
                                                **sr_over)

  jobs = [(c, args.seed + i) for c in captions for i in range(args.samples_per_caption)]
  out_dir = fileio.as_path(args.out)  # a local directory or a URL
  out_dir.mkdir(parents=True, exist_ok=True)
  entries = []
  shown = {"": ([], []), "base_": ([], [])}  # grid.png (final size) and grid_base.png
  stages = f" -> SR {cascade.sr.step} ({sr_cfg.steps} steps, guidance {sr_cfg.guidance_image})" \
      if cascade else ""
  print(f"{what}: {len(jobs)} samples, {cfg.steps} steps, guidance image {cfg.guidance_image} / "
        f"layout {cfg.guidance_layout}, checkpoint step {r.step}{stages}", file=sys.stderr)
  bar = tqdm.tqdm(total=len(jobs), desc="sampling", unit="sample", file=sys.stderr)
  batch_known = {k: np.broadcast_to(v, (args.batch_size,) + v.shape) for k, v in known.items()}
  for start, stop, index in sampling.padded_batches(len(jobs), args.batch_size):
    chunk = jobs[start:stop]
    caps = [jobs[i][0] for i in index]
    if cascade:
      out = cascade.sample(caps, chunk[0][1], cfg, sr_cfg, known=batch_known or None)
    else:
      out = r.sample(caps, seed=chunk[0][1], cfg=cfg, known=batch_known or None)
    bar.update(stop - start)
    for i, (caption, seed) in enumerate(chunk):
      n = len(entries)
      entry = {"index": n, "caption": caption, "seed": seed, "batch_seed": chunk[0][1]}
      for prefix in shown if cascade else ("",):
        image = out[f"{prefix}image"][i]
        layout = out.get(f"{prefix}layout")
        entry.update(_write_sample(out_dir, f"{n:04d}_{prefix}", image,
                                   None if layout is None else layout[i], r.classes, prefix))
        shown[prefix][0].append(image)
        if layout is not None:
          shown[prefix][1].append(layout[i])
      entries.append(entry)
  bar.close()
  for prefix, (images, layouts) in shown.items():
    if images:
      grid = visualize.sample_grid(np.stack(images), np.stack(layouts) if layouts else None,
                                   [e["caption"] for e in entries], r.classes if layouts else None)
      visualize.save_png(grid, out_dir / f"grid{'_base' if prefix else ''}.png")
  manifest = {
      "workdir": str(fileio.as_path(args.workdir)),
      "checkpoint_step": r.step,
      "task": what,
      "sampler": cfg.record(sr=False),
      "schedules": r.sched.describe(),
      "inputs": {"layout": args.layout, "layout_mask": args.layout_mask, "image": args.image,
                 "image_mask": args.image_mask, "resize": args.resize},
      "classes": list(r.classes.names),
      "samples": entries,
  }
  if cascade:
    # Files without a prefix are the SR stage's (final size); base_* the base stage's.
    manifest["sr"] = {"workdir": str(fileio.as_path(args.sr_workdir)),
                      "checkpoint_step": cascade.sr.step, "sampler": sr_cfg.record(sr=True),
                      "schedules": train_lib.schedules_record(cascade.sr.config, cascade.sr.sched),
                      "size": [h, w]}
  fileio.atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1))
  print(f"Wrote {len(entries)} samples and grid.png to {out_dir} in {time.time() - t0:.0f} s.",
        file=sys.stderr)
  return manifest


def _write_sample(out_dir: epath.Path, stem: str, image: np.ndarray, layout: np.ndarray | None,
                  classes, prefix: str) -> dict:
  """Writes one sample's PNGs; returns their names for the manifest entry."""
  img_u8 = visualize.to_uint8(image)
  visualize.save_png(img_u8, out_dir / f"{stem}image.png")
  names = {f"{prefix}image": f"{stem}image.png"}
  if layout is not None:
    lay = layout.astype(np.uint8)
    rgb = colorize(lay, classes)
    visualize.save_png(lay, out_dir / f"{stem}layout.png")
    visualize.save_png(rgb, out_dir / f"{stem}layout_color.png")
    visualize.save_png(visualize.overlay(img_u8, rgb), out_dir / f"{stem}overlay.png")
    names.update({f"{prefix}layout": f"{stem}layout.png",
                  f"{prefix}layout_color": f"{stem}layout_color.png",
                  f"{prefix}overlay": f"{stem}overlay.png"})
  return names


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, run, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
