"""The training loop: `train_and_evaluate(config, workdir)`.

Reads top to bottom like the recipe it is: input pipeline, text encoder, model
and state, checkpoint restore, the compiled step, then the loop with its
periodic actions (metrics, progress, checkpoints, sample grids) and the two
ways a run stops early (preemption and a non-finite loss).
"""

from __future__ import annotations

import collections
import signal
import time
from typing import Any, Callable, Sequence

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcd_jax import checkpointing
from gcd_jax import config_base
from gcd_jax import fileio
from gcd_jax import run as run_lib
from gcd_jax import sampling
from gcd_jax import sharding
from gcd_jax import text_conditioning
from gcd_jax import train_lib
from gcd_jax import visualize
from gcd_jax.data import pipeline


# The traced and compiled pieces of a training setup (the abstract state, its
# shardings, the jitted init and train step), kept for a later run in this
# process whose setup is equal: tests, notebooks and sweeps train several runs
# in one process, and a fresh jax.jit traces, lowers and loads (or compiles) the
# step again, ~13 s of a 4-step tiny run's 18 s on 2 CPU cores. The key is the
# whole config but for the keys below, which only the host loop reads, plus
# the text vocabulary, the layout's ignore id and the mesh.
_HOST_ONLY_KEYS = ("init_from", "data.data_dir", "data.num_workers", "train.log_every",
                   "train.checkpoint_every", "train.keep_checkpoints", "train.sample_every",
                   "train.eval_every", "train.profile_steps", "train.profile_first_step",
                   "train.progress_every_secs")
_HOST_ONLY_PREFIXES = ("sample.", "eval.")
_SETUPS: collections.OrderedDict = collections.OrderedDict()
_MAX_SETUPS = 4


def _setup_key(config, vocab_size, ignore_id, mesh) -> tuple:
  items = tuple(sorted((k, repr(v)) for k, v in _flat(config.to_dict()).items()
                       if k not in _HOST_ONLY_KEYS and not k.startswith(_HOST_ONLY_PREFIXES)))
  return items, vocab_size, ignore_id, mesh


def _compiled_setup(config, model, sched, ignore_id, mesh, vocab_size):
  """(abstract state with shardings, state shardings, jitted init, jitted train step)."""
  key = _setup_key(config, vocab_size, ignore_id, mesh)
  if key in _SETUPS:
    _SETUPS.move_to_end(key)
    return _SETUPS[key]
  config = config.copy_and_resolve_references()  # (the kept closures must not see later edits)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r),
                            jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(mesh, abstract, config.mesh.fsdp_min_size)
  abstract = checkpointing.abstract_with_shardings(abstract, state_sh)
  init = jax.jit(lambda r: train_lib.init_state(config, model, r), out_shardings=state_sh)
  step = jax.jit(
      train_lib.make_train_step(config, model, sched, ignore_id),
      in_shardings=(state_sh, sharding.batch_sharding(mesh)),
      out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=(0,))
  _SETUPS[key] = (abstract, state_sh, init, step)
  while len(_SETUPS) > _MAX_SETUPS:
    _SETUPS.popitem(last=False)
  return _SETUPS[key]


class NonFiniteLossError(FloatingPointError):
  """A loss or gradient became NaN or inf; the run stopped."""


class _Preemption:
  """When to stop for a preemption notice (SIGTERM), checked after every step.

  One process: a SIGTERM handler sets a flag. Several processes (after
  jax.distributed.initialize): JAX's preemption service, which listens for
  SIGTERM itself, agrees on one step across the hosts
  (`multihost_utils.reached_preemption_sync_point`), so that every host saves
  the same step and stops, however far apart they saw the signal.
  """

  def __init__(self):
    self.multihost = jax.process_count() > 1
    self._requested = False
    self._previous = None

  def __enter__(self):
    if self.multihost:
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread (e.g. some notebook runners)
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self._requested = True

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop (call it at every step, on every host)."""
    if self.multihost:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if multihost_utils.reached_preemption_sync_point(step):
        logging.warning("Preemption notice: every host saves step %d and stops.", step)
        return True
      return False
    return self._requested

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       step_hooks: Sequence[Callable[[int], Any]] = ()) -> train_lib.TrainState:
  """Trains (or resumes) a joint model in `workdir`; returns the final state.

  Args:
    config: an experiment config (configs/*.py).
    workdir: checkpoints, TensorBoard events, samples and the text cache go here;
      a workdir with checkpoints is resumed from the latest one.
    step_hooks: extra callables hook(step) run after every step (tests, notebooks).
  """
  config_base.validate(config)
  workdir = fileio.as_path(workdir)  # a local path or a URL such as gs://bucket/run
  workdir.mkdir(parents=True, exist_ok=True)
  process_index, process_count = jax.process_index(), jax.process_count()
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  if config.data.batch_size % mesh.size:
    raise ValueError(f"config.data.batch_size={config.data.batch_size} is not divisible by "
                     f"the {mesh.size} devices of the mesh")
  local_batch = config.data.batch_size // process_count

  # Start the input pipeline first: opening the dataset also checks that it was prepared.
  data_kw = dict(image_size=(config.data.height, config.data.width), batch_size=local_batch,
                 seed=config.seed, process_index=process_index, process_count=process_count,
                 data_dir=config.data.data_dir or None)
  train_iter = pipeline.make_train_iterator(
      run_lib.dataset_name(config), split=config.data.train_split, flip=config.data.flip,
      num_workers=config.data.num_workers, captioned_split=config.data.captioned_split, **data_kw)
  classes = pipeline.layout_classes(run_lib.dataset_name(config), config.data.data_dir or None)
  if config.model.num_classes and classes.num_classes != config.model.num_classes:
    raise ValueError(f"config.model.num_classes={config.model.num_classes} but dataset "
                     f"{run_lib.dataset_name(config)!r} has {classes.num_classes} layout classes")

  # Text: a frozen encoder behind a caption cache (it never runs inside the step),
  # or a scratch encoder's tokenizer (before the model, which takes its vocabulary size).
  train_captions = lambda: pipeline.split_captions(
      run_lib.dataset_name(config), config.data.captioned_split or config.data.train_split,
      config.data.data_dir or None)
  text = text_conditioning.make_text(
      config, workdir, train_captions, worker=process_index,
      split_name=f"{run_lib.dataset_name(config)}-{config.data.captioned_split or config.data.train_split}")

  # Model, schedules and a sharded initial state.
  model = train_lib.make_model(config, text.vocab_size)
  sched = train_lib.make_joint_schedule(config)
  rng = jax.random.PRNGKey(config.seed)
  abstract, state_sh, init, train_step = _compiled_setup(
      config, model, sched, classes.ignore_id, mesh, text.vocab_size)
  meta = run_lib.run_metadata(config, sched, classes, text)

  # Decide how to initialise. The order matters: a checkpoint in the workdir
  # (this run, preempted) wins over init_from (the start of a new run).
  ckpt = checkpointing.Checkpointer(
      checkpointing.checkpoint_dir(workdir), save_every=config.train.checkpoint_every,
      keep=config.train.keep_checkpoints)
  restored = ckpt.restore_latest(abstract)  # skips (and sets aside) unreadable checkpoints
  if restored is not None:
    latest, state, data_state, saved_meta = restored
    run_lib.check_schedules(saved_meta["schedules"], meta["schedules"], config.allow_schedule_change,
                    f"checkpoint {ckpt.directory}/{latest}")
    pipeline.restore_iterator_state(train_iter, data_state)
    logging.info("Resumed from %s/%d.", ckpt.directory, latest)
  else:
    state = init(rng)
    if config.init_from:
      source, saved_meta, step = checkpointing.restore_state(config.init_from, abstract)
      run_lib.check_schedules(saved_meta["schedules"], meta["schedules"], config.allow_schedule_change,
                      f"init_from checkpoint {config.init_from}")
      state = state.replace(params=source.params, ema_params=source.ema_params)
      logging.info("Initialised weights from %s (step %d).", config.init_from, step)
  start_step = int(state.step)

  writer = metric_writers.create_default_writer(str(workdir), just_logging=process_index > 0)
  if start_step == 0:
    parameter_overview.log_parameter_overview(state.params)
    writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()
                          if isinstance(v, (int, float, str, bool))})

  sample_fn = (run_lib.make_sampler(config, model, sched, sampling.SamplerConfig.from_config(config.sample))
               if config.train.sample_every else None)
  sample_captions = list(config.sample.captions) or _eval_captions(config, data_kw)
  evaluation = eval_sampler = None
  if config.train.eval_every:
    from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
    evaluation = suite.TrainingEvaluation(config, model.config.has_layout,
                                          run_lib.dataset_name(config))
    eval_sampler = run_lib.make_sampler(config, model, sched, sampling.SamplerConfig.from_config(
        config.sample, **({"steps": config.eval.steps} if config.eval.steps else {})))

  num_steps = config.train.num_steps
  # clu's ReportProgress: the steps_per_sec series, and a log line with the ETA,
  # at every log step and every progress_every_secs.
  hooks = [periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer, every_steps=config.train.log_every,
      every_secs=config.train.progress_every_secs)] if process_index == 0 else []
  if config.train.profile_steps and process_index == 0:
    # One profile of profile_steps steps (however long they take), written for
    # TensorBoard's profile plugin to <workdir>/plugins/profile.
    hooks.append(periodic_actions.Profile(
        logdir=str(workdir), num_profile_steps=config.train.profile_steps,
        profile_duration_ms=None, every_secs=None,
        first_profile=max(start_step + 1, config.train.profile_first_step)))
  hooks += list(step_hooks)

  def next_batch():
    batch = next(train_iter)
    tokens, mask = text.batch(batch["caption"])
    arrays = {"image": batch["image"], "text": tokens, "text_mask": mask}
    if model.config.has_layout:
      arrays["layout"] = batch["layout"]
    if "captioned" in batch:
      arrays["captioned"] = batch["captioned"]
    return sharding.global_batch(mesh, arrays)

  def save(step, force=False):
    return ckpt.save(step, state, pipeline.iterator_state_to_json(train_iter), meta, force=force)

  pending, window, t_window = None, [], time.time()
  step = start_step
  with _Preemption() as preemption, metric_writers.ensure_flushes(writer):
    while step < num_steps:
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = next_batch()
        state, metrics = train_step(state, batch)
      step += 1
      # Check the previous step's flags only now, so the host never waits on the
      # step it just dispatched. A non-finite step left the state unchanged.
      if pending is not None:
        _check_finite(*pending, ckpt)
      pending = (step, metrics)
      window.append(metrics)
      for h in hooks:
        h(step)

      if step % config.train.log_every == 0 or step == num_steps:
        _check_finite(*pending, ckpt)
        pending = None
        scalars = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]
                   if not k.startswith("finite_")}
        # steps_per_sec is ReportProgress's series (above); this one counts examples.
        scalars["examples_per_sec"] = len(window) * config.data.batch_size / (time.time() - t_window)
        writer.write_scalars(step, scalars)
        window, t_window = [], time.time()

      if sample_fn is not None and (step % config.train.sample_every == 0 or step == num_steps):
        _write_samples(config, sample_fn, state, text, sample_captions, classes, writer, workdir, step)
      if evaluation is not None and (step % config.train.eval_every == 0 or step == num_steps):
        _evaluate(evaluation, eval_sampler, state, text, writer, step)

      if preemption.reached(step):
        if pending is not None:
          _check_finite(*pending, ckpt)
          pending = None
        save(step, force=True)
        ckpt.wait()
        logging.warning("Saved step %d after a preemption notice; resume by rerunning the same "
                        "command.", step)
        break
      if step == num_steps or ckpt.manager.should_save(step):
        # Never write a checkpoint after a non-finite step.
        if pending is not None:
          _check_finite(*pending, ckpt)
          pending = None
        save(step, force=step == num_steps)
  if config.train.profile_steps and process_index == 0:
    try:
      jax.profiler.stop_trace()  # a profile window that the end of training cut short
    except RuntimeError:
      pass  # none running: it completed (the usual case)
  ckpt.close(last_step=step)  # raises, naming the path, if the last step could not be saved
  return state


def _check_finite(step, metrics, ckpt):
  bad = train_lib.nonfinite_terms(jax.device_get(metrics))
  if bad:
    try:
      ckpt.wait()  # let any save in flight finish; nothing newer is written
    except checkpointing.CheckpointWriteError as e:
      logging.error("%s", e)  # reported; the non-finite loss is the error raised
    last = ckpt.latest_step()
    raise NonFiniteLossError(
        f"step {step}: non-finite {', '.join(bad)} "
        f"({ {k: float(v) for k, v in jax.device_get(metrics).items() if not k.startswith('finite_')} }); "
        f"stopping. The last good checkpoint ({'step ' + str(last) if last is not None else 'none'}) "
        "is untouched; lower the learning rate or enable optimizer.grad_clip and resume.")


def _eval_captions(config, data_kw) -> list[str]:
  kw = dict(data_kw, batch_size=config.sample.num, process_index=0, process_count=1)
  it = pipeline.make_eval_iterator(run_lib.dataset_name(config), split=config.data.eval_split, **kw)
  return [str(c) for c in next(it)["caption"]][: config.sample.num]


def _write_samples(config, sample_fn, state, text, captions, classes, writer, workdir, step):
  emb, mask = text.batch(captions)
  key = jax.random.PRNGKey(config.seed + 1)  # fixed noise: grids comparable across steps
  out = jax.device_get(sample_fn(state.ema_params, key, jnp.asarray(emb), jnp.asarray(mask)))
  grid = visualize.sample_grid(out["image"], out.get("layout"), captions,
                               classes if "layout" in out else None)
  writer.write_images(step, {"samples": grid[None]})
  visualize.save_png(grid, workdir / "samples" / f"step_{step:07d}.png")


def _evaluate(evaluation, sampler, state, text, writer, step):
  """The configured evaluators on the EMA parameters, written next to the losses."""
  t = time.time()

  def sample_fn(captions, seed):
    emb, mask = text.batch(captions)
    return jax.device_get(sampler(state.ema_params, jax.random.PRNGKey(seed), jnp.asarray(emb),
                                  jnp.asarray(mask)))

  metrics = evaluation(sample_fn)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
  logging.info("Evaluation at step %d (%.0f s): %s", step, time.time() - t,
               ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
