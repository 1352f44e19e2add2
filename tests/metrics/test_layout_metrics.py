"""layout_metrics: confusion matrix, mIoU and FSD against brute-force computations."""

import numpy as np
import pytest

from gcd_jax.metrics import layout_metrics as lm

K = 6
IGNORE = 255


def _random_pair(seed, n=4, h=7, w=9, used=4, ignore_frac=0.0):
  """pred, target [n, h, w] using only classes < used (so classes used..K-1 are absent)."""
  rng = np.random.default_rng(seed)
  target = rng.integers(0, used, (n, h, w))
  # Mostly right, so that IoUs are spread out rather than all near 1 / used.
  pred = np.where(rng.random((n, h, w)) < 0.6, target, rng.integers(0, used, (n, h, w)))
  target[rng.random((n, h, w)) < ignore_frac] = IGNORE
  return pred, target


def _brute_force_iou(pred, target, k, ignore_id=None):
  """Per class, by its definition: TP / (TP + FP + FN) over non-ignored pixels."""
  valid = np.ones(target.shape, bool) if ignore_id is None else target != ignore_id
  out = []
  for c in range(k):
    tp = np.sum((pred == c) & (target == c) & valid)
    fp = np.sum((pred == c) & (target != c) & valid)
    fn = np.sum((pred != c) & (target == c) & valid)
    out.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
  return np.array(out)


def test_confusion_matrix_counts_target_rows_prediction_columns():
  pred, target = _random_pair(0, ignore_frac=0.2)
  got = lm.confusion_matrix(pred, target, K, ignore_id=IGNORE)
  want = np.zeros((K, K), np.int64)
  for p, t in zip(pred.ravel(), target.ravel()):
    if t != IGNORE:
      want[t, p] += 1
  np.testing.assert_array_equal(got, want)
  assert got.sum() == np.sum(target != IGNORE)


@pytest.mark.parametrize("ignore_frac", [0.0, 0.3])
def test_miou_matches_a_per_class_loop(ignore_frac):
  pred, target = _random_pair(1, ignore_frac=ignore_frac)
  miou, per_class = lm.miou(pred, target, K, ignore_id=IGNORE if ignore_frac else None)
  want = _brute_force_iou(pred, target, K, IGNORE if ignore_frac else None)
  np.testing.assert_allclose(per_class, want)
  # Classes 4 and 5 occur in neither: NaN, and left out of the mean.
  assert np.isnan(per_class[4:]).all() and not np.isnan(per_class[:4]).any()
  assert miou == pytest.approx(np.mean(want[:4]))


def test_a_class_only_in_the_prediction_counts_with_iou_zero():
  target = np.zeros((1, 2, 2), np.int32)
  pred = np.array([[[0, 0], [0, 3]]])
  miou, per_class = lm.miou(pred, target, K)
  assert per_class[3] == 0.0 and per_class[0] == 0.75
  assert miou == pytest.approx((0.75 + 0.0) / 2)


def test_ignore_id_may_be_a_class_id():
  """Cityscapes-style: leave out "unlabeled" (a class id) from the target."""
  pred, target = _random_pair(2, used=5)
  miou, per_class = lm.miou(pred, target, K, ignore_id=4)
  want = _brute_force_iou(pred, target, K, ignore_id=4)
  want[4] = np.nan   # predicted 4 where the target is a real class: still not scored
  np.testing.assert_allclose(per_class, want)
  assert miou == pytest.approx(np.nanmean(want))


def test_streaming_equals_one_shot_and_perfect_or_disjoint_predictions():
  pred, target = _random_pair(3, n=10, ignore_frac=0.1)
  acc = lm.MIoU(K, ignore_id=IGNORE)
  for lo, hi in ((0, 3), (3, 4), (4, 10)):
    acc.update(pred[lo:hi], target[lo:hi])
  miou, per_class = acc.result()
  want_miou, want = lm.miou(pred, target, K, ignore_id=IGNORE)
  np.testing.assert_array_equal(per_class, want)
  assert miou == want_miou

  layout = np.array([[[0, 1], [2, 2]]])
  assert lm.miou(layout, layout, K)[0] == 1.0
  assert lm.miou((layout + 1) % 3, layout, K)[0] == 0.0
  all_ignored = np.full((1, 2, 2), IGNORE)
  assert np.isnan(lm.miou(layout, all_ignored, K, ignore_id=IGNORE)[0])


def test_bad_inputs_are_rejected_with_the_offending_values():
  layout = np.zeros((2, 3, 3), np.int32)
  with pytest.raises(ValueError, match="differ in shape"):
    lm.miou(layout, layout[:, :2], K)
  with pytest.raises(ValueError, match=r"pred: class id\(s\) \[6\]"):
    lm.miou(layout + 6, layout, K)
  with pytest.raises(ValueError, match=r"target: class id\(s\) \[255\]"):
    lm.miou(layout, layout + 255, K)   # 255 without ignore_id
  with pytest.raises(TypeError, match="integer class ids"):
    lm.miou(layout.astype(np.float32), layout, K)
  bad_pred = layout.copy()
  bad_pred[0, 0, 0] = IGNORE   # a prediction of the ignore id where the target is labelled
  with pytest.raises(ValueError, match="pred"):
    lm.miou(bad_pred, layout, K, ignore_id=IGNORE)


# --- FSD ---------------------------------------------------------------------------


def test_class_pixel_counts_and_percentages():
  _, layouts = _random_pair(4, n=70, ignore_frac=0.2)   # 70 > the internal chunk of 64
  counts = lm.class_pixel_counts(layouts, K, ignore_id=IGNORE)
  want = np.array([[np.sum(l == c) for c in range(K)] for l in layouts])
  np.testing.assert_array_equal(counts, want)
  pct = lm.class_percentages(layouts, K, ignore_id=IGNORE)
  np.testing.assert_allclose(pct, 100 * want / (layouts != IGNORE).sum((1, 2))[:, None])
  np.testing.assert_allclose(pct.sum(1), 100.0)
  with pytest.raises(ValueError, match="255"):
    lm.class_pixel_counts(layouts, K)
  with pytest.raises(ValueError, match="no labelled pixel"):
    lm.class_percentages(np.full((2, 3, 3), IGNORE), K, ignore_id=IGNORE)


def _layout_set(seed, n, probs, h=8, w=8):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    p = rng.dirichlet(np.asarray(probs) * 20)   # varying class shares per layout
    out.append(rng.choice(len(probs), size=(h, w), p=p))
  return np.stack(out)


def _fsd_by_hand(a, b, k):
  """Percentages by a loop; Frechet distance with the trace of the matrix square root
  from eigen-decompositions: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2)."""
  def stats(layouts):
    f = np.array([[100.0 * np.sum(l == c) / l.size for c in range(k)] for l in layouts])
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (len(f) - 1)

  (m1, s1), (m2, s2) = stats(a), stats(b)
  e, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.clip(e, 0, None))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def test_fsd_is_zero_for_identical_sets_symmetric_and_matches_a_hand_computation():
  # Class 5 never occurs: singular covariances, as in real data.
  a = _layout_set(0, 80, [5, 2, 1, 1, 1, 0])
  b = _layout_set(1, 60, [3, 3, 2, 1, 0.5, 0])
  # (Rounding only: the traces are ~1e3 here.)
  assert abs(lm.fsd(a, a, K)) < 1e-5
  ab, ba = lm.fsd(a, b, K), lm.fsd(b, a, K)
  assert ab == pytest.approx(ba, rel=1e-6)
  assert ab == pytest.approx(_fsd_by_hand(a, b, K), rel=1e-6)
  assert ab > 100   # well apart: the mean share of class 0 differs by ~17 points
  assert lm.fsd(a, _layout_set(2, 80, [5, 2, 1, 1, 1, 0]), K) < 0.1 * ab   # same distribution


def test_fsd_does_not_depend_on_the_resolution():
  a = _layout_set(3, 40, [4, 2, 1, 1, 1, 1])
  b = _layout_set(4, 50, [2, 2, 2, 1, 1, 1])
  up = np.repeat(np.repeat(b, 3, axis=1), 2, axis=2)   # 8x8 -> 24x16, same shares
  assert lm.fsd(a, up, K) == pytest.approx(lm.fsd(a, b, K), rel=1e-9)


def test_fsd_leaves_ignored_pixels_out_of_the_shares():
  a = _layout_set(5, 40, [4, 2, 1, 1, 1, 1])
  with_void = np.concatenate([a, np.full((40, 8, 8), IGNORE)], axis=2)   # half unlabelled
  assert abs(lm.fsd(a, with_void, K, ignore_id=IGNORE)) < 1e-5
