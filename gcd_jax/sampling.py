"""The joint reverse process: one compiled call from noise to (image, layout).

The reverse chain runs on a respaced grid of S integer steps
g = [T-1, ..., 0] out of the T training steps, inside one `lax.scan`: no host
round trip per step. Between grid steps k > j:
  image   ancestral DDPM: x_j ~ q(x_j | x_k, x0_hat) (any j < k, VDM form),
          DDIM with eta (0: deterministic), or DPM-Solver++(2M) (`dpm2m`: a
          second-order multistep solver in log-SNR, for few steps; eta = 0
          solves the probability-flow ODE, eta = 1 the reverse SDE, whose
          first-order step is the ancestral one);
  layout  y_j ~ q(y_j | y_k, y0_hat), the exact categorical posterior from the
          core for non-adjacent steps (never a float-time floor).
At the last grid step (k = 0) the outputs are x0_hat and the argmax (or a
sample) of the predicted layout distribution.

Classifier-free guidance: the conditional and unconditional passes are one
forward on a doubled batch; out = uncond + s (cond - uncond) with separate
scales for the image prediction and the layout. The layout guidance applies to
the raw logits as released (logit extrapolation, p_null^(1-s) p_cond^s per
pixel) or, by option, to the log-posterior of the reverse step.

Cross-modal outpainting / inpainting (RePaint, Lugmayr et al. 2022): known
regions of either modality are replaced at every step by the known data noised
to that step, and each step is repeated R times, re-noising both modalities
from j back to k with the correct kernels (`gaussian.renoise`,
`categorical.renoise`). Known regions are pasted back exactly at the end.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcd_jax import config_base
from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import gaussian
from gcd_jax.diffusion import joint
from gcd_jax.diffusion import lowres as lowres_lib


_DEFAULTS = config_base.base_config().sample


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
  """Settings of the reverse process (all static under jit).

  The defaults are the experiment config's (`config_base`, group `sample`):
  the one place where sampler defaults and allowed values are decided.
  """

  steps: int = _DEFAULTS.steps
  method: str = _DEFAULTS.method  # ddpm | ddim | dpm2m
  eta: float = _DEFAULTS.eta  # ddim / dpm2m noise (0: deterministic; 1: the ancestral step's variance)
  guidance_image: float = _DEFAULTS.guidance_image
  guidance_layout: float = _DEFAULTS.guidance_layout
  layout_guidance: str = _DEFAULTS.layout_guidance  # logits | posterior
  threshold: float = _DEFAULTS.threshold  # dynamic-thresholding percentile; 0: plain clip to [-1, 1]
  final_layout: str = _DEFAULTS.final_layout  # argmax | sample
  resample: int = 1  # RePaint: repetitions of each step when something is known
  lowres_level: float = _DEFAULTS.lowres_level  # SR stages: the low-res input's augmentation level

  def __post_init__(self):
    for name in ("method", "layout_guidance", "final_layout"):
      allowed = config_base.CHOICES[("sample", name)]
      if getattr(self, name) not in allowed:
        raise ValueError(f"SamplerConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
    if self.steps < 1:
      raise ValueError(f"SamplerConfig.steps={self.steps} must be >= 1")
    if self.resample < 1:
      raise ValueError(f"SamplerConfig.resample={self.resample} must be >= 1")
    if not 0.0 <= self.lowres_level <= 1.0:
      raise ValueError(f"SamplerConfig.lowres_level={self.lowres_level} not in [0, 1]")
    for name in ("eta", "threshold"):
      if not 0.0 <= getattr(self, name) <= 1.0:  # also refuses nan
        raise ValueError(f"SamplerConfig.{name}={getattr(self, name)} not in [0, 1]")
    for name in ("guidance_image", "guidance_layout"):
      if not 0.0 <= getattr(self, name) < float("inf"):
        raise ValueError(f"SamplerConfig.{name}={getattr(self, name)}: a guidance scale is a "
                         "finite number >= 0 (1: the conditional model alone)")

  def record(self, sr: bool) -> dict[str, Any]:
    """The settings as plain data (results keys, manifests); `lowres_level` only
    for an SR stage, whose samples are the only ones it changes."""
    d = dataclasses.asdict(self)
    if not sr:
      del d["lowres_level"]
    return d

  @property
  def guided(self) -> bool:
    return self.guidance_image != 1.0 or self.guidance_layout != 1.0

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict, known: bool = False,
                  **overrides: Any) -> "SamplerConfig":
    """From the `sample` group of an experiment config.

    known=True (outpainting or inpainting: RePaint) takes the method and steps
    from `repaint_method` / `repaint_steps`, since a multistep solver cannot
    replace known regions between its steps. Configs saved before those keys
    existed keep their own method and steps.
    """
    kw = dict(steps=c.steps, method=c.method, eta=c.eta, guidance_image=c.guidance_image,
              guidance_layout=c.guidance_layout, layout_guidance=c.layout_guidance,
              threshold=c.threshold, final_layout=c.final_layout)
    if "lowres_level" in c:
      kw["lowres_level"] = c.lowres_level
    if known and "repaint_method" in c:
      kw.update(method=c.repaint_method, steps=c.repaint_steps, eta=0.0)
    kw.update(overrides)
    return cls(**kw)


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[int, int, np.ndarray]]:
  """The batches of a job of `n` samples: (start, stop, index) per batch.

  `index` ([batch_size] int) picks the batch's items out of the n; the last
  batch is padded by repeating its last item, so that one compiled program
  serves every batch. Keep the first `stop - start` outputs.
  """
  if n < 1 or batch_size < 1:
    raise ValueError(f"padded_batches: n={n} and batch_size={batch_size} must be >= 1")
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    index = np.minimum(np.arange(start, start + batch_size), stop - 1)
    yield start, stop, index


def step_grid(num_train_steps: int, num_sample_steps: int) -> np.ndarray:
  """S distinct integer steps from T-1 down to 0: [S] int32."""
  if not 1 <= num_sample_steps <= num_train_steps:
    raise ValueError(f"sampling steps {num_sample_steps} must be in [1, {num_train_steps}]")
  if num_sample_steps == 1:
    return np.zeros((1,), np.int32)
  grid = np.round(np.linspace(num_train_steps - 1, 0, num_sample_steps)).astype(np.int32)
  assert len(np.unique(grid)) == num_sample_steps
  return grid


def dpm_h_ratios(log_snr_table: np.ndarray, grid: np.ndarray) -> np.ndarray:
  """DPM-Solver++(2M)'s 1 / (2 r) for each grid step (r = h_prev / h).

  [S - 1] float64 for the S - 1 transitions grid[i] -> grid[i + 1]. The first
  and the last transitions are first order (0): the first has no history, and
  the last spans the steep end of the log-SNR (to k = 0), where extrapolating
  the data prediction over a long step costs more than it gains (DPM-Solver's
  "lower order final").
  """
  half = log_snr_table[grid] / 2
  h = half[1:] - half[:-1]
  out = np.zeros(len(h))
  out[1:] = h[1:] / (2 * h[:-1])
  out[-1] = 0.0
  return out


# apply_fn(params, x_t, y_t, log_snr, text, text_mask, drop_text, sc_image, sc_layout,
#          **lowres) -> (image_pred [B, H, W, C], layout_logits [B, H, W, K] or None);
# an SR stage's lowres_image, lowres_layout and lowres_log_snr come as keywords.
ApplyFn = Callable[..., tuple[Any, Any]]


def model_apply_fn(model: nn.Module) -> ApplyFn:
  """An ApplyFn for a `JointUNet`."""

  def apply(params, x_t, y_t, lam, text, text_mask, drop_text, sc_image, sc_layout, **lowres):
    return model.apply({"params": params}, x_t, y_t, lam, text, text_mask,
                       drop_text=drop_text, self_cond_image=sc_image,
                       self_cond_layout=sc_layout, train=False, **lowres)

  return apply


class GuidedOutputs(NamedTuple):
  """The model's outputs at one step: conditional and (with guidance) unconditional."""

  image_cond: jax.Array  # [B, H, W, C] float32 image prediction
  image_uncond: jax.Array | None  # None when guidance is off
  logits_cond: jax.Array | None  # [B, H, W, K] float32 layout logits; None: image-only
  logits_uncond: jax.Array | None


def guided_outputs(apply_fn: ApplyFn, params: Any, cfg: SamplerConfig, x_t: jax.Array,
                   y_t: jax.Array | None, lam: jax.Array, text: jax.Array, text_mask: jax.Array,
                   sc_image: jax.Array | None = None,
                   sc_layout: jax.Array | None = None,
                   lowres: dict[str, jax.Array] | None = None) -> GuidedOutputs:
  """Conditional and unconditional outputs from one batched forward.

  The unconditional entries are None when guidance is off (scales of 1).
  `lowres`: an SR stage's conditioning keywords (the same for both passes).
  """
  b = x_t.shape[0]
  lowres = lowres or {}
  if not cfg.guided:
    img, logits = apply_fn(params, x_t, y_t, lam, text, text_mask,
                           jnp.zeros((b,), bool), sc_image, sc_layout, **lowres)
    return GuidedOutputs(img, None, logits, None)
  two = lambda a: None if a is None else jnp.concatenate([a, a], axis=0)
  drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
  img, logits = apply_fn(params, two(x_t), two(y_t), two(lam), two(text), two(text_mask),
                         drop, two(sc_image), two(sc_layout),
                         **{k: two(v) for k, v in lowres.items()})
  img = img.astype(jnp.float32)
  logits = None if logits is None else logits.astype(jnp.float32)
  return GuidedOutputs(img[:b], img[b:], None if logits is None else logits[:b],
                       None if logits is None else logits[b:])


def _mix(cond, uncond, scale):
  return cond if uncond is None else uncond + scale * (cond - uncond)


def apply_guidance(out: GuidedOutputs, cfg: SamplerConfig) -> tuple[jax.Array, jax.Array | None]:
  """Classifier-free guidance: (image prediction, layout logits or None).

  uncond + s (cond - uncond), with the image's and the layout's own scales;
  the layout's applies to the raw logits (as released).
  """
  image = _mix(out.image_cond, out.image_uncond, cfg.guidance_image).astype(jnp.float32)
  logits = (None if out.logits_cond is None
            else _mix(out.logits_cond, out.logits_uncond, cfg.guidance_layout))
  return image, logits


def x0_estimate(cfg: SamplerConfig, prediction: str, image_pred: jax.Array, x: jax.Array,
                lam: jax.Array) -> jax.Array:
  """x0_hat from the image prediction, dynamically thresholded (or clipped) to [-1, 1]."""
  x0_hat, _ = gaussian.to_x0_eps(image_pred, x, lam, prediction)
  if cfg.threshold > 0:
    return gaussian.dynamic_threshold(x0_hat, cfg.threshold)
  return jnp.clip(x0_hat, -1.0, 1.0)


def reverse_image_step(cfg: SamplerConfig, key: jax.Array, x: jax.Array, x0_hat: jax.Array,
                       lam_k: jax.Array, lam_j: jax.Array, x0_prev: jax.Array,
                       h_ratio: jax.Array) -> jax.Array:
  """x_j from x_k and x0_hat with the configured solver (ddpm, ddim or dpm2m).

  `x0_prev` and `h_ratio` are DPM-Solver++(2M)'s history (the previous step's
  x0_hat and 1 / (2 r), `dpm_h_ratios`); the other solvers ignore them.
  """
  noise = jax.random.normal(key, x.shape)
  if cfg.method == "dpm2m":
    return gaussian.dpm_solver_2m_step(x, x0_hat, x0_prev, lam_k, lam_j, h_ratio,
                                       cfg.eta, noise if cfg.eta else None)
  if cfg.method == "ddim":
    return gaussian.ddim_step(x, x0_hat, lam_k, lam_j, cfg.eta, noise)
  mean, var = gaussian.posterior(x0_hat, x, lam_k, lam_j)
  return mean + jnp.sqrt(var) * noise


def noise_known(key: jax.Array, sched: joint.JointSchedule, known: dict,
                step: jax.Array) -> dict:
  """The known data forward-noised to `step` ([B] int) for RePaint's replacement."""
  key_img, key_lay = jax.random.split(key)
  out = {}
  if "image" in known:
    lam = joint.image_log_snr(sched, step)
    out["image"] = gaussian.q_sample(known["image"], lam,
                                     jax.random.normal(key_img, known["image"].shape))
  if "layout" in known:
    log_y0 = categorical.log_onehot(known["layout"], sched.layout.num_classes)
    out["layout"] = jnp.argmax(categorical.q_sample(key_lay, sched.layout, log_y0, step),
                               -1).astype(jnp.int32)
  return out


def paste_known(x: jax.Array, y: jax.Array, known: dict,
                values: dict) -> tuple[jax.Array, jax.Array]:
  """`values` (e.g. the noised known data) where the masks of `known` say known."""
  if "image" in known:
    x = jnp.where(known["image_mask"][..., None], values["image"], x)
  if "layout" in known:
    y = jnp.where(known["layout_mask"], values["layout"], y)
  return x, y


def renoise_step(key: jax.Array, sched: joint.JointSchedule, x: jax.Array, y: jax.Array,
                 j: jax.Array, k: jax.Array, lam_j: jax.Array,
                 lam_k: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RePaint's way back: x_j -> x_k and y_j -> y_k with the forward kernels (j < k)."""
  key_x, key_y = jax.random.split(key)
  x = gaussian.renoise(x, lam_j, lam_k, jax.random.normal(key_x, x.shape))
  if sched.has_layout:
    log_y = categorical.log_onehot(y, sched.layout.num_classes)
    y = jnp.argmax(categorical.renoise(key_y, sched.layout, log_y, j, k), -1).astype(jnp.int32)
  return x, y


def reverse_layout_step(key: jax.Array, layout_sched: categorical.Schedule, y: jax.Array,
                        k: jax.typing.ArrayLike, j: jax.typing.ArrayLike, logits: jax.Array,
                        logits_cond: jax.Array | None = None,
                        logits_uncond: jax.Array | None = None, guidance: str = "logits",
                        scale: float = 1.0) -> jax.Array:
  """y_j ~ p(y_j | y_k): the categorical posterior with y_0 replaced by the prediction.

  Args:
    key: PRNG key.
    layout_sched: the categorical schedule.
    y: [B, H, W] int32 layout at step k.
    k, j: int steps, j < k.
    logits: [B, H, W, K] (guided) logits for y_0.
    logits_cond, logits_uncond: the two passes, for guidance="posterior".
    guidance: "logits" (extrapolate logits, as released: `logits` is already
      guided) or "posterior" (extrapolate the two log-posteriors with `scale`).
  Returns:
    [B, H, W] int32 layout at step j.
  """
  num_classes = layout_sched.num_classes
  log_yk = categorical.log_onehot(y, num_classes)
  kb = jnp.full(y.shape[:1], k)
  jb = jnp.full(y.shape[:1], j)
  if guidance == "posterior" and logits_uncond is not None:
    post = lambda l: categorical.posterior(layout_sched, jax.nn.log_softmax(l), log_yk, kb, jb)
    lp_c, lp_u = post(logits_cond), post(logits_uncond)
    log_post = jax.nn.log_softmax(lp_u + scale * (lp_c - lp_u), axis=-1)
  else:
    log_post = categorical.posterior(layout_sched, jax.nn.log_softmax(logits), log_yk, kb, jb)
  g = jax.random.gumbel(key, log_post.shape)
  return jnp.argmax(log_post + g, axis=-1).astype(jnp.int32)


def make_sampler(apply_fn: ApplyFn, sched: joint.JointSchedule, cfg: SamplerConfig, *,
                 height: int, width: int, channels: int = 3, prediction: str = "eps",
                 self_condition_image: bool = False, self_condition_layout: bool = False,
                 lowres_config: lowres_lib.LowresConfig | None = None,
                 lowres_sched: joint.JointSchedule | None = None
                 ) -> Callable[..., dict[str, jax.Array]]:
  """Returns a jitted `sample(params, key, text, text_mask, known=None, lowres=None) -> dict`.

  Args of the returned function:
    params: model parameters (the EMA parameters, normally).
    key: PRNG key.
    text: [B, L, D] float32 embeddings (or [B, L] int32 ids for a scratch encoder);
      text_mask: [B, L] bool.
    known: None or a dict with any of
      image [B, H, W, C] in [-1, 1] and image_mask [B, H, W] bool (True = known),
      layout [B, H, W] int32 and layout_mask [B, H, W] bool.
    lowres: an SR stage's input (with `lowres_config` and its augmentation
      schedule `lowres_sched`): {"image": [B, h, w, C] in [-1, 1], "layout":
      [B, h, w] int32 (joint models)}, the previous stage's output. It is
      upsampled as in training and noised at cfg.lowres_level.
  Returns:
    {"image": [B, H, W, C] float32 in [-1, 1], "layout": [B, H, W] int32 (if any)}.

  Compiled once per batch shape and configuration.
  """
  grid = step_grid(sched.num_steps, cfg.steps)
  h_ratios = dpm_h_ratios(np.asarray(sched.image_log_snr, np.float64), grid)
  has_layout = sched.has_layout
  num_classes = sched.layout.num_classes if has_layout else 0
  h, w, c = height, width, channels

  def predict(params, x, y, lam_b, text, text_mask, sc_img, sc_lay, cond):
    """Guided (x0_hat, layout logits or None, the raw outputs) at one step."""
    out = guided_outputs(apply_fn, params, cfg, x, y if has_layout else None, lam_b, text,
                         text_mask, sc_img if self_condition_image else None,
                         sc_lay if self_condition_layout else None, cond)
    image_pred, logits = apply_guidance(out, cfg)
    return x0_estimate(cfg, prediction, image_pred, x, lam_b), logits, out

  def lowres_inputs(key, lowres, b):
    """An SR stage's conditioning: the low-res input upsampled and noised at the fixed level."""
    if lowres_config is None:
      if lowres is not None:
        raise ValueError("lowres inputs were given to a base stage's sampler")
      return {}
    if lowres is None or "image" not in lowres or (has_layout and "layout" not in lowres):
      raise ValueError("an SR stage samples from a low-res input: lowres={'image'"
                       + (", 'layout'}" if has_layout else "}"))
    image_up, layout_up = lowres_lib.condition_from_lowres(
        lowres_config, lowres["image"], lowres.get("layout") if has_layout else None, (h, w))
    steps = jnp.full((b,), lowres_lib.sampling_step(cfg.lowres_level, lowres_sched.num_steps))
    x_aug, y_aug, lam_aug = lowres_lib.augment(key, lowres_sched, image_up, layout_up, steps)
    cond = {"lowres_image": x_aug, "lowres_log_snr": lam_aug}
    if has_layout:
      cond["lowres_layout"] = y_aug
    return cond

  @jax.jit
  def sample(params, key, text, text_mask, known=None, lowres=None):
    b = text.shape[0]
    # Folded, not split: base stages keep their random streams.
    cond = lowres_inputs(jax.random.fold_in(key, 7), lowres, b)
    known = dict(known or {})
    for name in ("image", "layout"):
      if name in known and f"{name}_mask" not in known:
        raise ValueError(f"known['{name}'] needs known['{name}_mask'] (True where known)")
    if known and cfg.method == "dpm2m":
      raise ValueError("method dpm2m (a multistep ODE solver) does not combine with RePaint's "
                       "known regions; use ddpm or ddim")
    key, key_x, key_y, key_known = jax.random.split(key, 4)
    x = jax.random.normal(key_x, (b, h, w, c))
    y = (jax.random.randint(key_y, (b, h, w), 0, num_classes, jnp.int32) if has_layout
         else jnp.zeros((b, h, w), jnp.int32))
    if known:
      x, y = paste_known(x, y, known, noise_known(key_known, sched, known,
                                                  jnp.full((b,), grid[0])))
    sc_img = jnp.zeros((b, h, w, c))
    sc_lay = jnp.zeros((b, h, w, max(num_classes, 1)))

    def one_step(carry, step_kj):
      x, y, sc_img, sc_lay, key = carry
      k, j = step_kj[0].astype(jnp.int32), step_kj[1].astype(jnp.int32)
      h_ratio = jnp.full((b,), step_kj[2])
      lam_k = jnp.full((b,), sched.image_log_snr[k])
      lam_j = jnp.full((b,), sched.image_log_snr[j])

      def transition(x, y, key):
        """One reverse step k -> j of both modalities."""
        key, key_img, key_lay = jax.random.split(key, 3)
        x0_hat, logits, out = predict(params, x, y, lam_k, text, text_mask, sc_img, sc_lay, cond)
        # sc_img holds the previous step's x0_hat: DPM-Solver++(2M)'s history.
        x_new = reverse_image_step(cfg, key_img, x, x0_hat, lam_k, lam_j, sc_img, h_ratio)
        y_new = (reverse_layout_step(key_lay, sched.layout, y, k, j, logits, out.logits_cond,
                                     out.logits_uncond, cfg.layout_guidance, cfg.guidance_layout)
                 if has_layout else y)
        probs = jax.nn.softmax(logits, -1) if has_layout else sc_lay
        return x_new, y_new, x0_hat, probs, key

      if not known:
        return transition(x, y, key), None

      def repaint(r, state):
        """One RePaint repetition: step, replace the known regions, and (but the last) go back."""
        x, y, _, _, key = state
        x, y, x0_hat, probs, key = transition(x, y, key)
        key, key_known, key_back = jax.random.split(key, 3)
        x, y = paste_known(x, y, known, noise_known(key_known, sched, known, jnp.full((b,), j)))
        x, y = jax.lax.cond(r < cfg.resample - 1,
                            lambda xy: renoise_step(key_back, sched, *xy, j, k, lam_j, lam_k),
                            lambda xy: xy, (x, y))
        return x, y, x0_hat, probs, key

      return jax.lax.fori_loop(0, cfg.resample, repaint, (x, y, sc_img, sc_lay, key)), None

    steps = jnp.asarray(np.stack([grid[:-1], grid[1:], h_ratios], axis=1), jnp.float32)  # [S-1, 3]
    (x, y, sc_img, sc_lay, key), _ = jax.lax.scan(one_step, (x, y, sc_img, sc_lay, key), steps)

    # Last grid step (k = 0): the model's clean estimates.
    lam_0 = jnp.full((b,), sched.image_log_snr[grid[-1]])
    x0_hat, logits, _ = predict(params, x, y, lam_0, text, text_mask, sc_img, sc_lay, cond)
    out = {"image": x0_hat}
    if has_layout:
      if cfg.final_layout == "argmax":
        layout = jnp.argmax(logits, -1)
      else:
        layout = jax.random.categorical(key, logits, axis=-1)
      out["layout"] = layout.astype(jnp.int32)
    if "image" in known:
      out["image"] = jnp.where(known["image_mask"][..., None], known["image"], out["image"])
    if "layout" in known and has_layout:
      out["layout"] = jnp.where(known["layout_mask"], known["layout"], out["layout"])
    return out

  return sample
