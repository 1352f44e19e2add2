"""CLIP score: cosine similarity of each image with its caption under a CLIP model.

    scorer = load_clip("/ckpt/clip-vit-large-patch14-336")   # the paper's CLIP
    scores = scorer.score(images, captions)   # images [N, H, W, 3] uint8 -> [N] float32
    clip_score = float(scores.mean())         # the paper reports about 0.17 - 0.22

The score is the raw cosine between the L2-normalised image and text embeddings,
not multiplied by 100 (nor clipped at 0) as some libraries do. Nothing is downloaded:
the directory is a local Hugging Face CLIPModel checkout (config.json with
model_type "clip", model.safetensors, and the tokenizer as tokenizer.json or
vocab.json + merges.txt; preprocessor_config.json is read when present). To use
the paper's model, `git lfs clone https://huggingface.co/openai/clip-vit-large-patch14-336`
on a machine with network; if that checkout has only pytorch_model.bin, convert it
to model.safetensors there (torch is not a dependency of gcd_jax).

Images are preprocessed as CLIPImageProcessor does with its PIL backend (and as
OpenAI's own CLIP code does): resize so that the shorter side is `shortest_edge`
with PIL's bicubic filter on the uint8 image (the longer side rounded down), center
crop to image_size x image_size (offsets rounded down), scale to [0, 1], then
normalise with the CLIP mean and std. The torchvision backend of transformers 5
resizes float tensors with antialiased bicubic instead, which gives slightly
different pixels. Captions are tokenised with the checkpoint's CLIP BPE tokenizer,
<|startoftext|> and <|endoftext|> included, and truncated to 77 tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import TYPE_CHECKING, Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from gcd_jax.metrics import clip
from gcd_jax.models.text import checkpoint as ckpt

if TYPE_CHECKING:
  import transformers

MAX_TEXT_LENGTH = 77  # CLIP's context length, <|startoftext|> and <|endoftext|> included
PREPROCESSOR_FILE = "preprocessor_config.json"
# OpenAI's normalisation constants (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
  """uint8 [H, W, 3] -> float32 [crop_size, crop_size, 3], as CLIPImageProcessor (PIL).

  Attributes:
    shortest_edge: the shorter side after resizing.
    crop_size: side of the center crop, the vision tower's image_size.
    mean, std: per-channel normalisation of the [0, 1] pixels.
    resample: PIL filter (PIL.Image.Resampling value); CLIP uses BICUBIC.
  """
  shortest_edge: int
  crop_size: int
  mean: tuple[float, float, float] = CLIP_MEAN
  std: tuple[float, float, float] = CLIP_STD
  resample: int = int(Image.Resampling.BICUBIC)

  @classmethod
  def from_checkpoint(cls, directory: pathlib.Path, image_size: int) -> ImagePreprocessing:
    """From preprocessor_config.json if the checkpoint has one, else CLIP's defaults."""
    path = directory / PREPROCESSOR_FILE
    if not path.is_file():
      return cls(shortest_edge=image_size, crop_size=image_size)
    try:
      config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise ckpt.CheckpointError(f"{path}: not valid JSON ({e})") from e
    # Old feature-extractor files store plain ints; newer ones dicts.
    size = config.get("size", image_size)
    shortest_edge = size.get("shortest_edge") if isinstance(size, dict) else size
    crop = config.get("crop_size", image_size)
    crop_hw = (crop.get("height"), crop.get("width")) if isinstance(crop, dict) else (crop, crop)
    if crop_hw != (image_size, image_size):
      raise ckpt.CheckpointError(
          f"{path}: crop_size {crop} differs from the vision tower's image_size {image_size} "
          f"in {directory / 'config.json'}")
    if not isinstance(shortest_edge, int) or shortest_edge < image_size:
      raise ckpt.CheckpointError(
          f"{path}: size {size} is not supported; expected a shortest_edge >= the crop "
          f"size {image_size}")
    return cls(shortest_edge=shortest_edge, crop_size=image_size,
               mean=tuple(config.get("image_mean", CLIP_MEAN)),
               std=tuple(config.get("image_std", CLIP_STD)),
               resample=int(config.get("resample", Image.Resampling.BICUBIC)))

  def __call__(self, image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    short, long = min(h, w), max(h, w)
    new_long = int(self.shortest_edge * long / short)  # rounded down, as HF
    new_h, new_w = (new_long, self.shortest_edge) if w <= h else (self.shortest_edge, new_long)
    # PIL filters the 8-bit image (and rounds the result to 8 bits), as HF does for
    # uint8 inputs.
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=self.resample))
    top, left = (new_h - self.crop_size) // 2, (new_w - self.crop_size) // 2
    crop = resized[top:top + self.crop_size, left:left + self.crop_size]
    x = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    return (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)


def load_tokenizer(directory: pathlib.Path) -> transformers.CLIPTokenizer:
  """The checkpoint's CLIP BPE tokenizer (tokenizer.json, or vocab.json + merges.txt)."""
  # transformers reads the offline switch when first imported; local_files_only is
  # the real guarantee.
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  import transformers  # pylint: disable=g-import-not-at-top  # lazy: ~1 s to import

  has_json = (directory / "tokenizer.json").is_file()
  has_bpe = (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
  if not (has_json or has_bpe):
    raise ckpt.CheckpointError(
        f"{directory}: no CLIP tokenizer; expected tokenizer.json, or vocab.json and "
        "merges.txt (as in a Hugging Face CLIP checkout)")
  try:
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)
  except (OSError, ValueError, TypeError) as e:
    raise ckpt.CheckpointError(f"{directory}: cannot load the CLIP tokenizer: {e}") from e
  tokenizer.padding_side = "right"  # the pooled <|endoftext|> must follow the caption
  tokenizer.truncation_side = "right"
  return tokenizer


def _bucket(n: int, max_batch_size: int) -> int:
  """Smallest power of two >= n, capped: at most log2(max) + 1 compiled shapes."""
  return min(max_batch_size, 1 << max(0, n - 1).bit_length())


def _normalized(x):
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


class ClipScorer:
  """A CLIP model with its preprocessing and tokenizer; `score` is the CLIP score.

  Attributes:
    name: for logs (the directory name by default).
    config: the ClipConfig read from config.json.
    preprocessing: the ImagePreprocessing, from preprocessor_config.json if present.
    max_length: tokens per caption, min(77, max_position_embeddings).
    batch_size: largest batch compiled; longer inputs run in chunks.
    module, params: the linen ClipModel and its float32 parameters.
  """

  def __init__(self, *, name: str, checkpoint_dir: pathlib.Path, config: clip.ClipConfig,
               module: clip.ClipModel, params: Any, tokenizer: Any,
               preprocessing: ImagePreprocessing, batch_size: int = 32) -> None:
    self.name = name
    self.checkpoint_dir = checkpoint_dir
    self.config = config
    self.module = module
    self.params = jax.device_put(params)
    self.tokenizer = tokenizer
    self.preprocessing = preprocessing
    self.max_length = min(MAX_TEXT_LENGTH, config.text.max_position_embeddings)
    self.batch_size = batch_size

    # Params are an argument, not a closure, so they are not baked into the
    # executable as constants; full float32 matmuls even where the default would
    # be TF32 (GPUs), for scores comparable across machines.
    def embed(method):
      def run(params, x):
        with jax.default_matmul_precision("float32"):
          return _normalized(module.apply({"params": params}, x, method=method))
      return jax.jit(run)

    self._embed_images = embed(clip.ClipModel.embed_images)
    self._embed_texts = embed(clip.ClipModel.embed_texts)

  def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """images [N, H, W, 3] uint8 (or N such [H, W, 3]) -> pixels [N, S, S, 3] float32."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
      images = list(images)
    for i, image in enumerate(images):
      image = np.asarray(image)
      if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"image {i}: expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}; "
            "convert float images in [0, 1] with (x * 255).round().astype(np.uint8)")
    s = self.preprocessing.crop_size
    if not len(images):
      return np.zeros((0, s, s, 3), np.float32)
    return np.stack([self.preprocessing(np.asarray(image)) for image in images])

  def tokenize(self, captions: Sequence[str]) -> np.ndarray:
    """captions -> input_ids [N, max_length] int32, padded with <|endoftext|>."""
    if isinstance(captions, str):
      raise TypeError("captions must be a list of str, not a single str")
    if not captions:
      return np.zeros((0, self.max_length), np.int32)
    enc = self.tokenizer(list(captions), padding="max_length", truncation=True,
                         max_length=self.max_length, return_tensors="np")
    return np.asarray(enc["input_ids"], np.int32).reshape(len(captions), self.max_length)

  def _batched(self, fn, x: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), self.config.projection_dim), np.float32)
    # A batch of 5 is padded to 8 with copies of its first row, whose outputs are
    # dropped: few compiled shapes.
    for start in range(0, len(x), self.batch_size):
      chunk = x[start:start + self.batch_size]
      n = len(chunk)
      chunk = np.concatenate([chunk, np.repeat(chunk[:1], _bucket(n, self.batch_size) - n, 0)])
      out[start:start + n] = np.asarray(fn(self.params, jnp.asarray(chunk)))[:n]
    return out

  def image_embeds_of_pixels(self, pixels: np.ndarray) -> np.ndarray:
    """pixels [N, S, S, 3] float32 (preprocessed) -> L2-normalised [N, P] float32."""
    return self._batched(self._embed_images, np.asarray(pixels, np.float32))

  def image_embeds(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """images [N, H, W, 3] uint8 -> L2-normalised image embeddings [N, P] float32."""
    return self.image_embeds_of_pixels(self.preprocess(images))

  def text_embeds_of_ids(self, input_ids: np.ndarray) -> np.ndarray:
    """input_ids [N, L] int32 -> L2-normalised [N, P] float32."""
    return self._batched(self._embed_texts, np.asarray(input_ids, np.int32))

  def text_embeds(self, captions: Sequence[str]) -> np.ndarray:
    """N captions -> L2-normalised text embeddings [N, P] float32."""
    return self.text_embeds_of_ids(self.tokenize(captions))

  def score(self, images: np.ndarray | Sequence[np.ndarray],
            captions: Sequence[str]) -> np.ndarray:
    """CLIP score of each image with its caption.

    Args:
      images: [N, H, W, 3] uint8 RGB (or a sequence of N [H, W, 3] uint8 arrays of
        any sizes).
      captions: N strings, captions[i] describing images[i].

    Returns:
      [N] float32, cos(image_embeds[i], text_embeds[i]) in [-1, 1].
    """
    if isinstance(captions, str):
      raise TypeError("captions must be a list of str, not a single str")
    if len(images) != len(captions):
      raise ValueError(f"{len(images)} images but {len(captions)} captions; "
                       "score pairs images[i] with captions[i]")
    return np.sum(self.image_embeds(images) * self.text_embeds(captions), axis=-1)

  def __repr__(self) -> str:
    return (f"ClipScorer({self.name!r}, image_size={self.preprocessing.crop_size}, "
            f"projection_dim={self.config.projection_dim}, checkpoint_dir='{self.checkpoint_dir}')")


def load_clip(checkpoint_dir: str | pathlib.Path, *, batch_size: int = 32,
              name: str | None = None) -> ClipScorer:
  """Loads a CLIP scorer from a local Hugging Face CLIPModel checkpoint directory.

  Args:
    checkpoint_dir: config.json (model_type "clip"), model.safetensors (or a sharded
      index), tokenizer.json or vocab.json + merges.txt, optionally
      preprocessor_config.json. E.g. a clone of openai/clip-vit-large-patch14-336.
    batch_size: largest batch run at once; lower it if the accelerator runs out of
      memory (ViT-L/14-336 attends over 577 tokens per image).
    name: for logs; default: the directory name.

  Raises:
    CheckpointError (a ValueError) naming the file and tensor: missing config.json,
      model_type other than "clip", missing tensor, tensor of the wrong shape,
      missing tokenizer, tokenizer larger than the embedding table.
  """
  directory = pathlib.Path(checkpoint_dir)
  config, module, params = clip.load_clip_params(directory)
  tokenizer = load_tokenizer(directory)
  # Out-of-range ids would be clamped silently by the embedding lookup.
  if len(tokenizer) > config.text.vocab_size:
    raise ckpt.CheckpointError(
        f"{directory}: the tokenizer has {len(tokenizer)} tokens but {directory / 'config.json'} "
        f"has vocab_size {config.text.vocab_size}; tokenizer files and weights do not belong together")
  return ClipScorer(
      name=name or directory.resolve().name, checkpoint_dir=directory, config=config,
      module=module, params=params, tokenizer=tokenizer,
      preprocessing=ImagePreprocessing.from_checkpoint(directory, config.vision.image_size),
      batch_size=batch_size)
