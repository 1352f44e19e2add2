"""The tiny-map convolution path equals XLA's convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax.models import layers


@pytest.mark.parametrize("size,kernel,padding", [(2, 3, "SAME"), (1, 3, "SAME"), (2, 3, ((1, 1), (1, 1))),
                                                 (2, 1, "SAME"), (4, 3, "SAME"), (8, 3, "SAME")])
def test_conv_matches_lax(size, kernel, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, size, size, 5))
  w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 5, 7))
  dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
  want = jax.lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=dn,
                                      precision=jax.lax.Precision.HIGHEST)
  got = jax.jit(lambda a, b: layers.conv_general_dilated(
      a, b, (1, 1), padding, dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST))(x, w)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_flax_conv_uses_it_with_the_same_parameters():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 2, 2, 4))
  plain = nn.Conv(6, (3, 3), padding="SAME")
  fast = nn.Conv(6, (3, 3), padding="SAME", conv_general_dilated=layers.conv_general_dilated)
  params = plain.init(jax.random.PRNGKey(1), x)
  assert jax.tree.structure(params) == jax.tree.structure(fast.init(jax.random.PRNGKey(1), x))
  np.testing.assert_allclose(fast.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)
  assert jnp.asarray(fast.apply(params, x)).shape == (2, 2, 2, 6)


def test_attention_paths_agree():
  """The CPU-tuned einsum path and jax.nn.dot_product_attention (cuDNN flash on a GPU)."""
  from gcd_jax.models import layers as layers_lib
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(keys[0], (2, 10, 4, 16))
  k = jax.random.normal(keys[1], (2, 7, 4, 16))
  v = jax.random.normal(keys[2], (2, 7, 4, 16))
  mask = jnp.asarray([[True] * 7, [True, False, True, False, False, True, True]])
  for m in (None, mask):
    a = layers_lib.dot_product_attention(q, k, v, m, implementation="einsum")
    b = layers_lib.dot_product_attention(q, k, v, m, implementation="jax")
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)
  # A masked key gets no weight: changing its value changes nothing.
  v2 = v.at[1, 1].set(100.0)
  np.testing.assert_allclose(
      np.asarray(layers_lib.dot_product_attention(q, k, v2, mask, implementation="jax")[1]),
      np.asarray(layers_lib.dot_product_attention(q, k, v, mask, implementation="einsum")[1]), atol=2e-6)
  with pytest.raises(ValueError, match="attention implementation"):
    layers_lib.dot_product_attention(q, k, v, implementation="flash")
