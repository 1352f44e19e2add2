"""gcd_jax.checkpointing: saving replicated arrays compiles nothing and round-trips exactly."""

import contextlib

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import orbax.checkpoint as ocp

from gcd_jax import checkpointing


@contextlib.contextmanager
def _count_jits():
  """Counts the programs traced (whether or not a compilation cache then serves them)."""
  seen = []

  def listener(event, secs, **kwargs):
    del secs, kwargs
    if event == "/jax/core/compile/jaxpr_trace_duration":
      seen.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _replicated_state():
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  rep = NamedSharding(mesh, P())
  rng = np.random.default_rng(0)
  # Shapes no other test uses, divisible by 8 along one axis (so orbax would slice them).
  shapes = [(8, 97 + i) for i in range(3)] + [(3, 5, 8 * 11)]
  return {f"a{i}": jax.device_put(rng.normal(size=s).astype(np.float32), rep)
          for i, s in enumerate(shapes)}


def _save(directory, state):
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  manager.wait_until_finished()
  return manager


def test_saving_small_replicated_arrays_compiles_nothing_and_restores_exactly(tmp_path):
  assert jax.device_count() == 8
  state = _replicated_state()
  with _count_jits() as ours:
    checkpointer = checkpointing.Checkpointer(tmp_path / "ours", async_save=False)
    checkpointer.save(0, state, "{}", {"note": "test"}, force=True)
    checkpointer.close(last_step=0)
  assert ours == []
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)
  restored = checkpointing.restore_state(tmp_path / "ours", abstract)[0]
  for k, v in state.items():
    np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(v))
    assert restored[k].sharding == v.sharding

  # The instrument: orbax's own default handler slices the same arrays with one
  # jitted program per shape (what gcd_jax's handler avoids).
  from orbax.checkpoint._src.metadata import array_metadata_store  # pylint: disable=g-import-not-at-top
  try:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(
            use_replica_parallel=True, array_metadata_store=array_metadata_store.Store()),
        override=True)
    with _count_jits() as default:
      _save(tmp_path / "default", state).close()
  finally:
    checkpointing.register_array_handler()
  assert len(default) >= len(state)
  restored_handler = ocp.type_handlers.get_type_handler(jax.Array)
  assert (restored_handler._min_slice_bytes_for_replica_parallel  # pylint: disable=protected-access
          == checkpointing.REPLICA_PARALLEL_MIN_SLICE_BYTES)
