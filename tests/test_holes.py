"""The hole problem and the ELBO surgery (scratchvae.holes, through sv.evaluate): closed forms by
quadrature on stub posteriors with known Gaussian components, the identity and the log N bound,
collapse, the 2-D hole mass of a case with an exact answer, and refusals."""
import math

import numpy as np
import pytest
from scipy import integrate, stats

import scratchvae as sv
from scratchvae import evaluate


class StubPosterior:
    """The interface the tools read, with known q(z|x_n) = N(mu_n, diag(sd_n^2)); x holds n."""
    prior = "gaussian"
    conditional = False

    def __init__(self, mu, sd):
        self.mu, self.sd = np.asarray(mu, float), np.asarray(sd, float)
        self.latent_dim = self.mu.shape[1]
        self.dtype = np.dtype(np.float64)
        self.rng = np.random.default_rng(0)
        self.x = np.arange(self.mu.shape[0], dtype=float)[:, None]

    def check_x(self, x, name="x"):
        return x

    def sample_posterior(self, x, n_samples, rng, y=None):
        i = x[:, 0].astype(int)
        z = self.mu[i] + self.sd[i] * rng.standard_normal((n_samples,) + self.mu[i].shape)
        return z, stats.norm.logpdf(z, self.mu[i], self.sd[i]).sum(-1)

    def posterior_log_density(self, z, x, y=None):
        i = x[:, 0].astype(int)
        return stats.norm.logpdf(z[:, None, :], self.mu[i][None], self.sd[i][None]).sum(-1)

    def decode(self, z):
        return np.full((z.shape[0], 4), 0.5)


def _closed_kl(mu, sd):
    return 0.5 * (mu ** 2 + sd ** 2 - 1 - 2 * np.log(sd)).sum(-1)


def test_surgery_matches_quadrature_1d():
    mu, sd = np.array([[-2.0], [0.5], [1.5]]), np.array([[0.3], [0.6], [0.2]])
    m = StubPosterior(mu, sd)

    def q(z):
        return np.mean(stats.norm.pdf(z, mu[:, 0], sd[:, 0]))
    kl_marg = integrate.quad(lambda z: q(z) * (np.log(q(z)) - stats.norm.logpdf(z)), -12, 12,
                             points=[-2, 0.5, 1.5], limit=200, epsabs=1e-12)[0]
    kl_mean = _closed_kl(mu, sd).mean()
    s = evaluate.elbo_surgery(m, m.x, n_samples=20000, rng=np.random.default_rng(1))
    assert abs(s.marginal_kl - kl_marg) < 4 * s.marginal_kl_stderr, (s.marginal_kl, kl_marg)
    assert abs(s.mean_kl - kl_mean) < 4 * s.mean_kl_stderr
    assert abs(s.mutual_info - (kl_mean - kl_marg)) < 4 * s.mutual_info_stderr
    assert s.mi_upper_bound == math.log(3) and "log N" in s.mi_bias
    kl, se = evaluate.aggregate_posterior_kl(m, m.x, n_samples=20000,
                                             rng=np.random.default_rng(1))
    assert (kl, se) == (s.marginal_kl, s.marginal_kl_stderr)


def test_identity_and_log_n_bound_per_draw():
    # well separated components: I close to its bound log N, never above it
    mu = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0], [0.0, -6.0]])
    m = StubPosterior(mu, np.full((4, 2), 0.1))
    r = sv.evaluate.surgery_draws(m, m.x, n_samples=500, rng=np.random.default_rng(2))
    assert np.all(r.log_q_cond - r.log_q_agg <= math.log(4) + 1e-12)
    s = evaluate.elbo_surgery(m, m.x, n_samples=500, rng=np.random.default_rng(2))
    assert s.mean_kl == pytest.approx(s.mutual_info + s.marginal_kl, rel=1e-12, abs=1e-12)
    assert math.log(4) - 1e-6 < s.mutual_info <= math.log(4) + 1e-12   # rounding of - log N


def test_collapsed_vae_has_no_information_and_no_marginal_kl():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=3, seed=3, backend="numpy")
    for key in ("enc.W_mu", "enc.b_mu", "enc.W_logvar", "enc.b_logvar"):
        m.params[key][...] = 0.0          # q(z|x) = N(0, I) = p(z) for every x
    x = np.random.default_rng(0).uniform(0, 1, (20, 6))
    s = evaluate.elbo_surgery(m, x, n_samples=300, rng=np.random.default_rng(4))
    for v in (s.mean_kl, s.mutual_info, s.marginal_kl):
        assert abs(v) < 1e-12


@pytest.mark.parametrize("model_type", ["vae", "cvae"])
def test_vae_posterior_interface_against_scipy(model_type):
    rng = np.random.default_rng(5)
    if model_type == "vae":
        m, y = sv.VAE(6, hidden_dims=(5,), latent_dim=2, seed=1, backend="numpy"), None
    else:
        m, y = sv.CVAE(6, 3, hidden_dims=(5,), latent_dim=2, seed=1, backend="numpy"), \
            np.array([0, 1, 2, 1])
    x = rng.uniform(0, 1, (4, 6))
    mu, logvar = m.encode(x, y=y)
    z, log_q = m.sample_posterior(x, 3, np.random.default_rng(6), y=y)
    assert z.shape == (3, 4, 2) and log_q.shape == (3, 4)
    sd = np.exp(logvar / 2)
    np.testing.assert_allclose(log_q, stats.norm.logpdf(z, mu, sd).sum(-1), rtol=1e-12)
    zz = z.reshape(-1, 2)
    lqd = m.posterior_log_density(zz, x, y=y, max_elements=7)     # several blocks of rows
    np.testing.assert_allclose(lqd, stats.norm.logpdf(zz[:, None], mu[None], sd[None]).sum(-1),
                               rtol=1e-12)


def test_hole_mass_exact_for_one_narrow_gaussian():
    # every q(z|x_n) = N(0, s^2 I): holes are |z|^2 > r0^2 with
    # r0^2 = 2 (log(1/threshold) - 2 log s) / (1/s^2 - 1), prior mass exp(-r0^2 / 2)
    s, thr = 0.5, 0.1
    m = StubPosterior(np.zeros((3, 2)), np.full((3, 2), s))
    r0sq = 2 * (math.log(1 / thr) - 2 * math.log(s)) / (1 / s ** 2 - 1)
    exact = math.exp(-r0sq / 2)
    h = evaluate.posterior_holes(m, m.x, grid_size=101, extent=4.0, threshold=thr,
                                 n_prior_samples=4000, n_decode=5, rng=np.random.default_rng(7))
    zz1, zz2 = np.meshgrid(h.z1, h.z2)
    np.testing.assert_array_equal(h.holes, zz1 ** 2 + zz2 ** 2 > r0sq)
    assert abs(h.hole_mass - exact) <= h.quadrature_error + h.mass_outside_grid
    assert h.quadrature_error < 0.01
    assert abs(h.hole_mass_mc - exact) < 4 * h.hole_mass_mc_stderr
    assert h.q_mass == pytest.approx(1.0, abs=1e-6)
    assert h.x_holes.shape == (5, 4) and h.x_covered.shape == (5, 4)
    assert np.all(h.z_holes[:, 0] ** 2 + h.z_holes[:, 1] ** 2 > r0sq)
    assert np.all(h.z_covered[:, 0] ** 2 + h.z_covered[:, 1] ** 2 <= r0sq)


def test_refuses_models_without_a_gaussian_prior():
    m = sv.HVAE(6, latent_dims=(2, 2), hidden_dims=((4,), (3,)), backend="numpy")
    x = np.random.default_rng(0).uniform(0, 1, (5, 6))
    for f in (evaluate.elbo_surgery, evaluate.aggregate_posterior_kl, evaluate.posterior_holes):
        with pytest.raises(ValueError, match="HVAE has prior = 'hierarchical'"):
            f(m, x)


def test_bad_grid_and_latent_dim():
    m = StubPosterior(np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="grid_size must be odd"):
        evaluate.posterior_holes(m, m.x, grid_size=100)
    with pytest.raises(ValueError, match="grid_size=21 is too coarse"):
        evaluate.posterior_holes(m, m.x, grid_size=21, extent=4.0)
    with pytest.raises(ValueError, match="latent_dim=3"):
        evaluate.posterior_holes(StubPosterior(np.zeros((2, 3)), np.ones((2, 3))), m.x)


def test_a_conditional_models_decode_labels_are_checked():
    m = sv.CVAE(6, 3, hidden_dims=(5,), latent_dim=2, seed=1, backend="numpy")
    x = np.random.default_rng(0).uniform(0, 1, (5, 6))
    y = np.array([0, 1, 2, 0, 1])
    for bad, text in (([0, 1], r"decode_y"), (np.full(4, 3), r"decode_y")):
        with pytest.raises((ValueError, TypeError), match=text):
            evaluate.posterior_holes(m, x, y=y, grid_size=41, n_prior_samples=50, n_decode=4,
                                     decode_y=np.asarray(bad))


def test_report_entries_and_table():
    m = sv.VAE(6, hidden_dims=(5,), latent_dim=2, seed=1, backend="numpy")
    x = np.random.default_rng(0).uniform(0, 1, (12, 6))
    r = evaluate.evaluation_report(m, x, k=5, n_elbo_samples=2, exact=False,
                                   n_surgery_samples=50, rng=np.random.default_rng(0))
    assert r["mean_kl_mc"] == pytest.approx(r["mutual_info"] + r["marginal_kl"], rel=1e-12)
    assert r["mutual_info_bound"] == math.log(12) and r["surgery_samples"] == 50
    assert 0.0 <= r["hole_mass"] <= 1.0 and "hole_mass_mc" in r
    text = evaluate.format_report(r)
    assert "I(x; z)" in text and "prior mass in holes" in text
    h = sv.HVAE(6, latent_dims=(2, 2), hidden_dims=((4,), (3,)), backend="numpy")
    rh = evaluate.evaluation_report(h, x, k=5, n_elbo_samples=2, n_surgery_samples=50)
    assert "mutual_info" not in rh and "I(x; z)" not in evaluate.format_report(rh)


def test_hole_figure_renders(tmp_path):
    m = StubPosterior(np.array([[1.0, 0.0], [-1.0, 0.5]]), np.full((2, 2), 0.3))
    h = evaluate.posterior_holes(m, m.x, grid_size=41, n_prior_samples=200, n_decode=4,
                                 rng=np.random.default_rng(0))
    fig = sv.viz.plot_posterior_holes(h.z1, h.z2, h.log_q, h.log_p, h.holes, h.x_holes,
                                      h.x_covered, path=tmp_path / "holes.png",
                                      hole_mass=h.hole_mass)
    assert (tmp_path / "holes.png").stat().st_size > 0 and len(fig.axes) >= 3
    with pytest.raises(TypeError, match="holes must be a boolean"):
        sv.viz.plot_posterior_holes(h.z1, h.z2, h.log_q, h.log_p, h.holes.astype(int),
                                    h.x_holes, h.x_covered)


def test_flow_vae_surgery_reads_the_flow_density():
    x = np.random.default_rng(0).uniform(0, 1, (8, 6))
    m = sv.FlowVAE(6, hidden_dims=(5,), latent_dim=2, flow_length=2, seed=1, backend="numpy")
    r = evaluate.surgery_draws(m, x, n_samples=40, rng=np.random.default_rng(1))
    # the draws' log q(z|x_n) from the (M, N) matrix of the inverted flow equal the change of
    # variables along the forward pass that drew them
    rng = np.random.default_rng(1)
    idx = rng.integers(0, 8, size=40)
    z, log_q = m.sample_posterior(x[idx], 1, rng)
    np.testing.assert_array_equal(r.index, idx)
    np.testing.assert_allclose(r.log_q_cond, log_q[0], rtol=1e-9, atol=1e-9)
    s = evaluate.elbo_surgery(m, x, n_samples=40, rng=np.random.default_rng(1))
    assert s.mean_kl == pytest.approx(s.mutual_info + s.marginal_kl, rel=1e-12)
    assert s.mutual_info <= math.log(8) + 1e-12
