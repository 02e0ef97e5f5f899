"""Finite-difference gradient checking, for users as much as for the tests.

``check_gradients`` is generic (a scalar function of a dict of float64 arrays and the analytic
gradient dict, as autograd's test_util is); ``gradcheck`` applies it to a model's
``loss_and_grads`` with fixed noise ``eps``, and also checks the input gradient d loss / d x and the
KL's gradients with respect to mu and logvar on their own.

Numerical derivative (central differences): for entry i of tensor p,
    n_i = (L(p + s e_i) - L(p - s e_i)) / (2 s),   s = h * max(1, |p_i|),   h = 1e-6 by default,
whose error is O(s^2) from truncation plus about eps_mach |L| / s from rounding the two values.

Two error measures (``mode``), for analytic a and numerical n:

    "floored" (default)  rel_i = |a_i - n_i| / max(|a_i|, |n_i|, floor)      floor = 1
        robust near zero, but ABSOLUTE below the floor: an entry with max(|a_i|, |n_i|) < floor
        passes when |a_i - n_i| <= tol * floor, so a 50% error in a gradient of 1e-6 passes
        at tol 1e-6. Such entries are counted as "below floor" (checked absolutely only), not
        as relatively checked.
    "relative"           rel_i = |a_i - n_i| / max(|a_i|, |n_i|)
        a true relative check. An entry is checked only when max(|a_i|, |n_i|) >= floor_i,
        where by default floor_i = noise_i / tol and noise_i = 4 eps_mach max(|L(p + s e_i)|,
        |L(p - s e_i)|) / (2 s) bounds the rounding error of n_i: below it finite differences
        cannot resolve a relative error of tol. Those entries are reported "not checked" (they
        neither pass nor fail); pass a numeric ``floor`` to set a fixed one instead.
        A small gradient is checked when the loss itself is small, or at a looser tol.

Per tensor, the normwise error ||a - n|| / max(||a||, ||n||, floor) (floored) or over the
checked entries (relative) must also be <= tol. A directional check (JAX / torch fast mode)
compares (L(p + h v) - L(p - h v)) / 2h with <g, v> for random directions v over all parameters
at once, with the same measure.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ._checks import check_choice, check_float, check_int

FLOAT64 = np.dtype(np.float64)
MODES = ("floored", "relative")
EPS64 = float(np.finfo(np.float64).eps)


class GradcheckRow(NamedTuple):
    name: str
    shape: tuple
    n_checked: int          # entries whose relative error was assessed
    max_abs_err: float
    max_rel_err: float      # over the checked entries (floored mode: over all entries)
    normwise_rel_err: float
    worst_index: tuple      # index of the entry with the largest relative error
    passed: bool            # False only when a checked entry (or the normwise error) exceeds tol
    n_below_floor: int = 0  # entries below the floor: floored mode checks them absolutely only,
                            # relative mode does not check them at all


class GradcheckReport:
    """Per-tensor results of a gradient check; ``passed`` is True when no checked entry failed.

    ``n_below_floor`` counts the entries that were not checked relatively (see the module
    docstring); the table shows them per tensor and in its last line."""

    def __init__(self, rows, tol, directional=(), mode="floored"):
        self.rows = list(rows)
        self.tol = tol
        self.mode = mode
        # (numerical, analytic, relative error or None when not checked) per direction
        self.directional = list(directional)

    @property
    def passed(self) -> bool:
        return (all(r.passed for r in self.rows)
                and all(e is None or e <= self.tol for _, _, e in self.directional))

    @property
    def n_below_floor(self) -> int:
        return sum(r.n_below_floor for r in self.rows)

    @property
    def max_rel_error(self) -> float:
        errs = ([r.max_rel_err for r in self.rows if r.n_checked or self.mode == "floored"]
                + [e for _, _, e in self.directional if e is not None])
        return max(errs) if errs else 0.0

    def __getitem__(self, name) -> GradcheckRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def failures(self):
        return [r for r in self.rows if not r.passed]

    def _status(self, r) -> str:
        """"yes", "NO", or, when no entry of the row was above the floor, "abs only" (floored
        mode) or "not checked" (relative mode)."""
        if not r.passed:
            return "NO"
        if r.n_checked:
            return "yes"
        return "abs only" if self.mode == "floored" else "not checked"

    def __str__(self):
        head = (f"{'tensor':<20} {'shape':<14} {'checked':>7} {'<floor':>6} {'max abs err':>12} "
                f"{'max rel err':>12} {'normwise':>10}  ok")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.name:<20} {str(r.shape):<14} {r.n_checked:>7} {r.n_below_floor:>6} "
                         f"{r.max_abs_err:>12.3e} {r.max_rel_err:>12.3e} "
                         f"{r.normwise_rel_err:>10.3e}  {self._status(r)}")
        for i, (num, ana, err) in enumerate(self.directional):
            e = "not checked (below the noise floor)" if err is None else f"rel err {err:.3e}"
            lines.append(f"direction {i}: numerical {num:.10g}  analytic {ana:.10g}  {e}")
        below = self.n_below_floor
        if below:
            how = ("checked only to absolute error tol * floor" if self.mode == "floored"
                   else "not checked")
            note = f"; {below} entries below the floor, {how}"
        else:
            note = ""
        lines.append(f"{'PASSED' if self.passed else 'FAILED'} ({self.mode} mode, tol "
                     f"{self.tol:g}, max rel err {self.max_rel_error:.3e}{note})")
        return "\n".join(lines)

    __repr__ = __str__


def _errors(a, n, floor, mode):
    """(relative errors, mask of relatively checked entries) of analytic a against numerical n;
    ``floor`` a number or an array (relative mode's per-entry noise floor)."""
    scale = np.maximum(np.abs(a), np.abs(n))
    checked = scale >= floor
    if mode == "floored":
        return np.abs(a - n) / np.maximum(scale, floor), checked
    rel = np.where(checked, np.abs(a - n) / np.where(scale > 0, scale, 1.0), 0.0)
    return rel, checked


def _noise_floor(fp, fm, step, tol):
    """Relative mode's default floor: the rounding error of a central difference over tol."""
    return 4.0 * EPS64 * max(abs(fp), abs(fm)) / (2.0 * step) / tol


def check_gradients(fun: Callable[[dict], float], params: dict, grads: dict, *, h=1e-6, tol=1e-6,
                    floor=None, mode="floored", max_entries=None, n_directions=2, rng=None,
                    names=None, skip=None) -> GradcheckReport:
    """Compare analytic ``grads`` with central differences of ``fun`` at ``params``.

    ``params`` holds float64 arrays that are perturbed in place one entry at a time and restored
    bit for bit; ``fun(params)`` returns the scalar. ``mode`` "floored" or "relative" and
    ``floor`` (default 1 in floored mode, the rounding-noise floor in relative mode) as in the
    module docstring. ``max_entries`` None checks every entry, an int checks a seeded random
    subset of that many entries per tensor. ``names`` restricts the per-entry check to those keys
    (the directional check always covers all of ``params``). ``skip`` maps a key to a bool mask
    of entries that must not be perturbed (e.g. inputs at the edge of a likelihood's support);
    they are counted below the floor, unchecked.
    """
    h = check_float("h", h, min_value=0.0, min_inclusive=False)
    tol = check_float("tol", tol, min_value=0.0, min_inclusive=False)
    mode = check_choice("mode", mode, MODES)
    if floor is None:
        floor = 1.0 if mode == "floored" else None
    else:
        floor = check_float("floor", floor, min_value=0.0, min_inclusive=mode == "relative")
    if max_entries is not None:
        max_entries = check_int("max_entries", max_entries, min_value=1)
    n_directions = check_int("n_directions", n_directions, min_value=0)
    if set(grads) != set(params):
        raise ValueError(f"grads must have the keys of params; missing "
                         f"{sorted(set(params) - set(grads))}, extra {sorted(set(grads) - set(params))}")
    for key, p in params.items():
        if not isinstance(p, np.ndarray) or p.dtype != FLOAT64:
            raise ValueError(f"params[{key!r}] must be a float64 ndarray: finite differences are "
                             f"meaningless in float32 (check a float64 copy, e.g. model.astype('float64'))")
        if np.shape(grads[key]) != p.shape:
            raise ValueError(f"grads[{key!r}] has shape {np.shape(grads[key])}; expected {p.shape}")
    skip = {} if skip is None else skip
    rng = np.random.default_rng(0) if rng is None else rng
    rows = []
    for key in (params if names is None else names):
        p, a = params[key], np.asarray(grads[key], FLOAT64)
        if p.size == 0:     # nothing to check (e.g. the flow heads of a FlowVAE with L = 0)
            continue
        flat_idx = np.arange(p.size)
        if max_entries is not None and p.size > max_entries:
            flat_idx = np.sort(rng.choice(p.size, max_entries, replace=False))
        n_skipped = 0
        if key in skip:
            keep = ~np.asarray(skip[key], bool).reshape(-1)[flat_idx]
            n_skipped = int((~keep).sum())
            flat_idx = flat_idx[keep]
        num = np.empty(flat_idx.size)
        fl = np.empty(flat_idx.size)
        pf = p.reshape(-1)   # a view: writes reach params[key]
        for j, i in enumerate(flat_idx):
            orig = pf[i]
            step = h * max(1.0, abs(orig))
            pf[i] = orig + step
            fp = fun(params)
            pf[i] = orig - step
            fm = fun(params)
            pf[i] = orig
            num[j] = (fp - fm) / (2.0 * step)
            fl[j] = _noise_floor(fp, fm, step, tol) if floor is None else floor
        ana = a.reshape(-1)[flat_idx]
        rel, checked = _errors(ana, num, fl, mode)
        worst = int(np.argmax(rel)) if rel.size else 0
        if mode == "floored":
            normwise = float(np.linalg.norm(ana - num)
                             / max(np.linalg.norm(ana), np.linalg.norm(num), floor))
        elif checked.any():
            ac, nc = ana[checked], num[checked]
            normwise = float(np.linalg.norm(ac - nc) / max(np.linalg.norm(ac), np.linalg.norm(nc)))
        else:
            normwise = 0.0
        n_checked = int(checked.sum())
        max_rel = float(rel[worst]) if rel.size else 0.0
        row = GradcheckRow(key, p.shape, n_checked,
                           float(np.max(np.abs(ana - num))) if ana.size else 0.0,
                           max_rel, normwise,
                           tuple(int(t) for t in np.unravel_index(flat_idx[worst], p.shape))
                           if flat_idx.size else (),
                           bool(max_rel <= tol and normwise <= tol),
                           int(flat_idx.size - n_checked) + n_skipped)
        rows.append(row)
    directional = []
    for _ in range(n_directions):
        v = {key: rng.standard_normal(p.shape) for key, p in params.items()}
        orig = {key: p.copy() for key, p in params.items()}
        for key, p in params.items():
            p += h * v[key]
        fp = fun(params)
        for key, p in params.items():
            p[...] = orig[key] - h * v[key]
        fm = fun(params)
        for key, p in params.items():
            p[...] = orig[key]
        num = (fp - fm) / (2.0 * h)
        ana = float(sum(np.vdot(np.asarray(grads[key], FLOAT64), v[key]) for key in params))
        fl = _noise_floor(fp, fm, h, tol) if floor is None else floor
        rel, checked = _errors(np.array([ana]), np.array([num]), fl, mode)
        directional.append((num, ana, float(rel[0]) if mode == "floored" or checked[0] else None))
    return GradcheckReport(rows, tol, directional, mode)


def _eps_samples(eps):
    """The sample count K of a given noise (an array (K, B, d) or a tuple of them)."""
    first = eps[0] if isinstance(eps, tuple) else eps
    return int(np.shape(first)[0])


def gradcheck(model, x, y=None, *, n_samples=None, beta=1.0, objective="elbo", free_bits=0.0,
              eps=None, seed=0, h=1e-6, tol=1e-6, floor=None, mode="floored", max_entries=None,
              n_directions=2, wrt=("params", "x", "kl"), as_float64=False) -> GradcheckReport:
    """Finite-difference check of ``model.loss_and_grads`` with fixed noise.

    Checks, per ``wrt``: "params" every parameter tensor (or ``max_entries`` random entries of
    each); "x" the input gradient d loss / d x; "kl" the gradients of the closed-form KL with
    respect to mu and logvar at the encoder's outputs for ``x`` (a random upstream weight per
    example). ``eps`` defaults to ``model.draw_eps(n_samples, B, default_rng(seed))``.

    ``n_samples`` defaults to the sample count of ``eps`` when one is given, else K = 2. Never
    1 by default: with one sample a missing 1/K in a backward is a factor of 1, and IWAE's
    normalised weights w~_k are all 1, the same as uniform weights 1/K, so bugs that depend on
    K pass at K = 1 and only show at K >= 2.

    ``mode`` "floored" (floor 1 by default) or "relative" (floor from the finite differences'
    rounding noise by default): see the module docstring. In floored mode entries below the floor
    are checked only to absolute error tol * floor; in relative mode they are not checked. The
    report counts them per tensor (``n_below_floor``) and never calls them relatively checked.
    With the Bernoulli likelihood, entries of x within one step of 0 or 1 cannot be perturbed
    inside the support and are left unchecked (counted below the floor).

    A float32 model is refused (finite differences in float32 cannot resolve 1e-6) unless
    ``as_float64=True``, which checks a float64 copy of it (model.astype("float64")) and
    leaves the model itself untouched. Returns a ``GradcheckReport``; print it for a table.
    A VQ-VAE is checked against its straight-through surrogate (the loss with the codes and
    stop-gradient values frozen), on the parameters alone.
    """
    if model.dtype != FLOAT64:
        if not as_float64:
            raise ValueError(f"gradcheck needs a float64 model; this one is {model.dtype.name}. "
                             f"Check in float64: gradcheck(model.astype('float64'), x.astype('float64')) "
                             f"or pass as_float64=True")
        model = model.astype(FLOAT64)
        x = np.asarray(x, dtype=FLOAT64)
        if eps is not None:
            eps = tuple(np.asarray(e, FLOAT64) for e in eps) if isinstance(eps, tuple) else np.asarray(eps, FLOAT64)
    mode = check_choice("mode", mode, MODES)
    wrt = tuple(wrt)
    for w in wrt:
        if w not in ("params", "x", "kl"):
            raise ValueError(f"wrt entries must be 'params', 'x' or 'kl'; got {w!r}")
    if getattr(model, "prior", None) == "categorical":
        # the VQ-VAE: its straight-through gradients are those of a frozen surrogate, which is
        # what is differenced (its loss itself is piecewise in the codes)
        if y is not None or eps is not None:
            raise ValueError("y and eps must be None for a VQ-VAE (no labels, no noise)")
        _, grads = model.loss_and_grads(x)
        grads = {key: np.array(model.kernels.to_host(v)) for key, v in grads.items()}
        return check_gradients(model.straight_through_surrogate(x), model.params, grads, h=h,
                               tol=tol, floor=floor, mode=mode, max_entries=max_entries,
                               n_directions=n_directions, rng=np.random.default_rng(seed))
    if n_samples is None:
        n_samples = 2 if eps is None else _eps_samples(eps)
    n_samples = check_int("n_samples", n_samples, min_value=1)
    x = model.check_x(x)
    rng = np.random.default_rng(seed)
    if eps is None:
        eps = model.draw_eps(n_samples, x.shape[0], rng)
    call = dict(n_samples=n_samples, beta=beta, eps=eps, objective=objective,
                free_bits=free_bits, y=y)
    # the model validates y, eps and the options; its gradient arrays are its own buffers
    # (valid until its next loss_and_grads), so keep copies
    _, grads, dx = model.loss_and_grads(x, **call, return_dx=True)
    grads = {key: np.array(g, dtype=FLOAT64) for key, g in grads.items()}
    dx = None if dx is None else np.array(dx, dtype=FLOAT64)
    opts = dict(h=h, tol=tol, floor=floor, mode=mode, max_entries=max_entries, rng=rng)
    rows, directional = [], []
    if "params" in wrt:
        rep = check_gradients(lambda p: model.loss(x, **call), model.params, grads,
                              n_directions=n_directions, **opts)
        rows += rep.rows
        directional = rep.directional
    if "x" in wrt:
        xs = {"x": x.copy()}
        skip = None
        if getattr(model, "likelihood", None) == "bernoulli":
            skip = {"x": (x - h < 0) | (x + h > 1)}      # x +- step must stay in [0, 1]
        rows += check_gradients(lambda p: model.loss(p["x"], **call), xs, {"x": dx},
                                n_directions=0, skip=skip, **opts).rows
    if "kl" in wrt:
        from .distributions import gaussian_kl_backward, gaussian_kl_forward
        k = model.kernels
        mu, logvar = model.encode(x, y)
        w = rng.standard_normal(mu.shape[0])       # random upstream gradient of the per-row KL
        ml = {"mu (KL)": mu.copy(), "logvar (KL)": logvar.copy()}
        kl_cache = gaussian_kl_forward(ml["mu (KL)"], ml["logvar (KL)"], k=k)[1]
        dmu, dlv = gaussian_kl_backward(w, kl_cache, k=k)

        def kl_vjp(p):
            return float(w @ gaussian_kl_forward(p["mu (KL)"], p["logvar (KL)"], k=k)[0])
        rows += check_gradients(kl_vjp, ml, {"mu (KL)": dmu, "logvar (KL)": dlv},
                                n_directions=0, **opts).rows
    return GradcheckReport(rows, tol, directional, mode)
