"""Evaluation: ELBO terms, active units, likelihood estimates (importance-weighted, exact for tiny
latents), the ELBO gap, and a printable evaluation report.

    elbo_terms(model, x)            recon (B,), kl (B,), kl_per_dim (B, d): ELBO = -(recon + kl)
    active_units(model, x)          #{j : Var_x E_q[z_j | x] > 0.01}   (Burda et al. 2016)
    kl_per_dimension(model, x)      (d,) mean over x of the closed-form KL of each latent dimension
    iw_log_likelihood(model, x, k)  L_k per example (B,) and its Monte Carlo standard error (B,)
    iw_bound_curve(model, x, ks)    mean L_k over the examples for several k, with standard errors
    exact_log_likelihood(model, x)  log p(x) = log int p(x|z) p(z) dz by quadrature (d = 1 or 2)
    elbo_gap(model, x)              log p(x) - ELBO two ways: by quadrature of the ELBO, and as
                                    KL(q(z|x) || p(z|x)) on the grid of the exact posterior
    grid_log_densities(model, x, axes)   log p(x, z) and log q(z|x) on a grid, e.g. for contours
    mc_elbo_gap(model, x)           log p(x) by quadrature minus a sampled ELBO, with its standard
                                    error: the gap of any q, a FlowVAE's included
    posterior_grid(model, x, axes)  log p(z|x) and log q(z|x) on a 2-D grid, normalised on it
    evaluation_report / format_report    everything above for one data set, as a dict / a table

Symbols: B examples, D data dimension, d latent dimension, K or k samples,
G grid points, N_j grid points along axis j. All log densities and bounds are in nats, per example.

Quadrature (``exact_log_likelihood``, ``elbo_gap``): the integrals over z are computed with the
tensor-product trapezoid rule on a box that contains both the prior's mass (+-``bound``) and the
mass of every q(z|x) of the batch (mu_j +- ``n_std`` std_j). The rule is refined by doubling the
number of intervals per axis (the old points are kept, only the new ones are evaluated) until
every estimate changes by less than ``tol * max(1, |estimate|)`` between two levels (tol at least
64 machine epsilons) and the grid spacing is below the smallest standard deviation of q(z|x) on
each axis. The decoder runs once per grid point for the whole batch. For smooth integrands
that decay at the box's edge the trapezoid rule converges faster than any power of the spacing,
so smooth activations (tanh, softplus, elu, sigmoid) converge in a few levels; ReLU decoders
have kinks and converge more slowly (second order).
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from ._checks import check_array, check_choice, check_float, check_int, check_rng
from .activations import activation_forward
from .distributions import (gaussian_kl_per_dim, gaussian_loglik_forward, log_normal_forward,
                            log_standard_normal_forward, logsumexp_forward)
from .kernels import get_kernels

# Evaluation works on host arrays the model returned; the reference kernels serve its few
# kernel calls (log-sum-exp, the Gaussian likelihood), the same formulas every backend matches.
_K = get_kernels("numpy")
N0_INTERVALS = 32                       # intervals per axis of the coarsest quadrature grid
DEFAULT_MAX_LEVEL = {1: 10, 2: 5}       # finest grid: 32 * 2**10 intervals (1-D), 1025**2 (2-D)
MAX_ELEMENTS = 2 ** 22                  # largest (grid points x examples [x D]) array built at once
MAX_GRID_ROWS = 2 ** 14                 # largest number of grid points decoded at once


class QuadratureWarning(RuntimeWarning):
    """The quadrature did not reach its tolerance, or p(z|x) has mass at the edge of the box."""


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


# ====================================================================== small helpers
def _ykw(y):
    """Keyword arguments passing labels only when there are some (the VAE takes y=None)."""
    return {} if y is None else {"y": y}


def _rows(y, sl):
    return None if y is None else y[sl]


def _logsumexp(a, axis=0):
    """Stable log sum exp over ``axis`` (all -inf gives -inf), in a's dtype: the one definition,
    ``distributions.logsumexp_forward`` (over a leading axis), with ``axis`` moved to the front."""
    a = np.moveaxis(a, axis, 0)
    lse = logsumexp_forward(np.ascontiguousarray(a.reshape(a.shape[0], -1)), k=_K)[0]
    return lse.reshape(a.shape[1:])


def _model_rng(model, rng):
    """The Generator of a call: ``rng`` validated, or the model's own seeded stream."""
    return model.rng if rng is None else check_rng("rng", rng)


def kl_per_dimension(model, x, y=None, batch_size=1000):
    """Mean over the examples of the closed-form KL of each latent dimension, (d,), nats.

    Shapes: x (B, D) -> (d,).
    Equation: KL_j = (1/B) sum_b 1/2 (mu_bj^2 + exp(logvar_bj) - 1 - logvar_bj);  the ELBO's KL
    term is sum_j KL_j. A dimension with KL_j ~ 0 has q(z_j|x) = p(z_j) for every x: it carries no
    information about x (posterior collapse).
    """
    batch_size = check_int("batch_size", batch_size, min_value=1)
    x = model.check_x(x)
    total = np.zeros(model.latent_dim, model.dtype)
    for s in range(0, x.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        mu, logvar = model.encode(x[sl], **_ykw(_rows(y, sl)))
        total += gaussian_kl_per_dim(mu, logvar).sum(axis=0)
    return total / x.shape[0]


# ====================================================================== importance weighting
STDERRS = ("delta", "batch_means")


def iw_log_likelihood(model, x, k=5000, rng=None, y=None, max_rows=2 ** 14, stderr="delta",
                      n_batches=20):
    """Importance-weighted estimate L_k of log p(x) per example and its Monte Carlo standard error.

    Shapes: x (B, D) -> (estimate (B,), stderr (B,)), nats.
    Equation: L_k(x) = logsumexp_i log w_i - log k,  log w_i = log p(x|z_i) + log p(z_i)
              - log q(z_i|x),  z_i ~ q(z|x)  (the model's ``log_weights``; for the HVAE the
              two-layer proposal).
    E[L_k] <= log p(x) and rises toward it as k grows (Burda et al. 2016). The log weights are
    drawn in chunks of at most ``max_rows`` decoder rows (samples x examples), so memory stays
    bounded for k = 5000 on thousands of examples; ``rng`` None uses the model's own seeded
    stream. ``model.log_likelihood`` is this function.

    ``stderr`` chooses the standard error:
      "delta" (default, free): se = sqrt((k sum_i w~_i^2 - 1) / k) with the normalised weights
          w~_i = w_i / sum_i' w_i', the delta method on log of the mean weight. It UNDERSTATES
          the spread when the weights are heavy-tailed (q(z|x) narrower than the posterior in
          some direction): the k draws rarely contain the rare large weights that make L_k
          jump, so both the estimate and its variance estimate usually come out low. (The
          bootstrap of the same k weights shares the problem: it cannot resample a weight
          that was not drawn.)
      "batch_means": n_batches independent batches of k draws each (n_batches times the
          cost); the estimate is the mean of the batch values L_k^(g), still an estimate of
          E[L_k] (not of the tighter L_{n_batches k}), and se = s.d._g(L_k^(g)) / sqrt(n_batches),
          measured from the spread itself. sqrt(n_batches) * se estimates the s.d. of one L_k.
    """
    x = model.check_x(x)
    k = check_int("k", k, min_value=1)
    max_rows = check_int("max_rows", max_rows, min_value=1)
    stderr = check_choice("stderr", stderr, STDERRS)
    G = 1 if stderr == "delta" else check_int("n_batches", n_batches, min_value=2)
    rng = _model_rng(model, rng)
    n = G * k
    B = x.shape[0]
    est = np.empty(B, model.dtype)
    se = np.empty(B, model.dtype)
    batch = max(1, min(B, max_rows // min(n, max_rows)))     # examples per block of draws
    for s in range(0, B, batch):
        sl = slice(s, s + batch)
        logw = _log_weights(model, x[sl], n, rng, _rows(y, sl), max_rows)     # (n, b)
        if G == 1:
            lse = _logsumexp(logw)
            est[sl] = lse - math.log(k)
            w = np.exp(logw - lse)                    # normalised weights w~
            # mean(w^2) / mean(w)^2 = k sum w~^2
            se[sl] = np.sqrt(np.maximum(k * (w * w).sum(axis=0) - 1.0, 0.0) / k)
        else:
            lk = _logsumexp(logw.reshape(G, k, -1), axis=1) - math.log(k)   # (G, b)
            est[sl] = lk.mean(axis=0)
            se[sl] = lk.std(axis=0, ddof=1) / math.sqrt(G)
    return est, se


class IWBoundCurve(NamedTuple):
    """The importance-weighted bound against k (``iw_bound_curve``)."""
    ks: np.ndarray            # (m,) sample counts k
    mean: np.ndarray          # (m,) mean over the examples of L_k, nats
    stderr: np.ndarray        # (m,) Monte Carlo standard error of ``mean``
    per_example: np.ndarray   # (m, B) L_k per example (averaged over the disjoint groups)


def _check_ks(ks) -> np.ndarray:
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise TypeError(f"ks must be a sequence of positive ints; got {type(ks).__name__}")
    ks = [check_int(f"ks[{i}]", k, min_value=1) for i, k in enumerate(ks)]
    if not ks:
        raise ValueError("ks must not be empty; give at least one sample count k >= 1")
    return np.asarray(ks, dtype=np.int64)


def _log_weights(model, x, n, rng, y, max_rows):
    """(n, B) log importance weights of n draws per example, at most ``max_rows`` decoder rows
    (samples x examples) per forward pass."""
    chunk = max(1, max_rows // x.shape[0])
    return np.concatenate([model.log_weights(x, n_samples=min(chunk, n - i), rng=rng, **_ykw(y))
                           for i in range(0, n, chunk)])


def iw_bound_curve(model, x, ks=(1, 10, 100, 1000, 5000), rng=None, y=None, max_rows=2 ** 14):
    """Mean importance-weighted bound L_k over the examples for each k in ``ks``, with errors.

    Shapes: x (B, D), ks (m,) -> IWBoundCurve(ks (m,), mean (m,), stderr (m,), per_example (m, B)).
    Equation: L_k(x) = logsumexp_{i in group} log w_i - log k.
    One set of n = max(ks) log weights per example is drawn (n = 2 when max(ks) = 1) and reused
    for every k: it is split into G = n // k disjoint groups of k weights, and L_k(x) is the mean
    of the G group estimates (an unbiased estimate of E[L_k(x)], using all n draws). Estimates for
    different k are therefore correlated (they share draws); each is unbiased for its own k.
    Standard error of the mean over examples (Monte Carlo only; the examples are held fixed):
    sqrt(sum_b v_b) / B, where v_b is the variance of example b's estimate: the sample variance
    of its G group values over G when G >= 2, else the delta-method variance
    (k sum w~^2 - 1) / k of ``iw_log_likelihood`` (which understates heavy-tailed weights; the
    groups measure the spread instead).
    """
    ks = _check_ks(ks)
    x = model.check_x(x)
    max_rows = check_int("max_rows", max_rows, min_value=1)
    rng = _model_rng(model, rng)
    B, m = x.shape[0], ks.size
    n = max(int(ks.max()), 2)
    per = np.empty((m, B), model.dtype)
    var = np.empty((m, B), model.dtype)
    ex_batch = max(1, min(B, MAX_ELEMENTS // n))    # bounds the (n, examples) block of log weights
    for s in range(0, B, ex_batch):
        sl = slice(s, s + ex_batch)
        logw = _log_weights(model, x[sl], n, rng, _rows(y, sl), max_rows)
        for i, k in enumerate(ks):
            G = n // k
            lk = _logsumexp(logw[:G * k].reshape(G, k, -1), axis=1) - math.log(k)   # (G, b)
            per[i, sl] = lk.mean(axis=0)
            if G >= 2:
                var[i, sl] = lk.var(axis=0, ddof=1) / G
            else:
                w = np.exp(logw[:k] - (lk[0] + math.log(k)))      # normalised weights w~
                var[i, sl] = np.maximum(k * (w * w).sum(axis=0) - 1.0, 0.0) / k
    return IWBoundCurve(ks, per.mean(axis=1), np.sqrt(var.sum(axis=1)) / B, per)


# ====================================================================== exact quadrature
class PosteriorGrid(NamedTuple):
    """The exact posterior p(z|x) on the final quadrature grid.

    axes         tuple of d arrays, (N_1,) [and (N_2,)]: grid coordinates along z_1 [and z_2]
    log_density  (B, N_1) for d = 1; (B, N_2, N_1) for d = 2, entry [b, a, c] at
                 z = (axes[0][c], axes[1][a]) (rows follow z_2: the layout of matplotlib's
                 contour and of viz.plot_posterior_contours). log p(z|x) = log p(x, z) - log p(x).
    log_weights  (N_1,) or (N_2, N_1): log trapezoid weights on the same layout, so that
                 int f(z) dz ~ sum exp(log_weights) * f.
    """
    axes: tuple
    log_density: np.ndarray
    log_weights: np.ndarray


class ELBOGap(NamedTuple):
    """The ELBO gap per example, (B,) each, nats (``elbo_gap``)."""
    log_px: np.ndarray        # exact log p(x) by quadrature
    elbo: np.ndarray          # exact ELBO = recon - kl_prior
    recon: np.ndarray         # E_q[log p(x|z)] by quadrature (not Monte Carlo)
    kl_prior: np.ndarray      # KL(q(z|x) || N(0, I)), closed form
    gap: np.ndarray           # side (a): log_px - elbo
    kl_posterior: np.ndarray  # side (b): KL(q(z|x) || p(z|x)) on the grid of the exact posterior
    q_mass: np.ndarray        # int q(z|x) dz on the grid: 1 up to quadrature error (a diagnostic)


def _loglik_cross(model, x, out):
    """log p(x_b | z_g) for every pair of a grid point and an example.

    Shapes: x (B, D), out (G, D) decoder outputs at the grid points -> (G, B).
    Equation (bernoulli): ll_gb = sum_i x_bi out_gi - softplus(out_gi)
                                = (out @ x.T)_gb - sum_i softplus(out_gi)
             (gaussian):  the one definition, ``distributions.gaussian_loglik_forward``, on
                          the outputs repeated for each example.
    The decoder runs once per grid point, not once per (grid point, example). The Bernoulli
    form is a second arrangement of ``distributions.bernoulli_loglik_forward``, kept because it
    is one BLAS product where the direct form evaluates softplus on a (G, B, D) array; the tests
    compare the two. The Gaussian one has no such product (the square couples x and out), so it
    calls the one definition on (G, B, D) blocks.
    """
    if model.likelihood == "bernoulli":
        sp = activation_forward(out, "softplus")      # the stable softplus of the table
        return out @ x.T - sp.sum(axis=1)[:, None]
    # log s2 per data dimension, from the public config and parameters
    logvar = (model.params["dec.logvar"] if model.output_var == "learned"
              else np.full(x.shape[1], math.log(model.output_var), out.dtype))
    G, B = out.shape[0], x.shape[0]
    ll = np.empty((G, B), out.dtype)
    step = max(1, MAX_ELEMENTS // (G * x.shape[1]))     # examples per (G, b, D) block
    for s in range(0, B, step):
        xb = x[s:s + step]
        outs = np.ascontiguousarray(np.broadcast_to(out[:, None, :], (G,) + xb.shape))
        ll[:, s:s + step] = gaussian_loglik_forward(xb, outs, logvar, k=_K)[0]
    return ll


def _grid_terms(model, x, y, z, mu, logvar, with_q):
    """log p(x|z), log p(z) and (with_q) log q(z|x) at grid points z for every example.

    Shapes: x (B, D), z (G, d), mu and logvar (B, d) -> ll (G, B), logpz (G,), logq (G, B) or None.
    Equation: log p(z) = log N(z; 0, I),  log q(z|x) = log N(z; mu, diag(exp(logvar))), by
    ``distributions.log_standard_normal_forward`` and ``log_normal_forward`` (z against every
    example's mu and logvar: a (G, B, d) broadcast, d <= 2).
    """
    G = z.shape[0]
    if y is None:
        ll = _loglik_cross(model, x, model.decoder_output(z))
    else:                      # a conditional decoder: one decoder pass per label present
        ll = np.empty((G, x.shape[0]), model.dtype)
        for c in np.unique(y):
            cols = np.flatnonzero(y == c)
            out = model.decoder_output(z, np.full(G, c, y.dtype))
            ll[:, cols] = _loglik_cross(model, x[cols], out)
    logpz = log_standard_normal_forward(z)[0]
    logq = log_normal_forward(z[:, None, :], mu[None], logvar[None])[0] if with_q else None
    return ll, logpz, logq


def _trapezoid_log_weights(idx, n, h, dtype):
    """Log trapezoid weights of grid points with integer indices idx (G, d) on n intervals per
    axis of spacing h (d,): sum_j [log h_j + log c_j], c = 1/2 at either end of an axis, else 1."""
    lw = np.full(idx.shape[0], sum(math.log(hj) for hj in h), dtype)
    ends = (idx == 0) | (idx == n)
    lw -= math.log(2.0) * ends.sum(axis=1).astype(dtype)
    return lw


def _new_points(n, d, level):
    """Integer indices (P, d) of the grid points first evaluated at ``level`` (n intervals per
    axis): all of them at level 0; afterwards those with an odd index on some axis, since the
    points with all-even indices are the previous level's grid."""
    ax = np.arange(n + 1)
    if d == 1:
        return (ax if level == 0 else ax[1::2])[:, None]
    i, j = np.meshgrid(ax, ax, indexing="ij")
    keep = np.ones(i.shape, bool) if level == 0 else (i % 2 == 1) | (j % 2 == 1)
    return np.stack([i[keep], j[keep]], axis=1)


# the models whose decoder reads z with the prior p(z) = N(0, I): log p(x) needs nothing else
QUADRATURE_MODELS = ("vae", "cvae", "flow")


def _check_quadrature_model(model, what):
    kind = getattr(model, "model_type", None)
    if kind not in QUADRATURE_MODELS:
        raise ValueError(f"{what} integrates over z under the prior N(0, I) of the VAE, the "
                         f"CVAE and the FlowVAE; model is a {type(model).__name__} "
                         f"(model_type {kind!r})")
    d = model.latent_dim
    if d not in (1, 2):
        raise ValueError(f"{what} needs latent_dim 1 or 2 (quadrature over z); this model has "
                         f"latent_dim = {d} (use iw_log_likelihood for larger latents)")


def _check_quadrature_args(model, tol, max_level, bound, n_std):
    _check_quadrature_model(model, "exact quadrature")
    d = model.latent_dim
    tol = check_float("tol", tol, min_value=0.0, min_inclusive=False)
    max_level = (DEFAULT_MAX_LEVEL[d] if max_level is None
                 else check_int("max_level", max_level, min_value=1, max_value=16 if d == 1 else 7))
    bound = check_float("bound", bound, min_value=0.0, min_inclusive=False)
    n_std = check_float("n_std", n_std, min_value=0.0, min_inclusive=False)
    return tol, max_level, bound, n_std


def _quadrature(model, x, y, tol, max_level, bound, n_std, with_q):
    """Refine the trapezoid rule until log p(x) (and, with_q, E_q[log p(x|z)] and
    KL(q || p(z|x))) settle. Returns (estimates dict of (B,) arrays, final axes, mu, logvar).

    Running sums over the grid, per example (w_g the trapezoid weights, q_g = q(z_g|x)):
        S = sum_g w_g p(x, z_g)           (kept as log S: log p(x) = log S)
        R = sum_g w_g q_g log p(x|z_g)     (E_q[log p(x|z)])
        A = sum_g w_g q_g (log q_g - log p(x, z_g)),   Q = sum_g w_g q_g
        KL(q || p(z|x)) = sum_g w_g q_g (log q_g - log p(z_g|x)) = A + log p(x) Q
    Halving the spacing divides every old weight by 2^d, so each level rescales the sums and adds
    the new points only.
    """
    d, dt, B = model.latent_dim, model.dtype, x.shape[0]
    mu, logvar = model.encode(x, **_ykw(y))
    std = np.exp(0.5 * logvar)
    lo = np.minimum(-bound, (mu - n_std * std).min(axis=0)).astype(np.float64)   # (d,)
    hi = np.maximum(bound, (mu + n_std * std).max(axis=0)).astype(np.float64)
    min_std = std.min(axis=0).astype(np.float64)
    log_s = np.full(B, -np.inf, dt)
    r_sum, a_sum, q_sum = (np.zeros(B, dt) for _ in range(3))
    edge = np.full(B, -np.inf, dt)       # max of log p(x, z) on the box's boundary
    chunk = max(1, min(MAX_GRID_ROWS, MAX_ELEMENTS // B))
    # float32 sums over ~1e6 points carry relative errors ~1e-6: never ask for less than 64 ulps
    tol_eff = max(tol, 64 * float(np.finfo(dt).eps))
    prev, converged = None, False
    for level in range(max_level + 1):
        n = N0_INTERVALS * 2 ** level
        axes = tuple(np.linspace(lo[j], hi[j], n + 1).astype(dt) for j in range(d))
        h = (hi - lo) / n
        if level > 0:
            log_s -= d * math.log(2.0)
            for acc in (r_sum, a_sum, q_sum):
                acc /= 2 ** d
        idx = _new_points(n, d, level)
        for s in range(0, idx.shape[0], chunk):
            ic = idx[s:s + chunk]
            z = np.stack([axes[j][ic[:, j]] for j in range(d)], axis=1)
            lw = _trapezoid_log_weights(ic, n, h, dt)
            ll, logpz, logq = _grid_terms(model, x, y, z, mu, logvar, with_q)
            logjoint = ll + logpz[:, None]
            log_s = np.logaddexp(log_s, _logsumexp(logjoint + lw[:, None], axis=0))
            on_edge = ((ic == 0) | (ic == n)).any(axis=1)
            if on_edge.any():
                edge = np.maximum(edge, logjoint[on_edge].max(axis=0))
            if with_q:
                qw = np.exp(logq + lw[:, None])
                r_sum += (qw * ll).sum(axis=0)
                a_sum += (qw * (logq - logjoint)).sum(axis=0)
                q_sum += qw.sum(axis=0)
        est = {"log_px": log_s.copy()}
        if with_q:
            est.update(recon=r_sum.copy(), kl_posterior=a_sum + log_s * q_sum, q_mass=q_sum.copy())
        fine = bool(np.all(h <= min_std))
        if prev is not None and fine:
            # the KL is a difference of terms of the size of log p(x): judge it on that scale
            scale = {"log_px": np.abs(log_s), "recon": np.abs(est.get("recon", 0.0)),
                     "kl_posterior": np.maximum(np.abs(est.get("kl_posterior", 0.0)),
                                                np.abs(log_s))}
            converged = all(
                np.all(np.abs(est[key] - prev[key]) <= tol_eff * np.maximum(1.0, scale[key]))
                for key in ("log_px", "recon", "kl_posterior") if key in est)
            if converged:
                break
        prev = est
    if not converged:
        warnings.warn(f"quadrature did not converge to tol={tol_eff:g} within "
                      f"max_level={max_level} ({n} intervals per axis); the estimates may be "
                      f"inaccurate. Raise max_level or tol.", QuadratureWarning, stacklevel=3)
    log_edge_mass = edge - est["log_px"] + float(np.log(hi - lo).sum())
    if np.any(log_edge_mass > math.log(tol)):
        bad = np.flatnonzero(log_edge_mass > math.log(tol))[:5].tolist()
        warnings.warn(f"p(z|x) is not negligible on the edge of the quadrature box "
                      f"[{lo.round(2).tolist()}, {hi.round(2).tolist()}] for examples {bad}; "
                      f"raise bound", QuadratureWarning, stacklevel=3)
    return est, axes, mu, logvar


def _layout_weights(axes):
    """Log trapezoid weights on the PosteriorGrid layout: (N_1,) or (N_2, N_1)."""
    lws = []
    for a in axes:
        lw = np.full(a.size, math.log(float(a[1] - a[0])), a.dtype)
        lw[[0, -1]] -= math.log(2.0)
        lws.append(lw)
    return lws[0] if len(axes) == 1 else lws[1][:, None] + lws[0][None, :]


def grid_log_densities(model, x, axes, y=None):
    """log p(x, z) and log q(z|x) on a tensor grid of z, e.g. for contour plots.

    Shapes: x (B, D); axes: a sequence of d (= latent_dim, 1 or 2) 1-D arrays (N_1,) [, (N_2,)]
    in the model's dtype -> (log_joint, log_q), each (B, N_1) or (B, N_2, N_1) with entry
    [b, a, c] at z = (axes[0][c], axes[1][a]) (the layout of viz.plot_posterior_contours).
    Equation: log p(x, z) = log p(x|z) + log p(z);  log p(z|x) = log p(x, z) - log p(x).
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    _check_quadrature_model(model, "grid_log_densities")
    d = model.latent_dim
    if isinstance(axes, np.ndarray) and axes.ndim == 1 and d == 1:
        axes = (axes,)
    if not isinstance(axes, (tuple, list)) or len(axes) != d:
        raise ValueError(f"axes must be a sequence of latent_dim = {d} 1-D arrays (one per axis)")
    axes = tuple(check_array(f"axes[{j}]", a, ndim=1, dtype=model.dtype)
                 for j, a in enumerate(axes))
    mu, logvar = model.encode(x, **_ykw(y))
    if d == 1:
        z = axes[0][:, None]
    else:
        z1, z2 = np.meshgrid(axes[0], axes[1])        # (N_2, N_1): rows follow z_2
        z = np.stack([z1.ravel(), z2.ravel()], axis=1)
    B, G = x.shape[0], z.shape[0]
    gaussian_q = model.gaussian_posterior
    log_joint = np.empty((G, B), model.dtype)
    log_q = np.empty((G, B), model.dtype) if gaussian_q else model.posterior_log_density(z, x)
    chunk = max(1, min(MAX_GRID_ROWS, MAX_ELEMENTS // B))
    for s in range(0, G, chunk):
        ll, logpz, logq = _grid_terms(model, x, y, z[s:s + chunk], mu, logvar, gaussian_q)
        log_joint[s:s + chunk] = ll + logpz[:, None]
        if gaussian_q:
            log_q[s:s + chunk] = logq
    shape = (B,) + tuple(a.size for a in axes[::-1])
    return log_joint.T.reshape(shape), log_q.T.reshape(shape)


def exact_log_likelihood(model, x, tol=1e-6, max_level=None, return_posterior=False, y=None,
                         bound=8.0, n_std=10.0):
    """log p(x) by quadrature over z, for latent_dim 1 or 2; optionally p(z|x) on the grid.

    Shapes: x (B, D) -> log_px (B,) [, PosteriorGrid with log_density (B, N_1) or (B, N_2, N_1)].
    Equation: log p(x) = log int p(x|z) p(z) dz
                       ~ logsumexp_g [ log w_g + log p(x|z_g) + log p(z_g) ]
    with trapezoid weights w_g.
    Grid: a box covering [-bound, bound] per axis and every q(z|x) of the batch to mu +- n_std std,
    one box for the whole batch so that the decoder runs once per grid point; refined by doubling
    the intervals per axis (32, 64, ...; at most 32 * 2**max_level; default max_level 10 for
    latent_dim 1 and 5 for latent_dim 2) until log p(x) changes by less than
    tol * max(1, |log p(x)|) and the spacing is below the smallest std of q on every axis
    (float32: tol is raised to at least 64 machine epsilons, 7.6e-6, the resolution of float32
    sums over the grid; the whole computation stays in the model's dtype). Emits a
    QuadratureWarning when that is not reached or when p(z|x) is not negligible on the box's edge.
    ``return_posterior`` evaluates the final grid once more and keeps (B, grid) values: meant for
    a few examples.
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    tol, max_level, bound, n_std = _check_quadrature_args(model, tol, max_level, bound, n_std)
    est, axes, _, _ = _quadrature(model, x, y, tol, max_level, bound, n_std, with_q=False)
    log_px = est["log_px"]
    if not return_posterior:
        return log_px
    log_joint, _ = grid_log_densities(model, x, axes, y=y)
    shift = log_px.reshape((-1,) + (1,) * len(axes))
    return log_px, PosteriorGrid(axes, log_joint - shift, _layout_weights(axes))


def elbo_gap(model, x, tol=1e-6, max_level=None, y=None, bound=8.0, n_std=10.0):
    """The ELBO gap log p(x) - ELBO(x) computed two ways, for latent_dim 1 or 2.

    Shapes: x (B, D) -> ELBOGap of (B,) arrays.
    Equation: ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) and
              log p(x) - ELBO = KL(q(z|x) || p(z|x)) = int q(z|x) [log q(z|x) - log p(z|x)] dz.
    Side (a) ``gap``: log p(x) and E_q[log p(x|z)] both by the same quadrature (no Monte Carlo),
    minus the closed-form KL to the prior. Side (b) ``kl_posterior``: the KL between q and the exact
    posterior p(z|x) = p(x, z) / p(x), integrated on the same grid. Refinement as in
    ``exact_log_likelihood``, until all three integrals change by less than tol * max(1, scale)
    (scale: |value|, and for the KL, which is a difference of terms of that size, |log p(x)|).
    The two sides agree up to quadrature error (about tol); ``q_mass`` (= 1 up to quadrature
    error) is a diagnostic of how well the grid resolves q.
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    tol, max_level, bound, n_std = _check_quadrature_args(model, tol, max_level, bound, n_std)
    if not model.gaussian_posterior:
        raise ValueError("elbo_gap integrates under a Gaussian q(z|x); a FlowVAE's q is not "
                         "Gaussian: use mc_elbo_gap (log p(x) by quadrature, the ELBO sampled)")
    est, _, mu, logvar = _quadrature(model, x, y, tol, max_level, bound, n_std, with_q=True)
    kl_prior = gaussian_kl_per_dim(mu, logvar).sum(axis=1)
    elbo = est["recon"] - kl_prior
    return ELBOGap(est["log_px"], elbo, est["recon"], kl_prior, est["log_px"] - elbo,
                   est["kl_posterior"], est["q_mass"])


class MCGap(NamedTuple):
    """The ELBO gap with a sampled ELBO (``mc_elbo_gap``): (B,) arrays and two batch scalars."""
    log_px: np.ndarray        # exact log p(x) by quadrature
    elbo: np.ndarray          # Monte Carlo ELBO: mean over n samples of
                              # log w = log p(x, z) - log q(z|x)
    elbo_stderr: np.ndarray   # its standard error, std(log w) / sqrt(n)
    gap: np.ndarray           # log_px - elbo
    mean_gap: float           # gap averaged over the examples
    mean_stderr: float        # the standard error of mean_gap: sqrt(sum_b elbo_stderr_b^2) / B


def mc_elbo_gap(model, x, n_samples=1000, rng=None, log_px=None, y=None, max_rows=2 ** 14, **quad):
    """log p(x) - ELBO(x) for any q, latent_dim 1 or 2: log p(x) by quadrature (it needs only the
    decoder and the prior), the ELBO by Monte Carlo with its standard error.

    Shapes: x (B, D) -> MCGap of (B,) arrays. ``log_px`` (B,) reuses a quadrature already done;
    otherwise ``exact_log_likelihood(model, x, **quad)`` computes it.
    Equation: ELBO(x) = E_q[log p(x, z) - log q(z|x)] ~ (1/n) sum_i log w_i, z_i ~ q(z|x),
    with log w from ``model.log_weights`` (the flow's log q for a FlowVAE).
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    _check_quadrature_model(model, "mc_elbo_gap")
    n = check_int("n_samples", n_samples, min_value=2)
    max_rows = check_int("max_rows", max_rows, min_value=1)
    rng = _model_rng(model, rng)
    if log_px is None:
        log_px = exact_log_likelihood(model, x, y=y, **quad)
    log_px = check_array("log_px", log_px, shape=(x.shape[0],), dtype=model.dtype)
    logw = _log_weights(model, x, n, rng, y, max_rows)
    elbo = logw.mean(axis=0)
    se = logw.std(axis=0, ddof=1) / math.sqrt(n)
    gap = log_px - elbo
    return MCGap(log_px, elbo, se, gap, float(gap.mean()),
                 float(np.sqrt((se.astype(np.float64) ** 2).sum()) / x.shape[0]))


class PosteriorOnGrid(NamedTuple):
    """Exact and approximate posteriors on one grid (``posterior_grid``)."""
    axes: tuple               # (N_1,), (N_2,)
    log_posterior: np.ndarray  # (B, N_2, N_1) log p(z|x), normalised by the grid's own quadrature
    log_q: np.ndarray          # (B, N_2, N_1) log q(z|x) (the model's own: Gaussian or flow)
    log_px: np.ndarray         # (B,) log p(x) by the trapezoid rule on this grid
    q_mass: np.ndarray         # (B,) int q(z|x) dz on this grid: 1 when the grid covers q


MIN_GRID_POINTS = 16


def posterior_grid(model, x, axes, y=None):
    """log p(z|x) and log q(z|x) on a 2-D grid, with the grid's own quadrature of log p(x) and of
    the mass of q, e.g. for figures of the exact posterior beside q.

    Shapes: x (B, D); axes two increasing, evenly spaced 1-D arrays (N_1,), (N_2,), each of at
    least 16 points whose spacing is at most the smallest standard deviation of q(z|x)'s base Gaussian on that
    axis (a coarser grid cannot resolve the posterior: ValueError naming the axis).
    Equation: log p(x) ~ logsumexp_g [log w_g + log p(x, z_g)] (trapezoid weights w_g);
              log p(z|x) = log p(x, z) - log p(x).
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    _check_quadrature_model(model, "posterior_grid")
    if model.latent_dim != 2 or not isinstance(axes, (tuple, list)) or len(axes) != 2:
        raise ValueError(f"posterior_grid needs latent_dim 2 and axes = (z1 axis, z2 axis); got "
                         f"latent_dim {model.latent_dim}")
    axes = tuple(check_array(f"axes[{j}]", a, ndim=1, dtype=model.dtype)
                 for j, a in enumerate(axes))
    std = np.exp(0.5 * model.encode(x, **_ykw(y))[1]).min(axis=0)
    for j, a in enumerate(axes):
        h = np.diff(a)
        if a.size < MIN_GRID_POINTS or np.any(h <= 0) or h.max() > std[j]:
            raise ValueError(f"axes[{j}] is too coarse for the quadrature: it needs at least "
                             f"{MIN_GRID_POINTS} increasing points spaced at most "
                             f"{std[j]:.3g} (the smallest std of q(z|x) along z_{j + 1}); got {a.size} points, "
                             f"spacing up to {h.max() if h.size else float('nan'):.3g}")
        if not np.allclose(h, h[0], rtol=1e-6, atol=0.0):   # the trapezoid weights assume it
            raise ValueError(f"axes[{j}] must be evenly spaced (the quadrature's weights assume "
                             f"one spacing); got spacings from {h.min():.3g} to {h.max():.3g}")
    log_joint, log_q = grid_log_densities(model, x, axes, y=y)
    lw = _layout_weights(axes)
    log_px = _logsumexp((log_joint + lw).reshape(x.shape[0], -1).T, axis=0)
    q_mass = np.exp(_logsumexp((log_q + lw).reshape(x.shape[0], -1).T, axis=0))
    return PosteriorOnGrid(axes, log_joint - log_px[:, None, None], log_q, log_px, q_mass)


# ====================================================================== report for the CLI
def evaluation_report(model, x, k=5000, rng=None, y=None, n_elbo_samples=10, exact=None,
                      tol=1e-6, stderr="delta", n_surgery_samples=2000):
    """Evaluate a model on a data set; returns a dict of plain Python numbers and lists.

    Shapes: x (B, D). Keys:
      n_examples, latent_dim
      neg_elbo, neg_elbo_stderr   mean over x of -ELBO(x), Monte Carlo with ``n_elbo_samples``
                                  draws per example, and its Monte Carlo standard error (None for 1)
      recon, kl                   mean -E_q[log p(x|z)] (same draws) and mean KL term (closed
                                  form; sampled for the HVAE)
      k, iw_log_likelihood, iw_stderr    mean L_k over x and its Monte Carlo standard error,
                                  by ``stderr`` ("delta", free, which understates the spread of
                                  heavy-tailed weights, or "batch_means", which measures it at
                                  20 times the draws; see ``iw_log_likelihood``)
      iw_stderr_method            that choice
      active_units, au_variance   Burda et al.'s count and Var_x E_q[z_j] per dimension (list d)
      kl_per_dim                  mean KL(q(z_j|x) || N(0, 1)) of each latent dimension (list d;
                                  for the HVAE, of z1: a collapse diagnostic, not an ELBO term)
      exact (VAE/CVAE with latent_dim <= 2, unless exact=False): exact_log_likelihood, exact_elbo,
                                  gap (log p(x) - ELBO) and kl_q_posterior (KL(q || p(z|x))), means
                                  over x, by quadrature with ``tol``; for a FlowVAE
                                  exact_log_likelihood, gap and gap_stderr (mc_elbo_gap)
      mean_kl_mc, mutual_info, marginal_kl (each with _stderr), mutual_info_bound (log B),
      surgery_samples; for latent_dim 2 also hole_mass, hole_mass_error, hole_mass_outside,
      hole_mass_mc (+ _stderr)     Gaussian-prior models only: the ELBO surgery with
                                  ``n_surgery_samples`` draws and the holes (scratchvae.holes)
    Equation: sqrt(sum_b Var_b / n) / B is the Monte Carlo standard error of a mean over B
    examples of n-sample averages with per-example variances Var_b.
    A VQ-VAE (prior "categorical") gets ``codebook_report(model, x)`` instead.
    """
    if getattr(model, "prior", None) == "categorical":
        return codebook_report(model, x)
    x = model.check_x(x)
    k = check_int("k", k, min_value=1)
    n_elbo_samples = check_int("n_elbo_samples", n_elbo_samples, min_value=1)
    if exact is not None and not isinstance(exact, bool):
        raise TypeError(f"exact must be None, True or False; got {type(exact).__name__}")
    if exact:
        _check_quadrature_model(model, "exact=True")
    rng = _model_rng(model, rng)
    B = x.shape[0]
    ll_mean, elbo_mean, elbo_var, kl = [], [], [], []
    step = max(1, 2 ** 14 // n_elbo_samples)
    for s in range(0, B, step):
        sl = slice(s, s + step)
        # per-sample ELBO terms, as each model defines them (closed-form or sampled KL)
        per_sample, r = model.elbo_samples(x[sl], n_elbo_samples, rng=rng, **_ykw(_rows(y, sl)))
        ll_mean.append(r.ll.mean(axis=0))
        elbo_mean.append(per_sample.mean(axis=0))
        elbo_var.append(per_sample.var(axis=0, ddof=1) / n_elbo_samples if n_elbo_samples > 1
                        else np.zeros(r.kl.shape, model.dtype))
        kl.append(r.kl)
    ll_mean, kl = np.concatenate(ll_mean), np.concatenate(kl)
    elbo_mean, elbo_var = np.concatenate(elbo_mean), np.concatenate(elbo_var)
    est, se = iw_log_likelihood(model, x, k=k, rng=rng, y=y, stderr=stderr)
    n_active, au_var = active_units(model, x, y=y, return_variance=True)
    report = {
        "n_examples": B, "latent_dim": model.latent_dim,
        "neg_elbo": float(-elbo_mean.mean()),
        "neg_elbo_stderr": float(np.sqrt(elbo_var.sum()) / B) if n_elbo_samples > 1 else None,
        "n_elbo_samples": n_elbo_samples,
        "recon": float(-ll_mean.mean()), "kl": float(kl.mean()),
        "k": k, "iw_log_likelihood": float(est.mean()),
        "iw_stderr": float(np.sqrt((se * se).sum()) / B), "iw_stderr_method": stderr,
        "active_units": int(n_active), "au_variance": [float(v) for v in au_var],
        "kl_per_dim": [float(v) for v in kl_per_dimension(model, x, y=y)],
    }
    if exact is None:
        exact = model.latent_dim <= 2 and getattr(model, "model_type", None) in QUADRATURE_MODELS
    if exact and not model.gaussian_posterior:    # q is not Gaussian: the ELBO sampled
        g = mc_elbo_gap(model, x, n_samples=max(n_elbo_samples, 100), rng=rng, y=y, tol=tol)
        report.update(exact_log_likelihood=float(g.log_px.mean()), gap=g.mean_gap,
                      gap_stderr=g.mean_stderr)
    elif exact:
        gap = elbo_gap(model, x, tol=tol, y=y)
        report.update(exact_log_likelihood=float(gap.log_px.mean()),
                      exact_elbo=float(gap.elbo.mean()), gap=float(gap.gap.mean()),
                      kl_q_posterior=float(gap.kl_posterior.mean()))
    # Gaussian-prior models: the ELBO surgery (and for d = 2 the holes), scratchvae.holes
    report.update(holes_report(model, x, y=y, n_samples=n_surgery_samples, rng=rng))
    return report


_REQUIRED_KEYS = ("n_examples", "latent_dim", "neg_elbo", "recon", "kl", "k", "iw_log_likelihood",
                  "iw_stderr", "active_units", "kl_per_dim")


def _stderr_note(method) -> str:
    if method == "delta":
        return "  (delta method: understates heavy-tailed weights; stderr='batch_means' measures it)"
    return f"  ({method})"


def format_report(report) -> str:
    """A readable multi-line table of an ``evaluation_report`` dict (nats)."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict from evaluation_report; "
                        f"got {type(report).__name__}")
    if report.get("model") == "vqvae":
        return format_codebook_report(report)
    missing = [key for key in _REQUIRED_KEYS if key not in report]
    if missing:
        raise ValueError(f"report is missing the keys {missing}; pass the dict returned by "
                         f"evaluation_report")
    d = report["latent_dim"]
    se = report.get("neg_elbo_stderr")
    pm = f" +- {se:.4f}" if se is not None else ""
    w = 40
    n_s = report.get("n_elbo_samples")
    lines = [f"evaluation on {report['n_examples']} examples (latent_dim {d}); nats per example",
             f"  {'negative ELBO':<{w}}{report['neg_elbo']:>12.4f}{pm}"
             + (f"  ({n_s} samples per example)" if n_s is not None else ""),
             f"  {'  reconstruction -E_q[log p(x|z)]':<{w}}{report['recon']:>12.4f}",
             f"  {'  KL(q(z|x) || p(z))':<{w}}{report['kl']:>12.4f}",
             f"  {'log-likelihood, IW bound L_' + str(report['k']):<{w}}"
             f"{report['iw_log_likelihood']:>12.4f} +- {report['iw_stderr']:.4f}"
             + _stderr_note(report.get("iw_stderr_method", "delta")),
             f"  {'active units (Var_x E_q[z_j] > 0.01)':<{w}}{report['active_units']:>12d} / {d}"]
    kls = report["kl_per_dim"]
    per_line = 8
    for s in range(0, len(kls), per_line):
        label = "KL per dimension (to N(0, 1))" if s == 0 else ""
        cells = "  ".join(f"z{j + 1}:{v:.3f}" for j, v in enumerate(kls[s:s + per_line], start=s))
        lines.append(f"  {label:<{w}}{cells}")
    if "exact_log_likelihood" in report:
        lines.append(f"  {'exact log p(x) (quadrature)':<{w}}"
                     f"{report['exact_log_likelihood']:>12.4f}")
        if "exact_elbo" in report:
            lines.append(f"  {'exact ELBO (quadrature)':<{w}}{report['exact_elbo']:>12.4f}")
        gse = report.get("gap_stderr")
        lines.append(f"  {'gap log p(x) - ELBO':<{w}}{report['gap']:>12.4f}"
                     + (f" +- {gse:.4f} (ELBO sampled)" if gse is not None else ""))
        if "kl_q_posterior" in report:
            lines.append(f"  {'KL(q(z|x) || p(z|x)) on the grid':<{w}}"
                         f"{report['kl_q_posterior']:>12.4f}")
    lines += format_holes(report, w)
    return "\n".join(lines)


# Sample quality for digits (an FID analogue; see scratchvae/quality.py), re-exported here so the
# evaluation measures live under one name.
from .quality import digit_frechet_distance, frechet_distance, train_classifier  # noqa: E402,F401


# ====================================================================== the VQ-VAE's report
def codebook_report(model, x) -> dict:
    """Evaluate a VQ-VAE (a model whose ``prior`` is "categorical") on x; plain Python numbers.

    Keys: model ("vqvae"), n_examples, n_latents, n_codes, recon (mean -log p(x|z_q(x))),
    neg_bound_uniform (mean -(log p(x|z_q) - m log C)), prior (the fitted prior's kind or
    "uniform"), neg_bound_fitted (mean -(log p(x|z_q) + log pi(codes)), None without a fitted
    prior), perplexity (exp H of the average assignment), usage (share of codes used),
    dead_codes, codes_per_slot_entropy (list m: H of each slot's codes, nats).
    """
    x = model.check_x(x)
    ll = model.reconstruction_log_likelihood(x)
    codes = model.encode(x)
    usage = model.codebook_usage(x)
    fitted = model.prior_kind != "uniform"
    entropies = []
    for j in range(codes.shape[1]):
        p = np.bincount(codes[:, j], minlength=model.n_codes) / codes.shape[0]
        p = p[p > 0]
        entropies.append(float(-np.sum(p * np.log(p))))
    return {"model": "vqvae", "n_examples": int(x.shape[0]), "n_latents": model.n_latents,
            "n_codes": model.n_codes, "recon": float(-ll.mean()),
            "neg_bound_uniform": float(-model.elbo(x, prior="uniform").mean()),
            "prior": model.prior_kind,
            "neg_bound_fitted": float(-model.elbo(x, prior="fitted").mean()) if fitted else None,
            "perplexity": usage["perplexity"], "usage": usage["usage"],
            "dead_codes": usage["dead_codes"], "codes_per_slot_entropy": entropies}


def format_codebook_report(report) -> str:
    """A readable table of a ``codebook_report`` dict (nats)."""
    w = 44
    m, c = report["n_latents"], report["n_codes"]
    lines = [f"evaluation on {report['n_examples']} examples (VQ-VAE, {m} slots x {c} codes); "
             "nats per example",
             f"  {'reconstruction -log p(x|z_q)':<{w}}{report['recon']:>12.4f}",
             f"  {'-bound, uniform prior (recon + m log C)':<{w}}{report['neg_bound_uniform']:>12.4f}"]
    if report["neg_bound_fitted"] is not None:
        lines.append(f"  {'-bound, fitted ' + report['prior'] + ' prior':<{w}}"
                     f"{report['neg_bound_fitted']:>12.4f}")
    lines += [f"  {'codebook perplexity exp(H(pbar))':<{w}}{report['perplexity']:>12.2f} / {c}",
              f"  {'codes used':<{w}}{c - report['dead_codes']:>12d} / {c}"
              f"  ({report['dead_codes']} dead)",
              f"  {'entropy of each slot (nats)':<{w}}"
              + "  ".join(f"s{j + 1}:{h:.3f}" for j, h in enumerate(report["codes_per_slot_entropy"]))]
    return "\n".join(lines)


# The hole problem and the ELBO surgery (scratchvae/holes.py), under the same name.
from .holes import (aggregate_posterior_kl, elbo_surgery, format_holes,  # noqa: E402,F401
                    holes_report, posterior_holes, surgery_draws)
