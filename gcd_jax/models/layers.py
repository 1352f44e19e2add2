"""Building blocks of the joint U-Net (`gcd_jax.models.unet`).

All image tensors are NHWC. Every layer takes a compute `dtype` (activations,
matmuls and convolutions) and a `param_dtype` (stored weights); normalisation
statistics, FiLM modulation, attention logits and softmax are always computed
in float32, because bfloat16 loses too much there (8 bits of mantissa on a sum
of thousands of terms, or on exp of logits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# Typical log-SNRs lie in [-20, 20] (cosine schedule: about [-17, 10] over t in
# [0.01, 0.99]). Dividing by 10 maps them to [-2, 2], where frequencies drawn
# from N(0, 1) give between a fraction of a period and a few periods over the
# range: smooth enough to interpolate, fine enough to tell nearby levels apart.
LOG_SNR_SCALE = 10.0

# Masked attention logits are set to this instead of -inf: the learned null
# tokens guarantee at least one unmasked key per row, and a finite value keeps
# (-inf) - (-inf) = NaN out of softmax's max subtraction in any case.
_MASKED_LOGIT = -1e30


def group_norm(num_groups: int, param_dtype: Dtype, name: str | None = None) -> nn.GroupNorm:
  """GroupNorm whose output is float32 whatever the input dtype."""
  return nn.GroupNorm(
      num_groups=num_groups, epsilon=1e-5, dtype=jnp.float32,
      param_dtype=param_dtype, name=name)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                          implementation: str = "auto") -> jax.Array:
  """Multi-head attention with float32 logits and softmax.

  Args:
    q: [B, Q, heads, head_dim] queries (compute dtype).
    k: [B, K, heads, head_dim] keys.
    v: [B, K, heads, head_dim] values.
    mask: optional [B, K] bool; False keys get no weight. Every row must have
      at least one True key (callers append always-on null tokens).
    implementation: "einsum" (the CPU-tuned path below), "jax"
      (`jax.nn.dot_product_attention`, which picks cuDNN's fused flash kernel
      on a GPU), or "auto": "einsum" on CPU, "jax" elsewhere. Both give the
      same numbers to rounding (tested).

  Returns:
    [B, Q, heads, head_dim] in the dtype of `v`.
  """
  if implementation == "auto":
    implementation = "einsum" if jax.default_backend() == "cpu" else "jax"
  if implementation == "jax":
    return jax.nn.dot_product_attention(
        q, k, v, mask=None if mask is None else mask[:, None, None, :]).astype(v.dtype)
  if implementation != "einsum":
    raise ValueError(f"attention implementation {implementation!r}; expected auto, einsum or jax")
  # Heads go next to the batch axis before the products: XLA:CPU runs the
  # einsums 4x faster with the batch dimensions leading (measured: 21 vs 86 ms
  # for 256 tokens, 8 heads x 64, batch 16), transposes included.
  q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))  # [B, heads, L, head_dim]
  logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits / math.sqrt(q.shape[-1])
  if mask is not None:
    logits = jnp.where(mask[:, None, None, :], logits, _MASKED_LOGIT)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, v), 1, 2)


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]],
                         lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: jax.lax.ConvGeneralDilatedDimensionNumbers = None,
                         feature_group_count: int = 1,
                         precision: jax.lax.PrecisionLike = None, **kwargs: Any) -> jax.Array:
  """`lax.conv_general_dilated`, computed as patches @ kernel on tiny CPU feature maps.

  XLA:CPU runs a 3x3 convolution over 2x2 maps very slowly (measured here: 12 ms
  for 256 -> 256 channels at batch 16, 6 GFLOP/s, against 300 GFLOP/s at 4x4),
  and the deepest levels of the paper's U-Net are that small at 32x32 inputs. The
  same product as patches @ kernel takes 1 ms. Parameters and results are those
  of nn.Conv; only stride-1, undilated, ungrouped NHWC convolutions of maps with
  at most 4 pixels take this path, and only on the CPU.
  """
  simple = (jax.default_backend() == "cpu" and lhs.ndim == 4
            and lhs.shape[1] * lhs.shape[2] <= 4 and rhs.shape[0] * rhs.shape[1] > 1
            and tuple(window_strides) == (1, 1) and feature_group_count == 1
            and all(d == 1 for d in (lhs_dilation or (1, 1)))
            and all(d == 1 for d in (rhs_dilation or (1, 1))))
  if not simple:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs)
  kh, kw, cin, cout = rhs.shape  # flax's HWIO kernel
  patches = jax.lax.conv_general_dilated_patches(
      lhs, (kh, kw), (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      precision=precision)  # [B, H, W, cin * kh * kw], features ordered (cin, kh, kw)
  kernel = jnp.transpose(rhs, (2, 0, 1, 3)).reshape(cin * kh * kw, cout)
  return jnp.dot(patches, kernel, precision=precision)


def fourier_features(x: jax.Array, freqs: jax.Array) -> jax.Array:
  """[B] -> [B, 1 + 2F]: x, sin(2 pi x f), cos(2 pi x f) for F learned frequencies, in float32.

  Keeping x itself lets the next layer see a monotone function of the noise
  level; sin/cos of large arguments are evaluated in float32 even for bfloat16
  models. (Imagen's learned sinusoidal embedding, in its order.)
  """
  x = x.astype(jnp.float32)[:, None]  # [B, 1]
  angles = 2 * math.pi * x * freqs.astype(jnp.float32)[None, :]  # [B, F]
  return jnp.concatenate([x, jnp.sin(angles), jnp.cos(angles)], axis=-1)


class LogSnrEmbedding(nn.Module):
  """Learned Fourier features of a log-SNR, then an MLP (Imagen's time embedding).

  Attributes:
    features: output width D.
    fourier_dim: number of Fourier features (even); D_f/2 learned frequencies.
  """

  features: int
  fourier_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, log_snr: jax.Array) -> jax.Array:
    """log_snr: [B] float -> [B, features] in the compute dtype."""
    freqs = self.param("frequencies", nn.initializers.normal(1.0),
                       (self.fourier_dim // 2,), self.param_dtype)
    h = fourier_features(log_snr.astype(jnp.float32) / LOG_SNR_SCALE, freqs)
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    h = nn.silu(dense(self.features, "dense_0")(h))
    return dense(self.features, "dense_1")(h)


class ResBlock(nn.Module):
  """Residual block GN-SiLU-conv, GN-FiLM-SiLU-dropout-conv, plus (1x1) skip.

  FiLM: the conditioning vector (time + pooled text + low-res augmentation
  level) gives a per-channel scale and shift applied after the second
  GroupNorm: h <- h * (1 + scale) + shift.

  Attributes:
    features: output channels.
    deterministic: True disables dropout; False uses the 'dropout' rng.
  """

  features: int
  norm_groups: int
  dropout: float
  deterministic: bool
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
    """x: [B, H, W, C_in], cond: [B, D_cond] -> [B, H, W, features] (compute dtype)."""
    conv = lambda k, name: nn.Conv(self.features, (k, k), padding="SAME", dtype=self.dtype,
                                   param_dtype=self.param_dtype, name=name,
                                   conv_general_dilated=conv_general_dilated)
    h = nn.silu(group_norm(self.norm_groups, self.param_dtype, "norm_0")(x))
    h = conv(3, "conv_0")(h)
    film = nn.Dense(2 * self.features, dtype=self.dtype, param_dtype=self.param_dtype,
                    name="film")(nn.silu(cond))
    scale, shift = jnp.split(film.astype(jnp.float32)[:, None, None, :], 2, axis=-1)
    h = group_norm(self.norm_groups, self.param_dtype, "norm_1")(h) * (1 + scale) + shift
    h = nn.silu(h)
    h = nn.Dropout(self.dropout)(h, deterministic=self.deterministic)
    h = conv(3, "conv_1")(h)
    if x.shape[-1] != self.features:
      x = conv(1, "skip")(x)
    return x.astype(self.dtype) + h


class AttentionBlock(nn.Module):
  """Transformer block on the pixels of a feature map: [self-attn] [cross-attn] FF.

  Each sub-layer is pre-normalised (GroupNorm on the image, LayerNorm on the
  text context) and residual.

  Attributes:
    self_attention: add multi-head self-attention over the H*W positions.
    cross_attention: add multi-head attention from pixels to the text context.
    num_heads, head_dim: attention shape (inner width num_heads * head_dim).
    ff_mult: hidden width of the feed-forward layer, in multiples of C.
  """

  self_attention: bool
  cross_attention: bool
  num_heads: int
  head_dim: int
  ff_mult: int
  norm_groups: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _proj(self, name):
    return nn.DenseGeneral((self.num_heads, self.head_dim), dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)

  def _out(self, features, name):
    return nn.DenseGeneral(features, axis=(-2, -1), dtype=self.dtype,
                           param_dtype=self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array) -> jax.Array:
    """Applies the block.

    Args:
      x: [B, H, W, C] feature map (compute dtype).
      context: [B, N, C_text] text tokens, null tokens first (used only with
        cross_attention).
      context_mask: [B, N] bool, True for keys that may be attended.

    Returns:
      [B, H, W, C] in the compute dtype.
    """
    b, height, width, c = x.shape
    x = x.astype(self.dtype)
    if self.self_attention:
      h = group_norm(self.norm_groups, self.param_dtype, "self_attn_norm")(x)
      h = h.reshape(b, height * width, c)
      q, k, v = (self._proj(f"self_attn_{n}")(h) for n in "qkv")
      h = self._out(c, "self_attn_out")(dot_product_attention(q, k, v))
      x = x + h.reshape(x.shape)
    if self.cross_attention:
      h = group_norm(self.norm_groups, self.param_dtype, "cross_attn_norm")(x)
      h = h.reshape(b, height * width, c)
      ctx = nn.LayerNorm(dtype=jnp.float32, param_dtype=self.param_dtype,
                         name="context_norm")(context)
      q = self._proj("cross_attn_q")(h)
      k = self._proj("cross_attn_k")(ctx)
      v = self._proj("cross_attn_v")(ctx)
      h = self._out(c, "cross_attn_out")(dot_product_attention(q, k, v, context_mask))
      x = x + h.reshape(x.shape)
    h = group_norm(self.norm_groups, self.param_dtype, "ff_norm")(x)
    h = nn.Dense(self.ff_mult * c, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="ff_0")(h)
    h = nn.Dense(c, dtype=self.dtype, param_dtype=self.param_dtype, name="ff_1")(nn.gelu(h))
    return x + h


class Downsample(nn.Module):
  """Stride-2 3x3 convolution: [B, H, W, C] -> [B, H/2, W/2, C]."""

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # Symmetric padding (not XLA's SAME, which pads only bottom/right for
    # stride 2) so that the sampling grid is centred like PyTorch's.
    return nn.Conv(x.shape[-1], (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                   dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)


class Upsample(nn.Module):
  """Nearest-neighbour x2 then 3x3 convolution: [B, H, W, C] -> [B, 2H, 2W, C]."""

  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return nn.Conv(x.shape[-1], (3, 3), padding="SAME", dtype=self.dtype,
                   param_dtype=self.param_dtype, name="conv",
                   conv_general_dilated=conv_general_dilated)(x)
