"""Models trained with the lamb optimizers."""
