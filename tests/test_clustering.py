"""Feature clustering: NMI, ARI and k-means against brute force; decoder features of a tiny U-Net."""

import itertools
import math
import types

import jax
import numpy as np
import pytest

from gcd_jax import train_lib
from gcd_jax.experiments import clustering

from conftest import tiny_config  # pylint: disable=g-bad-import-order


def _ari_by_pairs(a, b):
  """The adjusted Rand index from its definition over all pairs (Hubert and Arabie 1985)."""
  a, b = list(np.ravel(a)), list(np.ravel(b))
  n = len(a)
  both = sum(1 for i, j in itertools.combinations(range(n), 2) if a[i] == a[j] and b[i] == b[j])
  same_a = sum(1 for i, j in itertools.combinations(range(n), 2) if a[i] == a[j])
  same_b = sum(1 for i, j in itertools.combinations(range(n), 2) if b[i] == b[j])
  pairs = n * (n - 1) / 2
  expected = same_a * same_b / pairs
  return (both - expected) / ((same_a + same_b) / 2 - expected)


def _nmi_by_counting(a, b):
  a, b = list(np.ravel(a)), list(np.ravel(b))
  n = len(a)
  pa = {x: a.count(x) / n for x in set(a)}
  pb = {y: b.count(y) / n for y in set(b)}
  mi = 0.0
  for x in pa:
    for y in pb:
      pxy = sum(1 for u, v in zip(a, b) if u == x and v == y) / n
      if pxy:
        mi += pxy * math.log(pxy / (pa[x] * pb[y]))
  ha = -sum(p * math.log(p) for p in pa.values())
  hb = -sum(p * math.log(p) for p in pb.values())
  return mi / ((ha + hb) / 2)


@pytest.mark.parametrize("seed", range(6))
def test_ari_and_nmi_match_their_definitions(seed):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 4, 60)
  b = np.where(rng.uniform(size=60) < 0.6, a, rng.integers(0, 3, 60))
  assert clustering.adjusted_rand_index(a, b) == pytest.approx(_ari_by_pairs(a, b), abs=1e-12)
  assert clustering.normalized_mutual_information(a, b) == pytest.approx(_nmi_by_counting(a, b), abs=1e-12)


def test_scores_ignore_cluster_names_and_see_chance():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 5, 5000)
  renamed = np.array([3, 0, 4, 1, 2])[a]
  assert clustering.adjusted_rand_index(a, renamed) == pytest.approx(1.0)
  assert clustering.normalized_mutual_information(a, renamed) == pytest.approx(1.0)
  independent = rng.integers(0, 5, 5000)
  assert abs(clustering.adjusted_rand_index(a, independent)) < 0.01
  assert clustering.normalized_mutual_information(a, independent) < 0.01


def _best_inertia_by_enumeration(points, k):
  best = np.inf
  for labels in itertools.product(range(k), repeat=len(points)):
    labels = np.array(labels)
    if len(set(labels)) < k:
      continue
    inertia = sum(((points[labels == c] - points[labels == c].mean(0)) ** 2).sum() for c in range(k))
    best = min(best, inertia)
  return best


@pytest.mark.parametrize("seed", range(3))
def test_kmeans_reaches_the_optimum_of_every_partition(seed):
  # Separated blobs: k-means++ starts find the global optimum (overlapping ones
  # have local optima that only some starts escape, as for any Lloyd k-means).
  rng = np.random.default_rng(seed)
  points = np.concatenate([rng.normal(0, 1, (3, 2)), rng.normal((8, 0), 1, (3, 2)),
                           rng.normal((0, 8), 1, (3, 2))])
  labels, inertia = clustering.kmeans(points, 3, seed=seed, restarts=4, iters=30)
  want = _best_inertia_by_enumeration(points.astype(np.float64), 3)
  assert inertia == pytest.approx(want, rel=1e-4)
  recomputed = sum(((points[labels == c] - points[labels == c].mean(0)) ** 2).sum() for c in set(labels))
  assert recomputed == pytest.approx(inertia, rel=1e-4)


def test_downsample_labels_takes_each_cells_centre():
  layouts = np.arange(2 * 8 * 8).reshape(2, 8, 8)
  small = clustering.downsample_labels(layouts, (4, 4))
  np.testing.assert_array_equal(small, layouts[:, 1::2, 1::2])


@pytest.fixture(scope="module")
def tiny_run():
  config = tiny_config("")
  model = train_lib.make_model(config)
  sched = train_lib.make_joint_schedule(config)
  state = jax.jit(lambda r: train_lib.init_state(config, model, r))(jax.random.PRNGKey(0))
  dim, length = config.model.text_dim, config.text.max_length
  text = types.SimpleNamespace(batch=lambda caps: (  # the same embeddings at every call
      np.random.default_rng(len(caps)).normal(size=(len(caps), length, dim)).astype(np.float32),
      np.ones((len(caps), length), bool)))
  classes = types.SimpleNamespace(num_classes=config.model.num_classes)
  return types.SimpleNamespace(model=model, sched=sched, params=state.params, text=text,
                               classes=classes, has_layout=True)


def test_decoder_features_per_level_and_what_the_layout_input_carries(tiny_run):
  rng = np.random.default_rng(1)
  n = 4
  images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
  layouts = rng.integers(0, 8, (n, 16, 16))
  other = (layouts + 1) % 8
  caps = ["a"] * n

  def feats(lay, mode, t=50):
    return clustering.noised_features(tiny_run, images, caps, t, seed=0, layouts=lay, layout_input=mode)

  f = feats(layouts, "noise")
  levels = sorted(f)
  cfg = tiny_run.model.config
  assert levels == list(range(cfg.num_levels)) and len(levels) >= 2
  # Each level's features are the output of its last decoder block, up_{level}_res_{num_res_blocks}
  # (named from the config here), captured independently.
  x = rng.normal(size=(2, 16, 16, 3)).astype(np.float32)
  y = rng.integers(0, 8, (2, 16, 16)).astype(np.int32)
  lam = np.array([0.5, -1.0], np.float32)
  text, mask = tiny_run.text.batch(["a", "b"])
  got = clustering.decoder_feature_fn(tiny_run)(tiny_run.params, x, y, lam, text, mask)
  for lv in levels:
    name = f"up_{lv}_res_{cfg.num_res_blocks[lv]}"
    _, state = tiny_run.model.apply({"params": tiny_run.params}, x, y, lam, text, mask, train=False,
                                    capture_intermediates=lambda m, meth, name=name: m.name == name,
                                    mutable=["intermediates"])
    (want,) = [v for p, v in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
               if any(getattr(q, "key", None) == name for q in p)]
    # (jit against eager: float32 rounding; another block differs by O(1))
    np.testing.assert_allclose(got[lv], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
  for level in levels:
    assert f[level].shape[:3] == (n, 16 // 2**level, 16 // 2**level)
  # Noise mode never reads the real layout; q_sample mode does (at t = 50 most labels survive).
  for level in levels:
    np.testing.assert_array_equal(f[level], feats(other, "noise")[level])
  assert not np.allclose(feats(layouts, "q_sample")[0], feats(other, "q_sample")[0])
  with pytest.raises(ValueError, match="t=0"):
    feats(layouts, "noise", t=0)
