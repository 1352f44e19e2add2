"""python -m gcd_jax.sample on a tiny trained run: the three tasks and bad input."""

import dataclasses
import json

import jax
import numpy as np
from PIL import Image

from gcd_jax import run as run_lib
from gcd_jax import sample
from gcd_jax import sampling


def _run(argv):
  return sample.run(sample.parse_args(argv))


def _common(workdir, out, *extra):
  return [f"--workdir={workdir}", f"--out={out}", "--samples_per_caption=2", "--batch_size=2",
          "--steps=3", *extra]


def test_text_to_image_and_layout(tiny_run_dir, tmp_path):
  manifest = _run(_common(tiny_run_dir, tmp_path, "--text=A red ball.", "--guidance_image=2"))
  names = sorted(p.name for p in tmp_path.iterdir())
  for n in ("0000", "0001"):
    for kind in ("image", "layout", "layout_color", "overlay"):
      assert f"{n}_{kind}.png" in names
  assert "grid.png" in names and "manifest.json" in names
  on_disk = json.loads((tmp_path / "manifest.json").read_text())
  assert on_disk == json.loads(json.dumps(manifest))
  assert on_disk["checkpoint_step"] == 4 and on_disk["sampler"]["steps"] == 3
  assert on_disk["sampler"]["guidance_image"] == 2.0
  assert [s["caption"] for s in on_disk["samples"]] == ["A red ball."] * 2
  assert [s["seed"] for s in on_disk["samples"]] == [0, 1]
  lay = np.asarray(Image.open(tmp_path / "0000_layout.png"))
  assert lay.shape == (16, 16) and lay.max() < 8
  assert np.asarray(Image.open(tmp_path / "0000_image.png")).shape == (16, 16, 3)


def test_layout_to_image_keeps_the_layout(tiny_run_dir, tmp_path):
  layout = (np.arange(16)[None, :] // 4 * np.ones((16, 1))).astype(np.uint8)  # classes 0..3
  Image.fromarray(layout, mode="L").save(tmp_path / "in.png")
  out = tmp_path / "out"
  manifest = _run(_common(tiny_run_dir, out, "--text=A box.", f"--layout={tmp_path / 'in.png'}"))
  assert manifest["task"] == "layout -> image" and manifest["sampler"]["resample"] == 5
  np.testing.assert_array_equal(np.asarray(Image.open(out / "0001_layout.png")), layout)


def test_image_to_layout_keeps_the_image(tiny_run_dir, tmp_path):
  image = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / "in.png")
  out = tmp_path / "out"
  manifest = _run(_common(tiny_run_dir, out, "--text=A box.", f"--image={tmp_path / 'in.png'}"))
  assert manifest["task"] == "image -> layout" and manifest["sampler"]["resample"] == 1
  np.testing.assert_array_equal(np.asarray(Image.open(out / "0000_image.png")), image)
  assert (out / "0000_layout.png").is_file()


def test_bad_input_is_rejected_clearly(tiny_run_dir, tmp_path, capsys):
  bad_layout = np.full((16, 16), 9, np.uint8)  # K = 8
  Image.fromarray(bad_layout, mode="L").save(tmp_path / "bad.png")
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "big.png")
  cases = [
      (["--text=A ball.", f"--layout={tmp_path / 'bad.png'}"], "class id 9 >= K = 8"),
      (["--text=A ball.", f"--image={tmp_path / 'big.png'}"], "pass --resize"),
      (["--text=  "], "empty caption"),
      (["--text=A ball.", f"--layout={tmp_path / 'missing.png'}"], "no such file"),
  ]
  for extra, message in cases:
    assert sample.main(_common(tiny_run_dir, tmp_path / "out", *extra)) == 2
    assert message in capsys.readouterr().err
  assert sample.main(_common(tmp_path / "no_run", tmp_path / "out", "--text=A ball.")) == 2
  assert "no checkpoint under" in capsys.readouterr().err
  # Another kind of model given as the workdir: a PyTorch file, a segmentation network.
  (tmp_path / "model.pt").write_bytes(b"\x80\x02")
  (tmp_path / "segnet").mkdir()
  (tmp_path / "segnet" / "segnet.json").write_text("{}")
  for other, message in ((tmp_path / "model.pt", "convert_gcdp"), (tmp_path / "segnet", "--segnet")):
    assert sample.main(_common(other, tmp_path / "out", "--text=A ball.")) == 2
    assert message in capsys.readouterr().err
  assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_batch_split_over_the_local_devices_gives_the_same_samples(tiny_run_dir):
  """run.Run.sample splits a batch over the 8 local devices when 8 divides it."""
  r = run_lib.load(tiny_run_dir)
  assert len(jax.local_devices()) == 8  # tests/conftest.py
  captions = [f"A {c} ball." for c in ("red", "blue", "green", "teal")] * 2
  cfg = dataclasses.replace(sampling.SamplerConfig.from_config(r.config.sample), steps=3)
  split = r.sample(captions, seed=3, cfg=cfg)
  assert "mesh" in r._placed  # pylint: disable=protected-access  (the split path ran)
  whole = dataclasses.replace(r, shard_batch=False, _samplers={}, _placed={}).sample(
      captions, seed=3, cfg=cfg)
  np.testing.assert_allclose(split["image"], whole["image"], atol=1e-5)
  np.testing.assert_array_equal(split["layout"], whole["layout"])
  assert not np.allclose(split["image"][0], split["image"][1])  # (different captions and noise)
