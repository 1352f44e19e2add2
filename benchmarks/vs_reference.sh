#!/usr/bin/env bash
# Our reference-architecture benchmarks and the released PyTorch code's, back to
# back in one window, with the same thread count and allocator settings.
#   bash benchmarks/vs_reference.sh /path/to/GCDP [/path/to/torch/venv/bin/python]
# Needs a separate venv with torch (never a dependency of gcd_jax):
#   python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy einops einops-exts
set -euo pipefail
cd "$(dirname "$0")/.."
gcdp="${1:?path to a checkout of the official GCDP repository}"
torch_python="${2:-/tmp/torchvenv/bin/python}"
out="$(mktemp -d)"
export OMP_NUM_THREADS=2
echo "== PyTorch reference"
"$torch_python" benchmarks/reference_pytorch.py --gcdp_src "$gcdp" --threads 2 --json "$out/ref.json"
echo "== gcd_jax, the same architecture"
python benchmarks/train_step.py --preset reference --size 32 --batch 32 --text_len 32 --steps 5 \
  --reference_json "$out/ref.json"
python benchmarks/train_step.py --preset reference --size 64 --batch 8 --text_len 32 --steps 5 \
  --reference_json "$out/ref.json"
python benchmarks/sampling.py --skip_shapes --reference_json "$out/ref.json"
