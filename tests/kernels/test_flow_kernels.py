"""The planar-flow kernels (FlowVAE): values against independent formulas, float64 finite
differences of every piece on hypothesis-drawn configurations, the invertibility constraint,
the stable log-det in float32 near its bound, L = 0, argument checks, and numba / cuda against
the reference (the cuda tests run in the simulator: NUMBA_ENABLE_CUDASIM=1, marked cudasim)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import config

from scratchvae.kernels import get_kernels, numba_cpu, numpy_ref
from tests import reference
from tests.conftest import FD_RTOL, FD_STEP, RTOL

SEEDS = st.integers(0, 2**32 - 1)
# (K, B, d, L): tiny, so a full finite-difference sweep costs milliseconds
CONFIGS = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))
# which upstream gradients are non-zero: both, only dzL (the z path), only dlogdet (log-det path)
PIECES = ["both", "z_only", "logdet_only"]


def _inputs(rng, K, B, d, L, dtype=np.float64, scale=1.0):
    """z0, u, w, b with ||w|| kept away from 0 (the reparametrisation divides by ||w||^2)."""
    z0 = rng.standard_normal((K, B, d)) * scale
    u = rng.standard_normal((B, L, d))
    w = rng.standard_normal((B, L, d))
    w += np.where(w < 0, -0.3, 0.3)
    b = rng.standard_normal((B, L)) * scale
    return tuple(a.astype(dtype) for a in (z0, u, w, b))


def _upstream(rng, K, B, d, piece):
    dzL = rng.standard_normal((K, B, d)) * (piece != "logdet_only")
    dlogdet = rng.standard_normal((K, B)) * (piece != "z_only")
    return dzL, dlogdet


def _objective(dzL, dlogdet):
    """<dzL, zL> + <dlogdet, logdet> as a function of (z0, u, w, b): its gradient is the VJP."""
    def f(z0, u, w, b):
        zL, logdet, *_ = numpy_ref.planar_flow_fwd(z0, u, w, b)
        return float((zL * dzL).sum() + (logdet * dlogdet).sum())
    return f


def _numerical_gradients(f, args, h=FD_STEP):
    grads = []
    for i, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in args]
            minus = [x.copy() for x in args]
            plus[i][idx] += h
            minus[i][idx] -= h
            g[idx] = (f(*plus) - f(*minus)) / (2 * h)
        grads.append(g)
    return grads


def _assert_fd_close(analytic, numerical, names, scale):
    for a, n, name in zip(analytic, numerical, names):
        err = np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n), 1.0)
        assert err < FD_RTOL, f"{name}: normwise relative error {err:.2e}"
        np.testing.assert_allclose(a, n, rtol=1e-5, atol=1e-7 * max(1.0, scale), err_msg=name)


# ---------------------------------------------------------------- forward values
@given(cfg=CONFIGS, seed=SEEDS, scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_forward_matches_a_per_sample_loop_of_the_textbook_formulas(cfg, seed, scale):
    """zL, the summed log-det (as log|1 + (1 - t^2) w . uh|), zin, t, uh against a loop over
    samples, examples and steps written from the equations (tests/reference.py)."""
    z0, u, w, b = _inputs(np.random.default_rng(seed), *cfg, scale=scale)
    got = numpy_ref.planar_flow_fwd(z0, u, w, b)
    want = reference.planar_flow(z0, u, w, b)
    for g, e, name in zip(got, want, ("zL", "logdet", "zin", "t", "uh")):
        assert g.shape == e.shape and g.dtype == np.float64, name
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=name)


@given(cfg=CONFIGS, seed=SEEDS)
def test_logdet_is_the_log_determinant_of_the_numerical_jacobian(cfg, seed):
    """The summed log-det is log|det dzL/dz0|, with the Jacobian taken by central differences
    of the whole L-step map (nothing of the determinant lemma is used)."""
    K, B, d, L = cfg
    z0, u, w, b = _inputs(np.random.default_rng(seed), *cfg)
    _, logdet, *_ = numpy_ref.planar_flow_fwd(z0, u, w, b)
    h = 1e-6
    for k in range(K):
        for bb in range(B):
            J = np.empty((d, d))
            for j in range(d):
                zp, zm = z0.copy(), z0.copy()
                zp[k, bb, j] += h
                zm[k, bb, j] -= h
                J[:, j] = (numpy_ref.planar_flow_fwd(zp, u, w, b)[0][k, bb]
                           - numpy_ref.planar_flow_fwd(zm, u, w, b)[0][k, bb]) / (2 * h)
            sign, want = np.linalg.slogdet(J)
            assert sign > 0  # invertible and orientation-preserving, as w . uh > -1 implies
            assert abs(logdet[k, bb] - want) < 1e-7, (k, bb, logdet[k, bb], want)


@given(seed=SEEDS, m_scale=st.sampled_from([1.0, 10.0, 100.0]))
def test_reparametrised_direction_keeps_w_dot_uh_above_minus_one(seed, m_scale):
    """w . uh = softplus(w . u) - 1 > -1 for any u, even u far along -w (where softplus(m)
    underflows and the rounded value is -1 itself, never below)."""
    rng = np.random.default_rng(seed)
    z0, u, w, b = _inputs(rng, 1, 3, 3, 2)
    u = u * m_scale
    uh = numpy_ref.planar_flow_fwd(z0, u, w, b)[4]
    wuh = (w * uh).sum(-1)
    m = (w * u).sum(-1)
    # w . uh recomputed here carries the rounding of a d-term dot product with terms ~ |m|
    tol = 1e-13 * (1 + np.abs(m))
    assert (np.abs(wuh - (np.logaddexp(0.0, m) - 1.0)) <= tol).all(), (wuh, m)
    assert (wuh > -1 - tol).all()


# ---------------------------------------------------------------- finite differences (float64)
@pytest.mark.parametrize("piece", PIECES)
@given(cfg=CONFIGS, seed=SEEDS, scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_backward_matches_central_differences(piece, cfg, seed, scale):
    """dz0, du, dw, db of planar_flow_bwd against the numerical VJP of planar_flow_fwd, per
    entry: through z alone (the steps and uh's reparametrisation), the log-det alone (its
    derivative in t and in m = w . u), and both. L = 1 draws test a single step."""
    K, B, d, L = cfg
    rng = np.random.default_rng(seed)
    args = _inputs(rng, *cfg, scale=scale)
    dzL, dlogdet = _upstream(rng, K, B, d, piece)
    _, _, zin, t, uh = numpy_ref.planar_flow_fwd(*args)
    analytic = numpy_ref.planar_flow_bwd(dzL, dlogdet, zin, t, uh, args[1], args[2])
    numerical = _numerical_gradients(_objective(dzL, dlogdet), args)
    f0 = abs(_objective(dzL, dlogdet)(*args))
    _assert_fd_close(analytic, numerical, ("dz0", "du", "dw", "db"), f0)


def test_backward_of_a_fixed_case_against_central_differences():
    """One hand-picked case with u nearly along -w (m = w . u = -4), where uh's correction
    term is large, checked entry by entry."""
    rng = np.random.default_rng(5)
    z0, u, w, b = _inputs(rng, 2, 2, 3, 3)
    u[0, 1] = -4.0 * w[0, 1] / (w[0, 1] @ w[0, 1])
    dzL, dlogdet = _upstream(rng, 2, 2, 3, "both")
    _, _, zin, t, uh = numpy_ref.planar_flow_fwd(z0, u, w, b)
    analytic = numpy_ref.planar_flow_bwd(dzL, dlogdet, zin, t, uh, u, w)
    numerical = _numerical_gradients(_objective(dzL, dlogdet), (z0, u, w, b))
    _assert_fd_close(analytic, numerical, ("dz0", "du", "dw", "db"), 1.0)


# ---------------------------------------------------------------- float32 near the bound
def _near_bound(dtype, m, a0):
    """Inputs whose first step has w . u = m (so w . uh = softplus(m) - 1, just above -1) and
    whose first pre-activation a = w . z0 + b equals a0 for every sample."""
    rng = np.random.default_rng(7)
    K, B, d, L = 2, 3, 3, 2
    z0, u, w, b = _inputs(rng, K, B, d, L)
    wn = w[:, 0] / np.linalg.norm(w[:, 0], axis=-1, keepdims=True)
    perp = u[:, 0] - (u[:, 0] * wn).sum(-1, keepdims=True) * wn     # u's part orthogonal to w
    u[:, 0] = perp + m * w[:, 0] / (w[:, 0] * w[:, 0]).sum(-1, keepdims=True)
    z0[:] = z0[0]                                                 # every sample at one point
    b[:, 0] = a0 - (z0[0] * w[:, 0]).sum(-1)
    return tuple(x.astype(dtype) for x in (z0, u, w, b))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("m", [-12.0, -30.0, -80.0])
@pytest.mark.parametrize("a0", [0.0, 1e-4, 1e-2])
def test_float32_stays_finite_and_accurate_where_the_determinant_approaches_zero(backend, m, a0):
    """With w . uh -> -1 and a -> 0 the Jacobian determinant t^2 + (1 - t^2) softplus(m) is as
    small as exp(-80). In float32 the log-det and every gradient stay finite, and they agree
    with float64 evaluated on the same rounded quantities (the float32 forward's own t, and its
    cache for the backward): what is left is the conditioning of the inputs, not the formulas.
    The textbook form log|1 + (1 - t^2) w . uh| does not survive there (it gives -inf, or a
    value off by many nats), which is why the kernels never use it."""
    k = get_kernels(backend)
    z0, u, w, b = x32 = _near_bound(np.float32, m, a0)
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    zL, logdet, zin, t, uh = out = k.planar_flow_fwd(*x32)
    rng = np.random.default_rng(3)
    dzL = rng.standard_normal(zL.shape).astype(np.float32)
    dlogdet = rng.standard_normal(logdet.shape).astype(np.float32)
    grads = k.planar_flow_bwd(dzL, dlogdet, zin, t, uh, u, w)
    for name, a in zip(("zL", "logdet", "zin", "t", "uh", "dz0", "du", "dw", "db"), out + grads):
        assert a.dtype == np.float32, name
        assert np.isfinite(a).all(), f"{name} not finite in float32 (m={m}, a0={a0})"

    # the log-det from float32's own t and m, in float64 and in the textbook form
    m64 = (f64(w) * f64(u)).sum(-1)                                 # (B, L)
    t64 = f64(t)
    det64 = t64**2 + (1.0 - t64**2) * np.logaddexp(0.0, m64).T[:, None, :]   # (L, K, B)
    np.testing.assert_allclose(logdet, np.log(det64).sum(0), rtol=1e-5, atol=1e-5)
    assert np.log(det64[0]).max() < -8.0  # the first step sits near the bound
    # the backward: float64 on the float32 cache
    g64 = numpy_ref.planar_flow_bwd(f64(dzL), f64(dlogdet), f64(zin), t64, f64(uh), f64(u), f64(w))
    for name, a32, a64 in zip(("dz0", "du", "dw", "db"), grads, g64):
        np.testing.assert_allclose(a32, a64, rtol=1e-4, atol=1e-5 * (np.abs(a64).max() + 1.0),
                                   err_msg=name)

    # the textbook form in float32, from the same uh and t: w . uh rounds near -1 and the sum
    # cancels to about the rounding of w . uh (1e-6), or to 0, far from the exact t^2 + e^m
    with np.errstate(divide="ignore", invalid="ignore"):
        naive = np.log(np.abs(1 + (1 - t[0] ** 2) * (w[:, 0] * uh[:, 0]).sum(-1)))
    if m <= -30 and a0 <= 1e-4:
        assert not (np.abs(naive - np.log(det64[0])) < 1.0).all(), "the textbook form was accurate here"


# ---------------------------------------------------------------- L = 0, argument checks
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_zero_steps_is_the_identity(backend, dtype):
    k = get_kernels(backend)
    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((2, 3, 4)).astype(dtype)
    u = w = np.zeros((3, 0, 4), dtype)
    b = np.zeros((3, 0), dtype)
    zL, logdet, zin, t, uh = k.planar_flow_fwd(z0, u, w, b)
    np.testing.assert_array_equal(zL, z0)
    assert not np.shares_memory(zL, z0)
    np.testing.assert_array_equal(logdet, np.zeros((2, 3), dtype))
    assert zin.shape == (0, 2, 3, 4) and t.shape == (0, 2, 3) and uh.shape == (3, 0, 4)
    dzL = rng.standard_normal((2, 3, 4)).astype(dtype)
    dz0, du, dw, db = k.planar_flow_bwd(dzL, np.ones((2, 3), dtype), zin, t, uh, u, w)
    np.testing.assert_array_equal(dz0, dzL)
    assert du.shape == dw.shape == (3, 0, 4) and db.shape == (3, 0)
    assert all(a.dtype == dtype for a in (zL, logdet, dz0, du, dw, db))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_mismatched_flow_arguments_name_the_argument(backend):
    k = get_kernels(backend)
    z0, u, w, b = _inputs(np.random.default_rng(0), 2, 3, 4, 2)
    with pytest.raises(ValueError, match=r"^planar_flow_fwd: w has L = 3"):
        k.planar_flow_fwd(z0, u, np.ones((3, 3, 4)), b)
    with pytest.raises(ValueError, match=r"^planar_flow_fwd: u has B = 2"):
        k.planar_flow_fwd(z0, u[:2], w, b)
    with pytest.raises(ValueError, match=r"^planar_flow_fwd: b must be 2-dimensional"):
        k.planar_flow_fwd(z0, u, w, b[:, 0])
    with pytest.raises(ValueError, match=r"^planar_flow_fwd: u has dtype float32"):
        k.planar_flow_fwd(z0, u.astype(np.float32), w, b)
    _, _, zin, t, uh = k.planar_flow_fwd(z0, u, w, b)
    with pytest.raises(ValueError, match=r"^planar_flow_bwd: dlogdet has K = 3"):
        k.planar_flow_bwd(np.ones_like(z0), np.ones((3, 3)), zin, t, uh, u, w)
    with pytest.raises(ValueError, match=r"^planar_flow_bwd: t has L = 2 .* but zin has L = 1"):
        k.planar_flow_bwd(np.ones_like(z0), np.ones((2, 3)), zin[:1], t, uh, u, w)


# ---------------------------------------------------------------- numba against the reference
@pytest.mark.parametrize("name", ["planar_flow_fwd", "planar_flow_bwd"])
@given(cfg=CONFIGS, seed=SEEDS, scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_numba_matches_the_reference(name, cfg, seed, scale):
    for dtype in (np.float32, np.float64):
        _compare(numba_cpu, name, cfg, seed, scale, dtype)


def _compare(module, name, cfg, seed, scale, dtype):
    K, B, d, L = cfg
    rng = np.random.default_rng(seed)
    x = _inputs(rng, *cfg, dtype=dtype, scale=scale)
    if name == "planar_flow_fwd":
        args = x
    else:
        dzL, dlogdet = (g.astype(dtype) for g in _upstream(rng, K, B, d, "both"))
        args = (dzL, dlogdet, *numpy_ref.planar_flow_fwd(*x)[2:], x[1], x[2])
    want = getattr(numpy_ref, name)(*args)
    got = getattr(module, name)(*args)
    if not isinstance(got[0], np.ndarray):  # device arrays: only when an input was one
        raise AssertionError(f"{name}: host inputs gave {type(got[0]).__name__}")
    for g, e in zip(got, want):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        tol = RTOL[np.dtype(dtype)] * (np.abs(e.astype(np.float64)).max() + 1.0)
        np.testing.assert_allclose(g, e, rtol=0, atol=tol, err_msg=name)


def test_numba_same_inputs_give_identical_bits():
    rng = np.random.default_rng(2)
    x = _inputs(rng, 2, 3, 4, 3, dtype=np.float32)
    a, b = numba_cpu.planar_flow_fwd(*x), numba_cpu.planar_flow_fwd(*x)
    assert all(p.tobytes() == q.tobytes() for p, q in zip(a, b))


# ---------------------------------------------------------------- cuda, in the simulator
@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
class TestCudaSimulator:
    @pytest.fixture(autouse=True)
    def small_blocks(self, monkeypatch):
        from scratchvae.kernels import _jit
        monkeypatch.setattr(_jit, "TPB_1D", 4)  # several blocks even for these tiny shapes

    @pytest.mark.parametrize("name", ["planar_flow_fwd", "planar_flow_bwd"])
    @settings(max_examples=4)
    @given(cfg=st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3)),
           seed=SEEDS)
    def test_cuda_matches_the_reference(self, name, cfg, seed):
        from scratchvae.kernels import cuda as cuda_kernels
        for dtype in (np.float32, np.float64):
            _compare(cuda_kernels, name, cfg, seed, 1.0, dtype)

    def test_cuda_near_the_bound_and_with_zero_steps(self):
        from scratchvae.kernels import cuda as cuda_kernels
        x32 = _near_bound(np.float32, -80.0, 0.0)
        out = cuda_kernels.planar_flow_fwd(*x32)
        grads = cuda_kernels.planar_flow_bwd(np.ones_like(x32[0]), np.ones(x32[0].shape[:2], np.float32),
                                             *out[2:], x32[1], x32[2])
        assert all(np.isfinite(a).all() and a.dtype == np.float32 for a in out + grads)
        z0 = np.ones((2, 3, 2))
        zL, logdet, zin, t, uh = cuda_kernels.planar_flow_fwd(z0, np.zeros((3, 0, 2)), np.zeros((3, 0, 2)),
                                                             np.zeros((3, 0)))
        np.testing.assert_array_equal(zL, z0)
        np.testing.assert_array_equal(logdet, np.zeros((2, 3)))
