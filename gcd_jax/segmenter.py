"""`python -m gcd_jax.segmenter train ...`: the same as `python -m gcd_jax.segnet train ...`."""
import sys

from gcd_jax import segnet

if __name__ == "__main__":
  sys.exit(segnet.main())
