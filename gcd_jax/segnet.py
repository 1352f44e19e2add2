"""A small trained segmentation network: the "domain feature network" of a dataset.

On any prepared dataset it gives
  1. a segmenter (image -> layout) for judging generated images where no exact
     oracle exists (`gcd_jax.metrics.segmenters.Segmenter`), and
  2. image features for a domain Frechet distance fd_seg and kid_seg
     (`gcd_jax.metrics.fid.FeatureExtractor`; a domain metric, not FID).

Train, then load:

  python -m gcd_jax.segnet train --dataset=synthetic_scenes --config=32 --out=/tmp/segnet

  model = segnet.load("/tmp/segnet")
  layouts = model(images_uint8)                  # [N, H, W] int32 class ids
  feats = model.features(images_uint8)           # [N, D] float32
  extractor = model.feature_extractor()          # name "segnet", identity, dim
  frechet.frechet_distance_of(extractor(a), extractor(b))   # fd_seg

The network (`SegNet`) is a small U-Net: 3x3 convolutions + GroupNorm + SiLU
(none after the first convolution, so absolute colour survives),
`len(widths) - 1` average-pool downsamplings (2 by default, so H and W must be
divisible by 4), nearest-neighbour upsampling with skip connections, and a 1x1
classifier giving K logits per pixel. Its features are the global mean over
pixels of the bottleneck and of every decoder level, concatenated: the
bottleneck has the largest receptive field and describes the scene's structure
(which shapes, where, how large), and the last decoder level (the classifier's
input, the penultimate layer) holds the per-pixel class evidence, so its mean is
a soft class histogram; the levels between carry intermediate scales.

Files in the output directory (the json is written last and marks completion):
  segnet.msgpack   flax.serialization.to_bytes of the parameters
  segnet.json      config, the dataset's LayoutClasses, training settings, the
                   held-out mIoU and `identity` = "segnet-" + 16 hex of the
                   sha256 of segnet.msgpack (what feature caches key on).

Images of another size than the training size are resized inside (bilinear,
`jax.image.resize`) before the network; the logits are resized back to the
input size before the argmax, so layouts always have the input's H, W.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from absl import flags

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from gcd_jax import cli
from gcd_jax import fileio
from gcd_jax import visualize
from gcd_jax.data import pipeline
from gcd_jax.data.features import LayoutClasses
from gcd_jax.metrics import fid
from gcd_jax.metrics import layout_metrics
from gcd_jax.metrics import segmenters

if TYPE_CHECKING:
  import tensorflow_datasets as tfds

WEIGHTS_FILE = "segnet.msgpack"
RECORD_FILE = "segnet.json"
FORMAT = "gcd_jax.segnet/1"

# Training defaults, chosen for synthetic_scenes/32 (50k 32x32 images, K = 8) on
# a 2-core CPU: 0.15 s/step measured on a CPU that was already busy (load ~4), so
# about 4 minutes for 1500 steps (~1 epoch), less on an idle one. The aim is a
# held-out mIoU >= 0.9. That has not been measured at these settings; the
# evidence is that a net with half these widths, trained 300 steps of 16 images
# on the 200 images of 32_mini, already reaches 0.89.
DEFAULT_WIDTHS = (16, 32, 64)
DEFAULT_STEPS = 1500
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 3e-3
WARMUP_FRACTION = 0.05
EVAL_BATCH_SIZE = 256


# ---------------------------------------------------------------------------
# The network.


@dataclasses.dataclass(frozen=True)
class SegNetConfig:
  """Architecture of a SegNet.

  Attributes:
    num_classes: K, logits per pixel.
    widths: channels per resolution level, full resolution first; the last is
      the bottleneck. len(widths) - 1 downsamplings (by 2 each).
    groups: GroupNorm groups; must divide every width.
  """
  num_classes: int
  widths: tuple[int, ...] = DEFAULT_WIDTHS
  groups: int = 8

  def __post_init__(self):
    object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
    if self.num_classes < 1:
      raise ValueError(f"SegNetConfig: num_classes must be >= 1, got {self.num_classes}.")
    if len(self.widths) < 2:
      raise ValueError(f"SegNetConfig: need >= 2 widths (one downsampling), got {self.widths}.")
    if self.groups < 1 or any(w < 1 or w % self.groups for w in self.widths):
      raise ValueError(f"SegNetConfig: groups {self.groups} must divide every width {self.widths}.")

  @property
  def downsamplings(self) -> int:
    return len(self.widths) - 1

  @property
  def feature_dim(self) -> int:
    """D: the bottleneck's width plus every decoder level's."""
    return sum(self.widths)

  def check_size(self, image_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) as ints; raises ValueError unless both are divisible by 2**downsamplings."""
    h, w = (int(v) for v in image_size)
    f = 2 ** self.downsamplings
    if h < f or w < f or h % f or w % f:
      raise ValueError(f"SegNet with {self.downsamplings} downsamplings needs an image size"
                       f" divisible by {f}; got {h}x{w} (HxW).")
    return h, w

  def to_dict(self) -> dict[str, Any]:
    return {"num_classes": self.num_classes, "widths": list(self.widths), "groups": self.groups}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> SegNetConfig:
    return cls(num_classes=int(d["num_classes"]), widths=tuple(d["widths"]),
               groups=int(d["groups"]))


class ConvBlock(nn.Module):
  """Two (3x3 conv -> GroupNorm -> SiLU); `stem`: no GroupNorm after the first conv."""
  width: int
  groups: int
  stem: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(2):
      x = nn.Conv(self.width, (3, 3), padding="SAME", name=f"conv{i}")(x)
      if not (self.stem and i == 0):
        x = nn.GroupNorm(num_groups=self.groups, name=f"norm{i}")(x)
      x = nn.silu(x)
    return x


class SegNet(nn.Module):
  """Small U-Net: images [B, H, W, 3] in [-1, 1] -> (logits [B, H, W, K], features [B, D]).

  features: the global means of the bottleneck and of every decoder level,
  concatenated (coarsest first, the classifier's input last); see the module
  docstring. D = sum(widths).

  The very first convolution has no GroupNorm: normalising its output per image
  would remove the absolute colour (brightness, chroma) of the pixels, which is
  the evidence of their class (on synthetic_scenes, 300 steps of a tiny net gave
  a held-out mIoU of 0.66 with it and 0.89 without).
  """
  config: SegNetConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    c = self.config
    skips = []
    for level, width in enumerate(c.widths):
      if level:
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))
      x = ConvBlock(width, c.groups, stem=level == 0, name=f"down{level}")(x)
      skips.append(x)
    pooled = [x.mean(axis=(1, 2))]  # bottleneck
    for level in reversed(range(c.downsamplings)):
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
      x = jnp.concatenate([x, skips[level]], axis=-1)
      x = ConvBlock(c.widths[level], c.groups, name=f"up{level}")(x)
      pooled.append(x.mean(axis=(1, 2)))
    logits = nn.Conv(c.num_classes, (1, 1), name="classifier")(x)
    return logits, jnp.concatenate(pooled, axis=-1)


def param_shapes(config: SegNetConfig, image_size: Sequence[int] = (32, 32)) -> Any:
  """The parameter tree of SegNet(config) as jax.ShapeDtypeStructs (nothing computed)."""
  h, w = config.check_size(image_size)
  x = jax.ShapeDtypeStruct((1, h, w, 3), jnp.float32)
  return jax.eval_shape(lambda x: SegNet(config).init(jax.random.PRNGKey(0), x), x)["params"]


def init_params(config: SegNetConfig, image_size: Sequence[int] = (32, 32),
                seed: int = 0) -> Any:
  """Fresh parameters of SegNet(config), drawn in numpy from `seed`.

  Kernels are LeCun normal (std sqrt(1 / fan_in)), GroupNorm scales 1, biases 0.
  Numpy rather than `module.init`: on CPU, compiling JAX's random initialisers
  takes seconds (about 10 s for this small net), drawing them here milliseconds.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = getattr(path[-1], "key", str(path[-1]))
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)
    if name == "scale":
      return np.ones(leaf.shape, leaf.dtype)
    return np.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, param_shapes(config, image_size))


# ---------------------------------------------------------------------------
# Loss and training.


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array | np.ndarray,
                        ignore_id: int | None = None) -> jax.Array:
  """Softmax cross-entropy averaged over the labelled pixels.

  Args:
    logits: [..., K] float.
    labels: [...] integer class ids in [0, K), or `ignore_id`.
    ignore_id: pixels with this label are left out (neither their logits nor
      their labels change the loss); None: every pixel counts.

  Returns:
    Scalar mean over labelled pixels (0 when none is labelled).
  """
  labels = jnp.asarray(labels, jnp.int32)
  if ignore_id is None:
    mask = jnp.ones(labels.shape, bool)
  else:
    mask = labels != ignore_id
  safe = jnp.where(mask, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  ce = jnp.where(mask, ce, 0.0)
  return ce.sum() / jnp.maximum(mask.sum(), 1)


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(lr: float, steps: int) -> optax.GradientTransformation:
  """Adam with a linear warm-up (5% of the steps, at least 1) and cosine decay to 0."""
  warmup = max(1, int(round(WARMUP_FRACTION * steps)))
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), 0.0)
  return optax.adam(schedule)


def make_train_step(
    config: SegNetConfig, optimizer: optax.GradientTransformation, ignore_id: int | None
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
  """jitted (state, images [B,H,W,3] in [-1,1], layouts [B,H,W]) -> (state, loss); donates state."""
  module = SegNet(config)

  def loss_fn(params, images, layouts):
    logits, _ = module.apply({"params": params}, images)
    return pixel_cross_entropy(logits, layouts, ignore_id)

  def step(state: TrainState, images, layouts):
    loss, grads = jax.value_and_grad(loss_fn)(state.params, images, layouts)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss

  return jax.jit(step, donate_argnums=0)


class InputError(cli.InputError):
  """A bad dataset, split or size given to `train` (the CLI exits 2 on it)."""


def dataset_image_size(builder: tfds.core.DatasetBuilder) -> tuple[int, int] | None:
  """(H, W) declared by the builder's image feature, None when it varies."""
  shape = builder.info.features["image"].shape
  if shape[0] is None or shape[1] is None:
    return None
  return int(shape[0]), int(shape[1])


def _setup(dataset, data_dir, split, eval_split, image_size, config_fn):
  """Checks the inputs of `train`: (builder, classes, config, image size)."""
  builder = pipeline.load_builder(dataset, data_dir)  # FileNotFoundError if absent
  classes = pipeline.layout_classes(builder)
  config = config_fn(classes.num_classes)
  if image_size is None:
    image_size = dataset_image_size(builder)
    if image_size is None:
      raise InputError(f"Dataset {dataset!r} has images of varying size; pass image_size (H, W).")
  try:
    image_size = config.check_size(image_size)
  except ValueError as e:
    raise InputError(str(e)) from None
  for s in [split] + ([eval_split] if eval_split else []):
    try:
      pipeline.data_source(dataset, s, data_dir)
    except ValueError as e:
      raise InputError(str(e)) from None
  return builder, classes, config, image_size


def train(dataset: str, *, data_dir: str | None = None, split: str = "train",
          eval_split: str | None = "test", image_size: Sequence[int] | None = None,
          steps: int = DEFAULT_STEPS, batch_size: int = DEFAULT_BATCH_SIZE,
          lr: float = DEFAULT_LR, seed: int = 0, out_dir: str | os.PathLike,
          widths: Sequence[int] = DEFAULT_WIDTHS, groups: int = 8, num_threads: int = 2,
          max_eval_examples: int | None = None, progress: bool = True) -> dict[str, Any]:
  """Trains a SegNet on `dataset`, evaluates it on `eval_split` and saves it to `out_dir`.

  Args:
    dataset: prepared dataset, "name/config" ("synthetic_scenes/32").
    data_dir: TFDS data dir (default ~/tensorflow_datasets).
    split: training split (no flips: a segmenter must keep left and right).
    eval_split: held-out split for the mIoU, None to skip it.
    image_size: (H, W) to train at; default the dataset's own size.
    steps, batch_size, lr, seed: Adam with warm-up and cosine decay.
    out_dir: where segnet.msgpack and segnet.json are written.
    widths, groups: the architecture (SegNetConfig).
    num_threads: data-loading threads.
    max_eval_examples: evaluate on at most this many held-out examples.
    progress: show a tqdm progress bar.

  Returns:
    The record written to segnet.json (see `save`), with "heldout_miou"
    (None without eval_split) and "heldout_per_class_iou".

  Raises:
    FileNotFoundError: the dataset is not prepared.
    InputError: unusable split or image size.
  """
  if steps < 1 or batch_size < 1 or not lr > 0:
    raise InputError(f"need steps >= 1, batch_size >= 1, lr > 0; got {steps}, {batch_size}, {lr}.")
  _, classes, config, image_size = _setup(
      dataset, data_dir, split, eval_split, image_size,
      lambda num_classes: SegNetConfig(num_classes=num_classes, widths=tuple(widths), groups=groups))
  ignore_id = classes.ignore_id

  optimizer = make_optimizer(lr, steps)
  params = init_params(config, image_size, seed)
  state = TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))
  train_step = make_train_step(config, optimizer, ignore_id)
  it = pipeline.make_train_iterator(
      dataset, image_size=image_size, batch_size=batch_size, split=split, seed=seed,
      flip=False, data_dir=data_dir, num_threads=num_threads)

  start = time.perf_counter()
  losses = []
  bar = tqdm.tqdm(total=steps, desc=f"segnet {dataset}", disable=not progress,
                  dynamic_ncols=True, file=sys.stderr)
  with bar:
    for i in range(steps):
      batch = next(it)
      state, loss = train_step(state, batch["image"], batch["layout"])
      losses.append(loss)
      if (i + 1) % 25 == 0 or i + 1 == steps:
        bar.set_postfix(loss=f"{float(loss):.4f}")
      bar.update(1)
  losses = np.asarray(jax.device_get(losses), np.float64)
  params = jax.device_get(state.params)
  train_seconds = time.perf_counter() - start

  model = SegNetModel(config, params, classes, image_size, identity="unsaved")
  miou, per_class = None, None
  if eval_split:
    miou, per_class = evaluate(model, dataset, split=eval_split, data_dir=data_dir,
                               max_examples=max_eval_examples, num_threads=num_threads)
  record = {
      "dataset": dataset,
      "data_dir": None if data_dir is None else str(data_dir),
      "split": split,
      "eval_split": eval_split,
      "steps": int(steps),
      "batch_size": int(batch_size),
      "lr": float(lr),
      "seed": int(seed),
      "final_loss": float(losses[-min(len(losses), 25):].mean()),
      "heldout_miou": miou,
      "heldout_per_class_iou": per_class,
      "train_seconds": round(train_seconds, 2),
  }
  return save(out_dir, config, params, classes, image_size, record)


def evaluate(model: SegNetModel, dataset: str, *, split: str = "test",
             data_dir: str | None = None, max_examples: int | None = None,
             num_threads: int = 2) -> tuple[float, list[float | None]]:
  """(mIoU, per-class IoU with None for absent classes) of `model` on a split.

  The images are read at the model's size and given to `model` as uint8, so
  the result is what `load(out_dir)` reproduces on the same images.
  """
  acc = layout_metrics.MIoU(model.num_classes, model.classes.ignore_id)
  it = pipeline.make_eval_iterator(dataset, image_size=model.image_size,
                                   batch_size=EVAL_BATCH_SIZE, split=split,
                                   data_dir=data_dir, num_threads=num_threads)
  seen = 0
  for batch in it:
    images, layouts = batch["image"], batch["layout"]
    if max_examples is not None:
      images, layouts = images[:max_examples - seen], layouts[:max_examples - seen]
    acc.update(model(visualize.to_uint8(images)), layouts)
    seen += len(images)
    if max_examples is not None and seen >= max_examples:
      break
  miou, per_class = acc.result()
  if np.isnan(miou):
    raise ValueError(f"{dataset!r} split {split!r}: no labelled pixel to evaluate on.")
  return float(miou), [None if np.isnan(v) else float(v) for v in per_class]


# ---------------------------------------------------------------------------
# Saving and loading.


def identity_of(weights: bytes) -> str:
  """"segnet-" + the first 16 hex digits of sha256(weights)."""
  return "segnet-" + hashlib.sha256(weights).hexdigest()[:16]


def save(out_dir: str | os.PathLike, config: SegNetConfig, params: Any, classes: LayoutClasses,
         image_size: Sequence[int], record: dict[str, Any] | None = None) -> dict[str, Any]:
  """Writes segnet.msgpack, then segnet.json (atomically each); returns the json record.

  `record` holds extra JSON-serialisable entries (training settings, mIoU); the
  format, config, classes, image size and identity are added here.
  """
  out = fileio.as_path(out_dir)
  h, w = config.check_size(image_size)
  weights = flax.serialization.to_bytes(jax.device_get(params))
  full = {
      "format": FORMAT,
      "identity": identity_of(weights),
      "weights_sha256": hashlib.sha256(weights).hexdigest(),
      "config": config.to_dict(),
      "classes": json.loads(classes.to_json()),
      "image_size": [h, w],
      "feature_dim": config.feature_dim,
      **(record or {}),
  }
  fileio.atomic_write(out / WEIGHTS_FILE, weights)
  fileio.atomic_write_text(out / RECORD_FILE, json.dumps(full, indent=2, sort_keys=True) + "\n")
  return full


def read_record(out_dir: str | os.PathLike) -> dict[str, Any]:
  """The parsed segnet.json of `out_dir`.

  Raises:
    FileNotFoundError: no segnet.json (not trained, or training did not finish).
    ValueError: it is not a segnet record.
  """
  path = fileio.as_path(out_dir) / RECORD_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file (train a segnet there first:"
                            " python -m gcd_jax.segnet train --dataset=... --out=DIR).")
  try:
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or record.get("format") != FORMAT:
      raise ValueError(f"format {record.get('format') if isinstance(record, dict) else None!r}"
                       f" is not {FORMAT!r}")
    SegNetConfig.from_dict(record["config"])
    LayoutClasses.from_json(json.dumps(record["classes"]))
    if len(record["image_size"]) != 2 or not isinstance(record["identity"], str):
      raise ValueError("bad image_size or identity")
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not a valid segnet record ({e}).") from None
  return record


def load(out_dir: str | os.PathLike, batch_size: int = EVAL_BATCH_SIZE) -> SegNetModel:
  """The SegNetModel saved in `out_dir` by `train` / `save`.

  Raises:
    FileNotFoundError: segnet.json or segnet.msgpack missing (named).
    ValueError: either file is corrupt or they do not belong together (named).
  """
  record = read_record(out_dir)
  path = fileio.as_path(out_dir) / WEIGHTS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no such file (the weights of {path.parent / RECORD_FILE}).")
  weights = path.read_bytes()
  if hashlib.sha256(weights).hexdigest() != record.get("weights_sha256"):
    raise ValueError(f"{path}: corrupt or replaced (its sha256 differs from the one recorded"
                     f" in {path.parent / RECORD_FILE}).")
  config = SegNetConfig.from_dict(record["config"])
  image_size = tuple(int(v) for v in record["image_size"])
  template = param_shapes(config, image_size)
  try:
    params = flax.serialization.from_bytes(template, weights)
  except Exception as e:  # msgpack and flax raise several types
    raise ValueError(f"{path}: cannot be read as SegNet parameters of {config} ({e}).") from None
  bad = [jax.tree_util.keystr(path_) for (path_, want), got in zip(
      jax.tree_util.tree_flatten_with_path(template)[0], jax.tree_util.tree_leaves(params))
         if tuple(want.shape) != tuple(np.shape(got))]
  if bad:
    raise ValueError(f"{path}: parameter shapes do not match {config}: {bad[:5]}.")
  classes = LayoutClasses.from_json(json.dumps(record["classes"]))
  return SegNetModel(config, params, classes, image_size, identity=record["identity"],
                     record=record, batch_size=batch_size)


class SegNetModel:
  """A trained SegNet as a Segmenter and (through `feature_extractor`) a FeatureExtractor.

  Images go through in batches of at most `batch_size`; each batch is padded to
  a power of two (or `batch_size`), so one jitted program serves every call
  with few compiled shapes. Images of another size than `image_size` are
  resized to it (bilinear) and the logits back, see the module docstring.

  Attributes:
    config: the SegNetConfig.
    params: the parameters.
    classes: the dataset's LayoutClasses.
    num_classes: K.
    image_size: (H, W) it was trained at.
    identity: "segnet-<16 hex of the weights' sha256>".
    dim: D, the feature width.
    record: the parsed segnet.json (empty for an unsaved model).
  """

  def __init__(self, config: SegNetConfig, params: Any, classes: LayoutClasses,
               image_size: Sequence[int], identity: str, record: dict[str, Any] | None = None,
               batch_size: int = EVAL_BATCH_SIZE) -> None:
    if classes.num_classes != config.num_classes:
      raise ValueError(f"SegNetModel: {classes.num_classes} classes but the network has"
                       f" {config.num_classes}.")
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    self.config = config
    self.params = jax.device_put(params)
    self.classes = classes
    self.num_classes = config.num_classes
    self.image_size = config.check_size(image_size)
    self.identity = identity
    self.dim = config.feature_dim
    self.record = dict(record or {})
    self.batch_size = batch_size
    self._forward = jax.jit(functools.partial(_forward, SegNet(config), self.image_size))

  def __repr__(self):
    return (f"SegNetModel({self.identity}, K={self.num_classes}, {self.image_size[0]}x"
            f"{self.image_size[1]}, D={self.dim})")

  def predict(self, images: jax.Array | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, 3] -> (layouts int32 [N, H, W], features float32 [N, D])."""
    images = segmenters.check_images(images, "SegNetModel")
    n = len(images)
    layouts, feats = [], []
    for start in range(0, n, self.batch_size):
      chunk = images[start:start + self.batch_size]
      m = len(chunk)
      padded = min(self.batch_size, 1 << (m - 1).bit_length())
      if padded > m:
        chunk = np.concatenate([chunk, np.zeros((padded - m,) + chunk.shape[1:], np.uint8)])
      lay, f = jax.device_get(self._forward(self.params, chunk))
      layouts.append(lay[:m])
      feats.append(f[:m])
    if not n:
      h, w = images.shape[1:3]
      return np.zeros((0, h, w), np.int32), np.zeros((0, self.dim), np.float32)
    layouts = segmenters.check_layouts(np.concatenate(layouts), images, self.num_classes,
                                       "SegNetModel")
    return layouts, np.concatenate(feats).astype(np.float32, copy=False)

  def __call__(self, images: jax.Array | np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N, H, W] int32 class ids (the Segmenter protocol)."""
    return self.predict(images)[0]

  def features(self, images: jax.Array | np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> [N, D] float32 (see SegNet)."""
    return self.predict(images)[1]

  def feature_extractor(self) -> fid.CallableFeatures:
    """The features as a FeatureExtractor named "segnet" (for fd_seg / kid_seg)."""
    return fid.CallableFeatures(fn=self.features, identity=self.identity, dim=self.dim,
                                name="segnet")


def _forward(module: SegNet, size: tuple[int, int], params, images):
  """uint8 [B, h, w, 3] -> (argmax layouts int32 [B, h, w], features [B, D])."""
  with jax.default_matmul_precision("float32"):
    x = images.astype(jnp.float32) * jnp.float32(2 / 255) - jnp.float32(1)
    b, h, w, _ = x.shape
    if (h, w) != tuple(size):
      x = jax.image.resize(x, (b, *size, 3), "bilinear")
    logits, feats = module.apply({"params": params}, x)
    if (h, w) != tuple(size):
      logits = jax.image.resize(logits, (b, h, w, logits.shape[-1]), "bilinear")
    return jnp.argmax(logits, axis=-1).astype(jnp.int32), feats


# ---------------------------------------------------------------------------
# Command line.


PROG = "python -m gcd_jax.segnet"


def parse_size(text: str) -> tuple[int, int]:
  """"32x64" (HxW) or "32" (square) -> (32, 64)."""
  m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*", text)
  if not m or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
    raise InputError(f"--size {text!r}: expected HxW, e.g. 32x32 or 128x256.")
  h = int(m.group(1))
  return h, int(m.group(2)) if m.group(2) else h


def parse_widths(text: Sequence[str]) -> tuple[int, ...]:
  """["16", "32", "64"] (a comma-separated flag) -> (16, 32, 64)."""
  try:
    w = tuple(int(v) for v in text)
  except ValueError:
    raise InputError(f"--widths {','.join(text)!r}: expected e.g. 16,32,64") from None
  if len(w) < 2 or min(w) < 1:
    raise InputError(f"--widths {','.join(text)!r}: need >= 2 positive widths")
  return w


def define_flags(fv: flags.FlagValues) -> None:
  """The flags of `python -m gcd_jax.segnet train`."""
  flags.DEFINE_string("dataset", None, "Dataset name, e.g. synthetic_scenes.", required=True,
                      flag_values=fv)
  flags.DEFINE_string("config", None, "Dataset config, e.g. 32 (-> synthetic_scenes/32).",
                      flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data dir (default ~/tensorflow_datasets).",
                      flag_values=fv)
  flags.DEFINE_string("out", None, "Output directory (default segnets/<dataset>_<config>).",
                      flag_values=fv)
  flags.DEFINE_integer("steps", DEFAULT_STEPS, "Training steps.", flag_values=fv)
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Training batch.", flag_values=fv)
  flags.DEFINE_float("lr", DEFAULT_LR, "Adam learning rate.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Seed of the initialisation and the data order.",
                       flag_values=fv)
  flags.DEFINE_string("size", None, "HxW to train at (default: the dataset's size).",
                      flag_values=fv)
  flags.DEFINE_list("widths", [str(w) for w in DEFAULT_WIDTHS], "Channels per level.",
                    flag_values=fv)
  flags.DEFINE_integer("groups", 8, "GroupNorm groups.", flag_values=fv)
  flags.DEFINE_string("split", "train", "Training split.", flag_values=fv)
  flags.DEFINE_string("eval_split", "test", "Held-out split ('' to skip).", flag_values=fv)
  flags.DEFINE_integer("num_threads", 2, "Input-pipeline threads.", flag_values=fv)
  flags.DEFINE_bool("progress", True, "Show a progress bar (--noprogress: none).",
                    flag_values=fv)
  for name in ("steps", "batch_size", "lr", "groups", "num_threads"):
    flags.register_validator(name, lambda v: v > 0, message=f"--{name} must be > 0",
                             flag_values=fv)


def _command(args) -> None:
  widths = parse_widths(args.widths)
  size = parse_size(args.size) if args.size is not None else None
  SegNetConfig(num_classes=1, widths=widths, groups=args.groups)  # bad combinations fail here
  name = f"{args.dataset}/{args.config}" if args.config else args.dataset
  out = args.out or os.path.join("segnets", name.replace("/", "_"))
  record = train(name, data_dir=args.data_dir, split=args.split,
                 eval_split=args.eval_split or None, image_size=size, steps=args.steps,
                 batch_size=args.batch_size, lr=args.lr, seed=args.seed, out_dir=out,
                 widths=widths, groups=args.groups, num_threads=args.num_threads,
                 progress=args.progress)
  miou = record["heldout_miou"]
  print(f"held-out mIoU on {record['eval_split']}: "
        + (f"{miou:.4f}" if miou is not None else "not evaluated"))
  print(f"trained {record['steps']} steps in {record['train_seconds']:.0f} s;"
        f" wrote {os.path.join(out, WEIGHTS_FILE)} and {os.path.join(out, RECORD_FILE)}"
        f" (identity {record['identity']})")


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m gcd_jax.segnet train --dataset=... [flags]`; returns the exit status."""
  return cli.command_main(define_flags, _command, prog=PROG, doc=__doc__, argv=argv,
                          positional=("train",))


if __name__ == "__main__":
  sys.exit(main())
