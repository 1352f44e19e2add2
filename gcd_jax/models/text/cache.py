"""Caption-embedding cache for FROZEN text encoders.

Frozen encoders (MiniLM, T5-large) must never run inside the training step: they
would cost a forward pass per step for an output that never changes. Instead each
distinct caption is encoded once, in batches, and its embedding is kept

  - in memory (an LRU of at most `max_memory_items` captions), and
  - on disk under `<directory>/<encoder.identity>/<hh>/<sha256(caption)>.npz`,
    e.g. `<workdir>/text_cache/all-MiniLM-L6-v2-L77-1a2b.../3f/3f9c....npz`.

The identity (see `PretrainedTextEncoder.identity`) contains the encoder name,
max_length and a digest of its config, tokenizer and weights, so switching
encoders (or L) starts a new directory instead of reusing stale embeddings.
Files are written to a temporary name in the same directory and renamed, so a
crash or a concurrent reader never sees half a file, and two processes that
cache the same caption just replace one identical file with another.

Each file holds the caption text (checked on read) and only the embeddings of the
real tokens, `[n, D]` float32: the encoders pad on the right and zero the padded
positions, so `[L, D]` and the mask are rebuilt exactly from `n`.

Null captions: the cache maps text to embeddings and nothing else. The empty
caption "" is encoded like any other text (BERT: [CLS] [SEP], T5: </s>); it is NOT
the classifier-free-guidance null condition. Dropped captions (p = 0.1 in
training, the unconditional pass when sampling) are represented by the U-Net's
learned null embedding, selected by a per-example drop flag, so the cache is
never asked for a "null" entry.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import pathlib
import tempfile
from typing import Iterable, Protocol, Sequence

import numpy as np


class FrozenTextEncoder(Protocol):
  """What the cache needs from an encoder (PretrainedTextEncoder has it)."""
  identity: str
  max_length: int
  dim: int

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """texts -> ([B, L, D] float32, zero on padding; [B, L] bool, a prefix per row)."""


def _write_atomically(path: pathlib.Path, write) -> None:
  """Calls write(file) on a temporary file next to `path`, then renames it to `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


class CaptionEmbeddingCache:
  """Embeddings of captions by a frozen encoder, each caption encoded once.

  Args:
    encoder: a frozen encoder (e.g. from `load_pretrained`).
    directory: where to persist, e.g. `<workdir>/text_cache`; None: memory only.
    max_memory_items: captions kept in memory (least recently used dropped first);
      None: unbounded. T5-large at ~20 tokens is ~80 KB per caption.
  """

  def __init__(self, encoder: FrozenTextEncoder, directory: str | os.PathLike | None = None,
               max_memory_items: int | None = 4096) -> None:
    self.encoder = encoder
    self.directory = (pathlib.Path(directory) / encoder.identity) if directory else None
    self.max_memory_items = max_memory_items
    self._memory: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
    if self.directory is not None:
      info = self.directory / "encoder.json"
      if not info.is_file():
        meta = {k: str(getattr(encoder, k, None))
                for k in ("name", "identity", "max_length", "dim", "checkpoint_dir")}
        _write_atomically(info, lambda f: f.write(json.dumps(meta, indent=1).encode()))

  def _path(self, caption: str) -> pathlib.Path:
    digest = hashlib.sha256(caption.encode("utf-8")).hexdigest()
    return self.directory / digest[:2] / f"{digest}.npz"

  def _remember(self, caption: str, rows: np.ndarray) -> None:
    self._memory[caption] = rows
    self._memory.move_to_end(caption)
    if self.max_memory_items is not None:
      while len(self._memory) > self.max_memory_items:
        self._memory.popitem(last=False)

  def _lookup(self, caption: str) -> np.ndarray | None:
    """[n, D] float32 real-token embeddings, from memory or disk; None if absent."""
    if caption in self._memory:
      self._memory.move_to_end(caption)
      return self._memory[caption]
    if self.directory is None:
      return None
    path = self._path(caption)
    if not path.is_file():
      return None
    with np.load(path) as f:
      if str(f["caption"]) != caption:
        raise ValueError(f"{path}: holds caption {str(f['caption'])!r}, not {caption!r}")
      rows = f["embedding"]
    self._remember(caption, rows)
    return rows

  def _store(self, captions: Sequence[str], embeddings: np.ndarray, mask: np.ndarray) -> None:
    for caption, emb, m in zip(captions, embeddings, mask):
      n = int(m.sum())
      if not m[:n].all():
        raise ValueError(f"encoder {self.encoder.identity}: mask of {caption!r} is not a "
                         "prefix (left padding?); the cache stores only the first n rows")
      rows = np.ascontiguousarray(emb[:n], dtype=np.float32)
      if self.directory is not None:
        _write_atomically(self._path(caption), functools.partial(
            np.savez, caption=np.array(caption), embedding=rows))
      self._remember(caption, rows)

  def _encode_missing(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
    """Looks captions up; encodes all the missing ones in ONE call to the encoder."""
    unique = list(dict.fromkeys(captions))
    found = {c: self._lookup(c) for c in unique}
    missing = [c for c in unique if found[c] is None]
    if missing:
      embeddings, mask = self.encoder.encode(missing)
      self._store(missing, embeddings, mask)
      for c, emb, m in zip(missing, embeddings, mask):
        found[c] = emb[:int(m.sum())]
    return found

  def get(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of a batch of captions, encoding only those not cached yet.

    Args:
      captions: B strings (duplicates allowed; each distinct one is looked up once).

    Returns:
      embeddings: [B, L, D] float32, 0 on padding, identical to encoder.encode.
      mask: [B, L] bool, True on real tokens.
    """
    if isinstance(captions, str):
      raise TypeError("get takes a list of captions, not a single str")
    found = self._encode_missing(captions)
    length, dim = self.encoder.max_length, self.encoder.dim
    embeddings = np.zeros((len(captions), length, dim), np.float32)
    mask = np.zeros((len(captions), length), bool)
    for i, caption in enumerate(captions):
      rows = found[caption]
      embeddings[i, :len(rows)] = rows
      mask[i, :len(rows)] = True
    return embeddings, mask

  def precompute(self, captions: Iterable[str], batch_size: int = 256,
                 progress: bool = True) -> int:
    """Encodes every caption not on disk yet, batch_size at a time.

    Run this once over the training captions before training (the data pipeline
    then only reads files); a progress bar with the ETA goes to stderr
    (`progress=False`: none). Returns the number of captions newly encoded.
    """
    import tqdm  # pylint: disable=g-import-not-at-top
    pending = [c for c in dict.fromkeys(captions)
               if c not in self._memory and (self.directory is None
                                             or not self._path(c).is_file())]
    with tqdm.tqdm(total=len(pending), desc="caption cache", unit="caption",
                   disable=not progress or not pending) as bar:
      for start in range(0, len(pending), batch_size):
        chunk = pending[start:start + batch_size]
        self._store(chunk, *self.encoder.encode(chunk))
        bar.update(len(chunk))
    return len(pending)

  def __contains__(self, caption: str) -> bool:
    return caption in self._memory or (self.directory is not None
                                       and self._path(caption).is_file())
