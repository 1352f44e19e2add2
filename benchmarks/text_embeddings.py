"""Frozen-encoder text embeddings for the embedded default: size and speed.

  python benchmarks/text_embeddings.py [--batches 40] [--compare_tree DIR --steps 80]

Prints, on configs/shapes.py's data and text encoder (MiniLM, L = 28):

  1. the caption counts of the training split and the real-token count of all its
     distinct captions (tokenized, not encoded), hence the size a caption store of
     the whole split takes (tokens x 384 x 2 bytes), and the captions a 1200-step
     run at batch 32 meets (the pipeline's own order);
  2. the host time per training batch (32 captions, the pipeline's batches) of
     the two sources, measured back to back in this process: the encoder on the
     fly, and a store lookup (a store of just those batches' captions, built
     here; its bytes per token are checked against the formula);
  3. with --compare_tree (a checkout of an older gcd_jax, e.g. one with the
     per-caption .npz cache), the training loop's examples/s of that tree and of
     this one, alternated twice (old, new, old, new), the same command each time,
     and the bytes each run left on disk for text.

Run it alone (2 cores: nothing else running).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _du(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def sizes_and_host_costs(num_batches: int) -> dict:
  from gcd_jax import text_conditioning  # pylint: disable=g-import-not-at-top
  from gcd_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from gcd_jax.models.text import cache  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(REPO, "configs"))
  import shapes  # pylint: disable=g-import-not-at-top
  config = shapes.get_config()
  name = f"{config.data.name}/{config.data.config}"
  captions = pipeline.split_captions(name, config.data.train_split)
  distinct = sorted(set(captions))
  encoder = text_conditioning.load_frozen_encoder(config)
  t0 = time.time()
  tokens = 0
  for i in range(0, len(distinct), 4096):
    _, mask = encoder.tokenize(distinct[i:i + 4096])
    tokens += int(mask.sum())
  out = {"split_captions": len(captions), "distinct_captions": len(distinct),
         "distinct_tokens": tokens, "tokens_per_caption": tokens / len(distinct),
         "store_bytes_whole_split": tokens * encoder.dim * 2,
         "tokenize_seconds": time.time() - t0, "dim": encoder.dim}

  # The captions a 1200-step run at batch 32 meets, in the pipeline's order.
  it = pipeline.make_train_iterator(name, split=config.data.train_split, flip=config.data.flip,
                                    image_size=(config.data.height, config.data.width),
                                    batch_size=config.data.batch_size, seed=config.seed)
  seen, batches = [], []
  for step in range(1200):
    batch = [str(c) for c in next(it)["caption"]]
    seen += batch
    if step < num_batches:
      batches.append(batch)
  out["run_1200_steps"] = {"captions": len(seen), "distinct": len(set(seen))}

  # Host time per batch: the encoder on the fly, then a store of those captions.
  on_the_fly = cache.CaptionEmbeddings(encoder, max_memory_items=0)
  on_the_fly.get(batches[0])  # compile
  t0 = time.perf_counter()
  for b in batches[1:]:
    on_the_fly.get(b)
  out["on_the_fly_ms_per_batch"] = 1e3 * (time.perf_counter() - t0) / (len(batches) - 1)
  with tempfile.TemporaryDirectory() as tmp:
    wanted = sorted({c for b in batches for c in b})
    t0 = time.perf_counter()
    store = cache.CaptionStore.build(os.path.join(tmp, "store"), encoder, wanted,
                                     batch_size=config.text.batch_size, progress=False)
    build_s = time.perf_counter() - t0
    stored = cache.CaptionEmbeddings(encoder, store=store, max_memory_items=0)
    stored.get(batches[0])
    t0 = time.perf_counter()
    for b in batches[1:]:
      stored.get(b)
    out["store_ms_per_batch"] = 1e3 * (time.perf_counter() - t0) / (len(batches) - 1)
    out["store_test"] = {"captions": len(store), "tokens": store.num_tokens, "bytes": store.nbytes,
                         "bytes_per_token": store.nbytes / store.num_tokens,
                         "build_captions_per_sec": len(store) / build_s}
    assert stored.num_encoded == 0
  return out


def loop_rate(tree: str, steps: int, workdir: str) -> dict:
  """examples/s of `tree`'s training loop on configs/shapes.py (after the first window)."""
  cmd = [sys.executable, "-m", "gcd_jax.main", "--config", "configs/shapes.py", "--workdir", workdir,
         f"--config.train.num_steps={steps}", "--config.train.eval_every=0",
         "--config.train.sample_every=0", "--config.train.checkpoint_every=100000",
         "--config.train.log_every=10"]
  env = dict(os.environ, GCD_JAX_COMPILATION_CACHE="off", GCD_JAX_CACHE_DIR=workdir + "_cache")
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env, check=False)
  if proc.returncode:
    raise RuntimeError(f"{tree}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
  rates = [float(x) for x in re.findall(r"examples_per_sec=([0-9.]+)", proc.stderr)]
  text_bytes = sum(_du(os.path.join(workdir, d)) for d in ("text_cache",)
                   if os.path.isdir(os.path.join(workdir, d)))
  text_bytes += _du(workdir + "_cache") if os.path.isdir(workdir + "_cache") else 0
  return {"tree": tree, "windows": rates, "examples_per_sec": float(np.mean(rates[1:])),
          "text_bytes_on_disk": text_bytes, "wall_s": time.time() - t0}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batches", type=int, default=40)
  parser.add_argument("--compare_tree", default="")
  parser.add_argument("--steps", type=int, default=80)
  parser.add_argument("--json", default="")
  args = parser.parse_args()
  out = {"sizes_and_host_costs": sizes_and_host_costs(args.batches)}
  print(json.dumps(out, indent=1), flush=True)
  if args.compare_tree:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
      for i, tree in enumerate([args.compare_tree, REPO, args.compare_tree, REPO]):
        runs.append(loop_rate(tree, args.steps, os.path.join(tmp, f"run{i}")))
        print(json.dumps(runs[-1]), flush=True)
    old = [r["examples_per_sec"] for r in runs[0::2]]
    new = [r["examples_per_sec"] for r in runs[1::2]]
    out["loop"] = {"runs": runs, "old_mean": float(np.mean(old)), "new_mean": float(np.mean(new)),
                   "new_over_old": float(np.mean(new) / np.mean(old))}
    print(json.dumps({k: v for k, v in out["loop"].items() if k != "runs"}), flush=True)
  if args.json:
    from gcd_jax import fileio  # pylint: disable=g-import-not-at-top
    fileio.atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
  main()
