"""The reference kernels against independent hand formulas, and every backward against central
finite differences in float64 (a random upstream gradient, the numerical vector-Jacobian
product; pre-activations kept away from the ReLU-family kinks)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchvae.kernels import numpy_ref as ref
from scratchvae.kernels._activation_codes import (ACTIVATION_CODES, ELU, IDENTITY, LEAKY_RELU, RELU, SIGMOID,
                                                  SOFTPLUS, TANH)
from tests.conftest import FD_RTOL, FD_STEP
from tests.kernels.test_conformance import ARRAY_KERNELS, assert_matches_reference, make_args, run_kernel

SEEDS = st.integers(0, 2**32 - 1)
F64 = np.dtype(np.float64)


# ---------------------------------------------------------------- finite-difference helpers
def numerical_vjp(f, inputs, upstreams, wrt):
    """d/d inputs[wrt] of sum_o <f(*inputs)[o], upstreams[o]>, by central differences."""
    x = inputs[wrt]
    grad = np.zeros_like(x)

    def objective():
        outs = f(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return sum(float(np.sum(o * u)) for o, u in zip(outs, upstreams) if u is not None)

    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + FD_STEP
        plus = objective()
        x[idx] = old - FD_STEP
        minus = objective()
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * FD_STEP)
    return grad


def assert_gradient_close(analytic, numeric, what):
    """Normwise relative error below FD_RTOL, and no single entry far off (a robust pair of metrics:
    a plain entrywise relative error is 0/0 for dead units and 1.0 for tiny true gradients)."""
    norm = max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-300)
    err = np.linalg.norm(analytic - numeric) / norm
    assert err < FD_RTOL, f"{what}: normwise relative error {err:.2e}"
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7 * max(1.0, norm), err_msg=what)


# ---------------------------------------------------------------- forward values: hand formulas
def test_matmuls_against_explicit_sums():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    hand = np.array([[math.fsum(a[i, k] * b[k, j] for k in range(4)) for j in range(5)] for i in range(3)])
    np.testing.assert_allclose(ref.matmul(a, b), hand, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ref.matmul_at(np.ascontiguousarray(a.T), b), hand, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(ref.matmul_bt(a, np.ascontiguousarray(b.T)), hand, rtol=1e-14, atol=1e-14)


HAND_ACT = {
    RELU: lambda h: max(h, 0.0),
    LEAKY_RELU: lambda h: h if h > 0 else 0.01 * h,
    TANH: math.tanh,
    SIGMOID: lambda h: 1.0 / (1.0 + math.exp(-h)),
    SOFTPLUS: lambda h: math.log(1.0 + math.exp(h)),
    ELU: lambda h: h if h > 0 else math.exp(h) - 1.0,
    IDENTITY: lambda h: h,
}


@pytest.mark.parametrize("act_name,act", sorted(ACTIVATION_CODES.items()))
def test_bias_act_fwd_against_scalar_formulas(act_name, act):
    z = np.array([[-3.0, -0.5, 0.25], [0.75, 2.0, -1.5]])
    b = np.array([0.5, -0.25, 1.0])
    h, y = ref.bias_act_fwd(z, b, act)
    np.testing.assert_array_equal(h, z + b)
    hand = np.vectorize(HAND_ACT[act])(z + b)
    np.testing.assert_allclose(y, hand, rtol=1e-14, atol=1e-15, err_msg=act_name)


def test_sigmoid_and_softplus_are_stable_at_extreme_inputs():
    h = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow anywhere
        _, s = ref.bias_act_fwd(h, np.zeros(5), SIGMOID)
        _, sp = ref.bias_act_fwd(h, np.zeros(5), SOFTPLUS)
        _, e = ref.bias_act_fwd(h, np.zeros(5), ELU)
    # 0.5 tanh(h/2) + 0.5 is accurate in absolute terms (a few 1e-17), not relative: at h = -50
    # it returns 0 where sigma is 2e-22. The likelihood gradient x - sigma needs only absolute.
    np.testing.assert_allclose(s[0], [0.0, math.exp(-50), 0.5, 1.0, 1.0], rtol=1e-15, atol=2.0**-53)
    assert ((s >= 0.0) & (s <= 1.0)).all()
    np.testing.assert_allclose(sp[0], [0.0, math.exp(-50), math.log(2.0), 50.0, 1000.0], rtol=1e-14, atol=0)
    np.testing.assert_allclose(e[0], [-1.0, math.expm1(-50), 0.0, 50.0, 1000.0], rtol=1e-14)


def test_kl_against_the_direct_formula():
    rng = np.random.default_rng(1)
    mu, lv = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    hand = [0.5 * math.fsum(mu[i, j] ** 2 + math.exp(lv[i, j]) - 1.0 - lv[i, j] for j in range(3)) for i in range(4)]
    np.testing.assert_allclose(ref.kl_fwd(mu, lv), hand, rtol=1e-13)
    np.testing.assert_array_equal(ref.kl_fwd(np.zeros((2, 3)), np.zeros((2, 3))), [0.0, 0.0])


def test_kl_is_the_kl_divergence_of_two_gaussians_by_quadrature():
    """KL(N(m, s2) || N(0, 1)) = integral q log(q/p), by the trapezoid rule, for d = 1."""
    m, lv = 0.7, -0.4
    s = math.exp(0.5 * lv)
    x = np.linspace(m - 12 * s, m + 12 * s, 200001)
    logq = -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    logp = -0.5 * x**2 - 0.5 * math.log(2 * math.pi)
    kl = np.trapezoid(np.exp(logq) * (logq - logp), x)
    np.testing.assert_allclose(ref.kl_fwd(np.array([[m]]), np.array([[lv]])), [kl], rtol=1e-9)


def test_reparam_fwd_against_the_formula():
    mu, lv = np.array([[0.5, -1.0]]), np.array([[math.log(4.0), 0.0]])
    eps = np.array([[[1.0, 2.0]], [[-0.5, 0.0]]])
    z, std = ref.reparam_fwd(mu, lv, eps)
    np.testing.assert_allclose(std, [[2.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(z, [[[2.5, 1.0]], [[-0.5, -1.0]]], rtol=1e-15)


def test_bernoulli_ll_against_x_log_p_at_moderate_logits():
    rng = np.random.default_rng(2)
    x, out = rng.random((3, 5)), rng.uniform(-5, 5, (2, 3, 5))
    p = 1.0 / (1.0 + np.exp(-out))
    hand = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=-1)
    np.testing.assert_allclose(ref.bernoulli_ll_fwd(x, out)[0], hand, rtol=1e-12)


def test_bernoulli_ll_is_stable_at_extreme_logits():
    x = np.array([[0.0, 1.0, 0.0, 1.0]])
    out = np.array([[[-1000.0, 1000.0, 1000.0, -1000.0]]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ll = ref.bernoulli_ll_fwd(x, out)[0]
    np.testing.assert_allclose(ll, [[-2000.0]], rtol=1e-15)


def test_bernoulli_backward_sigmoid_from_the_shared_exp():
    """The backward's sigmoid, from the forward's e = exp(-|out|), is 1 / (1 + exp(-out)) at
    moderate logits and exact 0 / 1 limits at extreme ones, without overflow."""
    out = np.array([[[-30.0, -2.5, -1e-3, 0.0, 1e-3, 2.5, 30.0]]])
    x = np.full((1, 7), 0.25)
    ll, e = ref.bernoulli_ll_fwd(x, out)
    np.testing.assert_array_equal(e, np.exp(-np.abs(out)))
    dout = ref.bernoulli_ll_bwd(np.ones((1, 1)), x, out, e)
    np.testing.assert_allclose(dout, x - 1.0 / (1.0 + np.exp(-out)), rtol=1e-15, atol=1e-17)
    big = np.array([[[-1000.0, 1000.0]]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        _, e_big = ref.bernoulli_ll_fwd(np.zeros((1, 2)), big)
        d_big = ref.bernoulli_ll_bwd(np.ones((1, 1)), np.zeros((1, 2)), big, e_big)
    np.testing.assert_array_equal(d_big, [[[-0.0, -1.0]]])


def test_gaussian_ll_against_the_normal_log_density():
    rng = np.random.default_rng(3)
    x, out, lv = rng.random((2, 4)), rng.standard_normal((3, 2, 4)), rng.standard_normal(4)
    var = np.exp(lv)
    hand = [[math.fsum(-0.5 * (x[b, i] - out[k, b, i]) ** 2 / var[i] - 0.5 * math.log(2 * math.pi * var[i])
                       for i in range(4)) for b in range(2)] for k in range(3)]
    np.testing.assert_allclose(ref.gaussian_ll_fwd(x, out, lv), hand, rtol=1e-13)


def test_logsumexp_and_softmax_against_math_on_small_arrays():
    a = np.array([[0.5, -1.0, 3.0], [2.0, -1.0, -2.0], [-0.25, -1.0, 0.0]])
    hand = [math.log(math.fsum(math.exp(a[k, b]) for k in range(3))) for b in range(3)]
    np.testing.assert_allclose(ref.logsumexp(a), hand, rtol=1e-15)
    w = ref.softmax(a)
    np.testing.assert_allclose(w, np.exp(a) / np.exp(a).sum(axis=0), rtol=1e-14)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-15)


def test_logsumexp_guards_minus_inf_and_large_values():
    a = np.array([[-np.inf, -np.inf, 1000.0, -1000.0],
                  [-np.inf, 0.0, 1000.0, -1000.0]])
    with np.errstate(divide="ignore"):  # log(0) for the all -inf column is the intended -inf
        out = ref.logsumexp(a)
        w = ref.softmax(a[:, 1:])
    assert out[0] == -np.inf
    np.testing.assert_allclose(out[1:], [0.0, 1000.0 + math.log(2), -1000.0 + math.log(2)], rtol=1e-15)
    assert not np.isnan(out).any()
    with np.errstate(invalid="ignore"):
        assert np.isnan(ref.softmax(np.full((2, 1), -np.inf))).all()  # no weights: 0/0, by design
    # w = exp(a - lse): a - lse loses |a| * eps to rounding (lse = 1000.69... has ulp 1.1e-13)
    np.testing.assert_allclose(w, [[0.0, 0.5, 0.5], [1.0, 0.5, 0.5]], rtol=1000 * 2.0**-52 * 2)


# ---------------------------------------------------------------- optimizer steps: hand values
def test_sgd_step_by_hand():
    p, g, vel = np.array([1.0, -2.0]), np.array([0.5, 1.0]), np.zeros(2)
    ref.sgd_step(p, g, vel, 0.1, 0.9)
    np.testing.assert_allclose(vel, [0.5, 1.0], rtol=1e-15)
    np.testing.assert_allclose(p, [0.95, -2.1], rtol=1e-15)
    ref.sgd_step(p, g, vel, 0.1, 0.9)  # velocity = 0.9 * 0.5 + 0.5 = 0.95
    np.testing.assert_allclose(vel, [0.95, 1.9], rtol=1e-15)
    np.testing.assert_allclose(p, [0.855, -2.29], rtol=1e-15)


def test_adam_first_steps_by_hand():
    p, g, m, v = np.array([1.0, 1.0]), np.array([0.5, -2.0]), np.zeros(2), np.zeros(2)
    ref.adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 1)
    np.testing.assert_allclose(m, [0.05, -0.2], rtol=1e-15)
    np.testing.assert_allclose(v, [0.00025, 0.004], rtol=1e-13)
    # t = 1: mhat = g, vhat = g^2, so the step is lr * g / (|g| + eps)
    np.testing.assert_allclose(p, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), 1.0 + 0.1 * 2.0 / (2.0 + 1e-8)], rtol=1e-14)
    ref.adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 2)  # same g: mhat = g, vhat = g^2 again
    np.testing.assert_allclose(p, [1.0 - 2 * 0.1 * 0.5 / (0.5 + 1e-8), 1.0 + 2 * 0.1 * 2.0 / (2.0 + 1e-8)],
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_and_sgd_flush_a_decayed_state_to_zero(dtype):
    """A state whose gradient has become 0 decays by beta each step; once it would be subnormal
    it is 0 (and stays 0, and the parameter no longer moves), while a normal state is kept."""
    tiny = np.finfo(dtype).tiny
    p = np.array([1.0, 1.0, 1.0], dtype)
    g = np.array([0.0, 0.0, 1.0], dtype)
    m = np.array([tiny * 1.05, tiny * 2.0, 0.5], dtype)   # 0.9 * 1.05 tiny < tiny: flushed
    v = np.array([tiny * 1.0005, tiny * 0.5e6, 0.5], dtype)
    ref.adam_step(p, g, m, v, 0.1, 0.9, 0.999, 1e-8, 3)
    assert m[0] == 0.0 and np.signbit(m[0]) == False  # noqa: E712  (+0, not -0)
    assert v[0] == 0.0
    assert m[1] == dtype(0.9) * dtype(tiny * 2.0) and m[1] >= tiny   # normal: kept as computed
    assert v[1] == dtype(0.999) * dtype(tiny * 0.5e6)
    assert p[0] == 1.0     # zero state: no move at all
    vel = np.array([tiny * 1.5, -tiny * 1.5, np.nan], dtype)
    ref.sgd_step(np.ones(3, dtype), np.zeros(3, dtype), vel, 0.1, 0.5)
    assert vel[0] == 0.0 and vel[1] == 0.0 and np.isnan(vel[2])     # NaN is not hidden


def test_adam_update_equals_the_bias_corrected_form():
    """(lr / c1) m / (sqrt(v) / sqrt(c2) + eps) is the textbook lr mhat / (sqrt(vhat) + eps)."""
    rng = np.random.default_rng(3)
    p0, g = rng.standard_normal(50), rng.standard_normal(50)
    m0, v0 = rng.standard_normal(50) * 0.1, rng.random(50) * 0.1
    p, m, v = p0.copy(), m0.copy(), v0.copy()
    ref.adam_step(p, g, m, v, 0.01, 0.8, 0.99, 1e-3, 7)
    m_t = 0.8 * m0 + 0.2 * g
    v_t = 0.99 * v0 + 0.01 * g * g
    textbook = p0 - 0.01 * (m_t / (1 - 0.8**7)) / (np.sqrt(v_t / (1 - 0.99**7)) + 1e-3)
    np.testing.assert_allclose(p, textbook, rtol=1e-14, atol=1e-15)


def test_adagrad_step_by_hand():
    p, g, s = np.array([1.0, 0.0]), np.array([3.0, -4.0]), np.zeros(2)
    ref.adagrad_step(p, g, s, 0.5, 1e-8)
    np.testing.assert_allclose(s, [9.0, 16.0], rtol=1e-15)
    np.testing.assert_allclose(p, [1.0 - 0.5 * 3.0 / (3.0 + 1e-8), 0.5 * 4.0 / (4.0 + 1e-8)], rtol=1e-14)
    ref.adagrad_step(p, g, s, 0.5, 1e-8)  # s = 2 g^2: step lr * g / (sqrt(2) |g|)
    np.testing.assert_allclose(p[0], 1.0 - 0.5 * 3 / (3 + 1e-8) - 0.5 * 3 / (math.sqrt(18) + 1e-8), rtol=1e-14)


# ---------------------------------------------------------------- backwards: finite differences
DIMS = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.just(1), st.integers(1, 4))


def _upstream(rng, outs):
    return tuple(rng.standard_normal(o.shape) for o in outs)


@pytest.mark.parametrize("act_name,act", sorted(ACTIVATION_CODES.items()))
@given(dims=DIMS, seed=SEEDS)
def test_bias_act_bwd_is_the_vjp_of_bias_act_fwd(act_name, act, dims, seed):
    rng = np.random.default_rng(seed)
    z, b, _ = make_args("bias_act_fwd", rng, F64, dims, act=act)  # |z + b| >= 0.05 for kinked ones
    h, y = ref.bias_act_fwd(z, b, act)
    dy = rng.standard_normal(y.shape)
    dh, db = ref.bias_act_bwd(dy, h, y, act)
    fy = lambda z_, b_: ref.bias_act_fwd(z_, b_, act)[1]
    assert_gradient_close(dh, numerical_vjp(fy, [z, b], [dy], 0), f"dz ({act_name})")
    assert_gradient_close(db, numerical_vjp(fy, [z, b], [dy], 1), f"db ({act_name})")


@given(dims=DIMS, seed=SEEDS)
def test_reparam_bwd_is_the_vjp_of_reparam_fwd(dims, seed):
    rng = np.random.default_rng(seed)
    mu, lv, eps = make_args("reparam_fwd", rng, F64, dims)
    z, std = ref.reparam_fwd(mu, lv, eps)
    dz = rng.standard_normal(z.shape)
    dmu, dlv = ref.reparam_bwd(dz, eps, std)
    fz = lambda m, l: ref.reparam_fwd(m, l, eps)[0]
    assert_gradient_close(dmu, numerical_vjp(fz, [mu, lv], [dz], 0), "dmu")
    assert_gradient_close(dlv, numerical_vjp(fz, [mu, lv], [dz], 1), "dlogvar")


@given(dims=DIMS, seed=SEEDS)
def test_kl_bwd_is_the_vjp_of_kl_fwd(dims, seed):
    rng = np.random.default_rng(seed)
    dkl, mu, lv = make_args("kl_bwd", rng, F64, dims)
    dmu, dlv = ref.kl_bwd(dkl, mu, lv)
    assert_gradient_close(dmu, numerical_vjp(ref.kl_fwd, [mu, lv], [dkl], 0), "dmu")
    assert_gradient_close(dlv, numerical_vjp(ref.kl_fwd, [mu, lv], [dkl], 1), "dlogvar")


@given(dims=DIMS, seed=SEEDS)
def test_bernoulli_ll_bwd_is_the_vjp_of_bernoulli_ll_fwd(dims, seed):
    rng = np.random.default_rng(seed)
    dll, x, out, e = make_args("bernoulli_ll_bwd", rng, F64, dims)
    dout = ref.bernoulli_ll_bwd(dll, x, out, e)
    ll_only = lambda x, out: ref.bernoulli_ll_fwd(x, out)[0]  # noqa: E731
    assert_gradient_close(dout, numerical_vjp(ll_only, [x, out], [dll], 1), "dout")


@given(dims=DIMS, seed=SEEDS)
def test_gaussian_ll_bwd_is_the_vjp_of_gaussian_ll_fwd(dims, seed):
    rng = np.random.default_rng(seed)
    dll, x, out, lv = make_args("gaussian_ll_bwd", rng, F64, dims)
    dout, dlv = ref.gaussian_ll_bwd(dll, x, out, lv)
    assert_gradient_close(dout, numerical_vjp(ref.gaussian_ll_fwd, [x, out, lv], [dll], 1), "dout")
    assert_gradient_close(dlv, numerical_vjp(ref.gaussian_ll_fwd, [x, out, lv], [dll], 2), "dlogvar")


@given(k=st.integers(1, 4), b=st.integers(1, 3), seed=SEEDS)
def test_softmax_is_the_gradient_of_logsumexp(k, b, seed):
    rng = np.random.default_rng(seed)
    a, dl = rng.standard_normal((k, b)) * 3.0, rng.standard_normal(b)
    assert_gradient_close(ref.softmax(a) * dl, numerical_vjp(ref.logsumexp, [a], [dl], 0), "da")


@given(dims=DIMS, seed=SEEDS)
def test_matmul_gradients_are_the_transposed_products(dims, seed):
    """dA = dC @ B.T = matmul_bt(dC, B) and dB = A.T @ dC = matmul_at(A, dC) for C = A @ B."""
    rng = np.random.default_rng(seed)
    a, b = make_args("matmul", rng, F64, dims)
    dc = rng.standard_normal((a.shape[0], b.shape[1]))
    assert_gradient_close(ref.matmul_bt(dc, b), numerical_vjp(ref.matmul, [a, b], [dc], 0), "da")
    assert_gradient_close(ref.matmul_at(a, dc), numerical_vjp(ref.matmul, [a, b], [dc], 1), "db")


# ---------------------------------------------------------------- dtype preservation
@pytest.mark.parametrize("name", ARRAY_KERNELS)
def test_every_reference_kernel_keeps_float32(name):
    rng = np.random.default_rng(4)
    for _, act in (sorted(ACTIVATION_CODES.items()) if name.startswith("bias_act") else [(None, 0)]):
        args = make_args(name, rng, np.float32, (2, 3, 4, 5, 6), act=act)
        for out in run_kernel(getattr(ref, name), name, args):
            expected = np.int64 if name == "vq_assign" else np.float32  # (row numbers)
            assert out.dtype == expected, f"{name} (act {act}) returned {out.dtype}"


@pytest.mark.parametrize("name", ARRAY_KERNELS)
def test_float32_reference_agrees_with_float64_reference(name):
    """Float32 is checked against float64 (finite differences cannot check float32:
    its best step still leaves ~1e-3 error)."""
    for _, act in (sorted(ACTIVATION_CODES.items()) if name.startswith("bias_act") else [(None, 0)]):
        args64 = make_args(name, np.random.default_rng(9), np.float64, (2, 3, 4, 5, 6), act=act)
        args32 = tuple(a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                       for a in args64)
        out32 = run_kernel(getattr(ref, name), name, args32)
        out64 = tuple(o.astype(np.float32) if o.dtype.kind == "f" else o
                      for o in run_kernel(getattr(ref, name), name, args64))
        assert_matches_reference(name, args64, out32, out64, np.float32)


# ---------------------------------------------------------------- glue kernels
def test_glue_kernels_add_check_and_copy():
    a, b = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    np.testing.assert_array_equal(ref.add(a, b), a + 1.0)
    assert ref.to_device(a) is a and ref.to_host(a) is a
    dst = np.zeros_like(a)
    assert ref.copyto(dst, a) is None
    np.testing.assert_array_equal(dst, a)
    assert ref.all_finite(a) is True
    for bad in (np.nan, np.inf, -np.inf):
        c = a.astype(np.float32)
        c[1, 2] = bad
        assert ref.all_finite(c) is False
