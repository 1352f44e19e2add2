"""Makes the golden files of tests/models/test_convert_gcdp.py from the official GCDP code.

Run once, in a separate venv with torch (never a dependency of gcd_jax):

  python3.11 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 numpy einops einops-exts
  # the official sources: a checkout of github.com/pmh9960/GCDP
  /tmp/torchvenv/bin/python tests/models/golden/make_gcdp_goldens.py --gcdp_src /path/to/GCDP

For the base and the SR stage it builds the official `BaseJointUnet` /
`SRJointUnet` with random weights, scaled down (the released constructor
arguments with smaller widths and depths, the same block types: cross-embed
input, PerceiverResampler, time tokens, global-context residual blocks,
multi-query attention, pixel (un)shuffle, the SR stage's low-res inputs), and
writes into tests/models/golden/gcdp/:

  <stage>.pt      the file JointImagenTrainer.save writes: `model` (the JointImagen
                  state dict: the U-Net under unets.<i>., the SR stage's after a
                  NullUnet, plus schedule buffers), `ema` (ema_pytorch's state: the
                  averaged U-Net under <i>.ema_model., the online one, `initted`,
                  `step`), `optim<i>` and `scaler<i>` (a real Adam state after one
                  step), `version` and `steps`; plus `extra`, tensors the reader must
                  rebuild exactly (strided, offset, float16, bfloat16, int, bool, 0-d);
  <stage>_io.npz  fixed inputs and the EMA U-Net's outputs on them (eps and layout
                  logits), with the caption kept and dropped (cond_drop_prob 0 / 1).

The EMA weights differ from the online ones (one Adam step apart), so a
converter that takes the wrong set fails the test.
"""

from __future__ import annotations

import argparse
import collections
import copy
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "benchmarks"))
import reference_pytorch  # pylint: disable=g-import-not-at-top,wrong-import-position

# The scaled-down released networks: train.py's overrides (base: self- and
# cross-attention on every level but the first; SR: cross-attention on the last
# level only, no self-attention in the levels) on smaller widths and depths.
COMMON = dict(dim=8, dim_mults=(1, 2), num_resnet_blocks=(1, 2), attn_heads=2,
              attn_dim_head=8, ff_mult=2.0, memory_efficient=True, channels_lbl=3,
              text_embed_dim=32, max_text_len=10, attn_pool_num_latents=4)
# The base stage as for MM CelebA-HQ (19 classes), the SR stage as for Cityscapes (20).
STAGES = {
    "base": dict(layer_attns=(False, True), layer_cross_attns=(False, True), num_classes=19),
    "sr": dict(layer_attns=False, layer_cross_attns=(False, True), lowres_cond=True,
               num_classes=20),
}
SIZE, BATCH, TEXT_LEN = 16, 3, 7


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gcdp_src", required=True, help="a checkout of github.com/pmh9960/GCDP")
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  JointUnet = reference_pytorch.load_joint_unet(args.gcdp_src)  # pylint: disable=invalid-name
  out = HERE / "gcdp"
  out.mkdir(exist_ok=True)
  for index, (stage, kwargs) in enumerate(STAGES.items()):
    torch.manual_seed(index)
    unet = JointUnet(**COMMON, **kwargs)
    # Zero-initialised output convolutions would hide the output side: give them weights.
    with torch.no_grad():
      for conv in (unet.final_conv, unet.final_conv_seg):
        conv.weight.normal_(0, 0.1)
        conv.bias.normal_(0, 0.1)
    ema = copy.deepcopy(unet)
    # One Adam step on a stand-in loss: the online weights move away from the EMA copy
    # and the optimiser has a real state to save.
    opt = torch.optim.Adam(unet.parameters(), lr=1e-2, betas=(0.9, 0.99))
    inputs = make_inputs(torch, stage == "sr", kwargs["num_classes"])
    eps, logits = unet(*inputs["args"], **inputs["kwargs"], cond_drop_prob=0.0)
    (eps.square().mean() + logits.square().mean()).backward()
    opt.step()
    ema.eval()
    with torch.no_grad():
      outputs = {}
      for name, drop in (("kept", 0.0), ("dropped", 1.0)):
        e, l = ema(*inputs["args"], **inputs["kwargs"], cond_drop_prob=drop)
        outputs[f"eps_{name}"], outputs[f"logits_{name}"] = e.numpy(), l.numpy()
    unet_index = 0 if stage == "base" else 1
    model = collections.OrderedDict()
    if unet_index == 1:
      model["unets.0.dummy_parameter"] = torch.tensor([0.0])  # the NullUnet before an SR stage
    for k, v in unet.state_dict().items():
      model[f"unets.{unet_index}.{k}"] = v
    model["noise_schedulers_lbl.0.log_alpha"] = torch.linspace(-1, 0, 10)  # not a U-Net's
    ema_state = collections.OrderedDict()
    ema_state[f"{unet_index}.initted"] = torch.tensor(True)
    ema_state[f"{unet_index}.step"] = torch.tensor(100)
    for k, v in ema.state_dict().items():
      ema_state[f"{unet_index}.ema_model.{k}"] = v
    for k, v in unet.state_dict().items():
      ema_state[f"{unet_index}.online_model.{k}"] = v
    steps = torch.zeros(unet_index + 1, dtype=torch.long)
    steps[unet_index] = 1234
    torch.save({"model": model, "ema": ema_state, f"optim{unet_index}": opt.state_dict(),
                f"scaler{unet_index}": {"scale": 65536.0, "growth_factor": 2.0,
                                        "_growth_tracker": 7},
                "version": "1.11.0", "steps": steps, "extra": extra_tensors(torch)},
               out / f"{stage}.pt")
    arrays = {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v)
              for k, v in inputs["flat"].items()}
    np.savez_compressed(out / f"{stage}_io.npz", **arrays, **outputs)
    n = sum(p.numel() for p in unet.parameters())
    print(f"{stage}: {n} parameters, {len(model)} model tensors -> {out / (stage + '.pt')}")


def extra_tensors(torch) -> dict:
  """Tensors the reader must rebuild exactly: strided, offset, half, int and scalar."""
  base = torch.arange(12.0)
  return {"transposed": base.reshape(3, 4).t(), "view": base[2:10:3],
          "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
          "bfloat16": torch.tensor([0.25, 3.0], dtype=torch.bfloat16),
          "long": torch.tensor([[1, -2]], dtype=torch.long), "scalar": torch.tensor(3.5),
          "flag": torch.tensor([True, False]), "size": torch.Size([2, 3])}


def make_inputs(torch, sr: bool, num_classes: int) -> dict:
  g = torch.Generator().manual_seed(7)
  x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
  lbl = torch.randint(0, num_classes, (BATCH, 1, SIZE, SIZE), generator=g)
  log_snr = torch.tensor([-6.0, 0.5, 4.0])
  text = torch.randn(BATCH, TEXT_LEN, COMMON["text_embed_dim"], generator=g)
  mask = torch.ones(BATCH, TEXT_LEN, dtype=torch.bool)
  mask[1, 4:] = False  # padding
  mask[2, 2:] = False
  flat = {"x": x, "lbl": lbl[:, 0], "log_snr": log_snr, "text": text, "mask": mask}
  kwargs = {"text_embeds": text, "text_mask": mask}
  if sr:
    low = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
    low_lbl = torch.randint(0, num_classes, (BATCH, 1, SIZE, SIZE), generator=g)
    aug = torch.tensor([-3.0, 1.0, 7.0])
    kwargs.update(lowres_cond_img=low, lowres_cond_lbl=low_lbl, lowres_noise_times=aug)
    flat.update(lowres_image=low, lowres_layout=low_lbl[:, 0], lowres_log_snr=aug)
  return {"args": (x, lbl, log_snr), "kwargs": kwargs, "flat": flat}


if __name__ == "__main__":
  main()
