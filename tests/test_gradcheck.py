"""The gradient checker can fail: deliberately wrong gradients (a factor, a transposition, a
dropped term) are caught and the report names the tensor; float32 is refused with a message that
says float64; the report and the generic ``check_gradients`` behave as documented."""
import numpy as np
import pytest
from hypothesis import given

import scratchvae as sv
import scratchvae.distributions
import scratchvae.layers
import scratchvae.losses
from scratchvae.gradcheck import GradcheckReport, check_gradients
from tests.conftest import FD_RTOL, FD_STEP
from tests.strategies import build, vae_cases

SMALL = dict(input_dim=4, hidden_dims=(4,), latent_dim=2, activation="tanh")


def small_problem(likelihood="bernoulli", output_var=1.0, seed=0):
    model = sv.VAE(**SMALL, likelihood=likelihood, output_var=output_var, seed=seed)
    rng = np.random.default_rng(seed)
    for v in model.params.values():
        v += 0.1 * rng.standard_normal(v.shape)
    x = rng.random((3, 4))
    return model, x


def failing(report):
    return [r.name for r in report.failures()]


def test_a_correct_model_passes_and_the_table_names_every_key():
    model, x = small_problem("gaussian", "learned")
    report = sv.gradcheck(model, x, n_samples=2, tol=FD_RTOL, h=FD_STEP)
    assert report.passed and failing(report) == []
    assert report.max_rel_error <= FD_RTOL
    table = str(report)
    for key in list(model.params) + ["x", "mu (KL)", "logvar (KL)"]:
        assert key in table, key
        row = report[key]
        assert row.n_checked + row.n_below_floor == np.size(
            model.params.get(key, np.zeros(row.shape))), key
    assert "PASSED" in table and "FAILED" not in table
    assert table.count("direction") == 2


def patch_everywhere(monkeypatch, name, fn):
    """Replace the function ``name`` in every scratchvae module that holds it (the modules import
    it by name, so the planted bug reaches whichever module calls it)."""
    import sys
    hit = [m for key, m in list(sys.modules.items())
           if key.startswith("scratchvae") and getattr(m, name, None) is not None]
    assert hit, name
    for m in hit:
        monkeypatch.setattr(m, name, fn)


def wrap_dense_backward(monkeypatch, module, target, change):
    """Replace ``module.dense_backward`` by one that applies ``change`` to dW of the layer whose
    weight is the array ``target``."""
    original = module.dense_backward

    def wrong(dy, cache, **kw):
        da, dW, db = original(dy, cache, **kw)
        return (da, change(dW), db) if cache.W is target else (da, dW, db)

    monkeypatch.setattr(module, "dense_backward", wrong)


def test_catches_a_gradient_off_by_a_factor(monkeypatch):
    model, x = small_problem()
    wrap_dense_backward(monkeypatch, scratchvae.layers, model.params["dec.W_out"],
                        lambda dW: dW * 1.001)
    report = sv.gradcheck(model, x, n_samples=2, tol=FD_RTOL, h=FD_STEP)
    assert not report.passed
    assert failing(report) == ["dec.W_out"]
    row = report["dec.W_out"]
    assert row.max_rel_err > 10 * FD_RTOL and row.normwise_rel_err > 10 * FD_RTOL
    line = next(ln for ln in str(report).splitlines() if ln.startswith("dec.W_out"))
    assert line.rstrip().endswith("NO") and "FAILED" in str(report)
    assert any(err > FD_RTOL for _, _, err in report.directional)


def test_catches_a_transposed_gradient(monkeypatch):
    model, x = small_problem()
    assert model.params["enc.W0"].shape == (4, 4)      # square, so a transpose keeps the shape
    wrap_dense_backward(monkeypatch, scratchvae.layers, model.params["enc.W0"], lambda dW: dW.T)
    report = sv.gradcheck(model, x, tol=FD_RTOL, h=FD_STEP)
    assert failing(report) == ["enc.W0"]
    i, j = report["enc.W0"].worst_index
    assert i != j, "a transpose only moves off-diagonal entries"


def test_catches_a_wrong_learned_variance_gradient(monkeypatch):
    model, x = small_problem("gaussian", "learned")
    original = scratchvae.distributions.gaussian_loglik_backward

    def wrong(dll, cache, **kw):
        dout, dlogvar = original(dll, cache, **kw)
        return dout, 0.5 * dlogvar

    patch_everywhere(monkeypatch, "gaussian_loglik_backward", wrong)
    report = sv.gradcheck(model, x, tol=FD_RTOL, h=FD_STEP)
    assert failing(report) == ["dec.logvar"]


def test_catches_a_missing_input_gradient_path(monkeypatch):
    model, x = small_problem()
    patch_everywhere(monkeypatch, "bernoulli_loglik_dx",        # drops x's path through p(x|z)
                     lambda dll, cache, k: np.zeros(cache.x.shape))
    report = sv.gradcheck(model, x, tol=FD_RTOL, h=FD_STEP)
    assert failing(report) == ["x"]


def test_catches_a_wrong_kl_gradient(monkeypatch):
    """The KL rows check the KL's backward on its own: a wrong dlogvar fails them (and, where the
    model uses the same function, the encoder's rows), never the decoder's."""
    model, x = small_problem()
    original = scratchvae.distributions.gaussian_kl_backward

    def wrong(dkl, cache, **kw):
        dmu, dlogvar = original(dkl, cache, **kw)
        return dmu, dlogvar + 0.01 * dkl[:, None]

    monkeypatch.setattr(scratchvae.distributions, "gaussian_kl_backward", wrong)
    monkeypatch.setattr(scratchvae.losses, "gaussian_kl_backward", wrong)
    report = sv.gradcheck(model, x, tol=FD_RTOL, h=FD_STEP)
    names = failing(report)
    assert "logvar (KL)" in names and "mu (KL)" not in names
    assert all(n.startswith("enc.") or n in ("x", "logvar (KL)") for n in names), names


def test_catches_a_wrong_iwae_gradient(monkeypatch):
    model, x = small_problem()
    monkeypatch.setattr(scratchvae.losses, "log_standard_normal_backward",
                        lambda dlp, v: np.zeros_like(v))       # drops d log p(z) / dz
    report = sv.gradcheck(model, x, n_samples=3, objective="iwae", tol=FD_RTOL, h=FD_STEP)
    names = failing(report)
    assert names and all(n.startswith("enc.") or n == "x" for n in names), names
    assert all(report[k].passed for k in model.params if k.startswith("dec."))


def test_refuses_float32_with_a_message_saying_float64():
    model = sv.VAE(**SMALL, dtype="float32")
    x = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="float64"):
        sv.gradcheck(model, x)
    before = {k: v.copy() for k, v in model.params.items()}
    report = sv.gradcheck(model, x, as_float64=True, tol=FD_RTOL, h=FD_STEP)
    assert report.passed, str(report)
    assert [r.name for r in report.rows][:len(model.params)] == list(model.params)
    assert model.dtype == np.float32, "as_float64 checks a copy"
    for key, v in model.params.items():
        assert v.dtype == np.float32 and np.array_equal(v, before[key]), key


def test_max_entries_checks_a_seeded_subset():
    model = sv.VAE(12, (10,), 3, activation="softplus", seed=1)
    x = np.random.default_rng(1).random((2, 12))
    r1 = sv.gradcheck(model, x, max_entries=5, seed=3, tol=FD_RTOL)
    r2 = sv.gradcheck(model, x, max_entries=5, seed=3, tol=FD_RTOL)
    assert r1.passed
    for row in r1.rows:
        assert row.n_checked + row.n_below_floor == min(5, int(np.prod(row.shape))), row.name
    assert [tuple(r) for r in r1.rows] == [tuple(r) for r in r2.rows], "same seed, same report"


@given(vae_cases(dtypes=("float64",), max_hidden_layers=1, max_width=4, max_input=5))
def test_gradcheck_restores_the_parameters_bit_for_bit(case):
    model, x, eps = build(case)
    arrays = dict(model.params)
    before = {k: v.copy() for k, v in model.params.items()}
    sv.gradcheck(model, x, eps=eps, **case.call_kwargs)
    for key, v in model.params.items():
        assert v is arrays[key], f"{key}: gradcheck replaced the model's array"
        assert np.array_equal(v, before[key]), f"{key}: not restored bit for bit"


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(wrt=("params", "z")), ValueError, "wrt"),
    (dict(tol=0.0), ValueError, "tol"),
    (dict(h=-1e-6), ValueError, "h"),
    (dict(max_entries=0), ValueError, "max_entries"),
    (dict(n_directions=-1), ValueError, "n_directions"),
    (dict(eps=np.zeros((2, 4, 2))), ValueError, "eps"),
    (dict(eps=np.zeros((2, 3, 2)), n_samples=3), ValueError, "eps"),
    (dict(n_samples=0), ValueError, "n_samples"),
])
def test_gradcheck_rejects_bad_arguments(kwargs, exc, match):
    model, x = small_problem()
    with pytest.raises(exc, match=match):
        sv.gradcheck(model, x, **kwargs)


# ====================================================================== the generic checker
def quadratic_problem():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}

    def fun(p):
        return float(np.sum(np.sin(p["a"])) + 0.5 * np.sum(p["b"] ** 2 * p["a"][0, 0]))

    grads = {"a": np.cos(params["a"]), "b": params["b"] * params["a"][0, 0]}
    grads["a"][0, 0] += 0.5 * np.sum(params["b"] ** 2)
    return fun, params, grads


def test_check_gradients_passes_correct_gradients_and_restores():
    fun, params, grads = quadratic_problem()
    before = {k: v.copy() for k, v in params.items()}
    report = check_gradients(fun, params, grads, tol=FD_RTOL)
    assert isinstance(report, GradcheckReport) and report.passed
    assert [r.n_checked + r.n_below_floor for r in report.rows] == [12, 5]
    assert all(np.array_equal(params[k], before[k]) for k in params)


def test_directional_check_catches_an_entry_the_subset_missed():
    fun, params, grads = quadratic_problem()
    grads["b"] = grads["b"].copy()
    subset = check_gradients(fun, params, grads, max_entries=1, rng=np.random.default_rng(5),
                             n_directions=0, tol=FD_RTOL)
    checked = subset["b"].worst_index[0]              # the one entry the subset looked at
    grads["b"][(checked + 1) % 5] += 0.1              # break a different one
    report = check_gradients(fun, params, grads, max_entries=1, rng=np.random.default_rng(5),
                             n_directions=2, tol=FD_RTOL)
    assert report["b"].passed, "the per-entry subset did not see the broken entry"
    assert not report.passed and any(err > FD_RTOL for _, _, err in report.directional)


def test_check_gradients_catches_one_wrong_entry():
    fun, params, grads = quadratic_problem()
    grads["a"] = grads["a"].copy()
    grads["a"][2, 1] += 1e-4
    report = check_gradients(fun, params, grads, tol=FD_RTOL)
    assert [r.name for r in report.failures()] == ["a"]
    assert report["a"].worst_index == (2, 1)
    assert report["a"].max_abs_err == pytest.approx(1e-4, rel=1e-3)


@pytest.mark.parametrize("change,exc,match", [
    (lambda p, g: g.pop("b"), ValueError, "grads"),
    (lambda p, g: g.update(c=np.zeros(1)), ValueError, "grads"),
    (lambda p, g: g.update(b=np.zeros(4)), ValueError, "b"),
    (lambda p, g: p.update(a=p["a"].astype(np.float32)), ValueError, "float64"),
])
def test_check_gradients_rejects_mismatched_input(change, exc, match):
    fun, params, grads = quadratic_problem()
    change(params, grads)
    with pytest.raises(exc, match=match):
        check_gradients(fun, params, grads)


# ====================================================================== K-dependent bugs
def test_default_sample_count_catches_a_missing_one_over_k(monkeypatch):
    """dll = -1/(K B) without its 1/K: invisible at K = 1, caught by the default (K = 2)."""
    from scratchvae import losses
    original = losses.neg_elbo_backward

    def no_one_over_k(ll_shape, beta, dtype, **kw):
        dll, dkl = original(ll_shape, beta, dtype, **kw)
        return dll * ll_shape[0], dkl

    model, x = small_problem()
    patch_everywhere(monkeypatch, "neg_elbo_backward", no_one_over_k)
    assert sv.gradcheck(model, x, n_samples=1, wrt=("params",), tol=FD_RTOL, h=FD_STEP).passed
    report = sv.gradcheck(model, x, wrt=("params",), tol=FD_RTOL, h=FD_STEP)
    assert not report.passed
    assert all(not report[key].passed for key in model.params if key.startswith("dec."))


def test_default_sample_count_catches_uniform_iwae_weights(monkeypatch):
    """dlogw = -1/(K B) (uniform) instead of -w~/B (normalised weights): the same at K = 1."""
    def uniform_weights(cache, **kw):
        K, B = cache.a.shape
        return np.full((K, B), -1.0 / (K * B))

    model, x = small_problem()
    patch_everywhere(monkeypatch, "neg_iwae_backward", uniform_weights)
    kw = dict(objective="iwae", wrt=("params",), tol=FD_RTOL, h=FD_STEP)
    assert sv.gradcheck(model, x, n_samples=1, **kw).passed
    report = sv.gradcheck(model, x, **kw)
    assert not report.passed and "dec.W_out" in failing(report)


def test_given_eps_sets_the_sample_count():
    model, x = small_problem()
    eps = model.draw_eps(3, x.shape[0], np.random.default_rng(0))
    assert sv.gradcheck(model, x, eps=eps, tol=FD_RTOL, h=FD_STEP).passed


# ====================================================================== floored and relative modes
def small_gradient_problem(scale):
    """f(p) = scale * sum(sin(p)): gradients scale * cos(p), planted 50% error in entry 0."""
    params = {"p": np.linspace(0.1, 1.0, 5)}
    grads = {"p": scale * np.cos(params["p"])}
    grads["p"][0] *= 1.5
    return (lambda q: float(scale * np.sin(q["p"]).sum())), params, grads


def test_floored_mode_passes_a_50_percent_error_in_a_tiny_gradient_and_says_so():
    fun, params, grads = small_gradient_problem(1e-6)
    report = check_gradients(fun, params, grads, tol=1e-6, n_directions=0)
    assert report.passed, "the floor of 1 makes the check absolute below 1"
    row = report["p"]
    assert (row.n_checked, row.n_below_floor) == (0, 5)
    assert "abs only" in str(report) and "5 entries below the floor" in str(report)


def test_relative_mode_catches_a_50_percent_error_in_a_tiny_gradient():
    fun, params, grads = small_gradient_problem(1e-6)
    report = check_gradients(fun, params, grads, tol=1e-6, mode="relative", n_directions=0)
    assert not report.passed
    assert report["p"].worst_index == (0,) and report["p"].max_rel_err == pytest.approx(1 / 3, rel=1e-3)
    grads["p"][0] /= 1.5
    assert check_gradients(fun, params, grads, tol=1e-6, mode="relative", n_directions=2).passed


def test_relative_mode_reports_gradients_below_the_noise_floor_as_not_checked():
    """A gradient of 1e-6 in a loss of size 1: rounding noise of the differences (~1e-10) is
    1e-4 of it, so at tol 1e-6 it is not checked, at tol 1e-3 it is checked (and fails)."""
    fun0, params, grads = small_gradient_problem(1e-6)

    def fun(q):
        return 1.0 + fun0(q)
    report = check_gradients(fun, params, grads, tol=1e-6, mode="relative", n_directions=1)
    assert report.passed and report["p"].n_checked == 0 and report.n_below_floor == 5
    assert "not checked" in str(report) and report.directional[0][2] is None
    loose = check_gradients(fun, params, grads, tol=1e-3, mode="relative", n_directions=0)
    assert not loose.passed and loose["p"].n_checked == 5


def test_relative_mode_passes_a_correct_model_and_fails_a_wrong_one(monkeypatch):
    model, x = small_problem("gaussian", "learned")
    report = sv.gradcheck(model, x, mode="relative", tol=FD_RTOL, h=FD_STEP)
    assert report.passed, str(report)
    assert sum(r.n_checked for r in report.rows) > 0
    wrap_dense_backward(monkeypatch, scratchvae.layers, model.params["enc.W0"], lambda dW: dW * 1.01)
    assert "enc.W0" in failing(sv.gradcheck(model, x, mode="relative", tol=FD_RTOL, h=FD_STEP))


def test_bernoulli_inputs_at_the_edge_of_the_support_are_left_unchecked():
    model, x = small_problem()
    x[0, :2] = [0.0, 1.0]
    report = sv.gradcheck(model, x, wrt=("x",), tol=FD_RTOL, h=FD_STEP)
    assert report.passed and report["x"].n_checked + report["x"].n_below_floor == x.size
    assert report["x"].n_below_floor >= 2


def test_mode_and_floor_are_validated():
    fun, params, grads = quadratic_problem()
    with pytest.raises(ValueError, match="mode"):
        check_gradients(fun, params, grads, mode="absolute")
    with pytest.raises(ValueError, match="floor"):
        check_gradients(fun, params, grads, floor=0.0)
