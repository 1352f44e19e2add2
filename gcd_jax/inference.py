"""A trained run, loaded from its workdir alone: config, schedules, EMA weights,
layout classes and the text encoder (behind the workdir's caption cache).

Shared by the sampling and evaluation command lines, and handy in notebooks:

  run = inference.load_run("workdirs/shapes")
  out = run.sample(["A large red ball on the left."] * 4, seed=0)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gcd_jax import checkpointing
from gcd_jax import sampling
from gcd_jax import text_conditioning
from gcd_jax import train
from gcd_jax import train_lib
from gcd_jax.data.features import LayoutClasses
from gcd_jax.diffusion import joint


@dataclasses.dataclass
class Run:
  """Everything needed to sample from a checkpoint."""

  workdir: pathlib.Path
  config: ml_collections.ConfigDict
  step: int
  model: Any
  sched: joint.JointSchedule
  params: Any  # EMA parameters
  classes: LayoutClasses
  text: Any  # text_conditioning.FrozenText or ScratchText
  _samplers: dict = dataclasses.field(default_factory=dict)

  @property
  def has_layout(self) -> bool:
    return self.sched.layout is not None

  def sampler(self, cfg: sampling.SamplerConfig):
    """The compiled sampler for `cfg` (built once per configuration)."""
    if cfg not in self._samplers:
      m = self.model.config
      self._samplers[cfg] = sampling.make_sampler(
          sampling.model_apply_fn(self.model), self.sched, cfg,
          height=self.config.data.height, width=self.config.data.width,
          channels=m.image_channels, prediction=m.prediction,
          self_condition_image=m.self_condition_image,
          self_condition_layout=m.self_condition_layout)
    return self._samplers[cfg]

  def sample(self, captions, seed: int = 0, cfg: sampling.SamplerConfig | None = None,
             known: dict | None = None) -> dict:
    """Samples one image (and layout) per caption; returns numpy arrays."""
    cfg = cfg or sampling.SamplerConfig.from_config(self.config.sample)
    emb, mask = self.text.batch(list(captions))
    out = self.sampler(cfg)(self.params, jax.random.PRNGKey(seed), jnp.asarray(emb),
                            jnp.asarray(mask), known)
    return jax.device_get(out)


def load_run(workdir, *, allow_schedule_change: bool = False, schedule_overrides: dict | None = None) -> Run:
  """Loads the latest checkpoint of `workdir` (EMA parameters) and what it needs.

  Raises FileNotFoundError naming the workdir if it holds no checkpoint.
  `schedule_overrides` (keys of config.diffusion) are refused unless
  `allow_schedule_change`: a model is only valid with the schedules it was trained on.
  """
  workdir = pathlib.Path(workdir)
  meta, step = checkpointing.read_meta(workdir)
  config = ml_collections.ConfigDict(meta["config"])
  if schedule_overrides:
    config.diffusion.update(schedule_overrides)
  sched = train_lib.make_joint_schedule(config)
  train.check_schedules(meta["schedules"], sched.describe(), allow_schedule_change,
                        f"checkpoint {workdir} (step {step})")
  text = text_conditioning.make_text(config, workdir)
  if text.describe()["identity"] != meta["text_encoder"]["identity"]:
    raise ValueError(
        f"checkpoint {workdir} was trained with text encoder {json.dumps(meta['text_encoder'])} "
        f"but {config.text.encoder!r} now gives {json.dumps(text.describe())}")
  model = train_lib.make_model(config)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r), jax.random.PRNGKey(0))
  state, _, _ = checkpointing.restore_state(workdir, abstract)
  classes = LayoutClasses.from_json(json.dumps(meta["layout_classes"]))
  return Run(workdir=workdir, config=config, step=step, model=model, sched=sched,
             params=state.ema_params, classes=classes, text=text)
