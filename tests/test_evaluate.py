"""python -m gcd_jax.evaluate on tiny trained runs: a guidance sweep, resumption, the baseline."""

import json

import numpy as np
import pytest

from gcd_jax import evaluate


def _args(workdir, *extra):
  return evaluate.parse_args(["--workdir", str(workdir), "--num-samples", "8", "--batch-size", "4",
                              "--steps", "3", *extra])


def test_guidance_sweep_writes_metrics_table_and_plot(tiny_run_dir, monkeypatch):
  points = evaluate.run(_args(tiny_run_dir, "--guidance", "1,2"))
  assert [p["guidance"] for p in points] == [1.0, 2.0]
  base = tiny_run_dir / "eval" / "2"
  files = sorted(p.relative_to(base).as_posix() for p in base.rglob("metrics.json"))
  assert len(files) == 2
  for p in points:
    m = p["metrics"]
    for key in ("semantic_recall", "attribute_accuracy", "miou", "fsd"):
      assert np.isfinite(m[key]) or key == "attribute_accuracy", (key, m)
    assert 0.0 <= m["semantic_recall"] <= 1.0 and 0.0 <= m["miou"] <= 1.0 and m["fsd"] >= 0.0
  table = (base / "sweep.md").read_text()
  assert table.startswith("| guidance |") and "| 2 |" in table
  assert (base / "sweep.png").stat().st_size > 1000
  # A finished point is read back, not recomputed.
  monkeypatch.setattr(evaluate.Evaluator, "generate",
                      lambda *a: pytest.fail("a finished sweep point was recomputed"))
  again = evaluate.run(_args(tiny_run_dir, "--guidance", "2"))
  assert again[0]["metrics"] == points[1]["metrics"]
  record = json.loads(next(base.rglob("metrics.json")).read_text())
  assert record["checkpoint_step"] == 2 and record["num_samples"] == 8
  assert list((tiny_run_dir / "eval").glob("events.out.tfevents.*"))


def test_image_only_baseline_is_scored_on_the_segmenters_layout(tiny_image_only_run_dir):
  workdir, _ = tiny_image_only_run_dir
  [point] = evaluate.run(_args(workdir, "--guidance", "1.5"))
  m = point["metrics"]
  assert "miou" not in m  # its layout *is* the segmenter's
  assert 0.0 <= m["semantic_recall"] <= 1.0 and m["fsd"] >= 0.0


def test_bad_arguments(tiny_run_dir, tmp_path, capsys):
  with pytest.raises(SystemExit):
    evaluate.main(["--workdir", str(tmp_path), "--num-samples", "8"])
  assert "no checkpoint under" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    evaluate.main(["--workdir", str(tiny_run_dir), "--num-samples", "100000"])
  assert "has only 100" in capsys.readouterr().err
