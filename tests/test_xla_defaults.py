"""gcd_jax's XLA:CPU defaults (gcd_jax/xla_defaults.py): applied, in effect, and exact.

The faster convolution path must give the numbers of jaxlib's default path: two
fresh processes, one with our defaults and one without, compute the loss and
gradients of a GroupNorm/SiLU/conv/attention block (every kernel family the flag
moves) on the same inputs; they agree to float32 rounding (relative 1e-5 of the
largest entry, far below the 1e-3 that a wrong kernel or layout gives).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gcd_jax import xla_defaults

_PROBE = r"""
import json, sys
import numpy as np
import gcd_jax  # applies (or not) the defaults before jax's CPU client exists
import jax, jax.numpy as jnp
from jax import lax

def block(p, x, ctx):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, 8, c // 8)
  mean = g.mean((1, 2, 4), keepdims=True)
  var = g.var((1, 2, 4), keepdims=True)
  y = ((g - mean) * lax.rsqrt(var + 1e-5)).reshape(x.shape)
  y = jax.nn.silu(y)
  y = lax.conv_general_dilated(y, p["w1"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = lax.conv_general_dilated(jax.nn.silu(y), p["w2"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  q = y.reshape(b, -1, y.shape[-1]) @ p["wq"]
  att = jax.nn.softmax(q @ (ctx @ p["wk"]).transpose(0, 2, 1) / 4.0, -1)
  return jnp.mean((att @ ctx) ** 2) + jnp.mean(y ** 2)

r = np.random.default_rng(0)
p = {"w1": r.normal(size=(3, 3, 32, 32)).astype(np.float32) / 17,
     "w2": r.normal(size=(3, 3, 32, 16)).astype(np.float32) / 17,
     "wq": r.normal(size=(16, 16)).astype(np.float32) / 4,
     "wk": r.normal(size=(16, 16)).astype(np.float32) / 4}
x = r.normal(size=(4, 16, 16, 32)).astype(np.float32)
ctx = r.normal(size=(4, 8, 16)).astype(np.float32)
f = jax.jit(jax.value_and_grad(block, argnums=(0, 1)))
hlo = f.lower(p, x, ctx).compile().as_text()
import re
conv_in_ynn = any("__ynn_fusion" in l and re.search(r'op_name="[^"]*conv_general_dilated"', l)
                  for l in hlo.splitlines())
loss, (gp, gx) = f(p, x, ctx)
np.savez(sys.argv[1], loss=np.asarray(loss), gx=np.asarray(gx), **{k: np.asarray(v) for k, v in gp.items()})
print(json.dumps({"xla_flags": __import__("os").environ.get("XLA_FLAGS", ""), "conv_in_ynn": conv_in_ynn}))
"""


def _probe(tmp_path, name, **env):
  out = tmp_path / f"{name}.npz"
  environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  environ.update(env)
  proc = subprocess.run([sys.executable, "-c", _PROBE, str(out)], env=environ, capture_output=True,
                        text=True, timeout=300, check=False,
                        cwd=pathlib.Path(__file__).resolve().parent.parent)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), dict(np.load(out))


@pytest.mark.skipif(xla_defaults._jaxlib_version() not in xla_defaults._KNOWN_JAXLIB,  # pylint: disable=protected-access
                    reason="the defaults apply to jaxlib 0.10 only")
def test_defaults_move_convolutions_off_ynnpack_and_keep_the_numbers(tmp_path):
  ours, a = _probe(tmp_path, "ours")
  plain, b = _probe(tmp_path, "plain", GCD_JAX_XLA_DEFAULTS="0")
  assert "ynn_fusion_type" in ours["xla_flags"] and "ynn_fusion_type" not in plain["xla_flags"]
  # The flag is in effect: jaxlib's default fuses convolutions into YNNPACK, ours does not.
  assert plain["conv_in_ynn"] and not ours["conv_in_ynn"]
  for k in a:
    scale = max(float(np.max(np.abs(b[k]))), 1e-30)
    err = float(np.max(np.abs(a[k] - b[k]))) / scale
    assert err < 1e-5, (k, err)


def test_flags_to_add_respects_the_user():
  v = (0, 10)
  assert xla_defaults.flags_to_add({}, v) == [
      "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"]
  assert xla_defaults.flags_to_add({"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, v)
  assert not xla_defaults.flags_to_add({"GCD_JAX_XLA_DEFAULTS": "0"}, v)
  assert not xla_defaults.flags_to_add({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type="}, v)
  assert not xla_defaults.flags_to_add({}, (0, 11))  # an unknown jaxlib: XLA would abort on the flag
  assert not xla_defaults.flags_to_add({}, (0, 9))
