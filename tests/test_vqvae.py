"""The VQ-VAE: its quantiser pieces, the priors over codes, and the model.

Pieces (scratchvae.quantize): the forward against the reference formulas, the straight-through
backward as the exact gradient of its frozen surrogate (finite differences, float64), the EMA
step and restarts, the usage statistics. Priors (scratchvae.code_prior): normalised, fitted to
counts, sampled at their own frequencies.
"""
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import config

from scratchvae import quantize
from scratchvae.code_prior import CodePrior
from scratchvae.kernels import get_kernels
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP

BACKENDS = ["numpy", "numba",
            pytest.param("cuda", marks=[pytest.mark.cudasim, pytest.mark.skipif(
                not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")])]
SEEDS = st.integers(0, 2**32 - 1)


def _host(k, a):
    return np.asarray(k.to_host(a))


# ================================================================ the quantiser pieces
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(n=st.integers(1, 6), e=st.integers(1, 3), c=st.integers(1, 5), seed=SEEDS)
def test_quantize_forward_is_the_nearest_code_its_vector_and_distance(backend, n, e, c, seed):
    rng = np.random.default_rng(seed)
    z_e, codebook = rng.standard_normal((n, e)), rng.standard_normal((c, e))
    k = get_kernels(backend)
    z_q, idx, d2, cache = quantize.quantize_forward(z_e, codebook, k=k)
    want = ref.nearest_codes(z_e, codebook)
    np.testing.assert_array_equal(_host(k, idx), want)
    np.testing.assert_array_equal(_host(k, z_q), codebook[want])
    np.testing.assert_allclose(_host(k, d2), ((z_e - codebook[want]) ** 2).sum(axis=1), rtol=1e-13)
    assert cache.n_codes == c


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(n=st.integers(1, 6), e=st.integers(1, 3), c=st.integers(1, 5), seed=SEEDS)
def test_quantize_backward_is_the_gradient_of_the_frozen_surrogate(backend, n, e, c, seed):
    """With the codes idx0 and the stop-gradient values a0 = z_e, q0 = z_q frozen, the
    surrogate  S(z_e, codebook) = <dz_q, z_e> + sum_n dd_commit_n ||z_e_n - q0_n||^2
                                 + sum_n dd_code_n ||a0_n - codebook[idx0_n]||^2
    has gradients (dz_e, dcodebook) = quantize_backward(dz_q, dd_commit, dd_code): checked by
    central differences in float64."""
    rng = np.random.default_rng(seed)
    z_e, codebook = rng.standard_normal((n, e)), rng.standard_normal((c, e))
    dz_q, dd_commit, dd_code = rng.standard_normal((n, e)), rng.random(n), rng.random(n)
    k = get_kernels(backend)
    z_q, idx, _, cache = quantize.quantize_forward(z_e, codebook, k=k)
    idx0, a0, q0 = _host(k, idx).copy(), z_e.copy(), _host(k, z_q).copy()
    dz_e, dcodebook, counts = (_host(k, a) for a in quantize.quantize_backward(dz_q, dd_commit, dd_code, cache, k=k))

    def surrogate(z_e, codebook):
        return (np.sum(dz_q * z_e) + np.sum(dd_commit * ((z_e - q0) ** 2).sum(axis=1))
                + np.sum(dd_code * ((a0 - codebook[idx0]) ** 2).sum(axis=1)))

    inputs = {"z_e": z_e, "codebook": codebook}
    ref.assert_gradient_close(dz_e, ref.numerical_vjp(surrogate, inputs, "z_e", 1.0, FD_STEP), "dz_e", FD_RTOL)
    ref.assert_gradient_close(dcodebook, ref.numerical_vjp(surrogate, inputs, "codebook", 1.0, FD_STEP),
                              "dcodebook", FD_RTOL)
    np.testing.assert_array_equal(counts, np.bincount(idx0, minlength=c))


def test_usage_stats_on_hand_counts():
    s = quantize.usage_stats(np.array([2.0, 0.0, 2.0]))
    assert s == {"perplexity": pytest.approx(2.0, rel=1e-15), "usage": 2 / 3, "dead_codes": 1}
    s = quantize.usage_stats(np.array([0.0, 7.0, 0.0, 0.0]))
    assert s["perplexity"] == 1.0 and s["dead_codes"] == 3 and s["usage"] == 0.25
    p = np.array([1.0, 2.0, 3.0, 4.0])
    assert quantize.usage_stats(p)["perplexity"] == pytest.approx(
        np.exp(-np.sum(p / 10 * np.log(p / 10))), rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ema_update_moves_the_codebook_and_state_as_the_reference(backend):
    rng = np.random.default_rng(3)
    z_e, codebook = rng.standard_normal((7, 2)), rng.standard_normal((3, 2))
    k = get_kernels(backend)
    _, idx, _, cache = quantize.quantize_forward(z_e, codebook, k=k)
    _, _, counts = quantize.quantize_backward(np.zeros((7, 2)), np.zeros(7), np.zeros(7), cache, k=k)
    state = quantize.ema_init(codebook, k=k)
    np.testing.assert_array_equal(state.count, np.ones(3))
    np.testing.assert_array_equal(state.sum, codebook)
    target = codebook.copy()
    want = ref.codebook_ema(np.ones(3), codebook, z_e, _host(k, idx), 3, 0.9, quantize.EMA_EPS)
    quantize.ema_update(state, target, cache, counts, 0.9, k=k)
    np.testing.assert_allclose(state.count, want[0], rtol=1e-13)
    np.testing.assert_allclose(state.sum, want[1], rtol=1e-13)
    np.testing.assert_allclose(target, want[2], rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_dead_codes_moves_idle_codes_to_encoder_outputs(backend):
    rng = np.random.default_rng(4)
    z_e = rng.standard_normal((6, 2))
    codebook = np.array([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [0.1, 0.0]])
    k = get_kernels(backend)
    _, _, _, cache = quantize.quantize_forward(z_e, codebook, k=k)
    idle = np.array([0, 5, 2, 7])
    state = quantize.ema_init(codebook, k=k)
    n = quantize.restart_dead_codes(codebook, idle, 5, cache, np.random.default_rng(0), k=k, ema=state)
    assert n == 2
    np.testing.assert_array_equal(idle, [0, 0, 2, 0])
    np.testing.assert_array_equal(codebook[[0, 2]], [[0.0, 0.0], [60.0, 60.0]])   # not idle long enough
    rows = {tuple(r) for r in z_e}
    assert tuple(codebook[1]) in rows and tuple(codebook[3]) in rows
    assert tuple(codebook[1]) != tuple(codebook[3])                    # distinct rows
    np.testing.assert_array_equal(state.count, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(state.sum[[1, 3]], codebook[[1, 3]])
    assert quantize.restart_dead_codes(codebook, idle, 5, cache, np.random.default_rng(0), k=k) == 0


# ================================================================ priors over codes
@pytest.mark.parametrize("kind", ["uniform", "categorical", "markov"])
def test_every_prior_is_normalised_over_all_code_vectors(kind):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 3, (40, 3))
    prior = CodePrior.fit(kind, codes, 3)
    every = np.array(list(itertools.product(range(3), repeat=3)))
    assert np.exp(prior.log_prob(every)).sum() == pytest.approx(1.0, rel=1e-12)


def test_categorical_prior_is_the_smoothed_frequency_per_slot():
    codes = np.array([[0, 1], [0, 1], [2, 1], [0, 0]])
    prior = CodePrior.fit("categorical", codes, 3, alpha=1.0)
    # slot 0: counts (3, 0, 1) -> (4, 1, 2) / 7;  slot 1: counts (1, 3, 0) -> (2, 4, 1) / 7
    np.testing.assert_allclose(np.exp(prior.log_pi), [[4 / 7, 1 / 7, 2 / 7], [2 / 7, 4 / 7, 1 / 7]], rtol=1e-14)
    np.testing.assert_allclose(prior.log_prob(np.array([[2, 2]])), [np.log(2 / 7) + np.log(1 / 7)], rtol=1e-14)


def test_markov_prior_beats_the_independent_one_on_dependent_slots():
    """Codes whose second slot copies the first: the transition table captures it."""
    rng = np.random.default_rng(6)
    first = rng.integers(0, 4, 400)
    codes = np.stack([first, first, rng.integers(0, 4, 400)], axis=1)
    held = np.stack([first[:100], first[:100], rng.integers(0, 4, 100)], axis=1)
    cat, markov = CodePrior.fit("categorical", codes, 4), CodePrior.fit("markov", codes, 4)
    assert -markov.log_prob(held).mean() < -cat.log_prob(held).mean() - np.log(4) + 0.1


@pytest.mark.parametrize("kind", ["categorical", "markov"])
def test_prior_samples_follow_the_prior(kind):
    """Frequencies of 20000 draws within 5 binomial standard deviations of pi (fixed seed)."""
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 3, (60, 2))
    codes[:, 1] = (codes[:, 0] + (rng.random(60) < 0.2)) % 3
    prior = CodePrior.fit(kind, codes, 3)
    draws = prior.sample(20000, np.random.default_rng(8))
    assert draws.dtype == np.int64 and draws.shape == (20000, 2)
    every = np.array(list(itertools.product(range(3), repeat=2)))
    p = np.exp(prior.log_prob(every))
    freq = np.array([np.mean((draws == v).all(axis=1)) for v in every])
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / 20000))


def test_prior_tables_round_trip_and_bad_kinds_are_refused():
    prior = CodePrior.fit("markov", np.array([[0, 1], [1, 0]]), 2)
    back = CodePrior.from_arrays(prior.arrays(), 2, 2)
    assert back.kind == "markov"
    np.testing.assert_array_equal(back.log_trans, prior.log_trans)
    with pytest.raises(ValueError, match="kind"):
        CodePrior.fit("gaussian", np.zeros((2, 2), np.int64), 2)
    with pytest.raises(ValueError, match="kind"):
        CodePrior("bogus", 2, 2)


@pytest.mark.parametrize("call,error,text", [
    (lambda: CodePrior.fit("categorical", np.array([[0, 3]]), 3), ValueError, r"codes must lie in \[0, n_codes\)"),
    (lambda: CodePrior.fit("markov", np.array([0, 1]), 3), ValueError, "codes must have shape"),
    (lambda: CodePrior.fit("categorical", np.array([[0.0, 1.0]]), 3), ValueError, "integer codes"),
    (lambda: CodePrior.fit("categorical", [[0, 1]], 3), TypeError, "codes must be a numpy.ndarray"),
    (lambda: CodePrior.fit("categorical", np.array([[0, 1]]), 3, alpha=0.0), ValueError, "alpha"),
    (lambda: CodePrior("uniform", 2, 0), ValueError, "n_codes must be >= 1"),
    (lambda: CodePrior("markov", 2, 3).log_prob(np.array([[-1, 0]])), ValueError, "codes must lie"),
    (lambda: CodePrior("markov", 2, 3).log_prob(np.array([[0, 1, 2]])), ValueError, r"\(B, 2\)"),
    (lambda: CodePrior("markov", 2, 3).sample(0, np.random.default_rng(0)), ValueError, "n must be >= 1"),
    (lambda: CodePrior("markov", 2, 3).sample(2, "seed"), TypeError, "rng must be"),
])
def test_code_prior_refuses_bad_input_naming_it(call, error, text):
    """Negative codes would otherwise index the tables from the end, and codes >= C or of the
    wrong shape fail deep in NumPy."""
    with pytest.raises(error, match=text):
        call()


# ================================================================ the model
import scratchvae as sv  # noqa: E402
from scratchvae.gradcheck import check_gradients  # noqa: E402

SMOOTH = ("tanh", "sigmoid", "softplus")      # no kinks for the finite differences


def _model(backend="numpy", **kw):
    args = dict(hidden_dims=(5,), n_latents=2, code_dim=3, n_codes=4, activation="tanh", seed=1)
    args.update(kw)
    return sv.VQVAE(args.pop("input_dim", 6), backend=backend, **args)


def _data(rng, B=5, D=6):
    return rng.random((B, D))


def _ref_kw(model):
    return dict(activation=model.activation, likelihood=model.likelihood, output_var=model.output_var,
                n_latents=model.n_latents, code_dim=model.code_dim, commitment=model.commitment,
                codebook_term=model.codebook_update == "gradient")


def _spread_codebook(model, rng):
    """Codes drawn at the scale of the encoder outputs, so several of them are in use."""
    z_e = ref.vqvae_forward(model.params, _data(rng, 20, model.input_dim), **_ref_kw(model))["z_e"]
    rows = z_e.reshape(-1, model.code_dim)
    model.params["codebook"][...] = rows[rng.choice(rows.shape[0], model.n_codes, replace=False)] \
        + 0.01 * rng.standard_normal((model.n_codes, model.code_dim))


def _check_straight_through(model, x):
    """sv.check_gradients of the frozen surrogate (tests/reference.py) against loss_and_grads."""
    kw = _ref_kw(model)
    frozen = ref.vqvae_forward(model.params, x, **kw)
    _, grads = model.loss_and_grads(x)
    grads = {key: np.array(v) for key, v in grads.items()}
    return check_gradients(lambda p: ref.vqvae_surrogate(p, x, frozen, **kw), model.params, grads,
                           h=FD_STEP, tol=FD_RTOL), grads, frozen


architectures = st.fixed_dictionaries({
    "hidden_dims": st.lists(st.integers(1, 5), max_size=2).map(tuple),
    "decoder_hidden_dims": st.lists(st.integers(1, 5), max_size=2).map(tuple),
    "n_latents": st.integers(1, 3), "code_dim": st.integers(1, 3), "n_codes": st.integers(1, 6),
    "commitment": st.sampled_from([0.0, 0.25, 1.7]),
    "activation": st.sampled_from(SMOOTH),
    "likelihood": st.sampled_from(["bernoulli", "gaussian"]),
    "codebook_update": st.sampled_from(["gradient", "ema"]),
})


@settings(max_examples=15)
@given(arch=architectures, learned=st.booleans(), seed=SEEDS, batch=st.integers(1, 4))
def test_straight_through_gradients_are_those_of_the_frozen_surrogate(arch, learned, seed, batch):
    """Every parameter, on drawn architectures, slot counts, code sizes, commitment weights,
    likelihoods and codebook updates: float64 central differences of the surrogate with the
    codes and stop-gradient values frozen; the loss equals the reference forward."""
    rng = np.random.default_rng(seed)
    out_var = "learned" if (learned and arch["likelihood"] == "gaussian") else 1.0
    model = _model(seed=int(rng.integers(2**31)), output_var=out_var, **arch)
    _spread_codebook(model, rng)
    if out_var == "learned":
        model.params["dec.logvar"][...] = 0.3 * rng.standard_normal(model.input_dim)
    x = _data(rng, batch)
    report, grads, frozen = _check_straight_through(model, x)
    assert report.passed, str(report)
    assert model.loss(x) == pytest.approx(ref.vqvae_forward(model.params, x, **_ref_kw(model))["loss"], rel=1e-12)
    np.testing.assert_array_equal(model.encode(x), frozen["codes"])


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_the_codebook_gradient_is_exactly_the_codebook_term_s(update):
    """dcodebook_c = (2 w / B) sum over the slots assigned to c of (codebook_c - z_e), w = 1
    (gradient) or 0 (ema): no reconstruction gradient, no commitment term."""
    rng = np.random.default_rng(11)
    model = _model(codebook_update=update, n_codes=5, commitment=0.7)
    _spread_codebook(model, rng)
    x = _data(rng, 6)
    f = ref.vqvae_forward(model.params, x, **_ref_kw(model))
    want = np.zeros_like(model.params["codebook"])
    w = 1.0 if update == "gradient" else 0.0
    for b in range(6):
        for j in range(model.n_latents):
            c = f["codes"][b, j]
            want[c] += 2.0 * w / 6 * (model.params["codebook"][c] - f["z_e"][b, j])
    assert len(np.unique(f["codes"])) >= 2
    _, grads = model.loss_and_grads(x)
    np.testing.assert_allclose(grads["codebook"], want, rtol=1e-13, atol=1e-15)


def test_a_reconstruction_gradient_leaking_into_the_codebook_fails_the_check(monkeypatch):
    """The planted bug: the decoder's input gradient also scattered into the codebook rows
    (a classic of public VQ-VAE code). The surrogate does not read the codebook through the
    decoder, so its finite differences disagree and the check must fail on the codebook."""
    rng = np.random.default_rng(12)
    model = _model()
    _spread_codebook(model, rng)
    x = _data(rng, 4)
    assert _check_straight_through(model, x)[0].passed
    real = quantize.quantize_backward

    def leaky(dz_q, dd_commit, dd_code, cache, *, k):
        dz_e, dcodebook, counts = real(dz_q, dd_commit, dd_code, cache, k=k)
        leak, _ = k.gather_bwd(dz_q, cache.idx, cache.n_codes)
        return dz_e, k.add(dcodebook, leak), counts

    monkeypatch.setattr(quantize, "quantize_backward", leaky)
    report, _, _ = _check_straight_through(model, x)
    assert not report.passed
    assert [r.name for r in report.failures()] == ["codebook"]


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_numba_gives_the_numpy_loss_and_gradients(likelihood):
    rng = np.random.default_rng(13)
    x = _data(rng, 7)
    ref_model = _model("numpy", likelihood=likelihood, hidden_dims=(8, 4))
    _spread_codebook(ref_model, rng)
    fast = _model("numba", likelihood=likelihood, hidden_dims=(8, 4))
    fast.params = {key: v.copy() for key, v in ref_model.params.items()}
    (l0, g0), (l1, g1) = ref_model.loss_and_grads(x), fast.loss_and_grads(x)
    assert l1 == pytest.approx(l0, rel=1e-12)
    for key in g0:
        np.testing.assert_allclose(g1[key], g0[key], rtol=1e-10, atol=1e-13, err_msg=key)
    np.testing.assert_array_equal(fast.encode(x), ref_model.encode(x))


def test_parameters_are_in_order_with_their_shapes():
    model = _model(hidden_dims=(5, 4), decoder_hidden_dims=(3,), likelihood="gaussian", output_var="learned")
    assert list(model.params) == ["enc.W0", "enc.b0", "enc.W1", "enc.b1", "enc.W_e", "enc.b_e", "codebook",
                                  "dec.W0", "dec.b0", "dec.W_out", "dec.b_out", "dec.logvar"]
    shapes = {key: v.shape for key, v in model.params.items()}
    assert shapes["enc.W_e"] == (4, 6) and shapes["enc.b_e"] == (6,) and shapes["codebook"] == (4, 3)
    assert shapes["dec.W0"] == (6, 3) and shapes["dec.W_out"] == (3, 6)
    assert np.all(np.abs(model.params["codebook"]) <= 1 / 4)
    assert sv.VQVAE.prior == "categorical" and model.draw_eps(1, 5, np.random.default_rng()) is None
    assert sv.VQVAE(6).backend == "numba"


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_encode_decode_elbo_and_sample_follow_their_definitions(likelihood):
    rng = np.random.default_rng(14)
    model = _model(likelihood=likelihood)
    _spread_codebook(model, rng)
    x = _data(rng, 5)
    f = ref.vqvae_forward(model.params, x, **_ref_kw(model))
    codes = model.encode(x)
    assert codes.dtype == np.int64 and codes.shape == (5, 2)
    np.testing.assert_array_equal(codes, f["codes"])
    out, _ = ref.decoder(model.params, f["z_q"].reshape(5, -1), model.activation)
    mean = ref.sigmoid(out) if likelihood == "bernoulli" else out
    np.testing.assert_allclose(model.decode(codes), mean, rtol=1e-12)
    np.testing.assert_allclose(model.reconstruction_log_likelihood(x), f["ll"], rtol=1e-12)
    np.testing.assert_allclose(model.elbo(x), f["ll"] - 2 * np.log(4), rtol=1e-12)
    s = model.sample(9, rng=np.random.default_rng(0))
    assert s.shape == (9, 6) and s.dtype == model.dtype


def test_a_fitted_prior_gives_the_bound_with_log_pi_and_samples_from_it():
    rng = np.random.default_rng(15)
    model = _model(n_codes=6)
    _spread_codebook(model, rng)
    x, x_val = _data(rng, 30), _data(rng, 10)
    with pytest.raises(ValueError, match="fit_prior"):
        model.elbo(x, prior="fitted")
    scores = model.fit_prior(x, kind="auto", x_val=x_val)
    assert set(scores) == {"categorical", "markov"} and model.prior_kind == min(scores, key=scores.get)
    codes = model.encode(x)
    np.testing.assert_allclose(model.elbo(x, prior="fitted"),
                               model.reconstruction_log_likelihood(x) + model.code_prior.log_prob(codes), rtol=1e-12)
    model.fit_prior(x, kind="categorical")
    assert model.prior_kind == "categorical"
    pi = np.exp(model.code_prior.log_pi)
    np.testing.assert_allclose(pi[0], (np.bincount(codes[:, 0], minlength=6) + 1) / (30 + 6), rtol=1e-12)


@pytest.mark.parametrize("kwargs, name", [
    (dict(n_codes=0), "n_codes"), (dict(code_dim=0), "code_dim"), (dict(n_latents=0), "n_latents"),
    (dict(commitment=-0.1), "commitment"), (dict(ema_decay=0.0), "ema_decay"),
    (dict(ema_decay=1.0), "ema_decay"), (dict(ema_decay=1.5), "ema_decay"),
    (dict(codebook_update="kmeans"), "codebook_update"), (dict(restart_after=0), "restart_after"),
])
def test_bad_constructor_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        _model(**kwargs)


def test_bad_codes_and_calls_name_the_argument():
    model = _model()
    x = _data(np.random.default_rng(16), 3)
    for bad, what in [(np.array([[0, 4]]), "codes"), (np.array([[0, -1]]), "codes"),
                      (np.array([[0, 1, 2]]), "codes"), (np.array([0, 1]), "codes"),
                      (np.array([[0.0, 1.0]]), "codes")]:
        with pytest.raises(ValueError, match=what):
            model.decode(bad)
    with pytest.raises(TypeError, match="codes"):
        model.decode([[0, 1]])
    with pytest.raises(ValueError, match="eps"):
        model.loss_and_grads(x, eps=np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="n_samples"):
        model.loss(x, n_samples=2)
    with pytest.raises(ValueError, match="beta"):
        model.loss_and_grads(x, beta=0.5)
    with pytest.raises(ValueError, match="objective"):
        model.loss(x, objective="iwae")
    with pytest.raises(ValueError, match="x"):
        model.loss(x * 3)                      # outside [0, 1] for the bernoulli likelihood
    with pytest.raises(ValueError, match="prior"):
        model.elbo(x, prior="gaussian")


def test_the_model_s_surrogate_is_the_reference_surrogate_and_gradcheck_uses_it():
    """straight_through_surrogate(x) agrees with tests/reference.py's at perturbed parameters
    (it is not the loss there: the decoder reads z_e + q0 - a0), and sv.gradcheck checks a
    VQ-VAE against it."""
    rng = np.random.default_rng(17)
    model = _model(likelihood="gaussian", output_var="learned")
    _spread_codebook(model, rng)
    x = _data(rng, 4)
    kw = _ref_kw(model)
    frozen = ref.vqvae_forward(model.params, x, **kw)
    fun = model.straight_through_surrogate(x)
    moved = {key: v + 0.05 * rng.standard_normal(v.shape) for key, v in model.params.items()}
    assert fun(moved) == pytest.approx(ref.vqvae_surrogate(moved, x, frozen, **kw), rel=1e-12)
    assert fun(model.params) == pytest.approx(model.loss(x), rel=1e-14)
    report = sv.gradcheck(model, x)
    assert report.passed and {r.name for r in report.rows} == set(model.params)
    relative = sv.gradcheck(model, x, mode="relative")     # the mode reaches the VQ-VAE's check
    assert relative.passed and relative.mode == "relative"
    with pytest.raises(ValueError, match="mode"):
        sv.gradcheck(model, x, mode="bogus")


def test_codebook_usage_figure_draws_one_panel_per_codebook_and_checks_its_input(tmp_path):
    from scratchvae import viz
    path = tmp_path / "usage.png"
    fig = viz.plot_codebook_usage(np.array([[5, 0, 3, 1], [1, 1, 1, 1]]), path, labels=["a", "b"])
    assert path.stat().st_size > 0 and len(fig.axes) == 2
    assert "perplexity 4.0 / 4, dead 0" in fig.axes[1].get_title()
    assert "dead 1" in fig.axes[0].get_title()
    assert len(viz.plot_codebook_usage(np.array([2.0, 1.0])).axes) == 1
    with pytest.raises(ValueError, match="counts"):
        viz.plot_codebook_usage(np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="counts"):
        viz.plot_codebook_usage(np.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        viz.plot_codebook_usage(np.ones((2, 3)), labels=["only one"])


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_cuda_gives_the_numpy_loss_gradients_codes_and_ema_step(update, monkeypatch):
    from scratchvae.kernels import _jit
    monkeypatch.setattr(_jit, "TPB", 4)
    monkeypatch.setattr(_jit, "TPB_1D", 8)
    rng = np.random.default_rng(18)
    x = _data(rng, 3)
    ref_model = _model("numpy", codebook_update=update, hidden_dims=(3,), restart_after=1)
    _spread_codebook(ref_model, rng)
    dev = _model("cuda", codebook_update=update, hidden_dims=(3,), restart_after=1)
    dev.params = {key: v.copy() for key, v in ref_model.params.items()}
    (l0, g0), (l1, g1) = ref_model.loss_and_grads(x), dev.loss_and_grads(x)
    assert l1 == pytest.approx(l0, rel=1e-12)
    for key in g0:
        np.testing.assert_allclose(np.asarray(dev.kernels.to_host(g1[key])), g0[key], rtol=1e-10,
                                   atol=1e-13, err_msg=key)
    np.testing.assert_array_equal(dev.encode(x), ref_model.encode(x))
    np.testing.assert_allclose(dev.decode(dev.encode(x)), ref_model.decode(ref_model.encode(x)), rtol=1e-12)
    ref_model.after_step()
    dev.after_step()
    np.testing.assert_allclose(dev.params["codebook"], ref_model.params["codebook"], rtol=1e-12)


@pytest.mark.parametrize("update", ["gradient", "ema"])
def test_save_and_load_round_trip_parameters_prior_and_training_state(update, tmp_path):
    rng = np.random.default_rng(19)
    model = _model(codebook_update=update, restart_after=3, commitment=0.5, n_codes=5)
    _spread_codebook(model, rng)
    x = _data(rng, 8)
    model.loss_and_grads(x)
    model.after_step()
    model.fit_prior(x, kind="markov")
    path = model.save(tmp_path / "vq")
    back = sv.VQVAE.load(path)
    assert back.config == model.config and back.prior_kind == "markov"
    for key in model.params:
        np.testing.assert_array_equal(back.params[key], model.params[key], err_msg=key)
    np.testing.assert_array_equal(back.code_prior.log_trans, model.code_prior.log_trans)
    np.testing.assert_array_equal(back._idle, model._idle)
    assert (back._ema is None) == (update == "gradient")
    if update == "ema":
        np.testing.assert_array_equal(back._ema.sum, model._ema.sum)
    np.testing.assert_array_equal(back.elbo(x, prior="fitted"), model.elbo(x, prior="fitted"))


def test_a_checkpoint_of_another_model_class_is_refused(tmp_path):
    vae_path = sv.VAE(6, hidden_dims=(3,), latent_dim=2).save(tmp_path / "vae")
    with pytest.raises(ValueError, match="'vae'.*VQVAE.load expects 'vqvae'"):
        sv.VQVAE.load(vae_path)
    vq_path = _model().save(tmp_path / "vq")
    with pytest.raises(ValueError, match="'vqvae'"):
        sv.VAE.load(vq_path)


# ================================================================ training
@pytest.fixture(scope="module")
def digits():
    x_tr, _, x_val, _, x_te, _ = sv.data.load_digits(seed=0, dtype="float64")
    return x_tr[:256], x_val[:64], x_te[:128]


def _far(model, seed=0):
    """A codebook far from the encoder outputs: one code wins every slot at the start."""
    model.params["codebook"][...] = 10.0 * np.random.default_rng(seed).standard_normal(model.params["codebook"].shape)


def _small(**kw):
    return sv.VQVAE(64, hidden_dims=(16,), n_latents=2, code_dim=2, n_codes=8, seed=0, **kw)


def test_fit_trains_a_vqvae_and_records_codebook_use_per_epoch(digits):
    x_tr, x_val, _ = digits
    model = _small()
    history = sv.fit(model, x_tr, x_val, epochs=4, batch_size=32, optimizer=sv.Adam(lr=3e-3), progress=False)
    assert history["recon"][-1] < history["recon"][0]          # it learns to reconstruct
    for col in ("perplexity", "usage", "dead_codes"):
        assert len(history[col]) == 4, col
    assert all(1.0 <= p <= 8.0 for p in history["perplexity"])
    assert all(d == round(8 * (1 - u)) for d, u in zip(history["dead_codes"], history["usage"]))
    assert history["kl"][-1] == pytest.approx(2 * np.log(8)) and history["kl_per_dim"][-1] == [np.log(8)] * 2
    row = history.rows()[-1]
    assert {"perplexity", "usage", "dead_codes"} <= set(row)


def test_fit_with_ema_moves_the_codebook_without_a_codebook_gradient(digits):
    x_tr, x_val, _ = digits
    model = _small(codebook_update="ema")
    _, grads = model.loss_and_grads(x_tr[:32])
    assert not np.any(grads["codebook"])
    before = model.params["codebook"].copy()
    sv.fit(model, x_tr, x_val, epochs=2, batch_size=32, progress=False)
    assert not np.array_equal(model.params["codebook"], before)
    assert model._ema is not None and np.all(model._ema.count > 0)


def test_restarts_revive_the_codes_a_far_codebook_leaves_dead(digits):
    """Far initialisation: plain training keeps using one code of 8; restarts after 5 idle
    steps bring every code back into use (on the training digits of the last epoch)."""
    x_tr, x_val, _ = digits
    plain, restarted = _small(), _small(restart_after=5)
    _far(plain)
    _far(restarted)
    h0 = sv.fit(plain, x_tr, x_val, epochs=3, batch_size=32, progress=False)
    h1 = sv.fit(restarted, x_tr, x_val, epochs=3, batch_size=32, progress=False)
    assert h0["dead_codes"][-1] == 7 and h0["perplexity"][-1] == 1.0
    assert h1["dead_codes"][-1] == 0 and h1["perplexity"][-1] > 4.0


def test_a_user_loop_with_after_step_is_fit_s_step(digits):
    """loss_and_grads, opt.step, after_step on the same batches: the parameters of fit."""
    x_tr, _, _ = digits
    a, b = _small(codebook_update="ema", restart_after=2), _small(codebook_update="ema", restart_after=2)
    sv.fit(a, x_tr[:64], epochs=1, batch_size=64, seed=0, progress=False)
    opt = sv.Adam()
    order = np.random.default_rng(0).permutation(64)
    _, grads = b.loss_and_grads(x_tr[:64][order])
    opt.step(b.params, grads)
    b.after_step()
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)


# ================================================================ the command line
def _cli(argv):
    import contextlib
    import io

    from scratchvae.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_the_command_line_trains_evaluates_samples_and_reconstructs_a_vqvae(tmp_path):
    import json
    out = str(tmp_path / "run")
    code, stdout, err = _cli(["train", "--model", "vqvae", "--out", out, "--epochs", "2", "--hidden", "16",
                              "--n-latents", "3", "--code-dim", "2", "--n-codes", "8", "--commitment", "0.5",
                              "--codebook-update", "ema", "--restart-after", "10", "--quiet"])
    assert code == 0, err
    for name in ("checkpoint.npz", "history.csv", "codebook_usage.png", "reconstructions.png",
                 "samples.png", "loss_curves.png", "config.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["model_type"] == "vqvae" and cfg["model_config"]["n_codes"] == 8
    assert cfg["model_config"]["codebook_update"] == "ema" and cfg["model_config"]["commitment"] == 0.5
    assert cfg["code_prior"]["kind"] in ("categorical", "markov")
    model = sv.VQVAE.load(os.path.join(out, "checkpoint.npz"))
    assert model.prior_kind == cfg["code_prior"]["kind"]
    code, stdout, err = _cli(["eval", "--checkpoint", out, "--quiet"])
    assert code == 0, err
    assert "codebook perplexity" in stdout and "-bound, uniform prior" in stdout and "dead" in stdout
    for cmd in ("sample", "reconstruct"):
        code, stdout, err = _cli([cmd, "--checkpoint", out, "--out", str(tmp_path), "--quiet"])
        assert code == 0, (cmd, err)
    code, _, err = _cli(["interpolate", "--checkpoint", out, "--quiet"])
    assert code == 1 and "discrete codes" in err
    code, stdout, err = _cli(["gradcheck", "--model", "vqvae", "--hidden", "4", "--n-latents", "2",
                              "--code-dim", "2", "--n-codes", "4", "--activation", "tanh", "--quiet"])
    assert code == 0, stdout + err
    assert "PASSED" in stdout


@pytest.mark.parametrize("argv, fragment", [
    (["--n-codes", "8"], "--n-codes is for --model vqvae"),
    (["--model", "vqvae", "--beta", "0.5"], "--beta is not for --model vqvae"),
    (["--model", "vqvae", "--latent-dim", "3"], "--latent-dim is not for --model vqvae"),
    (["--model", "vqvae", "--samples", "3"], "--samples is not for --model vqvae"),
    (["--model", "vqvae", "--n-codes", "0"], "--n-codes"),
    (["--model", "vqvae", "--codebook-update", "kmeans"], "--codebook-update"),
])
def test_vq_options_are_checked(argv, fragment, tmp_path):
    code, _, err = _cli(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet", *argv])
    assert code == 2 and fragment in err, err


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")
def test_fit_on_the_cuda_backend_follows_numpy_with_ema_and_restarts(monkeypatch):
    """fit keeps the parameters on the device: the EMA step, the counts and the restarts read
    and write device arrays through the kernels. Two epochs of tiny batches agree with numpy."""
    from scratchvae.kernels import _jit
    monkeypatch.setattr(_jit, "TPB", 4)
    monkeypatch.setattr(_jit, "TPB_1D", 8)
    x = np.random.default_rng(20).random((8, 6))
    models = [_model(b, codebook_update="ema", restart_after=1, hidden_dims=(3,)) for b in ("numpy", "cuda")]
    histories = [sv.fit(m, x, epochs=2, batch_size=4, progress=False) for m in models]
    for key in models[0].params:
        np.testing.assert_allclose(models[1].params[key], models[0].params[key], rtol=1e-9, atol=1e-12, err_msg=key)
    assert histories[1]["perplexity"] == pytest.approx(histories[0]["perplexity"], rel=1e-12)
    np.testing.assert_allclose(models[1]._ema.sum, models[0]._ema.sum, rtol=1e-9, atol=1e-12)


def test_astype_keeps_the_prior_and_casts_the_ema_state():
    rng = np.random.default_rng(21)
    model = _model(codebook_update="ema", dtype="float32")
    x = _data(rng, 6).astype(np.float32)
    model.loss_and_grads(x)
    model.after_step()
    model.fit_prior(x, kind="categorical")
    new = model.astype("float64")
    assert new.dtype == np.float64 and new.prior_kind == "categorical"
    assert new._ema.sum.dtype == np.float64 and all(v.dtype == np.float64 for v in new.params.values())
    np.testing.assert_array_equal(new.encode(x.astype(np.float64)), model.encode(x))


def test_gradients_stay_valid_until_the_next_loss_and_grads():
    """The aliasing rule: loss, forward, encode, decode, elbo, sample, codebook_usage and the
    surrogate allocate their own arrays and leave the gradients of loss_and_grads alone."""
    rng = np.random.default_rng(22)
    model = _model("numba")
    _spread_codebook(model, rng)
    x, other = _data(rng, 5), _data(rng, 7)
    _, grads = model.loss_and_grads(x)
    kept = {key: np.array(v) for key, v in grads.items()}
    model.loss(other)
    model.decode(model.encode(other))
    model.elbo(other)
    model.sample(4)
    model.codebook_usage(other)
    model.straight_through_surrogate(other)(model.params)
    for key in kept:
        np.testing.assert_array_equal(grads[key], kept[key], err_msg=key)
    _, again = model.loss_and_grads(x)
    assert all(again[key] is grads[key] for key in grads)      # the model's work buffers, reused
