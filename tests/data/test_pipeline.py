"""Input pipeline on a small prepared layout_folder dataset."""

import io
import itertools
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gcd_jax.data import fake_data, pipeline
from tfds_builders.layout_folder import layout_folder as lf

tfds.disable_progress_bar()

N = 21  # Odd, so two processes cannot split it evenly.
SRC_SIZE = (12, 16)  # (H, W) stored.
OUT_SIZE = (6, 8)  # Rectangular output, 2x smaller.
K = 5
NAME = "layout_folder/pipe"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  src = str(tmp_path_factory.mktemp("pipe_src"))
  data_dir = str(tmp_path_factory.mktemp("pipe_data"))
  fake_data.write_layout_folder(src, N, SRC_SIZE, num_classes=K, num_captions=3,
                                flip_pairs=((1, 2),))
  builder = lf.LayoutFolder(config=lf.LayoutFolder.make_config("pipe", test_fraction=0.0),
                            data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=src))
  return src, data_dir


def _reference(src, example_id, size=OUT_SIZE):
  """Unflipped (image [H, W, 3] uint8, layout [H, W]) straight from the files with PIL."""
  h, w = size
  image = Image.open(os.path.join(src, "images", example_id + ".png")).convert("RGB")
  layout = Image.open(os.path.join(src, "layouts", example_id + ".png"))
  return (np.asarray(image.resize((w, h), Image.LANCZOS)),
          np.asarray(layout.resize((w, h), Image.NEAREST)))


def _to_uint8(image):
  return np.round((image + 1) * 127.5).astype(np.uint8)


def _train(data_dir, **kwargs):
  args = dict(image_size=OUT_SIZE, batch_size=4, data_dir=data_dir, num_threads=0)
  args.update(kwargs)
  return pipeline.make_train_iterator(NAME, **args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _examples(batches):
  """Flattens batches into a list of per-example dicts."""
  return [{k: batch[k][i] for k in batch} for batch in batches for i in range(len(batch["id"]))]


def test_batch_format(prepared):
  _, data_dir = prepared
  batch = next(_train(data_dir))
  assert batch["image"].shape == (4, *OUT_SIZE, 3) and batch["image"].dtype == np.float32
  assert batch["layout"].shape == (4, *OUT_SIZE) and batch["layout"].dtype == np.int32
  assert batch["caption"].shape == (4,) and all(isinstance(c, str) for c in batch["caption"])
  assert all(isinstance(i, str) for i in batch["id"])
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert 0 <= batch["layout"].min() and batch["layout"].max() < K


def test_seeded_determinism(prepared):
  _, data_dir = prepared
  _assert_batches_equal(_take(_train(data_dir, seed=7), 6), _take(_train(data_dir, seed=7), 6))
  ids_7 = [b["id"].tolist() for b in _take(_train(data_dir, seed=7), 5)]
  ids_8 = [b["id"].tolist() for b in _take(_train(data_dir, seed=8), 5)]
  assert ids_7 != ids_8


def test_threads_do_not_change_batches(prepared):
  _, data_dir = prepared
  _assert_batches_equal(_take(_train(data_dir, num_threads=0), 6),
                        _take(_train(data_dir, num_threads=3), 6))


def test_two_processes_read_their_rows_of_the_one_process_batches(prepared):
  _, data_dir = prepared
  one = _take(_train(data_dir, batch_size=4), 2 * N // 4 + 3)  # over two epochs
  two = [_take(_train(data_dir, batch_size=2, process_index=index, process_count=2), len(one))
         for index in range(2)]
  for step, batch in enumerate(one):
    for key, value in batch.items():  # rows 0-1 from process 0, rows 2-3 from process 1
      np.testing.assert_array_equal(np.concatenate([two[0][step][key], two[1][step][key]]), value)
  # Each process reads only its half: no example of one step is read by both.
  for step in range(len(one)):
    assert not set(two[0][step]["id"]) & set(two[1][step]["id"])
  # Evaluation shards cover every example exactly once.
  eval_ids = []
  for index in range(2):
    for b in pipeline.make_eval_iterator(NAME, split="train", image_size=OUT_SIZE, batch_size=4,
                                         data_dir=data_dir, num_threads=0,
                                         process_index=index, process_count=2):
      eval_ids.extend(b["id"])
  assert sorted(eval_ids) == [f"{i:05d}" for i in range(N)]


def test_random_choices_independent_of_sharding_and_batching(prepared):
  _, data_dir = prepared
  def by_id(**kwargs):
    batches = list(_train(data_dir, num_epochs=1, drop_remainder=False, **kwargs))
    return {ex["id"]: ex for ex in _examples(batches)}
  one = by_id(batch_size=4)
  assert len(one) == N
  for other in (by_id(batch_size=3), by_id(batch_size=2, process_index=1, process_count=2)):
    for example_id, ex in other.items():
      assert ex["caption"] == one[example_id]["caption"]
      np.testing.assert_array_equal(ex["image"], one[example_id]["image"])
      np.testing.assert_array_equal(ex["layout"], one[example_id]["layout"])


def test_flip_is_joint_and_swaps_classes(prepared):
  src, data_dir = prepared
  table = np.arange(256)
  table[1], table[2] = 2, 1
  flipped = unflipped = 0
  for ex in _examples(_take(_train(data_dir, batch_size=7), 9)):  # 3 epochs.
    ref_image, ref_layout = _reference(src, ex["id"])
    image = _to_uint8(ex["image"])
    assert not np.array_equal(ref_image, ref_image[:, ::-1])  # Flips are visible.
    if np.array_equal(image, ref_image):
      np.testing.assert_array_equal(ex["layout"], ref_layout)
      unflipped += 1
    else:
      np.testing.assert_array_equal(image, ref_image[:, ::-1])
      np.testing.assert_array_equal(ex["layout"], table[ref_layout[:, ::-1]])
      flipped += 1
  assert flipped > 10 and unflipped > 10
  # A crafted check of the swap itself: class 1 left of class 2 becomes 1 right of 2.
  classes = pipeline.layout_classes(NAME, data_dir)
  row = np.array([[0, 1, 1, 2, 3]], np.uint8)
  assert classes.flip_table()[row[:, ::-1]].tolist() == [[3, 1, 2, 2, 0]]


def test_flip_off(prepared):
  src, data_dir = prepared
  for ex in _examples(_take(_train(data_dir, flip=False), 5)):
    ref_image, ref_layout = _reference(src, ex["id"])
    np.testing.assert_array_equal(_to_uint8(ex["image"]), ref_image)
    np.testing.assert_array_equal(ex["layout"], ref_layout)


def test_resize_matches_pil(prepared):
  src, data_dir = prepared
  for size in ((6, 8), (5, 11), SRC_SIZE, (24, 16)):
    batches = list(pipeline.make_eval_iterator(NAME, split="train", image_size=size,
                                               batch_size=8, data_dir=data_dir, num_threads=0))
    for ex in _examples(batches):
      ref_image, ref_layout = _reference(src, ex["id"], size)
      # Lanczos in PIL, then [0, 255] -> [-1, 1]: back to uint8 exactly.
      np.testing.assert_array_equal(_to_uint8(ex["image"]), ref_image)
      np.testing.assert_allclose(ex["image"], ref_image / 127.5 - 1, atol=1e-6)
      np.testing.assert_array_equal(ex["layout"], ref_layout)
      assert set(np.unique(ex["layout"])) <= set(range(K))


def test_resume_from_json_state(prepared):
  _, data_dir = prepared
  iterator = _train(data_dir, seed=3)
  _take(iterator, 4)  # n batches (crosses an epoch boundary with m below).
  state = pipeline.iterator_state_to_json(iterator)
  expected = _take(iterator, 5)  # m more.
  fresh = _train(data_dir, seed=3)
  pipeline.restore_iterator_state(fresh, state)
  _assert_batches_equal(_take(fresh, 5), expected)


def test_caption_choice_seeded(prepared):
  _, data_dir = prepared
  def captions(seed):
    batches = list(_train(data_dir, seed=seed, num_epochs=1, drop_remainder=False))
    return {ex["id"]: ex["caption"] for ex in _examples(batches)}
  a, b = captions(1), captions(1)
  assert a == b
  for example_id, caption in a.items():
    assert caption.startswith(f"example {int(example_id)} caption ")
  assert len({c[-1] for c in a.values()}) == 3  # All three captions get chosen.
  assert captions(2) != a


def test_one_epoch_covers_every_example_once(prepared):
  _, data_dir = prepared
  batches = list(_train(data_dir, num_epochs=1, batch_size=4, drop_remainder=False))
  ids = [i for b in batches for i in b["id"]]
  assert sorted(ids) == [f"{i:05d}" for i in range(N)]
  assert [len(b["id"]) for b in batches] == [4] * 5 + [1]
  # drop_remainder (the default) keeps every batch full.
  batches = list(_train(data_dir, num_epochs=1, batch_size=4))
  assert [len(b["id"]) for b in batches] == [4] * 5


def test_epochs_are_reshuffled(prepared):
  _, data_dir = prepared
  ids = [i for b in _take(_train(data_dir, batch_size=N), 2) for i in b["id"]]
  assert sorted(ids[:N]) == sorted(ids[N:]) and ids[:N] != ids[N:]


def test_split_alias_and_classes(prepared):
  _, data_dir = prepared
  source, builder = pipeline.data_source(NAME, "train_50", data_dir)
  assert len(source) == round(N / 2)
  classes = pipeline.layout_classes(builder)
  assert classes.num_classes == K and classes.flip_pairs == ((1, 2),)


def test_unprepared_dataset_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="gcd_jax.prepare"):
    pipeline.make_train_iterator("layout_folder/nothing_here", image_size=(8, 8),
                                 batch_size=2, data_dir=str(tmp_path))


def test_a_cloud_data_dir_is_refused_with_the_reason():
  # array_record reads local files only (no cloud-storage reader): say so, not "No such file".
  with pytest.raises(ValueError, match="data_dir=gs://bucket/tfds: .*local disk"):
    pipeline.load_builder("synthetic_scenes/32_mini", "gs://bucket/tfds")
  from gcd_jax import prepare  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="gcsfuse"):
    prepare.prepare("synthetic_scenes", "32_mini", data_dir="gs://bucket/tfds")


def test_random_bits_are_fair():
  bits = pipeline.example_random_bits(0, np.arange(20000))
  assert abs((bits & np.uint64(1)).mean() - 0.5) < 0.02
  assert abs(((bits >> np.uint64(1)) % np.uint64(3) == 0).mean() - 1 / 3) < 0.02
  assert not np.array_equal(bits, pipeline.example_random_bits(1, np.arange(20000)))
  assert len(set(itertools.islice(bits.tolist(), 1000))) == 1000


def test_jpeg_draft_decode_close_to_full_decode():
  # layout_folder keeps JPEG files as they are; the pipeline decodes them in
  # draft mode at >= 2x the output size before the Lanczos step.
  yy, xx = np.mgrid[:256, :256].astype(np.float32)
  smooth = np.stack([128 + 100 * np.sin(xx / 23), 128 + 100 * np.cos(yy / 31),
                     (xx + yy) / 4], axis=-1).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(smooth).save(buf, format="JPEG", quality=95)
  full = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((32, 16), Image.LANCZOS)
  got = pipeline.decode_image(buf.getvalue(), (16, 32))
  assert got.shape == (16, 32, 3)
  assert np.abs(got.astype(int) - np.asarray(full).astype(int)).mean() < 1.5


# --- Flips and captions ------------------------------------------------------------


def test_flip_caption_swaps_side_words_keeping_case():
  table = pipeline.word_swap_table([("left", "right")])
  cases = {
      "A ball on the left.": "A ball on the right.",
      "Left: a box; right: a ring.": "Right: a box; left: a ring.",
      "A box in the lower left corner and a bar at the top right.":
          "A box in the lower right corner and a bar at the top left.",
      "LEFT and right": "RIGHT and left",
      "A leftover bright ring.": "A leftover bright ring.",  # whole words only
  }
  for text, want in cases.items():
    assert pipeline.flip_caption(text, table) == want
    assert pipeline.flip_caption(want, table) == text  # an involution
  assert pipeline.flip_caption("on the left", {}) == "on the left"


def _side_worded(tmp_path_factory, name, flip_words):
  src = str(tmp_path_factory.mktemp(f"{name}_src"))
  data_dir = str(tmp_path_factory.mktemp(f"{name}_data"))
  fake_data.write_layout_folder(
      src, 12, SRC_SIZE, num_classes=K, num_captions=1, flip_words=flip_words,
      captions_fn=lambda i, j: f"example {i}, the cat on the left")
  builder = lf.LayoutFolder(config=lf.LayoutFolder.make_config(name, test_fraction=0.0),
                            data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=src))
  return src, data_dir


def _flipped_share(src, data_dir, name):
  it = pipeline.make_train_iterator(f"layout_folder/{name}", image_size=SRC_SIZE, batch_size=4,
                                    data_dir=data_dir, num_threads=0)
  flips, captions_seen = 0, []
  for batch in _take(it, 12):
    for image, ex_id, caption in zip(batch["image"], batch["id"], batch["caption"]):
      ref, _ = _reference(src, ex_id, SRC_SIZE)
      mirrored = not np.array_equal(_to_uint8(image), ref)
      flips += mirrored
      assert caption.endswith("on the right" if mirrored else "on the left"), (mirrored, caption)
      captions_seen.append(caption)
  return flips / 48


def test_side_words_without_declared_swap_train_unflipped(tmp_path_factory, caplog):
  src, data_dir = _side_worded(tmp_path_factory, "sided", None)
  with caplog.at_level("WARNING"):
    assert _flipped_share(src, data_dir, "sided") == 0.0
  assert "declares no flip_words" in caplog.text and "the cat on the left" in caplog.text


def test_declared_flip_words_flip_with_true_captions(tmp_path_factory):
  src, data_dir = _side_worded(tmp_path_factory, "swapped", [["left", "right"]])
  share = _flipped_share(src, data_dir, "swapped")
  assert 0.2 < share < 0.8, share


def test_classes_json_flip_words_are_checked(tmp_path):
  import json
  path = tmp_path / "classes.json"
  path.write_text(json.dumps({"names": ["a", "b"], "flip_words": [["left"]]}))
  with pytest.raises(lf.BuildError, match="flip_words"):
    lf.read_classes_json(str(path))
  path.write_text(json.dumps({"names": ["a", "b"], "flip_words": [["Left", "right"]]}))
  assert lf.read_classes_json(str(path)).flip_words == (("left", "right"),)


def test_flip_policy_needs_every_side_word_swapped():
  from gcd_jax.data.features import LayoutClasses
  source = [{"captions": [b"a cat"]}, {"captions": [b"the leftmost cat", b"a dog on the right"]}]
  plain = LayoutClasses(names=("a", "b"), colors=((0, 0, 0), (1, 1, 1)))
  lr = LayoutClasses(names=("a", "b"), colors=((0, 0, 0), (1, 1, 1)), flip_words=(("left", "right"),))
  full = LayoutClasses(names=("a", "b"), colors=((0, 0, 0), (1, 1, 1)),
                       flip_words=(("left", "right"), ("leftmost", "rightmost")))
  assert pipeline.flip_policy(source[:1], plain) == (True, "")  # no side words: flips are safe
  ok, why = pipeline.flip_policy(source, plain)
  assert not ok and "declares no flip_words" in why
  ok, why = pipeline.flip_policy(source, lr)
  assert not ok and "do not swap ['leftmost']" in why
  assert pipeline.flip_policy(source, full) == (True, "")


def test_captioned_split_marks_exactly_its_examples(prepared):
  _, data_dir = prepared
  batches = list(_train(data_dir, num_epochs=2, batch_size=4, drop_remainder=False,
                        captioned_split="train_25"))
  source, _ = pipeline.data_source(NAME, "train_25", data_dir)
  prefix = {pipeline._to_str(source[i]["id"]) for i in range(len(source))}
  examples = _examples(batches)
  assert len(examples) == 2 * N and 0 < len(prefix) < N
  # Every epoch: exactly the examples of train_25 are captioned, whatever the shuffle.
  assert all(bool(e["captioned"]) == (e["id"] in prefix) for e in examples)
  assert "captioned" not in next(_train(data_dir))
  with pytest.raises(ValueError, match=r"captioned_split 'train\[50%:\]'.*not a prefix of split 'train'"):
    _train(data_dir, captioned_split="train[50%:]")
