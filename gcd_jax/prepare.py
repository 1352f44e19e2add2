"""Builds a gcd_jax dataset offline as array_record (what the input pipeline reads).

  python -m gcd_jax.prepare --dataset synthetic_scenes --config 32
  python -m gcd_jax.prepare --dataset mm_celeba_hq --config 256 --manual_dir ~/data/celeba
  python -m gcd_jax.prepare --dataset cityscapes_text --manual_dir ~/data/cityscapes
  python -m gcd_jax.prepare --dataset layout_folder --config my_data --manual_dir ~/my_data

writes `{data_dir}/{dataset}/{config}/{version}/` (data_dir defaults to
~/tensorflow_datasets), read back with
`gcd_jax.data.pipeline.make_train_iterator("{dataset}/{config}", ...)`.
Nothing is downloaded: real datasets read the files the user placed in
`--manual_dir` (each builder's docstring says which). A build that fails leaves
no prepared dataset behind (TFDS writes to a temporary directory and renames it
only at the end).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

from absl import flags
import tensorflow_datasets as tfds

from gcd_jax import cli

# Dataset name -> module whose import registers the TFDS builder.
DATASETS = {
    "synthetic_scenes": "tfds_builders.synthetic_scenes",
    "mm_celeba_hq": "tfds_builders.mm_celeba_hq",
    "cityscapes_text": "tfds_builders.cityscapes_text",
    "layout_folder": "tfds_builders.layout_folder",
}


def builder_class(dataset: str) -> type[tfds.core.DatasetBuilder]:
  """Imports the builder module of `dataset` and returns its TFDS class."""
  if dataset not in DATASETS:
    raise ValueError(f"Unknown dataset {dataset!r}; known: {sorted(DATASETS)}.")
  importlib.import_module(DATASETS[dataset])
  return tfds.builder_cls(dataset)


def needs_manual_dir(cls: type[tfds.core.DatasetBuilder]) -> bool:
  return bool(getattr(cls, "MANUAL_DOWNLOAD_INSTRUCTIONS", None))


def prepare(dataset: str, config: str | None = None, data_dir: str | None = None,
            manual_dir: str | None = None, overwrite: bool = False) -> tfds.core.DatasetBuilder:
  """Builds `dataset` (if not already built) as array_record; returns the builder.

  Args:
    dataset: a key of DATASETS.
    config: builder config name (default: the builder's default). For
      layout_folder any name is allowed: each user dataset is its own config.
    data_dir: where prepared datasets live (default ~/tensorflow_datasets).
    manual_dir: the user's files, required for the real datasets.
    overwrite: rebuild even if the dataset is already prepared.

  Raises:
    ValueError: unknown dataset or config, or manual_dir missing.
    gcd_jax.data.build_utils.BuildError: bad input files (names file and problem).
  """
  cls = builder_class(dataset)
  if needs_manual_dir(cls):
    if not manual_dir:
      raise ValueError(
          f"--manual_dir is required for {dataset}: it is built from files you download"
          f" yourself, laid out as follows.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not os.path.isdir(os.path.expanduser(manual_dir)):
      raise ValueError(f"--manual_dir {manual_dir} is not a directory (dataset {dataset}).")
  kwargs = {}
  if config is not None:
    if config in cls.builder_configs:
      kwargs["config"] = config
    elif hasattr(cls, "make_config"):
      kwargs["config"] = cls.make_config(config)
    else:
      raise ValueError(f"Unknown config {config!r} of {dataset}; known: "
                       f"{sorted(cls.builder_configs)}.")
  if data_dir is not None:
    from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    pipeline.check_local_data_dir(data_dir)
    kwargs["data_dir"] = os.path.expanduser(data_dir)
  builder = cls(file_format="array_record", **kwargs)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None,
      download_mode=(tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
                     else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS),
      try_download_gcs=False)
  builder.download_and_prepare(download_config=download_config)
  return builder


PROG = "python -m gcd_jax.prepare"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("dataset", None, sorted(DATASETS), "The dataset to build.", required=True,
                    flag_values=fv)
  flags.DEFINE_string("config", None, "Builder config (default: the builder's).", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "Where prepared datasets live (default "
                      "~/tensorflow_datasets).", flag_values=fv)
  flags.DEFINE_string("manual_dir", None, "Your files (the real datasets).", flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Rebuild if already prepared.", flag_values=fv)


def _command(args) -> None:
  # Deferred: importing the builders pulls in TensorFlow; --help should not.
  from gcd_jax.data.build_utils import BuildError  # pylint: disable=g-import-not-at-top
  try:
    builder = prepare(args.dataset, args.config, args.data_dir, args.manual_dir, args.overwrite)
  except BuildError as e:
    raise cli.InputError(str(e)) from None
  splits = ", ".join(f"{k}: {v.num_examples}" for k, v in sorted(builder.info.splits.items()))
  print(f"{builder.info.full_name} prepared in {builder.data_dir} ({splits}).")


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, _command, prog=PROG, doc=__doc__, argv=argv,
                          jax_cache=False)


if __name__ == "__main__":
  sys.exit(main())
