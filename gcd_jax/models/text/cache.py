"""Caption embeddings of a FROZEN text encoder (MiniLM, T5-large), outside the step.

A frozen encoder never runs inside the training step. Its embeddings come from
one of two sources (`config.text.embeddings`):

  "store"       a `CaptionStore`: every distinct caption of the training split,
                encoded once before the first step (progress bar with the ETA),
                kept as the real tokens only, in float16 (or bfloat16), in a few
                large files read by memory map. For datasets whose captions are
                seen many times (MM CelebA-HQ, Cityscapes).
  "on_the_fly"  the encoder runs in its own jitted call on each batch's captions
                (`PretrainedTextEncoder.encode`), and nothing is written. For
                datasets whose captions are rarely seen twice (the embedded
                default draws a new caption for almost every example) and for
                accelerators, where the encoder costs little next to the step.

Both give the same numbers: `CaptionEmbeddings` rounds every embedding to the
store's dtype (`config.text.dtype`), whether it comes from the store or from the
encoder. So a caption that is not in the store (a test caption, a prompt given
to `sample`) is embedded exactly as a stored one would be.

Store layout, one directory per (encoder, dataset split, dtype, caption set):

  <root>/<encoder identity>/<dataset>-<split>-<dtype>-<sha256 of the captions>/
    store.json           encoder identity, dtype, D, the captions' digest, the parts
    captions.json        the distinct captions, sorted
    part-00000.bin ...   [T_p, D] raw little-endian 16-bit rows: the real tokens of
                         captions [p * PART, (p + 1) * PART), one after the other
    part-00000.offsets.npy   [n_p + 1] int64 row offsets of those captions

Size: (real tokens of all distinct captions) x D x 2 bytes. The directory is
written as `<name>.partial-<host>` and renamed when complete; a build that is
interrupted resumes from its finished parts. It lives on local disk (default
`~/.cache/gcd_jax/text_store`, `config.text.store_dir`), never in a workdir on
cloud storage: it is read at random, a batch at a time.

Null captions: the empty caption "" is encoded like any other text (BERT: [CLS]
[SEP], T5: </s>); it is NOT the classifier-free-guidance null condition, which is
the U-Net's learned null embedding, selected by a per-example drop flag.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import socket
import time
from typing import Iterable, Protocol, Sequence

from absl import logging
import ml_dtypes
import numpy as np

from gcd_jax import fileio

DTYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16),
          "float32": np.dtype(np.float32)}
PART = 8192  # captions per part file
FORMAT = "gcd_jax.caption_store.v1"


class FrozenTextEncoder(Protocol):
  """What the store needs from an encoder (PretrainedTextEncoder has it)."""
  identity: str
  max_length: int
  dim: int

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """texts -> ([B, L, D] float32, zero on padding; [B, L] bool, a prefix per row)."""


def dtype_of(name: str) -> np.dtype:
  if name not in DTYPES:
    raise ValueError(f"config.text.dtype={name!r}: choose one of {sorted(DTYPES)}")
  return DTYPES[name]


def real_rows(encoder: FrozenTextEncoder, captions: Sequence[str], embeddings: np.ndarray,
              mask: np.ndarray) -> list[np.ndarray]:
  """The [n_i, D] rows of each caption's real tokens (checks the mask is a prefix)."""
  rows = []
  for caption, emb, m in zip(captions, embeddings, mask):
    n = int(m.sum())
    if not m[:n].all():
      raise ValueError(f"encoder {encoder.identity}: mask of {caption!r} is not a prefix "
                       "(left padding?); only the first n rows are kept")
    rows.append(emb[:n])
  return rows


def captions_digest(captions: Sequence[str]) -> str:
  return hashlib.sha256(json.dumps(list(captions), ensure_ascii=False).encode()).hexdigest()


def store_dir(root: str | os.PathLike, encoder_identity: str, dataset_split: str, dtype: str,
              captions: Sequence[str]) -> str:
  """The directory of the store of `captions` (distinct, sorted) under `root`."""
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_split)[:80]
  return os.path.join(os.fspath(root), encoder_identity,
                      f"{safe}-{dtype}-{captions_digest(captions)[:16]}")


class CaptionStore:
  """A built store, opened read-only (memory-mapped parts)."""

  def __init__(self, directory: str | os.PathLike) -> None:
    self.directory = os.fspath(directory)
    if fileio.is_url(self.directory):
      raise ValueError(f"{self.directory}: the caption store must be on local disk "
                       "(config.text.store_dir)")
    info_path = os.path.join(self.directory, "store.json")
    try:
      with open(info_path, encoding="utf-8") as f:
        self.info = json.load(f)
      with open(os.path.join(self.directory, "captions.json"), encoding="utf-8") as f:
        captions = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"{self.directory}: not a readable caption store ({e})") from e
    if self.info.get("format") != FORMAT or captions_digest(captions) != self.info["captions_sha256"]:
      raise ValueError(f"{info_path}: not a {FORMAT} store, or its captions.json was changed")
    self.dtype = dtype_of(self.info["dtype"])
    self.dim = int(self.info["dim"])
    self.index = {c: i for i, c in enumerate(captions)}
    self._parts = []
    for p, part in enumerate(self.info["parts"]):
      offsets = np.load(os.path.join(self.directory, f"part-{p:05d}.offsets.npy"))
      rows = _map_rows(os.path.join(self.directory, f"part-{p:05d}.bin"), self.dtype, self.dim,
                       int(offsets[-1]))
      if len(offsets) != part["captions"] + 1:
        raise ValueError(f"{self.directory}: part {p} has {len(offsets) - 1} captions, "
                         f"store.json says {part['captions']}")
      self._parts.append((offsets, rows))

  def __len__(self) -> int:
    return len(self.index)

  def __contains__(self, caption: str) -> bool:
    return caption in self.index

  @property
  def nbytes(self) -> int:
    """Bytes of all files of the store."""
    return sum(os.path.getsize(os.path.join(self.directory, f)) for f in os.listdir(self.directory))

  @property
  def num_tokens(self) -> int:
    return sum(int(offsets[-1]) for offsets, _ in self._parts)

  def rows(self, caption: str) -> np.ndarray | None:
    """[n, D] rows (store dtype) of `caption`'s real tokens; None if not stored."""
    i = self.index.get(caption)
    if i is None:
      return None
    offsets, rows = self._parts[i // PART]
    j = i % PART
    return rows[offsets[j]:offsets[j + 1]]

  @classmethod
  def build(cls, directory: str | os.PathLike, encoder: FrozenTextEncoder,
            captions: Iterable[str], *, dtype: str = "float16", batch_size: int = 64,
            progress: bool = True, worker: int = 0) -> CaptionStore:
    """Encodes the distinct `captions` into a new store at `directory` (or opens it).

    Resumable: finished parts of an interrupted build are kept and not encoded
    again. A progress bar with the ETA goes to stderr (`progress=False`: none).
    `worker` (the JAX process index) keeps processes that share a disk apart
    until one of them renames its finished store into place.
    """
    import tqdm  # pylint: disable=g-import-not-at-top
    directory = os.fspath(directory)
    if os.path.isfile(os.path.join(directory, "store.json")):
      return cls(directory)
    if fileio.is_url(directory):
      raise ValueError(f"{directory}: the caption store must be on local disk "
                       "(config.text.store_dir)")
    np_dtype = dtype_of(dtype)
    unique = sorted(set(captions))
    digest = captions_digest(unique)
    partial = f"{directory}.partial-{socket.gethostname()}-{worker}"
    os.makedirs(partial, exist_ok=True)
    fileio.atomic_write(os.path.join(partial, "captions.json"),
                        json.dumps(unique, ensure_ascii=False))
    num_parts = (len(unique) + PART - 1) // PART
    parts, done = [], 0
    t0 = time.time()
    with tqdm.tqdm(total=len(unique), desc="caption store", unit="caption",
                   disable=not progress) as bar:
      for p in range(num_parts):
        chunk = unique[p * PART:(p + 1) * PART]
        offsets_path = os.path.join(partial, f"part-{p:05d}.offsets.npy")
        bin_path = os.path.join(partial, f"part-{p:05d}.bin")
        if not _part_is_complete(offsets_path, bin_path, len(chunk), np_dtype, encoder.dim):
          rows = []
          for start in range(0, len(chunk), batch_size):
            texts = chunk[start:start + batch_size]
            emb, mask = encoder.encode(texts)
            rows += real_rows(encoder, texts, emb, mask)
            bar.update(len(texts))
          offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
          data = np.concatenate(rows).astype(np_dtype) if rows else np.zeros((0, encoder.dim),
                                                                              np_dtype)
          # The rows first, then the offsets: a part counts as done only when both are there.
          fileio.atomic_write(bin_path, np.ascontiguousarray(data).view(np.uint8).tobytes())
          fileio.atomic_write(offsets_path, lambda f, o=offsets: np.save(f, o))
        else:
          bar.update(len(chunk))
          done += len(chunk)
        parts.append({"captions": len(chunk)})
    info = {"format": FORMAT, "encoder_identity": encoder.identity, "dtype": dtype,
            "dim": int(encoder.dim), "num_captions": len(unique), "captions_sha256": digest,
            "part_size": PART, "parts": parts}
    fileio.atomic_write(os.path.join(partial, "store.json"), json.dumps(info, indent=1))
    try:
      os.rename(partial, directory)
    except OSError:
      if not os.path.isfile(os.path.join(directory, "store.json")):
        raise
      shutil.rmtree(partial, ignore_errors=True)  # another process finished it first
    store = cls(directory)
    logging.info("Caption store %s: %d captions (%d reused from an interrupted build), %d tokens, "
                 "%.1f MB, built in %.0f s.", directory, len(store), done, store.num_tokens,
                 store.nbytes / 1e6, time.time() - t0)
    return store


def _map_rows(path: str, dtype: np.dtype, dim: int, num_rows: int) -> np.ndarray:
  expected = num_rows * dim * dtype.itemsize
  if os.path.getsize(path) != expected:
    raise ValueError(f"{path}: {os.path.getsize(path)} bytes, expected {expected}")
  if num_rows == 0:
    return np.zeros((0, dim), dtype)
  raw = np.memmap(path, dtype=np.uint16 if dtype.itemsize == 2 else np.uint32, mode="r",
                  shape=(num_rows, dim))
  return raw.view(dtype)


def _part_is_complete(offsets_path: str, bin_path: str, count: int, dtype: np.dtype,
                      dim: int) -> bool:
  try:
    offsets = np.load(offsets_path)
    return len(offsets) == count + 1 and os.path.getsize(bin_path) == int(
        offsets[-1]) * dim * dtype.itemsize
  except (OSError, ValueError):
    return False


class CaptionEmbeddings:
  """Embeddings for batches of captions: from the store, else the encoder.

  Args:
    encoder: a frozen encoder (e.g. from `load_pretrained`).
    dtype: every embedding is rounded to this ("float16", "bfloat16", "float32"),
      so the store and the encoder give the same numbers.
    store: a CaptionStore of this encoder and dtype, or None (on the fly).
    max_memory_items: captions the encoder embedded, kept in memory (least
      recently used dropped first); 0 keeps none.
  """

  def __init__(self, encoder: FrozenTextEncoder, *, dtype: str = "float16",
               store: CaptionStore | None = None, max_memory_items: int = 4096) -> None:
    self.encoder = encoder
    self.dtype = dtype_of(dtype)
    if store is not None and (store.info["encoder_identity"] != encoder.identity
                              or store.dtype != self.dtype):
      raise ValueError(f"{store.directory}: a store of {store.info['encoder_identity']} in "
                       f"{store.info['dtype']}, not of {encoder.identity} in {dtype}")
    self.store = store
    self.max_memory_items = max_memory_items
    self._memory: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    self.num_encoded = 0  # captions that went through the encoder (tests, benchmarks)

  def _rounded(self, rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows).astype(self.dtype)

  def get(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a batch of captions.

    Args:
      captions: B strings (duplicates allowed; each distinct one is looked up once).

    Returns:
      embeddings: [B, L, D] float32 (values of `dtype`), 0 on padding.
      mask: [B, L] bool, True on real tokens.
    """
    if isinstance(captions, str):
      raise TypeError("get takes a list of captions, not a single str")
    found: dict[str, np.ndarray] = {}
    missing = []
    for c in dict.fromkeys(captions):
      rows = self.store.rows(c) if self.store is not None else None
      if rows is None and c in self._memory:
        self._memory.move_to_end(c)
        rows = self._memory[c]
      if rows is None:
        missing.append(c)
      else:
        found[c] = rows
    if missing:  # one call to the encoder for all of them
      emb, mask = self.encoder.encode(missing)
      self.num_encoded += len(missing)
      for c, rows in zip(missing, real_rows(self.encoder, missing, emb, mask)):
        found[c] = self._rounded(rows)
        if self.max_memory_items:
          self._memory[c] = found[c]
          while len(self._memory) > self.max_memory_items:
            self._memory.popitem(last=False)
    length, dim = self.encoder.max_length, self.encoder.dim
    embeddings = np.zeros((len(captions), length, dim), np.float32)
    mask = np.zeros((len(captions), length), bool)
    for i, caption in enumerate(captions):
      rows = found[caption]
      embeddings[i, :len(rows)] = rows
      mask[i, :len(rows)] = True
    return embeddings, mask
