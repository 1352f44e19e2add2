"""`python -m gcd_jax.prepare`: offline array_record builds of every dataset."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gcd_jax import prepare
from gcd_jax.data import fake_data, pipeline

tfds.disable_progress_bar()


@pytest.fixture(scope="module")
def fake_folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("prep_src"))
  fake_data.write_layout_folder(root, 8, (10, 14), num_classes=4)
  return root


def test_every_dataset_is_registered():
  for name in prepare.DATASETS:
    assert prepare.builder_class(name).name == name


def test_prepare_layout_folder_then_read(fake_folder, tmp_path):
  builder = prepare.prepare("layout_folder", "mine", str(tmp_path), fake_folder)
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  path = tmp_path / "layout_folder" / "mine" / "1.0.0"
  assert any(n.startswith("layout_folder-train.array_record") for n in os.listdir(path))
  batch = next(pipeline.make_train_iterator("layout_folder/mine", image_size=(8, 8),
                                            batch_size=3, data_dir=str(tmp_path),
                                            num_threads=0))
  assert batch["image"].shape == (3, 8, 8, 3)
  # Prepared once: a second call reuses it, --overwrite rebuilds it.
  stamp = os.path.getmtime(path / "dataset_info.json")
  prepare.prepare("layout_folder", "mine", str(tmp_path), fake_folder)
  assert os.path.getmtime(path / "dataset_info.json") == stamp
  assert prepare.main(["--dataset", "layout_folder", "--config", "mine", "--data_dir",
                       str(tmp_path), "--manual_dir", fake_folder, "--overwrite"]) == 0
  assert os.path.getmtime(path / "dataset_info.json") != stamp


def test_prepare_synthetic_scenes(tmp_path):
  assert prepare.main(["--dataset", "synthetic_scenes", "--config", "32_mini",
                       "--data_dir", str(tmp_path)]) == 0
  classes = pipeline.layout_classes("synthetic_scenes/32_mini", str(tmp_path))
  batches = list(pipeline.make_eval_iterator(
      "synthetic_scenes/32_mini", split="train_25", image_size=(32, 32), batch_size=16,
      data_dir=str(tmp_path), num_threads=0))
  assert sum(len(b["id"]) for b in batches) == 50
  assert np.all(batches[0]["layout"] < classes.num_classes)


@pytest.mark.parametrize("dataset", ["mm_celeba_hq", "cityscapes_text", "layout_folder"])
def test_real_datasets_need_manual_dir(dataset, tmp_path, capsys):
  assert prepare.main(["--dataset", dataset, "--data_dir", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "--manual_dir is required" in err
  assert {"mm_celeba_hq": "CelebA-HQ-img", "cityscapes_text": "leftImg8bit",
          "layout_folder": "classes.json"}[dataset] in err  # The expected file layout.
  assert prepare.main(["--dataset", dataset, "--data_dir", str(tmp_path),
                       "--manual_dir", str(tmp_path / "missing")]) == 2
  assert "is not a directory" in capsys.readouterr().err
  assert not os.path.exists(tmp_path / dataset)


def test_unknown_config():
  with pytest.raises(ValueError, match="Unknown config 'huge'"):
    prepare.prepare("mm_celeba_hq", "huge", manual_dir=".")
  with pytest.raises(ValueError, match="Unknown dataset"):
    prepare.prepare("imagenet")


def test_bad_input_reports_file_and_leaves_nothing(fake_folder, tmp_path, capsys):
  src = tmp_path / "src"
  fake_data.write_layout_folder(str(src), 4, (10, 14), num_classes=4)
  with open(src / "layouts" / "00002.png", "wb") as f:
    f.write(b"\x89PNG broken")
  assert prepare.main(["--dataset", "layout_folder", "--config", "bad", "--data_dir",
                       str(tmp_path / "data"), "--manual_dir", str(src)]) == 2
  err = capsys.readouterr().err
  assert str(src / "layouts" / "00002.png") in err and "cannot decode layout" in err
  assert os.listdir(tmp_path / "data" / "layout_folder" / "bad") == []
  with pytest.raises(FileNotFoundError):
    pipeline.load_builder("layout_folder/bad", str(tmp_path / "data"))
