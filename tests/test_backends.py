"""The whole model on every backend: the numba (and, in the simulator, cuda) kernels give the
numpy reference's loss, gradients and training trajectory; backends switch on a live model."""
import numpy as np
import pytest
from hypothesis import given, settings
from numba import config

import scratchvae as sv
from scratchvae.kernels import get_kernels
from tests.conftest import RTOL
from tests.strategies import build, vae_cases


def assert_same_result(a, b, dtype, what):
    """Equal to the dtype's tolerance, relative to each array's own scale (reductions may sum in
    another order, so an entry that cancels to ~0 is judged against the array's magnitude)."""
    (la, ga), (lb, gb) = a, b
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(la, lb, rtol=rtol, err_msg=f"{what}: loss")
    assert list(ga) == list(gb)
    for key in ga:
        assert ga[key].dtype == gb[key].dtype == np.dtype(dtype), key
        scale = max(np.abs(gb[key]).max(), 1e-30)
        np.testing.assert_allclose(ga[key], gb[key], rtol=rtol, atol=rtol * scale,
                                   err_msg=f"{what}: gradient {key}")


@given(case=vae_cases(max_width=12, max_input=12))
def test_numba_loss_and_grads_match_numpy(case):
    model, x, eps = build(case)
    ref = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    model.backend = "numba"
    got = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    assert_same_result(got, ref, case.dtype, "numba vs numpy")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numba_gives_identical_bits_for_identical_eps(dtype):
    model = sv.VAE(10, hidden_dims=(7, 5), latent_dim=3, dtype=dtype, backend="numba")
    rng = np.random.default_rng(0)
    x = rng.random((6, 10)).astype(dtype)
    eps = model.draw_eps(3, 6, rng)
    l1, g1 = model.loss_and_grads(x, n_samples=3, eps=eps)
    l2, g2 = model.loss_and_grads(x, n_samples=3, eps=eps)
    assert l1 == l2
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


def _train(backend, dtype, objective="elbo"):
    model = sv.VAE(12, hidden_dims=(9,), latent_dim=3, activation="tanh", dtype=dtype,
                   seed=3, backend=backend)
    x = np.random.default_rng(1).random((40, 12)).astype(dtype)
    sv.fit(model, x, epochs=3, batch_size=10, optimizer=sv.Adam(lr=1e-2), n_samples=2,
           seed=5, progress=False, objective=objective)
    return model.params


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_training_a_few_steps_gives_the_same_parameters(dtype, objective):
    """12 Adam steps on each backend from the same seed: the same parameters. Differences of a
    few ulps in a gradient may grow through Adam's normalisation, hence 100x the kernel rtol."""
    ref, got = _train("numpy", dtype, objective), _train("numba", dtype, objective)
    rtol = 100 * RTOL[np.dtype(dtype)]
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=rtol, atol=rtol * np.abs(ref[key]).max(),
                                   err_msg=key)


def test_switching_backend_keeps_parameters_and_validates_the_name():
    model = sv.VAE(5, hidden_dims=(4,), latent_dim=2, backend="numpy")
    before = {k: v.copy() for k, v in model.params.items()}
    model.backend = "numba"
    assert model.backend == "numba" and model.kernels is get_kernels("numba", validate=False)
    assert all(np.array_equal(before[k], model.params[k]) for k in before)
    with pytest.raises(ValueError, match="backend"):
        model.backend = "tpu"
    assert model.backend == "numba", "a rejected backend leaves the model as it was"
    with pytest.raises(ValueError, match="backend"):
        sv.VAE(5, backend="torch")


# ------------------------------------------------------------------ every model class
def _small(cls, backend="numpy", dtype="float64", likelihood="bernoulli", output_var=1.0,
           activation="tanh", seed=0):
    """A small model of class ``cls`` with its biases (and learned variance) moved off zero."""
    kw = dict(activation=activation, likelihood=likelihood, output_var=output_var, dtype=dtype,
              seed=seed, backend=backend)
    if cls is sv.CVAE:
        m = sv.CVAE(5, 3, hidden_dims=(6,), latent_dim=2, **kw)
    elif cls is sv.HVAE:
        m = sv.HVAE(5, latent_dims=(3, 2), hidden_dims=((6,), (4,)), **kw)
    elif cls is sv.FlowVAE:
        m = sv.FlowVAE(5, hidden_dims=(6,), latent_dim=2, flow_length=2, **kw)
    else:
        m = sv.VAE(5, hidden_dims=(6,), latent_dim=2, **kw)
    rng = np.random.default_rng(seed + 100)
    for key, v in m.params.items():
        if ".b" in key or key == "dec.logvar":
            v += (0.3 * rng.standard_normal(v.shape)).astype(v.dtype)
    return m


def _batch(model, B, rng):
    """Data (and labels for a conditional model) as keyword arguments of the model's methods."""
    kw = {"x": rng.random((B, model.input_dim)).astype(model.dtype)}
    if model.conditional:
        kw["y"] = rng.integers(0, model.n_classes, B)
    return kw


FAMILY = [sv.VAE, sv.CVAE, sv.HVAE, sv.FlowVAE]
FAMILY_IDS = [c.__name__ for c in FAMILY]


@pytest.mark.parametrize("cls", FAMILY, ids=FAMILY_IDS)
def test_every_model_and_optimizer_defaults_to_the_numba_kernels(cls):
    config = {key: v for key, v in _small(cls).config.items() if key != "backend"}
    m = cls(**config)
    assert m.backend == "numba" and m.kernels is get_kernels("numba", validate=False)
    opt = sv.Adam(lr=0.1)
    assert opt.backend is None, "no backend fixed: the kernels follow the arrays"
    p = {"w": np.ones(2)}
    opt.step(p, {"w": np.ones(2)})
    # Adam's first step: mhat = g, vhat = g^2, so p -= lr * g / (|g| + eps)
    np.testing.assert_allclose(p["w"], 1.0 - 0.1 / (1.0 + 1e-8), rtol=1e-15)


@pytest.mark.parametrize("cls", FAMILY, ids=FAMILY_IDS)
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_numba_matches_numpy_for_every_model(cls, objective, dtype):
    rtol = RTOL[dtype]
    for likelihood, ov, act in (("bernoulli", 1.0, "relu"), ("gaussian", "learned", "tanh")):
        m = _small(cls, dtype=dtype.name, likelihood=likelihood, output_var=ov, activation=act)
        mn = cls(**dict(m.config, backend="numba"))
        mn.params = {key: v.copy() for key, v in m.params.items()}
        rng = np.random.default_rng(10)
        kw = _batch(m, 6, rng)
        eps = m.draw_eps(3, 6, rng)
        l0, g0 = m.loss_and_grads(n_samples=3, eps=eps, objective=objective, **kw)
        l1, g1 = mn.loss_and_grads(n_samples=3, eps=eps, objective=objective, **kw)
        assert abs(l1 - l0) <= rtol * abs(l0)
        for key in g0:
            assert g1[key].dtype == dtype, key
            err = np.linalg.norm(g1[key] - g0[key]) / max(np.linalg.norm(g0[key]), 1e-3)
            assert err <= rtol, f"{likelihood} {key}: normwise error {err:.2e}"


@pytest.mark.parametrize("cls", FAMILY, ids=FAMILY_IDS)
def test_the_aliasing_rule_holds_for_every_model(cls):
    """Gradients live in the model's buffers until its next loss_and_grads: the other methods
    leave them alone, the next call overwrites them in place."""
    m = _small(cls, backend="numba")
    rng = np.random.default_rng(3)
    kw = _batch(m, 4, rng)
    eps, eps2 = m.draw_eps(2, 4, rng), m.draw_eps(2, 4, rng)
    _, g1 = m.loss_and_grads(n_samples=2, eps=eps, **kw)
    kept = {key: g.copy() for key, g in g1.items()}
    m.loss(n_samples=2, eps=eps2, **kw)
    m.elbo(n_samples=2, eps=eps2, **kw)
    m.encode(**kw)
    m.log_likelihood(k=3, rng=np.random.default_rng(0), **kw)
    assert all(np.array_equal(g1[key], kept[key]) for key in g1), "another method clobbered them"
    _, g2 = m.loss_and_grads(n_samples=2, eps=eps2, **kw)
    assert all(g2[key] is g1[key] for key in g1)
    assert any(not np.array_equal(g1[key], kept[key]) for key in g1), "overwritten in place"


@pytest.mark.parametrize("cls,objective", [(sv.VAE, "elbo"), (sv.CVAE, "elbo"),
                                           (sv.HVAE, "elbo"), (sv.HVAE, "iwae"),
                                           (sv.FlowVAE, "elbo")],
                         ids=["VAE", "CVAE", "HVAE", "HVAE-iwae", "FlowVAE"])
def test_fit_trains_every_model(cls, objective):
    from scratchvae.data import load_digits
    x_tr, y_tr, x_val, y_val, *_ = load_digits(seed=0)
    if cls is sv.CVAE:
        m, labels = sv.CVAE(64, 10, hidden_dims=(32,), latent_dim=4, seed=0), True
    elif cls is sv.HVAE:
        m, labels = sv.HVAE(64, latent_dims=(6, 3), hidden_dims=((32,), (16,)), seed=0), False
    elif cls is sv.FlowVAE:
        m, labels = sv.FlowVAE(64, hidden_dims=(32,), latent_dim=4, flow_length=4, seed=0), False
    else:
        m, labels = sv.VAE(64, hidden_dims=(32,), latent_dim=4, seed=0), False
    kw = dict(y_train=y_tr[:400], y_val=y_val[:100]) if labels else {}
    h = sv.fit(m, x_tr[:400], x_val=x_val[:100], epochs=4, batch_size=50,
               n_samples=2 if objective == "iwae" else 1, objective=objective,
               optimizer=sv.Adam(lr=3e-3), progress=False, **kw)
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert h["val_loss"][-1] < h["val_loss"][0]


@pytest.mark.skipif(bool(config.ENABLE_CUDASIM), reason="the simulator makes 'cuda' available")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="NUMBA_ENABLE_CUDASIM"):
        sv.VAE(5, backend="cuda")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_float32_model_refuses_float64_data_on_every_backend(dtype):
    other = "float64" if dtype == "float32" else "float32"
    model = sv.VAE(4, hidden_dims=(3,), latent_dim=2, dtype=dtype, backend="numba")
    with pytest.raises(ValueError, match=r"x must have dtype"):
        model.loss_and_grads(np.full((2, 4), 0.5, other))
    with pytest.raises(ValueError, match=r"eps must have dtype"):
        model.loss_and_grads(np.full((2, 4), 0.5, dtype), eps=np.zeros((1, 2, 2), other))


# ------------------------------------------------------------------ cuda, in the simulator
@pytest.fixture(autouse=True)
def small_cuda_blocks(monkeypatch):
    """The simulator runs every thread of a block in Python (~0.2 ms each), so the model-level
    cuda tests launch blocks of 4x4 / 8 threads instead of 16x16 / 128 (the arithmetic is the
    same; several blocks per launch still happen)."""
    from scratchvae.kernels import _jit
    monkeypatch.setattr(_jit, "TPB", 4)
    monkeypatch.setattr(_jit, "TPB_1D", 8)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba loads")
@settings(max_examples=4)
@given(case=vae_cases(max_hidden_layers=1, max_width=4, max_latent=2, max_batch=2,
                      max_samples=2, max_input=4))
def test_cuda_loss_and_grads_match_numpy_in_the_simulator(case):
    model, x, eps = build(case)
    ref = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    model.backend = "cuda"
    got = model.loss_and_grads(x, eps=eps, **case.call_kwargs)
    assert_same_result(got, ref, case.dtype, "cuda vs numpy")


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba loads")
def test_cuda_training_steps_match_numpy_in_the_simulator():
    def train(backend):
        model = sv.VAE(4, hidden_dims=(3,), latent_dim=2, activation="tanh", seed=2, backend=backend)
        x = np.random.default_rng(0).random((4, 4))
        sv.fit(model, x, epochs=2, batch_size=2, optimizer=sv.Adam(lr=1e-2), seed=1, progress=False)
        return model.params
    ref, got = train("numpy"), train("cuda")
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba loads")
def test_cuda_fit_keeps_parameters_state_and_gradients_on_the_device(monkeypatch):
    """During fit on cuda every step sees the same device arrays as parameters (uploaded once),
    gets device gradients, and Adam's state lives on the device; model.params are host arrays
    again afterwards, equal to the numpy run's."""
    from scratchvae.optim import is_device_array
    seen_params, seen_grads = [], []

    def train(backend, record):
        model = sv.VAE(4, hidden_dims=(3,), latent_dim=2, activation="tanh", seed=2, backend=backend)
        opt = sv.Adam(lr=1e-2)
        if record:
            original_step, original_loss = opt.step, model.loss_and_grads

            def step(params, grads, **kw):
                seen_grads.append(grads)
                return original_step(params, grads, **kw)

            def loss_and_grads(*a, **kw):
                seen_params.append(kw["params"])
                return original_loss(*a, **kw)

            opt.step, model.loss_and_grads = step, loss_and_grads
        x = np.random.default_rng(0).random((4, 4))
        sv.fit(model, x, epochs=2, batch_size=2, optimizer=opt, seed=1, progress=False)
        return model, opt

    ref, _ = train("numpy", False)
    # a real device array has no arithmetic operators, the simulator's fake one forwards them
    # to NumPy: make them refuse, so glue written as `a + b` on device arrays fails here too.
    # (NumPy functions still convert a fake array silently, and the simulator relies on that.)
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    def refuse(self, *a):
        raise TypeError("a real device array does not support this")

    for name in ("__add__", "__sub__", "__mul__", "__truediv__", "__pow__"):
        monkeypatch.setattr(FakeCUDAArray, name, refuse)
    model, opt = train("cuda", True)
    assert len(seen_params) == 4
    for params in seen_params:
        assert all(is_device_array(v) for v in params.values())
        assert all(params[key] is seen_params[0][key] for key in params), "re-uploaded"
    assert all(is_device_array(g) for grads in seen_grads for g in grads.values())
    assert all(is_device_array(a) for slot in opt._state.values() for a in slot.values())
    for key in ref.params:
        assert isinstance(model.params[key], np.ndarray)
        np.testing.assert_allclose(model.params[key], ref.params[key], rtol=1e-10, atol=1e-12,
                                   err_msg=key)
    state = opt.state_dict()            # read back to the host
    assert all(isinstance(v, np.ndarray) for key, v in state.items() if ":" in key)


@pytest.mark.cudasim
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 before numba loads")
@pytest.mark.parametrize("kind", ["iwae", "free_bits", "gaussian", "cvae", "hvae"])
def test_cuda_fit_with_host_glue_matches_numpy(kind):
    """The paths whose glue reads values on the host (IWAE, free bits, the CVAE's label columns,
    the HVAE) train on cuda to the numpy run's parameters."""
    def train(backend):
        kw = dict(activation="tanh", seed=2, backend=backend)
        if kind == "cvae":
            model = sv.CVAE(4, 2, hidden_dims=(3,), latent_dim=2, **kw)
        elif kind == "hvae":
            model = sv.HVAE(4, latent_dims=(2, 1), hidden_dims=((3,), (2,)), **kw)
        else:
            model = sv.VAE(4, hidden_dims=(3,), latent_dim=2,
                           likelihood="gaussian" if kind == "gaussian" else "bernoulli",
                           output_var="learned" if kind == "gaussian" else 1.0, **kw)
        x = np.random.default_rng(0).random((4, 4))
        y = np.array([0, 1, 1, 0]) if kind == "cvae" else None
        sv.fit(model, x, epochs=1, batch_size=2, optimizer=sv.Adam(lr=1e-2), seed=1,
               progress=False, y_train=y, n_samples=2,
               objective="iwae" if kind == "iwae" else "elbo",
               free_bits=0.3 if kind == "free_bits" else 0.0)
        return model.params
    ref, got = train("numpy"), train("cuda")
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_numba_training_launches_no_numba_thread_pool():
    """No kernel is parallel (measured no faster on 2 cores, kernels/_jit.py), so training on
    the numba backend starts no numba/OpenMP worker threads to compete with BLAS's: numba's
    threading layer is still unlaunched after a fit (checked in a fresh process)."""
    import subprocess
    import sys
    code = (
        "import numba, numpy as np, scratchvae as sv\n"
        "m = sv.VAE(8, (6,), 2, backend='numba')\n"
        "sv.fit(m, np.random.default_rng(0).random((20, 8)), epochs=2, batch_size=5, progress=False)\n"
        "try:\n"
        "    print('launched', numba.threading_layer())\n"
        "except ValueError:\n"
        "    print('not launched')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "not launched"
