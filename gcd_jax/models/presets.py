"""Named `UNetConfig`s for the joint U-Net.

  tiny        tests only: two levels, 0.2M parameters, compiles in seconds.
  shapes      the embedded toy dataset at 32x32, K = 8, MiniLM text (384): 4.5M
              parameters, 1.1 GFLOPs per forward, sized for training on a laptop CPU.
  paper_base  the paper's base model (docs/gcdp.md section 3): dim 128, mults (1, 2, 4, 8),
              res blocks (2, 4, 8, 8), self- and cross-attention on levels 2-4, 8 heads x
              64, T5-large text (1024), K = 19 (CelebA; use num_classes=20 for Cityscapes),
              in Imagen's memory-efficient block arrangement as the released code.
  paper_sr    the super-resolution stage of the cascade, as released (SRJointUnet):
              paper_base without self-attention in the levels, cross-attention on the
              lowest level only, lowres_cond on.
  gcdp_base   the released base network itself (arch "imagen": PerceiverResampler, time
              tokens, ...), into which `python -m gcd_jax.convert_gcdp` loads the
              authors' weights: BaseJointUnet with train.py's overrides, K = 19.
  gcdp_sr     the released SR network (SRJointUnet), K = 19.
  reference   the released JointUnet at its benchmark size (dim 64, mults 1-2-4), the
              architecture our speed is compared at (benchmarks/train_step.py).

Parameter counts and forward FLOPs: `python -m gcd_jax.models.summary --preset=NAME`.
Override single fields with `get_preset(name, num_classes=20)`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gcd_jax.models.unet import UNetConfig


def tiny() -> UNetConfig:
  """For tests: 2 levels, dim 16, attention (self and cross) on the low level only."""
  return UNetConfig(
      num_classes=5, layout_embed_dim=8,
      dim=16, channel_mults=(1, 2), num_res_blocks=1,
      self_attention=(False, True), cross_attention=(False, True), mid_attention=True,
      num_heads=2, head_dim=8, ff_mult=2, dropout=0.1, norm_groups=4,
      fourier_dim=8, text_dim=32, text_proj_dim=32, num_null_text_tokens=2)


def shapes() -> UNetConfig:
  """The embedded shapes dataset at 32x32 (levels at 32, 16, 8): 4.5M parameters.

  Narrow at full resolution (32 channels), where a 3x3 convolution costs the
  most: 1.1 GFLOPs per 32x32 forward against 2.9 (and 7.6M parameters) for
  dim 64 with mults (1, 2, 2). Self-attention only at 8x8;
  cross-attention at 16x16 and 8x8, where a caption word like "left" can still
  address a region.
  """
  return UNetConfig(
      num_classes=8, layout_embed_dim=16,
      dim=32, channel_mults=(1, 2, 4), num_res_blocks=2,
      self_attention=(False, False, True), cross_attention=(False, True, True),
      mid_attention=True, num_heads=4, head_dim=32, ff_mult=2,
      dropout=0.1,  # a small dataset: regularise like ADM on CIFAR-10
      norm_groups=8, text_dim=384, text_proj_dim=128, num_null_text_tokens=4)


def paper_base() -> UNetConfig:
  """GCDP base model (128x128 CelebA / 128x256 Cityscapes), docs/gcdp.md section 3.

  As released (BaseJointUnet with the overrides of train.py): Imagen's
  memory-efficient block arrangement (levels at 64, 32, 16, 8 for a 128x128 input),
  text projected to 128 (Imagen's cond_dim = dim), FiLM width 4 * dim = 512.
  """
  return UNetConfig(
      num_classes=19, layout_embed_dim=32,
      dim=128, channel_mults=(1, 2, 4, 8), num_res_blocks=(2, 4, 8, 8),
      self_attention=(False, True, True, True), cross_attention=(False, True, True, True),
      mid_attention=True, num_heads=8, head_dim=64, ff_mult=2,
      dropout=0.0,  # Imagen's default, which the released code keeps
      norm_groups=8, downsample_first=True,
      text_dim=1024, text_proj_dim=128, num_null_text_tokens=4)


def paper_sr() -> UNetConfig:
  """Joint super-resolution stage (128 -> 256 CelebA, 128x256 -> 256x512 Cityscapes).

  As released (SRJointUnet): paper_base's widths and depths with no
  self-attention in the levels (only in the middle block, at H/16) and
  cross-attention on the lowest level only; conditioned on the upsampled
  low-res image and layout; FiLM width doubled to 8 * dim as Imagen does for
  low-res conditioning.
  """
  return dataclasses.replace(
      paper_base(), self_attention=False, cross_attention=(False, False, False, True),
      lowres_cond=True, time_embed_dim=1024)


def shapes_sr() -> UNetConfig:
  """The embedded default's super-resolution stage, 32x32 -> 64x64.

  The low-res pair already carries the scene: this stage adds detail. Imagen's
  memory-efficient block arrangement (one residual block at 64x64 opens and
  one closes; levels at 32, 16, 8) with shapes' widths at those levels, no
  self-attention but in the middle, cross-attention at 8x8 only (as paper_sr
  has it at its lowest level). No dropout: it trains on 50,000 scenes for
  about one epoch (as released SR stages, dropout 0). It predicts v, not eps:
  trained the same way, an eps stage drifted each sample's overall colour from
  its input (brought back down to 32x32, 19.3 uint8 levels from it on average
  against 6.2 for v) and lost to bilinear upsampling on fd_seg; the v stage
  beat it (README, "The super-resolution cascade").
  """
  return dataclasses.replace(
      shapes(), num_res_blocks=(1, 2, 2), self_attention=False,
      cross_attention=(False, False, True), downsample_first=True, lowres_cond=True,
      dropout=0.0, prediction="v")


def reference() -> UNetConfig:
  """The released JointUnet at the size its speed is compared at (benchmarks/).

  dim 64, mults (1, 2, 4), 2 residual blocks per level, self- and
  cross-attention only at the lowest level (and in the middle block), 4 heads x
  64, ff_mult 2, the memory-efficient block arrangement, 3 layout-embedding channels,
  K = 8, 256-wide text tokens: the official code's benchmark configuration
  (19.6M parameters there; ours omits its PerceiverResampler and time tokens).
  """
  return UNetConfig(
      num_classes=8, layout_embed_dim=3,
      dim=64, channel_mults=(1, 2, 4), num_res_blocks=2,
      self_attention=(False, False, True), cross_attention=(False, False, True),
      mid_attention=True, num_heads=4, head_dim=64, ff_mult=2, dropout=0.0,
      norm_groups=8, downsample_first=True,
      text_dim=256, text_proj_dim=64, num_null_text_tokens=4)


def gcdp_base() -> UNetConfig:
  """The released base network (BaseJointUnet with the overrides of train.py), exactly.

  imagen-pytorch's U-Net with a layout side (`gcd_jax.models.imagen_unet`): dim
  128, mults (1, 2, 4, 8), residual blocks (2, 4, 8, 8), self- and cross-
  attention on levels 2-4, 8 heads x 64, feed-forward x2, the memory-efficient
  arrangement, a 3-channel layout embedding, T5-large text (1024) projected to
  128, 2 time tokens, 32 + 4 text latents, 256 text positions, FiLM width 512.
  Both base_128x128 (CelebA, K = 19) and base_128x256 (Cityscapes, K = 20).
  """
  return UNetConfig(
      arch="imagen", num_classes=19, layout_embed_dim=3,
      dim=128, channel_mults=(1, 2, 4, 8), num_res_blocks=(2, 4, 8, 8),
      self_attention=(False, True, True, True), cross_attention=(False, True, True, True),
      mid_attention=True, num_heads=8, head_dim=64, ff_mult=2, dropout=0.0,
      norm_groups=8, downsample_first=True, time_embed_dim=512,
      text_dim=1024, text_proj_dim=128, num_time_tokens=2, num_text_latents=32,
      max_text_len=256)


def gcdp_sr() -> UNetConfig:
  """The released SR network (SRJointUnet with train.py's defaults), exactly.

  gcdp_base's widths and depths, no self-attention in the levels (the middle
  block keeps it), cross-attention on the lowest level only, the low-res image
  and layout in (and again before the output convolutions), FiLM width 1024.
  """
  return dataclasses.replace(
      gcdp_base(), self_attention=False, cross_attention=(False, False, False, True),
      lowres_cond=True, time_embed_dim=1024)


PRESETS = {"tiny": tiny, "shapes": shapes, "shapes_sr": shapes_sr, "paper_base": paper_base,
           "paper_sr": paper_sr, "reference": reference, "gcdp_base": gcdp_base,
           "gcdp_sr": gcdp_sr}


def get_preset(name: str, **overrides: Any) -> UNetConfig:
  """The named preset, with `overrides` replacing single fields."""
  if name not in PRESETS:
    raise ValueError(f"unknown U-Net preset {name!r}; expected one of {sorted(PRESETS)}")
  return dataclasses.replace(PRESETS[name](), **overrides)
