"""Training-step throughput, achieved FLOP/s, compile time and peak host memory.

  python benchmarks/train_step.py --preset reference --size 32 --batch 32 --text_len 32
  python benchmarks/train_step.py --preset shapes --size 32 --batch 32
  python benchmarks/train_step.py --preset paper_base --size 128 --batch 1 --steps 2
  python benchmarks/train_step.py --preset shapes_sr --size 64 --batch 16 --lowres_size 32

Random data and text embeddings (the real loop adds the input pipeline and the
caption cache, see README "Training"); prints steps/s, examples/s, the compile
time of the step, the process' peak resident memory, and the achieved GFLOP/s
(3x the forward FLOPs of XLA's cost analysis per example) as a share of a peak
probe measured in the same run (benchmarks/peak.py: a jitted FMA chain and a
2048^3 matmul). On a GPU/TPU the share is MFU against the device's nominal bf16
peak (--peak_tflops to give it).
"""

import resource
import time

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gcd_jax import cli
from gcd_jax import config_base
from gcd_jax import train_lib
from gcd_jax.models import presets
from gcd_jax.models import summary

import peak  # benchmarks/peak.py


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("preset", "shapes", "U-Net preset.", flag_values=fv)
  flags.DEFINE_integer("size", 32, "Image size.", flag_values=fv)
  flags.DEFINE_integer("batch", 32, "Batch size.", flag_values=fv)
  flags.DEFINE_integer("steps", 10, "Timed steps.", flag_values=fv)
  flags.DEFINE_integer("text_len", 28, "Text tokens.", flag_values=fv)
  flags.DEFINE_string("dtype", "auto", "Compute dtype (auto: bfloat16 on GPU/TPU, float32 on CPU).",
                      flag_values=fv)
  flags.DEFINE_float("peak_tflops", 0.0, "The machine's peak, for the utilisation.",
                     flag_values=fv)
  flags.DEFINE_integer("lowres_size", 0, "An SR preset's low resolution (the step builds its "
                       "conditioning from the batch, as in training).", flag_values=fv)
  flags.DEFINE_string("reference_json", None, "Output of benchmarks/reference_pytorch.py from "
                      "the same window: print the ratio.", flag_values=fv)


def main() -> None:
  args = cli.parse(define_flags, None, prog="python benchmarks/train_step.py", doc=__doc__)

  c = config_base.base_config()
  c.data.height = c.data.width = args.size
  c.data.batch_size = args.batch
  c.text.max_length = args.text_len
  c.model = presets.get_preset(args.preset, dtype=args.dtype).to_dict()
  if c.model.lowres_cond != bool(args.lowres_size):
    raise SystemExit(f"--preset={args.preset} {'needs' if c.model.lowres_cond else 'takes no'} "
                     "--lowres_size")
  c.lowres.height = c.lowres.width = args.lowres_size
  c.train.num_steps = 1000
  config = ml_collections.ConfigDict(c)
  model = train_lib.make_model(config)
  sched = train_lib.make_joint_schedule(config)

  t = time.time()
  state = jax.jit(lambda r: train_lib.init_state(config, model, r))(jax.random.PRNGKey(0))
  jax.block_until_ready(state)
  t_init = time.time() - t
  rng = np.random.default_rng(0)
  m = config.model
  batch = {
      "image": jnp.asarray(rng.uniform(-1, 1, (args.batch, args.size, args.size, 3)), jnp.float32),
      "text": jnp.asarray(rng.normal(size=(args.batch, args.text_len, m.text_dim)), jnp.float32),
      "text_mask": jnp.ones((args.batch, args.text_len), bool),
  }
  if model.config.has_layout:
    batch["layout"] = jnp.asarray(rng.integers(0, m.num_classes, (args.batch, args.size, args.size)), jnp.int32)
  step = jax.jit(train_lib.make_train_step(config, model, sched), donate_argnums=(0,))
  t = time.time()
  compiled = step.lower(state, batch).compile()
  t_compile = time.time() - t
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  t = time.time()
  for _ in range(args.steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  dt = (time.time() - t) / args.steps
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"{args.preset} {args.size}x{args.size} batch {args.batch} ({n_params / 1e6:.1f}M params, "
        f"{args.dtype} compute) on {jax.devices()[0].platform}: {1 / dt:.3f} steps/s, "
        f"{args.batch / dt:.1f} examples/s; init {t_init:.1f} s, step compile {t_compile:.1f} s; "
        f"peak host memory {peak_gb:.2f} GB")
  fwd = summary.forward_flops(model.config, args.batch, args.size, args.size, args.text_len)
  achieved = 3 * fwd / dt / 1e9  # forward + backward ~ 3x forward
  print(f"forward {fwd / args.batch / 1e9:.3f} GFLOP per example; achieved ~{achieved:.1f} GFLOP/s")
  if jax.default_backend() == "cpu":
    fma, mm = peak.fma_gflops(), peak.matmul_gflops()
    print(f"peak probes in this run: FMA {fma:.1f} GFLOP/s, fp32 matmul {mm:.1f} GFLOP/s -> "
          f"{100 * achieved / fma:.1f}% of the FMA probe, {100 * achieved / mm:.1f}% of the matmul probe")
    if args.reference_json:
      import json  # pylint: disable=g-import-not-at-top
      with open(args.reference_json, encoding="utf-8") as f:
        ref = json.load(f)
      key = f"train_{args.size}_b{args.batch}_img_s"
      if key in ref:
        print(f"vs the released PyTorch code at the same size: {args.batch / dt / ref[key]:.2f}x its "
              f"{ref[key]:.1f} img/s (goal: >= 1.0x)")
  else:
    tflops = args.peak_tflops or peak.device_peak_tflops()
    if tflops:
      print(f"MFU {100 * achieved / 1e3 / tflops:.1f}% of {tflops} TFLOP/s bf16 "
            f"({jax.devices()[0].device_kind})")


if __name__ == "__main__":
  main()
