"""XLA:CPU settings that measurably speed up our models, applied at import.

jaxlib 0.10 hands convolutions, dots, elementwise ops and reductions on the CPU
to YNNPACK fusions by default. For the U-Net's 3x3 convolutions that is the slow
choice: measured on a 2-core AVX-512 machine (benchmarks/train_step.py, the
`reference` preset, one window), the train step ran

  XLA_FLAGS unset (jaxlib's default)                     19.2 img/s at 32x32 batch 32,  5.0 at 64x64 batch 8
  --xla_cpu_experimental_ynn_fusion_type=DOT,REDUCE      31.2 img/s at 32x32 batch 32,  7.6 at 64x64 batch 8

With YNNPACK kept for dots and reductions only, convolutions go to XLA's own
(Eigen) kernels: a 64->64 3x3 convolution's weight gradient at 32x32 batch 32
runs at ~150 GFLOP/s instead of ~37, its forward at ~240 instead of ~135. Keeping
YNNPACK's reductions matters (GroupNorm); its elementwise fusions cost 10%.
tests/test_xla_defaults.py checks that the loss and gradients agree with
jaxlib's default to float32 rounding.

XLA reads XLA_FLAGS once, when jax creates its CPU client, so this runs when
`gcd_jax` is imported: import gcd_jax before your first jax computation.

  GCD_JAX_XLA_DEFAULTS=0     leaves XLA_FLAGS as it is
  a flag already in XLA_FLAGS is never overridden

The flag exists in jaxlib 0.10 (our floor); other jaxlib versions are left at
their defaults, since XLA aborts on a flag it does not know.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping

_YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
_YNN_VALUE = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"
# jaxlib (major, minor) versions in which the flags above were measured to exist and help.
_KNOWN_JAXLIB = ((0, 10),)


def _jaxlib_version() -> tuple[int, int] | None:
  try:
    parts = importlib.metadata.version("jaxlib").split(".")
    return int(parts[0]), int(parts[1])
  except (importlib.metadata.PackageNotFoundError, ValueError, IndexError):
    return None


def flags_to_add(environ: Mapping[str, str] | None = None,
                 jaxlib_version: tuple[int, int] | None = None) -> list[str]:
  """The XLA flags `apply` would append to XLA_FLAGS (pure: for tests and --help)."""
  environ = os.environ if environ is None else environ
  if environ.get("GCD_JAX_XLA_DEFAULTS", "1").strip().lower() in ("0", "off", "false", "no"):
    return []
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if version not in _KNOWN_JAXLIB:
    return []
  current = environ.get("XLA_FLAGS", "")
  if _YNN_FLAG.lstrip("-") in current:
    return []
  return [f"{_YNN_FLAG}={_YNN_VALUE}"]


def apply() -> list[str]:
  """Appends our defaults to os.environ['XLA_FLAGS']; returns what it added."""
  added = flags_to_add()
  if added:
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", "").strip(), *added]).strip()
  return added
