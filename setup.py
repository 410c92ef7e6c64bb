"""Distribution of lamb: large-batch optimizers for Keras 3."""

from setuptools import find_packages, setup

EXTRAS = {
    "bert": [],
    "notebook": [],
    "test": ["pytest>=7", "jax>=0.4.30", "tensorflow-datasets>=4.9", "importlib_resources", "matplotlib>=3.7"],
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
