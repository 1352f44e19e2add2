"""Writing files so that a crash never leaves one half-written."""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
  import matplotlib.figure


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it into place."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(text, encoding="utf-8")
  os.replace(tmp, path)


def atomic_write_npz(path: str | os.PathLike, arrays: dict[str, Any],
                     compressed: bool = True) -> None:
  """Writes arrays as .npz to a temporary file beside `path`, then renames it into place."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  with open(tmp, "wb") as f:
    (np.savez_compressed if compressed else np.savez)(f, **arrays)
  os.replace(tmp, path)


def atomic_save_figure(fig: matplotlib.figure.Figure, path: str | os.PathLike,
                       dpi: int = 100) -> None:
  """Saves a matplotlib figure as PNG beside `path`, renames it into place, closes it."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=dpi)
  plt.close(fig)
  os.replace(tmp, path)
