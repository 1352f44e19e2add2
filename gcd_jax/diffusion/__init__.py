"""The math of GCDP as pure functions of arrays (no Flax, no I/O, no global state).

  schedules    log-SNR schedules lambda(t)
  gaussian     image diffusion: q_sample, posterior, renoise, parameterisations, p2, thresholding
  categorical  layout diffusion in log space: q_probs, q_sample, posterior, renoise, vb_loss
  joint        the shared integer time, joint noising and the joint loss
"""

from gcd_jax.diffusion import categorical
from gcd_jax.diffusion import gaussian
from gcd_jax.diffusion import joint
from gcd_jax.diffusion import schedules
