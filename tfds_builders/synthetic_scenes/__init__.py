"""TFDS builder of the procedural `synthetic_scenes` dataset (no download needed).

  from tfds_builders.synthetic_scenes import SyntheticScenes
  SyntheticScenes(data_dir=..., config="32", file_format="array_record").download_and_prepare()
  tfds.data_source("synthetic_scenes/32", split="train_25", data_dir=...)
"""

from tfds_builders.synthetic_scenes.builder import CLASSES
from tfds_builders.synthetic_scenes.builder import SyntheticScenes
from tfds_builders.synthetic_scenes.builder import SyntheticScenesConfig

__all__ = ["CLASSES", "SyntheticScenes", "SyntheticScenesConfig"]
