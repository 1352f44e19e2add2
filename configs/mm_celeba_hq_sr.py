"""GCDP's super-resolution stage on MM CelebA-HQ: 128x128 -> 256x256, joint (docs/gcdp.md section 3).

  python -m gcd_jax.prepare --dataset=mm_celeba_hq --manual_dir=/data/celeba  # 256x256 build
  python -m gcd_jax.main --config=configs/mm_celeba_hq_sr.py --workdir=workdirs/celeba_sr \\
      --config.text.encoder=/path/to/t5-large

The paper_sr U-Net (released SRJointUnet widths, no level self-attention,
cross-attention at the lowest level), conditioned on each 256x256 pair
downsampled to 128x128 and upsampled back, both noised at one level drawn per
example from the linear schedule; sampled at level 0.2 and guidance 1 after
configs/mm_celeba_hq_base.py (python -m gcd_jax.sample --workdir=BASE
--sr_workdir=SR ...). Optimiser, EMA, schedules and caption dropout as the base
stage. A GPU/TPU run.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets


def get_config() -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.data.name = "mm_celeba_hq"
  c.data.config = "256"
  c.data.height = c.data.width = 256
  c.data.batch_size = 8
  c.data.num_workers = 4
  c.lowres.height = c.lowres.width = 128
  c.text.encoder = "t5-large"
  c.text.max_length = 128
  c.model = presets.get_preset("paper_sr", num_classes=19, text_dim=1024, dtype="bfloat16").to_dict()
  c.train.num_steps = 300_000
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 0  # an SR stage samples from low-res inputs: the cascade
  c.train.log_every = 100
  c.sample.method = "ddpm"  # the released sampler
  c.sample.steps = 100
  c.sample.guidance_image = c.sample.guidance_layout = 1.0
  c.sample.lowres_level = 0.2
  return c
