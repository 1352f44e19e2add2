"""Schedules against their closed forms, in float64 numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax.diffusion import schedules

S = schedules.COSINE_S


def _theta(t):
  return (t + S) / (1 + S) * math.pi / 2


@pytest.fixture(scope="module")
def jitted():
  return {
      "cosine": jax.jit(lambda t: schedules.log_snr("cosine", t)),
      "linear": jax.jit(lambda t: schedules.log_snr("linear", t)),
      "cosine_p": jax.jit(lambda t, p: schedules.log_snr("cosine_p", t, p=p)),
  }


T_GRID = np.linspace(0.0, 1.0, 1001)


@pytest.mark.parametrize("name", ["cosine", "linear", "cosine_p"])
def test_monotone_decreasing(jitted, name):
  args = (jnp.asarray(T_GRID, jnp.float32),) + ((0.5,) if name == "cosine_p" else ())
  lam = np.asarray(jitted[name](*args), np.float64)
  assert np.all(np.isfinite(lam))
  assert np.all(np.diff(lam) < 0), name


def test_cosine_closed_form_and_end_values(jitted):
  # sigmoid(lambda) = alpha^2 = cos(theta)^2 exactly.
  t = np.linspace(0.0, 0.999, 500)
  lam = np.asarray(jitted["cosine"](jnp.asarray(t, jnp.float32)), np.float64)
  alpha2 = 1 / (1 + np.exp(-lam))
  np.testing.assert_allclose(alpha2, np.cos(_theta(t)) ** 2, atol=2e-6)
  start = -math.log(math.tan(_theta(0.0)) ** 2)
  np.testing.assert_allclose(float(jitted["cosine"](0.0)), start, rtol=1e-6)
  # t = 1: alpha -> 0 (float32 cannot hold pi/2 exactly, so lambda is large but finite).
  lam1 = float(jitted["cosine"](1.0))
  assert math.isfinite(lam1) and 1 / (1 + math.exp(-lam1)) < 1e-14


def test_linear_end_values(jitted):
  np.testing.assert_allclose(float(jitted["linear"](0.0)), -math.log(math.expm1(1e-4)), rtol=1e-6)
  np.testing.assert_allclose(float(jitted["linear"](1.0)), -math.log(math.expm1(10.0001)), rtol=1e-6)


def test_cosine_p_one_equals_cosine(jitted):
  t = jnp.asarray(T_GRID[:-1], jnp.float32)
  np.testing.assert_allclose(
      jitted["cosine_p"](t, 1.0), jitted["cosine"](t), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_cosine_p_closed_form(jitted, p):
  # sigmoid(lambda_p) = cos(theta)^(2p): the keep-probability of the layout.
  t = np.linspace(0.0, 0.999, 400)
  lam = np.asarray(jitted["cosine_p"](jnp.asarray(t, jnp.float32), p), np.float64)
  np.testing.assert_allclose(1 / (1 + np.exp(-lam)), np.cos(_theta(t)) ** (2 * p), atol=3e-6)


@pytest.mark.parametrize("name,params", [("cosine", {}), ("linear", {}), ("cosine_p", {"p": 0.7})])
def test_numpy_float64_path_matches_jax(name, params):
  t = np.linspace(0.0, 0.999, 101)
  ref = schedules.log_snr(name, t, **params)
  assert isinstance(ref, np.ndarray) and ref.dtype == np.float64
  np.testing.assert_allclose(schedules.log_snr(name, jnp.asarray(t), **params), ref,
                             atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["cosine", "linear", "cosine_p"])
def test_gradients_finite_at_the_ends(name):
  params = {"p": 0.5} if name == "cosine_p" else {}
  g = jax.jit(jax.vmap(jax.grad(lambda t: schedules.log_snr(name, t, **params))))
  grads = g(jnp.array([0.0, 1e-6, 0.5, 1 - 1e-6, 1.0], jnp.float32))
  grads = np.asarray(grads)
  assert np.all(np.isfinite(grads)) and np.all(grads <= 0) and np.all(grads[1:4] < 0)


def test_alpha_sigma_is_a_unit_circle():
  lam = jnp.linspace(-30.0, 30.0, 61)
  alpha, sigma = jax.jit(schedules.alpha_sigma)(lam)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
  np.testing.assert_allclose(jnp.log(alpha**2 / sigma**2)[20:41], lam[20:41], atol=1e-4)


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="'quadratic'"):
    schedules.log_snr("quadratic", 0.5)
  with pytest.raises(ValueError, match="cosine_p"):
    schedules.log_snr("cosine_p", 0.5, q=2.0)
