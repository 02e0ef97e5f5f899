"""numba.cuda kernels: the same functions and signatures as ``numpy_ref``, run on an NVIDIA GPU.

Each public function is a host wrapper around one or two ``@cuda.jit`` kernels. Its arrays may
live on the host (NumPy arrays) or on the device (numba device arrays: ``cuda.device_array``,
``cuda.to_device``, or an earlier kernel's output), and where its results live follows one rule:

- device inputs are used as they are (no copy); host inputs are copied to the device first;
- the outputs are device arrays when ANY array argument is a device array, and NumPy arrays
  (copied back) when all of them are host arrays.

So a caller that hands NumPy arrays in gets NumPy arrays out, exactly like the other backends
(each call then pays its transfers), while a caller that keeps its arrays on the device keeps
them there: ``scratchvae.train.fit`` moves the parameters, the optimizer state and the work
buffers to the device once (``to_device``), runs every step there, and copies the parameters
back (``to_host``/``copyto``) only when they are read. Device results are C-contiguous, so model
code may ``.reshape(...)`` them (a view, no copy); all arithmetic on them happens in kernels
(a real device array has no operators). ``to_device``, ``to_host`` and ``copyto`` move arrays
between the two places; ``all_finite`` checks an array on the device and returns a Python bool.

With a ``scratchvae.kernels.workspace.Workspace`` (``ws=``), every device buffer a call needs (host
inputs uploaded, outputs, temporaries) comes from ``ws.empty(shape, dtype,
new=cuda.device_array)`` and every host output from ``ws.empty(shape, dtype)``, in a fixed order,
so a step repeated after ``ws.rewind()`` allocates no memory on either side. Without one, every
call allocates fresh arrays.

The optimizer updates (no ``ws``) change their state in place where it lives: device arrays are
updated on the device with no host copy (a host gradient is uploaded first); host arrays are
copied to the device, updated and copied back into the caller's arrays (strided views too).

Without a GPU the kernels run in numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1`` is set
before numba is imported (slow: ~0.2 ms per simulated thread; for tests on tiny shapes). There
the device arrays are the simulator's ``FakeCUDAArray`` (a NumPy array in a wrapper).

Thread layout (threads per block from ``_jit.TPB`` / ``_jit.TPB_1D``, read at call time):

- GEMM: a tiled shared-memory kernel, one thread per output element in TPB x TPB blocks; the
  transposes of ``matmul_at`` / ``matmul_bt`` are done by indexing while loading the tiles.
- elementwise kernels: one thread per element.
- reductions (column sums, KL per row, likelihood per row, log-sum-exp per column): one thread
  per output element looping over the reduced axis in order, so results are deterministic
  (no atomics).

Every accumulator and constant is typed with the array dtype (``out.dtype.type(0)``): float32
stays float32 on the GPU and in the simulator alike.

Shapes and equations: the table in ``scratchvae/kernels/__init__.py``.
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import config, cuda

from . import workspace
from . import _jit
from ._activation_codes import ELU, ELU_ALPHA, LEAKY_RELU, LEAKY_SLOPE, RELU, SIGMOID, SOFTPLUS, TANH

from .numpy_ref import LOG_2PI  # noqa: E402  (one definition of the constant)
from .numpy_ref import adam_kernel_scalars, sgd_kernel_scalars  # noqa: E402  (one definition each)

NO_CUDA_MESSAGE = (
    "backend 'cuda' needs an NVIDIA GPU with a CUDA driver; none was found. To run the CUDA "
    "kernels on the CPU simulator, set NUMBA_ENABLE_CUDASIM=1 before importing numba/scratchvae."
)


def check_available():
    """Raise ValueError unless a CUDA GPU (or the CUDA simulator) can run the kernels."""
    if config.ENABLE_CUDASIM:
        return
    if not cuda.is_available():
        raise ValueError(NO_CUDA_MESSAGE)
    _probe_gpu()


@functools.cache
def _probe_gpu():
    """Launch a one-thread kernel once: a driver can be present while launches still fail."""
    try:
        out = cuda.device_array(1, dtype=np.float64)
        _fill[1, 1](out, 1.0)
        if out.copy_to_host()[0] != 1.0:
            raise RuntimeError("probe kernel wrote a wrong value")
    except Exception as e:  # CudaSupportError, NvvmError, CudaAPIError, ...
        raise ValueError(
            f"backend 'cuda' found a CUDA driver, but a one-thread test kernel failed "
            f"({type(e).__name__}: {e}). To run the CUDA kernels on the CPU simulator, set "
            f"NUMBA_ENABLE_CUDASIM=1 before importing numba/scratchvae.") from e


@cuda.jit
def _fill(out, value):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


# ---------------------------------------------------------------- launch helpers
def _blocks(n, tpb):
    return (n + tpb - 1) // tpb


def _launch_1d(kernel, n, *args):
    """kernel[blocks, TPB_1D](*args) with at least n threads (nothing to do when n == 0)."""
    if n > 0:
        tpb = _jit.TPB_1D
        kernel[_blocks(n, tpb), tpb](*args)


# ---------------------------------------------------------------- where arrays live
def _is_device(a):
    """True for a numba device array (``DeviceNDArray``; ``FakeCUDAArray`` in the simulator).

    ``cuda.devicearray.is_cuda_ndarray`` rather than ``cuda.is_cuda_array``: the simulator has
    no ``is_cuda_array``, and its arrays have no ``__cuda_array_interface__``."""
    return bool(cuda.devicearray.is_cuda_ndarray(a))


def _any_on_device(*arrays):
    """True when any of ``arrays`` is a device array: the outputs then stay on the device."""
    return any(_is_device(a) for a in arrays)


def _device_empty(ws, shape, dtype):
    """An uninitialised device array: the workspace's buffer, or a fresh one without ``ws``."""
    if ws is None:
        return cuda.device_array(shape, dtype=dtype)
    return ws.empty(shape, dtype, new=cuda.device_array)


def _dev(ws, *arrays):
    """Each array on the device: a device array as it is (no copy); a host array copied into a
    new device array (into a workspace buffer when ``ws`` is given)."""
    out = []
    for a in arrays:
        if not _is_device(a):
            a = np.ascontiguousarray(a)
            d = _device_empty(ws, a.shape, a.dtype)
            if a.size:  # (the simulator's copy rejects an empty array; numba's skips it)
                d.copy_to_device(a)
            a = d
        out.append(a)
    return out


def _result(ws, on_device, d):
    """A device result as the caller gets it: itself when the call had a device argument, else
    copied into a host array (a workspace buffer when ``ws`` is given)."""
    if on_device:
        return d
    return d.copy_to_host(ary=workspace.empty(ws, d.shape, d.dtype))


# ---------------------------------------------------------------- matrix products (tiled GEMM)
@functools.cache
def _gemm_kernel(tile, dtype):
    """The tiled GEMM kernel for one tile width and dtype (shared arrays need both constant)."""
    nb_dtype = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def gemm(a, b, c, trans_a, trans_b):
        """c = op(a) @ op(b), op(x) = x.T when trans_x; c (M, P), inner size N.

        Each block computes a tile x tile block of c. For each step along N it loads one tile of
        op(a) and one of op(b) into shared memory (one element per thread), waits, and
        accumulates their product. Every thread runs every step (no early exit before a
        barrier); out-of-range loads write zeros, out-of-range threads just skip the store.
        """
        sa = cuda.shared.array((tile, tile), nb_dtype)
        sb = cuda.shared.array((tile, tile), nb_dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * tile + ty
        col = cuda.blockIdx.x * tile + tx
        m, p = c.shape
        n = a.shape[0] if trans_a else a.shape[1]
        zero = c.dtype.type(0)
        acc = zero
        for start in range(0, n, tile):
            k = start + tx  # op(a)[row, k]
            if row < m and k < n:
                sa[ty, tx] = a[k, row] if trans_a else a[row, k]
            else:
                sa[ty, tx] = zero
            k = start + ty  # op(b)[k, col]
            if k < n and col < p:
                sb[ty, tx] = b[col, k] if trans_b else b[k, col]
            else:
                sb[ty, tx] = zero
            cuda.syncthreads()
            for kk in range(tile):
                acc += sa[ty, kk] * sb[kk, tx]
            cuda.syncthreads()
        if row < m and col < p:
            c[row, col] = acc

    return gemm


def _gemm(a, b, trans_a, trans_b, ws):
    m = a.shape[1] if trans_a else a.shape[0]
    p = b.shape[0] if trans_b else b.shape[1]
    on_device = _any_on_device(a, b)
    d_a, d_b = _dev(ws, a, b)
    d_c = _device_empty(ws, (m, p), a.dtype)
    if m > 0 and p > 0:
        tile = _jit.TPB
        kernel = _gemm_kernel(tile, a.dtype)
        kernel[(_blocks(p, tile), _blocks(m, tile)), (tile, tile)](d_a, d_b, d_c, int(trans_a), int(trans_b))
    return _result(ws, on_device, d_c)


def matmul(a, b, *, ws=None):
    """a @ b: (M, N) x (N, P) -> (M, P)."""
    return _gemm(a, b, False, False, ws)


def matmul_at(a, b, *, ws=None):
    """a.T @ b: (N, M) x (N, P) -> (M, P)."""
    return _gemm(a, b, True, False, ws)


def matmul_bt(a, b, *, ws=None):
    """a @ b.T: (M, P) x (N, P) -> (M, N)."""
    return _gemm(a, b, False, True, ws)


# ---------------------------------------------------------------- bias + activation
@cuda.jit
def _bias_act_fwd_kernel(z, b, act, h, y):
    """h = z + b; y = f(h), one thread per element of the (N, F) arrays."""
    e = cuda.grid(1)
    n, f = z.shape
    if e < n * f:
        i = e // f
        j = e % f
        t = y.dtype.type
        zero, half = t(0), t(0.5)
        hv = z[i, j] + b[j]
        h[i, j] = hv
        if act == RELU:
            yv = hv if hv > zero else zero
        elif act == LEAKY_RELU:
            yv = hv if hv > zero else t(LEAKY_SLOPE) * hv
        elif act == TANH:
            yv = math.tanh(hv)
        elif act == SIGMOID:
            yv = half * math.tanh(half * hv) + half  # never overflows
        elif act == SOFTPLUS:
            # stable softplus: max(h, 0) + log1p(exp(-|h|)); max() written out (the builtin
            # needs a GPU context to compile)
            yv = (hv if hv > zero else zero) + math.log1p(math.exp(-abs(hv)))
        elif act == ELU:
            yv = hv if hv > zero else t(ELU_ALPHA) * math.expm1(hv)
        else:  # IDENTITY
            yv = hv
        y[i, j] = yv


def bias_act_fwd(z, b, act, *, ws=None):
    """h = z + b; y = f(h). Returns (h, y), both (N, F)."""
    on_device = _any_on_device(z, b)
    d_z, d_b = _dev(ws, z, b)
    d_h = _device_empty(ws, z.shape, z.dtype)
    d_y = _device_empty(ws, z.shape, z.dtype)
    _launch_1d(_bias_act_fwd_kernel, z.size, d_z, d_b, act, d_h, d_y)
    return _result(ws, on_device, d_h), _result(ws, on_device, d_y)


@cuda.jit
def _act_bwd_kernel(dy, h, y, act, dh):
    """dh = dy * f'(h), one thread per element; f' from h or y as in numpy_ref.act_grad."""
    e = cuda.grid(1)
    n, f = dy.shape
    if e < n * f:
        i = e // f
        j = e % f
        t = dh.dtype.type
        zero, one, half = t(0), t(1), t(0.5)
        if act == RELU:
            g = one if h[i, j] > zero else zero
        elif act == LEAKY_RELU:
            g = one if h[i, j] > zero else t(LEAKY_SLOPE)
        elif act == TANH:
            g = one - y[i, j] * y[i, j]
        elif act == SIGMOID:
            g = y[i, j] * (one - y[i, j])
        elif act == SOFTPLUS:
            g = half * math.tanh(half * h[i, j]) + half  # softplus' = sigmoid
        elif act == ELU:
            g = one if h[i, j] > zero else y[i, j] + t(ELU_ALPHA)
        else:  # IDENTITY
            g = one
        dh[i, j] = dy[i, j] * g


@cuda.jit
def _colsum_kernel(x, out):
    """out[j] = sum_i x[i, j], one thread per column, rows added in order."""
    j = cuda.grid(1)
    n, f = x.shape
    if j < f:
        acc = out.dtype.type(0)
        for i in range(n):
            acc += x[i, j]
        out[j] = acc


def bias_act_bwd(dy, h, y, act, *, ws=None):
    """dh = dy * f'(h) (N, F); db = sum_n dh (F,)."""
    on_device = _any_on_device(dy, h, y)
    d_dy, d_h, d_y = _dev(ws, dy, h, y)
    d_dh = _device_empty(ws, dy.shape, dy.dtype)
    d_db = _device_empty(ws, dy.shape[1], dy.dtype)
    _launch_1d(_act_bwd_kernel, dy.size, d_dy, d_h, d_y, act, d_dh)
    _launch_1d(_colsum_kernel, dy.shape[1], d_dh, d_db)
    return _result(ws, on_device, d_dh), _result(ws, on_device, d_db)


# ---------------------------------------------------------------- reparameterization and KL
@cuda.jit
def _reparam_fwd_kernel(mu, logvar, eps, z, std):
    """std = exp(logvar / 2); z_k = mu + std * eps_k; one thread per (b, j), looping over k."""
    e = cuda.grid(1)
    nb, d = mu.shape
    if e < nb * d:
        i = e // d
        j = e % d
        s = math.exp(std.dtype.type(0.5) * logvar[i, j])
        std[i, j] = s
        for k in range(eps.shape[0]):
            z[k, i, j] = mu[i, j] + s * eps[k, i, j]


def reparam_fwd(mu, logvar, eps, *, ws=None):
    """std = exp(logvar / 2); z_k = mu + std * eps_k. Returns (z (K, B, d), std (B, d))."""
    on_device = _any_on_device(mu, logvar, eps)
    d_mu, d_lv, d_eps = _dev(ws, mu, logvar, eps)
    d_z = _device_empty(ws, eps.shape, eps.dtype)
    d_std = _device_empty(ws, mu.shape, mu.dtype)
    _launch_1d(_reparam_fwd_kernel, mu.size, d_mu, d_lv, d_eps, d_z, d_std)
    return _result(ws, on_device, d_z), _result(ws, on_device, d_std)


@cuda.jit
def _reparam_bwd_kernel(dz, eps, std, dmu, dlogvar):
    """dmu = sum_k dz_k; dlogvar = 0.5 std sum_k dz_k eps_k; one thread per (b, j)."""
    e = cuda.grid(1)
    nb, d = std.shape
    if e < nb * d:
        i = e // d
        j = e % d
        t = dmu.dtype.type
        acc_mu = t(0)
        acc_lv = t(0)
        for k in range(dz.shape[0]):
            acc_mu += dz[k, i, j]
            acc_lv += dz[k, i, j] * eps[k, i, j]
        dmu[i, j] = acc_mu
        dlogvar[i, j] = t(0.5) * std[i, j] * acc_lv


def reparam_bwd(dz, eps, std, *, ws=None):
    """dmu = sum_k dz_k;  dlogvar = sum_k dz_k * eps_k * std / 2. Each (B, d)."""
    on_device = _any_on_device(dz, eps, std)
    d_dz, d_eps, d_std = _dev(ws, dz, eps, std)
    d_dmu = _device_empty(ws, std.shape, std.dtype)
    d_dlv = _device_empty(ws, std.shape, std.dtype)
    _launch_1d(_reparam_bwd_kernel, std.size, d_dz, d_eps, d_std, d_dmu, d_dlv)
    return _result(ws, on_device, d_dmu), _result(ws, on_device, d_dlv)


@cuda.jit
def _kl_fwd_kernel(mu, logvar, kl):
    """kl_b = 1/2 sum_j (mu^2 + expm1(logvar) - logvar), one thread per row b."""
    i = cuda.grid(1)
    if i < mu.shape[0]:
        acc = kl.dtype.type(0)
        for j in range(mu.shape[1]):
            acc += mu[i, j] * mu[i, j] + math.expm1(logvar[i, j]) - logvar[i, j]
        kl[i] = kl.dtype.type(0.5) * acc


def kl_fwd(mu, logvar, *, ws=None):
    """KL(N(mu, exp(logvar)) || N(0, I)) = 1/2 sum_j (mu^2 + exp(logvar) - 1 - logvar), (B,)."""
    on_device = _any_on_device(mu, logvar)
    d_mu, d_lv = _dev(ws, mu, logvar)
    d_kl = _device_empty(ws, mu.shape[0], mu.dtype)
    _launch_1d(_kl_fwd_kernel, mu.shape[0], d_mu, d_lv, d_kl)
    return _result(ws, on_device, d_kl)


@cuda.jit
def _kl_bwd_kernel(dkl, mu, logvar, dmu, dlogvar):
    """dmu = dkl * mu; dlogvar = dkl * 0.5 * expm1(logvar); one thread per row b."""
    i = cuda.grid(1)
    if i < mu.shape[0]:
        s = dkl[i] * dmu.dtype.type(0.5)
        for j in range(mu.shape[1]):
            dmu[i, j] = dkl[i] * mu[i, j]
            dlogvar[i, j] = s * math.expm1(logvar[i, j])


def kl_bwd(dkl, mu, logvar, *, ws=None):
    """dmu = dkl * mu;  dlogvar = dkl * (exp(logvar) - 1) / 2. Each (B, d)."""
    on_device = _any_on_device(dkl, mu, logvar)
    d_dkl, d_mu, d_lv = _dev(ws, dkl, mu, logvar)
    d_dmu = _device_empty(ws, mu.shape, mu.dtype)
    d_dlv = _device_empty(ws, mu.shape, mu.dtype)
    _launch_1d(_kl_bwd_kernel, mu.shape[0], d_dkl, d_mu, d_lv, d_dmu, d_dlv)
    return _result(ws, on_device, d_dmu), _result(ws, on_device, d_dlv)


# ---------------------------------------------------------------- likelihoods
@cuda.jit
def _bernoulli_fwd_kernel(x, out, ll, ex):
    """ll[k, b] = sum_i x_i out_i - softplus(out_i), one thread per row (k, b); each writes its
    row of ex = exp(-|out|) for the backward."""
    e = cuda.grid(1)
    nk, nb = ll.shape
    if e < nk * nb:
        k = e // nb
        i = e % nb
        zero = ll.dtype.type(0)
        acc = zero
        for j in range(out.shape[2]):
            o = out[k, i, j]
            t = math.exp(-abs(o))
            ex[k, i, j] = t
            acc += x[i, j] * o - ((o if o > zero else zero) + math.log1p(t))  # x o - softplus(o)
        ll[k, i] = acc


def bernoulli_ll_fwd(x, out, *, ws=None):
    """log p(x|z_k) = sum_i x_i out_i - softplus(out_i); logits out (K, B, D) -> (K, B); also
    e = exp(-|out|) (K, B, D) for the backward. Returns (ll, e)."""
    on_device = _any_on_device(x, out)
    d_x, d_out = _dev(ws, x, out)
    d_ll = _device_empty(ws, out.shape[:2], out.dtype)
    d_e = _device_empty(ws, out.shape, out.dtype)
    _launch_1d(_bernoulli_fwd_kernel, out.shape[0] * out.shape[1], d_x, d_out, d_ll, d_e)
    return _result(ws, on_device, d_ll), _result(ws, on_device, d_e)


@cuda.jit
def _bernoulli_bwd_kernel(dll, x, out, ex, dout):
    """dout = dll * (x - sigmoid(out)), sigmoid from ex = exp(-|out|); one thread per element
    of (K, B, D)."""
    e = cuda.grid(1)
    nk, nb, nd = out.shape
    if e < nk * nb * nd:
        k = e // (nb * nd)
        i = (e // nd) % nb
        j = e % nd
        one = dout.dtype.type(1)
        t = ex[k, i, j]
        s = one / (one + t) if out[k, i, j] >= 0 else t / (one + t)
        dout[k, i, j] = dll[k, i] * (x[i, j] - s)


def bernoulli_ll_bwd(dll, x, out, e, *, ws=None):
    """dout = dll * (x - sigmoid(out)), (K, B, D), sigmoid from the forward's e = exp(-|out|)."""
    on_device = _any_on_device(dll, x, out, e)
    d_dll, d_x, d_out, d_e = _dev(ws, dll, x, out, e)
    d_dout = _device_empty(ws, out.shape, out.dtype)
    _launch_1d(_bernoulli_bwd_kernel, out.size, d_dll, d_x, d_out, d_e, d_dout)
    return _result(ws, on_device, d_dout)


@cuda.jit
def _gaussian_fwd_kernel(x, out, logvar, ll):
    """ll[k, b] = -1/2 sum_i ((x - out)^2 exp(-logvar_i) + logvar_i + log 2pi); one thread per row."""
    e = cuda.grid(1)
    nk, nb = ll.shape
    if e < nk * nb:
        k = e // nb
        i = e % nb
        t = ll.dtype.type
        log2pi = t(LOG_2PI)
        acc = t(0)
        for j in range(out.shape[2]):
            r = x[i, j] - out[k, i, j]
            acc += r * r * math.exp(-logvar[j]) + logvar[j] + log2pi
        ll[k, i] = t(-0.5) * acc


def gaussian_ll_fwd(x, out, logvar, *, ws=None):
    """log p(x|z_k) = -1/2 sum_i [(x_i - out_i)^2 exp(-logvar_i) + logvar_i + log(2 pi)], (K, B)."""
    on_device = _any_on_device(x, out, logvar)
    d_x, d_out, d_lv = _dev(ws, x, out, logvar)
    d_ll = _device_empty(ws, out.shape[:2], out.dtype)
    _launch_1d(_gaussian_fwd_kernel, out.shape[0] * out.shape[1], d_x, d_out, d_lv, d_ll)
    return _result(ws, on_device, d_ll)


@cuda.jit
def _gaussian_dout_kernel(dll, x, out, logvar, dout):
    """dout = dll (x - out) exp(-logvar), one thread per element of (K, B, D)."""
    e = cuda.grid(1)
    nk, nb, nd = out.shape
    if e < nk * nb * nd:
        k = e // (nb * nd)
        i = (e // nd) % nb
        j = e % nd
        dout[k, i, j] = dll[k, i] * (x[i, j] - out[k, i, j]) * math.exp(-logvar[j])


@cuda.jit
def _gaussian_dlogvar_kernel(dll, x, out, logvar, dlogvar):
    """dlogvar_j = sum_{k,b} 0.5 dll ((x - out)^2 exp(-logvar_j) - 1), one thread per column j."""
    j = cuda.grid(1)
    nk, nb, nd = out.shape
    if j < nd:
        t = dlogvar.dtype.type
        half, one = t(0.5), t(1)
        prec = math.exp(-logvar[j])
        acc = t(0)
        for k in range(nk):
            for i in range(nb):
                r = x[i, j] - out[k, i, j]
                acc += half * dll[k, i] * (r * r * prec - one)
        dlogvar[j] = acc


def gaussian_ll_bwd(dll, x, out, logvar, *, ws=None):
    """dout = dll (x - out) exp(-logvar) (K, B, D); dlogvar_i = sum_{k,b} dll ((x-out)^2 exp(-logvar_i) - 1) / 2."""
    on_device = _any_on_device(dll, x, out, logvar)
    d_dll, d_x, d_out, d_lv = _dev(ws, dll, x, out, logvar)
    d_dout = _device_empty(ws, out.shape, out.dtype)
    d_dlv = _device_empty(ws, logvar.shape, logvar.dtype)
    _launch_1d(_gaussian_dout_kernel, out.size, d_dll, d_x, d_out, d_lv, d_dout)
    _launch_1d(_gaussian_dlogvar_kernel, out.shape[2], d_dll, d_x, d_out, d_lv, d_dlv)
    return _result(ws, on_device, d_dout), _result(ws, on_device, d_dlv)


# ---------------------------------------------------------------- log-sum-exp over samples
@cuda.jit
def _logsumexp_kernel(a, out):
    """out[b] = log sum_k exp(a[k, b]) shifted by the column max, one thread per column b.

    An all -inf column gives -inf (shift by 0 instead of -inf, so no -inf - -inf = nan)."""
    i = cuda.grid(1)
    if i < a.shape[1]:
        t = out.dtype.type
        m = a[0, i]
        for k in range(1, a.shape[0]):
            if a[k, i] > m:
                m = a[k, i]
        if not math.isfinite(m):
            m = t(0)
        s = t(0)
        for k in range(a.shape[0]):
            s += math.exp(a[k, i] - m)
        if s == t(0):
            out[i] = t(-math.inf)  # log(0), written out: the simulator's math.log raises there
        else:
            out[i] = m + math.log(s)


@cuda.jit
def _softmax_kernel(a, w):
    """w[k, b] = exp(a[k, b] - m) / sum_k exp(a[k, b] - m), m the column max; one thread per
    column b. Normalising the shifted exponentials keeps float32 weights accurate for large |a|;
    an all -inf column gives NaN (0/0), as in the reference."""
    i = cuda.grid(1)
    if i < a.shape[1]:
        t = w.dtype.type
        m = a[0, i]
        for k in range(1, a.shape[0]):
            if a[k, i] > m:
                m = a[k, i]
        if not math.isfinite(m):
            m = t(0)
        s = t(0)
        for k in range(a.shape[0]):
            e = math.exp(a[k, i] - m)
            w[k, i] = e
            s += e
        for k in range(a.shape[0]):
            if s == t(0):
                w[k, i] = t(math.nan)  # 0/0, written out: Python's division (the simulator) raises
            else:
                w[k, i] = w[k, i] / s


def logsumexp(a, *, ws=None):
    """log sum_k exp(a_k) over axis 0, (K, B) -> (B,); all -inf gives -inf."""
    on_device = _any_on_device(a)
    (d_a,) = _dev(ws, a)
    d_out = _device_empty(ws, a.shape[1], a.dtype)
    _launch_1d(_logsumexp_kernel, a.shape[1], d_a, d_out)
    return _result(ws, on_device, d_out)


def softmax(a, *, ws=None):
    """w_k = exp(a_k - m) / sum_k exp(a_k - m) over axis 0, (K, B) -> (K, B)."""
    on_device = _any_on_device(a)
    (d_a,) = _dev(ws, a)
    d_w = _device_empty(ws, a.shape, a.dtype)
    _launch_1d(_softmax_kernel, a.shape[1], d_a, d_w)
    return _result(ws, on_device, d_w)


# ---------------------------------------------------------------- glue: sums, checks, copies
@cuda.jit
def _add_kernel(a, b, out):
    """out = a + b, flat arrays, one thread per element."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[i] + b[i]


def add(a, b, *, ws=None):
    """a + b, two arrays of one shape (gradients of a value read by two operations add up)."""
    on_device = _any_on_device(a, b)
    d_a, d_b = _dev(ws, a, b)
    d_out = _device_empty(ws, a.shape, a.dtype)
    # the kernel sees flat views (reshape of a contiguous device array shares its memory)
    _launch_1d(_add_kernel, d_out.size, d_a.reshape(-1), d_b.reshape(-1), d_out.reshape(-1))
    return _result(ws, on_device, d_out)


@cuda.jit
def _all_finite_kernel(a, flag):
    """flag[0] = 0 if any a[i] is NaN or inf (flag starts at 1); flat a, one thread each.
    Threads that find one all write the same 0, so the race between them is harmless."""
    i = cuda.grid(1)
    if i < a.size:
        if not math.isfinite(a[i]):
            flag[0] = 0


_ONE = np.ones(1, dtype=np.int32)


@functools.cache
def _finite_flag():
    """The one-element device flag of ``all_finite`` and its host copy, made once, so that the
    checks of every training step allocate nothing."""
    return cuda.device_array(1, dtype=np.int32), np.empty(1, dtype=np.int32)


def all_finite(a):
    """True when no entry of ``a`` is NaN or inf, checked on the device: only a one-element
    flag comes back to the host (a host ``a`` is uploaded first)."""
    (d_a,) = _dev(None, a)
    flag, flag_host = _finite_flag()
    flag.copy_to_device(_ONE)
    _launch_1d(_all_finite_kernel, d_a.size, d_a.reshape(-1), flag)
    flag.copy_to_host(ary=flag_host)
    return bool(flag_host[0])


def to_device(a):
    """``a`` on the device: a host array copied into a new device array; a device array as is."""
    if _is_device(a):
        return a
    return cuda.to_device(np.ascontiguousarray(a))


def to_host(a):
    """``a`` as a NumPy array: a device array copied to a new host array; a host array as is."""
    if _is_device(a):
        return a.copy_to_host()
    return a


def copyto(dst, src):
    """dst[...] = src (same shape and dtype), wherever each of them lives.

    dst on the device: a host-to-device or device-to-device copy (dst must be contiguous, as
    every device array made here is); dst on the host: a device-to-host copy straight into dst
    when it is C-contiguous (through a temporary host copy for a strided view), or
    ``np.copyto`` when both are host arrays."""
    if _is_device(dst):
        dst.copy_to_device(src)
    elif not _is_device(src):
        np.copyto(dst, src)
    elif dst.flags.c_contiguous:
        src.copy_to_host(ary=dst)
    else:
        dst[...] = src.copy_to_host()


# ---------------------------------------------------------------- optimizer updates (in place)
@cuda.jit
def _sgd_kernel(p, g, velocity, lr, momentum, tiny):
    """velocity = momentum velocity + g (subnormals flushed to 0); p -= lr velocity; flat
    arrays, one thread each."""
    i = cuda.grid(1)
    if i < p.size:
        vi = momentum * velocity[i] + g[i]
        if abs(vi) < tiny:  # numpy_ref.flush_subnormal (NaN kept)
            vi = vi - vi  # +0 in the dtype
        velocity[i] = vi
        p[i] = p[i] - lr * vi


@cuda.jit
def _adam_kernel(p, g, m, v, step, beta1, one_m_beta1, beta2, one_m_beta2, inv_sqrt_c2, eps,
                 tiny):
    """Adam as numpy_ref.adam_step computes it (step = lr / c1, inv_sqrt_c2 = 1 / sqrt(c2));
    flat arrays."""
    i = cuda.grid(1)
    if i < p.size:
        mi = beta1 * m[i] + one_m_beta1 * g[i]
        vi = beta2 * v[i] + one_m_beta2 * g[i] * g[i]
        if abs(mi) < tiny:  # numpy_ref.flush_subnormal (NaN kept)
            mi = mi - mi
        if abs(vi) < tiny:
            vi = vi - vi  # +0 in the dtype
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - step * mi / (math.sqrt(vi) * inv_sqrt_c2 + eps)


@cuda.jit
def _adagrad_kernel(p, g, s, lr, eps):
    """s += g^2; p -= lr g / (sqrt(s) + eps); flat arrays."""
    i = cuda.grid(1)
    if i < p.size:
        si = s[i] + g[i] * g[i]
        s[i] = si
        p[i] = p[i] - lr * g[i] / (math.sqrt(si) + eps)


def _flat_on_device(a):
    """A flat (1-D) device view of ``a``: a device array's own memory (reshape of a contiguous
    device array is a view), a host array's copy."""
    if _is_device(a):
        return a.reshape(-1)
    return cuda.to_device(np.ascontiguousarray(a).reshape(-1))


def _update_in_place(kernel, state, g, scalars):
    """Run ``kernel(p, g, *rest, *scalars)`` on flat views of ``state = (p, *rest)`` and ``g``.

    Device state arrays are updated in place on the device (no host copy); host state arrays
    are copied to the device and the new values copied back into the caller's arrays (strided
    views included). A host ``g`` is uploaded."""
    d_state = [_flat_on_device(a) for a in state]
    _launch_1d(kernel, d_state[0].size, d_state[0], _flat_on_device(g), *d_state[1:], *scalars)
    for a, d_a in zip(state, d_state):
        if not _is_device(a):
            a[...] = d_a.copy_to_host().reshape(a.shape)


def sgd_step(p, g, velocity, lr, momentum):
    """velocity = momentum * velocity + g (subnormals flushed to 0);  p -= lr * velocity."""
    _update_in_place(_sgd_kernel, (p, velocity), g, sgd_kernel_scalars(p.dtype, lr, momentum))


def adam_step(p, g, m, v, lr, beta1, beta2, eps, t):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2 (subnormals flushed to 0);
    p -= lr * mhat / (sqrt(vhat) + eps), mhat = m / (1 - b1^t), vhat = v / (1 - b2^t),
    t = 1, 2, ... the step count; computed as numpy_ref.adam_step says."""
    _update_in_place(_adam_kernel, (p, m, v), g,
                     adam_kernel_scalars(p.dtype, lr, beta1, beta2, eps, t))


def adagrad_step(p, g, s, lr, eps):
    """s += g^2;  p -= lr * g / (sqrt(s) + eps)."""
    t = p.dtype.type
    _update_in_place(_adagrad_kernel, (p, s), g, (t(lr), t(eps)))


# ================================================================ vector quantisation (VQ-VAE)
# N rows of e numbers (N = B * m slots), a codebook of C rows; idx arrays are int64 in [0, C).
# Sums run in the reference's order, one thread per output, no atomics: the scatter-add is one
# thread per (code, coordinate) scanning the N assignments in order, so it is deterministic.
@cuda.jit
def _vq_assign_kernel(z, codebook, idx):
    """idx[n] = argmin_c sum_j (z[n, j] - codebook[c, j])^2 (strict <: smallest c on a tie);
    one thread per row n."""
    n = cuda.grid(1)
    if n < z.shape[0]:
        zero = z.dtype.type(0)
        best = 0
        best_d2 = zero
        for c in range(codebook.shape[0]):
            acc = zero
            for j in range(z.shape[1]):
                diff = z[n, j] - codebook[c, j]
                acc += diff * diff
            if c == 0 or acc < best_d2:
                best = c
                best_d2 = acc
        idx[n] = best


def vq_assign(z, codebook, *, ws=None):
    """idx_n = argmin_c ||z_n - codebook_c||^2, ties to the smallest c: (N, e), (C, e) -> (N,) int64."""
    on_device = _any_on_device(z, codebook)
    d_z, d_cb = _dev(ws, z, codebook)
    d_idx = _device_empty(ws, z.shape[0], np.int64)
    _launch_1d(_vq_assign_kernel, z.shape[0], d_z, d_cb, d_idx)
    return _result(ws, on_device, d_idx)


@cuda.jit
def _gather_fwd_kernel(table, idx, rows):
    """rows[n, j] = table[idx[n], j]; one thread per element of rows (N, e)."""
    t = cuda.grid(1)
    n_, e_ = rows.shape
    if t < n_ * e_:
        n = t // e_
        j = t % e_
        rows[n, j] = table[idx[n], j]


def gather_fwd(table, idx, *, ws=None):
    """rows_n = table[idx_n]: (C, e), (N,) -> (N, e)."""
    on_device = _any_on_device(table, idx)
    d_table, d_idx = _dev(ws, table, idx)
    d_rows = _device_empty(ws, (idx.shape[0], table.shape[1]), table.dtype)
    _launch_1d(_gather_fwd_kernel, idx.shape[0] * table.shape[1], d_table, d_idx, d_rows)
    return _result(ws, on_device, d_rows)


@cuda.jit
def _gather_bwd_kernel(drows, idx, dtable, counts):
    """dtable[c, j] = sum of drows[n, j] over n with idx[n] = c, n in order; one thread per
    element of dtable (C, e); the thread of j = 0 also writes counts[c] = #{n: idx[n] = c}."""
    t = cuda.grid(1)
    c_, e_ = dtable.shape
    if t < c_ * e_:
        c = t // e_
        j = t % e_
        zero, one = dtable.dtype.type(0), dtable.dtype.type(1)
        acc, count = zero, zero
        for n in range(idx.shape[0]):
            if idx[n] == c:
                acc += drows[n, j]
                count += one
        dtable[c, j] = acc
        if j == 0:
            counts[c] = count


def gather_bwd(drows, idx, n_rows, *, ws=None):
    """dtable_c = sum_{n: idx_n = c} drows_n (n_rows, e); counts_c = #{n: idx_n = c} (n_rows,)."""
    on_device = _any_on_device(drows, idx)
    d_drows, d_idx = _dev(ws, drows, idx)
    d_dtable = _device_empty(ws, (n_rows, drows.shape[1]), drows.dtype)
    d_counts = _device_empty(ws, n_rows, drows.dtype)
    _launch_1d(_gather_bwd_kernel, n_rows * drows.shape[1], d_drows, d_idx, d_dtable, d_counts)
    return _result(ws, on_device, d_dtable), _result(ws, on_device, d_counts)


@cuda.jit
def _sqdist_fwd_kernel(a, b, d):
    """d[n] = sum_j (a[n, j] - b[n, j])^2; one thread per row n."""
    n = cuda.grid(1)
    if n < a.shape[0]:
        acc = d.dtype.type(0)
        for j in range(a.shape[1]):
            r = a[n, j] - b[n, j]
            acc += r * r
        d[n] = acc


def sqdist_fwd(a, b, *, ws=None):
    """d_n = ||a_n - b_n||^2, (N, e) x (N, e) -> (N,)."""
    on_device = _any_on_device(a, b)
    d_a, d_b = _dev(ws, a, b)
    d_d = _device_empty(ws, a.shape[0], a.dtype)
    _launch_1d(_sqdist_fwd_kernel, a.shape[0], d_a, d_b, d_d)
    return _result(ws, on_device, d_d)


@cuda.jit
def _sqdist_bwd_kernel(dd, a, b, da):
    """da[n, j] = (2 dd[n]) (a[n, j] - b[n, j]); one thread per element of (N, e)."""
    t = cuda.grid(1)
    n_, e_ = a.shape
    if t < n_ * e_:
        n = t // e_
        j = t % e_
        da[n, j] = (da.dtype.type(2) * dd[n]) * (a[n, j] - b[n, j])


def sqdist_bwd(dd, a, b, *, ws=None):
    """da = 2 dd (a - b), (N, e): the gradient with respect to ``a``; ``b`` held fixed."""
    on_device = _any_on_device(dd, a, b)
    d_dd, d_a, d_b = _dev(ws, dd, a, b)
    d_da = _device_empty(ws, a.shape, a.dtype)
    _launch_1d(_sqdist_bwd_kernel, a.size, d_dd, d_a, d_b, d_da)
    return _result(ws, on_device, d_da)


@cuda.jit
def _vq_ema_kernel(ema_count, ema_sum, counts, sums, decay, one_m_decay, c_eps, eps,
                   count, ema, codebook):
    """count, ema, codebook of numpy_ref.vq_ema; one thread per code c, each summing the C new
    counts itself, in order (C is small: no cross-thread reduction to get wrong)."""
    c = cuda.grid(1)
    n_codes, e_ = ema_sum.shape
    if c < n_codes:
        total = count.dtype.type(0)
        for i in range(n_codes):
            total += decay * ema_count[i] + one_m_decay * counts[i]
        own = decay * ema_count[c] + one_m_decay * counts[c]
        count[c] = own
        smoothed = (own + eps) / (total + c_eps) * total
        for j in range(e_):
            m = decay * ema_sum[c, j] + one_m_decay * sums[c, j]
            ema[c, j] = m
            codebook[c, j] = m / smoothed


def vq_ema(ema_count, ema_sum, counts, sums, decay, eps, *, ws=None):
    """One EMA step of the codebook with Laplace-smoothed counts; returns (count (C,), sum (C, e),
    codebook (C, e)). Equations: numpy_ref.vq_ema."""
    on_device = _any_on_device(ema_count, ema_sum, counts, sums)
    d_ec, d_es, d_counts, d_sums = _dev(ws, ema_count, ema_sum, counts, sums)
    t = ema_sum.dtype.type  # scalars in the array dtype, as NumPy treats Python floats
    d_count = _device_empty(ws, ema_count.shape, ema_count.dtype)
    d_ema = _device_empty(ws, ema_sum.shape, ema_sum.dtype)
    d_codebook = _device_empty(ws, ema_sum.shape, ema_sum.dtype)
    _launch_1d(_vq_ema_kernel, ema_count.shape[0], d_ec, d_es, d_counts, d_sums, t(decay),
               t(1.0 - decay), t(ema_sum.shape[0] * eps), t(eps), d_count, d_ema, d_codebook)
    return (_result(ws, on_device, d_count), _result(ws, on_device, d_ema),
            _result(ws, on_device, d_codebook))


# ================================================================ planar flows (FlowVAE)
# One block for the FlowVAE's two kernels (equations: numpy_ref.planar_flow_fwd/_bwd and
# docs/derivations.md, "Planar flows"). uh and softplus(w . u) are computed once per (b, i) by
# one thread each; the forward then runs one thread per (k, b) through the L steps; the backward
# runs one thread per example b, since u, w, b are shared by the K samples and their gradients
# sum over k (a loop in a fixed order, no atomics). softplus(m) = max(m, 0) + log1p(exp(-|m|)) is
# written out in each kernel (a device function would need a GPU context to compile to PTX).
@cuda.jit
def _planar_uh_kernel(u, w, uh, sp):
    """uh = u + (softplus(m) - 1 - m) w / (w . w), sp = softplus(m), m = w . u; one thread per
    (b, i)."""
    e = cuda.grid(1)
    nb, nl, nd = u.shape
    if e < nb * nl:
        bb = e // nl
        i = e % nl
        tp = uh.dtype.type
        m, n = tp(0), tp(0)
        for j in range(nd):
            m += w[bb, i, j] * u[bb, i, j]
            n += w[bb, i, j] * w[bb, i, j]
        s = (m if m > tp(0) else tp(0)) + math.log1p(math.exp(-abs(m)))
        c = (s - tp(1) - m) / n
        for j in range(nd):
            uh[bb, i, j] = u[bb, i, j] + c * w[bb, i, j]
        sp[bb, i] = s


@cuda.jit
def _planar_fwd_kernel(z0, w, b, uh, sp, zL, logdet, zin, t):
    """The L steps of one sample (k, b): zL, logdet (summed), zin, t; one thread per (k, b)."""
    e = cuda.grid(1)
    nk, nb, nd = z0.shape
    nl = w.shape[1]
    if e < nk * nb:
        k = e // nb
        bb = e % nb
        tp = zL.dtype.type
        one = tp(1)
        for j in range(nd):
            zL[k, bb, j] = z0[k, bb, j]
        ld = tp(0)
        for i in range(nl):
            acc = tp(0)
            for j in range(nd):
                zin[i, k, bb, j] = zL[k, bb, j]
                acc += zL[k, bb, j] * w[bb, i, j]
            tk = math.tanh(acc + b[bb, i])
            t[i, k, bb] = tk
            for j in range(nd):
                zL[k, bb, j] += uh[bb, i, j] * tk
            ld += math.log(tk * tk + (one - tk * tk) * sp[bb, i])  # both terms >= 0
        logdet[k, bb] = ld


def planar_flow_fwd(z0, u, w, b, *, ws=None):
    """L amortised planar steps. Returns (zL (K, B, d), logdet (K, B), zin (L, K, B, d),
    t (L, K, B), uh (B, L, d)); equations: numpy_ref.planar_flow_fwd."""
    on_device = _any_on_device(z0, u, w, b)
    d_z0, d_u, d_w, d_b = _dev(ws, z0, u, w, b)
    K, B, d = z0.shape
    L = u.shape[1]
    dt = z0.dtype
    d_zL, d_ld = _device_empty(ws, (K, B, d), dt), _device_empty(ws, (K, B), dt)
    d_zin, d_t = _device_empty(ws, (L, K, B, d), dt), _device_empty(ws, (L, K, B), dt)
    d_uh, d_sp = _device_empty(ws, (B, L, d), dt), _device_empty(ws, (B, L), dt)
    _launch_1d(_planar_uh_kernel, B * L, d_u, d_w, d_uh, d_sp)
    _launch_1d(_planar_fwd_kernel, K * B, d_z0, d_w, d_b, d_uh, d_sp, d_zL, d_ld, d_zin, d_t)
    return tuple(_result(ws, on_device, a) for a in (d_zL, d_ld, d_zin, d_t, d_uh))


@cuda.jit
def _planar_bwd_kernel(dzL, dlogdet, zin, t, uh, u, w, g, du, dw, db):
    """The backward of every step of example b (numba_cpu._planar_bwd's loops); one thread per
    b. g (K, B, d) becomes dz0."""
    bb = cuda.grid(1)
    nk, nb, nd = g.shape
    nl = u.shape[1]
    if bb < nb:
        tp = g.dtype.type
        zero, one, two = tp(0), tp(1), tp(2)
        for k in range(nk):
            for j in range(nd):
                g[k, bb, j] = dzL[k, bb, j]
        for i in range(nl - 1, -1, -1):
            m, n = zero, zero
            for j in range(nd):
                m += w[bb, i, j] * u[bb, i, j]
                n += w[bb, i, j] * w[bb, i, j]
            sp = (m if m > zero else zero) + math.log1p(math.exp(-abs(m)))
            c = (sp - one - m) / n
            # sigmoid(m) = exp(-softplus(-m)), sigmoid(m) - 1 = -exp(-softplus(m)): relative
            # accuracy
            spn = (-m if -m > zero else zero) + math.log1p(math.exp(-abs(m)))  # softplus(-m)
            sig, sig_m1 = math.exp(-spn), -math.exp(-sp)
            for j in range(nd):
                du[bb, i, j] = zero
                dw[bb, i, j] = zero
            dm_ld, db_acc = zero, zero
            for k in range(nk):
                tk = t[i, k, bb]
                s = one - tk * tk
                det = tk * tk + s * sp
                gu = zero
                for j in range(nd):
                    gu += g[k, bb, j] * uh[bb, i, j]
                da = (gu + dlogdet[k, bb] * two * tk * (one - sp) / det) * s
                for j in range(nd):
                    du[bb, i, j] += g[k, bb, j] * tk
                    dw[bb, i, j] += da * zin[i, k, bb, j]
                    g[k, bb, j] += da * w[bb, i, j]
                dm_ld += dlogdet[k, bb] * s * sig / det
                db_acc += da
            gw = zero
            for j in range(nd):
                gw += du[bb, i, j] * w[bb, i, j]
            dm = dm_ld + gw * sig_m1 / n
            dn = -gw * c / n
            for j in range(nd):
                gj = du[bb, i, j]
                dw[bb, i, j] = c * gj + dm * u[bb, i, j] + two * dn * w[bb, i, j] + dw[bb, i, j]
                du[bb, i, j] = gj + dm * w[bb, i, j]
            db[bb, i] = db_acc


def planar_flow_bwd(dzL, dlogdet, zin, t, uh, u, w, *, ws=None):
    """Backward of planar_flow_fwd: (dz0 (K, B, d), du (B, L, d), dw (B, L, d), db (B, L));
    equations: numpy_ref.planar_flow_bwd."""
    on_device = _any_on_device(dzL, dlogdet, zin, t, uh, u, w)
    d_in = _dev(ws, dzL, dlogdet, zin, t, uh, u, w)
    dt = dzL.dtype
    d_dz0 = _device_empty(ws, dzL.shape, dt)
    d_du, d_dw = _device_empty(ws, u.shape, dt), _device_empty(ws, w.shape, dt)
    d_db = _device_empty(ws, u.shape[:2], dt)
    _launch_1d(_planar_bwd_kernel, dzL.shape[1], *d_in, d_dz0, d_du, d_dw, d_db)
    return tuple(_result(ws, on_device, a) for a in (d_dz0, d_du, d_dw, d_db))
