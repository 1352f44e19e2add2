"""Behaviour of `gcd_jax.models.unet.JointUNet`, on the `tiny` preset.

Compilation dominates the run time, so every forward pass goes through a few
module-level jitted functions (one per config and mode) that take all inputs as
one dict of arrays: changing values never recompiles. Shape-only checks use
`jax.eval_shape`, which traces but does not compile.

The heads are zero-initialised, so the output at init is exactly zero and
cannot show the effect of any input; `perturbed_params` replaces the head
kernels and biases by random values for those tests.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from gcd_jax.models import presets
from gcd_jax.models.unet import JointUNet, UNetConfig

B, H, W, L = 2, 16, 32, 6  # rectangular on purpose
# Every optional input on, so that one compiled function covers every test.
CFG = dataclasses.replace(presets.tiny(), self_condition_image=True,
                          self_condition_layout=True, lowres_cond=True)
K = CFG.num_classes
POSITIONAL = ("x_t", "y_t", "log_snr", "text_emb", "text_mask")


def make_inputs(cfg, seed, batch=B, height=H, width=W):
  """All inputs of `cfg` as a dict of arrays; example 0 has 2 padded text tokens.

  numpy randomness: eager jax.random would compile a kernel per shape.
  """
  rng = np.random.default_rng(seed)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  ids = lambda: jnp.asarray(rng.integers(0, max(cfg.num_classes, 1), (batch, height, width)),
                            jnp.int32)
  text_mask = np.ones((batch, L), bool)
  text_mask[0, L - 2:] = False
  inputs = dict(x_t=normal(batch, height, width, 3),
                y_t=ids() if cfg.has_layout else None,
                log_snr=jnp.linspace(-3.0, 5.0, batch),
                text_emb=normal(batch, L, cfg.text_dim), text_mask=jnp.asarray(text_mask),
                drop_text=jnp.zeros((batch,), bool))
  if cfg.self_condition_image:
    inputs["self_cond_image"] = normal(batch, height, width, 3)
  if cfg.self_condition_layout:
    logits = rng.normal(size=(batch, height, width, cfg.num_classes))
    inputs["self_cond_layout"] = jnp.asarray(
        np.exp(logits) / np.exp(logits).sum(-1, keepdims=True), jnp.float32)
  if cfg.lowres_cond:
    inputs.update(lowres_image=normal(batch, height, width, 3),
                  lowres_log_snr=jnp.linspace(1.0, -2.0, batch))
    if cfg.has_layout:
      inputs["lowres_layout"] = ids()
  return inputs


def call(model, params, inputs, **kwargs):
  args = [inputs[k] for k in POSITIONAL]
  rest = {k: v for k, v in inputs.items() if k not in POSITIONAL}
  return model.apply({"params": params}, *args, **rest, **kwargs)


def make_apply(cfg, train=False):
  model = JointUNet(cfg)
  if train:
    return jax.jit(lambda p, x, rng: call(model, p, x, train=True, rngs={"dropout": rng}))
  return jax.jit(lambda p, x: call(model, p, x))


apply_f32 = make_apply(CFG)


@pytest.fixture(scope="module")
def inputs():
  return make_inputs(CFG, 1)


@pytest.fixture(scope="module")
def params(inputs):
  model = JointUNet(CFG)
  args = [inputs[k] for k in POSITIONAL]
  rest = {k: v for k, v in inputs.items() if k not in POSITIONAL}
  # An rbg key: threefry initialisers for ~150 parameters take ~3x longer to compile.
  key = jax.random.key(0, impl="unsafe_rbg")
  return jax.jit(lambda key: model.init(key, *args, **rest)["params"])(key)


def random_params(cfg, x, seed=0):
  """Random parameters of the right shapes without compiling `init` (any values do)."""
  shapes = jax.eval_shape(lambda: JointUNet(cfg).init(
      jax.random.key(0), *[x[k] for k in POSITIONAL],
      **{k: v for k, v in x.items() if k not in POSITIONAL}))["params"]
  rng = np.random.default_rng(seed)
  fan_in = lambda s: np.prod(s[:-1]) if len(s) > 1 else 1
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in(s.shape)), s.dtype), shapes)


@pytest.fixture(scope="module")
def perturbed_params(params):
  """Params whose zero-initialised heads are replaced by random (LeCun-scale) values."""
  rng = np.random.default_rng(2)
  new = dict(params)
  for head in ("image_head", "layout_head"):
    shape = params[head]["kernel"].shape
    new[head] = {
        "kernel": jnp.asarray(rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1])), jnp.float32),
        "bias": jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32)}
  return new


@pytest.fixture(scope="module")
def reference(perturbed_params, inputs):
  return apply_f32(perturbed_params, inputs)


def assert_changed(a, b, examples=(0, 1)):
  """Both outputs (image, layout) of the given examples differ."""
  for x, y in zip(a, b):
    for i in examples:
      assert float(jnp.max(jnp.abs(x[i] - y[i]))) > 1e-4


def assert_same(a, b, examples=(0, 1)):
  for x, y in zip(a, b):
    for i in examples:
      np.testing.assert_array_equal(np.asarray(x[i]), np.asarray(y[i]))


@pytest.mark.parametrize("height,width", [(16, 16), (16, 32)])
def test_output_shapes_without_optional_inputs(height, width):
  cfg = presets.tiny()
  x = make_inputs(cfg, 0, 3, height, width)
  (image, logits), _ = jax.eval_shape(
      lambda x: JointUNet(cfg).init_with_output(jax.random.key(0), *[x[k] for k in POSITIONAL]), x)
  assert (image.shape, image.dtype) == ((3, height, width, 3), jnp.float32)
  assert (logits.shape, logits.dtype) == ((3, height, width, K), jnp.float32)


@pytest.mark.parametrize("height,width", [(16, 16), (16, 32)])
def test_output_shapes_of_the_memory_efficient_layout(height, width):
  cfg = dataclasses.replace(presets.tiny(), downsample_first=True)  # levels at H/2, H/4
  x = make_inputs(cfg, 0, 1, height, width)
  (image, logits), variables = jax.eval_shape(
      lambda x: JointUNet(cfg).init_with_output(jax.random.key(0), *[x[k] for k in POSITIONAL]), x)
  assert image.shape == (1, height, width, 3) and logits.shape == (1, height, width, K)
  assert {"init_res", "final_res", "down_0_downsample", "up_0_upsample"} <= set(variables["params"])
  with pytest.raises(ValueError, match="not divisible by 4"):
    x = make_inputs(cfg, 0, 1, 6, 8)
    jax.eval_shape(lambda: JointUNet(cfg).init(jax.random.key(0), *[x[k] for k in POSITIONAL]))


def test_output_shapes_with_every_input(reference):
  image, logits = reference
  assert (image.shape, image.dtype) == ((B, H, W, 3), jnp.float32)
  assert (logits.shape, logits.dtype) == ((B, H, W, K), jnp.float32)


def test_zero_initialised_heads_give_zero_output(params, inputs):
  for head in ("image_head", "layout_head"):
    for leaf in params[head].values():
      assert not np.any(np.asarray(leaf))
  image, logits = apply_f32(params, inputs)
  assert not np.any(np.asarray(image)) and not np.any(np.asarray(logits))
  # ...while the features under the heads are not zero: the zeros come from the heads only.
  assert np.any(np.asarray(params["out_norm"]["scale"]))


def test_padded_text_positions_are_ignored(perturbed_params, inputs, reference):
  # Garbage, even NaN, in example 0's padded positions changes nothing anywhere.
  text = inputs["text_emb"].at[0, L - 2:].set(jnp.nan)
  out = apply_f32(perturbed_params, {**inputs, "text_emb": text})
  assert_same(out, reference)


def test_real_text_tokens_change_the_output(perturbed_params, inputs, reference):
  text = inputs["text_emb"].at[0, 1].add(1.0)
  out = apply_f32(perturbed_params, {**inputs, "text_emb": text})
  assert_changed(out, reference, examples=(0,))
  assert_same(out, reference, examples=(1,))  # examples do not interact


def test_dropped_caption_uses_the_null_embedding(perturbed_params, inputs, reference):
  drop = jnp.array([True, False])
  dropped = apply_f32(perturbed_params, {**inputs, "drop_text": drop})
  assert_changed(dropped, reference, examples=(0,))
  assert_same(dropped, reference, examples=(1,))
  # A dropped caption does not depend on text_emb at all, real tokens included...
  other_text = make_inputs(CFG, 5)["text_emb"]
  dropped_other = apply_f32(perturbed_params,
                            {**inputs, "drop_text": drop, "text_emb": other_text})
  assert_same(dropped_other, dropped, examples=(0,))
  # ...and, by design, equals a fully masked caption.
  masked = apply_f32(perturbed_params,
                     {**inputs, "text_mask": inputs["text_mask"].at[0].set(False)})
  assert_same(masked, dropped, examples=(0,))


@pytest.mark.parametrize("name", ["self_cond_image", "self_cond_layout"])
def test_self_conditioning_inputs_change_the_output(perturbed_params, inputs, reference, name):
  changed = {**inputs, name: inputs[name][:, ::-1]}  # same statistics, different values
  if name == "self_cond_layout":  # a different distribution, still probabilities
    changed[name] = jax.nn.one_hot(jnp.argmin(inputs[name], -1), K)
  assert_changed(apply_f32(perturbed_params, changed), reference)


@pytest.mark.parametrize("name", ["lowres_image", "lowres_layout", "lowres_log_snr"])
def test_lowres_inputs_change_the_output(perturbed_params, inputs, reference, name):
  value = inputs[name]
  changed = (value + 1) % K if name == "lowres_layout" else value[::-1] if value.ndim == 1 \
      else -value
  assert_changed(apply_f32(perturbed_params, {**inputs, name: changed}), reference)


def test_log_snr_changes_the_output(perturbed_params, inputs, reference):
  out = apply_f32(perturbed_params, {**inputs, "log_snr": inputs["log_snr"] + 2.0})
  assert_changed(out, reference)


def test_bfloat16_compute_is_close_to_float32(perturbed_params, inputs, reference):
  cfg = dataclasses.replace(CFG, dtype="bfloat16")  # params stay float32: same tree
  image, logits = make_apply(cfg)(perturbed_params, inputs)
  assert image.dtype == logits.dtype == jnp.float32  # heads run in float32
  for x, ref in zip((image, logits), reference):
    rel = float(jnp.linalg.norm(x - ref) / jnp.linalg.norm(ref))
    # bfloat16 keeps 8 significant bits (0.4 % rounding); after a dozen layers
    # ~1 % is expected (measured: 0.7 % on both outputs); 3 % would signal a bug.
    assert rel < 0.03, rel


def test_remat_gives_the_same_outputs_and_gradients():
  # A one-level model with random params: every block kind (the memory-efficient
  # layout adds the full-resolution ones) at half the compile time of CFG.
  cfg = dataclasses.replace(CFG, channel_mults=(1,), num_res_blocks=1, self_attention=True,
                            cross_attention=True, downsample_first=True)
  x = make_inputs(cfg, 3, 2, 8, 8)
  # NaN in padded text positions must not reach the gradients either.
  x["text_emb"] = x["text_emb"].at[0, L - 2:].set(jnp.nan)
  p = random_params(cfg, x)

  def value_and_grad(cfg):
    model = JointUNet(cfg)
    def loss(p):
      image, logits = call(model, p, x)
      return jnp.sum(image**2) + jnp.sum(jax.nn.log_softmax(logits)[..., 0])
    return jax.jit(jax.value_and_grad(loss))(p)

  value, grads = value_and_grad(cfg)
  value_remat, grads_remat = value_and_grad(dataclasses.replace(cfg, remat=True))
  np.testing.assert_allclose(value_remat, value, rtol=1e-6)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
  # Equal up to float32 reassociation (XLA fuses the recomputation differently),
  # relative to the largest gradient: some are exactly zero in theory (attention
  # key biases: softmax ignores a shift shared by all keys) and only rounding noise.
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
               grads_remat, grads)


def test_dropout(perturbed_params, inputs, reference):
  apply_train = make_apply(CFG, train=True)
  a = apply_train(perturbed_params, inputs, jax.random.key(10))
  b = apply_train(perturbed_params, inputs, jax.random.key(11))
  assert_changed(a, b)
  assert_same(apply_train(perturbed_params, inputs, jax.random.key(10)), a)
  assert_changed(a, reference)
  assert_same(apply_f32(perturbed_params, inputs), reference)  # train=False is deterministic


def test_image_only_mode_has_no_layout_parameters():
  cfg = dataclasses.replace(presets.tiny(), num_classes=0, lowres_cond=True,
                            self_condition_image=True)
  model = JointUNet(cfg)
  x = make_inputs(cfg, 0)
  (image, logits), variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), *[x[k] for k in POSITIONAL],
                                       **{k: v for k, v in x.items() if k not in POSITIONAL}), x)
  assert image.shape == (B, H, W, 3) and logits is None
  paths = ["/".join(p) for p in traverse_util.flatten_dict(variables["params"])]
  assert paths and not [p for p in paths if "layout" in p]
  with pytest.raises(ValueError, match="y_t"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), x["x_t"], x["x_t"][..., 0],
                                      x["log_snr"], x["text_emb"], x["text_mask"]))


def test_inputs_the_config_does_not_enable_are_rejected():
  cfg = presets.tiny()
  x = make_inputs(cfg, 0)
  args = [x[k] for k in POSITIONAL]
  init = lambda **kw: jax.eval_shape(lambda: JointUNet(cfg).init(jax.random.key(0), *args, **kw))
  with pytest.raises(ValueError, match="self_cond_layout.*self_condition_layout=False"):
    init(self_cond_layout=jnp.zeros((B, H, W, K)))
  with pytest.raises(ValueError, match="lowres_image.*lowres_cond=False"):
    init(lowres_image=x["x_t"])
  with pytest.raises(ValueError, match="not divisible by 2"):
    jax.eval_shape(lambda: JointUNet(cfg).init(
        jax.random.key(0), x["x_t"][:, :15], x["y_t"][:, :15], *args[2:]))
  with pytest.raises(ValueError, match="lowres_log_snr is required"):
    sr = dataclasses.replace(cfg, lowres_cond=True)
    jax.eval_shape(lambda: JointUNet(sr).init(
        jax.random.key(0), *args, lowres_image=x["x_t"], lowres_layout=x["y_t"]))


def test_config_validation():
  with pytest.raises(ValueError, match="num_res_blocks has 3 entries"):
    UNetConfig(channel_mults=(1, 2), num_res_blocks=(1, 1, 1))
  with pytest.raises(ValueError, match="norm_groups"):
    UNetConfig(dim=20, norm_groups=8)
  with pytest.raises(ValueError, match="self_condition_layout"):
    UNetConfig(num_classes=0, self_condition_layout=True)
  with pytest.raises(ValueError, match="prediction"):
    UNetConfig(prediction="x_start")


def test_config_round_trips_through_config_dict():
  cfg = presets.tiny()
  as_config_dict = ml_collections.ConfigDict(cfg.to_dict())
  assert UNetConfig.from_dict(as_config_dict) == cfg
  assert UNetConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="unknown UNetConfig keys"):
    UNetConfig.from_dict({**cfg.to_dict(), "widht": 3})
  # JointUNet takes the ConfigDict directly.
  x = make_inputs(cfg, 0, 1, 8, 8)
  image, logits = jax.eval_shape(lambda: JointUNet(as_config_dict).init_with_output(
      jax.random.key(0), *[x[k] for k in POSITIONAL]))[0]
  assert logits.shape == (1, 8, 8, K)


def test_auto_dtype_is_bfloat16_off_cpu(monkeypatch):
  cfg = dataclasses.replace(CFG, dtype="auto")
  assert cfg.compute_dtype == jnp.float32  # the suite runs on CPU
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert cfg.compute_dtype == jnp.bfloat16
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert cfg.compute_dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="dtype"):
    dataclasses.replace(CFG, dtype="int8")
