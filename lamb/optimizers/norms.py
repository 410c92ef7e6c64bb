"""Norms: of one tensor, and the global norm of many without overflow."""

from keras import ops


def l2_norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))


def global_norm(tensors):
    """‖(t₁, t₂, ...)‖ without overflow for finite tensors.

    The plain sum of squares overflows to inf above about 1.8e19 per
    element; only then (a `cond`, so at no cost otherwise) is the norm
    recomputed from the tensors divided by their largest magnitude. Not
    finite exactly when an element is not.
    """
    tensors = [ops.cast(t, "float32") for t in tensors if t is not None]
    plain = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(t)) for t in tensors])))

    def rescaled():
        largest = ops.max(ops.stack([ops.max(ops.abs(t)) for t in tensors]))
        scale = ops.where(largest > 0.0, largest, 1.0)
        squares = ops.stack([ops.sum(ops.square(t / scale)) for t in tensors])
        return scale * ops.sqrt(ops.sum(squares))

    return ops.cond(ops.isfinite(plain), lambda: plain, rescaled)


def clip_by_global_norm(tensors, clip_norm, norm=None):
    """Keras's `clip_by_global_norm` with `global_norm`'s norm (or `norm`,
    if already computed): the tensors scaled to global norm at most
    `clip_norm`, all NaN if one is not finite."""
    if norm is None:
        norm = global_norm(tensors)
    scale = clip_norm * ops.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
    return [t if t is None else t * ops.cast(scale, t.dtype) for t in tensors]
