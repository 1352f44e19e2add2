"""Experiment configs: `python -m gcd_jax.main --config=configs/<name>.py[:variant]`.

Each module's `get_config(variant="")` returns an `ml_collections.ConfigDict`
built on `gcd_jax.config_base`; the modules are importable (`from configs import
shapes`) from the repository root.
"""
