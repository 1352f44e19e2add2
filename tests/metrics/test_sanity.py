"""The metrics on real data of the default dataset: the real test split must score as
a perfect model would, and the same data with mismatched captions, layouts or noise
must score clearly worse.

Data: synthetic_scenes/32_mini (conftest `scenes_data_dir`), read through the
evaluation pipeline as an evaluation would: 100 test images, one seeded caption
each, and the 200 train layouts as the FSD reference.
"""

import numpy as np
import pytest

from gcd_jax.data import pipeline
from gcd_jax.data import synthetic_scenes as ss
from gcd_jax.metrics import correspondence as co
from gcd_jax.metrics import layout_metrics as lm
from gcd_jax.metrics import segmenters

K = ss.NUM_CLASSES


def _read(data_dir, split):
  it = pipeline.make_eval_iterator("synthetic_scenes/32_mini", image_size=(32, 32), batch_size=100,
                                   split=split, data_dir=data_dir, num_threads=1)
  batches = list(it)
  images = np.concatenate([b["image"] for b in batches])
  # The pipeline's exact [-1, 1] mapping of uint8 images, inverted.
  images = np.rint((images + 1.0) * 127.5).astype(np.uint8)
  return {"image": images,
          "layout": np.concatenate([b["layout"] for b in batches]),
          "caption": [str(c) for b in batches for c in b["caption"]]}


@pytest.fixture(scope="module")
def real(scenes_data_dir):
  return {split: _read(scenes_data_dir, split) for split in ("test", "train")}


def _mismatched(n):
  """A fixed permutation of range(n) with no fixed point: sample i gets another's data.

  One cycle through a random order: order[j] -> order[j + 1].
  """
  order = np.random.default_rng(0).permutation(n)
  out = np.empty(n, np.int64)
  out[order] = np.roll(order, -1)
  return out


def test_mismatch_has_no_fixed_point():
  perm = _mismatched(100)
  assert sorted(perm) == list(range(100)) and not np.any(perm == np.arange(100))


def test_own_captions_score_near_one_and_shuffled_captions_clearly_lower(real):
  t = real["test"]
  assert len(t["caption"]) == 100
  shuffled = [t["caption"][j] for j in _mismatched(100)]
  oracle_layouts = co.layout_for_image_only(t["image"], segmenters.OracleSegmenter())
  scores = {}
  for name, caps in (("own", t["caption"]), ("shuffled", shuffled)):
    scores[name] = {
        "recall": co.semantic_recall_synthetic(caps, t["layout"]),
        # The paper's variant: the classes a segmenter finds in the image.
        "recall_of_image": co.semantic_recall_synthetic(caps, oracle_layouts),
        "attributes": co.attribute_accuracy(caps, t["layout"], t["image"]),
    }
  for name, s in scores.items():
    print(f"{name} captions: semantic recall {s['recall']:.4f} (of the image"
          f" {s['recall_of_image']:.4f}), attribute accuracy "
          + ", ".join(f"{a} {v:.4f}" for a, v in s["attributes"].items()))
  own, bad = scores["own"], scores["shuffled"]
  assert own["recall"] >= 0.99 and own["recall_of_image"] >= 0.99
  assert own["attributes"]["all"] >= 0.99
  assert min(own["attributes"].values()) >= 0.97
  assert bad["recall"] <= 0.6 and bad["recall_of_image"] <= 0.6
  assert bad["attributes"]["all"] <= 0.5


def test_oracle_agrees_with_the_real_layouts(real):
  t = real["test"]
  oracle = segmenters.OracleSegmenter()
  miou, per_class = co.image_layout_agreement(t["image"], t["layout"], oracle)
  wrong, _ = co.image_layout_agreement(t["image"], t["layout"][_mismatched(100)], oracle)
  print(f"oracle mIoU {miou:.4f} (per class {np.round(per_class, 4).tolist()}),"
        f" with mismatched layouts {wrong:.4f}")
  assert miou >= 0.99 and np.nanmin(per_class) >= 0.97
  assert wrong <= 0.6


def test_fsd_of_real_test_vs_train_is_near_zero_and_far_below_noise(real):
  test, train = real["test"]["layout"], real["train"]["layout"]
  rng = np.random.default_rng(0)
  noise = rng.integers(0, K, test.shape)   # uniform random class ids
  # Real-looking shares, wrong arrangement: each layout's pixels shuffled.
  scrambled = rng.permuted(test.reshape(len(test), -1), axis=1).reshape(test.shape)
  # Right amount of foreground, wrong classes: every object becomes a ball.
  one_class = np.minimum(test, 1)
  half = lm.fsd(train[:100], train[100:], K)
  real_fsd = lm.fsd(test, train, K)
  noise_fsd = lm.fsd(noise, train, K)
  one_class_fsd = lm.fsd(one_class, train, K)
  print(f"FSD: test vs train {real_fsd:.2f}, train halves {half:.2f},"
        f" all objects one class {one_class_fsd:.1f}, uniform noise vs train {noise_fsd:.1f},"
        f" pixel-scrambled test vs train {lm.fsd(scrambled, train, K):.2f}")
  # Near zero: at 100 vs 200 samples FSD has a sampling floor (two halves of one
  # split score it too), far below wrong class statistics.
  assert real_fsd < 3 * half + 1.0
  assert real_fsd < 0.2 * one_class_fsd
  assert real_fsd < 0.01 * noise_fsd
  # Per-class percentages, not arrangement: scrambling pixels changes nothing.
  assert lm.fsd(scrambled, train, K) == pytest.approx(real_fsd, rel=1e-6)


def test_fid_and_kid_of_real_test_vs_train_are_far_below_noise(real, tmp_path):
  # No FID weights ship with any package: random Inception weights (fixed seed)
  # at the architecture's smallest input, which still separates real from noise.
  from gcd_jax.metrics import fid  # pylint: disable=g-import-not-at-top
  from gcd_jax.metrics import inception  # pylint: disable=g-import-not-at-top
  weights = inception.save_random_weights(tmp_path / "random_inception.npz", seed=0)
  extractor = fid.InceptionFeatures.from_file(weights, batch_size=50, resize_to=inception.MIN_RESIZE)
  test, train = real["test"]["image"], real["train"]["image"]
  noise = np.random.default_rng(0).integers(0, 256, test.shape).astype(np.uint8)
  ref = fid.reference_statistics(extractor, "32_mini-train", lambda: train, tmp_path / "ref")
  # Features once per image set (fid() and kid() are these after compute_features).
  feats_test, feats_noise = (fid.compute_features(extractor, x) for x in (test, noise))
  f_real, f_noise = fid.fid_from_features(feats_test, ref), fid.fid_from_features(feats_noise, ref)
  k_real = fid.kid_from_features(feats_test, ref, subset_size=100)[0]
  k_noise = fid.kid_from_features(feats_noise, ref, subset_size=100)[0]
  half = fid.frechet.frechet_distance_of(ref.features[:100], ref.features[100:])
  print(f"random-Inception FID: test vs train {f_real:.4g}, train halves {half:.4g}, noise vs train "
        f"{f_noise:.4g}; KID: test {k_real:.3g}, noise {k_noise:.3g}")
  # Near zero (at the level of two halves of the same split) and far below noise.
  assert f_real < 2 * half
  assert f_real < 0.2 * f_noise
  assert abs(k_real) < 0.05 * k_noise
