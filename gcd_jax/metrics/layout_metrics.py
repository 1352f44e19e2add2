"""Layout metrics: mIoU (agreement of two layouts) and FSD (realism of layout statistics).

mIoU, as in the semantic segmentation benchmarks (Cityscapes, ADE20K): one
confusion matrix is summed over every pixel of every image, then per class

  IoU_c = TP_c / (TP_c + FP_c + FN_c)

and mIoU is the mean of IoU_c over the classes that occur in the prediction or
in the target (TP + FP + FN > 0). A class absent from both has no IoU (NaN in
`per_class`) and is left out of the mean, so a small evaluation is not rewarded
or punished for classes it never shows. Pixels whose *target* is `ignore_id`
are left out; `ignore_id` may also be a class id (Cityscapes' "unlabeled" = 19),
whose IoU is then NaN. `MIoU` accumulates the confusion matrix batch by batch,
so a large evaluation never holds every layout at once.

FSD (Frechet Segmentation Distance, Bau et al. 2019, "Seeing What a GAN Cannot
Generate"; used by Semantic Palette and GCDP): the Frechet distance between
Gaussians fitted to one feature vector per layout, the share of the image that
each class covers, in percent:

  feature_c = 100 * (pixels of class c) / (labelled pixels)   [N, K]

Percentages, not raw counts: that is the reference code (netdissect/fsd.py
scales per-image class fractions by 100), and it is what puts the paper's
Cityscapes numbers (42-90) in range: raw counts at 128x256 would give values
around 1e6-1e8 and fractions values below 1. Percentages also make FSD
independent of the resolution, so layouts of different sizes (generated at
128x256, reference at 256x512) can be compared. "Labelled pixels" excludes
`ignore_id`, so real layouts with unlabelled regions are not shifted against
generated ones that have none; without an ignore id it is H * W.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gcd_jax.metrics import frechet

if TYPE_CHECKING:
  import jax


def _as_int_array(x, name: str) -> np.ndarray:
  x = np.asarray(x)
  if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
    raise TypeError(f"{name}: need integer class ids, got dtype {x.dtype} (shape {x.shape}).")
  return x


def _check_range(values: np.ndarray, num_classes: int, name: str) -> None:
  """Raises ValueError if any of `values` (1-D int64) is outside [0, num_classes)."""
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    bad = np.unique(values[(values < 0) | (values >= num_classes)])
    raise ValueError(f"{name}: class id(s) {bad[:10].tolist()} outside [0, {num_classes});"
                     " pass ignore_id if one of them marks unlabelled pixels.")


def confusion_matrix(pred: jax.Array | np.ndarray, target: jax.Array | np.ndarray,
                     num_classes: int, ignore_id: int | None = None) -> np.ndarray:
  """Pixel counts [K, K] int64: entry [t, p] counts pixels of target t predicted as p.

  Args:
    pred: [N, H, W] (any shape equal to target's) integer class ids in [0, K).
    target: same shape, class ids in [0, K) or `ignore_id`.
    num_classes: K.
    ignore_id: pixels whose target has this value are not counted.
  """
  pred, target = _as_int_array(pred, "pred"), _as_int_array(target, "target")
  if pred.shape != target.shape:
    raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape.")
  num_classes = int(num_classes)
  p, t = pred.reshape(-1).astype(np.int64), target.reshape(-1).astype(np.int64)
  if ignore_id is not None:
    keep = t != ignore_id
    p, t = p[keep], t[keep]
  _check_range(t, num_classes, "target")
  _check_range(p, num_classes, "pred")
  return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_counts(tp: np.ndarray, target_count: np.ndarray, pred_count: np.ndarray,
                    ignore_id: int | None = None) -> np.ndarray:
  """Per-class IoU [K] = TP / (target + pred - TP) from per-class pixel counts;
  NaN for classes absent from both, and for `ignore_id` when it is a class id."""
  tp = np.asarray(tp, np.float64)
  union = np.asarray(target_count, np.float64) + np.asarray(pred_count, np.float64) - tp
  iou = np.full(len(tp), np.nan)
  np.divide(tp, union, out=iou, where=union > 0)
  if ignore_id is not None and 0 <= ignore_id < len(tp):
    iou[ignore_id] = np.nan
  return iou


def iou_from_confusion(confusion: np.ndarray, ignore_id: int | None = None) -> np.ndarray:
  """Per-class IoU [K] float64 of a confusion matrix; NaN for classes absent from
  both prediction and target, and for `ignore_id` when it is a class id."""
  c = np.asarray(confusion, np.float64)
  return iou_from_counts(np.diag(c), c.sum(1), c.sum(0), ignore_id)


def mean_present(per_class: np.ndarray) -> float:
  """Mean of the per-class IoUs that are not NaN (NaN when none is)."""
  present = per_class[~np.isnan(per_class)]
  return float(present.mean()) if present.size else float("nan")


class MIoU:
  """Streaming mIoU: `update` with each batch, `result` at the end.

    acc = MIoU(num_classes=20)
    for pred, target in batches:
      acc.update(pred, target)
    miou, per_class = acc.result()
  """

  def __init__(self, num_classes: int, ignore_id: int | None = None) -> None:
    self.num_classes = int(num_classes)
    self.ignore_id = ignore_id
    self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

  def update(self, pred: jax.Array | np.ndarray, target: jax.Array | np.ndarray) -> None:
    """Adds a batch: pred, target [N, H, W] class ids (see `confusion_matrix`)."""
    self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_id)

  def result(self) -> tuple[float, np.ndarray]:
    """(mIoU, per-class IoU [K]); mIoU is NaN when no pixel was counted."""
    per_class = iou_from_confusion(self.confusion, self.ignore_id)
    return mean_present(per_class), per_class


def miou(pred: jax.Array | np.ndarray, target: jax.Array | np.ndarray, num_classes: int,
         ignore_id: int | None = None) -> tuple[float, np.ndarray]:
  """(mean IoU over classes present in pred or target, per-class IoU [K] with NaN
  for absent classes) of pred vs target [N, H, W]; see the module docstring."""
  acc = MIoU(num_classes, ignore_id)
  acc.update(pred, target)
  return acc.result()


# Images per bincount in class_pixel_counts: bounds the int64 temporaries.
_COUNT_CHUNK = 64


def class_pixel_counts(layouts: jax.Array | np.ndarray, num_classes: int,
                       ignore_id: int | None = None) -> np.ndarray:
  """Pixels of each class in each layout: [N, H, W] -> [N, K] int64.

  Pixels equal to `ignore_id` are not counted; any other value outside [0, K)
  is an error.
  """
  layouts = _as_int_array(layouts, "layouts")
  if layouts.ndim != 3:
    raise ValueError(f"layouts: need [N, H, W] class ids, got shape {layouts.shape}.")
  n, num_classes = len(layouts), int(num_classes)
  counts = np.zeros((n, num_classes), np.int64)
  for start in range(0, n, _COUNT_CHUNK):
    ids = layouts[start:start + _COUNT_CHUNK].astype(np.int64)
    m = len(ids)
    ids = ids.reshape(m, -1)
    rows = np.broadcast_to(np.arange(m)[:, None], ids.shape)
    if ignore_id is not None:
      keep = ids != ignore_id
      ids, rows = ids[keep], rows[keep]
    else:
      ids, rows = ids.reshape(-1), rows.reshape(-1)
    _check_range(ids, num_classes, "layouts")
    counts[start:start + m] = np.bincount(rows * num_classes + ids, minlength=m * num_classes).reshape(m, num_classes)
  return counts


def class_percentages(layouts: jax.Array | np.ndarray, num_classes: int,
                      ignore_id: int | None = None) -> np.ndarray:
  """The FSD feature: [N, H, W] -> [N, K] float64, 100 * class pixels / labelled pixels."""
  return percentages_of_counts(class_pixel_counts(layouts, num_classes, ignore_id), ignore_id)


def percentages_of_counts(counts: np.ndarray, ignore_id: int | None = None) -> np.ndarray:
  """`class_percentages` from the [N, K] `class_pixel_counts` of the layouts."""
  counts = np.asarray(counts, np.float64)
  labelled = counts.sum(1, keepdims=True)
  if np.any(labelled == 0):
    raise ValueError(f"layouts: {int((labelled == 0).sum())} layout(s) have no labelled pixel"
                     f" (every pixel is ignore_id {ignore_id}).")
  return 100.0 * counts / labelled


def fsd(gen_layouts: jax.Array | np.ndarray, real_layouts: jax.Array | np.ndarray,
        num_classes: int, ignore_id: int | None = None) -> float:
  """Frechet distance between the class-percentage statistics of two sets of layouts.

  Args:
    gen_layouts: [N, H, W] class ids, N >= 2.
    real_layouts: [M, H', W'] class ids, M >= 2; the resolution may differ.
    num_classes: K.
    ignore_id: value of unlabelled pixels (left out of counts and of the
      denominator).

  For sets too large to hold, concatenate `class_percentages` of each batch and
  call `frechet.frechet_distance_of` on the two [N, K] arrays.
  """
  gen = class_percentages(gen_layouts, num_classes, ignore_id)
  real = class_percentages(real_layouts, num_classes, ignore_id)
  # (Percentages sum to 100, so every covariance is singular: frechet's
  # symmetric eigen solution is exact there.)
  return frechet.frechet_distance_of(gen, real)
