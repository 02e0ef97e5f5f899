"""Kernel sets: one field per operation, one signature per field, one provider per backend.

The model, layers and distributions only ever call ``k.<kernel>(...)`` on a ``Kernels``
object handed to them, so they never branch on the backend.

Symbols: ``K`` samples, ``B`` batch, ``D`` data dimension, ``d``
latent dimension, ``F`` a layer's width.

Every kernel takes arrays of one float dtype (float32 or float64) and returns arrays of that
dtype.  The backend modules' functions do no validation: the layer above them validates (the
model and optimizers through ``scratchvae._checks``; a direct caller through ``get_kernels``,
whose kernels check their arguments against this table first), so a kernel never raises on
bad input and never sees it.

Every kernel that returns arrays also takes a keyword ``ws=None``: with a
``scratchvae.kernels.workspace.Workspace`` its outputs and temporaries are that workspace's reused
buffers (no allocation after the first step of a shape), without one they are fresh arrays. The
NumPy reference accepts ``ws`` and allocates anyway (it is written for reading). Code above the
kernels never passes ``ws`` itself: ``bind(k, workspace)`` returns a copy of the set ``k`` whose
array-returning kernels take their outputs from ``workspace``, and layers, distributions, losses
and models call whichever set they are handed the same way. ``k.empty(shape, dtype)`` is a host
scratch array from the set's workspace (a fresh one for an unbound set).

Arrays may live on a device: the cuda kernels take host (NumPy) or device arrays and return
device arrays when any argument is one (NumPy arrays otherwise), so parameters, optimizer state
and work buffers can stay on the GPU across steps. ``to_device``/``to_host`` move an array
(both are the identity on the CPU backends); model code reads values on the host only through
``to_host``.

===================  ==============================================  ===========================
kernel               arguments                                       returns
===================  ==============================================  ===========================
matmul               a (M, N), b (N, P)                              a @ b (M, P)
matmul_at            a (N, M), b (N, P)                              a.T @ b (M, P)
matmul_bt            a (M, P), b (N, P)                              a @ b.T (M, N)
bias_act_fwd         z (N, F), b (F,), act (int code)                (h, y): h = z + b, y = f(h)
bias_act_bwd         dy (N, F), h (N, F), y (N, F), act              (dh, db): dh = dy*f'(h), db = sum_n dh
reparam_fwd          mu (B, d), logvar (B, d), eps (K, B, d)         (z (K, B, d), std (B, d))
reparam_bwd          dz (K, B, d), eps (K, B, d), std (B, d)         (dmu, dlogvar) each (B, d)
kl_fwd               mu (B, d), logvar (B, d)                        kl (B,)
kl_bwd               dkl (B,), mu, logvar                            (dmu, dlogvar) each (B, d)
bernoulli_ll_fwd     x (B, D), out (K, B, D)                         ll (K, B), e = exp(-|out|) (K, B, D)
bernoulli_ll_bwd     dll (K, B), x, out, e                           dout (K, B, D)
gaussian_ll_fwd      x (B, D), out (K, B, D), logvar (D,)            ll (K, B)
gaussian_ll_bwd      dll (K, B), x, out, logvar                      (dout (K, B, D), dlogvar (D,))
logsumexp            a (K, B)                                        (B,) log sum_k exp(a_k)
softmax              a (K, B)                                        (K, B) exp(a_k) / sum_k exp(a)
add                  a, b (same shape)                               a + b
all_finite           a                                               bool: no NaN or inf in a
to_device            a                                               a where the kernels compute
to_host              a                                               a as a NumPy array
copyto               dst, src (same shape)                           None (dst[...] = src)
sgd_step             p, g, velocity, lr, momentum                    None (p, velocity in place)
adam_step            p, g, m, v, lr, beta1, beta2, eps, t            None (p, m, v in place)
adagrad_step         p, g, s, lr, eps                                None (p, s in place)
-------------------  ----------------------------------------------  ---------------------------
vq_assign            z (N, e), codebook (C, e)                       idx (N,) int64: nearest code
gather_fwd           table (C, e), idx (N,) int64                    rows (N, e) = table[idx]
gather_bwd           drows (N, e), idx (N,), n_rows (int C)          (dtable (C, e), counts (C,))
sqdist_fwd           a (N, e), b (N, e)                              d (N,) = sum_j (a - b)^2
sqdist_bwd           dd (N,), a, b                                   da (N, e) = 2 dd (a - b)
vq_ema               ema_count (C,), ema_sum (C, e), counts (C,),    (count (C,), sum (C, e),
                     sums (C, e), decay, eps                          codebook (C, e))
-------------------  ----------------------------------------------  ---------------------------
planar_flow_fwd      z0 (K, B, d), u, w (B, L, d), b (B, L)          (zL (K, B, d), logdet (K, B),
                                                                     zin (L, K, B, d), t (L, K, B),
                                                                     uh (B, L, d))
planar_flow_bwd      dzL (K, B, d), dlogdet (K, B), zin, t, uh, u, w (dz0 (K, B, d), du, dw
                                                                     (B, L, d), db (B, L))
===================  ==============================================  ===========================

The second-last block is the vector quantisation of the VQ-VAE: ``N`` rows of size ``e`` (the B * m
encoder outputs), a codebook of ``C`` rows. ``vq_assign`` breaks ties to the smallest code
number; ``gather_bwd`` is the gather's backward (a scatter-add into the table rows, rows added
in order) with the number of rows sent to each code; ``sqdist_bwd`` differentiates the first
argument only (the other is behind a stop-gradient); ``vq_ema`` is one exponential-moving-average
step of the codebook with Laplace-smoothed counts (van den Oord et al. 2017, appendix A.1).
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Callable, NamedTuple


from ._activation_codes import ACTIVATION_CODES
from ._validate import validated
from .workspace import empty as workspace_empty


class Kernels(NamedTuple):
    """The kernel set of one backend. Field order is the table in the module docstring."""

    name: str
    matmul: Callable
    matmul_at: Callable
    matmul_bt: Callable
    bias_act_fwd: Callable
    bias_act_bwd: Callable
    reparam_fwd: Callable
    reparam_bwd: Callable
    kl_fwd: Callable
    kl_bwd: Callable
    bernoulli_ll_fwd: Callable
    bernoulli_ll_bwd: Callable
    gaussian_ll_fwd: Callable
    gaussian_ll_bwd: Callable
    logsumexp: Callable
    softmax: Callable
    add: Callable
    all_finite: Callable
    to_device: Callable
    to_host: Callable
    copyto: Callable
    sgd_step: Callable
    adam_step: Callable
    adagrad_step: Callable
    # ---- vector quantisation (VQ-VAE)
    vq_assign: Callable
    gather_fwd: Callable
    gather_bwd: Callable
    sqdist_fwd: Callable
    sqdist_bwd: Callable
    vq_ema: Callable
    # ---- planar flows (FlowVAE)
    planar_flow_fwd: Callable
    planar_flow_bwd: Callable
    # (not a kernel; a field with a default must come after every field without one)
    workspace: object = None   # the Workspace the array kernels are bound to (None: unbound)

    def empty(self, shape, dtype):
        """A host array of ``shape`` and ``dtype``: the bound workspace's buffer for this position
        in the step, or a fresh ``np.empty`` when the set is unbound."""
        return workspace_empty(self.workspace, shape, dtype)


KERNEL_NAMES = tuple(f for f in Kernels._fields if f not in ("name", "workspace"))

# backend name -> module providing a function per kernel name; imported lazily so that
# numba (and numba.cuda) load only when asked for.
_REGISTRY = {
    "numpy": "scratchvae.kernels.numpy_ref",
    "numba": "scratchvae.kernels.numba_cpu",
    "cuda": "scratchvae.kernels.cuda",
}
BACKENDS = tuple(_REGISTRY)
_RAW: dict[str, Kernels] = {}
_CACHE: dict[tuple, Kernels] = {}


def get_kernels(backend: str, validate: bool = True) -> Kernels:
    """Return the ``Kernels`` of ``backend`` ("numpy", "numba" or "cuda").

    With ``validate`` (the default, for calling kernels yourself) every kernel first checks its
    arguments against the table above (shapes, one float dtype; ``kernels/_validate.py``) and
    raises ValueError/TypeError naming the kernel and the argument, rather than letting an njit
    loop read out of bounds. ``validate=False`` gives the backend's functions themselves: the
    model and the optimizers, which validate their own inputs once, use those.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}; got {type(backend).__name__}")
    if backend not in _REGISTRY:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    key = (backend, bool(validate))
    if key not in _CACHE:
        if backend not in _RAW:
            module = importlib.import_module(_REGISTRY[backend])
            if hasattr(module, "check_available"):
                module.check_available()  # e.g. cuda without a GPU raises ValueError here
            _RAW[backend] = Kernels(name=backend, **{f: getattr(module, f) for f in KERNEL_NAMES})
        raw = _RAW[backend]
        _CACHE[key] = (raw._replace(**{f: validated(f, getattr(raw, f)) for f in KERNEL_NAMES})
                       if validate else raw)
    return _CACHE[key]


def _takes_ws(fn) -> bool:
    return "ws" in inspect.signature(fn).parameters


def bind(k: Kernels, workspace) -> Kernels:
    """A copy of the kernel set ``k`` whose array-returning kernels take their outputs and
    temporaries from ``workspace`` (a ``scratchvae.kernels.workspace.Workspace``; None gives the
    unbound set back). The kernels that return no arrays (the optimizer updates, ``copyto``,
    ``all_finite``, ``to_host``, ``to_device``) are shared unchanged.

    Whatever a bound kernel returns lives until the workspace is rewound and the same position
    is reached again; whoever owns the workspace decides when that is (a model rewinds its own at
    every ``loss_and_grads``).
    """
    if not isinstance(k, Kernels):
        raise TypeError(f"k must be a Kernels set from get_kernels; got {type(k).__name__}")
    base = k if k.workspace is None else unbind(k)
    if workspace is None:
        return base
    if not (hasattr(workspace, "empty") and hasattr(workspace, "rewind")):
        raise TypeError(f"workspace must be a Workspace or None; got {type(workspace).__name__}")
    bound = {f: functools.partial(getattr(base, f), ws=workspace)
             for f in KERNEL_NAMES if _takes_ws(getattr(base, f))}
    return base._replace(workspace=workspace, **bound)


def unbind(k: Kernels) -> Kernels:
    """The unbound set ``k`` was made from by ``bind`` (``k`` itself when it is unbound)."""
    if k.workspace is None:
        return k
    return k._replace(workspace=None, **{f: getattr(k, f).func for f in KERNEL_NAMES
                                         if isinstance(getattr(k, f), functools.partial)})


__all__ = ["Kernels", "KERNEL_NAMES", "BACKENDS", "ACTIVATION_CODES", "get_kernels", "bind",
           "unbind"]
