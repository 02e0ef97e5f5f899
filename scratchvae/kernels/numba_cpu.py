"""Numba CPU kernels: the same functions and signatures as ``numpy_ref``, faster.

Each public function is a thin Python wrapper. It makes its array arguments C-contiguous (so one
machine-code signature per dtype is compiled), calls NumPy ufuncs for transcendentals (``exp``,
``expm1``, ``log1p``, ``tanh``: NumPy's SIMD loops are ~5x faster than a scalar njit loop on
a machine without SVML) and fuses the arithmetic around them in ``@njit`` kernels (one pass over
memory instead of one temporary per NumPy operator). Matrix products go to NumPy/BLAS, except
tiny ones, where plain njit loops were measured faster (benchmarks/bench_kernels.py, the GEMM
crossover; see ``SMALL_GEMM_MACS``).

Numerics follow ``numpy_ref`` operation by operation (same association, constants cast to the
array dtype as NumPy does with Python scalars), so elementwise results agree to the last bit or
ulp; row reductions over a feature axis may sum in a different (fixed) order. Every kernel keeps
the dtype: float32 in, float32 out, float32 accumulators. Returned arrays are always new; the
optimizer updates write into the caller's arrays in place.

Shapes and equations: the table in ``scratchvae/kernels/__init__.py``.
"""
from __future__ import annotations

import numpy as np

from ._activation_codes import ELU, ELU_ALPHA, IDENTITY, LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, SOFTPLUS, TANH
from ._jit import REDUCE, STRICT, cached_njit

LOG_2PI = float(np.log(2.0 * np.pi))
_c = np.ascontiguousarray


# ---------------------------------------------------------------- matrix products
# NumPy's matmul calls OpenBLAS, which beat these plain njit loops at every product measured
# except tiny ones, where BLAS's fixed call cost dominates (benchmarks/bench_kernels.py, "GEMM
# crossover", 2 cores): the njit loops won by 10-30% (about 0.2 us) up to ~1000 multiply-adds,
# and a.T @ b with a single row (the weight gradient at batch size 1, an outer product) was
# 3-14x faster in njit at every layer size. So the wrappers use them only there.
SMALL_GEMM_MACS = 1024  # njit GEMM for M * N * P <= this many multiply-adds
#
# The loops run the innermost index over contiguous memory: an axpy for a @ b and a.T @ b
# (vectorises as it is), a dot product for a @ b.T (needs ``reassoc``).
@cached_njit(**REDUCE)
def _gemm_nn(a, b):
    """c = a @ b: (M, N) x (N, P) -> (M, P); c[i, :] += a[i, k] * b[k, :]."""
    m_, n_ = a.shape
    c = np.zeros((m_, b.shape[1]), dtype=a.dtype)
    for i in range(m_):
        for k in range(n_):
            aik = a[i, k]
            for j in range(b.shape[1]):
                c[i, j] += aik * b[k, j]
    return c


@cached_njit(**REDUCE)
def _gemm_tn(a, b):
    """c = a.T @ b: (N, M) x (N, P) -> (M, P); c[i, :] += a[k, i] * b[k, :]."""
    n_, m_ = a.shape
    c = np.zeros((m_, b.shape[1]), dtype=a.dtype)
    for k in range(n_):
        for i in range(m_):
            aki = a[k, i]
            for j in range(b.shape[1]):
                c[i, j] += aki * b[k, j]
    return c


@cached_njit(**REDUCE)
def _gemm_nt(a, b):
    """c = a @ b.T: (M, P) x (N, P) -> (M, N); c[i, j] = dot(a[i, :], b[j, :])."""
    m_, p_ = a.shape
    n_ = b.shape[0]
    c = np.zeros((m_, n_), dtype=a.dtype)
    for i in range(m_):
        for j in range(n_):
            acc = c[i, j]  # a zero of the array dtype
            for k in range(p_):
                acc += a[i, k] * b[j, k]
            c[i, j] = acc
    return c


def matmul(a, b):
    """a @ b: (M, N) x (N, P) -> (M, P)."""
    if a.shape[0] * a.shape[1] * b.shape[1] <= SMALL_GEMM_MACS:
        return _gemm_nn(_c(a), _c(b))
    return np.matmul(a, b)


def matmul_at(a, b):
    """a.T @ b: (N, M) x (N, P) -> (M, P); BLAS reads the transpose without copying."""
    if a.shape[0] == 1 or a.shape[0] * a.shape[1] * b.shape[1] <= SMALL_GEMM_MACS:
        return _gemm_tn(_c(a), _c(b))
    return np.matmul(a.T, b)


def matmul_bt(a, b):
    """a @ b.T: (M, P) x (N, P) -> (M, N); BLAS reads the transpose without copying."""
    if a.shape[0] * a.shape[1] * b.shape[0] <= SMALL_GEMM_MACS:
        return _gemm_nt(_c(a), _c(b))
    return np.matmul(a, b.T)


# ---------------------------------------------------------------- bias + activation
@cached_njit(**STRICT)
def _bias_piecewise_fwd(z, b, act):
    """h = z + b; y = relu / leaky_relu / identity of h, in one pass. (N, F), (F,) -> 2x (N, F).

    The activation branch sits outside the loops (one loop per activation), so each inner
    loop is branch-free and vectorises (3-6x faster than a branch per element, measured)."""
    t = z.dtype.type
    slope = t(LEAKY_SLOPE)
    zero = t(0)
    n, f = z.shape
    h = np.empty_like(z)
    y = np.empty_like(z)
    if act == RELU:
        for i in range(n):
            for j in range(f):
                hij = z[i, j] + b[j]
                h[i, j] = hij
                y[i, j] = hij if hij > zero else zero
    elif act == LEAKY_RELU:
        for i in range(n):
            for j in range(f):
                hij = z[i, j] + b[j]
                h[i, j] = hij
                y[i, j] = hij if hij > zero else slope * hij
    else:  # IDENTITY
        for i in range(n):
            for j in range(f):
                hij = z[i, j] + b[j]
                h[i, j] = hij
                y[i, j] = hij
    return h, y


@cached_njit(**STRICT)
def _bias_add(z, b):
    """h = z + b, (N, F) + (F,) -> (N, F)."""
    n, f = z.shape
    h = np.empty_like(z)
    for i in range(n):
        for j in range(f):
            h[i, j] = z[i, j] + b[j]
    return h


@cached_njit(**STRICT)
def _sigmoid_affine_inplace(y):
    """y = 0.5 * y + 0.5 in place (the affine step of sigmoid = 0.5 tanh(h/2) + 0.5); flat."""
    half = y.dtype.type(0.5)
    for i in range(y.size):
        y[i] = half * y[i] + half


@cached_njit(**STRICT)
def _elu_select_inplace(y, h):
    """y = h if h > 0 else alpha * y, in place, where y holds expm1(min(h, 0)); flat."""
    zero = h.dtype.type(0)
    alpha = h.dtype.type(ELU_ALPHA)
    for i in range(h.size):
        y[i] = h[i] if h[i] > zero else alpha * y[i]


@cached_njit(**STRICT)
def _softplus_finish_inplace(y, h):
    """y = max(h, 0) + y in place, where y holds log1p(exp(-|h|)); flat."""
    zero = h.dtype.type(0)
    for i in range(h.size):
        y[i] = (h[i] if h[i] > zero else zero) + y[i]


def _log1p_exp_neg_abs(x):
    """log1p(exp(-|x|)) as a new array: the transcendental half of the stable softplus
    max(x, 0) + log1p(exp(-|x|)), which never overflows (exp of a non-positive number).
    NumPy's SIMD exp/log1p pipeline is ~10x faster than np.logaddexp(0, x) (measured)."""
    t = np.abs(x)
    np.negative(t, out=t)
    np.exp(t, out=t)
    np.log1p(t, out=t)
    return t


def _sigmoid(h):
    """sigma(h) = 0.5 tanh(h/2) + 0.5 as a new array: NumPy tanh, then one fused njit pass."""
    s = np.multiply(h, 0.5)
    np.tanh(s, out=s)
    _sigmoid_affine_inplace(s.reshape(-1))
    return s


def bias_act_fwd(z, b, act):
    """h = z + b; y = f(h). Returns (h, y), both (N, F). Equations: numpy_ref.act_fwd."""
    z, b = _c(z), _c(b)
    if act in (RELU, LEAKY_RELU, IDENTITY):
        return _bias_piecewise_fwd(z, b, act)
    h = _bias_add(z, b)
    if act == TANH:
        y = np.tanh(h)
    elif act == SIGMOID:
        y = _sigmoid(h)
    elif act == SOFTPLUS:  # max(h, 0) + log1p(exp(-|h|)): never overflows
        y = _log1p_exp_neg_abs(h)
        _softplus_finish_inplace(y.reshape(-1), h.reshape(-1))
    elif act == ELU:
        y = np.minimum(h, 0.0)  # expm1 of min(h, 0): no overflow in the unused branch
        np.expm1(y, out=y)
        _elu_select_inplace(y.reshape(-1), h.reshape(-1))
    else:
        raise AssertionError(f"unknown activation code {act}")  # unreachable: callers validate
    return h, y


@cached_njit(**STRICT)
def _bias_act_bwd(dy, h, y, act):
    """dh = dy * f'(h) and db = sum_n dh, one row-major pass with a local column accumulator.

    f' from h or y: relu 1[h>0]; leaky 1 or slope; tanh 1 - y^2; sigmoid y (1 - y);
    elu 1 or y + alpha; identity 1. (softplus' = sigmoid(h) is a transcendental: the wrapper
    computes it with NumPy and calls ``_mul_colsum`` instead.) One loop per activation, so
    each inner loop is branch-free and vectorises (3-6x faster than a branch per element).
    """
    t = dy.dtype.type
    zero, one = t(0), t(1)
    slope, alpha = t(LEAKY_SLOPE), t(ELU_ALPHA)
    n, f = dy.shape
    dh = np.empty_like(dy)
    db = np.zeros(f, dtype=dy.dtype)  # local accumulator: rows added in order, as NumPy's sum
    if act == RELU:
        for i in range(n):
            for j in range(f):
                d = dy[i, j] * (one if h[i, j] > zero else zero)
                dh[i, j] = d
                db[j] += d
    elif act == LEAKY_RELU:
        for i in range(n):
            for j in range(f):
                d = dy[i, j] * (one if h[i, j] > zero else slope)
                dh[i, j] = d
                db[j] += d
    elif act == TANH:
        for i in range(n):
            for j in range(f):
                d = dy[i, j] * (one - y[i, j] * y[i, j])
                dh[i, j] = d
                db[j] += d
    elif act == SIGMOID:
        for i in range(n):
            for j in range(f):
                d = dy[i, j] * (y[i, j] * (one - y[i, j]))
                dh[i, j] = d
                db[j] += d
    elif act == ELU:
        for i in range(n):
            for j in range(f):
                d = dy[i, j] * (one if h[i, j] > zero else y[i, j] + alpha)
                dh[i, j] = d
                db[j] += d
    else:  # IDENTITY
        for i in range(n):
            for j in range(f):
                d = dy[i, j]
                dh[i, j] = d
                db[j] += d
    return dh, db


@cached_njit(**STRICT)
def _mul_colsum(dy, g):
    """dh = dy * g and db = sum_n dh (column sum, rows in order). (N, F) -> (N, F), (F,)."""
    n, f = dy.shape
    dh = np.empty_like(dy)
    db = np.zeros(f, dtype=dy.dtype)
    for i in range(n):
        for j in range(f):
            d = dy[i, j] * g[i, j]
            dh[i, j] = d
            db[j] += d
    return dh, db


def bias_act_bwd(dy, h, y, act):
    """dh = dy * f'(h) (N, F); db = sum_n dh (F,)."""
    dy, h, y = _c(dy), _c(h), _c(y)
    if act == SOFTPLUS:  # softplus' = sigmoid: a transcendental, so NumPy computes it
        return _mul_colsum(dy, _sigmoid(h))
    return _bias_act_bwd(dy, h, y, act)


# ---------------------------------------------------------------- reparameterization and KL
@cached_njit(**STRICT)
def _reparam_fwd(mu, std, eps):
    """z_k = mu + std * eps_k for every sample k. (B, d), (B, d), (K, B, d) -> (K, B, d)."""
    k_, b_, d_ = eps.shape
    z = np.empty_like(eps)
    for k in range(k_):
        for i in range(b_):
            for j in range(d_):
                z[k, i, j] = mu[i, j] + std[i, j] * eps[k, i, j]
    return z


def reparam_fwd(mu, logvar, eps):
    """std = exp(logvar / 2); z_k = mu + std * eps_k. Returns (z (K, B, d), std (B, d))."""
    mu, logvar, eps = _c(mu), _c(logvar), _c(eps)
    std = np.multiply(logvar, 0.5)
    np.exp(std, out=std)
    return _reparam_fwd(mu, std, eps), std


@cached_njit(**STRICT)
def _reparam_bwd(dz, eps, std):
    """dmu = sum_k dz_k; dlogvar = 0.5 * std * sum_k dz_k * eps_k; k summed in order."""
    k_, b_, d_ = dz.shape
    half = dz.dtype.type(0.5)
    dmu = np.zeros((b_, d_), dtype=dz.dtype)
    acc = np.zeros((b_, d_), dtype=dz.dtype)
    for k in range(k_):
        for i in range(b_):
            for j in range(d_):
                dmu[i, j] += dz[k, i, j]
                acc[i, j] += dz[k, i, j] * eps[k, i, j]
    for i in range(b_):
        for j in range(d_):
            acc[i, j] = half * std[i, j] * acc[i, j]
    return dmu, acc


def reparam_bwd(dz, eps, std):
    """dmu = sum_k dz_k;  dlogvar = sum_k dz_k * eps_k * std / 2. Each (B, d)."""
    return _reparam_bwd(_c(dz), _c(eps), _c(std))


@cached_njit(**STRICT)
def _kl_rows(mu, logvar, em1):
    """kl_b = 0.5 * sum_j (mu^2 + expm1(logvar) - logvar), em1 = expm1(logvar) given. (B,)."""
    n, d = mu.shape
    half = mu.dtype.type(0.5)
    kl = np.zeros(n, dtype=mu.dtype)
    for i in range(n):
        acc = kl[i]  # a zero of the array dtype: float32 sums stay float32
        for j in range(d):
            acc += mu[i, j] * mu[i, j] + em1[i, j] - logvar[i, j]
        kl[i] = half * acc
    return kl


def kl_fwd(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar), (B,)."""
    mu, logvar = _c(mu), _c(logvar)
    return _kl_rows(mu, logvar, np.expm1(logvar))


@cached_njit(**STRICT)
def _kl_bwd_inplace(dkl, mu, em1):
    """dmu = dkl * mu (new); em1 <- dkl * 0.5 * em1 in place (it becomes dlogvar)."""
    n, d = mu.shape
    half = mu.dtype.type(0.5)
    dmu = np.empty_like(mu)
    for i in range(n):
        s = dkl[i] * half
        for j in range(d):
            dmu[i, j] = dkl[i] * mu[i, j]
            em1[i, j] = s * em1[i, j]
    return dmu


def kl_bwd(dkl, mu, logvar):
    """dmu = dkl * mu;  dlogvar = dkl * (exp(logvar) - 1) / 2. Each (B, d)."""
    dkl, mu, logvar = _c(dkl), _c(mu), _c(logvar)
    dlogvar = np.expm1(logvar)
    return _kl_bwd_inplace(dkl, mu, dlogvar), dlogvar


# ---------------------------------------------------------------- likelihoods
@cached_njit(**REDUCE)
def _bernoulli_rows(x, out, tail):
    """ll[k, b] = sum_i x_i out_i - softplus(out_i), softplus(o) = max(o, 0) + tail, where
    tail = log1p(exp(-|out|)) is given."""
    k_, b_, d_ = out.shape
    zero = out.dtype.type(0)
    ll = np.zeros((k_, b_), dtype=out.dtype)
    for k in range(k_):
        for i in range(b_):
            acc = ll[k, i]
            for j in range(d_):
                o = out[k, i, j]
                acc += x[i, j] * o - ((o if o > zero else zero) + tail[k, i, j])
            ll[k, i] = acc
    return ll


def bernoulli_ll_fwd(x, out):
    """log p(x|z_k) = sum_i x_i out_i - softplus(out_i); logits out (K, B, D) -> (K, B)."""
    x, out = _c(x), _c(out)
    return _bernoulli_rows(x, out, _log1p_exp_neg_abs(out))


@cached_njit(**STRICT)
def _bernoulli_bwd_inplace(dll, x, t):
    """t <- dll * (x - (0.5 t + 0.5)) in place, where t = tanh(out / 2) (so 0.5t+0.5 = sigma)."""
    k_, b_, d_ = t.shape
    half = t.dtype.type(0.5)
    for k in range(k_):
        for i in range(b_):
            g = dll[k, i]
            for j in range(d_):
                t[k, i, j] = g * (x[i, j] - (half * t[k, i, j] + half))


def bernoulli_ll_bwd(dll, x, out):
    """dout = dll * (x - sigmoid(out)), (K, B, D)."""
    dll, x, out = _c(dll), _c(x), _c(out)
    dout = np.multiply(out, 0.5)
    np.tanh(dout, out=dout)
    _bernoulli_bwd_inplace(dll, x, dout)
    return dout


@cached_njit(**REDUCE)
def _gaussian_rows(x, out, logvar, prec, log2pi):
    """ll[k, b] = -0.5 sum_i ((x - out)^2 prec_i + logvar_i + log 2pi), prec = exp(-logvar)."""
    k_, b_, d_ = out.shape
    mhalf = out.dtype.type(-0.5)
    ll = np.zeros((k_, b_), dtype=out.dtype)
    for k in range(k_):
        for i in range(b_):
            acc = ll[k, i]
            for j in range(d_):
                r = x[i, j] - out[k, i, j]
                acc += r * r * prec[j] + logvar[j] + log2pi
            ll[k, i] = mhalf * acc
    return ll


def gaussian_ll_fwd(x, out, logvar):
    """log p(x|z_k) = -1/2 sum_i [(x_i - out_i)^2 exp(-logvar_i) + logvar_i + log(2 pi)], (K, B)."""
    x, out, logvar = _c(x), _c(out), _c(logvar)
    prec = np.exp(-logvar)
    return _gaussian_rows(x, out, logvar, prec, out.dtype.type(LOG_2PI))


@cached_njit(**STRICT)
def _gaussian_bwd(dll, x, out, prec):
    """dout = dll (x - out) prec; dlogvar_i = sum_{k,b} 0.5 dll ((x - out)^2 prec_i - 1)."""
    k_, b_, d_ = out.shape
    t = out.dtype.type
    half, one = t(0.5), t(1)
    dout = np.empty_like(out)
    dlogvar = np.zeros(d_, dtype=out.dtype)  # column accumulator, (k, b) rows in order
    for k in range(k_):
        for i in range(b_):
            g = dll[k, i]
            hg = half * g
            for j in range(d_):
                r = x[i, j] - out[k, i, j]
                dout[k, i, j] = g * r * prec[j]
                dlogvar[j] += hg * (r * r * prec[j] - one)
    return dout, dlogvar


def gaussian_ll_bwd(dll, x, out, logvar):
    """dout = dll (x - out) exp(-logvar) (K, B, D); dlogvar_i = sum_{k,b} dll ((x-out)^2 exp(-logvar_i) - 1) / 2."""
    dll, x, out, logvar = _c(dll), _c(x), _c(out), _c(logvar)
    return _gaussian_bwd(dll, x, out, np.exp(-logvar))


# ---------------------------------------------------------------- log-sum-exp over samples
@cached_njit(**STRICT)
def _shift_by_colmax(a):
    """m_b = max_k a[k, b] (0 where that is not finite); returns (a - m, m). No fastmath: -inf guard."""
    k_, b_ = a.shape
    m = a[0].copy()
    for k in range(1, k_):
        for i in range(b_):
            v = a[k, i]
            if not np.isnan(m[i]) and (v > m[i] or np.isnan(v)):  # NaN propagates, as np.max
                m[i] = v
    zero = a.dtype.type(0)
    for i in range(b_):
        if not np.isfinite(m[i]):  # all -inf (or inf/NaN): shift by 0, avoiding -inf - -inf
            m[i] = zero
    s = np.empty_like(a)
    for k in range(k_):
        for i in range(b_):
            s[k, i] = a[k, i] - m[i]
    return s, m


def logsumexp(a):
    """log sum_k exp(a_k) over axis 0, (K, B) -> (B,); all -inf gives -inf."""
    e, m = _shift_by_colmax(_c(a))
    np.exp(e, out=e)
    s = e.sum(axis=0)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the intended all -inf result
        np.log(s, out=s)
    s += m
    return s


def softmax(a):
    """w_k = exp(a_k - m) / sum_k exp(a_k - m) over axis 0, (K, B) -> (K, B); m the column max.

    Normalising the shifted exponentials keeps float32 weights accurate for large |a|; an
    all -inf column gives NaN (0/0), as in the reference."""
    e, _ = _shift_by_colmax(_c(a))
    np.exp(e, out=e)
    with np.errstate(invalid="ignore"):
        np.divide(e, e.sum(axis=0), out=e)
    return e


# ---------------------------------------------------------------- optimizer updates (in place)
# Written over flat arrays (the wrappers pass flat views, so a 1-D bias and a 2-D weight share
# one signature). Serial on purpose: on 2 cores a prange Adam was no faster in float32 and at
# most 1.6x faster in float64 above ~300k elements when run alone on an idle machine, and
# between the BLAS calls of a training step it saved under 5% (benchmarks/bench_kernels.py,
# time_optimizer_parallel; see also _jit.py).
@cached_njit(**STRICT)
def _sgd(p, g, velocity, lr, momentum):
    for i in range(p.size):
        vi = momentum * velocity[i] + g[i]
        velocity[i] = vi
        p[i] = p[i] - lr * vi


@cached_njit(**STRICT)
def _adam(p, g, m, v, lr, beta1, one_m_beta1, beta2, one_m_beta2, c1, c2, eps):
    for i in range(p.size):
        mi = beta1 * m[i] + one_m_beta1 * g[i]
        vi = beta2 * v[i] + one_m_beta2 * g[i] * g[i]
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)  # mhat = m/c1, vhat = v/c2


@cached_njit(**STRICT)
def _adagrad(p, g, s, lr, eps):
    for i in range(p.size):
        si = s[i] + g[i] * g[i]
        s[i] = si
        p[i] = p[i] - lr * g[i] / (np.sqrt(si) + eps)


def _update_in_place(kernel, state, g, scalars):
    """Run ``kernel(p, g, *rest_of_state, *scalars)`` on flat views; ``state = (p, ...)``.

    Contiguous state arrays are updated through views; a non-contiguous one is updated on a
    contiguous copy that is then written back, so the caller's array always changes in place.
    """
    flat = [a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1) for a in state]
    kernel(flat[0], _c(g).reshape(-1), *flat[1:], *scalars)
    for a, f in zip(state, flat):
        if not a.flags.c_contiguous:
            a[...] = f.reshape(a.shape)


def sgd_step(p, g, velocity, lr, momentum):
    """velocity = momentum * velocity + g;  p -= lr * velocity  (momentum 0: p -= lr * g)."""
    t = p.dtype.type  # scalars in the array dtype, as NumPy treats Python floats
    _update_in_place(_sgd, (p, velocity), g, (t(lr), t(momentum)))


def adam_step(p, g, m, v, lr, beta1, beta2, eps, t):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * mhat / (sqrt(vhat) + eps),
    mhat = m / (1 - b1^t), vhat = v / (1 - b2^t), t = 1, 2, ... the step count."""
    f = p.dtype.type
    # (1 - b^t) etc. in Python float64, then cast: the rounding the NumPy reference does
    scalars = (f(lr), f(beta1), f(1.0 - beta1), f(beta2), f(1.0 - beta2),
               f(1.0 - beta1**t), f(1.0 - beta2**t), f(eps))
    _update_in_place(_adam, (p, m, v), g, scalars)


def adagrad_step(p, g, s, lr, eps):
    """s += g^2;  p -= lr * g / (sqrt(s) + eps)."""
    t = p.dtype.type
    _update_in_place(_adagrad, (p, s), g, (t(lr), t(eps)))
