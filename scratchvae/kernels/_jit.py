"""The single place for Numba options: caching, fastmath flag sets, error model, thread counts.

Every ``@njit`` kernel in ``numba_cpu.py`` is decorated with ``cached_njit(**OPTS)`` using one
of the option sets below, and every CUDA launch in ``cuda.py`` reads its threads per block from
this module at call time (so tests can patch ``TPB``/``TPB_1D`` small for the simulator).

Why these choices (measured with numba 0.68 on a 2-core AVX-512 machine without SVML; the
kernel-level ones are re-measured by benchmarks/bench_kernels.py):

- ``cache=True`` cuts compile time ~80x in later processes, but raises ``RuntimeError`` at
  decoration time when no cache directory is writable; ``cached_njit`` then falls back to an
  uncached kernel with a ``RuntimeWarning`` instead of breaking ``import scratchvae``.
  Cached kernels treat globals as constants and are invalidated only by edits to the file that
  defines them, so a cached kernel reads no mutable globals and calls njit helpers from its own
  module only. (The activation codes it compares against are a frozen contract.)
- ``fastmath``: never ``True`` (it removes NaN/inf checks and breaks the log-sum-exp ``-inf``
  guard). ``{"reassoc", "contract"}`` only on pure multiply-add reductions, where ``reassoc``
  lets LLVM vectorise a scalar accumulator (~7x). No fastmath on kernels that compute or guard
  exp/log/logsumexp/NaN, nor on elementwise kernels (they vectorise without it, and without
  ``contract`` they round exactly like the NumPy reference).
- ``error_model="numpy"`` wherever a kernel divides: the default "python" model checks every
  division for zero, which blocks vectorisation (6-7x slower).
- ``parallel=True`` is used nowhere. On 2 cores a prange Adam update was no faster in float32
  and at most 1.6x in float64 (>= 300k elements, idle machine; no gain under load); inside a
  training step, between BLAS calls, it saved under 5%. A parallel region costs 2-50 us, it
  triples compile time, and numba's cache key ignores the ``parallel`` flag, so a serial and a
  parallel dispatcher compiled from one Python function would load each other's cached code
  (a parallel variant needs its own function).
"""
from __future__ import annotations

import warnings

from numba import njit

# fastmath flag set for pure multiply-add reductions (GEMM, row sums of products).
FASTMATH_REDUCE = frozenset({"reassoc", "contract"})

# Option sets, one per kind of kernel (pass as cached_njit(**OPTS)).
# STRICT: no fastmath, every operation rounded as written (as NumPy does) and NaN/inf checks
# kept: elementwise kernels, column sums, the log-sum-exp -inf guard, anything touching exp/log.
STRICT = {"fastmath": False, "error_model": "numpy"}
# REDUCE: row sums of products over a feature axis (vectorised by ``reassoc``).
REDUCE = {"fastmath": set(FASTMATH_REDUCE), "error_model": "numpy"}

# CUDA threads per block: the GEMM uses TPB x TPB blocks (TPB is also its shared-memory tile
# width); every other kernel is 1-D with TPB_1D threads. Host wrappers read these at call time.
TPB = 16
TPB_1D = 128


def cached_njit(**opts):
    """``numba.njit(cache=True, **opts)``, or uncached with a RuntimeWarning if no cache dir."""
    def decorate(fn):
        try:
            return njit(cache=True, **opts)(fn)
        except RuntimeError as e:  # "cannot cache function ...: no locator available"
            warnings.warn(f"numba cache disabled for {fn.__name__}: {e}", RuntimeWarning, stacklevel=2)
            return njit(**opts)(fn)
    return decorate
