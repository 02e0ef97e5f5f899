"""Gaussian and Bernoulli pieces: forward values against tests/reference.py, every backward
against central finite differences in float64 (random upstream gradients, broadcasting), the
closed-form KLs against Monte Carlo, numerical stability and dtype preservation."""
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from scratchvae import distributions as dist
from scratchvae.kernels import get_kernels
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP, RTOL
from tests.strategies import SEEDS, mu_logvar

K = get_kernels("numpy")
F32 = np.dtype(np.float32)
dims = st.integers(1, 4)


def check_vjp(fun, inputs, analytic, upstream, label):
    """Every analytic gradient in ``analytic`` (keyed like ``inputs``) against the numerical VJP."""
    for key, g in analytic.items():
        assert np.shape(g) == np.shape(inputs[key]), f"{label} d{key}: shape {np.shape(g)}"
        num = ref.numerical_vjp(fun, inputs, key, upstream, FD_STEP)
        ref.assert_gradient_close(g, num, f"{label} d{key}", FD_RTOL)


# ====================================================================== reparameterization
@given(seed=SEEDS, K_=dims, B=dims, d=dims)
def test_reparameterize_backward(seed, K_, B, d):
    rng = np.random.default_rng(seed)
    mu, logvar = rng.uniform(-2, 2, (B, d)), rng.uniform(-3, 2, (B, d))
    eps, dz = rng.standard_normal((K_, B, d)), rng.standard_normal((K_, B, d))
    z, cache = dist.reparameterize_forward(mu, logvar, eps, k=K)
    np.testing.assert_allclose(z, mu + np.exp(logvar / 2) * eps, rtol=RTOL[z.dtype], atol=1e-15)
    dmu, dlogvar = dist.reparameterize_backward(dz, cache, k=K)
    check_vjp(lambda mu, logvar: dist.reparameterize_forward(mu, logvar, eps, k=K)[0],
              dict(mu=mu, logvar=logvar), dict(mu=dmu, logvar=dlogvar), dz, "reparameterize")


def test_reparameterize_dtype(dtype):
    rng = np.random.default_rng(1)
    mu, logvar = (rng.standard_normal((3, 2)).astype(dtype) for _ in range(2))
    eps = rng.standard_normal((4, 3, 2)).astype(dtype)
    z, cache = dist.reparameterize_forward(mu, logvar, eps, k=K)
    dmu, dlv = dist.reparameterize_backward(np.ones_like(z), cache, k=K)
    assert (z.shape, z.dtype, dmu.dtype, dlv.dtype) == ((4, 3, 2), dtype, dtype, dtype)


# ====================================================================== KL to N(0, I)
@given(mu_logvar(), SEEDS)
def test_gaussian_kl_forward_and_backward(ml, seed):
    mu, logvar = ml
    kl, cache = dist.gaussian_kl_forward(mu, logvar, k=K)
    np.testing.assert_allclose(kl, ref.kl_standard_normal(mu, logvar), rtol=RTOL[kl.dtype],
                               atol=1e-14, err_msg="kl")
    np.testing.assert_allclose(dist.gaussian_kl_per_dim(mu, logvar).sum(axis=1), kl,
                               rtol=RTOL[kl.dtype], atol=1e-14, err_msg="kl_per_dim")
    dkl = np.random.default_rng(seed).standard_normal(mu.shape[0])
    dmu, dlogvar = dist.gaussian_kl_backward(dkl, cache, k=K)
    check_vjp(lambda mu, logvar: dist.gaussian_kl_forward(mu, logvar, k=K)[0],
              dict(mu=mu, logvar=logvar), dict(mu=dmu, logvar=dlogvar), dkl, "gaussian_kl")


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    zero = np.zeros((2, 3))
    np.testing.assert_array_equal(dist.gaussian_kl_forward(zero, zero, k=K)[0], [0.0, 0.0])
    kl = dist.gaussian_kl_forward(np.full((1, 3), 1e-3), np.full((1, 3), -1e-3), k=K)[0]
    assert kl[0] > 0


def monte_carlo_kl(mu1, lv1, mu2, lv2, n, seed):
    """Per-row Monte Carlo KL(q1 || q2) = E_q1[log q1(z) - log q2(z)] and its standard error."""
    rng = np.random.default_rng(seed)
    z = mu1 + np.exp(lv1 / 2) * rng.standard_normal((n,) + mu1.shape)
    t = ref.log_normal(z, mu1, lv1) - ref.log_normal(z, mu2, lv2)       # (n, B)
    return t.mean(axis=0), t.std(axis=0, ddof=1) / np.sqrt(n)


def test_gaussian_kl_matches_monte_carlo():
    rng = np.random.default_rng(11)
    mu, logvar = rng.uniform(-2, 2, (5, 3)), rng.uniform(-2, 1, (5, 3))
    kl = dist.gaussian_kl_forward(mu, logvar, k=K)[0]
    mc, se = monte_carlo_kl(mu, logvar, np.zeros(3), np.zeros(3), 200_000, seed=12)
    # within 4 standard errors, and the standard error small enough that this means something
    assert np.all(np.abs(kl - mc) <= 4 * se), f"closed form {kl}, Monte Carlo {mc} +- {se}"
    assert np.all(se < 0.01 * np.maximum(kl, 1.0)), se


def test_kl_between_diagonal_gaussians_matches_monte_carlo():
    rng = np.random.default_rng(13)
    mu1, lv1, mu2, lv2 = (rng.uniform(-1.5, 1.5, (4, 3)) for _ in range(4))
    kl = dist.kl_diag_gaussians_forward(mu1, lv1, mu2, lv2)[0]
    mc, se = monte_carlo_kl(mu1, lv1, mu2, lv2, 200_000, seed=14)
    assert np.all(np.abs(kl - mc) <= 4 * se), f"closed form {kl}, Monte Carlo {mc} +- {se}"
    assert np.all(se < 0.01 * np.maximum(kl, 1.0)), se


# ====================================================================== KL between two Gaussians
@given(seed=SEEDS, B=dims, d=dims)
def test_kl_diag_gaussians_forward_and_all_four_gradients(seed, B, d):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.uniform(-2, 2, (B, d)), rng.uniform(-2, 2, (B, d))
    lv1, lv2 = rng.uniform(-2, 2, (B, d)), rng.uniform(-2, 2, (B, d))
    kl, cache = dist.kl_diag_gaussians_forward(mu1, lv1, mu2, lv2)
    np.testing.assert_allclose(kl, ref.kl_diag_gaussians(mu1, lv1, mu2, lv2), rtol=RTOL[kl.dtype],
                               atol=1e-13, err_msg="kl")
    dkl = rng.standard_normal(B)
    grads = dist.kl_diag_gaussians_backward(dkl, cache)
    inputs = dict(mu1=mu1, logvar1=lv1, mu2=mu2, logvar2=lv2)
    check_vjp(lambda **p: dist.kl_diag_gaussians_forward(**p)[0], inputs,
              dict(zip(inputs, grads)), dkl, "kl_diag_gaussians")


@given(seed=SEEDS, B=dims, d=dims, prior_shape=st.sampled_from(["d", "1d"]))
def test_kl_diag_gaussians_broadcast_prior(seed, B, d, prior_shape):
    """A shared second Gaussian, shape (d,) or (1, d): its gradients are summed over the batch."""
    rng = np.random.default_rng(seed)
    shape = (d,) if prior_shape == "d" else (1, d)
    mu1, lv1 = rng.uniform(-2, 2, (B, d)), rng.uniform(-2, 2, (B, d))
    mu2, lv2 = rng.uniform(-2, 2, shape), rng.uniform(-2, 2, shape)
    kl, cache = dist.kl_diag_gaussians_forward(mu1, lv1, mu2, lv2)
    assert kl.shape == (B,)
    np.testing.assert_allclose(kl, ref.kl_diag_gaussians(mu1, lv1, mu2, lv2), rtol=RTOL[kl.dtype],
                               atol=1e-13)
    dkl = rng.standard_normal(B)
    grads = dist.kl_diag_gaussians_backward(dkl, cache)
    inputs = dict(mu1=mu1, logvar1=lv1, mu2=mu2, logvar2=lv2)
    check_vjp(lambda **p: dist.kl_diag_gaussians_forward(**p)[0], inputs,
              dict(zip(inputs, grads)), dkl, f"kl_diag_gaussians prior {shape}")


@st.composite
def broadcast_shapes(draw, n=4):
    """A common shape (lead..., B, d) and n input shapes that broadcast to it: each input keeps
    or drops some leading axes and sets any of the rest to 1 (the last axis included)."""
    full = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    shapes = []
    for _ in range(n):
        cut = draw(st.integers(0, len(full) - 1))
        shapes.append(tuple(1 if draw(st.booleans()) else s for s in full[cut:]))
    return shapes


@given(shapes=broadcast_shapes(), seed=SEEDS)
@example(shapes=[(4, 3), (4, 1), (4, 3), (1, 1)], seed=0)
def test_kl_diag_gaussians_gradients_under_any_broadcast(shapes, seed):
    """Inputs broadcast along any axis, the last (summed) one included: each gradient is the
    broadcast gradient summed back to its input's shape, checked against finite differences."""
    rng = np.random.default_rng(seed)
    inputs = dict(zip(("mu1", "logvar1", "mu2", "logvar2"),
                      (rng.uniform(-2, 2, s) for s in shapes)))
    kl, cache = dist.kl_diag_gaussians_forward(*inputs.values())
    np.testing.assert_allclose(kl, ref.kl_diag_gaussians(*inputs.values()), rtol=RTOL[kl.dtype],
                               atol=1e-13)
    dkl = rng.standard_normal(kl.shape)
    grads = dist.kl_diag_gaussians_backward(dkl, cache)
    check_vjp(lambda **p: dist.kl_diag_gaussians_forward(**p)[0], inputs,
              dict(zip(inputs, grads)), dkl, f"kl_diag_gaussians shapes {shapes}")


@given(mu_logvar())
def test_kl_diag_gaussians_special_cases(ml):
    mu, logvar = ml
    zeros = np.zeros_like(mu)
    kl_std = dist.kl_diag_gaussians_forward(mu, logvar, zeros, zeros)[0]
    np.testing.assert_allclose(kl_std, dist.gaussian_kl_forward(mu, logvar, k=K)[0],
                               rtol=1e-12, atol=1e-13, err_msg="KL to N(0, I)")
    kl_self = dist.kl_diag_gaussians_forward(mu, logvar, mu, logvar)[0]
    np.testing.assert_allclose(kl_self, 0.0, atol=1e-14, err_msg="KL(q || q)")


def test_kl_diag_gaussians_has_no_overflow_for_large_equal_log_variances():
    lv = np.full((1, 2), 800.0)                  # exp(800) overflows float64
    mu = np.array([[1.0, -2.0]])
    kl, cache = dist.kl_diag_gaussians_forward(mu, lv, mu + 1.0, lv)
    grads = dist.kl_diag_gaussians_backward(np.ones(1), cache)
    np.testing.assert_array_equal(kl, [0.0])    # (mu1 - mu2)^2 / exp(800) underflows to 0
    assert all(np.isfinite(g).all() for g in grads)


def test_kl_diag_gaussians_dtype():
    a = np.full((2, 3), 0.3, np.float32)
    kl, cache = dist.kl_diag_gaussians_forward(a, a, 2 * a, -a)
    grads = dist.kl_diag_gaussians_backward(np.ones(2, np.float32), cache)
    assert kl.dtype == F32 and all(g.dtype == F32 for g in grads)


# ====================================================================== log-densities
@given(seed=SEEDS, K_=dims, B=dims, d=dims,
       m_shape=st.sampled_from(["full", "Bd", "d"]), lv_shape=st.sampled_from(["full", "Bd", "d", "B1"]))
def test_log_normal_with_broadcasting(seed, K_, B, d, m_shape, lv_shape):
    rng = np.random.default_rng(seed)
    shapes = {"full": (K_, B, d), "Bd": (B, d), "d": (d,), "B1": (B, 1)}
    v = rng.standard_normal((K_, B, d))
    m = rng.uniform(-1, 1, shapes[m_shape])
    logvar = rng.uniform(-2, 2, shapes[lv_shape])
    lp, cache = dist.log_normal_forward(v, m, logvar)
    assert lp.shape == (K_, B)
    np.testing.assert_allclose(lp, ref.log_normal(v, m, logvar), rtol=RTOL[lp.dtype], atol=1e-13)
    up = rng.standard_normal((K_, B))
    dv, dm, dlogvar = dist.log_normal_backward(up, cache)
    check_vjp(lambda **p: dist.log_normal_forward(**p)[0], dict(v=v, m=m, logvar=logvar),
              dict(v=dv, m=dm, logvar=dlogvar), up, f"log_normal m{m_shape} logvar{lv_shape}")


@given(seed=SEEDS, K_=dims, B=dims, d=dims)
def test_log_standard_normal(seed, K_, B, d):
    rng = np.random.default_rng(seed)
    v, up = rng.standard_normal((K_, B, d)) * 2, rng.standard_normal((K_, B))
    lp, cache = dist.log_standard_normal_forward(v)
    np.testing.assert_allclose(lp, ref.log_standard_normal(v), rtol=RTOL[lp.dtype], atol=1e-13)
    np.testing.assert_allclose(lp, ref.log_normal(v, 0.0, 0.0), rtol=RTOL[lp.dtype], atol=1e-13)
    dv = dist.log_standard_normal_backward(up, cache)
    check_vjp(lambda v: dist.log_standard_normal_forward(v)[0], dict(v=v), dict(v=dv), up,
              "log_standard_normal")


def test_log_densities_keep_float32():
    v = np.ones((2, 3, 4), np.float32)
    lp, c = dist.log_normal_forward(v, v[0] * 0.5, np.zeros(4, np.float32))
    grads = dist.log_normal_backward(np.ones((2, 3), np.float32), c)
    lps, cs = dist.log_standard_normal_forward(v)
    dv = dist.log_standard_normal_backward(np.ones((2, 3), np.float32), cs)
    assert lp.dtype == F32 and lps.dtype == F32 and dv.dtype == F32
    assert all(g.dtype == F32 for g in grads)


# ====================================================================== likelihoods
@given(seed=SEEDS, K_=dims, B=dims, D=st.integers(1, 5))
def test_bernoulli_loglik(seed, K_, B, D):
    rng = np.random.default_rng(seed)
    x = rng.random((B, D))
    x[0] = x[0] > 0.5                                  # binary and grey-level targets
    out = 3 * rng.standard_normal((K_, B, D))
    ll, cache = dist.bernoulli_loglik_forward(x, out, k=K)
    assert ll.shape == (K_, B)
    np.testing.assert_allclose(ll, ref.bernoulli_loglik(x, out), rtol=RTOL[ll.dtype], atol=1e-13)
    np.testing.assert_allclose(ll, ref.bernoulli_loglik_naive(x, ref.sigmoid(out)), rtol=1e-10,
                               atol=1e-10, err_msg="textbook x log p + (1-x) log(1-p)")
    up = rng.standard_normal((K_, B))
    dout = dist.bernoulli_loglik_backward(up, cache, k=K)
    check_vjp(lambda out: dist.bernoulli_loglik_forward(x, out, k=K)[0], dict(out=out),
              dict(out=dout), up, "bernoulli_loglik")


def test_bernoulli_loglik_is_stable_for_large_logits(dtype):
    x = np.array([[0.0, 1.0, 1.0, 0.0]], dtype)
    out = np.array([[[-100.0, 100.0, -100.0, 100.0]]], dtype)
    ll, cache = dist.bernoulli_loglik_forward(x, out, k=K)
    dout = dist.bernoulli_loglik_backward(np.ones((1, 1), dtype), cache, k=K)
    assert ll.dtype == dtype and dout.dtype == dtype
    # log p = log sigmoid(-100) ... = -(softplus(-100) + softplus(-100) + softplus(100) + softplus(100)) + 100
    np.testing.assert_allclose(ll, [[-200.0]], rtol=RTOL[dtype])
    np.testing.assert_allclose(dout, [[[0.0, 0.0, 1.0, -1.0]]], atol=RTOL[dtype])


@given(seed=SEEDS, K_=dims, B=dims, D=st.integers(1, 5))
def test_gaussian_loglik_incl_dlogvar(seed, K_, B, D):
    rng = np.random.default_rng(seed)
    x, out = rng.standard_normal((B, D)), rng.standard_normal((K_, B, D))
    logvar = rng.uniform(-1.5, 1.5, D)
    ll, cache = dist.gaussian_loglik_forward(x, out, logvar, k=K)
    np.testing.assert_allclose(ll, ref.gaussian_loglik(x, out, logvar), rtol=RTOL[ll.dtype],
                               atol=1e-13)
    up = rng.standard_normal((K_, B))
    dout, dlogvar = dist.gaussian_loglik_backward(up, cache, k=K)
    check_vjp(lambda out, logvar: dist.gaussian_loglik_forward(x, out, logvar, k=K)[0],
              dict(out=out, logvar=logvar), dict(out=dout, logvar=dlogvar), up, "gaussian_loglik")


def test_likelihoods_keep_float32():
    x = np.full((2, 3), 0.5, np.float32)
    out = np.ones((4, 2, 3), np.float32)
    up = np.ones((4, 2), np.float32)
    llb, cb = dist.bernoulli_loglik_forward(x, out, k=K)
    llg, cg = dist.gaussian_loglik_forward(x, out, np.zeros(3, np.float32), k=K)
    dob = dist.bernoulli_loglik_backward(up, cb, k=K)
    dog, dlv = dist.gaussian_loglik_backward(up, cg, k=K)
    assert {a.dtype for a in (llb, llg, dob, dog, dlv)} == {F32}


# ====================================================================== log-sum-exp
@given(seed=SEEDS, K_=st.integers(1, 5), B=dims, scale=st.sampled_from([1.0, 30.0]))
def test_logsumexp_forward_and_backward(seed, K_, B, scale):
    rng = np.random.default_rng(seed)
    a = scale * rng.standard_normal((K_, B))
    lse, cache = dist.logsumexp_forward(a, k=K)
    np.testing.assert_allclose(lse, ref.logsumexp(a), rtol=RTOL[lse.dtype], atol=1e-13)
    up = rng.standard_normal(B)
    da = dist.logsumexp_backward(up, cache, k=K)
    np.testing.assert_allclose((da / up).sum(axis=0), 1.0, rtol=1e-12, err_msg="softmax sums to 1")
    check_vjp(lambda a: dist.logsumexp_forward(a, k=K)[0], dict(a=a), dict(a=da), up, "logsumexp")


def test_logsumexp_is_stable(dtype):
    a = np.array([[1000.0, -1000.0, -np.inf], [1000.0, -1001.0, -np.inf]], dtype)
    lse, cache = dist.logsumexp_forward(a, k=K)
    assert lse.dtype == dtype
    np.testing.assert_allclose(lse[:2], [1000.0 + np.log(2.0), -1000.0 + np.log1p(np.exp(-1.0))],
                               rtol=RTOL[dtype])
    assert lse[2] == -np.inf, "all -inf must give -inf, not NaN"
    da = dist.logsumexp_backward(np.ones(3, dtype), cache, k=K)
    assert da.dtype == dtype and np.isfinite(da[:, :2]).all()
    # (the precision of these weights is the next test's)


@pytest.mark.parametrize("dtype", [np.dtype(np.float64), np.dtype(np.float32)])
def test_logsumexp_backward_is_accurate_for_large_inputs(dtype):
    """The normalised importance weights (IWAE gradient) of log weights around -1000, which
    is where a model's log p(x) lives on MNIST-sized data, to the dtype's precision."""
    a = np.array([[-1000.0, 1000.0, 480.5], [-1000.0, 1000.0, 481.25]], dtype)
    cache = dist.logsumexp_forward(a, k=K)[1]
    da = dist.logsumexp_backward(np.ones(3, dtype), cache, k=K)
    w = np.exp(a[1].astype(np.float64) - a[0])
    expect = np.stack([1.0 / (1.0 + w), w / (1.0 + w)])
    np.testing.assert_allclose(da, expect, rtol=RTOL[dtype], err_msg="softmax weights")


# ====================================================================== likelihood gradients in x
@given(seed=SEEDS, K_=dims, B=dims, D=dims, likelihood=st.sampled_from(["bernoulli", "gaussian"]))
def test_likelihood_gradient_in_x(seed, K_, B, D, likelihood):
    """The likelihoods' dx (the data path of an input gradient) against finite differences."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, (B, D))
    out = rng.standard_normal((K_, B, D))
    dll = rng.standard_normal((K_, B))
    if likelihood == "bernoulli":
        def fwd(x):
            return dist.bernoulli_loglik_forward(x, out, k=K)
        dx = dist.bernoulli_loglik_dx(dll, fwd(x)[1], k=K)
    else:
        logvar = rng.uniform(-1, 1, D)

        def fwd(x):
            return dist.gaussian_loglik_forward(x, out, logvar, k=K)
        dx = dist.gaussian_loglik_dx(dll, fwd(x)[1], k=K)
    check_vjp(lambda x: fwd(x)[0], dict(x=x), dict(x=dx), dll, f"{likelihood} loglik dx")
