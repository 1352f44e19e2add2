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
import os
import re
import time
from typing import Any, Callable, TypeVar

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

from gcd_jax import fileio

T = TypeVar("T")

# Orbax writes a jax.Array replicated over several devices "replica-parallel" by
# default (except under JAX_PLATFORMS=gpu): each replica copies a slice of it to
# the host, and each slice is a jitted program, compiled once per array shape at
# the first save of a process. On CPU that compile dominates the first save: 800
# replicated arrays of distinct shapes over 8 devices took 70.7 s to save the
# first time and 1.6 s without slicing (benchmarks/checkpoint_save.py). In one
# process, slicing can only spread device-to-host copies, so it is kept for
# slices of at least 4 MiB. With several processes orbax's default stays: there
# it lets every host write its share instead of the host of replica 0 writing
# everything. The files are the same either way.
REPLICA_PARALLEL_MIN_SLICE_BYTES = 4 << 20


def register_array_handler() -> None:
  """Registers the jax.Array handler described above (after jax.distributed is set up)."""
  from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
  ocp.type_handlers.register_type_handler(
      jax.Array,
      ocp.type_handlers.ArrayHandler(
          min_slice_bytes_for_replica_parallel=(
              REPLICA_PARALLEL_MIN_SLICE_BYTES if jax.process_count() == 1 else None),
          # As orbax's default handler, which keeps per-array metadata.
          array_metadata_store=array_metadata_store.Store()),
      override=True)


# How orbax/tensorstore and epath report a write that the disk refused.
_WRITE_ERROR = re.compile(r"os_error_code|No space left|File too large|Disk quota|Read-only file"
                          r" system|Failed writing|Failed to write", re.IGNORECASE)


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (a full disk, a quota); older ones are intact."""


def _is_write_error(e: BaseException) -> bool:
  return isinstance(e, OSError) or bool(_WRITE_ERROR.search(str(e)))


def _last_line(e: BaseException) -> str:
  """The last line of an error's message (where a wrapped OSError says what
  failed, "File too large"), or its type's name; at most 500 characters."""
  text = str(e).strip()
  return (text.splitlines()[-1] if text else type(e).__name__)[:500]


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
  return fileio.as_path(workdir) / "checkpoints"


class Checkpointer:
  """Thin wrapper of an orbax CheckpointManager with async saves."""

  def __init__(self, directory: str | os.PathLike, *, save_every: int = 1, keep: int = 3,
               async_save: bool = True) -> None:
    self.directory = fileio.as_path(directory)
    register_array_handler()
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, create=True,
        enable_async_checkpointing=async_save,
        # A save cut short (kill -9, a full disk) leaves only a temporary
        # directory, which is never listed as a step; remove it at the next start.
        cleanup_tmp_directories=True)
    self._options = options
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.failed_saves = 0

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_state: str, meta: dict, force: bool = False) -> bool:
    """Starts saving (asynchronously) if `step` is due or `force`; returns whether it did.

    A save that the disk refuses (this one, or the previous one, still in flight)
    is logged as an error naming the path, and training goes on: the newest
    complete checkpoint is intact, and the next save tries again. `close`
    raises if the last step could not be saved.
    """
    try:
      return self.manager.save(
          step,
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=ocp.args.JsonSave({"iterator": data_state}),
              meta=ocp.args.JsonSave(meta)),
          force=force)
    except Exception as e:  # pylint: disable=broad-except
      if not _is_write_error(e):
        raise
      self.failed_saves += 1
      logging.error("Writing a checkpoint under %s failed (%s). The newest complete checkpoint "
                    "(step %s) is intact; training goes on and the next save tries again.",
                    self.directory, _last_line(e), self.latest_step())
      return False

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, str, dict]:
    """(state, data_state, meta) of `step`; `abstract_state` gives shapes and shardings."""
    out = self.manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
    return out["state"], out["data"]["iterator"], out["meta"]

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, str, dict] | None:
    """(step, state, data_state, meta) of the newest checkpoint that restores; None if none.

    A checkpoint with truncated or missing files is never loaded: when the newest
    one fails to restore and an older one restores, the bad one is renamed to
    `<step>.corrupt-<time>` (kept for inspection, never listed as a step) with a
    warning naming it, and the run continues from the older one. When none
    restores, the newest one's error is raised and nothing is renamed (a config
    that no longer matches its checkpoints is not corruption).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    step, out, bad = with_fallback(steps, lambda s: self.restore(s, abstract_state),
                                   f"{self.directory}")
    if bad:
      self.manager.close()
      for s in bad:
        target = self.directory / f"{s}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
          (self.directory / str(s)).rename(target)
        logging.warning("Moved the unreadable checkpoint %s/%d to %s.", self.directory, s, target)
      _sync("gcd_jax_quarantine")
      self.manager = ocp.CheckpointManager(self.directory, options=self._options)
    return (step, *out)

  def wait(self) -> None:
    """Waits for the save in flight; CheckpointWriteError (naming the path) if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if not _is_write_error(e):
        raise
      raise CheckpointWriteError(
          f"writing a checkpoint under {self.directory} failed ({_last_line(e)}). The newest "
          f"complete checkpoint (step {self.latest_step()}) is intact: free space and rerun the "
          "same command to resume from it.") from e

  def close(self, last_step: int | None = None) -> None:
    """Finishes the saves in flight; raises CheckpointWriteError if `last_step` is not saved."""
    try:
      self.wait()
    finally:
      self.manager.close()
    if last_step is not None and self.latest_step() != last_step:
      raise CheckpointWriteError(
          f"the checkpoint of the last step ({last_step}) could not be written under "
          f"{self.directory} (see the errors above). The newest complete checkpoint (step "
          f"{self.latest_step()}) is intact: free space and rerun the same command.")


def with_fallback(steps: list[int], attempt: Callable[[int], T], where: str
                  ) -> tuple[int, T, list[int]]:
  """Calls attempt(step) on `steps` (newest first) until one succeeds.

  Returns (step, its result, the newer steps that failed). A step that fails is
  logged with a warning naming it; if every step fails, the first error is
  raised with the steps tried.
  """
  first_error, bad = None, []
  for step in steps:
    try:
      out = attempt(step)
    except Exception as e:  # pylint: disable=broad-except
      if first_error is None:
        first_error = e
      bad.append(step)
      if step != steps[-1]:
        logging.warning("Checkpoint %s/%d cannot be read (%s: %s); trying the previous one.",
                        where, step, type(e).__name__, str(e).splitlines()[0][:300] if str(e) else "")
      continue
    return step, out, bad
  raise first_error


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def kept_steps(path: str | os.PathLike) -> list[int]:
  """The steps of the checkpoints under `path` (see `resolve`), newest first."""
  directory, _ = resolve(path)
  return sorted((int(p.name) for p in directory.iterdir() if p.name.isdigit()
                 and (p / "state").exists()), reverse=True)


def resolve(path: str | os.PathLike, step: int | None = None) -> tuple[epath.Path, int]:
  """(checkpoints dir, step) from a workdir, a checkpoints dir or a step dir.

  `step` picks a kept checkpoint (default: the latest). Raises
  FileNotFoundError naming the path when it holds no checkpoint, or not `step`
  (with the steps it does hold).
  """
  path = fileio.as_path(path)
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
  if path.is_file() and path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
    raise FileNotFoundError(
        f"{path} is a PyTorch checkpoint file, not a gcd_jax workdir; convert a released "
        "GCDP model first: python -m gcd_jax.convert_gcdp --checkpoint=... --workdir=...")
  if (path / "segnet.json").is_file():
    raise FileNotFoundError(
        f"{path} holds a segmentation network (segnet.json), not a trained joint model; "
        "give it to evaluate as --segnet, and a gcd_jax.main workdir as --workdir")
  raise FileNotFoundError(
      f"no checkpoint under {path} (looked for {path}/checkpoints/<step>/state and "
      f"{path}/<step>/state); train first with python -m gcd_jax.main --workdir ...")


def read_meta(path: str | os.PathLike, step: int | None = None) -> tuple[dict, int]:
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


def restore_state(path: str | os.PathLike, abstract_state: Any, step: int | None = None
                  ) -> tuple[Any, dict, int]:
  """(state, meta, step) of the latest (or the given step's) checkpoint under `path` (read-only).

  Without `step`, a newest checkpoint that cannot be read is skipped with a
  warning for the previous one.
  """
  directory, _ = resolve(path, step)
  steps = [step] if step is not None else kept_steps(directory)

  def attempt(s):
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    try:
      return manager.restore(s, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    finally:
      manager.close()

  step, out, _ = with_fallback(steps, attempt, str(directory))
  return out["state"], out["meta"], step


def restore_ema_params(path: str | os.PathLike, abstract_params: Any, step: int | None = None,
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
