"""kill -9 a training run at random moments, resume it each time, and compare.

  python benchmarks/kill_resume.py --kills=10 [--steps=40] [--checkpoint_every=4] [--seed=0]

Trains configs/smoke.py twice in subprocesses (`python -m gcd_jax.main`):
once straight through, and once killed with SIGKILL `--kills` times and
restarted after each kill with the same command. Half the kills wait for a
checkpoint write to start (orbax's temporary directory appears) and land inside
it; the others come at a uniformly random moment of what is left of the run
(the straight run's wall time, start-up and compilation included, scaled by the
fraction of steps still to do). The killed run must finish, and its
final train state (parameters, EMA, optimiser state, step, RNG) and data-iterator
position must equal the straight run's bitwise. Prints one line per kill and a
JSON summary; exits 1 if the states differ or the run did not finish.

The suite runs a 2-kill version (tests/test_kill_resume.py).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent


def main_command(workdir: pathlib.Path, steps: int, checkpoint_every: int, data_dir: str | None,
                 extra: list[str] = (), config: str = "configs/smoke.py") -> list[str]:
  cmd = [sys.executable, "-m", "gcd_jax.main", f"--config={config}", f"--workdir={workdir}",
         f"--config.train.num_steps={steps}", f"--config.train.checkpoint_every={checkpoint_every}",
         "--config.train.keep_checkpoints=2", "--config.train.sample_every=0",
         "--config.train.eval_every=0", f"--config.train.log_every={checkpoint_every}"]
  if data_dir:
    cmd.append(f"--config.data.data_dir={data_dir}")
  return cmd + list(extra)


def _env() -> dict:
  return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _temporary(ckpt_dir: pathlib.Path) -> set[str]:
  """Orbax's temporary directories (a checkpoint being written, or one a kill cut short)."""
  try:
    return {p.name for p in ckpt_dir.iterdir() if not p.name.isdigit() and "corrupt" not in p.name}
  except FileNotFoundError:
    return set()


def _steps(ckpt_dir: pathlib.Path) -> list[int]:
  try:
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  except FileNotFoundError:
    return []


def _run_once(cmd, log, kill: dict | None, ckpt_dir: pathlib.Path, timeout: float) -> dict:
  """Runs cmd; if `kill`, SIGKILLs it as it says. Returns what happened."""
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                          start_new_session=True)
  out = {"killed": False}
  if kill is not None:
    # Temporary directories left by an earlier kill do not count, until this run
    # removes them (a new write of the same step may reuse the name).
    leftovers = _temporary(ckpt_dir)

    def saving():
      current = _temporary(ckpt_dir)
      leftovers.intersection_update(current)
      return bool(current - leftovers)
    saves_seen, in_save = 0, False
    while proc.poll() is None and time.time() - t0 < timeout:
      if kill["mode"] == "random" and time.time() - t0 >= kill["at_s"]:
        break
      if kill["mode"] == "save":
        now = saving()
        if now and not in_save:
          saves_seen += 1
          if saves_seen >= kill["nth_save"]:
            time.sleep(kill["delay_s"])
            break
        in_save = now
      time.sleep(0.002)
    if proc.poll() is None:
      out.update(killed=True, during_save=saving(), complete_steps=_steps(ckpt_dir))
      os.killpg(proc.pid, signal.SIGKILL)
  proc.wait(timeout=timeout)
  out.update(returncode=proc.returncode, wall_s=round(time.time() - t0, 2))
  return out


def final_state(workdir: pathlib.Path):
  """(train state, data-iterator JSON, step) of a run's latest checkpoint, read back with orbax."""
  import jax  # pylint: disable=g-import-not-at-top
  from gcd_jax import checkpointing, config_base, text_conditioning, train_lib  # pylint: disable=g-import-not-at-top
  meta, step = checkpointing.read_meta(workdir)
  config = config_base.complete(meta["config"])
  text = text_conditioning.make_text(config, workdir)
  model = train_lib.make_model(config, text.vocab_size)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r), jax.random.PRNGKey(0))
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir))
  try:
    state, data_state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return state, data_state, step


def states_equal(a, b) -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(la, lb))


def run(root: pathlib.Path, kills: int, steps: int = 40, checkpoint_every: int = 4, seed: int = 0,
        data_dir: str | None = None, extra: list[str] = (), timeout: float = 900,
        modes: tuple[str, ...] = ("save", "random"), warm: bool = True,
        config: str = "configs/smoke.py", straight_fn=None, verbose: bool = True) -> dict:
  """The experiment (see the module docstring); returns its summary.

  Kill i is of kind modes[i % len(modes)]: "save" (inside a checkpoint write) or
  "random" (a uniform moment of the rest of the run). `warm`: run the
  straight run twice and time the second, whose programs come from the
  compilation cache as every restart's do (the two must also agree bitwise).
  `straight_fn(workdir)`: makes the straight run itself (in process, say)
  instead of a subprocess.
  """
  rng = np.random.default_rng(seed)
  root.mkdir(parents=True, exist_ok=True)
  straight, killed = root / "straight", root / "killed"
  say = print if verbose else (lambda *a, **k: None)
  if straight_fn is not None:
    t0 = time.time()
    straight_fn(straight)
    ref = {"returncode": 0, "wall_s": round(time.time() - t0, 2)}
  else:
    with open(root / "straight.log", "ab") as log:
      ref = _run_once(main_command(straight, steps, checkpoint_every, data_dir, extra, config), log,
                      None, straight / "checkpoints", timeout)
  if ref["returncode"] != 0:
    raise RuntimeError(f"the straight run failed (exit {ref['returncode']}); see {root}/straight.log")
  say(f"straight run: {ref['wall_s']:.1f} s")
  twice = None
  if warm:
    with open(root / "straight.log", "ab") as log:
      ref = _run_once(main_command(root / "straight_again", steps, checkpoint_every, data_dir, extra,
                                   config),
                      log, None, root / "straight_again" / "checkpoints", timeout)
    say(f"straight run again (warm compilation cache): {ref['wall_s']:.1f} s")
    twice = states_equal(final_state(straight)[0], final_state(root / "straight_again")[0])
  events, finished = [], False
  cmd = main_command(killed, steps, checkpoint_every, data_dir, extra, config)
  with open(root / "killed.log", "ab") as log:
    for i in range(kills):
      if modes[i % len(modes)] == "save":
        kill = {"mode": "save", "nth_save": int(rng.integers(1, 3)),
                "delay_s": float(rng.uniform(0, 0.05))}
      else:
        # A uniform moment of what is left of the run (start-up included): the
        # straight run's wall time scaled by the steps still to do.
        done = max(_steps(killed / "checkpoints"), default=0)
        kill = {"mode": "random",
                "at_s": float(rng.uniform(0, ref["wall_s"] * max((steps - done) / steps, 0.2)))}
      out = _run_once(cmd, log, kill, killed / "checkpoints", timeout)
      events.append({**kill, **out})
      say(f"kill {i + 1}/{kills}: {json.dumps(events[-1])}")
      if not out["killed"]:
        if out["returncode"] != 0:
          raise RuntimeError(f"run {i + 1} failed (exit {out['returncode']}); see {root}/killed.log")
        finished = True
        break
    if not finished:
      out = _run_once(cmd, log, None, killed / "checkpoints", timeout)
      events.append({"mode": "none", **out})
      say(f"final run: {json.dumps(events[-1])}")
      finished = out["returncode"] == 0
  summary = {"kills_requested": kills, "kills_delivered": sum(e["killed"] for e in events),
             "kills_during_save": sum(bool(e.get("during_save")) for e in events),
             "restarts": len(events) - 1, "finished": finished, "straight_wall_s": ref["wall_s"],
             "killed_total_wall_s": round(sum(e["wall_s"] for e in events), 2),
             "straight_runs_bitwise_equal": twice}
  if finished:
    a, da, sa = final_state(straight)
    b, db, sb = final_state(killed)
    summary.update(final_step=[sa, sb], data_state_equal=da == db, state_bitwise_equal=states_equal(a, b))
    leftovers = [str(p.relative_to(killed)) for p in killed.rglob("*")
                 if ".orbax-checkpoint-tmp" in p.name or p.name.endswith(".tmp")]
    summary["leftover_temporary_files"] = leftovers
  summary["events"] = events
  return summary


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=10)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--checkpoint_every", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=None, help="TFDS data dir holding synthetic_scenes/32_mini")
  parser.add_argument("--root", default=None, help="where both runs go (default: a temporary dir)")
  parser.add_argument("--out", default=None, help="also write the JSON summary here")
  args = parser.parse_args()
  root = pathlib.Path(args.root or tempfile.mkdtemp(prefix="gcd_kill_resume_"))
  summary = run(root, args.kills, args.steps, args.checkpoint_every, args.seed, args.data_dir)
  text = json.dumps({k: v for k, v in summary.items() if k != "events"}, indent=1)
  print(text)
  if args.out:
    from gcd_jax import fileio  # pylint: disable=g-import-not-at-top
    fileio.atomic_write_text(args.out, json.dumps(summary, indent=1) + "\n")
  ok = summary["finished"] and summary.get("state_bitwise_equal") and summary.get("data_state_equal")
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
