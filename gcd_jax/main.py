"""Entry point: python -m gcd_jax.main --config=configs/shapes.py[:variant] --workdir=<dir>

  --config.a.b=value      overrides any config key (unknown keys and wrong types fail)

Trains, or resumes from the latest checkpoint in --workdir.

Sampling and evaluation have their own entry points (gcd_jax.sample, gcd_jax.evaluate).

Set JAX_COORDINATOR_ADDRESS / --multihost on multi-host TPU or GPU slices:
jax.distributed.initialize() is then called before anything touches a device.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from gcd_jax import compilation_cache
from gcd_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_MULTIHOST = flags.DEFINE_bool("multihost", False,
                               "Call jax.distributed.initialize() (multi-host runs).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _MULTIHOST.value:
    jax.distributed.initialize()
  compilation_cache.tune_gc()
  cache = compilation_cache.enable()
  logging.info("Persistent compilation cache: %s", cache or "off")
  logging.info("JAX process %d / %d, local devices %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
