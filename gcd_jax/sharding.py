"""Device mesh and shardings for data-parallel (+ optional FSDP) training.

The mesh has two axes, `data` and `fsdp`. The batch is split over both; a
parameter is split over `fsdp` along its largest divisible axis when it is
large enough to be worth it, and replicated otherwise. With fsdp = 1 this is
plain data parallelism; the same code runs on 1 CPU device, on forced host
devices, on a GPU and across the hosts of a TPU slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp') mesh over `devices` (all devices by default).

  Args:
    data: size of the data axis; -1 takes every device left after fsdp. An
      explicit data x fsdp smaller than the device count uses the first ones.
    fsdp: size of the parameter-sharding axis.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} does not divide the {n} available devices")
  if data == -1:
    data = n // fsdp
  if data < 1 or data * fsdp > n:
    raise ValueError(
        f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} but {n} devices are "
        "available; set mesh.data=-1 to use them all")
  if data * fsdp < n:
    if jax.process_count() > 1:
      raise ValueError(f"mesh.data x mesh.fsdp = {data * fsdp} < {n} devices: a multi-host "
                       "run must use every device (mesh.data=-1)")
    logging.warning("Using %d of %d devices (mesh.data=%d, mesh.fsdp=%d).",
                    data * fsdp, n, data, fsdp)
    devices = devices[: data * fsdp]
  # A plain Mesh has Auto axes: jit and the shardings below decide placement
  # (jax.make_mesh would default to explicit axes on newer jax).
  return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def param_spec(shape: Sequence[int], fsdp_size: int, min_size: int = 2**18) -> P:
  """Shards the largest axis divisible by the fsdp size; small arrays stay replicated."""
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[axis] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh: Mesh, abstract_state: Any, min_size: int = 2**18) -> Any:
  """NamedShardings for every leaf of a (abstract) train state."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, param_spec(getattr(x, "shape", ()), fsdp, min_size)),
      abstract_state)


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
  """Assembles per-process numpy batches into global arrays sharded over the batch axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
