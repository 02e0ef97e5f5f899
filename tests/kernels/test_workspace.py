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
def test_a_step_on_reused_buffers_gives_the_same_bits_as_on_new_ones(backend, likelihood,
                                                                     activation, hidden, batch,
                                                                     n_samples, beta, dtype):
    """The first loss_and_grads of a shape fills new buffers; after a call with other values
    (stale accumulators would show) the same call on the reused buffers gives the same bits, and
    the loss is that of ``loss``, which runs on fresh arrays."""
    model, x, eps = _problem(backend, dtype, likelihood, activation, hidden, batch, n_samples)
    loss, g = model.loss_and_grads(x, n_samples=n_samples, eps=eps, beta=beta)
    first = {key: v.copy() for key, v in g.items()}
    assert loss == model.loss(x, n_samples=n_samples, eps=eps, beta=beta)
    model.loss_and_grads(x, n_samples=n_samples, eps=2 * eps, beta=2 * beta + 1)
    again, g2 = model.loss_and_grads(x, n_samples=n_samples, eps=eps, beta=beta)
    assert again == loss
    for key in model.params:
        assert g2[key].dtype == model.dtype, key
        assert g2[key] is g[key] or backend == "numpy", f"{key}: numba reuses its buffers"
        np.testing.assert_array_equal(g2[key], first[key], err_msg=key)


def _second_step_peak(likelihood, B):
    """tracemalloc's peak over the second of two steps (loss_and_grads, then Adam) of a numba
    model at batch size B: the user's own loop, as the README writes it."""
    model = sv.VAE(64, (128,), 8, likelihood=likelihood, dtype="float64", backend="numba",
                   output_var="learned" if likelihood == "gaussian" else 1.0)
    rng = np.random.default_rng(0)
    x = rng.random((B, 64))
    eps = model.draw_eps(1, B, rng)
    opt = sv.Adam(1e-3)
    grads = []

    def step():
        _, g = model.loss_and_grads(x, eps=eps)
        opt.step(model.params, g)
        grads.append(g)

    step()                                  # allocates the buffers (and the Adam state)
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(grads[1][key] is grads[0][key] for key in grads[0]), "the buffers were reused"
    return peak


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_a_numba_training_step_allocates_nothing_after_the_first(likelihood):
    """The second step of a shape allocates no array data: its peak does not grow with the batch.
    The Python objects a step creates cost the same at every B, so the peak at B = 512 minus the
    peak at B = 256 measures only what scales with B. One (B, 128) float64 work array that
    escaped the model's buffers would add 256 KiB to it; the (B,) loss terms add about 2 KiB each.
    (That the njit code allocates nothing is tested per kernel in tests/kernels/test_numba_cpu.py
    with numba's allocation counters.)"""
    growth = _second_step_peak(likelihood, 512) - _second_step_peak(likelihood, 256)
    assert growth < 64 * 1024, f"the second step's peak grew by {growth} bytes with the batch"


def test_the_same_measurement_sees_a_forward_on_fresh_arrays():
    """The measurement above can fail: ``loss``, which runs on fresh arrays, allocates its work
    arrays in proportion to B."""
    def peak(B):
        model = sv.VAE(64, (128,), 8, dtype="float64", backend="numba")
        rng = np.random.default_rng(0)
        x = rng.random((B, 64))
        eps = model.draw_eps(1, B, rng)
        model.loss(x, eps=eps)
        tracemalloc.start()
        try:
            model.loss(x, eps=eps)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak(512) - peak(256) > 256 * 1024
