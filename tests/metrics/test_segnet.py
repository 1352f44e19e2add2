"""Tests of gcd_jax.segnet: training, saving, loading, the loss, fd_seg and the CLI.

One tiny segnet is trained once (module fixture) on synthetic_scenes/32_mini
(200 train, 100 test images at 32x32, K = 8) and shared by the tests.
"""

import json
import runpy
import shutil
import sys

import jax
import numpy as np
import pytest

from gcd_jax import segnet
from gcd_jax.data import pipeline
from gcd_jax.metrics import fid
from gcd_jax.metrics import frechet
from gcd_jax.metrics import layout_metrics
from gcd_jax.metrics import segmenters

DATASET = "synthetic_scenes/32_mini"
TINY = dict(widths=(8, 16, 32), groups=4, batch_size=16, lr=5e-3)
STEPS = 300


@pytest.fixture(scope="module")
def trained(scenes_data_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("segnet")
  record = segnet.train(DATASET, data_dir=scenes_data_dir, steps=STEPS, out_dir=str(out),
                        progress=False, **TINY)
  return out, record


def _split(data_dir, split):
  """(uint8 images [N, 32, 32, 3], layouts [N, 32, 32]) of a whole split."""
  ds = pipeline.make_dataset(DATASET, split=split, image_size=(32, 32), batch_size=1000,
                             train=False, data_dir=data_dir)
  batch = ds[0]
  return batch["image"], batch["layout"].astype(np.int32)


def test_training_learns_and_record_matches_saved_model(trained, scenes_data_dir):
  out, record = trained
  assert (out / segnet.WEIGHTS_FILE).is_file() and (out / segnet.RECORD_FILE).is_file()
  on_disk = json.loads((out / segnet.RECORD_FILE).read_text())
  assert on_disk == json.loads(json.dumps(record))
  assert on_disk["identity"].startswith("segnet-") and len(on_disk["identity"]) == 7 + 16
  assert on_disk["image_size"] == [32, 32] and on_disk["steps"] == STEPS
  assert on_disk["classes"]["names"][0] == "background"
  # Chance (every pixel background) is about 0.1; 300 tiny steps reach about 0.9.
  assert record["heldout_miou"] > 0.75, record

  model = segnet.load(out)
  images, layouts = _split(scenes_data_dir, "test")
  pred = model(images)
  assert pred.shape == layouts.shape and pred.dtype == np.int32
  miou, per_class = layout_metrics.miou(pred, layouts, model.num_classes,
                                        model.classes.ignore_id)
  assert miou == pytest.approx(record["heldout_miou"], abs=1e-9)
  np.testing.assert_allclose(per_class, [np.nan if v is None else v
                                         for v in record["heldout_per_class_iou"]])


def test_protocols_and_other_sizes(trained, scenes_data_dir):
  model = segnet.load(trained[0])
  assert isinstance(model, segmenters.Segmenter)
  assert model.num_classes == 8 and model.image_size == (32, 32)
  extractor = model.feature_extractor()
  assert isinstance(extractor, fid.FeatureExtractor)
  assert extractor.name == "segnet" and extractor.identity == model.identity
  assert extractor.dim == model.dim == sum(TINY["widths"])

  images, _ = _split(scenes_data_dir, "test")
  images = images[:5]
  feats = extractor(images)
  assert feats.shape == (5, model.dim) and feats.dtype == np.float32
  # Batching and padding do not change an image's outputs.
  np.testing.assert_allclose(model.features(images[:1]), feats[:1], rtol=1e-5, atol=1e-5)
  # Another size is resized inside; layouts come back at the input's size.
  big = images.repeat(2, axis=1).repeat(2, axis=2)
  big_pred = model(big)
  assert big_pred.shape == (5, 64, 64)
  assert (big_pred[:, ::2, ::2] == model(images)).mean() > 0.8
  assert model(images[:, :28, :30]).shape == (5, 28, 30)
  with pytest.raises(ValueError, match="uint8"):
    model(images.astype(np.float32))


def test_save_load_round_trip_and_identity(trained, scenes_data_dir, tmp_path):
  out, record = trained
  model = segnet.load(out)
  again = segnet.load(out)
  images, _ = _split(scenes_data_dir, "test")
  images = images[:16]
  np.testing.assert_array_equal(model(images), again(images))
  np.testing.assert_array_equal(model.features(images), again.features(images))

  copy = tmp_path / "copy"
  saved = segnet.save(copy, model.config, model.params, model.classes, model.image_size,
                      {"note": "copy"})
  copied = segnet.load(copy)
  assert saved["identity"] == copied.identity == model.identity == record["identity"]
  np.testing.assert_array_equal(copied.features(images), model.features(images))
  assert copied.record["note"] == "copy"

  changed = jax.tree_util.tree_map(np.asarray, model.params)
  changed["classifier"]["bias"] = changed["classifier"]["bias"] + 0.01
  segnet.save(tmp_path / "changed", model.config, changed, model.classes, model.image_size)
  other = segnet.load(tmp_path / "changed")
  assert other.identity != model.identity
  assert other.feature_extractor().identity != model.feature_extractor().identity


def _numpy_cross_entropy(logits, labels, ignore_id):
  logits, labels = np.asarray(logits, np.float64), np.asarray(labels)
  keep = labels != ignore_id if ignore_id is not None else np.ones(labels.shape, bool)
  total, count = 0.0, 0
  for idx in zip(*np.nonzero(keep)):
    row = logits[idx]
    total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[labels[idx]]
    count += 1
  return total / count


def test_loss_leaves_out_ignored_pixels():
  rng = np.random.default_rng(0)
  k, ignore = 5, 255
  logits = rng.normal(size=(2, 6, 7, k)).astype(np.float32) * 3
  labels = rng.integers(0, k, (2, 6, 7))
  ignored = rng.random((2, 6, 7)) < 0.3
  labels[ignored] = ignore
  loss = float(segnet.pixel_cross_entropy(logits, labels, ignore))
  np.testing.assert_allclose(loss, _numpy_cross_entropy(logits, labels, ignore), rtol=1e-5)

  # Whatever the logits at ignored pixels, the loss is the same.
  other = logits.copy()
  other[ignored] = rng.normal(size=(ignored.sum(), k)) * 100
  assert float(segnet.pixel_cross_entropy(other, labels, ignore)) == pytest.approx(loss, rel=1e-6)
  # Without an ignore id every pixel counts: the plain mean.
  plain = rng.integers(0, k, (2, 6, 7))
  np.testing.assert_allclose(float(segnet.pixel_cross_entropy(logits, plain, None)),
                             _numpy_cross_entropy(logits, plain, None), rtol=1e-5)
  # Nothing labelled: 0, not NaN.
  assert float(segnet.pixel_cross_entropy(logits, np.full((2, 6, 7), ignore), ignore)) == 0.0


def test_fd_seg_separates_real_from_broken_images(trained, scenes_data_dir):
  extractor = segnet.load(trained[0]).feature_extractor()
  train_images, _ = _split(scenes_data_dir, "train")
  test_images, _ = _split(scenes_data_dir, "test")
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, test_images.shape, dtype=np.uint8)
  n, h, w, _ = test_images.shape
  order = np.stack([rng.permutation(h * w) for _ in range(n)])
  shuffled = test_images.reshape(n, h * w, 3)[np.arange(n)[:, None], order]
  shuffled = shuffled.reshape(test_images.shape)

  reference = extractor(train_images)
  real = frechet.frechet_distance_of(extractor(test_images), reference)
  fd_noise = frechet.frechet_distance_of(extractor(noise), reference)
  fd_shuffled = frechet.frechet_distance_of(extractor(shuffled), reference)
  # Measured with the tiny model: real ~0.02, noise ~1.4, shuffled ~0.2.
  assert fd_noise > 5 * real, (real, fd_noise)
  assert fd_shuffled > 5 * real, (real, fd_shuffled)


@pytest.mark.parametrize("argv, message", [
    (["train"], "--dataset"),
    (["train", "--dataset", "synthetic_scenes", "--size", "3x"], "--size"),
    (["train", "--dataset", "synthetic_scenes", "--steps", "0"], "must be > 0"),
    (["train", "--dataset", "synthetic_scenes", "--widths", "8,16", "--groups", "3"], "groups"),
    (["fly", "--dataset", "synthetic_scenes"], "expected one of train"),
])
def test_cli_bad_arguments_exit_2(argv, message, capsys):
  assert segnet.main(argv) == 2
  assert message in capsys.readouterr().err


def test_cli_bad_dataset_or_size_exit_2(scenes_data_dir, tmp_path, capsys):
  base = ["train", "--dataset", "synthetic_scenes", "--data_dir", scenes_data_dir,
          "--out", str(tmp_path / "out")]
  for extra, message in [(["--config", "no_such"], "not found"),
                         (["--config", "32_mini", "--size", "30x30"], "divisible by 4"),
                         (["--config", "32_mini", "--eval_split", "nope"], "nope")]:
    assert segnet.main(base + extra) == 2, extra
    assert message in capsys.readouterr().err, extra
  assert not (tmp_path / "out").exists()


def test_module_runs_the_cli(monkeypatch, capsys):
  monkeypatch.setattr(sys, "argv", ["gcd_jax.segnet", "train", "--dataset=x", "--size=x"])
  with pytest.raises(SystemExit) as e:
    runpy.run_module("gcd_jax.segnet", run_name="__main__")
  assert e.value.code == 2 and "--size" in capsys.readouterr().err


def test_cli_trains_and_reports(scenes_data_dir, tmp_path, capsys):
  out = tmp_path / "cli"
  assert segnet.main(["train", "--dataset", "synthetic_scenes", "--config", "32_mini",
                      "--data_dir", scenes_data_dir, "--out", str(out), "--steps", "3",
                      "--batch_size", "16", "--widths", "8,16,32", "--groups", "4",
                      "--noprogress"]) == 0
  printed = capsys.readouterr().out
  assert "held-out mIoU on test:" in printed and str(out / segnet.RECORD_FILE) in printed
  assert segnet.load(out).record["steps"] == 3


def test_load_missing_or_corrupt_files(trained, tmp_path):
  out = trained[0]
  with pytest.raises(FileNotFoundError, match="segnet.json"):
    segnet.load(tmp_path / "empty")
  only_json = tmp_path / "only_json"
  only_json.mkdir()
  shutil.copy(out / segnet.RECORD_FILE, only_json)
  with pytest.raises(FileNotFoundError, match="segnet.msgpack"):
    segnet.load(only_json)
  (only_json / segnet.WEIGHTS_FILE).write_bytes((out / segnet.WEIGHTS_FILE).read_bytes()[:100])
  with pytest.raises(ValueError, match="segnet.msgpack"):
    segnet.load(only_json)
  (only_json / segnet.RECORD_FILE).write_text("{not json")
  with pytest.raises(ValueError, match="segnet.json"):
    segnet.load(only_json)
