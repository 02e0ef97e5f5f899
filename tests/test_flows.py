"""FlowVAE (scratchvae/flows.py): the inverse of the planar flow, and the model through its
public API."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scratchvae.distributions import planar_inverse
from scratchvae.kernels import numpy_ref

SEEDS = st.integers(0, 2**32 - 1)


# ---------------------------------------------------------------- the inverse of the flow
def _flow_inputs(rng, K, B, d, L, u_scale=1.0):
    z0 = rng.standard_normal((K, B, d)) * 2.0
    u = rng.standard_normal((B, L, d)) * u_scale
    w = rng.standard_normal((B, L, d))
    w += np.where(w < 0, -0.3, 0.3)
    b = rng.standard_normal((B, L))
    return z0, u, w, b


@given(cfg=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3), st.integers(0, 16)),
       seed=SEEDS, u_scale=st.sampled_from([0.3, 1.0, 3.0]))
def test_planar_inverse_recovers_the_base_point(cfg, seed, u_scale):
    """planar_inverse(planar_flow(z0)) = z0 and planar_flow(planar_inverse(zL)) = zL, for up to
    16 steps with large u (strongly bent steps, where a plain Newton iteration cycles)."""
    z0, u, w, b = _flow_inputs(np.random.default_rng(seed), *cfg, u_scale=u_scale)
    zL, _, _, _, uh = numpy_ref.planar_flow_fwd(z0, u, w, b)
    back = planar_inverse(zL, uh, w, b)
    assert back.shape == z0.shape and back.dtype == np.float64
    scale = 1.0 + np.abs(zL).max()
    np.testing.assert_allclose(numpy_ref.planar_flow_fwd(back, u, w, b)[0], zL, rtol=0,
                               atol=1e-11 * scale)
    np.testing.assert_allclose(back, z0, rtol=0, atol=1e-7 * scale)


def test_planar_inverse_near_the_invertibility_bound():
    """A step with w . u = -30 (w . uh = -1 + 1e-13: nearly flat along w) still inverts: the
    bracket keeps the solver inside, and the forward map of the result is zL."""
    rng = np.random.default_rng(4)
    z0, u, w, b = _flow_inputs(rng, 3, 2, 2, 3)
    u[:, 1] = -30.0 * w[:, 1] / (w[:, 1] * w[:, 1]).sum(-1, keepdims=True)
    zL, _, _, _, uh = numpy_ref.planar_flow_fwd(z0, u, w, b)
    back = planar_inverse(zL, uh, w, b)
    np.testing.assert_allclose(numpy_ref.planar_flow_fwd(back, u, w, b)[0], zL, rtol=0, atol=1e-12)


def test_planar_inverse_keeps_float32():
    z0, u, w, b = (a.astype(np.float32) for a in _flow_inputs(np.random.default_rng(1), 2, 3, 2, 4))
    zL, _, _, _, uh = numpy_ref.planar_flow_fwd(z0, u, w, b)
    back = planar_inverse(zL, uh, w, b)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, z0, rtol=0, atol=1e-3)


# ---------------------------------------------------------------- the model
import scratchvae as sv  # noqa: E402
from tests import reference  # noqa: E402
from tests.strategies import SMOOTH_ACTIVATIONS, finite  # noqa: E402

FlowVAE = sv.FlowVAE


@st.composite
def flow_cases(draw, max_flow=4):
    """A small FlowVAE problem: (constructor kwargs, call kwargs, data seed)."""
    likelihood = draw(st.sampled_from(["bernoulli", "gaussian"]))
    output_var = 1.0
    if likelihood == "gaussian":
        output_var = draw(st.one_of(st.just("learned"), finite(0.5, 2.0)))
    kwargs = dict(
        input_dim=draw(st.integers(1, 6)),
        hidden_dims=tuple(draw(st.lists(st.integers(1, 6), min_size=0, max_size=2))),
        latent_dim=draw(st.integers(1, 3)),
        flow_length=draw(st.integers(0, max_flow)),
        activation=draw(st.sampled_from(SMOOTH_ACTIVATIONS)),
        likelihood=likelihood, output_var=output_var, seed=draw(st.integers(0, 2**31 - 1)))
    call = dict(n_samples=draw(st.integers(1, 3)), beta=draw(finite(0.0, 2.0)),
                objective=draw(st.sampled_from(["elbo", "iwae"])))
    return kwargs, call, draw(SEEDS), draw(st.integers(1, 4))


def _build(kwargs, data_seed, batch, dtype="float64", backend="numpy"):
    """The model with its parameters perturbed from the initialisation (biases non-zero), x in
    the likelihood's support and eps, all from ``data_seed``."""
    model = FlowVAE(**kwargs, dtype=dtype, backend=backend)
    rng = np.random.default_rng(data_seed)
    for key, v in model.params.items():
        noise = rng.uniform(-1.0, 1.0, v.shape) if key == "dec.logvar" else 0.1 * rng.standard_normal(v.shape)
        v[...] = (v.astype(np.float64) + noise).astype(v.dtype)
    D = kwargs["input_dim"]
    x = rng.random((batch, D)) if kwargs["likelihood"] == "bernoulli" else rng.standard_normal((batch, D))
    return model, x.astype(dtype), rng


def _eps(model, rng, K, B):
    return rng.standard_normal((K, B, model.latent_dim)).astype(model.dtype)


@given(case=flow_cases())
def test_loss_matches_the_reference_forward(case):
    """The batch loss and its per-example values against tests/reference.py's FlowVAE, written
    one sample at a time with the textbook log-det."""
    kwargs, call, seed, B = case
    model, x, rng = _build(kwargs, seed, B)
    eps = _eps(model, rng, call["n_samples"], B)
    r = model.forward(x, eps=eps, n_samples=call["n_samples"], objective=call["objective"])
    loss = model.loss(x, eps=eps, **call)
    want = reference.flow_vae_forward(model.params, x, eps, flow_length=kwargs["flow_length"],
                                      activation=kwargs["activation"], likelihood=kwargs["likelihood"],
                                      output_var=kwargs["output_var"], beta=call["beta"],
                                      objective=call["objective"])
    np.testing.assert_allclose(loss, want["loss"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(r.ll, want["ll"], rtol=1e-10, atol=1e-10)
    if call["objective"] == "elbo":
        per = model.forward(x, eps=eps, n_samples=call["n_samples"])
        np.testing.assert_allclose(-(per.ll.mean(0)) + call["beta"] * per.kl, want["per_example"],
                                   rtol=1e-10, atol=1e-10)


@given(case=flow_cases())
def test_whole_model_gradients_match_finite_differences(case):
    """sv.gradcheck with fixed eps: every parameter tensor entry by entry, the input x, and two
    random directions, on drawn architectures, flow lengths, K, beta, likelihoods, objectives."""
    kwargs, call, seed, B = case
    model, x, rng = _build(kwargs, seed, B)
    eps = _eps(model, rng, call["n_samples"], B)
    # A flow step near singular (1 + u^T psi near 0) sends the loss and its curvature up by
    # orders of magnitude: at a loss of 2e4 and a gradient of 6e7, central differences at
    # h = 1e-6 carried a truncation error of 4e-6 (4e-4 at h = 1e-5, 4e-8 at h = 1e-7: the h^2
    # of truncation, not a wrong gradient). Such draws are left out, judged by the reference.
    want = reference.flow_vae_forward(model.params, x, eps, flow_length=kwargs["flow_length"],
                                      activation=kwargs["activation"],
                                      likelihood=kwargs["likelihood"],
                                      output_var=kwargs["output_var"], beta=call["beta"],
                                      objective=call["objective"])
    assume(abs(want["loss"]) < 1e3)
    report = sv.gradcheck(model, x, eps=eps, wrt=("params", "x"), **call)
    assert report.passed, str(report)


def test_gradients_of_a_fixed_case_with_a_long_flow():
    kwargs = dict(input_dim=5, hidden_dims=(4, 3), latent_dim=2, flow_length=6, activation="tanh",
                  likelihood="gaussian", output_var="learned", seed=3)
    model, x, rng = _build(kwargs, 11, 3)
    for objective in ("elbo", "iwae"):
        report = sv.gradcheck(model, x, eps=_eps(model, rng, 2, 3), beta=0.5, objective=objective,
                              n_samples=2, wrt=("params", "x"))
        assert report.passed, str(report)
        assert {r.name for r in report.rows} >= {"enc.W_flow_u", "enc.b_flow_w", "enc.W_flow_b"}


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_numba_backend_matches_numpy(objective, dtype):
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=3, activation="tanh",
                  likelihood="bernoulli", seed=1)
    ref, x, rng = _build(kwargs, 2, 4, dtype=dtype.name, backend="numpy")
    eps = _eps(ref, rng, 3, 4)
    fast = FlowVAE(**kwargs, dtype=dtype.name, backend="numba")
    fast.params = {key: v.copy() for key, v in ref.params.items()}
    l_ref, g_ref = ref.loss_and_grads(x, n_samples=3, eps=eps, objective=objective, beta=0.8)
    l_fast, g_fast = fast.loss_and_grads(x, n_samples=3, eps=eps, objective=objective, beta=0.8)
    tol = 1e-10 if dtype == np.float64 else 2e-4
    assert abs(l_ref - l_fast) <= tol * max(1.0, abs(l_ref))
    for key in g_ref:
        assert g_fast[key].dtype == dtype, key
        np.testing.assert_allclose(g_fast[key], g_ref[key], rtol=tol, atol=tol, err_msg=key)


def test_float32_model_computes_in_float32_and_agrees_with_float64():
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=4, activation="tanh",
                  likelihood="bernoulli", seed=1)
    m64, x, rng = _build(kwargs, 5, 3)
    eps = _eps(m64, rng, 2, 3)
    m32 = m64.astype("float32")
    l32, g32 = m32.loss_and_grads(x.astype(np.float32), n_samples=2, eps=eps.astype(np.float32))
    l64, g64 = m64.loss_and_grads(x, n_samples=2, eps=eps)
    assert abs(l32 - l64) <= 1e-4 * max(1.0, abs(l64))
    for key in g64:
        assert g32[key].dtype == np.float32, key
        np.testing.assert_allclose(g32[key], g64[key], rtol=1e-3, atol=1e-4, err_msg=key)


def test_same_eps_gives_identical_bits():
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=3, activation="relu",
                  likelihood="bernoulli", seed=1)
    model, x, rng = _build(kwargs, 2, 4, backend="numba")
    eps = _eps(model, rng, 2, 4)
    l1, g1 = model.loss_and_grads(x, n_samples=2, eps=eps)
    g1 = {key: v.copy() for key, v in g1.items()}
    l2, g2 = model.loss_and_grads(x, n_samples=2, eps=eps)
    assert l1 == l2
    assert all(g1[key].tobytes() == g2[key].tobytes() for key in g1)


def test_zero_steps_give_the_vae_importance_weights():
    """flow_length = 0: q is the base Gaussian, so the log importance weights (and the IWAE
    loss) equal the VAE's with the same parameters and noise."""
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=4)
    flow, x, rng = _build(dict(kwargs, flow_length=0, likelihood="bernoulli"), 3, 4)
    vae = sv.VAE(**kwargs, backend="numpy")
    vae.params = {key: flow.params[key] for key in vae.params}
    eps = _eps(flow, rng, 5, 4)
    np.testing.assert_allclose(flow.log_weights(x, 5, eps=eps), vae.log_weights(x, 5, eps=eps),
                               rtol=1e-12, atol=1e-12)
    assert abs(flow.loss(x, n_samples=5, eps=eps, objective="iwae")
               - vae.loss(x, n_samples=5, eps=eps, objective="iwae")) < 1e-12


def test_parameters_are_in_the_documented_order_and_shapes():
    model = FlowVAE(7, hidden_dims=(5, 4), latent_dim=3, flow_length=2, likelihood="gaussian",
                    output_var="learned")
    keys = list(model.params)
    assert keys == ["enc.W0", "enc.b0", "enc.W1", "enc.b1", "enc.W_mu", "enc.b_mu", "enc.W_logvar",
                    "enc.b_logvar", "enc.W_flow_u", "enc.b_flow_u", "enc.W_flow_w", "enc.b_flow_w",
                    "enc.W_flow_b", "enc.b_flow_b", "dec.W0", "dec.b0", "dec.W1", "dec.b1",
                    "dec.W_out", "dec.b_out", "dec.logvar"]
    shapes = {key: v.shape for key, v in model.params.items()}
    assert shapes["enc.W_flow_u"] == shapes["enc.W_flow_w"] == (4, 6)
    assert shapes["enc.W_flow_b"] == (4, 2) and shapes["enc.b_flow_b"] == (2,)
    assert np.all(model.params["enc.b_flow_w"] != 0)  # ||w|| > 0 even where a_L = 0
    assert model.prior == "gaussian" and model.backend == "numba"


# ---------------------------------------------------------------- the posterior
@pytest.mark.parametrize("L", [0, 2, 8])
def test_sample_posterior_log_q_matches_posterior_log_density(L):
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=L, activation="tanh",
                  likelihood="bernoulli", seed=2)
    model, x, _ = _build(kwargs, 7, 3)
    z, log_q = model.sample_posterior(x, 4, np.random.default_rng(0))
    assert z.shape == (4, 3, 2) and log_q.shape == (4, 3) and z.dtype == log_q.dtype == np.float64
    for i in range(4):
        cross = model.posterior_log_density(z[i], x)                # (3 z rows, 3 x rows)
        np.testing.assert_allclose(np.diag(cross), log_q[i], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("L", [1, 6])
def test_posterior_density_integrates_to_one(L):
    """The change of variables is a density: int q(z|x) dz = 1, by the trapezoid rule on a fine
    grid of a 2-D latent (the flow's mass stays inside the box: |zL - z0| <= sum_i |uh_i|)."""
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=L, activation="tanh",
                  likelihood="bernoulli", seed=5)
    model, x, _ = _build(kwargs, 9, 2)
    g = np.linspace(-9.0, 9.0, 361)
    zz = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    q = np.exp(model.posterior_log_density(zz, x)).reshape(361, 361, 2)
    mass = np.trapezoid(np.trapezoid(q, g, axis=1), g, axis=0)
    np.testing.assert_allclose(mass, 1.0, atol=2e-4)


def test_log_likelihood_with_the_flow_proposal_agrees_with_quadrature():
    """The importance-weighted estimate (flow as proposal) is within 4 standard errors of log p(x)
    computed by a trapezoid sum of the reference decoder over a fine grid of the 2-D latent, and
    above the ELBO."""
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=3, activation="tanh",
                  likelihood="bernoulli", seed=2)
    model, x, _ = _build(kwargs, 7, 3)
    ll, se = model.log_likelihood(x, k=4000, rng=np.random.default_rng(1), return_stderr=True)
    g = np.linspace(-8.0, 8.0, 321)
    zz = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    out, _ = reference.decoder(model.params, zz, "tanh")
    log_joint = reference.bernoulli_loglik(x[:, None, :], out[None]) + reference.log_standard_normal(zz)
    h = g[1] - g[0]
    lw = np.full(g.size, np.log(h))
    lw[[0, -1]] -= np.log(2.0)
    exact = reference.logsumexp((log_joint + (lw[:, None] + lw[None, :]).reshape(-1)).T, axis=0)
    assert ll.shape == (3,) and np.all(se > 0)
    assert np.all(np.abs(ll - exact) <= 4 * se + 1e-3), (ll, exact, se)
    assert np.all(ll >= model.elbo(x, n_samples=4000, rng=np.random.default_rng(2)))


# ---------------------------------------------------------------- checkpoints, fit, bad input
def test_save_and_load_round_trip(tmp_path):
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=3, activation="tanh",
                  likelihood="gaussian", output_var="learned", seed=2)
    model, x, rng = _build(kwargs, 7, 3)
    path = model.save(tmp_path / "flow.npz")
    back = FlowVAE.load(path)
    assert back.config == model.config and back.flow_length == 3
    assert list(back.params) == list(model.params)
    for key in model.params:
        np.testing.assert_array_equal(back.params[key], model.params[key], err_msg=key)
    eps = _eps(model, rng, 2, 3)
    assert back.loss(x, n_samples=2, eps=eps) == model.loss(x, n_samples=2, eps=eps)
    with pytest.raises(ValueError, match="flow"):
        sv.VAE.load(path)
    vae_path = sv.VAE(6, hidden_dims=(5,), latent_dim=2).save(tmp_path / "vae.npz")
    with pytest.raises(ValueError, match="vae"):
        FlowVAE.load(vae_path)


def test_fit_reduces_the_loss_on_tiny_data():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 8)) < np.linspace(0.1, 0.9, 8)).astype(np.float64)
    model = FlowVAE(8, hidden_dims=(6,), latent_dim=2, flow_length=3, activation="tanh", seed=0)
    before = model.loss(x, n_samples=20, rng=np.random.default_rng(1))
    history = sv.fit(model, x, epochs=15, batch_size=10, optimizer=sv.Adam(lr=1e-2), progress=False)
    after = model.loss(x, n_samples=20, rng=np.random.default_rng(1))
    assert np.all(np.isfinite(history["train_loss"]))
    assert after < before - 0.5


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (2.5, TypeError), ("2", TypeError)])
def test_bad_flow_length_names_the_argument(bad, exc):
    with pytest.raises(exc, match="flow_length"):
        FlowVAE(4, hidden_dims=(3,), latent_dim=2, flow_length=bad)


def test_free_bits_are_refused_with_a_message():
    model = FlowVAE(4, hidden_dims=(3,), latent_dim=2, flow_length=1)
    with pytest.raises(ValueError, match="free_bits"):
        model.loss_and_grads(np.full((2, 4), 0.5), free_bits=0.1)


# ---------------------------------------------------------------- cuda, in the simulator
from numba import config  # noqa: E402


@pytest.fixture
def small_blocks(monkeypatch):
    from scratchvae.kernels import _jit
    monkeypatch.setattr(_jit, "TPB", 4)
    monkeypatch.setattr(_jit, "TPB_1D", 8)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba loads")
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_cuda_loss_and_grads_match_numpy_in_the_simulator(objective, small_blocks):
    kwargs = dict(input_dim=4, hidden_dims=(3,), latent_dim=2, flow_length=2, activation="tanh",
                  likelihood="bernoulli", seed=1)
    ref, x, rng = _build(kwargs, 2, 2)
    eps = _eps(ref, rng, 2, 2)
    l_ref, g_ref = ref.loss_and_grads(x, n_samples=2, eps=eps, objective=objective, beta=0.7)
    g_ref = {key: v.copy() for key, v in g_ref.items()}
    ref.backend = "cuda"
    l_got, g_got = ref.loss_and_grads(x, n_samples=2, eps=eps, objective=objective, beta=0.7)
    assert abs(l_got - l_ref) <= 1e-12 * max(1.0, abs(l_ref))
    for key in g_ref:
        np.testing.assert_allclose(g_got[key], g_ref[key], rtol=1e-10,
                                   atol=1e-12, err_msg=key)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba loads")
def test_cuda_fit_and_posterior_match_numpy_in_the_simulator(small_blocks):
    def train(backend):
        model = FlowVAE(4, hidden_dims=(3,), latent_dim=2, flow_length=2, activation="tanh",
                        seed=2, backend=backend)
        x = np.random.default_rng(0).random((4, 4))
        sv.fit(model, x, epochs=2, batch_size=2, optimizer=sv.Adam(lr=1e-2), seed=1, progress=False)
        z, log_q = model.sample_posterior(x[:2], 2, np.random.default_rng(3))
        return model.params, log_q, model.posterior_log_density(z[0], x[:2])
    ref, got = train("numpy"), train("cuda")
    for key in ref[0]:
        np.testing.assert_allclose(got[0][key], ref[0][key], rtol=1e-10, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- evaluate: the gap, measured exactly
from scratchvae import evaluate  # noqa: E402


def _small_flow(L=3, seed=2):
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=L, activation="tanh",
                  likelihood="bernoulli", seed=seed)
    return _build(kwargs, 7, 3)


def _reference_log_px(model, x, n=321, bound=8.0):
    """log p(x) by a trapezoid sum of the reference decoder over [-bound, bound]^2."""
    g = np.linspace(-bound, bound, n)
    zz = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    out, _ = reference.decoder(model.params, zz, model.activation)
    log_joint = reference.bernoulli_loglik(x[:, None, :], out[None]) + reference.log_standard_normal(zz)
    lw = np.full(n, np.log(g[1] - g[0]))
    lw[[0, -1]] -= np.log(2.0)
    return reference.logsumexp((log_joint + (lw[:, None] + lw[None, :]).reshape(-1)).T, axis=0)


def test_exact_log_likelihood_of_a_flow_model_is_the_decoders_integral():
    model, x, _ = _small_flow()
    np.testing.assert_allclose(evaluate.exact_log_likelihood(model, x, tol=1e-9),
                               _reference_log_px(model, x), rtol=0, atol=1e-6)


def test_mc_elbo_gap_is_log_px_minus_the_sampled_elbo():
    """For a FlowVAE: gap = log p(x) - mean log w, its s.e. that of the mean; for a VAE the sampled
    gap agrees with elbo_gap's closed-form one within 4 standard errors."""
    model, x, _ = _small_flow()
    g = evaluate.mc_elbo_gap(model, x, n_samples=3000, rng=np.random.default_rng(0))
    logw = model.log_weights(x, 3000, rng=np.random.default_rng(0))
    np.testing.assert_allclose(g.elbo, logw.mean(0), rtol=1e-12)
    np.testing.assert_allclose(g.elbo_stderr, logw.std(0, ddof=1) / np.sqrt(3000), rtol=1e-12)
    np.testing.assert_allclose(g.gap, g.log_px - g.elbo, rtol=1e-12)
    assert abs(g.mean_stderr - np.sqrt((g.elbo_stderr ** 2).sum()) / 3) < 1e-15
    assert np.all(g.gap > -4 * g.elbo_stderr)            # KL(q || p(z|x)) >= 0
    vae = sv.VAE(6, hidden_dims=(5,), latent_dim=2, activation="tanh", seed=2)
    exact = evaluate.elbo_gap(vae, x, tol=1e-9)
    mc = evaluate.mc_elbo_gap(vae, x, n_samples=4000, rng=np.random.default_rng(1), log_px=exact.log_px)
    assert np.all(np.abs(mc.gap - exact.gap) <= 4 * mc.elbo_stderr + 1e-9)


def test_elbo_gap_refuses_a_flow_model_and_points_to_the_sampled_one():
    model, x, _ = _small_flow()
    with pytest.raises(ValueError, match="mc_elbo_gap"):
        evaluate.elbo_gap(model, x)


def test_posterior_grid_normalises_on_its_grid_and_refuses_a_coarse_one():
    model, x, _ = _small_flow()
    g = np.linspace(-8.0, 8.0, 401)
    grid = evaluate.posterior_grid(model, x, (g, g))
    np.testing.assert_allclose(grid.log_px, _reference_log_px(model, x, n=401), atol=1e-9)
    np.testing.assert_allclose(grid.q_mass, 1.0, atol=1e-3)
    lw = np.log(g[1] - g[0]) * 2
    mass = np.exp(grid.log_posterior + lw).sum(axis=(1, 2))       # interior weights dominate
    np.testing.assert_allclose(mass, 1.0, atol=1e-3)
    with pytest.raises(ValueError, match=r"axes\[0\] is too coarse for the quadrature"):
        evaluate.posterior_grid(model, x, (np.linspace(-8, 8, 9), g))
    with pytest.raises(ValueError, match=r"axes\[1\] is too coarse"):   # 21 points, spacing 5
        evaluate.posterior_grid(model, x, (g, np.linspace(-50, 50, 21)))


def test_evaluation_report_of_a_flow_model_has_the_sampled_gap():
    model, x, _ = _small_flow()
    report = evaluate.evaluation_report(model, x, k=200, rng=np.random.default_rng(0),
                                        n_elbo_samples=20)
    assert report["gap"] == pytest.approx(report["exact_log_likelihood"] + report["neg_elbo"],
                                          abs=6 * report["gap_stderr"] + 0.05)
    assert report["gap_stderr"] > 0 and "exact_elbo" not in report
    text = evaluate.format_report(report)
    assert "(ELBO sampled)" in text and "exact log p(x)" in text


# ---------------------------------------------------------------- the command line
def test_cli_trains_evaluates_and_gradchecks_a_flow_model(tmp_path, capsys):
    from scratchvae import cli
    run = tmp_path / "run"
    assert cli.main(["train", "--model", "flow", "--flow-length", "2", "--latent-dim", "2",
                     "--hidden", "8", "--epochs", "1", "--out", str(run), "--quiet"]) in (0, None)
    model = FlowVAE.load(next(run.glob("*.npz")))
    assert model.flow_length == 2 and model.latent_dim == 2
    assert cli.main(["eval", "--checkpoint", str(run), "--k", "20", "--quiet"]) in (0, None)
    assert "(ELBO sampled)" in capsys.readouterr().out
    assert cli.main(["gradcheck", "--model", "flow", "--flow-length", "2", "--latent-dim", "2",
                     "--hidden", "3"]) in (0, None)


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "vae", "--flow-length", "2"], "--flow-length is for --model flow"),
    (["train", "--model", "flow", "--flow-length", "-1"], "flow-length"),
    (["train", "--model", "flow", "--free-bits", "0.5"], "--free-bits"),
])
def test_cli_refuses_bad_flow_options(argv, message, capsys):
    from scratchvae import cli
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_gradients_live_until_the_next_loss_and_grads():
    """The aliasing rule of the model base holds for the flow: the gradients are the model's
    buffers, reused by the next loss_and_grads (numba: no new arrays) and untouched by the
    posterior methods, which run on fresh arrays."""
    kwargs = dict(input_dim=6, hidden_dims=(5,), latent_dim=2, flow_length=3, activation="tanh",
                  likelihood="bernoulli", seed=1)
    model, x, rng = _build(kwargs, 2, 4, backend="numba")
    eps = _eps(model, rng, 2, 4)
    _, g1 = model.loss_and_grads(x, n_samples=2, eps=eps, objective="iwae")
    kept = {key: g.copy() for key, g in g1.items()}
    z, _ = model.sample_posterior(x, 3, np.random.default_rng(0))
    model.posterior_log_density(z[0], x)
    model.loss(x, n_samples=2, eps=2 * eps)
    model.log_likelihood(x, k=10, rng=np.random.default_rng(1))
    for key in g1:
        np.testing.assert_array_equal(g1[key], kept[key], err_msg=f"{key} changed")
    _, g2 = model.loss_and_grads(x, n_samples=2, eps=2 * eps, objective="iwae")
    assert all(g2[key] is g1[key] for key in g1), "a second call reuses the buffers"
