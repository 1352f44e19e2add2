"""Caption grammar of `synthetic_scenes`: templates, synonyms and an exact parser.

A caption names some of the objects in a scene. Each mention is one object
phrase, optionally with a count, a size, a colour variant, the class's colour
word, a texture word and a position:

  "A picture of two large dark red balls on the left and a box."
   frame       count size variant colour noun position  count noun

The frames and phrases are generated from the tables below, and
`caption_facts` inverts them exactly:
`caption_facts(random_caption(facts, rng)) == facts` for every frame and
synonym (each one is tested). Every word belongs to at
most one table, and frames use none of them, which is what makes the parse
unambiguous.

The vocabulary (nouns, colour words) is keyed by the class ids of
`gcd_jax.data.synthetic_scenes.CLASSES`; `OBJECT_NAMES[i - 1]` is class i.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

# Class names of object classes 1..7 (class 0 is the background).
OBJECT_NAMES = ("ball", "box", "triangle", "ring", "bar", "cross", "diamond")

SIZES = ("small", "large")
VARIANTS = ("dark", "light")
# A position names a vertical half, a horizontal half, or both (a quadrant).
POSITIONS = ("left", "right", "top", "bottom",
             "top left", "top right", "bottom left", "bottom right")
MAX_COUNT = 4


@dataclasses.dataclass(frozen=True)
class Fact:
  """What one caption says about one class; None = not stated.

  Attributes:
    class_id: layout class id in [1, K).
    count: number of separate instances (connected components) or None;
      captions say 1 to MAX_COUNT, a measurement may find more.
    position: one of POSITIONS (relative to the image centre) or None.
    size: one of SIZES or None.
    variant: one of VARIANTS (colour shade inside the class's hue band) or None.
  """

  class_id: int
  count: int | None = None
  position: str | None = None
  size: str | None = None
  variant: str | None = None

  def __post_init__(self) -> None:
    if not 1 <= self.class_id <= len(OBJECT_NAMES):
      raise ValueError(f"Fact: class_id {self.class_id} not in [1, {len(OBJECT_NAMES)}].")
    if self.count is not None and self.count < 1:
      raise ValueError(f"Fact: count {self.count} < 1; use None for 'not stated'.")
    for field, value, allowed in (("position", self.position, POSITIONS),
                                  ("size", self.size, SIZES),
                                  ("variant", self.variant, VARIANTS)):
      if value is not None and value not in allowed:
        raise ValueError(f"Fact: {field} {value!r} not in {allowed}.")


# --- The grammar tables -------------------------------------------------------

# (singular, plural) nouns per class id; the first is the class name.
NOUNS: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("ball", "balls"), ("disk", "disks"), ("circle", "circles")),
    2: (("box", "boxes"), ("square", "squares"), ("block", "blocks")),
    3: (("triangle", "triangles"), ("wedge", "wedges")),
    4: (("ring", "rings"), ("donut", "donuts"), ("hoop", "hoops")),
    5: (("bar", "bars"), ("plank", "planks"), ("stick", "sticks")),
    6: (("cross", "crosses"), ("plus", "pluses")),
    7: (("diamond", "diamonds"), ("rhombus", "rhombuses")),
}
# The hue family of each class (redundant with the class, so optional).
COLOUR_WORDS = {1: "red", 2: "yellow", 3: "green", 4: "teal", 5: "blue",
                6: "purple", 7: "pink"}
# The class's texture, where it has a name (optional).
TEXTURE_WORDS = {1: "shiny", 5: "striped", 6: "checkered"}
# Determiners by count; None = count not stated.
COUNT_WORDS: dict[int | None, tuple[str, ...]] = {
    1: ("a", "one", "a single"),
    2: ("two", "a pair of"),
    3: ("three",),
    4: ("four",),
    None: ("some",),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
VARIANT_WORDS = {"light": ("light", "pale"), "dark": ("dark", "deep")}
POSITION_PHRASES = {
    "left": ("on the left", "on the left side", "to the left"),
    "right": ("on the right", "on the right side", "to the right"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "top left": ("in the top left", "in the upper left corner", "at the top left"),
    "top right": ("in the top right", "in the upper right corner", "at the top right"),
    "bottom left": ("in the bottom left", "in the lower left corner",
                    "at the bottom left"),
    "bottom right": ("in the bottom right", "in the lower right corner",
                     "at the bottom right"),
}
# Sentence frames; {be} agrees with the first object phrase.
FRAMES = (
    "{objects}.",
    "A picture of {objects}.",
    "An image showing {objects}.",
    "There {be} {objects}.",
    "{objects} on a plain background.",
    "A scene with {objects}.",
    "This image contains {objects}.",
    "A drawing of {objects}.",
)


# --- Generation ---------------------------------------------------------------


def object_phrase(fact: Fact, *, count_word: int = 0, size_word: int = 0,
                  variant_word: int = 0, colour: bool = False,
                  texture: bool = False, noun: int = 0,
                  position_phrase: int = 0) -> str:
  """One object phrase for `fact`; the ints pick a synonym in each table."""
  if fact.count not in COUNT_WORDS:
    raise ValueError(f"object_phrase: {fact}: captions say counts up to {MAX_COUNT}.")
  words = [COUNT_WORDS[fact.count][count_word]]
  if fact.size is not None:
    words.append(SIZE_WORDS[fact.size][size_word])
  if fact.variant is not None:
    words.append(VARIANT_WORDS[fact.variant][variant_word])
  if colour:
    words.append(COLOUR_WORDS[fact.class_id])
  if texture:
    words.append(TEXTURE_WORDS[fact.class_id])
  words.append(NOUNS[fact.class_id][noun][0 if fact.count == 1 else 1])
  if fact.position is not None:
    words.append(POSITION_PHRASES[fact.position][position_phrase])
  return " ".join(words)


def compose_caption(phrases: list[str], facts: list[Fact], frame: int = 0) -> str:
  """Joins object phrases ("A", "A and B", "A, B and C") into frame `frame`."""
  if not phrases or len(phrases) != len(facts):
    raise ValueError(
        f"compose_caption: need one phrase per fact, got {len(phrases)} phrases "
        f"for {len(facts)} facts.")
  objects = phrases[0] if len(phrases) == 1 else (
      ", ".join(phrases[:-1]) + " and " + phrases[-1])
  text = FRAMES[frame].format(objects=objects,
                              be="is" if facts[0].count == 1 else "are")
  return text[0].upper() + text[1:]


def random_caption(facts: list[Fact], rng: np.random.Generator) -> str:
  """A caption stating exactly `facts`, with a random frame and synonyms."""
  def pick(options) -> int:
    return int(rng.integers(len(options)))

  phrases = []
  for f in facts:
    phrases.append(object_phrase(
        f,
        count_word=pick(COUNT_WORDS[f.count]),
        size_word=pick(SIZE_WORDS[f.size]) if f.size else 0,
        variant_word=pick(VARIANT_WORDS[f.variant]) if f.variant else 0,
        colour=bool(rng.random() < 0.5),
        texture=f.class_id in TEXTURE_WORDS and bool(rng.random() < 0.3),
        noun=pick(NOUNS[f.class_id]),
        position_phrase=pick(POSITION_PHRASES[f.position]) if f.position else 0,
    ))
  return compose_caption(phrases, facts, frame=int(rng.integers(len(FRAMES))))


# --- Parsing ------------------------------------------------------------------

_NOUN_TO_CLASS = {word: (cid, plural) for cid, pairs in NOUNS.items()
                  for pair in pairs for plural, word in enumerate(pair)}
_SIZE_OF = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
_VARIANT_OF = {w: v for v, ws in VARIANT_WORDS.items() for w in ws}
_MODIFIERS = (set(_SIZE_OF) | set(_VARIANT_OF) | set(COLOUR_WORDS.values())
              | set(TEXTURE_WORDS.values()))
_COUNT_OF = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
_VERTICAL_OF = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_TOKENS = re.compile(r"[a-z]+|,")


def caption_facts(text: str) -> list[Fact]:
  """The facts a caption states, one per mentioned class, in caption order.

  Mentions are separated by "," or "and". Within one, the words right before
  the noun give size / variant (colour and texture words are skipped) and then
  the determiner gives the count ("some" or none: count not stated); the words
  after it, up to the next mention, give the position.
  """
  tokens = _TOKENS.findall(text.lower())
  nouns = [i for i, t in enumerate(tokens) if t in _NOUN_TO_CLASS]
  facts = []
  for n, i in enumerate(nouns):
    class_id, _ = _NOUN_TO_CLASS[tokens[i]]
    size = variant = count = None
    j = i - 1
    while j >= 0 and tokens[j] in _MODIFIERS:
      size = _SIZE_OF.get(tokens[j], size)
      variant = _VARIANT_OF.get(tokens[j], variant)
      j -= 1
    if j >= 0:
      if tokens[j] == "single" and j >= 1 and tokens[j - 1] == "a":
        count = 1
      elif tokens[j] == "of" and j >= 2 and tokens[j - 2:j] == ["a", "pair"]:
        count = 2
      else:
        count = _COUNT_OF.get(tokens[j])
    end = nouns[n + 1] if n + 1 < len(nouns) else len(tokens)
    after = tokens[i + 1:end]
    if "," in after:
      after = after[:after.index(",")]
    if "and" in after:
      after = after[:after.index("and")]
    vertical = next((_VERTICAL_OF[t] for t in after if t in _VERTICAL_OF), None)
    horizontal = next((t for t in after if t in ("left", "right")), None)
    position = " ".join(p for p in (vertical, horizontal) if p) or None
    facts.append(Fact(class_id, count=count, position=position, size=size,
                      variant=variant))
  return facts
