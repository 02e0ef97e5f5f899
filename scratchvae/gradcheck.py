"""Finite-difference gradient checking, for users as much as for the tests.

``check_gradients`` is generic (a scalar function of a dict of float64 arrays and the analytic
gradient dict, as autograd's test_util is); ``gradcheck`` applies it to a model's
``loss_and_grads`` with fixed noise ``eps``, and also checks the input gradient d loss / d x and the
KL's gradients with respect to mu and logvar on their own.

Numerical derivative (central differences, NOTES.md 4.2): for entry i of tensor p,
    n_i = (L(p + s e_i) - L(p - s e_i)) / (2 s),   s = h * max(1, |p_i|),   h = 1e-6 by default.
Error measures (NOTES.md 4.3), both robust near zero:
    entry-wise   rel_i = |a_i - n_i| / max(|a_i|, |n_i|, floor)       (floor = 1 by default)
    normwise     ||a - n|| / max(||a||, ||n||, floor)
A tensor passes when both are <= tol. A directional check (JAX / torch fast mode) compares
(L(p + h v) - L(p - h v)) / 2h with <g, v> for random directions v over all parameters at once.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from ._checks import check_float, check_int

FLOAT64 = np.dtype(np.float64)


class GradcheckRow(NamedTuple):
    name: str
    shape: tuple
    n_checked: int
    max_abs_err: float
    max_rel_err: float
    normwise_rel_err: float
    worst_index: tuple      # index of the entry with the largest relative error
    passed: bool


class GradcheckReport:
    """Per-tensor results of a gradient check; ``passed`` is True when every row passed."""

    def __init__(self, rows, tol, directional=()):
        self.rows = list(rows)
        self.tol = tol
        self.directional = list(directional)   # (numerical, analytic, relative error) per direction

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows) and all(e <= self.tol for _, _, e in self.directional)

    @property
    def max_rel_error(self) -> float:
        errs = [r.max_rel_err for r in self.rows] + [e for _, _, e in self.directional]
        return max(errs) if errs else 0.0

    def __getitem__(self, name) -> GradcheckRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def failures(self):
        return [r for r in self.rows if not r.passed]

    def __str__(self):
        head = f"{'tensor':<20} {'shape':<14} {'checked':>7} {'max abs err':>12} {'max rel err':>12} {'normwise':>10}  ok"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r.name:<20} {str(r.shape):<14} {r.n_checked:>7} {r.max_abs_err:>12.3e} "
                         f"{r.max_rel_err:>12.3e} {r.normwise_rel_err:>10.3e}  {'yes' if r.passed else 'NO'}")
        for i, (num, ana, err) in enumerate(self.directional):
            lines.append(f"direction {i}: numerical {num:.10g}  analytic {ana:.10g}  rel err {err:.3e}")
        lines.append(f"{'PASSED' if self.passed else 'FAILED'} (tol {self.tol:g}, max rel err "
                     f"{self.max_rel_error:.3e})")
        return "\n".join(lines)

    __repr__ = __str__


def _rel(a, n, floor):
    return np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)


def check_gradients(fun: Callable[[dict], float], params: dict, grads: dict, *, h=1e-6, tol=1e-6,
                    floor=1.0, max_entries=None, n_directions=2, rng=None, names=None) -> GradcheckReport:
    """Compare analytic ``grads`` with central differences of ``fun`` at ``params``.

    ``params`` holds float64 arrays that are perturbed in place one entry at a time and restored
    bit for bit; ``fun(params)`` returns the scalar. ``max_entries`` None checks every entry, an
    int checks a seeded random subset of that many entries per tensor. ``names`` restricts the
    per-entry check to those keys (the directional check always covers all of ``params``).
    """
    h = check_float("h", h, min_value=0.0, min_inclusive=False)
    tol = check_float("tol", tol, min_value=0.0, min_inclusive=False)
    floor = check_float("floor", floor, min_value=0.0, min_inclusive=False)
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
    rng = np.random.default_rng(0) if rng is None else rng
    rows = []
    for key in (params if names is None else names):
        p, a = params[key], np.asarray(grads[key], FLOAT64)
        if p.size == 0:     # nothing to check (e.g. the flow heads of a FlowVAE with L = 0)
            continue
        flat_idx = np.arange(p.size)
        if max_entries is not None and p.size > max_entries:
            flat_idx = np.sort(rng.choice(p.size, max_entries, replace=False))
        num = np.empty(flat_idx.size)
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
        ana = a.reshape(-1)[flat_idx]
        rel = _rel(ana, num, floor)
        worst = int(np.argmax(rel)) if rel.size else 0
        normwise = float(np.linalg.norm(ana - num) / max(np.linalg.norm(ana), np.linalg.norm(num), floor))
        row = GradcheckRow(key, p.shape, int(flat_idx.size), float(np.max(np.abs(ana - num))),
                           float(rel[worst]), normwise,
                           tuple(int(t) for t in np.unravel_index(flat_idx[worst], p.shape)),
                           bool(rel[worst] <= tol and normwise <= tol))
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
        directional.append((num, ana, float(abs(num - ana) / max(abs(num), abs(ana), floor))))
    return GradcheckReport(rows, tol, directional)


def gradcheck(model, x, y=None, *, n_samples=1, beta=1.0, objective="elbo", free_bits=0.0,
              eps=None, seed=0, h=1e-6, tol=1e-6, floor=1.0, max_entries=None, n_directions=2,
              wrt=("params", "x", "kl"), as_float64=False) -> GradcheckReport:
    """Finite-difference check of ``model.loss_and_grads`` with fixed noise.

    Checks, per ``wrt``: "params" every parameter tensor (or ``max_entries`` random entries of
    each); "x" the input gradient d loss / d x; "kl" the gradients of the closed-form KL with
    respect to mu and logvar at the encoder's outputs for ``x`` (a random upstream weight per
    example). ``eps`` defaults to ``model.draw_eps(n_samples, B, default_rng(seed))``.

    A float32 model is refused (finite differences in float32 cannot resolve 1e-6, NOTES.md 4.2)
    unless ``as_float64=True``, which checks a float64 copy of it (model.astype("float64")) and
    leaves the model itself untouched. Returns a ``GradcheckReport``; print it for a table.
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
    wrt = tuple(wrt)
    for w in wrt:
        if w not in ("params", "x", "kl"):
            raise ValueError(f"wrt entries must be 'params', 'x' or 'kl'; got {w!r}")
    x, y, n_samples, beta, objective, free_bits = model.check_call(
        x, y, n_samples, beta, objective, free_bits)
    rng = np.random.default_rng(seed)
    eps = model._noise(eps, n_samples, x.shape[0], rng)   # validated, or drawn from rng
    k = model.kernels
    opts = dict(h=h, tol=tol, floor=floor, max_entries=max_entries, rng=rng)

    def loss_at(xv):
        # the chain itself: a perturbed x may leave [0, 1], which the public methods refuse
        return model._run(xv, y, eps, beta, objective, free_bits, p=model.params, k=k,
                          need_grads=False)[0].loss

    _, grads, dx = model.loss_and_grads(x, y=y, n_samples=n_samples, beta=beta, eps=eps,
                                        objective=objective, free_bits=free_bits, return_dx=True)
    rows, directional = [], []
    if "params" in wrt:
        rep = check_gradients(lambda p: loss_at(x), model.params, grads,
                              n_directions=n_directions, **opts)
        rows += rep.rows
        directional = rep.directional
    if "x" in wrt:
        xs = {"x": x.copy()}
        rows += check_gradients(lambda p: loss_at(p["x"]), xs, {"x": dx}, n_directions=0, **opts).rows
    if "kl" in wrt:
        from .distributions import gaussian_kl_backward, gaussian_kl_forward
        mu, logvar = model.encode(x) if y is None else model.encode(x, y)
        w = rng.standard_normal(mu.shape[0])       # random upstream gradient of the per-row KL
        ml = {"mu (KL)": mu.copy(), "logvar (KL)": logvar.copy()}
        kl_cache = gaussian_kl_forward(ml["mu (KL)"], ml["logvar (KL)"], k=k)[1]
        dmu, dlv = gaussian_kl_backward(w, kl_cache, k=k)

        def kl_vjp(p):
            return float(w @ gaussian_kl_forward(p["mu (KL)"], p["logvar (KL)"], k=k)[0])
        rows += check_gradients(kl_vjp, ml, {"mu (KL)": dmu, "logvar (KL)": dlv},
                                n_directions=0, **opts).rows
    return GradcheckReport(rows, tol, directional)
