"""Paths that work on local disk and on cloud storage, and writes never left half-done.

Every path a user gives us (a workdir, an output directory, a checkpoint) goes
through `as_path`: an `etils.epath.Path`. A URL such as `gs://bucket/run` stays a
URL, and each file operation goes to epath's backend for it (TensorFlow's
filesystems or fsspec/gcsfs). `pathlib` would turn it into the local directory
`./gs:/bucket/run`. A local path is made absolute, so it names the same place if
the process changes directory.

Every file we write goes through `atomic_write` (text, bytes, or a callable that
writes to a binary file): a temporary name beside the target, then a rename.
A crash, a kill -9 or a full disk leaves the old file (or none), never half a
file, and the error names the path.

Caches that must be on local disk (the text-embedding store, the XLA compilation
cache) use `local_cache_dir`.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Union

from etils import epath

if TYPE_CHECKING:
  import matplotlib.figure

PathLike = Union[str, os.PathLike, epath.Path]


def is_url(path: PathLike) -> bool:
  """Whether `path` names remote storage (`gs://`, `s3://`, ...), not local disk."""
  return "://" in os.fspath(path)


def as_path(path: PathLike) -> epath.Path:
  """An epath.Path: a URL unchanged, a local path absolute (and `~` expanded)."""
  if is_url(path):
    return epath.Path(str(path))
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def local_cache_dir(name: str) -> epath.Path:
  """`$GCD_JAX_CACHE_DIR/<name>`, default `$XDG_CACHE_HOME/gcd_jax/<name>` or
  `~/.cache/gcd_jax/<name>`: on local disk."""
  root = os.environ.get("GCD_JAX_CACHE_DIR") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
      "gcd_jax")
  return as_path(os.path.join(root, name))


def atomic_write(path: PathLike, content: str | bytes | Callable[[BinaryIO], Any]) -> epath.Path:
  """Writes `content` to `path` through a temporary file beside it and a rename.

  Args:
    path: a local path or a URL; missing parent directories are made.
    content: str (written as UTF-8), bytes, or a callable `write(binary_file)`.

  Returns the path written. On any error the temporary file is removed, the old
  file at `path` (if any) is untouched, and an OSError names `path`.
  """
  path = as_path(path)
  tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as f:
      if callable(content):
        content(f)
      else:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
    tmp.replace(path)
  except BaseException as e:
    try:
      if tmp.exists():
        tmp.unlink()
    except Exception:  # pylint: disable=broad-except
      pass
    if isinstance(e, OSError) and str(path) not in str(e):
      raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    raise
  return path


def atomic_write_text(path: PathLike, text: str) -> epath.Path:
  """`atomic_write` of a str (UTF-8)."""
  return atomic_write(path, text)


def atomic_write_npz(path: PathLike, arrays: dict[str, Any], compressed: bool = True
                     ) -> epath.Path:
  """`atomic_write` of arrays as .npz."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  save = np.savez_compressed if compressed else np.savez
  return atomic_write(path, lambda f: save(f, **arrays))


def atomic_save_png(array: Any, path: PathLike) -> epath.Path:
  """`atomic_write` of a uint8 [H, W] or [H, W, 3] array as PNG."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.fromarray(np.asarray(array))
  return atomic_write(path, lambda f: image.save(f, format="PNG"))


def atomic_save_figure(fig: matplotlib.figure.Figure, path: PathLike,
                       dpi: int = 100) -> epath.Path:
  """`atomic_write` of a matplotlib figure as PNG; closes the figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  try:
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
  finally:
    plt.close(fig)
