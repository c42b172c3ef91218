"""OpenMP wait settings for a process that runs steerboard's engine, applied by the code about to create one.

torch's CPU kernels use OpenMP (libgomp). Its default waits spin for up to 300,000 iterations and then sleep; a
decode step is ~1,500 short kernels back to back, so threads that sleep at once (``OMP_WAIT_POLICY=PASSIVE``)
pay a wake-up per kernel: a batch-16 decode step took 81 ms passive against 54 ms with a short spin on the
embedded model. A long spin, though, is pathological when anything else wants the 2 cores: with one other busy
process, a step took 327-517 ms with libgomp's default spin, 152 ms with a 10,000-iteration spin and 90 ms
passive (``benchmarks/omp_wait.py``). A short spin keeps nearly all of the quiet-machine speed and avoids the
pathology; set ``OMP_WAIT_POLICY=PASSIVE`` when the machine is shared (``make`` does).

libgomp reads ``GOMP_SPINCOUNT`` and ``OMP_WAIT_POLICY`` once, when it loads, which is when torch is first
imported. Importing steerboard changes nothing (Inspect imports it through its entry point in every ``inspect``
process); :func:`configure_openmp` is called where an engine is about to be created -- the method providers'
constructor (``methods/provider.py``), ``Engine.load``, the benchmarks -- before torch loads. The trade-off: a
process that loads torch before steerboard's engine (for example one that first ran Inspect's ``hf/`` provider,
or a script that imports torch first) keeps libgomp's defaults unless the user sets ``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY`` in the environment.
"""

from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"
"""``GOMP_SPINCOUNT`` set when the user chose no OpenMP wait setting."""


def configure_openmp() -> bool:
    """Bound how long OpenMP threads spin while they wait, for this process and the processes it starts.

    Sets ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` when torch is not loaded yet (later, libgomp would not read
    it) and the environment holds neither ``GOMP_SPINCOUNT`` nor ``OMP_WAIT_POLICY`` (a user's choice is kept).
    Returns whether it set the variable. Calling it again is harmless.
    """
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
