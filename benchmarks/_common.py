"""Shared helpers of the benchmark scripts: timing (single and interleaved), a quiet-machine
filter, page-fault counting and glibc malloc modes, the measured GEMM peak, the environment
report and table formatting.

Not part of the package and not imported by it. A script in ``benchmarks/`` uses it as

    import _common as C            # benchmarks/ is on sys.path when a script there is run
    C.add_repo_to_path()           # so ``import scratchvae`` works from a source checkout

Method: a timing is the median over ``repeats`` repeats of
``time.perf_counter`` around a loop of ``number`` calls, ``number`` chosen so that one repeat
takes at least ``min_time`` seconds (30 ms by default). A repeat during which any other process
used CPU (read from ``/proc/*/stat``) is thrown away and taken again, up to ``max_tries`` times,
because on a 2-core machine one competing process adds a scheduler slice (several ms) to
whichever thread, ours or a BLAS worker, it preempts. Repeats that could not be had quietly are
kept and counted as noisy. ``interleaved_times`` times several implementations in rotated
rounds and gives paired ratios, which survive the host's slow drift; ``set_malloc_mode`` pins
glibc's large-block policy, since page faults from fresh allocations can dominate a step.

Public helpers: add_repo_to_path, other_cpu_ticks, wait_for_quiet, minor_faults,
set_malloc_mode, calibrate, median_time (-> Timing), interleaved_times (-> Rounds),
first_call_time, time_gemm_peak, cpu_model, numba_thread_info, threadpool_summary, versions,
source_fingerprint, env_report, format_table, fmt.
"""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Callable, NamedTuple

import numpy as np

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def add_repo_to_path() -> None:
    """Put the repository root first on ``sys.path`` (run from a checkout, no install needed)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


# ============================================================================ quiet-machine filter
def other_cpu_ticks() -> int:
    """CPU ticks (utime + stime, 1/100 s) used so far by every process other than this one.

    Linux only (reads /proc); returns 0 elsewhere, which turns the filter off.
    """
    me, total = os.getpid(), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass  # the process ended meanwhile
    return total


def wait_for_quiet(seconds: float = 1.0, max_wait: float = 60.0) -> bool:
    """Wait until no other process used CPU during ``seconds`` (at most ``max_wait`` seconds).

    Returns True when a quiet window was seen. Used before timings that take long, e.g. a fit.
    """
    t_end = time.perf_counter() + max_wait
    while time.perf_counter() < t_end:
        before = other_cpu_ticks()
        time.sleep(seconds)
        if other_cpu_ticks() - before <= 1:  # a tick of a kernel thread is not contention
            return True
    return False


# ============================================================================ timing
class Timing(NamedTuple):
    """Seconds per call: median and best over repeats; ``noisy`` repeats had competition."""
    median: float
    best: float
    number: int    # calls per repeat
    repeats: int
    noisy: int     # repeats kept although another process used CPU during every try
    faults: float  # minor page faults per call (fresh memory touched for the first time)


def minor_faults() -> int:
    """Minor page faults of this process so far (getrusage; 0 where unavailable).

    Every page of freshly mmapped memory costs one fault (the kernel zero-fills it) on first
    touch; a benchmark that allocates large arrays each call shows it here, and the time goes
    to the kernel (``ru_stime``), not to the arithmetic.
    """
    try:
        import resource
    except ImportError:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


MALLOC_MODES = {
    # name: (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) in bytes, or None for glibc's own behaviour
    "default": None,
    "reuse": (32 << 20, 1 << 30),
    "mmap": (128 << 10, 128 << 10),
}


def set_malloc_mode(mode: str) -> str:
    """Fix how glibc's malloc treats large blocks, for the whole process; returns a description.

    - "default": glibc as it is. Its mmap threshold is dynamic (128 KiB, raised up to 32 MiB to
      the size of the largest mmapped block freed so far) and the heap top is returned to the OS
      past a trim threshold of twice it, so whether a large array allocated anew every step is
      page-faulted in again every step depends on what the process freed before.
    - "reuse": mallopt(M_MMAP_THRESHOLD, 32 MiB) and mallopt(M_TRIM_THRESHOLD, 1 GiB): freed large
      blocks stay in the heap and are reused, so a steady training loop takes no page faults.
      Environment equivalent: MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824.
    - "mmap": both thresholds pinned at glibc's initial 128 KiB (dynamic raising off): every
      array above 128 KiB is mapped fresh and unmapped on free, so each of its pages faults on
      every allocation (a fresh process before glibc's threshold adapts, made deterministic).
    Setting a threshold with mallopt turns glibc's dynamic adjustment off (man mallopt).
    """
    if mode not in MALLOC_MODES:
        raise ValueError(f"mode must be one of {tuple(MALLOC_MODES)}; got {mode!r}")
    if MALLOC_MODES[mode] is None:
        return "default: glibc's dynamic mmap threshold (128 KiB..32 MiB) and trim threshold"
    import ctypes
    import ctypes.util
    mmap_threshold, trim_threshold = MALLOC_MODES[mode]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        ok = bool(libc.mallopt(m_mmap_threshold, mmap_threshold)
                  and libc.mallopt(m_trim_threshold, trim_threshold))
    except (OSError, AttributeError):
        ok = False
    return (f"{mode}: mallopt(M_MMAP_THRESHOLD, {mmap_threshold}), mallopt(M_TRIM_THRESHOLD, "
            f"{trim_threshold})" + ("" if ok else " FAILED (not glibc?)"))


NOISY_TOTAL = {"repeats": 0, "timings": 0}  # process-wide tally for the closing report
# Tries per repeat before a noisy repeat is kept; a script may lower it (e.g. for --quick) on a
# machine that is never quiet, where every retry costs a pause.
SETTINGS = {"max_tries": 10}


def calibrate(fn: Callable[[], object], min_time: float) -> int:
    """Smallest power of two ``number`` such that ``number`` calls of ``fn`` take >= min_time s."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t0 >= min_time or number >= 1 << 20:
            return number
        number *= 2


def median_time(fn: Callable[[], object], min_time: float = 0.03, repeats: int = 7,
                max_tries: int | None = None, number: int | None = None) -> Timing:
    """Time ``fn()`` (already warmed up by the caller): median seconds per call.

    Each of ``repeats`` repeats loops ``number`` calls (calibrated to >= ``min_time`` s when None).
    A repeat overlapping another process's CPU use is retried after a short pause, up to
    ``max_tries`` times (default ``SETTINGS["max_tries"]``); the last try is kept and counted as
    noisy.
    """
    max_tries = SETTINGS["max_tries"] if max_tries is None else max_tries
    if number is None:
        number = calibrate(fn, min_time)
    times, noisy = [], 0
    faults0, calls = minor_faults(), 0
    for _ in range(repeats):
        for attempt in range(max_tries):
            busy = other_cpu_ticks()
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            t = (time.perf_counter() - t0) / number
            calls += number
            if other_cpu_ticks() == busy:
                break
            if attempt < max_tries - 1:
                time.sleep(0.05 * (attempt + 1))  # let the other process finish its slice
                fn()  # re-warm caches after the pause
                calls += 1
        else:
            noisy += 1
        times.append(t)
    NOISY_TOTAL["repeats"] += noisy
    NOISY_TOTAL["timings"] += 1
    return Timing(float(np.median(times)), float(np.min(times)), number, repeats, noisy,
                  (minor_faults() - faults0) / max(calls, 1))


class Rounds(NamedTuple):
    """Per-round seconds per call of each function timed by ``interleaved_times``."""
    times: dict     # name -> np.ndarray (rounds,)
    faults: dict    # name -> minor page faults per call
    noisy: dict     # name -> rounds kept although another process used the CPU

    def median(self, name: str) -> float:
        return float(np.median(self.times[name]))

    def best(self, name: str) -> float:
        return float(np.min(self.times[name]))

    def ratio(self, num: str | np.ndarray, den: str | np.ndarray) -> float:
        """Median over rounds of the paired ratio num_r / den_r (names or per-round arrays)."""
        a = self.times[num] if isinstance(num, str) else num
        b = self.times[den] if isinstance(den, str) else den
        return float(np.median(np.asarray(a) / np.asarray(b)))


def interleaved_times(fns: dict, min_time: float = 0.03, rounds: int = 7,
                      max_tries: int | None = None, groups: dict | None = None,
                      settle: float = 0.25) -> Rounds:
    """Time several functions (already warmed up) in rounds: each round times every function
    once (a loop of >= ``min_time`` s), in an order rotated from round to round.

    Why: on a shared (virtual) machine the speed of memory-bound code drifts over seconds for
    reasons invisible from inside (neighbours on the host's L3 and memory bus), by up to 2-3x here.
    Timing A for a while and then B for a while turns that drift into a false ratio; rounds pair
    each A with a B taken within a second of it, and ``Rounds.ratio`` takes the median of the
    paired ratios. Each timed loop is retried like ``median_time`` when another process of this
    machine used the CPU during it.

    ``groups`` maps a name to its thread runtime (e.g. "openblas" or "torch"). When the next loop
    belongs to another group than the previous one, the function first sleeps ``settle`` seconds
    and calls the function once, untimed: after a parallel call, OpenBLAS's workers and torch's
    OpenMP workers busy-wait for a while (measured here: a torch step timed right after NumPy
    work took 2-4x its time in isolation), and one runtime's spinning threads must not be
    charged to the other on a 2-core machine. A program uses one of them, not both.
    """
    max_tries = SETTINGS["max_tries"] if max_tries is None else max_tries
    names = list(fns)
    number = {n: calibrate(fns[n], min_time) for n in names}
    times = {n: [] for n in names}
    faults = dict.fromkeys(names, 0.0)
    calls = dict.fromkeys(names, 0)
    noisy = dict.fromkeys(names, 0)
    previous = None
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            fn, k = fns[n], number[n]
            group = (groups or {}).get(n)
            if previous is not None and group != previous:
                time.sleep(settle)
                fn()
            previous = group
            for attempt in range(max_tries):
                busy, f0 = other_cpu_ticks(), minor_faults()
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                t = (time.perf_counter() - t0) / k
                faults[n] += minor_faults() - f0
                calls[n] += k
                if other_cpu_ticks() == busy:
                    break
                if attempt < max_tries - 1:
                    time.sleep(0.05 * (attempt + 1))
                    fn()
            else:
                noisy[n] += 1
            times[n].append(t)
    NOISY_TOTAL["repeats"] += sum(noisy.values())
    NOISY_TOTAL["timings"] += len(names)
    return Rounds({n: np.array(v) for n, v in times.items()},
                  {n: faults[n] / max(calls[n], 1) for n in names}, noisy)


def first_call_time(fn: Callable[[], object]) -> float:
    """Seconds taken by one call of ``fn`` (use on the first call: JIT compile or cache load)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ============================================================================ GEMM peak
def time_gemm_peak(dtype, n: int = 1024, tries: int = 10) -> float:
    """The machine's GEMM rate for ``dtype`` in GFLOP/s: best of ``tries`` (n, n) @ (n, n) NumPy
    matmuls (2 n^3 flops each), after one warm-up call. Best, not median: the peak is the
    fastest the BLAS reaches on this machine."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    c = np.empty((n, n), dtype)
    np.matmul(a, b, out=c)
    best = np.inf
    for _ in range(tries):
        busy = other_cpu_ticks()
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        t = time.perf_counter() - t0
        if other_cpu_ticks() == busy or best == np.inf:
            best = min(best, t)
    return 2.0 * n**3 / best / 1e9


# ============================================================================ environment report
def cpu_model() -> str:
    """CPU model name, family/model, core count and SIMD level from /proc/cpuinfo."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, val = (s.strip() for s in line.split(":", 1))
                    info.setdefault(key, val)
    except OSError:
        return platform.processor() or platform.machine()
    flags = info.get("flags", "").split()
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, model "
            f"{info.get('model', '?')}), {os.cpu_count()} logical CPUs, {simd}")


def numba_thread_info() -> str:
    """``numba.threading_layer()`` (or why there is none) and ``numba.get_num_threads()``."""
    try:
        import numba
    except ImportError:
        return "numba: not installed"
    try:
        layer = numba.threading_layer()
    except ValueError:
        # numba.get_num_threads() would launch the thread pool (verified: threading_layer()
        # reports "omp" afterwards), starting OpenMP workers that no kernel asked for; report
        # the pool size the launch would use instead.
        return ("numba.threading_layer(): none launched (no parallel=True kernel has run in this "
                "process); pool size when launched: NUMBA_NUM_THREADS="
                f"{numba.config.NUMBA_NUM_THREADS}")
    return f"numba.threading_layer(): {layer}; numba.get_num_threads(): {numba.get_num_threads()}"


def threadpool_summary() -> list[str]:
    """One line per thread pool loaded in this process (threadpoolctl.threadpool_info())."""
    try:
        import threadpoolctl
    except ImportError:
        return ["threadpoolctl: not installed"]
    lines = []
    for info in threadpoolctl.threadpool_info():
        lines.append(f"threadpoolctl: {info.get('user_api')}/{info.get('internal_api')} "
                     f"{info.get('version')} num_threads={info.get('num_threads')} "
                     f"{info.get('threading_layer', '')} arch={info.get('architecture', '-')} "
                     f"({os.path.basename(info.get('filepath', ''))})")
    return lines


ENV_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES",
            "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY",
            "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "NUMBA_CACHE_DIR",
            "NUMBA_ENABLE_CUDASIM")


def versions() -> dict:
    """Versions of python, numpy, numba, llvmlite, scipy, threadpoolctl, torch (if importable)."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "llvmlite", "scipy", "threadpoolctl", "torch"):
        m = sys.modules.get(mod)
        if m is None and mod != "torch":  # never import torch just to report it
            try:
                m = __import__(mod)
            except ImportError:
                m = None
        out[mod] = getattr(m, "__version__", "not imported") if m is not None else "not imported"
    return out


SOURCE_FILES = ("scratchvae/model.py", "scratchvae/optim.py", "scratchvae/kernels/numba_cpu.py",
                "scratchvae/kernels/numpy_ref.py")


def source_fingerprint(paths=SOURCE_FILES) -> str:
    """The git commit of the checkout (read from .git, no git command) and a short SHA-256 of each
    file in ``paths``, so a result can be tied to the code it measured (the tree may be dirty)."""
    import hashlib
    head = "?"
    try:
        with open(os.path.join(REPO, ".git", "HEAD")) as f:
            ref = f.read().strip()
        if ref.startswith("ref: "):
            with open(os.path.join(REPO, ".git", ref[5:])) as f:
                head = f.read().strip()[:12]
        else:
            head = ref[:12]
    except OSError:
        pass
    parts = []
    for p in paths:
        try:
            with open(os.path.join(REPO, p), "rb") as f:
                parts.append(f"{os.path.basename(p)} {hashlib.sha256(f.read()).hexdigest()[:10]}")
        except OSError:
            parts.append(f"{os.path.basename(p)} missing")
    return f"commit {head} (working tree may differ); sha256: " + ", ".join(parts)


def env_report(initial_env: dict | None = None) -> list[str]:
    """The lines every benchmark prints at its top: machine, versions, threads, BLAS, env vars.

    ``initial_env`` is ``os.environ`` as it was when the script started (a script may set
    OMP_WAIT_POLICY itself, as scratchvae does at import); both values are shown when they differ.
    """
    lines = [f"machine: {cpu_model()}",
             f"os: {platform.platform()}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
             "source: " + source_fingerprint(),
             numba_thread_info()]
    lines += threadpool_summary()
    env = []
    for var in ENV_VARS:
        now = os.environ.get(var, "(unset)")
        then = (initial_env or {}).get(var, "(unset)") if initial_env is not None else now
        env.append(f"{var}={now}" + (f" (was {then} at start)" if then != now else ""))
    lines.append("env: " + ", ".join(env))
    return lines


# ============================================================================ tables
def format_table(headers: list[str], rows: list[list], markdown: bool = False) -> str:
    """Rows of cells (str, or numbers already formatted) as a fixed-width or markdown table."""
    cells = [[str(c) for c in r] for r in rows]
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    fmt = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


def fmt(x: float | None, spec: str = ".2f", missing: str = "-") -> str:
    """Format a number, or ``missing`` for None/NaN."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return missing
    return format(x, spec)
