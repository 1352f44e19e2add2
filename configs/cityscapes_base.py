"""GCDP base model on Cityscapes at 128x256 with the paper's settings, trained on
`train` (2975 pairs) and evaluated on `val` (500 pairs), which it never sees.

  python -m gcd_jax.prepare --dataset=cityscapes_text --manual_dir=/data/cityscapes  # 256x512 build
  python -m gcd_jax.main --config=configs/cityscapes_base.py --workdir=workdirs/cityscapes_base \\
      --config.text.encoder=/path/to/t5-large

Variant `configs/cityscapes_base.py:trainval`: the paper's protocol, trained on
train + val (3475 pairs) and evaluated on val. WARNING: the evaluation split is
then part of the training data, so every number on it measures a model that has
seen those images, layouts and captions. Use it only to compare with the
paper's reported numbers; the default (train only) is the held-out evaluation.

K = 20 (19 train ids + unlabeled). Captions: the paper's template from the classes
present ("An image of an urban street view with Buildings, Roads, ... and Cars."),
or your own jsonl at prepare time. Optimiser, EMA, schedules and sampling as in
configs/mm_celeba_hq_base.py. U-Net: paper_base, bf16 compute,
433 GFLOPs per 128x256 forward. A GPU/TPU run.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets


VARIANTS = ("", "trainval")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """Held out on val; `variant` "trainval" trains on val too (the paper's protocol)."""
  if variant not in VARIANTS:
    raise ValueError(f"configs/cityscapes_base.py:{variant}: unknown variant; expected one of "
                     f"{[v for v in VARIANTS if v]} (or none)")
  c = config_base.base_config()
  c.data.name = "cityscapes_text"
  c.data.config = "256x512"
  c.data.train_split = "trainval" if variant == "trainval" else "train"
  c.data.eval_split = "val"  # held out unless variant "trainval"
  c.data.height, c.data.width = 128, 256
  c.data.batch_size = 8
  c.data.num_workers = 4
  c.data.flip = True  # street scenes have no left/right classes
  c.text.encoder = "t5-large"
  c.text.max_length = 64  # template captions name at most 19 classes
  c.model = presets.get_preset("paper_base", num_classes=20, text_dim=1024, dtype="bfloat16").to_dict()
  c.train.num_steps = 300_000
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 10_000
  c.train.log_every = 100
  # The released sampler (the faster default is measured on the embedded benchmark only).
  c.sample.method = "ddpm"
  c.sample.steps = 100
  c.sample.guidance_image = c.sample.guidance_layout = 3.0
  c.sample.captions = (
      "An image of an urban street view with Buildings, Roads, Sidewalks, Vegetation, Sky and Cars.",
      "An image of an urban street view with Roads, Trees, People and Bicycles.",
  )
  return c
