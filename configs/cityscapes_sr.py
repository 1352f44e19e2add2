"""GCDP's super-resolution stage on Cityscapes: 128x256 -> 256x512, joint (docs/gcdp.md section 3).

  python -m gcd_jax.prepare --dataset=cityscapes_text --manual_dir=/data/cityscapes  # 256x512 build
  python -m gcd_jax.main --config=configs/cityscapes_sr.py --workdir=workdirs/cityscapes_sr \\
      --config.text.encoder=/path/to/t5-large

As configs/mm_celeba_hq_sr.py, on Cityscapes' train split (K = 20), after
configs/cityscapes_base.py; variant `configs/cityscapes_sr.py:trainval` trains
on train + val as the paper does (val is then seen in training). A GPU/TPU run.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets

VARIANTS = ("", "trainval")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"configs/cityscapes_sr.py:{variant}: unknown variant; expected one of "
                     f"{[v for v in VARIANTS if v]} (or none)")
  c = config_base.base_config()
  c.data.name = "cityscapes_text"
  c.data.config = "256x512"
  c.data.train_split = "trainval" if variant == "trainval" else "train"
  c.data.eval_split = "val"
  c.data.height, c.data.width = 256, 512
  c.data.batch_size = 8
  c.data.num_workers = 4
  c.lowres.height, c.lowres.width = 128, 256
  c.text.encoder = "t5-large"
  c.text.max_length = 64
  c.model = presets.get_preset("paper_sr", num_classes=20, text_dim=1024, dtype="bfloat16").to_dict()
  c.train.num_steps = 300_000
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 0  # an SR stage samples from low-res inputs: the cascade
  c.train.log_every = 100
  c.sample.method = "ddpm"  # the released sampler
  c.sample.steps = 100
  c.sample.guidance_image = c.sample.guidance_layout = 1.0
  c.sample.lowres_level = 0.2
  return c
