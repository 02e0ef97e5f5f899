"""The conditional VAE: shapes, the loss against an independent forward written here from
the model's equations, finite-difference gradients (fixed cases and hypothesis-drawn
architectures), bad labels, checkpoints, training, the analogy grid, and the numba backend."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import scratchvae as sv
from scratchvae.cvae import CVAE, cvae_analogies
from scratchvae.model import VAE
from scratchvae.train import fit
from tests.conftest import FD_RTOL, RTOL
from tests.reference import log_normal as ref_log_normal
from tests.reference import mlp as ref_mlp

F64 = np.dtype(np.float64)
KINKED = ("relu", "leaky_relu")


# ====================================================================== independent reference




def ref_loglik(x, out, likelihood, logvar):
    if likelihood == "bernoulli":
        return np.sum(x * out - np.logaddexp(0, out), axis=-1)
    s2 = np.exp(logvar)
    return -0.5 * np.sum((x - out) ** 2 / s2 + np.log(2 * np.pi * s2), axis=-1)




def ref_cvae(model, x, y, eps, beta=1.0, objective="elbo"):
    """Per-example loss (CVAE), one sample at a time, and the smallest
    |pre-activation| (to keep ReLU kinks away from the finite differences)."""
    p = {key: v.astype(np.float64) for key, v in model.params.items()}
    x, eps = x.astype(np.float64), eps.astype(np.float64)
    C = model.n_classes
    onehot = np.zeros((y.size, C))
    onehot[np.arange(y.size), y] = 1.0
    pre = []
    a = ref_mlp(p, "enc", np.hstack([x, onehot]), model.activation, pre)
    mu = a @ p["enc.W_mu"] + p["enc.b_mu"]
    logvar = a @ p["enc.W_logvar"] + p["enc.b_logvar"]
    if model.likelihood == "gaussian":
        dec_logvar = (p["dec.logvar"] if model.output_var == "learned"
                      else np.full(x.shape[1], np.log(model.output_var)))
    else:
        dec_logvar = None
    ll, logw = [], []
    for e in eps:
        z = mu + np.sqrt(np.exp(logvar)) * e
        c = ref_mlp(p, "dec", np.hstack([z, onehot]), model.activation, pre)
        out = c @ p["dec.W_out"] + p["dec.b_out"]
        ll_k = ref_loglik(x, out, model.likelihood, dec_logvar)
        ll.append(ll_k)
        logw.append(ll_k + ref_log_normal(z, 0.0, 0.0) - ref_log_normal(z, mu, logvar))
    kl = 0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1 - logvar, axis=1)
    if objective == "elbo":
        loss = -np.mean(ll, axis=0) + beta * kl
    else:
        logw = np.array(logw)
        m = logw.max(axis=0)
        loss = -(m + np.log(np.exp(logw - m).sum(axis=0)) - np.log(len(eps)))
    min_pre = min((np.abs(h).min() for h in pre), default=np.inf)
    return loss, min_pre


def randomize(model, rng, scale=0.3):
    """Move the biases (and a learned output variance) off zero so no term is trivial."""
    for key, v in model.params.items():
        if ".b" in key or key == "dec.logvar":
            v += (scale * rng.standard_normal(v.shape)).astype(v.dtype)


def data(model, B, rng):
    x = rng.random((B, model.input_dim)).astype(model.dtype)
    y = rng.integers(0, model.n_classes, B)
    return x, y


def small(dtype="float64", likelihood="bernoulli", output_var=1.0, backend="numpy",
          activation="tanh", seed=0, hidden=(6,)):
    m = CVAE(5, 3, hidden_dims=hidden, latent_dim=2, activation=activation,
             likelihood=likelihood, output_var=output_var, dtype=dtype, seed=seed,
             backend=backend)
    randomize(m, np.random.default_rng(seed + 100))
    return m


# ====================================================================== structure
def test_parameter_keys_shapes_and_order():
    m = CVAE(7, 4, hidden_dims=(5, 3), latent_dim=2, decoder_hidden_dims=(6,),
             likelihood="gaussian", output_var="learned")
    expected = [("enc.W0", (11, 5)), ("enc.b0", (5,)), ("enc.W1", (5, 3)), ("enc.b1", (3,)),
                ("enc.W_mu", (3, 2)), ("enc.b_mu", (2,)), ("enc.W_logvar", (3, 2)),
                ("enc.b_logvar", (2,)), ("dec.W0", (6, 6)), ("dec.b0", (6,)),
                ("dec.W_out", (6, 7)), ("dec.b_out", (7,)), ("dec.logvar", (7,))]
    assert [(k, v.shape) for k, v in m.params.items()] == expected
    assert m.conditional and m.model_type == "cvae"


def test_no_hidden_layers_heads_take_label_rows():
    m = CVAE(7, 4, hidden_dims=(), latent_dim=2)
    assert m.params["enc.W_mu"].shape == (11, 2)
    assert m.params["enc.W_logvar"].shape == (11, 2)
    assert m.params["dec.W_out"].shape == (6, 7)


def test_config_rebuilds_the_model():
    m = CVAE(7, 4, hidden_dims=(5,), latent_dim=2, seed=3)
    assert m.config["n_classes"] == 4
    m2 = CVAE(**m.config)
    for key in m.params:
        np.testing.assert_array_equal(m2.params[key], m.params[key], err_msg=key)


def test_onehot_and_draw_eps_dtype(dtype):
    m = small(dtype=dtype.name)
    oh = m.onehot(np.array([2, 0]))
    assert oh.dtype == dtype
    np.testing.assert_array_equal(oh, [[0, 0, 1], [1, 0, 0]])
    eps = m.draw_eps(3, 4, np.random.default_rng(0))
    assert eps.shape == (3, 4, 2) and eps.dtype == dtype


# ====================================================================== values
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", 0.3),
                                                   ("gaussian", "learned")])
def test_loss_matches_reference(objective, likelihood, output_var):
    m = small(likelihood=likelihood, output_var=output_var)
    rng = np.random.default_rng(1)
    x, y = data(m, 4, rng)
    eps = m.draw_eps(3, 4, rng)
    r = m.forward(x, y, n_samples=3, eps=eps, objective=objective)
    ref, _ = ref_cvae(m, x, y, eps, objective=objective)
    np.testing.assert_allclose(r.per_example, ref, rtol=RTOL[F64], atol=RTOL[F64])
    loss = m.loss(x, y, n_samples=3, beta=1.0, eps=eps, objective=objective)
    np.testing.assert_allclose(loss, ref.mean(), rtol=RTOL[F64])


def test_elbo_and_beta():
    m = small()
    rng = np.random.default_rng(2)
    x, y = data(m, 4, rng)
    eps = m.draw_eps(2, 4, rng)
    ref, _ = ref_cvae(m, x, y, eps, beta=1.0)
    np.testing.assert_allclose(m.elbo(x, y, n_samples=2, eps=eps), -ref, rtol=RTOL[F64])
    ref_b, _ = ref_cvae(m, x, y, eps, beta=0.25)
    np.testing.assert_allclose(m.loss(x, y, n_samples=2, beta=0.25, eps=eps), ref_b.mean(),
                               rtol=RTOL[F64])


def test_labels_change_the_output():
    m = small()
    z = np.random.default_rng(0).standard_normal((2, 2))
    assert not np.allclose(m.decode(z, np.array([0, 0])), m.decode(z, np.array([1, 1])))
    x = np.random.default_rng(1).random((2, 5))
    assert not np.allclose(m.encode(x, np.array([0, 0]))[0], m.encode(x, np.array([2, 2]))[0])


def test_same_eps_same_bits_and_dtype_kept(dtype):
    m = small(dtype=dtype.name)
    rng = np.random.default_rng(3)
    x, y = data(m, 3, rng)
    eps = m.draw_eps(2, 3, rng)
    l1, g1 = m.loss_and_grads(x, y, n_samples=2, eps=eps, objective="iwae")
    l2, g2 = m.loss_and_grads(x, y, n_samples=2, eps=eps, objective="iwae")
    assert l1 == l2
    for key in m.params:
        np.testing.assert_array_equal(g1[key], g2[key], err_msg=key)
        assert g1[key].dtype == dtype and g1[key].shape == m.params[key].shape, key
    for out in (*m.encode(x, y), m.decode(eps[0], y), m.sample(4, y=1), m.elbo(x, y)):
        assert out.dtype == dtype


def test_float32_matches_float64():
    m32 = small(dtype="float32")
    m64 = m32.astype("float64")
    rng = np.random.default_rng(4)
    x, y = data(m64, 6, rng)
    eps = m64.draw_eps(2, 6, rng)
    for objective in ("elbo", "iwae"):
        l64, g64 = m64.loss_and_grads(x, y, n_samples=2, eps=eps, objective=objective)
        l32, g32 = m32.loss_and_grads(x.astype(np.float32), y, n_samples=2,
                                      eps=eps.astype(np.float32), objective=objective)
        assert abs(l32 - l64) <= 1e-5 * abs(l64)
        for key in g64:
            err = np.linalg.norm(g32[key] - g64[key]) / max(np.linalg.norm(g64[key]), 1e-3)
            assert err <= 1e-5, f"{objective} {key}: normwise error {err:.2e}"


# ====================================================================== gradients
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("likelihood,output_var", [("bernoulli", 1.0), ("gaussian", "learned")])
def test_gradcheck_fixed_eps(objective, likelihood, output_var):
    m = small(likelihood=likelihood, output_var=output_var, hidden=(6, 4))
    rng = np.random.default_rng(5)
    x, y = data(m, 4, rng)
    eps = m.draw_eps(3, 4, rng)
    rep = sv.gradcheck(m, x, y, n_samples=3, beta=0.7, objective=objective, eps=eps,
                       tol=FD_RTOL)
    assert rep.passed, str(rep)
    assert {r.name for r in rep.rows} >= set(m.params) | {"x"}


def test_gradcheck_free_bits():
    m = small()
    rng = np.random.default_rng(6)
    x, y = data(m, 5, rng)
    rep = sv.gradcheck(m, x, y, n_samples=2, free_bits=0.05, wrt=("params",), tol=FD_RTOL)
    assert rep.passed, str(rep)


def test_gradcheck_refuses_missing_labels():
    m = small()
    x, _ = data(m, 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="labels y"):
        sv.gradcheck(m, x)


@st.composite
def cvae_cases(draw):
    widths = st.lists(st.integers(1, 8), min_size=0, max_size=2)
    return dict(
        D=draw(st.integers(1, 6)), C=draw(st.integers(2, 4)), d=draw(st.integers(1, 3)),
        hidden=tuple(draw(widths)), dec_hidden=draw(st.none() | widths.map(tuple)),
        B=draw(st.integers(1, 4)), K=draw(st.integers(1, 3)),
        beta=draw(st.floats(0, 2, allow_nan=False, allow_infinity=False, allow_subnormal=False)),
        activation=draw(st.sampled_from(["tanh", "softplus", "sigmoid", "elu", "relu",
                                         "leaky_relu"])),
        likelihood=draw(st.sampled_from([("bernoulli", 1.0), ("gaussian", 0.5),
                                         ("gaussian", "learned")])),
        objective=draw(st.sampled_from(["elbo", "iwae"])),
        seed=draw(st.integers(0, 2**32 - 1)))


@given(cvae_cases())
def test_property_loss_and_gradients(case):
    rng = np.random.default_rng(case["seed"])
    lik, ov = case["likelihood"]
    m = CVAE(case["D"], case["C"], hidden_dims=case["hidden"], latent_dim=case["d"],
             decoder_hidden_dims=case["dec_hidden"], activation=case["activation"],
             likelihood=lik, output_var=ov, seed=case["seed"] % 1000)
    randomize(m, rng)
    x, y = data(m, case["B"], rng)
    eps = m.draw_eps(case["K"], case["B"], rng)
    ref, min_pre = ref_cvae(m, x, y, eps, beta=case["beta"], objective=case["objective"])
    if case["activation"] in KINKED:
        assume(min_pre > 1e-4)       # finite differences must not straddle a kink
    # central differences carry roundoff ~ 1e-16 |loss| / h = 1e-10 |loss|: a drawn network whose
    # loss is huge (a chain of linear heads can give exp(-logvar) ~ 1e6) cannot be checked to 1e-6
    assume(np.abs(ref).max() < 100)
    r = m.forward(x, y, n_samples=case["K"], eps=eps, objective=case["objective"],
                  beta=case["beta"])
    np.testing.assert_allclose(r.per_example, ref, rtol=RTOL[F64], atol=RTOL[F64])
    rep = sv.gradcheck(m, x, y, n_samples=case["K"], beta=case["beta"],
                       objective=case["objective"], eps=eps, tol=FD_RTOL, wrt=("params", "x"))
    assert rep.passed, str(rep)


# ====================================================================== bad input
@pytest.mark.parametrize("y,exc,match", [
    (np.array([0, 3, 1]), ValueError, r"y must lie in \[0, 3\)"),
    (np.array([0, -1, 1]), ValueError, r"y must lie in \[0, 3\)"),
    (np.array([0, 1]), ValueError, r"y must have shape \(3,\)"),
    (np.array([[0, 1, 2]]), ValueError, r"y must have shape \(3,\)"),
    (np.array([0.0, 1.0, 2.0]), ValueError, "y must have an integer dtype"),
    (np.array([True, False, True]), ValueError, "y must have an integer dtype"),
    ([0, 1, 2], TypeError, "y must be a numpy.ndarray"),
    (None, ValueError, "CVAE needs labels y"),
])
def test_bad_labels(y, exc, match):
    m = small()
    x, _ = data(m, 3, np.random.default_rng(0))
    for call in (lambda: m.loss_and_grads(x, y), lambda: m.loss(x, y), lambda: m.encode(x, y),
                 lambda: m.elbo(x, y), lambda: m.log_likelihood(x, y, k=2)):
        with pytest.raises(exc, match=match):
            call()


def test_bad_labels_decode_and_sample():
    m = small()
    z = np.zeros((2, 2))
    with pytest.raises(ValueError, match="CVAE needs labels y"):
        m.decode(z, None)
    with pytest.raises(ValueError, match=r"y must lie in \[0, 3\)"):
        m.decode(z, np.array([0, 5]))
    with pytest.raises(ValueError, match="y must be <= 2"):
        m.sample(2, y=3)
    with pytest.raises(ValueError, match=r"y must have shape \(4,\)"):
        m.sample(4, y=np.array([0, 1]))
    with pytest.raises(TypeError, match="y must be a numpy.ndarray"):
        m.sample(2, y=1.0)


@pytest.mark.parametrize("n_classes,exc", [(1, ValueError), (0, ValueError), (2.0, TypeError),
                                           ("10", TypeError), (True, TypeError)])
def test_bad_n_classes(n_classes, exc):
    with pytest.raises(exc, match="n_classes"):
        CVAE(5, n_classes)


def test_fit_labels_are_checked():
    m = small()
    rng = np.random.default_rng(0)
    x, y = data(m, 10, rng)
    with pytest.raises(ValueError, match=r"y_train must lie in \[0, 3\)"):
        fit(m, x, y_train=y + 3, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"y_train must have shape \(10,\)"):
        fit(m, x, y_train=y[:5], epochs=1, progress=False)
    with pytest.raises(ValueError, match="y"):
        fit(m, x, epochs=1, progress=False)
    with pytest.raises(ValueError, match="y_val"):
        fit(m, x, x_val=x[:3], y_train=y, y_val=y[:2], epochs=1, progress=False)
    with pytest.raises(ValueError, match="y_train must be None for VAE"):
        fit(VAE(5, hidden_dims=(3,), latent_dim=2), x, y_train=y, epochs=1,
                     progress=False)


def test_analogies_refuse_other_models():
    with pytest.raises(TypeError, match="model must be a CVAE"):
        cvae_analogies(VAE(5, hidden_dims=(3,), latent_dim=2), np.zeros((1, 5)), np.zeros(1, int))


# ====================================================================== generation
def test_sample_labels():
    m = small()
    s_none = m.sample(7, rng=np.random.default_rng(0))
    z = np.random.default_rng(0).standard_normal((7, 2))
    np.testing.assert_array_equal(s_none, m.decode(z, np.arange(7) % 3))
    np.testing.assert_array_equal(m.sample(7, y=2, rng=np.random.default_rng(0)),
                                  m.decode(z, np.full(7, 2)))
    labels = np.array([1, 0, 2, 2, 1, 0, 0])
    np.testing.assert_array_equal(m.sample(7, y=labels, rng=np.random.default_rng(0)),
                                  m.decode(z, labels))
    assert np.all((s_none >= 0) & (s_none <= 1))


def test_analogies_grid():
    m = small()
    x, y = data(m, 4, np.random.default_rng(7))
    grid = cvae_analogies(m, x, y)
    assert grid.shape == (4, 3, 5) and grid.dtype == m.dtype
    mu, _ = m.encode(x, y)
    for c in range(3):
        np.testing.assert_allclose(grid[:, c], m.decode(mu, np.full(4, c)), rtol=RTOL[F64])


# ====================================================================== likelihood estimate
def test_log_likelihood_is_the_iw_bound_with_drawn_noise():
    m = small()
    rng = np.random.default_rng(8)
    x, y = data(m, 3, rng)
    est, se = m.log_likelihood(x, y, k=50, rng=np.random.default_rng(9), return_stderr=True)
    eps = m.draw_eps(50, 3, np.random.default_rng(9))
    ref, _ = ref_cvae(m, x, y, eps, objective="iwae")
    np.testing.assert_allclose(est, -ref, rtol=RTOL[F64])
    logw = m.log_weights(x, y, 50, eps=eps)
    w = np.exp(logw - logw.max(axis=0))
    w /= w.sum(axis=0)
    np.testing.assert_allclose(se, np.sqrt((50 * (w ** 2).sum(axis=0) - 1) / 50), rtol=1e-10)


# ====================================================================== checkpoints and training
def test_save_load_round_trip(tmp_path, dtype):
    m = small(dtype=dtype.name, likelihood="gaussian", output_var="learned")
    path = m.save(tmp_path / "cvae")
    m2 = CVAE.load(path)
    assert m2.config == m.config and m2.dtype == dtype
    for key in m.params:
        np.testing.assert_array_equal(m2.params[key], m.params[key], err_msg=key)
    x, y = data(m, 3, np.random.default_rng(0))
    eps = m.draw_eps(2, 3, np.random.default_rng(1))
    assert m2.loss(x, y, n_samples=2, eps=eps) == m.loss(x, y, n_samples=2, eps=eps)


def test_load_as_wrong_class(tmp_path):
    cpath = small().save(tmp_path / "cvae")
    vpath = VAE(5, hidden_dims=(3,), latent_dim=2).save(tmp_path / "vae")
    with pytest.raises(ValueError, match="holds a 'cvae' model; VAE.load expects 'vae'"):
        VAE.load(cpath)
    with pytest.raises(ValueError, match="holds a 'vae' model; CVAE.load expects 'cvae'"):
        CVAE.load(vpath)


# The training and backend tests that every model class shares are parametrized over the
# classes in tests/test_backends.py.
