"""Gaussian and Bernoulli pieces of the VAE, each forward paired with its hand-written backward.

Symbols: K samples, B batch, D data dimension, d latent dimension.

    mu, logvar   (B, d)      parameters of q(z|x) = N(mu, diag(exp(logvar)))
    eps          (K, B, d)   standard normal noise
    z            (K, B, d)   z_k = mu + exp(logvar / 2) * eps_k
    out          (K, B, D)   decoder output: logits (bernoulli) or means (gaussian)
    ll           (K, B)      log p(x | z_k)
    kl           (B,)        KL(q(z|x) || N(0, I))

Derivations: docs/derivations.md, one heading per function pair. The functions that call kernels
take the kernel set ``k`` (bound to a workspace or not) and call it; the others are NumPy.
"""
from typing import NamedTuple

import numpy as np

from .kernels import Kernels
from .kernels.numpy_ref import LOG_2PI  # one definition, shared with the kernels


# ------------------------------------------------------------------ reparameterization
class ReparamCache(NamedTuple):
    eps: np.ndarray   # (K, B, d)
    std: np.ndarray   # exp(logvar / 2), (B, d)


def reparameterize_forward(mu, logvar, eps, *, k: Kernels):
    """Draw z through the reparameterization trick.

    Shapes: mu, logvar (B, d), eps (K, B, d) -> z (K, B, d).
    Equation: std = exp(logvar / 2);  z_k = mu + std * eps_k.
    """
    z, std = k.reparam_fwd(mu, logvar, eps)
    return z, ReparamCache(eps, std)


def reparameterize_backward(dz, cache: ReparamCache, *, k: Kernels):
    """Gradients of z with respect to mu and logvar, summed over the K samples.

    Shapes: dz (K, B, d) -> dmu (B, d), dlogvar (B, d).
    Equation: dmu = sum_k dz_k;  dlogvar = sum_k dz_k * eps_k * std / 2
              (since dz_k/dlogvar = eps_k * exp(logvar/2) / 2).
    Derivation: docs/derivations.md, "Reparameterization".
    """
    return k.reparam_bwd(dz, cache.eps, cache.std)


# ------------------------------------------------------------------ KL to the standard normal
class KLCache(NamedTuple):
    mu: np.ndarray
    logvar: np.ndarray


def gaussian_kl_forward(mu, logvar, *, k: Kernels):
    """Closed-form KL(N(mu, diag(exp(logvar))) || N(0, I)), one value per row.

    Shapes: mu, logvar (B, d) -> kl (B,).
    Equation: kl = 1/2 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j).
    """
    return k.kl_fwd(mu, logvar), KLCache(mu, logvar)


def gaussian_kl_backward(dkl, cache: KLCache, *, k: Kernels):
    """Gradients of the closed-form KL.

    Shapes: dkl (B,) -> dmu (B, d), dlogvar (B, d).
    Equation: dmu = dkl * mu;  dlogvar = dkl * (exp(logvar) - 1) / 2.
    Derivation: docs/derivations.md, "KL to the standard normal".
    """
    return k.kl_bwd(dkl, cache.mu, cache.logvar)


def gaussian_kl_per_dim(mu, logvar):
    """KL per latent dimension, (B, d): 1/2 (mu^2 + exp(logvar) - 1 - logvar). For reports and
    free bits; its gradient is that of ``gaussian_kl_backward`` masked per dimension."""
    return 0.5 * (mu * mu + np.expm1(logvar) - logvar)


# ------------------------------------------------------------------ KL between two diagonal Gaussians
class KL2Cache(NamedTuple):
    mu1: np.ndarray
    logvar1: np.ndarray
    mu2: np.ndarray
    logvar2: np.ndarray


def kl_diag_gaussians_forward(mu1, logvar1, mu2, logvar2):
    """Closed-form KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2))) for diagonal Gaussians.

    Shapes: all four (B, d) (or broadcastable to a common (..., d)) -> kl (...,), summed over d.
    Equation: kl = 1/2 sum_j [ logvar2 - logvar1
                               + (exp(logvar1) + (mu1 - mu2)^2) * exp(-logvar2) - 1 ],
              computed as logvar2 - logvar1 + expm1(logvar1 - logvar2) + (mu1 - mu2)^2 exp(-logvar2).
    With mu2 = 0 and logvar2 = 0 this is ``gaussian_kl_forward``.
    """
    r = mu1 - mu2
    # exp(logvar1) exp(-logvar2) - 1 as expm1(logvar1 - logvar2): no overflow for large equal
    # log-variances, and accurate when the two variances are close
    kl = 0.5 * (logvar2 - logvar1 + np.expm1(logvar1 - logvar2) + r * r * np.exp(-logvar2))
    return kl.sum(axis=-1), KL2Cache(mu1, logvar1, mu2, logvar2)


def kl_diag_gaussians_backward(dkl, cache: KL2Cache):
    """Gradients of the KL between two diagonal Gaussians, shapes as the forward's inputs.

    Equation (with dkl broadcast over d, r = mu1 - mu2, p2 = exp(-logvar2)):
        dmu1     =  dkl * r * p2
        dmu2     = -dkl * r * p2
        dlogvar1 =  dkl * (exp(logvar1) * p2 - 1) / 2
        dlogvar2 =  dkl * (1 - (exp(logvar1) + r^2) * p2) / 2
    Each gradient is formed on the common shape of the four inputs, where the forward's terms
    live, and summed back to its input's shape over every broadcast axis, the last one included
    (a logvar1 of shape (B, 1) against mu1 (B, d) enters d terms of the sum).
    Derivation: docs/derivations.md, "KL between two diagonal Gaussians".
    """
    mu1, lv1, mu2, lv2 = cache
    full = np.broadcast_shapes(*(np.shape(a) for a in cache))
    dkl = np.asarray(dkl)[..., None]
    r = mu1 - mu2
    p2 = np.exp(-lv2)
    ratm1 = np.expm1(lv1 - lv2)    # exp(logvar1) * p2 - 1, without overflow
    dmu1 = dkl * r * p2
    dlv1 = dkl * 0.5 * ratm1
    dlv2 = dkl * 0.5 * (-ratm1 - r * r * p2)

    def back(g, like):
        g = _sum_to(g if g.shape == full else np.broadcast_to(g, full), np.shape(like))
        return g if g.flags.writeable else g.copy()    # never hand out a read-only view
    return back(dmu1, mu1), back(dlv1, lv1), back(-dmu1, mu2), back(dlv2, lv2)


# ------------------------------------------------------------------ diagonal Gaussian log-density
class LogNormalCache(NamedTuple):
    v: np.ndarray
    m: np.ndarray
    logvar: np.ndarray
    r: np.ndarray        # v - m
    r_prec: np.ndarray   # (v - m) * exp(-logvar)


def log_normal_forward(v, m, logvar):
    """log N(v; m, diag(exp(logvar))), summed over the last axis; m, logvar broadcast against v.

    Shapes: v (..., d), m and logvar broadcastable to v -> (...,).
    Equation: log N = -1/2 sum_j [ (v_j - m_j)^2 exp(-logvar_j) + logvar_j + log(2 pi) ].
    """
    r = v - m
    r_prec = r * np.exp(-logvar)
    lp = -0.5 * (r * r_prec + logvar + LOG_2PI)
    lp = np.broadcast_to(lp, np.broadcast_shapes(np.shape(v), np.shape(m), np.shape(logvar)))
    return lp.sum(axis=-1), LogNormalCache(v, m, logvar, r, r_prec)


def log_normal_backward(dlp, cache: LogNormalCache):
    """Gradients (dv, dm, dlogvar) of log N(v; m, exp(logvar)), each shaped as its input.

    Equation (dlp broadcast over the last axis):
        dv      = -dlp * (v - m) exp(-logvar)
        dm      =  dlp * (v - m) exp(-logvar)
        dlogvar =  dlp * ((v - m)^2 exp(-logvar) - 1) / 2
    Gradients of broadcast inputs are summed over the broadcast axes.
    Derivation: docs/derivations.md, "Diagonal Gaussian log-density".
    """
    v, m, lv, r, r_prec = cache
    dlp = dlp[..., None]
    dm = dlp * r_prec
    dlv = 0.5 * dlp * (r_prec * r - 1.0)
    return _sum_to(-dm, np.shape(v)), _sum_to(dm, np.shape(m)), _sum_to(dlv, np.shape(lv))


def log_standard_normal_forward(v):
    """log N(v; 0, I) summed over the last axis: -1/2 sum_j (v_j^2 + log(2 pi)). (...,d) -> (...,)."""
    return -0.5 * (v * v + LOG_2PI).sum(axis=-1), v


def log_standard_normal_backward(dlp, v):
    """dv = -dlp * v."""
    return -dlp[..., None] * v


def _sum_to(g, shape):
    """Sum a broadcast gradient ``g`` back down to ``shape`` (the reverse of broadcasting)."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead > 0 else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


# ------------------------------------------------------------------ likelihoods p(x|z)
class GaussianCache(NamedTuple):
    x: np.ndarray        # (B, D)
    out: np.ndarray      # (K, B, D)
    logvar: np.ndarray   # (D,)


class BernoulliCache(NamedTuple):
    x: np.ndarray        # (B, D)
    out: np.ndarray      # (K, B, D) logits
    e: np.ndarray        # (K, B, D) exp(-|out|), shared by softplus and the backward's sigmoid


def bernoulli_loglik_forward(x, out, *, k: Kernels):
    """Bernoulli log-likelihood with logits, in the stable softplus form (never log(sigmoid)).

    Shapes: x (B, D) in [0, 1], out (K, B, D) logits -> ll (K, B).
    Equation: log p(x|z_k) = sum_i x_i out_i - softplus(out_i),
              softplus(t) = max(t, 0) + log1p(exp(-|t|)).
    """
    ll, e = k.bernoulli_ll_fwd(x, out)   # e = exp(-|out|), which the backward's sigmoid reuses
    return ll, BernoulliCache(x, out, e)


def bernoulli_loglik_backward(dll, cache: BernoulliCache, *, k: Kernels):
    """Gradient with respect to the logits.

    Shapes: dll (K, B) -> dout (K, B, D).
    Equation: dout = dll * (x - sigmoid(out)),
              sigmoid(out) = 1 / (1 + e) for out >= 0, e / (1 + e) for out < 0, e = exp(-|out|).
    Derivation: docs/derivations.md, "Bernoulli likelihood".
    """
    return k.bernoulli_ll_bwd(dll, cache.x, cache.out, cache.e)


def bernoulli_loglik_dx(dll, cache: BernoulliCache, *, k: Kernels):
    """Gradient with respect to the data x (for input-gradient checks), on the host.

    Shapes: dll (K, B) -> dx (B, D).
    Equation: d/dx_i [x_i out_i - softplus(out_i)] = out_i, so dx = sum_k dll_k * out_k.
    Derivation: docs/derivations.md, "Input gradient".
    """
    return (k.to_host(dll)[..., None] * k.to_host(cache.out)).sum(axis=0)


def gaussian_loglik_forward(x, out, logvar, *, k: Kernels):
    """Gaussian log-likelihood with per-dimension log-variance (fixed or learned).

    Shapes: x (B, D), out (K, B, D) means, logvar (D,) -> ll (K, B).
    Equation: log p(x|z_k) = -1/2 sum_i [ (x_i - out_i)^2 exp(-logvar_i) + logvar_i + log(2 pi) ].
    """
    return k.gaussian_ll_fwd(x, out, logvar), GaussianCache(x, out, logvar)


def gaussian_loglik_backward(dll, cache: GaussianCache, *, k: Kernels):
    """Gradients with respect to the means and the log-variance vector.

    Shapes: dll (K, B) -> dout (K, B, D), dlogvar (D,).
    Equation: dout = dll * (x - out) exp(-logvar);
              dlogvar_i = sum_{k,b} dll_kb * ((x_bi - out_kbi)^2 exp(-logvar_i) - 1) / 2.
    Derivation: docs/derivations.md, "Gaussian likelihood".
    """
    return k.gaussian_ll_bwd(dll, cache.x, cache.out, cache.logvar)


def gaussian_loglik_dx(dll, cache: GaussianCache, *, k: Kernels):
    """Gradient with respect to the data x, on the host. Shapes: dll (K, B) -> dx (B, D).
    Equation: dx = -sum_k dll_k * (x - out_k) exp(-logvar)  (the negative of dout, summed over k).
    Derivation: docs/derivations.md, "Input gradient"."""
    x, out, logvar = (k.to_host(a) for a in cache)
    return -(k.to_host(dll)[..., None] * (x - out)).sum(axis=0) * np.exp(-logvar)


# ------------------------------------------------------------------ log-sum-exp over samples
class LSECache(NamedTuple):
    a: np.ndarray     # (K, B)


def logsumexp_forward(a, *, k: Kernels):
    """Stable log sum_k exp(a_k) over the sample axis. Shapes: a (K, B) -> (B,).

    Equation: m = max_k a_k;  lse = m + log sum_k exp(a_k - m)  (all -inf gives -inf).
    """
    return k.logsumexp(a), LSECache(a)


def logsumexp_backward(dlse, cache: LSECache, *, k: Kernels):
    """Shapes: dlse (B,) -> da (K, B).  Equation: da_k = dlse * softmax_k(a) = dlse * w~_k,
    the normalised importance weights. Derivation: docs/derivations.md, "Log-sum-exp"."""
    return dlse[None, :] * k.softmax(cache.a)


# ================================================================== planar flows (FlowVAE's q(z|x))
# One block for the flow posterior: its forward/backward pair around the kernels, log q by the
# change of variables, and the inverse of the flow (for log q at a given z).
class PlanarFlowCache(NamedTuple):
    zin: object   # (L, K, B, d) the input of every step
    t: object     # (L, K, B) tanh(a_i)
    uh: object    # (B, L, d) the reparametrised directions
    u: object     # (B, L, d)
    w: object     # (B, L, d)


def planar_flow_forward(z0, u, w, b, *, k: Kernels):
    """L amortised planar steps z_i = z_{i-1} + uh_i tanh(w_i . z_{i-1} + b_i).

    Shapes: z0 (K, B, d); u, w (B, L, d); b (B, L) -> zL (K, B, d), logdet (K, B) (summed over
    the steps), cache.
    Equation: uh = u + (softplus(w . u) - 1 - w . u) w / ||w||^2;
              logdet_i = log(t^2 + (1 - t^2) softplus(w . u)) = log|1 + (1 - t^2) w . uh|.
    Derivation: docs/derivations.md, "Planar flows".
    """
    zL, logdet, zin, t, uh = k.planar_flow_fwd(z0, u, w, b)
    return zL, logdet, PlanarFlowCache(zin, t, uh, u, w)


def planar_flow_backward(dzL, dlogdet, cache: PlanarFlowCache, *, k: Kernels):
    """Shapes: dzL (K, B, d), dlogdet (K, B) -> dz0 (K, B, d), du, dw (B, L, d), db (B, L).
    Equation: docs/derivations.md, "Planar flows", "Backward of one step" and "Backward of the
    reparametrisation"."""
    return k.planar_flow_bwd(dzL, dlogdet, *cache)


class FlowLogQCache(NamedTuple):
    q0: LogNormalCache


def flow_log_q_forward(z0, logdet, mu, logvar, *, k: Kernels):
    """log q(zL | x) by the change of variables, on the host.

    Shapes: z0 (K, B, d), logdet (K, B), mu and logvar (B, d) -> log_q (K, B), cache.
    Equation: log q(zL|x) = log N(z0; mu, exp(logvar)) - logdet.
    """
    logq0, q0 = log_normal_forward(k.to_host(z0), k.to_host(mu), k.to_host(logvar))
    return logq0 - k.to_host(logdet), FlowLogQCache(q0)


def flow_log_q_backward(dlogq, cache: FlowLogQCache):
    """Shapes: dlogq (K, B) -> dz0 (K, B, d), dlogdet (K, B), dmu, dlogvar (B, d) (partials).
    Equation: dlogdet = -dlogq; (dz0, dmu, dlogvar) of log N(z0; mu, exp(logvar))."""
    dz0, dmu, dlogvar = log_normal_backward(dlogq, cache.q0)
    return dz0, np.ascontiguousarray(-dlogq), dmu, dlogvar


def planar_inverse(zL, uh, w, b, *, max_iter=200):
    """z0 with planar_flow(z0) = zL: each step inverted by a scalar root, last step first.

    Shapes: zL (M, B, d) points; per example uh, w (B, L, d), b (B, L) -> z0 (M, B, d), in zL's
    dtype, NumPy arrays on the host.
    Equation: step i maps z to z + uh tanh(w . z + b). Given z_i, alpha = w . z_{i-1} is the
    root of f(alpha) = alpha + (w . uh) tanh(alpha + b) - w . z_i, which increases (w . uh >= -1)
    and lies in [w . z_i - |w . uh|, w . z_i + |w . uh|]; then z_{i-1} = z_i - uh tanh(alpha + b).
    Derivation: docs/derivations.md, "Planar flows", "The inverse".
    """
    z = np.array(zL, copy=True)
    for i in reversed(range(uh.shape[1])):
        wi, uhi, bi = w[:, i], uh[:, i], b[:, i]           # (B, d), (B, d), (B,)
        y = (z * wi).sum(axis=-1)                          # w . z_i, (M, B)
        c = (wi * uhi).sum(axis=-1)                        # w . uh, (B,)
        alpha = _increasing_root(y, c, bi, max_iter)
        z = z - uhi * np.tanh(alpha + bi)[..., None]
    return z


def _increasing_root(y, c, b, max_iter):
    """alpha with alpha + c tanh(alpha + b) = y (broadcast), c >= -1, by safeguarded Newton.

    Newton's step is taken where it lands strictly inside the bracket and |f| has at least
    halved since the previous iterate (the rule of Numerical Recipes' rtsafe); elsewhere the
    bracket is bisected. So the bracket halves at worst, and Newton's quadratic convergence
    takes over near the root (a plain Newton iteration can cycle on this function)."""
    lo, hi = y - np.abs(c), y + np.abs(c)
    alpha = np.clip(y - c * np.tanh(y + b), lo, hi)
    f_prev = np.full(alpha.shape, np.inf, alpha.dtype)
    tiny = np.finfo(y.dtype).eps
    for _ in range(max_iter):
        t = np.tanh(alpha + b)
        f = alpha + c * t - y
        hi = np.where(f > 0, alpha, hi)
        lo = np.where(f < 0, alpha, lo)
        slope = 1.0 + c * (1.0 - t * t)                    # >= 0; 0 only at the bound
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = alpha - f / slope
        use = (newton > lo) & (newton < hi) & (np.abs(f) <= 0.5 * np.abs(f_prev))
        new = np.where(f == 0, alpha, np.where(use, newton, 0.5 * (lo + hi)))
        done = np.abs(new - alpha) <= 4 * tiny * (1.0 + np.abs(alpha))
        alpha, f_prev = new, f
        if np.all(done):
            break
    return alpha


def flow_log_density(z, mu, logvar, u, w, b, *, k: Kernels, max_rows=2 ** 16):
    """log q(z_m | x_n) of a planar-flow posterior for every pair of a point and an example.

    Shapes: z (M, d); per example mu, logvar (N, d), u, w (N, L, d), b (N, L) -> (M, N), host.
    Equation: z0 = planar_inverse(z); log q(z|x) = log N(z0; mu, exp(logvar)) - logdet(z0), the
    log-det from running the flow forward from z0 (the one definition of it, in the kernel).
    """
    mu, logvar, u, w, b = (k.to_host(a) for a in (mu, logvar, u, w, b))
    M, d = z.shape
    N = mu.shape[0]
    uh = k.to_host(k.planar_flow_fwd(np.zeros((1, N, d), z.dtype), u, w, b)[4])
    out = np.empty((M, N), z.dtype)
    step = max(1, max_rows // max(1, N * max(1, u.shape[1])))
    for s in range(0, M, step):
        m = min(step, M - s)
        z0 = planar_inverse(np.ascontiguousarray(np.broadcast_to(z[s:s + m, None, :], (m, N, d))),
                            uh, w, b)
        zL, logdet, _ = planar_flow_forward(z0, u, w, b, k=k)
        out[s:s + m] = flow_log_q_forward(z0, logdet, mu, logvar, k=k)[0]
    return out
