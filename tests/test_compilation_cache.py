"""The persistent compilation cache of the command-line entry points."""

import jax

from gcd_jax import compilation_cache


def test_enable_respects_jax_then_ours_then_off(monkeypatch, tmp_path):
  before = jax.config.jax_compilation_cache_dir
  try:
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
    assert compilation_cache.enable() == str(tmp_path / "jax")
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("GCD_JAX_COMPILATION_CACHE", "off")
    assert compilation_cache.enable() is None
    monkeypatch.setenv("GCD_JAX_COMPILATION_CACHE", str(tmp_path / "ours"))
    assert compilation_cache.enable() == str(tmp_path / "ours")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "ours")
    assert (tmp_path / "ours").is_dir()
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
