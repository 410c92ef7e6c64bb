"""Distribution of lamb: large-batch optimizers for Keras 3."""

from setuptools import find_packages, setup

MNIST = ["tensorflow-datasets>=4.9", "importlib_resources", "matplotlib>=3.7"]
# keras-hub: the BERT model; tokenizers: create_pretraining_data's WordPiece.
BERT = ["keras-hub>=0.32", "tokenizers>=0.20", "tensorboard>=2.16", "matplotlib>=3.7"]
NOTEBOOK = MNIST + ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6"]
EXTRAS = {
    "mnist": MNIST,
    "bert": BERT,
    "notebook": NOTEBOOK,
    "test": sorted(set(MNIST + BERT + NOTEBOOK + ["pytest>=7", "jax>=0.4.30", "ml_dtypes>=0.4"])),
}

setup(
    name="lamb",
    version="0.1.0",
    description=(
        "LAMB, LAMB16, LARS and BERT's AdamWeightDecay for Keras 3: "
        "large-batch training on CPU, GPU and Cloud TPU"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lamb", "lamb.*"]),
    py_modules=["optimization"],
    install_requires=["tensorflow>=2.16", "keras>=3.3", "numpy", "absl-py"],
    extras_require=EXTRAS,
)
