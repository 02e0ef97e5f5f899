"""Workspace: buffers by position, reused across steps; and the model's training step on it:
the same numbers as without a workspace, and (numba backend) no allocation after the first step."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

import scratchvae as sv
from scratchvae.activations import ACTIVATIONS
from scratchvae.kernels.workspace import Workspace, empty


# ---------------------------------------------------------------- the Workspace itself
def test_same_position_and_shape_gives_the_same_buffer_after_rewind():
    ws = Workspace()
    a, b = ws.empty((3, 4), np.float32), ws.empty(5, np.float64)
    assert a is not b and a.shape == (3, 4) and a.dtype == np.float32 and b.shape == (5,)
    ws.rewind()
    assert ws.empty((3, 4), np.float32) is a
    assert ws.empty(5, np.float64) is b
    assert ws.allocations == 2 and ws.nbytes == a.nbytes + b.nbytes


def test_a_new_shape_or_dtype_at_a_position_allocates_and_keeps_the_old_buffer():
    ws = Workspace()
    full = ws.empty((8, 2), np.float64)
    ws.rewind()
    last = ws.empty((3, 2), np.float64)          # the smaller last batch of an epoch
    ws.rewind()
    other = ws.empty((8, 2), np.float32)
    ws.rewind()
    assert last is not full and other is not full
    assert ws.empty((8, 2), np.float64) is full  # the full-size buffer is still there
    assert ws.allocations == 3


def test_positions_never_share_a_buffer_within_a_pass():
    ws = Workspace()
    bufs = [ws.empty((4,), np.float64) for _ in range(3)]
    assert len({id(b) for b in bufs}) == 3


def test_clear_drops_the_buffers_and_empty_without_a_workspace_is_fresh():
    ws = Workspace()
    a = ws.empty(4, np.float64)
    ws.clear()
    assert ws.nbytes == 0 and ws.empty(4, np.float64) is not a
    x, y = empty(None, (2, 2), np.float32), empty(None, (2, 2), np.float32)
    assert x is not y and x.dtype == np.float32


# ---------------------------------------------------------------- the model's step on a workspace
def _problem(backend, dtype, likelihood="bernoulli", activation="relu", hidden=(16, 8),
             batch=6, n_samples=2, seed=0):
    model = sv.VAE(12, hidden, 3, activation=activation, likelihood=likelihood, dtype=dtype,
                   seed=seed, backend=backend,
                   output_var="learned" if likelihood == "gaussian" else 1.0)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 12)).astype(dtype)
    eps = model.draw_eps(n_samples, batch, rng)
    return model, x, eps


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@given(likelihood=st.sampled_from(["bernoulli", "gaussian"]),
       activation=st.sampled_from(sorted(ACTIVATIONS)),
       hidden=st.lists(st.integers(1, 9), min_size=0, max_size=2).map(tuple),
       batch=st.integers(1, 7), n_samples=st.integers(1, 3), beta=st.floats(0.0, 2.0),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_a_step_on_a_workspace_gives_the_same_bits_as_without(backend, likelihood, activation,
                                                               hidden, batch, n_samples, beta, dtype):
    model, x, eps = _problem(backend, dtype, likelihood, activation, hidden, batch, n_samples)
    fresh, g_fresh, _ = model._loss_and_grads(x, None, eps, beta, "elbo")
    ws = Workspace()
    for _ in range(2):   # the second pass runs on reused buffers
        result, grads, _ = model._loss_and_grads(x, None, eps, beta, "elbo", ws=ws)
        assert result.loss == fresh.loss
        np.testing.assert_array_equal(result.per_example, fresh.per_example)
        for key in model.params:
            assert grads[key].dtype == model.dtype
            np.testing.assert_array_equal(grads[key], g_fresh[key], err_msg=key)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_numba_training_step_allocates_nothing_after_the_first(likelihood):
    """Loss, gradients and the Adam update, twice at the same shapes on one workspace: the second
    step creates no workspace buffer and no NumPy array data (tracemalloc sees NumPy's
    allocations; that the njit code allocates nothing is tested per kernel in
    tests/kernels/test_numba_cpu.py with numba's allocation counters). Every (B, width) array of the step is >= 128 KiB, so any one
    that escaped the workspace would exceed the 16 KiB bound (what remains is Python
    objects and B-sized loss terms: a few KiB)."""
    model = sv.VAE(64, (128,), 8, likelihood=likelihood, dtype="float64", backend="numba",
                   output_var="learned" if likelihood == "gaussian" else 1.0)
    rng = np.random.default_rng(0)
    x = rng.random((256, 64))
    eps = model.draw_eps(1, 256, rng)
    opt = sv.Adam(1e-3, backend="numba")
    ws = Workspace()

    def step():
        _, grads, _ = model._loss_and_grads(x, None, eps, 1.0, "elbo", ws=ws)
        opt._step(model.params, grads, check_finite=True)

    step()                                  # allocates the buffers (and the Adam state)
    allocated = ws.allocations
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ws.allocations == allocated, "the second step created workspace buffers"
    assert peak < 16 * 1024, f"the second step allocated {peak} bytes"
    assert ws.nbytes > 2 * 2**20, "the step's work arrays (MiBs) live in the workspace"


def test_the_same_step_without_a_workspace_does_allocate():
    """The measurement above can fail: without a workspace the same step allocates its arrays."""
    model = sv.VAE(64, (128,), 8, dtype="float64", backend="numba")
    rng = np.random.default_rng(0)
    x = rng.random((256, 64))
    eps = model.draw_eps(1, 256, rng)
    model._loss_and_grads(x, None, eps, 1.0, "elbo")
    tracemalloc.start()
    try:
        model._loss_and_grads(x, None, eps, 1.0, "elbo")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak > 256 * 1024


def test_outputs_of_a_step_are_overwritten_by_the_next_step_on_the_same_workspace():
    """The documented price of reuse: results live until the workspace's next pass."""
    model, x, eps = _problem("numba", np.float64)
    ws = Workspace()
    _, g1, _ = model._loss_and_grads(x, None, eps, 1.0, "elbo", ws=ws)
    kept = {key: v.copy() for key, v in g1.items()}
    _, g2, _ = model._loss_and_grads(x, None, 2 * eps, 1.0, "elbo", ws=ws)
    assert g1["enc.W0"] is g2["enc.W0"]
    assert not np.array_equal(g1["enc.W0"], kept["enc.W0"])


@pytest.mark.parametrize("model_type", ["vae", "cvae"])
def test_the_public_loss_and_grads_takes_a_workspace(model_type):
    """Same loss and gradients as without one; its buffers are reused by the next call."""
    if model_type == "cvae":
        model = sv.CVAE(12, 3, (8,), 3, backend="numba")
        kw = {"y": np.array([0, 2, 1, 1])}
    else:
        model = sv.VAE(12, (8,), 3, backend="numba")
        kw = {}
    rng = np.random.default_rng(0)
    x = rng.random((4, 12))
    eps = model.draw_eps(2, 4, rng)
    loss, grads = model.loss_and_grads(x, n_samples=2, eps=eps, **kw)
    ws = sv.Workspace()
    loss_ws, grads_ws = model.loss_and_grads(x, n_samples=2, eps=eps, workspace=ws, **kw)
    assert loss_ws == loss
    assert all(np.array_equal(grads_ws[k], grads[k]) for k in grads)
    _, again = model.loss_and_grads(x, n_samples=2, eps=eps, workspace=ws, **kw)
    assert again["dec.W_out"] is grads_ws["dec.W_out"]
    with pytest.raises(TypeError, match="workspace"):
        model.loss_and_grads(x, n_samples=2, eps=eps, workspace={}, **kw)
