"""The JAX side of the step benchmarks: one jit-compiled optimizer step with
donated buffers, for Keras optimizers and optax transformations, and optax's
Adam and LAMB configured to the math of Keras's Adam and of `lamb.LAMB`.

Imports JAX, optax and Keras, never TensorFlow.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax


def optax_adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """`optax.adam` with the math of `keras.optimizers.Adam` (defaults: Keras's).

    Keras adds ε to √v before the bias correction, w ← w − η·(√c2 / c1)·m / (√v + ε)
    with c = 1 − β^t, which is m̂ / (√v̂ + ε/√c2); optax adds its `eps` to √v̂.
    So optax's `eps` here is ε/√(1 − β2^t), a schedule of the step count
    (`optax.inject_hyperparams` calls it with the number of steps taken before
    this one, hence t = count + 1).
    """

    def eps(count):
        return epsilon / jnp.sqrt(1.0 - jnp.float32(beta_2) ** (count + 1))

    return optax.inject_hyperparams(optax.adam)(learning_rate, b1=beta_1, b2=beta_2, eps=eps)


def masks(paths, exclude_from_weight_decay=(), exclude_from_layer_adaptation=None, weight_decay=0.0):
    """`(decays, adapts)`: per path, whether `lamb.LAMB` with these arguments
    decays the weight and applies the trust ratio (its rules: `re.search`
    on the path; the layer-adaptation list defaults to the decay list)."""
    if exclude_from_layer_adaptation is None:
        exclude_from_layer_adaptation = exclude_from_weight_decay

    def excluded(patterns, path):
        return any(re.search(pattern, path) for pattern in patterns or ())

    decays = [weight_decay > 0 and not excluded(exclude_from_weight_decay, p) for p in paths]
    adapts = [not excluded(exclude_from_layer_adaptation, p) for p in paths]
    return decays, adapts


def optax_lamb(
    paths,
    learning_rate,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    weight_decay=0.0,
    exclude_from_weight_decay=(),
    exclude_from_layer_adaptation=None,
):
    """optax's LAMB with the math of `lamb.LAMB` (same arguments and defaults)
    for a list of parameters with these `paths`.

    Both compute u = m̂ / (√v̂ + ε) + λ·w (λ where weight decay applies) and
    w ← w − η·‖w‖/‖u‖·u, the ratio 1 if a norm is 0. `optax.lamb` itself
    when every parameter takes the trust ratio; else `optax.lamb`'s own chain
    (`optax/_src/alias.py`) with its `scale_by_trust_ratio` masked
    (`optax.masked`) to the parameters `lamb.LAMB` adapts: the others get
    ratio 1, as in `lamb.LAMB`.
    """
    decays, adapts = masks(paths, exclude_from_weight_decay, exclude_from_layer_adaptation, weight_decay)
    if all(adapts):
        return optax.lamb(learning_rate, b1=beta_1, b2=beta_2, eps=epsilon,
                          weight_decay=weight_decay, mask=decays)
    return optax.chain(
        optax.scale_by_adam(b1=beta_1, b2=beta_2, eps=epsilon),
        optax.add_decayed_weights(weight_decay, mask=decays),
        optax.masked(optax.scale_by_trust_ratio(), adapts),
        optax.scale_by_learning_rate(learning_rate),
    )


class Step:
    """One jit-compiled step `(params, state, gradients) -> (params, state)`,
    each step's new values fed to the next; with `donate`, `params` and
    `state` donated, so that each new value reuses its old buffer (without,
    as a user's `jax.jit(optimizer.stateless_apply)`, each step writes new
    buffers). `run()` takes one step (asynchronously); `wait()` blocks until
    the last one is done. `state_bytes` counts the optimizer state."""

    def __init__(self, step, params, state, donate=True):
        self._step = jax.jit(step, donate_argnums=(0, 1) if donate else ())
        self.params, self.state = params, state
        self.state_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))

    def run(self, gradients):
        self.params, self.state = self._step(self.params, self.state, gradients)

    def wait(self):
        jax.block_until_ready((self.params, self.state))

    def compiled_text(self, gradients):
        """The optimized HLO of the step (for looking at what XLA made of it)."""
        return self._step.lower(self.params, self.state, gradients).compile().as_text()


def keras_step(optimizer, variables, donate=True):
    """`Step` of a Keras optimizer over `variables` (built here; each step
    updates copies of their values, so several optimizers can share them).

    `optimizer.stateless_apply` takes (optimizer values, gradients, trainable
    values) and returns (trainable values, optimizer values). Jitted as it is
    with donated inputs, JAX pairs donated inputs with outputs of the same
    shape in order, so the new weights land in the first moment's buffer and
    so on, and XLA copies every buffer each step (Keras Adam's 20 x 1M step
    took 4.5x optax's for it here). This step takes and returns the values in
    one order, as Keras's own JAX trainer does with its state.
    """
    optimizer.build(variables)
    state = [v.value for v in optimizer.variables]  # donated: the optimizer's variables are not read again
    params = [jnp.array(v.value) for v in variables]

    def step(params, state, gradients):
        return optimizer.stateless_apply(state, gradients, params)

    return Step(step, params, state, donate)


def optax_step(transformation, values, donate=True):
    """`Step` of an optax transformation over copies of `values`."""
    params = [jnp.array(value) for value in values]

    def step(params, state, gradients):
        updates, state = transformation.update(gradients, state, params)
        return optax.apply_updates(params, updates), state

    return Step(step, params, transformation.init(params), donate)


def device_names():
    return ", ".join(sorted({device.device_kind for device in jax.devices()}))


def parameters(values):
    return sum(math.prod(np.shape(v)) for v in values)
