"""Distribution of lamb-keras: large-batch optimizers for Keras 3.

The distribution is `lamb-keras` (the name `lamb` on the package index is
another project); the import names are `lamb` and `optimization`.
"""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    """`__version__` from lamb/_version.py, the one place it is written."""
    namespace = {}
    with open(os.path.join(HERE, "lamb", "_version.py"), encoding="utf-8") as file:
        exec(file.read(), namespace)
    return namespace["__version__"]


MNIST = ["tensorflow-datasets>=4.9", "importlib_resources", "matplotlib>=3.7", "requests"]
# keras-hub: the BERT model; tokenizers: create_pretraining_data's WordPiece.
BERT = ["keras-hub>=0.32", "tokenizers>=0.20", "tensorboard>=2.16", "matplotlib>=3.7"]
NOTEBOOK = MNIST + ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6"]
# The JAX backend (KERAS_BACKEND=jax): run_pretraining's checkpoints need orbax-checkpoint
# (tested: 0.12.8, with jax 0.10.2; jax 0.6 is orbax-checkpoint 0.12.8's own floor). It
# needs Python 3.11: on 3.10 the extra installs jax alone.
JAX = ["jax>=0.6", "orbax-checkpoint>=0.12.8; python_version >= '3.11'"]
# The documentation site (mkdocs.yml): the API pages read the sources statically (griffe).
DOCS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings>=1.0", "mkdocstrings-python>=2.0"]
EXTRAS = {
    "mnist": MNIST,
    "bert": BERT,
    "notebook": NOTEBOOK,
    "docs": DOCS,
    "jax": JAX,
    "test": sorted(set(MNIST + BERT + NOTEBOOK + DOCS + JAX + ["pytest>=7", "pytest-xdist>=3.5", "ml_dtypes>=0.3.1", "optax>=0.2"])),
}

setup(
    name="lamb-keras",
    version=read_version(),
    description=(
        "LAMB, LAMB16, LARS and BERT's AdamWeightDecay for Keras 3: "
        "large-batch training on CPU, GPU and Cloud TPU"
    ),
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    packages=find_packages(include=["lamb", "lamb.*"]) + ["lamb._configs"],
    # The top-level configs/ folder, installed as lamb/_configs (see lamb/configs.py).
    package_dir={"lamb._configs": "configs"},
    package_data={"lamb._configs": ["*.json", "*.flags"]},
    py_modules=["optimization"],
    # Keras 3.12: `ops.view` (LAMB16's codes) and `add_optimizer_variables` (3.10). The
    # floors are tested: TensorFlow 2.16.1, Keras 3.12.0, ml_dtypes 0.3.2, NumPy 1.26.
    install_requires=["tensorflow>=2.16", "keras>=3.12", "numpy", "absl-py"],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "lamb-mnist-compare=lamb.mnist_compare:run",
            "lamb-run-pretraining=lamb.run_pretraining:run",
            "lamb-create-pretraining-data=lamb.create_pretraining_data:run",
        ]
    },
)
