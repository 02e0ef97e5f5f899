"""Dense layers and multi-layer perceptrons, each forward paired with its hand-written backward.

Shapes: a dense layer maps ``a`` (N, fan_in) to ``y`` (N, fan_out) with ``W`` (fan_in, fan_out)
and ``b`` (fan_out,). N is the number of rows (B for the encoder, K*B for the decoder, whose
samples are flattened to rows because matmul is 2-D).

Forwards return ``(out, cache)``; backwards take ``(d_out, cache)`` and return the gradients in
the order of the forward's inputs (STYLE.md 3.2). ``k`` is the backend's ``Kernels``; ``ws`` an
optional ``scratchvae.kernels.workspace.Workspace`` the kernels take their outputs from (None: fresh).
Derivation: docs/derivations.md, "Dense layer" and "MLP".
"""
from typing import NamedTuple

import numpy as np

from .kernels import Kernels


class DenseCache(NamedTuple):
    a: np.ndarray   # input (N, fan_in)
    W: np.ndarray   # weight (fan_in, fan_out)
    h: np.ndarray   # pre-activation a @ W + b (N, fan_out)
    y: np.ndarray   # output f(h) (N, fan_out)
    act: int        # activation code


def dense_forward(a, W, b, act: int, *, k: Kernels, ws=None):
    """y = f(a @ W + b).

    Shapes: a (N, fan_in), W (fan_in, fan_out), b (fan_out,) -> y (N, fan_out).
    Equation: h = a @ W + b;  y = f(h).
    """
    h, y = k.bias_act_fwd(k.matmul(a, W, ws=ws), b, act, ws=ws)
    return y, DenseCache(a, W, h, y, act)


def dense_backward(dy, cache: DenseCache, *, k: Kernels, need_da: bool = True, ws=None):
    """Gradients of a dense layer: (da, dW, db); da is None when ``need_da`` is False.

    Shapes: dy (N, fan_out) -> da (N, fan_in), dW (fan_in, fan_out), db (fan_out,).
    Equation: dh = dy * f'(h);  da = dh @ W.T;  dW = a.T @ dh;  db = sum_n dh.
    Derivation: docs/derivations.md, "Dense layer".
    """
    dh, db = k.bias_act_bwd(dy, cache.h, cache.y, cache.act, ws=ws)
    dW = k.matmul_at(cache.a, dh, ws=ws)
    da = k.matmul_bt(dh, cache.W, ws=ws) if need_da else None
    return da, dW, db


def mlp_forward(a, layers, act: int, *, k: Kernels, ws=None):
    """Apply dense layers with activation ``act`` in turn: a_l = f(a_{l-1} @ W_l + b_l).

    Shapes: a (N, F_0); layers a list of (W_l (F_{l-1}, F_l), b_l (F_l,)) -> (N, F_L).
    With no layers the input is returned unchanged (an empty stack).
    Returns (a_L, caches) with one DenseCache per layer.
    """
    caches = []
    for W, b in layers:
        a, cache = dense_forward(a, W, b, act, k=k, ws=ws)
        caches.append(cache)
    return a, tuple(caches)


def mlp_backward(da, caches, *, k: Kernels, need_da: bool = True, ws=None):
    """Walk the caches in reverse: returns (da_0, [(dW_l, db_l) for each layer in order]).

    Equation: per layer, as ``dense_backward``; da_{l-1} is the layer's da.
    ``da_0`` (the input's gradient) is None when ``need_da`` is False and there is a layer.
    """
    grads = []
    for i in reversed(range(len(caches))):
        da, dW, db = dense_backward(da, caches[i], k=k, need_da=need_da or i > 0, ws=ws)
        grads.append((dW, db))
    return da, grads[::-1]
