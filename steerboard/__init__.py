"""steerboard: how much safety does a steering or editing method buy, and what does it cost?

The distribution installs the top-level folders ``tasks/``, ``methods/``, ``scorers/`` and
``leaderboard/`` as ``steerboard.tasks``, ``steerboard.methods``, ``steerboard.scorers`` and
``steerboard.leaderboard``.
"""

import os as _os

# The one import-time action, deliberate: make OpenMP threads sleep instead of spin when they wait.
# torch's CPU kernels use OpenMP; with spinning waits, two torch workloads in one process (the generation
# engine and the embedding judge scoring finished samples) or any other busy process on a 2-core machine
# oversubscribe the cores and a decode step slowed down 15x in our measurement (148 s vs 9.9 s for the
# same batch). It must be set before torch loads, so it lives here; a value the user set is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
