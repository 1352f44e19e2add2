"""The super-resolution stage's conditioning, as pure functions (docs/gcdp.md section 3).

An SR stage generates the (image, layout) pair at H x W given the same pair at a
lower resolution h x w, upsampled to H x W and noised ("noise conditioning
augmentation", Ho et al. 2021; Saharia et al. 2022):

  image   x_low = up(down(x0))   down: antialiased (area-weighted) resize, up:
                                 bilinear; or nearest both ways, as released
  layout  y_low = up(down(y0))   nearest neighbour both ways (class ids)
  level   one augmentation step a per example, shared by both modalities,
          a ~ Uniform{0, ..., floor(max_level * T) - 1} in training and
          a = round(level * T) at sampling (released: level 0.2)
  noise   x_aug ~ q(x_a | x_low), y_aug ~ q(y_a | y_low) under the augmentation
          schedule (released: the linear schedule on both sides), a
          `joint.JointSchedule` of its own
  model   told log-SNR_aug(a) (the image side's), besides its own time

In training the low-res pair is built from the batch's own high-resolution
data inside the step; at sampling it is the previous stage's output.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import joint

IMAGE_RESIZES = ("antialias", "nearest")


@dataclasses.dataclass(frozen=True)
class LowresConfig:
  """Every setting of an SR stage's conditioning (recorded in its checkpoints)."""

  height: int  # the low resolution h x w
  width: int
  schedule: str = "linear"  # the augmentation's log-SNR schedule, both modalities (as released)
  max_level: float = 0.999  # training levels are drawn from [0, max_level)
  image_resize: str = "antialias"  # antialias (down) + bilinear (up), or nearest (as released)

  def __post_init__(self) -> None:
    if self.height < 1 or self.width < 1:
      raise ValueError(f"LowresConfig: low resolution {self.height}x{self.width} must be >= 1")
    if not 0.0 < self.max_level <= 1.0:
      raise ValueError(f"LowresConfig.max_level={self.max_level} not in (0, 1]")
    if self.image_resize not in IMAGE_RESIZES:
      raise ValueError(f"LowresConfig.image_resize={self.image_resize!r}; expected one of "
                       f"{IMAGE_RESIZES}")

  def describe(self) -> dict:
    return dataclasses.asdict(self)


def make_schedule(config: LowresConfig, num_steps: int, num_classes: int) -> joint.JointSchedule:
  """The augmentation's own joint schedule (T steps; no layout side if num_classes = 0)."""
  return joint.make_schedule(num_steps, num_classes, image=config.schedule,
                             layout=config.schedule, layout_params={})


def _nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resize of [B, H, W, ...]: the source pixel whose centre is nearest."""
  h, w = x.shape[1], x.shape[2]
  rows = jnp.minimum(((jnp.arange(size[0]) + 0.5) * h / size[0]).astype(jnp.int32), h - 1)
  cols = jnp.minimum(((jnp.arange(size[1]) + 0.5) * w / size[1]).astype(jnp.int32), w - 1)
  return x[:, rows][:, :, cols]


def downsample_image(config: LowresConfig, image: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, h, w, C] (antialiased, or nearest as released)."""
  size = (config.height, config.width)
  if config.image_resize == "nearest":
    return _nearest(image, size)
  b, _, _, c = image.shape
  return jax.image.resize(image, (b, *size, c), "linear", antialias=True)


def upsample_image(config: LowresConfig, image: jax.Array, size: tuple[int, int]) -> jax.Array:
  """[B, h, w, C] -> [B, H, W, C] (bilinear, or nearest as released)."""
  if config.image_resize == "nearest":
    return _nearest(image, size)
  b, _, _, c = image.shape
  return jax.image.resize(image, (b, *size, c), "linear")


def downsample_layout(config: LowresConfig, layout: jax.Array) -> jax.Array:
  """[B, H, W] class ids -> [B, h, w] (nearest: no class is ever blended)."""
  return _nearest(layout, (config.height, config.width))


def upsample_layout(layout: jax.Array, size: tuple[int, int]) -> jax.Array:
  """[B, h, w] class ids -> [B, H, W] (nearest)."""
  return _nearest(layout, size)


def condition_from_data(config: LowresConfig, image: jax.Array,
                        layout: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
  """Training: the high-resolution batch's own low-res pair, upsampled back to H x W."""
  size = image.shape[1:3]
  image_low = upsample_image(config, downsample_image(config, image), size)
  layout_low = None if layout is None else upsample_layout(downsample_layout(config, layout), size)
  return image_low, layout_low


def condition_from_lowres(config: LowresConfig, image: jax.Array, layout: jax.Array | None,
                          size: tuple[int, int]) -> tuple[jax.Array, jax.Array | None]:
  """Sampling: the previous stage's [B, h, w] outputs upsampled to `size`."""
  if image.shape[1:3] != (config.height, config.width):
    raise ValueError(f"low-res image is {image.shape[1]}x{image.shape[2]}; this SR stage takes "
                     f"{config.height}x{config.width}")
  return (upsample_image(config, image, size),
          None if layout is None else upsample_layout(layout, size))


def training_steps(key: jax.Array, config: LowresConfig, num_steps: int,
                   batch_size: int) -> jax.Array:
  """One augmentation step per example, uniform on {0, ..., floor(max_level T) - 1}: [B] int32."""
  top = max(1, int(config.max_level * num_steps))
  return jax.random.randint(key, (batch_size,), 0, top, dtype=jnp.int32)


def sampling_step(level: float, num_steps: int) -> int:
  """The augmentation step of a sampling level in [0, 1]: round(level T), at most T - 1."""
  if not 0.0 <= level <= 1.0:
    raise ValueError(f"low-res augmentation level {level} not in [0, 1]")
  return min(int(round(level * num_steps)), num_steps - 1)


def augment(key: jax.Array, aug: joint.JointSchedule, image_low: jax.Array,
            layout_low: jax.Array | None, steps: jax.Array,
            ignore_id: int | None = None) -> tuple[jax.Array, jax.Array | None, jax.Array]:
  """Noises the low-res pair at `steps` ([B] int, one level for both modalities).

  Returns (x_aug [B, H, W, C], y_aug [B, H, W] int32 or None, log-SNR_aug [B]).
  Pixels labelled `ignore_id` (no class) are given uniform noise: their label
  never reaches the model.
  """
  log_y = None
  if layout_low is not None and aug.has_layout:
    num_classes = aug.layout.num_classes
    log_y = categorical.log_onehot(layout_low, num_classes)
    if ignore_id is not None:
      log_y = jnp.where((layout_low != ignore_id)[..., None], log_y, -jnp.log(float(num_classes)))
  x_aug, log_y_aug, _ = joint.q_sample(key, aug, image_low.astype(jnp.float32), log_y, steps)
  y_aug = None if log_y_aug is None else jnp.argmax(log_y_aug, -1).astype(jnp.int32)
  return x_aug, y_aug, joint.image_log_snr(aug, steps)
