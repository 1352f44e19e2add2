"""`mm_celeba_hq`: CelebA-HQ faces, CelebAMask-HQ layouts, MM-CelebA-HQ captions.

Read from `manual_dir` (never downloaded)::

  manual_dir/
    CelebA-HQ-img/{id}.jpg                      30,000 RGB images, 1024x1024, id 0..29999
                                                (.jpg or .JPG, ids zero-padded or not)
    CelebAMask-HQ-mask-anno/{k}/{id:05d}_{part}.png
                                                per-part masks, 512x512; folder k holds
                                                ids 2000k .. 2000k+1999; non-zero = part
      or CelebAMask-HQ-mask/{id}.png            already merged 19-class masks (used
      or CelebAMask-HQ-mask-anno/preprocessed/{id}.png   instead of the parts when
                                                present; the second is where GCDP's
                                                code reads its merged masks)
    celeba-caption/{id}.txt                     captions, one per line (10 per image)
    caption_files/{25,50,100}_captions.jsonl    optional: GCDP's released captions as
                                                they are ({"file_name": "{id}.jpg",
                                                "text": [...]}); see "Official subsets"
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

Official subsets: with caption_files/100_captions.jsonl, the training set is
the images that file lists, with its captions (the images' .txt files are not
needed); 25_captions.jsonl and 50_captions.jsonl, when present, make train_25
and train_50 exactly the paper's subsets instead of seeded prefixes. Nested
subsets are stored once (train is ordered 25 %, then the rest of 50 %, then the
rest; the aliases are train[:N]); otherwise they are splits of their own. The
test split is the test list when given, else every other image that has a
celeba-caption/{id}.txt.
"""

from __future__ import annotations

import dataclasses
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
MERGED_DIRS = ("CelebAMask-HQ-mask", os.path.join("CelebAMask-HQ-mask-anno", "preprocessed"))
CAPTION_FILES_DIR = "caption_files"
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
    plan = plan_splits(root, cfg.test_fraction, cfg.seed)
    if plan.aliases:
      self.info.metadata.update(build_utils.layout_classes_metadata(
          CLASSES, split_aliases=plan.aliases))
    return {name: self._generate_examples(root, plan, ids) for name, ids in plan.splits.items()}

  def _generate_examples(self, root: str, plan: SplitPlan, ids: list[str]):
    size = (self.builder_config.size,) * 2
    merged_dir = merged_masks_dir(root)
    for key, example_id in enumerate(ids):
      image_path = plan.images[example_id]
      image = build_utils.read_image(image_path, draft_size=(2 * size[1], 2 * size[0]))
      if merged_dir:
        layout_path = os.path.join(merged_dir, f"{example_id}.png")
        layout = build_utils.read_layout(layout_path)
        build_utils.check_layout_values(layout, CLASSES, layout_path)
      else:
        layout, layout_path = merge_part_masks(os.path.join(root, PARTS_DIR), example_id)
      _check_same_aspect(image, layout, image_path, layout_path)
      captions = plan.captions.get(example_id) or build_utils.read_caption_lines(
          os.path.join(root, CAPTIONS_DIR, f"{example_id}.txt"))
      yield key, build_utils.make_example(
          build_utils.resize_image(image, size), build_utils.resize_layout(layout, size),
          captions, example_id)


def merged_masks_dir(root: str) -> str | None:
  """The directory of merged 19-class masks, if the manual dir has one."""
  found = [d for d in MERGED_DIRS if os.path.isdir(os.path.join(root, d))]
  if len(found) > 1:
    raise BuildError(f"{root}: both {found[0]} and {found[1]} hold merged masks; keep one.")
  return os.path.join(root, found[0]) if found else None


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


@dataclasses.dataclass
class SplitPlan:
  """What to build: ids per split, each id's image file, captions given by caption
  files ({} when they come from celeba-caption/), and split aliases ({}: the default)."""

  splits: dict[str, list[str]]
  images: dict[str, str]
  captions: dict[str, list[str]]
  aliases: dict[str, str]


def _celeba_id(name: str) -> str:
  """"00012.jpg", "12.JPG", "12" -> "12"."""
  stem = os.path.splitext(os.path.basename(name))[0]
  return str(int(stem)) if stem.isdigit() else stem


def _official_captions(root: str) -> dict[int, dict[str, list[str]]]:
  """{percent: {id: captions}} of GCDP's caption_files/{p}_captions.jsonl present."""
  out = {}
  for p in build_utils.SUBSET_PERCENTS:
    path = os.path.join(root, CAPTION_FILES_DIR, f"{p}_captions.jsonl")
    if os.path.exists(path):
      out[p] = build_utils.read_caption_jsonl(path, _celeba_id)
  if out and 100 not in out:
    raise BuildError(f"{os.path.join(root, CAPTION_FILES_DIR)}: has {sorted(out)} % caption "
                     "files but no 100_captions.jsonl (the training set).")
  return out


def plan_splits(root: str, test_fraction: float, seed: int) -> SplitPlan:
  """The splits: train in a seeded random order (or the official subsets' order), test in order."""
  images_dir = build_utils.require_dir(os.path.join(root, IMAGES_DIR), "CelebA-HQ images")
  official = _official_captions(root)
  if not official:
    build_utils.require_dir(os.path.join(root, CAPTIONS_DIR), "MM-CelebA-HQ captions")
  if merged_masks_dir(root) is None:
    build_utils.require_dir(os.path.join(root, PARTS_DIR), "CelebAMask-HQ part masks")
  images = {}
  for name in os.listdir(images_dir):
    stem, ext = os.path.splitext(name)
    if ext.lower() == ".jpg":
      if not stem.isdigit():
        raise BuildError(f"{os.path.join(images_dir, name)}: CelebA-HQ image names are numeric"
                         " ids ({id}.jpg).")
      key = str(int(stem))
      if key in images:
        raise BuildError(f"{images[key]} and {os.path.join(images_dir, name)} are both image {key}.")
      images[key] = os.path.join(images_dir, name)
  if not images:
    raise BuildError(f"{images_dir}: no {{id}}.jpg images.")
  available = set(images)
  lists = _find_split_lists(root)
  test = None
  if lists is not None:
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
  captions, aliases, extra = {}, {}, {}
  if official:
    where = os.path.join(root, CAPTION_FILES_DIR, "100_captions.jsonl")
    missing = sorted(set(official[100]) - available)
    if missing:
      raise BuildError(f"{where}: lists image(s) {missing[:5]} with no file in {images_dir}.")
    listed_test = set(test or ())
    if listed_test & set(official[100]):
      raise BuildError(f"{where} and {lists[1]} share id(s) "
                       f"{sorted(listed_test & set(official[100]))[:5]}.")
    for p, caps in official.items():
      for i, c in caps.items():
        if i in captions and captions[i] != c:
          raise BuildError(f"{os.path.join(root, CAPTION_FILES_DIR)}: image {i} has other "
                           f"captions in {p}_captions.jsonl than in another caption file.")
        captions[i] = c
    train_order, extra, aliases = build_utils.subset_splits(
        list(official[100]), {p: list(c) for p, c in official.items() if p != 100}, seed, where)
    if test is None:
      # Every other image that has a caption file of its own.
      test = [i for i in available - set(official[100])
              if os.path.exists(os.path.join(root, CAPTIONS_DIR, f"{i}.txt"))]
  else:
    if test is None:
      train, test = build_utils.seeded_holdout(available, test_fraction, seed)
    train_order = build_utils.seeded_permutation(train, seed)
  splits = {"train": train_order, **extra, "test": build_utils.natural_sorted(test)}
  return SplitPlan({k: v for k, v in splits.items() if v}, images, captions, aliases)
