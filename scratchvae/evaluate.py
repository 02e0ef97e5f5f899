"""Evaluation: ELBO terms, active units, likelihood estimates (importance-weighted, exact for tiny
latents) and the ELBO gap.

    elbo_terms(model, x)         recon (B,), kl (B,), kl_per_dim (B, d): ELBO = -(recon + kl)
    active_units(model, x)       #{j : Var_x E_q[z_j | x] > 0.01}   (Burda et al. 2016)
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import check_float, check_int
from .distributions import gaussian_kl_per_dim


class ELBOTerms(NamedTuple):
    recon: np.ndarray        # (B,) -(1/K) sum_k log p(x|z_k)
    kl: np.ndarray           # (B,) KL(q(z|x) || p(z)) (closed form)
    kl_per_dim: np.ndarray   # (B, d) closed-form KL per latent dimension


def elbo_terms(model, x, y=None, n_samples=1, rng=None, batch_size=1000):
    """The two terms of the negative ELBO per example, and the KL per latent dimension,
    computed in batches of ``batch_size`` rows."""
    batch_size = check_int("batch_size", batch_size, min_value=1)
    recon, kl, kld = [], [], []
    for s in range(0, x.shape[0], batch_size):
        kw = {} if y is None else {"y": y[s:s + batch_size]}
        xb = x[s:s + batch_size]
        r = model.forward(xb, n_samples=n_samples, rng=rng, **kw)
        mu, logvar = model.encode(xb, **kw)
        recon.append(-r.ll.mean(axis=0))
        kl.append(r.kl)
        kld.append(gaussian_kl_per_dim(mu, logvar))
    return ELBOTerms(np.concatenate(recon), np.concatenate(kl), np.concatenate(kld))


def active_units(model, x, y=None, threshold=0.01, return_variance=False):
    """Number of active latent units: A_u = Var_x( E_{q(z|x)}[z_j] ) > threshold (0.01).
    E_q[z_j] is mu_j. With ``return_variance`` also returns the per-dimension variances (d,)."""
    threshold = check_float("threshold", threshold, min_value=0.0)
    kw = {} if y is None else {"y": y}
    mu, _ = model.encode(x, **kw)
    var = mu.var(axis=0)
    n = int((var > threshold).sum())
    return (n, var) if return_variance else n
