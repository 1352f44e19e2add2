"""gcd_jax.train keeps a run's traced and compiled step for a later run in the same process."""

import contextlib

import jax
import numpy as np

from gcd_jax import train

from conftest import tiny_config  # pylint: disable=g-bad-import-order


@contextlib.contextmanager
def _count_traces():
  seen = []

  def listener(event, secs, **kwargs):
    del secs
    if event == "/jax/core/compile/jaxpr_trace_duration":
      seen.append(kwargs.get("fun_name"))

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_an_equal_setup_reuses_the_step_and_another_does_not(scenes_data_dir, tmp_path):
  # (The tiny config's own 4 steps: a step other tests compile too.)
  first = train.train_and_evaluate(tiny_config(scenes_data_dir), str(tmp_path / "a"))
  # Only host-loop settings differ: nothing is traced again, and the result is the same.
  again = tiny_config(scenes_data_dir, log_every=1, checkpoint_every=1)
  with _count_traces() as traces:
    second = train.train_and_evaluate(again, str(tmp_path / "b"))
  assert all(np.array_equal(a, b) for a, b in zip(_leaves(first), _leaves(second)))
  assert "train_step" not in traces and "<lambda>" not in traces, traces  # (the init is a lambda)
  # A setting the step reads (the learning rate) gets its own step and another result.
  other = tiny_config(scenes_data_dir)
  other.optimizer.learning_rate *= 10
  with _count_traces() as retraced:
    third = train.train_and_evaluate(other, str(tmp_path / "c"))
  assert "train_step" in retraced, retraced
  assert not all(np.array_equal(a, b) for a, b in zip(_leaves(first.params), _leaves(third.params)))
  assert train._setup_key(again, None, 0, None) == train._setup_key(  # pylint: disable=protected-access
      tiny_config(scenes_data_dir), None, 0, None)
