"""Writes the tiny CLIP checkpoint and golden outputs used by tests/metrics/test_clip.py.

Run once, with the separate PyTorch venv of make_text_encoder_goldens.py (torch must
never be a dependency of gcd_jax):

  cd <repo> && /work/torchvenv/bin/python tests/metrics/golden/make_clip_golden.py

The reference pixel values come from transformers' PIL/numpy CLIP image processor
(`CLIPImageProcessorPil`). In transformers 5 the class named `CLIPImageProcessor`
is the torchvision backend, and the torch venv has neither torchvision nor Pillow,
so that part runs in a second interpreter that has transformers and Pillow (the
project venv, --pil_python): this script re-invokes itself there with --pixels.

Output, under clip_tiny/:

  checkpoint/   a random-weight `CLIPModel` saved with `save_pretrained`
                (safetensors), with the files of a real Hub checkout: config.json,
                model.safetensors, tokenizer.json, tokenizer_config.json, vocab.json,
                merges.txt, preprocessor_config.json. Text tower: hidden 32,
                quick_gelu, 77 positions, eos_token_id 2 as in the openai configs
                (pooling at the largest token id). Vision tower: hidden 40, exact
                gelu, 32x32 images in 8x8 patches. Projection 24. The BPE vocabulary
                (74 tokens, CLIP's layout: characters, characters + "</w>", merges,
                then <|startoftext|> and <|endoftext|>) covers every character of
                CAPTIONS, as the real byte-level vocabulary covers every byte.
  golden.npz    image_<i>: IMAGE_SHAPES uint8 images; pixel_values [4, 3, 32, 32]
                from the image processor; captions; input_ids / attention_mask
                [4, 77] (padded to 77, the long caption truncated); image_embeds /
                text_embeds [4, 24] L2-normalised, from pixel_values and input_ids;
                logits_per_image [4, 4] and logit_scale, as CLIPModel returns them.

All parameters are redrawn from wide normals (layer-norm scales around 1) so that
every tensor, biases and norm scales included, affects the outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent / "clip_tiny"
CHECKPOINT = OUT / "checkpoint"
IMAGE_SIZE = 32
TEXT_LENGTH = 77
# Square (resize is the identity), landscape and portrait (the long side is rounded
# down: 50 * 32 / 37 = 43.2 -> 43), and smaller than the crop (upsampling).
IMAGE_SHAPES = [(32, 32, 3), (40, 56, 3), (50, 37, 3), (20, 24, 3)]
CAPTIONS = [
    "a photo of a cat",
    "A RED car,  a red dog!",  # upper case, punctuation, a double space
    "",
    " ".join(["a photo of a red cat"] * 20),  # 121 tokens: truncated to 77
]
CHARS = list("abcdefghijklmnopqrstuvwxyz.,!'")
MERGES = [("c", "a"), ("ca", "t</w>"), ("ca", "r</w>"), ("p", "h"), ("ph", "o"),
          ("t", "o</w>"), ("pho", "to</w>"), ("o", "f</w>"), ("r", "e"), ("re", "d</w>"),
          ("d", "o"), ("do", "g</w>")]


def make_images() -> list[np.ndarray]:
  """Smooth gradients plus noise: sharp enough that bicubic overshoot is clipped."""
  rng = np.random.default_rng(0)
  images = []
  for h, w, c in IMAGE_SHAPES:
    y, x = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    base = np.stack([255 * x, 255 * y, 128 + 100 * np.sin(6 * x * y)], -1)[..., :c]
    noisy = base + rng.normal(0, 40, (h, w, c))
    images.append(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
  return images


def compute_pixels(images_npz: pathlib.Path, out_npz: pathlib.Path):
  """Runs in the Pillow interpreter: CLIPImageProcessorPil on each image."""
  import transformers  # pylint: disable=g-import-not-at-top
  with np.load(images_npz) as f:
    images = [f[f"image_{i}"] for i in range(len(IMAGE_SHAPES))]
  processor = transformers.CLIPImageProcessorPil(
      size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
  pixels = processor(images=images, return_tensors="np")["pixel_values"]
  processor.save_pretrained(CHECKPOINT)
  np.savez(out_npz, pixel_values=np.asarray(pixels, np.float32),
           transformers_version=np.array(transformers.__version__))


def randomize_(model, seed: int) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name == "logit_scale":
        continue  # keep the initial log(1 / 0.07): only scales the logits
      noise = torch.randn(p.shape, generator=g)
      if "norm" in name or "layrnorm" in name:  # HF spells one "pre_layrnorm"
        p.copy_(1.0 + 0.2 * noise)
      else:
        p.copy_(0.3 * noise)


def make_tokenizer():
  import transformers  # pylint: disable=g-import-not-at-top
  tokens = CHARS + [c + "</w>" for c in CHARS] + ["".join(m) for m in MERGES]
  tokens += ["<|startoftext|>", "<|endoftext|>"]
  vocab = {t: i for i, t in enumerate(tokens)}
  tok = transformers.CLIPTokenizer(vocab=vocab, merges=MERGES)
  tok.save_pretrained(CHECKPOINT)
  # A Hub checkout also ships the slow-tokenizer files; the loader must accept them alone.
  (CHECKPOINT / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
  (CHECKPOINT / "merges.txt").write_text(
      "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES), encoding="utf-8")
  return tok


def make_model(tok, pixel_values: np.ndarray):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  config = transformers.CLIPConfig(
      text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=TEXT_LENGTH, hidden_act="quick_gelu",
                       bos_token_id=0, eos_token_id=2, pad_token_id=1),
      vision_config=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8,
                         hidden_act="gelu"),
      projection_dim=24,
  )
  torch.manual_seed(0)
  model = transformers.CLIPModel(config).eval()
  randomize_(model, seed=1)
  model.save_pretrained(CHECKPOINT, safe_serialization=True)
  enc = tok(CAPTIONS, padding="max_length", max_length=TEXT_LENGTH, truncation=True,
            return_tensors="pt")
  with torch.no_grad():
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                pixel_values=torch.from_numpy(pixel_values))
  return enc, out, float(model.logit_scale.detach())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--pil_python", default="/work/venv/bin/python",
                      help="a Python with transformers and Pillow (the project venv)")
  parser.add_argument("--pixels", nargs=2, metavar=("IMAGES_NPZ", "OUT_NPZ"),
                      help=argparse.SUPPRESS)  # the re-invocation in --pil_python
  args = parser.parse_args()
  os.environ["HF_HUB_OFFLINE"] = "1"
  os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"  # "PyTorch was not found" (Pillow venv)
  if args.pixels:
    compute_pixels(*map(pathlib.Path, args.pixels))
    return

  if OUT.exists():
    shutil.rmtree(OUT)
  CHECKPOINT.mkdir(parents=True)
  images = make_images()
  with tempfile.TemporaryDirectory() as tmp:
    images_npz, pixels_npz = pathlib.Path(tmp) / "images.npz", pathlib.Path(tmp) / "pixels.npz"
    np.savez(images_npz, **{f"image_{i}": im for i, im in enumerate(images)})
    subprocess.run([args.pil_python, __file__, "--pixels", str(images_npz), str(pixels_npz)],
                   check=True)
    with np.load(pixels_npz) as f:
      pixel_values, pil_transformers = f["pixel_values"], str(f["transformers_version"])

  tok = make_tokenizer()
  enc, out, logit_scale = make_model(tok, pixel_values)
  np.savez_compressed(
      OUT / "golden.npz",
      **{f"image_{i}": im for i, im in enumerate(images)},
      pixel_values=pixel_values,
      captions=np.array(CAPTIONS),
      input_ids=enc["input_ids"].numpy().astype(np.int32),
      attention_mask=enc["attention_mask"].numpy().astype(np.int32),
      image_embeds=out.image_embeds.numpy().astype(np.float32),
      text_embeds=out.text_embeds.numpy().astype(np.float32),
      logits_per_image=out.logits_per_image.numpy().astype(np.float32),
      logit_scale=np.float32(logit_scale),
  )
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  print(f"torch {torch.__version__}, transformers {transformers.__version__} "
        f"(image processor: transformers {pil_transformers})")
  files = {str(p.relative_to(OUT)): p.stat().st_size for p in sorted(OUT.rglob("*")) if p.is_file()}
  print(json.dumps(files, indent=1))
  print(f"total {sum(files.values()) / 1024:.1f} KiB in {OUT}")


if __name__ == "__main__":
  main()
