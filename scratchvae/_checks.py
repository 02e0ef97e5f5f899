"""Argument validation: every check raises ValueError/TypeError whose message names the argument.

Validation lives here, above the kernels, so a kernel never sees bad input.
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_dtype(name: str, dtype) -> np.dtype:
    """Return np.dtype(dtype) if it is float32 or float64, else raise naming ``name``."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{name} must be 'float32' or 'float64'; got {dtype!r}") from e
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be 'float32' or 'float64'; got {dt.name}")
    return dt


def check_array(name: str, a, *, ndim: int | None = None, shape: tuple | None = None,
                dtype=None, finite: bool = True) -> np.ndarray:
    """Check that ``a`` is a float ndarray of the given ndim/shape/dtype with finite entries.

    ``shape`` may contain None for a free axis. Returns ``a`` as a C-contiguous array (a copy only
    when it was not contiguous; the dtype is never changed).
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(a).__name__}")
    if dtype is not None:
        dt = np.dtype(dtype)
        if a.dtype != dt:
            raise ValueError(
                f"{name} must have dtype {dt.name} (the model's dtype); got {a.dtype.name}. "
                f"Convert explicitly, e.g. {name}.astype(np.{dt.name}).")
    elif a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64; got {a.dtype.name}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional; got shape {a.shape}")
    if shape is not None:
        if a.ndim != len(shape) or any(s is not None and s != t for s, t in zip(shape, a.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name} must have shape {want}; got {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {a.shape}")
    if finite and not np.isfinite(a).all():
        bad = int(np.size(a) - np.isfinite(a).sum())
        raise ValueError(f"{name} must be finite; it has {bad} NaN or inf entries")
    return np.ascontiguousarray(a)


def check_bool(name: str, v) -> bool:
    """Check that ``v`` is a bool (or NumPy bool), not any truthy value."""
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(v).__name__} {v!r}")
    return bool(v)


def check_int(name: str, v, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """Check that ``v`` is an integer (not bool) within [min_value, max_value]."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(v).__name__}")
    v = int(v)
    if min_value is not None and v < min_value:
        raise ValueError(f"{name} must be >= {min_value}; got {v}")
    if max_value is not None and v > max_value:
        raise ValueError(f"{name} must be <= {max_value}; got {v}")
    return v


def check_float(name: str, v, *, min_value: float | None = None, max_value: float | None = None,
                min_inclusive: bool = True, max_inclusive: bool = True) -> float:
    """Check that ``v`` is a finite real number within the given bounds."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number; got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}")
    if min_value is not None and (v < min_value or (not min_inclusive and v == min_value)):
        op = ">=" if min_inclusive else ">"
        raise ValueError(f"{name} must be {op} {min_value}; got {v}")
    if max_value is not None and (v > max_value or (not max_inclusive and v == max_value)):
        op = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {op} {max_value}; got {v}")
    return v


def check_choice(name: str, v, choices) -> str:
    """Check that ``v`` is one of ``choices`` (strings)."""
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, one of {tuple(choices)}; got {type(v).__name__}")
    if v not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {v!r}")
    return v


def check_sizes(name: str, v, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Check a sequence of positive layer widths, e.g. hidden_dims=(400, 200)."""
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
        raise TypeError(f"{name} must be a sequence of positive ints; got {type(v).__name__}")
    out = tuple(check_int(f"{name}[{i}]", s, min_value=1) for i, s in enumerate(v))
    if not allow_empty and not out:
        raise ValueError(f"{name} must not be empty")
    return out


def check_rng(name: str, rng) -> np.random.Generator:
    """Accept a Generator, an int seed or None (fresh entropy); return a Generator."""
    if rng is None or isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"{name} must be a numpy.random.Generator, an int seed or None; "
                    f"got {type(rng).__name__}")


def check_labels(name: str, y, n_classes: int, n: int | None = None) -> np.ndarray:
    """Check integer class labels in [0, n_classes), shape (n,)."""
    if not isinstance(y, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of ints; got {type(y).__name__}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype; got {y.dtype.name}")
    if y.ndim != 1 or (n is not None and y.shape[0] != n):
        want = f"({n},)" if n is not None else "(n,)"
        raise ValueError(f"{name} must have shape {want}; got {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{name} must lie in [0, {n_classes}); got values in "
                         f"[{y.min()}, {y.max()}]")
    return y.astype(np.int64, copy=False)
