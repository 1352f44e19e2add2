#!/usr/bin/env bash
# The real training loop against the bare step, and the compilation cache's start-up gain.
#   bash benchmarks/loop_vs_step.sh [STEPS]
# Runs, one after another (run nothing else meanwhile):
#   1. benchmarks/train_step.py on the `shapes` preset at the embedded default's batch;
#   2. python -m gcd_jax.main --config configs/shapes.py for STEPS steps (default 120),
#      eval and sample grids off, with an empty compilation cache ("cold");
#   3. the same again with the cache it filled ("warm").
# Compare the loop's steps_per_sec after its first window with the bare step's, and
# the two runs' wall times. configs/shapes.py runs its text encoder on the fly, so
# the loop's rate includes encoding each batch's captions.
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-120}"
tmp="$(mktemp -d)"
echo "== bare step"
(cd benchmarks && python train_step.py --preset shapes --size 32 --batch 32 --text_len 28 --steps 10)
for name in cold warm; do
  mkdir -p "$tmp/$name"
  echo "== loop, $name compilation cache"
  start=$(date +%s)
  GCD_JAX_COMPILATION_CACHE="$tmp/xla_cache" python -m gcd_jax.main --config configs/shapes.py \
    --workdir "$tmp/$name" --config.train.num_steps="$steps" --config.train.eval_every=0 \
    --config.train.sample_every=0 --config.train.checkpoint_every=100000 > "$tmp/$name.log" 2>&1
  echo "wall $(( $(date +%s) - start )) s; steps_per_sec per window:"
  grep "loss=" "$tmp/$name.log" | grep -o "steps_per_sec=[0-9.]*" | tr '\n' ' '; echo
done
rm -rf "$tmp"
