"""The hole problem and the ELBO surgery: how well the aggregate posterior covers the prior.

Symbols: N examples x_n (D,), d latent dimensions, S Monte Carlo draws, G grid points per axis.

    q(z)  = (1/N) sum_n q(z|x_n)              the aggregate posterior of the data set, a mixture
    p(z)  = N(0, I)                           the prior the decoder is sampled from
    holes = {z : q(z) < threshold * p(z)}     prior regions no encoding reaches (threshold 0.1)

A sample z ~ p(z) that falls in a hole is decoded by a decoder that was never trained there, so it
tends to decode to nothing real. For a 2-D latent ``posterior_holes`` maps the holes on a grid and
measures the prior mass they hold; for any d, ``aggregate_posterior_kl`` and ``elbo_surgery``
measure how far q(z) is from p(z).

ELBO surgery (Hoffman & Johnson 2016). With n uniform on {1..N} and z ~ q(z|x_n), each draw
splits as

    log q(z|x_n) - log p(z)  =  [log q(z|x_n) - log q(z)]  +  [log q(z) - log p(z)]

and the means over the draws give mean_n KL(q(z|x_n) || p(z)) = I_q(n; z) + KL(q(z) || p(z)).
The three estimates use the same draws, so the identity holds to rounding for every sample size.

The mutual information estimate (the dataset-mixture estimator) is exact, up to Monte Carlo
noise, for the data set itself: the mixture over its N examples is the aggregate posterior of the
uniform distribution on those N points. Read as an estimate of I(x; z) under the population the
examples were drawn from it is biased low: in expectation it is the InfoNCE lower bound, and
every term log q(z|x_n) - log q(z) is at most log N (the mixture holds q(z|x_n) / N), so it
saturates at log N however informative the code is. The marginal KL is then biased high by the
same amount (their sum, the mean KL, is unbiased). The standard errors measure the Monte Carlo
noise of the draws only, not that bias.

Every model with ``prior == "gaussian"`` (VAE, CVAE, FlowVAE) provides what these tools read:
``model.sample_posterior(x, n_samples, rng, y=None) -> (z (n, B, d), log_q (n, B))`` and
``model.posterior_log_density(z, x, y=None) -> (M, N)``. Other models are refused.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._checks import check_float, check_int, check_rng
from .distributions import log_standard_normal_forward
from .kernels import get_kernels

MAX_PAIRS = 2 ** 22     # largest (z rows x examples) matrix of log q(z_m | x_n) held at once
MIN_GRID_SIZE = 9       # fewest grid points per axis: the coarse half-grid keeps 5
MAX_SPACING = 0.25      # widest grid spacing (prior standard deviations) the quadrature accepts


# ====================================================================== checks and the mixture
def _check_model(model, what: str) -> None:
    """Refuse a model without the N(0, I) prior, or without the posterior interface."""
    prior = getattr(model, "prior", None)
    if prior != "gaussian":
        raise ValueError(
            f"{what} needs a model whose prior is N(0, I) (prior = 'gaussian': VAE, CVAE, "
            f"FlowVAE); {type(model).__name__} has prior = {prior!r}. The holes and the ELBO "
            f"surgery compare the aggregate posterior q(z) with that Gaussian prior, which a "
            f"hierarchical or categorical prior does not have.")
    for name in ("sample_posterior", "posterior_log_density"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model: {type(model).__name__} has no {name}() method, which {what} "
                            f"reads")


def _check_data(model, x, y):
    """x by the model's check; y by hand, since any model with the two methods above will do
    (a conditional one checks its labels again when it encodes)."""
    x = model.check_x(x, "x")
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have shape ({x.shape[0]},), one label per row of x; "
                             f"got {y.shape}")
    return x, y


def _ykw(y):
    return {} if y is None else {"y": y}


def log_aggregate_posterior(model, z, x, y=None):
    """log q(z_m) = logsumexp_n log q(z_m | x_n) - log N for every row of z, (M,).

    Shapes: z (M, d), x (N, D) -> (M,). Computed in blocks of z rows (at most MAX_PAIRS pairs).
    """
    lse = get_kernels("numpy", validate=False).logsumexp
    N = x.shape[0]
    step = max(1, MAX_PAIRS // N)
    out = np.empty(z.shape[0], model.dtype)
    for s in range(0, z.shape[0], step):
        lq = model.posterior_log_density(z[s:s + step], x, **_ykw(y))     # (m, N)
        out[s:s + step] = lse(np.ascontiguousarray(lq.T)) - math.log(N)
    return out


# ====================================================================== any d: the ELBO surgery
class SurgeryDraws(NamedTuple):
    """Per draw s (z_s ~ q(z|x_{n_s}), n_s uniform): the three log densities, each (S,)."""
    index: np.ndarray        # (S,) n_s
    z: np.ndarray            # (S, d)
    log_q_cond: np.ndarray   # log q(z_s | x_{n_s})
    log_q_agg: np.ndarray    # log q(z_s), the mixture over the N examples
    log_p: np.ndarray        # log p(z_s) = log N(z_s; 0, I)


def surgery_draws(model, x, n_samples=2000, rng=None, y=None) -> SurgeryDraws:
    """Draw z from the aggregate posterior and evaluate the densities of the surgery on them.

    Draws n_s uniformly from the N examples, then z_s ~ q(z|x_{n_s}). log q(z_s|x_{n_s}) is the
    entry of the same (M, N) matrix the mixture sums, so log q(z_s|x_{n_s}) - log q(z_s) <= log N
    holds draw by draw.
    """
    _check_model(model, "surgery_draws")
    x, y = _check_data(model, x, y)
    S = check_int("n_samples", n_samples, min_value=2)
    rng = model.rng if rng is None else check_rng("rng", rng)
    N = x.shape[0]
    idx = rng.integers(0, N, size=S)
    z, _ = model.sample_posterior(x[idx], 1, rng, **_ykw(None if y is None else y[idx]))
    z = np.ascontiguousarray(z[0])
    lse = get_kernels("numpy", validate=False).logsumexp
    step = max(1, MAX_PAIRS // N)
    log_cond = np.empty(S, model.dtype)
    log_agg = np.empty(S, model.dtype)
    for s in range(0, S, step):
        lq = model.posterior_log_density(z[s:s + step], x, **_ykw(y))     # (m, N)
        log_cond[s:s + step] = lq[np.arange(lq.shape[0]), idx[s:s + step]]
        log_agg[s:s + step] = lse(np.ascontiguousarray(lq.T)) - math.log(N)
    log_p = log_standard_normal_forward(z)[0]
    return SurgeryDraws(idx, z, log_cond, log_agg, log_p)


def _mean_se(t):
    t = t.astype(np.float64)
    return float(t.mean()), float(t.std(ddof=1) / math.sqrt(t.size))


def aggregate_posterior_kl(model, x, n_samples=2000, rng=None, y=None):
    """Monte Carlo estimate of KL(q(z) || p(z)) for the aggregate posterior of ``x``, with its
    standard error: returns (kl, stderr), nats.

    Shapes: x (N, D) (y (N,) for a conditional model); any latent dimension d.
    Equation: KL = E_{z ~ q(z)}[log q(z) - log p(z)] ~ (1/S) sum_s [log q(z_s) - log p(z_s)],
              log q(z) = logsumexp_n log q(z|x_n) - log N,  z_s ~ q(z|x_{n_s}), n_s uniform;
              stderr = std_s(...) / sqrt(S).
    q(z) is the exact mixture over the N examples; read as the KL of the population's aggregate
    posterior the estimate is biased high (see ``elbo_surgery``).
    """
    _check_model(model, "aggregate_posterior_kl")
    r = surgery_draws(model, x, n_samples, rng, y)
    return _mean_se(r.log_q_agg - r.log_p)


class ELBOSurgery(NamedTuple):
    """mean_n KL(q(z|x_n) || p(z)) = I_q(n; z) + KL(q(z) || p(z)), each estimated on the same
    draws (nats). ``mi_upper_bound`` = log N caps ``mutual_info``; ``mi_bias`` says why."""
    mean_kl: float               # mean over x of KL(q(z|x) || p(z)) (Monte Carlo)
    mean_kl_stderr: float
    mutual_info: float           # I_q(x; z), the dataset-mixture estimator
    mutual_info_stderr: float
    marginal_kl: float           # KL(q(z) || p(z))
    marginal_kl_stderr: float
    mi_upper_bound: float        # log N: no term of the estimator exceeds it
    n_examples: int
    n_samples: int
    mi_bias: str


MI_BIAS = ("exact (up to Monte Carlo noise) for the uniform distribution on the N examples; as "
           "an estimate of the population I(x; z) it is biased low (in expectation the InfoNCE "
           "lower bound) and never exceeds log N, and the marginal KL is biased high by the "
           "same amount")


def elbo_surgery(model, x, n_samples=2000, rng=None, y=None) -> ELBOSurgery:
    """The ELBO surgery of Hoffman & Johnson (2016): the ELBO's mean KL term split into the
    mutual information between the index of an example and its code, and the KL of the
    aggregate posterior from the prior.

    Shapes: x (N, D) (y (N,) for a conditional model); any latent dimension d.
    Equation (n_s uniform on {1..N}, z_s ~ q(z|x_{n_s}),
              log q(z) = logsumexp_n log q(z|x_n) - log N):
        mean_kl     = (1/S) sum_s [log q(z_s|x_{n_s}) - log p(z_s)]
        mutual_info = (1/S) sum_s [log q(z_s|x_{n_s}) - log q(z_s)]   (each term <= log N)
        marginal_kl = (1/S) sum_s [log q(z_s) - log p(z_s)]
    so mean_kl = mutual_info + marginal_kl for every S. Standard errors: std_s / sqrt(S).
    Bias: the mutual-information estimate is exact for the data set itself; as an estimate of
    the population I(x; z) it is biased low (in expectation the InfoNCE bound of Poole et al.
    2019) and capped by log N (``mi_upper_bound``), and marginal_kl is biased high by as much.
    The standard errors do not include this bias.
    """
    _check_model(model, "elbo_surgery")
    r = surgery_draws(model, x, n_samples, rng, y)
    kl, kl_se = _mean_se(r.log_q_cond - r.log_p)
    mi, mi_se = _mean_se(r.log_q_cond - r.log_q_agg)
    mk, mk_se = _mean_se(r.log_q_agg - r.log_p)
    N = int(np.shape(x)[0])
    return ELBOSurgery(kl, kl_se, mi, mi_se, mk, mk_se, math.log(N), N, int(r.z.shape[0]),
                       MI_BIAS)


# ====================================================================== d = 2: the holes on a grid
class PosteriorHoles(NamedTuple):
    """The aggregate posterior against the prior on a 2-D grid, and what the holes decode to.
    Grids are (G, G) with [a, b] at z = (z1[b], z2[a]) (rows follow z2)."""
    z1: np.ndarray                # (G,) grid axis, also z2
    z2: np.ndarray
    log_q: np.ndarray             # (G, G) log q(z), the mixture over the N examples
    log_p: np.ndarray             # (G, G) log N(z; 0, I)
    holes: np.ndarray             # (G, G) bool: q(z) < threshold * p(z)
    threshold: float
    hole_mass: float              # prior mass in the holes, trapezoid rule on the grid
    hole_mass_coarse: float       # the same on every other grid point (spacing 2h)
    quadrature_error: float       # |hole_mass - hole_mass_coarse|: the grid's own error
    mass_outside_grid: float      # prior mass outside the box, hole or not (not in hole_mass)
    q_mass: float                 # int q(z) dz on the grid: 1 - (mass outside) if resolved
    hole_mass_mc: float           # fraction of prior draws in holes (no grid, no box)
    hole_mass_mc_stderr: float    # its binomial standard error
    z_holes: np.ndarray           # (n_h, 2) prior draws that fell in holes
    x_holes: np.ndarray           # (n_h, D) their decoded means
    z_covered: np.ndarray         # (n_c, 2) prior draws in covered regions
    x_covered: np.ndarray         # (n_c, D) their decoded means


def _trapezoid_weights(n, h):
    w = np.full(n, h)
    w[0] = w[-1] = h / 2
    return w


def posterior_holes(model, x, y=None, grid_size=201, extent=4.0, threshold=0.1,
                    n_prior_samples=4000, n_decode=16, rng=None, decode_y=None) -> PosteriorHoles:
    """Map the holes of a 2-D latent: where the aggregate posterior q(z) < threshold * p(z).

    Shapes: x (N, D) (y (N,) for a conditional model); latent_dim must be 2.
    The grid has ``grid_size`` points per axis (odd, at least 9) on [-extent, extent], spacing
    h = 2 extent / (grid_size - 1) <= 0.25. Equation:
        hole_mass = sum_{a,b} w_a w_b p(z_ab) [q(z_ab) < threshold p(z_ab)]    (trapezoid w)
        quadrature_error = |hole_mass - the same sum on every other point (spacing 2h)|:
            the indicator jumps at the hole's edge, so the rule converges at first order and
            the difference of the two grids bounds the error of the finer one;
        mass_outside_grid = 1 - erf(extent / sqrt 2)^2: prior mass the grid cannot classify;
        hole_mass_mc = fraction of ``n_prior_samples`` draws z ~ p(z) in holes (q at the draws
            themselves, no grid), stderr sqrt(m (1 - m) / n): an independent check.
    The first ``n_decode`` draws that fell in holes and in covered regions are decoded (the
    likelihood's mean). A conditional model decodes them under ``decode_y`` ((n_decode,) labels),
    by default labels drawn from ``y``.
    """
    _check_model(model, "posterior_holes")
    x, y = _check_data(model, x, y)
    if model.latent_dim != 2:
        raise ValueError(f"posterior_holes maps a 2-D latent on a grid; the model has "
                         f"latent_dim={model.latent_dim} (use aggregate_posterior_kl or "
                         f"elbo_surgery for any d)")
    G = check_int("grid_size", grid_size, min_value=MIN_GRID_SIZE)
    if G % 2 == 0:
        raise ValueError(f"grid_size must be odd, so that every other point forms the coarse "
                         f"grid of the error estimate; got {G}")
    extent = check_float("extent", extent, min_value=0.0, min_inclusive=False)
    h = 2 * extent / (G - 1)
    if h > MAX_SPACING:
        raise ValueError(f"grid_size={G} is too coarse for the quadrature on [-{extent:g}, "
                         f"{extent:g}]: spacing {h:.3g} > {MAX_SPACING} prior standard "
                         f"deviations; use grid_size >= {math.ceil(2 * extent / MAX_SPACING) + 1}")
    threshold = check_float("threshold", threshold, min_value=0.0, min_inclusive=False)
    n_prior = check_int("n_prior_samples", n_prior_samples, min_value=1)
    n_decode = check_int("n_decode", n_decode, min_value=0)
    rng = model.rng if rng is None else check_rng("rng", rng)
    dt = model.dtype
    log_thr = math.log(threshold)

    axis = np.linspace(-extent, extent, G).astype(dt)
    zz2, zz1 = np.meshgrid(axis, axis, indexing="ij")          # [a, b] = (z1[b], z2[a])
    grid = np.ascontiguousarray(np.stack([zz1.ravel(), zz2.ravel()], axis=1))
    log_q = log_aggregate_posterior(model, grid, x, y).reshape(G, G)
    log_p = log_standard_normal_forward(grid)[0].reshape(G, G)
    holes = log_q < log_thr + log_p

    def quad(f, stride):
        w = _trapezoid_weights((G - 1) // stride + 1, h * stride)
        return float(np.einsum("a,b,ab->", w, w, f[::stride, ::stride].astype(np.float64)))

    p_in_holes = np.where(holes, np.exp(log_p.astype(np.float64)), 0.0)
    hole_mass, hole_coarse = quad(p_in_holes, 1), quad(p_in_holes, 2)
    q_mass = quad(np.exp(log_q.astype(np.float64)), 1)
    outside = 1.0 - math.erf(extent / math.sqrt(2.0)) ** 2

    zp = rng.standard_normal((n_prior, 2), dtype=dt)
    log_p_draws = log_standard_normal_forward(zp)[0]
    in_hole = log_aggregate_posterior(model, zp, x, y) < log_thr + log_p_draws
    m = float(in_hole.mean())
    z_h, z_c = zp[in_hole][:n_decode], zp[~in_hole][:n_decode]
    conditional = getattr(model, "conditional", False)
    if conditional:
        decode_y = (rng.choice(y, size=n_decode) if decode_y is None
                    else model.check_y(decode_y, n_decode, "decode_y"))
    decoded = []
    for zs in (z_h, z_c):
        if zs.shape[0] == 0:
            decoded.append(np.empty((0, x.shape[1]), dt))
        else:
            kw = {"y": decode_y[:zs.shape[0]]} if conditional else {}
            decoded.append(np.asarray(model.decode(np.ascontiguousarray(zs), **kw)))
    return PosteriorHoles(axis, axis.copy(), log_q, log_p, holes, threshold, hole_mass,
                          hole_coarse, abs(hole_mass - hole_coarse), outside, q_mass, m,
                          math.sqrt(m * (1 - m) / n_prior), z_h, decoded[0], z_c, decoded[1])


# ====================================================================== the evaluation report
def holes_report(model, x, y=None, n_samples=2000, rng=None, grid_size=201) -> dict:
    """The report entries (plain numbers) of the surgery, and for d = 2 of the holes; empty for a
    model without the Gaussian prior.

    Keys: mean_kl_mc (+ _stderr), mutual_info (+ _stderr), mutual_info_bound (log N),
    marginal_kl (+ _stderr), surgery_samples; for latent_dim 2 also hole_mass,
    hole_mass_error (the grid's quadrature error), hole_mass_outside (prior mass off the grid),
    hole_mass_mc (+ _stderr).
    """
    if getattr(model, "prior", None) != "gaussian":
        return {}
    s = elbo_surgery(model, x, n_samples=n_samples, rng=rng, y=y)
    out = {"mean_kl_mc": s.mean_kl, "mean_kl_mc_stderr": s.mean_kl_stderr,
           "mutual_info": s.mutual_info, "mutual_info_stderr": s.mutual_info_stderr,
           "mutual_info_bound": s.mi_upper_bound, "marginal_kl": s.marginal_kl,
           "marginal_kl_stderr": s.marginal_kl_stderr, "surgery_samples": s.n_samples}
    if model.latent_dim == 2:
        h = posterior_holes(model, x, y=y, grid_size=grid_size, n_decode=0,
                            n_prior_samples=n_samples, rng=rng)
        out.update(hole_mass=h.hole_mass, hole_mass_error=h.quadrature_error,
                   hole_mass_outside=h.mass_outside_grid, hole_mass_mc=h.hole_mass_mc,
                   hole_mass_mc_stderr=h.hole_mass_mc_stderr)
    return out


def format_holes(report: dict, w: int = 40) -> list:
    """Lines of ``format_report`` for the entries of ``holes_report`` (none when absent)."""
    if "mutual_info" not in report:
        return []
    r = report
    lines = [f"  {'ELBO surgery (' + str(r['surgery_samples']) + ' draws)':<{w}}",
             f"  {'  mean KL(q(z|x) || p(z)) (Monte Carlo)':<{w}}{r['mean_kl_mc']:>12.4f}"
             f" +- {r['mean_kl_mc_stderr']:.4f}",
             f"  {'  = I(x; z) (<= log N = ' + format(r['mutual_info_bound'], '.3f') + ')':<{w}}"
             f"{r['mutual_info']:>12.4f} +- {r['mutual_info_stderr']:.4f}",
             f"  {'  + KL(q(z) || p(z))':<{w}}{r['marginal_kl']:>12.4f}"
             f" +- {r['marginal_kl_stderr']:.4f}"]
    if "hole_mass" in r:
        lines += [f"  {'prior mass in holes (q(z) < 0.1 p(z))':<{w}}{r['hole_mass']:>12.4f}"
                  f" +- {r['hole_mass_error']:.4f} (grid) + <= {r['hole_mass_outside']:.1e} "
                  f"off the grid",
                  f"  {'  by prior draws':<{w}}{r['hole_mass_mc']:>12.4f}"
                  f" +- {r['hole_mass_mc_stderr']:.4f}"]
    return lines
