"""Tests of scratchvae.evaluate: exact log-likelihood by quadrature against independent references,
the ELBO-gap identity, the importance-weighted bound and its ordering, active units, per-dimension
KL, the evaluation report, the IWAE objective, and bad input.

Independent references: the linear-Gaussian VAE (identity activation, no hidden layers, gaussian
likelihood with fixed variance s2), for which x = W z + b + noise gives p(x) = N(b, W^T W + s2 I)
and p(z|x) = N(m, S) in closed form; scipy.integrate.quad (1-D) and a dense Simpson grid (2-D) on
a decoder written out in tests/reference.py.
"""
import math
import warnings

import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp as sp_logsumexp

import scratchvae as sv
from scratchvae import evaluate as ev
from tests import reference as ref

Z_BOUND = 4.5     # |z-score| bound for Monte Carlo comparisons: reliable, yet a real bias fails


# ====================================================================== models used below
def linear_gaussian(d, D=5, s2=0.3, seed=3, dtype="float64"):
    """A VAE whose decoder is x = z @ W + b + N(0, s2 I), with a random tanh-free encoder."""
    m = sv.VAE(D, hidden_dims=(), latent_dim=d, activation="identity", likelihood="gaussian",
               output_var=s2, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    m.params["dec.W_out"] *= 1.5
    m.params["dec.b_out"][:] = 0.3 * rng.standard_normal(D)
    return m


def linear_gaussian_reference(m, x):
    """Closed forms for the linear-Gaussian VAE: log p(x), the posterior N(m_post, S), and
    E_q[log p(x|z)] for q = N(mu, diag(exp(logvar))) from the model's encoder."""
    W, b, s2 = m.params["dec.W_out"], m.params["dec.b_out"], m.output_var
    d, D = W.shape
    C = W.T @ W + s2 * np.eye(D)
    r = x - b
    log_px = -0.5 * (np.einsum("bi,ij,bj->b", r, np.linalg.inv(C), r)
                     + np.linalg.slogdet(C)[1] + D * np.log(2 * np.pi))
    S = np.linalg.inv(np.eye(d) + W @ W.T / s2)
    m_post = (r @ W.T / s2) @ S
    mu, logvar = ref.encoder(m.params, x, "identity")[:2]
    mean = mu @ W + b
    recon = -0.5 * ((((x - mean) ** 2).sum(1) + (np.exp(logvar) @ (W ** 2)).sum(1)) / s2
                    + D * np.log(2 * np.pi * s2))
    return log_px, m_post, S, mu, logvar, recon


def kl_gaussian_full(mu, logvar, m_post, S):
    """KL(N(mu, diag(exp(logvar))) || N(m_post, S)) in closed form, per row."""
    Sinv = np.linalg.inv(S)
    diff = m_post - mu
    d = mu.shape[1]
    return 0.5 * (np.einsum("jj,bj->b", Sinv, np.exp(logvar))
                  + np.einsum("bi,ij,bj->b", diff, Sinv, diff) - d
                  + np.linalg.slogdet(S)[1] - logvar.sum(1))


def tanh_bernoulli(d, D=6, hidden=(5,), seed=0, dtype="float64", scale=2.0):
    """A small nonlinear model with a non-Gaussian posterior (weights scaled up from Glorot)."""
    m = sv.VAE(D, hidden_dims=hidden, latent_dim=d, activation="tanh", seed=seed, dtype=dtype)
    for key in m.params:
        if key.startswith("dec.W"):
            m.params[key] *= scale
    return m


def binary_data(B, D, seed, dtype="float64"):
    return (np.random.default_rng(seed).random((B, D)) < 0.5).astype(dtype)


def ref_log_joint(m, x, z):
    """log p(x|z) + log p(z) for every z row and every example, from tests/reference.py: (G, B)."""
    out = ref.decoder(m.params, z, m.activation)[0]                    # (G, D)
    ll = ref.bernoulli_loglik(x[None, :, :], out[:, None, :])         # (G, B)
    return ll + ref.log_standard_normal(z)[:, None]


# ====================================================================== exact log p(x)
@pytest.mark.parametrize("d", [1, 2])
def test_exact_log_likelihood_matches_linear_gaussian_closed_form(d):
    m = linear_gaussian(d)
    x = np.random.default_rng(1).standard_normal((4, 5))
    log_px, m_post, S, *_ = linear_gaussian_reference(m, x)
    est, post = ev.exact_log_likelihood(m, x, tol=1e-10, return_posterior=True)
    np.testing.assert_allclose(est, log_px, rtol=0, atol=1e-9)
    # the returned posterior is N(m_post, S) at every grid point (layout: rows follow z_2)
    if d == 1:
        z = post.axes[0][:, None]
    else:
        z1, z2 = np.meshgrid(post.axes[0], post.axes[1])
        z = np.stack([z1.ravel(), z2.ravel()], axis=1)
    Sinv = np.linalg.inv(S)
    for b in range(x.shape[0]):
        r = z - m_post[b]
        want = -0.5 * (np.einsum("gi,ij,gj->g", r, Sinv, r) + np.linalg.slogdet(S)[1]
                       + d * np.log(2 * np.pi))
        np.testing.assert_allclose(post.log_density[b].ravel(), want, rtol=1e-12, atol=1e-9,
                                   err_msg=f"log p(z|x) of example {b}")
    # the weights integrate the posterior to 1
    mass = np.exp(post.log_density + post.log_weights).reshape(x.shape[0], -1).sum(axis=1)
    np.testing.assert_allclose(mass, 1.0, rtol=1e-9)


def test_exact_log_likelihood_1d_against_scipy_quad():
    m = tanh_bernoulli(1)
    x = binary_data(3, 6, seed=2)
    est = ev.exact_log_likelihood(m, x, tol=1e-10)
    for b in range(x.shape[0]):
        f = lambda z: math.exp(ref_log_joint(m, x[b:b + 1], np.array([[z]]))[0, 0] - est[b])
        val, err = integrate.quad(f, -12, 12, epsabs=1e-13, epsrel=1e-12, limit=400)
        assert abs(math.log(val)) < 1e-9, f"example {b}: quad - est = {math.log(val)}"


def test_exact_log_likelihood_2d_against_dense_simpson():
    m = tanh_bernoulli(2, seed=1)
    x = binary_data(3, 6, seed=3)
    est = ev.exact_log_likelihood(m, x, tol=1e-10)
    a = np.linspace(-9.0, 9.0, 401)             # Simpson's rule: one the package does not use
    z1, z2 = np.meshgrid(a, a, indexing="ij")
    lj = ref_log_joint(m, x, np.stack([z1.ravel(), z2.ravel()], axis=1))   # (G, B)
    shift = lj.max(axis=0)
    dens = np.exp(lj - shift).T.reshape(x.shape[0], a.size, a.size)
    inner = integrate.simpson(dens, x=a, axis=2)
    want = np.log(integrate.simpson(inner, x=a, axis=1)) + shift
    np.testing.assert_allclose(est, want, rtol=0, atol=1e-8)


def test_exact_log_likelihood_float32_keeps_dtype_and_agrees_with_float64():
    m64 = tanh_bernoulli(2, seed=4)
    m32 = m64.astype("float32")
    x = binary_data(5, 6, seed=5)
    e64 = ev.exact_log_likelihood(m64, x)
    e32 = ev.exact_log_likelihood(m32, x.astype(np.float32))
    assert e32.dtype == np.float32
    np.testing.assert_allclose(e32, e64, rtol=2e-5)
    g32 = ev.elbo_gap(m32, x.astype(np.float32))
    assert all(v.dtype == np.float32 for v in g32), [v.dtype for v in g32]


def test_grid_log_densities_layout_and_values():
    m = tanh_bernoulli(2, seed=6)
    x = binary_data(2, 6, seed=7)
    axes = (np.linspace(-2, 2, 5), np.linspace(-1, 3, 7))
    log_joint, log_q = ev.grid_log_densities(m, x, axes)
    assert log_joint.shape == log_q.shape == (2, 7, 5)
    mu, logvar = ref.encoder(m.params, x, "tanh")[:2]
    for a_idx, c_idx in [(0, 0), (3, 1), (6, 4)]:
        z = np.array([[axes[0][c_idx], axes[1][a_idx]]])
        np.testing.assert_allclose(log_joint[:, a_idx, c_idx], ref_log_joint(m, x, z)[0],
                                   rtol=1e-12)
        np.testing.assert_allclose(log_q[:, a_idx, c_idx], ref.log_normal(z, mu, logvar),
                                   rtol=1e-12)


@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", 0.5),
                                                   ("gaussian", "learned")])
def test_all_pairs_grid_likelihood_matches_the_one_definition(likelihood, output_var):
    """The grid's log p(x_b | z_g) (an all-pairs arrangement for the Bernoulli likelihood) equals
    distributions' likelihood evaluated pair by pair on the reference decoder's outputs."""
    from scratchvae import distributions as dist
    from scratchvae.kernels import get_kernels
    m = sv.VAE(6, hidden_dims=(4,), latent_dim=2, activation="tanh", likelihood=likelihood,
               output_var=output_var, seed=0)
    if output_var == "learned":
        m.params["dec.logvar"][:] = np.linspace(-1, 1, 6)
    rng = np.random.default_rng(0)
    x = binary_data(3, 6, 1) if likelihood == "bernoulli" else rng.standard_normal((3, 6))
    axes = (np.linspace(-2, 2, 4), np.linspace(-1, 3, 5))
    log_joint, _ = ev.grid_log_densities(m, x, axes)                        # (B, 5, 4)
    z1, z2 = np.meshgrid(*axes)
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)                          # (G, 2), rows follow z2
    out = ref.decoder(m.params, z, "tanh")[0]                               # (G, D)
    outs = np.ascontiguousarray(np.broadcast_to(out[:, None, :], (z.shape[0],) + x.shape))
    K = get_kernels("numpy")
    if likelihood == "bernoulli":
        ll = dist.bernoulli_loglik_forward(x, outs, k=K)[0]
    else:
        lv = m.params["dec.logvar"] if output_var == "learned" else np.full(6, np.log(output_var))
        ll = dist.gaussian_loglik_forward(x, outs, lv, k=K)[0]
    want = ll + ref.log_standard_normal(z)[:, None]                          # (G, B)
    np.testing.assert_allclose(log_joint.reshape(3, -1).T, want, rtol=1e-12)


def test_exact_log_likelihood_of_a_cvae_conditions_on_the_label():
    m = sv.CVAE(6, n_classes=3, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=41)
    x = binary_data(4, 6, seed=42)
    y = np.array([0, 2, 1, 2])
    est = ev.exact_log_likelihood(m, x, y=y, tol=1e-10)
    a = np.linspace(-9.0, 9.0, 401)
    z1, z2 = np.meshgrid(a, a, indexing="ij")
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)
    for b in range(4):      # one example at a time, its label one-hot at every grid point
        out = m.decoder_output(z, np.full(z.shape[0], y[b]))
        lj = ref.bernoulli_loglik(x[b], out) + ref.log_standard_normal(z)
        dens = np.exp(lj - lj.max()).reshape(a.size, a.size)
        want = np.log(integrate.simpson(integrate.simpson(dens, x=a, axis=1), x=a)) + lj.max()
        assert abs(est[b] - want) < 1e-8, (b, est[b], want)
    g = ev.elbo_gap(m, x, y=y, tol=1e-9)
    np.testing.assert_allclose(g.gap, g.kl_posterior, rtol=1e-5, atol=1e-8)
    assert not np.allclose(est, ev.exact_log_likelihood(m, x, y=(y + 1) % 3, tol=1e-10))


# ====================================================================== the ELBO gap
def test_elbo_gap_linear_gaussian_both_sides_match_closed_forms():
    m = linear_gaussian(2)
    x = np.random.default_rng(1).standard_normal((4, 5))
    log_px, m_post, S, mu, logvar, recon = linear_gaussian_reference(m, x)
    g = ev.elbo_gap(m, x, tol=1e-10)
    np.testing.assert_allclose(g.log_px, log_px, rtol=0, atol=1e-9)
    np.testing.assert_allclose(g.recon, recon, rtol=1e-11)
    np.testing.assert_allclose(g.kl_prior, ref.kl_standard_normal(mu, logvar), rtol=1e-12)
    kl_post = kl_gaussian_full(mu, logvar, m_post, S)
    np.testing.assert_allclose(g.kl_posterior, kl_post, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(g.gap, kl_post, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("d", [1, 2])
def test_elbo_gap_identity_on_a_nonlinear_model(d):
    m = tanh_bernoulli(d, seed=8)
    x = binary_data(6, 6, seed=9)
    g = ev.elbo_gap(m, x, tol=1e-9)
    assert np.all(g.gap > 0.01), "a tanh decoder with a Gaussian q has a visible gap"
    np.testing.assert_allclose(g.gap, g.kl_posterior, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(g.q_mass, 1.0, rtol=1e-9)
    np.testing.assert_allclose(g.elbo, g.recon - g.kl_prior, rtol=1e-14)
    # the same log p(x) as exact_log_likelihood
    np.testing.assert_allclose(g.log_px, ev.exact_log_likelihood(m, x, tol=1e-9), rtol=0, atol=1e-8)


def test_kl_posterior_direct_on_the_returned_posterior_grid():
    m = tanh_bernoulli(2, seed=10)
    x = binary_data(3, 6, seed=11)
    _, post = ev.exact_log_likelihood(m, x, tol=1e-10, return_posterior=True)
    mu, logvar = ref.encoder(m.params, x, "tanh")[:2]
    z1, z2 = np.meshgrid(post.axes[0], post.axes[1])
    z = np.stack([z1.ravel(), z2.ravel()], axis=1)
    kl = []
    for b in range(x.shape[0]):
        log_q = ref.log_normal(z, mu[b], logvar[b])
        w = np.exp(post.log_weights.ravel() + log_q)
        kl.append(np.sum(w * (log_q - post.log_density[b].ravel())))
    g = ev.elbo_gap(m, x, tol=1e-10)
    np.testing.assert_allclose(kl, g.kl_posterior, rtol=1e-6, atol=1e-9)


def test_quadrature_warns_when_not_converged_and_when_mass_is_cut_off():
    m = tanh_bernoulli(2, seed=12)
    x = binary_data(2, 6, seed=13)
    with pytest.warns(ev.QuadratureWarning, match="did not converge"):
        ev.exact_log_likelihood(m, x, tol=1e-14, max_level=1)
    with pytest.warns(ev.QuadratureWarning, match="edge"):
        ev.exact_log_likelihood(m, x, bound=0.5, n_std=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev.exact_log_likelihood(m, x)          # the defaults converge quietly


# ====================================================================== importance weighting
@pytest.fixture(scope="module")
def sandwich_case():
    """A 2-D latent model with a clear ELBO gap, its exact quantities, and an IW curve."""
    m = tanh_bernoulli(2, D=8, hidden=(6,), seed=14, scale=2.0)
    x = binary_data(60, 8, seed=15)
    g = ev.elbo_gap(m, x, tol=1e-9)
    curve = ev.iw_bound_curve(m, x, ks=(1, 10, 100, 1000), rng=np.random.default_rng(16))
    return m, x, g, curve


def test_iw_bound_sandwich_elbo_le_lk_le_log_px(sandwich_case):
    m, x, g, c = sandwich_case
    elbo, log_px = g.elbo.mean(), g.log_px.mean()
    assert log_px - elbo > 0.2, "the case should have a sizable gap"
    # E[L_1] is the ELBO exactly
    assert abs(c.mean[0] - elbo) <= Z_BOUND * c.stderr[0], (c.mean[0], elbo, c.stderr[0])
    for k, lk, se in zip(c.ks, c.mean, c.stderr):
        assert elbo - Z_BOUND * se <= lk <= log_px + Z_BOUND * se, (k, elbo, lk, log_px, se)


def test_iw_bound_rises_toward_log_px(sandwich_case):
    m, x, g, c = sandwich_case
    log_px = g.log_px.mean()
    gaps = log_px - c.mean
    # k = 1 -> 10 -> 100: steps far beyond the noise (the estimates share draws, so hypot of the
    # two standard errors overstates the noise of their difference)
    for i in range(2):
        step = c.mean[i + 1] - c.mean[i]
        assert step > Z_BOUND * math.hypot(c.stderr[i], c.stderr[i + 1]), (c.ks[i], c.mean)
    # k = 1000: heavy-tailed weights make its step from k = 100 only ~3-4 standard errors, but
    # the remaining gap is a few percent of the ELBO's
    assert c.mean[3] > c.mean[1] and gaps[-1] < 0.1 * gaps[0], gaps


def test_iw_bound_rises_on_average_over_seeds():
    m = tanh_bernoulli(1, D=8, hidden=(6,), seed=17, scale=2.5)
    x = binary_data(10, 8, seed=18)
    log_px = ev.exact_log_likelihood(m, x).mean()
    runs = np.array([ev.iw_bound_curve(m, x, ks=(1, 10, 100), rng=np.random.default_rng(s)).mean
                     for s in range(20)])                     # (seeds, 3): mean over examples
    n = runs.shape[0]
    steps = np.diff(runs, axis=1)                             # paired differences per seed
    z_steps = steps.mean(axis=0) / (steps.std(axis=0, ddof=1) / math.sqrt(n))
    assert np.all(z_steps > Z_BOUND), z_steps
    top, top_se = runs[:, -1].mean(), runs[:, -1].std(ddof=1) / math.sqrt(n)
    assert top <= log_px + Z_BOUND * top_se, (top, top_se, log_px)
    assert log_px - top < 0.2 * (log_px - runs[:, 0].mean()), (runs.mean(axis=0), log_px)


def test_iw_bound_curve_groups_are_independent_logsumexps():
    m = tanh_bernoulli(2, seed=19)
    x = binary_data(3, 6, seed=20)
    c = ev.iw_bound_curve(m, x, ks=(1, 3, 12), rng=np.random.default_rng(21))
    logw = m.log_weights(x, n_samples=12, rng=np.random.default_rng(21))       # the same draws
    for i, k in enumerate((1, 3, 12)):
        groups = logw.reshape(12 // k, k, -1)
        want = (sp_logsumexp(groups, axis=1) - np.log(k)).mean(axis=0)
        np.testing.assert_allclose(c.per_example[i], want, rtol=1e-12, err_msg=f"k={k}")
    np.testing.assert_allclose(c.mean, c.per_example.mean(axis=1), rtol=1e-14)
    # k = 1: twelve groups; the standard error is that of a mean of 12 draws per example
    se1 = np.sqrt((logw.var(axis=0, ddof=1) / 12).sum()) / 3
    np.testing.assert_allclose(c.stderr[0], se1, rtol=1e-12)


def test_model_log_likelihood_is_iw_log_likelihood():
    m = tanh_bernoulli(2, seed=22)
    x = binary_data(4, 6, seed=23)
    est, se = ev.iw_log_likelihood(m, x, k=50, rng=np.random.default_rng(3))
    want, want_se = m.log_likelihood(x, k=50, rng=np.random.default_rng(3), return_stderr=True)
    np.testing.assert_array_equal(est, want)
    np.testing.assert_array_equal(se, want_se)
    lw = m.log_weights(x, n_samples=50, rng=np.random.default_rng(3))     # the same draws
    np.testing.assert_allclose(est, sp_logsumexp(lw, axis=0) - np.log(50), rtol=1e-12)
    w = np.exp(lw - sp_logsumexp(lw, axis=0))
    np.testing.assert_allclose(se, np.sqrt((50 * (w * w).sum(0) - 1) / 50), rtol=1e-10)


def heavy_tailed_model():
    """A 1-D linear-Gaussian VAE whose q(z|x) has the posterior's variance but a mean 2.5
    posterior s.d. away: log w is then exactly normal with s.d. 2.5 in eps (lognormal weights,
    every moment finite, heavy right tail). x ~ N(0, 1.01), posterior variance 1/101."""
    m = sv.VAE(1, hidden_dims=(), latent_dim=1, likelihood="gaussian", output_var=0.01,
               backend="numpy")
    for key in m.params:
        m.params[key][...] = 0.0
    m.params["dec.W_out"][...] = 1.0
    v_post = 1.0 / 101.0
    m.params["enc.W_mu"][...] = 100.0 / 101.0               # the posterior mean ...
    m.params["enc.b_mu"][...] = 2.5 * math.sqrt(v_post)     # ... shifted by 2.5 s.d.
    m.params["enc.b_logvar"][...] = math.log(v_post)
    return m


def test_batch_means_stderr_matches_the_spread_over_repeats_where_the_delta_method_does_not():
    """1000 independent repeats of L_200 on one x (1000 identical rows): the delta method's
    s.e. is about 0.36 against an empirical s.d. of about 0.57 (it understates heavy-tailed
    weights); batch means (20 batches of 200 draws) measures the s.d. of one L_200 within 15%,
    and its own s.e. (of the mean of the batches) matches the spread of that mean."""
    m = heavy_tailed_model()
    x = np.full((1000, 1), 0.5)
    est, se_delta = ev.iw_log_likelihood(m, x, k=200, rng=np.random.default_rng(0))
    emp = est.std(ddof=1)
    assert se_delta.mean() < 0.75 * emp, (se_delta.mean(), emp)
    est_bm, se_bm = ev.iw_log_likelihood(m, x, k=200, rng=np.random.default_rng(1),
                                         stderr="batch_means", n_batches=20)
    assert abs(se_bm.mean() * math.sqrt(20) / emp - 1) < 0.15, (se_bm.mean() * math.sqrt(20), emp)
    assert abs(se_bm.mean() / est_bm.std(ddof=1) - 1) < 0.15, (se_bm.mean(), est_bm.std(ddof=1))
    log_px = -0.5 * (0.25 / 1.01 + math.log(2 * math.pi * 1.01))
    assert est_bm.mean() < log_px and abs(est_bm.mean() - est.mean()) < 4 * emp / math.sqrt(1000)


def test_iw_log_likelihood_rejects_a_bad_stderr_choice():
    m = heavy_tailed_model()
    with pytest.raises(ValueError, match="stderr"):
        ev.iw_log_likelihood(m, np.zeros((1, 1)), k=3, stderr="bootstrap")
    with pytest.raises(ValueError, match="n_batches"):
        ev.iw_log_likelihood(m, np.zeros((1, 1)), k=3, stderr="batch_means", n_batches=1)


def test_iw_bound_curve_keeps_float32():
    m = tanh_bernoulli(2, seed=24, dtype="float32")
    c = ev.iw_bound_curve(m, binary_data(3, 6, 25, "float32"), ks=(1, 4), rng=1)
    assert c.mean.dtype == c.stderr.dtype == c.per_example.dtype == np.float32


# ====================================================================== IWAE objective
def test_iwae_loss_is_the_logsumexp_formula():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=26)
    x = binary_data(4, 6, seed=27)
    eps = np.random.default_rng(28).standard_normal((7, 4, 2))
    r = m.forward(x, n_samples=7, eps=eps, objective="iwae")
    mu, logvar = ref.encoder(m.params, x, "tanh")[:2]
    z = mu + np.exp(logvar / 2) * eps
    logw = np.stack([ref.bernoulli_loglik(x, ref.decoder(m.params, z[k], "tanh")[0])
                     + ref.log_standard_normal(z[k]) - ref.log_normal(z[k], mu, logvar)
                     for k in range(7)])
    lk = sp_logsumexp(logw, axis=0) - np.log(7)
    np.testing.assert_allclose(r.logw, logw, rtol=1e-12)
    np.testing.assert_allclose(-r.per_example, lk, rtol=1e-12)
    np.testing.assert_allclose(m.loss(x, n_samples=7, eps=eps, objective="iwae"), -lk.mean(),
                               rtol=1e-12)


def test_iwae_gradients_pass_the_finite_difference_check():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=29)
    rep = sv.gradcheck(m, binary_data(3, 6, seed=30), n_samples=4, objective="iwae",
                       wrt=("params",), n_directions=3)
    assert rep.passed, str(rep)


def test_fit_with_iwae_improves_the_iw_bound():
    x_tr = sv.data.load_digits(seed=0)[0][:200]
    m = sv.VAE(64, hidden_dims=(16,), latent_dim=2, activation="tanh", seed=31)
    before = ev.iw_log_likelihood(m, x_tr, k=100, rng=np.random.default_rng(0))
    sv.fit(m, x_tr, epochs=5, batch_size=50, n_samples=5, objective="iwae", progress=False,
           optimizer=sv.Adam(lr=1e-2))
    after = ev.iw_log_likelihood(m, x_tr, k=100, rng=np.random.default_rng(0))
    gain = after[0].mean() - before[0].mean()
    noise = math.sqrt(np.sum(before[1] ** 2 + after[1] ** 2)) / x_tr.shape[0]
    assert gain > 5.0 and gain > Z_BOUND * noise, (gain, noise)


# ====================================================================== KL per dim, active units
def test_kl_per_dimension_against_reference_and_the_total_kl():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=3, activation="tanh", seed=32)
    x = binary_data(9, 6, seed=33)
    kl = ev.kl_per_dimension(m, x, batch_size=4)
    mu, logvar = ref.encoder(m.params, x, "tanh")[:2]
    want = (0.5 * (mu ** 2 + np.exp(logvar) - 1 - logvar)).mean(axis=0)
    np.testing.assert_allclose(kl, want, rtol=1e-12)
    np.testing.assert_allclose(kl.sum(), ref.kl_standard_normal(mu, logvar).mean(), rtol=1e-12)
    assert ev.kl_per_dimension(m.astype("float32"), x.astype(np.float32)).dtype == np.float32


def test_active_units_against_an_independent_count():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=4, activation="tanh", seed=34)
    m.params["enc.W_mu"][:, 1] = 0.0            # mu_1 = b_mu_1 for every x: inactive
    m.params["enc.W_mu"][:, 3] *= 0.01          # tiny variance: inactive
    m.params["enc.W_mu"][:, 0] *= 5.0           # clearly active
    x = np.random.default_rng(35).random((50, 6))
    mu = ref.encoder(m.params, x, "tanh")[0]
    var = mu.var(axis=0)
    n, v = ev.active_units(m, x, return_variance=True)
    np.testing.assert_allclose(v, var, rtol=1e-12)
    assert n == int((var > 0.01).sum())
    assert var[1] == 0.0 and var[3] < 0.01 < var[0], var
    assert ev.active_units(m, x, threshold=float(var.max()) + 1.0) == 0


# ====================================================================== the report
def test_evaluation_report_for_a_2d_latent_model():
    m = tanh_bernoulli(2, D=8, hidden=(6,), seed=36)
    x = binary_data(20, 8, seed=37)
    r = ev.evaluation_report(m, x, k=200, rng=np.random.default_rng(38))
    assert r["n_examples"] == 20 and r["latent_dim"] == 2 and r["k"] == 200
    assert len(r["kl_per_dim"]) == 2 and len(r["au_variance"]) == 2
    np.testing.assert_allclose(r["gap"], r["kl_q_posterior"], rtol=1e-5)
    np.testing.assert_allclose(r["exact_elbo"] + r["gap"], r["exact_log_likelihood"], rtol=1e-12)
    np.testing.assert_allclose(sum(r["kl_per_dim"]), r["kl"], rtol=1e-12)
    assert abs(-r["neg_elbo"] - r["exact_elbo"]) <= Z_BOUND * r["neg_elbo_stderr"]
    assert r["iw_log_likelihood"] <= r["exact_log_likelihood"] + Z_BOUND * r["iw_stderr"]
    text = ev.format_report(r)
    for needle in ("negative ELBO", "L_200", "active units", "exact log p(x)", "z2:"):
        assert needle in text, needle


def test_evaluation_report_skips_the_exact_part_for_larger_latents():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=3, activation="tanh", seed=39)
    r = ev.evaluation_report(m, binary_data(5, 6, seed=40), k=10, rng=1, n_elbo_samples=1)
    assert "exact_log_likelihood" not in r and r["neg_elbo_stderr"] is None
    assert "exact log p(x)" not in ev.format_report(r)
    with pytest.raises(ValueError, match="latent_dim"):
        ev.evaluation_report(m, binary_data(5, 6, seed=40), k=10, exact=True)


# ====================================================================== bad input
def test_bad_input_names_the_argument():
    m2 = tanh_bernoulli(2)
    m3 = sv.VAE(6, hidden_dims=(5,), latent_dim=3, seed=0)
    x = binary_data(2, 6, seed=0)
    cases = [
        (lambda: ev.iw_log_likelihood(m2, x, k=0), "k"),
        (lambda: ev.evaluation_report(m2, x, k=0), "k"),
        (lambda: ev.iw_bound_curve(m2, x, ks=(10, 0)), r"ks\[1\]"),
        (lambda: ev.iw_bound_curve(m2, x, ks=()), "ks"),
        (lambda: ev.exact_log_likelihood(m3, x), "latent_dim"),
        (lambda: ev.elbo_gap(m3, x), "latent_dim"),
        (lambda: ev.grid_log_densities(m3, x, (np.zeros(2),) * 3), "latent_dim"),
        (lambda: ev.exact_log_likelihood(m2, x, tol=0.0), "tol"),
        (lambda: ev.elbo_gap(m2, x, tol=-1e-3), "tol"),
        (lambda: ev.exact_log_likelihood(m2, x, max_level=0), "max_level"),
        (lambda: ev.exact_log_likelihood(m2, x, bound=0.0), "bound"),
        (lambda: ev.exact_log_likelihood(m2, x.astype(np.float32)), "x"),
        (lambda: ev.grid_log_densities(m2, x, (np.zeros(3),)), "axes"),
        (lambda: ev.format_report({"neg_elbo": 1.0}), "report"),
        (lambda: ev.kl_per_dimension(m2, x, batch_size=0), "batch_size"),
        (lambda: ev.exact_log_likelihood(sv.HVAE(6, latent_dims=(2, 1), hidden_dims=((4,), (3,))),
                                         x), "HVAE"),
        (lambda: ev.exact_log_likelihood(m2, x, y=np.zeros(2, np.int64)), "y"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(TypeError, match="report"):
        ev.format_report("not a dict")
    with pytest.raises(TypeError, match="ks"):
        ev.iw_bound_curve(m2, x, ks=5)


@pytest.mark.parametrize("make", [
    lambda: sv.VAE(6, (5,), 2, dtype="float64", seed=1),
    lambda: sv.HVAE(6, latent_dims=(3, 2), hidden_dims=((5,), (4,)), dtype="float64", seed=1),
    lambda: sv.FlowVAE(6, (5,), 2, flow_length=2, dtype="float64", seed=1),
], ids=["vae", "hvae", "flow"])
def test_elbo_samples_average_to_the_models_elbo(make):
    """Each model's one-sample ELBO terms (what evaluation_report's ELBO and its Monte Carlo
    error are built from) average over the samples to the model's own ``elbo``, same draws."""
    model = make()
    x = np.random.default_rng(0).random((4, 6))
    terms, _ = model.elbo_samples(x, 7, rng=np.random.default_rng(3))
    assert terms.shape == (7, 4)
    np.testing.assert_allclose(terms.mean(axis=0),
                               model.elbo(x, n_samples=7, rng=np.random.default_rng(3)),
                               rtol=1e-12, atol=1e-12)
    assert model.gaussian_posterior is not isinstance(model, sv.FlowVAE)
