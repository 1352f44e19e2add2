"""Input pipeline throughput (examples/s): decode, resize, flip, caption, batch.

  python benchmarks/input_pipeline.py                       # both cases below
  python benchmarks/input_pipeline.py --case 128 --seconds 20

Cases:
  32   synthetic_scenes/32 (32x32 PNGs, 50k train) read at 32x32; no resize.
  128  a fake layout_folder dataset of 256x256 PNG photos-like images (written by
       gcd_jax.data.fake_data) read at 128x128: Lanczos image resize, nearest
       layout resize. This is the MM CelebA-HQ "256" -> base-model path.
Targets on a 2-core machine: >= 2000 examples/s at 32, >= 300 at 128.

Datasets are prepared once under --data_dir (default /tmp/gcd_jax_bench) and
reused. For each setting of (threads, worker processes) the script discards
the first batches (worker start-up), then reports wall-clock examples/s and CPU
milliseconds per example (this process and its workers), which is less
sensitive to other jobs sharing the machine. The load average is printed too.
"""

from __future__ import annotations

import os
import resource
import time

from absl import flags

from gcd_jax import cli

TARGETS = {"32": 2000, "128": 300}


def _cpu_seconds() -> float:
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  # Worker processes count only once they exit, so they are closed before reading.
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def ensure_datasets(case: str, data_dir: str) -> tuple[str, tuple[int, int], str]:
  """Prepares the case's dataset if needed; returns (name, image_size, split)."""
  from gcd_jax import prepare  # pylint: disable=g-import-not-at-top
  from gcd_jax.data import fake_data  # pylint: disable=g-import-not-at-top
  if case == "32":
    prepare.prepare("synthetic_scenes", "32", data_dir)
    return "synthetic_scenes/32", (32, 32), "train"
  src = os.path.join(data_dir, "fake256_src")
  if not os.path.exists(os.path.join(src, "classes.json")):
    print(f"writing 1000 fake 256x256 examples to {src} (once, ~30 s)")
    fake_data.write_layout_folder(src, 1000, (256, 256))
  prepare.prepare("layout_folder", "fake256", data_dir, src)
  return "layout_folder/fake256", (128, 128), "train"


def measure(name: str, image_size, split: str, data_dir: str, batch_size: int,
            num_threads: int, num_workers: int, seconds: float,
            resample: str = "lanczos") -> tuple[float, float]:
  """Returns (examples/s, CPU ms per example) over `seconds` after warm-up."""
  from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  iterator = pipeline.make_train_iterator(
      name, split=split, image_size=image_size, batch_size=batch_size, data_dir=data_dir,
      num_threads=num_threads, num_workers=num_workers,
      prefetch_buffer_size=max(2, 2 * num_threads), worker_buffer_size=4, resample=resample)
  for _ in range(3 + 2 * num_workers):  # Worker start-up and buffer fill.
    next(iterator)
  cpu0, t0, n = _cpu_seconds(), time.perf_counter(), 0
  while time.perf_counter() - t0 < seconds:
    n += len(next(iterator)["id"])
  wall = time.perf_counter() - t0
  if hasattr(iterator, "close"):
    iterator.close()
  time.sleep(0.5)
  cpu = _cpu_seconds() - cpu0
  return n / wall, 1000 * cpu / n


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("case", "all", ["32", "128", "all"], "Which dataset case.", flag_values=fv)
  flags.DEFINE_string("data_dir", "/tmp/gcd_jax_bench", "Where the datasets are built.",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "Batch size.", flag_values=fv)
  flags.DEFINE_float("seconds", 10.0, "Seconds per measurement.", flag_values=fv)
  flags.DEFINE_string("settings", "0:0,2:0,0:2", "Comma-separated threads:workers pairs.",
                      flag_values=fv)
  flags.DEFINE_enum("resample", "lanczos", ["lanczos", "box", "bilinear"],
                    "Image resize filter (the 128 case).", flag_values=fv)


def main() -> None:
  args = cli.parse(define_flags, None, prog="python benchmarks/input_pipeline.py", doc=__doc__)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  settings = [tuple(int(v) for v in s.split(":")) for s in args.settings.split(",")]
  cases = ["32", "128"] if args.case == "all" else [args.case]
  for case in cases:
    name, size, split = ensure_datasets(case, args.data_dir)
    best = 0.0
    for threads, workers in settings:
      rate, cpu_ms = measure(name, size, split, args.data_dir, args.batch_size, threads,
                             workers, args.seconds, args.resample)
      best = max(best, rate)
      load = os.getloadavg()[0]
      print(f"{name} -> {size[0]}x{size[1]} ({args.resample}), batch {args.batch_size},"
            f" threads {threads},"
            f" workers {workers}: {rate:7.0f} examples/s, {cpu_ms:.2f} CPU ms/example"
            f" (load average {load:.1f} on {os.cpu_count()} cores)", flush=True)
    verdict = "ok" if best >= TARGETS[case] else "BELOW TARGET"
    print(f"case {case}: best {best:.0f} examples/s, target {TARGETS[case]}: {verdict}")


if __name__ == "__main__":
  main()
