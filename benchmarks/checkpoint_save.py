"""First and second checkpoint save of replicated arrays: orbax's default handler vs ours.

Orbax's default ArrayHandler saves an array replicated over several devices
"replica-parallel": one jitted slice per replica, compiled per array shape at the
first save of a process. gcd_jax.checkpointing keeps that only for slices of at
least 4 MiB. This script saves the same state (N replicated float32 arrays of
distinct small shapes, plus two of 32 MiB, over 8 forced CPU devices) twice
with each handler, each handler in a fresh process (the compile is paid once per
process), back to back, and prints the times and their ratio. The persistent
compilation cache is off, so every process compiles what it needs.

  python benchmarks/checkpoint_save.py            # 800 small arrays, 2 large
  python benchmarks/checkpoint_save.py --arrays 200 --large 0

Measured on this project's 2-core CPU with `--large 0` (800 small arrays):
orbax's default handler, first save 70.69 s (1432 compiles), second 2.31 s;
gcd_jax's, first save 1.59 s (0 compiles), second 1.53 s: 44x on the first save.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_WORKER = r"""
import json, os, sys, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
import jax, numpy as np
import orbax.checkpoint as ocp
mode, n, large, directory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if mode == "gcd_jax":
  from gcd_jax import checkpointing
  checkpointing.register_array_handler()  # (what a Checkpointer does)
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, secs, **kw: compiles.append(secs) if event.endswith("backend_compile_duration") else None)
mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
rng = np.random.default_rng(0)
shapes = [(int(rng.integers(1, 64)), int(rng.integers(1, 300))) for _ in range(n)]
shapes += [(8192, 1024 + 8 * i) for i in range(large)]  # 4 MiB+ per replica: still replica-parallel
state = {f"a{i}": jax.device_put(rng.normal(size=s).astype(np.float32), rep) for i, s in enumerate(shapes)}
jax.block_until_ready(state)
manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
out = {}
for step in (1, 2):
  before = len(compiles)
  t = time.perf_counter()
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
  blocking = time.perf_counter() - t
  manager.wait_until_finished()
  out[f"save{step}"] = {"blocking_s": blocking, "total_s": time.perf_counter() - t,
                        "compiles": len(compiles) - before}
manager.close()
print(json.dumps(out))
"""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--arrays", type=int, default=800, help="replicated small arrays")
  parser.add_argument("--large", type=int, default=2, help="replicated arrays of 32 MiB")
  args = parser.parse_args()
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for mode in ("orbax_default", "gcd_jax"):
      t = time.perf_counter()
      proc = subprocess.run([sys.executable, "-c", _WORKER, mode, str(args.arrays), str(args.large),
                             os.path.join(tmp, mode)], capture_output=True, text=True, check=False)
      if proc.returncode:
        sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
      results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
      results[mode]["process_s"] = time.perf_counter() - t
      r = results[mode]
      print(f"{mode:14s} first save {r['save1']['total_s']:7.2f} s ({r['save1']['compiles']} compiles)"
            f"  second save {r['save2']['total_s']:6.2f} s ({r['save2']['compiles']} compiles)", flush=True)
  a, b = results["orbax_default"], results["gcd_jax"]
  print(f"ratio default/gcd_jax: first save {a['save1']['total_s'] / b['save1']['total_s']:.1f}x, "
        f"second save {a['save2']['total_s'] / b['save2']['total_s']:.1f}x")
  print(json.dumps(results))


if __name__ == "__main__":
  main()
