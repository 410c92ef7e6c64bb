"""The optimizers, one per module, and what they share.

`base`: exclusion lists, λ·w, the trust ratio, layer statistics, skipping
non-finite steps. `moments`: where m and v are kept (float, or float8 codes
from `float8`). `xla_cpu`: the plans of LAMB's and LARS's scheduled twins
of `update_step` (large variables on CPUs and under XLA), apart from the
math. `norms`: norms and global-norm clipping. `registry`: the one
table of optimizer names.
"""
