"""Do the denoiser's features know the layout? k-means on U-Net decoder features (paper Fig. 8).

  python -m gcd_jax.experiments.clustering --workdir=RUN --out=RUN_clustering.json \\
      [--num_images=100] [--steps=100,200,400,800]

Real test images are noised to diffusion step t (t = k + 1 of the training
steps k = 0..T-1, one seeded noise per image) and passed through the run's EMA
U-Net with their captions. The output of the last residual block of each
decoder level is taken per pixel, every channel is standardised over the pixels
of all images, and k-means with K = the number of layout classes (k-means++
starts, `restarts` of them, the lowest inertia kept) clusters the pixels of all
images together. The clusters are scored against the true layout (nearest
downsampled to the level's resolution) with normalised mutual information
(arithmetic mean of the entropies) and the adjusted Rand index; 95 % intervals
bootstrap over images.

The joint model also takes a layout input. With --layout_input=noise (the
default) it gets pure noise (uniform class ids, the categorical chain's end),
never the real layout, so that both arms see the same information: the noisy
image and the caption. With --layout_input=q_sample it gets the real layout
noised to the same t, as in its own forward process: that input carries the
layout itself, so those numbers say what the joint model does with it, not
that its image features are better.

Writes the JSON record and, beside it, <out>.npz with the cluster maps of the
first `--keep` images (for the picture grid of the report).
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax import cli
from gcd_jax import fileio

if TYPE_CHECKING:
  from gcd_jax import run as run_lib

_LEVEL_BLOCK = re.compile(r"^up_(\d+)_res_(\d+)$")


# ---------------------------------------------------------------------------
# Scores of a clustering against labels.


def contingency(a: jax.Array | np.ndarray, b: jax.Array | np.ndarray) -> np.ndarray:
  """[na, nb] counts of (a == i, b == j) over the flattened arrays."""
  a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
  _, ai = np.unique(a, return_inverse=True)
  _, bi = np.unique(b, return_inverse=True)
  table = np.zeros((ai.max(initial=-1) + 1, bi.max(initial=-1) + 1), np.int64)
  np.add.at(table, (ai, bi), 1)
  return table


def _comb2(x):
  x = np.asarray(x, np.float64)
  return x * (x - 1) / 2


def adjusted_rand_index(a: jax.Array | np.ndarray, b: jax.Array | np.ndarray) -> float:
  """Hubert and Arabie's ARI of two labelings (1: identical up to names; ~0: chance)."""
  table = contingency(a, b)
  n = table.sum()
  index = _comb2(table).sum()
  sa, sb = _comb2(table.sum(1)).sum(), _comb2(table.sum(0)).sum()
  expected = sa * sb / _comb2(n)
  top = (sa + sb) / 2
  if top == expected:  # both labelings are a single cluster (or all singletons)
    return 1.0
  return float((index - expected) / (top - expected))


def normalized_mutual_information(a: jax.Array | np.ndarray,
                                  b: jax.Array | np.ndarray) -> float:
  """I(a; b) / ((H(a) + H(b)) / 2), natural logs (1: identical up to names)."""
  table = contingency(a, b).astype(np.float64)
  p = table / table.sum()
  pa, pb = p.sum(1), p.sum(0)
  nz = p > 0
  mi = float(np.sum(p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])))
  ha = -float(np.sum(pa[pa > 0] * np.log(pa[pa > 0])))
  hb = -float(np.sum(pb[pb > 0] * np.log(pb[pb > 0])))
  if ha + hb == 0:
    return 1.0
  return max(0.0, mi / ((ha + hb) / 2))


# ---------------------------------------------------------------------------
# k-means.


@functools.partial(jax.jit, static_argnames=("num_clusters", "iters"))
def _lloyd(points, key, num_clusters: int, iters: int):
  """One k-means++ start and `iters` Lloyd steps; returns (centres, labels, inertia)."""
  n = points.shape[0]
  sq = jnp.sum(points * points, axis=1)

  def dist2(centres):
    return jnp.maximum(sq[:, None] - 2 * points @ centres.T + jnp.sum(centres * centres, 1)[None], 0)

  keys = jax.random.split(key, num_clusters)
  first = points[jax.random.randint(keys[0], (), 0, n)]
  centres = jnp.zeros((num_clusters, points.shape[1]), points.dtype).at[0].set(first)
  d2 = jnp.sum((points - first) ** 2, axis=1)

  def add(i, carry):
    centres, d2 = carry
    # k-means++: the next centre with probability proportional to D(x)^2.
    idx = jax.random.categorical(keys[i], jnp.log(jnp.maximum(d2, 1e-30)))
    centres = centres.at[i].set(points[idx])
    return centres, jnp.minimum(d2, jnp.sum((points - points[idx]) ** 2, axis=1))

  centres, _ = jax.lax.fori_loop(1, num_clusters, add, (centres, d2))

  def step(_, centres):
    labels = jnp.argmin(dist2(centres), axis=1)
    onehot = jax.nn.one_hot(labels, num_clusters, dtype=points.dtype)
    counts = onehot.sum(0)
    sums = onehot.T @ points
    # An emptied cluster keeps its centre.
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centres)

  centres = jax.lax.fori_loop(0, iters, step, centres)
  d = dist2(centres)
  labels = jnp.argmin(d, axis=1)
  return centres, labels, jnp.sum(jnp.min(d, axis=1))


def kmeans(points: jax.Array | np.ndarray, num_clusters: int, *, seed: int = 0, restarts: int = 4,
           iters: int = 50) -> tuple[np.ndarray, float]:
  """Lowest-inertia k-means of [N, D] points over `restarts` k-means++ starts.

  Returns (labels [N] int, inertia float).
  """
  points = jnp.asarray(points, jnp.float32)
  best = None
  for r in range(restarts):
    _, labels, inertia = _lloyd(points, jax.random.PRNGKey(seed * 1000 + r), num_clusters, iters)
    inertia = float(inertia)
    if best is None or inertia < best[1]:
      best = (np.asarray(labels), inertia)
  return best


# ---------------------------------------------------------------------------
# Features of a run.


def decoder_feature_fn(run: run_lib.Run) -> Callable[..., dict[int, jax.Array]]:
  """A jitted (x_t, y_t, lam, text, mask) -> {level: [B, h, w, C]} of the run's U-Net."""

  def is_block(mdl, method_name):
    return method_name == "__call__" and bool(_LEVEL_BLOCK.match(mdl.name or ""))

  @jax.jit
  def features(params, x_t, y_t, lam, text, mask):
    _, state = run.model.apply({"params": params}, x_t, y_t, lam, text, mask, train=False,
                               capture_intermediates=is_block, mutable=["intermediates"])
    last = {}
    for path, value in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
      names = [getattr(p, "key", None) for p in path]
      for name in names:
        m = _LEVEL_BLOCK.match(str(name))
        if m:
          level, block = int(m.group(1)), int(m.group(2))
          if level not in last or block > last[level][0]:
            last[level] = (block, value)
    return {level: v for level, (_, v) in last.items()}

  return features


def noised_features(run: run_lib.Run, images: np.ndarray, captions: Sequence[str], step: int,
                    seed: int, batch_size: int = 50, layouts: np.ndarray | None = None,
                    layout_input: str = "noise") -> dict:
  """{level: [N, h, w, C] float32} for uint8 images [N, H, W, 3] noised to step t = `step`."""
  from gcd_jax.diffusion import categorical  # pylint: disable=g-import-not-at-top
  from gcd_jax.diffusion import joint  # pylint: disable=g-import-not-at-top
  fn = decoder_feature_fn(run)
  k = step - 1
  if not 0 <= k < run.sched.num_steps:
    raise ValueError(f"--steps: t={step} not in [1, {run.sched.num_steps}]")
  out = {}
  for start in range(0, len(images), batch_size):
    x0 = jnp.asarray(images[start:start + batch_size], jnp.float32) / 127.5 - 1
    b = x0.shape[0]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), start)
    key_img, key_lay = jax.random.split(key)
    ks = jnp.full((b,), k, jnp.int32)
    y_t = None
    if run.has_layout and layout_input == "q_sample":
      log_y0 = categorical.log_onehot(jnp.asarray(layouts[start:start + batch_size], jnp.int32),
                                      run.classes.num_classes)
      x_t, log_yk, _ = joint.q_sample(key_img, run.sched, x0, log_y0, ks)
      y_t = jnp.argmax(log_yk, axis=-1).astype(jnp.int32)
    else:
      x_t, _, _ = joint.q_sample(key_img, run.sched, x0, None, ks)
      if run.has_layout:
        y_t = jax.random.randint(key_lay, x0.shape[:3], 0, run.classes.num_classes, jnp.int32)
    emb, mask = run.text.batch(list(captions[start:start + batch_size]))
    feats = fn(run.params, x_t, y_t, joint.image_log_snr(run.sched, ks), jnp.asarray(emb), jnp.asarray(mask))
    for level, v in feats.items():
      out.setdefault(level, []).append(np.asarray(v, np.float32))
  return {level: np.concatenate(v) for level, v in out.items()}


def downsample_labels(layouts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Nearest: the label at each cell's centre pixel. [N, H, W] -> [N, h, w]."""
  n, height, width = layouts.shape
  h, w = size
  rows = (np.arange(h) * height) // h + height // (2 * h)
  cols = (np.arange(w) * width) // w + width // (2 * w)
  return layouts[:, rows][:, :, cols]


def score_level(features: np.ndarray, layouts: np.ndarray, num_clusters: int, *, seed: int, restarts: int,
                bootstrap: int) -> tuple[dict, np.ndarray]:
  """k-means of one level's pixels against the layouts; NMI and ARI with image-bootstrap intervals."""
  n, h, w, c = features.shape
  labels_true = downsample_labels(layouts, (h, w))
  x = features.reshape(-1, c)
  x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
  clusters, inertia = kmeans(x, num_clusters, seed=seed, restarts=restarts)
  clusters = clusters.reshape(n, h, w)
  rng = np.random.default_rng(seed)
  reps = {"nmi": [], "ari": []}
  for _ in range(bootstrap):
    idx = rng.integers(0, n, n)
    reps["nmi"].append(normalized_mutual_information(clusters[idx], labels_true[idx]))
    reps["ari"].append(adjusted_rand_index(clusters[idx], labels_true[idx]))
  record = {"resolution": [h, w], "channels": c, "inertia": inertia,
            "nmi": normalized_mutual_information(clusters, labels_true),
            "ari": adjusted_rand_index(clusters, labels_true)}
  for key, v in reps.items():
    record[f"{key}_interval"] = ([float(x) for x in np.percentile(v, [2.5, 97.5])] if v
                                 else [float("nan"), float("nan")])
  return record, clusters


def run_clustering(workdir: str, *, num_images: int = 100,
                   steps: Sequence[int] = (100, 200, 400, 800), seed: int = 0,
                   restarts: int = 4, bootstrap: int = 200, keep: int = 8, split: str | None = None,
                   layout_input: str = "noise") -> tuple[dict, dict[str, np.ndarray]]:
  """The record (per t and level: NMI, ARI, intervals) and the kept cluster maps."""
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
  run = run_lib.load(workdir)
  c = run.config
  split = split or c.data.eval_split
  ref = suite.load_reference(run.dataset, split, num_images, (c.data.height, c.data.width),
                             c.data.data_dir or None)
  num_classes = ref.classes.num_classes
  record = {"workdir": str(pathlib.Path(workdir).absolute()), "checkpoint_step": run.step,
            "has_layout": run.has_layout, "dataset": run.dataset, "split": split,
            "num_images": num_images, "k": num_classes, "seed": seed, "restarts": restarts,
            "bootstrap": bootstrap, "layout_input": layout_input if run.has_layout else None,
            "steps": {}}
  kept = {"images": ref.images[:keep], "layouts": ref.layouts[:keep]}
  for t in steps:
    feats = noised_features(run, ref.images, ref.captions, t, seed, layouts=ref.layouts,
                            layout_input=layout_input)
    record["steps"][str(t)] = {}
    for level in sorted(feats):
      r, clusters = score_level(feats[level], ref.layouts, num_classes, seed=seed, restarts=restarts,
                                bootstrap=bootstrap)
      record["steps"][str(t)][str(level)] = r
      kept[f"t{t}_level{level}"] = clusters[:keep].astype(np.uint8)
  return record, kept


PROG = "python -m gcd_jax.experiments.clustering"


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("workdir", None, "A training workdir.", required=True, flag_values=fv)
  flags.DEFINE_string("out", None, "The JSON record (cluster maps go to the same name .npz).",
                      required=True, flag_values=fv)
  flags.DEFINE_integer("num_images", 100, "Test images to cluster.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_list("steps", ["100", "200", "400", "800"], "Diffusion steps t.", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Noise and k-means seed.", flag_values=fv)
  flags.DEFINE_integer("restarts", 4, "k-means restarts.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("bootstrap", 200, "Bootstrap resamplings.", lower_bound=0, flag_values=fv)
  flags.DEFINE_integer("keep", 8, "Images whose cluster maps are saved.", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_enum("layout_input", "noise", ("noise", "q_sample"),
                    "The joint model's layout input (see above).", flag_values=fv)


def _command(args) -> None:
  try:
    steps = [int(s) for s in args.steps if s.strip()]
  except ValueError:
    raise cli.InputError(f"--steps={','.join(args.steps)}: expected integers") from None
  record, kept = run_clustering(args.workdir, num_images=args.num_images, steps=steps,
                                seed=args.seed, restarts=args.restarts, bootstrap=args.bootstrap,
                                keep=args.keep, layout_input=args.layout_input)
  out = pathlib.Path(args.out)
  fileio.atomic_write_npz(out.with_suffix(".npz"), kept)
  fileio.atomic_write_text(out, json.dumps(record, indent=1))
  for t, levels in record["steps"].items():
    print(f"t={t}: " + ", ".join(f"level {lv} ({r['resolution'][0]}x{r['resolution'][1]}) "
                                 f"NMI {r['nmi']:.3f} ARI {r['ari']:.3f}" for lv, r in levels.items()))


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, _command, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
