"""`gcd_jax.models.summary`: parameter counts and FLOPs of a U-Net config."""

import jax
import numpy as np
import pytest

from gcd_jax.models import presets, summary

H, W, TEXT_LEN = 16, 32, 8


@pytest.fixture(scope="module")
def params():
  return summary.param_shapes(presets.tiny(), H, W, TEXT_LEN)


def test_parameter_counts_match_the_param_tree(params):
  expected = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
  assert expected > 0
  assert summary.count_params(params) == expected
  assert sum(summary.params_per_module(params).values()) == expected
  assert sum(summary.params_per_module(params, depth=3).values()) == expected
  text = summary.summarize(presets.tiny(), 1, H, W, TEXT_LEN, full=True, flops=False)
  assert f"total parameters: {expected:,}" in text


def test_per_module_counts_follow_the_tree(params):
  counts = summary.params_per_module(params)
  assert set(counts) == set(params)
  kernel = params["conv_in"]["kernel"].shape  # [3, 3, C_in, dim]
  assert counts["conv_in"] == int(np.prod(kernel)) + kernel[-1]


def test_forward_flops_are_positive_and_plausible():
  cfg = presets.tiny()
  flops = summary.forward_flops(cfg, 1, H, W, TEXT_LEN)
  # At least the multiply-adds (2 FLOPs each) of the first 3x3 convolution.
  in_channels = cfg.image_channels + cfg.layout_embed_dim
  assert flops > 2 * H * W * 9 * in_channels * cfg.dim


def test_cli_prints_the_table(capsys):
  summary.main(["--preset", "tiny", "--height", "16", "--width", "16", "--noflops"])
  out = capsys.readouterr().out
  assert "conv_in" in out and "total parameters" in out
