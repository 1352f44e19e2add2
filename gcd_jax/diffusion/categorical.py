"""Categorical (multinomial) diffusion of the layout, in log space.

A layout is a field of K-class distributions, stored as log-probabilities
`log_y: [..., K]` (NHWC: `[B, H, W, K]`); a sampled layout is a log one-hot whose
zeros are floored at `LOG_ZERO`. Time is an integer step k = 0..T-1.

Forward process (Hoogeboom et al. 2021; docs/gcdp.md section 2), uniform noise:
  q(y_k | y_{k-1}) = Cat(a_k y_{k-1} + (1 - a_k) / K)
  q(y_k | y_0)     = Cat(abar_k y_0 + (1 - abar_k) / K),   abar_k = prod_{i<=k} a_i
  q(y_k | y_j)     = Cat(r y_j + (1 - r) / K),             r = abar_k / abar_j, j <= k
with a_0 = 1, so step 0 keeps y_0 unchanged. Posterior for j < k (Bayes):
  q(y_j | y_k, y_0) oc q(y_k | y_j) q(y_j | y_0)
                    = [r y_k + (1 - r) / K] * [abar_j y_0 + (1 - abar_j) / K]
(q(y_k | y_j) as a function of y_j is the same vector, the kernel being
symmetric). The model's reverse step replaces y_0 by softmax(logits).

Step indices `k`, `j` are integer scalars or `[B]` arrays (one per example).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax.diffusion import schedules

ArrayLike = jax.typing.ArrayLike

# Floor for log-probabilities: exp(LOG_ZERO) = 1e-30 is far below anything that
# matters, yet finite, so that 0 * log 0 style terms never produce NaN.
LOG_ZERO = math.log(1e-30)

NORMALIZATIONS = ("official", "bits")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Log-space tables of the categorical forward process, all `[T]` float32.

  Attributes:
    log_a: log a_k (log_a[0] = 0).
    log_1m_a: log(1 - a_k), floored at LOG_ZERO.
    log_abar: log abar_k = cumsum(log a) (log_abar[0] = 0).
    log_1m_abar: log(1 - abar_k), floored at LOG_ZERO.
    name, params: the log-SNR schedule the table was made from (static).
    num_classes: K (static).
  """

  log_a: Any
  log_1m_a: Any
  log_abar: Any
  log_1m_abar: Any
  name: str = "cosine_p"
  params: tuple = ()
  num_classes: int = 2

  @property
  def num_steps(self) -> int:
    return self.log_a.shape[0]


jax.tree_util.register_dataclass(
    Schedule,
    data_fields=["log_a", "log_1m_a", "log_abar", "log_1m_abar"],
    meta_fields=["name", "params", "num_classes"],
)


def _log1mexp(x, xp=jnp):
  """log(1 - exp(x)) for x <= 0, accurate everywhere, floored at LOG_ZERO."""
  # Maechler (2012): expm1 near 0, log1p far from it.
  near = x > -math.log(2.0)
  x_near = xp.where(near, x, -1.0)
  x_far = xp.where(near, -1.0, x)
  # At x = 0 the true value is -inf; clamp the argument so the log is finite.
  val_near = xp.log(xp.maximum(-xp.expm1(x_near), math.exp(LOG_ZERO)))
  val_far = xp.log1p(-xp.exp(x_far))
  return xp.maximum(xp.where(near, val_near, val_far), LOG_ZERO)


def make_schedule(name: str, num_steps: int, num_classes: int, **params: float) -> Schedule:
  """Categorical schedule with abar_k = sigmoid(lambda(k / T)) / sigmoid(lambda(0)).

  Args:
    name: a log-SNR schedule of `schedules.NAMES`; GCDP's default is
      `cosine_p` with p = 1 (the image's abar), p = 0.5 is Hoogeboom's cosine.
    num_steps: T.
    num_classes: K (>= 2).
    **params: parameters of the log-SNR schedule.

  The table is made in float64 on the host and stored as float32. As in the
  released code, log_abar = cumsum(log a) with a_0 = 1, i.e. abar is
  normalised so that abar_0 = 1 exactly.
  """
  if num_steps < 2:
    raise ValueError(f"num_steps must be >= 2, got {num_steps}")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  t = np.arange(num_steps, dtype=np.float64) / num_steps
  lam = np.asarray(schedules.log_snr(name, t, **params), np.float64)
  log_abar_raw = -np.logaddexp(0.0, -lam)  # log sigmoid(lambda)
  log_a = np.concatenate([[0.0], np.diff(log_abar_raw)])
  if np.any(log_a[1:] >= 0):
    raise ValueError(f"schedule {name!r} {params} is not strictly decreasing")
  log_abar = np.cumsum(log_a)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return Schedule(
      log_a=f32(log_a),
      log_1m_a=f32(_log1mexp(log_a, np)),
      log_abar=f32(log_abar),
      log_1m_abar=f32(_log1mexp(log_abar, np)),
      name=name,
      params=tuple(sorted(params.items())),
      num_classes=num_classes,
  )


def _take(table, k, ndim: int):
  """table[k] shaped to broadcast against an array of rank `ndim` (k: [] or [B])."""
  v = table[jnp.asarray(k, jnp.int32)]
  return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def _check_k(sched: Schedule, log_y):
  if log_y.shape[-1] != sched.num_classes:
    raise ValueError(
        f"layout has {log_y.shape[-1]} classes in its last axis but the schedule "
        f"was made for num_classes={sched.num_classes}")


def log_onehot(ids: ArrayLike, num_classes: int) -> jax.Array:
  """Class ids [...] -> log one-hot [..., K] (zeros floored at LOG_ZERO)."""
  return jnp.where(jax.nn.one_hot(ids, num_classes, dtype=bool), 0.0, LOG_ZERO)


def sample_log_onehot(key: jax.Array, log_probs: jax.Array) -> jax.Array:
  """Draws a class per position by Gumbel-max; returns it as a log one-hot."""
  g = jax.random.gumbel(key, log_probs.shape, log_probs.dtype)
  return log_onehot(jnp.argmax(log_probs + g, axis=-1), log_probs.shape[-1])


def q_probs(sched: Schedule, log_y0: jax.Array, k: ArrayLike) -> jax.Array:
  """log q(y_k | y_0) = log(abar_k y_0 + (1 - abar_k) / K): [..., K]."""
  _check_k(sched, log_y0)
  n = log_y0.ndim
  return jnp.logaddexp(
      _take(sched.log_abar, k, n) + log_y0,
      _take(sched.log_1m_abar, k, n) - math.log(sched.num_classes))


def q_sample(key: jax.Array, sched: Schedule, log_y0: jax.Array, k: ArrayLike) -> jax.Array:
  """A draw y_k ~ q(y_k | y_0), as a log one-hot [..., K]."""
  return sample_log_onehot(key, q_probs(sched, log_y0, k))


def _kernel(sched: Schedule, log_y, j, k):
  """log(r y + (1 - r) / K) with r = abar_k / abar_j (j <= k), over [..., K]."""
  n = log_y.ndim
  log_r = jnp.minimum(_take(sched.log_abar, k, n) - _take(sched.log_abar, j, n), 0.0)
  return jnp.logaddexp(log_r + log_y, _log1mexp(log_r) - math.log(sched.num_classes))


def transition(sched: Schedule, log_yj: jax.Array, j: ArrayLike, k: ArrayLike) -> jax.Array:
  """log q(y_k | y_j) for j <= k, as a distribution over y_k: [..., K]."""
  _check_k(sched, log_yj)
  return _kernel(sched, log_yj, j, k)


def renoise(key: jax.Array, sched: Schedule, log_yj: jax.Array, j: ArrayLike,
            k: ArrayLike) -> jax.Array:
  """Takes a sample at step j to one at step k > j: a draw from q(y_k | y_j)."""
  return sample_log_onehot(key, transition(sched, log_yj, j, k))


def posterior(sched: Schedule, log_y0: jax.Array, log_yk: jax.Array, k: ArrayLike,
              j: ArrayLike | None = None) -> jax.Array:
  """log q(y_j | y_k, y_0), j = k - 1 by default, any 0 <= j < k: [..., K].

  `log_y0` may be a distribution (the model's softmax(logits)): the result is
  then the model's reverse step p(y_j | y_k). At k = 0 it returns y_0.
  """
  _check_k(sched, log_y0)
  k = jnp.asarray(k, jnp.int32)
  j = k - 1 if j is None else jnp.asarray(j, jnp.int32)
  # j = -1 at k = 0; evaluate at 0 and let the final `where` return y_0 there.
  j_safe = jnp.maximum(j, 0)
  unnorm = _kernel(sched, log_yk, j_safe, k) + q_probs(sched, log_y0, j_safe)
  post = unnorm - jax.nn.logsumexp(unnorm, axis=-1, keepdims=True)
  is_zero = (k == 0).reshape(k.shape + (1,) * (log_y0.ndim - k.ndim))
  return jnp.where(is_zero, log_y0, post)


def kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """KL(p || q) over the last axis of log-probabilities: [..., K] -> [...]."""
  p = jnp.exp(log_p)
  # Where p underflows to 0 the term is 0; guard it so that a -inf in log_p
  # cannot turn 0 * inf into NaN in the value or the gradient.
  safe_log_p = jnp.where(p > 0, log_p, 0.0)
  return jnp.sum(jnp.where(p > 0, p * (safe_log_p - log_q), 0.0), axis=-1)


def prior_kl(sched: Schedule, log_y0: jax.Array) -> jax.Array:
  """KL(q(y_{T-1} | y_0) || uniform) per position: [..., K] -> [...]."""
  log_qT = q_probs(sched, log_y0, sched.num_steps - 1)
  return kl(log_qT, jnp.full_like(log_qT, -math.log(sched.num_classes)))


def vb_terms(sched: Schedule, log_y0: jax.Array, log_yk: jax.Array, logits: jax.Array,
             k: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Per-position variational-bound terms in nats: (L_k, prior), each [B, H, W].

  L_k = KL(q(y_{k-1} | y_k, y_0) || p(y_{k-1} | y_k)) for k > 0 and the decoder
  NLL -sum y_0 log y0_hat at k = 0, where y0_hat = softmax(logits).
  """
  log_y0_hat = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  true_post = posterior(sched, log_y0, log_yk, k)
  model_post = posterior(sched, log_y0_hat, log_yk, k)
  kl_k = kl(true_post, model_post)
  nll = -jnp.sum(jnp.exp(log_y0) * log_y0_hat, axis=-1)
  k = jnp.asarray(k, jnp.int32)
  is_zero = (k == 0).reshape(k.shape + (1,) * (kl_k.ndim - k.ndim))
  return jnp.where(is_zero, nll, kl_k), prior_kl(sched, log_y0)


def vb_loss(sched: Schedule, log_y0: jax.Array, log_yk: jax.Array, logits: jax.Array,
            k: ArrayLike, normalize: str = "official",
            pixel_mask: ArrayLike | None = None) -> jax.Array:
  """The layout loss: a one-sample estimate of the negative ELBO, per example [B].

  T * L_k (uniform step weight 1/T) plus the prior term, summed over pixels and
  divided by ln2 * K * H * W (`"official"`, as the released code, which divides
  by the numel of the [K, H, W] log-probability tensor) or by ln2 * H * W
  (`"bits"`: bits per pixel).

  Args:
    sched: the categorical schedule.
    log_y0: [B, H, W, K] log one-hot of the data layout.
    log_yk: [B, H, W, K] log one-hot of the noisy layout at step k.
    logits: [B, H, W, K] the network's layout logits for y_0.
    k: [B] int steps.
    normalize: one of NORMALIZATIONS.
    pixel_mask: optional [B, H, W] bool, False at unlabelled (ignore-id)
      pixels: they are left out of the sum, and H * W above becomes the
      number of labelled pixels of each example (so the loss is a mean over
      labelled pixels; with no pixel masked it is the unmasked loss).
  """
  if normalize not in NORMALIZATIONS:
    raise ValueError(f"unknown normalize={normalize!r}; expected one of {NORMALIZATIONS}")
  l_k, prior = vb_terms(sched, log_y0, log_yk, logits, k)
  axes = tuple(range(1, l_k.ndim))
  per_pixel = sched.num_steps * l_k + prior
  if pixel_mask is None:
    num_pixels = math.prod(log_y0.shape[1:-1])
  else:
    pixel_mask = jnp.asarray(pixel_mask, bool)
    per_pixel = jnp.where(pixel_mask, per_pixel, 0.0)
    num_pixels = jnp.maximum(jnp.sum(pixel_mask, axis=axes), 1).astype(jnp.float32)
  total = jnp.sum(per_pixel, axis=axes)
  denom = math.log(2.0) * num_pixels
  if normalize == "official":
    denom = denom * sched.num_classes
  return total / denom
