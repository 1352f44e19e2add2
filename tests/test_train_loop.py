"""The training loop in process: SIGTERM and exact resume, the NaN guard's stop, unprepared data."""

import os
import signal

import jax
import numpy as np
import pytest

from gcd_jax import checkpointing
from gcd_jax import text_conditioning
from gcd_jax import train
from gcd_jax.data import pipeline

from conftest import tiny_config  # pylint: disable=g-bad-import-order


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_sigterm_leaves_a_checkpoint_and_resume_is_exact(scenes_data_dir, tmp_path):
  config = tiny_config(scenes_data_dir)
  # The straight run is profiled (clu's Profile hook, one step); it changes no number.
  profiled = tiny_config(scenes_data_dir)
  profiled.train.profile_steps, profiled.train.profile_first_step = 1, 2
  straight = train.train_and_evaluate(profiled, str(tmp_path / "straight"))
  assert int(straight.step) == 4
  assert list((tmp_path / "straight" / "plugins" / "profile").rglob("*.xplane.pb"))

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


def test_nan_guard_stops_the_run_before_any_checkpoint(scenes_data_dir, tmp_path):
  config = tiny_config(scenes_data_dir)
  config.optimizer.warmup_steps = 0
  config.optimizer.learning_rate = float("inf")  # an injected blow-up in the first update
  config.text.precompute = True  # fills the caption cache before the first step
  with pytest.raises(train.NonFiniteLossError, match=r"step 1: non-finite update"):
    train.train_and_evaluate(config, str(tmp_path))
  assert checkpointing.Checkpointer(tmp_path / "checkpoints").latest_step() is None
  # Every training caption is cached (one step alone meets only a batch of them).
  cache = text_conditioning.make_text(config, tmp_path).cache
  captions = set(pipeline.split_captions("synthetic_scenes/32_mini", "train", scenes_data_dir))
  assert len(captions) > 500 and all(c in cache for c in captions)


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
  config = tiny_config(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="gcd_jax.prepare --dataset=synthetic_scenes --config="):
    train.train_and_evaluate(config, str(tmp_path / "wd"))


