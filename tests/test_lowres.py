"""The super-resolution stage: its conditioning, its train step, its sampler, its records."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from gcd_jax import config_base
from gcd_jax import run as run_lib
from gcd_jax import sampling
from gcd_jax import train_lib
from gcd_jax.diffusion import joint
from gcd_jax.diffusion import lowres
from gcd_jax.models import presets

from conftest import random_batch, tiny_config  # pylint: disable=g-bad-import-order

K = 5
T = 1000


def _sr_config(h=8, w=8, **kw):
  return lowres.LowresConfig(height=h, width=w, **kw)


# --- The conditioning, against brute force and closed forms. -----------------


def test_layout_goes_down_and_up_by_nearest_neighbour():
  y = jnp.asarray(np.random.default_rng(0).integers(0, K, (2, 16, 16)), jnp.int32)
  cfg = _sr_config()
  low = np.asarray(lowres.downsample_layout(cfg, y))
  # The source pixel whose centre is nearest: for a factor 2, the odd rows and columns.
  np.testing.assert_array_equal(low, np.asarray(y)[:, 1::2, 1::2])
  up = np.asarray(lowres.upsample_layout(jnp.asarray(low), (16, 16)))
  np.testing.assert_array_equal(up, low.repeat(2, 1).repeat(2, 2))
  # Non-integer factors keep every value a class id of the source.
  odd = np.asarray(lowres.downsample_layout(_sr_config(5, 7), y))
  assert odd.shape == (2, 5, 7) and set(np.unique(odd)) <= set(np.unique(np.asarray(y)))


def test_image_downsampling_is_antialiased_and_nearest_is_not():
  # A checkerboard at the Nyquist frequency of 16 pixels has no 8-pixel representation:
  # an antialiased resize averages it away; nearest neighbour aliases it to a flat +-1.
  board = np.indices((16, 16)).sum(0) % 2 * 2.0 - 1.0
  image = jnp.asarray(np.broadcast_to(board[None, :, :, None], (1, 16, 16, 3)), jnp.float32)
  smooth = np.asarray(lowres.downsample_image(_sr_config(), image))
  aliased = np.asarray(lowres.downsample_image(_sr_config(image_resize="nearest"), image))
  assert smooth.shape == aliased.shape == (1, 8, 8, 3)
  assert np.abs(smooth).max() < 0.3
  assert np.all(np.abs(aliased) == 1.0)
  # Constants survive both ways; upsampling is bilinear between the low-res pixels.
  const = jnp.full((1, 16, 16, 3), 0.3)
  image_low, _ = lowres.condition_from_data(_sr_config(), const, None)
  np.testing.assert_allclose(image_low, 0.3, atol=1e-6)
  ramp = jnp.asarray(np.arange(8, dtype=np.float32)[None, None, :, None] * np.ones((1, 8, 1, 3)))
  up = np.asarray(lowres.upsample_image(_sr_config(), ramp, (16, 16)))
  # Bilinear on pixel centres: output column c sits at input position (c + 0.5) / 2 - 0.5.
  expected = np.clip((np.arange(16) + 0.5) / 2 - 0.5, 0, 7)
  np.testing.assert_allclose(up[0, 3, :, 0], expected, atol=1e-5)


def test_augmentation_noises_both_modalities_at_one_shared_level():
  cfg = _sr_config()
  aug = lowres.make_schedule(cfg, T, K)
  n = 4000
  image = jnp.full((n, 1, 1, 1), 0.5)
  layout = jnp.full((n, 1, 1), 2, jnp.int32)
  for step in (0, 300, 700):
    steps = jnp.full((n,), step)
    x, y, lam = lowres.augment(jax.random.PRNGKey(step), aug, image, layout, steps)
    a2 = 1 / (1 + np.exp(-float(aug.image_log_snr[step])))  # alpha^2 = sigmoid(lambda)
    np.testing.assert_allclose(lam, float(aug.image_log_snr[step]))
    x = np.asarray(x).ravel()
    assert abs(x.mean() - np.sqrt(a2) * 0.5) < 5 * np.sqrt((1 - a2) / n) + 1e-6
    assert abs(x.var() - (1 - a2)) < 5 * (1 - a2) * np.sqrt(2 / n) + 1e-6
    # The same step on the layout: kept with probability abar + (1 - abar) / K.
    abar = float(np.exp(aug.layout.log_abar[step]))
    kept = float(np.mean(np.asarray(y) == 2))
    assert abs(kept - (abar + (1 - abar) / K)) < 5 * np.sqrt(0.25 / n)
  # Per example: one example clean in both modalities, the other noised in both.
  two = lowres.augment(jax.random.PRNGKey(0), aug, jnp.full((2, 8, 8, 3), 0.5),
                       jnp.full((2, 8, 8), 2, jnp.int32), jnp.array([0, T - 1]))
  assert np.abs(np.asarray(two[0][0]) - 0.5).max() < 0.06 and np.all(np.asarray(two[1][0]) == 2)
  assert np.abs(np.asarray(two[0][1]) - 0.5).mean() > 0.5 and np.mean(np.asarray(two[1][1]) == 2) < 0.5


def test_ignored_pixels_reach_the_model_as_uniform_noise():
  aug = lowres.make_schedule(_sr_config(), T, K)
  n = 5000
  _, y, _ = lowres.augment(jax.random.PRNGKey(0), aug, jnp.zeros((n, 1, 1, 3)),
                           jnp.full((n, 1, 1), 255, jnp.int32), jnp.zeros((n,), jnp.int32),
                           ignore_id=255)
  freq = np.bincount(np.asarray(y).ravel(), minlength=K) / n
  np.testing.assert_allclose(freq, 1 / K, atol=5 * np.sqrt(0.2 * 0.8 / n))


def test_levels():
  cfg = _sr_config(max_level=0.5)
  steps = np.asarray(lowres.training_steps(jax.random.PRNGKey(0), cfg, T, 10000))
  assert steps.min() == 0 and steps.max() == 499
  assert lowres.sampling_step(0.2, T) == 200 and lowres.sampling_step(1.0, T) == T - 1
  with pytest.raises(ValueError, match="level"):
    lowres.sampling_step(1.5, T)
  with pytest.raises(ValueError, match="image_resize"):
    _sr_config(image_resize="bicubic")


# --- The sampler: an SR oracle returns the high-resolution data. -------------


def _sr_oracle(x_hi, y_hi, cfg):
  """Knows the high-res pair, and returns it only when given its own low-res pair.

  x0_hat = lowres_image + (x_hi - up(down(x_hi))): exact when the conditioning
  image is the upsampled low-res data; the layout logits favour y_hi where the
  conditioning layout is up(down(y_hi)) and a wrong class elsewhere.
  """
  x_up, y_up = lowres.condition_from_data(cfg, x_hi, y_hi)

  def apply(params, x_t, y_t, lam, text, mask, drop, sc_img, sc_lay, lowres_image=None,
            lowres_layout=None, lowres_log_snr=None):
    del params, x_t, y_t, lam, text, mask, drop, sc_img, sc_lay, lowres_log_snr
    image = lowres_image + (x_hi - x_up)
    right = (lowres_layout == y_up)[..., None]
    logits = 30.0 * jnp.where(right, jax.nn.one_hot(y_hi, K), jax.nn.one_hot((y_hi + 1) % K, K))
    return image, logits

  return apply


def test_sr_sampling_at_level_zero_with_an_oracle_returns_the_high_resolution_data():
  rng = np.random.default_rng(0)
  x_hi = jnp.asarray(rng.uniform(-0.8, 0.8, (2, 16, 16, 3)), jnp.float32)
  y_hi = jnp.asarray(rng.integers(0, K, (2, 16, 16)), jnp.int32)
  cfg = _sr_config()
  sched = joint.make_schedule(T, K)
  aug = lowres.make_schedule(cfg, T, K)
  low = {"image": lowres.downsample_image(cfg, x_hi), "layout": lowres.downsample_layout(cfg, y_hi)}
  text = (jnp.zeros((2, 4, 6)), jnp.ones((2, 4), bool))

  def sample(level):
    sampler_cfg = sampling.SamplerConfig(steps=10, method="ddpm", guidance_image=1.0,
                                         guidance_layout=1.0, threshold=0.0, lowres_level=level)
    sampler = sampling.make_sampler(_sr_oracle(x_hi, y_hi, cfg), sched, sampler_cfg, height=16,
                                    width=16, prediction="x0", lowres_config=cfg,
                                    lowres_sched=aug)
    return sampler(None, jax.random.PRNGKey(0), *text, None, low)

  out = sample(0.0)
  # Level 0 of the linear schedule: log-SNR 9.2, a noise std of 0.01 on the low-res image.
  np.testing.assert_allclose(out["image"], x_hi, atol=0.05)
  np.testing.assert_array_equal(out["layout"], y_hi)
  # At level 1 the conditioning is noise: the oracle no longer recognises its input.
  noisy = sample(1.0)
  assert np.mean(np.asarray(noisy["layout"]) == np.asarray(y_hi)) < 0.6
  # A base stage's sampler refuses low-res inputs, an SR stage's needs them.
  with pytest.raises(ValueError, match="low-res input"):
    sampling.make_sampler(_sr_oracle(x_hi, y_hi, cfg), sched, sampling.SamplerConfig(steps=2),
                          height=16, width=16, lowres_config=cfg, lowres_sched=aug)(
                              None, jax.random.PRNGKey(0), *text)


# --- The train step and the records. ------------------------------------------


def tiny_sr_config(data_dir=""):
  """tiny_config as an SR stage: 16x16 from 8x8."""
  c = tiny_config(data_dir)
  c.lowres.height = c.lowres.width = 8
  c.model.lowres_cond = True
  return c


def test_records_carry_the_augmentation_and_mismatches_are_refused():
  base = tiny_config("")
  sr = tiny_sr_config()
  base_record = train_lib.schedules_record(base, train_lib.make_joint_schedule(base))
  sr_record = train_lib.schedules_record(sr, train_lib.make_joint_schedule(sr))
  assert base_record["lowres"] is None
  assert sr_record["lowres"]["height"] == 8 and sr_record["lowres"]["schedule"] == "linear"
  assert sr_record["lowres"]["augmentation"]["image"]["name"] == "linear"
  # Records made before SR stages existed (no "lowres") still match a base stage.
  old = {k: v for k, v in base_record.items() if k != "lowres"}
  run_lib.check_schedules(old, base_record, False, "old")
  other = tiny_sr_config()
  other.lowres.max_level = 0.5
  other_record = train_lib.schedules_record(other, train_lib.make_joint_schedule(other))
  with pytest.raises(ValueError, match="allow_schedule_change"):
    run_lib.check_schedules(sr_record, other_record, False, "checkpoint x")
  run_lib.check_schedules(sr_record, other_record, True, "checkpoint x")


def test_an_sr_config_needs_both_halves_and_no_training_time_grids():
  c = tiny_sr_config()
  c.model.lowres_cond = False
  with pytest.raises(ValueError, match="lowres_cond"):
    config_base.validate(c)
  c = tiny_sr_config()
  c.train.sample_every = 2
  with pytest.raises(ValueError, match="sample_every=0"):
    config_base.validate(c)


@pytest.mark.parametrize("spec", ["configs/mm_celeba_hq_sr.py", "configs/cityscapes_sr.py"])
def test_paper_sr_configs_build_and_run_one_step_on_fake_data(spec):
  # The config as it is, with the U-Net narrowed (its arrangement, attention and
  # conditioning kept), float32 compute and the resolutions divided by 8 so that
  # a CPU compiles and runs it in seconds.
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
  fv(["prog", f"--config={spec}"])
  config = fv.config
  config_base.validate(config)
  model_cfg = dataclasses.replace(
      presets.paper_sr(), num_classes=config.model.num_classes, text_dim=config.model.text_dim,
      dtype="float32", dim=8, num_res_blocks=1, num_heads=1, head_dim=8,
      text_proj_dim=8, time_embed_dim=32, layout_embed_dim=4, fourier_dim=8)
  assert model_cfg.lowres_cond and model_cfg.downsample_first
  config.model = model_cfg.to_dict()
  config.data.height //= 8
  config.data.width //= 8
  config.lowres.height //= 8
  config.lowres.width //= 8
  config.data.batch_size = 1
  config.text.max_length = 4
  config.mesh.data = 1
  model = train_lib.make_model(config)
  sched = train_lib.make_joint_schedule(config)
  # The state's shapes from init, its values drawn here: compiling init costs as
  # much as the step, and this test is about the step.
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r), jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.02, s.shape), s.dtype),
                        abstract.params)
  state = train_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                               opt_state=train_lib.make_optimizer(config).init(params),
                               rng=jax.random.PRNGKey(0))
  step = jax.jit(train_lib.make_train_step(config, model, sched))
  if spec == "configs/cityscapes_sr.py":
    # Traced only (shapes and dtypes of the whole step): compiling it costs half a
    # minute on 2 cores, and the same step is compiled and run for the other config.
    new_state, metrics = jax.eval_shape(step, state, random_batch(config))
    assert jax.tree.map(lambda a: (a.shape, a.dtype), new_state.params) == jax.tree.map(
        lambda a: (a.shape, a.dtype), state.params)
    assert metrics["loss"].shape == () and metrics["finite_update"].dtype == jnp.bool_
    return
  _, metrics = step(state, random_batch(config))
  assert np.isfinite(float(metrics["loss"])) and bool(metrics["finite_update"])
