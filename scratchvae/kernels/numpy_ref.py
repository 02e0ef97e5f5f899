"""Reference kernels in plain NumPy: written for reading, and the truth the tests compare against.

Signatures and shapes are the table in ``scratchvae/kernels/__init__.py``. Every function that
returns arrays takes ``ws=None`` (a ``scratchvae.kernels.workspace.Workspace``) for the signature the
backends share, and ignores it: the reference allocates fresh arrays, because it is written to be
read (the numba and cuda kernels take their outputs and temporaries from ``ws``). Every function
keeps the dtype of its array arguments (Python float scalars do not promote under NumPy 2's rules;
integer masks are cast with ``astype(h.dtype)`` so float32 stays float32).
"""
import functools
import math

import numpy as np

from ._activation_codes import ELU, ELU_ALPHA, IDENTITY, LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, SOFTPLUS, TANH

LOG_2PI = float(np.log(2.0 * np.pi))


# ---------------------------------------------------------------- matrix products (BLAS)
def matmul(a, b, *, ws=None):
    """a @ b: (M, N) x (N, P) -> (M, P)."""
    return a @ b


def matmul_at(a, b, *, ws=None):
    """a.T @ b: (N, M) x (N, P) -> (M, P); used for dW = a.T @ dy."""
    return a.T @ b


def matmul_bt(a, b, *, ws=None):
    """a @ b.T: (M, P) x (N, P) -> (M, N); used for da = dy @ W.T."""
    return a @ b.T


# ---------------------------------------------------------------- activations
def sigmoid(h):
    """sigma(h) = 1 / (1 + exp(-h)), as 0.5*tanh(h/2) + 0.5, which never overflows."""
    return 0.5 * np.tanh(0.5 * h) + 0.5


def softplus(h):
    """softplus(h) = log(1 + exp(h)) = max(h, 0) + log1p(exp(-|h|)), never overflows."""
    return np.logaddexp(0.0, h).astype(h.dtype, copy=False)


def act_fwd(h, act):
    """y = f(h) for the activation with integer code ``act``."""
    if act == RELU:
        return np.maximum(h, 0.0)
    if act == LEAKY_RELU:
        return np.where(h > 0, h, LEAKY_SLOPE * h)
    if act == TANH:
        return np.tanh(h)
    if act == SIGMOID:
        return sigmoid(h)
    if act == SOFTPLUS:
        return softplus(h)
    if act == ELU:
        # expm1 of min(h, 0): no overflow warning for large positive h in the unused branch
        return np.where(h > 0, h, ELU_ALPHA * np.expm1(np.minimum(h, 0.0)))
    if act == IDENTITY:
        return h.copy()
    raise AssertionError(f"unknown activation code {act}")  # unreachable: callers validate


def act_grad(h, y, act):
    """f'(h), using the forward output y where that is cheaper (tanh, sigmoid, elu)."""
    one = np.ones((), h.dtype)
    if act == RELU:
        return (h > 0).astype(h.dtype)  # f'(0) taken as 0
    if act == LEAKY_RELU:
        return np.where(h > 0, one, h.dtype.type(LEAKY_SLOPE))
    if act == TANH:
        return 1.0 - y * y  # tanh' = 1 - tanh^2
    if act == SIGMOID:
        return y * (1.0 - y)  # sigma' = sigma (1 - sigma)
    if act == SOFTPLUS:
        return sigmoid(h)  # softplus' = sigma
    if act == ELU:
        return np.where(h > 0, one, y + ELU_ALPHA)  # for h <= 0: alpha*exp(h) = y + alpha
    if act == IDENTITY:
        return np.ones_like(h)
    raise AssertionError(f"unknown activation code {act}")


def bias_act_fwd(z, b, act, *, ws=None):
    """h = z + b; y = f(h). Returns (h, y), both (N, F); h is kept for the backward."""
    h = z + b
    return h, act_fwd(h, act)


def bias_act_bwd(dy, h, y, act, *, ws=None):
    """dh = dy * f'(h) (N, F); db = sum_n dh (F,)."""
    dh = dy * act_grad(h, y, act)
    return dh, dh.sum(axis=0)


# ---------------------------------------------------------------- reparameterization and KL
def reparam_fwd(mu, logvar, eps, *, ws=None):
    """std = exp(logvar / 2); z_k = mu + std * eps_k. Returns (z (K, B, d), std (B, d))."""
    std = np.exp(0.5 * logvar)
    return mu + std * eps, std


def reparam_bwd(dz, eps, std, *, ws=None):
    """dmu = sum_k dz_k;  dlogvar = sum_k dz_k * eps_k * std / 2  (dz/dlogvar = eps*std/2)."""
    return dz.sum(axis=0), 0.5 * std * (dz * eps).sum(axis=0)


def kl_fwd(mu, logvar, *, ws=None):
    """KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar), (B,)."""
    return 0.5 * (mu * mu + np.expm1(logvar) - logvar).sum(axis=1)


def kl_bwd(dkl, mu, logvar, *, ws=None):
    """dmu = dkl * mu;  dlogvar = dkl * (exp(logvar) - 1) / 2."""
    dkl = dkl[:, None]
    return dkl * mu, dkl * 0.5 * np.expm1(logvar)


# ---------------------------------------------------------------- likelihoods
def bernoulli_ll_fwd(x, out, *, ws=None):
    """log p(x|z_k) = sum_i x_i out_i - softplus(out_i), logits out (K, B, D) -> (K, B).

    Also returns e = exp(-|out|) (K, B, D), the exponential that softplus and the backward's
    sigmoid share: (ll, e)."""
    e = np.exp(-np.abs(out))
    return (x * out - softplus(out)).sum(axis=-1), e


def bernoulli_ll_bwd(dll, x, out, e, *, ws=None):
    """dout = dll * (x - sigmoid(out))  (d softplus / d out = sigmoid(out)), with sigmoid(out)
    from the forward's e = exp(-|out|): ``sigmoid_from_exp``."""
    return dll[..., None] * (x - sigmoid_from_exp(out, e))


def sigmoid_from_exp(t, e):
    """sigma(t) = 1 / (1 + e) for t >= 0 and e / (1 + e) for t < 0, given e = exp(-|t|): the same
    number as 1 / (1 + exp(-t)), computed from an exponential that never overflows."""
    return np.where(t >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def gaussian_ll_fwd(x, out, logvar, *, ws=None):
    """log p(x|z_k) = -1/2 sum_i [(x_i - out_i)^2 exp(-logvar_i) + logvar_i + log(2 pi)]."""
    r = x - out
    return -0.5 * (r * r * np.exp(-logvar) + logvar + LOG_2PI).sum(axis=-1)


def gaussian_ll_bwd(dll, x, out, logvar, *, ws=None):
    """dout = dll * (x - out) exp(-logvar);
    dlogvar_i = sum_{k,b} dll * ((x - out)^2 exp(-logvar_i) - 1) / 2."""
    r = x - out
    prec = np.exp(-logvar)
    dll = dll[..., None]
    dout = dll * r * prec
    dlogvar = (0.5 * dll * (r * r * prec - 1.0)).sum(axis=(0, 1))
    return dout, dlogvar


# ---------------------------------------------------------------- log-sum-exp over samples
def _shifted_exp(a):
    """(exp(a - m), m) with m = max_k a_k per column; m is replaced by 0 where it is not finite,
    so an all -inf column gives zeros rather than nan (-inf - -inf)."""
    m = a.max(axis=0)
    m_safe = np.where(np.isfinite(m), m, 0.0).astype(a.dtype)
    return np.exp(a - m_safe), m_safe


def logsumexp(a, *, ws=None):
    """log sum_k exp(a_k) over axis 0, (K, B) -> (B,), shifted by the max; all -inf gives -inf."""
    e, m = _shifted_exp(a)
    with np.errstate(divide="ignore"):   # log(0) = -inf is the right answer for an all -inf column
        return m + np.log(e.sum(axis=0))


def softmax(a, *, ws=None):
    """w_k = exp(a_k - m) / sum_k exp(a_k - m) over axis 0, (K, B) -> (K, B); the gradient of
    logsumexp. Normalising the shifted exponentials (rather than exp(a - logsumexp(a))) keeps the
    weights accurate in float32 when |a| is large (the rounding of logsumexp would scale them)."""
    e, _ = _shifted_exp(a)
    with np.errstate(invalid="ignore"):  # an all -inf column has no gradient: NaN, caught by fit
        return e / e.sum(axis=0)


# ---------------------------------------------------------------- glue: sums, checks, copies
def add(a, b, *, ws=None):
    """a + b, two arrays of one shape (gradients of a value read by two operations add up)."""
    return a + b


def all_finite(a):
    """True when no entry of ``a`` is NaN or inf (fit and the optimizers check gradients)."""
    return bool(np.isfinite(a).all())


def to_device(a):
    """The array as this backend computes on it: for NumPy, ``a`` itself (no copy)."""
    return a


def to_host(a):
    """The array as a NumPy array on the host: for NumPy, ``a`` itself (no copy)."""
    return a


def copyto(dst, src):
    """dst[...] = src (same shape and dtype), e.g. saving and restoring parameters."""
    np.copyto(dst, src)


# ---------------------------------------------------------------- optimizer updates (in place)
def flush_subnormal(a):
    """a = 0 wherever 0 < |a| < the dtype's smallest normal number, in place.

    A decaying optimizer state (m and v of Adam for a weight whose gradient has become exactly
    zero, say a pixel that is 0 in every image) sinks below the smallest normal float after
    some hundreds of steps. Arithmetic on such subnormal numbers is an order of magnitude slower
    on common x86 CPUs (benchmarks/results.md), and a state that small moves no parameter: it
    is set to 0 instead. NaN compares false and is kept."""
    a[np.abs(a) < np.finfo(a.dtype).tiny] = 0.0


def sgd_step(p, g, velocity, lr, momentum):
    """velocity = momentum * velocity + g (subnormal entries flushed to 0);  p -= lr * velocity
    (momentum 0: p -= lr * g)."""
    velocity *= momentum
    velocity += g
    flush_subnormal(velocity)
    p -= lr * velocity


def adam_step(p, g, m, v, lr, beta1, beta2, eps, t):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2 (subnormal entries of both flushed to 0);
    p -= lr * mhat / (sqrt(vhat) + eps), mhat = m / (1 - b1^t), vhat = v / (1 - b2^t),
    t = 1, 2, ... the step count.

    The update is computed as (lr / c1) * m / (sqrt(v) * (1 / sqrt(c2)) + eps), c1 = 1 - b1^t,
    c2 = 1 - b2^t: equal in exact arithmetic (sqrt(v / c2) = sqrt(v) / sqrt(c2)), with one
    division and one square root per entry instead of three divisions, the scalars in float64
    first."""
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * g * g
    flush_subnormal(m)
    flush_subnormal(v)
    step, inv_sqrt_c2 = adam_scalars(lr, beta1, beta2, t)
    p -= step * m / (np.sqrt(v) * inv_sqrt_c2 + eps)


def adam_scalars(lr, beta1, beta2, t):
    """(lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)) in Python float64: Adam's bias corrections
    folded into two scalars, which every backend casts to the array dtype."""
    return lr / (1.0 - beta1**t), 1.0 / math.sqrt(1.0 - beta2**t)


# The scalar arguments of the compiled update kernels (numba_cpu, cuda), in the array dtype as
# NumPy casts Python floats here; cached, since one step updates every key with the same ones.
@functools.lru_cache(maxsize=16)
def adam_kernel_scalars(dtype, lr, beta1, beta2, eps, t):
    """(lr/c1, beta1, 1-beta1, beta2, 1-beta2, 1/sqrt(c2), eps, tiny) in ``dtype``."""
    f = dtype.type
    step, inv_sqrt_c2 = adam_scalars(lr, beta1, beta2, t)
    return (f(step), f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2), f(inv_sqrt_c2), f(eps),
            f(np.finfo(dtype).tiny))


@functools.lru_cache(maxsize=16)
def sgd_kernel_scalars(dtype, lr, momentum):
    """(lr, momentum, tiny) in ``dtype``."""
    f = dtype.type
    return f(lr), f(momentum), f(np.finfo(dtype).tiny)


def adagrad_step(p, g, s, lr, eps):
    """s += g^2;  p -= lr * g / (sqrt(s) + eps)."""
    s += g * g
    p -= lr * g / (np.sqrt(s) + eps)


# ================================================================ vector quantisation (VQ-VAE)
# Symbols: N rows (N = B * m slots of e numbers each), e the code size, C the codebook size.
# ``idx`` arrays are int64 code numbers in [0, C).
def vq_assign(z, codebook, *, ws=None):
    """idx_n = argmin_c ||z_n - codebook_c||^2, ties to the smallest c: (N, e), (C, e) -> (N,) int64.

    The squared distances are summed over the e coordinates in order (0, 1, ..., e-1), the order
    the compiled kernels use, so every backend sees the same distances and picks the same code;
    ``np.argmin`` returns the first minimum, which is the smallest index."""
    d2 = np.zeros((z.shape[0], codebook.shape[0]), z.dtype)
    for j in range(z.shape[1]):
        diff = z[:, None, j] - codebook[None, :, j]     # (N, C)
        d2 += diff * diff
    return np.argmin(d2, axis=1).astype(np.int64)


def gather_fwd(table, idx, *, ws=None):
    """rows_n = table[idx_n]: (C, e), (N,) -> (N, e) (z_q = codebook[k])."""
    return table[idx]


def gather_bwd(drows, idx, n_rows, *, ws=None):
    """The gather's backward, a scatter-add, and the row counts:
    dtable_c = sum_{n: idx_n = c} drows_n (n_rows, e);  counts_c = #{n: idx_n = c} (n_rows,).

    Rows are added in order of n. With drows = z_e the two outputs are the EMA statistics
    (sum and number of the encoder outputs assigned to each code)."""
    dtable = np.zeros((n_rows, drows.shape[1]), drows.dtype)
    np.add.at(dtable, idx, drows)
    return dtable, np.bincount(idx, minlength=n_rows).astype(drows.dtype)


def sqdist_fwd(a, b, *, ws=None):
    """d_n = ||a_n - b_n||^2 = sum_j (a_nj - b_nj)^2, (N, e) x (N, e) -> (N,)."""
    r = a - b
    return (r * r).sum(axis=1)


def sqdist_bwd(dd, a, b, *, ws=None):
    """da = 2 dd (a - b), (N, e): the gradient with respect to ``a`` alone; ``b`` is held
    fixed (the stop-gradient side of a VQ-VAE term: swap the arguments for the other side)."""
    return 2.0 * dd[:, None] * (a - b)


def vq_ema(ema_count, ema_sum, counts, sums, decay, eps, *, ws=None):
    """One EMA step of the codebook with Laplace-smoothed counts (van den Oord et al. 2017,
    appendix A.1), for C codes of size e:

        count_c    = decay * ema_count_c + (1 - decay) * counts_c              (C,)
        sum_c      = decay * ema_sum_c   + (1 - decay) * sums_c                (C, e)
        n          = sum_c count_c
        smoothed_c = (count_c + eps) / (n + C * eps) * n                       (C,)
        codebook_c = sum_c / smoothed_c                                        (C, e)

    Returns (count, sum, codebook); the smoothing keeps a code that has not been used for a
    long time (count_c -> 0) from dividing by zero."""
    count = decay * ema_count + (1.0 - decay) * counts
    total = count.sum()
    ema = decay * ema_sum + (1.0 - decay) * sums
    smoothed = (count + eps) / (total + count.shape[0] * eps) * total
    return count, ema, ema / smoothed[:, None]


# ================================================================ planar flows (FlowVAE)
# One block for the FlowVAE's two kernels; the equations and their derivation are
# docs/derivations.md, "Planar flows". Shapes: z0 (K, B, d); u, w (B, L, d); b (B, L).
def planar_flow_fwd(z0, u, w, b, *, ws=None):
    """L planar steps z_i = z_{i-1} + uh_i tanh(w_i . z_{i-1} + b_i), amortised (per example).

    Returns (zL (K, B, d), logdet (K, B) summed over the steps, zin (L, K, B, d) the input of
    each step, t (L, K, B) = tanh(a_i), uh (B, L, d)); zin, t, uh are what the backward needs.

    uh = u + (softplus(m) - 1 - m) w / ||w||^2 with m = w . u, so w . uh = softplus(m) - 1 > -1.
    logdet_i = log(t^2 + (1 - t^2) softplus(m)): the same number as
    log(1 + (1 - t^2) w . uh), written as a sum of two non-negative terms so that nothing
    cancels where it approaches 0.
    """
    K, B, d = z0.shape
    L = u.shape[1]
    m = (w * u).sum(axis=-1)                              # (B, L)
    n = (w * w).sum(axis=-1)                              # (B, L)
    sp = softplus(m)
    uh = u + ((sp - 1.0 - m) / n)[..., None] * w          # (B, L, d)
    zin = np.empty((L, K, B, d), z0.dtype)
    t = np.empty((L, K, B), z0.dtype)
    logdet = np.zeros((K, B), z0.dtype)
    z = z0
    for i in range(L):
        zin[i] = z
        t[i] = np.tanh((z * w[:, i]).sum(axis=-1) + b[:, i])          # (K, B)
        z = z + uh[:, i] * t[i][..., None]
        logdet = logdet + np.log(t[i] * t[i] + (1.0 - t[i] * t[i]) * sp[:, i])
    return z.copy(), logdet, zin, t, uh


def planar_flow_bwd(dzL, dlogdet, zin, t, uh, u, w, *, ws=None):
    """Backward of ``planar_flow_fwd``: (dz0 (K, B, d), du (B, L, d), dw (B, L, d), db (B, L)).

    ``dlogdet`` (K, B) is the gradient of the summed log-det (every step receives it). Per step,
    from the last to the first, with g = dL/dz_i, s = 1 - t^2, det = t^2 + s softplus(m):
    dt = g . uh + dlogdet 2 t (1 - softplus(m)) / det;  da = dt s;  dz_{i-1} = g + da w;
    duh = sum_k g t;  db = sum_k da;  dm = sum_k dlogdet s sigmoid(m) / det + (duh . w) dc/dm;
    du = duh + dm w;  dw = c duh + dm u + 2 (duh . w)(-c / n) w + sum_k da z_{i-1},
    where m = w . u, n = w . w, c = (softplus(m) - 1 - m) / n (so uh = u + c w),
    dc/dm = (sigmoid(m) - 1) / n and dc/dn = -c / n (docs/derivations.md, "Planar flows").
    """
    L = u.shape[1]
    m = (w * u).sum(axis=-1)
    n = (w * w).sum(axis=-1)
    sp = softplus(m)
    c = (sp - 1.0 - m) / n
    # sigmoid(m) = exp(-softplus(-m)) and sigmoid(m) - 1 = -exp(-softplus(m)): accurate to
    # relative rounding (the tanh form is only absolutely accurate), which sigmoid(m) / det
    # needs, since det can be as small as softplus(m) ~ sigmoid(m)
    sig, sig_m1 = np.exp(-softplus(-m)), -np.exp(-sp)
    du, dw = np.empty_like(u), np.empty_like(w)
    db = np.empty(u.shape[:2], u.dtype)
    g = dzL
    for i in reversed(range(L)):
        ti, zi = t[i], zin[i]                             # (K, B), (K, B, d)
        s = 1.0 - ti * ti
        det = ti * ti + s * sp[:, i]
        dt = (g * uh[:, i]).sum(axis=-1) + dlogdet * 2.0 * ti * (1.0 - sp[:, i]) / det
        da = dt * s                                       # (K, B)
        G = (g * ti[..., None]).sum(axis=0)               # duh (B, d)
        Gw = (G * w[:, i]).sum(axis=-1)                   # (B,)
        dm = (dlogdet * s * sig[:, i] / det).sum(axis=0) + Gw * sig_m1[:, i] / n[:, i]
        dn = -Gw * c[:, i] / n[:, i]
        du[:, i] = G + dm[:, None] * w[:, i]
        dw[:, i] = (c[:, i, None] * G + dm[:, None] * u[:, i] + 2.0 * dn[:, None] * w[:, i]
                    + (da[..., None] * zi).sum(axis=0))
        db[:, i] = da.sum(axis=0)
        g = g + da[..., None] * w[:, i]
    return g.copy(), du, dw, db
