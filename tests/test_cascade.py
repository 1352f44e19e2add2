"""A tiny base + SR cascade end to end: the SR train loop, its records, the cascade CLI."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from gcd_jax import checkpointing
from gcd_jax import run as run_lib
from gcd_jax import sample
from gcd_jax import train
from gcd_jax import train_lib
from gcd_jax.diffusion import lowres

from conftest import tiny_config  # pylint: disable=g-bad-import-order


def tiny_sr(data_dir):
  """An SR stage after the tiny base run (16x16): 32x32 from 16x16, 3 steps."""
  c = tiny_config(data_dir, num_steps=3)
  c.data.height = c.data.width = 32
  c.lowres.height = c.lowres.width = 16
  c.model.lowres_cond = True
  c.optimizer.warmup_steps = 0
  c.sample.steps = c.sample.repaint_steps = 3
  c.sample.guidance_image = c.sample.guidance_layout = 1.0
  return c


@pytest.fixture(scope="module")
def sr_run(scenes_data_dir, tmp_path_factory):
  config = tiny_sr(scenes_data_dir)
  workdir = tmp_path_factory.mktemp("tiny_sr")
  state = train.train_and_evaluate(config, str(workdir))
  return config, workdir, state


def test_the_sr_stage_trains_its_conditioning_and_records_it(sr_run):
  config, workdir, state = sr_run
  assert int(state.step) == 3
  model = train_lib.make_model(config)
  init = jax.jit(lambda r: train_lib.init_state(config, model, r))(jax.random.PRNGKey(config.seed))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.params, init.params)
  # The zero-initialised heads pass no gradient back in the first step; by the third, the
  # low-res layout embedding and the augmentation-level embedding have moved.
  assert moved["lowres_layout_embed"]["embedding"] > 0
  assert max(jax.tree.leaves(moved["lowres_noise_embed"])) > 0
  meta, _ = checkpointing.read_meta(workdir)
  assert meta["schedules"]["lowres"]["height"] == 16
  assert meta["schedules"]["lowres"]["augmentation"]["layout"]["name"] == "linear"
  # Loading it with other schedules is refused (the records' comparison, augmentation
  # included, is tested in test_lowres.py).
  with pytest.raises(ValueError, match="allow_schedule_change"):
    run_lib.load(workdir, schedule_overrides={"image_schedule": "linear"})


def _cascade(base, sr, out, *extra):
  return sample.run(sample.parse_args([
      f"--workdir={base}", f"--sr_workdir={sr}", f"--out={out}", "--samples_per_caption=2",
      "--batch_size=2", "--steps=3", "--sr_steps=3", *extra]))


def test_cascade_samples_both_sizes_and_records_both_checkpoints(tiny_run_dir, sr_run, tmp_path):
  _, sr_dir, _ = sr_run
  manifest = _cascade(tiny_run_dir, sr_dir, tmp_path, "--text=A red ball.")
  for n in ("0000", "0001"):
    assert np.asarray(Image.open(tmp_path / f"{n}_image.png")).shape == (32, 32, 3)
    assert np.asarray(Image.open(tmp_path / f"{n}_layout.png")).shape == (32, 32)
    assert np.asarray(Image.open(tmp_path / f"{n}_base_image.png")).shape == (16, 16, 3)
    assert (tmp_path / f"{n}_base_layout_color.png").is_file()
  assert (tmp_path / "grid.png").is_file() and (tmp_path / "grid_base.png").is_file()
  on_disk = json.loads((tmp_path / "manifest.json").read_text())
  assert on_disk["checkpoint_step"] == 4 and on_disk["sr"]["checkpoint_step"] == 3
  assert on_disk["sr"]["sampler"]["lowres_level"] == 0.2
  assert on_disk["sr"]["sampler"]["guidance_image"] == 1.0 and on_disk["sr"]["size"] == [32, 32]
  assert on_disk["samples"][0]["base_image"] == "0000_base_image.png"
  assert manifest["sr"]["workdir"] == str(sr_dir.absolute())


def test_a_known_layout_is_kept_at_both_stages(tiny_run_dir, sr_run, tmp_path):
  _, sr_dir, _ = sr_run
  rng = np.random.default_rng(0)
  layout = rng.integers(0, 8, (32, 32)).astype(np.uint8)
  mask = np.zeros((32, 32), np.uint8)
  mask[:, :16] = 255  # the left half is known
  Image.fromarray(layout, mode="L").save(tmp_path / "layout.png")
  Image.fromarray(mask, mode="L").save(tmp_path / "mask.png")
  out = tmp_path / "out"
  manifest = _cascade(tiny_run_dir, sr_dir, out, "--text=A box.", f"--layout={tmp_path / 'layout.png'}",
                      f"--layout_mask={tmp_path / 'mask.png'}", "--resample=2")
  assert manifest["task"] == "layout -> image" and manifest["sr"]["sampler"]["resample"] == 2
  cfg = lowres.LowresConfig(16, 16)
  small = np.asarray(lowres.downsample_layout(cfg, jnp.asarray(layout[None])))[0]
  for n in ("0000", "0001"):
    high = np.asarray(Image.open(out / f"{n}_layout.png"))
    base = np.asarray(Image.open(out / f"{n}_base_layout.png"))
    np.testing.assert_array_equal(high[:, :16], layout[:, :16])
    np.testing.assert_array_equal(base[:, :8], small[:, :8])


def test_stages_that_do_not_chain_are_refused(tiny_run_dir, sr_run, tmp_path, capsys):
  _, sr_dir, _ = sr_run
  assert sample.main([f"--workdir={sr_dir}", f"--out={tmp_path}", "--text=A ball."]) == 2
  assert "is a super-resolution stage" in capsys.readouterr().err
  assert sample.main([f"--workdir={tiny_run_dir}", f"--sr_workdir={tiny_run_dir}",
                      f"--out={tmp_path}", "--text=A ball."]) == 2
  assert "is not a super-resolution stage" in capsys.readouterr().err
  assert sample.main([f"--workdir={tiny_run_dir}", "--lowres_level=0.3", f"--out={tmp_path}",
                      "--text=A ball."]) == 2
  assert "need --sr_workdir" in capsys.readouterr().err


def test_evaluate_scores_the_cascade_at_the_sr_size(tiny_run_dir, sr_run):
  from gcd_jax import evaluate  # pylint: disable=g-import-not-at-top
  _, sr_dir, _ = sr_run
  argv = [f"--workdir={tiny_run_dir}", f"--sr_workdir={sr_dir}", "--num_samples=4",
          "--batch_size=2", "--steps=3", "--sr_steps=3", "--bootstrap=10", "--guidance=2",
          "--metrics=correspondence,layout_correspondence,fsd"]
  [point] = evaluate.run(evaluate.parse_args(argv))
  assert point["sr"]["step"] == 3 and point["sr"]["sampler"]["lowres_level"] == 0.2
  assert point["key"]["dataset"] == "synthetic_scenes/32_mini"
  assert pathlib.Path(point["directory"]).is_relative_to(sr_dir / "eval" / "cascade_4_3")
  stored = np.load(pathlib.Path(point["directory"]) / "samples.npz")
  assert stored["images"].shape == (4, 32, 32, 3)  # the SR stage's outputs are what is scored
  for name in ("semantic_recall", "layout_semantic_recall", "fsd"):
    assert np.isfinite(point["metrics"][name])
  # Another SR sampler is another point; the same one is reused.
  [again] = evaluate.run(evaluate.parse_args(argv))
  assert again["directory"] == point["directory"]
  [other] = evaluate.run(evaluate.parse_args(argv + ["--lowres_level=0.5"]))
  assert other["directory"] != point["directory"]
  # An SR stage alone is refused (it needs its base stage).
  assert evaluate.main([f"--workdir={sr_dir}", "--num_samples=4"]) == 2


def _bilinear_up(x, size):
  """Half-pixel-centred bilinear resize of [B, h, w, C], edges clamped: the closed form."""
  for axis, n_out in ((1, size[0]), (2, size[1])):
    n_in = x.shape[axis]
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    lo = np.floor(src).astype(int)
    frac = (src - lo).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    a = np.take(x, np.clip(lo, 0, n_in - 1), axis=axis)
    b = np.take(x, np.clip(lo + 1, 0, n_in - 1), axis=axis)
    x = a * (1 - frac) + b * frac
  return x


def test_the_sr_baseline_is_the_base_stage_upsampled_and_scored_alike(tiny_run_dir, sr_run):
  from gcd_jax import evaluate  # pylint: disable=g-import-not-at-top
  from gcd_jax import visualize  # pylint: disable=g-import-not-at-top
  _, sr_dir, _ = sr_run
  argv = [f"--workdir={tiny_run_dir}", f"--sr_workdir={sr_dir}", "--num_samples=4",
          "--batch_size=2", "--steps=3", "--bootstrap=0", "--guidance=2",
          "--metrics=correspondence,layout_correspondence", "--sr_baseline=bilinear"]
  args = evaluate.parse_args(argv)
  [point] = evaluate.run(args)
  assert pathlib.Path(point["directory"]).is_relative_to(sr_dir / "eval" / "upsampled_4")
  assert point["sr"]["baseline"] == "bilinear image, nearest-neighbour layout"
  assert point["sr"]["size"] == [32, 32] and point["sr"]["base_compute"].startswith("cpu-")
  stored = np.load(pathlib.Path(point["directory"]) / "samples.npz")
  assert stored["images"].shape == (4, 32, 32, 3) and stored["layouts"].shape == (4, 32, 32)
  # The same captions and seeds as the cascade's base stage, upsampled without a model.
  ev = evaluate.Evaluation(args)
  cfg = ev.sampler_config(2.0)
  for start in (0, 2):
    low = ev.cascade.base.sample(ev.reference.captions[start:start + 2], seed=start, cfg=cfg)
    want = visualize.to_uint8(_bilinear_up(np.asarray(low["image"], np.float64), (32, 32)))
    got = stored["images"][start:start + 2]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    np.testing.assert_array_equal(stored["layouts"][start:start + 2],
                                  np.repeat(np.repeat(low["layout"], 2, 1), 2, 2))
  for name in ("semantic_recall", "layout_semantic_recall"):
    assert np.isfinite(point["metrics"][name])
  assert evaluate.main(argv + ["--lowres_level=0.5"]) == 2  # no SR model runs
  assert evaluate.main([a for a in argv if not a.startswith("--sr_workdir")]) == 2


def test_sr_study_pairs_each_input_with_its_upsampling_and_matches_evaluate(tiny_run_dir, sr_run,
                                                                             tmp_path, monkeypatch):
  from gcd_jax import evaluate  # pylint: disable=g-import-not-at-top
  from gcd_jax.evaluators import suite  # pylint: disable=g-import-not-at-top
  from gcd_jax.experiments import sr_cascade  # pylint: disable=g-import-not-at-top
  _, sr_dir, _ = sr_run
  study = tmp_path / "study"
  # 5 samples in batches of 2: the last batch is padded.
  argv = [f"--base={tiny_run_dir}", f"--sr={sr_dir}", f"--out={study}", "--num_samples=5",
          "--batch_size=2", "--steps=3", "--sr_steps=3", "--guidance=2", "--levels=0.2",
          "--bootstrap=20", "--metrics=correspondence,layout_correspondence,miou"]
  assert sr_cascade.main(argv) == 0
  record = json.loads((study / "sr_cascade.json").read_text())
  assert set(record["points"]) == {"generated_bilinear", "generated_sr_level0.2",
                                   "real_bilinear", "real_sr_level0.2"}
  for a, b in (("generated_sr_level0.2", "generated_bilinear"), ("real_sr_level0.2", "real_bilinear")):
    diff = record["differences"][f"{a} - {b}"]
    for k in ("semantic_recall", "miou"):
      assert diff[k]["difference"] == pytest.approx(
          record["points"][a][k]["value"] - record["points"][b][k]["value"])

  def stored(name):
    [path] = study.glob(f"{name}_*.npz")
    with np.load(path) as f:
      return {k: f[k] for k in f.files}

  # The cascade's samples and its baseline are evaluate's (the same seeds for both stages).
  common = [f"--workdir={tiny_run_dir}", f"--sr_workdir={sr_dir}", "--num_samples=5",
            "--batch_size=2", "--steps=3", "--bootstrap=0", "--guidance=2",
            "--metrics=correspondence"]
  [cascade] = evaluate.run(evaluate.parse_args(common + ["--sr_steps=3"]))
  [upsampled] = evaluate.run(evaluate.parse_args(common + ["--sr_baseline=bilinear"]))
  for point, name, tolerance in ((cascade, "generated_sr_level0.2", 0),
                                 (upsampled, "generated_bilinear", 1)):  # upsampled per batch there
    with np.load(pathlib.Path(point["directory"]) / "samples.npz") as want:
      got = stored(name)
      assert np.abs(got["images"].astype(int) - want["images"].astype(int)).max() <= tolerance
      np.testing.assert_array_equal(got["layouts"], want["layouts"])
  # The real input is the test split brought down as in SR training: its layouts
  # (nearest-neighbour both ways, a factor of 2) are each 2x2 block's bottom-right
  # pixel, repeated.
  real = suite.load_reference("synthetic_scenes/32_mini", "test", 5, (32, 32),
                              sr_run[0].data.data_dir)
  np.testing.assert_array_equal(stored("real_bilinear")["layouts"],
                                np.repeat(np.repeat(real.layouts[:, 1::2, 1::2], 2, 1), 2, 2))
  # PSNR against the true images, for the real input only.
  for name in ("real_bilinear", "real_sr_level0.2"):
    err = stored(name)["images"].astype(float) - real.images.astype(float)
    want = np.mean([10 * np.log10(255 ** 2 / np.mean(e ** 2)) for e in err])
    assert record["points"][name]["psnr"]["value"] == pytest.approx(want, rel=1e-9)
  assert "psnr" not in record["points"]["generated_bilinear"]
  assert record["points"]["real_bilinear"]["lowres_mae"]["value"] < 3  # the round trip
  # A rerun samples nothing and gives the same numbers.
  sample_fn = run_lib.Run.sample
  monkeypatch.setattr(run_lib.Run, "sample", lambda *a, **k: pytest.fail("sampled again"))
  assert sr_cascade.main(argv) == 0
  again = json.loads((study / "sr_cascade.json").read_text())
  assert again["points"] == record["points"] and again["differences"] == record["differences"]
  assert "## SR minus bilinear, paired" in (study / "sr_cascade.md").read_text()
  # A damaged point is sampled again, and only that one.
  [damaged] = study.glob("real_sr_level0.2_*.npz")
  damaged.write_bytes(damaged.read_bytes()[:100])
  calls = []
  monkeypatch.setattr(run_lib.Run, "sample",
                      lambda self, *a, **k: calls.append(self.is_sr) or sample_fn(self, *a, **k))
  assert sr_cascade.main(argv) == 0
  assert calls == [True] * 3  # the SR stage, 3 batches
  again = json.loads((study / "sr_cascade.json").read_text())
  assert again["points"] == record["points"]
  assert sr_cascade.main(argv + ["--levels=0.2,1.5"]) == 2  # out of range
  # --base_segnet: the stored base outputs are also scored at the base size (16x16),
  # fd_seg by that segnet, correspondence against the captions they answered.
  from gcd_jax import segnet  # pylint: disable=g-import-not-at-top
  def tiny_segnet(size):
    out = tmp_path / f"segnet_{size}"
    return out, segnet.train("synthetic_scenes/32_mini", data_dir=sr_run[0].data.data_dir,
                             image_size=(size, size), steps=3, batch_size=8, widths=(4, 8, 8),
                             groups=2, eval_split=None, out_dir=str(out), progress=False)
  seg_dir, seg = tiny_segnet(16)
  monkeypatch.setattr(run_lib.Run, "sample", lambda *a, **k: pytest.fail("sampled again"))
  assert sr_cascade.main(argv + [f"--base_segnet={seg_dir}", f"--segnet={tiny_segnet(32)[0]}",
                                 "--metrics=correspondence,fd_seg"]) == 0
  own = json.loads((study / "sr_cascade.json").read_text())["base_at_own_size"]
  assert own["size"] == [16, 16] and own["segnet"] == seg["identity"]
  assert own["captions"] == "synthetic_scenes/32_mini (test), as sampled"
  # The same numbers as evaluate gives the base stage alone (the same seeds and
  # captions; the SR and base datasets are one here).
  monkeypatch.setattr(run_lib.Run, "sample", sample_fn)
  # On a copy: the shared tiny run's eval cache is counted by other tests.
  import shutil  # pylint: disable=g-import-not-at-top
  base_copy = tmp_path / "tiny_run_copy"
  shutil.copytree(tiny_run_dir, base_copy, ignore=shutil.ignore_patterns("eval"))
  [alone] = evaluate.run(evaluate.parse_args(
      [f"--workdir={base_copy}", "--num_samples=5", "--batch_size=2", "--steps=3",
       "--bootstrap=0", "--guidance=2", "--metrics=correspondence,fd_seg",
       f"--segnet={seg_dir}"]))
  for k in ("semantic_recall", "attribute_accuracy", "fd_seg"):
    assert own["metrics"][k]["value"] == pytest.approx(alone["metrics"][k], rel=1e-6, abs=1e-9), k


def test_paired_scores_intervals_match_the_normal_approximation():
  """Mean statistics over shared samples: the paired difference's interval is the
  difference's own sampling spread (closed form, 1.96 sd / sqrt(n)), much
  narrower than the points' spreads; identical points differ by exactly 0."""
  from gcd_jax.experiments import sr_cascade  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n = 400
  x = rng.normal(0.0, 1.0, n)  # what both outputs share (the caption's difficulty)
  e = rng.normal(0.3, 0.1, n)  # what the SR stage adds
  points = {"a": {"m": lambda i: (x + e)[i].mean()}, "b": {"m": lambda i: x[i].mean()},
            "c": {"m": lambda i: x[i].mean()}}
  out = sr_cascade.paired_scores(points, n, [("a", "b"), ("b", "c")], replicates=2000, seed=1)
  d = out["differences"]["a - b"]["m"]
  assert d["difference"] == pytest.approx(e.mean())
  lo, hi = d["interval"]
  half = 1.96 * e.std() / np.sqrt(n)
  assert lo < e.mean() < hi
  assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
  # Each point's own interval: 1.96 sd(x) / sqrt(n), about ten times wider.
  plo, phi = out["points"]["b"]["m"]["interval"]
  assert (phi - plo) / 2 == pytest.approx(1.96 * x.std() / np.sqrt(n), rel=0.15)
  assert out["differences"]["b - c"]["m"] == {"difference": 0.0, "interval": [0.0, 0.0]}


def test_scene_agreement_tells_the_same_scenes_at_two_sizes_from_others():
  from gcd_jax.experiments import sr_cascade  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  big = np.zeros((20, 64, 64), np.int32)
  for i in range(20):  # two rectangles of random classes per scene
    for _ in range(2):
      y, x = rng.integers(0, 48, 2)
      big[i, y:y + rng.integers(8, 16), x:x + rng.integers(8, 16)] = rng.integers(1, 8)
  # The same scenes at 32x32: sampled as scene_agreement samples, exactly equal;
  # at the other pixel phase, most object pixels still agree.
  assert sr_cascade.scene_agreement(big[:, ::2, ::2], big) == 1.0
  assert sr_cascade.scene_agreement(big[:, 1::2, 1::2], big) > 0.5
  assert sr_cascade.scene_agreement(big[:, 1::2, 1::2], np.roll(big, 1, axis=0)) < 0.2
