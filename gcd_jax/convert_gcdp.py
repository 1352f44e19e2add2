"""Converts a released GCDP checkpoint (PyTorch) into a gcd_jax workdir.

  python -m gcd_jax.convert_gcdp --checkpoint=checkpoints/base.300000.pt \\
      --model_type=base_128x128 --dataset=celeba --t5=/path/to/t5-large --workdir=workdirs/gcdp_celeba_base

The checkpoint is the authors' trainer file (`torch.save` of a dict with
`model`, the JointImagen state dict, and `ema`, the EMA U-Nets). It is read
without torch and without running any of its code (`gcd_jax.torch_checkpoint`).
The network is `gcdp_base` / `gcdp_sr` (the released architecture,
`gcd_jax.models.imagen_unet`); every tensor must find its parameter and every
parameter its tensor, with the same shape, or the conversion fails naming them.

The workdir is an ordinary one: `sample` and `evaluate` use it as they are, and
`main` can fine-tune from it. Its checkpoint records what the released scripts
imply (docs/released_models.md):
  * the noise schedules the model was *trained* with (the released train scripts,
    not the paper), which sampling then uses; the released test scripts sample
    three of the four models with other schedules, recorded beside them
    (`released.released_test_script` in the metadata);
  * T5-large as the text encoder (`--t5`, a local Hugging Face directory: the
    identity of its weights is recorded), 256 tokens;
  * the dataset's class list;
  * the released test scripts' sampler: ancestral DDPM, 100 steps, dynamic
    thresholding at 0.95, guidance 3 (base) or 1 (SR), SR augmentation level 0.2.
Parameters are the online weights (`model`); the EMA weights (`ema`, which
sampling uses) come from `ema` when the file has it (`--weights=model` uses the
online weights for both). The optimiser state starts fresh.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import sys
import types
from typing import Any, Sequence

from absl import flags
import numpy as np

from gcd_jax import cli

PROG = "python -m gcd_jax.convert_gcdp"
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


@dataclasses.dataclass(frozen=True)
class ModelType:
  """A model type of the released train.py: its stage and sizes."""

  stage: str  # "base" or "sr"
  size: tuple[int, int]  # the stage's output size (h, w)
  low: tuple[int, int] | None = None  # an SR stage's input size

  @property
  def unet_index(self) -> int:
    """The U-Net's index in the trainer's JointImagen (SR stages follow a NullUnet)."""
    return 0 if self.stage == "base" else 1


MODEL_TYPES = {
    "base_128x128": ModelType("base", (128, 128)),
    "base_128x256": ModelType("base", (128, 256)),
    "sr_128x128_256x256": ModelType("sr", (256, 256), (128, 128)),
    "sr_128x256_256x512": ModelType("sr", (256, 512), (128, 256)),
}

# The dataset's gcd_jax config module per stage, its class count, and the noise
# schedules (image, layout) of the released scripts: what train.py trained the
# stage with (train_*.sh, after JointImagen pads the per-U-Net tuples: an SR
# stage, U-Net 2, gets 'cosine' / 'cosine_p' unless the script names others) and
# what test.py samples it with (test_*.sh).
COSINE = {"image": "cosine", "layout": "cosine_p", "layout_params": {"p": 1.0}}
LINEAR = {"image": "linear", "layout": "linear", "layout_params": {}}
DATASETS = {
    "celeba": {"configs": {"base": "mm_celeba_hq_base", "sr": "mm_celeba_hq_sr"},
               "num_classes": 19, "builder": "mm_celeba_hq",
               "trained": {"base": COSINE, "sr": COSINE},
               "test_script": {"base": COSINE, "sr": LINEAR}},
    "cityscapes": {"configs": {"base": "cityscapes_base", "sr": "cityscapes_sr"},
                   "num_classes": 20, "builder": "cityscapes_text",
                   "trained": {"base": LINEAR, "sr": COSINE},
                   "test_script": {"base": COSINE, "sr": LINEAR}},
}


class ConversionError(ValueError):
  """The checkpoint's tensors do not fit the network (names listed)."""


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_string("checkpoint", None, "The released trainer checkpoint (a torch.save file).",
                      required=True, flag_values=fv)
  flags.DEFINE_enum("model_type", None, sorted(MODEL_TYPES), "The model type it was trained as "
                    "(train.py --model_type).", required=True, flag_values=fv)
  flags.DEFINE_enum("dataset", None, sorted(DATASETS), "The dataset it was trained on.",
                    required=True, flag_values=fv)
  flags.DEFINE_string("t5", None, "A local Hugging Face T5-large directory (config.json, "
                      "model.safetensors, tokenizer files): the released text encoder.",
                      required=True, flag_values=fv)
  flags.DEFINE_string("workdir", None, "The gcd_jax workdir to write (must not hold a checkpoint).",
                      required=True, flag_values=fv)
  flags.DEFINE_enum("weights", "ema", ["ema", "model"], "Which weights sampling uses: the EMA "
                    "U-Net (as the released test script) or the online one.", flag_values=fv)
  flags.DEFINE_string("unet_overrides", None, "JSON of UNetConfig fields that differ from the "
                      "released network (a scaled-down or modified JointUnet).", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data dir recorded in the config (default: TFDS's).",
                      flag_values=fv)


def parse_args(argv: Sequence[str] | None = None) -> types.SimpleNamespace:
  return cli.parse(define_flags, argv, prog=PROG, doc=__doc__)


# --- Tensors -> parameters ---------------------------------------------------------------

# flax leaf name -> the torch parameter name it comes from (others keep their name).
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def _flat_key(path: Sequence[str]) -> str:
  """A flax parameter path and a torch state-dict key meet here: separators as '_'."""
  *modules, leaf = path
  return "_".join([*modules, _LEAF_NAMES.get(leaf, leaf)]).replace(".", "_")


def _to_flax(leaf: str, value: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """A torch tensor in the layout of a flax parameter of `shape`."""
  value = np.asarray(value)
  if leaf == "kernel":
    # Conv2d [out, in, kh, kw] -> [kh, kw, in, out]; Linear [out, in] -> [in, out]; a
    # 1x1 convolution feeding a Dense (channel feed-forward) is then reshaped.
    value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
  if value.size != int(np.prod(shape)):
    raise ValueError(f"{value.shape} holds {value.size} numbers, {shape} expected")
  return value.reshape(shape).astype(np.float32)


def unet_tensors(tree: dict, unet_index: int, weights: str, where: str) -> tuple[dict, dict | None]:
  """(online, EMA or None) state dicts of U-Net `unet_index`, keys relative to the U-Net."""
  if "model" not in tree:
    raise ConversionError(f"{where}: no 'model' entry (keys: {sorted(tree)[:10]}); is this a "
                          "JointImagenTrainer checkpoint?")
  prefix = f"unets.{unet_index}."
  online = {k[len(prefix):]: v for k, v in tree["model"].items() if k.startswith(prefix)}
  if not online:
    found = sorted({".".join(k.split(".")[:2]) for k in tree["model"] if k.startswith("unets.")})
    raise ConversionError(f"{where}: no tensors under '{prefix}' (this model type's U-Net); "
                          f"found {found}: is --model_type right?")
  ema = None
  if weights == "ema" and "ema" in tree:
    # ema_pytorch's EMA keeps `ema_model` (and, in older versions, `online_model`,
    # `initted` and `step`): only the averaged copy is the EMA weights.
    eprefix = f"{unet_index}.ema_model."
    ema = {k[len(eprefix):]: v for k, v in tree["ema"].items() if k.startswith(eprefix)}
    if not ema:
      raise ConversionError(f"{where}: 'ema' has no '{eprefix}*' tensors")
  return online, ema


def to_params(tensors: dict[str, np.ndarray], abstract: Any, where: str) -> Any:
  """The flax parameter tree `abstract` (shapes), filled from a U-Net's state dict."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  flat = traverse_util.flatten_dict(abstract)
  targets = {}
  for path in flat:
    key = _flat_key(path)
    if key in targets:
      raise ConversionError(f"{where}: parameters {'/'.join(path)} and "
                            f"{'/'.join(targets[key])} meet the same tensor name")
    targets[key] = path
  by_key = {}
  for name in tensors:
    key = name.replace(".", "_")
    if key in by_key:
      raise ConversionError(f"{where}: tensors {name} and {by_key[key]} meet the same name")
    by_key[key] = name
  unused = sorted(by_key[k] for k in set(by_key) - set(targets))
  missing = sorted("/".join(targets[k]) for k in set(targets) - set(by_key))
  if unused or missing:
    raise ConversionError(
        f"{where}: the checkpoint does not fit the network:\n"
        + (f"  tensors with no parameter ({len(unused)}): {', '.join(unused[:20])}"
           + (" ..." if len(unused) > 20 else "") + "\n" if unused else "")
        + (f"  parameters with no tensor ({len(missing)}): {', '.join(missing[:20])}"
           + (" ..." if len(missing) > 20 else "") if missing else "")
        + "\n(a different --model_type, or --unet_overrides for a modified network?)")
  out, bad = {}, []
  for key, path in targets.items():
    try:
      out[path] = _to_flax(path[-1], tensors[by_key[key]], tuple(flat[path].shape))
    except ValueError as e:
      bad.append(f"{by_key[key]} -> {'/'.join(path)}: {e}")
  if bad:
    raise ConversionError(f"{where}: shapes that do not fit:\n  " + "\n  ".join(bad))
  return traverse_util.unflatten_dict(out)


# --- The workdir ---------------------------------------------------------------------------


def released_config(model_type: str, dataset: str, t5: str, unet_overrides: dict | None = None,
                    data_dir: str | None = None) -> Any:
  """The gcd_jax config of a released model: its dataset's config with the released
  network, text encoder, schedules and sampler."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  from gcd_jax import config_base  # pylint: disable=g-import-not-at-top
  from gcd_jax.models import presets  # pylint: disable=g-import-not-at-top
  mt, ds = MODEL_TYPES[model_type], DATASETS[dataset]
  path = CONFIGS / f"{ds['configs'][mt.stage]}.py"
  spec = importlib.util.spec_from_file_location(f"gcd_jax_configs_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.height, c.data.width = mt.size
  if data_dir:
    c.data.data_dir = data_dir
  preset = presets.get_preset("gcdp_base" if mt.stage == "base" else "gcdp_sr",
                              num_classes=ds["num_classes"])
  c.model = dataclasses.replace(preset, **(unet_overrides or {})).to_dict()
  c.text.encoder = str(t5)
  c.text.max_length = 256
  trained = ds["trained"][mt.stage]
  c.diffusion.num_steps = 1000
  c.diffusion.image_schedule = trained["image"]
  c.diffusion.layout_schedule = trained["layout"]
  c.diffusion.layout_schedule_params = dict(trained["layout_params"])
  c.sample.method = "ddpm"
  c.sample.steps = 100
  c.sample.threshold = 0.95
  c.sample.layout_guidance = "logits"
  guidance = 3.0 if mt.stage == "base" else 1.0
  c.sample.guidance_image = c.sample.guidance_layout = guidance
  if mt.stage == "sr":
    c.lowres.height, c.lowres.width = mt.low
    c.lowres.schedule = "linear"
    c.lowres.max_level = 0.999
    c.lowres.image_resize = "nearest"  # as released
    c.sample.lowres_level = 0.2
  config_base.validate(c)
  return c


def convert(args: types.SimpleNamespace) -> dict:
  """The command; returns a summary (also printed)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from gcd_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from gcd_jax import run as run_lib  # pylint: disable=g-import-not-at-top
  from gcd_jax import text_conditioning  # pylint: disable=g-import-not-at-top
  from gcd_jax import torch_checkpoint  # pylint: disable=g-import-not-at-top
  from gcd_jax import train_lib  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top

  checkpoint = pathlib.Path(args.checkpoint)
  if not checkpoint.is_file():
    raise cli.InputError(f"--checkpoint={checkpoint}: no such file")
  workdir = pathlib.Path(args.workdir)
  if checkpointing.checkpoint_dir(workdir).exists():
    raise cli.InputError(f"--workdir={workdir} already holds checkpoints; give a new directory")
  try:
    overrides = json.loads(args.unet_overrides) if args.unet_overrides else None
  except json.JSONDecodeError as e:
    raise cli.InputError(f"--unet_overrides: not JSON ({e})") from None
  mt = MODEL_TYPES[args.model_type]
  config = released_config(args.model_type, args.dataset, args.t5, overrides, args.data_dir)

  print(f"Reading {checkpoint} ...", file=sys.stderr)
  tree = torch_checkpoint.load(checkpoint)
  if not isinstance(tree, dict):
    raise ConversionError(f"{checkpoint}: holds a {type(tree).__name__}, not a trainer's dict")
  online, ema = unet_tensors(tree, mt.unet_index, args.weights, str(checkpoint))

  text = text_conditioning.make_text(config, workdir)
  model = train_lib.make_model(config)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(config, model, r),
                            jax.random.PRNGKey(config.seed))
  params = to_params(online, abstract.params, f"{checkpoint} (model)")
  ema_params = to_params(ema, abstract.params, f"{checkpoint} (ema)") if ema else params
  steps = np.asarray(tree.get("steps", np.zeros(mt.unet_index + 1))).reshape(-1)
  step = int(steps[mt.unet_index]) if steps.size > mt.unet_index else 0

  optimizer = train_lib.make_optimizer(config)
  params = jax.tree.map(jnp.asarray, params)
  state = train_lib.TrainState(
      step=jnp.asarray(step, jnp.int32), params=params,
      ema_params=jax.tree.map(jnp.asarray, ema_params), opt_state=optimizer.init(params),
      rng=jax.random.PRNGKey(config.seed))
  sched = train_lib.make_joint_schedule(config)
  classes = importlib.import_module(f"tfds_builders.{DATASETS[args.dataset]['builder']}").CLASSES
  meta = run_lib.run_metadata(config, sched, classes, text)
  trained = DATASETS[args.dataset]["trained"][mt.stage]
  meta["released"] = {
      "checkpoint": str(checkpoint.absolute()), "model_type": args.model_type,
      "dataset": args.dataset, "weights": "ema" if ema else "model",
      "trainer_version": str(tree.get("version", "")), "steps": step,
      "trained_schedules": trained,
      "released_test_script": {**DATASETS[args.dataset]["test_script"][mt.stage],
                               "sampler": "ddpm", "steps": 100, "threshold": 0.95,
                               "guidance": 3.0 if mt.stage == "base" else 1.0,
                               **({"lowres_level": 0.2} if mt.stage == "sr" else {})},
  }
  ckpt = checkpointing.Checkpointer(checkpointing.checkpoint_dir(workdir), async_save=False)
  try:
    ckpt.save(step, state, json.dumps({"converted": True}), meta, force=True)
    ckpt.wait()
  except BaseException:
    ckpt.close()
    shutil.rmtree(checkpointing.checkpoint_dir(workdir) / str(step), ignore_errors=True)
    raise
  ckpt.close()
  summary = {"workdir": str(workdir), "step": step, "weights": meta["released"]["weights"],
             "model_type": args.model_type, "dataset": args.dataset,
             "schedules": meta["schedules"]}
  print(json.dumps(summary, indent=1))
  return summary


def main(argv: Sequence[str] | None = None) -> int:
  return cli.command_main(define_flags, convert, prog=PROG, doc=__doc__, argv=argv)


if __name__ == "__main__":
  sys.exit(main())
