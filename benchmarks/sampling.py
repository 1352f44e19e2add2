"""Time the joint sampler: 50 guided steps (image and layout guidance) at batch 8.

  python benchmarks/sampling.py            # shapes at 32x32, and a ~20M model at 32x32 and 64x64

Reference (GCDP_NOTES / issue): the released PyTorch code on a 2-core CPU takes
7.3 s (32x32) and 18.3 s (64x64) for 50 guided steps of a 19.6M-parameter model
at batch 8, running the two guidance passes one after the other. Random weights
(the heads perturbed so that the outputs are not zero); timing excludes compile.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from gcd_jax import sampling
from gcd_jax.diffusion import joint
from gcd_jax.models import presets
from gcd_jax.models import unet


def model_20m():
  """The released base architecture (paper_base: memory-efficient levels, attention on
  levels 2-4) scaled to the reference's size: dim 32, 2 blocks per level, 19.9M parameters."""
  return presets.get_preset("paper_base", dim=32, num_res_blocks=(2, 2, 2, 2), text_dim=384,
                            num_classes=8)


def bench(name, config, size, batch=8, steps=50, repeats=3, text_len=28):
  model = unet.JointUNet(config)
  x = jnp.zeros((1, size, size, 3))
  y = jnp.zeros((1, size, size), jnp.int32)
  text = jnp.zeros((1, text_len, config.text_dim))
  mask = jnp.ones((1, text_len), bool)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, y, jnp.zeros((1,)), text, mask)["params"]
  n_params = sum(p.size for p in jax.tree.leaves(params))
  sched = joint.make_schedule(1000, config.num_classes)
  cfg = sampling.SamplerConfig(steps=steps, guidance_image=3.0, guidance_layout=3.0)
  sample = sampling.make_sampler(sampling.model_apply_fn(model), sched, cfg, height=size, width=size)
  temb = jax.random.normal(jax.random.PRNGKey(1), (batch, text_len, config.text_dim))
  tmask = jnp.ones((batch, text_len), bool)
  t = time.time()
  jax.block_until_ready(sample(params, jax.random.PRNGKey(0), temb, tmask))
  first = time.time() - t
  times = []
  for r in range(repeats):
    t = time.time()
    jax.block_until_ready(sample(params, jax.random.PRNGKey(r + 1), temb, tmask))
    times.append(time.time() - t)
  best = min(times)
  print(f"{name:>12} {size}x{size}: {n_params / 1e6:5.1f}M params, batch {batch}, {steps} guided steps: "
        f"{best:.2f} s (median {sorted(times)[len(times) // 2]:.2f} s; compile+first {first:.1f} s)",
        flush=True)
  return best


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  print(f"devices: {jax.devices()}")
  bench("shapes", presets.shapes(), 32, repeats=args.repeats)
  t32 = bench("~20M", model_20m(), 32, repeats=args.repeats)
  t64 = bench("~20M", model_20m(), 64, repeats=args.repeats)
  print(f"vs released PyTorch (19.6M, sequential guidance): 32x32 {t32 / 7.3:.2f}x of 7.3 s, "
        f"64x64 {t64 / 18.3:.2f}x of 18.3 s (target <= 0.5x)")


if __name__ == "__main__":
  main()
