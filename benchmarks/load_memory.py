"""Peak host memory of loading a checkpoint for inference: the whole train state vs the EMA only.

  python benchmarks/load_memory.py --preset=paper_base --dir=/tmp/load_memory

Writes one checkpoint of `--preset` with random weights (parameters, EMA
parameters and an Adam state, as training writes it; the U-Net's shapes at
128x128, T5-large-wide text), then, each in a fresh process, restores it
(1) whole, as `run.load` did before it restored only what sampling needs, and
(2) as `run.load` does now (`checkpointing.restore_ema_params`), and prints each
process's peak resident memory (ru_maxrss) and the size of the arrays it kept.
"""

from __future__ import annotations

import json
import pathlib
import resource
import subprocess
import sys
import time

from absl import flags

from gcd_jax import cli

PROG = "python benchmarks/load_memory.py"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("preset", "paper_base", "The U-Net preset.", flag_values=fv)
  flags.DEFINE_string("dir", "/tmp/load_memory", "Where the checkpoint goes (kept for reruns).",
                      flag_values=fv)
  flags.DEFINE_enum("mode", None, ["write", "full", "ema"], "Internal: one step per process.",
                    flag_values=fv)


def _config(preset: str):
  from gcd_jax import config_base  # pylint: disable=g-import-not-at-top
  from gcd_jax.models import presets  # pylint: disable=g-import-not-at-top
  c = config_base.base_config()
  c.data.height = c.data.width = 128
  c.text.max_length = 16
  c.model = presets.get_preset(preset).to_dict()
  return c


def _abstract_state(c):
  import jax  # pylint: disable=g-import-not-at-top
  from gcd_jax import train_lib  # pylint: disable=g-import-not-at-top
  model = train_lib.make_model(c)
  return model, jax.eval_shape(lambda r: train_lib.init_state(c, model, r), jax.random.PRNGKey(0))


def _nbytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def step(mode: str, preset: str, directory: pathlib.Path) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gcd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from gcd_jax import train_lib  # pylint: disable=g-import-not-at-top
  c = _config(preset)
  model, abstract = _abstract_state(c)
  t = time.time()
  if mode == "write":
    # Random weights, leaf by leaf (no jitted init of a 650M-parameter network).
    keys = iter(jax.random.split(jax.random.PRNGKey(0), len(jax.tree.leaves(abstract))))
    state = jax.tree.map(lambda x: (jax.random.normal(next(keys), x.shape, jnp.float32) * 0.02
                                    ).astype(x.dtype), abstract)
    ckpt = checkpointing.Checkpointer(directory, async_save=False)
    ckpt.save(1, state, "{}", {"preset": preset}, force=True)
    ckpt.close()
    kept = _nbytes(state)
  elif mode == "full":
    state, _, _ = checkpointing.restore_state(directory, abstract, 1)
    kept = _nbytes(state)
  else:
    params_abstract = jax.eval_shape(lambda r: train_lib.init_params(c, model, r),
                                     jax.random.PRNGKey(0))
    params, _ = checkpointing.restore_ema_params(directory, params_abstract, 1)
    kept = _nbytes(params)
  return {"mode": mode, "seconds": round(time.time() - t, 1), "kept_gb": round(kept / 2**30, 2),
          "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def run(args) -> list[dict]:
  directory = pathlib.Path(args.dir)
  if args.mode:
    print(json.dumps(step(args.mode, args.preset, directory)))
    return []
  results = []
  modes = (["write"] if not (directory / "1").exists() else []) + ["full", "ema"]
  for mode in modes:
    out = subprocess.run([sys.executable, __file__, f"--preset={args.preset}",
                          f"--dir={directory}", f"--mode={mode}"],
                         check=True, capture_output=True, text=True).stdout
    results.append(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps(results[-1]))
  return results


if __name__ == "__main__":
  sys.exit(cli.command_main(define_flags, run, prog=PROG, doc=__doc__))
