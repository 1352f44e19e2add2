"""The joint sampler: guidance, oracle denoisers, layout marginals, outpainting, seeds."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gcd_jax import sampling
from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import gaussian
from gcd_jax.diffusion import joint
from gcd_jax.models import presets
from gcd_jax.models import unet

K = 5
H = W = 8
B = 2


@pytest.fixture(scope="module")
def sched():
  return joint.make_schedule(1000, K)


@pytest.fixture(scope="module")
def data():
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.uniform(-0.9, 0.9, (B, H, W, 3)), jnp.float32),
          jnp.asarray(rng.integers(0, K, (B, H, W)), jnp.int32))


def _text(b=B, length=4, dim=6):
  return jnp.ones((b, length, dim)), jnp.ones((b, length), bool)


def _oracle(x0, y0, logits_scale=30.0):
  """A denoiser that knows the data point: exact eps and confident logits for y0."""

  def apply(params, x_t, y_t, lam, text_emb, text_mask, drop, sc_img, sc_lay):
    del params, y_t, text_emb, text_mask, drop, sc_img, sc_lay
    reps = x_t.shape[0] // x0.shape[0]
    x0r, y0r = jnp.concatenate([x0] * reps), jnp.concatenate([y0] * reps)
    return gaussian.eps_from_x0(x_t, lam, x0r), logits_scale * jax.nn.one_hot(y0r, K)

  return apply


@pytest.mark.parametrize("method", ["ddpm", "ddim", "dpm2m"])
def test_oracle_denoiser_ends_at_the_data_point(sched, data, method):
  x0, y0 = data
  cfg = sampling.SamplerConfig(steps=20, method=method, eta=0.0, guidance_image=3.0,
                               guidance_layout=3.0)
  sample = sampling.make_sampler(_oracle(x0, y0), sched, cfg, height=H, width=W)
  out = sample(None, jax.random.PRNGKey(0), *_text())
  np.testing.assert_allclose(out["image"], x0, atol=1e-5)
  np.testing.assert_array_equal(out["layout"], y0)


def test_ddim_eta_zero_is_deterministic_given_the_start(sched, data):
  # With an oracle, every DDIM step lands exactly on q's mean path: x_j = a_j x0 + s_j eps_start.
  x0, y0 = data
  x_t = jax.random.normal(jax.random.PRNGKey(1), x0.shape)
  lam = jnp.full((B,), sched.image_log_snr[900])
  lam_s = jnp.full((B,), sched.image_log_snr[500])
  eps = gaussian.eps_from_x0(x_t, lam, x0)
  x_s = gaussian.ddim_step(x_t, x0, lam, lam_s, 0.0, jax.random.normal(jax.random.PRNGKey(2), x0.shape))
  np.testing.assert_allclose(x_s, gaussian.q_sample(x0, lam_s, eps), atol=1e-5)


def test_uniform_logits_keep_the_layout_marginals_uniform(sched):
  # The reverse chain with a uniform y0 prediction, from uniform noise, stays uniform
  # at every step of a respaced grid (the forward marginal of a uniform y0).
  grid = sampling.step_grid(1000, 8)
  key = jax.random.PRNGKey(0)
  n = 200_000
  y = jax.random.randint(key, (1, n, 1), 0, K, jnp.int32)
  logits = jnp.zeros((1, n, 1, K))
  step = jax.jit(sampling.reverse_layout_step, static_argnames=("guidance",))
  for i, (k, j) in enumerate(zip(grid[:-1], grid[1:])):
    y = step(jax.random.fold_in(key, i), sched.layout, y, int(k), int(j), logits)
    freq = np.bincount(np.asarray(y).ravel(), minlength=K) / n
    assert np.all(np.abs(freq - 1 / K) < 5 * np.sqrt(0.16 / n)), (k, j, freq)


def test_respaced_layout_step_uses_the_exact_posterior(sched):
  # One reverse step k -> j over a gap: frequencies match q(y_j | y_k, y0_hat).
  n = 200_000
  k, j = 700, 450
  y0_hat = jnp.log(jnp.array([0.1, 0.5, 0.2, 0.1, 0.1]))
  y = jnp.full((1, n, 1), 2, jnp.int32)
  logits = jnp.broadcast_to(y0_hat, (1, n, 1, K))
  out = jax.jit(sampling.reverse_layout_step)(jax.random.PRNGKey(3), sched.layout, y, k, j, logits)
  freq = np.bincount(np.asarray(out).ravel(), minlength=K) / n
  want = np.exp(np.asarray(categorical.posterior(
      sched.layout, y0_hat, categorical.log_onehot(jnp.array(2), K), k, j)))
  assert np.all(np.abs(freq - want) < 5 * np.sqrt(want * (1 - want) / n) + 1e-6), (freq, want)


@pytest.fixture(scope="module")
def tiny_model():
  config = presets.get_preset("tiny", num_classes=K, text_dim=6)
  model = unet.JointUNet(config)
  x, y = jnp.zeros((1, H, W, 3)), jnp.zeros((1, H, W), jnp.int32)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, y, jnp.zeros((1,)), *_text(1))["params"]
  # The heads are zero at init; give them weights so that outputs depend on inputs.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: (0.1 * jax.random.normal(jax.random.PRNGKey(len(path)), p.shape)
                       if any("head" in str(k).lower() for k in path) else p), params)
  return model, params


def test_guidance_batches_equal_two_passes(tiny_model):
  model, params = tiny_model
  apply = jax.jit(sampling.model_apply_fn(model))  # (one program per batch size, not per op)
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(B, H, W, 3)), jnp.float32)
  y = jnp.asarray(rng.integers(0, K, (B, H, W)), jnp.int32)
  lam = jnp.array([0.5, -1.0])
  text = jnp.asarray(rng.normal(size=(B, 4, 6)), jnp.float32)
  mask = jnp.array([[True, True, False, False], [True, True, True, True]])
  cond = apply(params, x, y, lam, text, mask, jnp.zeros((B,), bool), None, None)
  uncond = apply(params, x, y, lam, text, mask, jnp.ones((B,), bool), None, None)
  assert not np.allclose(cond[0], uncond[0])

  one = sampling.SamplerConfig(guidance_image=1.0, guidance_layout=1.0)
  ic, iu, lc, lu = sampling.guided_outputs(apply, params, one, x, y, lam, text, mask)
  assert iu is None and lu is None
  np.testing.assert_allclose(ic, cond[0], atol=1e-6)
  np.testing.assert_allclose(lc, cond[1], atol=1e-6)

  three = sampling.SamplerConfig(guidance_image=3.0, guidance_layout=2.0)
  ic, iu, lc, lu = sampling.guided_outputs(apply, params, three, x, y, lam, text, mask)
  np.testing.assert_allclose(ic, cond[0], atol=1e-5)
  np.testing.assert_allclose(iu, uncond[0], atol=1e-5)
  np.testing.assert_allclose(lc, cond[1], atol=1e-5)
  np.testing.assert_allclose(lu, uncond[1], atol=1e-5)


def test_guidance_scale_one_samples_equal_the_conditional_model(tiny_model, sched):
  # The guided sampler at scale 1 (one forward of 2B) and the unguided one (B) agree.
  model, params = tiny_model
  apply = sampling.model_apply_fn(model)
  plain = sampling.make_sampler(apply, sched, sampling.SamplerConfig(
      steps=4, guidance_image=1.0, guidance_layout=1.0), height=H, width=W)
  # guidance 1 + tiny epsilon forces the batched path; outputs must match to float noise.
  batched = sampling.make_sampler(apply, sched, sampling.SamplerConfig(
      steps=4, guidance_image=1.0 + 1e-7, guidance_layout=1.0 + 1e-7), height=H, width=W)
  a = plain(params, jax.random.PRNGKey(0), *_text())
  b = batched(params, jax.random.PRNGKey(0), *_text())
  np.testing.assert_allclose(a["image"], b["image"], atol=1e-4)
  assert np.mean(np.asarray(a["layout"]) == np.asarray(b["layout"])) > 0.99


def test_outpainting_keeps_the_known_modality_and_seeds(tiny_model, sched, data):
  model, params = tiny_model
  x0, y0 = data
  apply = sampling.model_apply_fn(model)
  # layout -> image with R = 5; image -> layout with R = 1.
  l2i = sampling.make_sampler(apply, sched, sampling.SamplerConfig(steps=4, method="ddpm", resample=5), height=H, width=W)
  out = l2i(params, jax.random.PRNGKey(0), *_text(), {"layout": y0, "layout_mask": jnp.ones((B, H, W), bool)})
  np.testing.assert_array_equal(out["layout"], y0)
  assert np.all(np.abs(np.asarray(out["image"])) <= 1.0)
  i2l = sampling.make_sampler(apply, sched, sampling.SamplerConfig(steps=4, method="ddpm", resample=1), height=H, width=W)
  half = jnp.zeros((B, H, W), bool).at[:, :, : W // 2].set(True)
  out = i2l(params, jax.random.PRNGKey(0), *_text(), {"image": x0, "image_mask": half})
  np.testing.assert_array_equal(np.asarray(out["image"])[:, :, : W // 2], np.asarray(x0)[:, :, : W // 2])
  assert not np.allclose(out["image"][:, :, W // 2:], x0[:, :, W // 2:])
  # Same seed, same samples; another seed, other samples.
  again = i2l(params, jax.random.PRNGKey(0), *_text(), {"image": x0, "image_mask": half})
  np.testing.assert_array_equal(out["image"], again["image"])
  np.testing.assert_array_equal(out["layout"], again["layout"])
  other = i2l(params, jax.random.PRNGKey(1), *_text(), {"image": x0, "image_mask": half})
  assert not np.array_equal(out["image"], other["image"])


def test_step_grid():
  g = sampling.step_grid(1000, 50)
  assert g[0] == 999 and g[-1] == 0 and len(np.unique(g)) == 50 and np.all(np.diff(g) < 0)
  np.testing.assert_array_equal(sampling.step_grid(10, 10), np.arange(9, -1, -1))
  with pytest.raises(ValueError, match="1001"):
    sampling.step_grid(1000, 1001)
  with pytest.raises(ValueError, match="method"):
    sampling.SamplerConfig(method="euler")
  for bad in [dict(eta=1.5), dict(eta=-0.1), dict(threshold=float("nan")), dict(threshold=2.0),
              dict(guidance_image=-1.0), dict(guidance_layout=float("inf"))]:
    with pytest.raises(ValueError, match=f"SamplerConfig.{next(iter(bad))}="):
      sampling.SamplerConfig(**bad)
  sampling.SamplerConfig(eta=0.0, threshold=0.0, guidance_image=0.0, guidance_layout=7.5)


def _gaussian_data_denoiser(std):
  """The exact x0 predictor for data ~ N(0, std^2) per pixel: linear in x_t."""

  def apply(params, x_t, y_t, lam, text_emb, text_mask, drop, sc_img, sc_lay):
    del params, y_t, text_emb, text_mask, drop, sc_img, sc_lay
    a2 = jax.nn.sigmoid(lam)[:, None, None, None]
    x0 = jnp.sqrt(a2) * std**2 * x_t / (a2 * std**2 + (1 - a2))
    return x0, None

  return apply


def _ode_endpoint(x_start, log_snr_start, log_snr_end, std):
  """Closed form: the probability-flow ODE keeps x / sqrt(alpha^2 std^2 + sigma^2)
  constant for Gaussian data; then the output is the x0 prediction at the end."""
  def marginal(lam):
    a2 = 1 / (1 + np.exp(-lam))
    return np.sqrt(a2 * std**2 + 1 - a2), a2
  m0, _ = marginal(log_snr_start)
  m1, a2 = marginal(log_snr_end)
  x_end = np.asarray(x_start, np.float64) * m1 / m0
  return np.sqrt(a2) * std**2 * x_end / (a2 * std**2 + 1 - a2)


def test_dpm_solver_2m_solves_the_probability_flow_ode_to_second_order():
  """Gaussian data: the exact ODE endpoint is known in closed form. DPM-Solver++(2M)
  converges to it at second order, and is more accurate than DDIM at equal steps."""
  std = 0.15  # |x0_hat| stays far below the clip at 1
  image_only = joint.make_schedule(1000, 0)
  x_start = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 3))
  errors = {}
  for method in ("ddim", "dpm2m"):
    for steps in (20, 40, 80):
      cfg = sampling.SamplerConfig(steps=steps, method=method, eta=0.0, guidance_image=1.0,
                                   guidance_layout=1.0, threshold=0.0)
      sample = sampling.make_sampler(_gaussian_data_denoiser(std), image_only, cfg, height=4, width=4,
                                     prediction="x0")
      # The sampler draws its start from the key: recover it the same way.
      key = jax.random.PRNGKey(0)
      _, k_x, _, _ = jax.random.split(key, 4)
      start = jax.random.normal(k_x, (2, 4, 4, 3))
      out = np.asarray(sample(None, key, *_text())["image"], np.float64)
      grid = sampling.step_grid(1000, steps)
      lam = np.asarray(image_only.image_log_snr, np.float64)
      want = _ode_endpoint(start, lam[grid[0]], lam[grid[-1]], std)
      errors[method, steps] = float(np.abs(out - want).max() / np.abs(want).max())
  del x_start
  # (A numpy float64 transcription of both solvers gives the same errors: DDIM
  # 0.18 / 0.092 / 0.046, DPM-Solver++(2M) 0.12 / 0.023 / 0.0004 at 20 / 40 / 80
  # steps; the cosine schedule's long first and last steps on the integer grid
  # delay the second-order regime.)
  assert errors["dpm2m", 80] < 2e-3, errors
  # DDIM is first order (doubling the steps halves the error); DPM-Solver++(2M)
  # converges faster than that.
  for steps in (20, 40):
    assert 1.7 < errors["ddim", steps] / errors["ddim", 2 * steps] < 2.3, errors
    assert errors["dpm2m", steps] / errors["dpm2m", 2 * steps] > 4.0, errors
  for steps in (20, 40, 80):
    assert errors["dpm2m", steps] < errors["ddim", steps] / 1.5, errors


def test_dpm2m_refuses_known_regions(sched, data):
  x0, y0 = data
  cfg = sampling.SamplerConfig(steps=4, method="dpm2m")
  sample = sampling.make_sampler(_oracle(x0, y0), sched, cfg, height=H, width=W)
  with pytest.raises(ValueError, match="dpm2m"):
    sample(None, jax.random.PRNGKey(0), *_text(), known={"image": x0, "image_mask": jnp.ones((B, H, W), bool)})


def test_sde_dpm_solver_first_order_step_is_the_ancestral_step():
  """eta = 1 with no history (h_ratio 0): exactly a draw from q(x_s | x_t, x0_hat)."""
  k = jax.random.split(jax.random.PRNGKey(5), 3)
  x_t = jax.random.normal(k[0], (3, 4, 4, 3))
  x0 = jnp.tanh(jax.random.normal(k[1], (3, 4, 4, 3)))
  noise = jax.random.normal(k[2], (3, 4, 4, 3))
  lam_t, lam_s = jnp.array([-3.0, 0.0, 2.0]), jnp.array([-1.0, 0.5, 6.0])
  got = gaussian.dpm_solver_2m_step(x_t, x0, jnp.zeros_like(x0), lam_t, lam_s, jnp.zeros(3), 1.0, noise)
  mean, var = gaussian.posterior(x0, x_t, lam_t, lam_s)
  np.testing.assert_allclose(np.asarray(got), np.asarray(mean + jnp.sqrt(var) * noise), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="noise"):
    gaussian.dpm_solver_2m_step(x_t, x0, x0, lam_t, lam_s, jnp.zeros(3), 1.0)


def test_sde_dpm_solver_2m_samples_gaussian_data_closer_than_ancestral_steps():
  """Gaussian data N(0, 0.15^2) with its exact denoiser: the output's spread must be
  that of x0_hat at step 0 in closed form. Monte Carlo over 49,152 values (standard
  error of the spread ratio ~0.3%). Measured: ancestral 0.76 / 0.92 of the target at
  25 / 100 steps, SDE-DPM-Solver++(2M) 0.90 / 1.015."""
  std = 0.15
  image_only = joint.make_schedule(1000, 0)
  lam0 = float(image_only.image_log_snr[0])
  a2 = 1 / (1 + np.exp(-lam0))
  target = np.sqrt(a2 * std**4 / (a2 * std**2 + 1 - a2))
  ratio = {}
  for method, eta in (("ddpm", 0.0), ("dpm2m", 1.0)):
    for steps in (25, 100):
      cfg = sampling.SamplerConfig(steps=steps, method=method, eta=eta, guidance_image=1.0,
                                   guidance_layout=1.0, threshold=0.0)
      sample = sampling.make_sampler(_gaussian_data_denoiser(std), image_only, cfg, height=16, width=16,
                                     prediction="x0")
      out = np.asarray(sample(None, jax.random.PRNGKey(0), *_text(64))["image"], np.float64)
      ratio[method, steps] = out.std() / target
  assert abs(ratio["dpm2m", 100] - 1) < 0.03, ratio
  for steps in (25, 100):
    assert abs(ratio["dpm2m", steps] - 1) < abs(ratio["ddpm", steps] - 1) - 0.05, ratio


def test_sampler_config_takes_repaint_method_and_steps_for_known_regions():
  from gcd_jax import config_base  # pylint: disable=g-import-not-at-top
  c = config_base.base_config().sample
  plain = sampling.SamplerConfig.from_config(c)
  assert (plain.method, plain.steps, plain.eta) == (c.method, c.steps, c.eta)
  rp = sampling.SamplerConfig.from_config(c, known=True)
  assert (rp.method, rp.steps, rp.eta) == (c.repaint_method, c.repaint_steps, 0.0)
  assert sampling.SamplerConfig.from_config(c, known=True, steps=7).steps == 7  # flags win
  old = ml_collections.ConfigDict({k: v for k, v in c.items()
                                   if k not in ("repaint_method", "repaint_steps")})
  assert sampling.SamplerConfig.from_config(old, known=True).method == c.method  # saved before the keys


# --- The sampler's named pieces, each against its closed form. ---------------


def test_apply_guidance_extrapolates_each_modality_with_its_own_scale():
  rng = np.random.default_rng(0)
  ic, iu, lc, lu = (jnp.asarray(rng.normal(size=(2, 3, 3, k)), jnp.float32) for k in (3, 3, K, K))
  cfg = sampling.SamplerConfig(guidance_image=3.0, guidance_layout=2.0)
  image, logits = sampling.apply_guidance(sampling.GuidedOutputs(ic, iu, lc, lu), cfg)
  np.testing.assert_allclose(image, iu + 3.0 * (ic - iu), atol=1e-5)
  np.testing.assert_allclose(logits, lu + 2.0 * (lc - lu), atol=1e-5)
  # Guidance off (no unconditional pass) and image-only (no logits).
  image, logits = sampling.apply_guidance(sampling.GuidedOutputs(ic, None, None, None), cfg)
  np.testing.assert_array_equal(image, ic)
  assert logits is None


def _alpha_sigma(lam):
  return np.sqrt(1 / (1 + np.exp(-lam))), np.sqrt(1 / (1 + np.exp(lam)))


def test_ancestral_image_step_draws_from_the_gaussian_posterior():
  # q(x_j | x_k, x0) from alpha, sigma of the two log-SNRs, by Monte Carlo over 4000 keys.
  lam_k, lam_j = -1.0, 1.5
  a_k, s_k = _alpha_sigma(lam_k)
  a_j, s_j = _alpha_sigma(lam_j)
  a_kj = a_k / a_j
  s2_kj = s_k ** 2 - a_kj ** 2 * s_j ** 2
  x_k, x0 = 0.7, -0.4
  mean = a_kj * s_j ** 2 / s_k ** 2 * x_k + a_j * s2_kj / s_k ** 2 * x0
  var = s2_kj * s_j ** 2 / s_k ** 2
  cfg = sampling.SamplerConfig(method="ddpm")
  n = 4000
  step = jax.vmap(lambda key: sampling.reverse_image_step(
      cfg, key, jnp.full((1,), x_k), jnp.full((1,), x0), jnp.full((1,), lam_k),
      jnp.full((1,), lam_j), jnp.zeros((1,)), jnp.zeros((1,))))
  draws = np.asarray(step(jax.random.split(jax.random.PRNGKey(0), n)))[:, 0]
  # 5 standard errors of the mean and of the variance.
  assert abs(draws.mean() - mean) < 5 * np.sqrt(var / n)
  assert abs(draws.var() - var) < 5 * var * np.sqrt(2 / n)


def test_renoise_step_applies_the_forward_kernels_from_j_to_k(sched):
  j, k = 100, 600
  lam = np.asarray(sched.image_log_snr, np.float64)
  a_k, s_k = _alpha_sigma(lam[k])
  a_j, s_j = _alpha_sigma(lam[j])
  a_kj, s2_kj = a_k / a_j, s_k ** 2 - (a_k / a_j) ** 2 * s_j ** 2
  n = 4000
  x_j = jnp.full((n, 1, 1, 1), 0.5)
  y_j = jnp.full((n, 1, 1), 2, jnp.int32)
  x_k, y_k = sampling.renoise_step(jax.random.PRNGKey(1), sched, x_j, y_j, j, k,
                                   jnp.full((n,), lam[j]), jnp.full((n,), lam[k]))
  x_k = np.asarray(x_k).ravel()
  assert abs(x_k.mean() - a_kj * 0.5) < 5 * np.sqrt(s2_kj / n)
  assert abs(x_k.var() - s2_kj) < 5 * s2_kj * np.sqrt(2 / n)
  # Layout: Cat(r onehot(y_j) + (1 - r) / K), r = abar_k / abar_j.
  r = np.exp(float(sched.layout.log_abar[k]) - float(sched.layout.log_abar[j]))
  expected = np.full(K, (1 - r) / K)
  expected[2] += r
  freq = np.bincount(np.asarray(y_k).ravel(), minlength=K) / n
  np.testing.assert_allclose(freq, expected, atol=5 * np.sqrt(0.25 / n))


def test_known_regions_are_noised_then_pasted_only_where_known(sched, data):
  x0, y0 = data
  mask = jnp.zeros((B, H, W), bool).at[:, :4].set(True)
  known = {"image": x0, "image_mask": mask, "layout": y0, "layout_mask": ~mask}
  # At step 0 the image keeps its data exactly (log-SNR finite but large: close) and
  # the layout its classes; pasted values land where the masks say, nowhere else.
  noised = sampling.noise_known(jax.random.PRNGKey(0), sched, known, jnp.zeros((B,), jnp.int32))
  np.testing.assert_array_equal(noised["layout"], y0)
  np.testing.assert_allclose(noised["image"], x0, atol=0.05)
  x = jnp.full(x0.shape, 9.0)
  y = jnp.full(y0.shape, K - 1, jnp.int32)
  px, py = sampling.paste_known(x, y, known, noised)
  np.testing.assert_array_equal(np.asarray(px)[:, 4:], 9.0)
  np.testing.assert_array_equal(np.asarray(px)[:, :4], np.asarray(noised["image"])[:, :4])
  np.testing.assert_array_equal(np.asarray(py)[:, :4], K - 1)
  np.testing.assert_array_equal(np.asarray(py)[:, 4:], np.asarray(y0)[:, 4:])


def test_padded_batches_cover_every_item_once_and_pad_with_the_last():
  batches = list(sampling.padded_batches(7, 3))
  assert [(a, b) for a, b, _ in batches] == [(0, 3), (3, 6), (6, 7)]
  np.testing.assert_array_equal(batches[-1][2], [6, 6, 6])
  assert np.concatenate([idx[:b - a] for a, b, idx in batches]).tolist() == list(range(7))
  with pytest.raises(ValueError, match="n=0"):
    list(sampling.padded_batches(0, 3))
