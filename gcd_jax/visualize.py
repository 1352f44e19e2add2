"""Pictures of samples: image | colourised layout | overlay, with the caption."""

from __future__ import annotations

import os
import textwrap
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gcd_jax import fileio
from gcd_jax.data.features import LayoutClasses, colorize

if TYPE_CHECKING:
  import jax


def to_uint8(image: jax.Array | np.ndarray) -> np.ndarray:
  """[-1, 1] float -> [0, 255] uint8."""
  return np.clip(np.round((np.asarray(image, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def overlay(image_u8: np.ndarray, layout_rgb: np.ndarray, alpha: float = 0.5) -> np.ndarray:
  mixed = (1 - alpha) * image_u8.astype(np.float32) + alpha * layout_rgb.astype(np.float32)
  return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def _upscale(a: np.ndarray, scale: int) -> np.ndarray:
  return a.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else a


def sample_grid(images: jax.Array | np.ndarray, layouts: jax.Array | np.ndarray | None,
                captions: Sequence[str], classes: LayoutClasses | None,
                scale: int = 4, caption_width: int = 260) -> np.ndarray:
  """One row per sample: image | layout | overlay | caption.

  Args:
    images: [N, H, W, 3] float in [-1, 1].
    layouts: [N, H, W] int class ids, or None (image-only model).
    captions: N strings.
    classes: colours for the layout (needed when layouts is given).
    scale: nearest-neighbour upscaling of the pictures (32x32 is tiny).
  Returns:
    [rows, cols, 3] uint8.
  """
  images = to_uint8(images)
  n, h, w, _ = images.shape
  panels_per_row = 3 if layouts is not None else 1
  hh, ww = h * scale, w * scale
  pad = 4
  row_h = max(hh, 16) + pad
  canvas = Image.new("RGB", (panels_per_row * (ww + pad) + caption_width, n * row_h + pad), "white")
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  chars = max(10, caption_width // 7)
  for i in range(n):
    panels = [images[i]]
    if layouts is not None:
      rgb = colorize(np.asarray(layouts[i]), classes)
      panels += [rgb, overlay(images[i], rgb)]
    y = pad + i * row_h
    for j, p in enumerate(panels):
      canvas.paste(Image.fromarray(_upscale(p, scale)), (pad + j * (ww + pad), y))
    text = "\n".join(textwrap.wrap(captions[i] or "(no caption)", chars)[: max(1, hh // 12)])
    draw.text((panels_per_row * (ww + pad) + pad, y), text, fill=(0, 0, 0), font=font)
  return np.asarray(canvas)


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
  """Writes a PNG atomically (temporary name, then rename), locally or to a URL."""
  fileio.atomic_save_png(array, path)
