"""Text-layout correspondence: does the generated pair show what the caption says?

  semantic_recall      share of the classes a caption names that the layout shows
  attribute_accuracy   share of the stated count / position / size / colour variant
                       that hold (synthetic_scenes, whose captions parse exactly)
  image_layout_agreement   mIoU of the generated layout vs a segmenter's reading
                           of the generated image

Which layout to score. The paper's Semantic Recall runs a segmenter (HRNet) on
the generated image; passing `layout_for_image_only(images, segmenter)` as the
layouts reproduces that, and is also how an image-only baseline is scored (its
layout metrics use the segmenter's layout; its image-layout agreement is then
trivially 1 and is not reported). Passing the generated layouts instead measures
text-layout correspondence directly.

Semantic Recall, per sample:

  |named classes present in the layout| / |named classes|

where "present" follows the rule the dataset's captions were written with
(`PresenceRule`, `presence_rule(dataset)`): on synthetic_scenes a connected
component (8-connectivity) of at least MIN_AREA_FRAC of the image, on
Cityscapes a total area of at least 1 % of the image (the caption template's
rule), elsewhere a connected component of at least 0.4 %. Speckle does not
count: on synthetic_scenes and by default the class mask is first opened with a
2 x 2 square, so only regions at least 2 pixels thick remain. On real
synthetic_scenes layouts that changes 3 of 3946 presence decisions of the
caption checker (1000 test scenes at 32x32: rings with 1-pixel walls), while
the oracle's reading of uniform noise, which is full of same-hue 8-connected
clusters, drops from 0.99 to 0.01 recall. Samples whose caption names no
class have no recall: they are NaN in `per_sample_recall`, left out of the mean
(count them with `np.isnan(per_sample).sum()`), and the mean is NaN when every
sample is left out. Each named class counts once per caption however often it
is mentioned.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from gcd_jax.data import captions as captions_lib
from gcd_jax.data import synthetic_scenes
from gcd_jax.data.features import LayoutClasses
from gcd_jax.metrics import layout_metrics
from gcd_jax.metrics import segmenters

if TYPE_CHECKING:
  import jax

ATTRIBUTES = ("count", "position", "size", "variant")


def _as_layouts(layouts, n: int, where: str) -> np.ndarray:
  layouts = np.asarray(layouts)
  if layouts.ndim == 4 and layouts.shape[-1] == 1:
    layouts = layouts[..., 0]
  if layouts.ndim != 3 or len(layouts) != n:
    raise ValueError(f"{where}: need {n} layouts [N, H, W] (one per caption), got shape"
                     f" {layouts.shape}.")
  return layouts


# --- Which classes a caption names ---------------------------------------------


def scenes_named_classes(caption: str) -> set[int]:
  """synthetic_scenes: the class ids a caption names, by its exact parser."""
  return {f.class_id for f in captions_lib.caption_facts(caption)}


# Plurals that adding "s" / "es" / "ies" does not make.
_IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children",
                      "foot": "feet", "tooth": "teeth", "leaf": "leaves", "mouse": "mice"}
_SEPARATOR = r"[\s_]+"


def _word_forms(word: str) -> set[str]:
  """A noun and its plurals: "bus" -> {bus, buses}, "sky" -> {sky, skies}."""
  forms = {word, word + "s"}
  if word.endswith(("s", "x", "z", "ch", "sh")):
    forms.add(word + "es")
  if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
    forms.add(word[:-1] + "ies")
  if word in _IRREGULAR_PLURALS:
    forms.add(_IRREGULAR_PLURALS[word])
  return forms


def _normalise(phrase: str) -> str:
  return " ".join(re.split(_SEPARATOR, phrase.strip().lower()))


@functools.lru_cache(maxsize=32)
def _name_matcher(classes: LayoutClasses,
                  synonyms: tuple[tuple[str | int, tuple[str, ...]], ...]
                  ) -> tuple[re.Pattern, dict[str, int]]:
  """(one regex matching every surface form, {normalised form: class id})."""
  phrases = [(c, name) for c, name in enumerate(classes.names)]
  for key, extra in synonyms:
    if isinstance(key, str):
      if key not in classes.names:
        raise ValueError(f"synonyms: {key!r} is not a class name; names: {classes.names}.")
      c = classes.names.index(key)
    elif 0 <= key < classes.num_classes:
      c = key
    else:
      raise ValueError(f"synonyms: class id {key} not in [0, {classes.num_classes}).")
    phrases += [(c, p) for p in extra]
  form_to_class: dict[str, int] = {}
  for c, phrase in phrases:
    form = _normalise(phrase)
    if not form:
      raise ValueError(f"class {c}: empty name or synonym {phrase!r}.")
    if form_to_class.setdefault(form, c) != c:
      raise ValueError(f"{form!r} names two classes, {classes.names[form_to_class[form]]!r}"
                       f" and {classes.names[c]!r}; drop it from the synonyms.")
  # Plurals after every given phrase: a class named "glasses" keeps its name
  # even if another is named "glass".
  for c, phrase in phrases:
    words = _normalise(phrase).split()
    for last in _word_forms(words[-1]):
      form_to_class.setdefault(" ".join(words[:-1] + [last]), c)
  # Longest first, so that "traffic light" wins over a class named "light".
  alternatives = sorted(form_to_class, key=lambda f: (-len(f), f))
  pattern = r"\b(?:" + "|".join(_SEPARATOR.join(map(re.escape, f.split())) for f in alternatives
                                ) + r")\b"
  return re.compile(pattern, re.IGNORECASE), form_to_class


def named_classes_by_name(caption: str, classes: LayoutClasses,
                          synonyms: Mapping[str | int, Iterable[str]] | None = None) -> set[int]:
  """The class ids whose name (or a synonym) appears in `caption`.

  Matching is case-insensitive, on whole words; underscores in names count as
  spaces ("traffic_light" matches "Traffic lights"); plurals are the name + "s",
  + "es" after s/x/z/ch/sh, y -> "ies", and a few irregular ones (person ->
  people). Where names overlap, the longest match wins; a given name or synonym
  wins over another class's plural. Every class is matched, "background" and
  "unlabeled" included: drop the ids you do not want scored.

  Args:
    caption: the text.
    classes: the dataset's LayoutClasses (e.g. `pipeline.layout_classes(...)`).
    synonyms: extra phrases per class, keyed by class name or id,
      e.g. {"person": ["pedestrian"]}.
  """
  frozen = tuple(sorted(((k, tuple(v)) for k, v in (synonyms or {}).items()), key=repr))
  pattern, form_to_class = _name_matcher(classes, frozen)
  return {form_to_class[_normalise(m.group(0))] for m in pattern.finditer(caption)}


# --- When a class is present ----------------------------------------------------------

_EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclasses.dataclass(frozen=True)
class PresenceRule:
  """When a layout shows a class.

  Attributes:
    min_area_frac: the least share of the image (H * W) a class must cover, one
      value or one per class id; a present class always has at least one pixel.
    connected: the area is that of one connected component (8-connectivity),
      not the class's total: speckle does not add up to a present class.
  """

  min_area_frac: float | tuple[float, ...]
  connected: bool
  open_size: int = 0  # >= 2: open the class mask with an open_size^2 square first

  def describe(self) -> str:
    opened = f",open{self.open_size}" if self.open_size > 1 else ""
    return f"{'component' if self.connected else 'total'}>={self.min_area_frac}{opened}"

  def present(self, layout: np.ndarray, class_id: int) -> bool:
    """Whether `layout` [H, W] shows `class_id` under this rule."""
    t = self.min_area_frac
    t = float(t if np.ndim(t) == 0 else t[class_id])
    mask = layout == class_id
    if self.open_size > 1 and mask.any():
      mask = ndimage.binary_opening(mask, structure=np.ones((self.open_size,) * 2, bool))
    need = max(t * layout.size, 1e-9)
    if not self.connected:
      return bool(np.count_nonzero(mask) >= need)
    if np.count_nonzero(mask) < need:
      return False
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    return bool(np.bincount(labels.ravel(), minlength=n + 1)[1:].max() >= need)


SYNTHETIC_PRESENCE = PresenceRule(synthetic_scenes.MIN_AREA_FRAC, connected=True, open_size=2)
CITYSCAPES_PRESENCE = PresenceRule(0.01, connected=False)  # its captions' rule; poles are thin
DEFAULT_PRESENCE = PresenceRule(0.004, connected=True, open_size=2)


def presence_rule(dataset: str) -> PresenceRule:
  """The presence rule of a dataset ("name" or "name/config"): the one its captions use."""
  name = dataset.split("/")[0]
  if name == "synthetic_scenes":
    return SYNTHETIC_PRESENCE
  if name == "cityscapes_text":
    return CITYSCAPES_PRESENCE
  return DEFAULT_PRESENCE


# --- Semantic recall -------------------------------------------------------------------


def per_sample_recall(captions: Sequence[str], layouts: jax.Array | np.ndarray,
                      classes_named_fn: Callable[[str], Iterable[int]],
                      area_threshold: float | Sequence[float] | None = None, *,
                      presence: PresenceRule | None = None) -> np.ndarray:
  """Semantic recall of each sample: [N] float64, NaN where the caption names no class.

  Args:
    captions: N captions.
    layouts: [N, H, W] class ids (a segmenter's reading of the generated
      images, or the generated layouts).
    classes_named_fn: caption -> class ids it names (`scenes_named_classes`, or
      `functools.partial(named_classes_by_name, classes=...)`).
    area_threshold: minimum total share of the image (H * W) a class must
      cover to be present; one value, or one per class id. Shorthand for
      `presence=PresenceRule(area_threshold, connected=False)`.
    presence: the presence rule (give this or area_threshold).
  """
  if (presence is None) == (area_threshold is None):
    raise ValueError("per_sample_recall: give exactly one of area_threshold and presence.")
  if presence is None:
    t = np.asarray(area_threshold, np.float64)
    presence = PresenceRule(float(t) if t.ndim == 0 else tuple(t.tolist()), connected=False)
  layouts = _as_layouts(layouts, len(captions), "per_sample_recall")
  out = np.full(len(captions), np.nan)
  for i, (caption, layout) in enumerate(zip(captions, layouts)):
    named = sorted(set(classes_named_fn(caption)))
    if not named:
      continue
    out[i] = sum(presence.present(layout, c) for c in named) / len(named)
  return out


def semantic_recall(captions: Sequence[str], layouts: jax.Array | np.ndarray,
                    classes_named_fn: Callable[[str], Iterable[int]],
                    area_threshold: float | Sequence[float] | None = None, *,
                    presence: PresenceRule | None = None) -> float:
  """Mean of `per_sample_recall` over the samples whose caption names a class."""
  r = per_sample_recall(captions, layouts, classes_named_fn, area_threshold, presence=presence)
  r = r[~np.isnan(r)]
  return float(r.mean()) if r.size else float("nan")


def semantic_recall_synthetic(captions: Sequence[str], layouts: jax.Array | np.ndarray) -> float:
  """synthetic_scenes: classes named by the caption parser; present with the
  dataset's own rule (a connected component of MIN_AREA_FRAC, 0.4 % of the image)."""
  return semantic_recall(captions, layouts, scenes_named_classes, presence=SYNTHETIC_PRESENCE)


def semantic_recall_by_name(captions: Sequence[str], layouts: jax.Array | np.ndarray,
                            classes: LayoutClasses,
                            synonyms: Mapping[str | int, Iterable[str]] | None = None,
                            area_threshold: float | Sequence[float] | None = None, *,
                            presence: PresenceRule | None = None) -> float:
  """Any dataset: classes named by `named_classes_by_name`; by default a class is
  present with a single pixel (give the dataset's `presence_rule`)."""
  if presence is None and area_threshold is None:
    area_threshold = 0.0
  return semantic_recall(
      captions, layouts, lambda text: named_classes_by_name(text, classes, synonyms), area_threshold,
      presence=presence)


# --- Attribute accuracy (synthetic_scenes) --------------------------------------------


def attribute_counts(captions: Sequence[str], layouts: jax.Array | np.ndarray,
                     images: jax.Array | np.ndarray,
                     presence: PresenceRule | None = None) -> tuple[np.ndarray, np.ndarray]:
  """synthetic_scenes: per sample, (attributes that hold, attributes stated), each
  [N, 4] int64 in the order of ATTRIBUTES (count, position, size, variant).

  Every caption is parsed into facts (`caption_facts`) and each stated count,
  position, size and colour variant is checked on the layout and image
  (`check_fact_attributes`, the exact checker); an attribute of a named object
  that is absent does not hold, and with `presence` neither does one of an
  object that is not present under that rule (speckle has no attributes).
  Presence itself is Semantic Recall's business.
  """
  layouts = _as_layouts(layouts, len(captions), "attribute_accuracy")
  images = segmenters.check_images(images, "attribute_accuracy")
  if images.shape[:3] != layouts.shape:
    raise ValueError(f"attribute_accuracy: images {images.shape} and layouts {layouts.shape}"
                     " differ in N, H, W.")
  correct = np.zeros((len(captions), len(ATTRIBUTES)), np.int64)
  total = np.zeros_like(correct)
  for i, (caption, layout, image) in enumerate(zip(captions, layouts, images)):
    facts = captions_lib.caption_facts(caption)
    for fact, result in zip(facts, synthetic_scenes.check_fact_attributes(facts, layout, image)):
      there = presence is None or presence.present(layout, fact.class_id)
      for a, name in enumerate(ATTRIBUTES):
        if name in result:
          total[i, a] += 1
          correct[i, a] += bool(result[name]) and there
  return correct, total


def attribute_shares(correct: np.ndarray, total: np.ndarray) -> dict[str, float]:
  """{"all", "count", "position", "size", "variant"}: summed holds / summed stated
  over the samples (rows) given; NaN where nothing is stated."""

  def share(c, t):
    return float(c / t) if t else float("nan")

  c, t = correct.sum(0), total.sum(0)
  out = {"all": share(c.sum(), t.sum())}
  out.update({a: share(c[i], t[i]) for i, a in enumerate(ATTRIBUTES)})
  return out


def attribute_accuracy(captions: Sequence[str], layouts: jax.Array | np.ndarray,
                       images: jax.Array | np.ndarray,
                       presence: PresenceRule | None = None) -> dict[str, float]:
  """synthetic_scenes: the share of stated attributes that hold in (layout, image).

  Args:
    captions: N captions.
    layouts: [N, H, W] class ids.
    images: [N, H, W, 3] uint8 (the colour variant is read from the image).

  Returns:
    {"all": share over every stated attribute, "count", "position", "size",
     "variant": the share of each}; NaN where no caption states it. See
    `attribute_counts`.
  """
  return attribute_shares(*attribute_counts(captions, layouts, images, presence))


# --- Image-layout agreement ---------------------------------------------------------


def layout_for_image_only(images: jax.Array | np.ndarray,
                          segmenter: segmenters.Segmenter) -> np.ndarray:
  """The layout of an image-only model: segmenter(images), [N, H, W] int32, checked."""
  images = segmenters.check_images(images, "layout_for_image_only")
  return segmenters.check_layouts(segmenter(images), images,
                                  getattr(segmenter, "num_classes", None), f"segmenter {segmenter!r}")


def image_layout_agreement(images: jax.Array | np.ndarray, layouts: jax.Array | np.ndarray,
                           segmenter: segmenters.Segmenter,
                           num_classes: int | None = None,
                           ignore_id: int | None = None) -> tuple[float, np.ndarray]:
  """mIoU of the generated layouts vs segmenter(generated images).

  Args:
    images: [N, H, W, 3] uint8.
    layouts: [N, H, W] class ids.
    segmenter: see `segmenters.Segmenter`.
    num_classes: K; defaults to `segmenter.num_classes`.
    ignore_id: pixels where either layout has this value are left out.

  Returns:
    (mIoU, per-class IoU [K]) as `layout_metrics.miou`, target = the
    segmentation. For many samples, feed batches to `layout_metrics.MIoU`.
  """
  if num_classes is None:
    num_classes = getattr(segmenter, "num_classes", None)
  if num_classes is None:
    raise ValueError("image_layout_agreement: the segmenter does not say its num_classes; pass it.")
  seg = layout_for_image_only(images, segmenter)
  layouts = _as_layouts(layouts, len(seg), "image_layout_agreement")
  if ignore_id is not None:
    seg = np.where(layouts == ignore_id, ignore_id, seg)
  return layout_metrics.miou(layouts, seg, num_classes, ignore_id)
