"""A workdir on cloud storage (gs://): no code path turns the URL into a local path.

The fake bucket: `etils.epath.testing.mock_epath` sends every epath operation on
`gs://bucket/...` to a local directory (`remote/`), and records it. What reaches
GCS without epath gets the same redirection: orbax's tensorstore GCS driver spec
(array data) and its bucket-layout query, and clu's TensorBoard writer (its log
directory). All of our own code runs unchanged. The test runs in an empty current directory: a
`pathlib.Path("gs://bucket/run")` would have created `./gs:/bucket/run` there.
"""

import json
import os
import signal

import numpy as np
import pytest
from etils import epath
from etils.epath import testing as epath_testing

from gcd_jax import fileio
from gcd_jax import run as run_lib
from gcd_jax import sample
from gcd_jax import train
from gcd_jax import visualize
from gcd_jax.metrics import fid
from gcd_jax.models.text import scratch

from conftest import tiny_config  # pylint: disable=g-bad-import-order

URL = "gs://bucket"


class FakeBucket:
  """gs://bucket/<key> <-> <root>/<key>, with a log of the URLs used."""

  def __init__(self, root):
    self.root = str(root)
    self.urls = []
    self.mangled = []  # local paths that look like a URL gone through pathlib

  def local(self, path):
    path = os.fspath(path)
    if path.startswith(URL + "/") or path == URL:
      self.urls.append(path)
      return self.root + path[len(URL):]
    if "gs:/" in path:
      self.mangled.append(path)
    return path

  def url(self, local_path):
    local_path = os.fspath(local_path)
    return URL + local_path[len(self.root):] if local_path.startswith(self.root) else local_path

  def mock(self):
    def paths(original, path, *args, **kwargs):
      args = [self.local(a) if isinstance(a, (str, os.PathLike)) else a for a in args]
      return original(self.local(path), *args, **kwargs)

    def glob(original, pattern):
      return [self.url(p) for p in original(self.local(pattern))]

    def walk(original, top, **kwargs):
      for d, dirs, files in original(self.local(top), **kwargs):
        yield self.url(d), dirs, files

    names = ("copy", "exists", "isdir", "listdir", "makedirs", "mkdir", "open", "remove",
             "rename", "replace", "rmtree", "stat")
    return epath_testing.mock_epath(glob=glob, walk=walk, **{n: paths for n in names})


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  fake = FakeBucket(tmp_path / "remote")
  os.makedirs(fake.root)
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  # With TensorFlow installed, epath sends gs:// to tf.io.gfile whatever mock_epath says.
  from etils.epath import gpath  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  # orbax's array data: tensorstore's own GCS driver -> a file driver in the bucket.
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(gcs_utils, "get_kvstore_for_gcs",
                      lambda path: {"driver": "file", "path": fake.local(path)})
  # orbax asks google-cloud-storage for the bucket's layout: a plain (flat) bucket.
  monkeypatch.setattr(gcs_utils, "get_bucket",
                      lambda name: type("Bucket", (), {"hierarchical_namespace_enabled": False}))
  # clu's TensorBoard writer (tf.io.gfile): the log directory it is given.
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  real_writer = metric_writers.create_default_writer
  monkeypatch.setattr(train.metric_writers, "create_default_writer",
                      lambda logdir, **kw: real_writer(fake.local(logdir), **kw))
  with fake.mock():
    yield fake
  assert os.listdir(cwd) == [], "something was written under the current directory"
  assert not fake.mangled, fake.mangled[:5]


def test_writes_reads_and_renames_stay_in_the_bucket(bucket):
  assert fileio.as_path(f"{URL}/a/b.json") == epath.Path(f"{URL}/a/b.json")
  assert fileio.is_url(f"{URL}/a") and not fileio.is_url("a/gs")
  fileio.atomic_write_text(f"{URL}/a/b.json", json.dumps({"x": 1}))
  assert json.loads(epath.Path(f"{URL}/a/b.json").read_text()) == {"x": 1}
  # Written to a temporary name beside it, then renamed; nothing else left there.
  assert os.listdir(os.path.join(bucket.root, "a")) == ["b.json"]
  assert any(u.startswith(f"{URL}/a/.b.json.tmp-") for u in bucket.urls)

  visualize.save_png(np.zeros((4, 4, 3), np.uint8), f"{URL}/png/x.png")
  assert os.path.getsize(os.path.join(bucket.root, "png", "x.png")) > 0

  tokenizer = scratch.WordTokenizer.build(["a red ball", "a blue cube"], max_length=6)
  tokenizer.save(f"{URL}/run/text_tokenizer.json")
  assert scratch.WordTokenizer.load(f"{URL}/run/text_tokenizer.json").vocab == tokenizer.vocab

  feats = np.random.default_rng(0).normal(size=(20, 3))
  ref = fid.Reference.from_features("k", "id", feats)
  path = fid.cache_path(f"{URL}/ref", "k", "id")
  fid._write_atomically(path, ref)  # pylint: disable=protected-access
  np.testing.assert_array_equal(fid._read_cache(path, "k", "id").mu, ref.mu)  # pylint: disable=protected-access


def test_train_resume_and_sample_with_a_gs_workdir(bucket, scenes_data_dir):
  workdir = f"{URL}/runs/tiny"
  # (The tiny config's 4 steps: the train step other tests compile too.)
  config = tiny_config(scenes_data_dir, checkpoint_every=1)
  config.sample.steps = config.sample.repaint_steps = 4

  def preempt_at_2(step):
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  assert int(train.train_and_evaluate(config, workdir, step_hooks=[preempt_at_2]).step) == 2
  local = os.path.join(bucket.root, "runs", "tiny")
  assert sorted(os.listdir(os.path.join(local, "checkpoints"))) == ["1", "2"]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(local))
  # Resuming reads the checkpoint back from the bucket.
  assert int(train.train_and_evaluate(config, workdir).step) == 4

  r = run_lib.load(workdir)
  assert r.step == 4 and str(r.workdir) == workdir
  out = f"{URL}/samples"
  assert sample.main(["--workdir", workdir, "--text=A red ball.", "--out", out,
                      "--batch_size=2", "--samples_per_caption=2"]) == 0
  manifest = json.loads(epath.Path(f"{out}/manifest.json").read_text())
  assert manifest["workdir"] == workdir and len(manifest["samples"]) == 2
  assert {"0000_image.png", "0001_layout.png", "grid.png"} <= set(
      os.listdir(os.path.join(bucket.root, "samples")))
