"""The joint U-Net with a text encoder trained from scratch alongside it.

For vocabularies a pretrained encoder does not know (domain words, codes),
`config.text.encoder = "scratch"` trains a small transformer
(`text.ScratchTextEncoder`) together with the diffusion model: its token states
feed the U-Net exactly where a frozen encoder's cached embeddings would, and it
runs inside the training step. The call signature is the U-Net's, with int32
token ids in place of the embeddings.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax

from gcd_jax.models import unet as unet_lib
from gcd_jax.models.text import scratch


@dataclasses.dataclass(frozen=True)
class ScratchTextConfig:
  vocab_size: int
  max_length: int
  num_layers: int = 2
  num_heads: int = 4
  dropout: float = 0.0


class TextConditionedUNet(nn.Module):
  """ScratchTextEncoder -> JointUNet. `config` is the U-Net's (text_dim = encoder width)."""

  config: unet_lib.UNetConfig
  text: ScratchTextConfig

  @nn.compact
  def __call__(self, x_t: jax.Array, y_t: jax.Array | None, log_snr: jax.Array,
               text_tokens: jax.Array, text_mask: jax.Array, *, train: bool = False,
               **kwargs: Any) -> tuple[jax.Array, jax.Array | None]:
    """text_tokens: [B, L] int32 word ids; text_mask: [B, L] bool. Other args: JointUNet's."""
    emb, mask = scratch.ScratchTextEncoder(
        vocab_size=self.text.vocab_size, dim=self.config.text_dim,
        num_layers=self.text.num_layers, num_heads=self.text.num_heads,
        max_length=self.text.max_length, dropout_rate=self.text.dropout,
        name="text_encoder")(text_tokens, text_mask, deterministic=not train)
    return unet_lib.make_unet(self.config, name="unet")(
        x_t, y_t, log_snr, emb, mask, train=train, **kwargs)
