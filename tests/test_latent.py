"""Latent-space operations: interpolation (linear, slerp), batched encoding, class means,
latent arithmetic. Exact expectations: endpoints, midpoints, constant norm, linear identities."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import scratchvae as sv
from scratchvae import latent
from tests.conftest import RTOL


def finite(lo, hi, width=64):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=width)


@st.composite
def code_pairs(draw, same_norm=False):
    d = draw(st.integers(2, 8))
    z0 = draw(arrays(np.float64, d, elements=finite(-3, 3)))
    z1 = draw(arrays(np.float64, d, elements=finite(-3, 3)))
    if same_norm:
        n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
        if n0 < 1e-3 or n1 < 1e-3:
            z0, z1 = np.ones(d), np.eye(d)[0] * np.sqrt(d)
        else:
            z1 = z1 * (n0 / n1)
    return z0, z1


@given(code_pairs(), st.integers(2, 12), st.sampled_from(latent.METHODS))
def test_endpoints_are_exact(pair, steps, method):
    z0, z1 = pair
    path = latent.interpolate(z0, z1, steps, method)
    assert path.shape == (steps, z0.size)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)


@given(code_pairs(same_norm=True), st.integers(3, 12))
def test_slerp_keeps_equal_norms(pair, steps):
    z0, z1 = pair
    path = latent.interpolate(z0, z1, steps, "spherical")
    cos = z0 @ z1 / (np.linalg.norm(z0) * np.linalg.norm(z1))
    if abs(np.sin(np.arccos(np.clip(cos, -1, 1)))) < 1e-6:
        return   # (anti)parallel: the documented linear fallback, tested separately
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-10)


def test_slerp_moves_at_constant_angle():
    z0, z1 = np.array([2.0, 0.0, 0.0]), np.array([0.0, 2.0, 0.0])
    path = latent.interpolate(z0, z1, 7, "spherical")
    angles = np.arctan2(path[:, 1], path[:, 0])
    np.testing.assert_allclose(np.diff(angles), np.pi / 2 / 6, rtol=1e-12)
    np.testing.assert_allclose(path[:, 2], 0.0, atol=0)


def test_linear_midpoint():
    z0, z1 = np.array([1.0, -2.0, 4.0]), np.array([3.0, 6.0, -4.0])
    path = latent.interpolate(z0, z1, 5, "linear")
    np.testing.assert_allclose(path[2], (z0 + z1) / 2, rtol=1e-15)
    np.testing.assert_allclose(path[1], 0.75 * z0 + 0.25 * z1, rtol=1e-15)


@pytest.mark.parametrize("z1", [np.array([2.0, 4.0]), np.array([-1.0, -2.0]), np.zeros(2)],
                         ids=["parallel", "antiparallel", "zero"])
def test_slerp_falls_back_to_linear_when_degenerate(z1):
    z0 = np.array([1.0, 2.0])
    lin = latent.interpolate(z0, z1, 6, "linear")
    sph = latent.interpolate(z0, z1, 6, "spherical")
    assert np.isfinite(sph).all()
    np.testing.assert_allclose(sph, lin, rtol=1e-12)


def test_rows_of_pairs_equal_single_paths(dtype):
    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(size=(4, 3)).astype(dtype), rng.normal(size=(4, 3)).astype(dtype)
    for method in latent.METHODS:
        paths = latent.interpolate(z0, z1, 5, method)
        assert paths.shape == (4, 5, 3) and paths.dtype == dtype
        for i in range(4):
            np.testing.assert_allclose(paths[i], latent.interpolate(z0[i], z1[i], 5, method),
                                       rtol=RTOL[dtype])


@pytest.mark.parametrize("kwargs, err", [
    (dict(steps=1), ValueError), (dict(method="cubic"), ValueError),
    (dict(z1=np.zeros(4)), ValueError), (dict(z1=np.zeros(3, np.float32)), ValueError),
    (dict(z0=[0.0, 1.0, 2.0]), TypeError), (dict(z0=np.array([0.0, np.nan, 1.0])), ValueError),
])
def test_interpolate_bad_input(kwargs, err):
    args = dict(z0=np.zeros(3), z1=np.ones(3), steps=4, method="linear")
    args.update(kwargs)
    with pytest.raises(err):
        latent.interpolate(**args)


@pytest.fixture(scope="module")
def digits_model():
    x = sv.data.load_digits(seed=0)[0]
    return sv.VAE(64, hidden_dims=(16,), latent_dim=3, seed=1), x


def test_encode_dataset_batching_equivalence(digits_model):
    model, x = digits_model
    mu, lv = model.encode(x[:100])
    bmu, blv = latent.encode_dataset(model, x[:100], batch_size=7)
    assert bmu.shape == (100, 3) and bmu.dtype == model.dtype
    np.testing.assert_allclose(bmu, mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(blv, lv, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="batch_size"):
        latent.encode_dataset(model, x, batch_size=0)


def test_interpolate_inputs_decodes_the_path(digits_model):
    model, x = digits_model
    out = latent.interpolate_inputs(model, x[0], x[1], 6, "spherical")
    mu, _ = model.encode(x[:2])
    assert out.shape == (6, 64)
    np.testing.assert_allclose(out[0], model.decode(mu[:1])[0], rtol=1e-12)
    np.testing.assert_allclose(out[-1], model.decode(mu[1:2])[0], rtol=1e-12)
    batch = latent.interpolate_inputs(model, x[:3], x[3:6], 4, "linear")
    assert batch.shape == (3, 4, 64)
    with pytest.raises(ValueError, match="y0"):
        latent.interpolate_inputs(model, x[0], x[1], 4, y0=1, y1=2)


def test_class_means(digits_model):
    model, x = digits_model
    y = np.arange(x.shape[0]) % 3
    classes, means = latent.class_means(model, x, y)
    mu, _ = model.encode(x)
    np.testing.assert_array_equal(classes, [0, 1, 2])
    for c in range(3):
        np.testing.assert_allclose(means[c], mu[y == c].mean(axis=0), rtol=1e-12)
    with pytest.raises(TypeError, match="y"):
        latent.class_means(model, x, y.astype(float))
    with pytest.raises(ValueError, match="y"):
        latent.class_means(model, x, y[:-1])


def test_arithmetic_identity_with_linear_model():
    """No hidden layers and a Gaussian decoder: encoder and decoder are affine, so arithmetic
    on codes equals arithmetic on inputs: decode(mu(b) + mean mu(P) - mean mu(M))
    = decode(mu(b + mean P - mean M))."""
    rng = np.random.default_rng(3)
    model = sv.VAE(6, hidden_dims=(), latent_dim=4, likelihood="gaussian", seed=2)
    base, plus, minus = rng.normal(size=(3, 6)), rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
    out, z = latent.latent_arithmetic(model, base, plus, minus, return_latent=True)
    x_equiv = base + plus.mean(axis=0) - minus.mean(axis=0)
    np.testing.assert_allclose(z, model.encode(x_equiv)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, model.decode(model.encode(x_equiv)[0]), rtol=1e-12, atol=1e-12)
    # with attribute sets equal, the result is the plain reconstruction of the base
    same = latent.latent_arithmetic(model, base, plus, plus)
    np.testing.assert_allclose(same, model.decode(model.encode(base)[0]), rtol=1e-12, atol=1e-12)


def test_arithmetic_bad_input(digits_model):
    model, x = digits_model
    with pytest.raises(ValueError, match="attr_plus"):
        latent.latent_arithmetic(model, x[:2], x[:3, :10], x[:3])
    with pytest.raises(ValueError, match="y_base"):
        latent.latent_arithmetic(model, x[:2], x[:3], x[:3], y_base=np.zeros(2, int))
