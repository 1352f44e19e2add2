"""Noise schedules as log signal-to-noise ratios lambda(t), t in [0, 1].

For the Gaussian side alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda), and
x_t = alpha x_0 + sigma eps. The categorical side reuses the same functions for
its keep-probability table (see `categorical.make_schedule`).

Schedules (docs/gcdp.md sections 1 and 2):
  cosine:    lambda(t) = -log(cos(theta)^-2 - 1),        theta = (t + s) / (1 + s) * pi / 2
  cosine_p:  lambda(t) = -log(cos(theta)^(-2p) - 1)      (p = 1 is `cosine`)
  linear:    lambda(t) = -log(expm1(1e-4 + 10 t^2))

All are strictly decreasing in t. The formulas are evaluated in forms that keep
float32 accurate at both ends: cos(theta)^-2 - 1 = tan(theta)^2, and
cos(theta)^(-2p) - 1 = expm1(-2p log cos(theta)) with log cos(theta) taken from
log1p(-sin^2) where cos is close to 1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

COSINE_S = 0.008  # offset s of the cosine schedules (Nichol & Dhariwal)

NAMES = ("cosine", "cosine_p", "linear")

ArrayLike = jax.typing.ArrayLike


def _xp(t):
  """numpy for host arrays (float64 schedule tables), jax.numpy otherwise."""
  return np if isinstance(t, np.ndarray) else jnp


def _theta(t, s):
  # Clamped below pi/2: the float nearest pi/2 lies above it (in float32 and
  # float64), where cos changes sign and lambda would turn back up.
  xp = _xp(t)
  dtype = t.dtype if hasattr(t, "dtype") else np.float32
  below_right_angle = np.nextafter(np.asarray(math.pi / 2, dtype), np.asarray(0, dtype))
  return xp.minimum((t + s) / (1.0 + s) * (math.pi / 2), below_right_angle)


def _log_cos(theta):
  """log|cos(theta)| for theta in [0, pi/2], accurate at both ends."""
  # Near 0, cos ~ 1 and log(cos) would lose every digit to rounding; near pi/2
  # sin ~ 1 and log1p(-sin^2) would. Pick the accurate form on each side; the
  # other branch is evaluated at a safe argument so that gradients stay finite.
  xp = _xp(theta)
  small = theta < (math.pi / 4)
  safe_small = xp.where(small, theta, 0.0)
  safe_large = xp.where(small, math.pi / 3, theta)
  near_zero = 0.5 * xp.log1p(-xp.square(xp.sin(safe_small)))
  near_right_angle = xp.log(xp.cos(safe_large))
  return xp.where(small, near_zero, near_right_angle)


def cosine(t: jax.Array | np.ndarray, s: float = COSINE_S) -> jax.Array | np.ndarray:
  """lambda(t) = -log(tan^2(theta)) = -2 log tan(theta)."""
  xp = _xp(t)
  return -2.0 * xp.log(xp.tan(_theta(t, s)))


def cosine_p(t: jax.Array | np.ndarray, p: float = 1.0,
             s: float = COSINE_S) -> jax.Array | np.ndarray:
  """lambda_p(t) = -log(cos(theta)^(-2p) - 1); abar = sigmoid(lambda_p) ~ cos^(2p)."""
  xp = _xp(t)
  return -xp.log(xp.expm1(-2.0 * p * _log_cos(_theta(t, s))))


def linear(t: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
  """lambda(t) = -log(expm1(1e-4 + 10 t^2)) (the linear beta schedule of DDPM)."""
  xp = _xp(t)
  return -xp.log(xp.expm1(1e-4 + 10.0 * xp.square(t)))


_FNS = {"cosine": cosine, "cosine_p": cosine_p, "linear": linear}


def log_snr(name: str, t: ArrayLike, **params: float) -> jax.Array | np.ndarray:
  """Log-SNR lambda(t) of the named schedule.

  Args:
    name: one of `NAMES`.
    t: float array of times in [0, 1], any shape. A numpy array is evaluated
      in numpy (float64 tables for `categorical.make_schedule`); anything else
      in jax.numpy (jit, vmap and grad safe).
    **params: schedule parameters: `s` for the cosine schedules, `p` for
      `cosine_p`.

  Returns:
    lambda(t), same shape as `t`, float (float32 unless `t` is float64).
  """
  if name not in _FNS:
    raise ValueError(f"unknown noise schedule {name!r}; expected one of {NAMES}")
  if isinstance(t, np.ndarray):
    t = t.astype(np.float64)
  else:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
      t = t.astype(jnp.float32)
  try:
    return _FNS[name](t, **params)
  except TypeError as e:
    raise ValueError(
        f"bad parameters {params} for noise schedule {name!r}: {e}") from None


def alpha_sigma(lam: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """(alpha, sigma) with alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
  return jnp.sqrt(jax.nn.sigmoid(lam)), jnp.sqrt(jax.nn.sigmoid(-lam))
