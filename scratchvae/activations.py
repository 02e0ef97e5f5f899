"""Activations by name: the table name -> integer code, and each forward/derivative pair.

The formulas themselves live once, in ``kernels/numpy_ref.py`` (``act_fwd``/``act_grad``),
because the kernels take the integer code so that each kernel keeps a single signature.
This module is the named, validated front of that table.

==========  ==========================================  ===================================
name        y = f(h)                                    f'(h)
==========  ==========================================  ===================================
relu        max(h, 0)                                   1[h > 0]   (f'(0) taken as 0)
leaky_relu  h if h > 0 else 0.01 h                      1 if h > 0 else 0.01
tanh        tanh(h)                                     1 - y^2
sigmoid     1 / (1 + exp(-h)) = tanh(h/2)/2 + 1/2       y (1 - y)
softplus    log(1 + exp(h)) = max(h,0)+log1p(e^-|h|)    sigmoid(h)
elu         h if h > 0 else exp(h) - 1                  1 if h > 0 else y + 1
identity    h                                           1
==========  ==========================================  ===================================
"""
import numpy as np

from ._checks import check_choice
from .kernels import ACTIVATION_CODES
from .kernels import numpy_ref as _ref

ACTIVATIONS = tuple(ACTIVATION_CODES)


def activation_code(name: str, argname: str = "activation") -> int:
    """Integer code of the activation ``name``; ValueError naming ``argname`` if unknown."""
    return ACTIVATION_CODES[check_choice(argname, name, ACTIVATIONS)]


def activation_forward(h: np.ndarray, name: str) -> np.ndarray:
    """y = f(h), elementwise, same shape and dtype as h."""
    return _ref.act_fwd(h, activation_code(name))


def activation_backward(dy: np.ndarray, h: np.ndarray, y: np.ndarray, name: str) -> np.ndarray:
    """dh = dy * f'(h); ``y = f(h)`` is the forward output (cheaper derivative for tanh etc.)."""
    return dy * _ref.act_grad(h, y, activation_code(name))
