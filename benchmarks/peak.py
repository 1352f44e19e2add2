"""A peak-FLOP/s probe of this machine, measured in the same run as a benchmark.

  python benchmarks/peak.py          # prints the probes

Absolute speeds differ 2x between our machines and days, so benchmarks state
their throughput as a share of a probe taken in the same process, back to back:

  matmul    a jitted 2048x2048 @ 2048x2048 product (float32, or bfloat16 with
            float32 accumulation), the best of several repeats;
  fma       a jitted loop over a [256, 4096] float32 array, 16 chained multiply-adds
            per element in one fused pass (fewer leave it bound by the loop's memory
            traffic: 20 GFLOP/s with 1 per pass, 160 with 16, on our CPU), 2 FLOP each.

The matmul probe can exceed the FMA probe (a fused elementwise loop does not reach
the FMA units' peak); shares are stated against both.

On a GPU/TPU, MFU is against the device's nominal bf16 peak (`DEVICE_PEAK_TFLOPS`,
or --peak_tflops).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Nominal dense bf16 peaks (TFLOP/s) by device kind substring.
DEVICE_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0,
                      "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0,
                      "TPU v6": 918.0}


def _best_seconds(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t)
  return best


def matmul_gflops(dtype=jnp.float32, n: int = 2048, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
  f = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
  return 2 * n**3 / _best_seconds(f, a, b, repeats=repeats) / 1e9


def fma_gflops(steps: int = 500, shape=(256, 4096), per_pass: int = 16, repeats: int = 5) -> float:
  x = jnp.full(shape, 0.5, jnp.float32)

  @jax.jit
  def chain(v):
    def body(_, u):
      for _ in range(per_pass):
        u = u * 0.999 + 0.0005
      return u
    return jax.lax.fori_loop(0, steps, body, v)

  return 2 * steps * per_pass * x.size / _best_seconds(chain, x, repeats=repeats) / 1e9


def device_peak_tflops() -> float | None:
  kind = jax.devices()[0].device_kind
  for name, peak in DEVICE_PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return peak
  return None


if __name__ == "__main__":
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(f"fma probe: {fma_gflops():.1f} GFLOP/s fp32")
  print(f"matmul probe: {matmul_gflops():.1f} GFLOP/s fp32, "
        f"{matmul_gflops(jnp.bfloat16):.1f} GFLOP/s bf16 (fp32 accumulation)")
