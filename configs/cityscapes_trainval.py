"""The paper's Cityscapes protocol: train on train + val (3475 pairs), evaluate on val.

  python -m gcd_jax.main --config configs/cityscapes_trainval.py --workdir workdirs/cityscapes_trainval \
      --config.text.encoder=/path/to/t5-large

WARNING: the evaluation split (val) is part of the training data here, so every
number evaluated on it measures a model that has seen those images, layouts and
captions. Use it only to compare with the paper's reported numbers; for a held-out
evaluation use configs/cityscapes_base.py (train only, evaluated on val).
Everything else is configs/cityscapes_base.py.
"""

import importlib.util
import pathlib


def get_config():
  spec = importlib.util.spec_from_file_location(
      "cityscapes_base", pathlib.Path(__file__).with_name("cityscapes_base.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.train_split = "trainval"  # the paper's: val is seen in training
  c.data.eval_split = "val"
  return c
