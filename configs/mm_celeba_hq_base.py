"""GCDP base model on MM CelebA-HQ at 128x128 with the paper's settings (docs/gcdp.md section 3).

  python -m gcd_jax.prepare --dataset=mm_celeba_hq --manual_dir=/data/celeba  # 256x256 build
  python -m gcd_jax.main --config=configs/mm_celeba_hq_base.py --workdir=workdirs/celeba_base \\
      --config.text.encoder=/path/to/t5-large

Paper: Adam lr 1.2e-4, betas (0.9, 0.99), no warm-up or clipping, global batch 8,
EMA 0.9999, 300k iterations, checkpoints every 10k; cosine schedules on both
sides (layout p = 1); p2 weight gamma 0.5; caption dropout 0.1; sampling: 100
ancestral steps, guidance 3, dynamic thresholding at the 95th percentile.
Low-data subsets: --config.data.train_split=train_25 (or train_50, train_100).
U-Net: paper_base (656M parameters, 208 GFLOPs per 128x128 forward), bf16 compute.
This is a GPU/TPU run (the paper trained on GPUs in fp16); it is far too large for a CPU.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets


def get_config() -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.data.name = "mm_celeba_hq"
  c.data.config = "256"
  c.data.height = c.data.width = 128
  c.data.batch_size = 8
  c.data.num_workers = 4
  # A local checkout of google-t5/t5-large (config.json, model.safetensors, tokenizer.json).
  c.text.encoder = "t5-large"
  # The paper allows 256 tokens; MM-CelebA-HQ captions need far fewer, and the
  # frozen-encoder cache stores real tokens only (~4 KB per token for T5-large).
  c.text.max_length = 128
  c.model = presets.get_preset("paper_base", num_classes=19, text_dim=1024, dtype="bfloat16").to_dict()
  c.train.num_steps = 300_000
  c.train.checkpoint_every = 10_000
  c.train.sample_every = 10_000
  c.train.log_every = 100
  # The released sampler (the faster default is measured on the embedded benchmark only).
  c.sample.method = "ddpm"
  c.sample.steps = 100
  c.sample.guidance_image = c.sample.guidance_layout = 3.0
  c.sample.captions = (
      "This woman has blond hair, arched eyebrows and is smiling.",
      "The man has a beard, black hair and wears eyeglasses.",
      "She is wearing lipstick and has wavy brown hair.",
      "This person has bags under the eyes and a big nose.",
  )
  return c
