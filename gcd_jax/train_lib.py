"""Train state, optimizer, and the jitted joint training step.

The step is a pure function of (state, batch); `train.py` runs it in a loop.
Batch (global arrays, sharded over the batch axis):
  image:     [B, H, W, 3] float32 in [-1, 1]
  layout:    [B, H, W] int32 class ids (absent for an image-only model)
  text:      [B, L, D] float32 token states of a frozen text encoder, or
             [B, L] int32 word ids for a scratch encoder trained with the model
  text_mask: [B, L] bool
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import gaussian
from gcd_jax.diffusion import joint
from gcd_jax.diffusion import lowres
from gcd_jax.models import conditioned
from gcd_jax.models import unet as unet_lib

LOSS_TERMS = ("image", "layout")


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; one pytree, checkpointed whole.

  step: [] int32; rng: the run's base key (raw uint32[2]), from which each step
  derives its own key by folding in the step, so that a resumed run draws the
  same randomness as an uninterrupted one.
  """

  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  rng: jax.Array


def make_joint_schedule(config: ml_collections.ConfigDict) -> joint.JointSchedule:
  d = config.diffusion
  return joint.make_schedule(
      num_steps=d.num_steps,
      num_classes=config.model.num_classes,
      image=d.image_schedule,
      image_params=dict(d.image_schedule_params),
      layout=d.layout_schedule,
      layout_params=dict(d.layout_schedule_params),
  )


def make_lowres(config: ml_collections.ConfigDict) -> lowres.LowresConfig | None:
  """The SR stage's conditioning settings, or None for a base stage."""
  c = config.lowres
  if not c.height:
    return None
  return lowres.LowresConfig(height=c.height, width=c.width, schedule=c.schedule,
                             max_level=c.max_level, image_resize=c.image_resize)


def make_lowres_schedule(config: ml_collections.ConfigDict) -> joint.JointSchedule | None:
  """The SR stage's augmentation schedule (None for a base stage)."""
  lr = make_lowres(config)
  return None if lr is None else lowres.make_schedule(lr, config.diffusion.num_steps,
                                                      config.model.num_classes)


def schedules_record(config: ml_collections.ConfigDict, sched: joint.JointSchedule) -> dict:
  """Every noise schedule of a run, as plain data: the checkpoint records it and
  refuses to continue or sample with other ones. An SR stage adds its
  conditioning's settings and augmentation schedule under "lowres"."""
  lr = make_lowres(config)
  record = sched.describe()
  record["lowres"] = None if lr is None else {
      **lr.describe(), "augmentation": make_lowres_schedule(config).describe()}
  return record


def make_loss_config(config: ml_collections.ConfigDict) -> joint.LossConfig:
  c = config.loss
  return joint.LossConfig(
      prediction=config.model.prediction,
      image_weight=c.image_weight,
      layout_weight=c.layout_weight,
      image_p2_gamma=c.image_p2_gamma,
      layout_p2_gamma=c.layout_p2_gamma,
      p2_offset=c.p2_offset,
      layout_normalize=c.layout_normalize,
  )


def make_model(config: ml_collections.ConfigDict, scratch_vocab_size: int | None = None) -> nn.Module:
  """The denoiser (`unet.make_unet`), or the TextConditionedUNet when the text encoder trains from scratch.

  `scratch_vocab_size`: the vocabulary of the run's word tokenizer, needed
  (only) by a scratch encoder: `make_model(config, text.vocab_size)` with `text`
  from `text_conditioning.make_text`.
  """
  unet_config = unet_lib.UNetConfig.from_dict(config.model)
  if config.text.encoder != "scratch":
    return unet_lib.make_unet(unet_config)
  if not scratch_vocab_size:
    raise ValueError("config.text.encoder='scratch' needs the tokenizer's vocabulary size: "
                     "make_model(config, text.vocab_size), text = text_conditioning.make_text(...)")
  s = config.text.scratch
  return conditioned.TextConditionedUNet(unet_config, conditioned.ScratchTextConfig(
      vocab_size=scratch_vocab_size, max_length=config.text.max_length,
      num_layers=s.num_layers, num_heads=s.num_heads, dropout=s.dropout))


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up, then constant, cosine or linear decay to `end_factor` * lr."""
  o = config.optimizer
  lr, warmup, total = o.learning_rate, o.warmup_steps, config.train.num_steps
  if o.decay == "constant":
    decay = optax.constant_schedule(lr)
  elif o.decay == "cosine":
    decay = optax.cosine_decay_schedule(lr, max(total - warmup, 1), alpha=o.end_factor)
  elif o.decay == "linear":
    decay = optax.linear_schedule(lr, lr * o.end_factor, max(total - warmup, 1))
  else:
    raise ValueError(f"config.optimizer.decay={o.decay!r}; expected constant, cosine or linear")
  if warmup <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam / AdamW (the paper: Adam, lr 1.2e-4, betas (0.9, 0.99), no clipping)."""
  o = config.optimizer
  lr = learning_rate_schedule(config)
  if o.name == "adam":
    opt = optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)
  elif o.name == "adamw":
    opt = optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay)
  else:
    raise ValueError(f"config.optimizer.name={o.name!r}; expected adam or adamw")
  if o.grad_clip > 0:
    opt = optax.chain(optax.clip_by_global_norm(o.grad_clip), opt)
  return opt


def ema_decay(config: ml_collections.ConfigDict, step: jax.typing.ArrayLike) -> jax.Array:
  """EMA decay with warm-up: min(decay, (1 + step) / (warmup + step)), 0 before `ema.start`."""
  e = config.ema
  decay = jnp.minimum(e.decay, (1.0 + step) / (e.warmup + step)) if e.warmup > 0 else jnp.asarray(e.decay)
  return jnp.where(step < e.start, 0.0, decay)


def init_inputs(config: ml_collections.ConfigDict, batch_size: int = 1) -> tuple[tuple, dict]:
  """Concrete inputs of the model's shapes for `model.init`: zeros, an all-True text mask."""
  args, kwargs = unet_lib.example_inputs(
      unet_lib.UNetConfig.from_dict(config.model), batch_size, config.data.height,
      config.data.width, config.text.max_length, text_ids=config.text.encoder == "scratch")
  zeros = lambda s: None if s is None else jnp.zeros(s.shape, s.dtype)
  args = tuple(map(zeros, args[:4])) + (jnp.ones(args[4].shape, bool),)
  return args, {k: zeros(v) for k, v in kwargs.items()}


def init_params(config: ml_collections.ConfigDict, model: nn.Module, rng: jax.Array) -> Any:
  """Freshly initialised model parameters (what `init_state` starts from)."""
  init_rng, _ = jax.random.split(rng)
  args, kwargs = init_inputs(config)
  return model.init({"params": init_rng, "dropout": init_rng}, *args, **kwargs)["params"]


def init_state(config: ml_collections.ConfigDict, model: nn.Module, rng: jax.Array) -> TrainState:
  """A fresh state: params, EMA copy, optimizer state; call under jit."""
  _, state_rng = jax.random.split(rng)
  params = init_params(config, model, rng)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      ema_params=params,
      opt_state=make_optimizer(config).init(params),
      rng=state_rng,
  )


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def make_train_step(config: ml_collections.ConfigDict, model: nn.Module, sched: joint.JointSchedule,
                    ignore_id: int | None = None) -> Callable[..., tuple[TrainState, dict]]:
  """Returns train_step(state, batch) -> (state, metrics), to be jitted by the caller.

  A step whose loss or gradient is not finite leaves the state unchanged and
  reports it in `metrics["finite_*"]`; the loop stops the run with a message.

  `ignore_id` (the dataset's unlabelled value, >= K): such pixels are left out
  of the layout loss, and the model sees them as fully noised (uniform) at
  every step, so their labels change neither the input nor the loss.
  """
  loss_cfg = make_loss_config(config)
  optimizer = make_optimizer(config)
  lr_fn = learning_rate_schedule(config)
  mcfg = model.config
  has_layout = mcfg.has_layout
  num_classes = mcfg.num_classes
  caption_dropout = config.train.caption_dropout

  lowres_config = make_lowres(config)
  lowres_sched = make_lowres_schedule(config)

  def apply(params, x_t, y_t, lam, batch, drop_text, sc_image, sc_layout, dropout_rng, cond):
    return model.apply(
        {"params": params}, x_t, y_t, lam, batch["text"], batch["text_mask"],
        drop_text=drop_text, self_cond_image=sc_image, self_cond_layout=sc_layout,
        train=True, rngs={"dropout": dropout_rng}, **cond)

  def lowres_inputs(key, batch, x0):
    """An SR stage's conditioning from the batch itself: the low-res pair, noised."""
    if lowres_config is None:
      return {}
    image_low, layout_low = lowres.condition_from_data(
        lowres_config, x0, batch["layout"] if has_layout else None)
    key_level, key_aug = jax.random.split(key)
    steps = lowres.training_steps(key_level, lowres_config, lowres_sched.num_steps, x0.shape[0])
    x_aug, y_aug, lam_aug = lowres.augment(key_aug, lowres_sched, image_low, layout_low, steps,
                                           ignore_id)
    cond = {"lowres_image": x_aug, "lowres_log_snr": lam_aug}
    if has_layout:
      cond["lowres_layout"] = y_aug
    return cond

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    key_time, key_noise, key_drop, key_dropout, key_sc, key_sc_dropout = jax.random.split(rng, 6)
    x0 = batch["image"].astype(jnp.float32)
    bsz = x0.shape[0]
    # Its own key (folded, so that base stages keep their random streams).
    cond = lowres_inputs(jax.random.fold_in(rng, 7), batch, x0)
    k = joint.sample_steps(key_time, bsz, sched.num_steps)
    log_y0 = layout_mask = None
    if has_layout:
      log_y0 = categorical.log_onehot(batch["layout"], num_classes)
      if ignore_id is not None:
        layout_mask = batch["layout"] != ignore_id
        log_y0 = jnp.where(layout_mask[..., None], log_y0, -jnp.log(float(num_classes)))
    x_t, log_yk, eps = joint.q_sample(key_noise, sched, x0, log_y0, k)
    y_t = jnp.argmax(log_yk, axis=-1).astype(jnp.int32) if has_layout else None
    lam = joint.image_log_snr(sched, k)
    drop_text = jax.random.bernoulli(key_drop, caption_dropout, (bsz,))
    if "captioned" in batch:  # config.data.captioned_split: the others have no caption
      drop_text = drop_text | ~batch["captioned"]

    # Self-conditioning (Chen et al. 2022): half of the steps first predict
    # without it and feed the (gradient-stopped) estimates back in.
    sc_image = sc_layout = None
    if mcfg.self_condition_image or mcfg.self_condition_layout:
      zeros_img = jnp.zeros_like(x0)
      zeros_lay = jnp.zeros(x0.shape[:3] + (num_classes,), jnp.float32) if has_layout else None

      def estimate(_):
        out, logits = apply(state.params, x_t, y_t, lam, batch, drop_text,
                            zeros_img if mcfg.self_condition_image else None,
                            zeros_lay if mcfg.self_condition_layout else None, key_sc_dropout, cond)
        x0_hat, _ = gaussian.to_x0_eps(out.astype(jnp.float32), x_t, lam, mcfg.prediction)
        probs = jax.nn.softmax(logits.astype(jnp.float32), -1) if has_layout else None
        return jax.lax.stop_gradient(jnp.clip(x0_hat, -1, 1)), jax.lax.stop_gradient(probs)

      use = jax.random.bernoulli(key_sc, 0.5)
      est_img, est_lay = jax.lax.cond(use, estimate, lambda _: (zeros_img, zeros_lay), None)
      sc_image = est_img if mcfg.self_condition_image else None
      sc_layout = est_lay if mcfg.self_condition_layout else None

    def loss_fn(params):
      image_out, logits = apply(params, x_t, y_t, lam, batch, drop_text, sc_image, sc_layout,
                                key_dropout, cond)
      terms = joint.loss(sched, loss_cfg, x0, eps, log_y0, log_yk, k, image_out, logits,
                         layout_mask=layout_mask)
      return jnp.mean(terms["total"]), jax.tree.map(jnp.mean, terms)

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = _global_norm(grads)
    finite = {f"finite_{name}": jnp.isfinite(terms[name]) for name in LOSS_TERMS if name in terms}
    finite["finite_grad"] = jnp.isfinite(grad_norm)
    ok = jnp.all(jnp.stack(list(finite.values())))

    updates, new_opt_state = optimizer.update(grads, state.opt_state, state.params)
    finite["finite_update"] = jnp.isfinite(_global_norm(updates))
    ok = ok & finite["finite_update"]
    new_params = optax.apply_updates(state.params, updates)
    decay = ema_decay(config, state.step)
    new_ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_params)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
    new_state = state.replace(
        step=state.step + 1,
        params=keep(new_params, state.params),
        ema_params=keep(new_ema, state.ema_params),
        opt_state=keep(new_opt_state, state.opt_state),
    )
    metrics = {f"loss_{name}": v for name, v in terms.items() if name != "total"}
    metrics.update(loss=loss, grad_norm=grad_norm, learning_rate=lr_fn(state.step), **finite)
    return new_state, metrics

  return train_step


def nonfinite_terms(metrics: dict[str, Any]) -> list[str]:
  """Names of the loss terms (or 'grad') that were not finite in a step's metrics."""
  return [k[len("finite_"):] for k, v in metrics.items() if k.startswith("finite_") and not bool(v)]

