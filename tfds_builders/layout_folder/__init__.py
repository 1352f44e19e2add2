"""`layout_folder`: a user's own images, layouts and captions (see layout_folder.py)."""

from tfds_builders.layout_folder.layout_folder import LayoutFolder, LayoutFolderConfig

__all__ = ["LayoutFolder", "LayoutFolderConfig"]
