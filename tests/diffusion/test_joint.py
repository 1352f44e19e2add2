"""The joint process: shared integer time, joint noising and the joint loss."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import gaussian
from gcd_jax.diffusion import joint
from gcd_jax.diffusion import schedules

K = 5
T = 1000


@pytest.fixture(scope="module")
def sched():
  return joint.make_schedule(num_steps=T, num_classes=K)


@pytest.fixture(scope="module")
def batch():
  rng = np.random.default_rng(0)
  x0 = jnp.asarray(rng.uniform(-1, 1, (4, 6, 6, 3)), jnp.float32)
  ids = jnp.asarray(rng.integers(0, K, (4, 6, 6)))
  return x0, categorical.log_onehot(ids, K)


def test_schedule_tables_and_description(sched):
  t = np.arange(T) / T
  np.testing.assert_allclose(sched.image_log_snr, schedules.log_snr("cosine", t), rtol=1e-6, atol=1e-5)
  ref = categorical.make_schedule("cosine_p", T, K, p=1.0)
  np.testing.assert_array_equal(sched.layout.log_abar, ref.log_abar)
  # p = 1: the layout keeps a token with the image's alpha^2 (normalised at step 0).
  np.testing.assert_allclose(np.exp(sched.layout.log_abar),
                             jax.nn.sigmoid(sched.image_log_snr) / jax.nn.sigmoid(sched.image_log_snr[0]),
                             rtol=1e-4, atol=1e-9)
  assert sched.describe() == {
      "num_steps": T, "image": {"name": "cosine", "params": {}},
      "layout": {"name": "cosine_p", "params": {"p": 1.0}, "num_classes": K}}
  image_only = joint.make_schedule(num_steps=10, num_classes=0, image="linear")
  assert image_only.layout is None and image_only.describe()["layout"] is None


def test_steps_are_uniform_integers():
  ks = np.asarray(jax.jit(joint.sample_steps, static_argnums=(1, 2))(jax.random.PRNGKey(0), 200_000, 10))
  assert ks.dtype == np.int32 and ks.min() == 0 and ks.max() == 9
  freq = np.bincount(ks, minlength=10) / ks.size
  assert np.all(np.abs(freq - 0.1) < 5 * math.sqrt(0.09 / ks.size))
  np.testing.assert_allclose(jax.jit(joint.step_to_time, static_argnums=1)(jnp.array([0, 250, 999]), T),
                             [0.0, 0.25, 0.999])


def test_q_sample_uses_one_step_for_both(sched, batch):
  x0, log_y0 = batch
  k = jnp.array([0, 10, 500, 999])
  x_t, log_yk, eps = jax.jit(joint.q_sample)(jax.random.PRNGKey(1), sched, x0, log_y0, k)
  lam = sched.image_log_snr[k]
  np.testing.assert_allclose(x_t, gaussian.q_sample(x0, lam, eps), atol=1e-6)
  # Step 0 keeps the layout; step T-1 leaves about 1/K of it unchanged.
  np.testing.assert_array_equal(log_yk[0], log_y0[0])
  kept = np.mean(np.argmax(log_yk[3], -1) == np.argmax(log_y0[3], -1))
  assert kept < 0.5
  # Layout and image noise are independent draws of one key.
  _, log_yk2, eps2 = joint.q_sample(jax.random.PRNGKey(2), sched, x0, log_y0, k)
  assert not np.allclose(eps, eps2)
  image_only = joint.make_schedule(num_steps=T, num_classes=0)
  _, none, _ = joint.q_sample(jax.random.PRNGKey(1), image_only, x0, None, k)
  assert none is None


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_loss_is_the_weighted_sum_of_the_terms(sched, batch, prediction):
  x0, log_y0 = batch
  k = jnp.array([0, 3, 400, 999])
  x_t, log_yk, eps = joint.q_sample(jax.random.PRNGKey(3), sched, x0, log_y0, k)
  rng = np.random.default_rng(1)
  image_out = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
  logits = jnp.asarray(rng.normal(size=log_y0.shape), jnp.float32)
  cfg = joint.LossConfig(prediction=prediction, image_weight=0.7, layout_weight=2.0)
  out = jax.jit(joint.loss, static_argnums=1)(sched, cfg, x0, eps, log_y0, log_yk, k, image_out, logits)

  lam = np.asarray(sched.image_log_snr[k], np.float64)
  a, s = np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))
  target = {"eps": eps, "x0": x0,
            "v": a[:, None, None, None] * eps - s[:, None, None, None] * x0}[prediction]
  p2 = (1 + np.exp(lam)) ** -0.5
  mse = np.mean((np.asarray(image_out) - np.asarray(target)) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(out["image"], 0.7 * p2 * mse, rtol=1e-5)
  vb = categorical.vb_loss(sched.layout, log_y0, log_yk, logits, k)
  np.testing.assert_allclose(out["layout"], 2.0 * p2 * np.asarray(vb), rtol=1e-5)
  np.testing.assert_allclose(out["total"], out["image"] + out["layout"], rtol=1e-6)


def test_p2_switches_per_modality_and_image_only_mode(sched, batch):
  x0, log_y0 = batch
  k = jnp.array([1, 2, 3, 4])
  _, log_yk, eps = joint.q_sample(jax.random.PRNGKey(4), sched, x0, log_y0, k)
  logits = jnp.zeros(log_y0.shape)
  base = joint.LossConfig(image_p2_gamma=0.0, layout_p2_gamma=0.0, layout_normalize="bits")
  out = joint.loss(sched, base, x0, eps, log_y0, log_yk, k, jnp.zeros_like(x0), logits)
  np.testing.assert_allclose(out["image"], np.mean(np.asarray(eps) ** 2, axis=(1, 2, 3)), rtol=1e-5)
  np.testing.assert_allclose(
      out["layout"], categorical.vb_loss(sched.layout, log_y0, log_yk, logits, k, normalize="bits"), rtol=1e-6)
  # Only the layout gets p2 now: the image term is unchanged.
  half = joint.loss(sched, dataclasses.replace(base, layout_p2_gamma=0.5),
                    x0, eps, log_y0, log_yk, k, jnp.zeros_like(x0), logits)
  np.testing.assert_allclose(half["image"], out["image"])
  assert np.all(np.asarray(half["layout"]) < np.asarray(out["layout"]))
  # Image-only: no layout term at all.
  only = joint.loss(sched, base, x0, eps, None, None, k, jnp.zeros_like(x0), None)
  assert set(only) == {"image", "total"}
  np.testing.assert_allclose(only["total"], out["image"])


def test_gradients_are_finite_at_the_ends(sched, batch):
  x0, log_y0 = batch
  k = jnp.array([0, 0, T - 1, T - 1])
  _, log_yk, eps = joint.q_sample(jax.random.PRNGKey(5), sched, x0, log_y0, k)
  cfg = joint.LossConfig(prediction="v")

  @jax.jit
  def grads(image_out, logits):
    f = lambda a, b: jnp.sum(joint.loss(sched, cfg, x0, eps, log_y0, log_yk, k, a, b)["total"])
    return jax.grad(f, argnums=(0, 1))(image_out, logits)

  g_img, g_lay = grads(jnp.zeros_like(x0), 50.0 * jax.random.normal(jax.random.PRNGKey(6), log_y0.shape))
  assert np.all(np.isfinite(np.asarray(g_img))) and np.all(np.isfinite(np.asarray(g_lay)))
