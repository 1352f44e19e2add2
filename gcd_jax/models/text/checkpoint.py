"""Reading Hugging Face checkpoint directories without torch and without network.

A checkpoint directory is what `save_pretrained` writes (or a `git clone` of a
Hub repository): `config.json`, the weights as `model.safetensors` or as shards
listed in `model.safetensors.index.json`, and tokenizer files. Weights are read
one tensor at a time with `safetensors.safe_open(..., framework="np")`, so the
decoder half of a T5 checkpoint is never loaded into memory. Pickled
`pytorch_model.bin` files are not read: that would need torch.

Every problem is a `CheckpointError` (a ValueError) that names the file, the
tensor and, for shapes, what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from flax import traverse_util
from safetensors import safe_open

if TYPE_CHECKING:
  import numpy.typing as npt

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
  """A checkpoint directory that cannot be loaded; the message says where and why."""


def read_config(checkpoint_dir: str | pathlib.Path) -> dict[str, Any]:
  """Returns the parsed `config.json` of a Hugging Face checkpoint directory."""
  directory = pathlib.Path(checkpoint_dir)
  if not directory.is_dir():
    raise CheckpointError(f"{directory}: not a directory; expected a Hugging Face "
                          "checkpoint directory (config.json, model.safetensors, tokenizer files)")
  path = directory / "config.json"
  if not path.is_file():
    raise CheckpointError(
        f"{path}: no config.json; expected a Hugging Face checkpoint directory "
        f"(config.json, model.safetensors, tokenizer files). Found: "
        f"{sorted(p.name for p in directory.iterdir()) or 'nothing'}")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: not valid JSON ({e})") from e


class SafetensorsCheckpoint:
  """The tensors of a checkpoint directory, single-file or sharded, by name."""

  def __init__(self, checkpoint_dir: str | pathlib.Path) -> None:
    self.directory = pathlib.Path(checkpoint_dir)
    single, index = self.directory / SINGLE_FILE, self.directory / INDEX_FILE
    if index.is_file():
      # Sharded: the index maps each tensor name to the shard that holds it.
      try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
      except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{index}: not a safetensors index with a 'weight_map' ({e})") from e
      self._file_of = {k: self.directory / v for k, v in weight_map.items()}
      for shard in sorted(set(self._file_of.values())):
        if not shard.is_file():
          raise CheckpointError(f"{index}: lists shard {shard.name}, which is missing")
      self.description = str(index)
    elif single.is_file():
      with safe_open(str(single), framework="np") as f:
        self._file_of = {k: single for k in f.keys()}
      self.description = str(single)
    else:
      bins = sorted(p.name for p in self.directory.glob("*.bin"))
      hint = (f" Found {bins}: convert them to safetensors (torch is not a "
              "dependency of gcd_jax, so pickled weights are not read)." if bins else "")
      raise CheckpointError(f"{self.directory}: neither {SINGLE_FILE} nor {INDEX_FILE}.{hint}")

  def keys(self) -> set[str]:
    return set(self._file_of)

  def file_of(self, key: str) -> pathlib.Path:
    return self._file_of[key]

  def get(self, key: str) -> np.ndarray:
    """Reads one tensor as float32 (bf16/fp16 checkpoints are upcast here)."""
    with safe_open(str(self._file_of[key]), framework="np") as f:
      return np.asarray(f.get_tensor(key), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """Where one Flax parameter comes from in a Hugging Face checkpoint.

  Attributes:
    path: the Flax parameter path, e.g. ("layer_0", "attention", "query", "kernel").
    names: candidate checkpoint tensor names, first match wins (e.g. with and
      without the "bert." prefix, or LayerNorm ".gamma" for old checkpoints).
    transpose: torch Linear weights are [out, in]; Flax Dense kernels [in, out].
  """
  path: tuple[str, ...]
  names: tuple[str, ...]
  transpose: bool = False


def load_params(checkpoint: SafetensorsCheckpoint, specs: Sequence[TensorSpec],
                expected_shapes: Mapping[str, Any], config_path: pathlib.Path,
                dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
  """Fills a Flax parameter tree from a checkpoint, checking every shape.

  Args:
    checkpoint: the tensors.
    specs: one per Flax parameter.
    expected_shapes: the parameter tree of the module built from config.json, with
      leaves that have `.shape` (e.g. from `jax.eval_shape(module.init, ...)`).
    config_path: named in shape errors, since the expected shape comes from it.
    dtype: the dtype of the returned arrays.

  Returns:
    The nested parameter dict (numpy arrays), same structure as expected_shapes.
  """
  expected = traverse_util.flatten_dict(expected_shapes)
  by_path = {spec.path: spec for spec in specs}
  if set(by_path) != set(expected):
    # A bug in the spec tables, not in the user's checkpoint.
    raise AssertionError(f"tensor specs and module parameters differ: "
                         f"{sorted(set(by_path) ^ set(expected))}")
  available = checkpoint.keys()
  params = {}
  for path, leaf in expected.items():
    spec = by_path[path]
    name = next((n for n in spec.names if n in available), None)
    if name is None:
      raise CheckpointError(
          f"{checkpoint.description}: tensor {spec.names[0]!r} is missing"
          + (f" (also tried {list(spec.names[1:])})" if len(spec.names) > 1 else "")
          + f"; the checkpoint does not match {config_path}")
    value = checkpoint.get(name)
    want = tuple(leaf.shape)[::-1] if spec.transpose else tuple(leaf.shape)
    if value.shape != want:
      raise CheckpointError(
          f"{checkpoint.file_of(name)}: tensor {name!r} has shape {tuple(value.shape)}, "
          f"expected {want} from {config_path}")
    params[path] = (value.T if spec.transpose else value).astype(dtype)
  return traverse_util.unflatten_dict(params)
