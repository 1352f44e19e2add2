"""python -m gcd_jax.evaluate on tiny trained runs, and the evaluators on crafted samples."""

import dataclasses
import json

import numpy as np
import pytest

from gcd_jax import evaluate
from gcd_jax import evaluators
from gcd_jax.evaluators import base, suite
from gcd_jax.metrics import layout_metrics


def _args(workdir, *extra):
  return evaluate.parse_args(["--workdir", str(workdir), "--num_samples", "8", "--batch_size", "4",
                              "--steps", "3", "--bootstrap", "50", *extra])


def _no_sampling(*a, **k):
  pytest.fail("a cached sweep point was sampled again")


def test_guidance_sweep_writes_metrics_intervals_table_and_plot(tiny_run_dir, monkeypatch):
  points = evaluate.run(_args(tiny_run_dir, "--guidance", "1,2"))
  assert [p["guidance"] for p in points] == [1.0, 2.0]
  base_dir = tiny_run_dir / "eval" / "4"
  files = sorted(p.relative_to(base_dir).as_posix() for p in base_dir.rglob("metrics.json"))
  assert len(files) == 2
  for p in points:
    m, iv = p["metrics"], p["intervals"]
    # Image side (the oracle reading the generated image) and layout side, both.
    for key in ("semantic_recall", "layout_semantic_recall", "miou", "fsd", "image_fsd",
                "attribute_accuracy", "layout_attribute_accuracy"):
      assert key in m, (key, sorted(m))
    for key in ("semantic_recall", "layout_semantic_recall", "miou"):
      assert 0.0 <= m[key] <= 1.0
      lo, hi = iv[key]
      assert lo <= m[key] + 1e-9 and m[key] <= hi + 1e-9 or not np.isfinite(lo)
    assert m["fsd"] >= 0.0 and m["image_fsd"] >= 0.0
    assert p["judges"]["correspondence"].startswith(f"v{base.VERSION}|correspondence|oracle-synthetic_scenes")
  table = (base_dir / "sweep.md").read_text()
  assert table.startswith("| guidance |") and "| 2 |" in table and "semantic_recall" in table
  assert (base_dir / "sweep.png").stat().st_size > 1000
  # A finished point is read back, not recomputed.
  monkeypatch.setattr(suite, "generate", _no_sampling)
  monkeypatch.setattr(base.Evaluator, "statistics", lambda *a: pytest.fail("recomputed"))
  again = evaluate.run(_args(tiny_run_dir, "--guidance", "2"))
  assert again[0]["metrics"] == points[1]["metrics"]
  record = json.loads(next(base_dir.rglob("metrics.json")).read_text())
  assert record["checkpoint_step"] == 4 and record["num_samples"] == 8
  assert list((tiny_run_dir / "eval").glob("events.out.tfevents.*"))


def test_cache_is_keyed_by_every_sampler_setting_and_fills_in_new_metrics(tiny_run_dir, monkeypatch):
  [first] = evaluate.run(_args(tiny_run_dir, "--guidance", "1.5", "--metrics", "correspondence"))
  assert "fsd" not in first["metrics"] and "semantic_recall" in first["metrics"]
  # A new metric on the same samples: computed from the stored samples, no sampling.
  with monkeypatch.context() as m:
    m.setattr(suite, "generate", _no_sampling)
    [more] = evaluate.run(_args(tiny_run_dir, "--guidance", "1.5", "--metrics",
                                "correspondence,fsd"))
  assert "fsd" in more["metrics"]
  assert more["metrics"]["semantic_recall"] == first["metrics"]["semantic_recall"]
  # Every sampler setting is in the key: another eta, threshold, layout guidance,
  # final-layout rule, layout scale, method or step count is another point.
  ev = evaluate.Evaluation(_args(tiny_run_dir, "--guidance", "1.5"))
  base_cfg = ev.sampler_config(1.5)
  variants = [dict(eta=0.5), dict(threshold=0.0), dict(layout_guidance="posterior"),
              dict(final_layout="sample"), dict(guidance_layout=1.0), dict(method="ddim"),
              dict(steps=4), dict(resample=2)]

  def directory(cfg, **key):
    kw = dict(checkpoint="c", step=2, sampler=dataclasses.asdict(cfg), num_samples=8, seed=0,
              dataset="d", split="test")
    kw.update(key)
    return suite.point_dir(ev.root, suite.point_key(**kw))

  dirs = {directory(dataclasses.replace(base_cfg, **v)) for v in variants}
  dirs |= {directory(base_cfg, step=1), directory(base_cfg, num_samples=9),
           directory(base_cfg, seed=1), directory(base_cfg, split="train"), directory(base_cfg),
           directory(base_cfg, weights="another")}
  assert len(dirs) == len(variants) + 6
  # And a real rerun with one changed setting samples again.
  calls = []
  real_generate = suite.generate
  monkeypatch.setattr(suite, "generate", lambda *a, **k: calls.append(1) or real_generate(*a, **k))
  evaluate.run(_args(tiny_run_dir, "--guidance", "1.5", "--metrics", "correspondence",
                     "--threshold", "0"))
  assert len(calls) == 1


def test_a_changed_judge_recomputes_only_its_metric(tiny_run_dir, monkeypatch):
  [first] = evaluate.run(_args(tiny_run_dir, "--guidance", "1.5", "--metrics", "correspondence,fsd"))
  monkeypatch.setattr(base, "VERSION", base.VERSION + 1)  # as if the judges had changed
  monkeypatch.setattr(suite, "generate", _no_sampling)
  ran = []
  real = evaluators.base.evaluate

  def spy(evs, ctx, samples, cached=None, has_layout=None):
    out = real(evs, ctx, samples, cached=cached, has_layout=has_layout)
    ran.extend(out["judges"].values())
    return out

  monkeypatch.setattr(base, "evaluate", spy)
  [again] = evaluate.run(_args(tiny_run_dir, "--guidance", "1.5", "--metrics", "correspondence,fsd"))
  assert all(j.startswith(f"v{base.VERSION}|") for j in again["judges"].values())
  assert again["metrics"]["fsd"] == pytest.approx(first["metrics"]["fsd"])


def test_image_only_baseline_is_scored_by_the_same_judge(tiny_image_only_run_dir):
  workdir, _ = tiny_image_only_run_dir
  [point] = evaluate.run(_args(workdir, "--guidance", "1.5"))
  m = point["metrics"]
  assert not any(k.startswith("layout_") for k in m) and "miou" not in m and "fsd" not in m
  assert 0.0 <= m["semantic_recall"] <= 1.0 and m["image_fsd"] >= 0.0
  assert "attribute_accuracy_position" in m


def test_step_flag_picks_a_kept_checkpoint(tiny_run_dir, capsys):
  [point] = evaluate.run(_args(tiny_run_dir, "--guidance", "1", "--step", "1", "--metrics", "fsd"))
  assert point["checkpoint_step"] == 1 and point["key"]["step"] == 1
  # The weights name the point too (a run retrained into the same workdir is another).
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  r = run_lib.load(tiny_run_dir, step=1)
  assert point["key"]["weights"] == r.weights_digest and len(r.weights_digest) == 16
  copied = jax.tree_util.tree_map(np.array, r.params)
  assert dataclasses.replace(r, params=copied).weights_digest == r.weights_digest
  jax.tree_util.tree_leaves(copied)[-1].flat[0] += 1e-3
  assert dataclasses.replace(r, params=copied).weights_digest != r.weights_digest
  assert list((tiny_run_dir / "eval" / "1").rglob("metrics.json"))
  assert evaluate.main(["--workdir", str(tiny_run_dir), "--num_samples", "8", "--step", "3"]) == 2
  assert "no checkpoint of step 3; kept steps: [1, 2, 4]" in capsys.readouterr().err


def test_bad_arguments(tiny_run_dir, tmp_path, capsys):
  assert evaluate.main(["--workdir", str(tmp_path), "--num_samples", "8"]) == 2
  assert "no checkpoint under" in capsys.readouterr().err
  assert evaluate.main(["--workdir", str(tiny_run_dir), "--num_samples", "100000"]) == 2
  assert "has only 100" in capsys.readouterr().err
  assert evaluate.main(["--workdir", str(tiny_run_dir), "--num_samples", "8", "--metrics", "fid"]) == 2
  assert "needs inception" in capsys.readouterr().err
  assert evaluate.main(["--workdir", str(tiny_run_dir), "--num_samples", "8", "--metrics", "nope"]) == 2
  assert "unknown evaluator" in capsys.readouterr().err


# --- The evaluators on crafted samples -----------------------------------------------


@pytest.fixture(scope="module")
def test_split(scenes_data_dir):
  return suite.load_reference("synthetic_scenes/32_mini", "test", 100, (32, 32), scenes_data_dir)


def test_one_judge_layouts_that_match_captions_do_not_excuse_noise_images(test_split):
  """A joint model whose layouts say what the caption says but whose images are
  noise: high layout-side, low image-side correspondence."""
  judges = suite.make_judges(test_split)
  ctx = base.Context(test_split, judges, replicates=100)
  noise = np.random.default_rng(0).integers(0, 256, test_split.images.shape, dtype=np.uint8)
  samples = base.Samples(noise, test_split.layouts, judges)
  out = base.evaluate(evaluators.from_names(["correspondence", "layout_correspondence"]), ctx, samples)
  m = out["metrics"]
  assert m["layout_semantic_recall"] == 1.0, m  # real layouts satisfy their own captions
  assert m["semantic_recall"] < 0.3, m  # the oracle finds speckle, not objects
  # Counts, positions and sizes of the real layouts hold; colour variants are read
  # off the (noise) image, so they do not.
  for a in ("count", "position", "size"):
    assert m[f"layout_attribute_accuracy_{a}"] > 0.95, m
  assert m["layout_attribute_accuracy"] > 0.8 and m["attribute_accuracy"] < 0.1, m
  # Real images and layouts score 1 on both sides.
  real = base.evaluate(evaluators.from_names(["correspondence"]), ctx,
                       base.Samples(test_split.images, test_split.layouts, judges))["metrics"]
  assert real["semantic_recall"] == 1.0 and real["attribute_accuracy"] == 1.0


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
  rng = np.random.default_rng(1)
  x = rng.random(2000) < 0.3
  lo, hi = base.bootstrap_interval(lambda idx: float(x[idx].mean()), len(x), 2000, 0)
  se = np.sqrt(x.mean() * (1 - x.mean()) / len(x))
  assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.15 * se * 1.96)
  assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.15 * se * 1.96)


def test_miou_evaluator_equals_the_tested_agreement_function(test_split):
  from gcd_jax.metrics import correspondence
  judges = suite.make_judges(test_split)
  ctx = base.Context(test_split, judges, replicates=20)
  rng = np.random.default_rng(2)
  layouts = np.where(rng.random(test_split.layouts.shape) < 0.1,
                     rng.integers(0, 8, test_split.layouts.shape), test_split.layouts)
  out = base.evaluate(evaluators.from_names(["miou"]), ctx,
                      base.Samples(test_split.images, layouts, judges))
  want, _ = correspondence.image_layout_agreement(test_split.images, layouts, judges.segmenter, 8)
  assert out["metrics"]["miou"] == pytest.approx(want, abs=1e-12)


def test_without_a_segmenter_fidelity_metrics_remain(test_split):
  class Features:
    name, identity, dim = "mean colour", "mean-colour-v1", 3

    def __call__(self, images):
      return images.reshape(len(images), -1, 3).mean(1)

  judges = base.Judges(segnet_features=Features())
  ctx = base.Context(test_split, judges, replicates=20)
  names = base.available(ctx, has_layout=False)
  assert names == ["fd_seg"]
  out = base.evaluate(evaluators.from_names(names), ctx,
                      base.Samples(test_split.images[::-1], None, judges), has_layout=False)
  assert out["metrics"]["fd_seg"] < 1e-6  # the same images in another order
  assert out["metrics"]["kid_seg_std"] > 0.0  # subsets smaller than N


def test_ignored_pixels_change_no_layout_metric():
  rng = np.random.default_rng(3)
  k, ignore = 5, 255
  target = rng.integers(0, k, (6, 8, 8))
  target[:, :, :3] = ignore
  pred = rng.integers(0, k, target.shape)
  other = pred.copy()
  other[target == ignore] = rng.integers(0, k, int((target == ignore).sum()))
  assert layout_metrics.miou(pred, target, k, ignore)[0] == layout_metrics.miou(other, target, k, ignore)[0]
  # FSD reads class shares of labelled pixels only: the same as cutting the ignored block off.
  np.testing.assert_allclose(layout_metrics.class_percentages(target, k, ignore),
                             layout_metrics.class_percentages(target[:, :, 3:], k))


def test_the_inference_path_does_not_import_the_training_loop():
  import subprocess
  import sys
  code = ("import sys; import gcd_jax.run, gcd_jax.evaluate, gcd_jax.sample, gcd_jax.evaluators.suite;"
          " import gcd_jax.evaluators.metrics; print('gcd_jax.train' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False", out.stdout


def test_centred_bootstrap_interval_of_a_frechet_distance_contains_its_value():
  # Samples of the reference distribution itself: the Frechet distance of the
  # full set is small, and resampling with replacement (about 63 % distinct
  # samples) inflates it, so the plain percentile interval lies above it.
  from gcd_jax.metrics import frechet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  d, n = 6, 300
  feats = rng.standard_normal((n, d))
  stat = lambda idx: frechet.frechet_distance(*frechet.statistics(feats[idx]), np.zeros(d), np.eye(d))
  value = float(stat(np.arange(n)))
  plain = base.bootstrap_interval(stat, n, 300, 0)
  centred = base.bootstrap_interval(stat, n, 300, 0, centre_on=value)
  assert plain[0] > value  # the defect that centring removes
  assert centred[0] < value < centred[1]
  # Centring is the shift by the bootstrap bias (mean replicate minus value), nothing else.
  reps = base.bootstrap_replicates(stat, n, 300, 0)
  shift = reps.mean() - value
  assert centred == pytest.approx((plain[0] - shift, plain[1] - shift), rel=1e-12)
  # The interval's width is the spread of the replicates either way.
  assert centred[1] - centred[0] == pytest.approx(plain[1] - plain[0], rel=1e-12)
