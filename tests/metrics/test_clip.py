"""Tests for gcd_jax.metrics.clip (linen CLIP) and clip_score (the CLIP score).

The tiny checkpoint and the golden outputs under golden/clip_tiny/ come from the
PyTorch Hugging Face CLIPModel and the PIL CLIP image processor
(golden/make_clip_golden.py, run in a separate torch venv); nothing here imports torch.
"""

import dataclasses
import pathlib
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from gcd_jax.metrics import clip
from gcd_jax.metrics import clip_score
from gcd_jax.models.text.checkpoint import CheckpointError

GOLDEN = pathlib.Path(__file__).parent / "golden" / "clip_tiny"
CHECKPOINT = GOLDEN / "checkpoint"


@pytest.fixture(scope="module")
def golden():
  with np.load(GOLDEN / "golden.npz") as f:
    g = {k: f[k] for k in f.files}
  g["images"] = [g.pop(f"image_{i}") for i in range(len(g["captions"]))]
  g["captions"] = [str(c) for c in g["captions"]]
  g["pixels"] = g["pixel_values"].transpose(0, 2, 3, 1)  # HF's NCHW -> our NHWC
  return g


@pytest.fixture(scope="module")
def scorer():
  return clip_score.load_clip(CHECKPOINT)


@pytest.fixture
def checkpoint_copy(tmp_path):
  directory = tmp_path / "clip"
  shutil.copytree(CHECKPOINT, directory)
  return directory


# --- Against Hugging Face (PyTorch model, PIL image processor) ---------------------


def test_tokenization_matches_hf(scorer, golden):
  ids = scorer.tokenize(golden["captions"])
  assert ids.dtype == np.int32 and ids.shape == (4, 77)
  np.testing.assert_array_equal(ids, golden["input_ids"])
  # The long caption is cut to 77 tokens that still end with <|endoftext|>.
  assert golden["attention_mask"][3].all() and ids[3, -1] == scorer.tokenizer.eos_token_id


def test_tokenizer_from_vocab_and_merges_alone(checkpoint_copy, golden):
  # A checkout may lack tokenizer.json; vocab.json + merges.txt must give the same ids.
  (checkpoint_copy / "tokenizer.json").unlink()
  (checkpoint_copy / "tokenizer_config.json").unlink()
  tokenizer = clip_score.load_tokenizer(checkpoint_copy)
  enc = tokenizer(golden["captions"], padding="max_length", truncation=True, max_length=77)
  np.testing.assert_array_equal(enc["input_ids"], golden["input_ids"])


def test_preprocessing_matches_hf_image_processor(scorer, golden):
  # Each image alone (square, landscape, portrait with a rounded long side,
  # upsampled). The reference is CLIPImageProcessorPil, which resizes with the same
  # PIL bicubic filter on the uint8 image: the pixels agree exactly (max diff 0.0);
  # 1e-2 leaves room for another Pillow build. (transformers' torchvision backend,
  # antialiased bicubic on tensors, is another matter: torch's interpolate differs
  # from these references by up to 0.2, 0.0035 on average, on these noisy images.)
  assert scorer.preprocessing == clip_score.ImagePreprocessing(shortest_edge=32, crop_size=32)
  for image, reference in zip(golden["images"], golden["pixels"]):
    pixels = scorer.preprocess(image[None])
    assert pixels.shape == (1, 32, 32, 3) and pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0], reference, atol=1e-2, rtol=0)


def test_embeddings_match_hf(scorer, golden):
  # Text: quick_gelu, causal mask, legacy eos_token_id 2 (pool at the largest id) as
  # in the openai configs. Vision: exact gelu, patch convolution, class token.
  image_embeds = scorer.image_embeds_of_pixels(golden["pixels"])
  text_embeds = scorer.text_embeds_of_ids(golden["input_ids"])
  assert image_embeds.shape == text_embeds.shape == (4, 24)
  np.testing.assert_allclose(image_embeds, golden["image_embeds"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(text_embeds, golden["text_embeds"], atol=1e-4, rtol=0)
  logits = image_embeds @ text_embeds.T * np.exp(golden["logit_scale"])
  np.testing.assert_allclose(logits, golden["logits_per_image"], atol=1e-4 * np.exp(golden["logit_scale"]))


def test_score_end_to_end(scorer, golden):
  # uint8 images of four sizes and raw captions -> HF's cosine, logits / logit_scale.
  expected = np.diag(golden["logits_per_image"]) / np.exp(golden["logit_scale"])
  scores = scorer.score(golden["images"], golden["captions"])
  assert scores.shape == (4,) and scores.dtype == np.float32
  np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
  # The usual input, one [N, H, W, 3] array.
  stacked = np.stack([golden["images"][0]] * 3)
  np.testing.assert_allclose(scorer.score(stacked, golden["captions"][:3]),
                             np.sum(golden["image_embeds"][0] * golden["text_embeds"][:3], -1),
                             atol=1e-4)
  assert scorer.score(np.zeros((0, 8, 8, 3), np.uint8), []).shape == (0,)


def test_results_do_not_depend_on_batching(scorer, golden):
  small = clip_score.load_clip(CHECKPOINT, batch_size=3)  # chunks of 3 then 1
  images = golden["images"] + golden["images"][:1]
  captions = golden["captions"] + golden["captions"][2:3]
  np.testing.assert_allclose(small.score(images, captions), scorer.score(images, captions),
                             atol=1e-6)


# --- The model's pieces ------------------------------------------------------------


def test_eos_pooling_positions():
  ids = np.array([[7, 5, 9, 9, 9], [7, 9, 3, 9, 9]])
  # Legacy configs (eos_token_id 2): the largest id, first of ties, as torch.argmax.
  np.testing.assert_array_equal(clip.eos_positions(ids, eos_token_id=2), [2, 1])
  # Otherwise the first occurrence of the real id.
  np.testing.assert_array_equal(clip.eos_positions(ids, eos_token_id=5), [1, 0])
  np.testing.assert_array_equal(clip.eos_positions(ids, eos_token_id=3), [0, 2])


def test_golden_tells_quick_gelu_from_gelu(scorer, golden):
  # The 1e-4 test above catches an activation mix-up: it moves the text
  # embeddings 25 times the tolerance.
  config = dataclasses.replace(
      scorer.config, text=dataclasses.replace(scorer.config.text, hidden_act="gelu"))
  wrong = clip.ClipModel(config).apply({"params": scorer.params}, golden["input_ids"],
                                       method=clip.ClipModel.embed_texts)
  wrong = np.asarray(wrong) / np.linalg.norm(wrong, axis=-1, keepdims=True)
  assert np.abs(wrong - golden["text_embeds"]).max() > 1e-3  # 2.6e-3 here


def test_config_defaults_and_legacy_dict_keys(tmp_path):
  # Old configs may give *_config_dict (which wins) and omit default fields.
  c = clip.ClipConfig.from_hf(
      {"model_type": "clip", "text_config": {"hidden_size": 64},
       "text_config_dict": {"hidden_size": 768, "num_attention_heads": 12},
       "vision_config_dict": {"image_size": 336, "patch_size": 14}, "projection_dim": 768},
      tmp_path / "config.json")
  assert (c.text.hidden_size, c.text.num_attention_heads, c.text.hidden_act) == (768, 12, "quick_gelu")
  assert (c.vision.image_size, c.vision.patch_size, c.projection_dim) == (336, 14, 768)


# --- Errors ------------------------------------------------------------------------


def test_missing_config_names_the_file(tmp_path):
  with pytest.raises(CheckpointError, match=r"config\.json"):
    clip_score.load_clip(tmp_path)


def test_wrong_model_type_names_file_and_type(checkpoint_copy):
  path = checkpoint_copy / "config.json"
  path.write_text(path.read_text().replace('"model_type": "clip"', '"model_type": "bert"', 1))
  with pytest.raises(CheckpointError, match="model_type 'bert'") as e:
    clip_score.load_clip(checkpoint_copy)
  assert str(path) in str(e.value)


def _rewrite_weights(directory, edit):
  path = directory / "model.safetensors"
  tensors = load_file(str(path))
  edit(tensors)
  save_file(tensors, str(path), metadata={"format": "pt"})
  return path


def test_missing_tensor_names_file_and_tensor(checkpoint_copy):
  path = _rewrite_weights(checkpoint_copy,
                          lambda t: t.pop("vision_model.post_layernorm.weight"))
  with pytest.raises(CheckpointError, match="'vision_model.post_layernorm.weight' is missing") as e:
    clip_score.load_clip(checkpoint_copy)
  assert str(path) in str(e.value)


def test_wrong_shape_names_file_tensor_and_shapes(checkpoint_copy):
  def transpose(t):
    t["text_projection.weight"] = np.ascontiguousarray(t["text_projection.weight"].T)
  path = _rewrite_weights(checkpoint_copy, transpose)
  with pytest.raises(CheckpointError, match=r"'text_projection.weight' has shape \(32, 24\), "
                     r"expected \(24, 32\)") as e:
    clip_score.load_clip(checkpoint_copy)
  assert str(path) in str(e.value)


def test_missing_tokenizer_is_reported(checkpoint_copy):
  for name in ("tokenizer.json", "vocab.json"):
    (checkpoint_copy / name).unlink()
  with pytest.raises(CheckpointError, match="vocab.json and merges.txt"):
    clip_score.load_clip(checkpoint_copy)


def test_bad_inputs_are_rejected(scorer, golden):
  floats = golden["images"][0].astype(np.float32) / 255
  with pytest.raises(ValueError, match="uint8"):
    scorer.score(floats[None], ["a cat"])
  with pytest.raises(ValueError, match="uint8"):
    scorer.score(golden["images"][0][None, ..., :1], ["a cat"])  # grayscale
  with pytest.raises(ValueError, match="2 images but 1 captions"):
    scorer.score(golden["images"][:2], ["a cat"])
  with pytest.raises(TypeError, match="list of str"):
    scorer.score(golden["images"][:1], "a cat")
  with pytest.raises(ValueError, match=r"expected \[B, 32, 32, 3\]"):
    scorer.image_embeds_of_pixels(np.zeros((1, 16, 16, 3), np.float32))

