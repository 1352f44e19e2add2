"""Shared test settings and fixtures: CPU only, no network, 8 forced host devices.

The environment is set before anything imports JAX: the sharding tests need
several devices, and a run of the suite must never reach the network.
"""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
# The suite is bound by XLA compilation, most of it LLVM's optimisation of tiny
# programs that then run for milliseconds: without it the suite takes ~30 % less
# wall time. Every assertion holds either way (GCD_JAX_TEST_XLA_OPT=1 keeps the
# optimising backend, as users run it).
if (os.environ.get("GCD_JAX_TEST_XLA_OPT", "0") in ("0", "")
    and "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]):
  os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
# Identical programs compiled by several tests (the train step of two runs that
# are compared, the same tiny config in several files) are compiled once per run
# of the suite: the pytest-xdist workers and the subprocesses they start share
# one cache directory (a reader that meets a half-written entry recompiles).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
if _RUN and _RUN.isalnum():
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                        os.path.join(tempfile.gettempdir(), f"gcd_jax_xla_cache_{_RUN}"))
  os.makedirs(os.environ["JAX_COMPILATION_CACHE_DIR"], exist_ok=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="gcd_jax_xla_cache_"))
# Caption stores (~/.cache/gcd_jax/text_store by default) go to a fresh temporary directory.
os.environ["GCD_JAX_CACHE_DIR"] = tempfile.mkdtemp(prefix="gcd_jax_test_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import fcntl  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib.util  # pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import pickle  # pylint: disable=g-import-not-at-top,wrong-import-position
import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from gcd_jax import compilation_cache  # pylint: disable=g-import-not-at-top,wrong-import-position

# As the command-line entry points do (the tests trace and load many programs).
compilation_cache.tune_gc()

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY_BERT = REPO / "tests" / "models" / "golden" / "text_encoders" / "bert_tiny"


@pytest.fixture(scope="session")
def scenes_data_dir(tmp_path_factory):
  """A prepared synthetic_scenes/32_mini (200 train, 100 test) in a TFDS data dir."""
  from tfds_builders.synthetic_scenes import SyntheticScenes  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp("tfds")
  SyntheticScenes(data_dir=str(data_dir), config="32_mini", file_format="array_record").download_and_prepare()
  return str(data_dir)


def load_config(name):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_config(data_dir, **train_overrides):
  """The shapes config shrunk for tests: tiny U-Net at 16x16, tiny BERT, 4 steps."""
  from gcd_jax.models import presets  # pylint: disable=g-import-not-at-top
  c = load_config("shapes")
  c.data.config = "32_mini"
  c.data.data_dir = data_dir
  c.data.batch_size = 8
  c.data.height = c.data.width = 16
  c.text.encoder = str(TINY_BERT)
  c.text.max_length = 8
  c.model = presets.get_preset("tiny", num_classes=8, text_dim=32).to_dict()
  c.optimizer.warmup_steps = 2
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.sample_every = 0
  c.train.eval_every = 0  # (shapes evaluates 100 samples at the last step; test_main_end_to_end covers it)
  c.mesh.data = 1  # one device: the 1-vs-8 test covers sharding, and this compiles fastest
  c.train.update(train_overrides)
  return c


def _built_once_per_suite(tmp_path_factory, name, build):
  """A directory that `build(path)` fills, built once per run of the suite.

  Under pytest-xdist the first worker that asks builds it (the others wait on a
  lock) in the run's shared temporary directory; every worker gets its own
  copy, so that what one test writes into it no other worker sees. The data
  dir it may point at is each worker's own `scenes_data_dir`: equal content.
  """
  mine = tmp_path_factory.getbasetemp() / name
  if os.environ.get("PYTEST_XDIST_WORKER") is None:
    mine.mkdir()
    build(mine)
    return mine
  shared = tmp_path_factory.getbasetemp().parent / f"shared_{name}"
  with open(f"{shared}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not shared.is_dir():
      partial = shared.with_name(shared.name + ".partial")
      shutil.rmtree(partial, ignore_errors=True)
      partial.mkdir()
      build(partial)
      partial.rename(shared)
  shutil.copytree(shared, mine)
  return mine


@pytest.fixture(scope="session")
def tiny_run_dir(scenes_data_dir, tmp_path_factory):
  """A workdir with a 4-step tiny run (checkpoints 1, 2, 4; sampling: 4 steps), for sampling and
  evaluation tests: the tiny config's own train step, which other tests compile too."""
  from gcd_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(scenes_data_dir)
  config.sample.steps = config.sample.repaint_steps = 4
  return _built_once_per_suite(tmp_path_factory, "tiny_run",
                               lambda workdir: train.train_and_evaluate(config, str(workdir)))


@pytest.fixture(scope="session")
def tiny_image_only_run_dir(scenes_data_dir, tmp_path_factory):
  """A 2-step image-only run (the paper's baseline) with a scratch text encoder: (workdir, params)."""
  from gcd_jax import train  # pylint: disable=g-import-not-at-top
  config = tiny_config(scenes_data_dir, num_steps=2)
  config.model.num_classes = 0
  config.text.encoder = "scratch"
  config.text.max_length = 24
  config.sample.steps = config.sample.repaint_steps = 4

  def build(workdir):
    state = train.train_and_evaluate(config, str(workdir))
    # The trained parameters (not only their EMA, which the checkpoint's users load).
    with open(workdir / "trained_params.pkl", "wb") as f:
      pickle.dump(jax.device_get(state.params), f)

  workdir = _built_once_per_suite(tmp_path_factory, "tiny_image_only_run", build)
  with open(workdir / "trained_params.pkl", "rb") as f:
    return workdir, pickle.load(f)


def random_batch(config, seed=0):
  """A batch of random arrays of the config's shapes (train-step tests, no dataset)."""
  rng = np.random.default_rng(seed)
  b, h, w = config.data.batch_size, config.data.height, config.data.width
  return {
      "image": rng.uniform(-1, 1, (b, h, w, 3)).astype(np.float32),
      "layout": rng.integers(0, config.model.num_classes, (b, h, w)).astype(np.int32),
      "text": rng.normal(size=(b, config.text.max_length, config.model.text_dim)).astype(np.float32),
      "text_mask": np.arange(config.text.max_length)[None] < rng.integers(1, config.text.max_length, (b, 1)),
  }


# The longest test files, longest first (seconds of test time under
# `-n 2 --dist loadfile`, measured 2026-12-03). pytest-xdist hands out one file
# at a time to whichever worker runs low, so starting with these keeps a long
# file from running alone at the end (longest processing time first); the
# rest follow in collection order.
_LONGEST_FILES = (
    "test_train_loop.py", "test_cascade.py", "test_evaluate.py", "test_main.py",
    "test_convert_gcdp.py", "test_multiprocess.py", "test_sampling.py", "test_lowres.py",
    "test_train.py", "test_segnet.py", "test_sample_cli.py", "test_train_setup_cache.py",
)


def pytest_configure(config):
  # Keep the order below (xdist otherwise sorts files by their number of tests).
  if hasattr(config.option, "loadscopereorder"):
    config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_LONGEST_FILES)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable)
