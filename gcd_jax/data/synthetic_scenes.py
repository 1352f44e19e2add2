"""synthetic_scenes: procedural images, layouts and captions that can be checked exactly.

The default dataset of gcd_jax: it needs no download, and because every
caption is a set of facts that a hand-written checker can verify on any image
and layout, text-image correspondence is measured exactly rather than with a
learned model (the paper's CLIP score / attribute classifiers).

Scenes: a background plus 1-4 objects of K - 1 = 7 classes, painted in order
(later objects occlude earlier ones). Each class owns a shape, a texture and a
hue band; inside it an object has a colour variant ("light": pale, bright;
"dark": saturated, deep), a size category and a position:

  id  class     hue   shape            texture (brightness only)
  0   background  -   smooth low-saturation gradient, object shadows
  1   ball        0   disk             specular sphere shading
  2   box        50   square, tilted   linear gradient
  3   triangle  105   triangle, tilted vertical gradient
  4   ring      158   annulus          linear gradient
  5   bar       210   2.5:1 rectangle  stripes across the long axis
  6   cross     262   plus sign        checkerboard
  7   diamond   312   rhombus          pyramid shading

Appearance is built so that a deterministic per-pixel oracle recovers the
layout (`oracle_segment`): object pixels have chroma (max - min channel)
>= 60 and the background <= 36 (over 3000 test scenes), so a chroma threshold
finds the background and the nearest hue centre the class (hue jitter +-6 deg,
bands 48-55 deg apart). The variant is read from the minimum channel (light
>= 72, dark <= 34). Within a class, brightness varies with the shade, the texture,
a global lighting ramp and pixel noise, so the image is not a recolouring of
the layout. Layouts are hard masks sampled at pixel centres (no
anti-aliasing, which would mix hues at edges).

Captions (grammar in `gcd_jax.data.captions`) state only facts that
`check_facts` verifies on the ground truth; the measured attributes are:

  present   a connected component (8-connectivity) of >= MIN_AREA_FRAC[c] * H * W pixels
  count     the number of such components
  size      "small" if every component covers <= SMALL_MAX_FRAC of the image,
            "large" if every one covers >= LARGE_MIN_FRAC (dead zone between)
  position  "left" if every component's centroid is left of W/2 - margin
            (margin = POSITION_MARGIN_FRAC * W), likewise right/top/bottom
  variant   "light" if every component's mean minimum channel is > LIGHT_MIN
            in the image, "dark" if every one is below

A caption states a count only when the components and the painted instances
match one to one, and a size / variant only when the sampled and the measured
values agree. Every example is a pure function of (seed, split, index).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from gcd_jax.data import captions
from gcd_jax.data.captions import Fact
from gcd_jax.data.features import LayoutClasses

NUM_CLASSES = 1 + len(captions.OBJECT_NAMES)
# Hue centre (degrees) of classes 1..K-1; neighbours are >= 48 degrees apart.
HUES = (0.0, 50.0, 105.0, 158.0, 210.0, 262.0, 312.0)


def _pure_hue(hue_deg: float) -> tuple[float, float, float]:
  """Fully saturated, full-value RGB in [0, 1] for a hue in degrees."""
  h = (hue_deg % 360.0) / 60.0
  x = 1.0 - abs(h % 2.0 - 1.0)
  return [(1, x, 0), (x, 1, 0), (0, 1, x), (0, x, 1), (x, 0, 1), (1, 0, x)][int(h) % 6]


CLASSES = LayoutClasses(
    names=("background",) + captions.OBJECT_NAMES,
    colors=((0, 0, 0),) + tuple(
        tuple(int(round(230 * c)) for c in _pure_hue(h)) for h in HUES),
    # Positions are symmetric about the vertical centre line, so a mirrored
    # caption ("top right" for "top left") is exactly true of a mirrored scene.
    flip_words=(("left", "right"),),
)

# --- Measurement thresholds (shared by captioning and checking) ---------------

# Pixels whose chroma (max - min channel, uint8 units) is below this are background.
BACKGROUND_MAX_CHROMA = 46
# Components whose mean minimum channel is above this are "light", else "dark".
LIGHT_MIN = 50
# A class is present with a component of at least this fraction of the image.
MIN_AREA_FRAC = (0.0,) + (0.004,) * (NUM_CLASSES - 1)
SMALL_MAX_FRAC = 0.045
LARGE_MIN_FRAC = 0.075
POSITION_MARGIN_FRAC = 0.1

# --- Scene sampling -----------------------------------------------------------

# Area of each shape at unit radius (the radius r scales local coordinates).
_SHAPE_AREA = {1: math.pi, 2: 4.0, 3: 3 * math.sqrt(3) / 4, 4: 0.75 * math.pi,
               5: 1.6, 6: 2.31, 7: 2.0}
# Uniform ranges of the sampled object area (fraction of the image): the
# measured area of an unoccluded object stays on the right side of
# SMALL_MAX_FRAC / LARGE_MIN_FRAC after rasterisation.
_AREA_RANGE = {"small": (0.02, 0.035), "large": (0.10, 0.20)}
# Uniform (saturation, value) ranges of the two colour variants.
_VARIANT_SV = {"light": ((0.42, 0.55), (0.90, 1.0)),
               "dark": ((0.85, 1.0), (0.50, 0.68))}
_HUE_JITTER = 6.0
_MAX_TILT = {1: 0.0, 2: 0.35, 3: 0.4, 4: 0.0, 5: 0.0, 6: 0.0, 7: 0.15}
# Stripe / checker cells per image side (2 pixels at 32x32).
_TEXTURE_CELLS = 16


@dataclasses.dataclass(frozen=True)
class SceneObject:
  """One painted object; lengths are in units of the image side, angles in radians."""

  class_id: int
  cx: float
  cy: float
  radius: float
  size: str          # sampled size category, one of captions.SIZES
  variant: str       # one of captions.VARIANTS
  tilt: float        # rotation of the shape
  rgb: tuple[float, float, float]   # base colour in [0, 1]: value * (1 - s + s * hue)
  shade_dir: float   # direction of the gradient textures
  vertical: bool     # bars: long axis vertical


@dataclasses.dataclass(frozen=True)
class Scene:
  objects: tuple[SceneObject, ...]   # painting order
  background_rgb: tuple[float, float, float]   # at unit brightness
  background_level: float
  background_ramp: float             # brightness change across the image
  background_dir: float
  light_ramp: float                  # objects get darker by up to this fraction
  light_dir: float
  noise_std: float                   # uint8 units


def sample_scene(rng: np.random.Generator) -> Scene:
  """Draws a scene (resolution-independent) from `rng`."""
  # 1-4 objects with probabilities 0.2, 0.3, 0.3, 0.2.
  n = 1 + int(np.searchsorted([0.2, 0.5, 0.8], rng.random(), side="right"))
  objects: list[SceneObject] = []
  for _ in range(n):
    if objects and rng.random() < 0.3:
      # Repeat a class so that counts above one occur; mostly keep its looks.
      like = objects[int(rng.integers(len(objects)))]
      class_id = like.class_id
      size = like.size if rng.random() < 0.7 else captions.SIZES[rng.integers(2)]
      variant = (like.variant if rng.random() < 0.7
                 else captions.VARIANTS[rng.integers(2)])
    else:
      class_id = int(rng.integers(1, NUM_CLASSES))
      size = captions.SIZES[rng.integers(2)]
      variant = captions.VARIANTS[rng.integers(2)]
    area = rng.uniform(*_AREA_RANGE[size])
    radius = math.sqrt(area / _SHAPE_AREA[class_id])
    # Place it apart from its own class (so that instances can be counted)
    # and at most partly over other classes: the first of 20 candidate
    # centres that fits, or no object if none does.
    centres = rng.uniform(radius, 1 - radius, size=(20, 2))
    if objects:
      others = np.array([(o.cx, o.cy) for o in objects])
      need = np.array([(1.15 if o.class_id == class_id else 0.6) * (o.radius + radius)
                       for o in objects])
      dist = np.hypot(*(centres[:, None, :] - others[None]).transpose(2, 0, 1))
      fits = np.all(dist >= need, axis=1)
      if not fits.any():
        continue
      centres = centres[np.argmax(fits):]
    cx, cy = float(centres[0, 0]), float(centres[0, 1])
    (sat_lo, sat_hi), (val_lo, val_hi) = _VARIANT_SV[variant]
    sat, val = rng.uniform(sat_lo, sat_hi), rng.uniform(val_lo, val_hi)
    hue = HUES[class_id - 1] + rng.uniform(-_HUE_JITTER, _HUE_JITTER)
    rgb = tuple(float(val * (1 - sat + sat * c)) for c in _pure_hue(hue))
    objects.append(SceneObject(
        class_id=class_id, cx=cx, cy=cy, radius=radius, size=size,
        variant=variant, tilt=float(rng.uniform(-1, 1) * _MAX_TILT[class_id]),
        rgb=rgb, shade_dir=float(rng.uniform(0, 2 * math.pi)),
        vertical=bool(rng.random() < 0.5)))
  bg_sat = rng.uniform(0.0, 0.08)
  bg_rgb = tuple(float(1 - bg_sat + bg_sat * c)
                 for c in _pure_hue(rng.uniform(0, 360)))
  return Scene(
      objects=tuple(objects), background_rgb=bg_rgb,
      background_level=float(rng.uniform(0.35, 0.8)),
      background_ramp=float(rng.uniform(0.0, 0.2)),
      background_dir=float(rng.uniform(0, 2 * math.pi)),
      light_ramp=float(rng.uniform(0.0, 0.1)),
      light_dir=float(rng.uniform(0, 2 * math.pi)),
      noise_std=float(rng.uniform(1.5, 4.0)))


# --- Rendering ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RenderedScene:
  image: np.ndarray    # [H, W, 3] uint8
  layout: np.ndarray   # [H, W] uint8 class ids
  owner: np.ndarray    # [H, W] int8 index of the visible object, -1 = background


def _shape(obj: SceneObject, x: np.ndarray, y: np.ndarray):
  """Mask [H, W] bool and brightness texture [H, W] in [0.8, 1] of one object."""
  dx, dy = x - obj.cx, y - obj.cy
  c, s = math.cos(obj.tilt), math.sin(obj.tilt)
  u = (dx * c + dy * s) / obj.radius
  v = (dy * c - dx * s) / obj.radius
  ramp = np.clip(u * math.cos(obj.shade_dir) + v * math.sin(obj.shade_dir), -1, 1)
  class_id = obj.class_id
  if class_id == 1:    # ball: disk with a highlight up-left
    mask = u * u + v * v <= 1.0
    tex = 1.0 - 0.2 * np.minimum(1.0, ((u + 0.35) ** 2 + (v + 0.35) ** 2) / 1.8)
  elif class_id == 2:  # box
    mask = np.maximum(np.abs(u), np.abs(v)) <= 1.0
    tex = 0.9 + 0.1 * ramp
  elif class_id == 3:  # triangle (circumradius 1, apex up)
    mask = ((v <= 0.5) & (0.8660254 * u - 0.5 * v <= 0.5)
            & (-0.8660254 * u - 0.5 * v <= 0.5))
    tex = 1.0 - 0.2 * np.clip((v + 1.0) / 1.5, 0, 1)
  elif class_id == 4:  # ring
    d2 = u * u + v * v
    mask = (d2 <= 1.0) & (d2 >= 0.25)
    tex = 0.9 + 0.1 * ramp
  elif class_id == 5:  # bar, striped across its long axis
    along, across = (v, u) if obj.vertical else (u, v)
    mask = (np.abs(along) <= 1.0) & (np.abs(across) <= 0.4)
    stripe = np.floor(along * obj.radius * _TEXTURE_CELLS) % 2
    tex = 1.0 - 0.2 * stripe
  elif class_id == 6:  # cross (arms 0.7 wide), checkerboard in image coordinates
    au, av = np.abs(u), np.abs(v)
    mask = ((au <= 1.0) & (av <= 0.35)) | ((au <= 0.35) & (av <= 1.0))
    cells = np.floor(x * _TEXTURE_CELLS) + np.floor(y * _TEXTURE_CELLS)
    tex = 1.0 - 0.15 * (cells % 2)
  elif class_id == 7:  # diamond
    l1 = np.abs(u) + np.abs(v)
    mask = l1 <= 1.0
    tex = 1.0 - 0.2 * np.minimum(l1, 1.0)
  else:
    raise ValueError(f"synthetic_scenes: unknown class id {class_id}.")
  return mask, np.broadcast_to(tex, mask.shape)


def _ramp(x, y, angle):
  """Linear ramp in [0, 1] across the image along direction `angle`."""
  t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
  return np.clip(0.5 + t / math.sqrt(2), 0.0, 1.0)


def render_scene(scene: Scene, resolution: int,
                 rng: np.random.Generator) -> RenderedScene:
  """Paints `scene` at `resolution` x `resolution`; `rng` draws the pixel noise."""
  h = w = resolution
  y = ((np.arange(h) + 0.5) / h)[:, None]   # pixel centres, [H, 1]
  x = ((np.arange(w) + 0.5) / w)[None, :]   # [1, W]
  owner = np.full((h, w), -1, np.int8)
  textures = []
  for j, obj in enumerate(scene.objects):
    mask, tex = _shape(obj, x, y)
    owner[mask] = j
    textures.append(tex)

  # Every pixel is brightness x the base colour of what it shows.
  # Background: a brightness ramp; objects cast a shadow down-right on it.
  brightness = (scene.background_level - 0.5 * scene.background_ramp
                + scene.background_ramp * _ramp(x, y, scene.background_dir))
  shift = max(1, round(0.03 * resolution))
  shadow = np.zeros((h, w), bool)
  shadow[shift:, shift:] = owner[:-shift, :-shift] >= 0
  brightness = brightness * np.where(shadow, 0.7, 1.0)
  light = 1.0 - scene.light_ramp * _ramp(x, y, scene.light_dir)
  for j, tex in enumerate(textures):
    brightness = np.where(owner == j, tex * light, brightness)
  base = np.array((scene.background_rgb,) + tuple(o.rgb for o in scene.objects))
  rgb = brightness[..., None] * base[owner.astype(np.int64) + 1]   # [H, W, 3]

  noise = rng.standard_normal((h, w, 3), dtype=np.float32) * scene.noise_std
  image = np.clip(np.rint(rgb * 255.0 + noise), 0, 255).astype(np.uint8)
  class_of = np.array([0] + [o.class_id for o in scene.objects], np.uint8)
  layout = class_of[owner.astype(np.int64) + 1]
  return RenderedScene(image=image, layout=layout, owner=owner)


# --- Oracle -------------------------------------------------------------------

# Class of each half-degree hue bin: the nearest hue centre (circularly).
_HUE_BINS = 720
_bin_hue = (np.arange(_HUE_BINS) + 0.5) * 360.0 / _HUE_BINS
_HUE_TO_CLASS = 1 + np.argmin(
    np.abs((_bin_hue[:, None] - np.asarray(HUES)[None, :] + 180.0) % 360.0 - 180.0),
    axis=1).astype(np.uint8)


def _check_image(image, where: str) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim < 3 or image.shape[-1] != 3:
    raise ValueError(f"{where}: need a uint8 image [..., H, W, 3], got "
                     f"{image.dtype} {image.shape}.")
  return image


def oracle_segment(image: np.ndarray) -> np.ndarray:
  """Hand-written segmenter: uint8 [..., H, W, 3] -> layout [..., H, W] uint8.

  Chroma below BACKGROUND_MAX_CHROMA is background, otherwise the class whose
  hue centre is nearest to the pixel's hue.
  """
  x = _check_image(image, "oracle_segment").astype(np.int16)
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  hi, lo = x.max(-1), x.min(-1)
  chroma = hi - lo
  c = np.maximum(chroma, 1).astype(np.float32)
  sector = np.where(hi == r, ((g - b) / c) % 6.0,
                    np.where(hi == g, (b - r) / c + 2.0, (r - g) / c + 4.0))
  bins = (sector * (_HUE_BINS / 6.0)).astype(np.int64) % _HUE_BINS
  return np.where(chroma < BACKGROUND_MAX_CHROMA, 0, _HUE_TO_CLASS[bins]).astype(np.uint8)


def oracle_variant(image: np.ndarray) -> np.ndarray:
  """Per-pixel colour variant: [..., H, W, 3] uint8 -> [..., H, W] bool (True = light).

  Meaningful on object pixels only.
  """
  return _check_image(image, "oracle_variant").min(-1) > LIGHT_MIN


# --- Measuring facts ----------------------------------------------------------

_EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class _Components:
  labels: np.ndarray      # [H, W] int32 component ids of the class, 0 elsewhere
  kept: np.ndarray        # ids of components with at least the minimum area
  num_fragments: int      # components below the minimum area
  fact: Fact              # measured attributes (None where ambiguous)


def _as_layout(layout) -> np.ndarray:
  layout = np.asarray(layout)
  if layout.ndim == 3 and layout.shape[-1] == 1:
    layout = layout[..., 0]
  if layout.ndim != 2:
    raise ValueError(f"synthetic_scenes: need one layout [H, W] or [H, W, 1], "
                     f"got shape {layout.shape}.")
  return layout


def _measure(layout: np.ndarray, image: np.ndarray | None,
             class_id: int) -> _Components | None:
  """Components of one class and the attributes they show; None if absent."""
  h, w = layout.shape
  mask = layout == class_id
  labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
  if n == 0:
    return None
  ys, xs = np.nonzero(mask)
  lab = labels[ys, xs]
  areas = np.bincount(lab, minlength=n + 1).astype(np.float64)
  kept = np.flatnonzero(areas >= MIN_AREA_FRAC[class_id] * h * w)
  kept = kept[kept > 0]
  if kept.size == 0:
    return None
  area = areas[kept]
  cx = np.bincount(lab, weights=xs + 0.5, minlength=n + 1)[kept] / area
  cy = np.bincount(lab, weights=ys + 0.5, minlength=n + 1)[kept] / area

  def side(coord, extent, low, high):
    margin = POSITION_MARGIN_FRAC * extent
    if np.all(coord < extent / 2 - margin):
      return low
    if np.all(coord > extent / 2 + margin):
      return high
    return None

  vertical, horizontal = side(cy, h, "top", "bottom"), side(cx, w, "left", "right")
  position = " ".join(p for p in (vertical, horizontal) if p) or None
  frac = area / (h * w)
  size = ("small" if np.all(frac <= SMALL_MAX_FRAC)
          else "large" if np.all(frac >= LARGE_MIN_FRAC) else None)
  variant = None
  if image is not None:
    whiteness = np.asarray(image)[ys, xs].min(-1).astype(np.float64)
    mean = np.bincount(lab, weights=whiteness, minlength=n + 1)[kept] / area
    variant = ("light" if np.all(mean > LIGHT_MIN)
               else "dark" if np.all(mean < LIGHT_MIN) else None)
  return _Components(
      labels=labels, kept=kept, num_fragments=n - kept.size,
      fact=Fact(class_id, count=int(kept.size), position=position, size=size,
                variant=variant))


def layout_facts(layout: np.ndarray, image: np.ndarray | None = None) -> dict[int, Fact]:
  """Measured facts of every present class: {class_id: Fact}.

  Args:
    layout: [H, W] or [H, W, 1] class ids (e.g. `oracle_segment(image)` to
      judge an image alone).
    image: [H, W, 3] uint8, for the colour variant; None leaves variant None.
  """
  layout = _as_layout(layout)
  if image is not None:
    image = _check_image(image, "layout_facts")
  out = {}
  for class_id in range(1, NUM_CLASSES):
    m = _measure(layout, image, class_id)
    if m is not None:
      out[class_id] = m.fact
  return out


def check_fact_attributes(facts: list[Fact], layout: np.ndarray,
                          image: np.ndarray | None = None) -> list[dict[str, bool]]:
  """Per fact, {"present": ..., and one entry per stated attribute}."""
  layout = _as_layout(layout)
  if image is not None:
    image = _check_image(image, "check_fact_attributes")
  results, cache = [], {}
  for fact in facts:
    if fact.variant is not None and image is None:
      raise ValueError(f"check_facts: {fact} states a colour variant; pass the image.")
    if fact.class_id not in cache:
      cache[fact.class_id] = _measure(layout, image, fact.class_id)
    m = cache[fact.class_id]
    got = m.fact if m is not None else None
    r = {"present": got is not None}
    if fact.count is not None:
      r["count"] = got is not None and got.count == fact.count
    if fact.size is not None:
      r["size"] = got is not None and got.size == fact.size
    if fact.variant is not None:
      r["variant"] = got is not None and got.variant == fact.variant
    if fact.position is not None:
      stated = _position_axes(fact.position)
      measured = _position_axes(got.position) if got is not None else (None, None)
      r["position"] = all(s is None or s == t for s, t in zip(stated, measured))
    results.append(r)
  return results


def check_facts(facts: list[Fact], layout: np.ndarray,
                image: np.ndarray | None = None) -> list[bool]:
  """Whether each fact holds in (layout, image): present and every stated attribute."""
  return [all(r.values()) for r in check_fact_attributes(facts, layout, image)]


def _position_axes(position: str | None) -> tuple[str | None, str | None]:
  """"top left" -> ("top", "left"); "left" -> (None, "left")."""
  words = (position or "").split()
  vertical = next((p for p in words if p in ("top", "bottom")), None)
  horizontal = next((p for p in words if p in ("left", "right")), None)
  return vertical, horizontal


# --- Captions of a rendered scene ----------------------------------------------


def scene_facts(scene: Scene, rendered: RenderedScene) -> list[Fact]:
  """Everything a caption may state about each present class of a scene.

  An attribute is kept only where the scene (what was painted) and the
  measurement (`layout_facts` on the rendered layout and image) agree.
  """
  facts = []
  for class_id in sorted({o.class_id for o in scene.objects}):
    m = _measure(rendered.layout, rendered.image, class_id)
    if m is None:
      continue
    if m.num_fragments:
      # Slivers below the presence threshold: say nothing beyond presence.
      facts.append(Fact(class_id))
      continue
    instances = [j for j, o in enumerate(scene.objects)
                 if o.class_id == class_id and np.any(rendered.owner == j)]
    owners = [set(np.unique(rendered.owner[m.labels == k]).tolist()) for k in m.kept]
    one_to_one = (all(len(o) == 1 for o in owners)
                  and sorted(o.pop() for o in owners) == instances)
    sizes = {scene.objects[j].size for j in instances}
    variants = {scene.objects[j].variant for j in instances}
    got = m.fact
    facts.append(Fact(
        class_id,
        count=got.count if one_to_one else None,
        position=got.position,
        size=got.size if sizes == {got.size} else None,
        variant=got.variant if variants == {got.variant} else None))
  return facts


# Longest caption in words: fits a 24-32 token text encoder, and one mention
# with every attribute (17 words at most) always fits.
MAX_CAPTION_WORDS = 18


def make_captions(facts: list[Fact], rng: np.random.Generator) -> list[str]:
  """1-5 distinct captions, each naming 1-3 of the classes in `facts`.

  Each mention keeps every available attribute with some probability, so
  captions differ in how much they say, and some present classes go unnamed.
  Mentions are dropped from the end while a caption is over MAX_CAPTION_WORDS.
  """
  if not facts:
    raise ValueError("make_captions: a scene needs at least one present class.")
  wanted = int(rng.integers(1, 6))
  out: list[str] = []
  for _ in range(4 * wanted):
    num_facts = int(rng.integers(1, min(3, len(facts)) + 1))
    chosen = [facts[i] for i in rng.permutation(len(facts))[:num_facts]]
    said = []
    for f in chosen:
      keep = rng.random(4) < (0.85, 0.5, 0.6, 0.6)
      # A count of one is always said ("a ball"); others may become "some".
      count = f.count if (f.count == 1 or keep[0]) else None
      said.append(dataclasses.replace(
          f, count=count,
          position=f.position if keep[1] else None,
          size=f.size if keep[2] else None,
          variant=f.variant if keep[3] else None))
    text = captions.random_caption(said, rng)
    while len(text.split()) > MAX_CAPTION_WORDS and len(said) > 1:
      said = said[:-1]
      text = captions.random_caption(said, rng)
    if text not in out:
      out.append(text)
    if len(out) == wanted:
      break
  return out


# --- Examples -----------------------------------------------------------------

SPLIT_CODES = {"train": 0, "test": 1}


def example_id(split: str, index: int) -> str:
  return f"{split}_{index:06d}"


def generate_example(split: str, index: int, resolution: int,
                     seed: int = 0) -> dict:
  """Example `index` of `split`, in the gcd_jax example format (features.py).

  A pure function of (seed, split, index); the same scene (not the same
  noise or captions) appears at every resolution.

  Returns:
    {"image": [R, R, 3] uint8, "layout": [R, R, 1] uint8,
     "captions": list of str, "id": str}
  """
  if split not in SPLIT_CODES:
    raise ValueError(f"generate_example: split {split!r} not in {tuple(SPLIT_CODES)}.")
  # One stream per example: the scene is drawn first, so it does not depend
  # on the resolution; then the noise and the captions.
  rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
  scene = sample_scene(rng)
  rendered = render_scene(scene, resolution, rng)
  facts = scene_facts(scene, rendered)
  return {
      "image": rendered.image,
      "layout": rendered.layout[..., None],
      "captions": make_captions(facts, rng),
      "id": example_id(split, index),
  }


def train_order(num_train: int, seed: int = 0) -> np.ndarray:
  """The seeded permutation of train indices in which the builder stores them.

  Low-data subsets (the paper's -25 / -50 / -100) are its prefixes.
  """
  # Stream code 2: apart from the examples' streams [seed, split code, index].
  return np.random.default_rng([seed, 2]).permutation(num_train)
