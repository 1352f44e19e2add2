#!/usr/bin/env bash
# A Cloud TPU VM slice (v4/v5e/v5p, any number of hosts): the same command on every
# host; jax.distributed.initialize() finds the slice by itself (--multihost).
#   bash launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE configs/cityscapes_base.py /mnt/shared/workdirs/cs \
#       [--config.x=y ...]
# On every host: Python 3.11 (installed with uv; TPU VM images ship an older
# Python), this checkout, the pinned dependencies, jax[tpu] at our JAX version,
# then the run under nohup (it survives the SSH session; log: ~/gcd_jax_run.log).
# The workdir: a gs://bucket/... URL (google-cloud-storage is installed for it) or
# a filesystem all hosts share. Prepared datasets: on each host's local disk or a
# shared mount (NFS/Filestore, gcsfuse); array_record cannot read gs:// URLs.
# --dry-run prints the commands instead of running them.
set -euo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
if [ $# -lt 4 ]; then
  echo "usage: bash launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
tpu=$1; zone=$2; config=$3; workdir=$4; shift 4
cd "$(dirname "$0")/.."
jax_version=$(sed -n 's/^jax==//p' constraints.txt)
# Every argument quoted for the remote shell, whatever spaces or quotes it holds.
run_args=$(printf '%q ' "--config=$config" "--workdir=$workdir" "$@")
remote="set -euo pipefail
mkdir -p gcd_jax && tar -xzf gcd_jax.tar.gz -C gcd_jax && cd gcd_jax
command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh
export PATH=\$HOME/.local/bin:\$PATH
uv python install 3.11
uv venv --seed --python 3.11 .venv
. .venv/bin/activate
bash launch/install.sh
python -m pip install -q 'jax[tpu]==$jax_version' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
python -m pip install -q 'google-cloud-storage>=2.14'
nohup python -m gcd_jax.main --multihost $run_args > \$HOME/gcd_jax_run.log 2>&1 < /dev/null &
echo \"started on \$(hostname): ~/gcd_jax_run.log\""
archive=(git archive --format=tar.gz -o /tmp/gcd_jax.tar.gz HEAD)
copy=(gcloud compute tpus tpu-vm scp /tmp/gcd_jax.tar.gz "$tpu:gcd_jax.tar.gz" --zone "$zone" --worker=all)
start=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
if [ "$dry_run" = 1 ]; then
  for c in archive copy start; do
    declare -n ref=$c
    printf '%q ' "${ref[@]}"; echo
  done
  exit 0
fi
"${archive[@]}"
"${copy[@]}"
"${start[@]}"
