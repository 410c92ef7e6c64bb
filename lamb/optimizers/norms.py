"""Norms: of one tensor, and the global norm of many without overflow."""

from keras import ops


def l2_norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))


def scaled_global_norm(tensors):
    """`(scale, norm_of_scaled)` with ‖(t₁, t₂, ...)‖ = scale · norm_of_scaled,
    without overflow for finite tensors.

    The plain sum of squares overflows to inf above about 1.8e19 per
    element; only then (a `cond`, so at no cost otherwise) is the norm
    recomputed from the tensors divided by their largest magnitude (then
    `scale`; else 1). `norm_of_scaled` is finite exactly when every element
    is, even where `scale · norm_of_scaled` exceeds float32's range.
    """
    tensors = [ops.cast(t, "float32") for t in tensors if t is not None]
    plain = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(t)) for t in tensors])))

    def rescaled():
        largest = ops.max(ops.stack([ops.max(ops.abs(t)) for t in tensors]))
        scale = ops.where(largest > 0.0, largest, 1.0)
        squares = ops.stack([ops.sum(ops.square(t / scale)) for t in tensors])
        return scale, ops.sqrt(ops.sum(squares))

    return ops.cond(ops.isfinite(plain), lambda: (ops.ones_like(plain), plain), rescaled)


def global_norm(tensors):
    """‖(t₁, t₂, ...)‖ (`scaled_global_norm`): not finite exactly when an
    element is not, or when the norm itself exceeds float32's range."""
    scale, norm = scaled_global_norm(tensors)
    return scale * norm


def clip_by_global_norm(tensors, clip_norm, scaled_norm=None):
    """Keras's `clip_by_global_norm` without overflow or underflow (or with
    `scaled_norm`, `scaled_global_norm`'s result if already computed): the
    tensors scaled to global norm at most `clip_norm`, all NaN if one is not
    finite.

    Each tensor is divided by `scale`, then multiplied by
    `clip_norm · min(1 / norm, scale / clip_norm)` (Keras's factor where
    `scale` is 1), so gradients near float32's largest value are clipped
    like any others (a single factor `clip_norm / (scale · norm)` would be
    subnormal, and flushed to zero by XLA). `+ (norm − norm)` makes the
    factor NaN where the norm is not finite.
    """
    scale, norm = scaled_global_norm(tensors) if scaled_norm is None else scaled_norm
    factor = clip_norm * ops.minimum(1.0 / norm, scale / clip_norm) + (norm - norm)
    return [
        t if t is None else (t / ops.cast(scale, t.dtype)) * ops.cast(factor, t.dtype)
        for t in tensors
    ]
