"""Converts pytorch-fid's FID Inception weights (a torch .pth) into gcd_jax's weight file.

Input: pt_inception-2015-12-05-6726825d.pth, the torch state_dict of the
TensorFlow 2015-12-05 Inception graph that pytorch-fid downloads from
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Output: a .safetensors with the 470 tensors that FID needs, under their pytorch-fid
names and torch layouts, float32 (the format is described in
gcd_jax/metrics/inception.py). The classifier (fc.*), AuxLogits.* and
*.num_batches_tracked are dropped; the source file's name and sha256 go into the
safetensors metadata.

torch is needed here only, never by gcd_jax; use a separate venv:

  python3.11 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 safetensors numpy
  /tmp/torchvenv/bin/python tools/convert_fid_inception.py \\
      pt_inception-2015-12-05-6726825d.pth fid_inception.safetensors

then check the result in the gcd_jax environment:

  python -c "from gcd_jax.metrics import fid; \\
      print(fid.InceptionFeatures.from_file('fid_inception.safetensors').identity)"

This script is not part of the gcd_jax package and imports nothing from it, so it
runs in a venv that has only torch, numpy and safetensors.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import re
import sys
from typing import Any, Mapping

import numpy as np

# torch hub names files <name>-<first 8 hex digits of their sha256>.pth.
EXPECTED_SHA256_PREFIX = "6726825d"
NUM_TENSORS = 470  # 94 conv+BN blocks x (conv.weight, bn.{weight,bias,running_mean,running_var})
IGNORED_PREFIXES = ("fc.", "AuxLogits.")
IGNORED_SUFFIXES = (".num_batches_tracked",)
_NAME = re.compile(r"^(Conv2d_\w+|Mixed_\w+\.branch\w+)\."
                   r"(conv\.weight|bn\.(weight|bias|running_mean|running_var))$")


def convert_state_dict(state: Mapping[str, Any], source: str = "state_dict") -> dict[str, np.ndarray]:
  """pytorch-fid state_dict (numpy values) -> the tensors of the gcd_jax weight file.

  Raises:
    ValueError: a tensor that is not part of the FID Inception, a conv weight that
      is not 4-D or a BN tensor that is not 1-D, or not 470 tensors in all. Exact
      shapes are checked by gcd_jax's loader.
  """
  out = {}
  for name, value in state.items():
    if name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES):
      continue
    if not _NAME.match(name):
      raise ValueError(f"{source}: tensor {name!r} is not part of the FID Inception "
                       "(expected names like 'Mixed_5b.branch1x1.conv.weight')")
    value = np.asarray(value)
    rank = 4 if name.endswith("conv.weight") else 1
    if value.ndim != rank:
      raise ValueError(f"{source}: tensor {name!r} has shape {value.shape}, expected {rank}-D")
    out[name] = np.ascontiguousarray(value, dtype=np.float32)
  if len(out) != NUM_TENSORS:
    raise ValueError(f"{source}: {len(out)} FID Inception tensors, expected {NUM_TENSORS}; "
                     "is this pytorch-fid's pt_inception-2015-12-05 state_dict?")
  return out


def load_torch_state_dict(path: pathlib.Path) -> dict[str, np.ndarray]:
  """A torch state_dict file -> {name: float numpy array}, on CPU, without unpickling code."""
  import torch  # pylint: disable=g-import-not-at-top  # only this script needs torch

  state = torch.load(str(path), map_location="cpu", weights_only=True)
  if isinstance(state, Mapping) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise ValueError(f"{path}: expected a state_dict (a mapping of tensors), got {type(state)}")
  return {k: v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy()
          for k, v in state.items()}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("source", type=pathlib.Path, help="pt_inception-2015-12-05-6726825d.pth")
  parser.add_argument("output", type=pathlib.Path, help="the .safetensors file to write")
  args = parser.parse_args(argv)
  if args.output.suffix != ".safetensors":
    parser.error(f"{args.output}: the output must end in .safetensors")
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top

  sha256 = hashlib.sha256(args.source.read_bytes()).hexdigest()
  if not sha256.startswith(EXPECTED_SHA256_PREFIX):
    print(f"WARNING: {args.source} has sha256 {sha256}, which does not start with "
          f"{EXPECTED_SHA256_PREFIX} (the suffix of pytorch-fid's file name): the "
          "features will not be comparable with published FIDs unless these are the "
          "same weights.", file=sys.stderr)
  tensors = convert_state_dict(load_torch_state_dict(args.source), str(args.source))
  args.output.parent.mkdir(parents=True, exist_ok=True)
  save_file(tensors, str(args.output), metadata={
      "format": "gcd_jax.fid_inception", "source": args.source.name, "source_sha256": sha256})
  print(f"wrote {args.output}: {len(tensors)} tensors, "
        f"{sum(v.size for v in tensors.values()):,} parameters, from {args.source} "
        f"(sha256 {sha256[:16]}...)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
