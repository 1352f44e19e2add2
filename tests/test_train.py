"""Training: exact resume, SIGTERM, 1 vs 8 devices, the NaN guard, and main end to end."""

import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gcd_jax import checkpointing
from gcd_jax import sharding
from gcd_jax import train
from gcd_jax import train_lib

from conftest import REPO, tiny_config  # pylint: disable=g-bad-import-order


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_sigterm_leaves_a_checkpoint_and_resume_is_exact(scenes_data_dir, tmp_path):
  config = tiny_config(scenes_data_dir)
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  assert int(straight.step) == 4

  def preempt_at_2(step):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  interrupted = train.train_and_evaluate(config, str(tmp_path / "resumed"), step_hooks=[preempt_at_2])
  assert int(interrupted.step) == 2
  assert checkpointing.Checkpointer(tmp_path / "resumed" / "checkpoints").latest_step() == 2
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == 4
  # Bitwise: parameters, EMA and optimizer state (which see the data order and the RNG).
  assert _leaves_equal(straight.params, resumed.params)
  assert _leaves_equal(straight.ema_params, resumed.ema_params)
  assert _leaves_equal(straight.opt_state, resumed.opt_state)
  assert not _leaves_equal(interrupted.params, resumed.params)

  # Resuming with other noise schedules than the checkpoint's is refused...
  other = tiny_config(scenes_data_dir, num_steps=6)
  other.diffusion.image_schedule = "linear"
  with pytest.raises(ValueError, match="allow_schedule_change"):
    train.train_and_evaluate(other, str(tmp_path / "straight"))

  # ...and init_from starts a new run from the given weights (same schedules).
  fresh = tiny_config(scenes_data_dir, num_steps=4)
  fresh.init_from = str(tmp_path / "straight")
  state, meta, step = checkpointing.restore_state(fresh.init_from, jax.eval_shape(lambda: straight))
  assert step == 4 and meta["schedules"]["image"]["name"] == "cosine"
  assert _leaves_equal(state.params, straight.params)


def _random_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  b, h, w = config.data.batch_size, config.data.height, config.data.width
  return {
      "image": rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
      "layout": rng.integers(0, config.model.num_classes, (b, h, w)).astype(np.int32),
      "text": rng.normal(size=(b, config.text.max_length, config.model.text_dim)).astype(np.float32),
      "text_mask": np.arange(config.text.max_length)[None] < rng.integers(1, config.text.max_length, (b, 1)),
  }


@pytest.fixture(scope="module")
def step_setup():
  config = tiny_config("")
  model = train_lib.make_model(config)
  sched = train_lib.make_joint_schedule(config)
  state = jax.jit(lambda r: train_lib.init_state(config, model, r))(jax.random.PRNGKey(0))
  return config, model, sched, state


IGNORE = 255


@pytest.fixture(scope="module")
def plain_step(step_setup):
  """One compiled unsharded step (ignore id 255), shared by the tests below."""
  config, model, sched, _ = step_setup
  return jax.jit(train_lib.make_train_step(config, model, sched, ignore_id=IGNORE))


def _run_steps(config, model, sched, state, mesh, batches, min_size):
  abstract = jax.eval_shape(lambda: state)
  state_sh = sharding.state_shardings(mesh, abstract, min_size=min_size)
  step = jax.jit(train_lib.make_train_step(config, model, sched),
                 in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)))
  state = jax.device_put(state, state_sh)
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.global_batch(mesh, batch))
    losses.append(float(metrics["loss"]))
  return losses, state_sh


def test_one_device_and_eight_devices_give_the_same_losses(step_setup):
  config, model, sched, state = step_setup
  assert len(jax.devices()) == 8, "tests/conftest.py forces 8 host devices"
  batches = [_random_batch(config, s) for s in range(3)]
  one, _ = _run_steps(config, model, sched, state, sharding.make_mesh(devices=jax.devices()[:1]),
                      batches, min_size=2**18)
  # 4-way data x 2-way FSDP, with small parameters sharded too.
  eight, shardings = _run_steps(config, model, sched, state, sharding.make_mesh(data=4, fsdp=2),
                                batches, min_size=64)
  assert any(s.spec != P() for s in jax.tree.leaves(shardings.params))
  np.testing.assert_allclose(one, eight, rtol=2e-5)
  assert one[0] != one[1]


def test_nan_guard_keeps_the_state_and_names_the_term(step_setup, plain_step):
  config, model, sched, state = step_setup
  batch = _random_batch(config)  # no pixel at the ignore id
  batch["image"][0, 0, 0, 0] = np.nan
  new_state, metrics = plain_step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  bad = train_lib.nonfinite_terms(jax.device_get(metrics))
  assert "image" in bad and "grad" in bad  # (a NaN pixel reaches both heads)
  assert _leaves_equal(new_state.params, state.params)
  assert _leaves_equal(new_state.opt_state, state.opt_state)


def test_nan_guard_stops_the_run_before_any_checkpoint(scenes_data_dir, tmp_path):
  config = tiny_config(scenes_data_dir)
  config.optimizer.warmup_steps = 0
  config.optimizer.learning_rate = float("inf")  # an injected blow-up in the first update
  with pytest.raises(train.NonFiniteLossError, match=r"step 1: non-finite update"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpointing.Checkpointer(tmp_path / "checkpoints").latest_step() is None


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
  config = tiny_config(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="gcd_jax.prepare --dataset synthetic_scenes"):
    train.train_and_evaluate(config, str(tmp_path / "wd"))


def _main(args, **kw):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "gcd_jax.main", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600, **kw)


def test_bad_config_keys_fail_before_any_work(tmp_path):
  bad_key = _main(["--config", "configs/shapes.py", "--workdir", str(tmp_path),
                   "--config.train.num_stepz=3"])
  assert bad_key.returncode != 0 and "num_stepz" in bad_key.stderr
  bad_type = _main(["--config", "configs/shapes.py", "--workdir", str(tmp_path),
                    "--config.train.num_steps=three"])
  assert bad_type.returncode != 0 and "num_steps" in bad_type.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_main_end_to_end(scenes_data_dir, tmp_path):
  workdir = tmp_path / "run"
  proc = _main(["--config", "configs/smoke.py", "--workdir", str(workdir),
                f"--config.data.data_dir={scenes_data_dir}", "--config.train.num_steps=4",
                "--config.train.sample_every=4", "--config.train.log_every=2",
                "--config.train.eval_every=4", "--config.eval.num_samples=4", "--config.eval.batch_size=4"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert checkpointing.Checkpointer(workdir / "checkpoints").latest_step() == 4
  pngs = sorted((workdir / "samples").glob("*.png"))
  assert [p.name for p in pngs] == ["step_0000004.png"]
  from PIL import Image  # pylint: disable=g-import-not-at-top
  assert Image.open(pngs[0]).size[0] > 100
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0, "images": 0})
  events.Reload()
  tags = set(events.Tags()["tensors"]) | set(events.Tags()["scalars"]) | set(events.Tags()["images"])
  for tag in ("loss", "loss_image", "loss_layout", "grad_norm", "learning_rate", "steps_per_sec",
              "examples_per_sec", "samples", "eval/semantic_recall", "eval/layout_semantic_recall",
              "eval/image_fsd", "eval/miou", "eval/attribute_accuracy_position"):
    assert tag in tags, (tag, sorted(tags))
  loss_events = events.Tensors("loss") if "loss" in events.Tags()["tensors"] else events.Scalars("loss")
  assert [e.step for e in loss_events] == [2, 4]


def test_image_only_baseline_with_a_scratch_text_encoder(tiny_image_only_run_dir):
  # The paper's baseline (no layout) and a text encoder trained with the model, in one run.
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax import sampling  # pylint: disable=g-import-not-at-top
  workdir, state = tiny_image_only_run_dir
  assert not any("layout" in "/".join(map(str, path)).lower()
                 for path, _ in jax.tree_util.tree_leaves_with_path(state.params))
  assert "text_encoder" in state.params and "unet" in state.params
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
  batch = _random_batch(config, seed=4)
  batch["layout"][:, :, :5] = IGNORE
  _, m1 = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
  assert np.isfinite(float(m1["loss_layout"])) and float(m1["loss_layout"]) > 0
  assert not train_lib.nonfinite_terms(jax.device_get(m1))
  other = {k: v.copy() for k, v in batch.items()}
  rng = np.random.default_rng(5)
  other["layout"][:, :, 5:] = rng.integers(0, config.model.num_classes, other["layout"][:, :, 5:].shape)
  _, m2 = step(state, {k: jnp.asarray(v) for k, v in other.items()})
  assert float(m1["loss_layout"]) != float(m2["loss_layout"])  # labelled pixels do count
