"""Damages every file of a checkpoint in turn and checks that none is ever loaded wrong.

  python benchmarks/checkpoint_damage.py [--root=/tmp/gcd_damage]

Trains the tests' tiny config for 4 steps (checkpoints at steps 2 and 4), then,
for every file of step 4's checkpoint and each damage (truncated to half its
size; deleted), restores the run as training would (`Checkpointer.restore_latest`).
Each case must end one of two ways: the damaged checkpoint is refused and set
aside and step 2 is restored, or the file is one the restore never reads and
the restored state, data position and metadata equal the undamaged checkpoint's
bitwise. Prints one line per case and the counts; exits 1 on any other outcome.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", default=None)
  args = parser.parse_args()
  import conftest  # pylint: disable=g-import-not-at-top  (the tests' CPU settings and tiny config)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from gcd_jax import checkpointing, text_conditioning, train, train_lib  # pylint: disable=g-import-not-at-top
  from tfds_builders.synthetic_scenes import SyntheticScenes  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)

  root = pathlib.Path(args.root or tempfile.mkdtemp(prefix="gcd_damage_"))
  data = root / "tfds"
  if not (data / "synthetic_scenes").exists():
    SyntheticScenes(data_dir=str(data), config="32_mini", file_format="array_record").download_and_prepare()
  config = conftest.tiny_config(str(data))
  workdir = root / "run"
  if not (workdir / "checkpoints" / "4").exists():
    train.train_and_evaluate(config, str(workdir))
  model = train_lib.make_model(config, text_conditioning.make_text(config, workdir).vocab_size)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r), jax.random.PRNGKey(0))
  ref = checkpointing.Checkpointer(workdir / "checkpoints").restore_latest(abstract)
  step_dir = workdir / "checkpoints" / "4"
  files = sorted(p.relative_to(step_dir) for p in step_dir.rglob("*") if p.is_file())
  counts, bad = collections.Counter(), []
  for f in files:
    for how in ("truncated", "deleted"):
      copy = root / "copy"
      shutil.rmtree(copy, ignore_errors=True)
      shutil.copytree(workdir / "checkpoints", copy)
      path = copy / "4" / f
      size = path.stat().st_size
      if how == "truncated":
        with open(path, "r+b") as h:
          h.truncate(size // 2)
      else:
        path.unlink()
      try:
        step, state, data_state, meta = checkpointing.Checkpointer(copy).restore_latest(abstract)
      except Exception as e:  # pylint: disable=broad-except
        outcome = f"raised {type(e).__name__}"
      else:
        same = (all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(ref[1])))
                and data_state == ref[2] and meta == ref[3])
        if step == 2 and list(copy.glob("4.corrupt-*")):
          outcome = "refused, fell back to step 2"
        elif step == 4 and same:
          outcome = "not read, state bitwise equal"
        else:
          outcome = f"LOADED step {step} (equal: {same})"
      counts[outcome] += 1
      if outcome not in ("refused, fell back to step 2", "not read, state bitwise equal"):
        bad.append((str(f), how, outcome))
      print(f"{str(f):62s} {size:9d} B {how:9s} -> {outcome}", flush=True)
  print(dict(counts))
  print("every case safe" if not bad else f"UNSAFE: {bad}")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
