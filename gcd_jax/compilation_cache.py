"""A persistent XLA compilation cache for the command-line entry points.

A run's train step, sampler and evaluators compile in tens of seconds on a
laptop CPU; with this cache a second run of the same config (a resume, another
evaluation) loads the compiled programs from disk instead. It must be local
disk (XLA writes many small files). Where:

  JAX_COMPILATION_CACHE_DIR     jax's own variable, used as it is when set
  GCD_JAX_COMPILATION_CACHE     our default's override; "" or "off" disables it
  ~/.cache/gcd_jax/xla          the default

Called by `main`, `sample`, `evaluate` and `segnet` before anything compiles;
library code never calls it (notebooks and tests choose for themselves).
"""

from __future__ import annotations

import gc
import os
import pathlib

import jax

DEFAULT_DIR = pathlib.Path("~/.cache/gcd_jax/xla")
# Programs that compile faster than this are not worth a disk entry.
MIN_COMPILE_SECS = 1.0


# Tracing a U-Net and loading its compiled programs allocate millions of small
# Python objects; with the default thresholds (700, 10, 10) the cyclic garbage
# collector then takes ~17 % of the CPU of a short run (perf, a 4-step tiny run
# with its programs in the cache). A larger first-generation threshold keeps
# collection rare; the entry points set it (`tune_gc`), library code does not.
GC_THRESHOLD = (100_000, 20, 100)


def tune_gc() -> None:
  """Sets the garbage collector's thresholds for a command-line process (see GC_THRESHOLD)."""
  gc.set_threshold(*GC_THRESHOLD)


def enable() -> str | None:
  """Turns the persistent cache on (see the module docstring); returns its directory."""
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return os.environ["JAX_COMPILATION_CACHE_DIR"]  # jax reads it itself
  choice = os.environ.get("GCD_JAX_COMPILATION_CACHE")
  if choice is not None and choice.strip().lower() in ("", "off", "0", "false", "none"):
    return None
  if choice and "://" in choice:
    raise ValueError(f"GCD_JAX_COMPILATION_CACHE={choice}: the compilation cache must be on "
                     "local disk (XLA writes many small files); give a local directory")
  directory = pathlib.Path(choice).expanduser() if choice else DEFAULT_DIR.expanduser()
  try:
    directory.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None  # a read-only home: run without the cache
  jax.config.update("jax_compilation_cache_dir", str(directory))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  return str(directory)
