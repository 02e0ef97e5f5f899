"""Argument checks for kernels called directly: shapes against the kernel table, one float dtype,
arrays where arrays belong, before the backend runs (an unchecked njit loop would read out of
bounds on a mismatched shape instead of raising).

``get_kernels(backend)`` returns the backend's kernels wrapped by ``validated``; the model and
the optimizers validate their own arguments once and call the raw set
(``get_kernels(backend, validate=False)``), so a training step pays for no second check.

Each kernel's arguments are written as in the table of ``kernels/__init__.py``: ``"a:M,N"`` is
a 2-D array whose axes are named M and N, and every axis name must have one size across the
arguments of a call; ``"p:*"`` is an array of any shape that every other ``*`` argument of the
call shares; a name without a colon is a scalar (``act`` an activation code, ``t`` a step count,
``n_rows`` a count >= 1, any other a finite number). An argument named ``idx`` is an int64
array of row numbers, each in [0, bound) for the bound ``INDEX_BOUNDS`` names (checked on host
arrays; a device array's values are not read back).
"""
from __future__ import annotations

import functools
import inspect
import numbers

import numpy as np

from ._activation_codes import ACTIVATION_CODES

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

SPECS = {
    "matmul": ("a:M,N", "b:N,P"),
    "matmul_at": ("a:N,M", "b:N,P"),
    "matmul_bt": ("a:M,P", "b:N,P"),
    "bias_act_fwd": ("z:N,F", "b:F", "act"),
    "bias_act_bwd": ("dy:N,F", "h:N,F", "y:N,F", "act"),
    "reparam_fwd": ("mu:B,d", "logvar:B,d", "eps:K,B,d"),
    "reparam_bwd": ("dz:K,B,d", "eps:K,B,d", "std:B,d"),
    "kl_fwd": ("mu:B,d", "logvar:B,d"),
    "kl_bwd": ("dkl:B", "mu:B,d", "logvar:B,d"),
    "bernoulli_ll_fwd": ("x:B,D", "out:K,B,D"),
    "bernoulli_ll_bwd": ("dll:K,B", "x:B,D", "out:K,B,D", "e:K,B,D"),
    "gaussian_ll_fwd": ("x:B,D", "out:K,B,D", "logvar:D"),
    "gaussian_ll_bwd": ("dll:K,B", "x:B,D", "out:K,B,D", "logvar:D"),
    "logsumexp": ("a:K,B",),
    "softmax": ("a:K,B",),
    "add": ("a:*", "b:*"),
    "all_finite": ("a:*",),
    "to_device": ("a:*",),
    "to_host": ("a:*",),
    "copyto": ("dst:*", "src:*"),
    "sgd_step": ("p:*", "g:*", "velocity:*", "lr", "momentum"),
    "adam_step": ("p:*", "g:*", "m:*", "v:*", "lr", "beta1", "beta2", "eps", "t"),
    "adagrad_step": ("p:*", "g:*", "s:*", "lr", "eps"),
    # ---- vector quantisation (VQ-VAE)
    "vq_assign": ("z:N,e", "codebook:C,e"),
    "gather_fwd": ("table:C,e", "idx:N"),
    "gather_bwd": ("drows:N,e", "idx:N", "n_rows"),
    "sqdist_fwd": ("a:N,e", "b:N,e"),
    "sqdist_bwd": ("dd:N", "a:N,e", "b:N,e"),
    "vq_ema": ("ema_count:C", "ema_sum:C,e", "counts:C", "sums:C,e", "decay", "eps"),
    # ---- planar flows (FlowVAE)
    "planar_flow_fwd": ("z0:K,B,d", "u:B,L,d", "w:B,L,d", "b:B,L"),
    "planar_flow_bwd": ("dzL:K,B,d", "dlogdet:K,B", "zin:L,K,B,d", "t:L,K,B", "uh:B,L,d",
                        "u:B,L,d", "w:B,L,d"),
}
# int64 arrays of row numbers (every other array argument is of the call's float dtype), and
# per kernel what bounds them: an axis of another argument or a scalar argument.
INDEX_ARRAYS = ("idx",)
# kernels that move or copy arrays rather than compute with them: row numbers (int64) too
MOVERS = ("to_device", "to_host", "copyto")
INDEX_BOUNDS = {"gather_fwd": "C", "gather_bwd": "n_rows"}
# axes that must not be empty: the kernel would return an answer that means nothing
NONEMPTY = {"vq_assign": ("C",)}
IN_PLACE = {"copyto": ("dst",), "sgd_step": ("p", "velocity"), "adam_step": ("p", "m", "v"),
            "adagrad_step": ("p", "s")}


def is_device_array(a) -> bool:
    """True for a GPU array of numba.cuda, real (it exposes ``__cuda_array_interface__``) or the
    simulator's ``FakeCUDAArray``; checked by duck type so that this needs no CUDA import."""
    return not isinstance(a, np.ndarray) and (hasattr(a, "__cuda_array_interface__")
                                              or type(a).__name__ == "FakeCUDAArray")


def _parse(spec):
    name, _, axes = spec.partition(":")
    return name, (None if not axes else tuple(axes.split(",")))


def check_kernel_args(kernel: str, args: tuple, ws=None) -> None:
    """Raise ValueError/TypeError naming the kernel and the argument unless ``args`` (in the
    order of ``SPECS[kernel]``) fit it: shapes, one float dtype, in-place arrays writeable,
    scalars finite, row numbers in range, ``ws`` a Workspace or None."""
    specs = [_parse(s) for s in SPECS[kernel]]
    sizes, star, dtype, first = {}, None, None, None
    scalars, index = {}, None
    for (name, axes), a in zip(specs, args):
        where = f"{kernel}: {name}"
        if axes is None:
            _check_scalar(where, name, a)
            scalars[name] = a
            continue
        if not (isinstance(a, np.ndarray) or is_device_array(a)):
            raise TypeError(f"{where} must be a numpy.ndarray (or a device array of the cuda "
                            f"backend); got {type(a).__name__}")
        dt = np.dtype(a.dtype)
        if name in INDEX_ARRAYS:  # row numbers: int64 whatever the float dtype of the call
            if dt != np.dtype(np.int64):
                raise ValueError(f"{where} must have dtype int64 (row numbers); got {dt.name}")
            index = a
        elif dt not in FLOAT_DTYPES and not (kernel in MOVERS and dt == np.dtype(np.int64)):
            raise ValueError(f"{where} must have dtype float32 or float64"
                             f"{' (or int64)' if kernel in MOVERS else ''}; got {dt.name}")
        elif dtype is None:
            dtype, first = dt, name
        elif dt != dtype:
            raise ValueError(f"{where} has dtype {dt.name} but {first} has {dtype.name}; "
                             "a kernel computes in one dtype")
        shape = tuple(a.shape)
        if axes == ("*",):
            if star is None:
                star = (name, shape)
            elif shape != star[1]:
                raise ValueError(f"{where} must have the shape of {star[0]}, {star[1]}; got {shape}")
        else:
            if len(shape) != len(axes):
                raise ValueError(f"{where} must be {len(axes)}-dimensional ({', '.join(axes)}); "
                                 f"got shape {shape}")
            for axis, n in zip(axes, shape):
                if axis in sizes and sizes[axis][0] != n:
                    size, other = sizes[axis]
                    raise ValueError(f"{where} has {axis} = {n} (shape {shape}) but {other} "
                                     f"has {axis} = {size}; expected ({', '.join(axes)}) with "
                                     f"{axis} = {size}")
                sizes.setdefault(axis, (n, name))
        if name in IN_PLACE.get(kernel, ()) and isinstance(a, np.ndarray) and not a.flags.writeable:
            raise ValueError(f"{where} is updated in place, so it must be writeable")
    for axis in NONEMPTY.get(kernel, ()):
        if sizes[axis][0] == 0:
            raise ValueError(f"{kernel}: {sizes[axis][1]} must not be empty ({axis} = 0): there "
                             "is no nearest row in an empty table")
    if index is not None and kernel in INDEX_BOUNDS and isinstance(index, np.ndarray) and index.size:
        bound_name = INDEX_BOUNDS[kernel]
        bound = scalars[bound_name] if bound_name in scalars else sizes[bound_name][0]
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= bound:
            raise ValueError(f"{kernel}: idx must hold row numbers in [0, {bound}) "
                             f"({bound_name} = {bound}); got values in [{lo}, {hi}]")
    if ws is not None and not (hasattr(ws, "empty") and hasattr(ws, "rewind")):
        raise TypeError(f"{kernel}: ws must be a Workspace or None; got {type(ws).__name__}")


def _check_scalar(where, name, v):
    if name == "act":
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) \
                or int(v) not in ACTIVATION_CODES.values():
            raise ValueError(f"{where} must be an activation code, one of "
                             f"{sorted(ACTIVATION_CODES.values())} ({ACTIVATION_CODES}); got {v!r}")
    elif name == "n_rows":
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{where} must be the number of rows, an int >= 1; got {v!r}")
    elif name == "t":
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{where} must be the step count, an int >= 1; got {v!r}")
    elif name == "decay":
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= v < 1.0:
            raise ValueError(f"{where} must be a decay rate in [0, 1); got {v!r}")
    elif name == "eps":   # Adam, Adagrad and the codebook EMA divide by a sum that holds it
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 < v < np.inf:
            raise ValueError(f"{where} must be a positive finite number; got {v!r}")
    elif isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
        raise ValueError(f"{where} must be a finite number; got {v!r}")


def validated(name: str, fn):
    """``fn`` (the backend's kernel ``name``) behind ``check_kernel_args``; same signature."""
    signature = inspect.signature(fn)
    names = [_parse(s)[0] for s in SPECS[name]]

    @functools.wraps(fn)
    def kernel(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{name}{signature}: {e}") from None
        check_kernel_args(name, tuple(bound.arguments[n] for n in names),
                          bound.arguments.get("ws"))
        return fn(*args, **kwargs)
    return kernel
