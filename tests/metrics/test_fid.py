"""Tests for gcd_jax/metrics/inception.py, gcd_jax/metrics/fid.py and tools/convert_fid_inception.py.

The real FID weights cannot be shipped: the network runs on random weights from
`save_random_weights(seed=0)` and is compared with pytorch-fid's network in torch
on the same weights (golden/fid_inception.npz, from
golden/make_fid_inception_golden.py). The architecture is tested at a 139x139
input instead of FID's 299x299 to keep the suite fast; every layer, pool and
padding is the same at both sizes (139 keeps 3x3 maps in the last blocks, so the
padded pools are exercised).
"""

import hashlib
import importlib.util
import pathlib

import numpy as np
import pytest
from safetensors.numpy import load_file

from gcd_jax.metrics import fid
from gcd_jax.metrics import inception

GOLDEN = pathlib.Path(__file__).parent / "golden" / "fid_inception.npz"
CONVERTER = pathlib.Path(__file__).resolve().parents[2] / "tools" / "convert_fid_inception.py"
RESIZE = 139
BATCH = 4


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
  return inception.save_random_weights(tmp_path_factory.mktemp("fid") / "random.safetensors", seed=0)


@pytest.fixture(scope="module")
def extractor(weights_path):
  return fid.InceptionFeatures.from_file(weights_path, batch_size=BATCH, resize_to=RESIZE)


def _images(n, seed, h=50, w=61):
  """Smooth colour gradients plus noise: images that differ from each other."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  base = rng.uniform(0, 255, (n, 1, 1, 3)) * (1 - yy[None, ..., None]) \
      + rng.uniform(0, 255, (n, 1, 1, 3)) * xx[None, ..., None]
  return np.clip(base / 2 + rng.normal(0, 30, (n, h, w, 3)), 0, 255).astype(np.uint8)


# Network


def test_random_weights_are_the_golden_ones(weights_path, golden):
  tensors = load_file(str(weights_path))
  h = hashlib.sha256()
  for name in sorted(tensors):
    h.update(name.encode() + tensors[name].tobytes())
  got = h.hexdigest()
  assert got == str(golden["weights_sha256"]), (
      "save_random_weights(seed=0) no longer writes the weights of golden/fid_inception.npz "
      "(numpy's generator changed?); regenerate it with golden/make_fid_inception_golden.py")


def test_features_match_pytorch_fid(extractor, golden):
  assert int(golden["resize_to"]) == RESIZE
  got = extractor(golden["images"])  # 2 images: one batch of 4, padded
  assert got.shape == (2, 2048) and got.dtype == np.float32
  np.testing.assert_allclose(got, golden["features"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["down", "up"])
def test_preprocess_matches_torch_bilinear(golden, case):
  got = np.asarray(inception.preprocess(golden[f"{case}_images"], 29))
  np.testing.assert_allclose(got, golden[case], atol=1e-5)


def test_features_shape_deterministic_and_independent_of_batching(extractor):
  images = _images(6, seed=1)  # batches of 4: 4 + (2 padded to 4)
  traces = fid._inception_forward._cache_size()  # pylint: disable=protected-access
  a = extractor(images)
  b = extractor(images)
  alone = extractor(images[4:5])
  assert a.shape == (6, 2048) and a.dtype == np.float32 and np.isfinite(a).all()
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(alone[0], a[4], rtol=1e-5, atol=1e-6)
  # Distinct images give distinct features (the random network is not degenerate).
  assert np.abs(a[0] - a[1]).max() > 1e-3
  # One program for this image size, whatever the number of images (same size
  # as the golden test, which may have compiled it already).
  assert fid._inception_forward._cache_size() - traces <= 1  # pylint: disable=protected-access


def test_rejects_float_images(extractor):
  with pytest.raises(ValueError, match="uint8"):
    extractor(np.zeros((2, 50, 61, 3), np.float32))


def test_resize_below_minimum_is_an_error(weights_path):
  small = fid.InceptionFeatures(inception.load_variables(weights_path)[0], digest="0" * 64,
                                batch_size=1, resize_to=64)
  with pytest.raises(ValueError, match="at least 75"):
    small(np.zeros((1, 8, 8, 3), np.uint8))


def test_identity_names_weights_and_resize(extractor, weights_path):
  assert extractor.identity.startswith(f"fid_inception_v3-{RESIZE}px-")
  other = fid.InceptionFeatures.from_file(weights_path, batch_size=BATCH, resize_to=75)
  assert other.identity != extractor.identity
  assert isinstance(extractor, fid.FeatureExtractor)


# Weight files


def test_npz_and_safetensors_hold_the_same_weights(tmp_path, weights_path):
  npz = inception.save_random_weights(tmp_path / "random.npz", seed=0)
  assert inception.load_variables(npz)[1] == inception.load_variables(weights_path)[1]
  assert inception.load_variables(inception.save_random_weights(tmp_path / "other.npz", seed=1))[1] \
      != inception.load_variables(npz)[1]


def test_layout_conversion(weights_path):
  tensors = load_file(str(weights_path))
  variables, _ = inception.load_variables(weights_path)
  torch_w = tensors["Mixed_6b.branch7x7_2.conv.weight"]  # [out, in, 1, 7]
  kernel = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]  # [1, 7, in, out]
  assert kernel.shape == (1, 7, 128, 128) and torch_w.shape == (128, 128, 1, 7)
  np.testing.assert_array_equal(kernel[0, 3, 5, 9], torch_w[9, 5, 0, 3])
  np.testing.assert_array_equal(variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                tensors["Mixed_7c.branch_pool.bn.running_var"])
  assert len(inception.tensor_shapes()) == 470


def test_missing_tensor_names_file_and_tensor(tmp_path, weights_path):
  tensors = load_file(str(weights_path))
  del tensors["Mixed_6c.branch7x7_2.bn.running_var"]
  tensors["fc.weight"] = np.zeros((1008, 2048), np.float32)  # ignored, as in a .pth
  path = tmp_path / "incomplete.npz"
  np.savez(path, **tensors)
  with pytest.raises(inception.InceptionWeightsError,
                     match=r"incomplete\.npz: tensor 'Mixed_6c\.branch7x7_2\.bn\.running_var' is missing"):
    inception.load_variables(path)


@pytest.mark.parametrize("tensors,pattern", [
    ({"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 5, 5), np.float32)},
     r"bad\.npz: tensor 'Conv2d_1a_3x3\.conv\.weight' has shape \(32, 3, 5, 5\), expected \(32, 3, 3, 3\)"),
    ({"Conv2d_1a_3x3.conv.weight": np.zeros((32, 3, 3, 3), np.int32)}, r"bad\.npz: .* dtype int32"),
    ({"features.0.weight": np.zeros(3, np.float32)}, r"bad\.npz: unexpected tensors \['features"),
    ({"fc.weight": np.zeros((1000, 2048), np.float32)}, r"bad\.npz: tensor 'fc\.weight' .*torchvision"),
])
def test_bad_tensor_names_file_and_tensor(tmp_path, tensors, pattern):
  np.savez(tmp_path / "bad.npz", **tensors)
  with pytest.raises(inception.InceptionWeightsError, match=pattern):
    inception.load_variables(tmp_path / "bad.npz")


def test_bad_files(tmp_path):
  with pytest.raises(inception.InceptionWeightsError, match="nope.safetensors: no such file"):
    inception.load_variables(tmp_path / "nope.safetensors")
  (tmp_path / "w.pth").write_bytes(b"\x80")
  with pytest.raises(inception.InceptionWeightsError, match=r"w\.pth: unknown weight format.*convert"):
    inception.load_variables(tmp_path / "w.pth")
  (tmp_path / "w.safetensors").write_bytes(b"garbage")
  with pytest.raises(inception.InceptionWeightsError, match=r"w\.safetensors: not a readable"):
    inception.load_variables(tmp_path / "w.safetensors")


def _converter():
  spec = importlib.util.spec_from_file_location("convert_fid_inception", CONVERTER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_converter_on_a_pytorch_fid_state_dict(tmp_path, weights_path, extractor, monkeypatch):
  converter = _converter()
  state = dict(load_file(str(weights_path)))
  # What a pytorch-fid state_dict adds: the classifier and BN step counters.
  state["fc.weight"] = np.zeros((1008, 2048), np.float32)
  state["fc.bias"] = np.zeros(1008, np.float32)
  state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(0, np.int64)
  source = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
  source.write_bytes(b"stand-in for the pickled state_dict")
  monkeypatch.setattr(converter, "load_torch_state_dict", lambda path: state)
  assert converter.main([str(source), str(tmp_path / "fid.safetensors")]) == 0
  converted = fid.InceptionFeatures.from_file(tmp_path / "fid.safetensors", resize_to=RESIZE)
  assert converted.identity == extractor.identity  # the same tensors, bit for bit

  del state["Mixed_7c.branch_pool.bn.bias"]
  with pytest.raises(ValueError, match="469 FID Inception tensors, expected 470"):
    converter.convert_state_dict(state)
  with pytest.raises(ValueError, match="'AuxLogit.conv0.weight' is not part"):
    converter.convert_state_dict({"AuxLogit.conv0.weight": np.zeros((1, 1, 1, 1))})


# FID, KID and reference statistics


def _frechet_independent(x, y):
  """||mu1 - mu2||^2 + tr S1 + tr S2 - 2 sum sqrt(eig(S1^1/2 S2 S1^1/2)), all symmetric eigh."""
  mu1, mu2 = x.mean(0), y.mean(0)
  s1 = (x - mu1).T @ (x - mu1) / (len(x) - 1)
  s2 = (y - mu2).T @ (y - mu2) / (len(y) - 1)
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


def test_frechet_distance_equals_the_reference_codes_sqrtm_and_closed_forms():
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  from gcd_jax.metrics import frechet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  # Full rank: the reference FID code's formula (a general matrix square root of S1 S2).
  x, y = rng.normal(size=(400, 24)), rng.normal(size=(300, 24)) @ rng.normal(size=(24, 24)) * 0.3 + 0.5
  (m1, s1), (m2, s2) = frechet.statistics(x), frechet.statistics(y)
  ref = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
  assert frechet.frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-10)
  # Commuting (diagonal) covariances, some variances 0 (rank-deficient):
  # sum (m1 - m2)^2 + (sqrt(v1) - sqrt(v2))^2 per dimension.
  v1, v2 = np.array([4.0, 1.0, 0.0, 2.5, 0.0]), np.array([1.0, 0.0, 0.0, 2.5, 9.0])
  a, b = np.arange(5.0), np.arange(5.0)[::-1] * 0.5
  closed = np.sum((a - b) ** 2 + (np.sqrt(v1) - np.sqrt(v2)) ** 2)
  assert frechet.frechet_distance(a, np.diag(v1), b, np.diag(v2)) == pytest.approx(closed, rel=1e-12)
  # Fewer samples than dimensions, rotated: the same as the unrotated distance.
  q = np.linalg.qr(rng.normal(size=(64, 64)))[0]
  u, w = rng.normal(size=(20, 64)), rng.normal(size=(30, 64)) * 2 + 1
  assert frechet.frechet_distance_of(u @ q, w @ q) == pytest.approx(
      frechet.frechet_distance_of(u, w), rel=1e-9)
  # The bootstrap's fixed-reference form agrees (to 1e-7: rounding of ~1e-16 in
  # the zero eigenvalues of a rank-deficient product becomes ~1e-8 in their roots).
  assert frechet.FrechetReference(w).distance(u) == pytest.approx(
      frechet.frechet_distance_of(u, w), rel=1e-7)


def _kid_brute_force(x, y):
  """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, pair by pair."""
  d = x.shape[1]
  k = lambda a, b: (np.dot(a, b) / d + 1) ** 3
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
  return xx + yy - 2 * xy


class Counting:
  """A user extractor: a fixed random projection of 4x4-average-pooled pixels, D=12."""

  def __init__(self, identity="projection-v1", seed=0):
    self.identity, self.name, self.dim = identity, "projection", 12
    self.proj = np.random.default_rng(seed).normal(size=(4 * 4 * 3, 12))
    self.calls = 0

  def __call__(self, images):
    self.calls += 1
    n, h, w, _ = images.shape
    pooled = images.reshape(n, 4, h // 4, 4, w // 4, 3).mean(axis=(2, 4)) / 255.0
    return pooled.reshape(n, -1) @ self.proj


def _small_images(n, seed, shift=0.0):
  rng = np.random.default_rng(seed)
  return np.clip(rng.normal(128 + shift, 60, (n, 16, 16, 3)), 0, 255).astype(np.uint8)


def test_fid_and_kid_of_a_user_extractor_match_independent_computations(tmp_path):
  ext = Counting()
  real, fake = _small_images(60, 0), _small_images(60, 1, shift=20)
  ref = fid.reference_statistics(ext, "toy-test-n60", lambda: real, tmp_path)
  x, y = ext(fake), ext(real)
  assert fid.fid(ext, fake, ref) == pytest.approx(_frechet_independent(x, y), rel=1e-6, abs=1e-9)
  assert fid.fid(ext, real, ref) == pytest.approx(0.0, abs=1e-9)
  # Subsets as large as the (equal) sets: each is a permutation of all features,
  # so every subset gives the full-set unbiased estimate.
  mean, std = fid.kid(ext, fake, ref, num_subsets=3, subset_size=1000)
  assert mean == pytest.approx(_kid_brute_force(x, y), rel=1e-9, abs=1e-12)
  assert std <= 1e-12 * abs(mean)  # rounding only
  # A bare function (no identity) works wherever no cache is involved.
  assert fid.fid(lambda im: ext(im), fake, ref) == pytest.approx(  # pylint: disable=unnecessary-lambda
      _frechet_independent(x, y), rel=1e-6, abs=1e-9)
  with pytest.raises(TypeError, match="CallableFeatures"):
    fid.reference_statistics(lambda im: ext(im), "toy-test-n60", lambda: real, tmp_path)
  wrapped = fid.CallableFeatures(ext, identity="projection-v1", dim=12)
  assert fid.fid(wrapped, fake, ref) == pytest.approx(fid.fid(ext, fake, ref), rel=1e-12)


def test_reference_statistics_are_cached_per_split_and_extractor(tmp_path):
  real = _small_images(40, 0)
  loads = []

  def images_fn():
    loads.append(1)
    return real

  ext = Counting()
  first = fid.reference_statistics(ext, "toy-test-n40", images_fn, tmp_path)
  assert (ext.calls, len(loads)) == (1, 1)
  files = sorted(p.name for p in tmp_path.iterdir())
  assert len(files) == 1 and files[0].startswith("toy-test-n40-") and files[0].endswith(".npz")

  again = fid.reference_statistics(ext, "toy-test-n40", images_fn, tmp_path)
  assert (ext.calls, len(loads)) == (1, 1)  # read back, nothing recomputed
  for a, b in [(first.mu, again.mu), (first.sigma, again.sigma), (first.features, again.features)]:
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(first.mu, ext(real).mean(0), rtol=1e-12)
  np.testing.assert_allclose(first.sigma, np.cov(ext(real), rowvar=False), rtol=1e-10)

  other = Counting(identity="projection-v2", seed=1)  # another extractor: recomputed
  third = fid.reference_statistics(other, "toy-test-n40", images_fn, tmp_path)
  assert (other.calls, len(loads)) == (1, 2)
  assert third.identity == "projection-v2" and not np.allclose(third.mu, first.mu)
  fid.reference_statistics(ext, "toy-val-n40", images_fn, tmp_path)  # another split too
  assert len(loads) == 3
  assert len(list(tmp_path.iterdir())) == 3
  assert not [p for p in tmp_path.iterdir() if p.suffix != ".npz" or p.name.startswith(".")]

  with pytest.raises(ValueError, match="computed with 'projection-v2'"):
    fid.fid(ext, real, third)

  # A truncated cache file (e.g. a crash in an older version) is recomputed.
  path = fid.cache_path(tmp_path, "toy-test-n40", "projection-v1")
  path.write_bytes(path.read_bytes()[:100])
  fid.reference_statistics(ext, "toy-test-n40", images_fn, tmp_path)
  assert len(loads) == 4
  fid.reference_statistics(ext, "toy-test-n40", images_fn, tmp_path)
  assert len(loads) == 4


def test_batches_from_an_iterable_equal_one_array():
  ext = Counting()
  images = _small_images(10, 3)
  whole = fid.compute_features(ext, images)
  parts = fid.compute_features(ext, (images[i:i + 3] for i in range(0, 10, 3)))
  np.testing.assert_allclose(parts, whole, rtol=1e-12)
  with pytest.raises(ValueError, match="no images"):
    fid.compute_features(ext, [])


def test_inception_reference_and_kid_end_to_end(tmp_path, extractor):
  real, fake = _images(6, seed=2), _images(6, seed=3)  # equal sizes: see the test above
  ref = fid.reference_statistics(extractor, "toy-test-n6", lambda: real, tmp_path)
  np.testing.assert_array_equal(ref.features, extractor(real))
  assert ref.mu.shape == (2048,) and ref.sigma.shape == (2048, 2048)
  mean, _ = fid.kid(extractor, fake, ref, num_subsets=2, subset_size=1000)
  assert mean == pytest.approx(_kid_brute_force(extractor(fake).astype(np.float64),
                                                ref.features.astype(np.float64)), rel=1e-6, abs=1e-9)
