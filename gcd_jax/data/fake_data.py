"""Writes a small fake `layout_folder` tree (tests, benchmarks, smoke runs).

  write_layout_folder("/tmp/fake", num_examples=100, size=(256, 256))
  python -m gcd_jax.prepare --dataset=layout_folder --config=fake --manual_dir=/tmp/fake

Each image is a few random ellipses of K classes over a background, each class
painted in its own colour with a smooth stripe texture and pixel noise, so PNG
sizes and decode times are close to those of real photos; the layout holds the
ellipses' class ids. Everything is drawn from `seed`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw


def write_layout_folder(root: str, num_examples: int, size: tuple[int, int],
                        num_classes: int = 8, num_captions: int = 3, seed: int = 0,
                        flip_pairs: tuple[tuple[int, int], ...] = ((1, 2),),
                        flip_words: tuple[tuple[str, str], ...] | None = None,
                        captions_fn: Callable[[int, int], str] | None = None) -> None:
  """Writes root/{images,layouts}/{i:05d}.png, captions.jsonl and classes.json.

  Args:
    root: created if missing.
    num_examples: number of (image, layout) pairs.
    size: (H, W) of every image.
    num_classes: K; class 0 is the background.
    num_captions: captions per image ("example {i} caption {j}").
    seed: everything is drawn from it.
    flip_pairs: written to classes.json.
    flip_words: written to classes.json when given.
    captions_fn: (i, j) -> caption j of image i (default "example {i} caption {j}").
  """
  h, w = size
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  os.makedirs(os.path.join(root, "layouts"), exist_ok=True)
  rng = np.random.default_rng(seed)
  xx = np.arange(w, dtype=np.float32)[None, :, None]
  with open(os.path.join(root, "captions.jsonl"), "w", encoding="utf-8") as f:
    for i in range(num_examples):
      layout_im = Image.new("L", (w, h), 0)
      draw = ImageDraw.Draw(layout_im)
      for _ in range(5):
        cx, cy = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(max(1, min(h, w) // 8), max(2, min(h, w) // 3)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=int(rng.integers(1, num_classes)))
      layout = np.asarray(layout_im)
      palette = rng.integers(0, 256, (num_classes, 3)).astype(np.float32)
      image = (palette[layout] + 20 * np.sin(xx / 7 + i)
               + rng.normal(0, 6, (h, w, 3)).astype(np.float32))
      name = f"{i:05d}"
      Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
          os.path.join(root, "images", name + ".png"))
      layout_im.save(os.path.join(root, "layouts", name + ".png"))
      caption = captions_fn or (lambda i, j: f"example {i} caption {j}")
      f.write(json.dumps({"file_name": name + ".png", "captions": [
          caption(i, j) for j in range(num_captions)]}) + "\n")
  spec = {"names": [f"class_{k}" for k in range(num_classes)],
          "flip_pairs": [list(p) for p in flip_pairs]}
  if flip_words is not None:
    spec["flip_words"] = [list(p) for p in flip_words]
  with open(os.path.join(root, "classes.json"), "w", encoding="utf-8") as f:
    json.dump(spec, f)
