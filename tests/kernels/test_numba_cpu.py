"""numba_cpu against numpy_ref (stumpy's naive.py pattern): every kernel, both dtypes, every
activation, on hypothesis-drawn small shapes; plus determinism, layouts and the JIT policy."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchvae.kernels import KERNEL_NAMES, _jit, numba_cpu, numpy_ref
from scratchvae.kernels._activation_codes import ACTIVATION_CODES
from tests.kernels.test_conformance import assert_matches_reference, make_args, run_kernel

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ACTS = sorted(ACTIVATION_CODES.items(), key=lambda kv: kv[1])
PLAIN_KERNELS = [n for n in KERNEL_NAMES if not n.startswith("bias_act")]
DISPATCHERS = {n: getattr(numba_cpu, n) for n in dir(numba_cpu) if hasattr(getattr(numba_cpu, n), "py_func")}

# (K, B, F, N, D): small, so an example costs well under a millisecond
DIMS = st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.integers(1, 7), st.integers(1, 9))
SEEDS = st.integers(0, 2**32 - 1)
SCALES = st.sampled_from([0.1, 1.0, 10.0])


@pytest.fixture(scope="module", autouse=True)
def warm_up():
    """Compile (or load from numba's cache) every kernel in both dtypes before any example."""
    rng = np.random.default_rng(0)
    for dt in DTYPES:
        for name in KERNEL_NAMES:
            for _, act in (ACTS if name.startswith("bias_act") else [(None, 0)]):
                run_kernel(getattr(numba_cpu, name), name, make_args(name, rng, dt, (2, 3, 4, 5, 6), act=act))
        for gemm in ("_gemm_nn", "_gemm_tn", "_gemm_nt"):
            getattr(numba_cpu, gemm)(np.ones((2, 2), dt), np.ones((2, 2), dt))


def _check(name, dtype, dims, seed, act=0, scale=1.0):
    args = make_args(name, np.random.default_rng(seed), dtype, dims, act=act, scale=scale)
    expected = run_kernel(getattr(numpy_ref, name), name, args)
    actual = run_kernel(getattr(numba_cpu, name), name, args)
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
    """The njit GEMMs themselves (whatever the dispatch threshold), against the reference."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((m, n)).astype(dtype), rng.standard_normal((n, p)).astype(dtype)
    at, bt = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    for name, hand, args in (("matmul", numba_cpu._gemm_nn, (a, b)), ("matmul_at", numba_cpu._gemm_tn, (at, b)),
                             ("matmul_bt", numba_cpu._gemm_nt, (a, bt))):
        assert_matches_reference(name, args, (hand(*args),), (getattr(numpy_ref, name)(*args),), dtype)


def test_matmuls_use_the_njit_loops_only_for_tiny_products_and_batch_one_weight_gradients(monkeypatch):
    calls = []
    for g in ("_gemm_nn", "_gemm_tn", "_gemm_nt"):
        real = getattr(numba_cpu, g)
        monkeypatch.setattr(numba_cpu, g, lambda a, b, real=real, g=g: calls.append(g) or real(a, b))
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
    for name in KERNEL_NAMES:
        for _, act in (ACTS if name.startswith("bias_act") else [(None, 0)]):
            args = make_args(name, rng, dtype, (3, 4, 5, 30, 40), act=act)
            first = run_kernel(getattr(numba_cpu, name), name, args)
            second = run_kernel(getattr(numba_cpu, name), name, args)
            for x, y in zip(first, second):
                assert x.tobytes() == y.tobytes(), f"{name} (act {act}) is not deterministic"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_inputs_match_and_compile_no_new_signature(dtype):
    """Transposed/strided inputs give the contiguous result, and the wrappers' contiguity
    guarantees one compiled signature per dtype for every njit kernel."""
    rng = np.random.default_rng(3)
    for name in KERNEL_NAMES:
        for _, act in (ACTS if name.startswith("bias_act") else [(None, 0)]):
            args = make_args(name, rng, dtype, (2, 3, 4, 5, 6), act=act)
            strided = tuple(np.asfortranarray(a) if isinstance(a, np.ndarray) and a.ndim > 1 else
                            (np.repeat(a, 2)[::2] if isinstance(a, np.ndarray) else a) for a in args)
            assert any(isinstance(a, np.ndarray) and not a.flags.c_contiguous for a in strided)
            expected = run_kernel(getattr(numba_cpu, name), name, args)
            actual = run_kernel(getattr(numba_cpu, name), name, strided)
            for x, y in zip(actual, expected):
                np.testing.assert_array_equal(x, y, err_msg=name)
    for kname, disp in DISPATCHERS.items():
        dtypes = [sig[0].dtype for sig in disp.signatures]
        assert len(dtypes) == len(set(dtypes)), f"{kname} compiled more than once per dtype: {disp.signatures}"


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
