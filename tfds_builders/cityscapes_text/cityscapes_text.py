"""`cityscapes_text`: Cityscapes street scenes with 20-class layouts and captions.

Read from `manual_dir` (never downloaded; the files of leftImg8bit_trainvaltest.zip
and gtFine_trainvaltest.zip from cityscapes-dataset.com, unzipped)::

  manual_dir/
    leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png
    captions.jsonl      optional: {"id": "{city}_{seq}_{frame}", "captions": ["...", ...]}
                        one line per image of train and val
      or caption_files/100_captions.jsonl
                        GCDP's released captions as they are: {"file_name":
                        "{city}_{seq}_{frame}_leftImg8bit.png", "text": ["...", ...]}

Layouts: Cityscapes label ids mapped to the 19 standard train ids (road 0 ...
bicycle 18) and every other label id (void classes, 255) to "unlabeled" = 19,
so K = 20 and every pixel is a class (GCDP generates the unlabeled region too).
A label id outside 0..33 and 255 is an error.

Captions, without captions.jsonl: one per image from the classes present, in the
paper's template, "An image of an urban street view with Buildings, Roads,
Vegetation and Cars." Classes are named from the largest area down, and only
when they cover at least `min_area` (default 1 %) of the image, so that a few
stray pixels do not put a class in the caption (and in Semantic Recall, which
scores the classes a caption names). "unlabeled" is never named.

Stored resolution: by config, "256x512" (default; the base 128x256 and the
super-resolution 256x512 stages both read it) or "full" (1024x2048). Images
are resized with Lanczos, layouts with nearest neighbour; captions are computed
at full resolution. Decoding 2048x1024 PNGs costs ~40 ms each, far too slow to
do at every training step.

Splits: train (in a seeded random order), val, and the paper's 3,475-image
training set "train+val" (TFDS split arithmetic; also the alias "trainval").
The test split has no public labels and is not built.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from gcd_jax.data import build_utils
from gcd_jax.data.build_utils import BuildError
from gcd_jax.data.features import LayoutClasses, make_features

_MODULE_DOC = __doc__

# (name, caption word, colour) of the 19 evaluated classes; train id = position.
_TRAIN_CLASSES = (
    ("road", "Roads", (128, 64, 128)),
    ("sidewalk", "Sidewalks", (244, 35, 232)),
    ("building", "Buildings", (70, 70, 70)),
    ("wall", "Walls", (102, 102, 156)),
    ("fence", "Fences", (190, 153, 153)),
    ("pole", "Poles", (153, 153, 153)),
    ("traffic light", "Traffic lights", (250, 170, 30)),
    ("traffic sign", "Traffic signs", (220, 220, 0)),
    ("vegetation", "Vegetation", (107, 142, 35)),
    ("terrain", "Terrain", (152, 251, 152)),
    ("sky", "Sky", (70, 130, 180)),
    ("person", "People", (220, 20, 60)),
    ("rider", "Riders", (255, 0, 0)),
    ("car", "Cars", (0, 0, 142)),
    ("truck", "Trucks", (0, 0, 70)),
    ("bus", "Buses", (0, 60, 100)),
    ("train", "Trains", (0, 80, 100)),
    ("motorcycle", "Motorcycles", (0, 0, 230)),
    ("bicycle", "Bicycles", (119, 11, 32)),
)
UNLABELED = 19
CLASSES = LayoutClasses(
    names=tuple(c[0] for c in _TRAIN_CLASSES) + ("unlabeled",),
    colors=tuple(c[2] for c in _TRAIN_CLASSES) + ((0, 0, 0),),
    ignore_id=None,
    flip_pairs=(),  # Street scenes have no left/right classes.
)
CAPTION_WORDS = tuple(c[1] for c in _TRAIN_CLASSES)

# cityscapesScripts labels.py: label id -> train id (255 = not evaluated).
_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                   23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
MAX_LABEL_ID = 33
LABEL_TO_TRAIN_TABLE = np.full(256, UNLABELED, np.uint8)
for _label_id, _train_id in _LABEL_TO_TRAIN.items():
  LABEL_TO_TRAIN_TABLE[_label_id] = _train_id

CAPTION_PREFIX = "An image of an urban street view"
DEFAULT_MIN_AREA = 0.01
SPLITS = ("train", "val")


def label_ids_to_layout(label_ids: np.ndarray, path: str) -> np.ndarray:
  """[H, W] uint8 Cityscapes label ids -> [H, W] uint8 class ids in [0, 20)."""
  values = np.unique(label_ids)
  bad = values[(values > MAX_LABEL_ID) & (values != 255)]
  if bad.size:
    raise BuildError(f"{path}: value(s) {bad.tolist()} are not Cityscapes label ids"
                     f" (0..{MAX_LABEL_ID}, or 255); is this a *_gtFine_labelIds.png?")
  return LABEL_TO_TRAIN_TABLE[label_ids]


def caption_from_layout(layout: np.ndarray, min_area: float = DEFAULT_MIN_AREA) -> str:
  """The paper's caption: classes covering >= min_area of the image, largest first.

  layout: [H, W] class ids in [0, 20).
  """
  counts = np.bincount(layout.ravel(), minlength=len(CLASSES.names))[:UNLABELED]
  present = [c for c in range(UNLABELED) if counts[c] >= min_area * layout.size and counts[c]]
  present.sort(key=lambda c: (-counts[c], c))
  words = [CAPTION_WORDS[c] for c in present]
  if not words:
    return CAPTION_PREFIX + "."
  listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
  return f"{CAPTION_PREFIX} with {listed}."


class CityscapesTextConfig(tfds.core.BuilderConfig):
  """Attributes: size: stored (H, W), None = as given; min_area: caption area
  threshold (fraction of pixels); seed: train-order seed."""

  def __init__(self, *, size: tuple[int, int] | None, min_area: float = DEFAULT_MIN_AREA,
               seed: int = 0, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.size = size
    self.min_area = min_area
    self.seed = seed


class CityscapesText(tfds.core.GeneratorBasedBuilder):
  """Cityscapes with captions for GCDP; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIG_CLASS = CityscapesTextConfig
  BUILDER_CONFIGS = [
      CityscapesTextConfig(name="256x512", size=(256, 512), description="256x512 (default)."),
      CityscapesTextConfig(name="full", size=None, description="1024x2048, as released."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "256x512"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MODULE_DOC  # The file layout, for prepare's error.
  # TFDS derives this from the package through `importlib_resources`, a package
  # our installs do not have; giving it here avoids that import.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size or (None, None)
    aliases = {"trainval": "train+val", **build_utils.subset_split_aliases("train")}
    return tfds.core.DatasetInfo(
        builder=self,
        description="Cityscapes fine annotations as 20-class layouts, with captions.",
        features=make_features(*size),
        metadata=tfds.core.MetadataDict(
            build_utils.layout_classes_metadata(CLASSES, split_aliases=aliases)),
        disable_shuffling=True,  # Keeps the seeded train order.
        homepage="https://www.cityscapes-dataset.com",
    )

  def _split_generators(self, dl_manager):
    root = build_utils.require_dir(dl_manager.manual_dir, "cityscapes_text manual")
    cfg = self.builder_config
    pairs = {split: find_pairs(root, split) for split in SPLITS}
    captions_path = find_captions(root)
    captions = read_captions_jsonl(captions_path) if captions_path else None
    if captions is not None:
      for split, items in pairs.items():
        for item in items:
          if item["id"] not in captions:
            raise BuildError(f"{item['image']}: image without captions (no line with id"
                             f" {item['id']!r} in {captions_path}).")
    order = {item["id"]: item for item in pairs["train"]}
    pairs["train"] = [order[i] for i in build_utils.seeded_permutation(order, cfg.seed)]
    return {split: self._generate_examples(items, captions) for split, items in pairs.items()}

  def _generate_examples(self, items, captions: dict[str, list[str]] | None):
    cfg = self.builder_config
    for key, item in enumerate(items):
      image = build_utils.read_image(item["image"])
      label_ids = build_utils.read_layout(item["layout"])
      build_utils.check_same_size(image, label_ids, item["image"], item["layout"])
      layout = label_ids_to_layout(label_ids, item["layout"])
      caps = (captions[item["id"]] if captions is not None
              else [caption_from_layout(layout, cfg.min_area)])
      if cfg.size is not None:
        image = build_utils.resize_image(image, cfg.size)
        layout = build_utils.resize_layout(layout, cfg.size)
      yield key, build_utils.make_example(image, layout, caps, item["id"])


def find_pairs(root: str, split: str) -> list[dict]:
  """[{"id", "image", "layout"}] of one split, sorted by id."""
  images_root = build_utils.require_dir(os.path.join(root, "leftImg8bit", split),
                                        f"Cityscapes leftImg8bit/{split}")
  labels_root = os.path.join(root, "gtFine", split)
  build_utils.require_dir(labels_root, f"Cityscapes gtFine/{split}")
  items = []
  for city in sorted(os.listdir(images_root)):
    city_dir = os.path.join(images_root, city)
    if not os.path.isdir(city_dir):
      continue
    for name in sorted(os.listdir(city_dir)):
      if not name.endswith("_leftImg8bit.png"):
        continue
      stem = name[: -len("_leftImg8bit.png")]
      label = os.path.join(labels_root, city, f"{stem}_gtFine_labelIds.png")
      if not os.path.exists(label):
        raise BuildError(f"{os.path.join(city_dir, name)}: no layout {label}.")
      items.append({"id": stem, "image": os.path.join(city_dir, name), "layout": label})
  if not items:
    raise BuildError(f"{images_root}: no {{city}}/*_leftImg8bit.png images.")
  return items


def read_captions_jsonl(path: str) -> dict[str, list[str]] | None:
  """{image id: captions} from a jsonl file (ours or GCDP's format), or None when there is none."""
  if not os.path.exists(path):
    return None
  return build_utils.read_caption_jsonl(path, image_id)


def image_id(file_name: str) -> str:
  """"aachen_000000_000019_leftImg8bit.png" (GCDP's caption files) -> "aachen_000000_000019"."""
  name = os.path.basename(file_name)
  return name[: -len("_leftImg8bit.png")] if name.endswith("_leftImg8bit.png") else (
      os.path.splitext(name)[0])


def find_captions(root: str) -> str | None:
  """The caption file of a manual dir: captions.jsonl, or GCDP's released
  caption_files/100_captions.jsonl; both is ambiguous."""
  ours, official = (os.path.join(root, "captions.jsonl"),
                    os.path.join(root, "caption_files", "100_captions.jsonl"))
  found = [p for p in (ours, official) if os.path.exists(p)]
  if len(found) == 2:
    raise BuildError(f"{ours} and {official} both exist: keep the one to build with.")
  return found[0] if found else None
