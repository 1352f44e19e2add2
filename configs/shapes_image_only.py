"""The image-only twin of configs/shapes.py: the paper's baseline (Gaussian diffusion
alone, no layout) on the same data, text encoder, U-Net widths and budget.

  python -m gcd_jax.main --config configs/shapes_image_only.py --workdir workdirs/shapes_image_only

Same cost as shapes less the layout head; compare the two with gcd_jax.evaluate
(the image-only model's layout metrics use the oracle segmenter's output).
"""

import importlib.util
import pathlib


def get_config():
  spec = importlib.util.spec_from_file_location(
      "shapes", pathlib.Path(__file__).with_name("shapes.py"))
  shapes = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(shapes)
  c = shapes.get_config()
  c.model.num_classes = 0  # no layout embedding, head or loss: the baseline
  c.loss.layout_weight = 0.0
  return c
