"""Real-dataset builders on tiny fake trees in the real directory layouts."""

import json
import os
import pickle

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gcd_jax.data import build_utils
from gcd_jax.data.build_utils import BuildError
from gcd_jax.data.features import LayoutClasses
from tfds_builders.cityscapes_text import cityscapes_text as cs
from tfds_builders.layout_folder import layout_folder as lf
from tfds_builders.mm_celeba_hq import mm_celeba_hq as celeba

tfds.disable_progress_bar()


def _save(path, array, **kwargs):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, **kwargs)


def _build(builder_cls, config, data_dir, manual_dir):
  builder = builder_cls(config=config, data_dir=str(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir), try_download_gcs=False))
  return builder


def _read_split(builder, split):
  """{id: example} with numpy images, [H, W] layouts and str captions."""
  out = {}
  for ex in builder.as_data_source(split=split):
    ex_id = ex["id"].decode()
    out[ex_id] = {"image": ex["image"], "layout": ex["layout"][..., 0],
                  "captions": [c.decode() for c in ex["captions"]], "id": ex_id}
  return out


def _ids_in_order(builder, split):
  return [ex["id"].decode() for ex in builder.as_data_source(split=split)]


def _assert_failed_cleanly(builder_cls, config, data_dir, manual_dir, *message_parts,
                           error=BuildError):
  """The build raises `error` naming all message_parts and leaves no dataset."""
  with pytest.raises(error) as info:
    _build(builder_cls, config, data_dir, manual_dir)
  for part in message_parts:
    assert str(part) in str(info.value), (part, str(info.value))
  # Nothing that a later run could take for a prepared dataset: no version
  # directory, no leftover temporary directory, and TFDS agrees.
  name_dir = os.path.join(str(data_dir), builder_cls.name, config.name)
  leftovers = os.listdir(name_dir) if os.path.isdir(name_dir) else []
  assert leftovers == [], leftovers
  fresh = builder_cls(config=config, data_dir=str(data_dir), file_format="array_record")
  assert not fresh.is_prepared()
  return str(info.value)


# ---------------------------------------------------------------------------
# layout_folder


LF_CLASSES = {"names": ["background", "l_hand", "r_hand", "ball"],
              "colors": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
              "ignore_id": 255, "flip_pairs": [["l_hand", "r_hand"]]}


def _write_layout_folder(root, n=5, splits=None):
  """n images of varying sizes (one JPEG); returns {stem: (image, layout, captions)}."""
  rng = np.random.default_rng(1)
  truth = {}
  lines = []
  for i in range(n):
    h, w = 6 + i, 8 + 2 * i
    stem = f"img{i}"
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    layout = rng.integers(0, 4, (h, w), dtype=np.uint8)
    layout[0, 0] = 255  # The declared ignore id is allowed.
    if i == 0:  # A JPEG is stored byte for byte: compare with its decode.
      _save(f"{root}/images/{stem}.jpg", image, quality=90)
      image = np.asarray(Image.open(f"{root}/images/{stem}.jpg").convert("RGB"))
      name = stem + ".jpg"
    else:
      _save(f"{root}/images/{stem}.png", image)
      name = stem + ".png"
    _save(f"{root}/layouts/{stem}.png", layout)
    captions = [f"caption {i} a", f"caption {i} b"]
    entry = {"file_name": name, "captions": captions}
    if splits is not None:
      entry["split"] = splits[i]
    lines.append(json.dumps(entry))
    truth[stem] = (image, layout, captions)
  with open(f"{root}/captions.jsonl", "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(f"{root}/classes.json", "w") as f:
    json.dump(LF_CLASSES, f)
  return truth


@pytest.fixture(scope="module")
def layout_folder_built(tmp_path_factory):
  root = tmp_path_factory.mktemp("lf_src")
  truth = _write_layout_folder(str(root))
  config = lf.LayoutFolder.make_config("fake", test_fraction=0.2, seed=3)
  builder = _build(lf.LayoutFolder, config, tmp_path_factory.mktemp("lf_data"), root)
  return builder, truth


def test_layout_folder_examples_match_files(layout_folder_built):
  builder, truth = layout_folder_built
  got = {**_read_split(builder, "train"), **_read_split(builder, "test")}
  assert set(got) == set(truth)
  for stem, (image, layout, captions) in truth.items():
    np.testing.assert_array_equal(got[stem]["image"], image)
    np.testing.assert_array_equal(got[stem]["layout"], layout)
    assert got[stem]["captions"] == captions


def test_layout_folder_splits_and_order(layout_folder_built):
  builder, truth = layout_folder_built
  train, test = build_utils.seeded_holdout(truth, 0.2, seed=3)
  assert len(test) == 1
  # Train is written in the seeded order, so train[:p%] is a random subset.
  assert _ids_in_order(builder, "train") == build_utils.seeded_permutation(train, 3)
  assert _ids_in_order(builder, "test") == test
  assert builder.info.metadata["split_aliases"]["train_50"] == "train[:50%]"


def test_layout_folder_classes_metadata(layout_folder_built):
  builder, _ = layout_folder_built
  classes = LayoutClasses.from_json(builder.info.metadata["layout_classes"])
  assert classes.names == tuple(LF_CLASSES["names"])
  assert classes.ignore_id == 255
  assert classes.flip_pairs == ((1, 2),)
  assert classes.colors[1] == (255, 0, 0)


def test_layout_folder_split_field(tmp_path):
  _write_layout_folder(str(tmp_path / "src"), splits=["train", "val", "test", "train", "val"])
  builder = _build(lf.LayoutFolder, lf.LayoutFolder.make_config("fields"), tmp_path / "data",
                   tmp_path / "src")
  assert sorted(_ids_in_order(builder, "val")) == ["img1", "img4"]
  assert _ids_in_order(builder, "test") == ["img2"]
  assert sorted(_ids_in_order(builder, "train")) == ["img0", "img3"]


def _corrupt_png(path):
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])


@pytest.mark.parametrize("case", ["corrupt_image", "garbage_image", "value_ge_k", "size_mismatch",
                                  "no_captions", "empty_captions", "not_utf8", "no_layout", "empty_images",
                                  "missing_dir", "bad_classes"])
def test_layout_folder_bad_input(tmp_path, case):
  src = tmp_path / "src"
  _write_layout_folder(str(src))
  expected = []
  if case == "corrupt_image":
    _corrupt_png(src / "images" / "img2.png")
    expected = [src / "images" / "img2.png", "cannot decode image"]
  elif case == "garbage_image":
    (src / "images" / "img3.png").write_bytes(b"not an image at all")
    expected = [src / "images" / "img3.png", "cannot decode image"]
  elif case == "value_ge_k":
    layout = np.asarray(Image.open(src / "layouts" / "img1.png")).copy()
    layout[2, 3] = 4  # K = 4; 255 (the ignore id) stays allowed.
    _save(str(src / "layouts" / "img1.png"), layout)
    expected = [src / "layouts" / "img1.png", "[4]"]
  elif case == "size_mismatch":
    _save(str(src / "layouts" / "img2.png"), np.zeros((3, 3), np.uint8))
    expected = [src / "images" / "img2.png", src / "layouts" / "img2.png", "must match"]
  elif case == "no_captions":
    lines = (src / "captions.jsonl").read_text().splitlines()
    (src / "captions.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    expected = [src / "images" / "img4.png", "without captions"]
  elif case == "empty_captions":
    with open(src / "captions.jsonl", "a") as f:
      f.write(json.dumps({"file_name": "extra.png", "captions": []}) + "\n")
    expected = [f"{src / 'captions.jsonl'}:6", "non-empty"]
  elif case == "not_utf8":
    with open(src / "captions.jsonl", "ab") as f:  # Latin-1, as some editors save it
      f.write(json.dumps({"file_name": "img1.png", "captions": ["x"]}).replace("x", "caf\xe9").encode("latin-1") + b"\n")
    expected = [f"{src / 'captions.jsonl'}:6", "not UTF-8", "0xe9"]
  elif case == "no_layout":
    os.remove(src / "layouts" / "img3.png")
    expected = [src / "images" / "img3.png", "no layout"]
  elif case == "empty_images":
    for name in os.listdir(src / "images"):
      os.remove(src / "images" / name)
    expected = [src / "images", "empty"]
  elif case == "missing_dir":
    # TFDS checks the manual dir itself (and gcd_jax.prepare before it).
    src = tmp_path / "does_not_exist"
    _assert_failed_cleanly(lf.LayoutFolder, lf.LayoutFolder.make_config(case),
                           tmp_path / "data", src, src, "does not exist", error=AssertionError)
    return
  elif case == "bad_classes":
    (src / "classes.json").write_text(json.dumps({"names": ["a", "b"], "flip_pairs": [["a", "c"]]}))
    expected = [src / "classes.json", "'c'"]
  _assert_failed_cleanly(lf.LayoutFolder, lf.LayoutFolder.make_config(case), tmp_path / "data",
                         src, *expected)


def test_layout_folder_rgb_layout_refused(tmp_path):
  src = tmp_path / "src"
  _write_layout_folder(str(src))
  _save(str(src / "layouts" / "img1.png"), np.zeros((7, 10, 3), np.uint8))
  _assert_failed_cleanly(lf.LayoutFolder, lf.LayoutFolder.make_config("rgb"), tmp_path / "data",
                         src, src / "layouts" / "img1.png", "mode RGB")


# ---------------------------------------------------------------------------
# mm_celeba_hq

CELEBA_IDS = ["0", "1", "2", "3", "2000", "2001"]  # 2000, 2001: part folder 1.
MASK = 16


def _rect(y0, y1, x0, x1):
  m = np.zeros((MASK, MASK), bool)
  m[y0:y1, x0:x1] = True
  return m


def _face_parts(i):
  """Overlapping part rectangles (shifted by id) as {part: [16, 16] bool}."""
  s = i % 3
  parts = {
      "skin": _rect(2, 14, 2, 14),
      "eye_g": _rect(5, 8, 3 + s, 13),       # Under the eyes: eyes paint later.
      "l_eye": _rect(6, 7, 4 + s, 6 + s),
      "r_eye": _rect(6, 7, 9, 11),
      "l_brow": _rect(4, 5, 4, 6),
      "nose": _rect(7, 10, 7, 9),
      "hair": _rect(0, 5 + s, 0, 16),          # Over skin, brows and glasses.
      "neck": _rect(12, 16, 5, 11),
      "cloth": _rect(14, 16, 0, 16),          # Over the neck.
  }
  if i % 2:
    parts["hat"] = _rect(0, 2, 3, 12)
    parts["l_ear"] = _rect(6, 10, 0, 3)
  return parts


def _expected_face_layout(parts):
  """Independent of the builder's painting loop: where parts overlap, the class
  with the largest id wins (g_mask.py paints in id order), else background."""
  ids = np.zeros((MASK, MASK), np.uint8)
  for part, mask in parts.items():
    ids = np.maximum(ids, mask * np.uint8(celeba.PARTS.index(part) + 1))
  return ids


def _write_celeba(root, split_lists=True, merged=False):
  rng = np.random.default_rng(2)
  truth = {}
  for i in CELEBA_IDS:
    image = rng.integers(0, 256, (2 * MASK, 2 * MASK, 3), dtype=np.uint8)
    _save(f"{root}/CelebA-HQ-img/{i}.jpg", image, quality=95)
    image = np.asarray(Image.open(f"{root}/CelebA-HQ-img/{i}.jpg").convert("RGB"))
    parts = _face_parts(int(i))
    expected = _expected_face_layout(parts)
    if merged:
      _save(f"{root}/CelebAMask-HQ-mask/{i}.png", expected)
    else:
      for k, (part, mask) in enumerate(parts.items()):
        value = (mask * 255).astype(np.uint8)
        if k % 2:  # The released masks come both as grey and as 3-channel PNGs.
          value = np.repeat(value[..., None], 3, axis=-1)
        _save(f"{root}/CelebAMask-HQ-mask-anno/{int(i) // 2000}/{int(i):05d}_{part}.png", value)
    captions = [f"face {i} caption {j}" for j in range(3)]
    os.makedirs(f"{root}/celeba-caption", exist_ok=True)
    with open(f"{root}/celeba-caption/{i}.txt", "w") as f:
      f.write("\n".join(captions[:2]) + "\n\n" + captions[2] + "\n")  # Blank lines skipped.
    truth[i] = (image, expected, captions)
  if split_lists:
    for split, ids in (("train", ["0", "1", "2", "2000"]), ("test", ["3", "2001"])):
      os.makedirs(f"{root}/{split}", exist_ok=True)
      with open(f"{root}/{split}/filenames.pickle", "wb") as f:
        pickle.dump([str(v) for v in ids], f)
  return truth


def _celeba_config(name, size=MASK):
  return celeba.MmCelebaHqConfig(name=name, size=size, seed=5)


@pytest.fixture(scope="module")
def celeba_built(tmp_path_factory):
  root = tmp_path_factory.mktemp("celeba_src")
  truth = _write_celeba(str(root))
  builder = _build(celeba.MmCelebaHq, _celeba_config("test16"),
                   tmp_path_factory.mktemp("celeba_data"), root)
  return builder, truth


def test_celeba_merged_masks_pixel_exact(celeba_built):
  builder, truth = celeba_built
  got = {**_read_split(builder, "train"), **_read_split(builder, "test")}
  assert set(got) == set(CELEBA_IDS)
  for i, (_, expected, _) in truth.items():
    np.testing.assert_array_equal(got[i]["layout"], expected, err_msg=f"id {i}")
  # Spot checks of the painting order, by hand.
  hair, skin, cloth, l_eye, eye_g = (celeba.PARTS.index(p) + 1
                                     for p in ("hair", "skin", "cloth", "l_eye", "eye_g"))
  layout0, layout2 = got["0"]["layout"], got["2"]["layout"]
  assert layout0[3, 7] == hair and layout0[10, 3] == skin and layout0[15, 7] == cloth
  assert layout0[6, 4] == l_eye and layout0[7, 12] == eye_g  # Eye over glasses.
  assert layout2[5, 12] == hair and layout2[6, 6] == hair  # Hair over glasses and eye.


def test_celeba_images_resized_and_captions(celeba_built):
  builder, truth = celeba_built
  got = _read_split(builder, "train")
  for i, ex in got.items():
    assert ex["image"].shape == (MASK, MASK, 3)
    # Lanczos 32 -> 16 of the decoded JPEG (draft mode stays at 32 here).
    want = np.asarray(Image.fromarray(truth[i][0]).resize((MASK, MASK), Image.LANCZOS))
    np.testing.assert_array_equal(ex["image"], want)
    assert ex["captions"] == truth[i][2]


def test_celeba_splits_from_lists_and_subsets(celeba_built):
  builder, _ = celeba_built
  assert sorted(_ids_in_order(builder, "test")) == ["2001", "3"]
  train = _ids_in_order(builder, "train")
  assert train == build_utils.seeded_permutation(["0", "1", "2", "2000"], 5)
  aliases = builder.info.metadata["split_aliases"]
  assert _ids_in_order(builder, aliases["train_25"]) == train[:1]
  assert _ids_in_order(builder, aliases["train_50"]) == train[:2]
  assert _ids_in_order(builder, aliases["train_100"]) == train


def test_celeba_classes():
  names = celeba.CLASSES.names
  assert len(names) == 19 and names[0] == "background" and names[-1] == "cloth"
  table = celeba.CLASSES.flip_table()
  for a, b in (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear")):
    assert table[names.index(a)] == names.index(b) and table[names.index(b)] == names.index(a)
  assert table[names.index("ear_r")] == names.index("ear_r")  # Earrings are not sided.


def test_celeba_already_merged_masks_and_seeded_split(tmp_path):
  truth = _write_celeba(str(tmp_path / "src"), split_lists=False, merged=True)
  builder = _build(celeba.MmCelebaHq, _celeba_config("merged"), tmp_path / "data",
                   tmp_path / "src")
  got = {**_read_split(builder, "train"), **_read_split(builder, "test")}
  for i, (_, expected, _) in truth.items():
    np.testing.assert_array_equal(got[i]["layout"], expected)
  train, test = build_utils.seeded_holdout(CELEBA_IDS, 0.2, 5)
  assert _ids_in_order(builder, "test") == test
  assert sorted(_ids_in_order(builder, "train")) == sorted(train)


def test_celeba_resizes_layout_nearest(tmp_path):
  truth = _write_celeba(str(tmp_path / "src"))
  builder = _build(celeba.MmCelebaHq, _celeba_config("test8", size=8), tmp_path / "data",
                   tmp_path / "src")
  for i, ex in _read_split(builder, "train").items():
    want = np.asarray(Image.fromarray(truth[i][1]).resize((8, 8), Image.NEAREST))
    np.testing.assert_array_equal(ex["layout"], want)


@pytest.mark.parametrize("case", ["no_caption", "mask_size", "merged_value", "no_masks",
                                  "list_unknown_id", "corrupt_image", "aspect"])
def test_celeba_bad_input(tmp_path, case):
  src = tmp_path / "src"
  _write_celeba(str(src), merged=case == "merged_value")
  if case == "no_caption":
    os.remove(src / "celeba-caption" / "2.txt")
    expected = [src / "celeba-caption" / "2.txt", "caption file not found"]
  elif case == "mask_size":
    path = src / "CelebAMask-HQ-mask-anno" / "1" / "02000_nose.png"
    _save(str(path), np.zeros((8, 8), np.uint8))
    expected = [path, "part mask is 8x8"]
  elif case == "merged_value":
    path = src / "CelebAMask-HQ-mask" / "1.png"
    _save(str(path), np.full((MASK, MASK), 19, np.uint8))
    expected = [path, "[19]"]
  elif case == "no_masks":
    for name in os.listdir(src / "CelebAMask-HQ-mask-anno" / "0"):
      if name.startswith("00003_"):
        os.remove(src / "CelebAMask-HQ-mask-anno" / "0" / name)
    expected = ["00003_*.png", "no part mask"]
  elif case == "list_unknown_id":
    with open(src / "test" / "filenames.pickle", "wb") as f:
      pickle.dump(["3", "2001", "777"], f)
    expected = [src / "test" / "filenames.pickle", "777"]
  elif case == "corrupt_image":
    _corrupt_png(src / "CelebA-HQ-img" / "2001.jpg")
    expected = [src / "CelebA-HQ-img" / "2001.jpg", "cannot decode image"]
  elif case == "aspect":  # 1024 px images with 512 px masks are fine; 32x24 is not.
    _save(str(src / "CelebA-HQ-img" / "1.jpg"), np.zeros((24, 32, 3), np.uint8))
    expected = [src / "CelebA-HQ-img" / "1.jpg", "aspect ratios differ"]
  _assert_failed_cleanly(celeba.MmCelebaHq, _celeba_config(case), tmp_path / "data", src,
                         *expected)


def _write_official_celeba(root, subsets):
  """The released form: .JPG names zero-padded, merged masks in
  CelebAMask-HQ-mask-anno/preprocessed/, GCDP's caption_files/{p}_captions.jsonl
  ({"file_name", "text"}), and captions for the test images only in celeba-caption/."""
  truth = _write_celeba(root, split_lists=False, merged=True)
  os.makedirs(f"{root}/CelebAMask-HQ-mask-anno", exist_ok=True)
  os.rename(f"{root}/CelebAMask-HQ-mask", f"{root}/CelebAMask-HQ-mask-anno/preprocessed")
  for i in CELEBA_IDS:
    os.rename(f"{root}/CelebA-HQ-img/{i}.jpg", f"{root}/CelebA-HQ-img/{int(i):05d}.JPG")
  os.makedirs(f"{root}/caption_files")
  for p, ids in subsets.items():
    with open(f"{root}/caption_files/{p}_captions.jsonl", "w") as f:
      for i in ids:
        f.write(json.dumps({"file_name": f"{i}.jpg", "text": [f"official {i} a", f"official {i} b"]})
                + "\n")
  for i in subsets[100]:
    os.remove(f"{root}/celeba-caption/{i}.txt")  # captions of the training set: the jsonl's
  return truth


@pytest.mark.parametrize("nested", [True, False])
def test_celeba_official_caption_files_and_exact_subsets(tmp_path, nested):
  train = ["0", "1", "2", "2000"]
  subsets = ({25: ["2"], 50: ["2", "0"], 100: train} if nested
             else {25: ["2"], 50: ["0", "1"], 100: train})
  truth = _write_official_celeba(str(tmp_path / "src"), subsets)
  config = _celeba_config(f"official{int(nested)}")
  _build(celeba.MmCelebaHq, config, tmp_path / "data", tmp_path / "src")
  # Read back from disk, as training does: the aliases were written with the dataset.
  builder = celeba.MmCelebaHq(config=config, data_dir=str(tmp_path / "data"),
                              file_format="array_record")
  got = _read_split(builder, "train")
  assert sorted(got) == sorted(train)
  for i, ex in got.items():
    assert ex["captions"] == [f"official {i} a", f"official {i} b"]
    np.testing.assert_array_equal(ex["layout"], truth[i][1])  # preprocessed/{id}.png as is
  # The test split: every other image with a caption file of its own.
  assert _ids_in_order(builder, "test") == ["3", "2001"]
  assert _read_split(builder, "test")["3"]["captions"] == truth["3"][2]
  aliases = builder.info.metadata["split_aliases"]
  from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  for p in (25, 50):
    split = pipeline.resolve_split(builder, f"train_{p}")
    assert sorted(_ids_in_order(builder, split)) == sorted(subsets[p]), (p, split)
  assert sorted(_ids_in_order(builder, aliases["train_100"])) == sorted(train)
  if nested:  # stored once: the subsets are prefixes of train
    assert aliases["train_25"] == "train[:1]" and aliases["train_50"] == "train[:2]"
    assert set(builder.info.splits) == {"train", "test"}
  else:  # splits of their own
    assert set(builder.info.splits) == {"train", "train_25", "train_50", "test"}


@pytest.mark.parametrize("case", ["duplicate", "unknown_image", "no_100", "bad_line"])
def test_celeba_official_caption_files_bad_input(tmp_path, case):
  src = tmp_path / "src"
  _write_official_celeba(str(src), {100: ["0", "1", "2", "2000"]})
  path = src / "caption_files" / "100_captions.jsonl"
  if case == "duplicate":
    with open(path, "a") as f:
      f.write(json.dumps({"file_name": "00001.jpg", "text": ["again"]}) + "\n")
    expected = [f"{path}:5", "'1' is listed again", "line 2"]
  elif case == "unknown_image":
    with open(path, "a") as f:
      f.write(json.dumps({"file_name": "777.jpg", "text": ["who"]}) + "\n")
    expected = [path, "777"]
  elif case == "no_100":
    os.rename(path, src / "caption_files" / "25_captions.jsonl")
    expected = [src / "caption_files", "no 100_captions.jsonl"]
  elif case == "bad_line":
    with open(path, "a") as f:
      f.write(json.dumps({"file_name": "3.jpg", "text": []}) + "\n")
    expected = [f"{path}:5", "non-empty"]
  _assert_failed_cleanly(celeba.MmCelebaHq, _celeba_config(case), tmp_path / "data", src,
                         *expected)


def test_celeba_split_list_pickle_is_restricted(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))
  path = tmp_path / "filenames.pickle"
  path.write_bytes(pickle.dumps([Evil()]))
  with pytest.raises(BuildError, match="refusing"):
    build_utils.read_id_list(str(path))


# ---------------------------------------------------------------------------
# cityscapes_text

CS_H, CS_W = 16, 32
CS_FILES = {"train": [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
                      ("bochum", "bochum_000000_000313"), ("bochum", "bochum_000000_001828")],
            "val": [("lindau", "lindau_000000_000019")]}


def _cs_label_ids(k):
  """Label ids with road (7) below, building (11) above, a car (26), void
  classes (0, 1, 4), a 1-pixel person (24, below the 1 % caption threshold) and
  k-dependent sizes so the area order changes."""
  ids = np.full((CS_H, CS_W), 11, np.uint8)
  ids[10 - k:, :] = 7
  ids[12:15, 20:28] = 26
  ids[0:2, 0:4] = 0
  ids[15, :] = 1
  ids[0, 30] = 4
  ids[5, 5] = 24
  if k == 2:
    ids[:, 0:2] = 255  # A stray "-1" (license plate) value.
  return ids


def _expected_cs_layout(ids):
  """Independent table from cityscapesScripts labels.py for the ids used here."""
  table = {7: 0, 11: 2, 26: 13, 24: 11, 0: 19, 1: 19, 4: 19, 255: 19}
  return np.vectorize(table.__getitem__)(ids).astype(np.uint8)


def _write_cityscapes(root, jsonl=False):
  rng = np.random.default_rng(4)
  truth = {}
  for split, files in CS_FILES.items():
    for k, (city, stem) in enumerate(files):
      image = rng.integers(0, 256, (CS_H, CS_W, 3), dtype=np.uint8)
      ids = _cs_label_ids(k)
      _save(f"{root}/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png", image)
      _save(f"{root}/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", ids)
      # Files the builder must ignore.
      _save(f"{root}/gtFine/{split}/{city}/{stem}_gtFine_color.png", image)
      truth[stem] = (image, _expected_cs_layout(ids))
  if jsonl:
    with open(f"{root}/captions.jsonl", "w") as f:
      for stem in truth:
        f.write(json.dumps({"id": stem, "captions": [f"street {stem}", "another"]}) + "\n")
  return truth


@pytest.fixture(scope="module")
def cityscapes_built(tmp_path_factory):
  root = tmp_path_factory.mktemp("cs_src")
  truth = _write_cityscapes(str(root))
  config = cs.CityscapesTextConfig(name="as_is", size=None, seed=1)
  builder = _build(cs.CityscapesText, config, tmp_path_factory.mktemp("cs_data"), root)
  return builder, truth


def test_cityscapes_label_mapping(cityscapes_built):
  builder, truth = cityscapes_built
  got = {**_read_split(builder, "train"), **_read_split(builder, "val")}
  assert set(got) == set(truth)
  for stem, (image, layout) in truth.items():
    np.testing.assert_array_equal(got[stem]["image"], image)
    np.testing.assert_array_equal(got[stem]["layout"], layout)


def test_cityscapes_label_table_is_the_standard_one():
  train_ids = cs.LABEL_TO_TRAIN_TABLE
  named = {7: "road", 8: "sidewalk", 11: "building", 12: "wall", 13: "fence", 17: "pole",
           19: "traffic light", 20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky",
           24: "person", 25: "rider", 26: "car", 27: "truck", 28: "bus", 31: "train",
           32: "motorcycle", 33: "bicycle"}
  for label_id in range(256):
    want = named.get(label_id, "unlabeled")
    assert cs.CLASSES.names[train_ids[label_id]] == want, label_id
  assert cs.CLASSES.num_classes == 20 and cs.CLASSES.ignore_id is None


def test_cityscapes_generated_captions(cityscapes_built):
  builder, _ = cityscapes_built
  got = _read_split(builder, "train")
  # Largest area first: k = 0 has 310 building and 136 road pixels; k = 3 has
  # 214 building and 232 road pixels.
  assert got["aachen_000000_000019"]["captions"] == [
      "An image of an urban street view with Buildings, Roads and Cars."]
  assert got["bochum_000000_001828"]["captions"] == [
      "An image of an urban street view with Roads, Buildings and Cars."]
  # The 1-pixel person is under 1 % of the image and is not named.
  assert all("People" not in ex["captions"][0] for ex in got.values())


def test_cityscapes_caption_grammar():
  layout = np.full((10, 10), cs.UNLABELED, np.uint8)
  assert cs.caption_from_layout(layout) == "An image of an urban street view."
  layout[:5] = 10  # sky
  assert cs.caption_from_layout(layout) == "An image of an urban street view with Sky."
  layout[5:, :3] = 11  # person: 30 px
  assert cs.caption_from_layout(layout) == (
      "An image of an urban street view with Sky and People.")
  assert cs.caption_from_layout(layout, min_area=0.4) == (
      "An image of an urban street view with Sky.")


def test_cityscapes_splits(cityscapes_built):
  builder, _ = cityscapes_built
  train = [s for _, s in CS_FILES["train"]]
  assert _ids_in_order(builder, "train") == build_utils.seeded_permutation(train, 1)
  assert _ids_in_order(builder, "val") == ["lindau_000000_000019"]
  both = _ids_in_order(builder, "train+val")
  assert sorted(both) == sorted(train + ["lindau_000000_000019"])
  assert builder.info.metadata["split_aliases"]["trainval"] == "train+val"


def test_cityscapes_jsonl_captions_and_resize(tmp_path):
  truth = _write_cityscapes(str(tmp_path / "src"), jsonl=True)
  config = cs.CityscapesTextConfig(name="small", size=(8, 16))
  builder = _build(cs.CityscapesText, config, tmp_path / "data", tmp_path / "src")
  for stem, ex in _read_split(builder, "train").items():
    assert ex["captions"] == [f"street {stem}", "another"]
    assert ex["image"].shape == (8, 16, 3)
    want = np.asarray(Image.fromarray(truth[stem][1]).resize((16, 8), Image.NEAREST))
    np.testing.assert_array_equal(ex["layout"], want)


def test_cityscapes_official_caption_file(tmp_path):
  """GCDP's data/caption_files/cityscapes/100_captions.jsonl, as released."""
  src = tmp_path / "src"
  truth = _write_cityscapes(str(src))
  os.makedirs(src / "caption_files")
  with open(src / "caption_files" / "100_captions.jsonl", "w") as f:
    for stem in truth:
      f.write(json.dumps({"file_name": f"{stem}_leftImg8bit.png",
                          "text": [f"official {stem}", "two"]}) + "\n")
  builder = _build(cs.CityscapesText, cs.CityscapesTextConfig(name="official", size=None),
                   tmp_path / "data", src)
  got = {**_read_split(builder, "train"), **_read_split(builder, "val")}
  assert set(got) == set(truth)
  for stem, ex in got.items():
    assert ex["captions"] == [f"official {stem}", "two"]
  # Both caption files at once is ambiguous; a duplicate line is an error naming both lines.
  with open(src / "caption_files" / "100_captions.jsonl", "a") as f:
    f.write(json.dumps({"file_name": "lindau_000000_000019_leftImg8bit.png", "text": ["x"]}) + "\n")
  _assert_failed_cleanly(cs.CityscapesText, cs.CityscapesTextConfig(name="dup", size=None),
                         tmp_path / "data2", src, "100_captions.jsonl:6", "listed again", "line 5")
  (src / "captions.jsonl").write_text("")
  _assert_failed_cleanly(cs.CityscapesText, cs.CityscapesTextConfig(name="both", size=None),
                         tmp_path / "data3", src, "both exist")


@pytest.mark.parametrize("case", ["bad_label_id", "size_mismatch", "no_label", "jsonl_missing",
                                  "no_val"])
def test_cityscapes_bad_input(tmp_path, case):
  src = tmp_path / "src"
  _write_cityscapes(str(src), jsonl=case == "jsonl_missing")
  label = src / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png"
  image = src / "leftImg8bit" / "train" / "bochum" / "bochum_000000_000313_leftImg8bit.png"
  if case == "bad_label_id":
    ids = np.asarray(Image.open(label)).copy()
    ids[3, 3] = 40
    _save(str(label), ids)
    expected = [label, "[40]"]
  elif case == "size_mismatch":
    _save(str(label), np.zeros((CS_H, CS_W // 2), np.uint8))
    expected = [image, label, "must match"]
  elif case == "no_label":
    os.remove(label)
    expected = [image, "no layout"]
  elif case == "jsonl_missing":
    lines = (src / "captions.jsonl").read_text().splitlines()
    (src / "captions.jsonl").write_text("\n".join(lines[1:]) + "\n")
    expected = ["aachen_000000_000019_leftImg8bit.png", "without captions"]
  elif case == "no_val":
    for city in os.listdir(src / "leftImg8bit" / "val"):
      for name in os.listdir(src / "leftImg8bit" / "val" / city):
        os.remove(src / "leftImg8bit" / "val" / city / name)
    expected = [src / "leftImg8bit" / "val", "no {city}/*_leftImg8bit.png"]
  _assert_failed_cleanly(cs.CityscapesText, cs.CityscapesTextConfig(name=case, size=None),
                         tmp_path / "data", src, *expected)
