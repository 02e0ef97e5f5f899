"""Dense layers and MLPs: forward against a direct formula, every backward (da, dW, db) against
central finite differences in float64 with a random upstream gradient, dtype preservation."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scratchvae.activations import activation_code
from scratchvae.kernels import get_kernels
from scratchvae.layers import dense_backward, dense_forward, mlp_backward, mlp_forward
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP, RTOL
from tests.strategies import ACTIVATIONS, KINKED_ACTIVATIONS, SEEDS

K = get_kernels("numpy")
MARGIN = 1e-4   # min |pre-activation| for kinked activations: 100x the step


def dense_inputs(seed, n, fan_in, fan_out, dtype=np.float64):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, fan_in))
    W = rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)
    b = 0.5 * rng.standard_normal(fan_out)
    dy = rng.standard_normal((n, fan_out))
    return tuple(t.astype(dtype) for t in (a, W, b, dy))


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(seed=SEEDS, n=st.integers(1, 5), fan_in=st.integers(1, 6), fan_out=st.integers(1, 6))
def test_dense_backward_matches_finite_differences(name, seed, n, fan_in, fan_out):
    a, W, b, dy = dense_inputs(seed, n, fan_in, fan_out)
    act = activation_code(name)
    if name in KINKED_ACTIVATIONS:
        assume(np.abs(a @ W + b).min() > MARGIN)
    y, cache = dense_forward(a, W, b, act, k=K)
    da, dW, db = dense_backward(dy, cache, k=K)

    def f(a, W, b):
        return dense_forward(a, W, b, act, k=K)[0]

    inputs = dict(a=a, W=W, b=b)
    for key, g in (("a", da), ("W", dW), ("b", db)):
        assert g.shape == inputs[key].shape, key
        num = ref.numerical_vjp(f, inputs, key, dy, FD_STEP)
        ref.assert_gradient_close(g, num, f"dense[{name}] d{key}", FD_RTOL)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_dense_forward_matches_formula(name, dtype):
    a, W, b, _ = dense_inputs(3, 4, 5, 3, dtype)
    y, cache = dense_forward(a, W, b, activation_code(name), k=K)
    expect = ref.activation(name, a.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64))
    assert y.dtype == dtype and y.shape == (4, 3)
    np.testing.assert_allclose(y, expect, rtol=RTOL[dtype], atol=RTOL[dtype], err_msg=name)
    np.testing.assert_allclose(cache.h, a.astype(np.float64) @ W.astype(np.float64) + b,
                               rtol=RTOL[dtype], atol=RTOL[dtype], err_msg=f"{name} cached h")


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_dense_backward_dtype_and_no_da(name, dtype):
    a, W, b, dy = dense_inputs(4, 3, 2, 5, dtype)
    _, cache = dense_forward(a, W, b, activation_code(name), k=K)
    da, dW, db = dense_backward(dy, cache, k=K)
    assert (da.dtype, dW.dtype, db.dtype) == (dtype,) * 3, name
    da2, dW2, db2 = dense_backward(dy, cache, k=K, need_da=False)
    assert da2 is None
    np.testing.assert_array_equal(dW2, dW, err_msg=f"{name} dW")
    np.testing.assert_array_equal(db2, db, err_msg=f"{name} db")


@st.composite
def mlp_problems(draw):
    widths = [draw(st.integers(1, 6)) for _ in range(draw(st.integers(0, 3)) + 1)]
    return widths, draw(st.integers(1, 4)), draw(SEEDS), draw(st.sampled_from(ACTIVATIONS))


@given(mlp_problems())
def test_mlp_backward_matches_finite_differences(problem):
    widths, n, seed, name = problem
    act = activation_code(name)
    rng = np.random.default_rng(seed)
    inputs = {"a": rng.standard_normal((n, widths[0]))}
    for i, (fi, fo) in enumerate(zip(widths[:-1], widths[1:])):
        inputs[f"W{i}"] = rng.standard_normal((fi, fo)) / np.sqrt(fi)
        inputs[f"b{i}"] = 0.5 * rng.standard_normal(fo)
    L = len(widths) - 1
    da_up = rng.standard_normal((n, widths[-1]))

    def f(**p):
        return mlp_forward(p["a"], [(p[f"W{i}"], p[f"b{i}"]) for i in range(L)], act, k=K)[0]

    out, caches = mlp_forward(inputs["a"], [(inputs[f"W{i}"], inputs[f"b{i}"]) for i in range(L)],
                              act, k=K)
    if name in KINKED_ACTIVATIONS:
        assume(min((np.abs(c.h).min() for c in caches), default=np.inf) > MARGIN)
    assert len(caches) == L
    da, grads = mlp_backward(da_up, caches, k=K)
    analytic = {"a": da}
    for i, (dW, db) in enumerate(grads):
        analytic[f"W{i}"], analytic[f"b{i}"] = dW, db
    assert list(analytic) == list(inputs)
    for key in inputs:
        num = ref.numerical_vjp(f, inputs, key, da_up, FD_STEP)
        ref.assert_gradient_close(analytic[key], num, f"mlp[{name}] d{key}", FD_RTOL)


def test_empty_mlp_is_the_identity():
    a = np.arange(6.0).reshape(2, 3)
    out, caches = mlp_forward(a, [], activation_code("relu"), k=K)
    np.testing.assert_array_equal(out, a)
    assert caches == ()
    d = np.ones((2, 3))
    da, grads = mlp_backward(d, caches, k=K)
    np.testing.assert_array_equal(da, d)
    assert grads == []


def test_mlp_need_da_false_skips_only_the_input_gradient():
    a, W, b, _ = dense_inputs(7, 3, 4, 4)
    layers = [(W, b), (W.T.copy(), b)]
    out, caches = mlp_forward(a, layers, activation_code("tanh"), k=K)
    up = np.ones_like(out)
    da_full, g_full = mlp_backward(up, caches, k=K)
    da_none, g_none = mlp_backward(up, caches, k=K, need_da=False)
    assert da_full is not None and da_none is None
    for i, ((w1, b1), (w2, b2)) in enumerate(zip(g_full, g_none)):
        np.testing.assert_array_equal(w1, w2, err_msg=f"W{i}")
        np.testing.assert_array_equal(b1, b2, err_msg=f"b{i}")
