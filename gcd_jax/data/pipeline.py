"""Input pipeline: prepared TFDS datasets (array_record) -> batches for training.

  batch = next(make_train_iterator("synthetic_scenes/32", image_size=(32, 32),
                                   batch_size=64, seed=0))
  batch["image"]    [B, H, W, 3] float32 in [-1, 1]
  batch["layout"]   [B, H, W]    int32 class ids (or the dataset's ignore id)
  batch["caption"]  [B]          object array of str, one caption per image
  batch["id"]       [B]          object array of str, the example ids

Stages (grain `MapDataset`, so every stage is random access and the iterator
state is just a position):

  1. read serialized examples with `tfds.data_source`, leaving images and
     layouts as encoded bytes (we decode them ourselves, straight to the target
     size, see 4);
  2. training: shuffle (a new permutation every epoch) and repeat, in one
     global order whatever the number of processes; process p of P then
     reads only its rows [p*B, (p+1)*B) of each global batch of P*B examples,
     so a multi-host run trains on a 1-process run's batches. Evaluation:
     process p reads examples p, p + P, ... in split order;
  3. group `batch_size` (B, per process) examples;
  4. per example: decode; antialiased (Lanczos) resize of the image and
     nearest-neighbour resize of the layout to `image_size`; per batch
     (vectorised): horizontal flip of image and layout together with the
     left/right class swap, caption choice, and in the chosen caption of a
     flipped example the swap of the dataset's side words ("left" <-> "right",
     so "in the lower left corner" becomes "in the lower right corner");
  5. prefetch in `num_threads` threads (PIL releases the GIL while decoding and
     resizing) and, with `num_workers` > 0, in that many processes;
  6. in the main process: uint8 -> float32 [-1, 1] images, int32 layouts
     (after 5, so workers send 4x fewer bytes).

Randomness: every random choice for an example (flip, caption) is a hash of
(seed, epoch, example index in the split), so it does not depend on the number
of processes, workers or threads, nor on the batch size.

Flips keep captions true. A dataset declares the caption words a mirror swaps
(`LayoutClasses.flip_words`, in its metadata). One that declares none but whose
captions use side words (`SIDE_WORDS`) is read without flips, with a warning
saying why (`flip_policy`): a flip would make those captions false.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import grain
from absl import flags
from absl import logging
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from gcd_jax.data.features import LayoutClasses

_RESAMPLE = {"lanczos": Image.LANCZOS, "box": Image.BOX, "bilinear": Image.BILINEAR}


# ---------------------------------------------------------------------------
# Opening prepared datasets.


def check_local_data_dir(data_dir: str | None) -> None:
  """array_record reads (and writes) local files only: a URL would fail deep inside it."""
  if data_dir and "://" in str(data_dir):
    raise ValueError(
        f"data_dir={data_dir}: prepared datasets are array_record files, which are read "
        "from local disk only (array_record has no cloud-storage reader); copy the "
        "prepared dataset to local disk, or mount the bucket (gcsfuse) and give that path")


def load_builder(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The prepared dataset `name` ("synthetic_scenes/32", "layout_folder/my_data").

  Reads the files alone when the builder code is not imported, so a dataset can
  be read anywhere it was copied. Raises FileNotFoundError with the prepare
  command when it has not been prepared.
  """
  check_local_data_dir(data_dir)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  # Not found: no files and no code (DatasetNotFoundError), or code without that
  # config and no files (ValueError, e.g. an unprepared layout_folder/NAME).
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise FileNotFoundError(
        f"Dataset {name!r} not found in data_dir {data_dir or '~/tensorflow_datasets'}: "
        f"prepare it with `{_prepare_command(name, data_dir)}`"
        f" ({str(e).splitlines()[0][:300]})") from None
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"Dataset {name!r} is not prepared in {builder.data_dir}: run "
        f"`{_prepare_command(name, data_dir)}` first.")
  if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ValueError(
        f"Dataset {name!r} in {builder.data_dir} is stored as {builder.info.file_format}; "
        "the pipeline reads array_record (random access): prepare it with gcd_jax.prepare.")
  return builder


def layout_classes(builder_or_name: tfds.core.DatasetBuilder | str,
                   data_dir: str | None = None) -> LayoutClasses:
  """The dataset's LayoutClasses, from its metadata ("layout_classes", written by
  every gcd_jax builder), else from the builder module's `CLASSES`."""
  builder = (load_builder(builder_or_name, data_dir) if isinstance(builder_or_name, str)
             else builder_or_name)
  metadata = builder.info.metadata or {}
  if "layout_classes" in metadata:
    value = metadata["layout_classes"]
    return LayoutClasses.from_json(value if isinstance(value, str) else json.dumps(value))
  module = _builder_module(builder.name)
  if module is not None and isinstance(getattr(module, "CLASSES", None), LayoutClasses):
    return module.CLASSES
  raise ValueError(
      f"Dataset {builder.name!r} in {builder.data_dir} has no 'layout_classes' in its "
      "metadata.json and its builder module defines no CLASSES.")


def _builder_module(name: str):
  try:
    return importlib.import_module(f"tfds_builders.{name}")
  except ImportError:
    return None


def resolve_split(builder: tfds.core.DatasetBuilder, split: str) -> str:
  """Maps a subset name ("train_25") to a TFDS split ("train[:25%]") when the
  dataset's metadata declares it; other names (and "train+val") pass through."""
  aliases = (builder.info.metadata or {}).get("split_aliases", {})
  return aliases.get(split, split)


def _prepare_command(name: str, data_dir: str | None) -> str:
  dataset, _, config = name.partition("/")
  return (f"python -m gcd_jax.prepare --dataset={dataset}" + (f" --config={config}" if config else "")
          + (f" --data_dir={data_dir}" if data_dir else "")
          + (" --manual_dir=..." if dataset != "synthetic_scenes" else ""))


def data_source(name: str, split: str, data_dir: str | None = None
                ) -> tuple[Sequence[dict[str, Any]], tfds.core.DatasetBuilder]:
  """Random-access source of one split; images and layouts stay encoded bytes.

  Returns:
    (source, builder): source[i] is {"image": bytes, "layout": bytes,
    "captions": [n] array of bytes, "id": bytes}.
  """
  builder = load_builder(name, data_dir)
  tfds_split = resolve_split(builder, split)
  try:
    source = builder.as_data_source(
        split=tfds_split,
        decoders={"image": tfds.decode.SkipDecoding(), "layout": tfds.decode.SkipDecoding()})
  except (ValueError, KeyError) as e:
    raise ValueError(
        f"Dataset {name!r}: split {split!r} (-> {tfds_split!r}) is not available; splits:"
        f" {sorted(builder.info.splits)}, aliases:"
        f" {sorted((builder.info.metadata or {}).get('split_aliases', {}))}. ({e})") from e
  return source, builder


# ---------------------------------------------------------------------------
# Per-example decoding and the batch transform.


def decode_image(data: bytes, size: tuple[int, int], resample: str = "lanczos") -> np.ndarray:
  """Encoded image -> [H, W, 3] uint8 at size (H, W), antialiased.

  JPEGs are first downscaled in the DCT domain to no less than twice the target
  size (`draft`): it is several times faster and the final Lanczos step still
  sees an image at least 2x larger than the output.
  """
  h, w = size
  with Image.open(io.BytesIO(data)) as im:
    if im.format == "JPEG":
      im.draft("RGB", (2 * w, 2 * h))
    if im.mode != "RGB":
      im = im.convert("RGB")
    if im.size != (w, h):
      im = im.resize((w, h), _RESAMPLE[resample])
    return np.asarray(im)


def decode_layout(data: bytes, size: tuple[int, int]) -> np.ndarray:
  """Encoded layout PNG -> [H, W] uint8 class ids at size (H, W), nearest
  neighbour (class ids must never be averaged)."""
  h, w = size
  with Image.open(io.BytesIO(data)) as im:
    if im.size != (w, h):
      im = im.resize((w, h), Image.NEAREST)
    arr = np.asarray(im)
  return arr[..., 0] if arr.ndim == 3 else arr


# Words that make a caption side-dependent; a dataset whose captions use them
# must declare how a flip changes them (LayoutClasses.flip_words).
SIDE_WORDS = ("left", "right", "leftmost", "rightmost", "lefthand", "righthand")
_SIDE_PATTERN = re.compile(r"\b(?:" + "|".join(SIDE_WORDS) + r")\b", re.IGNORECASE)
# Examples read to decide whether captions use side words (spread over the split).
FLIP_SCAN_EXAMPLES = 2000


def word_swap_table(flip_words: Iterable[tuple[str, str]]) -> dict[str, str]:
  """{"left": "right", "right": "left"} from pairs [("left", "right")]."""
  table = {}
  for a, b in flip_words:
    table[a.lower()], table[b.lower()] = b.lower(), a.lower()
  return table


def _match_case(word: str, like: str) -> str:
  if like.isupper() and len(like) > 1:
    return word.upper()
  if like[:1].isupper():
    return word[:1].upper() + word[1:]
  return word


@functools.lru_cache(maxsize=16)
def _swap_pattern(words: tuple[str, ...]) -> re.Pattern:
  alternatives = sorted(words, key=lambda w: (-len(w), w))
  return re.compile(r"\b(?:" + "|".join(map(re.escape, alternatives)) + r")\b", re.IGNORECASE)


def flip_caption(text: str, table: dict[str, str]) -> str:
  """The caption of the mirrored image: every word of `table` (whole words, any
  case) replaced by its partner, keeping its capitalisation."""
  if not table:
    return text
  pattern = _swap_pattern(tuple(sorted(table)))
  return pattern.sub(lambda m: _match_case(table[m.group(0).lower()], m.group(0)), text)


def side_words_in(captions: Iterable[str | bytes]) -> tuple[set[str], str | None]:
  """(the side words `captions` use, lower-cased; one caption that uses any, or None)."""
  found, example = set(), None
  for c in captions:
    c = _to_str(c)
    words = {m.group(0).lower() for m in _SIDE_PATTERN.finditer(c)}
    if words and example is None:
      example = c
    found |= words
  return found, example


def flip_policy(source: Sequence[dict[str, Any]], classes: LayoutClasses, name: str = "dataset",
                max_examples: int = FLIP_SCAN_EXAMPLES) -> tuple[bool, str]:
  """(whether horizontal flips keep this dataset's captions true, why not).

  Reads the captions of up to `max_examples` examples spread evenly over the
  split. Flips are on when none uses a side word (`SIDE_WORDS`), or when the
  dataset's `flip_words` swap every side word they use; otherwise a mirror
  would make those captions false and flips are off.
  """
  n = len(source)
  indices = np.unique(np.linspace(0, n - 1, min(n, max_examples)).astype(np.int64)) if n else []
  table = word_swap_table(classes.flip_words)
  for i in indices:
    words, example = side_words_in(source[int(i)]["captions"])
    unswapped = sorted(words - set(table))
    if unswapped:
      declared = (f"declares flip_words {[list(p) for p in classes.flip_words]}, which do not swap"
                  f" {unswapped}" if classes.flip_words else "declares no flip_words")
      return False, (
          f"{name}: captions use side words (e.g. {example!r}) but the dataset {declared},"
          " so a mirrored image would have a false caption; training without horizontal"
          " flips. Declare the swaps (classes.json \"flip_words\": [[\"left\", \"right\"]])"
          " to flip with true captions.")
  return True, ""


def _splitmix64(x: np.ndarray) -> np.ndarray:
  # A strong 64-bit mixer: consecutive indices give independent-looking bits.
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def example_random_bits(seed: int, keys: np.ndarray) -> np.ndarray:
  """[B] uint64 random bits for examples with [B] int keys (see module doc)."""
  with np.errstate(over="ignore"):
    s = _splitmix64(np.asarray([seed], np.uint64) + np.uint64(0x9E3779B97F4A7C15))
    return _splitmix64(np.asarray(keys, np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ s)


class BatchTransform:
  """[(key, serialized example)] * B -> batch dict (see module docstring).

  Attributes:
    image_size: (H, W) of the output.
    flip: whether to flip horizontally with p = 0.5.
    flip_table: [256] uint8 class id -> class id after a flip.
    seed: seed of the flip and caption choices.
    resample: image filter, "lanczos" (default), "box" (area) or "bilinear".
    word_swap: caption word -> word after a flip (`word_swap_table`).
    captioned: (split size n, m): the batch also holds "captioned" [B] bool,
      True for the examples whose index in the split (key % n) is below m;
      None: no such entry.
  """

  def __init__(self, image_size: tuple[int, int], flip: bool, flip_table: np.ndarray,
               seed: int, resample: str = "lanczos", word_swap: dict[str, str] | None = None,
               captioned: tuple[int, int] | None = None) -> None:
    if resample not in _RESAMPLE:
      raise ValueError(f"resample {resample!r} not one of {sorted(_RESAMPLE)}.")
    self.image_size = tuple(int(v) for v in image_size)
    self.flip = flip
    self.flip_table = np.asarray(flip_table, np.uint8)
    self.seed = seed
    self.resample = resample
    self.word_swap = dict(word_swap or {})
    self.captioned = None if captioned is None else (int(captioned[0]), int(captioned[1]))

  def __call__(self, items: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, np.ndarray]:
    b = len(items)
    h, w = self.image_size
    images = np.empty((b, h, w, 3), np.uint8)
    layouts = np.empty((b, h, w), np.uint8)
    for i, (_, ex) in enumerate(items):
      images[i] = decode_image(ex["image"], (h, w), self.resample)
      layouts[i] = decode_layout(ex["layout"], (h, w))

    bits = example_random_bits(self.seed, np.asarray([k for k, _ in items], np.int64))
    flipped = np.zeros((b,), bool)
    if self.flip:
      flipped = (bits & np.uint64(1)).astype(bool)
      # Image and layout flip together; left/right classes swap (l_eye <-> r_eye)
      # so that the flipped layout still names the correct side.
      images[flipped] = images[flipped, :, ::-1]
      layouts[flipped] = self.flip_table[layouts[flipped, :, ::-1]]
    captions = np.empty((b,), object)
    ids = np.empty((b,), object)
    for i, (_, ex) in enumerate(items):
      caps = ex["captions"]
      choice = int((bits[i] >> np.uint64(1)) % np.uint64(len(caps)))
      captions[i] = _to_str(caps[choice])
      if flipped[i]:
        captions[i] = flip_caption(captions[i], self.word_swap)
      ids[i] = _to_str(ex["id"])
    out = {"image": images, "layout": layouts, "caption": captions, "id": ids}
    if self.captioned is not None:
      n, m = self.captioned
      out["captioned"] = np.asarray([k % n < m for k, _ in items], bool)
    # Still uint8: 4x less to send from worker processes; `to_model_dtypes`
    # converts after the prefetch stage.
    return out


def to_model_dtypes(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """uint8 image -> float32 in [-1, 1]; uint8 layout -> int32."""
  image = batch["image"].astype(np.float32)
  image *= np.float32(2 / 255)  # In place: no float temporaries.
  image -= np.float32(1)
  return {**batch, "image": image, "layout": batch["layout"].astype(np.int32)}


def _to_str(v) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------
# Iterators.


def _with_key(key: int, example):
  return key, example


def _shard_range(n: int, process_index: int, process_count: int) -> slice:
  """Evaluation: every example once, process p taking examples p, p + count, ..."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, process_count={process_count}).")
  return slice(process_index, n, process_count)


class _GlobalBatchRows(grain.MapDataset):
  """Process `index`'s rows of every full global batch (`local` * `count` examples) of parent."""

  def __init__(self, parent: grain.MapDataset, local: int, index: int, count: int):
    super().__init__(parent)
    self._local, self._global, self._offset = local, local * count, index * local

  def __len__(self) -> int:
    return len(self._parent) // self._global * self._local

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[(index // self._local) * self._global + self._offset + index % self._local]

  def __str__(self) -> str:
    return f"GlobalBatchRows(local={self._local}, global={self._global}, offset={self._offset})"


def _make_iterator(ds: grain.MapDataset, num_threads: int, prefetch_buffer_size: int,
                   num_workers: int, worker_buffer_size: int):
  it_ds = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=num_threads, prefetch_buffer_size=prefetch_buffer_size))
  if num_workers > 0:
    # grain's worker processes read absl flags; outside an absl app (tests, a
    # notebook) they are unparsed and grain would fail, so use the defaults.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=worker_buffer_size))
  return iter(it_ds.map(to_model_dtypes))


def make_dataset(name: str, *, split: str, image_size: tuple[int, int], batch_size: int,
                 seed: int = 0, train: bool = True, flip: bool | None = None,
                 num_epochs: int | None = None, drop_remainder: bool | None = None,
                 process_index: int = 0,
                 process_count: int = 1, data_dir: str | None = None,
                 resample: str = "lanczos", captioned_split: str = "") -> grain.MapDataset:
  """The batched MapDataset behind the iterators (random access: ds[i] = batch i).

  Its batches hold uint8 images [B, H, W, 3] and uint8 layouts [B, H, W]; the
  iterators apply `to_model_dtypes` after prefetching.

  Args:
    name: prepared dataset, "name" or "name/config".
    split: split name, TFDS split expression ("train+val", "train[:10%]") or a
      subset alias from the metadata ("train_25").
    image_size: (H, W) of the output, rectangular allowed (128, 256).
    batch_size: examples per batch in this process.
    seed: seed of shuffling, flips and caption choice.
    train: shuffle, repeat, equal shards.
    flip: random horizontal flip; defaults to `train`.
    num_epochs: with train, None repeats forever.
    drop_remainder: drop a last partial batch (only possible with num_epochs);
      defaults to `train`, so that every training batch has the same shape.
    process_index, process_count: this process' shard (jax.process_index() and
      jax.process_count() in a multi-host run).
    captioned_split: "" or a prefix of `split` ("train_25" of "train"): the
      batches hold "captioned" [B] bool, True for the examples of that prefix
      (see `captioned_count`).
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  source, builder = data_source(name, split, data_dir)
  classes = layout_classes(builder)
  n = len(source)
  captioned = (n, captioned_count(name, split, captioned_split, data_dir, source)) if captioned_split else None
  # The key of an example is its index in the split plus epoch * n (grain passes
  # indices past the end of an epoch through every stage), so flips and captions
  # differ between epochs and do not depend on sharding.
  ds = grain.MapDataset.source(source).map_with_index(_with_key)
  if train:
    # One global order, whatever the number of processes: process p reads only
    # its rows [p*B, (p+1)*B) of each global batch of B * process_count, so the
    # global batches (and the losses) of a multi-host run are a 1-process run's.
    _shard_range(n, process_index, process_count)  # (checks process_index)
    ds = ds.shuffle(seed=seed % 2**32).repeat(num_epochs)
    if process_count > 1:
      ds = _GlobalBatchRows(ds, batch_size, process_index, process_count)
  else:
    ds = ds[_shard_range(n, process_index, process_count)]
  if drop_remainder is None:
    drop_remainder = train
  ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)
  flip = train if flip is None else flip
  if flip:
    flip, why = flip_policy(source, classes, f"Dataset {name!r} split {split!r}")
    if not flip:
      logging.warning("%s", why)
  transform = BatchTransform(image_size, flip, classes.flip_table(), seed, resample,
                             word_swap_table(classes.flip_words), captioned)
  return ds.map(transform)


def captioned_count(name: str, split: str, captioned_split: str, data_dir: str | None = None,
                    source: Sequence[dict[str, Any]] | None = None) -> int:
  """The size m of `captioned_split`, checked to be the first m examples of `split`.

  Raises ValueError (naming both splits) if it is larger than `split` or not
  its prefix, compared by example id at its first and last index.
  """
  if source is None:
    source, _ = data_source(name, split, data_dir)
  sub, _ = data_source(name, captioned_split, data_dir)
  n, m = len(source), len(sub)
  where = f"Dataset {name!r}: captioned_split {captioned_split!r} ({m} examples)"
  if not 0 < m <= n:
    raise ValueError(f"{where} is not a non-empty part of split {split!r} ({n} examples).")
  for i in sorted({0, m - 1}):
    if _to_str(sub[i]["id"]) != _to_str(source[i]["id"]):
      raise ValueError(f"{where} is not a prefix of split {split!r}: example {i} is "
                       f"{_to_str(sub[i]['id'])!r} there and {_to_str(source[i]['id'])!r} in {split!r}.")
  return m


def make_train_iterator(name: str, *, image_size: tuple[int, int], batch_size: int,
                        split: str = "train", seed: int = 0, flip: bool = True,
                        num_epochs: int | None = None, drop_remainder: bool = True,
                        process_index: int = 0,
                        process_count: int = 1, data_dir: str | None = None,
                        num_threads: int = 2, num_workers: int = 0,
                        prefetch_buffer_size: int = 4, worker_buffer_size: int = 2,
                        resample: str = "lanczos", captioned_split: str = "") -> grain.DatasetIterator:
  """Endless (or `num_epochs`) shuffled, flipped batches of this process' shard.

  Returns a grain DatasetIterator; `get_state()` is a small JSON-serialisable dict
  (see `iterator_state_to_json`) and `set_state()` on a fresh iterator made with
  the same arguments continues with exactly the next batch.

  Args:
    num_threads: threads decoding batches in each process (PIL releases the GIL).
    num_workers: worker processes (0: none, for tests and debugging).
    prefetch_buffer_size: batches prefetched by the threads.
    worker_buffer_size: batches buffered by each worker process.
    Others: see `make_dataset`.
  """
  ds = make_dataset(name, split=split, image_size=image_size, batch_size=batch_size,
                    seed=seed, train=True, flip=flip, num_epochs=num_epochs,
                    drop_remainder=drop_remainder, process_index=process_index, process_count=process_count,
                    data_dir=data_dir, resample=resample, captioned_split=captioned_split)
  return _make_iterator(ds, num_threads, prefetch_buffer_size, num_workers, worker_buffer_size)


def make_eval_iterator(name: str, *, image_size: tuple[int, int], batch_size: int,
                       split: str = "test", seed: int = 0, process_index: int = 0,
                       process_count: int = 1, data_dir: str | None = None,
                       num_threads: int = 2, num_workers: int = 0,
                       prefetch_buffer_size: int = 4,
                       resample: str = "lanczos") -> grain.DatasetIterator:
  """One pass over this process' shard in split order: no shuffle, no flip, the
  last batch may be smaller; shards may differ in size by one example. The
  caption of each image is a seeded (fixed) choice among its captions."""
  ds = make_dataset(name, split=split, image_size=image_size, batch_size=batch_size,
                    seed=seed, train=False, flip=False, process_index=process_index,
                    process_count=process_count, data_dir=data_dir, resample=resample)
  return _make_iterator(ds, num_threads, prefetch_buffer_size, num_workers, 1)


def iterator_state_to_json(iterator: grain.DatasetIterator) -> str:
  """The iterator's position as JSON text (store it with the checkpoint)."""
  return json.dumps(iterator.get_state(), sort_keys=True)


def restore_iterator_state(iterator: grain.DatasetIterator, text: str) -> None:
  """Moves a fresh iterator (same arguments) to the position saved in `text`."""
  iterator.set_state(json.loads(text))


def split_captions(name: str, split: str, data_dir: str | None = None) -> list[str]:
  """Every caption of every example of a split (to build a word vocabulary)."""
  source, _ = data_source(name, split, data_dir)
  return [_to_str(c) for i in range(len(source)) for c in source[i]["captions"]]
