"""Two-process training on one machine (jax.distributed, localhost coordinator, gloo).

Two processes of tests/multiprocess_worker.py, 4 CPU devices each, train the
tiny config (with a one-level network) on a 4 x 2 (data x fsdp) mesh; process 1
receives SIGTERM after step 2; both then resume from the workdir. Checked
against a 1-process run on one device (this process, while they run), so that
one test covers both invariances, to the number of devices and to the number of
processes:
  - each process reads only its rows of the global batches, which are the
    1-process run's batches;
  - the losses at every step, and the final parameters, equal the 1-process
    run's (to float32 round-off: 8 devices sum gradients in another order);
  - parameters really are split over fsdp (and processes);
  - both processes save the same step after the one SIGTERM and stop, into one
    checkpoint that both wrote, and both resume from it.
"""

import json
import os
import socket
import subprocess
import sys

import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from gcd_jax import checkpointing
from gcd_jax import sharding
from gcd_jax import text_conditioning
from gcd_jax import train
from gcd_jax import train_lib
from gcd_jax.data import pipeline

from conftest import REPO  # pylint: disable=g-bad-import-order
import multiprocess_worker as worker  # pylint: disable=g-bad-import-order


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _losses(workdir):
  """{step: loss} from the TensorBoard events of a workdir."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={"tensors": 0})
  events.Reload()
  return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors("loss")}


def test_two_processes_train_save_preempt_and_resume_like_one(scenes_data_dir, tmp_path, monkeypatch):
  config = worker.multiprocess_config(scenes_data_dir)
  one_device = worker.multiprocess_config(scenes_data_dir)
  one_device.mesh.data = one_device.mesh.fsdp = 1
  workdir, port = tmp_path / "two", _free_port()
  env = dict(os.environ, PYTHONPATH=str(REPO))
  procs = [subprocess.Popen(
      [sys.executable, str(REPO / "tests" / "multiprocess_worker.py"), str(p), "2", str(port),
       str(workdir), scenes_data_dir, str(tmp_path / f"record_{p}.json")] + (["2"] if p == 1 else []),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for p in range(2)]
  # The reference, while the two processes run: one process, one device.
  ref_ids = []
  make = pipeline.make_train_iterator
  monkeypatch.setattr(pipeline, "make_train_iterator",
                      lambda *a, **k: worker.Recording(make(*a, **k), ref_ids))
  try:
    reference = train.train_and_evaluate(one_device, str(tmp_path / "one"))
  except BaseException:
    for p in procs:
      p.kill()
    raise
  finally:
    monkeypatch.setattr(pipeline, "make_train_iterator", make)
  logs = [p.communicate(timeout=400)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
  records = [json.loads((tmp_path / f"record_{p}.json").read_text()) for p in range(2)]

  # One SIGTERM (to process 1): both processes agree on the step, save it and stop...
  assert records[0]["stopped_at"] == records[1]["stopped_at"], records
  stopped = records[0]["stopped_at"]
  assert 2 <= stopped < 4
  assert all(f"every host saves step {stopped}" in log for log in logs)
  # ...into one checkpoint that both wrote; both resume from it and finish.
  state_dir = workdir / "checkpoints" / str(stopped) / "state"
  assert (state_dir / "ocdbt.process_0").is_dir() and (state_dir / "ocdbt.process_1").is_dir()
  assert [r["resumed_at"] for r in records] == [stopped, stopped]
  assert [r["final_step"] for r in records] == [4, 4]

  # Each process read its own half of every global batch, and the global
  # batches are those of the 1-process run.
  assert len(ref_ids) == 4 and all(len(r["ids"]) == 4 for r in records)
  for step in range(4):
    a, b = records[0]["ids"][step], records[1]["ids"][step]
    assert len(a) == len(b) == config.data.batch_size // 2
    assert not set(a) & set(b)
    assert a + b == ref_ids[step]

  # The same losses at every step, and the same final parameters.
  ref_losses, two_losses = _losses(tmp_path / "one"), _losses(workdir)
  assert sorted(ref_losses) == sorted(two_losses) == [1, 2, 3, 4], (ref_losses, two_losses)
  np.testing.assert_allclose([two_losses[s] for s in range(1, 5)],
                             [ref_losses[s] for s in range(1, 5)], rtol=2e-5)
  assert len(set(two_losses.values())) == 4
  text = text_conditioning.make_text(config, workdir)
  model = train_lib.make_model(config, text.vocab_size)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r), jax.random.PRNGKey(0))
  mesh = sharding.make_mesh(4, 2)
  shardings = sharding.state_shardings(mesh, abstract, config.mesh.fsdp_min_size)
  assert sum(s.spec != P() for s in jax.tree.leaves(shardings.params)) > 10
  # (The checkpoint written by two processes restores onto this process's 8 devices.)
  state, _, step = checkpointing.restore_state(
      workdir, checkpointing.abstract_with_shardings(abstract, shardings))
  assert step == 4
  for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params)):
    # (Adam's normalised steps turn gradient round-off into differences of up
    # to a fraction of the learning rate, 1e-3, where a gradient is near zero.)
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-3, atol=2e-4)
