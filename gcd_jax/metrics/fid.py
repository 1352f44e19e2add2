"""FID and KID of generated images against cached reference statistics.

    inception = InceptionFeatures.from_file("/ckpt/fid_inception.safetensors")
    ref = reference_statistics(inception, "coco-val-n5000", lambda: real_images, cache_dir)
    fid(inception, generated, ref)                  # float
    kid(inception, generated, ref)                  # (mean, std over subsets)

The weight file and how to convert the standard FID weights
(pt_inception-2015-12-05-6726825d.pth) are described in
`gcd_jax/metrics/inception.py`; in short, with torch in a separate venv:

  python tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth fid_inception.safetensors

Any feature extractor works the same way: an object with `name`, `identity`,
`dim` and `__call__(images uint8 [N, H, W, 3]) -> [N, D]` (see `FeatureExtractor`);
wrap a plain function with `CallableFeatures`. The `identity` is what reference
caches key on: it must change whenever the features would (other weights, another
resize), so that stale statistics are never reused.

The distances themselves are `gcd_jax.metrics.frechet` (float64 numpy).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import re
import zipfile
from typing import Any, Callable, Protocol, runtime_checkable

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax import fileio
from gcd_jax.metrics import frechet
from gcd_jax.metrics import inception

Images = Any  # uint8 [N, H, W, 3] array, or an iterable of such batches


@runtime_checkable
class FeatureExtractor(Protocol):
  """What FID, KID and the reference cache need from a feature extractor.

  Attributes:
    name: human-readable, for logs.
    identity: a string that changes whenever the features would; used in cache
      file names and checked when a cache is read.
    dim: D, the feature width.
  """
  name: str
  identity: str
  dim: int

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float32 or float64 [N, D]."""


@dataclasses.dataclass(frozen=True)
class CallableFeatures:
  """A plain function `images uint8 [N, H, W, 3] -> [N, D]` as a FeatureExtractor."""
  fn: Callable[[np.ndarray], Any]
  identity: str
  dim: int
  name: str = ""

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return np.asarray(self.fn(images))


def _check_images(images) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}; "
                     "convert float images with np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)")
  return images


@functools.partial(jax.jit, static_argnums=0)
def _inception_forward(module: inception.FIDInceptionV3, variables, images):
  # Full float32 convolutions even where the default would be TF32 (GPUs): each
  # image is embedded once, and FID is sensitive to small feature shifts.
  with jax.default_matmul_precision("float32"):
    return module.apply(variables, images)


class InceptionFeatures:
  """The FID Inception network as a FeatureExtractor: uint8 images -> [N, 2048] float32.

  Images go through in batches of exactly `batch_size` (the last one padded), so
  one program is compiled per (batch size, image size); the module is a static
  argument (a hashable dataclass), so instances with the same resize share it.

  Attributes:
    name, identity, dim: see FeatureExtractor. identity is
      "fid_inception_v3-<resize>px-<sha256 of the weights, 16 hex>".
    batch_size: images per forward pass.
    resize_to: 299 for FID; smaller only to test the architecture cheaply.
  """
  dim = inception.FEATURE_DIM

  def __init__(self, variables: dict[str, Any], *, digest: str, name: str = "fid_inception_v3",
               batch_size: int = 50, resize_to: int = inception.FID_RESIZE) -> None:
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.module = inception.FIDInceptionV3(resize_to=resize_to)
    self.variables = jax.device_put(variables)
    self.batch_size = batch_size
    self.resize_to = resize_to
    self.name = name
    self.identity = f"fid_inception_v3-{resize_to}px-{digest[:16]}"

  @classmethod
  def from_file(cls, path: str | os.PathLike, batch_size: int = 50,
                resize_to: int = inception.FID_RESIZE) -> InceptionFeatures:
    """Loads a weight file (format: gcd_jax/metrics/inception.py); raises InceptionWeightsError."""
    variables, digest = inception.load_variables(path)
    return cls(variables, digest=digest, name=f"fid_inception_v3({pathlib.Path(path).name})",
               batch_size=batch_size, resize_to=resize_to)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = _check_images(images)
    n, b = len(images), self.batch_size
    out, pending = [], None
    for start in range(0, n, b):
      batch = images[start:start + b]
      if len(batch) < b:  # one compiled shape: pad, then drop the padding's features
        batch = np.concatenate([batch, np.zeros((b - len(batch),) + batch.shape[1:], np.uint8)])
      result = _inception_forward(self.module, self.variables, jnp.asarray(batch))
      # Fetch the previous batch only now, so that the device works on this one
      # meanwhile; at most two batches are in flight.
      if pending is not None:
        out.append(np.asarray(pending))
      pending = result
    if pending is None:
      return np.zeros((0, self.dim), np.float32)
    out.append(np.asarray(pending))
    return np.concatenate(out)[:n]


def compute_features(extractor: FeatureExtractor, images: Images) -> np.ndarray:
  """Features [N, D] of an image array [N, H, W, 3], or of an iterable of such batches.

  An iterable is consumed once, batch by batch (a generator of batches never
  holds the whole set in memory); an array goes to the extractor whole, which
  batches it itself.
  """
  batches = [images] if hasattr(images, "__array__") else images
  feats = []
  for batch in batches:
    batch = _check_images(batch)
    f = np.asarray(extractor(batch))
    if f.ndim != 2 or len(f) != len(batch):
      raise ValueError(f"{_name(extractor)} returned features of shape {f.shape} for "
                       f"{len(batch)} images; expected [{len(batch)}, D]")
    feats.append(f)
  if not feats:
    raise ValueError("no images")
  return np.concatenate(feats)


@dataclasses.dataclass(frozen=True)
class Reference:
  """Statistics of a reference image set under one extractor.

  Attributes:
    key: the dataset split it describes, e.g. "coco-val-n5000".
    identity: the extractor's identity.
    mu: [D] float64 mean; sigma: [D, D] float64 covariance (for FID).
    features: [N, D] as the extractor returned them (float32 for Inception), all
      of them: KID needs the samples.
  """
  key: str
  identity: str
  mu: np.ndarray
  sigma: np.ndarray
  features: np.ndarray

  @classmethod
  def from_features(cls, key: str, identity: str,
                    features: jax.Array | np.ndarray) -> Reference:
    features = np.asarray(features)
    mu, sigma = frechet.statistics(features)
    return cls(key, identity, mu, sigma, features.astype(np.result_type(features, np.float32)))


def _name(extractor) -> str:
  return getattr(extractor, "name", None) or getattr(extractor, "identity", None) or repr(extractor)


def _identity(extractor) -> str:
  identity = getattr(extractor, "identity", None)
  if not isinstance(identity, str) or not identity:
    raise TypeError(f"{extractor!r} has no `identity` string, which reference caches key on; "
                    "wrap a plain function as CallableFeatures(fn, identity=..., dim=...)")
  return identity


def cache_path(cache_dir: str | os.PathLike, key: str, identity: str) -> epath.Path:
  """<cache_dir>/<key, sanitised>-<sha256(key, identity), 16 hex>.npz"""
  digest = hashlib.sha256(f"{key}\0{identity}".encode()).hexdigest()[:16]
  safe_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80]
  return fileio.as_path(cache_dir) / f"{safe_key}-{digest}.npz"


def _read_cache(path: epath.Path, key: str, identity: str) -> Reference | None:
  try:
    with path.open("rb") as file, np.load(file, allow_pickle=False) as f:
      if str(f["key"]) != key or str(f["identity"]) != identity:
        return None
      return Reference(key, identity, f["mu"], f["sigma"], f["features"])
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    logging.warning("Ignoring unreadable reference statistics %s (%s); recomputing.", path, e)
    return None


def _write_atomically(path: epath.Path, ref: Reference) -> None:
  # Written next to the target and renamed: a reader never sees half a file, and
  # an interrupted run leaves no file that looks valid.
  fileio.atomic_write(path, lambda f: np.savez(
      f, key=ref.key, identity=ref.identity, mu=ref.mu, sigma=ref.sigma, features=ref.features))


def reference_statistics(extractor: FeatureExtractor, key: str,
                         images_fn: Callable[[], Images],
                         cache_dir: str | os.PathLike) -> Reference:
  """Reference statistics of a dataset split, computed once per split and extractor.

  Args:
    extractor: any FeatureExtractor; its `identity` is part of the cache key, so
      another network (or the same one with other weights) recomputes.
    key: names the image set, e.g. f"{dataset}-{split}-n{count}"; it must change
      when the images do.
    images_fn: returns the reference images (uint8 [N, H, W, 3] or an iterable of
      batches); called only when there is no valid cache file.
    cache_dir: where the .npz lives (created if needed).
  """
  identity = _identity(extractor)
  path = cache_path(cache_dir, key, identity)
  if path.is_file():
    ref = _read_cache(path, key, identity)
    if ref is not None:
      logging.info("Reference statistics for %s / %s from %s.", key, identity, path)
      return ref
  ref = Reference.from_features(key, identity, compute_features(extractor, images_fn()))
  _write_atomically(path, ref)
  logging.info("Reference statistics for %s / %s (%d images) written to %s.",
               key, identity, len(ref.features), path)
  return ref


def _check_reference(extractor, reference: Reference) -> None:
  identity = getattr(extractor, "identity", None)
  if identity is not None and identity != reference.identity:
    raise ValueError(f"the reference {reference.key!r} was computed with {reference.identity!r}, "
                     f"not with this extractor ({identity!r})")


def fid_from_features(features: jax.Array | np.ndarray, reference: Reference) -> float:
  """Frechet distance between features [N, D] and the reference's (mu, sigma)."""
  return frechet.frechet_distance(*frechet.statistics(features), reference.mu, reference.sigma)


def kid_from_features(features: jax.Array | np.ndarray, reference: Reference,
                      num_subsets: int = 100,
                      subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """KID (mean, std over subsets) between features [N, D] and the reference's features."""
  return frechet.kernel_distance(features, reference.features, num_subsets=num_subsets,
                                 subset_size=subset_size, seed=seed)


def fid(extractor: FeatureExtractor, images: Images, reference: Reference) -> float:
  """FID of images (uint8 [N, H, W, 3] or batches) against reference statistics."""
  _check_reference(extractor, reference)
  return fid_from_features(compute_features(extractor, images), reference)


def kid(extractor: FeatureExtractor, images: Images, reference: Reference,
        num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
  """KID (mean, std over subsets) of images against the reference's features."""
  _check_reference(extractor, reference)
  return kid_from_features(compute_features(extractor, images), reference,
                           num_subsets=num_subsets, subset_size=subset_size, seed=seed)
