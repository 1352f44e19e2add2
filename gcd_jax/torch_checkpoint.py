"""Reads a PyTorch checkpoint (`torch.save`, zip format) without torch and without running its code.

  tree = torch_checkpoint.load("model.pt")   # {"model": {"unets.0.init_conv...": np.ndarray}, ...}

A `torch.save` file is a zip archive: `<name>/data.pkl`, a pickle of the saved
object whose tensors point at storages `<name>/data/<key>` (raw little-endian
bytes). A pickle can name any Python callable and make the loader call it, so
`pickle.load` on a downloaded file runs whatever it says. This loader's
unpickler knows a closed list of globals: the tensor and parameter rebuild
functions, the typed storages, `OrderedDict` and a few plain builtins. It
rebuilds tensors as numpy arrays (a strided view of the storage, copied) and
refuses any other global with an error that names it and the file. Nothing
from the archive is imported or executed.
"""

from __future__ import annotations

import collections
import io
import pathlib
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(ValueError):
  """The pickle names a global outside the allowed list (it could run code)."""


class _StorageType:
  """Stands in for torch.<X>Storage: only its dtype is used."""

  def __init__(self, name: str):
    self.name, self.dtype = name, np.dtype(STORAGE_DTYPES[name])


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: tuple, stride: tuple,
                       requires_grad: bool = False, backward_hooks: Any = None,
                       metadata: Any = None) -> np.ndarray:
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  if not size:
    return np.array(storage[offset])
  needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset
  if needed > storage.size:
    raise ValueError(f"a tensor of size {size} and stride {stride} at offset {offset} reaches "
                     f"past its storage of {storage.size} elements")
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size,
                                         strides=tuple(s * item for s in stride), writeable=False)
  return np.ascontiguousarray(view)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = False,
                       backward_hooks: Any = None) -> np.ndarray:
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data: np.ndarray, requires_grad: bool, backward_hooks: Any,
                                  state: Any) -> np.ndarray:
  del requires_grad, backward_hooks, state
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):

  def __init__(self, data: bytes, storages: Any, where: str):
    super().__init__(io.BytesIO(data))
    self._storages, self._where = storages, where

  def find_class(self, module: str, name: str) -> Any:
    found = _ALLOWED.get((module, name))
    if found is None:
      raise UnsafeCheckpointError(
          f"{self._where}: the pickle asks for {module}.{name}, which is not a tensor, a storage "
          "or a plain container; refusing to load it (a pickle's globals can run code)")
    return found

  def persistent_load(self, pid: Any) -> np.ndarray:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
      raise UnsafeCheckpointError(f"{self._where}: unknown persistent id {pid!r}")
    _, kind, key, _, numel = pid
    if not isinstance(kind, _StorageType):
      raise UnsafeCheckpointError(f"{self._where}: storage {key!r} has type {kind!r}")
    return self._storages(str(key), kind.dtype, int(numel))


def load(path: str | pathlib.Path) -> Any:
  """The object a `torch.save` zip file holds, tensors as numpy arrays.

  Raises UnsafeCheckpointError for any global outside the allowed list, and
  ValueError for a file that is not a zip-format torch checkpoint.
  """
  path = pathlib.Path(path)
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile:
    raise ValueError(f"{path}: not a zip-format torch checkpoint (torch.save since 1.6 writes "
                     "zip files; re-save a legacy file with torch.save(obj, path))") from None
  with archive:
    names = archive.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
      raise ValueError(f"{path}: no <name>/data.pkl in the archive (found {names[:5]} ...)")
    root = pkl[0][:-len("data.pkl")]
    byteorder = (archive.read(root + "byteorder").decode().strip()
                 if root + "byteorder" in names else "little")
    if byteorder != "little":
      raise ValueError(f"{path}: storages are {byteorder}-endian; only little-endian is read")
    cache: dict[str, np.ndarray] = {}

    def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
      if key not in cache:
        name = f"{root}data/{key}"
        if name not in names:
          raise ValueError(f"{path}: storage {name} is missing from the archive")
        raw = archive.read(name)
        if len(raw) < numel * dtype.itemsize:
          raise ValueError(f"{path}: storage {name} has {len(raw)} bytes, "
                           f"{numel} x {dtype.name} expected")
        cache[key] = np.frombuffer(raw, dtype=dtype, count=numel)
      return cache[key]

    return _Unpickler(archive.read(pkl[0]), storage, str(path)).load()
