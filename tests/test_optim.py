"""Optimizers: updates against formulas written out here in float64, in-place updates, dtype,
validation that leaves everything unchanged, state_dict round trips, backends."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scratchvae import io as svio
from scratchvae.optim import SGD, Adagrad, Adam
from tests.conftest import RTOL

SHAPES = {"enc.W0": (3, 2), "enc.b0": (2,), "dec.W_out": (2, 4)}


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}


def make_grads(params, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def run_steps(opt, params, n, first_seed=100):
    """n steps with grads from seeds first_seed, first_seed+1, ...; returns the grads used."""
    used = []
    for i in range(n):
        g = make_grads(params, first_seed + i)
        opt.step(params, g)
        used.append(g)
    return used


def assert_close(params, expected, dtype):
    for k, p in params.items():
        assert p.dtype == dtype, k
        np.testing.assert_allclose(p, expected[k], rtol=RTOL[np.dtype(dtype)], atol=0,
                                   err_msg=f"params[{k!r}]")


# ---------------------------------------------------------------- update equations
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_matches_hand_formula(dtype, momentum):
    lr = 0.1
    params = make_params(dtype)
    p0 = {k: p.astype(np.float64) for k, p in params.items()}
    gs = run_steps(SGD(lr, momentum=momentum), params, 3)
    g1, g2, g3 = ({k: g[k].astype(np.float64) for k in g} for g in gs)
    expected = {}
    for k in params:
        # velocity_1 = g1, velocity_2 = mu g1 + g2, velocity_3 = mu^2 g1 + mu g2 + g3
        v1 = g1[k]
        v2 = momentum * g1[k] + g2[k]
        v3 = momentum**2 * g1[k] + momentum * g2[k] + g3[k]
        expected[k] = p0[k] - lr * (v1 + v2 + v3)
    assert_close(params, expected, dtype)


def test_adam_bias_correction_first_two_steps(dtype):
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    params = make_params(dtype)
    p0 = {k: p.astype(np.float64) for k, p in params.items()}
    opt = Adam(lr, b1, b2, eps)
    (g1,) = run_steps(opt, params, 1, first_seed=7)
    g1 = {k: g.astype(np.float64) for k, g in g1.items()}
    # t=1: mhat = g1 and vhat = g1^2 exactly, so the step is lr * g1 / (|g1| + eps)
    p1 = {k: p0[k] - lr * g1[k] / (np.abs(g1[k]) + eps) for k in params}
    assert_close(params, p1, dtype)
    (g2,) = run_steps(opt, params, 1, first_seed=8)
    g2 = {k: g.astype(np.float64) for k, g in g2.items()}
    p2 = {}
    for k in params:
        m2 = b1 * (1 - b1) * g1[k] + (1 - b1) * g2[k]
        v2 = b2 * (1 - b2) * g1[k] ** 2 + (1 - b2) * g2[k] ** 2
        mhat, vhat = m2 / (1 - b1**2), v2 / (1 - b2**2)
        p2[k] = p1[k] - lr * mhat / (np.sqrt(vhat) + eps)
    assert_close(params, p2, dtype)
    assert opt.t == 2


def test_adam_three_steps_against_loop(dtype):
    lr, b1, b2, eps = 0.05, 0.8, 0.99, 1e-6
    params = make_params(dtype, seed=3)
    p = {k: a.astype(np.float64) for k, a in params.items()}
    gs = run_steps(Adam(lr, b1, b2, eps), params, 3)
    m = {k: np.zeros_like(a) for k, a in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    for t, g in enumerate(gs, start=1):
        for k in p:
            gk = g[k].astype(np.float64)
            m[k] = b1 * m[k] + (1 - b1) * gk
            v[k] = b2 * v[k] + (1 - b2) * gk * gk
            p[k] = p[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
    assert_close(params, p, dtype)


def test_adagrad_matches_hand_formula(dtype):
    lr, eps = 0.5, 1e-8
    params = make_params(dtype)
    p0 = {k: p.astype(np.float64) for k, p in params.items()}
    gs = run_steps(Adagrad(lr, eps=eps), params, 2)
    g1, g2 = ({k: g[k].astype(np.float64) for k in g} for g in gs)
    expected = {}
    for k in params:
        s1 = g1[k] ** 2
        s2 = g1[k] ** 2 + g2[k] ** 2
        expected[k] = p0[k] - lr * g1[k] / (np.sqrt(s1) + eps) - lr * g2[k] / (np.sqrt(s2) + eps)
    assert_close(params, expected, dtype)


@given(g=arrays(np.float64, (5,), elements=st.floats(-1e3, 1e3, allow_nan=False,
                                                       allow_infinity=False,
                                                       allow_subnormal=False)),
       lr=st.floats(1e-4, 1.0, allow_nan=False, allow_infinity=False, allow_subnormal=False))
def test_adam_first_step_is_at_most_lr(g, lr):
    """At t=1 each coordinate moves by lr * |g| / (|g| + eps) <= lr: Adam's trust region."""
    p = np.zeros(5)
    Adam(lr).step({"p": p}, {"p": g})
    assert np.all(np.abs(p) <= lr)
    np.testing.assert_allclose(np.abs(p), lr * np.abs(g) / (np.abs(g) + 1e-8), rtol=1e-12)


# ---------------------------------------------------------------- in place, dtype, state
@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1, 0.5), lambda: Adam(), lambda: Adagrad(0.1)],
                         ids=["SGD", "Adam", "Adagrad"])
def test_in_place_and_dtype_kept(dtype, make_opt):
    params = make_params(dtype)
    before = {k: p.copy() for k, p in params.items()}
    objects = {k: p for k, p in params.items()}
    view = params["enc.W0"][0]  # a view into the param sees the update
    opt = make_opt()
    run_steps(opt, params, 2)
    for k, p in params.items():
        assert p is objects[k], f"params[{k!r}] was rebound"
        assert p.dtype == dtype
        assert not np.array_equal(p, before[k]), f"params[{k!r}] did not change"
    np.testing.assert_array_equal(view, params["enc.W0"][0])
    for name, a in opt.state_dict().items():
        if isinstance(a, np.ndarray):
            assert a.dtype == dtype, name


def test_lr_change_takes_effect_between_steps():
    params = {"w": np.zeros(3)}
    opt = SGD(0.1)
    g = {"w": np.ones(3)}
    opt.step(params, g)
    opt.lr = 0.01  # a schedule sets the attribute
    opt.step(params, g)
    np.testing.assert_allclose(params["w"], -0.11, rtol=1e-15)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("make, name, exc", [
    (lambda: SGD(0.0), "lr", ValueError),
    (lambda: SGD(-1.0), "lr", ValueError),
    (lambda: SGD(float("nan")), "lr", ValueError),
    (lambda: SGD("0.1"), "lr", TypeError),
    (lambda: SGD(0.1, momentum=1.0), "momentum", ValueError),
    (lambda: SGD(0.1, momentum=-0.1), "momentum", ValueError),
    (lambda: Adam(lr=0.0), "lr", ValueError),
    (lambda: Adam(beta1=1.0), "beta1", ValueError),
    (lambda: Adam(beta2=-0.5), "beta2", ValueError),
    (lambda: Adam(eps=0.0), "eps", ValueError),
    (lambda: Adagrad(1e-2, eps=-1e-8), "eps", ValueError),
    (lambda: Adagrad(None), "lr", TypeError),
    (lambda: Adam(backend="tpu"), "backend", ValueError),
])
def test_bad_hyperparameters_raise_naming_them(make, name, exc):
    with pytest.raises(exc, match=name):
        make()


def _bad_grads(params):
    """(description, grads, exception, text the message must contain) for one bad call each."""
    ok = make_grads(params, 1)
    nan = dict(ok, **{"enc.b0": ok["enc.b0"].copy()})
    nan["enc.b0"][1] = np.nan
    inf = dict(ok, **{"dec.W_out": ok["dec.W_out"].copy()})
    inf["dec.W_out"][0, 0] = -np.inf
    other = np.float32 if params["enc.W0"].dtype == np.float64 else np.float64
    missing = {k: g for k, g in ok.items() if k != "enc.b0"}
    return [
        ("missing key", missing, ValueError, "enc.b0"),
        ("extra key", dict(ok, extra=np.zeros(2, ok["enc.b0"].dtype)), ValueError, "extra"),
        ("shape", dict(ok, **{"enc.W0": ok["enc.W0"].T.copy()}), ValueError, "enc.W0"),
        ("dtype", dict(ok, **{"enc.b0": ok["enc.b0"].astype(other)}), ValueError, "enc.b0"),
        ("nan", nan, ValueError, "enc.b0"),
        ("inf", inf, ValueError, "dec.W_out"),
        ("list", dict(ok, **{"enc.b0": list(ok["enc.b0"])}), TypeError, "enc.b0"),
        ("not a dict", list(ok.values()), TypeError, "grads"),
    ]


@pytest.mark.parametrize("opt_cls", [SGD, Adam, Adagrad])
@pytest.mark.parametrize("case", range(8))
@pytest.mark.parametrize("steps_before", [0, 1])
def test_bad_grads_change_nothing(dtype, opt_cls, case, steps_before):
    params = make_params(dtype)
    opt = opt_cls(0.1)
    run_steps(opt, params, steps_before)
    before = {k: p.copy() for k, p in params.items()}
    state_before = opt.state_dict()
    desc, grads, exc, text = _bad_grads(params)[case]
    with pytest.raises(exc, match=text):
        opt.step(params, grads)
    for k, p in params.items():
        np.testing.assert_array_equal(p, before[k], err_msg=f"{desc}: params[{k!r}] changed")
    _assert_state_equal(opt.state_dict(), state_before)


def test_missing_and_extra_keys_are_named():
    params = make_params(np.float64)
    grads = make_grads(params, 1)
    grads["enc.b1"] = grads.pop("enc.b0")
    with pytest.raises(ValueError, match=r"missing \['enc.b0'\].*extra \['enc.b1'\]"):
        Adam().step(params, grads)


def test_bad_params_raise():
    opt = SGD(0.1)
    with pytest.raises(TypeError, match="params"):
        opt.step([np.zeros(2)], {"a": np.zeros(2)})
    with pytest.raises(ValueError, match="params must not be empty"):
        opt.step({}, {})
    ints = {"a": np.zeros(2, np.int64)}
    with pytest.raises(ValueError, match=r"params\['a'\].*float32 or float64"):
        opt.step(ints, {"a": np.zeros(2)})
    strided = {"a": np.zeros((2, 4))[:, ::2]}
    with pytest.raises(ValueError, match=r"params\['a'\].*contiguous"):
        opt.step(strided, {"a": np.zeros((2, 2))})
    assert opt.t == 0


def test_mutated_lr_is_validated_before_update():
    params = make_params(np.float64)
    before = {k: p.copy() for k, p in params.items()}
    opt = Adam()
    opt.lr = -1.0
    with pytest.raises(ValueError, match="lr"):
        opt.step(params, make_grads(params, 1))
    assert opt.t == 0
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])


def test_params_must_match_existing_state_until_reset():
    params = make_params(np.float64)
    opt = Adam()
    run_steps(opt, params, 1)
    grown = dict(params, **{"dec.logvar": np.zeros(4)})
    with pytest.raises(ValueError, match=r"extra \['dec.logvar'\]"):
        opt.step(grown, make_grads(grown, 2))
    reshaped = dict(params, **{"enc.b0": np.zeros(3)})
    with pytest.raises(ValueError, match="enc.b0"):
        opt.step(reshaped, make_grads(reshaped, 2))
    as32 = {k: p.astype(np.float32) for k, p in params.items()}
    with pytest.raises(ValueError, match="enc.W0"):
        opt.step(as32, make_grads(as32, 2))
    assert opt.t == 1
    opt.reset()
    assert opt.t == 0 and opt.state_dict() == {"optimizer": "Adam", "lr": 1e-3, "beta1": 0.9,
                                               "beta2": 0.999, "eps": 1e-8, "t": 0}
    opt.step(grown, make_grads(grown, 2))
    assert opt.t == 1


# ---------------------------------------------------------------- state_dict
def _assert_state_equal(a, b):
    assert list(a) == list(b)
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


@pytest.mark.parametrize("make_opt", [lambda: SGD(0.1, 0.9), lambda: Adam(0.01),
                                      lambda: Adagrad(0.3)], ids=["SGD", "Adam", "Adagrad"])
def test_state_dict_round_trip_continues_identically(dtype, make_opt):
    params = make_params(dtype)
    opt = make_opt()
    run_steps(opt, params, 2)
    sd = opt.state_dict()
    sd_copy = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in sd.items()}
    twin_params = {k: p.copy() for k, p in params.items()}
    twin = make_opt()
    twin.lr = 1.0  # overwritten by load_state_dict
    twin.load_state_dict(sd)
    run_steps(opt, params, 2, first_seed=200)
    run_steps(twin, twin_params, 2, first_seed=200)
    for k in params:
        np.testing.assert_array_equal(twin_params[k], params[k], err_msg=k)  # bit-identical
    _assert_state_equal(twin.state_dict(), opt.state_dict())
    _assert_state_equal(sd, sd_copy)  # the returned arrays are copies, not the live state


def test_state_dict_survives_a_checkpoint_file(tmp_path):
    """state_dict splits into arrays and JSON numbers, so scratchvae.io stores it without pickle."""
    params = make_params(np.float32)
    opt = Adam(0.01)
    run_steps(opt, params, 3)
    sd = opt.state_dict()
    arrays = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in sd.items() if not isinstance(v, np.ndarray)}
    path = svio.save_checkpoint(tmp_path / "opt", arrays, scalars)
    loaded_arrays, loaded_scalars = svio.load_checkpoint(path)
    restored = Adam()
    restored.load_state_dict({**loaded_scalars, **loaded_arrays})
    _assert_state_equal(restored.state_dict(), sd)


def test_load_state_dict_rejects_bad_input_and_changes_nothing():
    params = make_params(np.float64)
    opt = Adam(0.01)
    run_steps(opt, params, 1)
    good = opt.state_dict()
    v_missing = {k: v for k, v in good.items() if k != "v:enc.b0"}
    bad = [
        ([1, 2], TypeError, "d must be a dict"),
        (dict(good, optimizer="SGD"), ValueError, "optimizer"),
        ({k: v for k, v in good.items() if k != "beta2"}, ValueError, "beta2"),
        (dict(good, lr=-1.0), ValueError, "lr"),
        (dict(good, t=-1), ValueError, "t"),
        (dict(good, t=0), ValueError, "t"),
        (dict(good, **{"w:enc.b0": np.zeros(2)}), ValueError, "w:enc.b0"),
        (v_missing, ValueError, "enc.b0"),
        (dict(good, **{"v:enc.b0": np.zeros(5)}), ValueError, "v:enc.b0"),
        (dict(good, **{"m:enc.b0": np.full(2, np.nan)}), ValueError, "m:enc.b0"),
    ]
    for d, exc, text in bad:
        with pytest.raises(exc, match=text):
            opt.load_state_dict(d)
        _assert_state_equal(opt.state_dict(), good)


# ---------------------------------------------------------------- backends
def test_set_backend():
    opt = SGD(0.1)
    opt.set_backend("numpy")
    assert opt.backend == "numpy" and opt._k.name == "numpy"
    with pytest.raises(ValueError, match="backend"):
        opt.set_backend("tpu")
    with pytest.raises(TypeError, match="backend"):
        opt.set_backend(3)
    assert opt.backend == "numpy"
    params = {"w": np.ones(2)}
    opt.step(params, {"w": np.ones(2)})
    np.testing.assert_allclose(params["w"], 0.9, rtol=1e-15)


@pytest.mark.parametrize("make_opt", [lambda b: SGD(0.1, 0.9, backend=b),
                                      lambda b: Adam(0.01, backend=b),
                                      lambda b: Adagrad(0.3, backend=b)],
                         ids=["SGD", "Adam", "Adagrad"])
def test_numba_backend_matches_numpy(dtype, make_opt):
    pytest.importorskip("scratchvae.kernels.numba_cpu")
    ref_params, params = make_params(dtype), make_params(dtype)
    run_steps(make_opt("numpy"), ref_params, 3)
    run_steps(make_opt("numba"), params, 3)
    assert_close(params, ref_params, dtype)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_gradient_is_refused_before_anything_changes(backend, bad):
    """The finiteness check runs the backend's all_finite kernel; params and state stay put."""
    opt = Adam(1e-2, backend=backend)
    params = {"a": np.ones(3), "b": np.zeros((2, 2))}
    opt.step(params, {"a": np.ones(3), "b": np.ones((2, 2))})
    before = {k: v.copy() for k, v in params.items()}
    state = opt.state_dict()
    grads = {"a": np.ones(3), "b": np.ones((2, 2))}
    grads["b"][1, 1] = bad
    with pytest.raises(ValueError, match=r"grads\['b'\] must be finite"):
        opt.step(params, grads)
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert opt.t == state["t"] == 1
    np.testing.assert_array_equal(opt.state_dict()["m:b"], state["m:b"])
