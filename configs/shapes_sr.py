"""The embedded default's super-resolution stage: synthetic_scenes 32x32 -> 64x64, joint.

  python -m gcd_jax.prepare --dataset=synthetic_scenes --config=64
  python -m gcd_jax.main --config=configs/shapes_sr.py --workdir=workdirs/shapes_sr

Trained on synthetic_scenes/64 (the same scenes as /32 at twice the
resolution): each 64x64 training pair is conditioned on itself downsampled to
32x32 (antialiased image, nearest-neighbour layout) and upsampled back, noised
at a level drawn per example from the linear schedule (docs/gcdp.md section 3).
It samples at augmentation level 0.2 and guidance 1, as released for SR stages;
the cascade chains it after configs/shapes.py:

  python -m gcd_jax.sample --workdir=workdirs/shapes --sr_workdir=workdirs/shapes_sr \\
      --text="A large red ball on the left." --out=out/cascade

Time and result on a 2-core laptop-class CPU: 4000 steps at batch 16, 1.8-1.9
steps/s, 37 min of wall time alone (with compilation and the final checkpoint).
The stage predicts v (presets.shapes_sr). Chained after the 1,200-step
configs/shapes.py base stage (guidance 2), N = 1000 test captions, scored at
64x64 against the same base outputs upsampled bilinearly (layout
nearest-neighbour), paired 95 % bootstrap intervals:

  python -m gcd_jax.experiments.sr_cascade --base=workdirs/shapes \\
      --sr=workdirs/shapes_sr --segnet=workdirs/segnet_64 --out=workdirs/sr_study \\
      --results=workdirs/sr_results --num_samples=1000 --levels=0,0.1,0.2

  fd_seg 0.0966 against 0.102 at level 0.2 (SR - bilinear -0.0050 [-0.0103,
  0.0008]; at level 0.1 -0.0073 [-0.0121, -0.0021]); semantic recall 0.830
  against 0.836 (-0.0058 [-0.0115, -0.0008]); image-layout mIoU 0.969 against
  0.897. From real low-res test inputs: PSNR 27.4 dB against bilinear's 29.4.
  README, "The super-resolution cascade"; docs/results/sr_cascade/.

Variant `configs/shapes_sr.py:image_only`: the image-only baseline's SR stage
(no layout in or out), for the cascade of configs/shapes.py:image_only.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets

VARIANTS = ("", "image_only")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The joint SR stage; `variant` "image_only" gives the image-only one."""
  if variant not in VARIANTS:
    raise ValueError(f"configs/shapes_sr.py:{variant}: unknown variant; expected one of "
                     f"{[v for v in VARIANTS if v]} (or none)")
  c = config_base.base_config()
  c.data.name = "synthetic_scenes"
  c.data.config = "64"
  c.data.height = c.data.width = 64
  c.data.batch_size = 16
  c.lowres.height = c.lowres.width = 32
  # Training levels ~ Uniform[0, 0.5) rather than the released [0, 0.999): the
  # cascade samples at 0.2 or below, and a CPU-sized stage learns those levels
  # with twice the examples (above 0.5 the input is mostly noise, and the task
  # is the base stage's).
  c.lowres.max_level = 0.5

  c.text.encoder = "minilm"
  c.text.max_length = 28
  # On the fly, not a store: 1200 steps at batch 32 draw 38,400 captions, of which
  # 35,602 are distinct (each example has several), so a store entry would be read
  # about once; the encoder runs in its own jitted call per batch.
  c.text.embeddings = "on_the_fly"

  c.model = presets.shapes_sr().to_dict()

  # As configs/shapes.py: a short CPU run.
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.decay = "cosine"
  c.optimizer.end_factor = 0.05
  c.optimizer.grad_clip = 1.0
  c.ema.decay = 0.999
  c.ema.warmup = 10

  c.train.num_steps = 4000
  c.train.log_every = 25
  c.train.checkpoint_every = 500
  c.train.sample_every = 0  # an SR stage samples from low-res inputs: see the cascade
  c.train.eval_every = 0

  c.sample.guidance_image = c.sample.guidance_layout = 1.0  # SR stages: no guidance (as released)
  c.sample.lowres_level = 0.2
  c.sample.repaint_steps = 50

  if variant == "image_only":
    c.model.num_classes = 0
    c.loss.layout_weight = 0.0
  return c
