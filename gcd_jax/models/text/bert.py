"""BERT encoder (post-LayerNorm, absolute positions) in linen, loading HF checkpoints.

Matches `transformers.BertModel(...).last_hidden_state` (checked to 1e-4 against
PyTorch in tests/models/test_text_encoders.py). The pooler is not built: GCDP
conditions on token states, and mean pooling where needed is done by the caller.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.models.text import checkpoint as ckpt
from gcd_jax.models.text import layers


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a Hugging Face BERT `config.json` that the encoder needs."""
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12

  @classmethod
  def from_hf(cls, config: dict[str, Any], config_path: pathlib.Path) -> BertConfig:
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
      raise ckpt.CheckpointError(
          f"{config_path}: position_embedding_type {position!r} is not supported "
          "(only 'absolute')")
    if config.get("hidden_act", "gelu") not in layers.ACTIVATIONS:
      raise ckpt.CheckpointError(
          f"{config_path}: hidden_act {config['hidden_act']!r} is not supported; "
          f"known: {sorted(layers.ACTIVATIONS)}")
    names = [f.name for f in dataclasses.fields(cls)]
    try:
      return cls(**{k: config[k] for k in names if k in config})
    except TypeError as e:
      raise ckpt.CheckpointError(f"{config_path}: missing BERT field ({e})") from e


class BertLayer(nn.Module):
  """Self-attention then MLP, each followed by residual + LayerNorm (post-LN)."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    heads, head_dim = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    norm = functools.partial(nn.LayerNorm, epsilon=c.layer_norm_eps, dtype=self.dtype,
                             use_fast_variance=False)  # the two-pass variance, as torch

    def heads_of(t):  # [B, L, D] -> [B, L, H, Dh]
      return t.reshape(t.shape[:2] + (heads, head_dim))

    q = heads_of(dense(c.hidden_size, name="query")(x))
    k = heads_of(dense(c.hidden_size, name="key")(x))
    v = heads_of(dense(c.hidden_size, name="value")(x))
    a = layers.attend(q, k, v, mask, scale=head_dim ** -0.5)
    a = dense(c.hidden_size, name="attention_output")(a.reshape(x.shape[:2] + (-1,)))
    x = norm(name="attention_LayerNorm")(x + a)
    h = dense(c.intermediate_size, name="intermediate")(x)
    h = dense(c.hidden_size, name="output")(layers.ACTIVATIONS[c.hidden_act](h))
    return norm(name="output_LayerNorm")(x + h)


class BertEncoder(nn.Module):
  """input_ids [B, L] int32, mask [B, L] bool -> last hidden states [B, L, D] dtype.

  Token type ids are all 0 (single-segment captions) and positions are 0..L-1,
  as `BertModel` does when given only input_ids and attention_mask.
  """
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    embed = functools.partial(nn.Embed, features=c.hidden_size, dtype=self.dtype)
    length = input_ids.shape[1]
    x = (embed(c.vocab_size, name="word_embeddings")(input_ids)
         + embed(c.max_position_embeddings, name="position_embeddings")(
             jnp.arange(length))[None]
         + embed(c.type_vocab_size, name="token_type_embeddings")(jnp.zeros_like(input_ids)))
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, dtype=self.dtype, use_fast_variance=False,
                     name="embeddings_LayerNorm")(x)
    for i in range(c.num_hidden_layers):
      x = BertLayer(c, dtype=self.dtype, name=f"layer_{i}")(x, mask)
    return x


def tensor_specs(config: BertConfig, keys: set[str]) -> list[ckpt.TensorSpec]:
  """Maps every BertEncoder parameter to its Hugging Face tensor name.

  Checkpoints saved from BertModel have bare names ("embeddings...."), those from
  BertForMaskedLM & co. prefix them with "bert."; heads (cls.*, pooler.*) are
  ignored. Old TF-converted checkpoints name LayerNorm parameters gamma/beta.
  """
  prefix = "bert." if any(k.startswith("bert.embeddings.") for k in keys) else ""
  specs = []

  def add(path, name, transpose=False):
    names = (prefix + name,)
    if "LayerNorm" in name:
      names += (prefix + name.replace(".weight", ".gamma").replace(".bias", ".beta"),)
    specs.append(ckpt.TensorSpec(tuple(path), names, transpose))

  def dense(path, name):
    add(path + ["kernel"], f"{name}.weight", transpose=True)
    add(path + ["bias"], f"{name}.bias")

  def norm(path, name):
    add(path + ["scale"], f"{name}.weight")
    add(path + ["bias"], f"{name}.bias")

  for emb in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
    add([emb, "embedding"], f"embeddings.{emb}.weight")
  norm(["embeddings_LayerNorm"], "embeddings.LayerNorm")
  for i in range(config.num_hidden_layers):
    hf, fx = f"encoder.layer.{i}", [f"layer_{i}"]
    for proj in ("query", "key", "value"):
      dense(fx + [proj], f"{hf}.attention.self.{proj}")
    dense(fx + ["attention_output"], f"{hf}.attention.output.dense")
    norm(fx + ["attention_LayerNorm"], f"{hf}.attention.output.LayerNorm")
    dense(fx + ["intermediate"], f"{hf}.intermediate.dense")
    dense(fx + ["output"], f"{hf}.output.dense")
    norm(fx + ["output_LayerNorm"], f"{hf}.output.LayerNorm")
  return specs
