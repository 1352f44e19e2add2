"""Segmenters: image -> layout models that judge generated images.

A segmenter reads what a generated image shows, for the image-layout agreement
(mIoU between the generated layout and the segmenter's reading of the generated
image) and for scoring image-only models, whose layout is the segmenter's.

The interface (`Segmenter`):

  segmenter(images)       images: [N, H, W, 3] uint8 RGB
                          returns [N, H, W] integer class ids of the dataset's
                          layout classes, at the same H, W as the images
  segmenter.num_classes   K (or None when unknown)

On synthetic_scenes the segmenter is `OracleSegmenter`, exact by construction
of the data. For other datasets a user gives one with `load_segmenter`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from gcd_jax.data import synthetic_scenes

if TYPE_CHECKING:
  import jax


@runtime_checkable
class Segmenter(Protocol):
  """images [N, H, W, 3] uint8 -> layouts [N, H, W] integer class ids."""

  num_classes: int | None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    ...


def check_images(images: jax.Array | np.ndarray, where: str) -> np.ndarray:
  """Validates images [N, H, W, 3] uint8; `where` names the caller in the error."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{where}: need uint8 images [N, H, W, 3], got {images.dtype} {images.shape};"
                     " convert [-1, 1] floats with gcd_jax.visualize.to_uint8.")
  return images


def check_layouts(layouts: jax.Array | np.ndarray, images: np.ndarray, num_classes: int | None,
                  where: str) -> np.ndarray:
  """Validates a segmentation of `images`: [N, H, W] integer ids in [0, num_classes).

  Returns it as int32.
  """
  layouts = np.asarray(layouts)
  want = images.shape[:3]
  if layouts.shape != want:
    raise ValueError(f"{where}: returned layouts of shape {layouts.shape} for images of shape"
                     f" {images.shape}; need [N, H, W] = {want} (class ids at the image size).")
  if not np.issubdtype(layouts.dtype, np.integer):
    raise ValueError(f"{where}: returned dtype {layouts.dtype}; need integer class ids"
                     " (argmax over classes, not scores).")
  if layouts.size and (layouts.min() < 0 or (num_classes is not None
                                              and layouts.max() >= num_classes)):
    raise ValueError(f"{where}: returned class ids in [{layouts.min()}, {layouts.max()}],"
                     f" outside [0, {num_classes if num_classes is not None else 'inf'}).")
  return layouts.astype(np.int32, copy=False)


class OracleSegmenter:
  """synthetic_scenes' exact per-pixel oracle (`synthetic_scenes.oracle_segment`)."""

  num_classes = synthetic_scenes.NUM_CLASSES

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = check_images(images, "OracleSegmenter")
    return synthetic_scenes.oracle_segment(images).astype(np.int32)

  def __repr__(self) -> str:
    return "OracleSegmenter()"


class CheckedSegmenter:
  """Wraps a user's segment function: validates its input and output, naming `spec`."""

  def __init__(self, fn: Callable[[np.ndarray], Any], num_classes: int | None,
               spec: str) -> None:
    self.fn = fn
    self.num_classes = num_classes
    self.spec = spec

  def __call__(self, images: np.ndarray) -> np.ndarray:
    images = check_images(images, f"segmenter {self.spec!r}")
    return check_layouts(self.fn(images), images, self.num_classes, f"segmenter {self.spec!r}")

  def __repr__(self) -> str:
    return f"CheckedSegmenter({self.spec!r}, num_classes={self.num_classes})"


def _takes_no_arguments(obj) -> bool:
  """Whether `obj` can be called with no arguments (a class or a factory)."""
  if inspect.isclass(obj):
    return True
  try:
    inspect.signature(obj).bind()
  except TypeError:
    return False
  except ValueError:  # No signature (some builtins): treat as a segment function.
    return False
  return True


def load_segmenter(spec: str, num_classes: int | None = None) -> Segmenter:
  """A segmenter from "module.path:name" (or "oracle" for synthetic_scenes).

  `name` (dots allowed: "module:Class.create") is imported and is either
    - a segment function: called with images [N, H, W, 3] uint8, returns
      [N, H, W] integer class ids at the same H, W (it has a required argument);
    - or a factory (a class, or a callable with no required argument): called
      once with no arguments, it returns such a function or object.
  The segmenter's number of classes is its `num_classes` attribute, or the
  `num_classes` argument (both given: they must agree); with either, outputs
  are checked to lie in [0, num_classes).

  Every call of the returned segmenter validates the images and the output
  (shape, integer dtype, range) and names `spec` in its errors.

  Raises:
    ValueError: spec is not "module:name", or num_classes disagree.
    ImportError: the module or the name cannot be imported.
    TypeError: the object (or what its factory returns) is not callable.
  """
  if spec == "oracle":
    seg = OracleSegmenter()
    if num_classes is not None and num_classes != seg.num_classes:
      raise ValueError(f"segmenter 'oracle' has {seg.num_classes} classes, not {num_classes}.")
    return seg
  module_name, sep, attr = spec.partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"segmenter {spec!r}: expected 'module.path:function_or_factory'"
                     " (or 'oracle' for synthetic_scenes).")
  try:
    obj = importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(f"segmenter {spec!r}: cannot import module {module_name!r}: {e}") from e
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise ImportError(f"segmenter {spec!r}: {module_name!r} has no attribute {attr!r}.")
    obj = getattr(obj, part)
  if not callable(obj):
    raise TypeError(f"segmenter {spec!r}: {attr!r} is a {type(obj).__name__}, not callable.")
  if _takes_no_arguments(obj):
    obj = obj()
    if not callable(obj):
      raise TypeError(f"segmenter {spec!r}: the factory returned a {type(obj).__name__},"
                      " not a callable segmenter.")
  own = getattr(obj, "num_classes", None)
  if own is not None and num_classes is not None and int(own) != int(num_classes):
    raise ValueError(f"segmenter {spec!r} has num_classes {own}, but {num_classes} were asked for.")
  if own is not None:
    num_classes = own
  return CheckedSegmenter(obj, None if num_classes is None else int(num_classes), spec)
