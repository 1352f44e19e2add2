"""`mm_celeba_hq`: CelebA-HQ faces, CelebAMask-HQ layouts, MM-CelebA-HQ captions.

Read from `manual_dir` (never downloaded)::

  manual_dir/
    CelebA-HQ-img/{id}.jpg                      30,000 RGB images, 1024x1024, id 0..29999
    CelebAMask-HQ-mask-anno/{k}/{id:05d}_{part}.png
                                                per-part masks, 512x512; folder k holds
                                                ids 2000k .. 2000k+1999; non-zero = part
      or CelebAMask-HQ-mask/{id}.png            already merged 19-class masks (used
                                                instead of the parts when present)
    celeba-caption/{id}.txt                     captions, one per line (10 per image)
    train/filenames.pickle, test/filenames.pickle   optional: the MM-CelebA-HQ split,
      or train.txt, test.txt                        pickled lists / one id per line

Part merge: parts are painted in class-id order (skin first, cloth last) and a
later part wins where parts overlap. That is the order of the CelebAMask-HQ
reference script g_mask.py (it paints its label list in that order), so the
merged maps equal the widely used CelebAMask-HQ-mask files: hair over skin and
ears, neck and cloth over everything painted before.

With split lists, images in neither list are left out. Without them a seeded
20 % of the images is held out as test (the MM-CelebA-HQ split has 24,000 /
6,000).

Stored resolution: square `size` per config, "256" (default; base 128 and the
256 super-resolution stage both read it) or "512" (the mask resolution). Images
are resized with Lanczos (JPEG decoded in draft mode at >= 2x the size), masks
with nearest neighbour. Resizing at build time keeps "256" at ~4 GB instead of
~100 GB of 1024 px PNGs, and keeps 1024 px JPEG decoding out of training.

Splits: train (in a seeded random order, so the GCDP low-data subsets
MM CelebA-HQ-25/50/100 are the split aliases train_25 = train[:25%],
train_50 = train[:50%], train_100 = train), test.
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

# Class id = index; 0 is background. The order of docs/gcdp.md section 5 and of
# CelebAMask-HQ's g_mask.py label list (shifted by one for background).
PARTS = ("skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
         "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth")
# CelebAMask-HQ's own visualisation palette.
_COLORS = ((0, 0, 0), (204, 0, 0), (76, 153, 0), (204, 204, 0), (51, 51, 255), (204, 0, 204),
           (0, 255, 255), (255, 204, 204), (102, 51, 0), (255, 0, 0), (102, 204, 0),
           (255, 255, 0), (0, 0, 153), (0, 0, 204), (255, 51, 153), (0, 204, 204), (0, 51, 0),
           (255, 153, 51), (0, 204, 0))
_NAMES = ("background",) + PARTS
CLASSES = LayoutClasses(
    names=_NAMES,
    colors=_COLORS,
    ignore_id=None,
    flip_pairs=tuple((_NAMES.index(f"l_{p}"), _NAMES.index(f"r_{p}"))
                     for p in ("eye", "brow", "ear")),
)

IMAGES_DIR = "CelebA-HQ-img"
PARTS_DIR = "CelebAMask-HQ-mask-anno"
MERGED_DIR = "CelebAMask-HQ-mask"
CAPTIONS_DIR = "celeba-caption"
IDS_PER_PART_FOLDER = 2000
DEFAULT_TEST_FRACTION = 0.2


class MmCelebaHqConfig(tfds.core.BuilderConfig):
  """Attributes: size: stored side length; seed: split / train-order seed;
  test_fraction: held out when there are no split lists."""

  def __init__(self, *, size: int, seed: int = 0,
               test_fraction: float = DEFAULT_TEST_FRACTION, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    self.size = size
    self.seed = seed
    self.test_fraction = test_fraction


class MmCelebaHq(tfds.core.GeneratorBasedBuilder):
  """MM CelebA-HQ for GCDP; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIG_CLASS = MmCelebaHqConfig
  BUILDER_CONFIGS = [
      MmCelebaHqConfig(name="256", size=256, description="256x256 (default)."),
      MmCelebaHqConfig(name="512", size=512, description="512x512, the mask resolution."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "256"
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MODULE_DOC  # The file layout, for prepare's error.
  # TFDS derives this from the package through `importlib_resources`, a package
  # our installs do not have; giving it here avoids that import.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.size
    return tfds.core.DatasetInfo(
        builder=self,
        description="MM CelebA-HQ: faces, 19-class face-part layouts, 10 captions each.",
        features=make_features(size, size),
        metadata=tfds.core.MetadataDict(build_utils.layout_classes_metadata(
            CLASSES, split_aliases=build_utils.subset_split_aliases("train"))),
        disable_shuffling=True,  # Keeps the seeded train order (subsets are prefixes).
        homepage="https://github.com/IIGROUP/MM-CelebA-HQ-Dataset",
    )

  def _split_generators(self, dl_manager):
    root = build_utils.require_dir(dl_manager.manual_dir, "mm_celeba_hq manual")
    cfg = self.builder_config
    splits = plan_splits(root, cfg.test_fraction, cfg.seed)
    return {name: self._generate_examples(root, ids) for name, ids in splits.items()}

  def _generate_examples(self, root: str, ids: list[str]):
    size = (self.builder_config.size,) * 2
    merged_dir = os.path.join(root, MERGED_DIR)
    use_merged = os.path.isdir(merged_dir)
    for key, example_id in enumerate(ids):
      image_path = os.path.join(root, IMAGES_DIR, f"{example_id}.jpg")
      image = build_utils.read_image(image_path, draft_size=(2 * size[1], 2 * size[0]))
      if use_merged:
        layout_path = os.path.join(merged_dir, f"{example_id}.png")
        layout = build_utils.read_layout(layout_path)
        build_utils.check_layout_values(layout, CLASSES, layout_path)
      else:
        layout, layout_path = merge_part_masks(os.path.join(root, PARTS_DIR), example_id)
      _check_same_aspect(image, layout, image_path, layout_path)
      captions = build_utils.read_caption_lines(
          os.path.join(root, CAPTIONS_DIR, f"{example_id}.txt"))
      yield key, build_utils.make_example(
          build_utils.resize_image(image, size), build_utils.resize_layout(layout, size),
          captions, example_id)


def _check_same_aspect(image, layout, image_path, layout_path):
  # The CelebA-HQ image (1024) and its masks (512) differ in size by design;
  # only a different shape would mean mismatched files.
  (ih, iw), (lh, lw) = image.shape[:2], layout.shape[:2]
  if ih * lw != iw * lh:
    raise BuildError(f"{image_path} is {iw}x{ih} (WxH) but its layout {layout_path} is"
                     f" {lw}x{lh}: the aspect ratios differ.")


def merge_part_masks(parts_dir: str, example_id: str) -> tuple[np.ndarray, str]:
  """Merges the CelebAMask-HQ part masks of one image into class ids.

  Returns:
    ([H, W] uint8 layout, 0 = background, class c = PARTS[c - 1]; parts
    painted in class order, later parts winning), and a path naming the masks.
  """
  folder = os.path.join(parts_dir, str(int(example_id) // IDS_PER_PART_FOLDER))
  pattern = os.path.join(folder, f"{int(example_id):05d}_{{part}}.png")
  layout = None
  for class_id, part in enumerate(PARTS, start=1):
    path = pattern.format(part=part)
    if not os.path.exists(path):
      continue  # Not every face has every part (no hat, no earring, ...).
    mask = _read_part_mask(path)
    if layout is None:
      layout = np.zeros(mask.shape, np.uint8)
    elif mask.shape != layout.shape:
      raise BuildError(f"{path}: part mask is {mask.shape[1]}x{mask.shape[0]} but other parts of"
                       f" image {example_id} are {layout.shape[1]}x{layout.shape[0]}.")
    layout[mask] = class_id
  if layout is None:
    raise BuildError(f"{pattern.format(part='*')}: no part mask for image {example_id}.")
  return layout, pattern.format(part="*")


def _read_part_mask(path: str) -> np.ndarray:
  """[H, W] bool, True where the part is (any non-zero value in any channel, as
  g_mask.py's `im != 0`)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      arr = np.asarray(im.convert("L") if im.mode not in ("L", "1", "RGB") else im)
  except (OSError, SyntaxError, ValueError) as e:
    raise BuildError(f"{path}: cannot decode part mask ({e}).") from e
  return arr.any(axis=-1) if arr.ndim == 3 else arr != 0


def _find_split_lists(root: str) -> tuple[str, str] | None:
  for train, test in ((os.path.join("train", "filenames.pickle"),
                       os.path.join("test", "filenames.pickle")),
                      ("train.txt", "test.txt")):
    train, test = os.path.join(root, train), os.path.join(root, test)
    if os.path.exists(train) or os.path.exists(test):
      for path in (train, test):
        if not os.path.exists(path):
          raise BuildError(f"{path}: missing, while its train/test partner exists.")
      return train, test
  return None


def plan_splits(root: str, test_fraction: float, seed: int) -> dict[str, list[str]]:
  """{"train": ids in a seeded random order, "test": ids in order}."""
  images_dir = build_utils.require_dir(os.path.join(root, IMAGES_DIR), "CelebA-HQ images")
  build_utils.require_dir(os.path.join(root, CAPTIONS_DIR), "MM-CelebA-HQ captions")
  if not os.path.isdir(os.path.join(root, MERGED_DIR)):
    build_utils.require_dir(os.path.join(root, PARTS_DIR), "CelebAMask-HQ part masks")
  available = set()
  for name in os.listdir(images_dir):
    stem, ext = os.path.splitext(name)
    if ext.lower() == ".jpg":
      if not stem.isdigit():
        raise BuildError(f"{os.path.join(images_dir, name)}: CelebA-HQ image names are numeric"
                         " ids ({id}.jpg).")
      available.add(str(int(stem)))
  if not available:
    raise BuildError(f"{images_dir}: no {{id}}.jpg images.")
  lists = _find_split_lists(root)
  if lists is None:
    train, test = build_utils.seeded_holdout(available, test_fraction, seed)
  else:
    # Ids listed as "12", "00012" or "12.jpg" all name CelebA-HQ-img/12.jpg.
    train, test = ([str(int(i)) if i.isdigit() else i for i in build_utils.read_id_list(p)]
                   for p in lists)
    for path, ids in zip(lists, (train, test)):
      missing = [i for i in ids if i not in available]
      if missing:
        raise BuildError(f"{path}: lists id(s) {missing[:5]} with no image in {images_dir}.")
    both = set(train) & set(test)
    if both:
      raise BuildError(f"{lists[0]} and {lists[1]} share id(s) {sorted(both)[:5]}.")
  splits = {"train": build_utils.seeded_permutation(train, seed),
            "test": build_utils.natural_sorted(test)}
  return {k: v for k, v in splits.items() if v}
