"""`python -m gcd_jax.main` end to end in a subprocess: config errors, checkpoints, samples, TensorBoard."""

import os
import subprocess
import sys

from gcd_jax import checkpointing

from conftest import REPO  # pylint: disable=g-bad-import-order


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
  # One steps_per_sec series (clu's ReportProgress), not two.
  rate = events.Tensors("steps_per_sec") if "steps_per_sec" in events.Tags()["tensors"] else events.Scalars("steps_per_sec")
  assert sorted(e.step for e in rate) == [2, 4]


