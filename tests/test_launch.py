"""The launch scripts: what their --dry-run prints, their usage errors, shellcheck, and
the device assignment under SLURM that slurm_multihost.sbatch relies on."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
# An override that a careless script would split or unquote.
TRICKY = "--config.sample.captions=(\"A big ball\", \"it's $HOME\")"


def _run(script, *args, env=None):
  return subprocess.run(["bash", str(LAUNCH / script), *args], capture_output=True, text=True,
                        env={**os.environ, **(env or {})}, check=False)


def _argv(line):
  """The words bash reads from a printed command line (printf %q may use $'...')."""
  out = subprocess.run(["bash", "-c", 'printf "%s\\0" ' + line], capture_output=True,
                       check=True)
  return out.stdout.decode().split("\0")[:-1]


def _jax_pin():
  return next(line.split("==")[1] for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line.startswith("jax=="))


def test_gpu_dry_run_prints_the_command_with_every_argument_intact():
  out = _run("gpu.sh", "--dry-run", "configs/x.py", "work dir", TRICKY)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert shlex.split(lines[1]) == ["python", "-m", "pip", "install", "-q",
                                   f"jax[cuda12]=={_jax_pin()}"]
  assert shlex.split(lines[-1]) == ["python", "-m", "gcd_jax.main", "--config=configs/x.py",
                                    "--workdir=work dir", TRICKY]


def test_slurm_runs_one_process_per_gpu_and_refuses_fewer():
  env = {"SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "4"}
  out = _run("slurm_multihost.sbatch", "--dry-run", "configs/x.py", "/shared/w", TRICKY, env=env)
  assert out.returncode == 0, out.stderr
  argv = shlex.split(out.stdout.strip().splitlines()[-1])
  assert argv[:3] == ["srun", "--gpu-bind=none", "--kill-on-bad-exit=1"]
  assert argv[3:] == ["python", "-m", "gcd_jax.main", "--multihost", "--config=configs/x.py",
                      "--workdir=/shared/w", TRICKY]
  out = _run("slurm_multihost.sbatch", "--dry-run", "c", "w",
             env={"SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "8"})
  assert out.returncode == 2 and "one task per GPU (--ntasks-per-node=8)" in out.stderr


def test_tpu_pod_installs_python_311_pins_jax_and_survives_the_ssh_session():
  out = _run("tpu_pod.sh", "--dry-run", "my-tpu", "us-central2-b", "configs/x.py",
             "gs://bucket/w", TRICKY)
  assert out.returncode == 0, out.stderr
  archive, copy, start = (_argv(line) for line in out.stdout.strip().splitlines())
  assert archive[:2] == ["git", "archive"] and copy[-1] == "--worker=all"
  assert start[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  remote = start[start.index("--command") + 1]
  assert "uv python install 3.11" in remote and "uv venv --seed --python 3.11 .venv" in remote
  assert f"'jax[tpu]=={_jax_pin()}'" in remote
  assert "'google-cloud-storage>=2.14'" in remote  # for the gs:// workdir (Orbax)
  [run] = [line for line in remote.splitlines() if line.startswith("nohup ")]
  # The remote shell reads the line: every argument arrives as given.
  argv = shlex.split(run)
  assert argv[:5] == ["nohup", "python", "-m", "gcd_jax.main", "--multihost"]
  assert argv[5:8] == ["--config=configs/x.py", "--workdir=gs://bucket/w", TRICKY]
  assert argv[8:] == [">", "$HOME/gcd_jax_run.log", "2>&1", "<", "/dev/null", "&"]


@pytest.mark.parametrize("script,args", [("gpu.sh", ["c"]), ("slurm_multihost.sbatch", []),
                                         ("tpu_pod.sh", ["tpu", "zone", "c"])])
def test_missing_arguments_print_the_usage(script, args):
  out = _run(script, "--dry-run", *args)
  assert out.returncode == 2 and out.stderr.startswith("usage:")


def test_the_scripts_pass_shellcheck():
  shellcheck = shutil.which("shellcheck") or shutil.which(
      "shellcheck", path=str(pathlib.Path(sys.executable).parent))
  assert shellcheck, "shellcheck not found: install the test extra (pip install -e .[test])"
  scripts = sorted(str(p) for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch"))
  out = subprocess.run([shellcheck, "--shell=bash", *scripts], capture_output=True, text=True,
                       check=False)
  assert out.returncode == 0, out.stdout + out.stderr


def test_jax_gives_each_slurm_task_the_gpu_of_its_local_rank(monkeypatch):
  """What slurm_multihost.sbatch relies on: under SLURM, jax.distributed.initialize()
  sets local_device_ids = [SLURM_LOCALID] (JAX's SLURM cluster detection)."""
  from jax._src import clusters  # pylint: disable=g-import-not-at-top
  for k, v in {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "gpu[003-004]",
               "SLURM_NTASKS": "16", "SLURM_PROCID": "11", "SLURM_LOCALID": "3",
               "SLURM_STEP_NUM_NODES": "2"}.items():
    monkeypatch.setenv(k, v)
  address, count, pid, local = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, None)
  assert (count, pid, list(local)) == (16, 11, [3])
  assert address.startswith("gpu003:")
