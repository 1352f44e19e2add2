"""`layout_folder`: a user's own image + layout + caption data, read from a folder.

This is how a new domain is brought to gcd_jax. The folder (`manual_dir`)::

  my_data/
    classes.json      {"names": ["background", "l_eye", "r_eye", ...],
                       "colors": [[0, 0, 0], ...],        (optional)
                       "ignore_id": 255,                   (optional)
                       "flip_pairs": [["l_eye", "r_eye"]], (optional; names or ids)
                       "flip_words": [["left", "right"]]}  (optional; caption words
                                                            a mirror swaps)
    images/0001.jpg   RGB images (JPEG, PNG, ...), any size
    layouts/0001.png  single-channel PNG (mode L or P) of class ids, same stem
                      and same size as the image
    captions.jsonl    one line per image:
                      {"file_name": "0001.jpg", "captions": ["a ...", "..."]}
                      optional "split": "train" | "val" | "test"

Every image needs a layout and at least one caption. When no line has a "split",
a seeded `test_fraction` of the images (default 10 %, seed 0) becomes the test
split. ignore_id, if given, must be >= the number of names (e.g. 255).
Training flips images horizontally only if captions stay true: declare the
words a mirror swaps in "flip_words"; captions that use "left" or "right"
without them are trained unflipped (the pipeline warns).

Stored resolution: as given (`make_features(None, None)`); the input pipeline
resizes (without keeping the aspect ratio: give images the shape you train at).
RGB JPEG/PNG files are stored byte for byte (no re-encode; EXIF rotation is
ignored, as by PIL, so layouts must match the stored pixel order); other images
and all layouts are stored as PNG.
Splits: train (written in a seeded random order, so the alias train_25 =
train[:25%] is a random quarter; see "split_aliases" in the metadata), and
test / val when present.

Several user datasets live side by side as configs: `python -m gcd_jax.prepare
--dataset layout_folder --config my_data --manual_dir path/to/my_data` writes
`layout_folder/my_data/1.0.0`, read back as `layout_folder/my_data`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from gcd_jax.data import build_utils
from gcd_jax.data.build_utils import BuildError
from gcd_jax.data.features import LayoutClasses, default_colors, make_features

_MODULE_DOC = __doc__

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
SPLIT_NAMES = ("train", "val", "test")


class LayoutFolderConfig(tfds.core.BuilderConfig):
  """Config of one user dataset.

  Attributes:
    test_fraction: fraction of images held out as "test" when captions.jsonl
      has no "split" fields.
    seed: seed of the holdout and of the train order (and so of the subsets).
  """

  def __init__(self, *, test_fraction: float = 0.1, seed: int = 0, **kwargs: Any) -> None:
    super().__init__(**kwargs)
    if not 0.0 <= test_fraction < 1.0:
      raise ValueError(f"LayoutFolderConfig: test_fraction {test_fraction} not in [0, 1).")
    self.test_fraction = test_fraction
    self.seed = seed


class LayoutFolder(tfds.core.GeneratorBasedBuilder):
  """A user's own (image, layout, captions) folder; see the module docstring."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIG_CLASS = LayoutFolderConfig
  BUILDER_CONFIGS = [LayoutFolderConfig(name="default", description="A user dataset.")]
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MODULE_DOC  # The file layout, for prepare's error.
  # TFDS derives this from the package through `importlib_resources`, a package
  # our installs do not have; giving it here avoids that import.
  code_path = epath.Path(__file__)

  @classmethod
  def make_config(cls, name: str, **kwargs: Any) -> LayoutFolderConfig:
    """A config for one more user dataset, stored under layout_folder/{name}."""
    return LayoutFolderConfig(name=name, description=f"User dataset {name}.", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Images, semantic layouts and captions from a user's folder.",
        features=make_features(None, None),
        # Filled in _split_generators, once classes.json has been read; TFDS
        # writes it to metadata.json after the examples.
        metadata=tfds.core.MetadataDict(),
        # Keeps the seeded train order on disk (subsets are its prefixes).
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    root = build_utils.require_dir(dl_manager.manual_dir, "layout_folder manual")
    classes = read_classes_json(os.path.join(root, "classes.json"))
    splits = plan_splits(root, self.builder_config.test_fraction, self.builder_config.seed)
    self.info.metadata.update(build_utils.layout_classes_metadata(
        classes, split_aliases=build_utils.subset_split_aliases("train")))
    return {name: self._generate_examples(items, classes) for name, items in splits.items()}

  def _generate_examples(self, items, classes: LayoutClasses):
    # Integer keys in the wanted order: with disable_shuffling TFDS sorts by key.
    for key, item in enumerate(items):
      image, image_bytes = build_utils.read_image(item["image"], keep_bytes=True)
      layout = build_utils.read_layout(item["layout"])
      build_utils.check_same_size(image, layout, item["image"], item["layout"])
      build_utils.check_layout_values(layout, classes, item["layout"])
      yield key, build_utils.make_example(
          image_bytes if image_bytes is not None else image, layout,
          item["captions"], item["id"])


def read_classes_json(path: str) -> LayoutClasses:
  """Parses classes.json into LayoutClasses (flip pairs by name or id)."""
  try:
    with open(path, encoding="utf-8") as f:
      spec = json.load(f)
  except FileNotFoundError:
    raise BuildError(f"{path}: classes.json not found (it lists the class names).") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BuildError(f"{path}: not valid JSON ({e}).") from e
  if not isinstance(spec, dict) or not isinstance(spec.get("names"), list) or not spec["names"]:
    raise BuildError(f'{path}: needs a non-empty list "names" of class names.')
  names = [str(n) for n in spec["names"]]
  unknown = set(spec) - {"names", "colors", "ignore_id", "flip_pairs", "flip_words"}
  if unknown:
    raise BuildError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: names, colors,"
                     " ignore_id, flip_pairs, flip_words.")
  words = spec.get("flip_words", [])
  if not isinstance(words, list) or any(
      not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(w, str) for w in pair)
      for pair in words):
    raise BuildError(f'{path}: "flip_words" must be a list of [word, word] pairs, e.g.'
                     f' [["left", "right"]]; got {words!r}.')
  colors = spec.get("colors") or default_colors(len(names))
  if len(colors) != len(names) or any(
      len(c) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors):
    raise BuildError(f'{path}: "colors" must be {len(names)} [r, g, b] triples of ints in'
                     " [0, 255], one per name.")
  index = {n: i for i, n in enumerate(names)}
  pairs = []
  for pair in spec.get("flip_pairs", []):
    if len(pair) != 2:
      raise BuildError(f'{path}: "flip_pairs" entry {pair!r} is not a pair.')
    ids = []
    for p in pair:
      if isinstance(p, str):
        if p not in index:
          raise BuildError(f'{path}: "flip_pairs" names unknown class {p!r}.')
        ids.append(index[p])
      else:
        ids.append(int(p))
    pairs.append(tuple(ids))
  try:
    return LayoutClasses(
        names=tuple(names), colors=tuple(tuple(int(v) for v in c) for c in colors),
        ignore_id=spec.get("ignore_id"), flip_pairs=tuple(pairs),
        flip_words=tuple((a.strip().lower(), b.strip().lower()) for a, b in words))
  except ValueError as e:
    raise BuildError(f"{path}: {e}") from e


def _find_images(images_dir: str) -> dict[str, str]:
  """stem -> path of every image file in images_dir."""
  found = {}
  for name in sorted(os.listdir(images_dir)):
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_EXTENSIONS:
      continue
    if stem in found:
      raise BuildError(f"{images_dir}: two images with the stem {stem!r} "
                       f"({os.path.basename(found[stem])}, {name}); stems must be unique.")
    found[stem] = os.path.join(images_dir, name)
  if not found:
    raise BuildError(f"{images_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}).")
  return found


def read_captions_jsonl(path: str) -> dict[str, dict]:
  """stem -> {"captions": [...], "split": str | None} from captions.jsonl."""
  entries = {}
  try:
    f = open(path, "rb")
  except FileNotFoundError:
    raise BuildError(f"{path}: captions.jsonl not found (every image needs captions).") from None
  with f:
    for lineno, line in build_utils.jsonl_lines(path, f):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise BuildError(f"{where}: not valid JSON ({e}).") from e
      if not isinstance(entry, dict) or "file_name" not in entry:
        raise BuildError(f'{where}: needs {{"file_name": ..., "captions": [...]}}.')
      caps = entry.get("captions")
      if (not isinstance(caps, list) or not all(isinstance(c, str) for c in caps)
          or not any(c.strip() for c in caps)):
        raise BuildError(f'{where}: "captions" of {entry["file_name"]!r} must be a non-empty'
                         " list of non-empty strings.")
      split = entry.get("split")
      if split is not None and split not in SPLIT_NAMES:
        raise BuildError(f'{where}: "split" {split!r} not one of {SPLIT_NAMES}.')
      stem = os.path.splitext(os.path.basename(entry["file_name"]))[0]
      if stem in entries:
        raise BuildError(f"{where}: second entry for {entry['file_name']!r}.")
      entries[stem] = {"captions": [c.strip() for c in caps if c.strip()], "split": split}
  return entries


def plan_splits(root: str, test_fraction: float, seed: int) -> dict[str, list[dict]]:
  """Matches images, layouts and captions and assigns splits.

  Returns:
    {split: [{"id", "image", "layout", "captions"}, ...]}; train in a seeded
    random order, the others sorted by id. Empty splits are left out.
  """
  images = _find_images(build_utils.require_dir(os.path.join(root, "images"), "images"))
  layouts_dir = build_utils.require_dir(os.path.join(root, "layouts"), "layouts")
  captions_path = os.path.join(root, "captions.jsonl")
  captions = read_captions_jsonl(captions_path)
  layout_stems = {os.path.splitext(n)[0] for n in os.listdir(layouts_dir) if n.endswith(".png")}
  for stem, path in images.items():
    if stem not in layout_stems:
      raise BuildError(f"{path}: no layout {os.path.join(layouts_dir, stem + '.png')}.")
    if stem not in captions:
      raise BuildError(f"{path}: image without captions (no line with file_name "
                       f"{os.path.basename(path)!r} in {captions_path}).")
  for stem in sorted(layout_stems - set(images)):
    raise BuildError(f"{os.path.join(layouts_dir, stem + '.png')}: layout without an image"
                     f" in {os.path.join(root, 'images')}.")
  for stem in sorted(set(captions) - set(images)):
    raise BuildError(f"{captions_path}: captions for {stem!r}, which has no image.")

  with_split = [s for s in images if captions[s]["split"] is not None]
  if with_split and len(with_split) != len(images):
    missing = next(s for s in build_utils.natural_sorted(images) if captions[s]["split"] is None)
    raise BuildError(f'{captions_path}: some lines have a "split" and {missing!r} has none;'
                     " give every line a split, or none (seeded holdout).")
  if with_split:
    assignment = {s: captions[s]["split"] for s in images}
  else:
    train, test = build_utils.seeded_holdout(images, test_fraction, seed)
    assignment = {**{s: "train" for s in train}, **{s: "test" for s in test}}

  splits = {}
  for name in SPLIT_NAMES:
    stems = [s for s in images if assignment[s] == name]
    stems = (build_utils.seeded_permutation(stems, seed) if name == "train"
             else build_utils.natural_sorted(stems))
    if stems:
      splits[name] = [{
          "id": s, "image": images[s], "layout": os.path.join(layouts_dir, s + ".png"),
          "captions": captions[s]["captions"]} for s in stems]
  return splits
