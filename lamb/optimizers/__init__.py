"""The optimizers, one per module; `base` holds what they share."""
