"""CLIP (ViT image tower + causal text transformer) in linen, loading HF checkpoints.

Matches `transformers.CLIPModel`'s `image_embeds` and `text_embeds` (checked to
1e-4 against PyTorch in tests/metrics/test_clip.py) for checkpoints saved from
CLIPModel, such as the paper's openai/clip-vit-large-patch14-336. Only what the
CLIP score needs is built: both towers and their projections. The scorer around
it (preprocessing, tokenizer, batching) is in clip_score.py.

Parameter names follow the Hugging Face module names, so that `tensor_specs` reads
as a table of renamings.
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

# Hugging Face `hidden_act` names -> functions. OpenAI's CLIPs use "quick_gelu",
# x * sigmoid(1.702 x), an approximation of GELU different enough (up to ~2e-2)
# that confusing it with "gelu" (exact, erf) would fail the golden test.
ACTIVATIONS = {**layers.ACTIVATIONS, "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x)}

# Old CLIP configs (all of openai/*) say eos_token_id 2 although <|endoftext|> is
# 49407; for them HF pools at the largest token id, which is <|endoftext|> because
# it is the last entry of the vocabulary.
LEGACY_EOS_TOKEN_ID = 2


def _from_hf(cls, fields: dict[str, Any], where: str):
  """cls from the known keys of one config dict; missing keys take HF's defaults."""
  names = {f.name for f in dataclasses.fields(cls)}
  config = cls(**{k: v for k, v in fields.items() if k in names})
  if config.hidden_act not in ACTIVATIONS:
    raise ckpt.CheckpointError(f"{where}: hidden_act {config.hidden_act!r} is not supported; "
                               f"known: {sorted(ACTIVATIONS)}")
  if config.hidden_size % config.num_attention_heads:
    raise ckpt.CheckpointError(f"{where}: hidden_size {config.hidden_size} is not a multiple "
                               f"of num_attention_heads {config.num_attention_heads}")
  return config


@dataclasses.dataclass(frozen=True)
class ClipTextConfig:
  """`text_config` of a CLIP config.json; defaults are transformers' (CLIPTextConfig)."""
  vocab_size: int = 49408
  hidden_size: int = 512
  intermediate_size: int = 2048
  num_hidden_layers: int = 12
  num_attention_heads: int = 8
  max_position_embeddings: int = 77
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5
  eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class ClipVisionConfig:
  """`vision_config` of a CLIP config.json; defaults are transformers' (CLIPVisionConfig)."""
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  num_channels: int = 3
  image_size: int = 224
  patch_size: int = 32
  hidden_act: str = "quick_gelu"
  layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class ClipConfig:
  text: ClipTextConfig
  vision: ClipVisionConfig
  projection_dim: int = 512

  @classmethod
  def from_hf(cls, config: dict[str, Any], config_path: pathlib.Path) -> ClipConfig:
    """From a parsed CLIPModel config.json (model_type "clip")."""
    if config.get("model_type") != "clip":
      raise ckpt.CheckpointError(
          f"{config_path}: model_type {config.get('model_type')!r} is not a CLIP model; "
          "expected 'clip' (a CLIPModel checkpoint with both towers, such as "
          "openai/clip-vit-large-patch14-336)")
    # Configs written by transformers < 4.23 may carry *_config_dict, which wins.
    text = {**(config.get("text_config") or {}), **(config.get("text_config_dict") or {})}
    vision = {**(config.get("vision_config") or {}), **(config.get("vision_config_dict") or {})}
    vision_config = _from_hf(ClipVisionConfig, vision, f"{config_path} vision_config")
    for key in ("image_size", "patch_size"):
      value = getattr(vision_config, key)
      if not isinstance(value, int):
        raise ckpt.CheckpointError(f"{config_path}: vision_config {key} {value!r} is not "
                                   "supported (only square images: one int)")
    if vision_config.image_size % vision_config.patch_size:
      raise ckpt.CheckpointError(
          f"{config_path}: vision_config image_size {vision_config.image_size} is not a "
          f"multiple of patch_size {vision_config.patch_size}")
    return cls(text=_from_hf(ClipTextConfig, text, f"{config_path} text_config"),
               vision=vision_config, projection_dim=config.get("projection_dim", 512))


class EncoderLayer(nn.Module):
  """Pre-LayerNorm transformer layer (CLIPEncoderLayer): attention, then MLP."""
  hidden_size: int
  intermediate_size: int
  num_heads: int
  hidden_act: str
  layer_norm_eps: float

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """x: [B, L, D] float32; bias: None or [1, 1, L, L] added to attention logits."""
    head_dim = self.hidden_size // self.num_heads
    norm = functools.partial(nn.LayerNorm, epsilon=self.layer_norm_eps,
                             use_fast_variance=False)  # the two-pass variance, as torch

    def heads_of(t):  # [B, L, D] -> [B, L, H, Dh]
      return t.reshape(t.shape[:2] + (self.num_heads, head_dim))

    h = norm(name="layer_norm1")(x)
    q, k, v = (heads_of(nn.Dense(self.hidden_size, name=n)(h))
               for n in ("q_proj", "k_proj", "v_proj"))
    everything = jnp.ones(x.shape[:2], bool)  # no padding mask: see ClipTextTower
    a = layers.attend(q, k, v, everything, bias=bias, scale=head_dim ** -0.5)
    x = x + nn.Dense(self.hidden_size, name="out_proj")(a.reshape(x.shape))
    h = nn.Dense(self.intermediate_size, name="fc1")(norm(name="layer_norm2")(x))
    h = nn.Dense(self.hidden_size, name="fc2")(ACTIVATIONS[self.hidden_act](h))
    return x + h


def _layers(c: ClipTextConfig | ClipVisionConfig, x, bias=None):
  for i in range(c.num_hidden_layers):
    x = EncoderLayer(c.hidden_size, c.intermediate_size, c.num_attention_heads,
                     c.hidden_act, c.layer_norm_eps, name=f"layer_{i}")(x, bias)
  return x


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
  """[B] index of the token whose state is pooled, as CLIPTextModel chooses it."""
  if eos_token_id == LEGACY_EOS_TOKEN_ID:
    return jnp.argmax(input_ids, axis=-1)
  return jnp.argmax(input_ids == eos_token_id, axis=-1)  # the first <|endoftext|>


class ClipTextTower(nn.Module):
  """input_ids [B, L] int32 -> pooled state [B, D]: the final-norm state at EOS.

  Attention is causal, so the state at the first <|endoftext|> depends on the
  tokens up to it only: right padding (with <|endoftext|> in CLIP) needs no mask.
  """
  config: ClipTextConfig

  @nn.compact
  def __call__(self, input_ids: jax.Array) -> jax.Array:
    c = self.config
    length = input_ids.shape[1]
    if length > c.max_position_embeddings:  # the lookup would clamp silently
      raise ValueError(f"input_ids have {length} tokens; the text tower has "
                       f"{c.max_position_embeddings} positions")
    x = (nn.Embed(c.vocab_size, c.hidden_size, name="token_embedding")(input_ids)
         + nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embedding")(
             jnp.arange(length))[None])
    causal = jnp.tril(jnp.ones((length, length), bool))
    bias = jnp.where(causal, 0.0, jnp.finfo(jnp.float32).min)[None, None]
    x = _layers(c, x, bias)
    x = nn.LayerNorm(epsilon=c.layer_norm_eps, use_fast_variance=False,
                     name="final_layer_norm")(x)
    return x[jnp.arange(x.shape[0]), eos_positions(input_ids, c.eos_token_id)]


class ClipVisionTower(nn.Module):
  """pixels [B, S, S, C] float32 (normalised, S = image_size) -> pooled state [B, D]."""
  config: ClipVisionConfig

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    c = self.config
    b, p, d = pixels.shape[0], c.patch_size, c.hidden_size
    grid = c.image_size // p
    if pixels.shape[1:] != (c.image_size, c.image_size, c.num_channels):
      raise ValueError(f"pixels have shape {pixels.shape}; expected [B, {c.image_size}, "
                       f"{c.image_size}, {c.num_channels}] (see clip_score.ImagePreprocessing)")
    # The patch convolution (stride = kernel, no bias) as a matmul over patches. The
    # kernel is torch's [D, C, kh, kw] with its axes reversed, [kw, kh, C, D], which
    # is what TensorSpec(transpose=True) gives.
    kernel = self.param("patch_embedding", nn.initializers.lecun_normal(), (p, p, c.num_channels, d))
    patches = pixels.reshape(b, grid, p, grid, p, c.num_channels)  # [B, gy, kh, gx, kw, C]
    x = jnp.einsum("byhxwc,whcd->byxd", patches, kernel).reshape(b, grid * grid, d)
    cls = self.param("class_embedding", nn.initializers.normal(1.0), (d,))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)
    x = x + nn.Embed(grid * grid + 1, d, name="position_embedding")(jnp.arange(grid * grid + 1))[None]
    norm = functools.partial(nn.LayerNorm, epsilon=c.layer_norm_eps, use_fast_variance=False)
    x = _layers(c, norm(name="pre_layrnorm")(x))  # sic: HF's spelling
    return norm(name="post_layernorm")(x[:, 0])


class ClipModel(nn.Module):
  """Both towers and their projections; embeddings are NOT normalised here.

  `embed_images(pixels [B, S, S, C]) -> [B, P]`, `embed_texts(input_ids [B, L]) ->
  [B, P]`; calling the module runs both (for init).
  """
  config: ClipConfig

  def setup(self) -> None:
    self.text_model = ClipTextTower(self.config.text)
    self.vision_model = ClipVisionTower(self.config.vision)
    self.text_projection = nn.Dense(self.config.projection_dim, use_bias=False)
    self.visual_projection = nn.Dense(self.config.projection_dim, use_bias=False)

  def embed_images(self, pixels: jax.Array) -> jax.Array:
    return self.visual_projection(self.vision_model(pixels))

  def embed_texts(self, input_ids: jax.Array) -> jax.Array:
    return self.text_projection(self.text_model(input_ids))

  def __call__(self, pixels: jax.Array, input_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.embed_images(pixels), self.embed_texts(input_ids)


def tensor_specs(config: ClipConfig) -> list[ckpt.TensorSpec]:
  """Maps every ClipModel parameter to its Hugging Face CLIPModel tensor name.

  Tensors the model does not use (logit_scale, position_ids buffers of old
  checkpoints) are ignored.
  """
  specs = []

  def add(path, name, transpose=False):
    specs.append(ckpt.TensorSpec(tuple(path), (name,), transpose))

  def dense(path, name, bias=True):
    add(path + ["kernel"], f"{name}.weight", transpose=True)
    if bias:
      add(path + ["bias"], f"{name}.bias")

  def norm(path, name):
    add(path + ["scale"], f"{name}.weight")
    add(path + ["bias"], f"{name}.bias")

  def encoder(fx, hf, num_layers):
    for i in range(num_layers):
      lx, lh = fx + [f"layer_{i}"], f"{hf}.encoder.layers.{i}"
      for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        dense(lx + [proj], f"{lh}.self_attn.{proj}")
      norm(lx + ["layer_norm1"], f"{lh}.layer_norm1")
      norm(lx + ["layer_norm2"], f"{lh}.layer_norm2")
      dense(lx + ["fc1"], f"{lh}.mlp.fc1")
      dense(lx + ["fc2"], f"{lh}.mlp.fc2")

  t, v = ["text_model"], ["vision_model"]
  add(t + ["token_embedding", "embedding"], "text_model.embeddings.token_embedding.weight")
  add(t + ["position_embedding", "embedding"], "text_model.embeddings.position_embedding.weight")
  encoder(t, "text_model", config.text.num_hidden_layers)
  norm(t + ["final_layer_norm"], "text_model.final_layer_norm")
  add(v + ["patch_embedding"], "vision_model.embeddings.patch_embedding.weight", transpose=True)
  add(v + ["class_embedding"], "vision_model.embeddings.class_embedding")
  add(v + ["position_embedding", "embedding"], "vision_model.embeddings.position_embedding.weight")
  norm(v + ["pre_layrnorm"], "vision_model.pre_layrnorm")
  encoder(v, "vision_model", config.vision.num_hidden_layers)
  norm(v + ["post_layernorm"], "vision_model.post_layernorm")
  dense(["text_projection"], "text_projection", bias=False)
  dense(["visual_projection"], "visual_projection", bias=False)
  return specs


def load_clip_params(checkpoint_dir: str | pathlib.Path) -> tuple[ClipConfig, ClipModel, Any]:
  """(config, module, float32 numpy params) from a local HF CLIPModel checkpoint.

  Raises:
    CheckpointError (a ValueError) naming the file (and tensor): missing
      config.json, model_type other than "clip", missing tensor, wrong shape.
  """
  directory = pathlib.Path(checkpoint_dir)
  config_path = directory / "config.json"
  config = ClipConfig.from_hf(ckpt.read_config(directory), config_path)
  module = ClipModel(config)
  s = config.vision.image_size
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, s, s, config.vision.num_channels)),
                          jnp.zeros((1, 1), jnp.int32))["params"]
  weights = ckpt.SafetensorsCheckpoint(directory)
  return config, module, ckpt.load_params(weights, tensor_specs(config), shapes, config_path)
