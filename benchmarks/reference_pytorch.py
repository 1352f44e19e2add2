"""The released GCDP PyTorch JointUnet at its benchmark size: train-step and sampling speed.

Not part of the project (torch is never a dependency); run it in a separate venv
beside our own benchmarks, with the same thread count and allocator settings:

  python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy einops einops-exts
  # the official sources: a checkout of github.com/pmh9960/GCDP (imagen_pytorch/ is all we need)
  /tmp/torchvenv/bin/python benchmarks/reference_pytorch.py --gcdp_src /path/to/GCDP --threads 2

The architecture (the issue's benchmark settings): JointUnet(dim=64, dim_mults=(1, 2, 4),
num_resnet_blocks=2, layer_attns=(F, F, T), layer_cross_attns=(F, F, T), attn_heads=4,
attn_dim_head=64, ff_mult=2, memory_efficient=True, channels_lbl=3, num_classes=8,
text_embed_dim=256), 32 random text tokens of width 256, Adam, fp32.

  train    forward + backward + Adam step of the U-Net on an MSE (image) plus
           cross-entropy (layout) loss, img/s, at 32x32 batch 32 and 64x64 batch 8;
  sample   50 steps with image and layout guidance at batch 8: the released
           `forward_with_cond_scale` (two passes per step, one after the other),
           the diffusion update itself excluded (it is a few elementwise ops).

The modules joint_imagen.py imports but this benchmark never calls (kornia,
torchvision, transformers) are stubbed, so no further package is needed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import json
import sys
import time
import types


class _AnyMeta(type):

  def __getattr__(cls, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return cls


class _Any(metaclass=_AnyMeta):
  """A placeholder usable as a class, a callable or a namespace."""

  def __init__(self, *args, **kwargs):
    pass

  def __call__(self, *args, **kwargs):
    return self

  def __getattr__(self, name):
    if name.startswith("__"):
      raise AttributeError(name)
    return self


def _stub(name: str) -> None:
  """An importable module whose every attribute is a harmless placeholder."""
  module = types.ModuleType(name)
  module.__path__ = []  # a package: submodules import too
  module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)

  def getattr_(attr):
    if attr.startswith("__"):
      raise AttributeError(attr)
    return _Any

  module.__getattr__ = getattr_
  sys.modules[name] = module


def load_joint_unet(src: str):
  for name in ("kornia", "kornia.augmentation", "torchvision", "torchvision.transforms",
               "transformers", "tqdm", "tqdm.auto"):
    try:
      importlib.import_module(name)
    except ImportError:
      _stub(name)
  sys.path.insert(0, src)
  # Import the module file directly: the package __init__ pulls in the trainer.
  spec = importlib.util.spec_from_file_location(
      "imagen_pytorch", f"{src}/imagen_pytorch/__init__.py",
      submodule_search_locations=[f"{src}/imagen_pytorch"])
  pkg = importlib.util.module_from_spec(spec)
  sys.modules["imagen_pytorch"] = pkg  # without running __init__
  return importlib.import_module("imagen_pytorch.joint_imagen").JointUnet


def build(JointUnet, torch):
  torch.manual_seed(0)
  return JointUnet(dim=64, dim_mults=(1, 2, 4), num_resnet_blocks=2,
                   layer_attns=(False, False, True), layer_cross_attns=(False, False, True),
                   attn_heads=4, attn_dim_head=64, ff_mult=2.0, memory_efficient=True,
                   channels_lbl=3, num_classes=8, text_embed_dim=256, cond_on_text=True)


def bench_train(torch, unet, size, batch, steps, text_len=32):
  opt = torch.optim.Adam(unet.parameters(), lr=1e-4, betas=(0.9, 0.99))
  x = torch.randn(batch, 3, size, size)
  lbl = torch.randint(0, 8, (batch, 1, size, size))
  t = torch.rand(batch)
  text = torch.randn(batch, text_len, 256)
  mask = torch.ones(batch, text_len, dtype=torch.bool)
  target = torch.randn_like(x)
  target_lbl = torch.randint(0, 8, (batch, size, size))
  unet.train()

  def step():
    opt.zero_grad(set_to_none=True)
    out, seg = unet(x, lbl, t, text_embeds=text, text_mask=mask, cond_drop_prob=0.1)
    loss = torch.nn.functional.mse_loss(out, target) + torch.nn.functional.cross_entropy(seg, target_lbl)
    loss.backward()
    opt.step()

  for _ in range(2):
    step()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  dt = (time.perf_counter() - t0) / steps
  return batch / dt


def bench_sample(torch, unet, size, batch=8, steps=50, text_len=32):
  x = torch.randn(batch, 3, size, size)
  lbl = torch.randint(0, 8, (batch, 1, size, size))
  text = torch.randn(batch, text_len, 256)
  mask = torch.ones(batch, text_len, dtype=torch.bool)
  unet.eval()
  with torch.no_grad():
    unet.forward_with_cond_scale(x, lbl, torch.rand(batch), text_embeds=text, text_mask=mask,
                                 cond_scale=3.0)
    t0 = time.perf_counter()
    for i in range(steps):
      t = torch.full((batch,), 1 - i / steps)
      out, seg = unet.forward_with_cond_scale(x, lbl, t, text_embeds=text, text_mask=mask,
                                              cond_scale=3.0)
      x = 0.98 * x + 0.02 * out
      lbl = seg.argmax(1, keepdim=True)
    return time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--gcdp_src", required=True, help="a checkout of the official GCDP repository")
  p.add_argument("--threads", type=int, default=2)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--json", default=None, help="also write the numbers to this file")
  args = p.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  unet = build(load_joint_unet(args.gcdp_src), torch)
  n_params = sum(q.numel() for q in unet.parameters())
  out = {"params": n_params, "threads": args.threads, "torch": torch.__version__}
  out["train_32_b32_img_s"] = bench_train(torch, unet, 32, 32, args.steps)
  out["train_64_b8_img_s"] = bench_train(torch, unet, 64, 8, args.steps)
  out["sample_32_b8_50_s"] = bench_sample(torch, unet, 32)
  out["sample_64_b8_50_s"] = bench_sample(torch, unet, 64)
  print(json.dumps(out, indent=1))
  if args.json:
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
