"""synthetic_scenes: oracle, fact checker, determinism, subsets and the TFDS build."""

import dataclasses
import hashlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gcd_jax.data import captions
from gcd_jax.data import synthetic_scenes as ss
from gcd_jax.data.captions import Fact
from gcd_jax.data.features import LayoutClasses
from tfds_builders.synthetic_scenes import CLASSES, SyntheticScenes, SyntheticScenesConfig

K = ss.NUM_CLASSES
MINI = {"train": 200, "test": 100}


@pytest.fixture(scope="session")
def mini(scenes_data_dir):
  """{split: tfds.data_source} of the 32_mini build (conftest), read as array_record."""
  return {split: tfds.data_source("synthetic_scenes/32_mini", split=split,
                                  data_dir=scenes_data_dir)
          for split in MINI}


def _records(source):
  return [source[i] for i in range(len(source))]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


# --- The TFDS build -------------------------------------------------------------


def test_builder_writes_every_split_in_the_common_format(mini):
  assert {s: len(src) for s, src in mini.items()} == MINI
  rec = mini["test"][7]
  assert rec["image"].shape == (32, 32, 3) and rec["image"].dtype == np.uint8
  assert rec["layout"].shape == (32, 32, 1) and rec["layout"].dtype == np.uint8
  assert 1 <= len(rec["captions"]) <= 5
  # A record is exactly the example regenerated alone from its id.
  split, index = _text(rec["id"]).rsplit("_", 1)
  ex = ss.generate_example(split, int(index), 32)
  np.testing.assert_array_equal(rec["image"], ex["image"])
  np.testing.assert_array_equal(rec["layout"], ex["layout"])
  assert [_text(c) for c in rec["captions"]] == ex["captions"]


def test_configs(tmp_path):
  configs = {name: c.resolution for name, c in SyntheticScenes.builder_configs.items()}
  assert configs == {"32": 32, "64": 64, "32_8k": 32, "32_mini": 32}
  # The low-data base set: scenes 0..7999 of 32 and the very same test scenes.
  small, full = SyntheticScenes.builder_configs["32_8k"], SyntheticScenes.builder_configs["32"]
  assert (small.num_train, small.num_test, small.seed) == (8000, full.num_test, full.seed)
  empty = SyntheticScenesConfig(name="empty", num_train=10, num_test=0)
  with pytest.raises(ValueError, match="num_test"):
    SyntheticScenes(data_dir=str(tmp_path), config=empty,
                    file_format="array_record").download_and_prepare()


def test_layout_classes_in_metadata(scenes_data_dir):
  builder = tfds.builder("synthetic_scenes/32_mini", data_dir=scenes_data_dir)
  assert LayoutClasses.from_json(builder.info.metadata["layout_classes"]) == CLASSES
  assert CLASSES is ss.CLASSES and CLASSES.num_classes == K
  assert CLASSES.names[1:] == captions.OBJECT_NAMES


def test_layouts_are_class_ids(mini):
  for split in ("train", "test"):
    layouts = np.stack([r["layout"] for r in _records(mini[split])])
    assert layouts.max() < K
    # Every object class appears in a couple of hundred scenes.
    if split == "train":
      assert set(np.unique(layouts)) == set(range(K))


def test_subsets_are_nested_prefixes_of_one_seeded_permutation(mini, scenes_data_dir):
  builder = tfds.builder("synthetic_scenes/32_mini", data_dir=scenes_data_dir)
  aliases = builder.info.metadata["split_aliases"]
  assert aliases == {"train_25": "train[:25%]", "train_50": "train[:50%]",
                     "train_100": "train"}
  ids = {name: [_text(r["id"]) for r in _records(
      tfds.data_source("synthetic_scenes/32_mini", split=split, data_dir=scenes_data_dir))]
         for name, split in aliases.items()}
  order = ss.train_order(200)
  assert sorted(order) == list(range(200)) and not np.array_equal(order, np.arange(200))
  assert ids["train_100"] == [_text(r["id"]) for r in _records(mini["train"])]
  assert ids["train_100"] == [ss.example_id("train", i) for i in order]
  assert ids["train_50"] == ids["train_100"][:100]
  assert ids["train_25"] == ids["train_100"][:50]


def test_splits_are_disjoint(mini):
  def digests(split):
    return {hashlib.sha1(r["image"].tobytes()).hexdigest() for r in _records(mini[split])}
  train, test = digests("train"), digests("test")
  assert len(train) == 200 and len(test) == 100
  assert not train & test


# --- The oracle -----------------------------------------------------------------


def test_oracle_recovers_test_layouts(mini):
  recs = _records(mini["test"])
  images = np.stack([r["image"] for r in recs])
  layouts = np.stack([r["layout"][..., 0] for r in recs])
  pred = ss.oracle_segment(images)   # batched [B, H, W, 3]
  accuracy = (pred == layouts).mean()
  per_class = {CLASSES.names[c]: float((pred[layouts == c] == c).mean()) for c in range(K)}
  print(f"oracle pixel accuracy {accuracy:.5f}; per class "
        + ", ".join(f"{n} {a:.4f}" for n, a in per_class.items()))
  assert accuracy >= 0.99
  assert min(per_class.values()) >= 0.97
  np.testing.assert_array_equal(pred[3], ss.oracle_segment(images[3]))


def test_oracle_on_64x64():
  exs = [ss.generate_example("test", i, 64) for i in range(20)]
  pred = ss.oracle_segment(np.stack([e["image"] for e in exs]))
  assert (pred == np.stack([e["layout"][..., 0] for e in exs])).mean() >= 0.99


def test_oracle_on_hand_made_pixels():
  def hsv(h, s, v):
    return tuple(int(round(255 * v * (1 - s + s * c))) for c in ss._pure_hue(h))  # pylint: disable=protected-access
  pixels, expected = [], []
  for c, hue in enumerate(ss.HUES, start=1):
    for variant, (s, v) in (("light", (0.45, 0.95)), ("dark", (0.9, 0.55))):
      for dh in (-6, 0, 6):
        pixels.append(hsv(hue + dh, s, v))
        expected.append((c, variant == "light"))
  for grey in (0, 90, 200, 255):
    pixels.append((grey, grey, min(255, grey + 20)))
    expected.append((0, None))
  image = np.asarray(pixels, np.uint8)[None]
  got = ss.oracle_segment(image)[0]
  light = ss.oracle_variant(image)[0]
  assert got.tolist() == [c for c, _ in expected]
  assert [bool(l) for l, (_, v) in zip(light, expected) if v is not None] == [
      v for _, v in expected if v is not None]


def test_images_are_not_a_recolouring_of_the_layout():
  """Each object varies inside (texture, light, noise) and between objects."""
  inside_std, means = [], {c: [] for c in range(1, K)}
  for i in range(60):
    rng = np.random.default_rng([0, 1, i])
    scene = ss.sample_scene(rng)
    rendered = ss.render_scene(scene, 32, rng)
    for j, obj in enumerate(scene.objects):
      pixels = rendered.image[rendered.owner == j].astype(np.float64)
      if len(pixels) >= 10:
        inside_std.append(pixels.std(0).mean())
        means[obj.class_id].append(pixels.mean(0))
  assert np.median(inside_std) > 5.0
  for c, m in means.items():
    assert len(m) >= 3 and np.std(m, axis=0).mean() > 10.0, CLASSES.names[c]


# --- Facts and the checker ----------------------------------------------------------


def test_test_captions_pass_the_checker_and_shuffled_ones_do_not(mini):
  recs = _records(mini["test"])

  def score(caption_of):
    ok = []
    for i, r in enumerate(recs):
      for text in caption_of(i):
        ok += ss.check_facts(captions.caption_facts(_text(text)), r["layout"], r["image"])
    return np.mean(ok)

  own = score(lambda i: recs[i]["captions"])
  shuffled = score(lambda i: recs[(i + 1) % len(recs)]["captions"])
  print(f"check_facts: own captions {own:.4f}, shuffled captions {shuffled:.4f}")
  assert own >= 0.99
  assert shuffled <= 0.3


def test_changing_any_stated_attribute_breaks_the_fact(mini):
  flip = {"small": "large", "large": "small", "dark": "light", "light": "dark",
          "left": "right", "right": "left", "top": "bottom", "bottom": "top"}
  checked = 0
  for r in _records(mini["test"])[:40]:
    for text in r["captions"]:
      assert len(_text(text).split()) <= ss.MAX_CAPTION_WORDS
      for fact in captions.caption_facts(_text(text)):
        wrong = []
        if fact.count is not None:
          wrong.append(dataclasses.replace(fact, count=fact.count + 1))
        for field in ("size", "variant", "position"):
          value = getattr(fact, field)
          if value is not None:
            wrong.append(dataclasses.replace(
                fact, **{field: " ".join(flip[w] for w in value.split())}))
        assert not any(ss.check_facts(wrong, r["layout"], r["image"])), (text, wrong)
        checked += len(wrong)
  assert checked > 100


def test_layout_facts_on_a_hand_made_layout():
  """Counts, sizes, positions and variants against values worked out by hand."""
  layout = np.zeros((32, 32), np.uint8)
  image = np.full((32, 32, 3), 120, np.uint8)
  layout[2:6, 2:6] = 1        # two small balls, top left (centroids (4, 4), (4, 12))
  layout[10:14, 2:6] = 1
  image[layout == 1] = (150, 20, 20)                       # dark red
  layout[16:30, 18:30] = 2    # one large box, bottom right (168 px = 16%)
  image[layout == 2] = (250, 235, 140)                     # light yellow
  layout[0, 31] = 3           # a 1-pixel sliver: below the presence threshold
  facts = ss.layout_facts(layout, image)
  assert facts == {1: Fact(1, count=2, position="top left", size="small", variant="dark"),
                   2: Fact(2, count=1, position="bottom right", size="large",
                           variant="light")}
  stated = [Fact(1, count=2, position="left"), Fact(1, count=1), Fact(2, size="small"),
            Fact(2, position="bottom", variant="light"), Fact(3), Fact(4, count=1)]
  assert ss.check_facts(stated, layout[..., None], image) == [
      True, False, False, True, False, False]
  with pytest.raises(ValueError, match="variant"):
    ss.check_facts([Fact(2, variant="light")], layout)


def test_counts_are_stated_only_for_separate_instances():
  for i in range(150):
    rng = np.random.default_rng([0, 0, i])
    scene = ss.sample_scene(rng)
    rendered = ss.render_scene(scene, 32, rng)
    for fact in ss.scene_facts(scene, rendered):
      if fact.count is not None:
        visible = {j for j, o in enumerate(scene.objects)
                   if o.class_id == fact.class_id and (rendered.owner == j).any()}
        assert fact.count == len(visible)


# --- Determinism ----------------------------------------------------------------


def test_examples_are_pure_functions_of_seed_split_and_index():
  a = ss.generate_example("train", 5, 32)
  for i in range(4):   # Other examples in between change nothing.
    ss.generate_example("train", i, 32)
  b = ss.generate_example("train", 5, 32)
  assert a["image"].tobytes() == b["image"].tobytes()
  assert a["layout"].tobytes() == b["layout"].tobytes()
  assert a["captions"] == b["captions"] and a["id"] == b["id"] == "train_000005"
  assert ss.generate_example("train", 6, 32)["image"].tobytes() != a["image"].tobytes()
  assert ss.generate_example("test", 5, 32)["image"].tobytes() != a["image"].tobytes()
  assert ss.generate_example("train", 5, 32, seed=1)["image"].tobytes() != a["image"].tobytes()


def test_the_same_scene_at_every_resolution():
  small, large = ss.generate_example("test", 3, 32), ss.generate_example("test", 3, 64)
  # 2x2 blocks of the 64x64 layout mostly agree with the 32x32 layout.
  blocks = large["layout"][::2, ::2]
  assert (blocks == small["layout"]).mean() > 0.95


# --- Flips keep captions true ----------------------------------------------------


def test_training_flips_keep_every_caption_true(scenes_data_dir, mini):
  """>= 2000 examples as configs/shapes.py yields them: every caption is true of
  the example actually yielded, and about half of them are mirrored."""
  import importlib.util
  import pathlib

  from gcd_jax.data import pipeline

  spec = importlib.util.spec_from_file_location(
      "shapes", pathlib.Path(__file__).resolve().parents[2] / "configs" / "shapes.py")
  shapes = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(shapes)
  c = shapes.get_config()
  assert c.data.flip
  it = pipeline.make_train_iterator(
      "synthetic_scenes/32_mini", image_size=(c.data.height, c.data.width), batch_size=50,
      split=c.data.train_split, flip=c.data.flip, seed=c.seed, data_dir=scenes_data_dir,
      num_threads=0)
  originals = {_text(r["id"]): r["image"] for r in _records(tfds.data_source(
      "synthetic_scenes/32_mini", split="train", data_dir=scenes_data_dir))}
  n = flipped = sided = sided_flipped = 0
  false = []
  for _ in range(44):  # 2200 examples: 11 epochs of the 200 training scenes
    batch = next(it)
    images = np.round((batch["image"] + 1) * 127.5).astype(np.uint8)
    for image, layout, caption, ex_id in zip(images, batch["layout"], batch["caption"],
                                             batch["id"]):
      original = originals[ex_id]
      mirrored = not np.array_equal(image, original)
      assert np.array_equal(image, original[:, ::-1] if mirrored else original)
      facts = captions.caption_facts(caption)
      if not all(ss.check_facts(facts, layout, image)):
        false.append((ex_id, mirrored, caption))
      has_side = "left" in caption.lower() or "right" in caption.lower()
      n += 1
      flipped += mirrored
      sided += has_side
      sided_flipped += has_side and mirrored
  assert not false, false[:5]
  # p = 0.5, n = 2200: sd 0.011, so +-0.05 is over 4 sd.
  assert abs(flipped / n - 0.5) < 0.05, flipped / n
  # The test has teeth: many mirrored captions named a side.
  assert sided_flipped > 0.1 * n, (sided, sided_flipped)


def test_mirrored_captions_are_false_without_the_word_swap(mini):
  """The instrument: an unswapped caption of a mirrored scene fails the checker."""
  bad = total = 0
  for r in _records(mini["train"]):
    image, layout = r["image"], r["layout"][..., 0]
    for cap in r["captions"]:
      cap = _text(cap)
      if " left" in cap or " right" in cap:
        total += 1
        bad += not all(ss.check_facts(captions.caption_facts(cap), layout[:, ::-1],
                                      image[:, ::-1]))
  assert total > 50 and bad == total, (bad, total)
