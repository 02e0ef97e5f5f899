"""The vector-quantisation kernels (vq_assign, gather_fwd/bwd, sqdist_fwd/bwd, vq_ema) against
independent formulas (tests/reference.py) on every backend: ties to the smallest code, the
scatter-add as the adjoint of the gather, the stop-gradient distance's gradient by finite
differences, the EMA step from its definition, and argument checks naming the argument.

The general contract (every backend equals numpy_ref, workspace reuse, layouts, device arrays)
is checked for these kernels by test_conformance.py, test_numba_cpu.py and test_cuda.py, whose
inputs (make_args) include them. The cuda cases here run only in the simulator:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim tests/kernels/test_vq_kernels.py
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import config

from scratchvae.kernels import _jit, get_kernels
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP, RTOL

BACKENDS = ["numpy", "numba",
            pytest.param("cuda", marks=[pytest.mark.cudasim, pytest.mark.skipif(
                not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")])]
DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
SEEDS = st.integers(0, 2**32 - 1)
SIZES = st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 5))  # (N, e, C)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Multi-block launches for the simulator (harmless for the CPU backends)."""
    monkeypatch.setattr(_jit, "TPB_1D", 4)


def _host(k, a):
    return np.asarray(k.to_host(a))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=10)
@given(sizes=SIZES, seed=SEEDS, n_ties=st.integers(0, 3))
def test_vq_assign_is_the_nearest_code_and_ties_go_to_the_smallest(backend, dtype, sizes, seed, n_ties):
    n, e, c = sizes
    rng = np.random.default_rng(seed)
    codebook = rng.standard_normal((c, e)).astype(dtype)
    z = rng.standard_normal((n, e)).astype(dtype)
    for _ in range(n_ties):  # a repeated code, and rows sitting exactly on (or halfway to) codes
        i, j = rng.integers(0, c, 2)
        codebook[max(i, j)] = codebook[min(i, j)]
        z[rng.integers(0, n)] = codebook[j]
    k = get_kernels(backend)
    idx = _host(k, k.vq_assign(z, codebook))
    assert idx.dtype == np.int64 and idx.shape == (n,)
    np.testing.assert_array_equal(idx, ref.nearest_codes(z, codebook))


@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_assign_on_a_hand_example(backend):
    codebook = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.5, 0.0]])
    z = np.array([[0.0, 0.0],      # codes 0 and 2 tie at distance 0: 0
                  [0.75, 0.0],     # codes 1 and 3 tie at 0.0625: 1
                  [0.25, 0.0],     # codes 0, 2 and 3 tie at 0.0625: 0
                  [2.0, 5.0]])     # nearest is 1
    k = get_kernels(backend)
    np.testing.assert_array_equal(_host(k, k.vq_assign(z, codebook)), [0, 1, 0, 1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=10)
@given(sizes=SIZES, seed=SEEDS)
def test_gather_bwd_is_the_adjoint_of_gather_fwd_and_counts_the_rows(backend, dtype, sizes, seed):
    """<gather_fwd(T, idx), R> = <T, gather_bwd(R, idx, C)> for every T, R; the counts are a
    histogram of idx; the sums are those of a plain loop."""
    n, e, c = sizes
    rng = np.random.default_rng(seed)
    table, drows = rng.standard_normal((c, e)).astype(dtype), rng.standard_normal((n, e)).astype(dtype)
    idx = rng.integers(0, c, n).astype(np.int64)
    k = get_kernels(backend)
    rows = _host(k, k.gather_fwd(table, idx))
    np.testing.assert_array_equal(rows, table[idx])
    dtable, counts = (_host(k, a) for a in k.gather_bwd(drows, idx, c))
    assert dtable.dtype == counts.dtype == dtype and dtable.shape == (c, e) and counts.shape == (c,)
    loop = np.zeros((c, e))
    for i in range(n):
        loop[idx[i]] += drows[i]
    np.testing.assert_allclose(dtable, loop, rtol=RTOL[dtype], atol=RTOL[dtype] * n)
    np.testing.assert_array_equal(counts, [np.sum(idx == j) for j in range(c)])
    lhs = np.sum(rows.astype(np.float64) * drows)
    rhs = np.sum(table.astype(np.float64) * dtable)
    scale = np.sum(np.abs(table[idx].astype(np.float64) * drows))
    assert abs(lhs - rhs) <= RTOL[dtype] * (scale + 1e-30) * 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_gather_bwd_gives_zero_rows_and_counts_to_unused_codes(backend):
    k = get_kernels(backend)
    drows = np.arange(6.0).reshape(3, 2)
    dtable, counts = (_host(k, a) for a in k.gather_bwd(drows, np.array([2, 0, 2]), 4))
    np.testing.assert_array_equal(dtable, [[2.0, 3.0], [0.0, 0.0], [4.0, 6.0], [0.0, 0.0]])
    np.testing.assert_array_equal(counts, [1.0, 0.0, 2.0, 0.0])


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(sizes=SIZES, seed=SEEDS)
def test_sqdist_bwd_is_the_gradient_in_its_first_argument(backend, sizes, seed):
    """Finite differences (float64) of sum_n dd_n ||a_n - b_n||^2 in a with b fixed; the
    forward equals the direct sum."""
    n, e, _ = sizes
    rng = np.random.default_rng(seed)
    a, b, dd = rng.standard_normal((n, e)), rng.standard_normal((n, e)), rng.standard_normal(n)
    k = get_kernels(backend)
    d = _host(k, k.sqdist_fwd(a, b))
    np.testing.assert_allclose(d, [np.sum((a[i] - b[i]) ** 2) for i in range(n)], rtol=RTOL[np.dtype(np.float64)])
    numeric = ref.numerical_vjp(lambda a, b: np.sum((a - b) ** 2, axis=1), {"a": a, "b": b}, "a", dd, FD_STEP)
    ref.assert_gradient_close(_host(k, k.sqdist_bwd(dd, a, b)), numeric, "da", FD_RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=10)
@given(sizes=SIZES, seed=SEEDS, decay=st.sampled_from([0.5, 0.9, 0.99]),
       eps=st.sampled_from([1e-5, 1e-2, 1.0]))
def test_vq_ema_is_the_smoothed_moving_average_of_the_assigned_outputs(backend, dtype, sizes, seed, decay, eps):
    n, e, c = sizes
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, e)).astype(dtype)
    codes = rng.integers(0, c, n).astype(np.int64)
    ema_count = rng.random(c).astype(dtype) * 3
    ema_sum = rng.standard_normal((c, e)).astype(dtype)
    k = get_kernels(backend)
    sums, counts = k.gather_bwd(z, codes, c)
    count, ema, codebook = (_host(k, a) for a in k.vq_ema(ema_count, ema_sum, counts, sums, decay, eps))
    want = ref.codebook_ema(ema_count, ema_sum, z.astype(np.float64), codes, c, decay, eps)
    tol = 50 * RTOL[dtype]
    for got, exp, name in zip((count, ema, codebook), want, ("count", "sum", "codebook")):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got, exp, rtol=tol, atol=tol * (1 + np.abs(exp).max()), err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vq_ema_without_memory_is_the_mean_of_the_assigned_outputs(backend):
    """decay -> 0 and eps -> 0: each used code moves to the mean of its encoder outputs; an
    unused code gets a zero count and, thanks to the smoothing, a finite (zero) value."""
    z = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]])
    codes = np.array([0, 0, 2])
    k = get_kernels(backend)
    sums, counts = k.gather_bwd(z, codes, 3)
    count, _, codebook = (_host(k, a) for a in k.vq_ema(np.ones(3), np.zeros((3, 2)), counts, sums, 1e-12, 1e-12))
    np.testing.assert_allclose(count, [2.0, 0.0, 1.0], atol=1e-11)
    np.testing.assert_allclose(codebook[[0, 2]], [[2.0, 3.0], [10.0, 0.0]], rtol=1e-9)
    assert np.all(np.isfinite(codebook)) and np.all(codebook[1] == 0.0)


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_row_numbers_must_be_int64_and_in_range(backend):
    k = get_kernels(backend)
    table = np.ones((3, 2))
    with pytest.raises(ValueError, match=r"^gather_fwd: idx must hold row numbers in \[0, 3\)"):
        k.gather_fwd(table, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"^gather_fwd: idx must hold row numbers"):
        k.gather_fwd(table, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"^gather_fwd: idx must have dtype int64"):
        k.gather_fwd(table, np.array([0, 1], np.int32))
    with pytest.raises(ValueError, match=r"^gather_bwd: idx must hold row numbers in \[0, 2\)"):
        k.gather_bwd(np.ones((2, 2)), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match=r"^gather_bwd: n_rows must be the number of rows"):
        k.gather_bwd(np.ones((2, 2)), np.array([0, 0]), 0)
    with pytest.raises(ValueError, match=r"^gather_bwd: idx has N = 3"):
        k.gather_bwd(np.ones((2, 2)), np.array([0, 0, 1]), 2)
    with pytest.raises(ValueError, match=r"^vq_assign: codebook has e = 3"):
        k.vq_assign(np.ones((4, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"^vq_assign: codebook has dtype float32 but z has float64"):
        k.vq_assign(np.ones((4, 2)), np.ones((5, 2), np.float32))
    with pytest.raises(ValueError, match=r"^vq_ema: decay must be a decay rate in \[0, 1\); got nan"):
        k.vq_ema(np.ones(2), np.ones((2, 2)), np.ones(2), np.ones((2, 2)), float("nan"), 1e-5)
    # a float32 call takes int64 row numbers too (they are not of the float dtype)
    out = k.gather_fwd(np.ones((3, 2), np.float32), np.array([2, 0]))
    assert out.dtype == np.float32 and out.shape == (2, 2)
