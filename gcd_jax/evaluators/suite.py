"""Evaluation of a sampler on a split: the reference data, the judges, the
generation of N samples, and a results cache that never returns stale numbers.

Shared by `python -m gcd_jax.evaluate` and by training (`train.eval_every`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from etils import epath
import numpy as np

from gcd_jax import fileio
from gcd_jax import sampling
from gcd_jax import visualize
from gcd_jax.evaluators import base

if TYPE_CHECKING:
  import ml_collections

  from gcd_jax.models.unet import UNetConfig


def load_reference(dataset: str, split: str, num_samples: int, image_size: tuple[int, int],
                   data_dir: str | None = None, batch_size: int = 50) -> base.Reference:
  """The first N examples of `split`, in order, with one seeded caption each."""
  from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = pipeline.make_eval_iterator(dataset, split=split, image_size=image_size,
                                   batch_size=max(1, min(batch_size, num_samples)),
                                   data_dir=data_dir)
  captions, images, layouts = [], [], []
  for batch in it:
    captions += [str(x) for x in batch["caption"]]
    images.append(visualize.to_uint8(batch["image"]))
    layouts.append(batch["layout"])
    if len(captions) >= num_samples:
      break
  if len(captions) < num_samples:
    raise ValueError(f"num_samples {num_samples}: split {split!r} of {dataset} has only "
                     f"{len(captions)} examples")
  return base.Reference(dataset=dataset, split=split, captions=captions[:num_samples],
                        images=np.concatenate(images)[:num_samples],
                        layouts=np.concatenate(layouts)[:num_samples],
                        classes=pipeline.layout_classes(dataset, data_dir))


def file_identity(path: str | os.PathLike) -> str:
  """sha256 (16 hex) of a weights file, or of every file of a directory (sorted)."""
  path = pathlib.Path(path)
  files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
  if not files:
    raise FileNotFoundError(f"{path}: no files")
  h = hashlib.sha256()
  for f in files:
    h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
    with open(f, "rb") as fh:
      for chunk in iter(lambda: fh.read(1 << 22), b""):
        h.update(chunk)
  return h.hexdigest()[:16]


def make_judges(reference: base.Reference, *, segmenter: str | None = None,
                segnet: str | None = None, inception: str | None = None,
                clip: str | None = None,
                cache_dir: str | os.PathLike | None = None) -> base.Judges:
  """The judges of an evaluation from their specs.

  segmenter: "oracle" (synthetic_scenes' exact one), a directory written by
    `python -m gcd_jax.segnet train`, or "module.path:callable". Default:
    the oracle on synthetic_scenes, else the `segnet` network, else none.
  segnet: a trained segmentation network's directory: its features give
    `fd_seg` / `kid_seg`.
  inception: FID Inception weights (`metrics/fid.py`); clip: a local CLIP checkpoint dir.
  """
  from gcd_jax.metrics import segmenters  # pylint: disable=g-import-not-at-top
  num_classes = reference.classes.num_classes
  judges = base.Judges(cache_dir=cache_dir)
  net = None
  if segnet:
    from gcd_jax import segnet as segnet_lib  # pylint: disable=g-import-not-at-top
    net = segnet_lib.load(segnet)
    if net.num_classes != num_classes:
      raise ValueError(f"--segnet {segnet}: a network of {net.num_classes} classes, but "
                       f"{reference.dataset} has {num_classes}")
    judges.segnet_features = net.feature_extractor()
  spec = segmenter or ("oracle" if reference.synthetic else None)
  if spec == "oracle":
    if not reference.synthetic:
      raise ValueError(f"segmenter 'oracle' exists only for synthetic_scenes, not {reference.dataset}")
    judges.segmenter = segmenters.OracleSegmenter()
    judges.segmenter_identity = "oracle-synthetic_scenes-v1"
  elif spec and pathlib.Path(spec).is_dir():
    from gcd_jax import segnet as segnet_lib  # pylint: disable=g-import-not-at-top
    seg = segnet_lib.load(spec)
    if seg.num_classes != num_classes:
      raise ValueError(f"--segmenter {spec}: a network of {seg.num_classes} classes, but "
                       f"{reference.dataset} has {num_classes}")
    judges.segmenter = seg
    judges.segmenter_identity = "segnet:" + seg.feature_extractor().identity
  elif spec:
    judges.segmenter = segmenters.load_segmenter(spec, num_classes=num_classes)
    judges.segmenter_identity = "callable:" + spec
  elif net is not None:
    judges.segmenter = net
    judges.segmenter_identity = "segnet:" + judges.segnet_features.identity
  if inception:
    from gcd_jax.metrics import fid  # pylint: disable=g-import-not-at-top
    judges.inception = fid.InceptionFeatures.from_file(inception)
  if clip:
    from gcd_jax.metrics import clip_score  # pylint: disable=g-import-not-at-top
    judges.clip = clip_score.load_clip(clip)
    judges.clip.identity = f"clip-{file_identity(clip)}"
  return judges


SampleFn = Callable[[list[str], int], dict]


def batch_seed(seed: int, start: int) -> int:
  """The sampling seed of the batch that starts at sample `start` of a job seeded `seed`."""
  return seed * 1_000_003 + start


def generate(sample_fn: SampleFn, captions: Sequence[str], batch_size: int, seed: int,
             desc: str = "sampling", progress: bool = True,
             batch_seconds: list[float] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
  """One sample per caption: (images [N, H, W, 3] uint8, layouts [N, H, W] or None).

  `sample_fn(captions, seed)` samples a batch. The last batch is padded to the
  batch size, so one compiled program serves every batch; the batch that starts
  at sample s uses seed `batch_seed(seed, s)`. `batch_seconds`, when given, receives
  each batch's wall time (the first includes the compile).
  """
  import tqdm  # pylint: disable=g-import-not-at-top
  n = len(captions)
  images, layouts = [], []
  with tqdm.tqdm(total=n, desc=desc, unit="sample", disable=not progress, leave=False) as bar:
    for start, stop, index in sampling.padded_batches(n, batch_size):
      caps = [captions[i] for i in index]
      t = time.perf_counter()
      out = sample_fn(caps, batch_seed(seed, start))
      images.append(visualize.to_uint8(out["image"]))
      if out.get("layout") is not None:
        layouts.append(np.asarray(out["layout"]))
      if batch_seconds is not None:
        batch_seconds.append(time.perf_counter() - t)
      bar.update(stop - start)
  return (np.concatenate(images)[:n], np.concatenate(layouts)[:n] if layouts else None)


# --- The results cache ------------------------------------------------------------


def compute_identity(model_config: UNetConfig) -> str:
  """What picks the kernels: the same seeds give other samples elsewhere.

  The backend, the resolved compute dtype, the jaxlib version and a digest of
  XLA_FLAGS (our XLA:CPU defaults, gcd_jax/xla_defaults.py, move convolutions
  to other kernels: samples then differ in the last bits, and a cached point of
  the other kernels is not these samples).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  ident = f"{jax.default_backend()}-{model_config.compute_dtype.name}-jaxlib{jaxlib.__version__}"
  flags = " ".join(sorted(os.environ.get("XLA_FLAGS", "").split()))
  if flags:
    ident += "-xla" + hashlib.sha256(flags.encode()).hexdigest()[:8]
  return ident


def point_key(*, checkpoint: str, step: int, sampler: dict, num_samples: int, seed: int,
              dataset: str, split: str, batch_size: int = 0, compute: str = "",
              data_dir: str = "", weights: str = "") -> dict:
  """Everything that determines a sweep point's samples (the metrics keep their
  own judge identities inside the record): the checkpoint, step and weights
  (`Run.weights_digest`), every sampler setting, N, the seed and the batch size
  (the per-batch seeds and the padding depend on it), the dataset, split and
  data dir of the captions, and the backend and compute dtype."""
  return {"checkpoint": checkpoint, "step": int(step), "weights": weights,
          "sampler": dict(sorted(sampler.items())),
          "num_samples": int(num_samples), "seed": int(seed), "dataset": dataset, "split": split,
          "batch_size": int(batch_size), "compute": compute, "data_dir": str(data_dir or "")}


def point_dir(root: str | os.PathLike, key: dict) -> epath.Path:
  s = key["sampler"]
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
  readable = (f"g{s.get('guidance_image', 0):g}-{s.get('guidance_layout', 0):g}_s{s.get('steps')}"
              f"_{s.get('method')}_n{key['num_samples']}_seed{key['seed']}_{key['split']}")
  return fileio.as_path(root) / f"{readable}_{digest}"


def read_point(directory: epath.Path, key: dict) -> dict | None:
  """The cached record if `directory` holds this key's point (else None)."""
  record_path = directory / "metrics.json"
  if not record_path.is_file():
    return None
  try:
    record = json.loads(record_path.read_text())
  except json.JSONDecodeError:
    return None
  if record.get("key") != json.loads(json.dumps(key)):
    return None
  return record


def read_samples(directory: epath.Path, judges: base.Judges) -> base.Samples | None:
  """The stored samples of a point, or None (absent or unreadable: sample again)."""
  import zipfile  # pylint: disable=g-import-not-at-top
  path = directory / "samples.npz"
  if not path.is_file():
    return None
  try:
    with path.open("rb") as file, np.load(file, allow_pickle=False) as f:
      layouts = f["layouts"] if "layouts" in f.files else None
      return base.Samples(f["images"], layouts, judges)
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
    return None


def write_samples(directory: epath.Path, samples: base.Samples) -> None:
  arrays = {"images": samples.images}
  if samples.layouts is not None:
    arrays["layouts"] = samples.layouts.astype(np.uint8 if samples.layouts.max(initial=0) < 256
                                               else np.int32)
  fileio.atomic_write_npz(directory / "samples.npz", arrays)



class TrainingEvaluation:
  """The evaluators of `config.eval`, run on a sampler during training.

    ev = TrainingEvaluation(config, has_layout)
    metrics = ev(lambda captions, seed: sampler_outputs)   # {"semantic_recall": ..., ...}
  """

  def __init__(self, config: ml_collections.ConfigDict, has_layout: bool, dataset: str) -> None:
    e = config.eval
    self.reference = load_reference(dataset, config.data.eval_split, e.num_samples,
                                    (config.data.height, config.data.width),
                                    config.data.data_dir or None, e.batch_size)
    judges = make_judges(self.reference, segmenter=e.segmenter or None, segnet=e.segnet or None)
    self.context = base.Context(self.reference, judges, replicates=e.bootstrap, seed=0)
    names = list(e.metrics) or base.available(self.context, has_layout)
    self.evaluators = base.from_names(names)
    for ev in self.evaluators:  # fail at the start of training, not at step eval_every
      missing = ev.missing(self.context, has_layout)
      if missing:
        raise ValueError(f"config.eval.metrics: {ev.name!r} needs {', '.join(missing)}"
                         " (set config.eval.segnet / config.eval.segmenter, or drop it)")
    self.has_layout = has_layout
    self.batch_size = e.batch_size
    self.seed = config.seed

  def __call__(self, sample_fn: SampleFn) -> dict[str, float]:
    images, layouts = generate(sample_fn, self.reference.captions, self.batch_size, self.seed,
                               desc="evaluation", progress=False)
    result = base.evaluate(self.evaluators, self.context,
                           base.Samples(images, layouts, self.context.judges),
                           has_layout=self.has_layout)
    return result["metrics"]
