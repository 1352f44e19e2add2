"""A few-minute check of an install: the `tiny` U-Net on synthetic_scenes/32_mini.

  python -m gcd_jax.prepare --dataset=synthetic_scenes --config=32_mini
  python -m gcd_jax.main --config=configs/smoke.py --workdir=/tmp/gcd_smoke

It learns nothing useful; it exercises the whole path (data, MiniLM text cache,
sharded step, checkpoints, TensorBoard, sample grid, evaluators) in a few minutes on a
2-core CPU. The tests run it for 4 steps.
"""

import ml_collections

from gcd_jax import config_base
from gcd_jax.models import presets


def get_config() -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.data.name = "synthetic_scenes"
  c.data.config = "32_mini"
  c.data.height = c.data.width = 32
  c.data.batch_size = 8
  c.text.encoder = "minilm"
  c.text.max_length = 28
  c.text.embeddings = "on_the_fly"  # no store to build for a 50-step run
  c.model = presets.get_preset("tiny", num_classes=8, text_dim=384).to_dict()
  c.optimizer.learning_rate = 1e-3
  c.train.num_steps = 50
  c.train.log_every = 10
  c.train.checkpoint_every = 25
  c.train.sample_every = 50
  c.train.progress_every_secs = 10.0
  c.train.eval_every = 50  # the registered evaluators on 16 test captions
  c.eval.num_samples = 16
  c.eval.batch_size = 8
  c.sample.steps = c.sample.repaint_steps = 10
  c.sample.num = 4
  c.sample.captions = ("A red ball.", "Two blue sticks.", "A small green triangle.", "A teal ring.")
  return c
