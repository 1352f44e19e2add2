"""TFDS builder of `synthetic_scenes`; the data itself is gcd_jax.data.synthetic_scenes.

  python -m gcd_jax.prepare --dataset synthetic_scenes --config 32

Splits:
  train  num_train examples, stored in the order of
         `synthetic_scenes.train_order(num_train, seed)`, a seeded permutation
         of the train indices (shuffling disabled, so the order is kept);
  test   num_test examples from a disjoint seed stream.
The low-data subsets of the paper (MM CelebA-HQ-25/50/100) are prefixes of
train, named by the split aliases in the metadata (as for every gcd_jax
builder, see `build_utils.subset_split_aliases`):
  train_25 -> "train[:25%]",  train_50 -> "train[:50%]",  train_100 -> "train",
so train_25 is inside train_50, which is inside train, and no example is
stored twice. `gcd_jax.data.pipeline.data_source` resolves the aliases; plain
`tfds.data_source(..., split="train[:25%]")` reads the same records.

Example ids are "train_000123" / "test_000042": the split and index that
regenerate the example alone with
`synthetic_scenes.generate_example(split, index, resolution, seed)`.
The layout classes are in `info.metadata["layout_classes"]` (JSON of
`LayoutClasses`).
"""

from __future__ import annotations

import dataclasses

from etils import epath
import tensorflow_datasets as tfds

from gcd_jax.data import build_utils
from gcd_jax.data import features
from gcd_jax.data import synthetic_scenes

CLASSES = synthetic_scenes.CLASSES


@dataclasses.dataclass(eq=False)
class SyntheticScenesConfig(tfds.core.BuilderConfig):
  """Resolution and size of one build; the seed picks the whole dataset."""

  resolution: int = 32
  num_train: int = 50_000
  num_test: int = 5_000
  seed: int = 0


class SyntheticScenes(tfds.core.GeneratorBasedBuilder):
  """Procedural shapes with per-pixel layouts and exactly checkable captions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIG_CLASS = SyntheticScenesConfig
  BUILDER_CONFIGS = [
      SyntheticScenesConfig(name="32", resolution=32,
                            description="32x32, 50k train / 5k test (default)."),
      SyntheticScenesConfig(name="64", resolution=64,
                            description="64x64, the same scenes as 32."),
      SyntheticScenesConfig(
          name="32_8k", resolution=32, num_train=8_000,
          description="32x32, the first 8k train scenes of 32 (its own seeded order) and "
                      "the same 5k test: the low-data experiment (gcd_jax.experiments.paper_claim)."),
      SyntheticScenesConfig(
          name="32_mini", resolution=32, num_train=200, num_test=100,
          description="32x32, 200 train / 100 test: tests and smoke runs."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "32"
  # TFDS derives this from the package through `importlib_resources`, a package
  # our installs do not have; giving it here avoids that import.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=synthetic_scenes.__doc__,
        features=features.make_features(cfg.resolution, cfg.resolution),
        metadata=tfds.core.MetadataDict(build_utils.layout_classes_metadata(
            CLASSES, split_aliases=build_utils.subset_split_aliases("train"),
            seed=cfg.seed)),
        disable_shuffling=True,  # Keeps the seeded train order (subsets are prefixes).
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    cfg = self.builder_config
    if cfg.num_train < 1 or cfg.num_test < 1:
      raise ValueError(
          f"synthetic_scenes config {cfg.name!r}: num_train ({cfg.num_train}) and "
          f"num_test ({cfg.num_test}) must both be at least 1.")
    return {
        "train": self._generate_examples(
            "train", synthetic_scenes.train_order(cfg.num_train, cfg.seed)),
        "test": self._generate_examples("test", range(cfg.num_test)),
    }

  def _generate_examples(self, split, indices):
    cfg = self.builder_config
    for key, index in enumerate(indices):
      ex = synthetic_scenes.generate_example(split, int(index), cfg.resolution, cfg.seed)
      yield key, build_utils.make_example(ex["image"], ex["layout"][..., 0],
                                          ex["captions"], ex["id"])
