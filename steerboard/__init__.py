"""steerboard: how much safety does a steering or editing method buy, and what does it cost?

The distribution installs the top-level folders ``tasks/``, ``methods/``, ``scorers/`` and
``leaderboard/`` as ``steerboard.tasks``, ``steerboard.methods``, ``steerboard.scorers`` and
``steerboard.leaderboard``.
"""

import os as _os

# Import-time actions, deliberate. First: bound how long OpenMP threads spin while they wait.
# torch's CPU kernels use OpenMP (libgomp). Its default waits spin for up to 300,000 iterations and
# then sleep; a decode step is ~1,500 short kernels back to back, so threads that sleep at once
# (OMP_WAIT_POLICY=PASSIVE) pay a wake-up per kernel: a batch-16 decode step took 81 ms passive against
# 54 ms with a short spin on the embedded model. A long spin, though, is pathological when anything else
# wants the 2 cores: with one other busy process, a step took 327-517 ms with libgomp's default spin,
# 152 ms with a 10,000-iteration spin and 90 ms passive (benchmarks/omp_wait.py). A short spin keeps
# nearly all of the quiet-machine speed and avoids the pathology; set OMP_WAIT_POLICY=PASSIVE when
# the machine is shared. It must be set before torch loads, so it lives here; values the user set
# are kept.
if "OMP_WAIT_POLICY" not in _os.environ:
    _os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# oneDNN is left free to use Intel AMX (nothing is set for it here; ONEDNN_MAX_CPU_ISA is the user's). AMX
# bfloat16 kernels round a row differently depending on how many rows the matmul has, so where runs must repeat
# bit for bit (steerboard.precision.batch_invariant, the engine's default) the bfloat16 linear layers multiply
# fixed blocks of precision.AMX_BLOCK_ROWS rows on AMX CPUs (precision.row_blocks_needed), which gives every row
# the same bits in any batch and is faster than capping oneDNN below AMX (docs/engine.md; benchmarks/amx_blocks.py).

__version__ = "0.1.0"
