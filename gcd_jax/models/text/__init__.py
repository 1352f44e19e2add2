"""Text encoders for caption conditioning.

Two kinds, with the same output conventions (embeddings [B, L, D] float32, zero
on padding; mask [B, L] bool, True on real tokens, right-padded to L):

  - frozen pretrained encoders (BERT such as all-MiniLM-L6-v2, the default; T5
    v1.0 / v1.1 / flan such as the paper's t5-large) loaded from a local Hugging
    Face checkpoint directory by `load_pretrained`; their embeddings are computed
    outside the training step, from a `CaptionStore` or on the fly (`CaptionEmbeddings`);
  - `ScratchTextEncoder` with its `WordTokenizer`, trained with the diffusion model
    and therefore run inside the training step.
"""

from gcd_jax.models.text.bert import BertConfig, BertEncoder
from gcd_jax.models.text.cache import CaptionEmbeddings, CaptionStore
from gcd_jax.models.text.checkpoint import CheckpointError
from gcd_jax.models.text.pretrained import (
    PretrainedTextEncoder,
    default_checkpoint_dir,
    load_pretrained,
)
from gcd_jax.models.text.scratch import ScratchTextEncoder, WordTokenizer
from gcd_jax.models.text.t5 import T5Config, T5Encoder

__all__ = [
    "BertConfig",
    "BertEncoder",
    "CaptionEmbeddings",
    "CaptionStore",
    "CheckpointError",
    "PretrainedTextEncoder",
    "ScratchTextEncoder",
    "T5Config",
    "T5Encoder",
    "WordTokenizer",
    "default_checkpoint_dir",
    "load_pretrained",
]
