"""The released GCDP networks and their converter, against the official PyTorch code.

Golden files (tests/models/golden/gcdp/, made by make_gcdp_goldens.py in a torch
venv from the official sources): scaled-down official BaseJointUnet / SRJointUnet
checkpoints saved as the official trainer saves them, and the EMA U-Net's
outputs on fixed inputs. The converter must rebuild the same function.
"""

import json
import pathlib
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcd_jax import checkpointing
from gcd_jax import convert_gcdp
from gcd_jax import run as run_lib
from gcd_jax import torch_checkpoint

GOLDEN = pathlib.Path(__file__).parent / "golden" / "gcdp"
T5 = pathlib.Path(__file__).parent / "golden" / "text_encoders" / "t5_v1_0_tiny"
# The scaled-down networks of make_gcdp_goldens.py, as UNetConfig fields.
SMALL = {"dim": 8, "channel_mults": [1, 2], "num_res_blocks": [1, 2], "num_heads": 2,
         "head_dim": 8, "text_dim": 32, "text_proj_dim": 8, "num_text_latents": 4,
         "max_text_len": 10, "cross_attention": [False, True]}
STAGES = {
    "base": dict(model_type="base_128x128", dataset="celeba", time_embed_dim=32,
                 self_attention=[False, True]),
    "sr": dict(model_type="sr_128x256_256x512", dataset="cityscapes", time_embed_dim=64,
               self_attention=False),
}


def _convert(stage, workdir, **extra):
  s = STAGES[stage]
  overrides = {**SMALL, "time_embed_dim": s["time_embed_dim"],
               "self_attention": s["self_attention"], **extra}
  argv = [f"--checkpoint={GOLDEN / (stage + '.pt')}", f"--model_type={s['model_type']}",
          f"--dataset={s['dataset']}", f"--t5={T5}", f"--workdir={workdir}",
          f"--unet_overrides={json.dumps(overrides)}"]
  return convert_gcdp.convert(convert_gcdp.parse_args(argv))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  out = {}
  for stage in STAGES:
    workdir = tmp_path_factory.mktemp(f"gcdp_{stage}")
    _convert(stage, workdir)
    out[stage] = run_lib.load(workdir)
  return out


def test_the_reader_rebuilds_tensors_and_containers_exactly():
  tree = torch_checkpoint.load(GOLDEN / "base.pt")
  assert sorted(tree) == ["ema", "extra", "model", "optim0", "scaler0", "steps", "version"]
  x = tree["extra"]
  base = np.arange(12.0, dtype=np.float32)
  np.testing.assert_array_equal(x["transposed"], base.reshape(3, 4).T)  # strides (1, 4)
  np.testing.assert_array_equal(x["view"], base[2:10:3])  # offset 2, stride 3
  assert x["half"].dtype == np.float16 and list(x["half"]) == [1.5, -2.0]
  assert x["bfloat16"].dtype.name == "bfloat16" and list(x["bfloat16"].astype(float)) == [0.25, 3]
  assert x["long"].dtype == np.int64 and x["long"].tolist() == [[1, -2]]
  assert x["scalar"].shape == () and float(x["scalar"]) == 3.5
  assert x["flag"].tolist() == [True, False] and tuple(x["size"]) == (2, 3)
  # The optimiser's state: nested plain containers around tensors.
  adam = tree["optim0"]
  assert adam["param_groups"][0]["betas"] == (0.9, 0.99)
  first = adam["state"][0]
  assert first["exp_avg"].shape == first["exp_avg_sq"].shape and float(first["step"]) == 1
  assert tree["scaler0"]["_growth_tracker"] == 7 and tree["steps"].tolist() == [1234]


def _torch_like_zip(path, payload: bytes):
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", payload)
    z.writestr("archive/byteorder", "little")


class _RunsCode:
  """Pickles to `os.system(...)`: what a malicious checkpoint does."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    import os  # pylint: disable=g-import-not-at-top
    return (os.system, (f"touch {self.marker}",))


def test_the_reader_refuses_a_pickle_that_would_run_code(tmp_path):
  marker = tmp_path / "ran"
  bad = tmp_path / "evil.pt"
  _torch_like_zip(bad, pickle.dumps({"model": _RunsCode(marker)}, protocol=2))
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match=r"evil\.pt.*(posix|os)\.system"):
    torch_checkpoint.load(bad)
  assert not marker.exists()
  # Through the command: exit status 2, the file named, nothing written.
  workdir = tmp_path / "out"
  argv = [f"--checkpoint={bad}", "--model_type=base_128x128", "--dataset=celeba", f"--t5={T5}",
          f"--workdir={workdir}"]
  assert convert_gcdp.main(argv) == 2
  assert not marker.exists() and not (workdir / "checkpoints").exists()
  # Another callable hidden behind an allowed-looking module is refused the same way.
  sneaky = tmp_path / "sneaky.pt"
  _torch_like_zip(sneaky, b"\x80\x02ctorch._utils\n_rebuild_from_type_v2\nq\x00.")
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="_rebuild_from_type_v2"):
    torch_checkpoint.load(sneaky)
  legacy = tmp_path / "legacy.pt"
  legacy.write_bytes(pickle.dumps({"a": 1}))
  with pytest.raises(ValueError, match="not a zip-format"):
    torch_checkpoint.load(legacy)


def _outputs(apply, r, io_, drop, sr):
  b = io_["x"].shape[0]
  kwargs = {"drop_text": jnp.full((b,), drop)}
  if sr:
    kwargs.update(lowres_image=jnp.asarray(io_["lowres_image"]).transpose(0, 2, 3, 1),
                  lowres_layout=jnp.asarray(io_["lowres_layout"], jnp.int32),
                  lowres_log_snr=jnp.asarray(io_["lowres_log_snr"]))
  eps, logits = apply(
      r.params, jnp.asarray(io_["x"]).transpose(0, 2, 3, 1),
      jnp.asarray(io_["lbl"], jnp.int32), jnp.asarray(io_["log_snr"]), jnp.asarray(io_["text"]),
      jnp.asarray(io_["mask"]), **kwargs)
  return np.asarray(eps).transpose(0, 3, 1, 2), np.asarray(logits).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("stage", list(STAGES))
def test_converted_networks_compute_what_the_official_ones_do(converted, stage):
  r = converted[stage]
  io_ = np.load(GOLDEN / f"{stage}_io.npz")
  # (One program for both: the caption is dropped by an array argument.)
  apply = jax.jit(lambda params, *args, **kw: r.model.apply({"params": params}, *args, **kw))
  for name, drop in (("kept", False), ("dropped", True)):
    eps, logits = _outputs(apply, r, io_, drop, stage == "sr")
    np.testing.assert_allclose(eps, io_[f"eps_{name}"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, io_[f"logits_{name}"], atol=1e-4, rtol=0)
  # The outputs depend on the caption, so keeping and dropping it are both tested.
  assert np.abs(io_["eps_kept"] - io_["eps_dropped"]).max() > 1e-3


def test_the_workdir_records_what_the_released_scripts_imply(converted):
  base, sr = converted["base"], converted["sr"]
  assert base.step == 1234 and sr.step == 1234
  meta_base, _ = checkpointing.read_meta(base.workdir)
  rel = meta_base["released"]
  assert rel["weights"] == "ema" and rel["model_type"] == "base_128x128"
  # Trained with (train_base_128x128.sh: the defaults) vs sampled by test_base.sh.
  assert rel["trained_schedules"]["image"] == "cosine"
  assert base.sched.describe()["image"]["name"] == "cosine"
  assert base.sched.describe()["layout"]["name"] == "cosine_p"
  # Cityscapes SR: trained with the padded defaults, sampled by test_sr.sh with linear.
  assert sr.sched.describe()["image"]["name"] == "cosine"
  meta_sr, _ = checkpointing.read_meta(sr.workdir)
  assert meta_sr["released"]["released_test_script"]["image"] == "linear"
  assert meta_sr["schedules"]["lowres"]["height"] == 128
  assert meta_sr["schedules"]["lowres"]["image_resize"] == "nearest"
  assert base.config.sample.method == "ddpm" and base.config.sample.steps == 100
  assert base.config.sample.guidance_image == 3.0 and sr.config.sample.guidance_image == 1.0
  assert sr.config.sample.lowres_level == 0.2 and base.config.sample.threshold == 0.95
  assert meta_base["text_encoder"]["max_length"] == 256
  assert meta_base["text_encoder"]["name"] == T5.name
  assert base.classes.names[4] == "l_eye" and len(sr.classes.names) == 20
  # The EMA weights are not the online ones (one Adam step apart in the golden file).
  online = torch_checkpoint.load(GOLDEN / "base.pt")["model"]["unets.0.final_conv.weight"]
  ema = np.asarray(base.params["final_conv"]["kernel"]).transpose(3, 2, 0, 1)
  assert np.abs(ema - online).max() > 1e-4


def test_a_converted_base_stage_samples_through_the_cli(converted, tmp_path):
  from gcd_jax import sample  # pylint: disable=g-import-not-at-top
  manifest = sample.run(sample.parse_args([
      f"--workdir={converted['base'].workdir}", f"--out={tmp_path}", "--text=She is smiling.",
      "--samples_per_caption=1", "--steps=2"]))
  assert manifest["checkpoint_step"] == 1234
  assert (tmp_path / "0000_image.png").is_file() and (tmp_path / "0000_layout.png").is_file()


def test_tensors_that_do_not_fit_fail_with_their_names(tmp_path):
  with pytest.raises(convert_gcdp.ConversionError) as e:
    _convert("base", tmp_path / "a", num_res_blocks=[1, 1])
  message = str(e.value)
  # One residual block fewer per path at level 1: its tensors (down and up) are left over.
  assert "tensors with no parameter (" in message and "parameters with no tensor" not in message
  assert "downs.1.2.1.block1.project.weight" in message
  with pytest.raises(convert_gcdp.ConversionError, match=r"(?s)parameters with no tensor.*downs_1_3"):
    _convert("sr", tmp_path / "b", self_attention=[False, True])
  with pytest.raises(convert_gcdp.ConversionError, match=r"(?s)shapes that do not fit.*init_emb_seg"):
    _convert("base", tmp_path / "c", layout_embed_dim=4)
  # A base checkpoint given as an SR model type: no U-Net 1 in it.
  argv = [f"--checkpoint={GOLDEN / 'base.pt'}", "--model_type=sr_128x128_256x256",
          "--dataset=celeba", f"--t5={T5}", f"--workdir={tmp_path / 'd'}",
          f"--unet_overrides={json.dumps({**SMALL, 'self_attention': False})}"]
  with pytest.raises(convert_gcdp.ConversionError, match=r"no tensors under 'unets\.1\.'"):
    convert_gcdp.convert(convert_gcdp.parse_args(argv))
  for d in "abcd":
    assert not (tmp_path / d / "checkpoints").exists()


def test_the_released_presets_build_at_full_size():
  from gcd_jax.models import presets, summary  # pylint: disable=g-import-not-at-top
  base = summary.param_shapes(presets.get_preset("gcdp_base"), 128, 128, 16)
  sr = summary.param_shapes(presets.get_preset("gcdp_sr"), 128, 128, 16)
  # The released BaseJointUnet / SRJointUnet tensor shapes at a few places.
  assert base["init_conv_convs_2"]["kernel"].shape == (15, 15, 6, 32)
  assert base["downs_3_1"]["cross_attn_fn"]["to_q"]["kernel"].shape == (1024, 512)
  assert base["null_text_embed"].shape == (1, 256, 128)
  assert sr["init_conv_convs_0"]["kernel"].shape == (3, 3, 12, 64)  # x, y, low-res x, low-res y
  assert sr["final_conv"]["kernel"].shape == (3, 3, 128 + 6, 3)
  assert "downs_1_3" not in sr and "downs_1_3" in base
  assert summary.count_params(base) > 6e8


def test_a_converted_sr_stage_trains_on_as_any_run(converted):
  """Fine-tuning: the train step (low-res conditioning built from the batch) runs on
  the converted weights and moves them."""
  import jax  # pylint: disable=g-import-not-at-top
  from gcd_jax import train_lib  # pylint: disable=g-import-not-at-top
  from conftest import random_batch  # pylint: disable=g-import-not-at-top
  r = converted["sr"]
  config = r.config.copy_and_resolve_references()
  config.data.height, config.data.width = 16, 32  # 256x512 / 16
  config.lowres.height, config.lowres.width = 8, 16
  config.data.batch_size, config.text.max_length, config.mesh.data = 1, 4, 1
  params = jax.tree.map(jnp.asarray, r.params)
  state = train_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                               opt_state=train_lib.make_optimizer(config).init(params),
                               rng=jax.random.PRNGKey(0))
  new, metrics = jax.jit(train_lib.make_train_step(config, r.model, r.sched))(
      state, random_batch(config))
  assert np.isfinite(float(metrics["loss_layout"])) and bool(metrics["finite_update"])
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params, params)
  assert moved["final_conv_seg"]["kernel"] > 0 and moved["attn_pool"]["latents"] > 0
