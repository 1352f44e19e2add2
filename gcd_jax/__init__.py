"""gcd_jax: the Gaussian-categorical diffusion process (GCDP) in JAX."""

from gcd_jax import xla_defaults as _xla_defaults

# Before jax creates its CPU client (see gcd_jax/xla_defaults.py).
_xla_defaults.apply()

__version__ = "0.1.0"
