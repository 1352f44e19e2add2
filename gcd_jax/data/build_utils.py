"""Helpers shared by the dataset builders in `tfds_builders/`.

Every builder reads a user's files from `manual_dir`, checks them, and writes the
common example format of `gcd_jax.data.features`. The checks live here so that
every builder fails the same way: a `BuildError` that names the file and what is
wrong with it, raised before TFDS renames its temporary directory, so that a
failed build never leaves a dataset behind that would later be read as valid.

Images and layouts are PNG-encoded here with PIL (lossless, and much faster than
the TensorFlow graph TFDS uses to encode numpy arrays) and handed to the
`tfds.features.Image` features as bytes.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Iterator

import numpy as np
from PIL import Image

from gcd_jax.data.features import LayoutClasses


class BuildError(ValueError):
  """Bad input data for a dataset builder; the message names file and problem."""


def require_dir(path: os.PathLike | str, what: str) -> str:
  """Returns `path` as str; raises BuildError if it is missing or empty."""
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise BuildError(f"{path}: {what} directory does not exist.")
  if not os.listdir(path):
    raise BuildError(f"{path}: {what} directory is empty.")
  return path


def read_image(path: str, draft_size: tuple[int, int] | None = None,
               keep_bytes: bool = False) -> np.ndarray | tuple[np.ndarray, bytes | None]:
  """Decodes an RGB image file.

  Args:
    path: any format PIL reads (PNG, JPEG, ...); grey or RGBA images are
      converted to RGB.
    draft_size: (width, height). For JPEG, lets the decoder downscale by a power
      of two in the DCT domain while staying at least this large: 4-8x faster for
      1024px CelebA-HQ images that are resized to 256 anyway.
    keep_bytes: also return the file's bytes when they can be stored as they are
      (an RGB JPEG or PNG), else None. Storing the original JPEG avoids a lossy
      re-encode and keeps the prepared dataset small.

  Returns:
    [H, W, 3] uint8, or (that array, bytes | None) when keep_bytes.

  Raises:
    BuildError: the file is missing, truncated or not an image.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
    with Image.open(io.BytesIO(data)) as im:
      fmt, mode = im.format, im.mode
      if draft_size is not None and fmt == "JPEG":
        im.draft("RGB", draft_size)
      im = im.convert("RGB")  # Forces the full decode, so truncation shows here.
      array = np.asarray(im, np.uint8)
  except FileNotFoundError:
    raise BuildError(f"{path}: image file not found.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise BuildError(f"{path}: cannot decode image ({e}).") from e
  if not keep_bytes:
    return array
  return array, (data if fmt in ("JPEG", "PNG") and mode == "RGB" else None)


def read_layout(path: str) -> np.ndarray:
  """Decodes a PNG of class ids (mode L, P or 16-bit grey); returns [H, W] uint8.

  A palette PNG is read as its palette indices, which is how most annotation
  tools store class ids. Colour (RGB) PNGs are refused: their colours are not
  class ids, and guessing a colour -> id mapping would silently mislabel data.
  """
  try:
    with Image.open(path) as im:
      im.load()
      mode = im.mode
      arr = np.asarray(im)
  except FileNotFoundError:
    raise BuildError(f"{path}: layout file not found.") from None
  except (OSError, SyntaxError, ValueError) as e:
    raise BuildError(f"{path}: cannot decode layout ({e}).") from e
  if mode not in ("L", "P", "I", "I;16", "1"):
    raise BuildError(
        f"{path}: layout must be a single-channel PNG of class ids (mode L or P),"
        f" got mode {mode}.")
  if arr.ndim != 2:
    raise BuildError(f"{path}: layout must be 2-D, got shape {arr.shape}.")
  if arr.size and (arr.min() < 0 or arr.max() > 255):
    raise BuildError(
        f"{path}: layout values must be in [0, 255], got [{arr.min()}, {arr.max()}].")
  return arr.astype(np.uint8)


def check_layout_values(layout: np.ndarray, classes: LayoutClasses, path: str) -> None:
  """Raises BuildError if `layout` holds a value that is neither a class id nor
  the declared ignore id."""
  num_classes = classes.num_classes
  values = np.unique(layout)
  bad = values[(values >= num_classes) & (values != (classes.ignore_id if classes.ignore_id is not None else -1))]
  if bad.size:
    allowed = f"[0, {num_classes})" + (
        f" or the ignore id {classes.ignore_id}" if classes.ignore_id is not None else "")
    raise BuildError(
        f"{path}: layout value(s) {bad.tolist()} not a class id; expected {allowed}"
        f" for the {num_classes} classes {list(classes.names)[:4]}{'...' if num_classes > 4 else ''}.")


def check_same_size(image: np.ndarray, layout: np.ndarray, image_path: str,
                    layout_path: str) -> None:
  if image.shape[:2] != layout.shape[:2]:
    raise BuildError(
        f"{image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its layout "
        f"{layout_path} is {layout.shape[1]}x{layout.shape[0]}; they must match.")


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Antialiased (Lanczos) resize. image: [H, W, 3] uint8; size: (H, W)."""
  h, w = size
  if image.shape[:2] == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((w, h), Image.LANCZOS))


def resize_layout(layout: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Nearest-neighbour resize (class ids must not be blended). [H, W] uint8."""
  h, w = size
  if layout.shape[:2] == (h, w):
    return layout
  return np.asarray(Image.fromarray(layout).resize((w, h), Image.NEAREST))


def encode_png(array: np.ndarray) -> bytes:
  """[H, W, 3] or [H, W] / [H, W, 1] uint8 -> PNG bytes."""
  if array.ndim == 3 and array.shape[-1] == 1:
    array = array[..., 0]
  buf = io.BytesIO()
  # compress_level 1: the files are written once and read many times; level 1
  # decodes as fast as level 9 and writes ~5x faster, for ~10% more bytes.
  Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


def make_example(image: np.ndarray | bytes, layout: np.ndarray, captions: Sequence[str],
                 example_id: str) -> dict:
  """The common example of `gcd_jax.data.features.make_features`.

  image: [H, W, 3] uint8, or already encoded RGB JPEG/PNG bytes.
  layout: [H, W] uint8 class ids.
  """
  return {
      "image": image if isinstance(image, bytes) else encode_png(image),
      "layout": encode_png(layout),
      "captions": list(captions),
      "id": example_id,
  }


def read_caption_lines(path: str) -> list[str]:
  """One caption per non-empty line; raises BuildError if there are none."""
  try:
    with open(path, encoding="utf-8") as f:
      captions = [line.strip() for line in f]
  except FileNotFoundError:
    raise BuildError(f"{path}: caption file not found (every image needs captions).") from None
  except UnicodeDecodeError as e:
    raise BuildError(f"{path}: not UTF-8 text ({e}).") from e
  captions = [c for c in captions if c]
  if not captions:
    raise BuildError(f"{path}: caption file has no non-empty line.")
  return captions


def jsonl_lines(path: str, f) -> Iterator[tuple[int, str]]:
  """(line number, text) of a JSON-lines file opened in binary, each line checked to be UTF-8.

  A line that is not UTF-8 is a BuildError naming the file, the line and the byte.
  """
  for lineno, raw in enumerate(f, 1):
    try:
      yield lineno, raw.decode("utf-8")
    except UnicodeDecodeError as e:
      raise BuildError(f"{path}:{lineno}: not UTF-8 (byte {raw[e.start]:#04x} at column "
                       f"{e.start + 1}); save the file as UTF-8.") from None


def read_caption_jsonl(path: str, id_of: Callable[[str], str] = lambda name: name
                       ) -> dict[str, list[str]]:
  """{image id: captions} from a JSON-lines caption file, one image per line.

  Two line formats: ours, {"id": ..., "captions": [...]}, and the one GCDP
  releases (data/caption_files/*/*_captions.jsonl), {"file_name": ..., "text":
  [...] or "..."}, whose file name `id_of` turns into an id. An image listed twice
  is an error naming both lines.
  """
  try:
    f = open(path, "rb")
  except OSError as e:
    raise BuildError(f"{path}: cannot read caption file ({e}).") from e
  captions, first_line = {}, {}
  with f:
    for lineno, line in jsonl_lines(path, f):
      if not line.strip():
        continue
      where = f"{path}:{lineno}"
      try:
        entry = json.loads(line)
      except json.JSONDecodeError as e:
        raise BuildError(f"{where}: not valid JSON ({e}).") from e
      if isinstance(entry, dict) and "file_name" in entry:
        key, caps = entry.get("file_name"), entry.get("text")
        key = id_of(key) if isinstance(key, str) else None
        caps = [caps] if isinstance(caps, str) else caps
      else:
        key = entry.get("id") if isinstance(entry, dict) else None
        caps = entry.get("captions") if isinstance(entry, dict) else None
      if (not isinstance(key, str) or not isinstance(caps, list) or not caps
          or not all(isinstance(c, str) and c.strip() for c in caps)):
        raise BuildError(f'{where}: expected {{"file_name": "...", "text": ["non-empty", ...]}}'
                         ' (as GCDP releases) or {"id": "...", "captions": ["non-empty", ...]}.')
      if key in captions:
        raise BuildError(f"{where}: image {key!r} is listed again (first at line "
                         f"{first_line[key]}); give each image one line.")
      captions[key], first_line[key] = [c.strip() for c in caps], lineno
  return captions


def subset_splits(train: Sequence[str], subsets: dict[int, Sequence[str]], seed: int,
                  where: str) -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
  """The train order, extra splits and aliases of low-data subsets given as id lists.

  `subsets` maps a percentage (25, 50) to the ids of that subset, e.g. the ones
  GCDP's 25_captions.jsonl lists. Nested subsets (25 inside 50 inside train) are
  stored once: train is ordered 25-subset first, then the rest of the 50-subset,
  then the rest, each part in a seeded order, and train_25 / train_50 alias
  "train[:N]". Subsets that are not nested become splits of their own (their
  examples are stored again). Returns (train order, {split: ids}, aliases).
  """
  train_set = set(train)
  for p, ids in subsets.items():
    outside = sorted(set(ids) - train_set)
    if outside:
      raise BuildError(f"{where}: the {p} % subset lists id(s) {outside[:5]} that are not in "
                       "the training set.")
  percents = sorted(subsets)
  sets = [set(subsets[p]) for p in percents]
  nested = all(a <= b for a, b in zip(sets, sets[1:]))
  aliases = {"train_100": "train"}
  if nested:
    order, done = [], set()
    for p, ids in zip(percents, sets):
      order += seeded_permutation(ids - done, seed)
      done |= ids
      aliases[f"train_{p}"] = f"train[:{len(done)}]"
    order += seeded_permutation(train_set - done, seed)
    return order, {}, aliases
  extra = {f"train_{p}": seeded_permutation(subsets[p], seed) for p in percents}
  return seeded_permutation(train, seed), extra, aliases


class _ListUnpickler(pickle.Unpickler):
  """Unpickles plain lists of str/int/bytes only: a pickle can run arbitrary code
  through `find_class`, and these files come from third-party downloads."""

  def find_class(self, module, name):
    raise pickle.UnpicklingError(
        f"refusing to load {module}.{name}: only lists of names are allowed")


def read_id_list(path: str) -> list[str]:
  """Reads a list of example ids from a `.pickle` (a pickled list, as in the
  MM-CelebA-HQ `train/filenames.pickle`) or a text file (one id per line).
  Extensions are stripped: '12.jpg' -> '12'."""
  try:
    if path.endswith((".pickle", ".pkl")):
      with open(path, "rb") as f:
        items = _ListUnpickler(f, encoding="latin1").load()
      if not isinstance(items, (list, tuple)):
        raise BuildError(f"{path}: expected a pickled list of ids, got {type(items).__name__}.")
    else:
      with open(path, encoding="utf-8") as f:
        items = [line.strip() for line in f if line.strip()]
  except (OSError, pickle.UnpicklingError, EOFError, UnicodeDecodeError) as e:
    raise BuildError(f"{path}: cannot read id list ({e}).") from e
  ids = []
  for item in items:
    if isinstance(item, bytes):
      item = item.decode("utf-8")
    if not isinstance(item, (str, int)):
      raise BuildError(f"{path}: id list entry {item!r} is not a str or int.")
    ids.append(os.path.splitext(os.path.basename(str(item)))[0])
  return ids


def seeded_permutation(ids: Iterable[str], seed: int) -> list[str]:
  """`ids` sorted (numerically where they are numbers), then permuted by numpy's
  PCG64 with `seed`: the same order on every machine, so subsets are reproducible."""
  ids = natural_sorted(ids)
  order = np.random.default_rng(seed).permutation(len(ids))
  return [ids[i] for i in order]


def seeded_holdout(ids: Iterable[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
  """Splits `ids` into (train, test) with round(fraction * n) test ids chosen by
  a seeded permutation (at least one when fraction > 0 and there are two or more
  ids); both lists are returned sorted."""
  perm = seeded_permutation(ids, seed)
  n_test = int(round(fraction * len(perm)))
  if fraction > 0 and len(perm) >= 2:
    n_test = min(max(n_test, 1), len(perm) - 1)
  return natural_sorted(perm[n_test:]), natural_sorted(perm[:n_test])


def _natural_key(s: str):
  # Numeric ids ("2" < "10") sort as numbers, so CelebA-HQ ids keep their order.
  return (0, int(s), s) if s.isdigit() else (1, 0, s)


def natural_sorted(ids: Iterable[str]) -> list[str]:
  return sorted(ids, key=_natural_key)


# Low-data subsets (GCDP's MM CelebA-HQ-25/50/100). Builders write the train
# split in a seeded random order (`disable_shuffling=True`), so the first p % of
# it is a random p % subset, read with TFDS's own slicing: no example is stored
# twice, and the subsets are nested (25 % is inside 50 %).
SUBSET_PERCENTS = (25, 50, 100)


def subset_split_aliases(split: str = "train") -> dict[str, str]:
  """{"train_25": "train[:25%]", "train_50": "train[:50%]", "train_100": "train"}."""
  return {f"{split}_{p}": (split if p == 100 else f"{split}[:{p}%]") for p in SUBSET_PERCENTS}


def layout_classes_metadata(classes: LayoutClasses, split_aliases: dict[str, str] | None = None,
                            **extra: Any) -> dict:
  """The `DatasetInfo.metadata` entries every gcd_jax builder writes; read back
  by `gcd_jax.data.pipeline.layout_classes` and `resolve_split`."""
  return {"layout_classes": classes.to_json(), "split_aliases": dict(split_aliases or {}),
          **extra}
