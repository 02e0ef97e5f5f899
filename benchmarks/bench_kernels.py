"""Kernel micro-benchmarks: every kernel x backend (numpy, numba) x dtype x VAE-sized shapes.

Run from the repository root:

    python benchmarks/bench_kernels.py            # full run (a few minutes)
    python benchmarks/bench_kernels.py --quick    # a smaller grid (well under a minute)
    python benchmarks/bench_kernels.py --cold     # compile into a fresh cache dir (true JIT cost)

Method: each kernel is called once first (compile or cache load, reported separately), then
timed as the median over repeats of ``time.perf_counter`` around a loop long enough to take at
least ``--min-time`` seconds. ``ratio`` is numba time / numpy time from the same run (below 1:
numba is faster). A NumPy ``a @ b`` control row per shape shows the BLAS cost the matmul
kernels are built on. The GEMM crossover section times numba_cpu's hand-written njit GEMMs
against NumPy/BLAS on small products; numba_cpu uses an njit GEMM only where it won there.
The functions are named ``time_*`` (asv's convention) but the script needs nothing beyond the
package's own dependencies (threadpoolctl is reported if installed).

On a shared 2-core machine results are noisy (a competing process shows up as a few
milliseconds of scheduler delay); rerun and compare before drawing conclusions.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# for this script's own prange experiment (time_optimizer_parallel): spinning OpenMP workers
# would stall the next BLAS call by ~7 ms (scratchvae itself sets nothing and has no parallel kernel)
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

# VAE shapes D-H-d (input, hidden, latent) and batch sizes.
CONFIGS = {"784-400-20": (784, 400, 20), "64-32-8": (64, 32, 8)}
BATCHES = (1, 32, 128, 512)
K_IWAE = 64  # samples for logsumexp / softmax rows
ACTS = ("relu", "tanh", "sigmoid", "softplus")


def _other_cpu_ticks():
    """CPU ticks used so far by every other process (Linux /proc; 0 elsewhere)."""
    me, total = os.getpid(), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


NOISY = {"count": 0}  # timings for which no quiet repeat could be had


def median_time(fn, min_time, repeats, max_tries=5):
    """Median seconds per call of ``fn()``: ``repeats`` timings of a loop of >= ``min_time`` s.

    A repeat during which another process used CPU is taken again (up to ``max_tries`` times),
    because on a 2-core machine one competing process adds milliseconds of scheduler delay to
    whichever thread (ours or a BLAS worker) it preempts.
    """
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t0 >= min_time or number >= 1 << 20:
            break
        number *= 2
    times = []
    for _ in range(repeats):
        for attempt in range(max_tries):
            busy = _other_cpu_ticks()
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            t = (time.perf_counter() - t0) / number
            if _other_cpu_ticks() == busy:
                break
        else:
            NOISY["count"] += 1
        times.append(t)
    return float(np.median(times))


def kernel_cases(cfg, batch, dtype, rng, acts, optimizers=True):
    """Yield (label, kernel name, shape text, args builder) for every kernel at one shape.

    The optimizer updates act on the first layer's weight (D, H), independent of the batch."""
    D, H, d = cfg
    B, K = batch, 1

    def arr(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    def unit(*shape):
        return rng.random(shape).astype(dtype)

    a, W, dy = arr(B, D), arr(D, H), arr(B, H)
    yield "matmul", "matmul", f"({B},{D})x({D},{H})", lambda: (a, W)
    yield "matmul_at", "matmul_at", f"({B},{D}).Tx({B},{H})", lambda: (a, dy)
    yield "matmul_bt", "matmul_bt", f"({B},{H})x({D},{H}).T", lambda: (dy, W)
    z, b = arr(B, H), arr(H)
    from scratchvae.kernels import ACTIVATION_CODES, numpy_ref
    for act_name in acts:
        act = ACTIVATION_CODES[act_name]
        h, y = numpy_ref.bias_act_fwd(z, b, act)
        yield f"bias_act_fwd[{act_name}]", "bias_act_fwd", f"({B},{H})", lambda act=act: (z, b, act)
        yield (f"bias_act_bwd[{act_name}]", "bias_act_bwd", f"({B},{H})",
               lambda act=act, h=h, y=y: (dy, h, y, act))
    mu, lv, eps, dz = arr(B, d), arr(B, d, scale=0.5), arr(K, B, d), arr(K, B, d)
    std = np.exp(0.5 * lv)
    yield "reparam_fwd", "reparam_fwd", f"K={K} ({B},{d})", lambda: (mu, lv, eps)
    yield "reparam_bwd", "reparam_bwd", f"K={K} ({B},{d})", lambda: (dz, eps, std)
    dkl = arr(B)
    yield "kl_fwd", "kl_fwd", f"({B},{d})", lambda: (mu, lv)
    yield "kl_bwd", "kl_bwd", f"({B},{d})", lambda: (dkl, mu, lv)
    x, out, dll, glv = unit(B, D), arr(K, B, D, scale=3.0), arr(K, B), arr(D, scale=0.3)
    yield "bernoulli_ll_fwd", "bernoulli_ll_fwd", f"K={K} ({B},{D})", lambda: (x, out)
    yield "bernoulli_ll_bwd", "bernoulli_ll_bwd", f"K={K} ({B},{D})", lambda: (dll, x, out)
    yield "gaussian_ll_fwd", "gaussian_ll_fwd", f"K={K} ({B},{D})", lambda: (x, out, glv)
    yield "gaussian_ll_bwd", "gaussian_ll_bwd", f"K={K} ({B},{D})", lambda: (dll, x, out, glv)
    lw = arr(K_IWAE, B, scale=10.0)
    yield "logsumexp", "logsumexp", f"({K_IWAE},{B})", lambda: (lw,)
    yield "softmax", "softmax", f"({K_IWAE},{B})", lambda: (lw,)
    if optimizers:
        p, g = arr(D, H), arr(D, H, scale=1e-2)
        vel, m, v, s = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        yield "sgd_step", "sgd_step", f"({D},{H})", lambda: (p, g, vel, 1e-3, 0.9)
        yield "adam_step", "adam_step", f"({D},{H})", lambda: (p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 10)
        yield "adagrad_step", "adagrad_step", f"({D},{H})", lambda: (p, g, s, 1e-3, 1e-8)


def time_compile(dtypes):
    """First call of every numba kernel per dtype: JIT compile, or a load from numba's cache."""
    from scratchvae.kernels import numba_cpu
    rng = np.random.default_rng(0)
    print("\n## numba first-call cost (compile or cache load), ms")
    print(f"{'kernel':<26}" + "".join(f"{np.dtype(dt).name:>10}" for dt in dtypes))
    rows = {}
    for dt in dtypes:
        for label, name, _, args in kernel_cases((6, 5, 3), 4, dt, rng, ACTS + ("leaky_relu", "elu", "identity")):
            t0 = time.perf_counter()
            getattr(numba_cpu, name)(*args())
            rows.setdefault(label, []).append((time.perf_counter() - t0) * 1e3)
        for gemm in ("_gemm_nn", "_gemm_tn", "_gemm_nt"):
            x = np.ones((3, 3), dt)
            t0 = time.perf_counter()
            getattr(numba_cpu, gemm)(x, x, np.empty((3, 3), dt))
            rows.setdefault(gemm, []).append((time.perf_counter() - t0) * 1e3)
    total = np.zeros(len(dtypes))
    for label, ms in rows.items():
        total += ms
        print(f"{label:<26}" + "".join(f"{t:10.1f}" for t in ms))
    print(f"{'total':<26}" + "".join(f"{t:10.1f}" for t in total))


def time_kernels(configs, batches, dtypes, acts, min_time, repeats):
    """Every kernel, numpy vs numba, at each VAE shape and batch size; plus a matmul control."""
    from scratchvae.kernels import numba_cpu, numpy_ref
    rng = np.random.default_rng(1)
    print("\n## kernels: median time per call, us (ratio = numba / numpy)")
    print(f"{'kernel':<26}{'shape':<26}{'dtype':>8}{'numpy':>11}{'numba':>11}{'ratio':>8}")
    for cfg_name in configs:
        for B in batches:
            for dt in dtypes:
                print(f"-- {cfg_name}, B={B}, {np.dtype(dt).name}")
                D, H, _ = CONFIGS[cfg_name]
                a, W = rng.standard_normal((B, D)).astype(dt), rng.standard_normal((D, H)).astype(dt)
                t = median_time(lambda: a @ W, min_time, repeats)
                print(f"{'control: NumPy a @ W':<26}{f'({B},{D})x({D},{H})':<26}{np.dtype(dt).name:>8}"
                      f"{t * 1e6:11.2f}{'':>11}{'':>8}")
                cases = kernel_cases(CONFIGS[cfg_name], B, dt, rng, acts, optimizers=B == batches[0])
                for label, name, shape, args in cases:
                    ref_fn, nb_fn = getattr(numpy_ref, name), getattr(numba_cpu, name)
                    a_ref, a_nb = args(), args()
                    nb_fn(*a_nb)  # warm-up (compile or cache load, timed in time_compile)
                    t_ref = median_time(lambda: ref_fn(*a_ref), min_time, repeats)
                    t_nb = median_time(lambda: nb_fn(*a_nb), min_time, repeats)
                    print(f"{label:<26}{shape:<26}{np.dtype(dt).name:>8}{t_ref * 1e6:11.2f}"
                          f"{t_nb * 1e6:11.2f}{t_nb / t_ref:8.2f}")


def time_gemm_crossover(batches, dtypes, min_time, repeats):
    """Hand-written njit GEMMs (numba_cpu._gemm_*) against NumPy/BLAS on small products.

    For a layer (fan_in N, fan_out P) at batch B: forward a(B,N) @ W(N,P) [nn], weight gradient
    a(B,N).T @ dy(B,P) [tn], input gradient dy(B,P) @ W(N,P).T [nt]. ratio < 1: njit wins.
    """
    from scratchvae.kernels import numba_cpu
    layers = [(8, 32), (32, 8), (32, 64), (64, 32), (20, 400), (400, 20), (400, 784)]
    rng = np.random.default_rng(2)
    print("\n## GEMM crossover: njit hand GEMM / NumPy matmul (ratio < 1: njit faster); NumPy us")
    print(f"{'layer N->P':<12}{'B':>5}{'dtype':>9}"
          + "".join(f"{op + ' np':>11}{'ratio':>7}" for op in ("nn", "tn", "nt")))
    wins = {}  # (op, B) -> [njit wins, shapes]
    for dt in dtypes:
        for N, P in layers:
            for B in batches:
                a, W, dy = (rng.standard_normal(s).astype(dt) for s in ((B, N), (N, P), (B, P)))
                # both sides write into a preallocated output, as the kernels do with a workspace
                c_nn, c_tn, c_nt = np.empty((B, P), dt), np.empty((N, P), dt), np.empty((B, N), dt)
                cases = {"nn": (numba_cpu._gemm_nn, lambda: np.matmul(a, W, out=c_nn), (a, W, c_nn)),
                         "tn": (numba_cpu._gemm_tn, lambda: np.matmul(a.T, dy, out=c_tn), (a, dy, c_tn)),
                         "nt": (numba_cpu._gemm_nt, lambda: np.matmul(dy, W.T, out=c_nt), (dy, W, c_nt))}
                line = f"{f'{N}->{P}':<12}{B:>5}{np.dtype(dt).name:>9}"
                for op, (hand, blas, hargs) in cases.items():
                    hand(*hargs)
                    t_np = median_time(blas, min_time, repeats)
                    t_h = median_time(lambda: hand(*hargs), min_time, repeats)
                    line += f"{t_np * 1e6:11.2f}{t_h / t_np:7.2f}"
                    w = wins.setdefault((op, B), [0, 0])
                    w[0] += t_h < t_np
                    w[1] += 1
                print(line)
    print("shapes where the njit GEMM was faster, by op and B:")
    for op in ("nn", "tn", "nt"):
        print(f"  {op}: " + ", ".join(f"B={B} {wins[op, B][0]}/{wins[op, B][1]}" for B in batches))
    print(f"numba_cpu dispatch: njit loops when M*N*P <= {numba_cpu.SMALL_GEMM_MACS} multiply-adds, "
          "and for matmul_at (tn) whenever the summed dimension is 1")


def time_optimizer_parallel(dtypes, min_time, repeats):
    """Adam update: the serial njit kernel against the same source compiled with prange."""
    import numba
    from scratchvae.kernels import numba_cpu
    src = numba_cpu._adam.py_func
    # same loop with prange, compiled here (uncached) only to measure whether parallel helps
    par = numba.njit(parallel=True, error_model="numpy")(_prange_copy(src))
    print("\n## optimizer: serial njit Adam vs a prange version, us (ratio = parallel / serial)")
    print(f"{'elements':>10}{'dtype':>9}{'serial':>11}{'parallel':>11}{'ratio':>8}")
    rng = np.random.default_rng(3)
    for dt in dtypes:
        for n in (1 << 12, 1 << 16, 313600, 1 << 20):
            p, g, m, v = (rng.random(n).astype(dt) for _ in range(4))
            s = tuple(np.dtype(dt).type(c) for c in (1e-3, 0.9, 0.1, 0.999, 0.001, 0.5, 0.5, 1e-8))
            numba_cpu._adam(p, g, m, v, *s)
            par(p, g, m, v, *s)
            t_s = median_time(lambda: numba_cpu._adam(p, g, m, v, *s), min_time, repeats)
            t_p = median_time(lambda: par(p, g, m, v, *s), min_time, repeats)
            print(f"{n:>10}{np.dtype(dt).name:>9}{t_s * 1e6:11.1f}{t_p * 1e6:11.1f}{t_p / t_s:8.2f}")


def _prange_copy(fn):
    """Compile-ready copy of the serial update loop ``fn`` with ``range`` -> ``numba.prange``."""
    import inspect
    import textwrap

    import numba
    src = textwrap.dedent(inspect.getsource(fn))
    src = "\n".join(line for line in src.splitlines() if not line.startswith("@"))
    namespace = {"np": np, "prange": numba.prange}
    exec(src.replace("in range(", "in prange("), namespace)
    return namespace[fn.__name__]


def print_environment():
    """numba threading layer and thread count, BLAS pools (threadpoolctl), versions."""
    import platform

    import numba
    print("## environment")
    print(f"python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}")
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "(none: no parallel region has run)"
    print(f"numba.threading_layer(): {layer}; numba.get_num_threads(): {numba.get_num_threads()}")
    try:
        import threadpoolctl
        for info in threadpoolctl.threadpool_info():
            print(f"threadpoolctl: {info.get('internal_api')} {info.get('version')} "
                  f"threads={info.get('num_threads')} {info.get('threading_layer', '')} "
                  f"{os.path.basename(info.get('filepath', ''))}")
    except ImportError:
        print("threadpoolctl: not installed")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, fewer repeats")
    parser.add_argument("--cold", action="store_true",
                        help="compile into a fresh temporary NUMBA_CACHE_DIR (true JIT cost)")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per timed loop")
    parser.add_argument("--repeats", type=int, default=None, help="timed loops per median")
    parser.add_argument("--sections", default="compile,kernels,gemm,optim",
                        help="comma-separated subset of compile,kernels,gemm,optim")
    args = parser.parse_args(argv)
    if args.cold:  # must happen before numba is imported
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="scratchvae-numba-cache-")
    import scratchvae.kernels  # noqa: F401  (package import sets the thread policy first)

    dtypes = (np.float32, np.float64)
    if args.quick:
        configs, batches, acts = ("64-32-8", "784-400-20"), (32,), ("relu", "sigmoid")
        min_time, repeats, gemm_batches = args.min_time or 2e-3, args.repeats or 3, (1, 4, 32)
    else:
        configs, batches, acts = tuple(CONFIGS), BATCHES, ACTS
        min_time, repeats, gemm_batches = args.min_time or 5e-3, args.repeats or 7, (1, 2, 4, 8, 16, 32)

    print(f"# bench_kernels.py {'--quick' if args.quick else ''}{' --cold' if args.cold else ''}")
    sections = set(args.sections.split(","))
    if "compile" in sections:
        time_compile(dtypes)
    if "kernels" in sections:
        time_kernels(configs, batches, dtypes, acts, min_time, repeats)
    if "gemm" in sections:
        time_gemm_crossover(gemm_batches, dtypes, min_time, repeats)
    if "optim" in sections:
        time_optimizer_parallel(dtypes, min_time, repeats)
    print(f"\n{NOISY['count']} timed loops could not be had without another process on the CPU "
          f"(kept anyway; rerun if that is large).")
    print_environment()


if __name__ == "__main__":
    main()
