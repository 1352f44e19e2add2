"""Writes fid_inception.npz, the PyTorch reference used by tests/metrics/test_fid.py.

The real FID weights cannot be shipped, so the reference runs pytorch-fid's network
on random weights that the test can regenerate bit for bit. Two interpreters:
the project venv writes the weights, the separate PyTorch venv of
make_text_encoder_goldens.py (torch must never be a dependency of gcd_jax) runs them:

  cd <repo>
  /work/venv/bin/python -c "from gcd_jax.metrics import inception; \\
      inception.save_random_weights('/tmp/fid_random.safetensors', seed=0)"
  /work/torchvenv/bin/python tests/metrics/golden/make_fid_inception_golden.py \\
      --weights /tmp/fid_random.safetensors

The torch network below is pytorch-fid's `InceptionV3(output_blocks=[3])` built by
`fid_inception_v3()`: torchvision's BasicConv2d / InceptionB / InceptionD blocks
and pytorch-fid's FIDInceptionA / C / E_1 / E_2, transcribed (torchvision is not
installable next to this torch) with torchvision's attribute names, so that
`load_state_dict(strict=True)` also checks the names and shapes of the file.

fid_inception.npz holds:
  weights_sha256      sha256 of every tensor's name and float32 bytes, names in
                      sorted order (the test checks that save_random_weights(seed=0)
                      still draws the same weights)
  resize_to           139 (the architecture test size; FID itself uses 299)
  images              uint8 [2, 50, 61, 3]: a noisy gradient, a smooth pattern
  features            [2, 2048] float32: pool3 of pytorch-fid's forward with
                      F.interpolate to resize_to (bilinear, align_corners=False)
  down_images / down  uint8 [2, 41, 47, 3] / float32 [2, 29, 29, 3] NHWC: the
                      input transform (resize to 29, 2x - 1) when shrinking
  up_images / up      uint8 [2, 13, 17, 3] / float32 [2, 29, 29, 3]: when enlarging
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from torch import nn

OUT = pathlib.Path(__file__).resolve().parent / "fid_inception.npz"
RESIZE_TO = 139


class BasicConv2d(nn.Module):

  def __init__(self, in_channels, out_channels, **kwargs):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
    self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

  def forward(self, x):
    return F.relu(self.bn(self.conv(x)))


class FIDInceptionA(nn.Module):

  def __init__(self, in_channels, pool_features):
    super().__init__()
    self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
    self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
    self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
    self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
    branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    branch_pool = self.branch_pool(branch_pool)
    return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):

  def __init__(self, in_channels):
    super().__init__()
    self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

  def forward(self, x):
    branch3x3 = self.branch3x3(x)
    branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
    return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(nn.Module):

  def __init__(self, in_channels, channels_7x7):
    super().__init__()
    c7 = channels_7x7
    self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
    self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
    self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    b = self.branch7x7dbl_1(x)
    b = self.branch7x7dbl_2(b)
    b = self.branch7x7dbl_3(b)
    b = self.branch7x7dbl_4(b)
    branch7x7dbl = self.branch7x7dbl_5(b)
    branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    branch_pool = self.branch_pool(branch_pool)
    return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):

  def __init__(self, in_channels):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
    self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

  def forward(self, x):
    branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
    b = self.branch7x7x3_1(x)
    b = self.branch7x7x3_2(b)
    b = self.branch7x7x3_3(b)
    branch7x7x3 = self.branch7x7x3_4(b)
    branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
    return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class FIDInceptionE(nn.Module):
  """FIDInceptionE_1 (max_pool=False) and FIDInceptionE_2 (max_pool=True)."""

  def __init__(self, in_channels, max_pool):
    super().__init__()
    self.max_pool = max_pool
    self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
    self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
    self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

  def forward(self, x):
    branch1x1 = self.branch1x1(x)
    branch3x3 = self.branch3x3_1(x)
    branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
    branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl),
                              self.branch3x3dbl_3b(branch3x3dbl)], 1)
    if self.max_pool:
      branch_pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    else:
      branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    branch_pool = self.branch_pool(branch_pool)
    return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionV3(nn.Module):
  """pytorch-fid InceptionV3(output_blocks=[3]) with fid_inception_v3()'s modules."""

  def __init__(self):
    super().__init__()
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
    self.Mixed_5b = FIDInceptionA(192, pool_features=32)
    self.Mixed_5c = FIDInceptionA(256, pool_features=64)
    self.Mixed_5d = FIDInceptionA(288, pool_features=64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = FIDInceptionE(1280, max_pool=False)
    self.Mixed_7c = FIDInceptionE(2048, max_pool=True)

  def forward(self, x):
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
      x = getattr(self, f"Mixed_{name}")(x)
    return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def weights_digest(arrays) -> str:
  h = hashlib.sha256()
  for name in sorted(arrays):
    h.update(name.encode() + np.ascontiguousarray(arrays[name], np.float32).tobytes())
  return h.hexdigest()


def transform(images: np.ndarray, size: int) -> torch.Tensor:
  """pytorch-fid's input path: ToTensor (/255), F.interpolate bilinear, 2x - 1. NCHW."""
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
  x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
  return 2 * x - 1


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--weights", required=True, help="save_random_weights(seed=0) output")
  args = parser.parse_args()
  weights = pathlib.Path(args.weights)
  torch.manual_seed(0)
  model = FIDInceptionV3().eval()
  arrays = load_file(str(weights))
  state = {k: torch.from_numpy(v) for k, v in arrays.items()}
  model.load_state_dict(state, strict=False)  # strict below, minus num_batches_tracked
  expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
  if expected != set(state):
    raise SystemExit(f"names differ: {sorted(expected ^ set(state))[:10]}")

  rng = np.random.default_rng(1234)
  # A noisy gradient and a smooth pattern: images far apart, unlike two noise images.
  yy, xx = np.mgrid[0:50, 0:61] / 61.0
  noisy = np.stack([200 * xx, 60 * yy, 30 + 0 * xx], -1) + rng.normal(0, 25, (50, 61, 3))
  smooth = np.stack([128 + 100 * np.sin(12 * xx), 128 + 100 * np.cos(9 * yy), 220 + 0 * xx], -1)
  images = np.clip(np.stack([noisy, smooth]), 0, 255).astype(np.uint8)
  down_images = rng.integers(0, 256, (2, 41, 47, 3), dtype=np.uint8)
  up_images = rng.integers(0, 256, (2, 13, 17, 3), dtype=np.uint8)
  with torch.no_grad():
    features = model(transform(images, RESIZE_TO)).numpy()
  nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()
  np.savez(OUT,
           weights_sha256=weights_digest(arrays),
           resize_to=RESIZE_TO, images=images, features=features,
           down_images=down_images, down=nhwc(transform(down_images, 29)),
           up_images=up_images, up=nhwc(transform(up_images, 29)))
  print(f"wrote {OUT}: features mean {features.mean():.4f} std {features.std():.4f} "
        f"min {features.min():.4f} max {features.max():.4f}")


if __name__ == "__main__":
  main()
