"""The optimizers, one per module, and what they share.

`base`: exclusion lists, λ·w, the trust ratio, layer statistics, skipping
non-finite steps. `moments`: where m and v are kept (float, or float8 codes
from `float8`). `xla_cpu`: how steps are scheduled for XLA on CPUs, apart
from the math. `norms`: norms and global-norm clipping. `registry`: the one
table of optimizer names.
"""
