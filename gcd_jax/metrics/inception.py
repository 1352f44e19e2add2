"""The FID Inception v3 network in linen: uint8 images -> 2048-d pool3 features.

    variables, digest = load_variables("/ckpt/fid_inception.safetensors")
    net = FIDInceptionV3()
    features = net.apply(variables, images)   # [N, H, W, 3] uint8 -> [N, 2048] float32

`gcd_jax.metrics.fid.InceptionFeatures` wraps this with batching, one compiled
program per batch size, and a cache identity; use that for FID and KID.

The network is the TensorFlow Inception graph of 2015-12-05 that the original FID
code (Heusel et al. 2017, TTUR) uses, as ported to PyTorch by pytorch-fid
(`pytorch_fid.inception.fid_inception_v3`): torchvision's Inception3 blocks with
the FID-specific patches

  * InceptionA / C / E_1 (Mixed_5b-d, 6b-e, 7b): the pool branch averages a 3x3
    window WITHOUT counting the zero padding (TF's avg_pool, count_include_pad=False);
  * InceptionE_2 (Mixed_7c): the pool branch is a 3x3 MAX pool (stride 1, pad 1);
  * every conv is bias-free, followed by BatchNorm with eps 1e-3 and a ReLU;
  * the input, in [0, 1], is resized bilinearly (half-pixel centres, no
    antialiasing: torch's F.interpolate(..., align_corners=False)) to 299x299 and
    scaled to [-1, 1];
  * the features are the global average of Mixed_7c: [N, 2048] (pool3).

Features therefore match pytorch-fid's. They match the TF code of TTUR exactly
only for images already 299x299: TF's legacy bilinear resize samples differently,
which moves FIDs slightly (pytorch-fid's README says the same).

`resize_to` (default 299) exists so that tests can run the architecture at a
smaller size (75 is the smallest that the strides allow); any other value gives
numbers that are not FID. Arrays are NHWC.

Weight file
-----------
A `.safetensors` (what tools/convert_fid_inception.py writes) or a `.npz`, holding
the pytorch-fid state_dict tensors under their pytorch-fid names and in torch's
layouts, float32 (other float dtypes are upcast):

  <block>.conv.weight        [out, in, kh, kw]   -> params    .../conv/kernel [kh, kw, in, out]
  <block>.bn.weight          [out]               -> params    .../bn/scale
  <block>.bn.bias            [out]               -> params    .../bn/bias
  <block>.bn.running_mean    [out]               -> batch_stats .../bn/mean
  <block>.bn.running_var     [out]               -> batch_stats .../bn/var

for the 94 blocks `Conv2d_1a_3x3`, ..., `Mixed_5b.branch1x1`, ...,
`Mixed_7c.branch_pool` (470 tensors; `tensor_shapes()` lists them all). The
classifier (`fc.*`), `AuxLogits.*` and `*.num_batches_tracked` are ignored if
present; any other tensor, a missing one or a wrong shape is an
`InceptionWeightsError` naming the file and the tensor.

Converting the standard FID weights (torch is needed only for this, in its own venv):

  # on a machine with network: the file pytorch-fid downloads
  wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  python3.11 -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch==2.13.0 safetensors numpy
  /tmp/torchvenv/bin/python tools/convert_fid_inception.py \
      pt_inception-2015-12-05-6726825d.pth fid_inception.safetensors
  # then, in the gcd_jax environment:
  python -m gcd_jax.evaluate --workdir=workdirs/shapes --inception=fid_inception.safetensors
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 2048
FID_RESIZE = 299
MIN_RESIZE = 75  # smaller inputs vanish in the stride-2 stages
NUM_CLASSES = 1008  # of the FID graph's classifier, which we never run
# Present in a pytorch-fid state_dict but not used for pool3 features.
IGNORED_PREFIXES = ("fc.", "AuxLogits.")
IGNORED_SUFFIXES = (".num_batches_tracked",)

# flax (collection, leaf) <-> torch suffix of one BasicConv2d.
_LEAVES = (
    ("params", ("conv", "kernel"), "conv.weight"),
    ("params", ("bn", "scale"), "bn.weight"),
    ("params", ("bn", "bias"), "bn.bias"),
    ("batch_stats", ("bn", "mean"), "bn.running_mean"),
    ("batch_stats", ("bn", "var"), "bn.running_var"),
)


class InceptionWeightsError(ValueError):
  """A weight file that does not hold the FID Inception; the message says where and why."""


class BasicConv2d(nn.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=((ph, ph), (pw, pw)), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3(x):
  # TF's average pool divides by the number of real (unpadded) pixels in the window.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_stride2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  """Mixed_5b-d (35x35 at 299): 1x1, 5x5, double 3x3 and pool branches."""
  pool_features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: grid reduction 35 -> 17."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv2d(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-e (17x17): factorised 7x7 branches."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: grid reduction 17 -> 8."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (pool="avg", FIDInceptionE_1) and Mixed_7c (pool="max", FIDInceptionE_2)."""
  pool: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)],
                         axis=-1)
    if self.pool == "avg":
      pooled = _avg_pool_3x3(x)
    elif self.pool == "max":
      # The FID graph max-pools here (likely a bug in that graph, kept for comparability).
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"InceptionE.pool must be 'avg' or 'max', got {self.pool!r}")
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def preprocess(images: jax.Array, size: int = FID_RESIZE) -> jax.Array:
  """uint8 [N, H, W, 3] -> float32 [N, size, size, 3] in [-1, 1], as pytorch-fid does.

  Bilinear with half-pixel centres and NO antialiasing (torch's F.interpolate(...,
  mode="bilinear", align_corners=False) on images in [0, 1]), then 2x - 1.
  """
  n, h, w, c = images.shape
  x = images.astype(jnp.float32) / 255.0
  if (h, w) != (size, size):
    x = jax.image.resize(x, (n, size, size, c), method="linear", antialias=False)
  return 2.0 * x - 1.0


class FIDInceptionV3(nn.Module):
  """uint8 images [N, H, W, 3] (any H, W) -> pool3 features [N, 2048] float32.

  Attributes:
    resize_to: side of the square the images are resized to; 299 for FID. Smaller
      values (>= 75) only to test the architecture cheaply.
  """
  resize_to: int = FID_RESIZE

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"expected images [N, H, W, 3], got shape {images.shape}")
    if self.resize_to < MIN_RESIZE:
      raise ValueError(f"resize_to={self.resize_to}: the network needs at least {MIN_RESIZE}")
    x = preprocess(images, self.resize_to)
    x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)         # 149
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)                    # 147
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)    # 147
    x = _max_pool_3x3_stride2(x)                                            # 73
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)                    # 73
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)                   # 71
    x = _max_pool_3x3_stride2(x)                                            # 35
    x = InceptionA(32, name="Mixed_5b")(x)                                  # 35, 256
    x = InceptionA(64, name="Mixed_5c")(x)                                  # 35, 288
    x = InceptionA(64, name="Mixed_5d")(x)                                  # 35, 288
    x = InceptionB(name="Mixed_6a")(x)                                      # 17, 768
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)                                 # 17, 768
    x = InceptionD(name="Mixed_7a")(x)                                      # 8, 1280
    x = InceptionE("avg", name="Mixed_7b")(x)                               # 8, 2048
    x = InceptionE("max", name="Mixed_7c")(x)                               # 8, 2048
    return jnp.mean(x, axis=(1, 2))                                         # [N, 2048]


@functools.lru_cache(maxsize=1)
def _variable_shapes() -> dict[str, Any]:
  shapes = jax.eval_shape(FIDInceptionV3(resize_to=MIN_RESIZE).init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, MIN_RESIZE, MIN_RESIZE, 3), jnp.uint8))
  return jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes,
                                is_leaf=lambda s: isinstance(s, jax.ShapeDtypeStruct))


def _blocks() -> list[tuple[str, ...]]:
  """Module path of every BasicConv2d, e.g. ("Mixed_5b", "branch1x1"), in a fixed order."""
  out = []

  def walk(tree, path):
    if "conv" in tree:
      out.append(path)
      return
    for k in sorted(tree):
      walk(tree[k], path + (k,))

  walk(_variable_shapes()["params"], ())
  return out


def _torch_shape(leaf: tuple[str, str], shape: tuple[int, ...]) -> tuple[int, ...]:
  if leaf == ("conv", "kernel"):  # flax HWIO <- torch OIHW
    kh, kw, cin, cout = shape
    return (cout, cin, kh, kw)
  return shape


def tensor_shapes() -> dict[str, tuple[int, ...]]:
  """Every tensor the weight file must hold: pytorch-fid name -> torch shape."""
  shapes = _variable_shapes()
  out = {}
  for block in _blocks():
    for collection, leaf, suffix in _LEAVES:
      node = shapes[collection]
      for k in block + leaf:
        node = node[k]
      out[".".join(block) + "." + suffix] = _torch_shape(leaf, node)
  return out


def _is_ignored(name: str) -> bool:
  return name.startswith(IGNORED_PREFIXES) or name.endswith(IGNORED_SUFFIXES)


def _read_tensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  if not path.is_file():
    raise InceptionWeightsError(
        f"{path}: no such file. Convert the FID Inception weights with "
        "tools/convert_fid_inception.py (see gcd_jax/metrics/inception.py).")
  if path.suffix == ".safetensors":
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
      raise InceptionWeightsError(f"{path}: not a readable safetensors file ({e})") from e
  if path.suffix == ".npz":
    try:
      with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
      raise InceptionWeightsError(f"{path}: not a readable .npz file ({e})") from e
  raise InceptionWeightsError(
      f"{path}: unknown weight format {path.suffix!r}; expected .safetensors (written by "
      "tools/convert_fid_inception.py) or .npz, with pytorch-fid tensor names")


def load_variables(path: str | pathlib.Path) -> tuple[dict[str, Any], str]:
  """Reads a weight file into linen variables for FIDInceptionV3.

  Returns:
    variables: {"params": ..., "batch_stats": ...} of numpy float32 arrays.
    digest: sha256 (hex) of every tensor's name, shape and float32 bytes, in a
      fixed order: the same weights give the same digest in either file format.

  Raises:
    InceptionWeightsError: unreadable file, missing or unexpected tensor, wrong
      shape (names the file, the tensor, expected and found shapes).
  """
  path = pathlib.Path(path)
  tensors = _read_tensors(path)
  fc = tensors.get("fc.weight")
  if fc is not None and tuple(fc.shape) != (NUM_CLASSES, FEATURE_DIM):
    raise InceptionWeightsError(
        f"{path}: tensor 'fc.weight' has shape {tuple(fc.shape)}, expected "
        f"{(NUM_CLASSES, FEATURE_DIM)}: this looks like another Inception (torchvision's "
        "ImageNet weights have 1000 classes), not the FID one (pt_inception-2015-12-05)")
  expected = tensor_shapes()
  unexpected = sorted(k for k in tensors if k not in expected and not _is_ignored(k))
  if unexpected:
    raise InceptionWeightsError(
        f"{path}: unexpected tensors {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''} "
        f"({len(unexpected)} in all); expected pytorch-fid FID Inception names such as "
        "'Mixed_5b.branch1x1.conv.weight'")
  variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
  h = hashlib.sha256()
  for block in _blocks():
    for collection, leaf, suffix in _LEAVES:
      name = ".".join(block) + "." + suffix
      if name not in tensors:
        missing = sum(k not in tensors for k in expected)
        raise InceptionWeightsError(
            f"{path}: tensor {name!r} is missing ({missing} of {len(expected)} FID "
            "Inception tensors are missing)")
      value = np.asarray(tensors[name])
      if tuple(value.shape) != expected[name]:
        raise InceptionWeightsError(
            f"{path}: tensor {name!r} has shape {tuple(value.shape)}, expected {expected[name]}")
      if not np.issubdtype(value.dtype, np.floating):
        raise InceptionWeightsError(f"{path}: tensor {name!r} has dtype {value.dtype}, expected float")
      value = value.astype(np.float32)
      h.update(f"{name}{value.shape}".encode())
      h.update(np.ascontiguousarray(value).tobytes())
      if leaf == ("conv", "kernel"):
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      node = variables[collection]
      for k in block + leaf[:-1]:
        node = node.setdefault(k, {})
      node[leaf[-1]] = value
  return variables, h.hexdigest()


def save_random_weights(path: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
  """Writes a weight file of random tensors with the FID Inception names and shapes.

  For tests (the real weights cannot be shipped). Convs are He-normal and the
  BatchNorm statistics near identity, so that activations neither vanish nor
  explode through the ~50 layers and every tensor affects the features. The
  format follows the suffix: .safetensors or .npz.
  """
  path = pathlib.Path(path)
  rng = np.random.default_rng(seed)
  tensors = {}
  for name, shape in tensor_shapes().items():
    if name.endswith("conv.weight"):
      fan_in = int(np.prod(shape[1:]))
      value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    elif name.endswith("bn.weight"):
      value = rng.uniform(0.8, 1.2, shape).astype(np.float32)
    elif name.endswith("bn.running_var"):
      value = rng.uniform(0.8, 1.5, shape).astype(np.float32)
    else:  # bn.bias, bn.running_mean
      value = (0.1 * rng.standard_normal(shape)).astype(np.float32)
    tensors[name] = value
  from gcd_jax import fileio  # pylint: disable=g-import-not-at-top
  if path.suffix == ".safetensors":
    from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
    fileio.atomic_write(path, save(tensors, metadata={"format": "gcd_jax.fid_inception",
                                                      "source": f"random seed={seed}"}))
  elif path.suffix == ".npz":
    fileio.atomic_write_npz(path, tensors, compressed=False)
  else:
    raise ValueError(f"{path}: use a .safetensors or .npz suffix")
  return path
