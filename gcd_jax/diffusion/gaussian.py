"""Gaussian diffusion of the image, in the variational-diffusion (VDM) form.

Everything is parameterised by log-SNRs lambda: alpha^2 = sigmoid(lambda),
sigma^2 = sigmoid(-lambda), x_t = alpha_t x_0 + sigma_t eps. Times only enter
through lambda, so these functions serve integer-step and continuous-time code
alike. Per-example log-SNRs `[B]` broadcast against images `[B, H, W, C]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gcd_jax.diffusion import schedules

ArrayLike = jax.typing.ArrayLike

PREDICTIONS = ("eps", "x0", "v")


def _bcast(v, x):
  """Right-pads the shape of `v` with 1s so it broadcasts against `x`."""
  v = jnp.asarray(v)
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _alpha_sigma(log_snr, x):
  alpha, sigma = schedules.alpha_sigma(_bcast(log_snr, x))
  return alpha, sigma


def q_sample(x0: jax.Array, log_snr: ArrayLike, noise: jax.Array) -> jax.Array:
  """x_t = alpha x0 + sigma noise.

  Args:
    x0: [B, ...] clean data.
    log_snr: [B] or scalar lambda_t.
    noise: same shape as x0, standard normal.
  """
  alpha, sigma = _alpha_sigma(log_snr, x0)
  return alpha * x0 + sigma * noise


def posterior(x0: jax.Array, x_t: jax.Array, log_snr_t: ArrayLike,
              log_snr_s: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """q(x_s | x_t, x0) for s < t (so lambda_s > lambda_t): returns (mean, variance).

  With c = -expm1(lambda_t - lambda_s) = 1 - SNR_t / SNR_s:
    mean = alpha_s (x_t (1 - c) / alpha_t + c x0),  variance = sigma_s^2 c.
  The variance is returned broadcastable to x_t ([B, 1, ..., 1]).
  """
  alpha_t, _ = _alpha_sigma(log_snr_t, x_t)
  alpha_s, sigma_s = _alpha_sigma(log_snr_s, x_t)
  c = -jnp.expm1(_bcast(log_snr_t, x_t) - _bcast(log_snr_s, x_t))
  mean = alpha_s * (x_t * (1.0 - c) / alpha_t + c * x0)
  variance = jnp.square(sigma_s) * c
  return mean, variance


def renoise(x_s: jax.Array, log_snr_s: ArrayLike, log_snr_t: ArrayLike,
            noise: jax.Array) -> jax.Array:
  """Takes a sample at s to a sample at t > s: a draw from q(x_t | x_s).

  x_t = (alpha_t / alpha_s) x_s + std * noise, with
  std^2 = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2 = sigma_t^2 (1 - SNR_t / SNR_s).
  (The released RePaint code uses std = sigma_t - sigma_s alpha_t / alpha_s,
  which under-noises by a factor of 4-8; docs/gcdp.md section 4, item 2.)
  """
  alpha_s, _ = _alpha_sigma(log_snr_s, x_s)
  alpha_t, sigma_t = _alpha_sigma(log_snr_t, x_s)
  c = -jnp.expm1(_bcast(log_snr_t, x_s) - _bcast(log_snr_s, x_s))
  std = sigma_t * jnp.sqrt(c)
  return (alpha_t / alpha_s) * x_s + std * noise


def ddim_step(x_t: jax.Array, x0_hat: jax.Array, log_snr_t: ArrayLike, log_snr_s: ArrayLike,
              eta: float, noise: jax.Array) -> jax.Array:
  """DDIM (Song et al. 2021) from t to s < t, in the VDM form.

  Keeps the noise direction implied by (x_t, x0_hat) and adds eta-scaled fresh
  noise: eta = 0 is deterministic, eta = 1 has the ancestral step's variance
  sigma_s^2 (1 - SNR_t / SNR_s).
  """
  eps = eps_from_x0(x_t, log_snr_t, x0_hat)
  alpha_s, sigma_s = _alpha_sigma(log_snr_s, x_t)
  _, var = posterior(x0_hat, x_t, log_snr_t, log_snr_s)
  noise_var = jnp.square(eta) * var
  direction = jnp.sqrt(jnp.maximum(jnp.square(sigma_s) - noise_var, 0.0))
  return alpha_s * x0_hat + direction * eps + jnp.sqrt(noise_var) * noise


def dpm_solver_2m_step(x_t: jax.Array, x0_hat: jax.Array, x0_prev: jax.Array,
                       log_snr_t: ArrayLike, log_snr_s: ArrayLike, h_ratio: ArrayLike,
                       eta: float = 0.0, noise: jax.Array | None = None) -> jax.Array:
  """DPM-Solver++(2M) (Lu et al. 2022) from t to s < t with data predictions.

  In half-log-SNR l = lambda / 2, with h = l_s - l_t:

    x_s = (sigma_s / sigma_t) e^(-eta h) x_t + alpha_s (1 - e^(-(1 + eta) h)) D
          + sigma_s sqrt(1 - e^(-2 eta h)) z,
    D = (1 + 1 / (2 r)) x0_hat - 1 / (2 r) x0_prev,   r = h_prev / h.

  eta = 0 is the ODE solver: the exact solution of the probability-flow ODE when
  the data prediction is linear in l across the two steps. eta = 1 is its SDE
  form (SDE-DPM-Solver++(2M), the "midpoint" variant of k-diffusion): with
  D = x0_hat it is exactly the ancestral step, a draw from q(x_s | x_t, x0_hat).
  `h_ratio` = 1 / (2 r) per example ([B]); 0 gives the first-order step (DDIM
  with eta = 0, or the ancestral step), used at the first step. `noise` (z) is
  needed when eta > 0.
  """
  alpha_s, sigma_s = _alpha_sigma(log_snr_s, x_t)
  _, sigma_t = _alpha_sigma(log_snr_t, x_t)
  h = (jnp.asarray(log_snr_s) - jnp.asarray(log_snr_t)) / 2
  h = h.reshape(h.shape + (1,) * (x_t.ndim - h.ndim))
  c = jnp.asarray(h_ratio, x_t.dtype)
  c = c.reshape(c.shape + (1,) * (x_t.ndim - c.ndim))
  d = (1 + c) * x0_hat - c * x0_prev
  eta = float(eta)
  if eta == 0.0:
    return (sigma_s / sigma_t) * x_t - alpha_s * jnp.expm1(-h) * d
  if noise is None:
    raise ValueError("dpm_solver_2m_step: eta > 0 needs noise")
  out = ((sigma_s / sigma_t) * jnp.exp(-eta * h) * x_t
         - alpha_s * jnp.expm1(-(1 + eta) * h) * d)
  return out + sigma_s * jnp.sqrt(-jnp.expm1(-2 * eta * h)) * noise


# Conversions between the three parameterisations of the network's output.
# v = alpha eps - sigma x0 (Salimans & Ho), so that x0 = alpha x_t - sigma v.


def x0_from_eps(x_t: jax.Array, log_snr: ArrayLike, eps: jax.Array) -> jax.Array:
  alpha, sigma = _alpha_sigma(log_snr, x_t)
  return (x_t - sigma * eps) / alpha


def eps_from_x0(x_t: jax.Array, log_snr: ArrayLike, x0: jax.Array) -> jax.Array:
  alpha, sigma = _alpha_sigma(log_snr, x_t)
  return (x_t - alpha * x0) / sigma


def v_from_x0_eps(x0: jax.Array, eps: jax.Array, log_snr: ArrayLike) -> jax.Array:
  alpha, sigma = _alpha_sigma(log_snr, x0)
  return alpha * eps - sigma * x0


def x0_from_v(x_t: jax.Array, log_snr: ArrayLike, v: jax.Array) -> jax.Array:
  alpha, sigma = _alpha_sigma(log_snr, x_t)
  return alpha * x_t - sigma * v


def eps_from_v(x_t: jax.Array, log_snr: ArrayLike, v: jax.Array) -> jax.Array:
  alpha, sigma = _alpha_sigma(log_snr, x_t)
  return sigma * x_t + alpha * v


def to_x0_eps(prediction: jax.Array, x_t: jax.Array, log_snr: ArrayLike,
              kind: str) -> tuple[jax.Array, jax.Array]:
  """(x0_hat, eps_hat) from a network output of the given kind ('eps', 'x0', 'v')."""
  if kind == "eps":
    return x0_from_eps(x_t, log_snr, prediction), prediction
  if kind == "x0":
    return prediction, eps_from_x0(x_t, log_snr, prediction)
  if kind == "v":
    return x0_from_v(x_t, log_snr, prediction), eps_from_v(x_t, log_snr, prediction)
  raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")


def target(x0: jax.Array, eps: jax.Array, log_snr: ArrayLike, kind: str) -> jax.Array:
  """The regression target for a network that predicts `kind`."""
  if kind == "eps":
    return eps
  if kind == "x0":
    return x0
  if kind == "v":
    return v_from_x0_eps(x0, eps, log_snr)
  raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")


def p2_weight(log_snr: ArrayLike, gamma: float = 0.5, offset: float = 1.0) -> jax.Array:
  """Perception-prioritised weight (offset + SNR)^-gamma (Choi et al. 2022; their k); gamma=0 is 1.

  Computed as exp(-gamma * log(offset + e^lambda)) so that large |lambda| neither
  overflows nor underflows.
  """
  log_snr = jnp.asarray(log_snr)
  return jnp.exp(-gamma * jnp.logaddexp(jnp.log(offset), log_snr))


def dynamic_threshold(x0: jax.Array, percentile: float = 0.95) -> jax.Array:
  """Imagen's dynamic thresholding of an x0 estimate [B, ...].

  s = max(1, quantile(|x0|, percentile)) per example; x0 -> clip(x0, -s, s) / s.
  """
  flat = jnp.abs(x0.reshape(x0.shape[0], -1))
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=-1), 1.0)
  s = _bcast(s, x0)
  return jnp.clip(x0, -s, s) / s


def mean_flat(x: jax.Array) -> jax.Array:
  """Mean over all axes but the first: [B, ...] -> [B]."""
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1: ArrayLike, var1: ArrayLike, mean2: ArrayLike,
              var2: ArrayLike) -> jax.Array:
  """Elementwise KL(N(mean1, var1) || N(mean2, var2))."""
  return 0.5 * (jnp.log(var2) - jnp.log(var1) + (var1 + jnp.square(mean1 - mean2)) / var2 - 1.0)


__all__ = [
    "PREDICTIONS", "q_sample", "posterior", "renoise", "ddim_step", "x0_from_eps", "eps_from_x0",
    "v_from_x0_eps", "x0_from_v", "eps_from_v", "to_x0_eps", "target", "p2_weight",
    "dynamic_threshold", "mean_flat", "normal_kl",
]
