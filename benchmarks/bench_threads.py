"""Elementwise work on both cores: does a two-thread Adam update win inside a training step?

Adam over the 784-400-20 VAE's 652,824 parameters is the largest non-GEMM item of a step at
small batches, and it is memory-bound on one core. This script times, in float32:

- ``serial``: the update as one njit loop (scratchvae's kernel, the way it is compiled);
- ``prange``: the same loop with ``parallel=True``, on numba's threading layer ``--layer``;
- ``threads``: the serial kernel (``nogil``) on two halves, one of them in a Python worker thread;

each alone, and right after a (512, 784) @ (784, 400) GEMM, the order of a training step (the
optimizer runs between the last BLAS call of one step and the first of the next). numba's
threading layer and libgomp's wait policy are fixed per process, so run one process per setting:

    for layer in omp workqueue; do
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_threads.py --layer $layer
    done
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=passive \\
        python benchmarks/bench_threads.py --layer omp

Each number is the mean ms per call over 200 calls after two warm-up calls.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

import _common as C


def _update(p, g, m, v, step, b1, omb1, b2, omb2, inv_sqrt_c2, eps, tiny):
    zero = p.dtype.type(0)
    # prange is range unless the function is compiled with parallel=True (a loop over
    # range(lo, hi) instead of the halves' own views does not vectorise: 4x slower)
    for i in prange(p.size):
        mi = b1 * m[i] + omb1 * g[i]
        vi = b2 * v[i] + omb2 * g[i] * g[i]
        mi = zero if abs(mi) < tiny else mi
        vi = zero if abs(vi) < tiny else vi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step * mi / (np.sqrt(vi) * inv_sqrt_c2 + eps)


# two dispatchers from one function (uncached, so the two never load each other's code)
serial = njit(error_model="numpy", nogil=True)(_update)
parallel = njit(error_model="numpy", parallel=True)(_update)


def mean_ms(fn, n=200) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="omp", choices=("omp", "workqueue", "tbb"))
    args = ap.parse_args()
    numba.config.THREADING_LAYER = args.layer
    f = np.float32
    n = 652_824
    rng = np.random.default_rng(0)
    p, g = rng.random(n, dtype=f), rng.random(n, dtype=f) * f(1e-3)
    m, v = np.zeros(n, f), np.zeros(n, f)
    sc = (f(1e-3), f(0.9), f(0.1), f(0.999), f(0.001), f(1.3), f(1e-8), f(np.finfo(f).tiny))
    a = rng.random((512, 784), dtype=f)
    w = rng.random((784, 400), dtype=f)
    c = np.empty((512, 400), f)
    pool = ThreadPoolExecutor(1)
    half = n // 2

    lo = [a[:half] for a in (p, g, m, v)]   # the two halves as views
    hi = [a[half:] for a in (p, g, m, v)]

    def two_threads():
        job = pool.submit(serial, *lo, *sc)
        serial(*hi, *sc)
        job.result()

    updates = {"serial": lambda: serial(p, g, m, v, *sc),
               "prange": lambda: parallel(p, g, m, v, *sc),
               "threads": two_threads}
    for line in C.env_report():
        print("#", line)
    gemm = mean_ms(lambda: np.matmul(a, w, out=c))
    print(f"# layer {args.layer}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
          f"GEMM alone {gemm:.3f} ms")
    print("| update | alone ms | GEMM + update ms | update in the pair ms |")
    print("|---|---|---|---|")
    for name, fn in updates.items():
        alone = mean_ms(fn)
        pair = mean_ms(lambda: (np.matmul(a, w, out=c), fn()))
        print(f"| {name} | {alone:.3f} | {pair:.3f} | {pair - gemm:.3f} |", flush=True)
    print(f"# numba.threading_layer(): {numba.threading_layer()}")


if __name__ == "__main__":
    main()
