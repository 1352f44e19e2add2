#!/usr/bin/env bash
# One machine, one or more NVIDIA GPUs: one process, data parallel over all local GPUs.
#   bash launch/gpu.sh [--dry-run] configs/mm_celeba_hq_base.py workdirs/celeba_base [--config.x=y ...]
# Installs JAX's CUDA build (the version already installed) into the active
# environment first if JAX has no GPU backend. --dry-run prints what would run.
set -euo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
if [ $# -lt 2 ]; then
  echo "usage: bash launch/gpu.sh [--dry-run] CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
config=$1; workdir=$2; shift 2
cmd=(python -m gcd_jax.main "--config=$config" "--workdir=$workdir" "$@")
jax_version=$(sed -n 's/^jax==//p' constraints.txt)
install=(python -m pip install -q "jax[cuda12]==$jax_version")
# Let XLA take most of the GPU memory up front (fewer fragmentation stalls).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
if [ "$dry_run" = 1 ]; then
  echo "# if JAX has no GPU backend:"
  printf '%q ' "${install[@]}"; echo
  echo "XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION"
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
python -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null || "${install[@]}"
exec "${cmd[@]}"
