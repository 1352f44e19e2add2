"""`gcd_jax.models.presets`: the named U-Net configurations."""

import pytest

from gcd_jax.models import presets, summary
from gcd_jax.models.unet import UNetConfig


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_every_preset_builds_parameters(name):
  cfg = presets.get_preset(name)
  assert isinstance(cfg, UNetConfig)
  assert summary.count_params(summary.param_shapes(cfg, 16, 16)) > 0


def test_paper_base_matches_the_paper():
  cfg = presets.paper_base()  # docs/gcdp.md section 3
  assert (cfg.dim, cfg.channel_mults, cfg.num_res_blocks) == (128, (1, 2, 4, 8), (2, 4, 8, 8))
  assert cfg.self_attention == cfg.cross_attention == (False, True, True, True)
  assert (cfg.num_heads, cfg.head_dim, cfg.text_dim, cfg.num_classes) == (8, 64, 1024, 19)
  assert cfg.downsample_first and not cfg.lowres_cond  # as the released BaseJointUnet
  sr = presets.paper_sr()
  assert sr.lowres_cond and sr.cross_attention == (False, False, False, True)


def test_shapes_is_small():
  n = summary.count_params(summary.param_shapes(presets.shapes()))
  assert 2e6 < n < 6e6, n


def test_get_preset_overrides_and_errors():
  assert presets.get_preset("paper_base", num_classes=20).num_classes == 20
  with pytest.raises(ValueError, match="unknown U-Net preset"):
    presets.get_preset("paper_large")
  with pytest.raises(TypeError):
    presets.get_preset("tiny", widht=3)


def test_reference_mirrors_the_released_benchmark_configuration():
  cfg = presets.reference()
  assert (cfg.dim, cfg.channel_mults, cfg.num_res_blocks) == (64, (1, 2, 4), (2, 2, 2))
  assert cfg.self_attention == cfg.cross_attention == (False, False, True) and cfg.mid_attention
  assert (cfg.num_heads, cfg.head_dim, cfg.ff_mult, cfg.layout_embed_dim) == (4, 64, 2, 3)
  assert (cfg.num_classes, cfg.text_dim, cfg.downsample_first) == (8, 256, True)
  n = summary.count_params(summary.param_shapes(cfg, 32, 32, 32))
  assert 17.3e6 < n < 17.4e6, n  # the released code: 19.6M (its resampler and time tokens)
