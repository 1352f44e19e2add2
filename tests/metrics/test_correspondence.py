"""correspondence and segmenters: semantic recall, attribute accuracy, agreement, loading."""

import dataclasses
import textwrap

import numpy as np
import pytest

from gcd_jax.data import captions
from gcd_jax.data import synthetic_scenes as ss
from gcd_jax.data.captions import Fact
from gcd_jax.data.features import LayoutClasses
from gcd_jax.metrics import correspondence as co
from gcd_jax.metrics import layout_metrics
from gcd_jax.metrics import segmenters

STREET = LayoutClasses(
    names=("road", "building", "traffic light", "light", "traffic_sign", "person", "bus",
           "sky", "car", "l_eye", "unlabeled"),
    colors=((0, 0, 0),) * 11)
ROAD, BUILDING, TRAFFIC_LIGHT, LIGHT, TRAFFIC_SIGN, PERSON, BUS, SKY, CAR, L_EYE, _ = range(11)


# --- Classes named by a caption ---------------------------------------------------------


@pytest.mark.parametrize("caption, want", [
    ("An image of an urban street view with Buildings, Roads and Cars.", {BUILDING, ROAD, CAR}),
    ("Traffic lights.", {TRAFFIC_LIGHT}),               # the longer name wins over "light"
    ("a light and a TRAFFIC   LIGHT", {LIGHT, TRAFFIC_LIGHT}),
    ("traffic_light", {TRAFFIC_LIGHT}),
    ("Traffic signs and a traffic sign", {TRAFFIC_SIGN}),   # underscore in the name
    ("People, Buses and Skies", {PERSON, BUS, SKY}),      # irregular / es / ies plurals
    ("persons", {PERSON}),
    ("SKY", {SKY}),
    ("scar cartoon busy roadster skyline", set()),         # whole words only
    ("a car's light", {CAR, LIGHT}),
    ("the l eye", {L_EYE}),
    ("", set()),
])
def test_named_classes_by_name(caption, want):
  assert co.named_classes_by_name(caption, STREET) == want


def test_named_classes_with_synonyms():
  syn = {"person": ["pedestrian"], CAR: ["automobile", "motor car"]}
  got = co.named_classes_by_name("Two pedestrians, a motor car and automobiles.", STREET, syn)
  assert got == {PERSON, CAR}
  assert co.named_classes_by_name("a pedestrian", STREET) == set()
  with pytest.raises(ValueError, match="not a class name"):
    co.named_classes_by_name("x", STREET, {"walker": ["pedestrian"]})
  with pytest.raises(ValueError, match="names two classes"):
    co.named_classes_by_name("x", STREET, {"car": ["bus"]})
  with pytest.raises(ValueError, match="class id 99"):
    co.named_classes_by_name("x", STREET, {99: ["thing"]})
  faces = LayoutClasses(names=("glass", "glasses"), colors=((0, 0, 0),) * 2)
  assert co.named_classes_by_name("glasses and a glass", faces) == {0, 1}
  assert co.named_classes_by_name("glasses", faces) == {1}


def test_scenes_named_classes_parse_the_caption():
  assert co.scenes_named_classes("Two large dark red balls on the left and a tiny box.") == {1, 2}
  assert co.scenes_named_classes("A plain background.") == set()


# --- Semantic recall --------------------------------------------------------------------


def _layout(pixels_of: dict[int, int], side: int = 8) -> np.ndarray:
  """A side x side layout with the given number of pixels of each class, background 0."""
  flat = np.zeros(side * side, np.int32)
  start = 0
  for c, n in pixels_of.items():
    flat[start:start + n] = c
    start += n
  return flat.reshape(side, side)


def test_semantic_recall_on_crafted_layouts():
  # 8x8 = 64 pixels; a threshold of 0.125 needs 8 pixels.
  layouts = np.stack([
      _layout({1: 8, 2: 7}),     # names {1, 2}: 1 at the threshold, 2 one pixel short -> 1/2
      _layout({1: 40}),          # names {1}                                         -> 1
      _layout({1: 8}),           # names nothing: skipped
      _layout({2: 9}),           # names {1, 3}: neither                              -> 0
      _layout({3: 64}),          # names {3, 3}: a class counts once                  -> 1
  ])
  named = {"a": {1, 2}, "b": {1}, "c": set(), "d": {1, 3}, "e": [3, 3]}
  caps = list("abcde")
  per = co.per_sample_recall(caps, layouts, named.get, 0.125)
  np.testing.assert_array_equal(per, [0.5, 1.0, np.nan, 0.0, 1.0])
  assert co.semantic_recall(caps, layouts, named.get, 0.125) == pytest.approx(2.5 / 4)
  # Threshold 0: present with a single pixel, absent with none.
  assert co.per_sample_recall(["a"], _layout({1: 1})[None], named.get, 0.0)[0] == 0.5
  # One threshold per class.
  per_class = [0.0, 0.0, 7 / 64, 1.0]
  assert co.per_sample_recall(["a"], layouts[:1], named.get, per_class)[0] == 1.0
  # [N, H, W, 1] layouts are fine; every sample skipped gives NaN.
  assert np.isnan(co.semantic_recall(["c"], layouts[:1, ..., None], named.get, 0.1))
  with pytest.raises(ValueError, match="one per caption"):
    co.semantic_recall(["a", "b"], layouts[:1], named.get, 0.1)


def test_semantic_recall_synthetic_uses_the_datasets_presence_threshold():
  # MIN_AREA_FRAC 0.004 of 32x32 = 4.1 pixels: a 2x3 block is present, a 2x2 one is not.
  caption = "A ball and a box."
  layout = np.zeros((32, 32), np.int32)
  layout[:2, :3] = 1
  layout[10:12, 10:13] = 2
  short = layout.copy()
  short[10:12, 12] = 0  # the box: 2x2 = 4 pixels
  present = co.semantic_recall_synthetic([caption], layout[None])
  assert (present, co.semantic_recall_synthetic([caption], short[None])) == (1.0, 0.5)


def test_semantic_recall_by_name():
  caps = ["An image of an urban street view with Roads, Cars and Sky.", "Nothing named."]
  layouts = np.stack([_layout({ROAD: 30, CAR: 1}), _layout({})])
  assert co.semantic_recall_by_name(caps, layouts, STREET) == pytest.approx(2 / 3)
  assert co.semantic_recall_by_name(caps, layouts, STREET, area_threshold=0.1) == pytest.approx(1 / 3)


# --- Attribute accuracy -----------------------------------------------------------------


def _example_with_a_full_fact():
  """A test example and a measured fact of it stating count, position, size and variant."""
  for i in range(100):
    ex = ss.generate_example("test", i, 32)
    for fact in ss.layout_facts(ex["layout"], ex["image"]).values():
      if fact.count == 1 and None not in (fact.position, fact.size, fact.variant):
        return ex, fact
  raise AssertionError("no example with a fully measured fact")


def test_attribute_accuracy_on_crafted_captions():
  ex, fact = _example_with_a_full_fact()
  flip = {"small": "large", "large": "small", "left": "right", "right": "left",
          "top": "bottom", "bottom": "top"}
  absent = next(c for c in range(1, ss.NUM_CLASSES) if not np.any(ex["layout"] == c))
  rng = np.random.default_rng(0)
  stated = [
      [fact],                                                       # all hold
      [dataclasses.replace(fact, variant=None,
                           position=" ".join(flip[w] for w in fact.position.split()))],
      [dataclasses.replace(fact, position=None, size=flip[fact.size])],
      [Fact(absent, count=1, size="small")],                        # nothing holds
  ]
  caps = [captions.random_caption(f, rng) for f in stated]
  assert [captions.caption_facts(c) for c in caps] == stated
  n = len(caps)
  got = co.attribute_accuracy(caps, np.stack([ex["layout"][..., 0]] * n), np.stack([ex["image"]] * n))
  # count: 3 of 4; position: 1 of 2; size: 2 of 4; variant: 2 of 2.
  assert got == pytest.approx({"all": 8 / 12, "count": 3 / 4, "position": 1 / 2,
                               "size": 2 / 4, "variant": 1.0})
  none = co.attribute_accuracy(["Some balls."], ex["layout"][None], ex["image"][None])
  assert all(np.isnan(v) for v in none.values())
  with pytest.raises(ValueError, match="uint8"):
    co.attribute_accuracy(caps[:1], ex["layout"][None], ex["image"][None].astype(np.float32))


# --- Image-layout agreement, the image-only baseline and segmenters ------------------------


def _examples(n=12):
  exs = [ss.generate_example("test", i, 32) for i in range(n)]
  return np.stack([e["image"] for e in exs]), np.stack([e["layout"][..., 0] for e in exs])


def test_image_layout_agreement_is_miou_against_the_segmentation():
  images, layouts = _examples()
  oracle = segmenters.OracleSegmenter()
  miou, _ = co.image_layout_agreement(images, layouts, oracle)
  assert miou >= 0.95
  wrong = np.roll(layouts, 1, axis=0)
  want = layout_metrics.miou(wrong, oracle(images), ss.NUM_CLASSES)
  got = co.image_layout_agreement(images, wrong, oracle)
  assert got[0] == want[0] and got[0] < 0.6
  np.testing.assert_array_equal(got[1], want[1])


def test_image_layout_agreement_ignores_pixels_ignored_in_either_layout():
  """Cityscapes-style ignore id that is a class ("unlabeled"): left out on both sides."""
  images = np.zeros((1, 2, 2, 3), np.uint8)

  class Fixed:
    num_classes = 3

    def __call__(self, images):
      return np.array([[[0, 1], [2, 1]]])

  layouts = np.array([[[0, 2], [1, 1]]])
  # (0, 0) and (1, 1) agree; the pixels with 2 on either side drop out.
  miou, per_class = co.image_layout_agreement(images, layouts, Fixed(), ignore_id=2)
  np.testing.assert_array_equal(per_class, [1.0, 1.0, np.nan])
  assert miou == 1.0
  # Counted, they are two errors: IoU 1, 1/3 and 0.
  assert co.image_layout_agreement(images, layouts, Fixed())[0] == pytest.approx(4 / 9)


def test_layout_for_image_only_is_the_checked_segmentation():
  images, layouts = _examples(4)
  got = co.layout_for_image_only(images, segmenters.OracleSegmenter())
  assert got.dtype == np.int32 and got.shape == layouts.shape
  np.testing.assert_array_equal(got, ss.oracle_segment(images))

  class Bad:
    num_classes = ss.NUM_CLASSES

    def __call__(self, images):
      return np.zeros(images.shape[:3] + (1,), np.int32)

  with pytest.raises(ValueError, match="shape"):
    co.layout_for_image_only(images, Bad())


_USER_MODULE = textwrap.dedent("""
    import numpy as np

    def segment(images):
      return (images[..., 0] > 127).astype(np.int64)

    def make():
      return segment

    class Model:
      num_classes = 2

      def __call__(self, images):
        return segment(images)

    def wrong_shape(images):
      return np.zeros(images.shape[:3] + (2,), np.int64)

    def scores(images):
      return np.zeros(images.shape[:3], np.float32)

    def too_many(images):
      return np.full(images.shape[:3], 7)

    NOT_CALLABLE = 3
""")


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  (tmp_path / "my_user_segmenter.py").write_text(_USER_MODULE)
  monkeypatch.syspath_prepend(str(tmp_path))
  return "my_user_segmenter"


def test_load_segmenter_functions_factories_and_classes(user_module):
  images = np.zeros((2, 4, 5, 3), np.uint8)
  images[:, :2, :, 0] = 200
  want = np.zeros((2, 4, 5), np.int32)
  want[:, :2] = 1
  for name, k in (("segment", 2), ("make", 2), ("Model", None)):
    seg = segmenters.load_segmenter(f"{user_module}:{name}", num_classes=k)
    assert isinstance(seg, segmenters.Segmenter) and seg.num_classes == 2
    out = seg(images)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, want)
  assert isinstance(segmenters.load_segmenter("oracle"), segmenters.OracleSegmenter)
  # Without num_classes the range is not checked, only the sign.
  assert segmenters.load_segmenter(f"{user_module}:too_many").num_classes is None


@pytest.mark.parametrize("spec, error, match", [
    ("no_colon_here", ValueError, "module.path:function_or_factory"),
    ("module:", ValueError, "module.path:function_or_factory"),
    ("surely_not_a_module_xyz:segment", ImportError, "cannot import module 'surely_not_a_module_xyz'"),
    ("{m}:missing", ImportError, "has no attribute 'missing'"),
    ("{m}:NOT_CALLABLE", TypeError, "not callable"),
])
def test_load_segmenter_errors_name_the_spec(user_module, spec, error, match):
  spec = spec.format(m=user_module)
  with pytest.raises(error, match=match) as e:
    segmenters.load_segmenter(spec)
  assert repr(spec) in str(e.value)


@pytest.mark.parametrize("name, match", [
    ("wrong_shape", r"shape \(2, 4, 5, 2\)"),
    ("scores", "dtype float32"),
    ("too_many", r"outside \[0, 2\)"),
])
def test_loaded_segmenters_check_their_output(user_module, name, match):
  seg = segmenters.load_segmenter(f"{user_module}:{name}", num_classes=2)
  with pytest.raises(ValueError, match=match) as e:
    seg(np.zeros((2, 4, 5, 3), np.uint8))
  assert f"{user_module}:{name}" in str(e.value)


def test_load_segmenter_checks_num_classes_and_images(user_module):
  with pytest.raises(ValueError, match="num_classes 2, but 5"):
    segmenters.load_segmenter(f"{user_module}:Model", num_classes=5)
  with pytest.raises(ValueError, match="has 8 classes, not 5"):
    segmenters.load_segmenter("oracle", num_classes=5)
  seg = segmenters.load_segmenter(f"{user_module}:segment")
  with pytest.raises(ValueError, match="uint8 images"):
    seg(np.zeros((2, 4, 5, 3), np.float32))


def test_presence_follows_the_captions_rule_and_speckle_does_not_count():
  caption = "A ball."
  speckle = np.zeros((32, 32), np.int32)
  speckle[::4, ::4] = 1  # 64 isolated pixels: 6 % of the image, no component of 5 pixels
  blob = np.zeros((32, 32), np.int32)
  blob[:2, :3] = 1  # one component of 6 pixels >= 0.4 % of 1024
  assert co.semantic_recall_synthetic([caption], speckle[None]) == 0.0
  assert co.semantic_recall_synthetic([caption], blob[None]) == 1.0
  # synthetic_scenes' captions use the same rule: its fact checker agrees.
  for layout in (speckle, blob):
    assert ss.check_fact_attributes([captions.caption_facts(caption)[0]], layout)[0]["present"] \
        == co.SYNTHETIC_PRESENCE.present(layout, 1)
  # Cityscapes: total area >= 1 % (its caption template), so 10 scattered pixels of 1024 are not.
  assert co.presence_rule("cityscapes_text/256x512") == co.CITYSCAPES_PRESENCE
  few = np.zeros((32, 32), np.int32)
  few.flat[::110] = 3  # 10 pixels < 10.24
  assert not co.CITYSCAPES_PRESENCE.present(few, 3)
  few.flat[::90] = 3  # now 12 or more pixels > 10.24
  assert co.CITYSCAPES_PRESENCE.present(few, 3)
  assert co.presence_rule("synthetic_scenes/32") == co.SYNTHETIC_PRESENCE
  assert co.presence_rule("layout_folder/mine") == co.DEFAULT_PRESENCE


def test_the_despeckled_presence_rule_agrees_with_the_captions_on_real_scenes():
  """The 2x2 opening changes almost no presence decision of the caption checker on
  real layouts (300 generated test scenes; thin rings are the exception), and makes
  the oracle's reading of noise show nothing."""
  captions_, layouts, images = [], [], []
  facts_total = facts_lost = 0
  for i in range(300):
    ex = ss.generate_example("test", i, 32)
    layout = ex["layout"][..., 0]
    for cap in ex["captions"]:
      facts = captions.caption_facts(cap)
      for fact, r in zip(facts, ss.check_fact_attributes(facts, layout, ex["image"])):
        assert r["present"], (i, cap)  # the captions' own rule
        facts_total += 1
        facts_lost += not co.SYNTHETIC_PRESENCE.present(layout, fact.class_id)
      captions_.append(cap)
      layouts.append(layout)
      images.append(ex["image"])
  # Measured over 1000 scenes: 3 of 3946 stated facts (thin rings) are lost.
  assert facts_lost <= 0.003 * facts_total, (facts_lost, facts_total)
  layouts, images = np.stack(layouts), np.stack(images)
  assert co.semantic_recall_synthetic(captions_, layouts) > 0.995
  # Uniform noise read by the oracle: same-hue clusters everywhere, yet nothing is present.
  noise = np.random.default_rng(0).integers(0, 256, images.shape, dtype=np.uint8)
  seen = ss.oracle_segment(noise)
  assert co.semantic_recall_synthetic(captions_, seen) < 0.05
  plain = co.semantic_recall(captions_, seen, co.scenes_named_classes,
                             presence=co.PresenceRule(ss.MIN_AREA_FRAC, connected=True))
  assert plain > 0.9  # without the opening, speckle would pass as objects
  assert co.attribute_accuracy(captions_, seen, noise, co.SYNTHETIC_PRESENCE)["all"] < 0.05
