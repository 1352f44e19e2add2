#!/usr/bin/env bash
# A Cloud TPU VM slice (v4/v5e/v5p, any number of hosts): the same command on every
# host; jax.distributed.initialize() finds the slice by itself (--multihost).
#   bash launch/tpu_pod.sh TPU_NAME ZONE configs/cityscapes_base.py gs://bucket/workdirs/cs [--config.x=y ...]
# The workdir must be shared by all hosts (a GCS bucket); prepared datasets too
# (--config.data.data_dir=gs://bucket/tensorflow_datasets).
set -euo pipefail
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
cd "$(dirname "$0")/.."
# Ship this checkout (code and configs) to every host.
git archive --format=tar.gz -o /tmp/gcd_jax.tar.gz HEAD
gcloud compute tpus tpu-vm scp /tmp/gcd_jax.tar.gz "$tpu":gcd_jax.tar.gz --zone "$zone" --worker=all
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  set -e
  mkdir -p gcd_jax && tar -xzf gcd_jax.tar.gz -C gcd_jax
  cd gcd_jax
  python3 -m venv .venv && . .venv/bin/activate
  bash launch/install.sh && pip install -q 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  python -m gcd_jax.main --multihost --config=$config --workdir=$workdir $*
"
