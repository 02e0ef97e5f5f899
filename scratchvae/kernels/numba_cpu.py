"""Numba CPU kernels: the same functions and signatures as ``numpy_ref``, faster.

Each public function is a thin Python wrapper. It makes its array arguments C-contiguous (so one
machine-code signature per dtype is compiled), calls NumPy ufuncs for transcendentals (``exp``,
``expm1``, ``log1p``, ``tanh``: NumPy's SIMD loops are ~5x faster than a scalar njit loop on
a machine without SVML) and fuses the arithmetic around them in ``@njit`` kernels (one pass over
memory instead of one temporary per NumPy operator). Matrix products go to NumPy/BLAS, except
tiny ones, where plain njit loops were measured faster (benchmarks/bench_kernels.py, the GEMM
crossover; see ``SMALL_GEMM_MACS``).

Memory: every output and every temporary comes from ``empty(ws, shape, dtype)``
(``scratchvae.kernels.workspace``): a fresh array when ``ws`` is None, the workspace's reused buffer
otherwise. The ``@njit`` kernels never allocate: the wrapper hands them their output arrays (an
accumulator is zeroed inside the kernel's loop), and NumPy writes through ``out=`` (ufuncs,
``np.matmul``, ``np.sum``). So, given a workspace, a second call of the same shapes allocates
nothing, neither NumPy arrays nor numba runtime memory.

Numerics follow ``numpy_ref`` operation by operation (same association, constants cast to the
array dtype as NumPy does with Python scalars), so elementwise results agree to the last bit or
ulp; row reductions over a feature axis may sum in a different (fixed) order. Every kernel keeps
the dtype: float32 in, float32 out, float32 accumulators. Results with and without ``ws`` are
bit-identical (only the memory differs). Returned arrays are new when ``ws`` is None and the
workspace's buffers otherwise (overwritten once the workspace is rewound and the same call
made again); they never share memory with an argument. The optimizer updates write into the
caller's arrays in place.

Shapes and equations: the table in ``scratchvae/kernels/__init__.py``.
"""
from __future__ import annotations

import numpy as np

from .workspace import empty
from ._activation_codes import ELU, ELU_ALPHA, IDENTITY, LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, SOFTPLUS, TANH
from ._jit import REDUCE, STRICT, cached_njit
# to_device / to_host (the identity on the CPU) and copyto (np.copyto): the reference's own
from .numpy_ref import copyto, to_device, to_host  # noqa: F401

from .numpy_ref import LOG_2PI  # noqa: E402  (one definition of the constant)
from .numpy_ref import adam_kernel_scalars, sgd_kernel_scalars  # noqa: E402  (one definition each)
_c = np.ascontiguousarray  # returns its argument itself (no copy) when that is C-contiguous


# ---------------------------------------------------------------- matrix products
# NumPy's matmul calls OpenBLAS, which beat these plain njit loops at every product measured
# except tiny ones, where BLAS's fixed call cost dominates (benchmarks/bench_kernels.py, "GEMM
# crossover", 2 cores): the njit loops won by 10-30% (about 0.2 us) up to ~1000 multiply-adds,
# and a.T @ b with a single row (the weight gradient at batch size 1, an outer product) was
# 3-14x faster in njit at every layer size. So the wrappers use them only there.
SMALL_GEMM_MACS = 1024  # njit GEMM for M * N * P <= this many multiply-adds
#
# The loops run the innermost index over contiguous memory: an axpy for a @ b and a.T @ b
# (vectorises as it is), a dot product for a @ b.T (needs ``reassoc``). Each writes into the
# (M, P) array ``c`` it is given, zeroing it first.
@cached_njit(**REDUCE)
def _gemm_nn(a, b, c):
    """c = a @ b: (M, N) x (N, P) -> (M, P); c[i, :] += a[i, k] * b[k, :]."""
    m_, n_ = a.shape
    c[:] = c.dtype.type(0)
    for i in range(m_):
        for k in range(n_):
            aik = a[i, k]
            for j in range(b.shape[1]):
                c[i, j] += aik * b[k, j]


@cached_njit(**REDUCE)
def _gemm_tn(a, b, c):
    """c = a.T @ b: (N, M) x (N, P) -> (M, P); c[i, :] += a[k, i] * b[k, :]."""
    n_, m_ = a.shape
    c[:] = c.dtype.type(0)
    for k in range(n_):
        for i in range(m_):
            aki = a[k, i]
            for j in range(b.shape[1]):
                c[i, j] += aki * b[k, j]


@cached_njit(**REDUCE)
def _gemm_nt(a, b, c):
    """c = a @ b.T: (M, P) x (N, P) -> (M, N); c[i, j] = dot(a[i, :], b[j, :])."""
    m_, p_ = a.shape
    n_ = b.shape[0]
    zero = c.dtype.type(0)  # float32 sums stay float32
    for i in range(m_):
        for j in range(n_):
            acc = zero
            for k in range(p_):
                acc += a[i, k] * b[j, k]
            c[i, j] = acc


def matmul(a, b, *, ws=None):
    """a @ b: (M, N) x (N, P) -> (M, P)."""
    c = empty(ws, (a.shape[0], b.shape[1]), a.dtype)
    if a.shape[0] * a.shape[1] * b.shape[1] <= SMALL_GEMM_MACS:
        _gemm_nn(_c(a), _c(b), c)
    else:
        np.matmul(a, b, out=c)
    return c


def matmul_at(a, b, *, ws=None):
    """a.T @ b: (N, M) x (N, P) -> (M, P); BLAS reads the transpose without copying."""
    c = empty(ws, (a.shape[1], b.shape[1]), a.dtype)
    if a.shape[0] == 1 or a.shape[0] * a.shape[1] * b.shape[1] <= SMALL_GEMM_MACS:
        _gemm_tn(_c(a), _c(b), c)
    else:
        np.matmul(a.T, b, out=c)
    return c


def matmul_bt(a, b, *, ws=None):
    """a @ b.T: (M, P) x (N, P) -> (M, N); BLAS reads the transpose without copying."""
    c = empty(ws, (a.shape[0], b.shape[0]), a.dtype)
    if a.shape[0] * a.shape[1] * b.shape[0] <= SMALL_GEMM_MACS:
        _gemm_nt(_c(a), _c(b), c)
    else:
        np.matmul(a, b.T, out=c)
    return c


# ---------------------------------------------------------------- bias + activation
@cached_njit(**STRICT)
def _bias_piecewise_fwd(z, b, act, h, y):
    """h = z + b; y = relu / leaky_relu of h, in one pass. (N, F), (F,) -> 2x (N, F)
    written into the given h and y.

    The activation branch sits outside the loops (one loop per activation), so each inner
    loop is branch-free and vectorises (3-6x faster than a branch per element, measured)."""
    t = z.dtype.type
    slope = t(LEAKY_SLOPE)
    zero = t(0)
    n, f = z.shape
    if act == RELU:
        for i in range(n):
            for j in range(f):
                hij = z[i, j] + b[j]
                h[i, j] = hij
                y[i, j] = hij if hij > zero else zero
    else:  # LEAKY_RELU
        for i in range(n):
            for j in range(f):
                hij = z[i, j] + b[j]
                h[i, j] = hij
                y[i, j] = hij if hij > zero else slope * hij


@cached_njit(**STRICT)
def _bias_add(z, b, h):
    """h = z + b, (N, F) + (F,) -> (N, F) written into h."""
    n, f = z.shape
    for i in range(n):
        for j in range(f):
            h[i, j] = z[i, j] + b[j]


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


@cached_njit(**STRICT)
def _neg_abs(x, t):
    """t = -|x| over flat arrays: one pass where np.abs then np.negative make two (exact, so
    bitwise the same)."""
    for i in range(x.size):
        t[i] = -abs(x[i])


def _exp_neg_abs(x, t):
    """t = exp(-|x|), written into t and returned: an exponential that never overflows (of a
    non-positive number), the shared start of the stable softplus max(x, 0) + log1p(exp(-|x|))
    and of the sigmoid from it. One fused njit pass for -|x|, then NumPy's SIMD exp (~10x
    faster than np.logaddexp(0, x) for the softplus, measured)."""
    _neg_abs(_c(x).reshape(-1), t.reshape(-1))
    return np.exp(t, out=t)


def _sigmoid(h, s):
    """s = sigma(h) = 0.5 tanh(h/2) + 0.5, written into s and returned: NumPy tanh, then one
    fused njit pass."""
    np.multiply(h, 0.5, out=s)
    np.tanh(s, out=s)
    _sigmoid_affine_inplace(s.reshape(-1))
    return s


def bias_act_fwd(z, b, act, *, ws=None):
    """h = z + b; y = f(h). Returns (h, y), both (N, F). Equations: numpy_ref.act_fwd.

    For the identity (a linear layer: the heads, the decoder's output) y is h itself, one
    array: nothing writes into either, and the second copy would be one more pass over the
    layer's output."""
    z, b = _c(z), _c(b)
    if act == IDENTITY:
        h = empty(ws, z.shape, z.dtype)
        _bias_add(z, b, h)
        return h, h
    h, y = empty(ws, z.shape, z.dtype), empty(ws, z.shape, z.dtype)
    if act in (RELU, LEAKY_RELU):
        _bias_piecewise_fwd(z, b, act, h, y)
        return h, y
    _bias_add(z, b, h)
    if act == TANH:
        np.tanh(h, out=y)
    elif act == SIGMOID:
        _sigmoid(h, y)
    elif act == SOFTPLUS:  # max(h, 0) + log1p(exp(-|h|)): never overflows
        np.log1p(_exp_neg_abs(h, y), out=y)
        _softplus_finish_inplace(y.reshape(-1), h.reshape(-1))
    elif act == ELU:
        np.minimum(h, 0.0, out=y)  # expm1 of min(h, 0): no overflow in the unused branch
        np.expm1(y, out=y)
        _elu_select_inplace(y.reshape(-1), h.reshape(-1))
    else:
        raise AssertionError(f"unknown activation code {act}")  # unreachable: callers validate
    return h, y


@cached_njit(**STRICT)
def _bias_act_bwd(dy, h, y, act, dh, db):
    """dh = dy * f'(h) and db = sum_n dh, one row-major pass with a column accumulator db
    (zeroed here); dh and db are written into.

    f' from h or y: relu 1[h>0]; leaky 1 or slope; tanh 1 - y^2; sigmoid y (1 - y);
    elu 1 or y + alpha; identity 1. (softplus' = sigmoid(h) is a transcendental: the wrapper
    computes it with NumPy and calls ``_mul_colsum`` instead.) One loop per activation, so
    each inner loop is branch-free and vectorises (3-6x faster than a branch per element).
    """
    t = dy.dtype.type
    zero, one = t(0), t(1)
    slope, alpha = t(LEAKY_SLOPE), t(ELU_ALPHA)
    n, f = dy.shape
    db[:] = zero  # column accumulator: rows added in order, as NumPy's sum
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


@cached_njit(**STRICT)
def _mul_colsum(dy, g, dh, db):
    """dh = dy * g and db = sum_n dh (column sum, rows in order), written into dh (N, F) and
    db (F,)."""
    n, f = dy.shape
    zero = dy.dtype.type(0)
    db[:] = zero
    for i in range(n):
        for j in range(f):
            d = dy[i, j] * g[i, j]
            dh[i, j] = d
            db[j] += d


def bias_act_bwd(dy, h, y, act, *, ws=None):
    """dh = dy * f'(h) (N, F); db = sum_n dh (F,)."""
    dy, h, y = _c(dy), _c(h), _c(y)
    dh, db = empty(ws, dy.shape, dy.dtype), empty(ws, dy.shape[1], dy.dtype)
    if act == SOFTPLUS:  # softplus' = sigmoid: a transcendental, so NumPy computes it
        _mul_colsum(dy, _sigmoid(h, empty(ws, h.shape, h.dtype)), dh, db)
    else:
        _bias_act_bwd(dy, h, y, act, dh, db)
    return dh, db


# ---------------------------------------------------------------- reparameterization and KL
@cached_njit(**STRICT)
def _reparam_fwd(mu, std, eps, z):
    """z_k = mu + std * eps_k for every sample k, written into z. (B, d), (B, d), (K, B, d)."""
    k_, b_, d_ = eps.shape
    for k in range(k_):
        for i in range(b_):
            for j in range(d_):
                z[k, i, j] = mu[i, j] + std[i, j] * eps[k, i, j]


def reparam_fwd(mu, logvar, eps, *, ws=None):
    """std = exp(logvar / 2); z_k = mu + std * eps_k. Returns (z (K, B, d), std (B, d))."""
    mu, logvar, eps = _c(mu), _c(logvar), _c(eps)
    z, std = empty(ws, eps.shape, eps.dtype), empty(ws, logvar.shape, logvar.dtype)
    np.multiply(logvar, 0.5, out=std)
    np.exp(std, out=std)
    _reparam_fwd(mu, std, eps, z)
    return z, std


@cached_njit(**STRICT)
def _reparam_bwd(dz, eps, std, dmu, acc):
    """dmu = sum_k dz_k; dlogvar = 0.5 * std * sum_k dz_k * eps_k, k summed in order; written
    into dmu and acc (B, d), which end up holding dmu and dlogvar."""
    k_, b_, d_ = dz.shape
    half, zero = dz.dtype.type(0.5), dz.dtype.type(0)
    dmu[:] = zero
    acc[:] = zero
    for k in range(k_):
        for i in range(b_):
            for j in range(d_):
                dmu[i, j] += dz[k, i, j]
                acc[i, j] += dz[k, i, j] * eps[k, i, j]
    for i in range(b_):
        for j in range(d_):
            acc[i, j] = half * std[i, j] * acc[i, j]


def reparam_bwd(dz, eps, std, *, ws=None):
    """dmu = sum_k dz_k;  dlogvar = sum_k dz_k * eps_k * std / 2. Each (B, d)."""
    dz, eps, std = _c(dz), _c(eps), _c(std)
    dmu, dlogvar = empty(ws, std.shape, dz.dtype), empty(ws, std.shape, dz.dtype)
    _reparam_bwd(dz, eps, std, dmu, dlogvar)
    return dmu, dlogvar


@cached_njit(**STRICT)
def _kl_rows(mu, logvar, em1, kl):
    """kl_b = 0.5 * sum_j (mu^2 + expm1(logvar) - logvar), em1 = expm1(logvar) given; written
    into kl (B,)."""
    n, d = mu.shape
    half, zero = mu.dtype.type(0.5), mu.dtype.type(0)
    for i in range(n):
        acc = zero  # a zero of the array dtype: float32 sums stay float32
        for j in range(d):
            acc += mu[i, j] * mu[i, j] + em1[i, j] - logvar[i, j]
        kl[i] = half * acc


def kl_fwd(mu, logvar, *, ws=None):
    """KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar), (B,)."""
    mu, logvar = _c(mu), _c(logvar)
    kl, em1 = empty(ws, mu.shape[0], mu.dtype), empty(ws, logvar.shape, logvar.dtype)
    np.expm1(logvar, out=em1)
    _kl_rows(mu, logvar, em1, kl)
    return kl


@cached_njit(**STRICT)
def _kl_bwd_inplace(dkl, mu, em1, dmu):
    """dmu = dkl * mu (written into dmu); em1 <- dkl * 0.5 * em1 in place (it becomes dlogvar)."""
    n, d = mu.shape
    half = mu.dtype.type(0.5)
    for i in range(n):
        s = dkl[i] * half
        for j in range(d):
            dmu[i, j] = dkl[i] * mu[i, j]
            em1[i, j] = s * em1[i, j]


def kl_bwd(dkl, mu, logvar, *, ws=None):
    """dmu = dkl * mu;  dlogvar = dkl * (exp(logvar) - 1) / 2. Each (B, d)."""
    dkl, mu, logvar = _c(dkl), _c(mu), _c(logvar)
    dmu, dlogvar = empty(ws, mu.shape, mu.dtype), empty(ws, logvar.shape, logvar.dtype)
    np.expm1(logvar, out=dlogvar)
    _kl_bwd_inplace(dkl, mu, dlogvar, dmu)
    return dmu, dlogvar


# ---------------------------------------------------------------- likelihoods
# The log1p terms of a row are summed as logs of products: sum_j log1p(e_j) = log prod_j (1 + e_j)
# over blocks of _TAIL_BLOCK entries. Each factor is in (1, 2], so a block's product is at most
# 2**64 (no overflow in float32), and a row of 784 needs 13 logs instead of 784 log1p, which
# are the most expensive part of the likelihood (benchmarks/results.md). The rounding error is
# that of the products, about 64 ulp per block, well inside a float32 sum's own.
_TAIL_BLOCK = 64


@cached_njit(**REDUCE)
def _bernoulli_rows(x, out, e, ll):
    """ll[k, b] = sum_i x_i out_i - softplus(out_i), softplus(o) = max(o, 0) + log1p(e),
    where e = exp(-|out|) is given; written into ll (K, B)."""
    k_, b_, d_ = out.shape
    zero, one = out.dtype.type(0), out.dtype.type(1)
    for k in range(k_):
        for i in range(b_):
            acc = zero
            for j in range(d_):
                o = out[k, i, j]
                acc += x[i, j] * o - (o if o > zero else zero)
            tail = zero  # sum_j log1p(e_j), by blocks of products
            for start in range(0, d_, _TAIL_BLOCK):
                prod = one
                for j in range(start, min(start + _TAIL_BLOCK, d_)):
                    prod *= one + e[k, i, j]
                tail += np.log(prod)
            ll[k, i] = acc - tail


def bernoulli_ll_fwd(x, out, *, ws=None):
    """log p(x|z_k) = sum_i x_i out_i - softplus(out_i); logits out (K, B, D) -> (K, B); also
    e = exp(-|out|) (K, B, D), which the backward's sigmoid reuses. Returns (ll, e)."""
    x, out = _c(x), _c(out)
    ll, e = empty(ws, out.shape[:2], out.dtype), empty(ws, out.shape, out.dtype)
    _bernoulli_rows(x, out, _exp_neg_abs(out, e), ll)
    return ll, e


@cached_njit(**STRICT)
def _bernoulli_bwd(dll, x, out, e, dout):
    """dout = dll * (x - s), s = sigmoid(out) = 1 / (1 + e) (out >= 0) or e / (1 + e), given
    e = exp(-|out|) (numpy_ref.sigmoid_from_exp); one pass, written into dout."""
    k_, b_, d_ = out.shape
    zero, one = out.dtype.type(0), out.dtype.type(1)
    for k in range(k_):
        for i in range(b_):
            g = dll[k, i]
            for j in range(d_):
                ej = e[k, i, j]
                s = one / (one + ej) if out[k, i, j] >= zero else ej / (one + ej)
                dout[k, i, j] = g * (x[i, j] - s)


def bernoulli_ll_bwd(dll, x, out, e, *, ws=None):
    """dout = dll * (x - sigmoid(out)), (K, B, D), sigmoid from the forward's e = exp(-|out|)."""
    dll, x, out, e = _c(dll), _c(x), _c(out), _c(e)
    dout = empty(ws, out.shape, out.dtype)
    _bernoulli_bwd(dll, x, out, e, dout)
    return dout


@cached_njit(**REDUCE)
def _gaussian_rows(x, out, logvar, prec, log2pi, ll):
    """ll[k, b] = -0.5 sum_i ((x - out)^2 prec_i + logvar_i + log 2pi), prec = exp(-logvar);
    written into ll (K, B)."""
    k_, b_, d_ = out.shape
    mhalf, zero = out.dtype.type(-0.5), out.dtype.type(0)
    for k in range(k_):
        for i in range(b_):
            acc = zero
            for j in range(d_):
                r = x[i, j] - out[k, i, j]
                acc += r * r * prec[j] + logvar[j] + log2pi
            ll[k, i] = mhalf * acc


def _exp_neg(logvar, prec):
    """prec = exp(-logvar), written into prec and returned."""
    np.negative(logvar, out=prec)
    np.exp(prec, out=prec)
    return prec


def gaussian_ll_fwd(x, out, logvar, *, ws=None):
    """log p(x|z_k) = -1/2 sum_i [(x_i - out_i)^2 exp(-logvar_i) + logvar_i + log(2 pi)], (K, B)."""
    x, out, logvar = _c(x), _c(out), _c(logvar)
    ll, prec = empty(ws, out.shape[:2], out.dtype), empty(ws, logvar.shape, logvar.dtype)
    _gaussian_rows(x, out, logvar, _exp_neg(logvar, prec), out.dtype.type(LOG_2PI), ll)
    return ll


@cached_njit(**STRICT)
def _gaussian_bwd(dll, x, out, prec, dout, dlogvar):
    """dout = dll (x - out) prec; dlogvar_i = sum_{k,b} 0.5 dll ((x - out)^2 prec_i - 1);
    written into dout (K, B, D) and dlogvar (D,)."""
    k_, b_, d_ = out.shape
    t = out.dtype.type
    half, one, zero = t(0.5), t(1), t(0)
    dlogvar[:] = zero  # column accumulator, (k, b) rows in order
    for k in range(k_):
        for i in range(b_):
            g = dll[k, i]
            hg = half * g
            for j in range(d_):
                r = x[i, j] - out[k, i, j]
                dout[k, i, j] = g * r * prec[j]
                dlogvar[j] += hg * (r * r * prec[j] - one)


def gaussian_ll_bwd(dll, x, out, logvar, *, ws=None):
    """dout = dll (x - out) exp(-logvar) (K, B, D); dlogvar_i = sum_{k,b} dll ((x-out)^2 exp(-logvar_i) - 1) / 2."""
    dll, x, out, logvar = _c(dll), _c(x), _c(out), _c(logvar)
    dout, dlogvar = empty(ws, out.shape, out.dtype), empty(ws, logvar.shape, logvar.dtype)
    prec = _exp_neg(logvar, empty(ws, logvar.shape, logvar.dtype))
    _gaussian_bwd(dll, x, out, prec, dout, dlogvar)
    return dout, dlogvar


# ---------------------------------------------------------------- log-sum-exp over samples
@cached_njit(**STRICT)
def _shift_by_colmax(a, s, m):
    """m_b = max_k a[k, b] (0 where that is not finite) and s = a - m, written into m (B,) and
    s (K, B). No fastmath: -inf guard."""
    k_, b_ = a.shape
    for i in range(b_):
        m[i] = a[0, i]
    for k in range(1, k_):
        for i in range(b_):
            v = a[k, i]
            if not np.isnan(m[i]) and (v > m[i] or np.isnan(v)):  # NaN propagates, as np.max
                m[i] = v
    zero = a.dtype.type(0)
    for i in range(b_):
        if not np.isfinite(m[i]):  # all -inf (or inf/NaN): shift by 0, avoiding -inf - -inf
            m[i] = zero
    for k in range(k_):
        for i in range(b_):
            s[k, i] = a[k, i] - m[i]


def logsumexp(a, *, ws=None):
    """log sum_k exp(a_k) over axis 0, (K, B) -> (B,); all -inf gives -inf."""
    a = _c(a)
    s, e, m = empty(ws, a.shape[1], a.dtype), empty(ws, a.shape, a.dtype), empty(ws, a.shape[1], a.dtype)
    _shift_by_colmax(a, e, m)
    np.exp(e, out=e)
    np.sum(e, axis=0, out=s)
    with np.errstate(divide="ignore"):  # log(0) = -inf is the intended all -inf result
        np.log(s, out=s)
    s += m
    return s


def softmax(a, *, ws=None):
    """w_k = exp(a_k - m) / sum_k exp(a_k - m) over axis 0, (K, B) -> (K, B); m the column max.

    Normalising the shifted exponentials keeps float32 weights accurate for large |a|; an
    all -inf column gives NaN (0/0), as in the reference."""
    a = _c(a)
    e, m, s = empty(ws, a.shape, a.dtype), empty(ws, a.shape[1], a.dtype), empty(ws, a.shape[1], a.dtype)
    _shift_by_colmax(a, e, m)
    np.exp(e, out=e)
    np.sum(e, axis=0, out=s)
    with np.errstate(invalid="ignore"):
        np.divide(e, s, out=e)
    return e


# ---------------------------------------------------------------- glue: sums, checks, copies
def add(a, b, *, ws=None):
    """a + b, two arrays of one shape (gradients of a value read by two operations add up)."""
    return np.add(a, b, out=empty(ws, a.shape, a.dtype))


# all_finite in one pass with no exit inside the loop, so that it vectorises: x - x is exactly 0
# for every finite x and NaN for NaN and +-inf, and NaN != 0; the flags are OR-ed (an integer
# reduction, which needs no fastmath). Faster than a block scan of np.isfinite with an exit per
# block (benchmarks/results.md), and no boolean temporary as in np.isfinite(a).all().
@cached_njit(**STRICT)
def _all_finite(a):
    """True when no entry of the flat array a is NaN, inf or -inf."""
    bad = False
    for i in range(a.size):
        bad |= (a[i] - a[i]) != 0
    return not bad


def all_finite(a):
    """True when no entry of ``a`` is NaN or inf (fit and the optimizers check gradients)."""
    return bool(_all_finite(_c(a).reshape(-1)))


# ---------------------------------------------------------------- optimizer updates (in place)
# Written over flat arrays (the wrappers pass flat views, so a 1-D bias and a 2-D weight share
# one signature). Serial on purpose: on 2 cores a prange Adam was no faster in float32 and at
# most 1.6x faster in float64 above ~300k elements when run alone on an idle machine, and
# between the BLAS calls of a training step it saved under 5% (benchmarks/bench_kernels.py,
# time_optimizer_parallel; see also _jit.py).
@cached_njit(**STRICT)
def _sgd(p, g, velocity, lr, momentum, tiny):
    zero = p.dtype.type(0)
    for i in range(p.size):
        vi = momentum * velocity[i] + g[i]
        vi = zero if abs(vi) < tiny else vi  # flush_subnormal (NaN kept)
        velocity[i] = vi
        p[i] = p[i] - lr * vi


@cached_njit(**STRICT)
def _adam(p, g, m, v, step, beta1, one_m_beta1, beta2, one_m_beta2, inv_sqrt_c2, eps, tiny):
    zero = p.dtype.type(0)
    for i in range(p.size):
        mi = beta1 * m[i] + one_m_beta1 * g[i]
        vi = beta2 * v[i] + one_m_beta2 * g[i] * g[i]
        mi = zero if abs(mi) < tiny else mi  # flush_subnormal (NaN kept)
        vi = zero if abs(vi) < tiny else vi
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step * mi / (np.sqrt(vi) * inv_sqrt_c2 + eps)


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
    """velocity = momentum * velocity + g (subnormals flushed to 0);  p -= lr * velocity."""
    _update_in_place(_sgd, (p, velocity), g, sgd_kernel_scalars(p.dtype, lr, momentum))


def adam_step(p, g, m, v, lr, beta1, beta2, eps, t):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2 (subnormals flushed to 0);
    p -= lr * mhat / (sqrt(vhat) + eps), mhat = m / (1 - b1^t), vhat = v / (1 - b2^t),
    t = 1, 2, ... the step count; computed as numpy_ref.adam_step says."""
    _update_in_place(_adam, (p, m, v), g, adam_kernel_scalars(p.dtype, lr, beta1, beta2, eps, t))


def adagrad_step(p, g, s, lr, eps):
    """s += g^2;  p -= lr * g / (sqrt(s) + eps)."""
    t = p.dtype.type
    _update_in_place(_adagrad, (p, s), g, (t(lr), t(eps)))


# ================================================================ vector quantisation (VQ-VAE)
# N rows of e numbers (N = B * m slots), a codebook of C rows; idx arrays are int64 in [0, C).
# Every sum runs in the reference's order (coordinates 0..e-1; rows 0..N-1 per code), so the
# distances, hence the chosen codes, and the scatter-adds agree with numpy_ref to the bit.
@cached_njit(**STRICT)
def _sqdist_row(a, i, b, k):
    """sum_j (a[i, j] - b[k, j])^2, j = 0, 1, ... in order (the reference's order, so that
    vq_assign's distances, and its ties, are the reference's)."""
    acc = a.dtype.type(0)
    for j in range(a.shape[1]):
        r = a[i, j] - b[k, j]
        acc += r * r
    return acc


@cached_njit(**STRICT)
def _vq_assign(z, codebook, idx):
    """idx[n] = argmin_c sum_j (z[n, j] - codebook[c, j])^2; strict < keeps the smallest c on
    a tie. No fastmath: reassociating the sum could break a tie differently from the reference."""
    for n in range(z.shape[0]):
        best = 0
        best_d2 = z.dtype.type(0)
        for c in range(codebook.shape[0]):
            d2 = _sqdist_row(z, n, codebook, c)
            if c == 0 or d2 < best_d2:
                best, best_d2 = c, d2
        idx[n] = best


def vq_assign(z, codebook, *, ws=None):
    """idx_n = argmin_c ||z_n - codebook_c||^2, ties to the smallest c: (N, e), (C, e) -> (N,) int64."""
    z, codebook = _c(z), _c(codebook)
    idx = empty(ws, z.shape[0], np.int64)
    _vq_assign(z, codebook, idx)
    return idx


@cached_njit(**STRICT)
def _gather_fwd(table, idx, rows):
    """rows[n, :] = table[idx[n], :], written into rows (N, e)."""
    for n in range(idx.shape[0]):
        for j in range(table.shape[1]):
            rows[n, j] = table[idx[n], j]


def gather_fwd(table, idx, *, ws=None):
    """rows_n = table[idx_n]: (C, e), (N,) -> (N, e)."""
    table, idx = _c(table), _c(idx)
    rows = empty(ws, (idx.shape[0], table.shape[1]), table.dtype)
    _gather_fwd(table, idx, rows)
    return rows


@cached_njit(**STRICT)
def _gather_bwd(drows, idx, dtable, counts):
    """dtable[c] = sum of drows[n] over n with idx[n] = c (n in order), counts[c] = their
    number; both zeroed here, then written."""
    zero, one = drows.dtype.type(0), drows.dtype.type(1)
    dtable[:] = zero
    counts[:] = zero
    for n in range(idx.shape[0]):
        c = idx[n]
        counts[c] += one
        for j in range(drows.shape[1]):
            dtable[c, j] += drows[n, j]


def gather_bwd(drows, idx, n_rows, *, ws=None):
    """dtable_c = sum_{n: idx_n = c} drows_n (n_rows, e); counts_c = #{n: idx_n = c} (n_rows,)."""
    drows, idx = _c(drows), _c(idx)
    dtable = empty(ws, (n_rows, drows.shape[1]), drows.dtype)
    counts = empty(ws, n_rows, drows.dtype)
    _gather_bwd(drows, idx, dtable, counts)
    return dtable, counts


@cached_njit(**STRICT)
def _sqdist_fwd(a, b, d):
    """d[n] = sum_j (a[n, j] - b[n, j])^2, written into d (N,)."""
    for n in range(a.shape[0]):
        d[n] = _sqdist_row(a, n, b, n)


def sqdist_fwd(a, b, *, ws=None):
    """d_n = ||a_n - b_n||^2, (N, e) x (N, e) -> (N,)."""
    a, b = _c(a), _c(b)
    d = empty(ws, a.shape[0], a.dtype)
    _sqdist_fwd(a, b, d)
    return d


@cached_njit(**STRICT)
def _sqdist_bwd(dd, a, b, da):
    """da[n, j] = 2 dd[n] (a[n, j] - b[n, j]), written into da (N, e); (2 dd) (a - b) as the
    reference groups it."""
    two = a.dtype.type(2)
    for n in range(a.shape[0]):
        g = two * dd[n]
        for j in range(a.shape[1]):
            da[n, j] = g * (a[n, j] - b[n, j])


def sqdist_bwd(dd, a, b, *, ws=None):
    """da = 2 dd (a - b), (N, e): the gradient with respect to ``a``; ``b`` held fixed."""
    dd, a, b = _c(dd), _c(a), _c(b)
    da = empty(ws, a.shape, a.dtype)
    _sqdist_bwd(dd, a, b, da)
    return da


@cached_njit(**STRICT)
def _vq_ema(ema_count, ema_sum, counts, sums, decay, one_m_decay, c_eps, eps, count, ema, codebook):
    """count, ema, codebook of numpy_ref.vq_ema, written into the last three arrays."""
    n_codes, e_ = ema_sum.shape
    total = ema_count.dtype.type(0)
    for c in range(n_codes):
        count[c] = decay * ema_count[c] + one_m_decay * counts[c]
        total += count[c]
    for c in range(n_codes):
        smoothed = (count[c] + eps) / (total + c_eps) * total
        for j in range(e_):
            ema[c, j] = decay * ema_sum[c, j] + one_m_decay * sums[c, j]
            codebook[c, j] = ema[c, j] / smoothed


def vq_ema(ema_count, ema_sum, counts, sums, decay, eps, *, ws=None):
    """One EMA step of the codebook with Laplace-smoothed counts; returns (count (C,), sum (C, e),
    codebook (C, e)). Equations: numpy_ref.vq_ema."""
    ema_count, ema_sum, counts, sums = _c(ema_count), _c(ema_sum), _c(counts), _c(sums)
    t = ema_sum.dtype.type  # scalars in the array dtype, as NumPy treats Python floats
    count = empty(ws, ema_count.shape, ema_count.dtype)
    ema, codebook = empty(ws, ema_sum.shape, ema_sum.dtype), empty(ws, ema_sum.shape, ema_sum.dtype)
    _vq_ema(ema_count, ema_sum, counts, sums, t(decay), t(1.0 - decay), t(ema_sum.shape[0] * eps),
            t(eps), count, ema, codebook)
    return count, ema, codebook


# ================================================================ planar flows (FlowVAE)
# One block for the FlowVAE's two kernels (equations: numpy_ref.planar_flow_fwd/_bwd and
# docs/derivations.md, "Planar flows"). The loops run per example b, then per step i, then per
# sample k: the step's uh and softplus(w . u) are computed once per (b, i) and shared by the K
# samples. The transcendentals are one scalar tanh/log per (i, k, b), not per element, so they
# stay inside the njit loop (no NumPy temporaries). No fastmath: log of the determinant.
@cached_njit(**STRICT)
def _softplus_scalar(m):
    """softplus(m) = max(m, 0) + log1p(exp(-|m|)): no overflow for any m."""
    zero = m * 0
    return (m if m > zero else zero) + np.log1p(np.exp(-abs(m)))


@cached_njit(**STRICT)
def _planar_fwd(z0, u, w, b, zL, logdet, zin, t, uh):
    """Writes zL (K, B, d), logdet (K, B), zin (L, K, B, d), t (L, K, B), uh (B, L, d)."""
    k_, b_, d_ = z0.shape
    l_ = u.shape[1]
    one, zero = z0.dtype.type(1), z0.dtype.type(0)
    zL[:] = z0
    logdet[:] = zero
    for bb in range(b_):
        for i in range(l_):
            m, n = zero, zero
            for j in range(d_):
                m += w[bb, i, j] * u[bb, i, j]
                n += w[bb, i, j] * w[bb, i, j]
            sp = _softplus_scalar(m)
            c = (sp - one - m) / n
            for j in range(d_):
                uh[bb, i, j] = u[bb, i, j] + c * w[bb, i, j]
            for k in range(k_):
                acc = zero
                for j in range(d_):
                    zin[i, k, bb, j] = zL[k, bb, j]
                    acc += zL[k, bb, j] * w[bb, i, j]
                tk = np.tanh(acc + b[bb, i])
                t[i, k, bb] = tk
                for j in range(d_):
                    zL[k, bb, j] += uh[bb, i, j] * tk
                # t^2 + (1 - t^2) softplus(m): both terms >= 0, nothing cancels near the bound
                logdet[k, bb] += np.log(tk * tk + (one - tk * tk) * sp)


def planar_flow_fwd(z0, u, w, b, *, ws=None):
    """L amortised planar steps. Returns (zL (K, B, d), logdet (K, B), zin (L, K, B, d),
    t (L, K, B), uh (B, L, d)); equations: numpy_ref.planar_flow_fwd."""
    z0, u, w, b = _c(z0), _c(u), _c(w), _c(b)
    K, B, d = z0.shape
    L = u.shape[1]
    dt = z0.dtype
    zL, logdet = empty(ws, (K, B, d), dt), empty(ws, (K, B), dt)
    zin, t, uh = empty(ws, (L, K, B, d), dt), empty(ws, (L, K, B), dt), empty(ws, (B, L, d), dt)
    _planar_fwd(z0, u, w, b, zL, logdet, zin, t, uh)
    return zL, logdet, zin, t, uh


@cached_njit(**STRICT)
def _planar_bwd(dlogdet, zin, t, uh, u, w, g, du, dw, db):
    """g (K, B, d) holds dzL on entry and dz0 on exit; writes du, dw (B, L, d), db (B, L)."""
    k_, b_, d_ = g.shape
    l_ = u.shape[1]
    tp = g.dtype.type
    zero, one, two = tp(0), tp(1), tp(2)
    for bb in range(b_):
        for i in range(l_ - 1, -1, -1):
            m, n = zero, zero
            for j in range(d_):
                m += w[bb, i, j] * u[bb, i, j]
                n += w[bb, i, j] * w[bb, i, j]
            sp = _softplus_scalar(m)
            c = (sp - one - m) / n
            # sigmoid(m) = exp(-softplus(-m)), sigmoid(m) - 1 = -exp(-softplus(m)): relative
            # accuracy, which sigmoid(m) / det needs (det can be as small as softplus(m))
            sig, sig_m1 = np.exp(-_softplus_scalar(-m)), -np.exp(-sp)
            for j in range(d_):
                du[bb, i, j] = zero  # accumulates duh = sum_k g t
                dw[bb, i, j] = zero  # accumulates sum_k da z_{i-1}
            dm_ld, db_acc = zero, zero
            for k in range(k_):
                tk = t[i, k, bb]
                s = one - tk * tk
                det = tk * tk + s * sp
                gu = zero
                for j in range(d_):
                    gu += g[k, bb, j] * uh[bb, i, j]
                dtk = gu + dlogdet[k, bb] * two * tk * (one - sp) / det
                da = dtk * s
                for j in range(d_):
                    du[bb, i, j] += g[k, bb, j] * tk
                    dw[bb, i, j] += da * zin[i, k, bb, j]
                    g[k, bb, j] += da * w[bb, i, j]
                dm_ld += dlogdet[k, bb] * s * sig / det
                db_acc += da
            gw = zero
            for j in range(d_):
                gw += du[bb, i, j] * w[bb, i, j]
            dm = dm_ld + gw * sig_m1 / n
            dn = -gw * c / n
            for j in range(d_):
                gj = du[bb, i, j]
                dw[bb, i, j] = c * gj + dm * u[bb, i, j] + two * dn * w[bb, i, j] + dw[bb, i, j]
                du[bb, i, j] = gj + dm * w[bb, i, j]
            db[bb, i] = db_acc


def planar_flow_bwd(dzL, dlogdet, zin, t, uh, u, w, *, ws=None):
    """Backward of planar_flow_fwd: (dz0 (K, B, d), du (B, L, d), dw (B, L, d), db (B, L));
    equations: numpy_ref.planar_flow_bwd."""
    dzL, dlogdet, zin, t, uh, u, w = (_c(a) for a in (dzL, dlogdet, zin, t, uh, u, w))
    dt = dzL.dtype
    dz0 = empty(ws, dzL.shape, dt)
    du, dw, db = empty(ws, u.shape, dt), empty(ws, w.shape, dt), empty(ws, u.shape[:2], dt)
    dz0[...] = dzL
    _planar_bwd(dlogdet, zin, t, uh, u, w, dz0, du, dw, db)
    return dz0, du, dw, db
