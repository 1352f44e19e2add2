"""The training loop: SIGTERM and exact resume, kill -9, damaged checkpoints, the NaN guard, unprepared data.

- SIGTERM saves a checkpoint, and a resumed run ends bitwise where a straight one does.
- The short version of benchmarks/kill_resume.py (which kills configs/smoke.py
  10 times, at random moments too): `python -m gcd_jax.main` on the tests' tiny
  config is SIGKILLed twice while orbax writes a checkpoint, restarted after
  each kill, and must finish with the train state and data position of the
  straight run, leaving no temporary files behind.
- A checkpoint with a truncated or missing file is never loaded: training,
  `init_from` and inference fall back to the newest complete one with a warning
  naming the bad step (benchmarks/checkpoint_damage.py damages every file of a
  checkpoint in turn; here, one file of each kind).
"""

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from gcd_jax import checkpointing
from gcd_jax import run as run_lib
from gcd_jax import text_conditioning
from gcd_jax import train
from gcd_jax import train_lib
from gcd_jax.data import pipeline
from gcd_jax.models.text import cache as text_cache

from conftest import REPO, tiny_config  # pylint: disable=g-bad-import-order

_spec = importlib.util.spec_from_file_location("kill_resume", REPO / "benchmarks" / "kill_resume.py")
kill_resume = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_resume)


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def straight(scenes_data_dir, tmp_path_factory):
  """A straight 4-step tiny run (checkpoints at steps 1, 2 and 4), profiled for one step."""
  profiled = tiny_config(scenes_data_dir)
  profiled.train.profile_steps, profiled.train.profile_first_step = 1, 2
  workdir = tmp_path_factory.mktemp("straight")
  return workdir, train.train_and_evaluate(profiled, str(workdir))


def test_sigterm_leaves_a_checkpoint_and_resume_is_exact(scenes_data_dir, straight, tmp_path):
  config = tiny_config(scenes_data_dir)
  # (clu's Profile hook, one step, changes no number.)
  straight_dir, straight = straight
  assert int(straight.step) == 4
  assert list((straight_dir / "plugins" / "profile").rglob("*.xplane.pb"))

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
    train.train_and_evaluate(other, str(straight_dir))

  # ...and init_from starts a new run from the given weights (same schedules).
  fresh = tiny_config(scenes_data_dir, num_steps=4)
  fresh.init_from = str(straight_dir)
  state, meta, step = checkpointing.restore_state(fresh.init_from, jax.eval_shape(lambda: straight))
  assert step == 4 and meta["schedules"]["image"]["name"] == "cosine"
  assert _leaves_equal(state.params, straight.params)


_CONFIG = '''
import sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config

def get_config():
  return tiny_config({data_dir!r})
'''


def _equal(a, b):
  return _leaves_equal(a, b)


def test_two_kills_inside_checkpoint_writes_resume_bitwise(scenes_data_dir, straight, tmp_path):
  config_file = tmp_path / "tiny_config.py"
  config_file.write_text(_CONFIG.format(tests=str(REPO / "tests"), data_dir=scenes_data_dir))
  summary = kill_resume.run(
      tmp_path, kills=2, steps=4, checkpoint_every=2, seed=0, modes=("save",), warm=False,
      config=str(config_file), timeout=300, verbose=False,
      straight_fn=lambda workdir: shutil.copytree(straight[0], workdir))
  events = summary["events"]
  assert summary["kills_delivered"] == 2, events
  assert summary["kills_during_save"] == 2, events
  assert all(e["returncode"] == -9 for e in events[:2]), events
  assert summary["finished"] and summary["final_step"] == [4, 4], summary
  assert summary["state_bitwise_equal"] and summary["data_state_equal"], summary
  assert summary["leftover_temporary_files"] == [], summary


def _damage(path, how):
  if how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(path.stat().st_size // 2)
  else:
    path.unlink()


def _abstract(config, workdir):
  model = train_lib.make_model(config, text_conditioning.make_text(config, workdir).vocab_size)
  return jax.eval_shape(lambda r: train_lib.init_state(config, model, r), jax.random.PRNGKey(0))


def test_a_truncated_checkpoint_is_set_aside_and_training_resumes_from_the_previous_one(
    scenes_data_dir, straight, tmp_path, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  step4 = workdir / "checkpoints" / "4"
  biggest = max((p for p in (step4 / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  _damage(biggest, "truncate")
  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(tiny_config(scenes_data_dir), str(workdir))
  assert any("checkpoints/4 cannot be read" in r.getMessage() for r in caplog.records), caplog.text
  assert any("Moved the unreadable checkpoint" in r.getMessage() for r in caplog.records)
  assert len(list((workdir / "checkpoints").glob("4.corrupt-*"))) == 1
  # Steps 3 and 4 ran again from step 2's checkpoint and ended where the straight run did.
  assert int(resumed.step) == 4 and _equal(resumed, straight[1])
  assert checkpointing.Checkpointer(workdir / "checkpoints").latest_step() == 4


@pytest.mark.parametrize("damaged,how", [("meta/metadata", "delete"), ("state/manifest.ocdbt", "truncate"),
                                         ("data/metadata", "truncate")])
def test_inference_and_init_from_skip_a_damaged_checkpoint(scenes_data_dir, straight, tmp_path,
                                                           caplog, damaged, how):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  _damage(workdir / "checkpoints" / "4" / damaged, how)
  config = tiny_config(scenes_data_dir)
  with caplog.at_level(logging.WARNING):
    if damaged == "data/metadata":  # (only training reads the data position)
      got = checkpointing.Checkpointer(workdir / "checkpoints").restore_latest(_abstract(config, workdir))
      assert got[0] == 2
    else:
      state, _, step = checkpointing.restore_state(workdir, _abstract(config, workdir))
      assert step == 2 and int(state.step) == 2
      loaded = run_lib.load(workdir)
      assert loaded.step == 2
  assert "checkpoints/4 cannot be read" in caplog.text
  if damaged != "data/metadata":  # read-only paths rename nothing
    assert (workdir / "checkpoints" / "4").is_dir()
  # An explicitly requested damaged step is an error, not a silent fallback.
  if damaged == "meta/metadata":
    with pytest.raises(FileNotFoundError, match="metadata"):
      run_lib.load(workdir, step=4)


def test_when_every_checkpoint_is_damaged_the_error_is_raised_and_nothing_is_moved(
    scenes_data_dir, straight, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  steps = checkpointing.kept_steps(workdir)
  assert steps == [4, 2, 1]
  for step in steps:
    _damage(workdir / "checkpoints" / str(step) / "state" / "manifest.ocdbt", "truncate")
  with pytest.raises(ValueError, match="manifest"):
    train.train_and_evaluate(tiny_config(scenes_data_dir), str(workdir))
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["1", "2", "4"]


_DISK_FULL = '''
import os, resource, signal, sys, time
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from gcd_jax import checkpointing, train

workdir = {workdir!r}
config = tiny_config({data_dir!r}, num_steps=4, checkpoint_every=1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write fails (EFBIG), as on a full disk

def fill_the_disk(step):
  print("STEP", step, flush=True)
  if step == 3:  # once step 2's checkpoint is complete, no file may grow past 64 KB
    deadline = time.time() + 60
    while not os.path.isdir(os.path.join(workdir, "checkpoints", "2")) and time.time() < deadline:
      time.sleep(0.05)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, resource.RLIM_INFINITY))

try:
  train.train_and_evaluate(config, workdir, step_hooks=[fill_the_disk])
except checkpointing.CheckpointWriteError as e:
  print("RAISED", e, flush=True)
  sys.exit(3)
'''


def test_a_full_disk_keeps_training_names_the_path_and_keeps_the_last_checkpoint(
    scenes_data_dir, straight, tmp_path):
  workdir = tmp_path / "wd"
  script = tmp_path / "disk_full.py"
  script.write_text(_DISK_FULL.format(tests=str(REPO / "tests"), data_dir=scenes_data_dir,
                                      workdir=str(workdir)))
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        timeout=600, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 3, proc.stdout + proc.stderr[-3000:]
  # Training went on to the last step after the disk filled...
  assert "STEP 3" in proc.stdout and "STEP 4" in proc.stdout
  # ...each refused save was an error naming the path, and the end says what to do.
  ckpt_dir = str(workdir / "checkpoints")
  assert f"Writing a checkpoint under {ckpt_dir} failed" in proc.stderr, proc.stderr[-3000:]
  assert "File too large" in proc.stderr
  raised = proc.stdout.split("RAISED", 1)[1]
  assert ckpt_dir in raised and "step 2) is intact" in raised, raised
  # The last good checkpoint is intact, and the run resumes from it once there is room:
  # to the same final state as a run that never stopped.
  assert checkpointing.kept_steps(workdir) == [2, 1]
  resumed = train.train_and_evaluate(tiny_config(scenes_data_dir), str(workdir))
  assert int(resumed.step) == 4 and _leaves_equal(resumed.params, straight[1].params)
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]


def test_nan_guard_stops_the_run_before_any_checkpoint(scenes_data_dir, tmp_path):
  config = tiny_config(scenes_data_dir)
  config.optimizer.warmup_steps = 0
  config.optimizer.learning_rate = float("inf")  # an injected blow-up in the first update
  config.text.embeddings = "store"  # built before the first step
  config.text.store_dir = str(tmp_path / "stores")
  with pytest.raises(train.NonFiniteLossError, match=r"step 1: non-finite update"):
    train.train_and_evaluate(config, str(tmp_path / "wd"))
  assert checkpointing.Checkpointer(tmp_path / "wd" / "checkpoints").latest_step() is None
  # The store holds every distinct training caption (one step alone meets a batch of them).
  [directory] = [p for p in (tmp_path / "stores").glob("*/*") if p.is_dir()]
  assert directory.name.startswith("synthetic_scenes_32_mini-train-float16-")
  store = text_cache.CaptionStore(directory)
  captions = set(pipeline.split_captions("synthetic_scenes/32_mini", "train", scenes_data_dir))
  assert len(captions) > 500 and len(store) == len(captions) and all(c in store for c in captions)


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
  config = tiny_config(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="gcd_jax.prepare --dataset=synthetic_scenes --config="):
    train.train_and_evaluate(config, str(tmp_path / "wd"))


