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

where "present" means covering at least `area_threshold` of the image (a
fraction of H * W, one value or one per class) and at least one pixel; it is
total area, not the largest connected component. Samples whose caption names no
class have no recall: they are NaN in `per_sample_recall`, left out of the mean
(count them with `np.isnan(per_sample).sum()`), and the mean is NaN when every
sample is left out. Each named class counts once per caption however often it
is mentioned.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from gcd_jax.data import captions as captions_lib
from gcd_jax.data import synthetic_scenes
from gcd_jax.data.features import LayoutClasses
from gcd_jax.metrics import layout_metrics
from gcd_jax.metrics import segmenters

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


# --- Semantic recall -------------------------------------------------------------------


def per_sample_recall(captions: Sequence[str], layouts, classes_named_fn: Callable[[str], Iterable[int]],
                      area_threshold: float | Sequence[float]) -> np.ndarray:
  """Semantic recall of each sample: [N] float64, NaN where the caption names no class.

  Args:
    captions: N captions.
    layouts: [N, H, W] class ids (the generated layouts, or a segmenter's
      reading of the generated images).
    classes_named_fn: caption -> class ids it names (`scenes_named_classes`, or
      `functools.partial(named_classes_by_name, classes=...)`).
    area_threshold: minimum share of the image (H * W) a class must cover to be
      present; one value, or one per class id.
  """
  layouts = _as_layouts(layouts, len(captions), "per_sample_recall")
  pixels = layouts.shape[1] * layouts.shape[2]
  thresholds = np.asarray(area_threshold, np.float64)
  out = np.full(len(captions), np.nan)
  for i, (caption, layout) in enumerate(zip(captions, layouts)):
    named = sorted(set(classes_named_fn(caption)))
    if not named:
      continue
    found = 0
    for c in named:
      t = thresholds if thresholds.ndim == 0 else thresholds[c]
      area = np.count_nonzero(layout == c)
      found += area > 0 and area >= t * pixels
    out[i] = found / len(named)
  return out


def semantic_recall(captions: Sequence[str], layouts, classes_named_fn: Callable[[str], Iterable[int]],
                    area_threshold: float | Sequence[float]) -> float:
  """Mean of `per_sample_recall` over the samples whose caption names a class."""
  r = per_sample_recall(captions, layouts, classes_named_fn, area_threshold)
  r = r[~np.isnan(r)]
  return float(r.mean()) if r.size else float("nan")


def semantic_recall_synthetic(captions: Sequence[str], layouts) -> float:
  """synthetic_scenes: classes named by the caption parser; present with the
  dataset's own presence threshold `MIN_AREA_FRAC` (0.4 % of the image)."""
  return semantic_recall(captions, layouts, scenes_named_classes, synthetic_scenes.MIN_AREA_FRAC)


def semantic_recall_by_name(captions: Sequence[str], layouts, classes: LayoutClasses,
                            synonyms: Mapping[str | int, Iterable[str]] | None = None,
                            area_threshold: float | Sequence[float] = 0.0) -> float:
  """Any dataset: classes named by `named_classes_by_name`; by default a class is
  present with a single pixel (the paper states no threshold)."""
  return semantic_recall(
      captions, layouts, lambda text: named_classes_by_name(text, classes, synonyms), area_threshold)


# --- Attribute accuracy (synthetic_scenes) --------------------------------------------


def attribute_accuracy(captions: Sequence[str], layouts, images) -> dict[str, float]:
  """synthetic_scenes: the share of stated attributes that hold in (layout, image).

  Every caption is parsed into facts (`caption_facts`) and each stated count,
  position, size and colour variant is checked on the layout and image
  (`check_fact_attributes`); an attribute of a named object that is absent
  does not hold. Presence itself is Semantic Recall's business.

  Args:
    captions: N captions.
    layouts: [N, H, W] class ids.
    images: [N, H, W, 3] uint8 (the colour variant is read from the image).

  Returns:
    {"all": share over every stated attribute, "count", "position", "size",
     "variant": the share of each}; NaN where no caption states it.
  """
  layouts = _as_layouts(layouts, len(captions), "attribute_accuracy")
  images = segmenters.check_images(images, "attribute_accuracy")
  if images.shape[:3] != layouts.shape:
    raise ValueError(f"attribute_accuracy: images {images.shape} and layouts {layouts.shape}"
                     " differ in N, H, W.")
  correct = dict.fromkeys(ATTRIBUTES, 0)
  total = dict.fromkeys(ATTRIBUTES, 0)
  for caption, layout, image in zip(captions, layouts, images):
    facts = captions_lib.caption_facts(caption)
    for result in synthetic_scenes.check_fact_attributes(facts, layout, image):
      for a in ATTRIBUTES:
        if a in result:
          total[a] += 1
          correct[a] += bool(result[a])

  def share(c, t):
    return c / t if t else float("nan")

  out = {"all": share(sum(correct.values()), sum(total.values()))}
  out.update({a: share(correct[a], total[a]) for a in ATTRIBUTES})
  return out


# --- Image-layout agreement ---------------------------------------------------------


def layout_for_image_only(images, segmenter: segmenters.Segmenter) -> np.ndarray:
  """The layout of an image-only model: segmenter(images), [N, H, W] int32, checked."""
  images = segmenters.check_images(images, "layout_for_image_only")
  return segmenters.check_layouts(segmenter(images), images,
                                  getattr(segmenter, "num_classes", None), f"segmenter {segmenter!r}")


def image_layout_agreement(images, layouts, segmenter: segmenters.Segmenter,
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
  k = num_classes if num_classes is not None else getattr(segmenter, "num_classes", None)
  if k is None:
    raise ValueError("image_layout_agreement: the segmenter does not say its num_classes; pass it.")
  seg = layout_for_image_only(images, segmenter)
  layouts = _as_layouts(layouts, len(seg), "image_layout_agreement")
  if ignore_id is not None:
    seg = np.where(layouts == ignore_id, ignore_id, seg)
  return layout_metrics.miou(layouts, seg, k, ignore_id)
