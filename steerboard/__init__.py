"""steerboard: how much safety does a steering or editing method buy, and what does it cost?

The distribution installs the top-level folders ``tasks/``, ``methods/``, ``scorers/`` and
``leaderboard/`` as ``steerboard.tasks``, ``steerboard.methods``, ``steerboard.scorers`` and
``steerboard.leaderboard``.
"""

# Importing steerboard changes no environment variable (Inspect imports it in every `inspect` process): the
# OpenMP wait setting is applied where an engine is about to be created (steerboard/_runtime_env.py).
# oneDNN is left free to use Intel AMX (nothing is set for it here; ONEDNN_MAX_CPU_ISA is the user's). AMX
# bfloat16 kernels round a row differently depending on how many rows the matmul has, so where runs must repeat
# bit for bit (steerboard.precision.batch_invariant, the engine's default) the bfloat16 linear layers multiply
# fixed blocks of precision.AMX_BLOCK_ROWS rows on AMX CPUs (precision.row_blocks_needed), which gives every row
# the same bits in any batch and is faster than capping oneDNN below AMX (docs/engine.md; benchmarks/amx_blocks.py).

__version__ = "0.1.0"
