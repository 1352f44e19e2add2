"""A small text encoder trained from scratch with the diffusion model.

Unlike the frozen pretrained encoders (whose embeddings are cached outside the
training step), this one has trainable parameters, so the training step runs it:
the data pipeline yields `(tokens, mask)` from `WordTokenizer.encode`, and the
model calls `ScratchTextEncoder(tokens, mask) -> (embeddings, mask)`, the same
`[B, L, D]` / `[B, L]` conventions as `PretrainedTextEncoder.encode`.

    tokenizer = WordTokenizer.build(train_captions, max_length=32)
    tokenizer.save(workdir / "vocab.json")
    tokens, mask = tokenizer.encode(["a photo of a cat"])      # [1, 32] int32, bool
    encoder = ScratchTextEncoder(vocab_size=tokenizer.vocab_size, max_length=32)
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax import fileio

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIALS = (PAD, UNK, CLS)
# Words (letters/digits, with inner apostrophes: "woman's") or single punctuation marks.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]")


class WordTokenizer:
  """Lower-cased word-level vocabulary; offline, deterministic, JSON-serialisable.

  Ids: [PAD]=0, [UNK]=1, [CLS]=2, then words by decreasing frequency (ties
  alphabetical, so the same captions always give the same vocabulary). Every
  encoded caption starts with [CLS]: even the empty caption has one real token,
  so attention never sees a fully masked row and mean pooling never divides by 0.
  """

  def __init__(self, vocab: Sequence[str], max_length: int = 77) -> None:
    if tuple(vocab[:len(SPECIALS)]) != SPECIALS:
      raise ValueError(f"vocab must start with {SPECIALS}, got {list(vocab[:3])}")
    if len(set(vocab)) != len(vocab):
      raise ValueError("vocab has duplicate entries")
    if max_length < 1:
      raise ValueError(f"max_length must be >= 1, got {max_length}")
    self.vocab = list(vocab)
    self.max_length = max_length
    self._ids = {w: i for i, w in enumerate(self.vocab)}

  @staticmethod
  def words(text: str) -> list[str]:
    """'A Cat, sleeping.' -> ['a', 'cat', ',', 'sleeping', '.']"""
    return _WORD.findall(text.lower())

  @classmethod
  def build(cls, captions: Iterable[str], max_length: int = 77, min_count: int = 1,
            max_size: int | None = None) -> WordTokenizer:
    """Vocabulary of the words seen at least min_count times, at most max_size entries."""
    counts = collections.Counter(w for c in captions for w in cls.words(c))
    ranked = sorted((w for w, n in counts.items() if n >= min_count),
                    key=lambda w: (-counts[w], w))
    if max_size is not None:
      ranked = ranked[:max(0, max_size - len(SPECIALS))]
    return cls(list(SPECIALS) + ranked, max_length=max_length)

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """texts -> (tokens [B, L] int32, mask [B, L] bool), [CLS] first, right-padded."""
    if isinstance(texts, str):
      raise TypeError("encode takes a list of captions, not a single str")
    tokens = np.zeros((len(texts), self.max_length), np.int32)
    unk = self._ids[UNK]
    for row, text in enumerate(texts):
      ids = [self._ids[CLS]] + [self._ids.get(w, unk) for w in self.words(text)]
      ids = ids[:self.max_length]
      tokens[row, :len(ids)] = ids
    return tokens, tokens != self._ids[PAD]

  def decode(self, tokens: np.ndarray) -> list[str]:
    """tokens [B, L] -> space-joined words, without [PAD] and [CLS]."""
    skip = {self._ids[PAD], self._ids[CLS]}
    return [" ".join(self.vocab[t] for t in row if t not in skip)
            for row in np.asarray(tokens)]

  def save(self, path: str | os.PathLike) -> None:
    """Writes {"max_length": L, "vocab": [...]} as JSON, atomically (locally or to a URL)."""
    fileio.atomic_write(path, json.dumps({"max_length": self.max_length, "vocab": self.vocab},
                                         ensure_ascii=False))

  @classmethod
  def load(cls, path: str | os.PathLike) -> WordTokenizer:
    try:
      data = json.loads(fileio.as_path(path).read_text(encoding="utf-8"))
      return cls(data["vocab"], max_length=data["max_length"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{path}: not a WordTokenizer JSON file ({e})") from e


class ScratchTextEncoder(nn.Module):
  """Token embedding + learned positions + pre-LN transformer layers + final LN.

  Call: (tokens [B, L] int32, mask [B, L] bool, deterministic) ->
    (embeddings [B, L, dim] float32 (or dtype), exactly 0 where mask is False;
     mask [B, L] bool, unchanged).
  Only keys are masked in attention, so real-token outputs do not depend on what
  the padded positions hold. L may be shorter than max_length.
  """
  vocab_size: int
  dim: int = 256
  num_layers: int = 4
  num_heads: int = 4
  max_length: int = 77
  mlp_ratio: int = 4
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array,
               deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
    length = tokens.shape[1]
    if length > self.max_length:
      raise ValueError(f"{length} tokens > max_length {self.max_length}")
    x = nn.Embed(self.vocab_size, self.dim, dtype=self.dtype, name="token_embedding")(tokens)
    positions = self.param("position_embedding", nn.initializers.normal(0.02),
                           (self.max_length, self.dim))
    x = x + positions[:length].astype(self.dtype)
    key_mask = mask[:, None, None, :]  # [B, 1, Lq=1 (broadcast), Lk]
    for i in range(self.num_layers):
      h = nn.LayerNorm(dtype=self.dtype, name=f"layer_{i}_attention_norm")(x)
      h = nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.dropout_rate,
          deterministic=deterministic, name=f"layer_{i}_attention")(h, h, mask=key_mask)
      x = x + h
      h = nn.LayerNorm(dtype=self.dtype, name=f"layer_{i}_mlp_norm")(x)
      h = nn.Dense(self.dim * self.mlp_ratio, dtype=self.dtype, name=f"layer_{i}_mlp_in")(h)
      h = nn.Dense(self.dim, dtype=self.dtype, name=f"layer_{i}_mlp_out")(nn.gelu(h))
      x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)
    return jnp.where(mask[..., None], x, 0).astype(self.dtype), mask
