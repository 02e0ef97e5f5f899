"""FlowVAE: the VAE with a planar-flow posterior (Rezende & Mohamed 2015), amortised.

Symbols: B batch, D data dimension, d latent dimension, K samples, L flow_length.

    u, w    (B, L, d)   a_L @ enc.W_flow_u + enc.b_flow_u, a_L @ enc.W_flow_w + enc.b_flow_w
    b       (B, L)      a_L @ enc.W_flow_b + enc.b_flow_b
    z0      (K, B, d)   mu + exp(logvar / 2) * eps
    zL      (K, B, d)   z_i = z_{i-1} + uh_i tanh(w_i . z_{i-1} + b_i),  i = 1..L
    logdet  (K, B)      sum_i log |1 + (1 - tanh^2) w_i . uh_i|
    log q(zL | x) = log N(z0; mu, exp(logvar)) - logdet

Derivation: docs/derivations.md, "Planar flows".
"""
from __future__ import annotations

import numpy as np


# ====================================================================== the inverse of the flow
def planar_inverse(zL, uh, w, b, *, max_iter=200):
    """z0 with planar_flow(z0) = zL: each step inverted by a scalar root, last step first.

    Shapes: zL (M, B, d) points, per example uh, w (B, L, d) and b (B, L) (the uh that
    planar_flow_fwd returns) -> z0 (M, B, d), in zL's dtype (NumPy arrays on the host).
    Equation: step i maps z to z + uh tanh(w . z + b). Given z_i, alpha = w . z_{i-1} is the
    root of f(alpha) = alpha + (w . uh) tanh(alpha + b) - w . z_i, increasing since
    w . uh >= -1, and inside [w . z_i - |w . uh|, w . z_i + |w . uh|]; then
    z_{i-1} = z_i - uh tanh(alpha + b).
    Solver: Newton's step where it stays inside the bracket, bisection otherwise; the bracket
    shrinks every iteration, so it converges for every input (to a few ulps of alpha).
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
    """alpha with alpha + c tanh(alpha + b) = y, by safeguarded Newton; c >= -1 (broadcast).

    Newton's step is taken where it lands strictly inside the bracket and |f| at least halved
    since the previous iterate (as in Numerical Recipes' rtsafe); elsewhere the bracket is
    bisected. So the bracket halves at worst, and Newton's quadratic convergence takes over
    near the root."""
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
