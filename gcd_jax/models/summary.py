"""Parameter counts and forward FLOPs of a `JointUNet` configuration.

  python -m gcd_jax.models.summary --preset=shapes --height=32 --width=32 --batch=1

Parameters are initialised abstractly (`jax.eval_shape`), so even paper_base
allocates nothing; FLOPs come from XLA's cost analysis of the compiled forward
pass (compilation only, nothing is run). XLA counts a multiply-add as 2 FLOPs
and includes elementwise work; the number depends a little on the backend.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from absl import flags
import jax
import numpy as np
from clu import parameter_overview
from flax import traverse_util

from gcd_jax import cli
from gcd_jax.models import presets
from gcd_jax.models.unet import UNetConfig, example_inputs, make_unet


def param_shapes(config: UNetConfig, height: int = 32, width: int = 32,
                 text_len: int = 8) -> Any:
  """The 'params' tree of `JointUNet(config)` as ShapeDtypeStructs (no allocation).

  Parameter shapes do not depend on the input size; height and width only
  have to be divisible by 2**(levels - 1).
  """
  args, kwargs = example_inputs(config, 1, height, width, text_len)
  variables = jax.eval_shape(
      lambda a, kw: make_unet(config).init(jax.random.key(0), *a, **kw), args, kwargs)
  return variables["params"]


def count_params(params: Any) -> int:
  """Total number of scalars in a parameter tree (arrays or ShapeDtypeStructs)."""
  return int(parameter_overview.count_parameters(params))


def params_per_module(params: Any, depth: int = 1) -> dict[str, int]:
  """Parameter count per module, grouping the param paths by their first `depth` names."""
  counts: dict[str, int] = {}
  for path, leaf in traverse_util.flatten_dict(params).items():
    key = "/".join(path[:depth])
    counts[key] = counts.get(key, 0) + int(np.prod(leaf.shape))
  return counts


def forward_flops(config: UNetConfig, batch: int, height: int, width: int,
                  text_len: int) -> float:
  """FLOPs of one inference forward pass, from XLA's compiled cost analysis."""
  model = make_unet(config)
  params = param_shapes(config, height, width, text_len)
  args, kwargs = example_inputs(config, batch, height, width, text_len)
  fn = jax.jit(lambda p, a, kw: model.apply({"params": p}, *a, **kw))
  cost = fn.lower(params, args, kwargs).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
    cost = cost[0]
  return float(cost["flops"])


def summarize(config: UNetConfig, batch: int, height: int, width: int, text_len: int,
              depth: int = 1, full: bool = False, flops: bool = True) -> str:
  """Human-readable report: config, per-module parameter table, totals, FLOPs."""
  params = param_shapes(config, height, width, text_len)
  lines = [f"UNetConfig: {dataclasses.asdict(config)}", ""]
  if full:
    lines += [parameter_overview.get_parameter_overview(params, include_stats=False), ""]
  per_module = params_per_module(params, depth)
  name_width = max(len(k) for k in per_module)
  lines += [f"{'module':<{name_width}}  {'params':>13}"]
  lines += [f"{k:<{name_width}}  {v:>13,}" for k, v in per_module.items()]
  total = count_params(params)
  lines += ["", f"total parameters: {total:,} ({total / 1e6:.2f} M)"]
  if flops:
    f = forward_flops(config, batch, height, width, text_len)
    lines += [f"forward FLOPs at batch {batch}, {height}x{width}, {text_len} text tokens: "
              f"{f:.4g} ({f / 1e9:.2f} GFLOPs)"]
  return "\n".join(lines)


PROG = "python -m gcd_jax.models.summary"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("preset", "shapes", sorted(presets.PRESETS), "The U-Net preset.",
                    flag_values=fv)
  flags.DEFINE_integer("height", 32, "Input height.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("width", 32, "Input width.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("batch", 1, "Batch of the FLOP count.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("text_len", 64, "Number of text tokens (cross-attention FLOPs grow with "
                       "it).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("depth", 1, "Group parameter counts by this many path components.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_bool("full", False, "Also print every parameter (clu table).", flag_values=fv)
  flags.DEFINE_bool("flops", True, "Compile the forward for its FLOPs (--noflops: skip).",
                    flag_values=fv)


def _command(args) -> None:
  config = presets.get_preset(args.preset)
  print(summarize(config, args.batch, args.height, args.width, args.text_len,
                  depth=args.depth, full=args.full, flops=args.flops))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, _command, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
