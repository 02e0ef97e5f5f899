"""Objectives: negative ELBO (beta), free bits (away from the kink) and the negative IWAE bound,
values against direct formulas and backwards against central finite differences in float64."""
import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st

from scratchvae.distributions import gaussian_kl_backward, gaussian_kl_forward, gaussian_kl_per_dim
from scratchvae.kernels import get_kernels
from scratchvae.losses import (free_bits_kl_backward, free_bits_kl_forward, neg_elbo_backward,
                               neg_elbo_forward, neg_iwae_backward, neg_iwae_forward)
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP, RTOL
from tests.strategies import SEEDS, finite

K = get_kernels("numpy")
dims = st.integers(1, 5)


@given(seed=SEEDS, K_=dims, B=dims, beta=finite(0.0, 2.0))
def test_neg_elbo(seed, K_, B, beta):
    rng = np.random.default_rng(seed)
    ll, kl = -5 * rng.random((K_, B)), 3 * rng.random(B)
    loss, per_example = neg_elbo_forward(ll, kl, beta)
    expect = [-np.mean(ll[:, b]) + beta * kl[b] for b in range(B)]
    np.testing.assert_allclose(per_example, expect, rtol=RTOL[ll.dtype], atol=1e-14)
    np.testing.assert_allclose(loss, np.mean(expect), rtol=RTOL[ll.dtype], atol=1e-14)
    dll, dkl = neg_elbo_backward(ll.shape, beta, ll.dtype)
    f = lambda ll, kl: neg_elbo_forward(ll, kl, beta)[0]      # noqa: E731
    for key, g in (("ll", dll), ("kl", dkl)):
        num = ref.numerical_vjp(f, dict(ll=ll, kl=kl), key, 1.0, FD_STEP)
        ref.assert_gradient_close(g, num, f"neg_elbo d{key}", FD_RTOL)


def test_neg_elbo_keeps_dtype(dtype):
    ll, kl = np.full((2, 3), -1.0, dtype), np.ones(3, dtype)
    loss, per_example = neg_elbo_forward(ll, kl, 0.5)
    dll, dkl = neg_elbo_backward(ll.shape, 0.5, dtype)
    assert per_example.dtype == dtype and dll.dtype == dtype and dkl.dtype == dtype
    np.testing.assert_array_equal(per_example, np.full(3, 1.5, dtype))
    np.testing.assert_array_equal(dll, np.full((2, 3), -1.0 / 6, dtype))
    np.testing.assert_array_equal(dkl, np.full(3, 0.5 / 3, dtype))


def free_bits_term(mu, logvar, free_bits):
    return free_bits_kl_forward(gaussian_kl_per_dim(mu, logvar), free_bits)[0]


@given(seed=SEEDS, B=dims, d=dims, free_bits=finite(0.05, 2.0))
def test_free_bits_value_and_gradient_away_from_the_kink(seed, B, d, free_bits):
    rng = np.random.default_rng(seed)
    mu, logvar = rng.uniform(-2, 2, (B, d)), rng.uniform(-2, 1, (B, d))
    kl_bj = ref.kl_standard_normal(mu[..., None], logvar[..., None])       # (B, d) per dimension
    kl_bar = kl_bj.mean(axis=0)
    assume(np.abs(kl_bar - free_bits).min() > 1e-3)                 # away from max()'s kink
    term, mask = free_bits_kl_forward(gaussian_kl_per_dim(mu, logvar), free_bits)
    np.testing.assert_allclose(term, np.maximum(kl_bar, free_bits).sum(), rtol=1e-12)
    np.testing.assert_array_equal(mask, (kl_bar > free_bits).astype(float))
    # the model's composition: the plain KL gradient with upstream 1/B, masked per dimension
    dmu, dlogvar = gaussian_kl_backward(np.full(B, 1.0 / B), gaussian_kl_forward(mu, logvar, k=K)[1], k=K)
    dmu, dlogvar = free_bits_kl_backward(dmu, mask), free_bits_kl_backward(dlogvar, mask)
    f = lambda mu, logvar: free_bits_term(mu, logvar, free_bits)       # noqa: E731
    for key, g in (("mu", dmu), ("logvar", dlogvar)):
        num = ref.numerical_vjp(f, dict(mu=mu, logvar=logvar), key, 1.0, FD_STEP)
        ref.assert_gradient_close(g, num, f"free bits d{key}", FD_RTOL)


def test_free_bits_zero_is_the_mean_kl():
    rng = np.random.default_rng(3)
    mu, logvar = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    term, mask = free_bits_kl_forward(gaussian_kl_per_dim(mu, logvar), 0.0)
    np.testing.assert_allclose(term, ref.kl_standard_normal(mu, logvar).mean(), rtol=1e-12)
    np.testing.assert_array_equal(mask, np.ones(3))


def test_free_bits_keeps_dtype(dtype):
    kl = np.array([[0.1, 2.0], [0.3, 4.0]], dtype)
    term, mask = free_bits_kl_forward(kl, 0.5)
    assert mask.dtype == dtype and free_bits_kl_backward(kl, mask).dtype == dtype
    np.testing.assert_array_equal(mask, np.array([0.0, 1.0], dtype))
    np.testing.assert_allclose(term, 0.5 + 3.0, rtol=RTOL[dtype])


@given(seed=SEEDS, K_=dims, B=dims, scale=st.sampled_from([1.0, 20.0]))
def test_neg_iwae(seed, K_, B, scale):
    rng = np.random.default_rng(seed)
    logw = scale * rng.standard_normal((K_, B)) - 10.0
    loss, lk, cache = neg_iwae_forward(logw, k=K)
    expect = ref.logsumexp(logw, axis=0) - np.log(K_)
    np.testing.assert_allclose(lk, expect, rtol=RTOL[logw.dtype], err_msg="L_K")
    np.testing.assert_allclose(loss, -expect.mean(), rtol=RTOL[logw.dtype], err_msg="loss")
    assert np.all(lk <= logw.max(axis=0) + 1e-12) and np.all(lk >= logw.mean(axis=0) - 1e-12), \
        "mean(logw) <= L_K <= max(logw) (Jensen)"
    dlogw = neg_iwae_backward(cache, k=K)
    num = ref.numerical_vjp(lambda logw: neg_iwae_forward(logw, k=K)[0], dict(logw=logw), "logw",
                            1.0, FD_STEP)
    ref.assert_gradient_close(dlogw, num, "neg_iwae dlogw", FD_RTOL)


def test_neg_iwae_with_one_sample_is_the_negative_mean_log_weight(dtype):
    logw = np.array([[-3.0, -7.5, 0.25]], dtype)
    loss, lk, cache = neg_iwae_forward(logw, k=K)
    assert lk.dtype == dtype
    np.testing.assert_array_equal(lk, logw[0])
    np.testing.assert_allclose(loss, -logw.mean(), rtol=RTOL[dtype])
    np.testing.assert_allclose(neg_iwae_backward(cache, k=K), np.full((1, 3), -1.0 / 3),
                               rtol=RTOL[dtype])
