"""`cityscapes_text`: Cityscapes with 20-class layouts and captions (see cityscapes_text.py)."""

from tfds_builders.cityscapes_text.cityscapes_text import (
    CLASSES, CityscapesText, CityscapesTextConfig, caption_from_layout)

__all__ = ["CLASSES", "CityscapesText", "CityscapesTextConfig", "caption_from_layout"]
