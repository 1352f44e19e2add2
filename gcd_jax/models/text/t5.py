"""T5 encoder stack in linen (v1.0 and v1.1 / flan), loading HF checkpoints.

Matches `T5EncoderModel(...).last_hidden_state`, equivalently
`T5ForConditionalGeneration(...).encoder(...)`: only the `encoder.*` tensors and
the `shared.weight` embedding are read. What distinguishes T5 from BERT:
  - pre-norm blocks with RMS LayerNorm (scale only, no mean, no bias) and a final
    RMS norm; no biases anywhere;
  - no absolute positions: a learned relative-position bias [buckets, heads],
    owned by the first block in HF and shared by all blocks;
  - attention logits are NOT scaled by 1/sqrt(d_kv) (T5 folds it into the init);
  - the feed-forward is `DenseReluDense` (v1.0: wo(relu(wi x))) or, for
    feed_forward_proj "gated-gelu" (v1.1, flan), `DenseGatedActDense`
    (wo(gelu_tanh(wi_0 x) * wi_1 x)); HF keeps the module name DenseReluDense.
  - inner attention width num_heads * d_kv may differ from d_model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax.models.text import checkpoint as ckpt
from gcd_jax.models.text import layers


@dataclasses.dataclass(frozen=True)
class T5Config:
  """The fields of a Hugging Face T5 `config.json` that the encoder needs."""
  vocab_size: int
  d_model: int
  d_kv: int
  d_ff: int
  num_layers: int
  num_heads: int
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self) -> str:
    # Same rule as transformers.T5Config: "gated-gelu" means the tanh GELU.
    if self.feed_forward_proj == "gated-gelu":
      return "gelu_new"
    return self.feed_forward_proj.split("-")[-1]

  @classmethod
  def from_hf(cls, config: dict[str, Any], config_path: pathlib.Path) -> T5Config:
    names = [f.name for f in dataclasses.fields(cls)]
    try:
      out = cls(**{k: config[k] for k in names if k in config})
    except TypeError as e:
      raise ckpt.CheckpointError(f"{config_path}: missing T5 field ({e})") from e
    parts = out.feed_forward_proj.split("-")
    if (len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated")
        or out.activation not in layers.ACTIVATIONS):
      raise ckpt.CheckpointError(
          f"{config_path}: feed_forward_proj {out.feed_forward_proj!r} is not supported; "
          f"use 'ACT' or 'gated-ACT' with ACT in {sorted(layers.ACTIVATIONS)}")
    return out


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int = 32,
                             max_distance: int = 128) -> np.ndarray:
  """T5's bidirectional bucketing of key_pos - query_pos, as in Mesh TF / HF.

  Half the buckets for each direction; within a direction, exact buckets for
  distances < num_buckets/4 and logarithmic ones up to max_distance. Computed in
  numpy float32 with the same operation order as the PyTorch reference, because
  distances such as 16, 32, 64 sit exactly on a bucket boundary and float64
  would round them the other way.

  Args:
    relative_position: int array, any shape.
  Returns:
    int32 array of the same shape, values in [0, num_buckets).
  """
  relative_position = np.asarray(relative_position)
  num_buckets //= 2
  buckets = (relative_position > 0).astype(np.int32) * num_buckets
  distance = np.abs(relative_position)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):  # log(0) in the branch that is not taken
    log_ratio = np.log(distance.astype(np.float32) / np.float32(max_exact))
  large = max_exact + (log_ratio / np.float32(math.log(max_distance / max_exact))
                       * np.float32(num_buckets - max_exact))
  large = np.minimum(np.where(distance < max_exact, 0, large).astype(np.int32),
                     num_buckets - 1)
  return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class T5Block(nn.Module):
  """x + SelfAttention(RMSNorm(x)), then x + FeedForward(RMSNorm(x))."""
  config: T5Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, position_bias: jax.Array) -> jax.Array:
    c = self.config
    dense = functools.partial(nn.Dense, use_bias=False, dtype=self.dtype)
    norm = functools.partial(nn.RMSNorm, epsilon=c.layer_norm_epsilon, dtype=self.dtype)
    inner = c.num_heads * c.d_kv

    def heads_of(t):  # [B, L, inner] -> [B, L, H, d_kv]
      return t.reshape(t.shape[:2] + (c.num_heads, c.d_kv))

    h = norm(name="attention_norm")(x)
    a = layers.attend(heads_of(dense(inner, name="q")(h)), heads_of(dense(inner, name="k")(h)),
                      heads_of(dense(inner, name="v")(h)), mask, bias=position_bias, scale=1.0)
    x = x + dense(c.d_model, name="o")(a.reshape(x.shape[:2] + (-1,)))
    h = norm(name="ff_norm")(x)
    act = layers.ACTIVATIONS[c.activation]
    if c.is_gated:
      h = act(dense(c.d_ff, name="wi_0")(h)) * dense(c.d_ff, name="wi_1")(h)
    else:
      h = act(dense(c.d_ff, name="wi")(h))
    return x + dense(c.d_model, name="wo")(h)


class T5Encoder(nn.Module):
  """input_ids [B, L] int32, mask [B, L] bool -> last hidden states [B, L, D] dtype."""
  config: T5Config
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    length = input_ids.shape[1]
    x = nn.Embed(c.vocab_size, c.d_model, dtype=self.dtype, name="shared")(input_ids)
    # The bucket table depends only on the (static) length: numpy at trace time.
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]  # [Lq, Lk]
    buckets = relative_position_bucket(rel, c.relative_attention_num_buckets,
                                       c.relative_attention_max_distance)
    table = nn.Embed(c.relative_attention_num_buckets, c.num_heads, dtype=self.dtype,
                     name="relative_attention_bias")
    position_bias = jnp.transpose(table(jnp.asarray(buckets)), (2, 0, 1))[None]  # [1, H, L, L]
    for i in range(c.num_layers):
      x = T5Block(c, dtype=self.dtype, name=f"block_{i}")(x, mask, position_bias)
    return nn.RMSNorm(epsilon=c.layer_norm_epsilon, dtype=self.dtype,
                      name="final_layer_norm")(x)


def tensor_specs(config: T5Config, keys: set[str]) -> list[ckpt.TensorSpec]:
  """Maps every T5Encoder parameter to its Hugging Face tensor name.

  The embedding is `shared.weight`; encoder-only exports may store it (also or
  only) as `encoder.embed_tokens.weight`. Decoder and lm_head tensors are ignored.
  """
  del keys  # T5 names carry no optional prefix.
  specs = [
      ckpt.TensorSpec(("shared", "embedding"), ("shared.weight", "encoder.embed_tokens.weight")),
      ckpt.TensorSpec(("relative_attention_bias", "embedding"),
                      ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",)),
      ckpt.TensorSpec(("final_layer_norm", "scale"), ("encoder.final_layer_norm.weight",)),
  ]
  ff = ("wi_0", "wi_1", "wo") if config.is_gated else ("wi", "wo")
  for i in range(config.num_layers):
    hf = f"encoder.block.{i}.layer"
    for proj in ("q", "k", "v", "o"):
      specs.append(ckpt.TensorSpec((f"block_{i}", proj, "kernel"),
                                   (f"{hf}.0.SelfAttention.{proj}.weight",), transpose=True))
    specs.append(ckpt.TensorSpec((f"block_{i}", "attention_norm", "scale"),
                                 (f"{hf}.0.layer_norm.weight",)))
    for proj in ff:
      specs.append(ckpt.TensorSpec((f"block_{i}", proj, "kernel"),
                                   (f"{hf}.1.DenseReluDense.{proj}.weight",), transpose=True))
    specs.append(ckpt.TensorSpec((f"block_{i}", "ff_norm", "scale"),
                                 (f"{hf}.1.layer_norm.weight",)))
  return specs
