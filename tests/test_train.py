"""The train step (1 device vs 2 processes x 4 devices: tests/test_multiprocess.py): the NaN guard, captions left out, ignored pixels, the image-only baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax import train_lib

from conftest import random_batch, tiny_config  # pylint: disable=g-bad-import-order


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def step_setup():
  config = tiny_config("")
  model = train_lib.make_model(config)
  sched = train_lib.make_joint_schedule(config)
  state = jax.jit(lambda r: train_lib.init_state(config, model, r))(jax.random.PRNGKey(0))
  return config, model, sched, state


IGNORE = 255


def _batch(config, seed=0):
  """A random batch, every example captioned: the inputs of the uncaptioned test, so that
  the tests below share one compiled step."""
  batch = random_batch(config, seed)
  batch["captioned"] = np.ones((len(batch["image"]),), bool)
  return batch


@pytest.fixture(scope="module")
def plain_step(step_setup):
  """One compiled unsharded step (ignore id 255), shared by the tests below."""
  config, model, sched, _ = step_setup
  return jax.jit(train_lib.make_train_step(config, model, sched, ignore_id=IGNORE))


def test_nan_guard_keeps_the_state_and_names_the_term(step_setup, plain_step):
  config, model, sched, state = step_setup
  batch = _batch(config)  # no pixel at the ignore id
  batch["image"][0, 0, 0, 0] = np.nan
  new_state, metrics = plain_step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  bad = train_lib.nonfinite_terms(jax.device_get(metrics))
  assert "image" in bad and "grad" in bad  # (a NaN pixel reaches both heads)
  assert _leaves_equal(new_state.params, state.params)
  assert _leaves_equal(new_state.opt_state, state.opt_state)


def test_uncaptioned_examples_train_with_the_null_caption(step_setup, plain_step):
  """config.data.captioned_split: an example marked uncaptioned never sees its text."""
  config, _, _, state = step_setup
  batch = random_batch(config)
  other = dict(batch, text=np.random.default_rng(7).normal(size=batch["text"].shape).astype(np.float32))

  def grad_norm(b, captioned):  # (at init the loss itself ignores the text: zero-initialised outputs)
    b = {**b, "captioned": np.full((len(b["image"]),), captioned)}
    return float(plain_step(state, {k: jnp.asarray(v) for k, v in b.items()})[1]["grad_norm"])

  assert grad_norm(batch, False) == grad_norm(other, False)
  assert abs(grad_norm(batch, True) - grad_norm(other, True)) > 1e-4 * grad_norm(batch, True)


def test_image_only_baseline_with_a_scratch_text_encoder(tiny_image_only_run_dir):
  # The paper's baseline (no layout) and a text encoder trained with the model, in one run.
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax import sampling  # pylint: disable=g-import-not-at-top
  workdir, params = tiny_image_only_run_dir
  assert not any("layout" in "/".join(map(str, path)).lower()
                 for path, _ in jax.tree_util.tree_leaves_with_path(params))
  assert "text_encoder" in params and "unet" in params
  assert (workdir / "text_tokenizer.json").is_file()

  run = run_lib.load(workdir)
  assert run.text.describe()["kind"] == "scratch" and run.sched.layout is None
  out = run.sample(["A large red ball."] * 2, cfg=sampling.SamplerConfig(steps=2))
  assert set(out) == {"image"} and out["image"].shape == (2, 16, 16, 3)
  tokens, mask = run.text.batch(["A large red ball."])
  assert mask.sum() == 6  # [CLS] a large red ball .
  assert run.text.tokenizer.decode(tokens) == ["a large red ball ."]


def test_train_step_with_ignored_pixels_is_finite_and_reads_only_labelled_ones(step_setup, plain_step):
  """The step masks ignore-id pixels out of the layout loss (the masked loss itself is
  checked exactly in tests/diffusion/test_categorical.py)."""
  config, model, sched, state = step_setup
  step = plain_step
  batch = _batch(config, seed=4)
  batch["layout"][:, :, :5] = IGNORE
  _, m1 = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  assert np.isfinite(float(m1["loss_layout"])) and float(m1["loss_layout"]) > 0
  assert not train_lib.nonfinite_terms(jax.device_get(m1))
  other = {k: v.copy() for k, v in batch.items()}
  rng = np.random.default_rng(5)
  other["layout"][:, :, 5:] = rng.integers(0, config.model.num_classes, other["layout"][:, :, 5:].shape)
  _, m2 = step(state, {k: jnp.asarray(v) for k, v in other.items()})
  assert float(m1["loss_layout"]) != float(m2["loss_layout"])  # labelled pixels do count
