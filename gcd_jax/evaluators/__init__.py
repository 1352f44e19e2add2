"""Evaluators: registered metric families shared by `evaluate` and training.

  from gcd_jax import evaluators
  evs = evaluators.from_names(["correspondence", "fd_seg"])
  record = evaluators.evaluate(evs, context, samples)

See `base.py` (registry, bootstrap), `metrics.py` (the evaluators) and
`suite.py` (reference data, judges, generation, the results cache).
"""

from gcd_jax.evaluators.base import (REGISTRY, Context, Evaluator, Judges, Reference, Samples,
                                     available, evaluate, from_names, register)

__all__ = ["REGISTRY", "Context", "Evaluator", "Judges", "Reference", "Samples", "available",
           "evaluate", "from_names", "register"]
