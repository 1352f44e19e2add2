"""One process of the tests' two-process training run (tests/test_multiprocess.py).

  python tests/multiprocess_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR DATA_DIR RECORD [SIGTERM_AT]

Joins a localhost coordinator with jax.distributed.initialize (CPU collectives:
gloo) with 4 CPU devices, and trains the tiny config on a 4 x 2 (data x fsdp)
mesh over the devices of every process, twice in a row: first until a
preemption notice stops it (with SIGTERM_AT, this process sends itself SIGTERM
after that step), then again, resuming from the workdir's checkpoint. RECORD
gets the example ids of every local batch read and the steps each phase ended at.
"""

import json
import os
import pathlib
import signal
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

import conftest  # pylint: disable=g-import-not-at-top,wrong-import-position  (CPU, offline)


def multiprocess_config(data_dir):
  """The config both the 2-process run and its 1-process reference train."""
  config = conftest.tiny_config(data_dir, num_steps=4, checkpoint_every=2, log_every=1)
  config.mesh.data, config.mesh.fsdp, config.mesh.fsdp_min_size = 4, 2, 64
  # Smaller than the tiny preset (one level, cross-attention only): what is
  # tested here does not depend on the network, and every process compiles the
  # sharded program itself (~1/3 less compile time and fewer collectives per step).
  config.model.update(dim=8, channel_mults=(1,), num_res_blocks=(1,), self_attention=(False,),
                      cross_attention=(True,), mid_attention=False, num_heads=1, head_dim=8,
                      norm_groups=2, text_proj_dim=16)
  return config


class Recording:
  """An input iterator that notes the example ids of every batch it gives."""

  def __init__(self, it, seen):
    self._it, self._seen = it, seen

  def __getattr__(self, name):
    return getattr(self._it, name)

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    self._seen.append([str(i) for i in batch["id"]])
    return batch


def record_batches(seen):
  """Makes every later make_train_iterator a Recording into `seen`."""
  from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  make = pipeline.make_train_iterator
  pipeline.make_train_iterator = lambda *a, **k: Recording(make(*a, **k), seen)


def main():
  process_id, num_processes, port, workdir, data_dir, record = sys.argv[1:7]
  sigterm_at = int(sys.argv[7]) if len(sys.argv) > 7 else None
  # (Before the first use of a device; tests/conftest.py asked for 8.)
  os.environ["XLA_FLAGS"] = " ".join(
      [f for f in os.environ["XLA_FLAGS"].split() if "device_count" not in f]
      + ["--xla_force_host_platform_device_count=4"])
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"localhost:{port}", int(num_processes), int(process_id),
                             initialization_timeout=120)
  assert jax.process_count() == int(num_processes) and len(jax.local_devices()) == 4

  from gcd_jax import train  # pylint: disable=g-import-not-at-top
  seen, out = [], {}
  record_batches(seen)

  def preempt(step):
    if step == sigterm_at:
      os.kill(os.getpid(), signal.SIGTERM)

  config = multiprocess_config(data_dir)
  out["stopped_at"] = int(train.train_and_evaluate(config, workdir, step_hooks=[preempt]).step)
  out["first_phase_batches"] = len(seen)
  first = []
  out["final_step"] = int(train.train_and_evaluate(
      config, workdir, step_hooks=[lambda step: first.append(step)]).step)
  out["resumed_at"] = first[0] - 1
  out["ids"] = seen
  pathlib.Path(record).write_text(json.dumps(out))
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
