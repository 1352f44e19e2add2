"""The joint Gaussian-categorical process: one shared integer time for both modalities.

A training example draws a step k uniformly from {0, ..., T-1}. The image is
noised at t = k / T with its log-SNR schedule, the layout at step k with its
categorical schedule, with independent noise (docs/gcdp.md section 2). Integer
steps are used on both sides: the released code floors float times and so uses
the wrong categorical step about 12% of the time (section 4, defect 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import gaussian
from gcd_jax.diffusion import schedules

ArrayLike = jax.typing.ArrayLike


@dataclasses.dataclass(frozen=True)
class JointSchedule:
  """Both noise schedules on the shared grid of T integer steps.

  Attributes:
    image_log_snr: [T] float32, lambda(k / T) of the image schedule.
    layout: the categorical schedule, or None for an image-only model.
    image_name, image_params: the image log-SNR schedule (static).
  """

  image_log_snr: Any
  layout: categorical.Schedule | None
  image_name: str = "cosine"
  image_params: tuple = ()

  @property
  def num_steps(self) -> int:
    return self.image_log_snr.shape[0]

  @property
  def has_layout(self) -> bool:
    """Whether the model generates a layout (False: the image-only baseline)."""
    return self.layout is not None

  def describe(self) -> dict:
    """Every schedule setting, as plain data (recorded in checkpoints)."""
    d = {
        "num_steps": self.num_steps,
        "image": {"name": self.image_name, "params": dict(self.image_params)},
        "layout": None,
    }
    if self.has_layout:
      d["layout"] = {
          "name": self.layout.name,
          "params": dict(self.layout.params),
          "num_classes": self.layout.num_classes,
      }
    return d


jax.tree_util.register_dataclass(
    JointSchedule,
    data_fields=["image_log_snr", "layout"],
    meta_fields=["image_name", "image_params"],
)


def make_schedule(
    num_steps: int = 1000,
    num_classes: int = 0,
    image: str = "cosine",
    image_params: dict | None = None,
    layout: str = "cosine_p",
    layout_params: dict | None = None,
) -> JointSchedule:
  """Builds the joint schedule; `num_classes=0` gives an image-only schedule.

  The defaults are GCDP's: cosine log-SNR for the image and cosine_p with p = 1
  for the layout (the same abar on both sides).
  """
  image_params = dict(image_params or {})
  layout_params = dict(layout_params if layout_params is not None else
                       ({"p": 1.0} if layout == "cosine_p" else {}))
  t = np.arange(num_steps, dtype=np.float64) / num_steps
  lam = np.asarray(schedules.log_snr(image, t, **image_params), np.float64)
  layout_sched = None
  if num_classes:
    layout_sched = categorical.make_schedule(layout, num_steps, num_classes, **layout_params)
  return JointSchedule(
      image_log_snr=jnp.asarray(lam, jnp.float32),
      layout=layout_sched,
      image_name=image,
      image_params=tuple(sorted(image_params.items())),
  )


def sample_steps(key: jax.Array, batch_size: int, num_steps: int) -> jax.Array:
  """k ~ Uniform{0, ..., T-1}: [B] int32."""
  return jax.random.randint(key, (batch_size,), 0, num_steps, dtype=jnp.int32)


def step_to_time(k: ArrayLike, num_steps: int) -> jax.Array:
  """The Gaussian side's continuous time t = k / T."""
  return jnp.asarray(k, jnp.float32) / num_steps


def image_log_snr(sched: JointSchedule, k: ArrayLike) -> jax.Array:
  """lambda(k / T) from the table: [B] for k [B]."""
  return sched.image_log_snr[jnp.asarray(k, jnp.int32)]


def q_sample(key: jax.Array, sched: JointSchedule, x0: jax.Array, log_y0: jax.Array | None,
             k: ArrayLike) -> tuple[jax.Array, jax.Array | None, jax.Array]:
  """Noises (x0, y0) at the shared step k with independent noise.

  Args:
    key: PRNG key.
    sched: the joint schedule.
    x0: [B, H, W, C] float image in [-1, 1].
    log_y0: [B, H, W, K] log one-hot layout, or None for an image-only model.
    k: [B] int steps.

  Returns:
    (x_t [B, H, W, C], log_y_k [B, H, W, K] or None, eps [B, H, W, C]).
  """
  key_img, key_lay = jax.random.split(key)
  eps = jax.random.normal(key_img, x0.shape, x0.dtype)
  x_t = gaussian.q_sample(x0, image_log_snr(sched, k), eps)
  log_yk = None
  if log_y0 is not None:
    log_yk = categorical.q_sample(key_lay, sched.layout, log_y0, k)
  return x_t, log_yk, eps


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Weights of the joint loss (GCDP's released settings by default).

  Attributes:
    prediction: what the image head predicts, 'eps', 'x0' or 'v'.
    image_weight, layout_weight: w_img and w_lbl of the total loss.
    image_p2_gamma, layout_p2_gamma: exponent of the p2 weight (offset + SNR)^-gamma
      per modality; 0 switches it off. The released code applies gamma = 0.5
      to both terms.
    p2_offset: the offset of the p2 weight (k in Choi et al.; 1 as released).
    layout_normalize: categorical.vb_loss normalisation, 'official' or 'bits'.
  """

  prediction: str = "eps"
  image_weight: float = 1.0
  layout_weight: float = 1.0
  image_p2_gamma: float = 0.5
  layout_p2_gamma: float = 0.5
  p2_offset: float = 1.0
  layout_normalize: str = "official"


def loss(sched: JointSchedule, cfg: LossConfig, x0: jax.Array, eps: jax.Array,
         log_y0: jax.Array | None, log_yk: jax.Array | None, k: ArrayLike,
         image_out: jax.Array, layout_logits: jax.Array | None,
         layout_mask: ArrayLike | None = None) -> dict[str, jax.Array]:
  """The joint loss from the network's two outputs, per example.

  L = w_img * p2_img(lambda) * mean (image_out - target)^2
    + w_lbl * p2_lbl(lambda) * vb_loss(layout)

  Args:
    sched, cfg: schedule and loss settings.
    x0, eps: [B, H, W, C] clean image and the noise used to make x_t.
    log_y0, log_yk: [B, H, W, K] log one-hot clean and noisy layouts (None for
      an image-only model).
    k: [B] int steps.
    image_out: [B, H, W, C] the network's image prediction (cfg.prediction).
    layout_logits: [B, H, W, K] the network's logits for y_0 (or None).
    layout_mask: optional [B, H, W] bool, False at unlabelled pixels (the
      dataset's ignore id), which are left out of the layout term.

  Returns:
    dict of [B] float32: "image" and "layout" (weighted terms) and "total".
  """
  lam = image_log_snr(sched, k)  # [B]
  target = gaussian.target(x0, eps, lam, cfg.prediction)
  mse = gaussian.mean_flat(jnp.square(image_out.astype(jnp.float32) - target))
  image_term = cfg.image_weight * gaussian.p2_weight(lam, cfg.image_p2_gamma, cfg.p2_offset) * mse
  out = {"image": image_term}
  total = image_term
  if layout_logits is not None:
    if log_y0 is None or log_yk is None or not sched.has_layout:
      raise ValueError("layout_logits given without log_y0, log_yk or a layout schedule")
    vb = categorical.vb_loss(sched.layout, log_y0, log_yk, layout_logits, k,
                             normalize=cfg.layout_normalize, pixel_mask=layout_mask)
    layout_term = (cfg.layout_weight
                   * gaussian.p2_weight(lam, cfg.layout_p2_gamma, cfg.p2_offset) * vb)
    out["layout"] = layout_term
    total = total + layout_term
  out["total"] = total
  return out
