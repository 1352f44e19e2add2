"""Captions -> the text inputs of the model, for both kinds of text encoder.

  frozen   a pretrained encoder (config.text.encoder = "minilm" or a local HF dir),
           run outside the training step: from a caption store built once per
           training split (config.text.embeddings = "store", on local disk) or in
           its own jitted call per batch ("on_the_fly"); see models/text/cache.py.
           The model receives float embeddings [B, L, D].
  scratch  config.text.encoder = "scratch": a word tokenizer built from the
           training captions (saved as <workdir>/text_tokenizer.json) gives int32
           ids [B, L]; the small transformer that embeds them trains with the model.

Both give `batch(captions) -> (text [B, L, ...], mask [B, L] bool)` and
`describe()`, which checkpoints record and sampling checks.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from gcd_jax import fileio
from gcd_jax.models.text import cache as text_cache
from gcd_jax.models.text import pretrained
from gcd_jax.models.text import scratch

if TYPE_CHECKING:
  import ml_collections

TOKENIZER_FILE = "text_tokenizer.json"


class FrozenText:
  """A pretrained encoder outside the model, with its caption store (if any)."""

  kind = "frozen"

  def __init__(self, encoder: pretrained.PretrainedTextEncoder, *, dtype: str = "float16",
               store: text_cache.CaptionStore | None = None, max_memory_items: int = 4096) -> None:
    self.encoder = encoder
    self.embeddings = text_cache.CaptionEmbeddings(encoder, dtype=dtype, store=store,
                                                   max_memory_items=max_memory_items)

  vocab_size = None  # the encoder is outside the model

  def batch(self, captions: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.embeddings.get([str(c) for c in captions])

  def describe(self) -> dict:
    e = self.encoder
    return {"kind": self.kind, "name": e.name, "identity": e.identity,
            "max_length": e.max_length, "dim": e.dim, "dtype": self.embeddings.dtype.name}


class ScratchText:
  """A word tokenizer; the encoder itself is part of the model's parameters."""

  kind = "scratch"

  def __init__(self, tokenizer: scratch.WordTokenizer):
    self.tokenizer = tokenizer

  @property
  def vocab_size(self) -> int:
    """What the model's embedding table needs (train_lib.make_model)."""
    return self.tokenizer.vocab_size

  def batch(self, captions: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    return self.tokenizer.encode([str(c) for c in captions])

  def describe(self) -> dict:
    vocab = "\n".join(self.tokenizer.vocab).encode("utf-8")
    return {"kind": self.kind, "name": "scratch",
            "identity": "scratch-" + hashlib.sha256(vocab).hexdigest()[:16],
            "max_length": self.tokenizer.max_length, "vocab_size": self.tokenizer.vocab_size}


def load_frozen_encoder(config: ml_collections.ConfigDict) -> pretrained.PretrainedTextEncoder:
  """The frozen text encoder named by config.text.encoder ("minilm" or a local dir)."""
  path = None if config.text.encoder == "minilm" else config.text.encoder
  encoder = pretrained.load_pretrained(path, max_length=config.text.max_length,
                                       max_batch_size=config.text.batch_size)
  if encoder.dim != config.model.text_dim:
    raise ValueError(
        f"config.model.text_dim={config.model.text_dim} but the text encoder "
        f"{config.text.encoder!r} gives {encoder.dim}-d token states; set "
        f"--config.model.text_dim={encoder.dim}")
  return encoder


def store_root(config: ml_collections.ConfigDict) -> str:
  """Where caption stores live: config.text.store_dir, else ~/.cache/gcd_jax/text_store."""
  return config.text.store_dir or os.fspath(fileio.local_cache_dir("text_store"))


def make_text(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
              train_captions: Callable[[], Iterable[str]] | None = None,
              split_name: str = "", worker: int = 0) -> FrozenText | ScratchText:
  """The text provider of a run; builds (or reloads) its caption store or tokenizer.

  Args:
    config: the experiment config (read, never written).
    workdir: the run's workdir (the scratch tokenizer); a local path or a URL.
    train_captions: called once, for a new caption store (with `split_name`,
      e.g. "synthetic_scenes/32-train", part of its key) or scratch tokenizer.
      Without it (sampling), the encoder embeds each caption: the numbers a
      store would hold, since both are rounded to config.text.dtype.
    worker: this process's index (a store is built by each host on its own disk).
  """
  workdir = fileio.as_path(workdir)
  if config.text.encoder != "scratch":
    encoder = load_frozen_encoder(config)
    store = None
    if config.text.embeddings == "store" and train_captions is not None:
      captions = sorted(set(str(c) for c in train_captions()))
      directory = text_cache.store_dir(store_root(config), encoder.identity, split_name,
                                       config.text.dtype, captions)
      store = text_cache.CaptionStore.build(directory, encoder, captions, dtype=config.text.dtype,
                                            batch_size=config.text.batch_size, worker=worker)
    return FrozenText(encoder, dtype=config.text.dtype, store=store)
  path = workdir / TOKENIZER_FILE
  if path.is_file():
    tokenizer = scratch.WordTokenizer.load(path)
  else:
    if train_captions is None:
      raise FileNotFoundError(f"{path}: no tokenizer for the scratch text encoder of this run")
    tokenizer = scratch.WordTokenizer.build(
        train_captions(), max_length=config.text.max_length,
        min_count=config.text.scratch.min_count)
    tokenizer.save(path)
  if tokenizer.max_length != config.text.max_length:
    raise ValueError(f"{path}: tokenizer max_length {tokenizer.max_length} but "
                     f"config.text.max_length={config.text.max_length}")
  return ScratchText(tokenizer)
