"""The released GCDP network (imagen-pytorch's U-Net with a layout side), in linen.

`UNetConfig(arch="imagen")` selects it (presets `gcdp_base`, `gcdp_sr`). It is
the network of the authors' `JointUnet` (`BaseJointUnet` / `SRJointUnet` with
the overrides of their train.py), rebuilt so that their trained weights load
into it (`python -m gcd_jax.convert_gcdp`) and give the same outputs. Its call
is `JointUNet`'s (x_t, y_t, log-SNR, text, mask -> image prediction, layout
logits), so training, sampling and evaluation use it unchanged.

What it has that our own U-Net (`unet.py`) leaves out, as released:
  * text: T5 token states projected to `text_proj_dim`, padded or cut to
    `max_text_len` (256) positions; padding and dropped captions take learned
    null tokens per position; a PerceiverResampler (2 layers, 32 learned + 4
    mean-pooled latents) turns them into 36 tokens;
  * time tokens: the log-SNR embedding also gives `num_time_tokens` (2) tokens,
    and an SR stage's augmentation level 2 more; the cross-attention context is
    LayerNorm(time tokens + text latents);
  * the FiLM vector: time + text (an MLP of the latents' mean) [+ augmentation];
  * blocks: a multi-kernel input convolution (3, 7, 15); residual blocks with
    global-context gating, and cross-attention inside the first block of a
    level that asks for it; multi-query self-attention with a learned null
    key/value and the context's keys; pixel-unshuffle downsampling and
    pixel-shuffle upsampling; the SR stage's low-res inputs concatenated again
    before the output convolutions.
Module and parameter names follow the PyTorch module tree (`downs/1/2/0/...`
for `downs.1.2.0....`), so the converter is a rule per leaf, not a table.

Only the released block arrangement is built: `downsample_first=True`
(Imagen's `memory_efficient`), a layout side, no self-conditioning, no
dropout (the released network has none).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.models import layers
from gcd_jax.models import unet as unet_lib

Dtype = Any
_LN_EPS = 1e-5  # imagen-pytorch's LayerNorm in float32, torch's LayerNorm and GroupNorm


def gelu(x: jax.Array) -> jax.Array:
  """torch.nn.GELU(): the exact (erf) form."""
  return nn.gelu(x, approximate=False)


class GainLayerNorm(nn.Module):
  """imagen-pytorch's LayerNorm: normalised over the last axis, a gain `g`, no bias."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    g = self.param("g", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + _LN_EPS) * g).astype(x.dtype)


def torch_layer_norm(name: str) -> nn.LayerNorm:
  """torch.nn.LayerNorm (gain and bias, eps 1e-5), in float32."""
  return nn.LayerNorm(epsilon=_LN_EPS, dtype=jnp.float32, name=name)






def _split_heads(x: jax.Array, heads: int) -> jax.Array:
  """[B, N, heads * d] -> [B, N, heads, d] (einops 'b n (h d)')."""
  return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


class CrossAttention(nn.Module):
  """Pixels to the conditioning tokens, multi-head, a learned null key/value first."""

  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    b, c = x.shape[0], x.shape[-1]
    inner = self.heads * self.head_dim
    dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, name=name)
    h = GainLayerNorm(name="norm")(x)
    q = _split_heads(dense(inner, "to_q")(h), self.heads)
    k, v = jnp.split(dense(2 * inner, "to_kv")(context.astype(self.dtype)), 2, axis=-1)
    null_kv = self.param("null_kv", nn.initializers.normal(1.0), (2, self.head_dim), jnp.float32)
    null = lambda i: jnp.broadcast_to(null_kv[i].astype(self.dtype),
                                      (b, 1, self.heads, self.head_dim))
    k = jnp.concatenate([null(0), _split_heads(k, self.heads)], axis=1)
    v = jnp.concatenate([null(1), _split_heads(v, self.heads)], axis=1)
    out = layers.dot_product_attention(q, k, v).reshape(*x.shape[:-1], inner)
    out = nn.Dense(c, use_bias=False, dtype=self.dtype, name="to_out_0")(out)
    return GainLayerNorm(name="to_out_1")(out)


class Attention(nn.Module):
  """Multi-query self-attention (one key/value head), a learned null key/value, and
  keys/values from the context when `context_dim` is set: keys [context, null, self]."""

  heads: int
  head_dim: int
  with_context: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
    b, n, c = x.shape
    inner, d = self.heads * self.head_dim, self.head_dim
    dense = lambda f, name, bias=False: nn.Dense(f, use_bias=bias, dtype=self.dtype, name=name)
    h = GainLayerNorm(name="norm")(x)
    q = _split_heads(dense(inner, "to_q")(h), self.heads)
    k, v = jnp.split(dense(2 * d, "to_kv")(h), 2, axis=-1)  # [B, N, d] each
    null_kv = self.param("null_kv", nn.initializers.normal(1.0), (2, d), jnp.float32)
    ks, vs = [null_kv[0].astype(self.dtype)[None, None].repeat(b, 0), k], \
             [null_kv[1].astype(self.dtype)[None, None].repeat(b, 0), v]
    if self.with_context:
      ctx = torch_layer_norm("to_context_0")(context)
      ck, cv = jnp.split(dense(2 * d, "to_context_1", bias=True)(ctx), 2, axis=-1)
      ks, vs = [ck] + ks, [cv] + vs
    k, v = jnp.concatenate(ks, axis=1), jnp.concatenate(vs, axis=1)
    k = jnp.broadcast_to(k[:, :, None], (*k.shape[:2], self.heads, d))
    v = jnp.broadcast_to(v[:, :, None], (*v.shape[:2], self.heads, d))
    out = layers.dot_product_attention(q, k, v).reshape(b, n, inner)
    out = nn.Dense(c, use_bias=False, dtype=self.dtype, name="to_out_0")(out)
    return GainLayerNorm(name="to_out_1")(out)


class FeedForward(nn.Module):
  """LN, Linear (no bias), GELU, LN, Linear (no bias) over the last axis: imagen's
  FeedForward and, on [B, H, W, C] maps, its ChanFeedForward (channel LayerNorm and
  1x1 convolutions are the same products)."""

  mult: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    h = GainLayerNorm(name="0")(x)
    h = gelu(nn.Dense(int(c * self.mult), use_bias=False, dtype=self.dtype, name="1")(h))
    h = GainLayerNorm(name="3")(h)
    return nn.Dense(c, use_bias=False, dtype=self.dtype, name="4")(h)






class TransformerBlock(nn.Module):
  """Self-attention (with the context's keys) then a channel feed-forward, both residual."""

  heads: int
  head_dim: int
  ff_mult: float
  depth: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
    b, hh, ww, c = x.shape
    for i in range(self.depth):
      attn = Attention(self.heads, self.head_dim, True, self.dtype, name=f"layers_{i}_0_fn")
      x = attn(x.reshape(b, hh * ww, c), context).reshape(x.shape) + x
      x = FeedForward(self.ff_mult, self.dtype, name=f"layers_{i}_1")(x) + x
    return x


class GlobalContext(nn.Module):
  """A softmax-pooled summary of the map gates its channels (sigmoid)."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, hh, ww, c = x.shape
    conv = lambda f, name: nn.Conv(f, (1, 1), dtype=self.dtype, name=name)
    weights = jax.nn.softmax(conv(1, "to_k")(x).astype(jnp.float32).reshape(b, hh * ww), axis=-1)
    pooled = jnp.einsum("bn,bnc->bc", weights, x.reshape(b, hh * ww, c).astype(jnp.float32))
    h = nn.silu(conv(max(3, c // 2), "net_0")(pooled[:, None, None].astype(self.dtype)))
    return jax.nn.sigmoid(conv(c, "net_2")(h).astype(jnp.float32))  # [B, 1, 1, C]


class ResnetBlock(nn.Module):
  """GN-SiLU-conv [+ cross-attention to the context], GN-FiLM-SiLU-conv, [global-context
  gate], plus a 1x1 skip when the width changes (imagen-pytorch's ResnetBlock)."""

  features: int
  groups: int
  cross_attention: bool = False
  global_context: bool = False
  heads: int = 8
  head_dim: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array, context: jax.Array | None = None) -> jax.Array:
    def block(h, name, scale_shift=None):
      h = layers.group_norm(self.groups, jnp.float32, f"{name}_groupnorm")(h)
      if scale_shift is not None:
        h = h * (scale_shift[0] + 1) + scale_shift[1]
      return nn.Conv(self.features, (3, 3), padding="SAME", dtype=self.dtype,
                     conv_general_dilated=layers.conv_general_dilated,
                     name=f"{name}_project")(nn.silu(h))

    film = nn.Dense(2 * self.features, dtype=self.dtype, name="time_mlp_1")(nn.silu(cond))
    scale, shift = jnp.split(film.astype(jnp.float32)[:, None, None, :], 2, axis=-1)
    h = block(x, "block1")
    if self.cross_attention:
      b, hh, ww, c = h.shape
      attn = CrossAttention(self.heads, self.head_dim, self.dtype, name="cross_attn_fn")
      h = attn(h.reshape(b, hh * ww, c), context).reshape(h.shape) + h
    h = block(h, "block2", (scale, shift))
    if self.global_context:
      h = h * GlobalContext(self.dtype, name="gca")(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype, name="res_conv")(x)
    return (h + x).astype(self.dtype)


class PerceiverAttention(nn.Module):
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, latents: jax.Array) -> jax.Array:
    inner = self.heads * self.head_dim
    dense = lambda f, name: nn.Dense(f, use_bias=False, dtype=self.dtype, name=name)
    x = torch_layer_norm("norm")(x)
    latents = torch_layer_norm("norm_latents")(latents)
    q = _split_heads(dense(inner, "to_q")(latents), self.heads)
    k, v = jnp.split(dense(2 * inner, "to_kv")(jnp.concatenate([x, latents], axis=1)), 2, axis=-1)
    out = layers.dot_product_attention(q, _split_heads(k, self.heads), _split_heads(v, self.heads))
    out = dense(latents.shape[-1], "to_out_0")(out.reshape(*latents.shape[:2], inner))
    return torch_layer_norm("to_out_1")(out)


class PerceiverResampler(nn.Module):
  """Text tokens [B, N, D] -> latents [B, mean_pooled + num_latents, D] (as released:
  depth 2, 4 latents from the mean of the sequence, feed-forward x4, no mask)."""

  num_latents: int
  heads: int
  head_dim: int
  depth: int = 2
  num_latents_mean_pooled: int = 4
  max_seq_len: int = 512
  ff_mult: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    pos = nn.Embed(self.max_seq_len, d, name="pos_emb")(jnp.arange(n))
    x_pos = x + pos[None].astype(x.dtype)
    latents = self.param("latents", nn.initializers.normal(1.0), (self.num_latents, d), jnp.float32)
    latents = jnp.broadcast_to(latents.astype(x.dtype), (b, self.num_latents, d))
    pooled = GainLayerNorm(name="to_latents_from_mean_pooled_seq_0")(x.mean(axis=1))
    pooled = nn.Dense(d * self.num_latents_mean_pooled, dtype=self.dtype,
                      name="to_latents_from_mean_pooled_seq_1")(pooled)
    latents = jnp.concatenate([pooled.reshape(b, self.num_latents_mean_pooled, d), latents], 1)
    for i in range(self.depth):
      latents = PerceiverAttention(self.heads, self.head_dim, self.dtype,
                                   name=f"layers_{i}_0")(x_pos, latents) + latents
      latents = FeedForward(self.ff_mult, self.dtype, name=f"layers_{i}_1")(latents) + latents
    return latents




def _pixel_unshuffle(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, H/2, W/2, 4C], channel c*4 + 2*i + j (einops 'c (h s1) (w s2) -> (c s1 s2)')."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)


def _pixel_shuffle(x: jax.Array) -> jax.Array:
  """[B, H, W, 4C] -> [B, 2H, 2W, C], input channel c*4 + 2*i + j to (2h + i, 2w + j) (torch)."""
  b, h, w, c4 = x.shape
  c = c4 // 4
  x = x.reshape(b, h, w, c, 2, 2)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c)


class ImagenJointUNet(nn.Module):
  """The released GCDP denoiser. `config`: a UNetConfig with arch="imagen"."""

  config: Any

  @nn.compact
  def __call__(self, x_t: jax.Array, y_t: jax.Array | None, log_snr: jax.Array,
               text_emb: jax.Array, text_mask: jax.Array, *,
               drop_text: jax.Array | None = None,
               self_cond_image: jax.Array | None = None,
               self_cond_layout: jax.Array | None = None,
               lowres_image: jax.Array | None = None,
               lowres_layout: jax.Array | None = None,
               lowres_log_snr: jax.Array | None = None,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """JointUNet's contract; see `unet.JointUNet.__call__`. `train` changes nothing
    (the released network has no dropout)."""
    del train
    cfg = unet_lib.as_unet_config(self.config)
    unet_lib.JointUNet._check_inputs(  # pylint: disable=protected-access
        cfg, x_t, y_t, log_snr, text_emb, text_mask, drop_text, self_cond_image,
        self_cond_layout, lowres_image, lowres_layout, lowres_log_snr)
    dtype = cfg.compute_dtype
    b = x_t.shape[0]
    dim, cond_dim, time_dim = cfg.dim, cfg.text_proj_dim, cfg.cond_dim
    heads, head_dim = cfg.num_heads, cfg.head_dim
    embed = lambda name: nn.Embed(cfg.num_classes, cfg.layout_embed_dim, name=name)

    # ---- Pixel inputs: image, layout embedding [, low-res image, its layout embedding].
    pixels = [x_t.astype(jnp.float32), embed("init_emb_seg_emb_layer")(y_t)]
    lowres = []
    if cfg.lowres_cond:
      lowres = [lowres_image.astype(jnp.float32),
                embed("init_emb_seg_lowres_emb_layer")(lowres_layout)]
    h = jnp.concatenate(pixels + lowres, axis=-1).astype(dtype)
    kernels = (3, 7, 15)
    widths = [dim // 2**i for i in range(1, len(kernels))]
    widths.append(dim - sum(widths))
    h = jnp.concatenate(
        [nn.Conv(w, (k, k), padding="SAME", dtype=dtype, name=f"init_conv_convs_{i}")(h)
         for i, (k, w) in enumerate(zip(kernels, widths))], axis=-1)

    # ---- Time: learned sinusoidal features of the raw log-SNR, Linear + SiLU (the
    # "hiddens"), then the FiLM vector and the time tokens from them [+ the same for
    # an SR stage's augmentation level].
    t, time_tokens = 0.0, []
    levels = [("", log_snr)] + ([("lowres_", lowres_log_snr)] if cfg.lowres_cond else [])
    for p, level in levels:
      freqs = self.param(f"to_{p}time_hiddens_0_weights", nn.initializers.normal(1.0),
                         (cfg.fourier_dim // 2,), jnp.float32)
      hidden = nn.silu(nn.Dense(time_dim, dtype=dtype, name=f"to_{p}time_hiddens_1")(
          layers.fourier_features(level, freqs)))
      t = t + nn.Dense(time_dim, dtype=dtype, name=f"to_{p}time_cond_0")(hidden).astype(
          jnp.float32)
      time_tokens.append(nn.Dense(cond_dim * cfg.num_time_tokens, dtype=dtype,
                                  name=f"to_{p}time_tokens_0")(hidden).reshape(
                                      b, cfg.num_time_tokens, cond_dim))
    time_tokens = jnp.concatenate(time_tokens, axis=1)

    # ---- Text: projected, padded or cut to max_text_len, null tokens where masked or dropped.
    keep = jnp.ones((b,), bool) if drop_text is None else ~jnp.asarray(drop_text, bool)
    n = cfg.max_text_len
    mask = jnp.asarray(text_mask, bool)
    tokens = nn.Dense(cond_dim, dtype=dtype, name="text_to_cond")(
        jnp.where(mask[..., None], text_emb, 0))[:, :n]
    mask = mask[:, :n]
    if tokens.shape[1] < n:
      pad = n - tokens.shape[1]
      tokens = jnp.pad(tokens, ((0, 0), (0, pad), (0, 0)))
      mask = jnp.pad(mask, ((0, 0), (0, pad)))
    null_embed = self.param("null_text_embed", nn.initializers.normal(1.0), (1, n, cond_dim),
                            jnp.float32)
    tokens = jnp.where((mask & keep[:, None])[..., None], tokens, null_embed.astype(dtype))
    latents = PerceiverResampler(cfg.num_text_latents, heads, head_dim, dtype=dtype,
                                 name="attn_pool")(tokens)
    pooled = latents.astype(jnp.float32).mean(axis=1)
    text_hidden = nn.Dense(time_dim, dtype=dtype, name="to_text_non_attn_cond_3")(nn.silu(
        nn.Dense(time_dim, dtype=dtype, name="to_text_non_attn_cond_1")(
            torch_layer_norm("to_text_non_attn_cond_0")(pooled))))
    null_hidden = self.param("null_text_hidden", nn.initializers.normal(1.0), (1, time_dim),
                             jnp.float32)
    t = t + jnp.where(keep[:, None], text_hidden.astype(jnp.float32), null_hidden)
    context = torch_layer_norm("norm_cond")(
        jnp.concatenate([time_tokens, latents], axis=1).astype(jnp.float32)).astype(dtype)
    t = t.astype(dtype)

    # ---- U-Net (the memory-efficient arrangement).
    def res(features, name, cross=False, gca=False):
      return ResnetBlock(features, cfg.norm_groups, cross, gca, heads, head_dim, dtype, name=name)

    mults = cfg.channel_mults
    dims = [dim] + [dim * m for m in mults]
    skip_scale = 2**-0.5 if cfg.scale_skip_connection else 1.0
    h = res(dim, "init_resnet_block", gca=True)(h, t)
    hiddens = []
    for i in range(cfg.num_levels):
      h = nn.Conv(dims[i + 1], (1, 1), dtype=dtype, name=f"downs_{i}_0_1")(_pixel_unshuffle(h))
      h = res(dims[i + 1], f"downs_{i}_1", cross=cfg.cross_attention[i])(h, t, context)
      for j in range(cfg.num_res_blocks[i]):
        h = res(dims[i + 1], f"downs_{i}_2_{j}", gca=True)(h, t)
        hiddens.append(h)
      if cfg.self_attention[i]:
        h = TransformerBlock(heads, head_dim, cfg.ff_mult, dtype=dtype, name=f"downs_{i}_3")(
            h, context)
      hiddens.append(h)

    # The middle blocks are built without the U-Net's attention arguments in the
    # released code, so their cross-attention has CrossAttention's defaults.
    mid = lambda name: ResnetBlock(dims[-1], cfg.norm_groups, True, False, 8, 64, dtype, name=name)
    h = mid("mid_block1")(h, t, context)
    if cfg.mid_attention:
      bb, hh, ww, c = h.shape
      attn = Attention(heads, head_dim, False, dtype, name="mid_attn_fn_fn")
      h = attn(h.reshape(bb, hh * ww, c)).reshape(h.shape) + h
    h = mid("mid_block2")(h, t, context)

    with_skip = lambda h: jnp.concatenate([h, hiddens.pop() * skip_scale], axis=-1)
    for u, i in enumerate(reversed(range(cfg.num_levels))):
      h = res(dims[i + 1], f"ups_{u}_0", cross=cfg.cross_attention[i])(with_skip(h), t, context)
      for j in range(cfg.num_res_blocks[i]):
        h = res(dims[i + 1], f"ups_{u}_1_{j}", gca=True)(with_skip(h), t)
      if cfg.self_attention[i]:
        h = TransformerBlock(heads, head_dim, cfg.ff_mult, dtype=dtype, name=f"ups_{u}_2")(
            h, context)
      h = nn.silu(nn.Conv(dims[i] * 4, (1, 1), dtype=dtype, name=f"ups_{u}_3_net_0")(h))
      h = _pixel_shuffle(h)

    h = res(dim, "final_res_block", gca=True)(h, t)
    if lowres:
      h = jnp.concatenate([h] + [x.astype(dtype) for x in lowres], axis=-1)
    head = lambda f, name: nn.Conv(f, (3, 3), padding="SAME", dtype=jnp.float32,
                                   kernel_init=nn.initializers.zeros, name=name)
    return head(cfg.image_channels, "final_conv")(h), head(cfg.num_classes, "final_conv_seg")(h)
