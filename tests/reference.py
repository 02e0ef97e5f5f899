"""Independent reference formulas for the tests, written from DESIGN.md section 1 -- not package code.

Nothing here imports scratchvae. Everything is plain NumPy, written the direct way (loops over
samples, densities as written in a textbook) rather than the way the package computes it, so a
self-consistent but wrong package fails against it. Also the finite-difference helpers the
primitive tests use (independent of ``scratchvae.gradcheck``).

Symbols: B batch, D data dimension, d latent dimension, K samples.
"""
from __future__ import annotations

import math
import re

import numpy as np

LOG_2PI = np.log(2.0 * np.pi)


# ====================================================================== activations
def sigmoid(h):
    """1 / (1 + exp(-h)), evaluated per sign so that exp never overflows."""
    h = np.asarray(h)
    e = np.exp(-np.abs(h))
    return np.where(h >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(h.dtype)


def softplus(h):
    """log(1 + exp(h)) = max(h, 0) + log(1 + exp(-|h|))."""
    h = np.asarray(h)
    return (np.maximum(h, 0) + np.log1p(np.exp(-np.abs(h)))).astype(h.dtype)


def activation(name, h):
    """y = f(h) for the DESIGN.md activations (leaky slope 0.01, elu alpha 1)."""
    h = np.asarray(h)
    if name == "relu":
        return np.where(h > 0, h, 0).astype(h.dtype)
    if name == "leaky_relu":
        return np.where(h > 0, h, h * h.dtype.type(0.01))
    if name == "tanh":
        return np.tanh(h)
    if name == "sigmoid":
        return sigmoid(h)
    if name == "softplus":
        return softplus(h)
    if name == "elu":
        return np.where(h > 0, h, np.expm1(np.minimum(h, 0))).astype(h.dtype)
    if name == "identity":
        return h.copy()
    raise KeyError(name)


def activation_derivative(name, h):
    """f'(h) from the textbook derivatives (relu'(0) = 0)."""
    h = np.asarray(h)
    one = np.ones_like(h)
    if name == "relu":
        return np.where(h > 0, one, 0 * one)
    if name == "leaky_relu":
        return np.where(h > 0, one, 0.01 * one)
    if name == "tanh":
        return 1.0 / np.cosh(h) ** 2
    if name == "sigmoid":
        s = sigmoid(h)
        return s * (1 - s)
    if name == "softplus":
        return sigmoid(h)
    if name == "elu":
        return np.where(h > 0, one, np.exp(np.minimum(h, 0)))
    if name == "identity":
        return one
    raise KeyError(name)


def mlp(params, prefix, a, act, pre=None):
    """Hidden layers prefix.W0, prefix.W1, ... in turn (as many as ``params`` holds), activation
    ``act``; the pre-activations are appended to ``pre`` when it is a list (for kink margins)."""
    i = 0
    while f"{prefix}.W{i}" in params:
        h = a @ params[f"{prefix}.W{i}"] + params[f"{prefix}.b{i}"]
        if pre is not None:
            pre.append(h)
        a = activation(act, h)
        i += 1
    return a


# ====================================================================== densities and KLs
def kl_standard_normal(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar), (B,)."""
    return 0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1.0 - logvar, axis=-1)


def kl_diag_gaussians(mu1, logvar1, mu2, logvar2):
    """KL(N(mu1, s1^2) || N(mu2, s2^2)) summed over the last axis, in the textbook form
    log(s2 / s1) + (s1^2 + (mu1 - mu2)^2) / (2 s2^2) - 1/2 with s = exp(logvar / 2)."""
    s1, s2 = np.exp(0.5 * logvar1), np.exp(0.5 * logvar2)
    return np.sum(np.log(s2 / s1) + (s1 ** 2 + (mu1 - mu2) ** 2) / (2.0 * s2 ** 2) - 0.5, axis=-1)


def log_normal(v, m, logvar):
    """log N(v; m, diag(exp(logvar))) summed over the last axis (broadcasting), written as
    sum_j log( exp(-(v-m)^2 / (2 var)) / sqrt(2 pi var) )."""
    var = np.exp(logvar)
    return np.sum(-(v - m) ** 2 / (2.0 * var) - 0.5 * np.log(2.0 * np.pi * var), axis=-1)


def log_standard_normal(v):
    """log N(v; 0, I) summed over the last axis."""
    return np.sum(-0.5 * v ** 2 - 0.5 * LOG_2PI, axis=-1)


def bernoulli_loglik(x, out):
    """sum_i x_i out_i - softplus(out_i) over the last axis; x (B, D), logits out (..., B, D)."""
    return np.sum(x * out - softplus(out), axis=-1)


def bernoulli_loglik_naive(x, probs):
    """sum_i x_i log p_i + (1 - x_i) log(1 - p_i): the textbook form (moderate logits only)."""
    return np.sum(x * np.log(probs) + (1.0 - x) * np.log1p(-probs), axis=-1)


def gaussian_loglik(x, out, logvar):
    """-1/2 sum_i [ (x_i - out_i)^2 / s2_i + log(2 pi s2_i) ],  s2 = exp(logvar) of shape (D,)."""
    s2 = np.exp(logvar)
    return -0.5 * np.sum((x - out) ** 2 / s2 + np.log(2.0 * np.pi * s2), axis=-1)


def logsumexp(a, axis=0):
    """log sum exp(a) along ``axis`` with the max shifted out (all -inf gives -inf)."""
    a = np.asarray(a)
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


# ====================================================================== the whole VAE
def _n_layers(params, prefix):
    return sum(1 for key in params if re.fullmatch(rf"{prefix}\.W\d+", key))


def encoder(params, x, act):
    """(mu, logvar, pre-activations) of q(z|x), as in DESIGN.md section 1."""
    a, pre = x, []
    for i in range(_n_layers(params, "enc")):
        h = a @ params[f"enc.W{i}"] + params[f"enc.b{i}"]
        pre.append(h)
        a = activation(act, h)
    mu = a @ params["enc.W_mu"] + params["enc.b_mu"]
    logvar = a @ params["enc.W_logvar"] + params["enc.b_logvar"]
    return mu, logvar, pre


def decoder(params, z, act):
    """(out, pre-activations) of the decoder for one sample z (B, d)."""
    c, pre = z, []
    for i in range(_n_layers(params, "dec")):
        h = c @ params[f"dec.W{i}"] + params[f"dec.b{i}"]
        pre.append(h)
        c = activation(act, h)
    return c @ params["dec.W_out"] + params["dec.b_out"], pre


def vae_forward(params, x, eps, *, activation="relu", likelihood="bernoulli", output_var=1.0,
                beta=1.0, objective="elbo", free_bits=0.0):
    """The VAE loss from DESIGN.md section 1, computed one sample at a time.

    Shapes: params as DESIGN.md section 2; x (B, D); eps (K, B, d).
    Returns a dict: loss (batch mean), per_example (B,), ll (K, B), kl (B,), logw (K, B),
    mu, logvar (B, d), and ``pre`` (every hidden pre-activation, to keep tests away from kinks).
      elbo:  loss(x) = -(1/K) sum_k log p(x|z_k) + beta KL      (free bits: the batch KL term is
             sum_j max(mean_b KL_bj, free_bits), as in Kingma et al. 2016)
      iwae:  loss(x) = -(logsumexp_k log w_k - log K),  log w = log p(x|z) + log p(z) - log q(z|x)
    """
    act = activation
    K = eps.shape[0]
    mu, logvar, pre = encoder(params, x, act)
    std = np.exp(logvar / 2.0)
    if likelihood == "gaussian":
        lv = params["dec.logvar"] if output_var == "learned" else np.full(x.shape[1], np.log(output_var))
    ll, logw = [], []
    for k in range(K):
        z = mu + std * eps[k]
        out, pre_k = decoder(params, z, act)
        pre += pre_k
        if likelihood == "bernoulli":
            ll_k = bernoulli_loglik(x, out)
        else:
            ll_k = gaussian_loglik(x, out, lv)
        ll.append(ll_k)
        logw.append(ll_k + log_standard_normal(z) - log_normal(z, mu, logvar))
    ll, logw = np.array(ll), np.array(logw)
    kl = kl_standard_normal(mu, logvar)
    if objective == "elbo":
        per_example = -ll.mean(axis=0) + beta * kl
        loss = per_example.mean()
        if free_bits > 0:
            kl_dims = 0.5 * (mu ** 2 + np.exp(logvar) - 1.0 - logvar)     # (B, d)
            loss = -ll.mean() + beta * np.maximum(kl_dims.mean(axis=0), free_bits).sum()
    else:
        per_example = -(logsumexp(logw, axis=0) - np.log(K))
        loss = per_example.mean()
    return dict(loss=float(loss), per_example=per_example, ll=ll, kl=kl, logw=logw, mu=mu,
                logvar=logvar, pre=pre)


def min_abs_preactivation(params, x, eps, act):
    """Smallest |pre-activation| of any hidden unit in the forward pass (inf with none)."""
    pre = vae_forward(params, x, eps, activation=act)["pre"]
    return min((float(np.abs(h).min()) for h in pre), default=np.inf)


# ====================================================================== finite differences
def numerical_vjp(fun, inputs: dict, name: str, upstream, h: float) -> np.ndarray:
    """Central-difference vector-Jacobian product of ``fun`` with respect to ``inputs[name]``:

        n_i = sum( (fun(.., v + s e_i, ..) - fun(.., v - s e_i, ..)) * upstream ) / (2 s),
        s = h * max(1, |v_i|).

    ``fun(**inputs)`` returns an array shaped like ``upstream`` (or a scalar with upstream 1.0).
    The inputs are copied, never modified.
    """
    inputs = {k: np.array(v, dtype=np.float64, copy=True) for k, v in inputs.items()}
    v = inputs[name]
    out = np.empty(v.shape)
    for i in np.ndindex(v.shape):
        orig = v[i]
        step = h * max(1.0, abs(orig))
        v[i] = orig + step
        fp = np.array(fun(**inputs), dtype=np.float64, copy=True)   # fun may return an alias
        v[i] = orig - step
        fm = np.array(fun(**inputs), dtype=np.float64, copy=True)
        v[i] = orig
        out[i] = np.sum((fp - fm) * upstream) / (2.0 * step)
    return out


def relative_errors(analytic, numeric, floor=1.0):
    """(max entry-wise, normwise) relative error, robust near zero:
    |a - n| / max(|a|, |n|, floor) and ||a - n|| / max(||a||, ||n||, floor)."""
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    entry = np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    norm = np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n), floor)
    return float(entry.max(initial=0.0)), float(norm)


def assert_gradient_close(analytic, numeric, name, rtol):
    """Both relative errors of ``relative_errors`` at most ``rtol``; the message names ``name``."""
    assert np.shape(analytic) == np.shape(numeric), (
        f"{name}: analytic shape {np.shape(analytic)} != numerical shape {np.shape(numeric)}")
    entry, norm = relative_errors(analytic, numeric)
    assert entry <= rtol and norm <= rtol, (
        f"{name}: gradient differs from finite differences: max entry-wise relative error "
        f"{entry:.3e}, normwise {norm:.3e} (tolerance {rtol:g})\nanalytic\n{np.asarray(analytic)}"
        f"\nnumerical\n{numeric}")


# ---------------------------------------------------------------- planar flows (FlowVAE)
def planar_flow(z0, u, w, b):
    """The L planar steps, one sample, one example and one step at a time, in float64, with the
    log-det in the textbook form log|1 + (1 - t^2) w . uh| (the kernels use an equivalent
    form). Returns (zL, logdet, zin, t, uh) shaped as planar_flow_fwd's outputs."""
    K, B, d = z0.shape
    L = u.shape[1]
    zL = np.array(z0, dtype=np.float64)
    logdet = np.zeros((K, B))
    zin, t, uh = np.zeros((L, K, B, d)), np.zeros((L, K, B)), np.zeros((B, L, d))
    for bb in range(B):
        for i in range(L):
            ui, wi = u[bb, i].astype(np.float64), w[bb, i].astype(np.float64)
            m = float(wi @ ui)
            uh[bb, i] = ui + (math.log1p(math.exp(m)) - 1.0 - m) * wi / float(wi @ wi)
            for k in range(K):
                zin[i, k, bb] = zL[k, bb]
                t[i, k, bb] = math.tanh(float(wi @ zL[k, bb]) + float(b[bb, i]))
                zL[k, bb] = zL[k, bb] + uh[bb, i] * t[i, k, bb]
                psi = (1.0 - t[i, k, bb] ** 2) * wi
                logdet[k, bb] += math.log(abs(1.0 + float(psi @ uh[bb, i])))
    return zL, logdet, zin, t, uh


def flow_vae_forward(params, x, eps, *, flow_length, activation="relu", likelihood="bernoulli",
                     output_var=1.0, beta=1.0, objective="elbo"):
    """The FlowVAE loss: the encoder's five heads, the planar steps one sample at a time
    (``planar_flow``, textbook log-det), the decoder and the densities written directly.

    Returns a dict: loss, per_example (B,), ll (K, B), logq (K, B), logpz (K, B), zL (K, B, d).
      elbo:  loss(x) = -(1/K) sum_k [ log p(x|zL_k) + beta (log p(zL_k) - log q(zL_k|x)) ]
      iwae:  loss(x) = -(logsumexp_k log w_k - log K),  log w = log p(x|zL) + log p(zL) - log q
    """
    B, d, L = x.shape[0], eps.shape[2], flow_length
    a = mlp(params, "enc", x, activation)
    head = lambda name: a @ params[f"enc.W_{name}"] + params[f"enc.b_{name}"]  # noqa: E731
    mu, logvar = head("mu"), head("logvar")
    u, w = head("flow_u").reshape(B, L, d), head("flow_w").reshape(B, L, d)
    b = head("flow_b")
    z0 = mu + np.exp(logvar / 2.0) * eps
    zL, logdet, *_ = planar_flow(z0, u, w, b)
    if likelihood == "gaussian":
        lv = params["dec.logvar"] if output_var == "learned" else np.full(x.shape[1], np.log(output_var))
    ll = []
    for k in range(eps.shape[0]):
        out, _ = decoder(params, zL[k], activation)
        ll.append(bernoulli_loglik(x, out) if likelihood == "bernoulli" else gaussian_loglik(x, out, lv))
    ll = np.array(ll)
    logq = log_normal(z0, mu, logvar) - logdet
    logpz = log_standard_normal(zL)
    if objective == "elbo":
        per_example = -(ll + beta * (logpz - logq)).mean(axis=0)
    else:
        per_example = -(logsumexp(ll + logpz - logq, axis=0) - np.log(eps.shape[0]))
    return dict(loss=float(per_example.mean()), per_example=per_example, ll=ll, logq=logq,
                logpz=logpz, zL=zL)
