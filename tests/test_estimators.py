"""Tests of scratchvae.estimators: the reparameterization and score-function estimators of the
gradient of E_q[log p(x|z)] with respect to (mu, logvar).

- f'(z) from the decoder's backward and the reparameterization estimator (for fixed eps) agree
  with finite differences.
- Unbiasedness: the means of many draws agree with the exact gradient within Z_BOUND Monte Carlo
  standard errors, for a linear-Gaussian decoder (closed form) and a tanh/Bernoulli decoder with a
  1-D latent (finite differences of a Gauss-Hermite expectation computed here, independently).
  A deliberately wrong estimator fails the same check, so the check has power.
- The reparameterization estimator has a much lower variance on a typical model, and both
  variances fall with K.
"""
import math

import numpy as np
import pytest

import scratchvae as sv
from scratchvae import estimators as es
from scratchvae.gradcheck import check_gradients
from tests import reference as ref

Z_BOUND = 4.5


def linear_gaussian(d=2, D=5, s2=0.5, seed=0):
    m = sv.VAE(D, hidden_dims=(), latent_dim=d, activation="identity", likelihood="gaussian",
               output_var=s2, seed=seed)
    m.params["dec.b_out"][:] = 0.3 * np.random.default_rng(seed).standard_normal(D)
    return m


def linear_gaussian_gradient(m, x, mu, logvar):
    """Closed form: E_q[log p(x|z)] = -1/2 sum_i [((x - mu W - b)_i^2 + sum_j var_j W_ji^2) / s2
    + log(2 pi s2)], so dR/dmu = (x - mu W - b) W^T / s2 and
    dR/dlogvar_j = -var_j sum_i W_ji^2 / (2 s2)."""
    W, b, s2 = m.params["dec.W_out"], m.params["dec.b_out"], m.output_var
    dmu = (x - mu @ W - b) @ W.T / s2
    dlogvar = -0.5 * np.exp(logvar) * (W ** 2).sum(axis=1)[None, :] / s2
    return dmu, dlogvar


def tanh_bernoulli_1d(seed=1):
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=1, activation="tanh", seed=seed)
    m.params["dec.W0"] *= 2.0
    return m


def gauss_hermite_gradient(m, x, mu, logvar, n=80, h=1e-5):
    """Finite differences of E_q[f] computed with numpy's Gauss-Hermite nodes and the decoder of
    tests/reference.py (latent_dim 1): independent of scratchvae.estimators."""
    t, w = np.polynomial.hermite.hermgauss(n)

    def expectation(mu_, lv_):
        z = mu_[None] + np.exp(lv_ / 2)[None] * math.sqrt(2) * t[:, None, None]    # (n, B, 1)
        f = np.stack([ref.bernoulli_loglik(x, ref.decoder(m.params, z[i], m.activation)[0])
                      for i in range(n)])
        return w @ f / math.sqrt(math.pi)

    dmu = (expectation(mu + h, logvar) - expectation(mu - h, logvar)) / (2 * h)
    dlv = (expectation(mu, logvar + h) - expectation(mu, logvar - h)) / (2 * h)
    return dmu[:, None], dlv[:, None]


def z_scores(per_sample, exact):
    """(mean - exact) / (standard error of the mean) per coordinate; per_sample (N, B, d)."""
    n = per_sample.shape[0]
    return (per_sample.mean(axis=0) - exact) / (per_sample.std(axis=0, ddof=1) / math.sqrt(n))


# ====================================================================== f'(z) and fixed-eps checks
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", "learned")])
def test_grad_z_matches_finite_differences(likelihood, output_var):
    m = sv.VAE(6, hidden_dims=(5, 4), latent_dim=2, activation="tanh", likelihood=likelihood,
               output_var=output_var, seed=2)
    rng = np.random.default_rng(3)
    x = ((rng.random((3, 6)) < 0.5).astype(np.float64) if likelihood == "bernoulli"
         else rng.standard_normal((3, 6)))
    z = rng.standard_normal((4, 3, 2))
    ll, dz = es.loglik_and_grad_z(m, x, z)
    outs = [ref.decoder(m.params, z[k], "tanh")[0] for k in range(4)]
    want = np.stack([ref.bernoulli_loglik(x, o) if likelihood == "bernoulli"
                     else ref.gaussian_loglik(x, o, m.params["dec.logvar"]) for o in outs])
    np.testing.assert_allclose(ll, want, rtol=1e-12)
    np.testing.assert_allclose(es.loglik(m, x, z), want, rtol=1e-12)
    r = rng.standard_normal((4, 3))                # random upstream weights: checks every dz_kb
    rep = check_gradients(lambda p: float((r * es.loglik(m, x, p["z"])).sum()), {"z": z.copy()},
                          {"z": r[..., None] * dz}, n_directions=2)
    assert rep.passed, str(rep)


def test_reparam_estimator_is_the_exact_derivative_for_fixed_eps():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=4)
    rng = np.random.default_rng(5)
    x = (rng.random((3, 6)) < 0.5).astype(np.float64)
    mu, logvar = rng.standard_normal((3, 2)), 0.3 * rng.standard_normal((3, 2))
    eps = rng.standard_normal((5, 3, 2))
    g = es.reparam_gradient(m, x, mu, logvar, eps)
    r = rng.standard_normal(3)

    def mc_objective(p):        # sum_b r_b (1/K) sum_k f(mu_b + std_b eps_kb)
        z = p["mu"] + np.exp(p["logvar"] / 2) * eps
        return float(r @ es.loglik(m, x, z).mean(axis=0))

    rep = check_gradients(mc_objective, {"mu": mu.copy(), "logvar": logvar.copy()},
                          {"mu": r[:, None] * g.dmu, "logvar": r[:, None] * g.dlogvar})
    assert rep.passed, str(rep)
    per = es.reparam_gradient(m, x, mu, logvar, eps, per_sample=True)
    assert per.dmu.shape == (5, 3, 2)
    np.testing.assert_allclose(per.dmu.mean(axis=0), g.dmu, rtol=1e-13)


def test_score_function_per_sample_terms():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=6)
    rng = np.random.default_rng(7)
    x = (rng.random((3, 6)) < 0.5).astype(np.float64)
    mu, logvar = rng.standard_normal((3, 2)), 0.3 * rng.standard_normal((3, 2))
    eps = rng.standard_normal((4, 3, 2))
    per = es.score_function_gradient(m, x, mu, logvar, eps, per_sample=True)
    z = mu + np.exp(logvar / 2) * eps
    f = np.stack([ref.bernoulli_loglik(x, ref.decoder(m.params, z[k], "tanh")[0])
                  for k in range(4)])
    var = np.exp(logvar)
    # f(z) times the score d log q(z|x) / d(mu, logvar), written with z (not eps)
    np.testing.assert_allclose(per.dmu, f[..., None] * (z - mu) / var, rtol=1e-12)
    np.testing.assert_allclose(per.dlogvar, f[..., None] * 0.5 * ((z - mu) ** 2 / var - 1),
                               rtol=1e-11, atol=1e-12)
    g = es.score_function_gradient(m, x, mu, logvar, eps)
    np.testing.assert_allclose(g.dmu, per.dmu.mean(axis=0), rtol=1e-13)


# ====================================================================== unbiasedness
def linear_gaussian_case(rng):
    m = linear_gaussian()
    x = rng.standard_normal((3, 5))
    mu, logvar = rng.standard_normal((3, 2)), 0.5 * rng.standard_normal((3, 2))
    return m, x, mu, logvar, linear_gaussian_gradient(m, x, mu, logvar)


def tanh_bernoulli_case(rng):
    m = tanh_bernoulli_1d()
    x = (rng.random((4, 6)) < 0.5).astype(np.float64)
    mu, logvar = rng.standard_normal((4, 1)), 0.5 * rng.standard_normal((4, 1))
    return m, x, mu, logvar, gauss_hermite_gradient(m, x, mu, logvar)


@pytest.mark.parametrize("case, seed", [(linear_gaussian_case, 8), (tanh_bernoulli_case, 9)],
                         ids=["linear_gaussian", "tanh_bernoulli"])
def test_both_estimators_are_unbiased(case, seed):
    """Per-sample terms of both estimators against the exact gradient (closed form for the
    linear-Gaussian decoder, Gauss-Hermite for the tanh-Bernoulli one), as z-scores."""
    rng = np.random.default_rng(seed)
    m, x, mu, logvar, (dmu, dlogvar) = case(rng)
    eps = rng.standard_normal((40000,) + mu.shape)
    for fn in (es.reparam_gradient, es.score_function_gradient):
        per = fn(m, x, mu, logvar, eps, per_sample=True)
        for got, want, name in ((per.dmu, dmu, "dmu"), (per.dlogvar, dlogvar, "dlogvar")):
            z = z_scores(got, want)
            assert np.abs(z).max() < Z_BOUND, (fn.__name__, name, z)


def test_the_unbiasedness_check_catches_a_wrong_estimator():
    m = tanh_bernoulli_1d()
    rng = np.random.default_rng(9)
    x = (rng.random((4, 6)) < 0.5).astype(np.float64)
    mu, logvar = rng.standard_normal((4, 1)), 0.5 * rng.standard_normal((4, 1))
    _, dlogvar = gauss_hermite_gradient(m, x, mu, logvar)
    eps = rng.standard_normal((40000, 4, 1))
    per = es.reparam_gradient(m, x, mu, logvar, eps, per_sample=True)
    # a common slip: dz/dlogvar = eps * std (forgetting the 1/2 of std = exp(logvar / 2))
    assert np.abs(z_scores(2.0 * per.dlogvar, dlogvar)).max() > 10 * Z_BOUND
    # the score of logvar without its "- 1" (the normaliser's derivative): f eps^2 / 2
    per = es.score_function_gradient(m, x, mu, logvar, eps, per_sample=True)
    f = es.loglik(m, x, mu + np.exp(logvar / 2) * eps)[..., None]
    assert np.abs(z_scores(per.dlogvar + 0.5 * f, dlogvar)).max() > 10 * Z_BOUND


def test_gauss_hermite_reference_in_the_package():
    m = linear_gaussian()
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 5))
    mu, logvar = rng.standard_normal((3, 2)), 0.5 * rng.standard_normal((3, 2))
    W, b, s2 = m.params["dec.W_out"], m.params["dec.b_out"], m.output_var
    recon = -0.5 * ((((x - mu @ W - b) ** 2).sum(1) + (np.exp(logvar) @ W ** 2).sum(1)) / s2
                    + 5 * np.log(2 * np.pi * s2))
    np.testing.assert_allclose(es.expected_loglik(m, x, mu, logvar, n_nodes=5), recon, rtol=1e-12)
    g = es.exact_gradient(m, x, mu, logvar, n_nodes=5)
    dmu, dlogvar = linear_gaussian_gradient(m, x, mu, logvar)
    np.testing.assert_allclose(g.dmu, dmu, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(g.dlogvar, dlogvar, rtol=1e-7, atol=1e-8)
    # and on the nonlinear 1-D model against the test's own Gauss-Hermite
    m = tanh_bernoulli_1d()
    xb = (rng.random((3, 6)) < 0.5).astype(np.float64)
    mu, logvar = rng.standard_normal((3, 1)), 0.5 * rng.standard_normal((3, 1))
    g = es.exact_gradient(m, xb, mu, logvar, n_nodes=80)
    want = gauss_hermite_gradient(m, xb, mu, logvar)
    np.testing.assert_allclose(g.dmu, want[0], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(g.dlogvar, want[1], rtol=1e-7, atol=1e-8)


# ====================================================================== the variance study
@pytest.fixture(scope="module")
def study():
    m = sv.VAE(16, hidden_dims=(8,), latent_dim=2, activation="tanh", seed=11)
    x = (np.random.default_rng(12).random((4, 16)) < 0.3).astype(np.float64)
    return m, x, es.estimator_variance(m, x, ks=(1, 10, 100), n_repeats=100,
                                       rng=np.random.default_rng(13))


def test_reparameterization_has_lower_variance_on_a_typical_model(study):
    m, x, st = study
    rep, score = st.variance["reparameterization"], st.variance["score function"]
    assert rep.shape == score.shape == (3,)
    assert np.all(score > 10 * rep), (rep, score)


def test_variance_falls_with_k(study):
    m, x, st = study
    for name, v in st.variance.items():
        assert v[0] > v[1] > v[2], (name, v)
        # 1/K in expectation: ratios of 10; with 100 repeats over 16 coordinates the ratios of
        # the estimated variances scatter by about +-25 % (8.6 to 12.2 over six seeds)
        assert 6 < v[0] / v[1] < 16 and 6 < v[1] / v[2] < 16, (name, v)


def test_study_means_agree_with_the_exact_gradient(study):
    m, x, st = study
    exact = es.exact_gradient(m, x, st.mu, st.logvar, n_nodes=40)
    for name in es.ESTIMATORS:
        for part in ("dmu", "dlogvar"):
            err = getattr(st.mean[name], part) - getattr(exact, part)
            z = err / getattr(st.stderr[name], part)
            assert np.abs(z).max() < Z_BOUND, (name, part, z)


def test_study_keeps_float32():
    m = sv.VAE(8, hidden_dims=(4,), latent_dim=2, activation="tanh", seed=14, dtype="float32")
    x = (np.random.default_rng(15).random((2, 8)) < 0.5).astype(np.float32)
    st = es.estimator_variance(m, x, ks=(1, 3), n_repeats=5, rng=0)
    assert st.mean["reparameterization"].dmu.dtype == np.float32
    assert st.variance["score function"].dtype == np.float32
    g = es.reparam_gradient(m, x, st.mu, st.logvar, np.zeros((2, 2, 2), np.float32))
    assert g.dmu.dtype == g.dlogvar.dtype == np.float32


# ====================================================================== bad input
def test_bad_input_names_the_argument():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=16)
    x = (np.random.default_rng(17).random((3, 6)) < 0.5).astype(np.float64)
    mu, lv = np.zeros((3, 2)), np.zeros((3, 2))
    cases = [
        (lambda: es.estimator_variance(m, x, ks=(1, 0)), r"ks\[1\]"),
        (lambda: es.estimator_variance(m, x, ks=()), "ks"),
        (lambda: es.estimator_variance(m, x, n_repeats=1), "n_repeats"),
        (lambda: es.estimator_variance(m, x, mu=mu), "logvar"),
        (lambda: es.reparam_gradient(m, x, mu, lv, np.zeros((2, 3, 3))), "eps"),
        (lambda: es.score_function_gradient(m, x, mu[:2], lv, np.zeros((2, 3, 2))), "mu"),
        (lambda: es.reparam_gradient(m, x, mu, lv.astype(np.float32), np.zeros((2, 3, 2))),
         "logvar"),
        (lambda: es.expected_loglik(m, x, mu, lv, n_nodes=300), "n_nodes"),
        (lambda: es.exact_gradient(m.astype("float32"), x.astype(np.float32), mu.astype(np.float32),
                                   lv.astype(np.float32)), "float64"),
        (lambda: es.loglik_and_grad_z(m, x, np.zeros((3, 2))), "z"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
