"""The objectives, composed from ``distributions``: negative ELBO (with beta and free bits) and
the negative importance-weighted bound (IWAE). Forward and backward side by side.

Shapes (DESIGN.md section 1): ll (K, B) log-likelihoods, kl (B,) closed-form KL,
logw (K, B) log importance weights. Each loss is the mean over the batch of a per-example loss,
in nats, to be minimised.
"""
import numpy as np

from .distributions import logsumexp_backward, logsumexp_forward
from .kernels.workspace import empty


def neg_elbo_forward(ll, kl, beta: float):
    """Per-example and batch negative ELBO (beta-weighted).

    Shapes: ll (K, B), kl (B,) -> (loss scalar, per_example (B,)).
    Equation: loss(x_b) = -(1/K) sum_k ll_kb + beta * kl_b;  loss = (1/B) sum_b loss(x_b).
    """
    per_example = -ll.mean(axis=0) + beta * kl
    return per_example.mean(), per_example


def neg_elbo_backward(ll_shape, beta: float, dtype, ws=None):
    """Gradients of the batch loss with respect to ll and kl (they do not depend on the values).

    Shapes: -> dll (K, B), dkl (B,) (from the Workspace ``ws`` when given).
    Equation: dll_kb = -1 / (K B);  dkl_b = beta / B.
    Derivation: docs/derivations.md, "Negative ELBO".
    """
    K, B = ll_shape
    dll, dkl = empty(ws, (K, B), dtype), empty(ws, B, dtype)
    dll.fill(-1.0 / (K * B))
    dkl.fill(beta / B)
    return dll, dkl


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
