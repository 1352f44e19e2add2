"""The caption grammar of synthetic_scenes: every template parses back to its facts."""

import dataclasses
import itertools

import numpy as np
import pytest

from gcd_jax.data import captions
from gcd_jax.data.captions import Fact


def _random_fact(rng, class_id=None) -> Fact:
  return Fact(
      class_id=int(rng.integers(1, 8)) if class_id is None else class_id,
      count=[None, 1, 2, 3, 4][rng.integers(5)],
      position=[None, *captions.POSITIONS][rng.integers(9)],
      size=[None, *captions.SIZES][rng.integers(3)],
      variant=[None, *captions.VARIANTS][rng.integers(3)])


def _round_trip(facts, phrases, frame):
  text = captions.compose_caption(phrases, facts, frame=frame)
  assert captions.caption_facts(text) == facts, text


def test_every_frame_class_noun_and_count_word():
  rng = np.random.default_rng(0)
  n = 0
  for frame in range(len(captions.FRAMES)):
    for class_id, nouns in captions.NOUNS.items():
      for noun in range(len(nouns)):
        for count, words in captions.COUNT_WORDS.items():
          for count_word in range(len(words)):
            fact = dataclasses.replace(_random_fact(rng, class_id), count=count)
            phrase = captions.object_phrase(
                fact, count_word=count_word, noun=noun,
                colour=bool(rng.integers(2)))
            _round_trip([fact], [phrase], frame)
            n += 1
  assert n == len(captions.FRAMES) * sum(map(len, captions.NOUNS.values())) * 8


def test_every_size_variant_position_colour_and_texture_word():
  rng = np.random.default_rng(1)
  sizes = [(None, 0)] + [(s, i) for s, ws in captions.SIZE_WORDS.items()
                         for i in range(len(ws))]
  variants = [(None, 0)] + [(v, i) for v, ws in captions.VARIANT_WORDS.items()
                            for i in range(len(ws))]
  positions = [(None, 0)] + [(p, i) for p, ws in captions.POSITION_PHRASES.items()
                             for i in range(len(ws))]
  for (size, sw), (variant, vw), (position, pw), colour, texture in itertools.product(
      sizes, variants, positions, (False, True), (False, True)):
    class_id = (int(rng.choice(list(captions.TEXTURE_WORDS))) if texture
                else int(rng.integers(1, 8)))
    fact = Fact(class_id, count=[None, 1, 2, 3, 4][rng.integers(5)],
                position=position, size=size, variant=variant)
    # A second mention after it checks that the position stops at "and".
    other = _random_fact(rng)
    phrases = [captions.object_phrase(fact, size_word=sw, variant_word=vw,
                                      position_phrase=pw, colour=colour,
                                      texture=texture),
               captions.object_phrase(other)]
    _round_trip([fact, other], phrases, int(rng.integers(len(captions.FRAMES))))


def test_random_captions_with_several_mentions():
  rng = np.random.default_rng(2)
  for _ in range(2000):
    k = int(rng.integers(1, 4))
    facts = [_random_fact(rng, int(c))
             for c in rng.choice(np.arange(1, 8), size=k, replace=False)]
    text = captions.random_caption(facts, rng)
    assert captions.caption_facts(text) == facts, text


@pytest.mark.parametrize("text,expected", [
    ("A picture of two large dark red balls on the left and a box.",
     [Fact(1, count=2, position="left", size="large", variant="dark"), Fact(2, count=1)]),
    ("There are some pale striped bars in the lower right corner, a single tiny "
     "wedge and four crosses at the top.",
     [Fact(5, position="bottom right", variant="light"), Fact(3, count=1, size="small"),
      Fact(6, count=4, position="top")]),
    ("A pair of deep pink rhombuses on a plain background.",
     [Fact(7, count=2, variant="dark")]),
    ("An image showing one hoop near the bottom.", [Fact(4, count=1, position="bottom")]),
    ("A scene with nothing nameable.", []),
])
def test_hand_written_captions(text, expected):
  assert captions.caption_facts(text) == expected


def test_grammar_words_are_unambiguous():
  tables = {
      "noun": {w for pairs in captions.NOUNS.values() for p in pairs for w in p},
      "colour": set(captions.COLOUR_WORDS.values()),
      "texture": set(captions.TEXTURE_WORDS.values()),
      "size": {w for ws in captions.SIZE_WORDS.values() for w in ws},
      "variant": {w for ws in captions.VARIANT_WORDS.values() for w in ws},
      "position": {"left", "right", "top", "upper", "bottom", "lower"},
  }
  for (a, wa), (b, wb) in itertools.combinations(tables.items(), 2):
    assert not wa & wb, f"{a} and {b} share {wa & wb}"
  frame_words = set(" ".join(captions.FRAMES).lower().replace(".", " ").split())
  for name, words in tables.items():
    assert not frame_words & words, f"frames use {name} words {frame_words & words}"
  assert set(captions.NOUNS) == set(captions.COLOUR_WORDS) == set(
      range(1, len(captions.OBJECT_NAMES) + 1))
  assert [pairs[0][0] for pairs in captions.NOUNS.values()] == list(captions.OBJECT_NAMES)


def test_fact_rejects_bad_values():
  for kwargs in ({"class_id": 0}, {"class_id": 8}, {"class_id": 1, "count": 0},
                 {"class_id": 1, "size": "huge"}, {"class_id": 1, "variant": "red"},
                 {"class_id": 1, "position": "middle"}):
    with pytest.raises(ValueError):
      Fact(**kwargs)

