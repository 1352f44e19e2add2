"""The joint U-Net of GCDP: one denoiser for the image and its semantic layout.

Inputs, concatenated along channels at full resolution:
  x_t                      [B, H, W, 3]  the noisy image (Gaussian side)
  Embed(y_t)               [B, H, W, E]  the noisy layout (categorical side)
  self_cond_image          [B, H, W, 3]  previous x0 estimate      (optional)
  self_cond_layout         [B, H, W, K]  previous y0 probabilities (optional)
  lowres_image             [B, H, W, 3]  upsampled low-res image   (SR stage)
  Embed'(lowres_layout)    [B, H, W, E]  upsampled low-res layout  (SR stage)
Conditioning vector [B, D] (D = time_embed_dim), FiLM-applied in every
residual block: Fourier-MLP(log_snr) + MLP(mask-aware mean of the text tokens)
[+ Fourier-MLP(lowres_log_snr)]. Text tokens are also attended to by
cross-attention on the levels that ask for it.
Outputs, from two zero-initialised 3x3 convolutions on the last feature map:
  image_pred [B, H, W, 3] float32 (eps, v or x0: `UNetConfig.prediction` names it)
  layout_logits [B, H, W, K] float32, logits of y0 (None in image-only mode).

Layout (ADM style): per level `num_res_blocks` residual blocks, then one
attention block (self- and/or cross-attention and a feed-forward) if the level
asks for it, then a stride-2 downsample (not after the last level); a middle
block (res, attention, res); and the mirror path with one extra residual block
per level, each consuming a skip connection (scaled by 2**-0.5 with
`scale_skip_connection`, as in Imagen). With `downsample_first` (Imagen's
`memory_efficient`, used by the released GCDP models) every level starts with
its downsample instead, so level i runs at H / 2**(i + 1), and a residual block
at full resolution opens and closes the network.

Text and classifier-free guidance: a learned set of `num_null_text_tokens`
null tokens is always prepended to the projected text tokens, so a
cross-attention row is never fully masked (no NaN) and an empty caption has
something to attend to. Padded positions (text_mask False) are never attended
and are excluded from the pooled mean. `drop_text[b] = True` masks every token
of example b, so that example attends to the null tokens only and its pooled
text is the learned `null_text_pooled` vector: by design, a dropped caption
gives exactly the output of a fully masked caption, and neither depends on
`text_emb`.

Simplifications against the released PyTorch U-Net (imagen-pytorch's), all
for a plainer network of about the same size: no PerceiverResampler (cross-
attention reads the projected tokens directly), no time tokens in the
cross-attention context, no global-context attention in residual blocks, a
3x3 input convolution instead of the multi-kernel cross-embedding, nearest
upsampling + conv instead of pixel shuffle, one attention block per level
(self, cross, feed-forward) instead of cross-attention inside the level's
first residual block, and padded text positions masked out (the released
code replaces them by learned null tokens and attends to those).

Configuration is the frozen dataclass `UNetConfig` (hashable, validated once,
safe as a linen attribute and as a static jit argument). Experiment files
keep it inside their ml_collections ConfigDict via `to_dict()` and rebuild it
with `UNetConfig.from_dict(config.model)`; `JointUNet` accepts either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gcd_jax.diffusion.gaussian import PREDICTIONS  # what image_pred means
from gcd_jax.models import layers

if TYPE_CHECKING:
  import ml_collections

DTYPES = ("float32", "bfloat16", "float16")
ARCHS = ("gcd", "imagen")


def _per_level(value, n: int, name: str, kind):
  """Broadcasts a scalar to a per-level tuple and checks the length."""
  if isinstance(value, (int, bool)):
    value = (value,) * n
  value = tuple(kind(v) for v in value)
  if len(value) != n:
    raise ValueError(
        f"UNetConfig.{name} has {len(value)} entries {value} but channel_mults has {n} "
        "levels; give one entry per level (or a single value for all).")
  return value


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """Every knob of `JointUNet`. Presets live in `gcd_jax.models.presets`.

  Per-level fields (`num_res_blocks`, `self_attention`, `cross_attention`)
  take one entry per entry of `channel_mults`, or a single value for all.
  """

  # Layout (categorical) side. num_classes = 0 is the image-only (Gaussian-only)
  # baseline: no layout embedding, no layout head, no layout parameters.
  num_classes: int = 8
  layout_embed_dim: int = 16
  image_channels: int = 3
  prediction: str = "eps"  # what image_pred means; the network does not care.

  # Widths and depth. Level i has dim * channel_mults[i] channels and runs at
  # resolution H / 2**i; H and W must be divisible by 2**(levels - 1).
  dim: int = 64
  channel_mults: tuple[int, ...] = (1, 2, 2)
  num_res_blocks: tuple[int, ...] | int = 2
  self_attention: tuple[bool, ...] | bool = (False, False, True)
  cross_attention: tuple[bool, ...] | bool = (False, True, True)
  mid_attention: bool = True  # self-attention (+ cross-attention if any level has it) in the middle
  num_heads: int = 4
  head_dim: int = 32
  ff_mult: int = 2
  dropout: float = 0.0
  norm_groups: int = 8
  scale_skip_connection: bool = True  # Imagen's 2**-0.5 on skip connections
  # Imagen's `memory_efficient` block arrangement, which the released GCDP models use: every
  # level starts with a downsample (level i runs at H / 2**(i + 1)), and one
  # residual block at full resolution opens and one closes the network. A
  # quarter of the compute of the default arrangement for the same widths and
  # depths; H and W must then be divisible by 2**levels.
  downsample_first: bool = False

  # Conditioning.
  time_embed_dim: int = 0  # 0 means 4 * dim
  fourier_dim: int = 16  # learned Fourier features of the log-SNR
  text_dim: int = 384  # width of the text encoder's token states (MiniLM: 384, T5-large: 1024)
  text_proj_dim: int = 128  # width of the projected text tokens (keys/values source)
  num_null_text_tokens: int = 4

  # Optional inputs.
  self_condition_image: bool = False
  self_condition_layout: bool = False
  lowres_cond: bool = False  # super-resolution stage: low-res image/layout + augmentation level

  # The network. "gcd": this module's U-Net. "imagen": the released GCDP network
  # (imagen-pytorch's, `gcd_jax.models.imagen_unet`), which loads the authors'
  # weights; it also reads the three fields below and the ones above except
  # dropout, self-conditioning and num_null_text_tokens.
  arch: str = "gcd"
  num_time_tokens: int = 2  # time tokens in the cross-attention context (imagen)
  num_text_latents: int = 32  # PerceiverResampler latents, plus 4 mean-pooled (imagen)
  max_text_len: int = 256  # text positions, padded with null tokens or cut (imagen)

  # Numerics and memory.
  # Compute dtype; "auto": bfloat16 on GPU and TPU (float32 parameters, norms,
  # attention softmax and losses), float32 on CPU, where bfloat16 convolutions
  # are no faster.
  dtype: str = "auto"
  param_dtype: str = "float32"
  remat: bool = False  # rematerialise every residual and attention block

  def __post_init__(self):
    n = len(self.channel_mults)
    if n < 1:
      raise ValueError("UNetConfig.channel_mults must have at least one level.")
    set_ = lambda name, value: object.__setattr__(self, name, value)
    set_("channel_mults", tuple(int(m) for m in self.channel_mults))
    set_("num_res_blocks", _per_level(self.num_res_blocks, n, "num_res_blocks", int))
    set_("self_attention", _per_level(self.self_attention, n, "self_attention", bool))
    set_("cross_attention", _per_level(self.cross_attention, n, "cross_attention", bool))
    if self.prediction not in PREDICTIONS:
      raise ValueError(f"UNetConfig.prediction={self.prediction!r}; expected one of {PREDICTIONS}.")
    if self.dtype not in DTYPES + ("auto",):
      raise ValueError(f"UNetConfig.dtype={self.dtype!r}; expected auto or one of {DTYPES}.")
    if self.param_dtype not in DTYPES:
      raise ValueError(f"UNetConfig.param_dtype={self.param_dtype!r}; expected one of {DTYPES}.")
    if self.num_classes < 0 or self.num_classes == 1:
      raise ValueError(
          f"UNetConfig.num_classes={self.num_classes}; use 0 for image-only or K >= 2.")
    if self.self_condition_layout and not self.has_layout:
      raise ValueError("UNetConfig.self_condition_layout=True needs num_classes > 0.")
    if self.dim % self.norm_groups:
      raise ValueError(
          f"UNetConfig.dim={self.dim} is not divisible by norm_groups={self.norm_groups}; "
          "every feature map has a multiple of dim channels and must split into groups.")
    if any(b < 1 for b in self.num_res_blocks):
      raise ValueError(f"UNetConfig.num_res_blocks={self.num_res_blocks}; need >= 1 per level.")
    if self.fourier_dim % 2:
      raise ValueError(f"UNetConfig.fourier_dim={self.fourier_dim} must be even (sin and cos).")
    if self.arch not in ARCHS:
      raise ValueError(f"UNetConfig.arch={self.arch!r}; expected one of {ARCHS}.")
    if self.arch == "imagen":
      unsupported = {"downsample_first=False": not self.downsample_first,
                     "num_classes=0": not self.has_layout, "dropout > 0": self.dropout > 0,
                     "self-conditioning": self.self_condition_image or self.self_condition_layout}
      bad = [k for k, v in unsupported.items() if v]
      if bad:
        raise ValueError(f"UNetConfig.arch='imagen' (the released GCDP network) does not build "
                         f"{', '.join(bad)}; the released models have none of these.")
    if self.num_null_text_tokens < 1:
      raise ValueError(
          "UNetConfig.num_null_text_tokens must be >= 1 (keeps attention rows non-empty).")

  @property
  def has_layout(self) -> bool:
    """Whether the layout (categorical) side exists."""
    return self.num_classes > 0

  @property
  def num_levels(self) -> int:
    return len(self.channel_mults)

  @property
  def size_multiple(self) -> int:
    """H and W must be multiples of this (2 to the number of downsamples)."""
    return 2**(self.num_levels if self.downsample_first else self.num_levels - 1)

  @property
  def cond_dim(self) -> int:
    """Width of the FiLM conditioning vector."""
    return self.time_embed_dim or 4 * self.dim

  @property
  def compute_dtype(self) -> jnp.dtype:
    """The compute dtype; "auto" resolves by the default backend at trace time."""
    if self.dtype == "auto":
      return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def to_dict(self) -> dict[str, Any]:
    """Plain dict (tuples become lists) for ConfigDicts and checkpoint metadata."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> UNetConfig:
    """Inverse of `to_dict`; accepts a dict or an ml_collections.ConfigDict."""
    if hasattr(d, "to_dict"):
      d = d.to_dict()
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown UNetConfig keys {unknown}; known keys: {sorted(known)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def as_unet_config(config: UNetConfig | Mapping[str, Any] | ml_collections.ConfigDict
                   ) -> UNetConfig:
  """A `UNetConfig` from itself, a dict or an ml_collections.ConfigDict."""
  if isinstance(config, UNetConfig):
    return config
  if isinstance(config, Mapping) or hasattr(config, "to_dict"):
    return UNetConfig.from_dict(config)
  raise TypeError(f"expected a UNetConfig, dict or ConfigDict, got {type(config).__name__}")


def _check_shape(name, x, shape, required=True):
  if x is None:
    if required:
      raise ValueError(f"JointUNet: {name} is required by this config (expected shape {shape}).")
    return
  if tuple(x.shape) != tuple(shape):
    raise ValueError(f"JointUNet: {name} has shape {tuple(x.shape)}, expected {tuple(shape)}.")


def _forbid(name, x, flag):
  if x is not None:
    raise ValueError(f"JointUNet: {name} was given but the config has {flag}; "
                     "enable it in UNetConfig or do not pass it.")


def example_inputs(config: UNetConfig, batch: int, height: int, width: int, text_len: int,
                   text_ids: bool = False) -> tuple[tuple, dict]:
  """Abstract (ShapeDtypeStruct) positional and keyword inputs of a forward pass.

  The one description of the model's inputs, for initialisation, shape
  inference and FLOP counts. `text_ids`: the text is [B, L] int32 token ids (a
  scratch encoder inside the model) instead of [B, L, text_dim] float32 states.
  """
  s = jax.ShapeDtypeStruct
  image = s((batch, height, width, config.image_channels), jnp.float32)
  layout = s((batch, height, width), jnp.int32) if config.has_layout else None
  text = (s((batch, text_len), jnp.int32) if text_ids
          else s((batch, text_len, config.text_dim), jnp.float32))
  args = (image, layout, s((batch,), jnp.float32), text, s((batch, text_len), jnp.bool_))
  kwargs = {"drop_text": s((batch,), jnp.bool_)}
  if config.self_condition_image:
    kwargs["self_cond_image"] = image
  if config.self_condition_layout:
    kwargs["self_cond_layout"] = s((batch, height, width, config.num_classes), jnp.float32)
  if config.lowres_cond:
    kwargs.update(lowres_image=image, lowres_log_snr=s((batch,), jnp.float32))
    if config.has_layout:
      kwargs["lowres_layout"] = layout
  return args, kwargs


def make_unet(config: UNetConfig | Mapping[str, Any] | ml_collections.ConfigDict,
              name: str | None = None) -> nn.Module:
  """The denoiser `config.arch` names: `JointUNet`, or `ImagenJointUNet` for "imagen"."""
  config = as_unet_config(config)
  if config.arch == "imagen":
    from gcd_jax.models import imagen_unet  # pylint: disable=g-import-not-at-top
    return imagen_unet.ImagenJointUNet(config, name=name)
  return JointUNet(config, name=name)


class JointUNet(nn.Module):
  """Joint image + layout denoiser. See the module docstring for the design.

  Attributes:
    config: a `UNetConfig` (or a dict / ConfigDict convertible to one).
  """

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
               train: bool = False) -> tuple[jax.Array, jax.Array | None]:
    """Predicts the image target and the y0 logits.

    Args:
      x_t: [B, H, W, C] float noisy image (C = image_channels).
      y_t: [B, H, W] int32 noisy layout, class ids in [0, K); must be None in
        image-only mode (num_classes = 0).
      log_snr: [B] float, log-SNR of the image noise level.
      text_emb: [B, L, text_dim] float32 token states of the text encoder.
      text_mask: [B, L] bool, True for real tokens, False for padding.
      drop_text: optional [B] bool; True replaces that example's caption by the
        learned null embedding (classifier-free guidance).
      self_cond_image: optional [B, H, W, C] float previous x0 estimate (only
        with self_condition_image; zeros when None).
      self_cond_layout: optional [B, H, W, K] float previous y0 probabilities
        (only with self_condition_layout; zeros when None).
      lowres_image: [B, H, W, C] float upsampled low-res image (lowres_cond).
      lowres_layout: [B, H, W] int32 upsampled low-res layout (lowres_cond with
        a layout side).
      lowres_log_snr: [B] float log-SNR of the low-res augmentation noise
        (lowres_cond).
      train: enables dropout (uses the 'dropout' rng).

    Returns:
      (image_pred [B, H, W, C] float32, layout_logits [B, H, W, K] float32 or
      None in image-only mode).
    """
    cfg = as_unet_config(self.config)
    dtype, pdtype = cfg.compute_dtype, cfg.params_dtype
    self._check_inputs(cfg, x_t, y_t, log_snr, text_emb, text_mask, drop_text,
                       self_cond_image, self_cond_layout, lowres_image, lowres_layout,
                       lowres_log_snr)
    b, height, width = x_t.shape[:3]
    num_classes = cfg.num_classes
    dense = lambda n, name: nn.Dense(n, dtype=dtype, param_dtype=pdtype, name=name)
    embed = lambda name: nn.Embed(num_classes, cfg.layout_embed_dim, dtype=dtype, param_dtype=pdtype,
                                  name=name)

    # ---- Pixel inputs, concatenated along channels.
    inputs = [x_t]
    if cfg.has_layout:
      inputs.append(embed("layout_embed")(y_t))
    if cfg.self_condition_image:
      inputs.append(jnp.zeros_like(x_t) if self_cond_image is None else self_cond_image)
    if cfg.self_condition_layout:
      inputs.append(jnp.zeros((b, height, width, num_classes), dtype) if self_cond_layout is None
                    else self_cond_layout)
    if cfg.lowres_cond:
      inputs.append(lowres_image)
      if cfg.has_layout:
        # Its own table: a low-res class id is clean(ish) evidence, y_t is noise.
        inputs.append(embed("lowres_layout_embed")(lowres_layout))
    h = jnp.concatenate([x.astype(dtype) for x in inputs], axis=-1)

    # ---- Text: tokens for cross-attention, pooled vector for FiLM.
    mask = jnp.asarray(text_mask, bool)
    if drop_text is not None:
      mask = mask & ~jnp.asarray(drop_text, bool)[:, None]
    # where, not multiply: padding may hold anything (even NaN), and 0 * NaN
    # would leak into the outputs and into the gradient of text_proj.
    text_emb = jnp.where(mask[..., None], text_emb, 0)
    tokens = dense(cfg.text_proj_dim, "text_proj")(text_emb)  # [B, L, C_t]
    tokens = jnp.where(mask[..., None], tokens, 0)  # masked positions add nothing to the pool
    null_tokens = self.param("null_text_tokens", nn.initializers.normal(1.0),
                             (cfg.num_null_text_tokens, cfg.text_proj_dim), pdtype)
    context = jnp.concatenate(
        [jnp.broadcast_to(null_tokens.astype(dtype), (b,) + null_tokens.shape), tokens], axis=1)
    context_mask = jnp.concatenate(
        [jnp.ones((b, cfg.num_null_text_tokens), bool), mask], axis=1)  # [B, N + L]
    count = mask.sum(axis=1, keepdims=True)  # [B, 1]
    pooled = tokens.astype(jnp.float32).sum(axis=1) / jnp.maximum(count, 1)
    null_pooled = self.param("null_text_pooled", nn.initializers.normal(1.0),
                             (cfg.text_proj_dim,), pdtype)
    pooled = jnp.where(count > 0, pooled, null_pooled.astype(jnp.float32)[None])  # [B, C_t]
    pooled = nn.LayerNorm(dtype=jnp.float32, param_dtype=pdtype, name="text_pool_norm")(pooled)
    text_cond = dense(cfg.cond_dim, "text_pool_dense_1")(
        nn.silu(dense(cfg.cond_dim, "text_pool_dense_0")(pooled)))

    # ---- Conditioning vector for FiLM.
    embed_log_snr = lambda name: layers.LogSnrEmbedding(
        cfg.cond_dim, cfg.fourier_dim, dtype=dtype, param_dtype=pdtype, name=name)
    cond = embed_log_snr("time_embed")(log_snr).astype(jnp.float32) + text_cond
    if cfg.lowres_cond:
      cond = cond + embed_log_snr("lowres_noise_embed")(lowres_log_snr)
    cond = cond.astype(dtype)  # [B, D]

    # ---- U-Net.
    res_cls = nn.remat(layers.ResBlock) if cfg.remat else layers.ResBlock
    attn_cls = nn.remat(layers.AttentionBlock) if cfg.remat else layers.AttentionBlock
    res = lambda features, name: res_cls(
        features, cfg.norm_groups, cfg.dropout, deterministic=not train, dtype=dtype,
        param_dtype=pdtype, name=name)
    attn = lambda self_attn, cross_attn, name: attn_cls(
        self_attn, cross_attn, cfg.num_heads, cfg.head_dim, cfg.ff_mult, cfg.norm_groups,
        dtype=dtype, param_dtype=pdtype, name=name)
    widths = [cfg.dim * m for m in cfg.channel_mults]
    skip_scale = 2**-0.5 if cfg.scale_skip_connection else 1.0

    downsample = lambda name: layers.Downsample(dtype=dtype, param_dtype=pdtype, name=name)
    upsample = lambda name: layers.Upsample(dtype=dtype, param_dtype=pdtype, name=name)

    h = nn.Conv(widths[0], (3, 3), padding="SAME", dtype=dtype, param_dtype=pdtype,
                name="conv_in")(h)
    if cfg.downsample_first:
      h = res(widths[0], "init_res")(h, cond)
    skips = [h]
    for level, features in enumerate(widths):
      if cfg.downsample_first:
        h = downsample(f"down_{level}_downsample")(h)
        skips.append(h)
      for i in range(cfg.num_res_blocks[level]):
        h = res(features, f"down_{level}_res_{i}")(h, cond)
        if i == cfg.num_res_blocks[level] - 1 and (
            cfg.self_attention[level] or cfg.cross_attention[level]):
          h = attn(cfg.self_attention[level], cfg.cross_attention[level],
                   f"down_{level}_attn")(h, context, context_mask)
        skips.append(h)
      if not cfg.downsample_first and level < cfg.num_levels - 1:
        h = downsample(f"down_{level}_downsample")(h)
        skips.append(h)

    h = res(widths[-1], "mid_res_0")(h, cond)
    if cfg.mid_attention:
      h = attn(True, any(cfg.cross_attention), "mid_attn")(h, context, context_mask)
    h = res(widths[-1], "mid_res_1")(h, cond)

    with_skip = lambda h: jnp.concatenate([h, skips.pop().astype(dtype) * skip_scale], axis=-1)
    for level in reversed(range(cfg.num_levels)):
      # One more block than on the way down: it consumes the skip taken after
      # the downsample into this level's resolution (after conv_in at level 0
      # of the default arrangement).
      for i in range(cfg.num_res_blocks[level] + 1):
        h = res(widths[level], f"up_{level}_res_{i}")(with_skip(h), cond)
      if cfg.self_attention[level] or cfg.cross_attention[level]:
        h = attn(cfg.self_attention[level], cfg.cross_attention[level],
                 f"up_{level}_attn")(h, context, context_mask)
      if cfg.downsample_first or level > 0:
        h = upsample(f"up_{level}_upsample")(h)
    if cfg.downsample_first:
      h = res(widths[0], "final_res")(with_skip(h), cond)

    # ---- Heads, in float32: logits and eps are the quantities the losses see.
    h = nn.silu(layers.group_norm(cfg.norm_groups, pdtype, "out_norm")(h))
    head = lambda n, name: nn.Conv(
        n, (3, 3), padding="SAME", dtype=jnp.float32, param_dtype=pdtype,
        kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros, name=name)
    image_pred = head(cfg.image_channels, "image_head")(h)
    layout_logits = head(num_classes, "layout_head")(h) if cfg.has_layout else None
    return image_pred, layout_logits

  @staticmethod
  def _check_inputs(cfg, x_t, y_t, log_snr, text_emb, text_mask, drop_text, self_cond_image,
                    self_cond_layout, lowres_image, lowres_layout, lowres_log_snr):
    """Raises ValueError with what and where when an input does not fit the config."""
    if x_t.ndim != 4 or x_t.shape[-1] != cfg.image_channels:
      raise ValueError(f"JointUNet: x_t has shape {tuple(x_t.shape)}, expected "
                       f"[B, H, W, {cfg.image_channels}].")
    b, height, width = x_t.shape[:3]
    factor = cfg.size_multiple
    if height % factor or width % factor:
      raise ValueError(
          f"JointUNet: image size {height}x{width} is not divisible by {factor} "
          f"(one halving per downsample: channel_mults={cfg.channel_mults}, "
          f"downsample_first={cfg.downsample_first}); pad or resize the input.")
    image_shape = (b, height, width, cfg.image_channels)
    if cfg.has_layout:
      _check_shape("y_t", y_t, (b, height, width))
    else:
      _forbid("y_t", y_t, "num_classes=0 (image-only mode)")
    _check_shape("log_snr", log_snr, (b,))
    if text_emb.ndim != 3 or text_emb.shape[0] != b or text_emb.shape[-1] != cfg.text_dim:
      raise ValueError(f"JointUNet: text_emb has shape {tuple(text_emb.shape)}, expected "
                       f"[{b}, L, text_dim={cfg.text_dim}].")
    _check_shape("text_mask", text_mask, text_emb.shape[:2])
    _check_shape("drop_text", drop_text, (b,), required=False)
    if cfg.self_condition_image:
      _check_shape("self_cond_image", self_cond_image, image_shape, required=False)
    else:
      _forbid("self_cond_image", self_cond_image, "self_condition_image=False")
    if cfg.self_condition_layout:
      _check_shape("self_cond_layout", self_cond_layout, (b, height, width, cfg.num_classes),
                   required=False)
    else:
      _forbid("self_cond_layout", self_cond_layout, "self_condition_layout=False")
    if cfg.lowres_cond:
      _check_shape("lowres_image", lowres_image, image_shape)
      _check_shape("lowres_log_snr", lowres_log_snr, (b,))
      if cfg.has_layout:
        _check_shape("lowres_layout", lowres_layout, (b, height, width))
      else:
        _forbid("lowres_layout", lowres_layout, "num_classes=0 (image-only mode)")
    else:
      for name, x in (("lowres_image", lowres_image), ("lowres_layout", lowres_layout),
                      ("lowres_log_snr", lowres_log_snr)):
        _forbid(name, x, "lowres_cond=False")
