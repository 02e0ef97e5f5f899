"""numba_cpu against numpy_ref (stumpy's naive.py pattern): every kernel, both dtypes, every
activation, on hypothesis-drawn small shapes; plus determinism, layouts and the JIT policy; and
the workspace contract: with a ``Workspace`` the outputs are bit-identical, and a second call of
the same shapes after ``rewind()`` reuses every buffer and allocates nothing (no NumPy array,
no numba runtime memory)."""
import inspect
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit
from numba.core.runtime import rtsys

from scratchvae.kernels import KERNEL_NAMES, _jit, numba_cpu, numpy_ref
from scratchvae.kernels._activation_codes import ACTIVATION_CODES
from scratchvae.kernels.workspace import Workspace
from tests.kernels.test_conformance import assert_matches_reference, make_args, run_kernel

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ACTS = sorted(ACTIVATION_CODES.items(), key=lambda kv: kv[1])
# kernels that return arrays take ws=None (the reference's signature says which)
WS_KERNELS = tuple(n for n in KERNEL_NAMES if "ws" in inspect.signature(getattr(numpy_ref, n)).parameters)
GLUE = ("all_finite", "to_device", "to_host", "copyto")  # tested on their own, at the end
MATCHED_KERNELS = tuple(n for n in KERNEL_NAMES if n not in GLUE)  # compared with numpy_ref
PLAIN_KERNELS = [n for n in MATCHED_KERNELS if not n.startswith("bias_act")]
DISPATCHERS = {n: getattr(numba_cpu, n) for n in dir(numba_cpu) if hasattr(getattr(numba_cpu, n), "py_func")}


def acts_of(name):
    """The activation codes a kernel is tested with: all of them for bias_act_*, else a dummy 0."""
    return [act for _, act in ACTS] if name.startswith("bias_act") else [0]


def kernel_args(name, rng, dtype, dims, act=0, scale=1.0):
    """make_args, plus ``add``: two (B, F) arrays."""
    if name == "add":
        _, B, F, _, _ = dims
        return tuple((rng.standard_normal((B, F)) * scale).astype(dtype) for _ in range(2))
    return make_args(name, rng, dtype, dims, act=act, scale=scale)

# (K, B, F, N, D): small, so an example costs well under a millisecond
DIMS = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 7), st.integers(1, 9))
SEEDS = st.integers(0, 2**32 - 1)
SCALES = st.sampled_from([0.1, 1.0, 10.0])


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Compile (or load from numba's cache) every kernel in both dtypes before any example."""
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        for name in MATCHED_KERNELS:
            for act in acts_of(name):
                run_kernel(getattr(numba_cpu, name), name, kernel_args(name, rng, dt, (2, 3, 4, 5, 6), act=act))
        for gemm in ("_gemm_nn", "_gemm_tn", "_gemm_nt"):
            getattr(numba_cpu, gemm)(np.ones((2, 2), dt), np.ones((2, 2), dt), np.empty((2, 2), dt))
        numba_cpu.all_finite(np.ones(3, dt))


def _check(name, dtype, dims, seed, act=0, scale=1.0):
    args = kernel_args(name, np.random.default_rng(seed), dtype, dims, act=act, scale=scale)
    expected = run_kernel(getattr(numpy_ref, name), name, args)
    actual = run_kernel(getattr(numba_cpu, name), name, args)
    if name == "add":  # one rounding, as the reference: identical bits
        assert actual[0].dtype == dtype and actual[0].tobytes() == expected[0].tobytes()
        return
    assert_matches_reference(name, args, actual, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", PLAIN_KERNELS)
@given(dims=DIMS, seed=SEEDS, scale=SCALES)
def test_kernel_matches_reference(name, dtype, dims, seed, scale):
    _check(name, dtype, dims, seed, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act_name,act", ACTS)
@pytest.mark.parametrize("name", ["bias_act_fwd", "bias_act_bwd"])
@given(dims=DIMS, seed=SEEDS, scale=SCALES)
def test_bias_act_matches_reference_for_every_activation(name, act_name, act, dtype, dims, seed, scale):
    _check(name, dtype, dims, seed, act=act, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["matmul", "matmul_at", "matmul_bt"])
@given(dims=st.tuples(st.just(1), st.integers(1, 24), st.integers(1, 24), st.integers(1, 24), st.just(1)),
       seed=SEEDS)
def test_matmul_matches_reference_on_both_paths(name, dtype, dims, seed):
    """Shapes on both sides of SMALL_GEMM_MACS: the njit loops and NumPy/BLAS."""
    _check(name, dtype, dims, seed)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(m=st.integers(1, 12), n=st.integers(1, 12), p=st.integers(1, 12), seed=SEEDS)
def test_hand_gemms_match_numpy_at_any_size(dtype, m, n, p, seed):
    """The njit GEMMs themselves (whatever the dispatch threshold), against the reference; the
    output they are given starts as NaN (a reused buffer holds old values), so they must zero it."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, n)).astype(dtype), rng.standard_normal((n, p)).astype(dtype)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    for name, hand, args in (("matmul", numba_cpu._gemm_nn, (a, b)), ("matmul_at", numba_cpu._gemm_tn, (at, b)),
                             ("matmul_bt", numba_cpu._gemm_nt, (a, bt))):
        c = np.full((m, p), np.nan, dtype)
        assert hand(*args, c) is None
        assert_matches_reference(name, args, (c,), (getattr(numpy_ref, name)(*args),), dtype)


def test_matmuls_use_the_njit_loops_only_for_tiny_products_and_batch_one_weight_gradients(monkeypatch):
    calls = []
    for g in ("_gemm_nn", "_gemm_tn", "_gemm_nt"):
        real = getattr(numba_cpu, g)
        monkeypatch.setattr(numba_cpu, g, lambda *args, real=real, g=g: calls.append(g) or real(*args))
    small, big = numba_cpu.SMALL_GEMM_MACS, 4 * numba_cpu.SMALL_GEMM_MACS
    cases = [  # (kernel, a, b, njit loop expected or None)
        ("matmul", np.ones((1, 8)), np.ones((8, small // 8)), "_gemm_nn"),
        ("matmul", np.ones((4, 8)), np.ones((8, big // 32)), None),
        ("matmul_at", np.ones((1, 300)), np.ones((1, 200)), "_gemm_tn"),  # outer product
        ("matmul_at", np.ones((2, 4)), np.ones((2, 8)), "_gemm_tn"),
        ("matmul_at", np.ones((8, 16)), np.ones((8, big // 128)), None),
        ("matmul_bt", np.ones((2, 8)), np.ones((4, 8)), "_gemm_nt"),
        ("matmul_bt", np.ones((8, 16)), np.ones((big // 128, 16)), None),
    ]
    for name, a, b, expected in cases:
        calls.clear()
        out = getattr(numba_cpu, name)(a, b)
        np.testing.assert_array_equal(out, getattr(numpy_ref, name)(a, b), err_msg=name)
        assert calls == ([expected] if expected else []), f"{name} {a.shape} {b.shape}: {calls}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_same_inputs_give_identical_bits(dtype):
    rng = np.random.default_rng(7)
    for name in MATCHED_KERNELS:
        for act in acts_of(name):
            args = kernel_args(name, rng, dtype, (3, 4, 5, 30, 40), act=act)
            first = run_kernel(getattr(numba_cpu, name), name, args)
            second = run_kernel(getattr(numba_cpu, name), name, args)
            for x, y in zip(first, second):
                assert x.tobytes() == y.tobytes(), f"{name} (act {act}) is not deterministic"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_inputs_match_and_compile_no_new_signature(dtype):
    """Transposed/strided inputs give the contiguous result, and the wrappers' contiguity
    guarantees one compiled signature per dtype for every njit kernel."""
    rng = np.random.default_rng(3)
    for name in MATCHED_KERNELS:
        for act in acts_of(name):
            args = kernel_args(name, rng, dtype, (2, 3, 4, 5, 6), act=act)
            strided = tuple(np.asfortranarray(a) if isinstance(a, np.ndarray) and a.ndim > 1 else
                            (np.repeat(a, 2)[::2] if isinstance(a, np.ndarray) else a) for a in args)
            assert any(isinstance(a, np.ndarray) and not a.flags.c_contiguous for a in strided)
            expected = run_kernel(getattr(numba_cpu, name), name, args)
            actual = run_kernel(getattr(numba_cpu, name), name, strided)
            for x, y in zip(actual, expected):
                np.testing.assert_array_equal(x, y, err_msg=name)
    for kname, disp in DISPATCHERS.items():
        # the argument types without their layouts: two signatures that differ only in layout
        # (a non-contiguous array slipping through) give the same key
        keys = [tuple(getattr(t, "dtype", t) for t in sig) for sig in disp.signatures]
        assert len(keys) == len(set(keys)), f"{kname} compiled more than once per dtype: {disp.signatures}"


@pytest.mark.parametrize("name", ["sgd_step", "adam_step", "adagrad_step"])
def test_optimizer_updates_a_non_contiguous_caller_array_in_place(name):
    rng = np.random.default_rng(5)
    args = list(make_args(name, rng, np.float64, (1, 4, 6, 1, 1)))
    expected = run_kernel(numpy_ref.__dict__[name], name, args)
    n_state = {"sgd_step": 1, "adam_step": 2, "adagrad_step": 1}[name]
    holders = []
    for i in [0] + list(range(2, 2 + n_state)):  # p and the state arrays as strided views
        big = np.zeros((args[i].shape[0], 2 * args[i].shape[1]))
        big[:, ::2] = args[i]
        holders.append(big)
        args[i] = big[:, ::2]
    assert getattr(numba_cpu, name)(*args) is None
    for big, e in zip(holders, expected):
        np.testing.assert_array_equal(big[:, ::2], e, err_msg=name)
        np.testing.assert_array_equal(big[:, 1::2], 0.0, err_msg=name)


def test_no_kernel_uses_fastmath_true_and_reductions_only_reassoc_contract():
    assert DISPATCHERS, "no njit kernels found"
    for kname, disp in DISPATCHERS.items():
        fm = disp.targetoptions.get("fastmath", False)
        assert fm is not True, f"{kname} uses fastmath=True"
        assert not fm or set(fm) <= {"reassoc", "contract"}, f"{kname}: fastmath={fm}"
        assert disp.targetoptions.get("error_model") == "numpy", kname
        assert not disp.targetoptions.get("parallel"), kname


def test_cached_njit_falls_back_with_a_warning_when_no_cache_dir(monkeypatch):
    real = _jit.njit
    calls = []

    def fake_njit(**opts):
        calls.append(opts)
        if opts.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file '<x>'")
        return real(**opts)

    monkeypatch.setattr(_jit, "njit", fake_njit)
    with pytest.warns(RuntimeWarning, match="numba cache disabled for f"):
        @_jit.cached_njit(error_model="numpy")
        def f(x):
            return x + 1
    assert f(1) == 2
    assert calls == [{"cache": True, "error_model": "numpy"}, {"error_model": "numpy"}]


# ---------------------------------------------------------------- the workspace contract
WS_CASES = [pytest.param(name, act, id=f"{name}-{act}" if name.startswith("bias_act") else name)
            for name in WS_KERNELS for act in acts_of(name)]


def _call(name, args, ws):
    """The numba kernel on ``args`` (used as they are: no kernel writes into its inputs), outputs
    as a tuple."""
    result = getattr(numba_cpu, name)(*args, ws=ws)
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,act", WS_CASES)
@given(dims=DIMS, seed=SEEDS, scale=SCALES)
def test_workspace_outputs_are_bit_identical_to_fresh_arrays(name, act, dtype, dims, seed, scale):
    """A fresh Workspace, and one whose buffers hold a previous call's results (same shapes,
    other values: stale accumulators would show), give the bits of ws=None."""
    rng = np.random.default_rng(seed)
    args, other = (kernel_args(name, rng, dtype, dims, act=act, scale=scale) for _ in range(2))
    expected = _call(name, args, None)
    fresh = Workspace()
    reused = Workspace()
    _call(name, other, reused)
    reused.rewind()
    for ws in (fresh, reused):
        actual = _call(name, args, ws)
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert a.dtype == e.dtype and a.shape == e.shape, name
            assert a.tobytes() == e.tobytes(), f"{name} (act {act}): ws changes the result"
            assert not any(np.shares_memory(a, x) for x in args if isinstance(x, np.ndarray)), (
                f"{name}: an output shares memory with an input")


# Shapes for the no-allocation test, (K, B, F, N, D) as make_args reads them: per kernel, every
# input, output and temporary holds >= 16384 elements (>= 64 KiB in float32), so that a single
# stray NumPy allocation would show in tracemalloc's peak; only gaussian_ll_*'s (K, B) arrays are
# small (ll and dll cannot be large together with the (D,) logvar: out is (K, B, D)), and the
# output ll is covered by the buffer-identity check.
BIG_DIMS = {
    "matmul": (1, 128, 128, 128, 1), "matmul_at": (1, 128, 128, 128, 1), "matmul_bt": (1, 128, 128, 128, 1),
    "bias_act_fwd": (1, 4, 16384, 1, 1), "bias_act_bwd": (1, 4, 16384, 1, 1),
    "reparam_fwd": (2, 16384, 2, 1, 2), "reparam_bwd": (2, 16384, 2, 1, 2),
    "kl_fwd": (2, 16384, 2, 1, 2), "kl_bwd": (2, 16384, 2, 1, 2),
    "bernoulli_ll_fwd": (2, 8192, 2, 1, 2), "bernoulli_ll_bwd": (2, 8192, 2, 1, 2),
    "gaussian_ll_fwd": (1, 2, 2, 1, 16384), "gaussian_ll_bwd": (1, 2, 2, 1, 16384),
    "logsumexp": (2, 16384, 2, 1, 2), "softmax": (2, 16384, 2, 1, 2),
    "add": (1, 128, 128, 1, 1),
    # vector quantisation: N = K * B rows of e = F, a codebook of C = D rows
    "vq_assign": (1, 16384, 2, 1, 2), "gather_fwd": (1, 16384, 2, 1, 2),
    "gather_bwd": (1, 16384, 2, 1, 2), "sqdist_fwd": (1, 16384, 2, 1, 2),
    "sqdist_bwd": (1, 16384, 2, 1, 2), "vq_ema": (1, 1, 2, 1, 16384),
    # ---- planar flows: L = 3 steps, d = 2, B = 8192
    "planar_flow_fwd": (2, 8192, 2, 3, 1), "planar_flow_bwd": (2, 8192, 2, 3, 1),
}
REUSE_CASES = [pytest.param(name, act, BIG_DIMS[name], id=case.id)
               for case in WS_CASES for name, act in [case.values]] + [
    # the njit GEMM paths: tiny products (NumPy allocations this small escape tracemalloc's
    # bound; the NRT count and buffer identity still see them) and the batch-1 outer product
    pytest.param("matmul", 0, (1, 2, 3, 4, 1), id="matmul-njit"),
    pytest.param("matmul_at", 0, (1, 2, 3, 4, 1), id="matmul_at-njit"),
    pytest.param("matmul_bt", 0, (1, 2, 3, 4, 1), id="matmul_bt-njit"),
    pytest.param("matmul_at", 0, (1, 128, 128, 1, 1), id="matmul_at-njit-outer"),
]
# Bound on tracemalloc's peak during the second call. Every array there is >= 64 KiB, so one
# NumPy allocation of an output or temporary would exceed it 16 times over; what the call does
# allocate is Python objects: views from reshape/.T, the result tuple, np.errstate, NumPy's
# reduction iterator, the numba dispatcher's argument handling (measured: 0.5-1.6 KiB).
PEAK_BOUND = 4 * 1024


@njit
def _reads_two_arrays(a, b):
    return a[0] + b[0]


@pytest.fixture(scope="module")
def nrt_allocs_per_array_argument():
    """numba's runtime counts one allocation for each array argument a compiled function is
    called with (the memory-info record wrapping the NumPy array: measured 1 in numba 0.68),
    even when the function allocates nothing. Measured here, so the test below can subtract it.
    ``get_allocation_stats`` raises RuntimeError if NUMBA_NRT_STATS was not set before numba
    loaded (tests/conftest.py sets it): the test then fails, it does not skip."""
    a = np.ones(4)
    _reads_two_arrays(a, a)
    before = rtsys.get_allocation_stats().alloc
    _reads_two_arrays(a, a)
    n = rtsys.get_allocation_stats().alloc - before
    assert n % 2 == 0, f"{n} NRT allocations for two array arguments"
    return n // 2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name,act,dims", REUSE_CASES)
def test_second_call_after_rewind_reuses_every_buffer_and_allocates_nothing(
        name, act, dims, dtype, monkeypatch, nrt_allocs_per_array_argument):
    rng = np.random.default_rng(11)
    first_args, args = (kernel_args(name, rng, dtype, dims, act=act) for _ in range(2))
    expected = _call(name, args, None)

    # count the array arguments of every njit call, to tell them from allocations inside kernels
    unboxed = [0]
    for kname, disp in DISPATCHERS.items():
        def counting(*a, disp=disp):
            unboxed[0] += sum(isinstance(x, np.ndarray) for x in a)
            return disp(*a)
        monkeypatch.setattr(numba_cpu, kname, counting)

    ws = Workspace()
    first = _call(name, first_args, ws)
    n_buffers = ws.allocations
    ws.rewind()
    unboxed[0] = 0
    nrt_before = rtsys.get_allocation_stats()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        second = _call(name, args, ws)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if not was_tracing:
            tracemalloc.stop()
    nrt_after = rtsys.get_allocation_stats()

    assert ws.allocations == n_buffers, f"{name}: the second call created workspace buffers"
    assert len(second) == len(first) and all(s is f for s, f in zip(second, first)), (
        f"{name}: the second call did not return the first call's buffers")
    for s, e in zip(second, expected):
        assert s.tobytes() == e.tobytes(), f"{name}: reused buffers change the result"
    assert peak < PEAK_BOUND, f"{name}: tracemalloc peak {peak} B: a NumPy array was allocated"
    inside = (nrt_after.alloc - nrt_before.alloc) - unboxed[0] * nrt_allocs_per_array_argument
    assert inside == 0, f"{name}: {inside} numba runtime allocations inside the kernels"
    assert nrt_after.alloc - nrt_after.free == nrt_before.alloc - nrt_before.free, f"{name}: NRT leak"


def test_every_array_kernel_takes_ws_and_has_a_no_allocation_case():
    assert set(WS_KERNELS) == {"matmul", "matmul_at", "matmul_bt", "bias_act_fwd", "bias_act_bwd",
                               "reparam_fwd", "reparam_bwd", "kl_fwd", "kl_bwd", "bernoulli_ll_fwd",
                               "bernoulli_ll_bwd", "gaussian_ll_fwd", "gaussian_ll_bwd", "logsumexp",
                               "softmax", "add", "vq_assign", "gather_fwd", "gather_bwd",
                               "sqdist_fwd", "sqdist_bwd", "vq_ema", "planar_flow_fwd",
                               "planar_flow_bwd"}
    assert set(BIG_DIMS) == set(WS_KERNELS)
    for name in WS_KERNELS:
        ws = inspect.signature(getattr(numba_cpu, name)).parameters["ws"]
        assert ws.kind is inspect.Parameter.KEYWORD_ONLY and ws.default is None, name


# ---------------------------------------------------------------- glue kernels
# the vectorised loop runs in chunks of (vector width x unroll) entries, at most 128 here, then a
# remainder loop: a NaN must be found in either, at every edge between them
EDGES = (15, 16, 63, 64, 127, 128)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("size", [1, 7, 16, 63, 64, 65, 129, 4096, 4097, 3 * 4096 - 5])
def test_all_finite_finds_nan_and_inf_at_first_last_and_vector_edges(dtype, bad, size):
    a = np.random.default_rng(size).standard_normal(size).astype(dtype)
    assert numba_cpu.all_finite(a) is True
    for pos in sorted({0, size - 1} | {min(e, size - 1) for e in EDGES}):
        b = a.copy()
        b[pos] = bad
        assert numba_cpu.all_finite(b) is False, f"{bad} at {pos} of {size} missed"
        assert numba_cpu.all_finite(b) == bool(np.isfinite(b).all())


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@given(shape=st.tuples(st.integers(0, 40), st.integers(1, 30)), seed=SEEDS,
       n_bad=st.integers(0, 3), transpose=st.booleans())
def test_all_finite_matches_numpy_on_2d_and_non_contiguous_arrays(dtype, shape, seed, n_bad, transpose):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    if a.size:
        a.reshape(-1)[rng.integers(0, a.size, n_bad)] = rng.choice([np.nan, np.inf, -np.inf], n_bad)
    a = a.T if transpose else a
    assert numba_cpu.all_finite(a) is bool(np.isfinite(a).all())


def test_all_finite_edge_values_and_no_temporary(nrt_allocs_per_array_argument):
    """Extremes are finite; the check allocates no boolean array (1 MiB here) and no NRT memory."""
    for dt in DTYPES:
        info = np.finfo(dt)
        edge = np.array([info.max, -info.max, info.tiny, info.smallest_subnormal, 0.0, -0.0], dt)
        assert numba_cpu.all_finite(edge) is True
        assert numba_cpu.all_finite(np.empty(0, dt)) is True
    a = np.ones(2**20, np.float32)
    a[-1] = np.inf  # the whole array is scanned
    numba_cpu.all_finite(a)
    nrt_before = rtsys.get_allocation_stats().alloc
    tracemalloc.start()
    try:
        assert numba_cpu.all_finite(a) is False
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BOUND, f"all_finite allocated {peak} B"
    assert rtsys.get_allocation_stats().alloc - nrt_before == nrt_allocs_per_array_argument


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_add_is_a_plus_b_into_a_new_or_workspace_buffer(dtype):
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((5, 7)).astype(dtype) for _ in range(2))
    a0, b0 = a.copy(), b.copy()
    c = numba_cpu.add(a, b)
    assert c.dtype == dtype and c.tobytes() == (a + b).tobytes()
    assert not np.shares_memory(c, a) and not np.shares_memory(c, b)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    ws = Workspace()
    c1 = numba_cpu.add(a, b, ws=ws)
    ws.rewind()
    c2 = numba_cpu.add(b, b, ws=ws)
    assert c2 is c1 and c2.tobytes() == (b + b).tobytes() and ws.allocations == 1
    assert numba_cpu.add(a.T, b.T).tobytes() == (a.T + b.T).tobytes()  # any layout in


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copyto_writes_into_dst_and_device_moves_are_the_identity(dtype):
    rng = np.random.default_rng(4)
    src = rng.standard_normal((3, 4)).astype(dtype)
    dst = np.zeros((3, 4), dtype)
    assert numba_cpu.copyto(dst, src) is None
    assert dst.tobytes() == src.tobytes() and not np.shares_memory(dst, src)
    holder = np.zeros((3, 8), dtype)
    numba_cpu.copyto(holder[:, ::2], src)  # a strided view is written in place
    np.testing.assert_array_equal(holder[:, ::2], src)
    np.testing.assert_array_equal(holder[:, 1::2], 0.0)
    view = holder[:, ::2]
    for move in (numba_cpu.to_device, numba_cpu.to_host):
        assert move(src) is src and move(view) is view  # no copy, whatever the layout
