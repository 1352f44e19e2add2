"""The one example format every gcd_jax dataset builder writes.

Each prepared example is::

  image:    [H, W, 3] uint8   (PNG-encoded by TFDS)
  layout:   [H, W, 1] uint8   class ids in [0, K), or the declared ignore id (PNG)
  captions: list of str       one or more captions (never empty)
  id:       str               stable identifier (file stem)

and each builder publishes a `LayoutClasses` record in its metadata (class names,
colours for visualisation, the optional ignore id, the left/right class pairs
that a horizontal flip must swap, and the caption words it must swap).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tensorflow_datasets as tfds

# PNG stores the layout in 8 bits; K above this cannot be represented.
MAX_CLASSES = 255


def make_features(height: int | None, width: int | None) -> tfds.features.FeaturesDict:
  """Feature spec for `[H, W]` examples; pass None for datasets of varying size."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(height, width, 3), dtype=np.uint8),
      "layout": tfds.features.Image(shape=(height, width, 1), dtype=np.uint8),
      "captions": tfds.features.Sequence(tfds.features.Text()),
      "id": tfds.features.Text(),
  })


@dataclasses.dataclass(frozen=True)
class LayoutClasses:
  """Names and colours of the K layout classes of one dataset.

  Attributes:
    names: K class names, index = class id.
    colors: K RGB triples in [0, 255] for colourised layouts.
    ignore_id: a layout value that marks unlabelled pixels and is not a class
      (None when every pixel is labelled).
    flip_pairs: pairs (a, b) of class ids exchanged by a horizontal flip
      (l_eye / r_eye on faces).
    flip_words: pairs (a, b) of caption words exchanged by a horizontal flip
      ("left" / "right"), so that a mirrored image keeps a true caption. A
      dataset whose captions use side words but declares none is trained
      without flips (`gcd_jax.data.pipeline.flip_policy`).
  """

  names: tuple[str, ...]
  colors: tuple[tuple[int, int, int], ...]
  ignore_id: int | None = None
  flip_pairs: tuple[tuple[int, int], ...] = ()
  flip_words: tuple[tuple[str, str], ...] = ()

  def __post_init__(self) -> None:
    num_classes = len(self.names)
    if not 1 <= num_classes <= MAX_CLASSES:
      raise ValueError(f"LayoutClasses: need 1..{MAX_CLASSES} classes, got {num_classes}.")
    if len(self.colors) != num_classes:
      raise ValueError(
          f"LayoutClasses: {num_classes} names but {len(self.colors)} colours.")
    for a, b in self.flip_pairs:
      if not (0 <= a < num_classes and 0 <= b < num_classes):
        raise ValueError(f"LayoutClasses: flip pair ({a}, {b}) outside [0, {num_classes}).")
    words = [w for pair in self.flip_words for w in pair]
    if any(len(pair) != 2 for pair in self.flip_words) or any(
        not isinstance(w, str) or not w.strip() or w != w.strip().lower() for w in words):
      raise ValueError(f"LayoutClasses: flip_words {self.flip_words!r} must be pairs of"
                       " non-empty lower-case words.")
    if len(set(words)) != len(words):
      raise ValueError(f"LayoutClasses: flip_words {self.flip_words!r} name a word twice.")
    if self.ignore_id is not None and 0 <= self.ignore_id < num_classes:
      raise ValueError(
          f"LayoutClasses: ignore_id {self.ignore_id} collides with a class id.")

  @property
  def num_classes(self) -> int:
    return len(self.names)

  def flip_table(self) -> np.ndarray:
    """[256] uint8 lookup: class id -> class id after a horizontal flip."""
    table = np.arange(256, dtype=np.uint8)
    for a, b in self.flip_pairs:
      table[a], table[b] = b, a
    return table

  def palette(self) -> np.ndarray:
    """[256, 3] uint8 colours; ids >= K (the ignore id) are black."""
    pal = np.zeros((256, 3), np.uint8)
    pal[: self.num_classes] = np.asarray(self.colors, np.uint8)
    return pal

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str) -> "LayoutClasses":
    d = json.loads(text)
    return cls(
        names=tuple(d["names"]),
        colors=tuple(tuple(int(v) for v in c) for c in d["colors"]),
        ignore_id=d.get("ignore_id"),
        flip_pairs=tuple(tuple(p) for p in d.get("flip_pairs", ())),
        flip_words=tuple(tuple(p) for p in d.get("flip_words", ())),
    )


def default_colors(num_classes: int, seed: int = 0) -> tuple[tuple[int, int, int], ...]:
  """K distinct-looking colours (class 0 black) for datasets that give none."""
  rng = np.random.default_rng(seed)
  cols = [(0, 0, 0)]
  for i in range(1, num_classes):
    hue = (i * 0.618033988749895) % 1.0
    sat, val = 0.55 + 0.45 * rng.random(), 0.7 + 0.3 * rng.random()
    cols.append(_hsv_to_rgb(hue, sat, val))
  return tuple(cols[:num_classes])


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
  i = int(h * 6) % 6
  f = h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return (int(round(255 * r)), int(round(255 * g)), int(round(255 * b)))


def colorize(layout: np.ndarray, classes: LayoutClasses) -> np.ndarray:
  """[..., H, W] class ids -> [..., H, W, 3] uint8 colours."""
  return classes.palette()[np.asarray(layout, np.int64).clip(0, 255)]

