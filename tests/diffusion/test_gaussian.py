"""Gaussian diffusion against closed forms (float64 numpy) and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax.diffusion import gaussian

LAMS = [(-2.0, 1.0), (-8.0, 6.0), (0.5, 0.6), (-20.0, 8.7)]  # (lambda_t, lambda_s), s < t


def _a2(lam):
  return 1.0 / (1.0 + np.exp(-lam))


def _joint_conditional(x0, x_t, lam_t, lam_s):
  """Mean and variance of x_s | x_t, x0 from the joint Gaussian of (x_s, x_t)."""
  a_s, a_t = np.sqrt(_a2(lam_s)), np.sqrt(_a2(lam_t))
  var_s, var_t = 1 - _a2(lam_s), 1 - _a2(lam_t)
  # x_t = (a_t / a_s) x_s + noise independent of x_s, so Cov(x_s, x_t) = (a_t/a_s) var_s.
  cov = (a_t / a_s) * var_s
  mean = a_s * x0 + cov / var_t * (x_t - a_t * x0)
  var = var_s - cov**2 / var_t
  return mean, var


@pytest.mark.parametrize("lam_t,lam_s", LAMS)
def test_posterior_is_the_joint_gaussian_conditional(lam_t, lam_s):
  rng = np.random.default_rng(0)
  x0 = rng.uniform(-1, 1, (2, 4, 4, 3))
  x_t = rng.normal(size=(2, 4, 4, 3))
  mean, var = jax.jit(gaussian.posterior)(
      jnp.asarray(x0, jnp.float32), jnp.asarray(x_t, jnp.float32),
      jnp.full((2,), lam_t), jnp.full((2,), lam_s))
  ref_mean, ref_var = _joint_conditional(x0, x_t, lam_t, lam_s)
  np.testing.assert_allclose(mean, ref_mean, atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(np.broadcast_to(var, ref_mean.shape), np.broadcast_to(ref_var, ref_mean.shape),
                             rtol=2e-5, atol=1e-9)


N_MC = 400_000


def test_q_sample_mean_and_variance():
  # Per-example lambdas; statistics over the 400k noise draws of one pixel each.
  lams = jnp.array([-3.0, 0.0, 4.0])
  x0 = jnp.array([0.7, -0.3, 0.9])
  noise = jax.random.normal(jax.random.PRNGKey(0), (N_MC, 3))
  f = jax.jit(jax.vmap(gaussian.q_sample, in_axes=(None, None, 0)))
  x_t = np.asarray(f(x0, lams, noise), np.float64)
  a2 = _a2(np.asarray(lams, np.float64))
  # 5 standard errors: sd(mean) = sigma/sqrt(N), sd(var) ~ sigma^2 sqrt(2/N).
  assert np.all(np.abs(x_t.mean(0) - np.sqrt(a2) * np.asarray(x0)) < 5 * np.sqrt((1 - a2) / N_MC))
  assert np.all(np.abs(x_t.var(0) - (1 - a2)) < 5 * (1 - a2) * np.sqrt(2 / N_MC))


@pytest.mark.parametrize("lam_s,lam_t", [(3.0, -1.0), (8.0, 2.0), (0.0, -6.0)])
def test_renoise_marginal_equals_direct_sampling(lam_s, lam_t):
  key1, key2 = jax.random.split(jax.random.PRNGKey(1))
  x0 = jnp.full((N_MC,), 0.6)

  @jax.jit
  def two_step(k1, k2):
    x_s = gaussian.q_sample(x0, jnp.float32(lam_s), jax.random.normal(k1, x0.shape))
    return gaussian.renoise(x_s, jnp.float32(lam_s), jnp.float32(lam_t), jax.random.normal(k2, x0.shape))

  x_t = np.asarray(two_step(key1, key2), np.float64)
  a2 = _a2(lam_t)
  np.testing.assert_allclose(x_t.mean(), np.sqrt(a2) * 0.6, atol=5 * np.sqrt((1 - a2) / N_MC))
  np.testing.assert_allclose(x_t.var(), 1 - a2, rtol=5 * np.sqrt(2 / N_MC))


def test_released_repaint_rule_under_noises():
  # Between neighbouring steps of a sampling grid, the released rule
  # std = sigma_t - sigma_s alpha_t / alpha_s is over 4x below the correct std;
  # ours makes the total variance sigma_t^2 exactly.
  lam_s, lam_t = 0.2, 0.0
  a_s, a_t = np.sqrt(_a2(lam_s)), np.sqrt(_a2(lam_t))
  s_s, s_t = np.sqrt(1 - _a2(lam_s)), np.sqrt(1 - _a2(lam_t))
  ours = gaussian.renoise(jnp.zeros(()), lam_s, lam_t, jnp.ones(()))  # = std
  released = s_t - s_s * a_t / a_s
  np.testing.assert_allclose(float(ours) ** 2 + (a_t / a_s) ** 2 * s_s**2, s_t**2, rtol=1e-5)
  assert float(ours) > 4 * released


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_parameterisations_recover_the_truth(kind):
  rng = np.random.default_rng(2)
  x0 = jnp.asarray(rng.uniform(-1, 1, (3, 2, 2, 3)), jnp.float32)
  eps = jnp.asarray(rng.normal(size=(3, 2, 2, 3)), jnp.float32)
  lam = jnp.array([-5.0, 0.0, 5.0])
  x_t = gaussian.q_sample(x0, lam, eps)
  truth = {"eps": eps, "x0": x0, "v": gaussian.v_from_x0_eps(x0, eps, lam)}[kind]
  np.testing.assert_allclose(jax.jit(gaussian.target, static_argnums=3)(x0, eps, lam, kind), truth)
  x0_hat, eps_hat = jax.jit(gaussian.to_x0_eps, static_argnums=3)(truth, x_t, lam, kind)
  np.testing.assert_allclose(x0_hat, x0, atol=2e-4)
  np.testing.assert_allclose(eps_hat, eps, atol=2e-4)
  # v also equals d x_t / d phi for x_t = cos(phi) x0 + sin(phi) eps (Salimans & Ho).
  if kind == "v":
    a, s = np.sqrt(_a2(np.asarray(lam)))[:, None, None, None], np.sqrt(1 - _a2(np.asarray(lam)))[:, None, None, None]
    np.testing.assert_allclose(truth, a * eps - s * x0, atol=1e-6)


def test_conversions_are_inverse():
  rng = np.random.default_rng(3)
  x_t = jnp.asarray(rng.normal(size=(2, 3, 3, 3)), jnp.float32)
  pred = jnp.asarray(rng.normal(size=(2, 3, 3, 3)), jnp.float32)
  lam = jnp.array([-1.0, 2.0])
  x0 = jax.jit(gaussian.x0_from_eps)(x_t, lam, pred)
  np.testing.assert_allclose(jax.jit(gaussian.eps_from_x0)(x_t, lam, x0), pred, atol=1e-5)
  x0v = jax.jit(gaussian.x0_from_v)(x_t, lam, pred)
  epsv = jax.jit(gaussian.eps_from_v)(x_t, lam, pred)
  np.testing.assert_allclose(gaussian.v_from_x0_eps(x0v, epsv, lam), pred, atol=1e-5)
  np.testing.assert_allclose(gaussian.q_sample(x0v, lam, epsv), x_t, atol=1e-5)
  with pytest.raises(ValueError, match="'score'"):
    gaussian.to_x0_eps(pred, x_t, lam, "score")


def test_p2_weight_closed_form():
  lam = np.array([-40.0, -5.0, 0.0, 3.0, 40.0])
  f = jax.jit(gaussian.p2_weight, static_argnums=(1, 2))
  np.testing.assert_allclose(f(jnp.asarray(lam), 0.5, 1.0), (1 + np.exp(lam)) ** -0.5, rtol=1e-5)
  np.testing.assert_allclose(f(jnp.asarray(lam), 1.0, 2.0), (2 + np.exp(lam)) ** -1.0, rtol=1e-5)
  np.testing.assert_allclose(f(jnp.asarray(lam), 0.0, 1.0), 1.0)
  big = f(jnp.float32(200.0), 0.5, 1.0)
  assert np.isfinite(float(big)) and float(big) >= 0


def test_dynamic_threshold_matches_numpy():
  rng = np.random.default_rng(4)
  x0 = rng.normal(scale=[[[[0.3]]], [[[2.0]]], [[[5.0]]]], size=(3, 8, 8, 3)).astype(np.float32)
  for pct in (0.9, 0.95, 0.995):
    out = jax.jit(gaussian.dynamic_threshold, static_argnums=1)(jnp.asarray(x0), pct)
    s = np.maximum(np.quantile(np.abs(x0.reshape(3, -1)), pct, axis=1), 1.0)[:, None, None, None]
    np.testing.assert_allclose(out, np.clip(x0, -s, s) / s, rtol=1e-5, atol=1e-6)
  # The first example lies inside [-1, 1] at its percentile: untouched.
  np.testing.assert_allclose(out[0], x0[0], atol=1e-6)
  assert np.abs(np.asarray(out)).max() <= 1.0 + 1e-6


def test_normal_kl_monte_carlo():
  m1, v1, m2, v2 = 0.3, 0.5, -0.2, 1.5
  x = np.random.default_rng(5).normal(m1, np.sqrt(v1), N_MC)
  logp = -0.5 * (np.log(2 * np.pi * v1) + (x - m1) ** 2 / v1)
  logq = -0.5 * (np.log(2 * np.pi * v2) + (x - m2) ** 2 / v2)
  mc = (logp - logq).mean()
  se = (logp - logq).std() / np.sqrt(N_MC)
  kl = float(jax.jit(gaussian.normal_kl)(m1, v1, m2, v2))
  assert abs(kl - mc) < 5 * se
  assert float(gaussian.normal_kl(m1, v1, m1, v1)) == 0.0
