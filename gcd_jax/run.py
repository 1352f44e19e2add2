"""A run: what a checkpoint records, how a run is loaded, and its sampler.

The one place that owns these, shared by training (which writes the record and
samples its grids and evaluations), `sample`, `evaluate` and notebooks:

  r = run.load("workdirs/shapes")            # latest checkpoint; step=N for another
  out = r.sample(["A large red ball on the left."] * 4, seed=0)

Nothing here imports the training loop: loading a run for inference needs the
model, the schedules, the text encoder and the checkpoint, not the optimiser's
loop.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcd_jax import checkpointing
from gcd_jax import config_base
from gcd_jax import fileio
from gcd_jax import sampling
from gcd_jax import text_conditioning
from gcd_jax import train_lib
from gcd_jax.data.features import LayoutClasses
from gcd_jax.diffusion import joint
from gcd_jax.diffusion import lowres as lowres_lib

if TYPE_CHECKING:
  import flax.linen as nn


def dataset_name(config: ml_collections.ConfigDict) -> str:
  """"name/config" of the run's TFDS dataset (or "name" without a config)."""
  return f"{config.data.name}/{config.data.config}" if config.data.config else config.data.name


def run_metadata(config: ml_collections.ConfigDict, sched: joint.JointSchedule,
                 classes: LayoutClasses,
                 text: text_conditioning.FrozenText | text_conditioning.ScratchText) -> dict:
  """What a checkpoint records besides the arrays (see checkpointing.py)."""
  return {
      "config": json.loads(config.to_json_best_effort()),
      "schedules": train_lib.schedules_record(config, sched),
      "layout_classes": json.loads(classes.to_json()),
      "text_encoder": text.describe(),
  }


def check_schedules(saved: dict, current: dict, allow_change: bool, where: str) -> None:
  """Refuses to continue with other noise schedules than the checkpoint's.

  That includes an SR stage's augmentation ("lowres"; records made before
  there were SR stages have none).
  """
  saved = {"lowres": None, **saved}
  if saved != current and not allow_change:
    raise ValueError(
        f"{where} was trained with noise schedules {json.dumps(saved)} but the config asks for "
        f"{json.dumps(current)}; pass --config.allow_schedule_change=True to use them anyway.")


def make_sampler(config: ml_collections.ConfigDict, model: nn.Module, sched: joint.JointSchedule,
                 cfg: sampling.SamplerConfig) -> Callable[..., dict[str, jax.Array]]:
  """The compiled sampler of a run's model for sampler settings `cfg`.

  sampler(params, key, text, text_mask, known=None, lowres=None) -> {"image", "layout"?}.
  """
  m = model.config
  return sampling.make_sampler(
      sampling.model_apply_fn(model), sched, cfg, height=config.data.height,
      width=config.data.width, channels=m.image_channels, prediction=m.prediction,
      self_condition_image=m.self_condition_image, self_condition_layout=m.self_condition_layout,
      lowres_config=train_lib.make_lowres(config),
      lowres_sched=train_lib.make_lowres_schedule(config))


@dataclasses.dataclass
class Run:
  """Everything needed to sample from a checkpoint."""

  workdir: epath.Path
  config: ml_collections.ConfigDict
  step: int
  model: Any
  sched: joint.JointSchedule
  params: Any  # EMA parameters
  classes: LayoutClasses
  text: Any  # text_conditioning.FrozenText or ScratchText
  # Split each batch over this host's devices when their number divides it
  # (the same numbers either way: the noise is drawn for the whole batch).
  shard_batch: bool = True
  _samplers: dict = dataclasses.field(default_factory=dict)
  _placed: dict = dataclasses.field(default_factory=dict)

  @property
  def has_layout(self) -> bool:
    return self.sched.has_layout

  @functools.cached_property
  def weights_digest(self) -> str:
    """sha256 (16 hex digits) of the EMA parameters, their names, shapes and dtypes:
    names these weights in cache keys, where a workdir and step alone would not
    (a run retrained into the same workdir)."""
    h = hashlib.sha256()
    leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
    for path, leaf in sorted(leaves, key=lambda pl: jax.tree_util.keystr(pl[0])):
      a = np.asarray(jax.device_get(leaf))
      h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]

  @property
  def dataset(self) -> str:
    return dataset_name(self.config)

  def sampler(self, cfg: sampling.SamplerConfig) -> Callable[..., dict[str, jax.Array]]:
    """The compiled sampler for `cfg` (built once per configuration)."""
    if cfg not in self._samplers:
      self._samplers[cfg] = make_sampler(self.config, self.model, self.sched, cfg)
    return self._samplers[cfg]

  @property
  def is_sr(self) -> bool:
    """Whether this run is a super-resolution stage (it samples from a low-res input)."""
    return bool(self.config.lowres.height)

  def sample(self, captions: Iterable[str], seed: int = 0,
             cfg: sampling.SamplerConfig | None = None, known: dict | None = None,
             lowres: dict | None = None) -> dict:
    """Samples one image (and layout) per caption; returns numpy arrays.

    An SR stage needs `lowres` ({"image", "layout"?} at its low resolution).
    """
    cfg = cfg or sampling.SamplerConfig.from_config(self.config.sample)
    emb, mask = self.text.batch(list(captions))
    params, (emb, mask, known, lowres) = self._place((emb, mask, known, lowres))
    out = self.sampler(cfg)(params, jax.random.PRNGKey(seed), emb, mask, known, lowres)
    return jax.device_get(out)

  def _place(self, batch):
    """(params, batch): the batch split over the local devices when every array's
    leading axis divides evenly, else everything on the first device."""
    devices = jax.local_devices()
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(batch)}
    if not self.shard_batch or len(devices) == 1 or any(b % len(devices) for b in sizes):
      return self.params, jax.tree.map(jnp.asarray, batch)
    if "mesh" not in self._placed:
      mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
      self._placed["mesh"] = mesh
      self._placed["params"] = jax.device_put(
          self.params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    split = jax.sharding.NamedSharding(self._placed["mesh"], jax.sharding.PartitionSpec("data"))
    return self._placed["params"], jax.device_put(batch, split)


def downsample_known(config: lowres_lib.LowresConfig, known: dict) -> dict:
  """Known regions at an SR stage's resolution -> the same at its base stage's.

  Image antialiased, layout and masks nearest-neighbour, as an SR stage's own
  conditioning; arrays [B, H, W, ...] (numpy or jax).
  """
  out = {}
  if "image" in known:
    out["image"] = np.asarray(lowres_lib.downsample_image(config, jnp.asarray(known["image"])))
  for name in ("layout", "layout_mask", "image_mask"):
    if name in known:
      out[name] = np.asarray(lowres_lib.downsample_layout(config, jnp.asarray(known[name])))
  return out


@dataclasses.dataclass
class Cascade:
  """A base stage followed by a super-resolution stage: text -> (image, layout) at the SR size."""

  base: Run
  sr: Run

  def __post_init__(self) -> None:
    b, s = self.base, self.sr
    if not s.is_sr:
      raise ValueError(f"{s.workdir} is not a super-resolution stage (config.lowres.height = 0)")
    if b.is_sr:
      raise ValueError(f"{b.workdir} is itself an SR stage; give the base stage as --workdir")
    out_size = (b.config.data.height, b.config.data.width)
    in_size = (s.config.lowres.height, s.config.lowres.width)
    if out_size != in_size:
      raise ValueError(f"{b.workdir} makes {out_size[0]}x{out_size[1]} but the SR stage "
                       f"{s.workdir} takes {in_size[0]}x{in_size[1]}")
    if b.has_layout != s.has_layout:
      raise ValueError(f"{b.workdir} and {s.workdir}: a joint and an image-only stage do not chain")
    if b.has_layout and b.classes.names != s.classes.names:
      raise ValueError(f"{b.workdir} and {s.workdir} have other layout classes")

  @property
  def lowres(self) -> lowres_lib.LowresConfig:
    return train_lib.make_lowres(self.sr.config)

  def sample(self, captions: Sequence[str], seed: int, base_cfg: sampling.SamplerConfig,
             sr_cfg: sampling.SamplerConfig, known: dict | None = None) -> dict:
    """Both stages on the same captions: {"image", "layout"?} at the SR size and
    {"base_image", "base_layout"?} at the base size (numpy). `known` regions are
    given at the SR size; the base stage sees them downsampled, and both keep them."""
    base_known = downsample_known(self.lowres, known) if known else None
    low = self.base.sample(captions, seed=seed, cfg=base_cfg, known=base_known)
    lowres = {"image": low["image"]}
    if "layout" in low:
      lowres["layout"] = low["layout"]
    high = self.sr.sample(captions, seed=seed, cfg=sr_cfg, known=known, lowres=lowres)
    return {**high, **{f"base_{k}": v for k, v in low.items()}}

  def upsampled(self, captions: Sequence[str], seed: int, base_cfg: sampling.SamplerConfig,
                known: dict | None = None) -> dict:
    """The baseline the SR stage must beat: the base stage's outputs for the same
    captions and seed as `sample`, upsampled to the SR size without a model
    (image bilinear, layout nearest-neighbour). Known regions are pasted back
    at the SR size, so they are kept as in `sample`."""
    base_known = downsample_known(self.lowres, known) if known else None
    low = self.base.sample(captions, seed=seed, cfg=base_cfg, known=base_known)
    out = self.upsample(low)
    if known:
      out = paste_known(out, known)
    return {**out, **{f"base_{k}": v for k, v in low.items()}}

  def upsample(self, low: dict) -> dict:
    """{"image" [B, h, w, C] float, "layout"? [B, h, w]} at the base size -> the same
    at the SR size without a model: image bilinear, layout nearest-neighbour (numpy)."""
    size = (self.sr.config.data.height, self.sr.config.data.width)
    bilinear = dataclasses.replace(self.lowres, image_resize="antialias")  # up: bilinear
    out = {"image": np.asarray(lowres_lib.upsample_image(bilinear, jnp.asarray(low["image"]), size))}
    if "layout" in low:
      out["layout"] = np.asarray(lowres_lib.upsample_layout(jnp.asarray(low["layout"]), size))
    return out


def paste_known(out: dict, known: dict) -> dict:
  """Known pixels (image where image_mask, layout where layout_mask) over `out`."""
  out = dict(out)
  if "image" in known:
    m = np.asarray(known["image_mask"], bool)[..., None]
    out["image"] = np.where(m, np.asarray(known["image"]), out["image"])
  if "layout" in known and "layout" in out:
    m = np.asarray(known["layout_mask"], bool)
    out["layout"] = np.where(m, np.asarray(known["layout"]), out["layout"])
  return out


def load(workdir: str | os.PathLike, *, step: int | None = None,
         allow_schedule_change: bool = False, schedule_overrides: dict | None = None) -> Run:
  """Loads a checkpoint of `workdir` (the latest, or `step`) with its EMA parameters.

  Raises FileNotFoundError naming the workdir if it holds no checkpoint (or not
  `step`, listing the kept ones). `schedule_overrides` (keys of
  config.diffusion) are refused unless `allow_schedule_change`: a model is only
  valid with the schedules it was trained on.
  """
  workdir = fileio.as_path(workdir)
  # Without `step`, the newest checkpoint that reads (a truncated one is skipped
  # with a warning naming it).
  candidates = [step] if step is not None else checkpointing.kept_steps(workdir)

  def read(s):
    meta, _ = checkpointing.read_meta(workdir, s)
    config = config_base.complete(meta["config"])
    if "dtype" not in meta["config"].get("text", {}):
      config.text.dtype = "float32"  # saved before embeddings were rounded: they were float32
    if schedule_overrides:
      config.diffusion.update(schedule_overrides)
    text = text_conditioning.make_text(config, workdir)
    model = train_lib.make_model(config, text.vocab_size)
    # Only the EMA parameters are read (not the parameters or the optimiser state).
    abstract = jax.eval_shape(lambda r: train_lib.init_params(config, model, r),
                              jax.random.PRNGKey(0))
    params, _ = checkpointing.restore_ema_params(workdir, abstract, s)
    return meta, config, text, model, params

  step, (meta, config, text, model, params), _ = checkpointing.with_fallback(
      candidates, read, f"{workdir}")
  sched = train_lib.make_joint_schedule(config)
  check_schedules(meta["schedules"], train_lib.schedules_record(config, sched), allow_schedule_change,
                  f"checkpoint {workdir} (step {step})")
  if text.describe()["identity"] != meta["text_encoder"]["identity"]:
    raise ValueError(
        f"checkpoint {workdir} was trained with text encoder {json.dumps(meta['text_encoder'])} "
        f"but {config.text.encoder!r} now gives {json.dumps(text.describe())}")
  classes = LayoutClasses.from_json(json.dumps(meta["layout_classes"]))
  return Run(workdir=workdir, config=config, step=step, model=model, sched=sched,
             params=params, classes=classes, text=text)
