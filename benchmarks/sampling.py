"""Time the joint sampler: 50 guided steps (image and layout guidance) at batch 8.

  python benchmarks/sampling.py                                   # shapes, and `reference` at 32 and 64
  python benchmarks/sampling.py --reference_json ref.json         # ... and the ratio to the PyTorch code

`reference` is the released JointUnet's benchmark architecture (see
models/presets.py); benchmarks/reference_pytorch.py times the official code at
the same size and writes the JSON read here (run both back to back, with the
same threads and allocator settings: benchmarks/vs_reference.sh). Random
weights (heads perturbed so that outputs are not zero); timing excludes compile.
"""

import json
import time

from absl import flags
import jax
import jax.numpy as jnp

from gcd_jax import cli
from gcd_jax import sampling
from gcd_jax.diffusion import joint
from gcd_jax.models import presets
from gcd_jax.models import unet


def bench(name, config, size, batch=8, steps=50, repeats=3, text_len=32, method="ddpm"):
  model = unet.JointUNet(config)
  x = jnp.zeros((1, size, size, 3))
  y = jnp.zeros((1, size, size), jnp.int32)
  text = jnp.zeros((1, text_len, config.text_dim))
  mask = jnp.ones((1, text_len), bool)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), x, y, jnp.zeros((1,)), text, mask)["params"]
  n_params = sum(p.size for p in jax.tree.leaves(params))
  sched = joint.make_schedule(1000, config.num_classes)
  cfg = sampling.SamplerConfig(steps=steps, guidance_image=3.0, guidance_layout=3.0, method=method)
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
  print(f"{name:>10} {size}x{size}: {n_params / 1e6:5.1f}M params, batch {batch}, {steps} guided steps "
        f"({method}): {best:.2f} s (median {sorted(times)[len(times) // 2]:.2f} s; compile+first "
        f"{first:.1f} s)", flush=True)
  return best


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_integer("repeats", 3, "Timed repeats.", flag_values=fv)
  flags.DEFINE_string("reference_json", None,
                      "Output of benchmarks/reference_pytorch.py from the same window.",
                      flag_values=fv)
  flags.DEFINE_bool("skip_shapes", False, "Skip the shapes preset.", flag_values=fv)


def main() -> None:
  args = cli.parse(define_flags, None, prog="python benchmarks/sampling.py", doc=__doc__)
  print(f"devices: {jax.devices()}")
  if not args.skip_shapes:
    bench("shapes", presets.shapes(), 32, repeats=args.repeats, text_len=28)
  t32 = bench("reference", presets.reference(), 32, repeats=args.repeats)
  t64 = bench("reference", presets.reference(), 64, repeats=args.repeats)
  if args.reference_json:
    with open(args.reference_json, encoding="utf-8") as f:
      ref = json.load(f)
    print(f"time vs the released PyTorch code ({ref['params'] / 1e6:.1f}M params, two sequential "
          f"passes per step): 32x32 {t32 / ref['sample_32_b8_50_s']:.2f}x of its "
          f"{ref['sample_32_b8_50_s']:.2f} s, 64x64 {t64 / ref['sample_64_b8_50_s']:.2f}x of its "
          f"{ref['sample_64_b8_50_s']:.2f} s (goal: <= 1.0x)")


if __name__ == "__main__":
  main()
