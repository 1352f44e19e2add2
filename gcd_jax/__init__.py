"""gcd_jax: the Gaussian-categorical diffusion process (GCDP) in JAX."""

__version__ = "0.1.0"
