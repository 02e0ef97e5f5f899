"""The two-stochastic-layer VAE: shapes, the loss against an independent forward written here
from the model's equations, finite-difference gradients (fixed cases and hypothesis-drawn
architectures), the noise pair, bad input, the likelihood estimate against quadrature,
sampling, active units, checkpoints, training, and the numba backend."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import scratchvae as sv
from scratchvae.cvae import CVAE
from scratchvae.hvae import HVAE, active_units_per_layer
from scratchvae.model import VAE
from scratchvae.train import fit
from tests.conftest import FD_RTOL, RTOL
from tests.reference import log_normal as ref_log_normal
from tests.reference import mlp as ref_mlp

F64 = np.dtype(np.float64)
KINKED = ("relu", "leaky_relu")


# ====================================================================== independent reference




def ref_gaussian(p, prefix, a, act, pre):
    """(mu, logvar) of the Gaussian MLP ``prefix``."""
    a = ref_mlp(p, prefix, a, act, pre)
    return a @ p[f"{prefix}.W_mu"] + p[f"{prefix}.b_mu"], \
        a @ p[f"{prefix}.W_logvar"] + p[f"{prefix}.b_logvar"]




def ref_loglik(model, p, x, z1, pre):
    """log p(x|z1) for z1 (..., B, d1)."""
    c = ref_mlp(p, "dec", z1, model.activation, pre)
    out = c @ p["dec.W_out"] + p["dec.b_out"]
    if model.likelihood == "bernoulli":
        return np.sum(x * out - np.logaddexp(0, out), axis=-1)
    lv = p["dec.logvar"] if model.output_var == "learned" else np.log(model.output_var)
    s2 = np.exp(lv)
    return -0.5 * np.sum((x - out) ** 2 / s2 + np.log(2 * np.pi * s2), axis=-1)


def ref_hvae(model, x, eps, beta=1.0, objective="elbo"):
    """Per-example loss (two stochastic layers), one sample at a time,
    and the smallest |pre-activation| (to keep ReLU kinks away from the finite differences)."""
    p = {key: v.astype(np.float64) for key, v in model.params.items()}
    x = x.astype(np.float64)
    act, pre = model.activation, []
    mu1, lv1 = ref_gaussian(p, "q1", x, act, pre)
    ll, middle, top, logw = [], [], [], []
    for e1, e2 in zip(eps[0].astype(np.float64), eps[1].astype(np.float64)):
        z1 = mu1 + np.sqrt(np.exp(lv1)) * e1
        mu2, lv2 = ref_gaussian(p, "q2", z1, act, pre)
        z2 = mu2 + np.sqrt(np.exp(lv2)) * e2
        mp1, lvp1 = ref_gaussian(p, "p1", z2, act, pre)
        ll_k = ref_loglik(model, p, x, z1, pre)
        logq1, logp1 = ref_log_normal(z1, mu1, lv1), ref_log_normal(z1, mp1, lvp1)
        ll.append(ll_k)
        middle.append(logq1 - logp1)
        top.append(0.5 * np.sum(mu2 ** 2 + np.exp(lv2) - 1 - lv2, axis=1))
        logw.append(ll_k + logp1 + ref_log_normal(z2, 0.0, 0.0) - logq1
                    - ref_log_normal(z2, mu2, lv2))
    if objective == "elbo":
        loss = -np.mean(ll, axis=0) + beta * np.mean(np.add(middle, top), axis=0)
    else:
        logw = np.array(logw)
        m = logw.max(axis=0)
        loss = -(m + np.log(np.exp(logw - m).sum(axis=0)) - np.log(len(logw)))
    min_pre = min((np.abs(h).min() for h in pre), default=np.inf)
    return loss, min_pre


def randomize(model, rng, scale=0.3):
    """Move the biases (and a learned output variance) off zero so no term is trivial."""
    for key, v in model.params.items():
        if ".b" in key or key == "dec.logvar":
            v += (scale * rng.standard_normal(v.shape)).astype(v.dtype)


def small(dtype="float64", likelihood="bernoulli", output_var=1.0, backend="numpy",
          activation="tanh", seed=0, hidden=((6,), (4,)), latent=(3, 2), D=5):
    m = HVAE(D, latent_dims=latent, hidden_dims=hidden, activation=activation,
             likelihood=likelihood, output_var=output_var, dtype=dtype, seed=seed,
             backend=backend)
    randomize(m, np.random.default_rng(seed + 100))
    return m


def data(model, B, rng):
    return rng.random((B, model.input_dim)).astype(model.dtype)


# ====================================================================== structure
def test_parameter_keys_shapes_and_order():
    m = HVAE(7, latent_dims=(4, 2), hidden_dims=((6, 5), (3,)), likelihood="gaussian",
             output_var="learned")
    expected = [
        ("q1.W0", (7, 6)), ("q1.b0", (6,)), ("q1.W1", (6, 5)), ("q1.b1", (5,)),
        ("q1.W_mu", (5, 4)), ("q1.b_mu", (4,)), ("q1.W_logvar", (5, 4)), ("q1.b_logvar", (4,)),
        ("q2.W0", (4, 3)), ("q2.b0", (3,)),
        ("q2.W_mu", (3, 2)), ("q2.b_mu", (2,)), ("q2.W_logvar", (3, 2)), ("q2.b_logvar", (2,)),
        ("p1.W0", (2, 3)), ("p1.b0", (3,)),
        ("p1.W_mu", (3, 4)), ("p1.b_mu", (4,)), ("p1.W_logvar", (3, 4)), ("p1.b_logvar", (4,)),
        ("dec.W0", (4, 5)), ("dec.b0", (5,)), ("dec.W1", (5, 6)), ("dec.b1", (6,)),
        ("dec.W_out", (6, 7)), ("dec.b_out", (7,)), ("dec.logvar", (7,))]
    assert [(k, v.shape) for k, v in m.params.items()] == expected
    assert m.model_type == "hvae" and not m.conditional
    assert m.latent_dim == 4 and m.decoder_hidden_dims == (5, 6)


def test_no_hidden_layers():
    m = HVAE(7, latent_dims=(4, 2), hidden_dims=((), ()))
    assert list(m.params) == [f"{p}.{n}" for p in ("q1", "q2", "p1")
                              for n in ("W_mu", "b_mu", "W_logvar", "b_logvar")] + \
        ["dec.W_out", "dec.b_out"]
    assert m.params["q2.W_mu"].shape == (4, 2) and m.params["p1.W_mu"].shape == (2, 4)


def test_config_rebuilds_the_model():
    m = HVAE(7, latent_dims=(4, 2), hidden_dims=((6,), (3, 2)), seed=3)
    m2 = HVAE(**m.config)
    assert m2.config == m.config
    for key in m.params:
        np.testing.assert_array_equal(m2.params[key], m.params[key], err_msg=key)


def test_draw_eps_is_a_pair(dtype):
    m = small(dtype=dtype.name)
    eps = m.draw_eps(3, 4, np.random.default_rng(0))
    assert isinstance(eps, tuple) and len(eps) == 2
    assert eps[0].shape == (3, 4, 3) and eps[1].shape == (3, 4, 2)
    assert eps[0].dtype == dtype and eps[1].dtype == dtype


# ====================================================================== values
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", 0.3),
                                                   ("gaussian", "learned")])
def test_loss_matches_reference(objective, likelihood, output_var):
    m = small(likelihood=likelihood, output_var=output_var)
    rng = np.random.default_rng(1)
    x = data(m, 4, rng)
    eps = m.draw_eps(3, 4, rng)
    r = m.forward(x, n_samples=3, eps=eps, objective=objective)
    ref, _ = ref_hvae(m, x, eps, objective=objective)
    np.testing.assert_allclose(r.per_example, ref, rtol=RTOL[F64], atol=RTOL[F64])
    np.testing.assert_allclose(m.loss(x, n_samples=3, eps=eps, objective=objective), ref.mean(),
                               rtol=RTOL[F64])


def test_elbo_beta_and_terms():
    m = small()
    rng = np.random.default_rng(2)
    x = data(m, 4, rng)
    eps = m.draw_eps(2, 4, rng)
    ref, _ = ref_hvae(m, x, eps)
    np.testing.assert_allclose(m.elbo(x, n_samples=2, eps=eps), -ref, rtol=RTOL[F64])
    ref_b, _ = ref_hvae(m, x, eps, beta=0.25)
    np.testing.assert_allclose(m.loss(x, n_samples=2, beta=0.25, eps=eps), ref_b.mean(),
                               rtol=RTOL[F64])
    r = m.forward(x, n_samples=2, eps=eps)
    np.testing.assert_allclose(r.kl, (r.kl1 + r.kl2).mean(axis=0), rtol=RTOL[F64])
    assert np.all(r.kl2 >= 0)


def test_same_eps_same_bits_and_dtype_kept(dtype):
    m = small(dtype=dtype.name)
    rng = np.random.default_rng(3)
    x = data(m, 3, rng)
    eps = m.draw_eps(2, 3, rng)
    for objective in ("elbo", "iwae"):
        l1, g1 = m.loss_and_grads(x, n_samples=2, eps=eps, objective=objective)
        l2, g2 = m.loss_and_grads(x, n_samples=2, eps=eps, objective=objective)
        assert l1 == l2
        for key in m.params:
            np.testing.assert_array_equal(g1[key], g2[key], err_msg=key)
            assert g1[key].dtype == dtype and g1[key].shape == m.params[key].shape, key
    mu1 = m.encode(x)[0]
    for out in (mu1, *m.encode_z2(mu1), m.decode(mu1), m.sample(4), m.elbo(x),
                m.log_likelihood(x, k=4)):
        assert out.dtype == dtype


def test_float32_matches_float64():
    m32 = small(dtype="float32")
    m64 = m32.astype("float64")
    rng = np.random.default_rng(4)
    x = data(m64, 6, rng)
    eps = m64.draw_eps(2, 6, rng)
    eps32 = tuple(e.astype(np.float32) for e in eps)
    for objective in ("elbo", "iwae"):
        l64, g64 = m64.loss_and_grads(x, n_samples=2, eps=eps, objective=objective)
        l32, g32 = m32.loss_and_grads(x.astype(np.float32), n_samples=2, eps=eps32,
                                      objective=objective)
        assert abs(l32 - l64) <= 1e-5 * abs(l64)
        for key in g64:
            err = np.linalg.norm(g32[key] - g64[key]) / max(np.linalg.norm(g64[key]), 1e-3)
            assert err <= 1e-5, f"{objective} {key}: normwise error {err:.2e}"


# ====================================================================== gradients
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", "learned")])
def test_gradcheck_fixed_eps(objective, likelihood, output_var):
    m = small(likelihood=likelihood, output_var=output_var, hidden=((6, 4), (4, 3)))
    rng = np.random.default_rng(5)
    x = data(m, 4, rng)
    eps = m.draw_eps(3, 4, rng)
    rep = sv.gradcheck(m, x, n_samples=3, beta=0.7, objective=objective, eps=eps, tol=FD_RTOL)
    assert rep.passed, str(rep)
    assert {r.name for r in rep.rows} >= set(m.params) | {"x"}


def test_gradcheck_float32_model_via_float64_copy():
    m = small(dtype="float32")
    x = data(m, 3, np.random.default_rng(6))
    rep = sv.gradcheck(m, x, n_samples=2, objective="iwae", as_float64=True, tol=FD_RTOL)
    assert rep.passed, str(rep)
    assert m.dtype == np.float32


@st.composite
def hvae_cases(draw):
    widths = st.lists(st.integers(1, 8), min_size=0, max_size=2).map(tuple)
    return dict(
        D=draw(st.integers(1, 6)), d1=draw(st.integers(1, 3)), d2=draw(st.integers(1, 3)),
        hidden=(draw(widths), draw(widths)), B=draw(st.integers(1, 4)), K=draw(st.integers(1, 3)),
        beta=draw(st.floats(0, 2, allow_nan=False, allow_infinity=False, allow_subnormal=False)),
        activation=draw(st.sampled_from(["tanh", "softplus", "sigmoid", "elu", "relu",
                                         "leaky_relu"])),
        likelihood=draw(st.sampled_from([("bernoulli", 1.0), ("gaussian", 0.5),
                                         ("gaussian", "learned")])),
        objective=draw(st.sampled_from(["elbo", "iwae"])),
        seed=draw(st.integers(0, 2**32 - 1)))


@given(hvae_cases())
def test_property_loss_and_gradients(case):
    rng = np.random.default_rng(case["seed"])
    lik, ov = case["likelihood"]
    m = HVAE(case["D"], latent_dims=(case["d1"], case["d2"]), hidden_dims=case["hidden"],
             activation=case["activation"], likelihood=lik, output_var=ov,
             seed=case["seed"] % 1000)
    randomize(m, rng)
    x = data(m, case["B"], rng)
    eps = m.draw_eps(case["K"], case["B"], rng)
    ref, min_pre = ref_hvae(m, x, eps, beta=case["beta"], objective=case["objective"])
    if case["activation"] in KINKED:
        assume(min_pre > 1e-4)       # finite differences must not straddle a kink
    # central differences carry roundoff ~ 1e-16 |loss| / h = 1e-10 |loss|: a drawn network whose
    # loss is huge (a chain of linear heads can give exp(-logvar) ~ 1e6) cannot be checked to 1e-6
    assume(np.abs(ref).max() < 100)
    r = m.forward(x, n_samples=case["K"], eps=eps, objective=case["objective"],
                  beta=case["beta"])
    np.testing.assert_allclose(r.per_example, ref, rtol=RTOL[F64], atol=RTOL[F64])
    rep = sv.gradcheck(m, x, n_samples=case["K"], beta=case["beta"],
                       objective=case["objective"], eps=eps, tol=FD_RTOL, wrt=("params", "x"))
    assert rep.passed, str(rep)


# ====================================================================== bad input
@pytest.mark.parametrize("latent_dims,exc", [
    ((3,), ValueError), ((3, 2, 1), ValueError), ((3, 0), ValueError), ((-1, 2), ValueError),
    ((2.5, 1), TypeError), ((True, 2), TypeError), (3, TypeError), ("32", TypeError),
])
def test_bad_latent_dims(latent_dims, exc):
    with pytest.raises(exc, match="latent_dims"):
        HVAE(5, latent_dims=latent_dims, hidden_dims=((3,), (2,)))


@pytest.mark.parametrize("hidden_dims,exc", [
    (((3,),), ValueError), ((3, 2), TypeError), (((3,), (0,)), ValueError), ("ab", TypeError),
])
def test_bad_hidden_dims(hidden_dims, exc):
    with pytest.raises(exc, match="hidden_dims"):
        HVAE(5, latent_dims=(2, 1), hidden_dims=hidden_dims)


def test_bad_eps():
    m = small()
    rng = np.random.default_rng(0)
    x = data(m, 4, rng)
    e1, e2 = m.draw_eps(2, 4, rng)
    cases = [
        (e1, TypeError, r"eps must be a pair \(eps1, eps2\)"),
        ((e1,), TypeError, "eps must be a pair"),
        ((e1, e2, e2), TypeError, "eps must be a pair"),
        ((e1, e1), ValueError, r"eps\[1\] must have shape \(2, 4, 2\)"),
        ((e2, e2), ValueError, r"eps\[0\] must have shape \(2, 4, 3\)"),
        ((e1[:1], e2[:1]), ValueError, r"eps\[0\] must have shape \(2, 4, 3\)"),
        ((e1.astype(np.float32), e2), ValueError, r"eps\[0\] must have dtype float64"),
        ((e1, e2 * np.nan), ValueError, r"eps\[1\] must be finite"),
        ((e1, list(e2)), TypeError, r"eps\[1\] must be a numpy.ndarray"),
    ]
    for eps, exc, match in cases:
        with pytest.raises(exc, match=match):
            m.loss_and_grads(x, n_samples=2, eps=eps)
        with pytest.raises(exc, match=match):
            m.loss(x, n_samples=2, eps=eps, objective="iwae")


def test_other_bad_input():
    m = small()
    x = data(m, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="free_bits must be 0 for HVAE"):
        m.loss_and_grads(x, free_bits=0.1)
    with pytest.raises(ValueError, match="y must be None for HVAE"):
        m.loss(x, y=np.zeros(3, int))
    with pytest.raises(ValueError, match=r"z1 must have shape \(any, 3\)"):
        m.decode(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"z2 must have shape \(any, 2\)"):
        m.prior_z1(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="x must lie in"):
        m.encode(x + 2)
    with pytest.raises(TypeError, match="model must be an HVAE"):
        active_units_per_layer(VAE(5, hidden_dims=(3,), latent_dim=2), x)
    with pytest.raises(ValueError, match="y_train must be None for HVAE"):
        fit(m, x, y_train=np.zeros(3, int), epochs=1, progress=False)


# ====================================================================== likelihood estimate
def test_log_likelihood_is_the_iw_bound_with_drawn_noise():
    m = small()
    x = data(m, 3, np.random.default_rng(8))
    est, se = m.log_likelihood(x, k=40, rng=np.random.default_rng(9), return_stderr=True)
    eps = m.draw_eps(40, 3, np.random.default_rng(9))
    ref, _ = ref_hvae(m, x, eps, objective="iwae")
    np.testing.assert_allclose(est, -ref, rtol=RTOL[F64])
    logw = m.log_weights(x, 40, eps=eps)
    w = np.exp(logw - logw.max(axis=0))
    w /= w.sum(axis=0)
    np.testing.assert_allclose(se, np.sqrt((40 * (w ** 2).sum(axis=0) - 1) / 40), rtol=1e-10)


def test_log_likelihood_approaches_the_exact_marginal():
    """d1 = d2 = 1: log p(x) = log of the double integral of p(x|z1) p(z1|z2) p(z2), by a
    midpoint rule on a grid; the k = 4000 estimate (in chunks) lies within 4 standard errors,
    and the ELBO below it."""
    m = small(latent=(1, 1), hidden=((4,), (3,)))
    x = data(m, 2, np.random.default_rng(11))
    p = m.params
    g = np.linspace(-9, 9, 901)
    h = g[1] - g[0]
    z1, z2 = np.meshgrid(g, g, indexing="ij")                 # (n1, n2)
    mp1, lvp1 = ref_gaussian(p, "p1", z2.reshape(-1, 1), m.activation, [])
    log_joint_z = (ref_log_normal(z1.reshape(-1, 1), mp1, lvp1)
                   + ref_log_normal(z2.reshape(-1, 1), 0.0, 0.0))          # (n1 n2,)
    ll = ref_loglik(m, p, x[:, None, :], g[None, :, None], [])            # (B, n1)
    log_joint = ll[:, :, None] + log_joint_z.reshape(g.size, g.size)[None]  # (B, n1, n2)
    mx = log_joint.max(axis=(1, 2), keepdims=True)
    exact = mx[:, 0, 0] + np.log(np.exp(log_joint - mx).sum(axis=(1, 2)) * h * h)
    est, se = m.log_likelihood(x, k=4000, rng=np.random.default_rng(12), return_stderr=True,
                               max_rows=1000)
    assert np.all(np.abs(est - exact) <= 4 * se), (est, exact, se)
    elbo = m.elbo(x, n_samples=4000, rng=np.random.default_rng(13))
    assert np.all(elbo < exact)


# ====================================================================== sampling and active units
def test_sample_goes_down_the_chain():
    m = small()
    s = m.sample(5, rng=np.random.default_rng(0))
    rng = np.random.default_rng(0)
    z2 = rng.standard_normal((5, 2))
    mp1, lvp1 = ref_gaussian({k: v for k, v in m.params.items()}, "p1", z2, m.activation, [])
    z1 = mp1 + np.exp(lvp1 / 2) * rng.standard_normal((5, 3))
    c = ref_mlp(m.params, "dec", z1, m.activation, [])
    mean = 1 / (1 + np.exp(-(c @ m.params["dec.W_out"] + m.params["dec.b_out"])))
    np.testing.assert_allclose(s, mean, rtol=1e-12)


def test_active_units_per_layer():
    """The top layer's E_q[z2|x] = E_{z1 ~ q(z1|x)}[mu_q2(z1)] by Monte Carlo, replayed here from
    the same seeded draws with the reference networks."""
    m = small(D=6)
    x = data(m, 50, np.random.default_rng(1))
    n = 40
    (au1, au2), (var1, var2) = active_units_per_layer(m, x, n_samples=n, rng=3,
                                                      return_variance=True)
    mu1, lv1 = ref_gaussian(m.params, "q1", x, m.activation, [])
    eps = np.random.default_rng(3).standard_normal((n,) + mu1.shape)
    mu2, _ = ref_gaussian(m.params, "q2", mu1 + np.exp(lv1 / 2) * eps, m.activation, [])
    # the n-sample means' variance over x, less the Monte Carlo noise (1 - 1/B) mean s2 / n
    B = x.shape[0]
    want = np.maximum(mu2.mean(axis=0).var(axis=0)
                      - (1 - 1 / B) * mu2.var(axis=0, ddof=1).mean(axis=0) / n, 0.0)
    np.testing.assert_allclose(var1, mu1.var(axis=0), rtol=1e-12)
    np.testing.assert_allclose(var2, want, rtol=1e-10)
    assert au1 == int((mu1.var(axis=0) > 0.01).sum()) and au2 == int((want > 0.01).sum())
    assert active_units_per_layer(m, x, threshold=0.0) == (3, 2)
    assert active_units_per_layer(m, x, threshold=1e6) == (0, 0)
    assert active_units_per_layer(m, x, n_samples=n, rng=3) == (au1, au2), "seeded"
    chunked = active_units_per_layer(m, x, n_samples=n, rng=3, return_variance=True,
                                     max_rows=3 * n)[1][1]
    assert np.all(np.isfinite(chunked)) and chunked.shape == var2.shape


def test_top_layer_active_units_average_over_q_z1_not_the_plug_in():
    """A tanh HVAE where the two definitions differ: q(z1|x) has std 5 around mu_q1 in
    [-0.5, 0.5]; z2 unit 0 is tanh(10 z1), which the plug-in mu_q2(mu_q1(x)) sees swing over
    [-1, 1], but whose average over q(z1|x) moves by about +-0.08 (inactive); unit 1 is
    10 tanh(0.1 z1), nearly linear (active either way). Reference: Gauss-Hermite quadrature."""
    m = HVAE(1, latent_dims=(1, 2), hidden_dims=((), (2,)), activation="tanh", seed=0)
    p = m.params
    for key in p:
        p[key][...] = 0.0
    p["q1.W_mu"][...] = 1.0
    p["q1.b_mu"][...] = -0.5                       # mu_q1 = x - 0.5
    p["q1.b_logvar"][...] = np.log(25.0)           # std 5
    p["q2.W0"][...] = [[10.0, 0.1]]
    p["q2.W_mu"][...] = [[1.0, 0.0], [0.0, 10.0]]
    x = np.linspace(0.0, 1.0, 41)[:, None]
    (au1, au2), (_, var2) = active_units_per_layer(m, x, n_samples=40000, rng=0,
                                                   return_variance=True)
    mu1 = x[:, 0] - 0.5
    plug_in = np.stack([np.tanh(10 * mu1), 10 * np.tanh(0.1 * mu1)], axis=1)
    assert int((plug_in.var(axis=0) > 0.01).sum()) == 2
    # E over z1 ~ N(mu1, 25) on a fine grid (tanh(10 z1) is nearly a step: no Gauss-Hermite)
    u = np.linspace(-10.0, 10.0, 40001)                             # z1 = mu1 + 5 u
    w = np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi) * (u[1] - u[0])
    z1 = mu1[:, None] + 5.0 * u[None, :]
    e_z2 = np.stack([(np.tanh(10 * z1) * w).sum(1), (10 * np.tanh(0.1 * z1) * w).sum(1)], axis=1)
    ref_var = e_z2.var(axis=0)
    assert ref_var[0] < 0.01 < ref_var[1]
    # the bias-corrected Monte Carlo estimate; its noise is dominated by the cross term, with
    # s.d. about 2 sqrt(Var_x E * Var_q / (n B)): 2e-5 for unit 0, 1.7e-3 for unit 1 (Var_q ~ 20)
    assert np.all(np.abs(var2 - ref_var) <= [2e-4, 5e-3]), (var2, ref_var)
    assert (au1, au2) == (1, 1)


# ====================================================================== checkpoints and training
def test_save_load_round_trip(tmp_path, dtype):
    m = small(dtype=dtype.name, likelihood="gaussian", output_var="learned")
    m2 = HVAE.load(m.save(tmp_path / "hvae"))
    assert m2.config == m.config and m2.dtype == dtype
    assert list(m2.params) == list(m.params)
    for key in m.params:
        np.testing.assert_array_equal(m2.params[key], m.params[key], err_msg=key)
    x = data(m, 3, np.random.default_rng(0))
    eps = m.draw_eps(2, 3, np.random.default_rng(1))
    assert m2.loss(x, n_samples=2, eps=eps) == m.loss(x, n_samples=2, eps=eps)


def test_load_as_wrong_class(tmp_path):
    hpath = small().save(tmp_path / "hvae")
    vpath = VAE(5, hidden_dims=(3,), latent_dim=2).save(tmp_path / "vae")
    cpath = CVAE(5, 3, hidden_dims=(3,), latent_dim=2).save(tmp_path / "cvae")
    for cls, path, held in ((VAE, hpath, "hvae"), (CVAE, hpath, "hvae"), (HVAE, vpath, "vae"),
                            (HVAE, cpath, "cvae")):
        with pytest.raises(ValueError, match=f"holds a '{held}' model; {cls.__name__}.load"):
            cls.load(path)


# The training and backend tests that every model class shares are parametrized over the
# classes in tests/test_backends.py.
