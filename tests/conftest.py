"""Shared test settings: hypothesis profiles and per-dtype tolerances (written once, here)."""
import os

# The tests use tiny matrices, where OpenBLAS's thread hand-off costs far more than it saves on
# this 2-core machine (measured 10x on small models); set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Count numba's runtime allocations (read by the no-allocation tests of the workspace); numba
# reads this once, when it is first imported.
os.environ.setdefault("NUMBA_NRT_STATS", "1")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# `ci`: reproducible (derandomized, no example database), fixed example count, no deadline
# because the first call of a numba kernel compiles. `dev`: random, with the example DB.
settings.register_profile(
    "ci", derandomize=True, database=None, max_examples=25, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.getenv("HYPOTHESIS_PROFILE", "ci" if os.getenv("CI") else "dev"))

# Relative tolerances for comparing two computations of the same quantity, by dtype:
# a few hundred ulps of accumulated rounding. Finite differences use FD_* (float64 only).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
FD_STEP = 1e-6          # central-difference step in float64
FD_RTOL = 1e-6          # max relative error of a float64 gradient against finite differences


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)
