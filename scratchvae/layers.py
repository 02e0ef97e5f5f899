"""Dense layers, multi-layer perceptrons and the two networks the models are built from, each
forward paired with its hand-written backward.

Shapes: a dense layer maps ``a`` (N, fan_in) to ``y`` (N, fan_out) with ``W`` (fan_in, fan_out)
and ``b`` (fan_out,). N is the number of rows (B for the encoder, K*B for the decoder, whose
samples are flattened to rows because matmul is 2-D).

Forwards return ``(out, cache)``; backwards take ``(d_out, cache)`` and return the gradients in
the order of the forward's inputs. ``k`` is a kernel set (``scratchvae.kernels``), bound to a
workspace or not: these functions call ``k.<kernel>`` and never see where the arrays come from.
Derivation: docs/derivations.md, "Dense layer" and "MLP".
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .kernels import ACTIVATION_CODES, Kernels

IDENTITY = ACTIVATION_CODES["identity"]


# ====================================================================== initialisation
def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, dtype) -> np.ndarray:
    """Glorot (Xavier) uniform initialisation: W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)),
    which keeps the variance of activations and gradients roughly constant across layers."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_in, fan_out)).astype(dtype)


def add_mlp_params(params: dict, rng, prefix: str, sizes, dtype) -> None:
    """Add ``prefix.W{l}``, ``prefix.b{l}`` for consecutive widths sizes[0] -> sizes[1] -> ..."""
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"{prefix}.W{i}"] = glorot_uniform(rng, fi, fo, dtype)
        params[f"{prefix}.b{i}"] = np.zeros(fo, dtype)


def add_gaussian_head_params(params: dict, rng, prefix: str, fan_in: int, d: int, dtype) -> None:
    """Add the two linear heads ``prefix.W_mu, b_mu, W_logvar, b_logvar`` (logvar starts at 0)."""
    params[f"{prefix}.W_mu"] = glorot_uniform(rng, fan_in, d, dtype)
    params[f"{prefix}.b_mu"] = np.zeros(d, dtype)
    params[f"{prefix}.W_logvar"] = glorot_uniform(rng, fan_in, d, dtype)
    params[f"{prefix}.b_logvar"] = np.zeros(d, dtype)


def add_output_params(params: dict, rng, prefix: str, fan_in: int, D: int, dtype) -> None:
    """Add the linear output layer ``prefix.W_out, prefix.b_out``."""
    params[f"{prefix}.W_out"] = glorot_uniform(rng, fan_in, D, dtype)
    params[f"{prefix}.b_out"] = np.zeros(D, dtype)


def mlp_layers(params: dict, prefix: str, n: int):
    """[(W0, b0), ..., (W_{n-1}, b_{n-1})] of ``prefix``."""
    return [(params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"]) for i in range(n)]


# ====================================================================== one dense layer
class DenseCache(NamedTuple):
    a: np.ndarray   # input (N, fan_in)
    W: np.ndarray   # weight (fan_in, fan_out)
    h: np.ndarray   # pre-activation a @ W + b (N, fan_out)
    y: np.ndarray   # output f(h) (N, fan_out)
    act: int        # activation code


def dense_forward(a, W, b, act: int, *, k: Kernels):
    """y = f(a @ W + b).

    Shapes: a (N, fan_in), W (fan_in, fan_out), b (fan_out,) -> y (N, fan_out).
    Equation: h = a @ W + b;  y = f(h).
    """
    h, y = k.bias_act_fwd(k.matmul(a, W), b, act)
    return y, DenseCache(a, W, h, y, act)


def dense_backward(dy, cache: DenseCache, *, k: Kernels, need_da: bool = True):
    """Gradients of a dense layer: (da, dW, db); da is None when ``need_da`` is False.

    Shapes: dy (N, fan_out) -> da (N, fan_in), dW (fan_in, fan_out), db (fan_out,).
    Equation: dh = dy * f'(h);  da = dh @ W.T;  dW = a.T @ dh;  db = sum_n dh.
    Derivation: docs/derivations.md, "Dense layer".
    """
    dh, db = k.bias_act_bwd(dy, cache.h, cache.y, cache.act)
    dW = k.matmul_at(cache.a, dh)
    da = k.matmul_bt(dh, cache.W) if need_da else None
    return da, dW, db


# ====================================================================== a stack of them
def mlp_forward(a, layers, act: int, *, k: Kernels):
    """Apply dense layers with activation ``act`` in turn: a_l = f(a_{l-1} @ W_l + b_l).

    Shapes: a (N, F_0); layers a list of (W_l (F_{l-1}, F_l), b_l (F_l,)) -> (N, F_L).
    With no layers the input is returned unchanged (an empty stack).
    Returns (a_L, caches) with one DenseCache per layer.
    """
    caches = []
    for W, b in layers:
        a, cache = dense_forward(a, W, b, act, k=k)
        caches.append(cache)
    return a, tuple(caches)


def mlp_backward(da, caches, *, k: Kernels, need_da: bool = True):
    """Walk the caches in reverse: returns (da_0, [(dW_l, db_l) for each layer in order]).

    Equation: per layer, as ``dense_backward``; da_{l-1} is the layer's da.
    ``da_0`` (the input's gradient) is None when ``need_da`` is False and there is a layer.
    """
    grads = []
    for i in reversed(range(len(caches))):
        da, dW, db = dense_backward(da, caches[i], k=k, need_da=need_da or i > 0)
        grads.append((dW, db))
    return da, grads[::-1]


def put_mlp_grads(grads: dict, prefix: str, hidden_grads) -> None:
    """grads[prefix.W{i}], grads[prefix.b{i}] from mlp_backward's [(dW_i, db_i), ...]."""
    for i, (dW, db) in enumerate(hidden_grads):
        grads[f"{prefix}.W{i}"], grads[f"{prefix}.b{i}"] = dW, db


# ====================================================================== the two networks
class GaussianNetCache(NamedTuple):
    hidden: tuple       # DenseCaches of the hidden stack
    mu: object          # DenseCache of the mu head
    logvar: object      # DenseCache of the logvar head


def gaussian_net_forward(params, prefix: str, n_hidden: int, a, act: int, *, k: Kernels):
    """An MLP with two linear heads: (mu, logvar) of a diagonal Gaussian given ``a``.

    Shapes: a (N, F_in) -> mu (N, d), logvar (N, d).
    Equation: a_l = f(a_{l-1} @ W_l + b_l);  mu = a_L @ W_mu + b_mu;  logvar = a_L @ W_logvar + b_logvar.
    """
    a, hidden = mlp_forward(a, mlp_layers(params, prefix, n_hidden), act, k=k)
    mu, c_mu = dense_forward(a, params[f"{prefix}.W_mu"], params[f"{prefix}.b_mu"], IDENTITY, k=k)
    logvar, c_lv = dense_forward(a, params[f"{prefix}.W_logvar"], params[f"{prefix}.b_logvar"],
                                 IDENTITY, k=k)
    return mu, logvar, GaussianNetCache(hidden, c_mu, c_lv)


def gaussian_net_backward(dmu, dlogvar, cache: GaussianNetCache, prefix: str, grads: dict, *,
                          k: Kernels, need_da: bool = True):
    """Backward of ``gaussian_net_forward``: writes the prefix's gradients into ``grads`` and
    returns da (the input's gradient, or None when not needed).

    Equation: da_L = dmu @ W_mu.T + dlogvar @ W_logvar.T (both heads read a_L), then the MLP.
    """
    need_head_da = need_da or len(cache.hidden) > 0
    da_mu, grads[f"{prefix}.W_mu"], grads[f"{prefix}.b_mu"] = dense_backward(
        dmu, cache.mu, k=k, need_da=need_head_da)
    da_lv, grads[f"{prefix}.W_logvar"], grads[f"{prefix}.b_logvar"] = dense_backward(
        dlogvar, cache.logvar, k=k, need_da=need_head_da)
    da = k.add(da_mu, da_lv) if need_head_da else None
    da, hidden_grads = mlp_backward(da, cache.hidden, k=k, need_da=need_da)
    put_mlp_grads(grads, prefix, hidden_grads)
    return da


def output_net_forward(params, prefix: str, n_hidden: int, c, act: int, *, k: Kernels):
    """An MLP with a linear output layer (the decoder). Shapes: c (N, F_in) -> out (N, D).
    Equation: c_m = f(c_{m-1} @ W_m + b_m);  out = c_M @ W_out + b_out."""
    c, hidden = mlp_forward(c, mlp_layers(params, prefix, n_hidden), act, k=k)
    out, c_out = dense_forward(c, params[f"{prefix}.W_out"], params[f"{prefix}.b_out"], IDENTITY,
                               k=k)
    return out, (hidden, c_out)


def output_net_backward(dout, cache, prefix: str, grads: dict, *, k: Kernels,
                        need_dc: bool = True):
    """Backward of ``output_net_forward``; writes the prefix's gradients, returns dc_0 (None when
    ``need_dc`` is False)."""
    hidden, c_out = cache
    dc, grads[f"{prefix}.W_out"], grads[f"{prefix}.b_out"] = dense_backward(
        dout, c_out, k=k, need_da=need_dc or len(hidden) > 0)
    dc, hidden_grads = mlp_backward(dc, hidden, k=k, need_da=need_dc)
    put_mlp_grads(grads, prefix, hidden_grads)
    return dc


# ====================================================================== constant input columns
def append_columns(a, cols, *, k: Kernels):
    """[a, cols]: constant columns (e.g. one-hot labels) appended to a network's input.
    Shapes: a (N, F), cols (N, C) -> (N, F + C), on the host. Its backward is ``leading_columns``."""
    return np.concatenate([k.to_host(a), cols], axis=1)


def leading_columns(da, n: int, *, k: Kernels):
    """The gradient of the first ``n`` columns of an input built by ``append_columns`` (the
    constant columns need none). Shapes: da (N, n + C) -> (N, n), C-contiguous."""
    return np.ascontiguousarray(k.to_host(da)[:, :n])
