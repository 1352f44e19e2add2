"""The paper_claim driver's bookkeeping and the report's comparison functions.

The grid's long runs live outside the suite; here the stages are tiny Python
commands, and the comparisons are checked against brute force and closed forms.
"""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from gcd_jax.experiments import claim_report
from gcd_jax.experiments import paper_claim as pc


def _stage(tmp_path, key, code, output=None):
  return pc.Stage(key, ["-c", code], output)


def _quiet(*_):
  pass


def test_stages_run_once_resume_after_failure_and_refuse_another_command(tmp_path):
  out = tmp_path / "exp"
  flag = tmp_path / "fail_once"
  flag.write_text("")
  made = tmp_path / "made.txt"
  stages = [
      _stage(tmp_path, "a/x", f"open({str(tmp_path / 'a.txt')!r}, 'a').write('a')"),
      # Fails on its first attempt (like a crash), succeeds on the next.
      _stage(tmp_path, "b/x", f"import os, sys\nif os.path.exists({str(flag)!r}):\n"
                              f"  os.remove({str(flag)!r}); sys.exit(3)\n"
                              f"open({str(made)!r}, 'w').write('ok')", output=made),
      _stage(tmp_path, "c/x", f"open({str(tmp_path / 'c.txt')!r}, 'a').write('c')"),
  ]
  assert pc.run_all(out, stages, progress_every=0.05, log=_quiet) == 1
  assert (tmp_path / "a.txt").read_text() == "a" and not (tmp_path / "c.txt").exists()
  state = pc.read_state(out, "b/x")
  assert not state["done"] and [a["rc"] for a in state["attempts"]] == [3]
  assert state["attempts"][0]["hardware"]["cpu_count"] >= 1

  # The next call skips what is done and resumes with the failed stage.
  assert pc.run_all(out, stages, progress_every=0.05, log=_quiet) == 0
  assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "c.txt").read_text() == "c"
  state = pc.read_state(out, "b/x")
  assert state["done"] and [a["rc"] for a in state["attempts"]] == [3, 0]
  summary = pc.stage_summary(out, stages[1])
  assert summary["attempts"] == 2 and summary["wall_s"] == pytest.approx(
      sum(a["wall_s"] for a in state["attempts"]))
  assert pc.run_all(out, stages, log=_quiet) == 0
  assert (tmp_path / "c.txt").read_text() == "c"  # not run again

  # A stage whose output has gone is redone; one done with another command is refused.
  made.unlink()
  assert not pc.is_done(out, stages[1])
  changed = _stage(tmp_path, "a/x", "print('other')")
  with pytest.raises(ValueError, match="stage 'a/x'.*another command"):
    pc.is_done(out, changed)


def test_commands_are_recorded_with_portable_paths(tmp_path):
  out = tmp_path / "exp"
  stages = pc.run_stages(out, pc.PROTOCOL, pc.GRID[0])
  train = stages[0].spec(out)["argv"]
  assert "--workdir=<out>/runs/joint_25_s0" in train and "--config=<repo>/configs/shapes.py" in train
  assert str(tmp_path) not in " ".join(train)
  assert "--config.data.train_split=train_25" in train
  # Training is done only when the final checkpoint exists (a preempted main exits 0 too).
  assert stages[0].output == out / "runs" / "joint_25_s0" / "checkpoints" / str(pc.PROTOCOL["num_steps"])


def test_grid_pairs_every_joint_run_with_its_image_only_twin():
  names = [s.name for s in pc.GRID]
  assert len(set(names)) == len(names)
  pairs = claim_report._pairs(pc.GRID)  # pylint: disable=protected-access
  twins = [p for p in pairs if p[0].endswith("%") and not p[0].startswith("captions")]
  assert {(label, seed) for label, seed, _, _ in twins} == {("25%", 0), ("25%", 1), ("50%", 0), ("100%", 0)}
  # The captions-scarce run against both arms trained on the captioned 25 % alone.
  assert [(a.name, b.name) for label, _, a, b in pairs if label.startswith("captions")] == [
      ("joint_100_captions25_s0", "joint_25_s0"), ("joint_100_captions25_s0", "image_only_25_s0")]
  # Each setting tried against the image-only and the default joint run of its
  # fraction and seed (bits at 25 % seeds 0 and 1 and at 100 %, p2_gamma=0 at 25 %).
  tried = [(label, seed, a.name, b.name) for label, seed, a, b in pairs if " with " in label]
  assert tried == [
      ("25% joint with layout_normalize=bits vs image-only", 0, "joint_25_layout_normalizebits_s0",
       "image_only_25_s0"),
      ("25% joint with layout_normalize=bits vs joint", 0, "joint_25_layout_normalizebits_s0",
       "joint_25_s0"),
      ("25% joint with layout_p2_gamma=0 vs image-only", 0, "joint_25_layout_p2_gamma0_s0",
       "image_only_25_s0"),
      ("25% joint with layout_p2_gamma=0 vs joint", 0, "joint_25_layout_p2_gamma0_s0", "joint_25_s0"),
      ("25% joint with layout_normalize=bits vs image-only", 1, "joint_25_layout_normalizebits_s1",
       "image_only_25_s1"),
      ("25% joint with layout_normalize=bits vs joint", 1, "joint_25_layout_normalizebits_s1",
       "joint_25_s1"),
      ("100% joint with layout_normalize=bits vs image-only", 0, "joint_100_layout_normalizebits_s0",
       "image_only_100_s0"),
      ("100% joint with layout_normalize=bits vs joint", 0, "joint_100_layout_normalizebits_s0",
       "joint_100_s0")]
  assert len(twins) + 2 + len(tried) == len(pairs)
  # One label, one kind of comparison: rows sharing a label differ only in the seed.
  labels = [(label, seed) for label, seed, _, _ in pairs]
  assert len(set(labels)) == len(labels)
  bits = pc.select(pc.GRID, "joint_25_layout_normalizebits_s0")[0]
  assert bits.config_overrides(pc.PROTOCOL) == (
      pc.select(pc.GRID, "joint_25_s0")[0].config_overrides(pc.PROTOCOL)
      + ["--config.loss.layout_normalize=bits"])
  for _, _, joint, image in twins:
    assert (joint.arm, image.arm) == ("joint", "image_only")
    assert (joint.fraction, joint.seed) == (image.fraction, image.seed)
    # The two arms differ only in their config file.
    assert joint.config_overrides(pc.PROTOCOL) == image.config_overrides(pc.PROTOCOL)
  scarce = [s for s in pc.GRID if s.captioned is not None]
  assert [s.config_overrides(pc.PROTOCOL)[-1] for s in scarce] == ["--config.data.captioned_split=train_25"]
  with pytest.raises(ValueError, match="unknown run"):
    pc.select(pc.GRID, "joint_25_s0,nope")


def test_protocol_change_is_refused_and_runs_are_only_added(tmp_path):
  pc.check_protocol(tmp_path, pc.PROTOCOL, pc.GRID[:2])
  pc.check_protocol(tmp_path, pc.PROTOCOL, pc.GRID[:3])  # a run added: fine
  with pytest.raises(ValueError, match="another protocol"):
    pc.check_protocol(tmp_path, {**pc.PROTOCOL, "num_steps": 10}, pc.GRID[:3])
  with pytest.raises(ValueError, match="no longer in the grid"):
    pc.check_protocol(tmp_path, pc.PROTOCOL, pc.GRID[1:3])
  pc.check_protocol(tmp_path, {**pc.PROTOCOL, "new_measurement": 1}, pc.GRID[:3])  # a setting added: fine
  with pytest.raises(ValueError, match="new_measurement"):
    pc.check_protocol(tmp_path, pc.PROTOCOL, pc.GRID[:3])  # ...and then never removed


def test_sigterm_to_the_driver_reaches_the_job_in_its_own_session(tmp_path):
  out = tmp_path / "exp"
  marker = tmp_path / "job"
  code = ("import os, signal, sys, time\n"
          f"def stop(*a):\n  open({str(marker)!r}, 'w').write(str(os.getsid(0)))\n  sys.exit(0)\n"
          "signal.signal(signal.SIGTERM, stop)\n"
          f"open({str(marker) + '.ready'!r}, 'w').write('')\n"
          "time.sleep(60)")
  stages = [_stage(tmp_path, "slow/x", code, output=tmp_path / "never"),
            _stage(tmp_path, "after/x", f"open({str(tmp_path / 'after')!r}, 'w')")]

  def send_when_ready():
    deadline = time.time() + 60
    while not (tmp_path / "job.ready").exists() and time.time() < deadline:
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, to the driver only

  threading.Thread(target=send_when_ready, daemon=True).start()
  t = time.time()
  assert pc.run_all(out, stages, progress_every=0.1, log=_quiet) == 130
  assert time.time() - t < 30  # the job stopped on the passed-on SIGTERM, not after its sleep
  assert int(marker.read_text()) != os.getsid(0)  # its own session: a terminal's Ctrl-C misses it
  assert not (tmp_path / "after").exists()  # the driver stopped after the job
  state = pc.read_state(out, "slow/x")
  assert not state["done"] and state["attempts"][-1]["rc"] == 0 and state["attempts"][-1]["wall_s"] > 0
  assert "git_commit" in state["attempts"][-1]["code"]


def test_report_tables_from_partial_results(tmp_path):
  out = tmp_path / "exp"
  spec = pc.GRID[0]
  chosen = pc.run_stages(out, pc.PROTOCOL, spec)[2]
  record = [{"guidance": 2.0, "num_samples": 1000,
             "metrics": {"semantic_recall": 0.8, "attribute_accuracy": 0.4, "fd_seg": 0.1, "image_fsd": 9.0},
             "intervals": {"semantic_recall": [0.78, 0.82]}}]
  chosen.output.parent.mkdir(parents=True)
  chosen.output.write_text(json.dumps(record))
  pc.write_state(out, chosen.key, {"done": True, "spec": chosen.spec(out),
                                   "attempts": [{"wall_s": 60.0, "rc": 0, "hardware": pc.hardware()}]})
  runs = claim_report.collect(out, pc.PROTOCOL, pc.GRID)
  assert runs[spec.name]["chosen"] == record and runs[spec.name]["sweep"] is None
  assert runs["image_only_25_s0"]["chosen"] is None
  text = claim_report.markdown({"protocol": pc.PROTOCOL, "runs": runs, "comparisons": [],
                                "global_stages": []})
  assert "| joint_25_s0 | 0.800 [0.780, 0.820] | 0.400 |" in text
  assert "| image_only_25_s0 | pending |" in text
  assert f"Runs evaluated so far: 1 of {len(pc.GRID)}" in text
  assert "Total so far: 0.02 h." in text
  assert "| chosen | 1 | 0.02 | 1.0 [1.0, 1.0] |" in text  # finished stages by kind
  assert "| train |" not in text  # nothing trained is finished
  assert "(a)" not in text
  # An outpainting record from before its Frechet intervals were centred is flagged.
  l2i = {"miou": {"value": 0.98, "interval": [0.97, 0.99]},
         "fd_seg": {"value": 0.005, "interval": [0.015, 0.057]}}
  runs[spec.name]["outpainting"] = {"image_to_layout": {}, "layout_to_image": {"R=5": l2i}}
  text = claim_report.markdown({"protocol": pc.PROTOCOL, "runs": runs, "comparisons": [],
                                "global_stages": []})
  assert "| 0.980 [0.970, 0.990] | 0.005 [0.015, 0.057] (a) |" in text
  assert "(a) Recorded before outpainting centred" in text
  l2i["fd_seg"] = {"value": 0.005, "interval": [0.001, 0.03],
                   "interval_method": "percentile, replicates centred on the value"}
  text = claim_report.markdown({"protocol": pc.PROTOCOL, "runs": runs, "comparisons": [],
                                "global_stages": []})
  assert "| 0.005 [0.001, 0.030] |" in text and "(a)" not in text


def test_budget_counts_a_judge_trained_on_an_earlier_machine(tmp_path):
  out, results = tmp_path / "exp", tmp_path / "results"
  judge_stage = [s for s in pc.global_stages(out, pc.PROTOCOL) if s.key == "judge/segnet"][0]
  summary = claim_report._global_summary(out, results, judge_stage)  # pylint: disable=protected-access
  assert not summary["done"] and summary["wall_s"] == 0  # no record anywhere: not done
  judge = results / "archive" / "judge"
  judge.mkdir(parents=True)
  (judge / "segnet.json").write_text(json.dumps({"train_seconds": 97.2}))
  summary = claim_report._global_summary(out, results, judge_stage)  # pylint: disable=protected-access
  assert summary["done"] and summary["wall_s"] == 97.2 and summary["from_judge_record"]
  text = claim_report.markdown({"protocol": pc.PROTOCOL, "runs": {}, "comparisons": [],
                                "global_stages": [summary]})
  assert "| judge/segnet | 1.6 (b) | 1 |" in text and "(b) Trained on an earlier machine" in text
  assert "Total so far: 0.03 h." in text


def test_settings_plot_holds_the_runs_beyond_the_twins(tmp_path):
  def run(spec):
    pts = [{"guidance": g, "metrics": {k: g for k in ("fd_seg", "semantic_recall", "image_fsd",
                                                       "attribute_accuracy")},
            "intervals": {k: [g - 0.1, g + 0.1] for k in ("fd_seg", "semantic_recall", "image_fsd",
                                                           "attribute_accuracy")}}
           for g in (1.0, 2.0)]
    return {"spec": {"arm": spec.arm, "fraction": spec.fraction, "seed": spec.seed,
                     "captioned": spec.captioned, "overrides": [list(o) for o in spec.overrides]},
            "sweep": pts}
  path = tmp_path / "settings_tried.png"
  twins = {s.name: run(s) for s in pc.GRID[:2]}
  claim_report.plot_settings({"runs": twins}, path)
  assert not path.exists()  # nothing beyond the twins: no figure
  bits = pc.select(pc.GRID, "joint_25_layout_normalizebits_s0")[0]
  claim_report.plot_settings({"runs": {**twins, bits.name: run(bits)}}, path)
  assert path.stat().st_size > 1000


def test_clustering_picture_uses_each_arms_best_level_and_old_archives_are_completed(tmp_path):
  from gcd_jax.experiments import claim_archive
  steps = {t: {"0": {"nmi": a}, "1": {"nmi": b}} for t, a, b in (("100", 0.2, 0.5), ("800", 0.1, 0.0))}
  assert claim_report.best_level({"steps": steps}) == "1"  # mean 0.25 against 0.15
  steps["800"]["0"]["nmi"] = 0.4
  assert claim_report.best_level({"steps": steps}) == "0"  # mean 0.3 against 0.25
  # An archive made when only level 0 was kept gets the other levels from the
  # run's own maps, and refuses maps of other images.
  rng = np.random.default_rng(0)
  local = {"images": rng.integers(0, 255, (10, 4, 4, 3), np.uint8),
           "layouts": rng.integers(0, 3, (10, 4, 4)), "t100_level0": rng.integers(0, 3, (10, 4, 4)),
           "t100_level1": rng.integers(0, 3, (10, 2, 2))}
  np.savez(tmp_path / "clustering.npz", **local)
  results = tmp_path / "results"
  path = claim_archive.maps_path(results, "joint_25_s0")
  path.parent.mkdir(parents=True)
  old = {k: local[k][:claim_archive.MAP_ROWS] for k in ("images", "layouts", "t100_level0")}
  np.savez(path, colours=np.zeros((3, 3), np.uint8), **old)
  claim_archive._complete_maps(results, "joint_25_s0", tmp_path / "clustering.npz", _quiet)  # pylint: disable=protected-access
  with np.load(path) as f:
    assert set(f.files) == {"images", "layouts", "t100_level0", "t100_level1", "colours"}
    np.testing.assert_array_equal(f["t100_level1"], local["t100_level1"][:claim_archive.MAP_ROWS])
  local["layouts"] = local["layouts"][::-1]
  local.pop("t100_level1")
  local["t100_level2"] = rng.integers(0, 3, (10, 1, 1))
  np.savez(tmp_path / "clustering.npz", **local)
  with pytest.raises(ValueError, match="layouts differ"):
    claim_archive._complete_maps(results, "joint_25_s0", tmp_path / "clustering.npz", _quiet)  # pylint: disable=protected-access


# ---------------------------------------------------------------------------
# Comparison functions.


def _brute_value_at(xs, ys, target, points=200_001):
  """Densely samples the polyline and keeps the largest y with x within a hair of target."""
  best = np.nan
  for i in range(len(xs) - 1):
    s = np.linspace(0, 1, points)
    x = xs[i] + s * (xs[i + 1] - xs[i])
    y = ys[i] + s * (ys[i + 1] - ys[i])
    close = np.abs(x - target) <= 1.5 * abs(xs[i + 1] - xs[i]) / (points - 1) + 1e-12
    if close.any():
      m = y[close].max()
      best = m if np.isnan(best) else max(best, m)
  return best


@pytest.mark.parametrize("seed", range(5))
def test_value_at_matches_a_dense_walk_along_the_curve(seed):
  rng = np.random.default_rng(seed)
  xs = rng.uniform(0, 1, 6)  # not monotone: the curve crosses a level more than once
  ys = rng.uniform(0, 1, 6)
  for target in rng.uniform(-0.1, 1.1, 20):
    want = _brute_value_at(xs, ys, target)
    got = claim_report.value_at(xs, ys, target)
    if np.isnan(want):
      assert np.isnan(got)
    else:
      assert got == pytest.approx(want, abs=2e-5)


def test_value_at_points_and_matched_targets():
  assert claim_report.value_at([3.0, 1.0, 2.0], [0.1, 0.5, 0.9], 1.0) == 0.5
  assert claim_report.value_at([3.0, 1.0, 2.0], [0.1, 0.5, 0.9], 1.5) == pytest.approx(0.7)
  targets = claim_report.matched_targets([[0.0, 4.0], [1.0, 6.0, 2.0]], num=3)
  np.testing.assert_allclose(targets, [1.75, 2.5, 3.25])
  assert claim_report.matched_targets([[0.0, 1.0], [2.0, 3.0]]).size == 0


def _mean_point(values, name="semantic_recall", extra=None):
  values = np.asarray(values, np.float64)
  stats = {name: lambda idx: values[idx].mean()}
  metrics = {name: values.mean()}
  for k, v in (extra or {}).items():
    v = np.asarray(v, np.float64)
    stats[k] = (lambda vv: lambda idx: vv[idx].mean())(v)
    metrics[k] = v.mean()
  return claim_report.PointStats({"metrics": metrics}, stats, len(values))


def test_fixed_comparison_interval_matches_the_normal_approximation():
  rng = np.random.default_rng(0)
  a = rng.binomial(1, 0.7, 1000).astype(float)
  b = rng.binomial(1, 0.6, 1000).astype(float)
  res = claim_report.compare_fixed(_mean_point(a), _mean_point(b), ["semantic_recall"], 2000, 0)
  r = res["semantic_recall"]
  se = np.sqrt(a.var() / len(a) + b.var() / len(b))
  assert r["difference"] == pytest.approx(a.mean() - b.mean())
  # Monte Carlo with 2000 replicates: the percentile ends within 10 % of 1.96 se.
  lo, hi = r["interval"]
  assert lo == pytest.approx(r["difference"] - 1.96 * se, abs=0.1 * 1.96 * se)
  assert hi == pytest.approx(r["difference"] + 1.96 * se, abs=0.1 * 1.96 * se)


def test_matched_comparison_reads_each_curve_at_the_same_fidelity():
  rng = np.random.default_rng(1)
  n = 400

  def sweep(fids, corrs):
    # Per-sample values with the given means (exact), so the curves are known.
    pts = []
    for f, c in zip(fids, corrs):
      fv = f + rng.normal(0, 0.05, n)
      cv = c + rng.normal(0, 0.05, n)
      pts.append(_mean_point(cv - cv.mean() + c, extra={"fd_seg": fv - fv.mean() + f}))
    return pts

  a = sweep([1.0, 0.6, 0.4, 0.5], [0.2, 0.5, 0.7, 0.8])
  b = sweep([0.9, 0.5, 0.45, 0.7], [0.1, 0.3, 0.5, 0.6])
  rows = claim_report.compare_matched(a, b, "fd_seg", "semantic_recall", 200, 0, num_targets=3)
  assert len(rows) == 3
  for r in rows:
    t = r["target"]
    assert 0.45 < t < 0.9
    assert r["a"] == pytest.approx(claim_report.value_at([1.0, 0.6, 0.4, 0.5], [0.2, 0.5, 0.7, 0.8], t))
    assert r["b"] == pytest.approx(claim_report.value_at([0.9, 0.5, 0.45, 0.7], [0.1, 0.3, 0.5, 0.6], t))
    assert r["difference"] == pytest.approx(r["a"] - r["b"])
    lo, hi = r["interval"]
    assert lo < r["difference"] < hi and hi - lo < 0.2
    assert r["replicates_used"] > 150


def test_seed_spread_lists_every_seed():
  rows = [{"label": "25%", "seed": s, "fixed_guidance": {"semantic_recall": {"difference": d}}}
          for s, d in ((0, 0.05), (1, -0.01))]
  rows.append({"label": "100%", "seed": 0, "fixed_guidance": {"semantic_recall": {"difference": 0.2}}})
  spread = claim_report.seed_spread(rows)
  assert list(spread) == ["25%"]
  v = spread["25%"]["semantic_recall"]
  assert v["differences"] == [0.05, -0.01] and v["mean"] == pytest.approx(0.02) and v["range"] == [-0.01, 0.05]
  # Two comparisons of one seed under one label would be read as a spread over seeds.
  with pytest.raises(ValueError, match="repeat a seed"):
    claim_report.seed_spread(rows + [dict(rows[0])])


def test_matched_bootstrap_is_paired_and_centres_a_frechet_like_bias():
  """A fidelity that resampling inflates (like a Frechet distance of a set with
  duplicates) must not push the replicate curves off the targets, and two arms
  with the same samples must differ by exactly 0 in every (paired) replicate."""
  rng = np.random.default_rng(3)
  n = 300

  def point(f, c):
    corr = (rng.uniform(size=n) < c).astype(float)
    # Duplicates raise it by about 1/e: a bias of 0.37 against a curve spanning 0.5.
    stats = {"fd_seg": lambda idx, f=f: f + (1 - len(np.unique(idx)) / n),
             "semantic_recall": lambda idx, v=corr: v[idx].mean()}
    return claim_report.PointStats({"metrics": {"fd_seg": f, "semantic_recall": corr.mean()}}, stats, n)

  sweep = [point(f, c) for f, c in [(1.0, 0.3), (0.8, 0.5), (0.6, 0.7), (0.5, 0.8)]]
  rows = claim_report.compare_matched(sweep, sweep, "fd_seg", "semantic_recall", 200, 0, num_targets=5)
  for r in rows:
    assert r["replicates_used"] == 200
    assert r["a_interval"][0] < r["a"] < r["a_interval"][1]
    assert r["difference"] == 0 and r["interval"] == [0.0, 0.0]


# ---------------------------------------------------------------------------
# The archive: the report from committed per-sample arrays, the driver skipping
# what an earlier machine finished.


@pytest.fixture(scope="module")
def judged(scenes_data_dir, tmp_path_factory):
  """(Context, generated Samples, segnet dir) on 32_mini: 40 test captions, a
  random-weight segnet as the fd_seg judge, and as "generated" images the test
  images of other captions, half of them noised (so that every metric is off
  its optimum)."""
  from gcd_jax import segnet
  from gcd_jax.data import pipeline
  from gcd_jax.evaluators import base, suite
  n = 40
  ref = suite.load_reference("synthetic_scenes/32_mini", "test", n, (32, 32), scenes_data_dir)
  classes = pipeline.layout_classes("synthetic_scenes/32_mini", data_dir=scenes_data_dir)
  cfg = segnet.SegNetConfig(num_classes=classes.num_classes)
  judge = tmp_path_factory.mktemp("judge") / "segnet"
  segnet.save(judge, cfg, segnet.init_params(cfg), classes, (32, 32))
  judges = suite.make_judges(ref, segnet=str(judge), cache_dir=tmp_path_factory.mktemp("refcache"))
  ctx = base.Context(ref, judges, replicates=0)
  rng = np.random.default_rng(0)
  images = ref.images[np.roll(np.arange(n), 3)].astype(np.int64)
  images[: n // 2] += rng.integers(-40, 41, images[: n // 2].shape)
  images = np.clip(images, 0, 255).astype(np.uint8)
  return ctx, base.Samples(images, None, judges), judge


def _evaluator_stats(ctx, samples):
  from gcd_jax.evaluators import base
  stats = {}
  for ev in base.from_names(["correspondence", "image_fsd", "fd_seg"]):
    stats.update(ev.statistics(ctx, samples))
  return stats


def test_archived_arrays_rebuild_the_evaluators_statistics_exactly(judged, tmp_path):
  from gcd_jax.experiments import claim_archive
  ctx, samples, _ = judged
  direct = _evaluator_stats(ctx, samples)
  path, ref_path = tmp_path / "p.npz", tmp_path / "r.npz"
  claim_archive.write_arrays(path, claim_archive.point_arrays(ctx, samples), {"judge": "j"})
  claim_archive.write_arrays(ref_path, claim_archive.reference_arrays(ctx), {"judge": "j"})
  point, meta = claim_archive.read_arrays(path)
  reference, _ = claim_archive.read_arrays(ref_path)
  assert meta == {"judge": "j"} and point["segnet_features"].dtype == np.float32
  rebuilt = claim_archive.statistics(point, reference, ctx.reference.classes.ignore_id)
  assert sorted(rebuilt) == sorted(direct)
  rng = np.random.default_rng(1)
  n = len(samples)
  for idx in [np.arange(n)] + [rng.integers(0, n, n) for _ in range(3)]:
    for k in direct:
      a, b = direct[k](idx), rebuilt[k](idx)
      assert (np.isnan(a) and np.isnan(b)) or a == b, (k, a, b)
  values = {k: direct[k](np.arange(n)) for k in ("semantic_recall", "attribute_accuracy", "fd_seg",
                                                   "image_fsd")}
  assert 0 < values["semantic_recall"] < 1 and values["fd_seg"] > 0 and values["image_fsd"] > 0


def _fake_experiment(out, protocol, grid, ctx, samples, judge):
  """Marks every stage of `grid` done, with stored samples and records as
  `gcd_jax.evaluate` writes them (each arm's images differ)."""
  import shutil
  from gcd_jax.evaluators import base, suite
  shutil.copytree(judge, pc.judge_dir(out))
  for a, spec in enumerate(grid):
    for st in pc.run_stages(out, protocol, spec):
      kind = st.key.split("/")[0]
      if kind == "train":
        st.output.mkdir(parents=True)
      else:
        points = []
        for g in (protocol["sweep_guidance"] if kind == "sweep" else (protocol["chosen_guidance"],)):
          images = np.roll(samples.images, a + int(g), axis=0)
          point = base.Samples(images, None, ctx.judges)
          directory = out / "points" / f"{spec.name}_{kind}_{g:g}"
          suite.write_samples(directory, point)
          stats = _evaluator_stats(ctx, point)
          metrics = {k: float(f(np.arange(len(images)))) for k, f in stats.items()}
          points.append({"guidance": g, "num_samples": len(images), "directory": str(directory),
                         "metrics": metrics, "intervals": {k: [v, v] for k, v in metrics.items()}})
        st.output.parent.mkdir(parents=True, exist_ok=True)
        st.output.write_text(json.dumps(points))
      pc.write_state(out, st.key, {"done": True, "spec": st.spec(out),
                                   "attempts": [{"wall_s": 60.0, "rc": 0, "hardware": pc.hardware()}]})


def test_report_from_the_archive_alone_and_run_skips_what_it_holds(judged, tmp_path):
  import shutil
  from gcd_jax.experiments import claim_archive
  ctx, samples, judge = judged
  protocol = {k: v for k, v in pc.PROTOCOL.items()
              if k not in ("clustering_steps", "clustering_images", "outpainting_images")}
  protocol.update(sweep_guidance=(1.0, 2.0, 3.0), sweep_samples=len(samples),
                  chosen_samples=len(samples))
  grid = (pc.RunSpec("joint", 25, 0), pc.RunSpec("image_only", 25, 0), pc.RunSpec("joint", 50, 0))
  out, results = tmp_path / "exp", tmp_path / "results"
  _fake_experiment(out, protocol, grid[:2], ctx, samples, judge)
  first = claim_report.write_report(out, results, protocol, grid, bootstrap=20,
                                    judges_for=lambda n: ctx)
  (row,) = first["comparisons"]
  assert row["a"] == "joint_25_s0" and row["fixed_guidance"] and row["matched"]
  # Each point's intervals are the report's own (the records said [v, v]): centred
  # replicates, so a Frechet distance's interval holds its value.
  for rec in first["runs"]["joint_25_s0"]["sweep"]:
    v, (lo, hi) = rec["metrics"]["fd_seg"], rec["intervals"]["fd_seg"]
    assert lo < v < hi

  # The machine is gone: only the results directory is left.
  shutil.rmtree(out)
  def no_judges(n):
    raise AssertionError("nothing left to archive: the report must not need the judges")
  second = claim_report.write_report(out, results, protocol, grid, bootstrap=20, judges_for=no_judges)
  assert second["comparisons"] == first["comparisons"]
  assert second["runs"]["joint_25_s0"]["stages"]["sweep"]["archived"]
  assert second["runs"]["joint_25_s0"]["stages"]["train"]["wall_s"] == 60.0
  assert second["runs"]["joint_50_s0"]["chosen"] is None

  # A new machine's `run`: the judge is restored, not retrained; archived runs
  # (training included) are skipped; the rest runs, after the data is prepared.
  todo = pc.not_archived(out, results, protocol, grid, log=_quiet)
  assert claim_archive.judge_identity(pc.judge_dir(out)) == claim_archive.judge_identity(judge)
  assert [s.key for s in todo] == ["prepare/synthetic_scenes_32_8k", "train/joint_50_s0",
                                   "sweep/joint_50_s0", "chosen/joint_50_s0"]
  assert pc.not_archived(out, results, protocol, grid[:2], log=_quiet) == []

  # Another judge is never mixed in.
  other = tmp_path / "other_judge"
  shutil.copytree(judge, other)
  record = json.loads((other / "segnet.json").read_text())
  record["identity"] = "segnet-0000000000000000"
  (other / "segnet.json").write_text(json.dumps(record))
  with pytest.raises(ValueError, match="never mixed"):
    claim_archive.archive_judge(other, results)
  # Nor another protocol.
  with pytest.raises(ValueError, match="another protocol"):
    claim_archive.check_protocol(results, dict(protocol, num_steps=1), grid)


def test_provenance_names_the_commit_of_a_tree_copied_without_git(tmp_path, monkeypatch):
  config = tmp_path / "configs" / "x.py"
  config.parent.mkdir()
  config.write_text("# a config\n")
  stage = pc.Stage("train/x", ["-m", "gcd_jax.main", f"--config={config}:variant"])
  monkeypatch.setattr(pc, "REPO", tmp_path)  # no .git here (nor above, in a fresh tmp dir)
  monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
  monkeypatch.delenv("GCD_JAX_GIT_COMMIT", raising=False)
  bare = pc.provenance(stage)
  assert bare["git_commit"] is None and "git_commit_from" not in bare
  import hashlib  # pylint: disable=g-import-not-at-top
  assert bare["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
  monkeypatch.setenv("GCD_JAX_GIT_COMMIT", "c33ea40")
  stated = pc.provenance(stage)
  assert stated["git_commit"] == "c33ea40" and stated["git_commit_from"] == "GCD_JAX_GIT_COMMIT"
  # In a checkout (this repository, when the suite runs from a clone), git's own
  # answer wins over the variable.
  repo = pc.pathlib.Path(__file__).resolve().parents[1]
  if (repo / ".git").exists():
    monkeypatch.setattr(pc, "REPO", repo)
    monkeypatch.delenv("GIT_CEILING_DIRECTORIES")
    real = pc.provenance(stage)
    assert real["git_commit"] not in (None, "c33ea40") and "git_commit_from" not in real
