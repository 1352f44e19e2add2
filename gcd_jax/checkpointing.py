"""Orbax checkpoints of a run: train state, data-iterator position and metadata.

A checkpoint step directory holds three items:
  state  the whole TrainState (params, EMA, optimizer state, step, RNG)
  data   the input iterator's position (JSON), so a resumed run reads exactly
         the batches an uninterrupted one would
  meta   the full config, every noise schedule, the layout classes and the text
         encoder identity, so that sampling needs nothing but the workdir
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


def checkpoint_dir(workdir: str | pathlib.Path) -> pathlib.Path:
  return pathlib.Path(workdir) / "checkpoints"


class Checkpointer:
  """Thin wrapper of an orbax CheckpointManager with async saves."""

  def __init__(self, directory: str | pathlib.Path, *, save_every: int = 1, keep: int = 3,
               async_save: bool = True) -> None:
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, create=True,
        enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: str, meta: dict, force: bool = False) -> bool:
    """Starts saving (asynchronously) if `step` is due or `force`; returns whether it did."""
    return self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"iterator": data_state}),
            meta=ocp.args.JsonSave(meta)),
        force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, str, dict]:
    """(state, data_state, meta) of `step`; `abstract_state` gives shapes and shardings."""
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
    return out["state"], out["data"]["iterator"], out["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def resolve(path: str | pathlib.Path, step: int | None = None) -> tuple[pathlib.Path, int]:
  """(checkpoints dir, step) from a workdir, a checkpoints dir or a step dir.

  `step` picks a kept checkpoint (default: the latest). Raises
  FileNotFoundError naming the path when it holds no checkpoint, or not `step`
  (with the steps it does hold).
  """
  path = pathlib.Path(path).absolute()
  candidates = [path / "checkpoints", path]
  for directory in candidates:
    if directory.is_dir():
      steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()
                     and (p / "state").exists())
      if steps:
        if step is None:
          return directory, steps[-1]
        if step in steps:
          return directory, int(step)
        raise FileNotFoundError(f"{directory}: no checkpoint of step {step}; kept steps: {steps}")
  if path.name.isdigit() and (path / "state").exists():
    if step is not None and step != int(path.name):
      raise FileNotFoundError(f"{path} is the checkpoint of step {path.name}, not {step}")
    return path.parent, int(path.name)
  raise FileNotFoundError(
      f"no checkpoint under {path} (looked for {path}/checkpoints/<step>/state and "
      f"{path}/<step>/state); train first with python -m gcd_jax.main --workdir ...")


def read_meta(path: str | pathlib.Path, step: int | None = None) -> tuple[dict, int]:
  """The metadata of the latest (or the given step's) checkpoint, and its step."""
  directory, step = resolve(path, step)
  meta_dir = directory / str(step) / "meta"
  files = sorted(meta_dir.glob("*")) if meta_dir.is_dir() else []
  for f in [meta_dir / "metadata"] + files:
    if f.is_file():
      try:
        return json.loads(f.read_text()), step
      except (UnicodeDecodeError, json.JSONDecodeError):
        continue
  raise FileNotFoundError(f"{meta_dir}: no readable checkpoint metadata")


def restore_state(path: str | pathlib.Path, abstract_state: Any, step: int | None = None
                  ) -> tuple[Any, dict, int]:
  """(state, meta, step) of the latest (or the given step's) checkpoint under `path` (read-only)."""
  directory, step = resolve(path, step)
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
  try:
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
  finally:
    manager.close()
  return out["state"], out["meta"], step


def restore_ema_params(path: str | pathlib.Path, abstract_params: Any, step: int | None = None,
                       sharding: jax.sharding.Sharding | None = None) -> tuple[Any, int]:
  """(EMA parameters, step) of a checkpoint, and nothing else of its train state.

  For inference: a partial Orbax restore reads only `ema_params` (a quarter of an
  Adam train state), onto `sharding` (default: the first local device) whatever
  mesh wrote it, so a checkpoint made on a pod slice loads on a laptop.
  `abstract_params`: the parameter tree's shapes and dtypes.
  """
  directory, step = resolve(path, step)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = {"ema_params": jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract_params)}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  out = ocp.PyTreeCheckpointer().restore(
      directory / str(step) / "state",
      args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True))
  return out["ema_params"], step


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings)
