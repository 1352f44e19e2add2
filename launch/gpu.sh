#!/usr/bin/env bash
# One machine, one or more NVIDIA GPUs: data parallel over all local GPUs.
#   bash launch/gpu.sh configs/mm_celeba_hq_base.py workdirs/celeba_base [--config.x=y ...]
# Installs JAX's CUDA build into the active environment first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1; workdir=$2; shift 2
python -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null \
  || python -m pip install -q "jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')"
# Let XLA use most of the GPU memory up front (fewer fragmentation stalls).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m gcd_jax.main --config="$config" --workdir="$workdir" "$@"
