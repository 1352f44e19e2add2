"""Times building synthetic_scenes: rendering alone, then the full TFDS build.

  python benchmarks/build_synthetic.py --resolution 32 --num_train 20000

The TFDS build writes train (num_train) and test (num_test) as array_record
(the low-data subsets are prefixes of train, nothing extra is written) into a
temporary directory (or --data_dir). Target: 20k images at 32x32 in under a
minute on 2 cores.
"""

from __future__ import annotations

import tempfile
import time

from absl import flags
from gcd_jax import cli
from gcd_jax.data import synthetic_scenes


def time_rendering(resolution: int, num: int) -> tuple[float, float]:
  """Wall and CPU seconds to generate `num` examples (image, layout, captions)."""
  start, cpu = time.perf_counter(), time.process_time()
  for index in range(num):
    synthetic_scenes.generate_example("train", index, resolution)
  return time.perf_counter() - start, time.process_time() - cpu


def time_build(resolution: int, num_train: int, num_test: int,
               data_dir: str) -> tuple[float, float, int]:
  """Wall and CPU seconds of download_and_prepare of a custom config, and the
  number of examples written."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tfds_builders.synthetic_scenes import SyntheticScenes, SyntheticScenesConfig  # pylint: disable=g-import-not-at-top

  tfds.disable_progress_bar()
  config = SyntheticScenesConfig(
      name=f"bench_{resolution}_{num_train}", resolution=resolution,
      num_train=num_train, num_test=num_test)
  start, cpu = time.perf_counter(), time.process_time()
  builder = SyntheticScenes(data_dir=data_dir, config=config,
                            file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
  seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
  written = sum(s.num_examples for s in builder.info.splits.values())
  return seconds, cpu, written


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("resolution", 32, "Image size.", flag_values=fv)
  flags.DEFINE_integer("num_train", 20_000, "Training examples to render and build.", flag_values=fv)
  flags.DEFINE_integer("num_test", 100, "Test examples to build.", flag_values=fv)
  flags.DEFINE_bool("render_only", False, "Skip the TFDS build.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Where to build (default: a temporary directory).",
                      flag_values=fv)


def main() -> None:
  args = cli.parse(define_flags, None, prog="python benchmarks/build_synthetic.py", doc=__doc__)

  # CPU seconds as well as wall: on a shared machine the wall time also
  # counts other people's processes.
  seconds, cpu = time_rendering(args.resolution, args.num_train)
  print(f"render {args.num_train} examples at {args.resolution}x{args.resolution}: "
        f"{seconds:.1f} s wall, {cpu:.1f} s CPU ({args.num_train / seconds:.0f} examples/s)")
  if args.render_only:
    return
  with tempfile.TemporaryDirectory() as tmp:
    seconds, cpu, written = time_build(args.resolution, args.num_train,
                                           args.num_test, args.data_dir or tmp)
  print(f"tfds build (train {args.num_train} + test {args.num_test} = {written} "
        f"examples, array_record): {seconds:.1f} s wall, {cpu:.1f} s CPU "
        f"({written / seconds:.0f} examples/s)")


if __name__ == "__main__":
  main()
