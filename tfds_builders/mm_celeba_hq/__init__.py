"""`mm_celeba_hq`: MM CelebA-HQ faces, part layouts and captions (see mm_celeba_hq.py)."""

from tfds_builders.mm_celeba_hq.mm_celeba_hq import CLASSES, MmCelebaHq, MmCelebaHqConfig

__all__ = ["CLASSES", "MmCelebaHq", "MmCelebaHqConfig"]
