"""FlowVAE (scratchvae/flows.py): the inverse of the planar flow, and the model through its
public API."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchvae.flows import planar_inverse
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
