"""Activations: forward values against tests/reference.py, the backward against central finite
differences in float64 (away from kinks), dtype preservation, overflow safety, bad names."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scratchvae.activations import (ACTIVATIONS, activation_backward, activation_code,
                                    activation_forward)
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP, RTOL
from tests.strategies import ACTIVATIONS as ALL_NAMES
from tests.strategies import KINKED_ACTIVATIONS, finite

SHAPES = st.tuples(st.integers(1, 5), st.integers(1, 6))


def test_the_table_is_design_section_1():
    assert set(ACTIVATIONS) == set(ALL_NAMES)
    codes = [activation_code(n) for n in ACTIVATIONS]
    assert len(set(codes)) == len(codes), "activation codes must be distinct"


@pytest.mark.parametrize("name", ALL_NAMES)
@given(shape=SHAPES, data=st.data())
def test_forward_matches_reference(name, shape, data):
    h = data.draw(arrays(np.float64, shape, elements=finite(-30, 30)))
    y = activation_forward(h, name)
    # sigmoid is computed as tanh(h/2)/2 + 1/2: accurate to RTOL absolutely (values in [0, 1]),
    # not relatively in its far-left tail, hence the absolute part
    np.testing.assert_allclose(y, ref.activation(name, h), rtol=RTOL[h.dtype], atol=RTOL[h.dtype],
                               err_msg=name)
    assert y.shape == h.shape and y.dtype == h.dtype, name


@pytest.mark.parametrize("name", ALL_NAMES)
@given(shape=SHAPES, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_backward_matches_finite_differences(name, shape, seed, data):
    if name in KINKED_ACTIVATIONS:     # keep a margin far larger than the step from the kink
        elements = st.one_of(finite(-6, -1e-3), finite(1e-3, 6))       #
    else:
        elements = finite(-6, 6)
    h = data.draw(arrays(np.float64, shape, elements=elements))
    dy = np.random.default_rng(seed).standard_normal(shape)   # random upstream gradient
    y = activation_forward(h, name)
    dh = activation_backward(dy, h, y, name)
    num = ref.numerical_vjp(lambda h: activation_forward(h, name), {"h": h}, "h", dy, FD_STEP)
    ref.assert_gradient_close(dh, num, f"d{name}/dh", FD_RTOL)
    # and against the textbook derivative
    np.testing.assert_allclose(dh, dy * ref.activation_derivative(name, h), rtol=1e-12,
                               atol=1e-13, err_msg=name)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_float32_stays_float32_and_agrees_with_float64(name):
    h64 = np.linspace(-8, 8, 41).reshape(1, -1)
    h32 = h64.astype(np.float32)
    y32 = activation_forward(h32, name)
    dy = np.full_like(h32, 0.5)
    dh32 = activation_backward(dy, h32, y32, name)
    assert y32.dtype == np.float32 and dh32.dtype == np.float32, name
    h = h32.astype(np.float64)
    y64 = activation_forward(h, name)
    np.testing.assert_allclose(y32, y64, rtol=RTOL[np.dtype(np.float32)], atol=1e-7, err_msg=name)
    np.testing.assert_allclose(dh32, activation_backward(dy.astype(np.float64), h, y64, name),
                               rtol=RTOL[np.dtype(np.float32)], atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_no_overflow_for_large_inputs(name, dtype):
    h = np.array([-1e4, -100.0, -30.0, 30.0, 100.0, 1e4], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # an overflow RuntimeWarning fails the test
        y = activation_forward(h, name)
        dh = activation_backward(np.ones_like(h), h, y, name)
    assert np.isfinite(y).all() and np.isfinite(dh).all(), f"{name}: {y} {dh}"
    np.testing.assert_allclose(y, ref.activation(name, h.astype(np.float64)), rtol=RTOL[h.dtype],
                               atol=RTOL[h.dtype], err_msg=name)


def test_exact_values_at_known_points():
    h = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(activation_forward(h, "relu"), [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(activation_forward(h, "leaky_relu"), [-0.02, 0.0, 3.0])
    np.testing.assert_array_equal(activation_forward(h, "identity"), h)
    assert activation_forward(np.array([0.0]), "sigmoid")[0] == 0.5
    assert activation_forward(np.array([0.0]), "softplus")[0] == np.log(2.0)
    np.testing.assert_allclose(activation_forward(h, "elu"), [np.expm1(-2.0), 0.0, 3.0], rtol=1e-15)
    # relu'(0) is taken as 0 (documented), leaky_relu'(0) as the slope
    one = np.ones(1)
    zero = np.zeros(1)
    assert activation_backward(one, zero, zero, "relu")[0] == 0.0
    assert activation_backward(one, zero, zero, "leaky_relu")[0] == 0.01


def test_identity_forward_is_a_copy():
    h = np.ones(3)
    y = activation_forward(h, "identity")
    y[0] = 5.0
    assert h[0] == 1.0, "identity must not alias its input"


@pytest.mark.parametrize("bad", ["gelu", "ReLU", ""])
def test_unknown_activation_name(bad):
    with pytest.raises(ValueError, match="activation"):
        activation_code(bad)
    with pytest.raises(ValueError, match="activation"):
        activation_forward(np.ones(2), bad)


def test_activation_name_must_be_str():
    with pytest.raises(TypeError, match="activation"):
        activation_code(3)
