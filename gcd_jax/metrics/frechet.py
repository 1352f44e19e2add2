"""Frechet distance and kernel inception distance between two sets of features.

Shared by FID (Inception features), FSD (per-class pixel counts of layouts) and
any other feature extractor. Computed in float64 numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  import jax


def statistics(features: jax.Array | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) of features [N, D], in float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"need features of shape [N >= 2, D], got {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False)


def psd_sqrt(sigma: np.ndarray) -> np.ndarray:
  """The symmetric square root of a covariance (eigenvalues below 0 from rounding count as 0)."""
  w, v = np.linalg.eigh(sigma)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982).

  tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of
  R S2 R with R = S1^(1/2): S1 S2 = R (R S2) and R S2 R = (R S2) R have the
  same eigenvalues (XY and YX do), and R S2 R is symmetric and positive
  semi-definite, so two symmetric eigendecompositions give it exactly, also for
  the rank-deficient covariances of fewer samples than dimensions. The
  reference FID code takes a general matrix square root of S1 S2 instead
  (scipy's sqrtm: 17.6 s at Inception's D = 2048 on 2 cores against 2.1 s here,
  benchmarks/frechet.py; inexact where S1 S2 is singular). The two agree to
  about 1e-7 relative on rank-deficient inputs and to rounding on full-rank
  ones (tests/metrics/test_fid.py).
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or s1.shape != s2.shape:
    raise ValueError(f"statistics differ in shape: {mu1.shape}/{s1.shape} vs {mu2.shape}/{s2.shape}")
  diff = mu1 - mu2
  root = psd_sqrt(s1)
  product = root @ s2 @ root
  eig = np.linalg.eigvalsh((product + product.T) / 2)
  tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_of(features1: jax.Array | np.ndarray,
                        features2: jax.Array | np.ndarray) -> float:
  return frechet_distance(*statistics(features1), *statistics(features2))


def kernel_distance(features1: jax.Array | np.ndarray, features2: jax.Array | np.ndarray,
                    num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
  """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / d + 1)^3.

  Averaged over random subsets of both sets; returns (mean, std over subsets).
  """
  f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
  d = f1.shape[1]
  m = min(subset_size, len(f1), len(f2))
  if m < 2:
    raise ValueError("KID needs at least 2 features in each set")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = f1[rng.choice(len(f1), m, replace=False)]
    y = f2[rng.choice(len(f2), m, replace=False)]
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    values.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                  + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
  return float(np.mean(values)), float(np.std(values))


class FrechetReference:
  """A fixed reference set, for many Frechet distances against it (bootstrap).

  tr((S1 S2)^(1/2)) equals the sum of the square roots of the eigenvalues of
  R S1 R with R = S2^(1/2) (symmetric), and with S1 = Xc^T Xc / (n - 1) those
  are the eigenvalues of (Xc R)(Xc R)^T / (n - 1), an n x n matrix: exact, and
  fast when n < D (Inception's D = 2048). Agrees with `frechet_distance` to
  rounding on full-rank and rank-deficient covariances.
  """

  def __init__(self, features: jax.Array | np.ndarray) -> None:
    self.mu, self.sigma = statistics(features)
    self._root = psd_sqrt(self.sigma)
    self._trace = float(np.trace(self.sigma))

  def distance(self, features: jax.Array | np.ndarray) -> float:
    """Frechet distance between the statistics of features [N, D] and the reference's."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] != len(self.mu):
      raise ValueError(f"need features of shape [N >= 2, {len(self.mu)}], got {f.shape}")
    mu = f.mean(0)
    xc = (f - mu) @ self._root
    n = len(f)
    gram = (xc @ xc.T) if n <= f.shape[1] else (xc.T @ xc)
    eig = np.linalg.eigvalsh(gram / (n - 1))
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    tr_s1 = float(np.einsum("ij,ij->", f - mu, f - mu) / (n - 1))
    diff = mu - self.mu
    return float(diff @ diff + tr_s1 + self._trace - 2.0 * tr_covmean)
