"""First-order optimizers: SGD (with momentum), Adam and Adagrad.

Each optimizer keeps per-parameter state and updates a params dict in place with
``opt.step(params, grads)``.  The update maths lives in the kernels (``sgd_step``, ``adam_step``,
``adagrad_step``, see ``scratchvae/kernels/numpy_ref.py``); this module validates, owns the state
and calls ``k.<kernel>(...)`` for each key. The kernels follow the arrays: the numba kernels for
NumPy arrays, the cuda kernels for device arrays, so ``opt.step(params, grads)`` needs no backend
argument; ``backend="numpy"`` (or ``set_backend``) fixes one explicitly.

Symbols: ``p`` a parameter array, ``g`` its gradient (same shape and dtype), ``lr`` the learning
rate, ``t = 1, 2, ...`` the number of steps taken, counting the current one.

State is created lazily at the first step, one array per key and slot, with the shape and dtype
of the parameter (float32 stays float32), where the parameter lives: parameters may be device
arrays of the cuda backend (``scratchvae.train.fit`` keeps them on the GPU across steps), and
then the state is created on the device too and updated there.  ``state_dict()`` returns a flat dict of plain numbers
and arrays (the arrays under ``"<slot>:<key>"``, e.g. ``"m:enc.W0"``), so ``scratchvae.io`` can
save it without pickle.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._checks import FLOAT_DTYPES, check_array, check_bool, check_float, check_int
from .kernels import get_kernels
from .kernels._validate import is_device_array


def _check_lr(lr) -> float:
    return check_float("lr", lr, min_value=0.0, min_inclusive=False)


def _check_unit(name: str, v) -> float:
    """A decay rate in [0, 1): momentum, beta1, beta2."""
    return check_float(name, v, min_value=0.0, max_value=1.0, max_inclusive=False)


def _check_eps(eps) -> float:
    return check_float("eps", eps, min_value=0.0, min_inclusive=False)


def _check_device_array(name: str, a, shape, dtype) -> None:
    """Shape and dtype of a device array (its values are checked by the ``all_finite`` kernel)."""
    if tuple(a.shape) != tuple(shape) or np.dtype(a.dtype) != np.dtype(dtype):
        raise ValueError(f"{name} must have shape {tuple(shape)} and dtype {np.dtype(dtype).name}; "
                         f"got {tuple(a.shape)} {np.dtype(a.dtype).name}")


def _check_param(key: str, p) -> None:
    """A parameter is updated in place, so it must be a writeable C-contiguous float array
    (a NumPy array, or a device array of the cuda backend)."""
    if type(p) is np.ndarray and p.dtype in FLOAT_DTYPES and p.flags.c_contiguous \
            and p.flags.writeable:
        return  # the usual case, in four reads
    name = f"params[{key!r}]"
    if is_device_array(p):
        if np.dtype(p.dtype) not in FLOAT_DTYPES:
            raise ValueError(f"{name} must have dtype float32 or float64; got {p.dtype}")
        return
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(p).__name__}")
    if p.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must have dtype float32 or float64; got {p.dtype.name}")
    if not p.flags.c_contiguous or not p.flags.writeable:
        raise ValueError(f"{name} must be a writeable C-contiguous array (it is updated in place)")


def _key_difference(name: str, have, want, want_name: str) -> str:
    """Message naming the keys of ``name`` missing from / extra to ``want_name``'s keys."""
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    parts = ([f"missing {missing}"] if missing else []) + ([f"extra {extra}"] if extra else [])
    return f"{name} must have exactly the keys of {want_name}; " + ", ".join(parts)


class Optimizer:
    """Base class: validation, lazily created per-key state, state_dict; no update maths.

    A subclass sets ``slots`` (names of its per-key state arrays, at least one),
    ``hyper_names`` (its hyperparameters, stored as attributes), ``_check_hyper`` (validates
    them) and ``_update`` (calls its kernel, from the kernel set ``k``, on one key).
    """

    slots: tuple[str, ...] = ()
    hyper_names: tuple[str, ...] = ()

    def __init__(self, backend: str | None = None, **hyper):
        for name, value in self._check_hyper(**hyper).items():
            setattr(self, name, value)
        self._k = None
        self._hyper_seen = None  # the hyperparameter values _checked_hyper last validated
        self.backend = None
        if backend is not None:
            self.set_backend(backend)
        self.reset()

    # ------------------------------------------------------------------ subclass hooks
    @staticmethod
    def _check_hyper(**hyper) -> dict:
        raise NotImplementedError

    def _update(self, k, p: np.ndarray, g: np.ndarray, key: str, hyper: dict) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ public API
    def set_backend(self, name: str | None) -> None:
        """Use the kernels of backend ``name`` ("numpy", "numba" or "cuda") from now on; None:
        the kernels for the arrays each step is given (numba for NumPy arrays, cuda for device
        arrays), the default."""
        # raises ValueError/TypeError naming `backend`; raw kernels: step() validates everything
        k = None if name is None else get_kernels(name, validate=False)
        if self._k is not None and self._k is not k:
            # state the old backend kept on a device comes back to the host
            self._state = {slot: {key: self._k.to_host(a) for key, a in st.items()}
                           for slot, st in self._state.items()}
        self._k = k
        self.backend = name

    def _checked_hyper(self) -> dict:
        """The hyperparameters, validated (they are attributes a schedule may set between steps);
        validated again only when one has changed since the last step."""
        values = tuple(getattr(self, n) for n in self.hyper_names)
        if values != self._hyper_seen:
            self._hyper_checked = self._check_hyper(**dict(zip(self.hyper_names, values)))
            self._hyper_seen = values
        return self._hyper_checked

    def _kernels_for(self, params):
        """The explicit backend's kernels, or those for where ``params`` live."""
        if self.backend is not None:
            return self._k
        on_device = any(type(p) is not np.ndarray and is_device_array(p) for p in params.values())
        name = "cuda" if on_device else "numba"
        if self._k is None or self._k.name != name:
            self._k = get_kernels(name, validate=False)
        return self._k

    def reset(self) -> None:
        """Forget all state (step count and per-key arrays); hyperparameters are kept."""
        self.t = 0
        self._state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}

    def step(self, params: dict, grads: dict, check_finite: bool = True) -> None:
        """Update every array of ``params`` in place from ``grads`` (same keys, shapes, dtypes).

        Everything is validated before anything changes, so a call that raises leaves the
        params and the optimizer state as they were. ``check_finite=False`` skips the check
        that every gradient is finite (for gradients the caller has just checked, as ``fit``).
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
        k = self._kernels_for(params)
        hyper = self._checked_hyper()
        grads = self._check_step_args(params, grads, check_bool("check_finite", check_finite))
        if self.t == 0:  # state lives where the parameters live (to_device: host -> device)
            for slot in self.slots:
                self._state[slot] = {
                    key: (k.to_device(np.zeros(p.shape, p.dtype)) if is_device_array(p)
                          else np.zeros(p.shape, p.dtype)) for key, p in params.items()}
        self.t += 1
        for key, p in params.items():
            self._update(k, p, grads[key], key, hyper)

    def state_dict(self) -> dict:
        """Return hyperparameters, step count and copies of the state arrays as a flat dict.

        Keys: ``"optimizer"`` (the class name), each hyperparameter, ``"t"``, and
        ``"<slot>:<param key>"`` for each state array. Values are str, float, int or ndarray.
        """
        d = {"optimizer": type(self).__name__}
        d.update({n: getattr(self, n) for n in self.hyper_names})
        d["t"] = self.t
        for slot in self.slots:
            for key, a in self._state[slot].items():
                d[f"{slot}:{key}"] = np.array(a if isinstance(a, np.ndarray)
                                              else self._k.to_host(a))  # a host copy
        return d

    def load_state_dict(self, d: Mapping) -> None:
        """Restore hyperparameters, step count and state from ``state_dict()``'s output.

        The arrays are copied. Validated in full before anything changes.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"d must be a dict from state_dict(); got {type(d).__name__}")
        name = type(self).__name__
        required = ("optimizer", *self.hyper_names, "t")
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"d is missing entries {missing} of a {name} state_dict")
        if d["optimizer"] != name:
            raise ValueError(f"d['optimizer'] must be {name!r}; got {d['optimizer']!r}")
        hyper = self._check_hyper(**{n: d[n] for n in self.hyper_names})
        t = check_int("d['t']", d["t"], min_value=0)
        state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}
        for entry, value in d.items():
            if entry in required:
                continue
            slot, sep, key = entry.partition(":")
            if not sep or slot not in state:
                raise ValueError(f"d has an unknown entry {entry!r}; expected "
                                 f"'<slot>:<key>' with slot one of {self.slots}")
            state[slot][key] = check_array(f"d[{entry!r}]", value).copy()
        slot_keys = [list(state[s]) for s in self.slots]
        for slot, keys in zip(self.slots, slot_keys):
            if set(keys) != set(slot_keys[0]):
                raise ValueError(_key_difference(f"d's {slot!r} state", keys, slot_keys[0],
                                                 f"its {self.slots[0]!r} state"))
            for key in keys:
                a, a0 = state[slot][key], state[self.slots[0]][key]
                if a.shape != a0.shape or a.dtype != a0.dtype:
                    raise ValueError(f"d['{slot}:{key}'] must match d['{self.slots[0]}:{key}'] in "
                                     f"shape and dtype; got {a.shape} {a.dtype.name} vs "
                                     f"{a0.shape} {a0.dtype.name}")
        if (t == 0) != (not slot_keys[0]):
            raise ValueError(f"d['t'] = {t} but d holds state for {len(slot_keys[0])} keys; "
                             "state exists exactly when t > 0")
        for n, v in hyper.items():
            setattr(self, n, v)
        self.t = t
        self._state = state

    def __repr__(self) -> str:
        hyper = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.hyper_names)
        return f"{type(self).__name__}({hyper}, backend={self.backend!r})"

    # ------------------------------------------------------------------ validation
    def _check_step_args(self, params, grads, check_finite: bool = True) -> dict:
        """Validate params and grads against each other and the state; return checked grads.

        Finiteness is checked with the backend's ``all_finite`` kernel (no temporary arrays,
        and on the device for device arrays)."""
        if not isinstance(grads, Mapping):   # (params: checked by step before it reads them)
            raise TypeError(f"grads must be a dict of arrays; got {type(grads).__name__}")
        if not params:
            raise ValueError("params must not be empty")
        if grads.keys() != params.keys():
            raise ValueError(_key_difference("grads", list(grads), list(params), "params"))
        for key, p in params.items():
            _check_param(key, p)
        if self.t > 0:  # state exists: it must describe these params
            state = self._state[self.slots[0]]
            if state.keys() != params.keys():
                raise ValueError(_key_difference(
                    "params", list(params), list(state),
                    "the optimizer state (call reset() to start over)"))
            for key, a in state.items():
                p = params[key]
                if p.shape != a.shape or p.dtype != a.dtype:
                    raise ValueError(
                        f"params[{key!r}] has shape {p.shape} and dtype {p.dtype.name} but the "
                        f"optimizer state has {a.shape} and {a.dtype.name} "
                        "(call reset() to start over)")
        checked = {}
        for key, p in params.items():
            g = grads[key]
            if not (type(g) is np.ndarray and g.shape == p.shape and g.dtype == p.dtype
                    and g.flags.c_contiguous):  # else the checks that name what is wrong
                if is_device_array(g):
                    _check_device_array(f"grads[{key!r}]", g, p.shape, p.dtype)
                else:
                    g = check_array(f"grads[{key!r}]", g, shape=p.shape, dtype=p.dtype,
                                    finite=False)
            if check_finite and not self._k.all_finite(g):  # the kernels _kernels_for chose
                raise ValueError(f"grads[{key!r}] must be finite; it has NaN or inf entries")
            checked[key] = g
        return checked


class SGD(Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum.

    Equation, per key, each step:
        velocity = momentum * velocity + g        (velocity starts at 0)
        p        = p - lr * velocity
    With momentum = 0 this is plain SGD, p = p - lr * g.
    """

    slots = ("velocity",)
    hyper_names = ("lr", "momentum")

    def __init__(self, lr, momentum: float = 0.0, *, backend: str | None = None):
        super().__init__(backend, lr=lr, momentum=momentum)

    @staticmethod
    def _check_hyper(lr, momentum) -> dict:
        return {"lr": _check_lr(lr), "momentum": _check_unit("momentum", momentum)}

    def _update(self, k, p, g, key, hyper):
        k.sgd_step(p, g, self._state["velocity"][key], hyper["lr"], hyper["momentum"])


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias-corrected moment estimates.

    Equation, per key, at step t = 1, 2, ... (m and v start at 0):
        m    = beta1 * m + (1 - beta1) * g
        v    = beta2 * v + (1 - beta2) * g^2
        mhat = m / (1 - beta1^t),   vhat = v / (1 - beta2^t)
        p    = p - lr * mhat / (sqrt(vhat) + eps)
    computed as p - (lr / c1) m / (sqrt(v) / sqrt(c2) + eps), c1 = 1 - beta1^t, c2 = 1 - beta2^t,
    with subnormal entries of m and v set to 0 (docs/derivations.md, "Optimizer updates").
    """

    slots = ("m", "v")
    hyper_names = ("lr", "beta1", "beta2", "eps")

    def __init__(self, lr=1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, *,
                 backend: str | None = None):
        super().__init__(backend, lr=lr, beta1=beta1, beta2=beta2, eps=eps)

    @staticmethod
    def _check_hyper(lr, beta1, beta2, eps) -> dict:
        return {"lr": _check_lr(lr), "beta1": _check_unit("beta1", beta1),
                "beta2": _check_unit("beta2", beta2), "eps": _check_eps(eps)}

    def _update(self, k, p, g, key, hyper):
        k.adam_step(p, g, self._state["m"][key], self._state["v"][key], hyper["lr"],
                          hyper["beta1"], hyper["beta2"], hyper["eps"], self.t)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011): per-coordinate steps scaled by the accumulated squares.

    Equation, per key, each step (s starts at 0):
        s = s + g^2
        p = p - lr * g / (sqrt(s) + eps)
    """

    slots = ("s",)
    hyper_names = ("lr", "eps")

    def __init__(self, lr, eps: float = 1e-8, *, backend: str | None = None):
        super().__init__(backend, lr=lr, eps=eps)

    @staticmethod
    def _check_hyper(lr, eps) -> dict:
        return {"lr": _check_lr(lr), "eps": _check_eps(eps)}

    def _update(self, k, p, g, key, hyper):
        k.adagrad_step(p, g, self._state["s"][key], hyper["lr"], hyper["eps"])


__all__ = ["Optimizer", "SGD", "Adam", "Adagrad"]
