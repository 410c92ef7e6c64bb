"""`python -m tests.jax_checkpoints_worker DISTRIBUTION MESH_SHAPE FLAGS...`
(KERAS_BACKEND=jax): `lamb.run_pretraining` with FLAGS under the
`keras.distribution` of `lamb.jax_distribution.make_distribution(DISTRIBUTION,
MESH_SHAPE)` (MESH_SHAPE `-` for none; BERT's layouts) over all the devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N` makes N on CPU)."""

import sys

import keras

from lamb import jax_distribution, run_pretraining

if __name__ == "__main__":
    distribution, mesh_shape = sys.argv[1:3]
    keras.distribution.set_distribution(jax_distribution.make_distribution(
        distribution, None if mesh_shape == "-" else mesh_shape, jax_distribution.BERT_LAYOUTS,
    ))
    sys.argv[1:3] = []
    run_pretraining.run()
