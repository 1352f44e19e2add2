"""Pieces shared by the pretrained text encoders: activations and masked attention."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Hugging Face `hidden_act` / `dense_act_fn` names -> functions. "gelu" is the exact
# (erf) GELU in transformers; the tanh approximation goes by "gelu_new" (what T5
# v1.1 "gated-gelu" uses) and "gelu_pytorch_tanh". Getting these two mixed up
# costs ~1e-3 per layer, far outside the 1e-4 the golden tests allow.
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
           bias: jax.Array | None = None, scale: float = 1.0) -> jax.Array:
  """Multi-head attention of every query over the real (unpadded) keys.

  Args:
    q, k, v: [B, L, H, Dh] any float dtype.
    mask: [B, L] bool, True on real tokens. Only keys are masked: padded queries
      still attend to the real keys, as in Hugging Face, so even the (meaningless)
      padded positions match the reference.
    bias: optional [1 or B, H, L, L] added to the logits (T5's relative position
      bias); broadcast over the batch.
    scale: multiplies the logits (1/sqrt(Dh) for BERT, 1 for T5).

  Returns:
    [B, L, H, Dh] in q's dtype. Logits and softmax are in float32 so that bf16
    inference does not lose the mask (finfo(bf16).min + logits can round badly).
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  logits = logits * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  # Every sequence keeps at least one real token (BERT: [CLS] [SEP], T5: </s>), so
  # no row is fully masked and the softmax never sees only -inf-like logits.
  logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
