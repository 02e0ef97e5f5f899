"""The objectives, composed from ``distributions``: the negative ELBO (with beta and free bits),
the importance log-weights and the negative importance-weighted bound (IWAE). Forward and
backward side by side.

Shapes (K samples, B batch, d latent): ll (K, B) log-likelihoods, kl (B,) closed-form KL,
logw (K, B) log importance weights. Each loss is the mean over the batch of a per-example loss,
in nats, to be minimised.

Two layers of functions. The generic terms (``neg_elbo_*``, ``free_bits_kl_*``,
``log_weights_*``, ``neg_iwae_*``) take what any model computes; every model of the family
builds its objective from them. ``gaussian_elbo_*`` and ``gaussian_iwae_*`` compose them for a
model whose latent has the posterior N(mu, diag(exp(logvar))) and the prior N(0, I) (the VAE and
the CVAE): their backwards return the same four gradients (dll, dz, dmu, dlogvar), so a model's
backward reads the same for both objectives. The per-example values are read on the host here
(``k.to_host``, the identity on the CPU backends), so a model never moves arrays itself.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .distributions import (flow_log_q_backward, flow_log_q_forward, gaussian_kl_backward,
                            gaussian_kl_forward, gaussian_kl_per_dim, log_normal_backward,
                            log_normal_forward, log_standard_normal_backward,
                            log_standard_normal_forward, logsumexp_backward, logsumexp_forward)


class LossResult(NamedTuple):
    """What one forward pass computed (all per example, nats, on the host)."""
    loss: float              # the batch loss: mean of ``per_example`` (with free bits, the KL
                             # part is the free-bits term instead, so it differs)
    per_example: np.ndarray  # (B,) loss per example
    ll: np.ndarray           # (K, B) log p(x|z_k)
    kl: np.ndarray           # (B,) KL(q(z|x) || p(z)) (closed form, or its estimate)
    logw: np.ndarray | None  # (K, B) log importance weights (objective "iwae"), else None


# ------------------------------------------------------------------ negative ELBO
def neg_elbo_forward(ll, kl, beta: float):
    """Per-example and batch negative ELBO (beta-weighted).

    Shapes: ll (K, B), kl (B,) -> (loss scalar, per_example (B,)).
    Equation: loss(x_b) = -(1/K) sum_k ll_kb + beta * kl_b;  loss = (1/B) sum_b loss(x_b).
    """
    per_example = -ll.mean(axis=0) + beta * kl
    return per_example.mean(), per_example


def neg_elbo_backward(ll_shape, beta: float, dtype, *, k=None):
    """Gradients of the batch loss with respect to ll and kl (they do not depend on the values).

    Shapes: -> dll (K, B), dkl (B,) (host scratch arrays of the kernel set ``k`` when given).
    Equation: dll_kb = -1 / (K B);  dkl_b = beta / B.
    Derivation: docs/derivations.md, "Negative ELBO".
    """
    K, B = ll_shape
    empty = np.empty if k is None else k.empty
    dll, dkl = empty((K, B), dtype), empty(B, dtype)
    dll.fill(-1.0 / (K * B))
    dkl.fill(beta / B)
    return dll, dkl


# ------------------------------------------------------------------ free bits
def free_bits_kl_forward(kl_per_dim, free_bits: float):
    """Free-bits KL term (Kingma et al. 2016): each latent dimension pays at least ``free_bits``.

    Shapes: kl_per_dim (B, d) -> (term scalar, mask (d,)).
    Equation: term = sum_j max( (1/B) sum_b kl_bj , free_bits ).
    The mask marks the dimensions above the floor, which are the only ones with a gradient.
    """
    kl_bar = kl_per_dim.mean(axis=0)
    mask = (kl_bar > free_bits).astype(kl_per_dim.dtype)
    return np.maximum(kl_bar, free_bits).sum(), mask


def free_bits_kl_backward(dkl_bj, mask):
    """Subgradient of the free-bits term: the plain KL gradient on the dimensions above the floor
    and zero below it (the max picks the constant there).

    Shapes: dkl_bj (B, d) (the per-dimension KL gradient) -> (B, d).
    Equation: d term / d kl_bj = (1/B) 1[kl_bar_j > free_bits].
    Derivation: docs/derivations.md, "Free bits".
    """
    return dkl_bj * mask[None, :]


# ------------------------------------------------------------------ importance weights and IWAE
def log_weights_forward(log_p_terms, log_q_terms):
    """Log importance weights: log w = sum of the model's log-densities - sum of the proposal's.

    Shapes: every term (K, B) -> logw (K, B).
    Equation: log w_k = sum_i log p_i(x, z_k) - sum_j log q_j(z_k | x)
              (the VAE: log p(x|z_k) + log p(z_k) - log q(z_k|x)).
    """
    return sum(log_p_terms) - sum(log_q_terms)


def log_weights_backward(dlogw, n_p: int, n_q: int):
    """Shapes: dlogw (K, B) -> (the n_p gradients of the p terms, the n_q of the q terms).
    Equation: d log w / d log p_i = 1,  d log w / d log q_j = -1."""
    return (dlogw,) * n_p, (-dlogw,) * n_q


def neg_iwae_forward(logw, *, k):
    """Negative importance-weighted bound.

    Shapes: logw (K, B) -> (loss scalar, L_K (B,), cache).
    Equation: L_K(x_b) = logsumexp_k(logw_kb) - log K;  loss = -(1/B) sum_b L_K(x_b).
    """
    K, B = logw.shape
    lse, cache = logsumexp_forward(logw, k=k)
    lk = lse - np.log(K).astype(logw.dtype)
    return -lk.mean(), lk, cache


def neg_iwae_backward(cache, *, k):
    """Shapes: -> dlogw (K, B).
    Equation: dlogw_kb = -(1/B) w~_kb,  w~_kb = exp(logw_kb) / sum_k' exp(logw_k'b)
    (the normalised importance weights). Derivation: docs/derivations.md, "IWAE objective"."""
    K, B = cache.a.shape
    return logsumexp_backward(np.full(B, -1.0 / B, cache.a.dtype), cache, k=k)


# ------------------------------------------------------------------ a Gaussian latent with N(0, I) prior
class GaussianElboCache(NamedTuple):
    ll_shape: tuple
    beta: float
    dtype: np.dtype
    kl: object                # distributions.KLCache
    free_bits_mask: object    # (d,) or None when free bits are off


def gaussian_elbo_forward(ll, mu, logvar, beta: float, free_bits: float, *, k):
    """The negative ELBO of a diagonal-Gaussian posterior against N(0, I), closed-form KL, with
    beta and (free_bits > 0) free bits.

    Shapes: ll (K, B), mu and logvar (B, d) -> (LossResult, cache).
    Equation: loss = -(1/(K B)) sum_kb ll_kb + beta * (1/B) sum_b KL_b                (free_bits 0)
              loss = -(1/(K B)) sum_kb ll_kb + beta * sum_j max((1/B) sum_b KL_bj, free_bits)
    with KL_b = sum_j KL_bj = 1/2 sum_j (mu_bj^2 + exp(logvar_bj) - 1 - logvar_bj). The
    per-example loss is always the first form.
    """
    kl, kl_cache = gaussian_kl_forward(mu, logvar, k=k)
    ll_h, kl_h = k.to_host(ll), k.to_host(kl)
    loss, per_example = neg_elbo_forward(ll_h, kl_h, beta)
    mask = None
    if free_bits > 0:
        fb_term, mask = free_bits_kl_forward(gaussian_kl_per_dim(k.to_host(mu), k.to_host(logvar)),
                                             free_bits)
        loss = -ll_h.mean() + beta * fb_term
    result = LossResult(float(loss), per_example, ll_h, kl_h, None)
    return result, GaussianElboCache(ll.shape, beta, ll_h.dtype, kl_cache, mask)


def gaussian_elbo_backward(cache: GaussianElboCache, *, k):
    """Shapes: -> dll (K, B), dz None (the ELBO reads z only through ll), dmu, dlogvar (B, d).
    Equation: dll = -1/(K B);  dmu = (beta/B) mu,  dlogvar = (beta/B) (exp(logvar) - 1) / 2,
    each masked per dimension by 1[mean_b KL_bj > free_bits] under free bits.
    Derivation: docs/derivations.md, "Negative ELBO", "KL to the standard normal", "Free bits"."""
    dll, dkl = neg_elbo_backward(cache.ll_shape, cache.beta, cache.dtype, k=k)
    dmu, dlogvar = gaussian_kl_backward(dkl, cache.kl, k=k)
    if cache.free_bits_mask is not None:
        dmu = free_bits_kl_backward(k.to_host(dmu), cache.free_bits_mask)
        dlogvar = free_bits_kl_backward(k.to_host(dlogvar), cache.free_bits_mask)
    return dll, None, dmu, dlogvar


class GaussianIwaeCache(NamedTuple):
    pz: object     # the cache of log N(z; 0, I)
    qz: object     # the cache of log N(z; mu, exp(logvar))
    lse: object    # the cache of the bound's log-sum-exp


def gaussian_iwae_forward(ll, z, mu, logvar, *, k):
    """The negative IWAE bound of a diagonal-Gaussian posterior against N(0, I).

    Shapes: ll (K, B), z (K, B, d), mu and logvar (B, d) -> (LossResult, cache).
    Equation: log w_k = log p(x|z_k) + log N(z_k; 0, I) - log N(z_k; mu, exp(logvar));
              loss = -(1/B) sum_b (logsumexp_k log w_kb - log K).
    z is a function of (mu, logvar) through the reparameterization; the backward returns the
    partial derivatives, and the model's chain adds the path through z.
    """
    z_h = k.to_host(z)
    logpz, pz_cache = log_standard_normal_forward(z_h)
    logqz, qz_cache = log_normal_forward(z_h, k.to_host(mu), k.to_host(logvar))
    ll_h = k.to_host(ll)
    logw = log_weights_forward((ll_h, logpz), (logqz,))
    loss, lk, lse_cache = neg_iwae_forward(logw, k=k)
    kl, _ = gaussian_kl_forward(mu, logvar, k=k)   # reported beside the bound; no gradient
    result = LossResult(float(loss), -lk, ll_h, k.to_host(kl), logw)
    return result, GaussianIwaeCache(pz_cache, qz_cache, lse_cache)


def gaussian_iwae_backward(cache: GaussianIwaeCache, *, k):
    """Shapes: -> dll (K, B), dz (K, B, d), dmu, dlogvar (B, d) (the partials, z held fixed).
    Equation: dlogw = -(1/B) w~;  dll = dlogw;  dz = -dlogw z + dlogw (z - mu) exp(-logvar);
              dmu = -sum_k dlogw_k (z_k - mu) exp(-logvar);
              dlogvar = -sum_k dlogw_k ((z_k - mu)^2 exp(-logvar) - 1) / 2.
    Derivation: docs/derivations.md, "IWAE objective"."""
    dlogw = neg_iwae_backward(cache.lse, k=k)
    (dll, dlogpz), (dlogqz,) = log_weights_backward(dlogw, 2, 1)
    dz_p = log_standard_normal_backward(dlogpz, cache.pz)
    dz_q, dmu, dlogvar = log_normal_backward(dlogqz, cache.qz)
    return dll, dz_p + dz_q, dmu, dlogvar


def gaussian_objective_forward(objective: str, ll, z, mu, logvar, beta, free_bits, *, k):
    """``gaussian_elbo_forward`` (objective "elbo") or ``gaussian_iwae_forward`` ("iwae")."""
    if objective == "elbo":
        return gaussian_elbo_forward(ll, mu, logvar, beta, free_bits, k=k)
    return gaussian_iwae_forward(ll, z, mu, logvar, k=k)


def gaussian_objective_backward(cache, *, k):
    """The backward of whichever objective made ``cache``: (dll, dz or None, dmu, dlogvar)."""
    if isinstance(cache, GaussianElboCache):
        return gaussian_elbo_backward(cache, k=k)
    return gaussian_iwae_backward(cache, k=k)


# ============================================================= a planar-flow posterior (FlowVAE)
class FlowObjectiveCache(NamedTuple):
    objective: str
    beta: float
    pz: object      # the cache of log N(zL; 0, I)
    q: object       # the cache of log q(zL|x) = log N(z0; mu, exp(logvar)) - logdet
    lse: object     # the IWAE bound's log-sum-exp cache (None for the ELBO)
    ll_shape: tuple
    dtype: np.dtype


def flow_objective_forward(objective: str, ll, z0, zL, logdet, mu, logvar, beta: float, *, k):
    """The negative ELBO (with beta) or the negative IWAE bound of a flow posterior against
    N(0, I), log q(zL|x) by the change of variables.

    Shapes: ll, logdet (K, B); z0, zL (K, B, d); mu, logvar (B, d) -> (LossResult, cache).
    Equation: log q_k = log N(z0_k; mu, exp(logvar)) - logdet_k;  log p_k = log N(zL_k; 0, I);
      elbo: kl_b = (1/K) sum_k (log q_k - log p_k) (sampled; reported as ``kl``),
            loss = (1/B) sum_b [ -(1/K) sum_k ll_kb + beta kl_b ];
      iwae: log w_k = ll_k + log p_k - log q_k,  loss = -(1/B) sum_b (logsumexp_k log w_kb - log K).
    ``logw`` is returned for both objectives (the per-sample ELBO terms).
    """
    ll_h = k.to_host(ll)
    logq, q_cache = flow_log_q_forward(z0, logdet, mu, logvar, k=k)
    logpz, pz_cache = log_standard_normal_forward(k.to_host(zL))
    kl = (logq - logpz).mean(axis=0)
    logw = log_weights_forward((ll_h, logpz), (logq,))
    lse_cache = None
    if objective == "elbo":
        loss, per_example = neg_elbo_forward(ll_h, kl, beta)
    else:
        loss, lk, lse_cache = neg_iwae_forward(logw, k=k)
        per_example = -lk
    result = LossResult(float(loss), per_example, ll_h, kl, logw)
    return result, FlowObjectiveCache(objective, beta, pz_cache, q_cache, lse_cache, ll.shape,
                                      ll_h.dtype)


def flow_objective_backward(cache: FlowObjectiveCache, *, k):
    """Shapes: -> dll (K, B), dzL (K, B, d), dlogdet (K, B), dz0 (K, B, d), dmu, dlogvar (B, d):
    the partials (z0 and zL held fixed; the model's chain adds the paths through them).
    Equation: elbo: dll = -1/(K B), dlogq = beta/(K B), dlogp = -dlogq;
              iwae: dlogw = -(1/B) w~, dll = dlogp = dlogw, dlogq = -dlogw;
              dzL = -dlogp zL;  dlogdet = -dlogq;
              (dz0, dmu, dlogvar) of log N(z0; mu, exp(logvar)) with upstream dlogq.
    Derivation: docs/derivations.md, "Planar flows", "The loss and log q"."""
    K, B = cache.ll_shape
    if cache.objective == "elbo":
        dll, _ = neg_elbo_backward(cache.ll_shape, cache.beta, cache.dtype, k=k)
        dlogq = np.full((K, B), cache.beta / (K * B), cache.dtype)   # kl = mean_k(logq - logp)
        dlogpz = -dlogq
    else:
        dlogw = neg_iwae_backward(cache.lse, k=k)
        (dll, dlogpz), (dlogq,) = log_weights_backward(dlogw, 2, 1)
    dzL = log_standard_normal_backward(dlogpz, cache.pz)
    dz0, dlogdet, dmu, dlogvar = flow_log_q_backward(dlogq, cache.q)
    return dll, dzL, dlogdet, dz0, dmu, dlogvar
