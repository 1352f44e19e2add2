"""Categorical diffusion against brute-force enumeration with explicit transition
matrices (float64 numpy), Monte Carlo, and closed forms."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import rel_entr

from gcd_jax.diffusion import categorical

T_SMALL = 20
S = 0.008


def _abar_closed_form(num_steps, p=1.0):
  """abar_k = cos(theta_k)^(2p) / cos(theta_0)^(2p), independently of the code."""
  theta = (np.arange(num_steps) / num_steps + S) / (1 + S) * np.pi / 2
  c = np.cos(theta) ** (2 * p)
  return c / c[0]


def _step_matrices(num_steps, k_classes, p=1.0):
  """M[k][a, b] = q(y_k = b | y_{k-1} = a); M[0] = I."""
  abar = _abar_closed_form(num_steps, p)
  a = np.concatenate([[1.0], abar[1:] / abar[:-1]])
  eye, ones = np.eye(k_classes), np.ones((k_classes, k_classes)) / k_classes
  return [a_k * eye + (1 - a_k) * ones for a_k in a]


def _chain(mats, j, k):
  """q(y_k | y_j) as a matrix: the product of step matrices j+1..k."""
  out = np.eye(mats[0].shape[0])
  for i in range(j + 1, k + 1):
    out = out @ mats[i]
  return out


def _brute_posterior(mats, y0_probs, yk, j, k):
  """p(y_j = a | y_k, y0 ~ y0_probs) by enumerating y0 and y_j."""
  q0j, qjk = _chain(mats, 0, j), _chain(mats, j, k)
  kk = len(y0_probs)
  joint = np.array([sum(y0_probs[c] * q0j[c, a] for c in range(kk)) * qjk[a, yk] for a in range(kk)])
  return joint / joint.sum()


@functools.lru_cache(maxsize=None)
def _sched(k_classes, num_steps=T_SMALL, p=1.0):
  return categorical.make_schedule("cosine_p", num_steps, k_classes, p=p)


_posterior = jax.jit(categorical.posterior)
_q_probs = jax.jit(categorical.q_probs)
_transition = jax.jit(categorical.transition)


def test_make_schedule_matches_closed_form_and_is_jittable():
  make = jax.jit(functools.partial(categorical.make_schedule, "cosine_p", 1000, 7, p=0.5))
  sched = make()
  abar = _abar_closed_form(1000, p=0.5)
  np.testing.assert_allclose(np.exp(sched.log_abar), abar, rtol=2e-5, atol=1e-12)
  assert float(sched.log_abar[0]) == 0.0 and float(sched.log_a[0]) == 0.0
  np.testing.assert_allclose(np.cumsum(sched.log_a), sched.log_abar, atol=1e-4)
  np.testing.assert_allclose(np.exp(sched.log_1m_abar[1:]), 1 - abar[1:], rtol=2e-4)
  np.testing.assert_allclose(np.exp(sched.log_1m_a[1:]), 1 - abar[1:] / abar[:-1], rtol=2e-4)
  assert sched.num_steps == 1000 and sched.num_classes == 7
  assert np.all(np.diff(np.asarray(sched.log_abar)) < 0)


@pytest.mark.parametrize("k_classes", [2, 3, 7])
@pytest.mark.parametrize("k,j", [(1, None), (5, None), (19, None), (5, 2), (19, 0), (12, 3), (19, 17)])
def test_posterior_is_bayes_by_enumeration(k_classes, k, j):
  sched = _sched(k_classes)
  mats = _step_matrices(T_SMALL, k_classes)
  rng = np.random.default_rng(k_classes * 100 + k)
  soft = rng.dirichlet(np.ones(k_classes))
  jj = k - 1 if j is None else j
  # Every (y0, y_k) pair for a hard y0, and a soft y0 (the model's prediction).
  for y0 in list(np.eye(k_classes)) + [soft]:
    log_y0 = np.log(np.maximum(y0, 1e-30))
    log_y0 = np.broadcast_to(log_y0, (k_classes, k_classes))
    log_yk = np.asarray(categorical.log_onehot(jnp.arange(k_classes), k_classes))
    got = np.exp(np.asarray(_posterior(sched, jnp.asarray(log_y0, jnp.float32), log_yk,
                                       jnp.full((k_classes,), k), None if j is None else jnp.full((k_classes,), j))))
    for yk in range(k_classes):
      want = _brute_posterior(mats, y0, yk, jj, k)
      np.testing.assert_allclose(got[yk], want, atol=2e-5, err_msg=f"K={k_classes} k={k} j={jj} yk={yk}")


def test_posterior_at_step_zero_returns_y0():
  sched = _sched(5)
  log_y0 = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(0), (3, 5)))
  log_yk = categorical.log_onehot(jnp.array([0, 2, 4]), 5)
  np.testing.assert_allclose(_posterior(sched, log_y0, log_yk, jnp.zeros(3, jnp.int32), None), log_y0)
  # Mixed steps in one batch: only the k = 0 example is y0.
  out = _posterior(sched, log_y0, log_yk, jnp.array([0, 3, 7]), None)
  np.testing.assert_allclose(out[0], log_y0[0])
  assert not np.allclose(out[1], log_y0[1], atol=1e-3)


@pytest.mark.parametrize("k_classes", [2, 3, 7])
def test_q_probs_is_the_chain_and_composes(k_classes):
  sched = _sched(k_classes)
  mats = _step_matrices(T_SMALL, k_classes)
  eye_log = np.asarray(categorical.log_onehot(jnp.arange(k_classes), k_classes))
  onehots = [np.asarray(categorical.log_onehot(jnp.array(a), k_classes)) for a in range(k_classes)]
  for j, k in [(0, 4), (3, 4), (2, 11), (7, 19)]:
    got_k = np.exp(np.asarray(_q_probs(sched, jnp.asarray(eye_log), k)))  # [y0, y_k]
    np.testing.assert_allclose(got_k, _chain(mats, 0, k), atol=2e-6)
    # q(y_k | y_0) = sum_{y_j} q(y_j | y_0) q(y_k | y_j), with q(y_k | y_j) from `transition`.
    q_j = np.exp(np.asarray(_q_probs(sched, jnp.asarray(eye_log), j)))
    trans = np.stack([np.exp(np.asarray(_transition(sched, jnp.asarray(onehots[a]), j, k)))
                      for a in range(k_classes)])  # [y_j, y_k]
    np.testing.assert_allclose(trans, _chain(mats, j, k), atol=2e-6)
    np.testing.assert_allclose(q_j @ trans, got_k, atol=2e-6)


N_MC = 200_000


def _frequencies(log_onehots):
  return np.asarray(jnp.mean(jnp.exp(log_onehots), axis=0), np.float64)


def test_q_sample_frequencies_match_q_probs():
  sched = _sched(7, 1000)
  y0 = jnp.log(jnp.array([0.05, 0.5, 0.1, 0.05, 0.1, 0.1, 0.1]))  # a soft y0 too
  for k in (0, 150, 400, 999):
    log_y0 = jnp.broadcast_to(y0, (N_MC, 7))
    samples = jax.jit(categorical.q_sample)(jax.random.PRNGKey(k), sched, log_y0, k)
    probs = np.exp(np.asarray(categorical.q_probs(sched, y0, k), np.float64))
    # 5 standard errors of a frequency: sqrt(p (1 - p) / N) <= 1.2e-3.
    tol = 5 * np.sqrt(probs * (1 - probs) / N_MC) + 1e-6
    assert np.all(np.abs(_frequencies(samples) - probs) < tol), (k, _frequencies(samples), probs)


@pytest.mark.parametrize("j,k", [(0, 300), (100, 101), (200, 700), (50, 999)])
def test_renoise_marginal_equals_direct_sampling(j, k):
  sched = _sched(7, 1000)
  log_y0 = jnp.broadcast_to(categorical.log_onehot(jnp.array(3), 7), (N_MC, 7))

  @jax.jit
  def two_step(key):
    k1, k2 = jax.random.split(key)
    y_j = categorical.q_sample(k1, sched, log_y0, j)
    return categorical.renoise(k2, sched, y_j, j, k)

  freq = _frequencies(two_step(jax.random.PRNGKey(j + k)))
  probs = np.exp(np.asarray(categorical.q_probs(sched, log_y0[0], k), np.float64))
  assert np.all(np.abs(freq - probs) < 5 * np.sqrt(probs * (1 - probs) / N_MC) + 1e-6), (freq, probs)


def test_kl_is_nonnegative_and_matches_scipy():
  from scipy.stats import entropy  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  p = rng.dirichlet(np.ones(9) * 0.5, size=500)
  q = rng.dirichlet(np.ones(9) * 0.5, size=500)
  kl = np.asarray(jax.jit(categorical.kl)(jnp.log(jnp.asarray(p, jnp.float32)), jnp.log(jnp.asarray(q, jnp.float32))))
  np.testing.assert_allclose(kl, entropy(p, q, axis=-1), rtol=1e-3, atol=1e-5)
  assert kl.min() >= -1e-6
  same = np.asarray(categorical.kl(jnp.log(jnp.asarray(p, jnp.float32)), jnp.log(jnp.asarray(p, jnp.float32))))
  assert np.all(same == 0.0)
  # -inf in log p (an exact zero) is a 0 term, not NaN, in value and gradient.
  lp = jnp.array([0.0, -jnp.inf])
  assert float(categorical.kl(lp, jnp.log(jnp.array([0.5, 0.5])))) == pytest.approx(math.log(2))
  g = jax.grad(lambda a: categorical.kl(lp, jax.nn.log_softmax(a)))(jnp.zeros(2))
  assert np.all(np.isfinite(np.asarray(g)))


def _brute_vb_loss(mats, y0_ids, yk_ids, probs_hat, k, k_classes, num_steps):
  """Sum over pixels of T * L_k + prior, in nats, by enumeration (one example)."""
  total = 0.0
  for y0, yk, ph in zip(y0_ids, yk_ids, probs_hat):
    if k == 0:
      total += num_steps * -np.log(ph[y0])
    else:
      true = _brute_posterior(mats, np.eye(k_classes)[y0], yk, k - 1, k)
      model = _brute_posterior(mats, ph, yk, k - 1, k)
      total += num_steps * np.sum(rel_entr(true, model))
    q_last = _chain(mats, 0, num_steps - 1)[y0]
    total += np.sum(q_last * (np.log(q_last) + np.log(k_classes)))
  return total


@pytest.mark.parametrize("k", [0, 1, 7, 19])
def test_vb_loss_matches_enumeration(k):
  k_classes, num_steps = 3, T_SMALL
  sched, mats = _sched(k_classes), _step_matrices(num_steps, k_classes)
  rng = np.random.default_rng(k)
  y0_ids = rng.integers(0, k_classes, (2, 2, 3))
  yk_ids = rng.integers(0, k_classes, (2, 2, 3))
  logits = rng.normal(size=(2, 2, 3, k_classes)).astype(np.float32)
  probs_hat = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  f = jax.jit(categorical.vb_loss, static_argnames="normalize")
  args = (sched, categorical.log_onehot(y0_ids, k_classes), categorical.log_onehot(yk_ids, k_classes),
          jnp.asarray(logits), jnp.full((2,), k))
  got_bits = np.asarray(f(*args, normalize="bits"))
  got_official = np.asarray(f(*args, normalize="official"))
  for b in range(2):
    want = _brute_vb_loss(mats, y0_ids[b].ravel(), yk_ids[b].ravel(),
                          probs_hat[b].reshape(-1, k_classes), k, k_classes, num_steps)
    np.testing.assert_allclose(got_bits[b], want / (math.log(2) * 6), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_official[b], want / (math.log(2) * 6 * k_classes), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="'nats'"):
    categorical.vb_loss(*args, normalize="nats")


@pytest.mark.parametrize("k", [0, 1, 500, 999])
def test_vb_loss_with_perfect_logits_is_the_prior(k):
  k_classes = 7
  sched = _sched(k_classes, 1000)
  key1, key2 = jax.random.split(jax.random.PRNGKey(k))
  log_y0 = categorical.log_onehot(jax.random.randint(key1, (2, 4, 4), 0, k_classes), k_classes)
  log_yk = categorical.q_sample(key2, sched, log_y0, k)
  perfect = log_y0 * 10.0  # softmax of these logits is y0 to float precision
  loss = jax.jit(categorical.vb_loss)(sched, log_y0, log_yk, perfect, jnp.full((2,), k))
  prior = np.sum(np.asarray(categorical.prior_kl(sched, log_y0)), axis=(1, 2)) / (math.log(2) * 16 * k_classes)
  np.testing.assert_allclose(loss, prior, atol=1e-6)
  # and any other logits cost more (KL >= 0, up to float rounding).
  other = jax.random.normal(key2, perfect.shape)
  assert np.all(np.asarray(categorical.vb_loss(sched, log_y0, log_yk, other, jnp.full((2,), k))) >= prior - 1e-5)


@pytest.mark.parametrize("k_classes", [2, 19, 171])
def test_no_nan_in_values_or_gradients_at_the_ends(k_classes):
  sched = _sched(k_classes, 1000)
  key = jax.random.PRNGKey(k_classes)
  log_y0 = categorical.log_onehot(jax.random.randint(key, (4, 3, 3), 0, k_classes), k_classes)
  ks = jnp.array([0, 1, 998, 999])
  log_yk = categorical.q_sample(key, sched, log_y0, ks)

  @jax.jit
  def loss_and_grad(logits):
    return jax.value_and_grad(lambda l: jnp.sum(categorical.vb_loss(sched, log_y0, log_yk, l, ks)))(logits)

  for scale in (0.0, 1.0, 100.0):  # uniform, typical and extreme (saturated softmax) logits
    logits = scale * jax.random.normal(key, log_y0.shape)
    value, grad = loss_and_grad(logits)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))), (k_classes, scale)
  post = categorical.posterior(sched, jax.nn.log_softmax(logits), log_yk, ks)
  assert np.all(np.isfinite(np.asarray(post)))
  np.testing.assert_allclose(np.exp(np.asarray(post)).sum(-1), 1.0, atol=1e-5)


def test_class_count_mismatch_is_reported():
  with pytest.raises(ValueError, match="num_classes=5"):
    categorical.q_probs(_sched(5), jnp.zeros((2, 4)), 3)
  with pytest.raises(ValueError, match="num_steps"):
    categorical.make_schedule("cosine_p", 1, 5)


def test_vb_loss_pixel_mask_equals_the_loss_of_the_labelled_block():
  """Masked pixels leave the sum and the pixel count: the loss of a batch whose
  right part is unlabelled equals the loss of the left block alone, and does not
  depend on anything at the masked pixels."""
  k_classes, t = 5, 20
  sched = categorical.make_schedule("cosine_p", t, k_classes, p=1.0)
  rng = np.random.default_rng(0)
  shape = (3, 4, 6)
  log_y0 = categorical.log_onehot(jnp.asarray(rng.integers(0, k_classes, shape)), k_classes)
  log_yk = categorical.log_onehot(jnp.asarray(rng.integers(0, k_classes, shape)), k_classes)
  logits = jnp.asarray(rng.normal(size=shape + (k_classes,)), jnp.float32)
  k = jnp.asarray([0, 7, 19])
  mask = np.zeros(shape, bool)
  mask[:, :, :4] = True
  for normalize in categorical.NORMALIZATIONS:
    masked = categorical.vb_loss(sched, log_y0, log_yk, logits, k, normalize, pixel_mask=mask)
    block = categorical.vb_loss(sched, log_y0[:, :, :4], log_yk[:, :, :4], logits[:, :, :4], k,
                                normalize)
    np.testing.assert_allclose(masked, block, rtol=1e-6)
    # Anything under the mask is irrelevant.
    noise = jnp.asarray(rng.normal(size=logits.shape), jnp.float32) * 10
    swapped = categorical.vb_loss(sched, jnp.roll(log_y0, 1, -1), jnp.roll(log_yk, 2, -1),
                                  logits + noise, k, normalize, pixel_mask=mask)
    changed = categorical.vb_loss(
        sched, jnp.where(mask[..., None], log_y0, jnp.roll(log_y0, 1, -1)),
        jnp.where(mask[..., None], log_yk, jnp.roll(log_yk, 2, -1)),
        jnp.where(mask[..., None], logits, logits + noise), k, normalize, pixel_mask=mask)
    np.testing.assert_allclose(changed, masked, rtol=1e-6)
    assert not np.allclose(swapped, masked)
    # An all-true mask is the unmasked loss.
    np.testing.assert_allclose(
        categorical.vb_loss(sched, log_y0, log_yk, logits, k, normalize, pixel_mask=np.ones(shape, bool)),
        categorical.vb_loss(sched, log_y0, log_yk, logits, k, normalize), rtol=1e-6)
