"""The VAE end to end: every gradient against finite differences (sv.gradcheck, and a directional
check against the independent forward in tests/reference.py), the loss against the model's
formula, determinism with fixed eps, float32/float64 agreement, the parameter contract
(keys, order, shapes), the public API, checkpoints and bad input."""
import math

import numpy as np
import pytest
from hypothesis import assume, given

import scratchvae as sv
from scratchvae import io as svio
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP, RTOL
from tests.strategies import KINKED_ACTIVATIONS, SEEDS, build, vae_cases

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
MARGIN = 1e-4             # min |pre-activation| for kinked activations, >> the FD step
FULL_CHECK_MAX_PARAMS = 400   # per-entry check of every entry up to this many parameters


def expected_keys(n_enc, n_dec, learned=False):
    """The parameter order, written out."""
    keys = []
    for i in range(n_enc):
        keys += [f"enc.W{i}", f"enc.b{i}"]
    keys += ["enc.W_mu", "enc.b_mu", "enc.W_logvar", "enc.b_logvar"]
    for i in range(n_dec):
        keys += [f"dec.W{i}", f"dec.b{i}"]
    keys += ["dec.W_out", "dec.b_out"] + (["dec.logvar"] if learned else [])
    return keys


def reference_loss(model, x, eps, **kw):
    """tests/reference.py's forward for ``model``'s configuration, in float64."""
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    return ref.vae_forward(params, x.astype(np.float64), eps.astype(np.float64),
                           activation=model.activation, likelihood=model.likelihood,
                           output_var=model.output_var, **kw)


def away_from_kinks(model, x, eps, margin=MARGIN):
    if model.activation not in KINKED_ACTIVATIONS:
        return True
    params = {k: v.astype(np.float64) for k, v in model.params.items()}
    return ref.min_abs_preactivation(params, x.astype(np.float64), eps.astype(np.float64),
                                     model.activation) > margin


# ====================================================================== gradients
@given(vae_cases(dtypes=("float64",)))
def test_every_gradient_matches_finite_differences(case):
    """sv.gradcheck on drawn models: params, x, and the KL w.r.t. mu/logvar, rel. error <= 1e-6.
    Small models: every entry; bigger ones: 6 seeded entries per tensor plus the directional check."""
    model, x, eps = build(case)
    assume(away_from_kinks(model, x, eps))
    max_entries = None if case.n_params <= FULL_CHECK_MAX_PARAMS else 6
    report = sv.gradcheck(model, x, eps=eps, max_entries=max_entries, tol=FD_RTOL, h=FD_STEP,
                          n_directions=2, **case.call_kwargs)
    names = [r.name for r in report.rows]
    assert names == list(model.params) + ["x", "mu (KL)", "logvar (KL)"]
    for r in report.rows:
        if max_entries is None or math.prod(r.shape) <= max_entries:
            assert r.n_checked + r.n_below_floor == math.prod(r.shape), r.name
        assert r.max_rel_err <= FD_RTOL and r.normwise_rel_err <= FD_RTOL, (
            f"{r.name}: max rel err {r.max_rel_err:.3e} at {r.worst_index}, normwise "
            f"{r.normwise_rel_err:.3e}\n{report}")
    assert len(report.directional) == 2
    for num, ana, err in report.directional:
        assert err <= FD_RTOL, f"directional: numerical {num!r} analytic {ana!r}\n{report}"
    assert report.passed


@given(vae_cases(dtypes=("float64",)), SEEDS)
def test_gradients_match_the_independent_reference_forward(case, seed):
    """<g, v> against central differences of tests/reference.py's loss (not the package's
    forward) along random directions v: catches convention mismatches between the pieces."""
    model, x, eps = build(case)
    assume(away_from_kinks(model, x, eps))
    _, grads = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    params = {k: v.copy() for k, v in model.params.items()}
    rng = np.random.default_rng(seed)
    kw = dict(beta=case.beta, objective=case.objective)
    for _ in range(2):
        v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        fp = ref.vae_forward({k: params[k] + FD_STEP * v[k] for k in params}, x, eps,
                             activation=case.activation, likelihood=case.likelihood,
                             output_var=case.output_var, **kw)["loss"]
        fm = ref.vae_forward({k: params[k] - FD_STEP * v[k] for k in params}, x, eps,
                             activation=case.activation, likelihood=case.likelihood,
                             output_var=case.output_var, **kw)["loss"]
        num = (fp - fm) / (2 * FD_STEP)
        ana = sum(float(np.vdot(grads[k], v[k])) for k in params)
        assert abs(num - ana) <= FD_RTOL * max(abs(num), abs(ana), 1.0), (
            f"directional derivative: reference {num!r}, analytic {ana!r}")


@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", "learned")])
def test_free_bits_gradient(likelihood, output_var):
    model = sv.VAE(5, (4,), 3, activation="tanh", likelihood=likelihood, output_var=output_var,
                   seed=2)
    rng = np.random.default_rng(4)
    x = rng.random((6, 5))
    eps = rng.standard_normal((2, 6, 3))
    mu, logvar = model.encode(x)
    kl_bar = ref.kl_standard_normal(mu[..., None], logvar[..., None]).mean(axis=0)
    free_bits = float(np.sort(kl_bar)[0] + np.sort(kl_bar)[1]) / 2   # one dimension below the floor
    assert np.abs(kl_bar - free_bits).min() > 1e-3, "fixture: keep away from max()'s kink"
    loss, grads = model.loss_and_grads(x, n_samples=2, eps=eps, beta=0.7, free_bits=free_bits)
    expect = reference_loss(model, x, eps, beta=0.7, free_bits=free_bits)["loss"]
    np.testing.assert_allclose(loss, expect, rtol=RTOL[F64])
    report = sv.gradcheck(model, x, n_samples=2, eps=eps, beta=0.7, free_bits=free_bits,
                          tol=FD_RTOL, h=FD_STEP, wrt=("params",))
    for r in report.rows:
        assert r.max_rel_err <= FD_RTOL, f"{r.name}: {r.max_rel_err:.3e}\n{report}"
    assert report.passed


# ====================================================================== loss values
@given(vae_cases())
def test_loss_equals_the_design_formula(case):
    """Both likelihoods (fixed and learned variance), both objectives, beta, K, both dtypes,
    against tests/reference.py computed in float64 from the same numbers."""
    model, x, eps = build(case)
    loss, _ = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    r = reference_loss(model, x, eps, beta=case.beta, objective=case.objective)
    tol = RTOL[model.dtype]
    np.testing.assert_allclose(loss, r["loss"], rtol=tol, atol=tol, err_msg="loss")
    assert model.loss(x, eps=eps, **case.call_kwargs) == loss, "loss() must equal loss_and_grads()"
    fw = model.forward(x, n_samples=case.n_samples, eps=eps, objective=case.objective)
    for key in ("ll", "kl") + (("logw",) if case.objective == "iwae" else ()):
        got = getattr(fw, key)
        assert got.dtype == model.dtype and got.shape == r[key].shape, key
        np.testing.assert_allclose(got, r[key], rtol=tol, atol=tol * max(1.0, np.abs(r[key]).max()),
                                   err_msg=key)


def test_loss_by_hand_for_a_tiny_model():
    """No hidden layers, d = D = 1, identity everywhere: the loss written out as arithmetic."""
    model = sv.VAE(1, (), 1, activation="identity", likelihood="gaussian", output_var=2.0)
    p = model.params
    p["enc.W_mu"][...] = 0.5
    p["enc.b_mu"][...] = 0.1
    p["enc.W_logvar"][...] = -0.2
    p["enc.b_logvar"][...] = 0.3
    p["dec.W_out"][...] = 1.5
    p["dec.b_out"][...] = -0.4
    x, e = 0.8, 0.7
    mu, logvar = 0.5 * x + 0.1, -0.2 * x + 0.3
    z = mu + math.exp(logvar / 2) * e
    out = 1.5 * z - 0.4
    ll = -0.5 * ((x - out) ** 2 / 2.0 + math.log(2 * math.pi * 2.0))
    kl = 0.5 * (mu ** 2 + math.exp(logvar) - 1 - logvar)
    loss = model.loss(np.array([[x]]), eps=np.array([[[e]]]), beta=0.3)
    assert loss == pytest.approx(-ll + 0.3 * kl, rel=1e-14)


# ====================================================================== determinism and dtypes
@given(vae_cases())
def test_fixed_eps_gives_bit_identical_results(case):
    model, x, eps = build(case)
    l1, g1 = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    l2, g2 = model.loss_and_grads(x, eps=eps.copy(), **case.call_kwargs)
    twin, _, _ = build(case)                       # a second model built the same way
    l3, g3 = twin.loss_and_grads(x.copy(), eps=eps, **case.call_kwargs)
    assert l1 == l2 == l3
    for key in g1:
        assert np.array_equal(g1[key], g2[key]) and np.array_equal(g1[key], g3[key]), key
    # the same seeded rng in place of eps is also reproducible, and equals passing its draw
    r1 = model.loss_and_grads(x, rng=np.random.default_rng(7), **case.call_kwargs)
    r2 = model.loss_and_grads(x, rng=np.random.default_rng(7), **case.call_kwargs)
    drawn = model.draw_eps(case.n_samples, case.batch, np.random.default_rng(7))
    r3 = model.loss_and_grads(x, eps=drawn, **case.call_kwargs)
    assert r1[0] == r2[0] == r3[0]
    for key in g1:
        assert np.array_equal(r1[1][key], r2[1][key]) and np.array_equal(r1[1][key], r3[1][key]), key


@given(vae_cases(dtypes=("float64",)))
def test_float32_and_float64_agree(case):
    """Same numbers (the float32 ones, exactly representable in float64), same eps: loss and
    gradients agree to float32 precision (RTOL relative to max(|g|, 1) per tensor)."""
    m32, x32, eps32 = build(case, "float32")
    m64, _, _ = build(case, "float64")
    for key, v in m32.params.items():
        m64.params[key][...] = v
    x64, eps64 = x32.astype(np.float64), eps32.astype(np.float64)
    assume(away_from_kinks(m64, x64, eps64, margin=1e-3))
    l32, g32 = m32.loss_and_grads(x32, eps=eps32, **case.call_kwargs)
    l64, g64 = m64.loss_and_grads(x64, eps=eps64, **case.call_kwargs)
    tol = RTOL[F32]
    assert abs(l32 - l64) <= tol * max(abs(l64), 1.0), f"loss {l32!r} vs {l64!r}"
    for key in g64:
        assert g32[key].dtype == F32, key
        scale = max(np.abs(g64[key]).max(), 1.0)
        np.testing.assert_allclose(g32[key], g64[key], rtol=tol, atol=tol * scale, err_msg=key)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", 0.5),
                                                   ("gaussian", "learned")])
def test_float32_end_to_end_never_upcasts(objective, likelihood, output_var):
    m = sv.VAE(4, (3,), 2, activation="elu", likelihood=likelihood, output_var=output_var,
               dtype="float32")
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    _, grads = m.loss_and_grads(x, n_samples=2, objective=objective, rng=1)
    assert {g.dtype for g in grads.values()} == {F32}
    mu, logvar = m.encode(x)
    outs = [mu, logvar, m.decode(mu), m.sample(2, rng=0), m.elbo(x, rng=0),
            m.log_likelihood(x, k=3, rng=0), m.log_weights(x, 3, rng=0)]
    fw = m.forward(x, n_samples=2, rng=0, objective=objective)
    outs += [fw.per_example, fw.ll, fw.kl] + ([fw.logw] if objective == "iwae" else [])
    assert [o.dtype for o in outs] == [F32] * len(outs)


# ====================================================================== the parameter contract
@pytest.mark.parametrize("hidden,dec_hidden,likelihood,output_var", [
    ((), None, "bernoulli", 1.0),
    ((5,), None, "gaussian", "learned"),
    ((5, 3), None, "gaussian", 1.0),
    ((6, 4, 2), (3,), "gaussian", "learned"),
    ((4,), (), "bernoulli", 1.0),
])
def test_params_order_and_shapes(hidden, dec_hidden, likelihood, output_var, dtype):
    D, d = 7, 2
    m = sv.VAE(D, hidden, d, likelihood=likelihood, output_var=output_var, dtype=dtype,
               decoder_hidden_dims=dec_hidden)
    dec = tuple(reversed(hidden)) if dec_hidden is None else dec_hidden
    assert m.decoder_hidden_dims == dec
    keys = expected_keys(len(hidden), len(dec), learned=output_var == "learned")
    assert list(m.params) == keys
    enc_sizes, dec_sizes = (D,) + tuple(hidden), (d,) + tuple(dec)
    shapes = {}
    for i in range(len(hidden)):
        shapes[f"enc.W{i}"], shapes[f"enc.b{i}"] = (enc_sizes[i], enc_sizes[i + 1]), (enc_sizes[i + 1],)
    shapes.update({"enc.W_mu": (enc_sizes[-1], d), "enc.b_mu": (d,),
                   "enc.W_logvar": (enc_sizes[-1], d), "enc.b_logvar": (d,)})
    for i in range(len(dec)):
        shapes[f"dec.W{i}"], shapes[f"dec.b{i}"] = (dec_sizes[i], dec_sizes[i + 1]), (dec_sizes[i + 1],)
    shapes.update({"dec.W_out": (dec_sizes[-1], D), "dec.b_out": (D,), "dec.logvar": (D,)})
    for key, v in m.params.items():
        assert v.shape == shapes[key], key
        assert v.dtype == dtype and v.flags.c_contiguous, key


def test_decoder_defaults_to_the_encoder_reversed():
    m = sv.VAE(10, (8, 6, 4), 3)
    assert m.decoder_hidden_dims == (4, 6, 8)
    assert m.params["dec.W0"].shape == (3, 4) and m.params["dec.W2"].shape == (6, 8)
    assert m.params["dec.W_out"].shape == (8, 10)


def test_reassigning_output_var_changes_the_likelihood_it_uses():
    """The fixed log-variance vector follows ``output_var``: a model whose variance is reassigned
    after a call computes what a model built with the new variance computes."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    eps = np.random.default_rng(1).standard_normal((2, 3, 2))
    m = sv.VAE(4, (3,), 2, likelihood="gaussian", output_var=1.0, seed=0)
    before = m.loss(x, n_samples=2, eps=eps)
    m.output_var = 0.25
    fresh = sv.VAE(4, (3,), 2, likelihood="gaussian", output_var=0.25, seed=0)
    assert m.loss(x, n_samples=2, eps=eps) == fresh.loss(x, n_samples=2, eps=eps) != before
    got, want = m.loss_and_grads(x, n_samples=2, eps=eps), fresh.loss_and_grads(x, n_samples=2, eps=eps)
    assert got[0] == want[0] and all(np.array_equal(got[1][k], want[1][k]) for k in want[1])
    assert m.config["output_var"] == 0.25
    with pytest.raises(ValueError, match="output_var"):
        m.output_var = "learned"      # the parameters would differ: build a new model
    with pytest.raises(ValueError, match="output_var"):
        m.output_var = -1.0
    assert m.output_var == 0.25


def test_glorot_initialisation_and_zero_biases():
    m = sv.VAE(300, (200,), 50, likelihood="gaussian", output_var="learned", seed=3)
    for key, v in m.params.items():
        if ".W" in key:
            a = math.sqrt(6.0 / (v.shape[0] + v.shape[1]))
            assert np.abs(v).max() <= a, key
            assert np.abs(v).max() > 0.99 * a, f"{key}: U(-a, a) reaches close to a"
            # variance a^2/3 within 5 standard errors (Var of u^2 for u ~ U(-a, a) is 4a^4/45)
            se = math.sqrt(4 * a ** 4 / 45 / v.size)
            assert abs(np.mean(v ** 2) - a ** 2 / 3) <= 5 * se, key
            assert abs(np.mean(v)) <= 5 * a / math.sqrt(3 * v.size), key
        else:
            np.testing.assert_array_equal(v, 0.0, err_msg=key)


def test_initialisation_is_seeded():
    a, b, c = sv.VAE(6, (5,), 2, seed=1), sv.VAE(6, (5,), 2, seed=1), sv.VAE(6, (5,), 2, seed=2)
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key], err_msg=key)
    assert not np.array_equal(a.params["enc.W0"], c.params["enc.W0"])
    f32 = sv.VAE(6, (5,), 2, seed=1, dtype="float32")
    for key in a.params:        # one draw in float64, then cast: float32 holds the same numbers
        np.testing.assert_array_equal(f32.params[key], a.params[key].astype(np.float32), err_msg=key)


def test_params_are_the_models_own_arrays():
    m = sv.VAE(3, (2,), 1)
    x = np.full((2, 3), 0.5)
    eps = np.zeros((1, 2, 1))
    before = m.loss(x, eps=eps)
    m.params["dec.b_out"] += 1.0
    assert m.loss(x, eps=eps) != before


@given(vae_cases())
def test_gradient_dict_matches_params(case):
    model, x, eps = build(case)
    _, g1 = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    assert isinstance(g1, dict) and list(g1) == list(model.params)
    for key, p in model.params.items():
        g = g1[key]
        assert isinstance(g, np.ndarray) and g.shape == p.shape and g.dtype == p.dtype, key
        assert not any(np.shares_memory(g, q) for q in model.params.values()), f"{key} aliases params"
        assert not any(np.shares_memory(g, q) for other, q in g1.items() if other != key), \
            f"{key} aliases another gradient"


@given(vae_cases())
def test_gradients_live_until_the_next_loss_and_grads(case):
    """The aliasing rule: the returned arrays are the model's buffers, overwritten by the next
    loss_and_grads on the same model and by nothing else."""
    model, x, eps = build(case, backend="numba")
    _, g1 = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    kept = {key: g.copy() for key, g in g1.items()}
    # the other public methods run on fresh arrays: g1 is untouched
    model.loss(x, eps=2 * eps, **case.call_kwargs)
    model.forward(x, eps=2 * eps, n_samples=eps.shape[0])
    model.encode(x)
    model.decode(np.zeros((3, model.latent_dim), model.dtype))
    model.elbo(x, eps=2 * eps, n_samples=eps.shape[0])
    model.sample(2, rng=np.random.default_rng(0))
    for key in g1:
        np.testing.assert_array_equal(g1[key], kept[key], err_msg=f"{key} changed")
    # the next loss_and_grads writes into the same arrays
    _, g2 = model.loss_and_grads(x, eps=2 * eps, **case.call_kwargs)
    assert all(g2[key] is g1[key] for key in g1), "a second call reuses the buffers"
    _, want = model.astype(model.dtype.name).loss_and_grads(x, eps=2 * eps, **case.call_kwargs)
    for key in g1:
        np.testing.assert_array_equal(g1[key], want[key], err_msg=f"{key} holds the second call")


# ====================================================================== the public API
@pytest.fixture(scope="module")
def bern():
    model = sv.VAE(6, (5, 4), 3, activation="tanh", seed=5)
    x = np.random.default_rng(5).random((7, 6))
    return model, x


def test_encode_matches_the_reference(bern, dtype):
    model, x = bern
    m = model.astype(dtype)
    mu, logvar = m.encode(x.astype(dtype))
    params = {k: v.astype(np.float64) for k, v in m.params.items()}
    rmu, rlv, _ = ref.encoder(params, x.astype(dtype).astype(np.float64), "tanh")
    assert mu.shape == logvar.shape == (7, 3) and mu.dtype == logvar.dtype == dtype
    np.testing.assert_allclose(mu, rmu, rtol=RTOL[dtype], atol=RTOL[dtype], err_msg="mu")
    np.testing.assert_allclose(logvar, rlv, rtol=RTOL[dtype], atol=RTOL[dtype], err_msg="logvar")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_decode_and_sample(likelihood, dtype):
    m = sv.VAE(6, (5,), 3, activation="softplus", likelihood=likelihood, dtype=dtype, seed=1)
    z = np.random.default_rng(0).standard_normal((9, 3)).astype(dtype)
    mean = m.decode(z)
    assert mean.shape == (9, 6) and mean.dtype == dtype
    out, _ = ref.decoder({k: v.astype(np.float64) for k, v in m.params.items()},
                         z.astype(np.float64), "softplus")
    expect = ref.sigmoid(out) if likelihood == "bernoulli" else out
    np.testing.assert_allclose(mean, expect, rtol=RTOL[dtype], atol=RTOL[dtype])
    if likelihood == "bernoulli":
        assert np.all(mean > 0) and np.all(mean < 1), "probabilities must lie in (0, 1)"
    s1, s2 = m.sample(4, rng=np.random.default_rng(8)), m.sample(4, rng=np.random.default_rng(8))
    assert s1.shape == (4, 6) and s1.dtype == dtype
    np.testing.assert_array_equal(s1, s2)
    zs = np.random.default_rng(8).standard_normal((4, 3), dtype=dtype)
    np.testing.assert_array_equal(s1, m.decode(zs))


def test_decode_is_stable_for_extreme_latents():
    m = sv.VAE(3, (), 1, seed=0)
    mean = m.decode(np.array([[-1e4], [1e4]]))
    assert np.isfinite(mean).all() and np.all((mean >= 0) & (mean <= 1))


@pytest.mark.parametrize("K_", [1, 3])
def test_elbo_is_minus_the_per_example_loss(bern, K_):
    model, x = bern
    eps = np.random.default_rng(2).standard_normal((K_, 7, 3))
    elbo = model.elbo(x, n_samples=K_, eps=eps)
    assert elbo.shape == (7,) and elbo.dtype == F64
    fw = model.forward(x, n_samples=K_, eps=eps)
    np.testing.assert_allclose(elbo, -fw.per_example, rtol=RTOL[F64])
    np.testing.assert_allclose(elbo.mean(), -model.loss(x, n_samples=K_, eps=eps, beta=1.0),
                               rtol=RTOL[F64])
    r = reference_loss(model, x, eps)
    np.testing.assert_allclose(elbo, r["ll"].mean(axis=0) - r["kl"], rtol=RTOL[F64])


def test_log_likelihood_with_one_sample_is_the_log_weight(bern):
    model, x = bern
    ll1 = model.log_likelihood(x, k=1, rng=np.random.default_rng(4))
    eps = model.draw_eps(1, 7, np.random.default_rng(4))
    logw = model.log_weights(x, 1, eps=eps)
    assert ll1.shape == (7,) and logw.shape == (1, 7)
    np.testing.assert_allclose(ll1, logw[0], rtol=RTOL[F64])
    np.testing.assert_allclose(logw, reference_loss(model, x, eps, objective="iwae")["logw"],
                               rtol=RTOL[F64])


def test_log_likelihood_is_above_the_elbo(bern):
    model, x = bern
    ll, se = model.log_likelihood(x, k=400, rng=np.random.default_rng(1), return_stderr=True)
    elbo = model.elbo(x, n_samples=400, rng=np.random.default_rng(2))
    assert ll.shape == se.shape == (7,) and np.all(se >= 0)
    assert ll.mean() > elbo.mean(), f"L_400 {ll.mean()} must exceed the ELBO {elbo.mean()}"
    # L_k increases with k on average (Burda et al. 2016, theorem 1)
    l1 = model.log_likelihood(x, k=1, rng=np.random.default_rng(3))
    assert ll.mean() > l1.mean()


def test_log_likelihood_chunked_agrees_statistically(bern):
    """max_rows forces many chunks; the estimate is of the same quantity."""
    model, x = bern
    small = model.log_likelihood(x, k=50, rng=np.random.default_rng(9), max_rows=16)
    large = model.log_likelihood(x, k=50, rng=np.random.default_rng(9))
    assert small.shape == (7,) and np.all(np.isfinite(small))
    # independent estimates of the same quantity: within a few combined standard errors
    _, se = model.log_likelihood(x, k=50, rng=np.random.default_rng(9), return_stderr=True)
    assert np.all(np.abs(small - large) <= 6 * np.maximum(se, 1e-12) + 1e-9)


# ====================================================================== checkpoints
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", "learned"),
                                                   ("gaussian", 0.3)])
def test_save_load_round_trip_is_bit_identical(tmp_path, dtype, likelihood, output_var):
    m = sv.VAE(5, (4, 3), 2, activation="elu", likelihood=likelihood, output_var=output_var,
               dtype=dtype, seed=9, decoder_hidden_dims=(6,))
    rng = np.random.default_rng(0)
    for v in m.params.values():
        v += rng.standard_normal(v.shape).astype(dtype)
    path = m.save(str(tmp_path / "m.npz"))
    back = sv.VAE.load(path)
    assert back.config == m.config and list(back.params) == list(m.params)
    for key in m.params:
        assert back.params[key].dtype == dtype, key
        np.testing.assert_array_equal(back.params[key], m.params[key], err_msg=key)
    x = rng.random((3, 5)).astype(dtype)
    eps = rng.standard_normal((2, 3, 2)).astype(dtype)
    l1, g1 = m.loss_and_grads(x, n_samples=2, eps=eps)
    l2, g2 = back.loss_and_grads(x, n_samples=2, eps=eps)
    assert l1 == l2
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)
    z = eps[0]
    np.testing.assert_array_equal(back.decode(z), m.decode(z))
    np.testing.assert_array_equal(back.encode(x)[0], m.encode(x)[0])


def test_load_with_the_wrong_class_raises(tmp_path):
    class OtherVAE(sv.VAE):
        model_type = "other"

    path = sv.VAE(3, (2,), 1).save(str(tmp_path / "m.npz"))
    with pytest.raises(ValueError, match="vae"):
        OtherVAE.load(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_load_corrupt_file_raises(tmp_path, damage):
    path = sv.VAE(3, (2,), 1).save(str(tmp_path / "m.npz"))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"garbage": b"not a checkpoint at all" * 10, "truncated": data[: len(data) // 2],
                 "empty": b""}[damage])
    with pytest.raises(ValueError, match="m.npz"):
        sv.VAE.load(path)


def test_load_mismatched_architecture_raises(tmp_path):
    m = sv.VAE(3, (2,), 1)
    cfg = {"model_type": "vae", "args": dict(m.config, hidden_dims=[5]), "scratchvae_format": 1}
    path = svio.save_checkpoint(str(tmp_path / "m.npz"), m.params, cfg)
    with pytest.raises(ValueError, match="enc.W0|shape"):
        sv.VAE.load(path)


def test_load_refuses_a_checkpoint_with_arrays_that_are_not_parameters(tmp_path):
    """A well-formed file whose extra arrays a VAE does not keep (say, a VQ-VAE's code prior
    saved under a VAE's config) is refused, naming them, rather than silently dropped."""
    m = sv.VAE(3, (2,), 1)
    cfg = {"model_type": "vae", "args": m.config, "scratchvae_format": 1}
    path = svio.save_checkpoint(str(tmp_path / "m.npz"), dict(m.params, **{"prior.logits": np.zeros(4)}),
                                cfg)
    with pytest.raises(ValueError, match=r"prior\.logits.*not parameters of a VAE"):
        sv.VAE.load(path)


# ====================================================================== bad input
def test_astype_checks_dtype():
    with pytest.raises(ValueError, match="dtype"):
        sv.VAE(2, (), 1).astype("int32")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(input_dim=0), ValueError, "input_dim"),
    (dict(input_dim=-3), ValueError, "input_dim"),
    (dict(input_dim=2.5), TypeError, "input_dim"),
    (dict(input_dim="4"), TypeError, "input_dim"),
    (dict(hidden_dims=(0,)), ValueError, "hidden_dims"),
    (dict(hidden_dims=(4, -1)), ValueError, "hidden_dims"),
    (dict(hidden_dims=5), TypeError, "hidden_dims"),
    (dict(hidden_dims=(2.0,)), TypeError, "hidden_dims"),
    (dict(latent_dim=0), ValueError, "latent_dim"),
    (dict(latent_dim=-1), ValueError, "latent_dim"),
    (dict(decoder_hidden_dims=(0,)), ValueError, "decoder_hidden_dims"),
    (dict(activation="gelu"), ValueError, "activation"),
    (dict(activation=None), TypeError, "activation"),
    (dict(likelihood="poisson"), ValueError, "likelihood"),
    (dict(output_var=0.0), ValueError, "output_var"),
    (dict(output_var=-1.0), ValueError, "output_var"),
    (dict(output_var=float("nan")), ValueError, "output_var"),
    (dict(output_var="fixed"), ValueError, "output_var"),
    (dict(dtype="float16"), ValueError, "dtype"),
    (dict(dtype="int32"), ValueError, "dtype"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(backend="torch"), ValueError, "backend"),
    (dict(backend=3), TypeError, "backend"),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, match):
    args = dict(input_dim=4, hidden_dims=(3,), latent_dim=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        sv.VAE(**args)


BAD_X = [
    ("1-D", lambda: np.full(4, 0.5), ValueError, "x must be 2-dimensional"),
    ("wrong D", lambda: np.full((2, 5), 0.5), ValueError, r"x must have shape \(any, 4\)"),
    ("empty", lambda: np.zeros((0, 4)), ValueError, "x must not be empty"),
    ("float32", lambda: np.full((2, 4), 0.5, np.float32), ValueError, "x must have dtype float64"),
    ("int", lambda: np.ones((2, 4), np.int64), ValueError, "x must have dtype float64"),
    ("list", lambda: [[0.5] * 4] * 2, TypeError, "x must be a numpy.ndarray"),
    ("nan", lambda: np.array([[0.5, np.nan, 0.5, 0.5]]), ValueError, "x must be finite"),
    ("inf", lambda: np.array([[0.5, np.inf, 0.5, 0.5]]), ValueError, "x must be finite"),
    ("above 1", lambda: np.array([[0.5, 1.5, 0.5, 0.5]]), ValueError, r"x must lie in \[0, 1\]"),
    ("below 0", lambda: np.array([[0.5, -0.1, 0.5, 0.5]]), ValueError, r"x must lie in \[0, 1\]"),
]


@pytest.fixture(scope="module")
def small():
    return sv.VAE(4, (3,), 2, seed=0)


@pytest.mark.parametrize("label,make_x,exc,match", BAD_X, ids=[b[0] for b in BAD_X])
@pytest.mark.parametrize("method", ["loss_and_grads", "loss", "encode", "elbo", "log_likelihood"])
def test_bad_x(small, method, label, make_x, exc, match):
    before = {k: v.copy() for k, v in small.params.items()}
    with pytest.raises(exc, match=match):
        getattr(small, method)(make_x())
    assert all(np.array_equal(v, before[k]) for k, v in small.params.items())


def test_gaussian_likelihood_accepts_any_real_x():
    m = sv.VAE(2, (), 1, likelihood="gaussian")
    assert np.isfinite(m.loss(np.array([[-3.0, 7.0]]), rng=0))


X_OK = np.full((3, 4), 0.5)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(eps=np.zeros((2, 3, 2))), ValueError, "eps"),                      # K mismatch
    (dict(eps=np.zeros((1, 2, 2))), ValueError, "eps"),                      # B mismatch
    (dict(eps=np.zeros((1, 3, 3))), ValueError, "eps"),                      # d mismatch
    (dict(eps=np.zeros((3, 2))), ValueError, "eps"),                         # ndim
    (dict(eps=np.zeros((1, 3, 2), np.float32)), ValueError, "eps"),
    (dict(eps=np.full((1, 3, 2), np.nan)), ValueError, "eps"),
    (dict(eps=[[[0.0, 0.0]] * 3]), TypeError, "eps"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(n_samples=-2), ValueError, "n_samples"),
    (dict(n_samples=1.5), TypeError, "n_samples"),
    (dict(n_samples=2.0), TypeError, "n_samples"),
    (dict(n_samples="2"), TypeError, "n_samples"),
    (dict(n_samples=True), TypeError, "n_samples"),
    (dict(beta=-0.1), ValueError, "beta"),
    (dict(beta=float("nan")), ValueError, "beta"),
    (dict(beta=float("inf")), ValueError, "beta"),
    (dict(beta="1"), TypeError, "beta"),
    (dict(objective="vi"), ValueError, "objective"),
    (dict(objective=None), TypeError, "objective"),
    (dict(free_bits=-1.0), ValueError, "free_bits"),
    (dict(rng="abc"), TypeError, "rng"),
    (dict(rng=1.5), TypeError, "rng"),
    (dict(y=np.zeros(3, np.int64)), ValueError, "y"),
])
@pytest.mark.parametrize("method", ["loss_and_grads", "loss"])
def test_bad_call_arguments(small, method, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        getattr(small, method)(X_OK, **kwargs)


@pytest.mark.parametrize("call,exc,match", [
    (lambda m: m.decode(np.zeros((2, 3))), ValueError, "z"),
    (lambda m: m.decode(np.zeros(2)), ValueError, "z"),
    (lambda m: m.decode(np.zeros((2, 2), np.float32)), ValueError, "z"),
    (lambda m: m.decode(np.full((2, 2), np.inf)), ValueError, "z"),
    (lambda m: m.sample(0), ValueError, "n"),
    (lambda m: m.sample(2.5), TypeError, "n"),
    (lambda m: m.sample(2, rng="x"), TypeError, "rng"),
    (lambda m: m.log_likelihood(X_OK, k=0), ValueError, "k"),
    (lambda m: m.log_likelihood(X_OK, k=2.0), TypeError, "k"),
    (lambda m: m.elbo(X_OK, n_samples=0), ValueError, "n_samples"),
    (lambda m: m.elbo(X_OK, eps=np.zeros((2, 3, 2))), ValueError, "eps"),
    (lambda m: m.draw_eps(0, 3, np.random.default_rng()), ValueError, "n_samples"),
])
def test_bad_arguments_to_the_other_methods(small, call, exc, match):
    with pytest.raises(exc, match=match):
        call(small)


def test_the_cuda_backend_works_exactly_where_numba_sees_a_device():
    """One outcome per environment, decided by numba itself: with the simulator switched on or a
    GPU present the cuda backend builds; without either it raises a ValueError saying so."""
    from numba import config, cuda
    if config.ENABLE_CUDASIM or cuda.is_available():
        assert sv.VAE(2, (), 1, backend="cuda").backend == "cuda"
    else:
        with pytest.raises(ValueError, match="(?i)cuda"):
            sv.VAE(2, (), 1, backend="cuda")


def test_flags_params_and_decoder_labels_are_checked_by_type():
    """A truthy string is not True; a list is not a parameter array; decoder_output checks its
    labels like every other method (a VAE takes none, a CVAE needs valid ones)."""
    m = sv.VAE(3, (2,), 1, dtype="float64")
    x = np.random.default_rng(0).random((2, 3))
    with pytest.raises(TypeError, match="return_dx must be True or False"):
        m.loss_and_grads(x, return_dx="no")
    with pytest.raises(TypeError, match="need_dz must be True or False"):
        m.loglik_given_z(x, np.zeros((1, 2, 1)), need_dz=1)
    with pytest.raises(TypeError, match="params must be a dict"):
        m.loss_and_grads(x, params=[1, 2])
    with pytest.raises(TypeError, match=r"params\['enc.W0'\] must be an array"):
        m.loss_and_grads(x, params=dict(m.params, **{"enc.W0": [[0.0, 0.0]] * 3}))
    opt = sv.Adam()
    _, g = m.loss_and_grads(x)
    with pytest.raises(TypeError, match="check_finite must be True or False"):
        opt.step(m.params, g, check_finite="yes")
    with pytest.raises(ValueError, match="y must be None"):
        m.decoder_output(np.zeros((2, 1)), y=np.array([0, 1]))
    c = sv.CVAE(3, 2, hidden_dims=(2,), latent_dim=1, dtype="float64")
    with pytest.raises(ValueError, match="CVAE needs labels"):
        c.decoder_output(np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        c.decoder_output(np.zeros((2, 1)), y=np.array([0, 5]))
