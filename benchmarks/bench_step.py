"""Step benchmark: ms per training step (loss, gradients, Adam update) per backend, against the
step's own GEMM time, the machine's GEMM peak and (when importable) PyTorch on the CPU.

Run from the repository root (one process, so every ratio compares numbers of one run):

    python benchmarks/bench_step.py                     # full grid, a few minutes
    python benchmarks/bench_step.py --quick             # B = 32, 512 only, fewer repeats
    python benchmarks/bench_step.py --markdown          # tables as markdown (for results.md)
    /work/benchenv/bin/python benchmarks/bench_step.py  # with torch (a benchmark-only venv)

One step is what ``fit`` does per minibatch:

    loss, grads = model.loss_and_grads(x, eps=eps)     # forward, backward, on the model's buffers
    opt.step(model.params, grads)                      # sv.Adam on the model's backend

on the model's own work buffers, reused across steps (``--workspace off`` gives every kernel
fresh output arrays instead, the behaviour before work buffers existed).

``--own-loop`` times something else: the training loop a user writes from the README,

    loss, grads = model.loss_and_grads(x)              # noise from the model's own stream
    opt = sv.Adam(lr=1e-3); opt.step(model.params, grads)

beside ``sv.fit``'s step (``fit`` itself, run for a whole epoch of S minibatches of B rows with
a one-example validation set, divided by S), at B = 1, 32, 128, 512 in both dtypes on
784-400-20, numba backend (the default).

for ``VAE(D, (H,), d, activation="relu", likelihood="bernoulli")`` with K = 1 sample, a fixed
``x`` in [0, 1] and a fixed ``eps``, in float32 and float64.

FLOP count of a step (matrix products only; the elementwise work is O(B * sum of widths), a few
percent of it, and is not counted). Every dense layer with fan-in f_i and fan-out f_o on N rows
(N = B for the encoder, K*B for the decoder) costs three products of 2 * N * f_i * f_o flops:
the forward ``a @ W``, the weight gradient ``dW = a.T @ dh`` and the input gradient
``da = dh @ W.T``; the encoder's first layer skips ``da`` (nothing needs dL/dx). So

    FLOPs = 2 * sum_layers (N_l * f_i * f_o * (3 if the layer needs da else 2))

which for one hidden layer (layers D->H, H->d twice for the heads, d->H, H->D) and K = 1 is

    FLOPs = 2 B (5 D H + 9 H d)     (784-400-20: 3.28 MFLOP per example; 64-32-8: 24.1 kFLOP)

Columns: ``ms`` median ms per step; ``GFLOP/s`` = FLOPs / time; ``%peak`` = that over the
machine's measured GEMM rate for the dtype (best of 10 NumPy 1024^3 matmuls, same process);
``xGEMM`` = step time / the sum of the step's own GEMMs, each timed alone with NumPy at its
shape and layout (the limit of this design; the issue's target is numba <= 1.5 at B=512 f32;
the "torch GEMM sum" row times the same products with torch.matmul); ``/numpy`` = time / the
numpy backend's time in the same run; ``/torch`` = time / PyTorch's step with fused Adam;
``faults`` = minor page faults per step (fresh memory touched for the first time: glibc unmaps a
freed array above its mmap threshold, and the next step's array of the same size is faulted in
again, zero-filled by the kernel). ``--malloc reuse`` raises glibc's thresholds first so freed
blocks are reused; ``--malloc mmap`` pins them low so every large array is mapped fresh; the
two bracket what the faults cost.

PyTorch (CPU, eager, ``torch.set_num_threads(2)``) runs the same model: Linear layers, ReLU,
BCE-with-logits summed over D, closed-form KL, ``Adam(fused=True)``, the default Adam (the
single-tensor loop on CPU) and ``foreach=True``; it is skipped with a note when torch cannot be
imported (it is not a dependency of scratchvae).

Timing: ``time.perf_counter`` around a loop of >= ``--min-time`` s, after warm-up. The
implementations and GEMMs of one (arch, dtype, B) are timed in ``--repeats`` interleaved rounds
(each round times each once, in a rotated order); ``ms`` is the median over rounds and every
ratio the median of the per-round ratios, because on this shared VM the speed of memory-bound
code drifts by up to 2-3x over seconds. Loops during which another process used the CPU are
retried (see _common.py). Switching between PyTorch and NumPy/OpenBLAS work is preceded by an
untimed 0.25 s pause and call, so neither pays for the other's spinning worker threads.
The first step of each backend and dtype (JIT compile, or loading numba's on-disk cache) is
reported separately. The breakdown section wraps every kernel of the model and optimizer in a
timer to show where a step's time goes (GEMM, fused kernels, Adam, Python and validation), and
the fit-guards section times what ``sv.fit`` adds per step. The GEMM peak is measured after
the steps,
because its large temporaries would raise glibc's dynamic mmap threshold for the steps.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

INITIAL_ENV = dict(os.environ)

import numpy as np  # noqa: E402

import _common as C  # noqa: E402  (benchmarks/ is sys.path[0] when this script runs)

ARCHS = {"784-400-20": (784, (400,), 20), "64-32-8": (64, (32,), 8)}
BATCHES = (1, 32, 128, 512)
LR = 1e-4  # small, so thousands of timed steps do not move the parameters far


# ============================================================================ the step's GEMMs
def step_gemms(D: int, hidden: tuple, d: int, B: int, K: int = 1) -> list[tuple]:
    """The matrix products of one training step, in the layout the model calls them.

    Returns a list of (label, kind, (m, n, p)) with kind "nn" (a @ b, a (m, n), b (n, p)),
    "tn" (a.T @ b, a (n, m), b (n, p)) or "nt" (a @ b.T, a (m, n), b (p, n)); each costs
    2 m n p flops. Layers: encoder D -> hidden..., the mu and logvar heads, decoder
    d -> reversed(hidden)... -> D (VAE's default decoder_hidden_dims).
    """
    enc = (D,) + tuple(hidden)
    dec = (d,) + tuple(hidden[::-1]) + (D,)
    layers = []  # (name, rows, fan_in, fan_out, needs_da)
    for i, (fi, fo) in enumerate(zip(enc[:-1], enc[1:])):
        layers.append((f"enc.W{i}", B, fi, fo, i > 0))
    layers.append(("enc.W_mu", B, enc[-1], d, True))
    layers.append(("enc.W_logvar", B, enc[-1], d, True))
    names = [f"dec.W{i}" for i in range(len(dec) - 2)] + ["dec.W_out"]
    for name, fi, fo in zip(names, dec[:-1], dec[1:]):
        layers.append((name, K * B, fi, fo, True))
    out = []
    for name, n_rows, fi, fo, needs_da in layers:
        out.append((f"{name} fwd", "nn", (n_rows, fi, fo)))   # (N, fi) @ (fi, fo)
        out.append((f"{name} dW", "tn", (fi, n_rows, fo)))    # (N, fi).T @ (N, fo)
        if needs_da:
            out.append((f"{name} da", "nt", (n_rows, fo, fi)))  # (N, fo) @ (fi, fo).T
    return out


def step_flops(gemms) -> int:
    """Sum of 2 m n p over the step's products."""
    return sum(2 * m * n * p for _, _, (m, n, p) in gemms)


def _randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def gemm_closures(gemms, dtype, seed: int = 7) -> dict:
    """One closure per product of the step, on random operands of its shape, in the layout the
    model calls it (np.matmul(a, b), np.matmul(a.T, b), np.matmul(a, b.T)); keyed by label."""
    rng = np.random.default_rng(seed)
    fns = {}
    for label, kind, (m, n, p) in gemms:
        if kind == "nn":
            a, b = _randn(rng, (m, n), dtype), _randn(rng, (n, p), dtype)
            fns[label] = lambda a=a, b=b: np.matmul(a, b)
        elif kind == "tn":
            a, b = _randn(rng, (n, m), dtype), _randn(rng, (n, p), dtype)
            fns[label] = lambda a=a, b=b: np.matmul(a.T, b)
        else:
            a, b = _randn(rng, (m, n), dtype), _randn(rng, (p, n), dtype)
            fns[label] = lambda a=a, b=b: np.matmul(a, b.T)
    return fns


# ============================================================================ scratchvae step
def torch_gemm_closures(gemms, dtype, seed: int = 7) -> dict:
    """``gemm_closures`` in PyTorch (torch.matmul on CPU tensors, same shapes and transposes):
    the GEMM time PyTorch's own step is built on (MKL/oneDNN rather than OpenBLAS)."""
    return {label: _torch_gemm(kind, m, n, p, dtype, seed + i)
            for i, (label, kind, (m, n, p)) in enumerate(gemms)}


def _torch_gemm(kind, m, n, p, dtype, seed):
    """One torch.matmul closure of the given kind and shape (see ``gemm_closures``)."""
    import torch
    rng = np.random.default_rng(seed)
    t = lambda *shape: torch.from_numpy(rng.standard_normal(shape).astype(dtype))  # noqa: E731
    if kind == "nn":
        a, b = t(m, n), t(n, p)
        return lambda: torch.matmul(a, b)
    if kind == "tn":
        a, b = t(n, m), t(n, p)
        return lambda: torch.matmul(a.T, b)
    a, b = t(m, n), t(p, n)
    return lambda: torch.matmul(a, b.T)


WORKSPACE = True  # --workspace on|off


def make_step(backend: str, arch: tuple, B: int, dtype, seed: int = 0):
    """A closure running one training step of a fresh model; returns (step, model, opt)."""
    import scratchvae as sv
    D, hidden, d = arch
    model = sv.VAE(D, hidden, d, activation="relu", likelihood="bernoulli", dtype=dtype,
                   seed=seed, backend=backend)
    if not WORKSPACE:   # a benchmark-only switch: the unbound kernels, fresh arrays every call
        model._bound = model.kernels
    opt = sv.Adam(LR, backend=model.backend)
    rng = np.random.default_rng(seed + 1)
    x = rng.random((B, D)).astype(dtype)
    eps = model.draw_eps(1, B, rng)

    def step():
        loss, grads = model.loss_and_grads(x, eps=eps)
        opt.step(model.params, grads)
        return loss

    return step, model, opt


# ============================================================================ own loop vs fit
def fit_steps(B: int) -> int:
    """Minibatches per timed fit epoch: enough that the epoch's own work (shuffle, one-example
    validation pass, history) is spread over many steps."""
    return max(16, 512 // B)


def make_own_loop_and_fit(arch: tuple, B: int, dtype, seed: int = 0):
    """Two closures that each run S = fit_steps(B) training steps of their own fresh model
    (same seed): the README's own loop, and sv.fit for one epoch of S minibatches."""
    import scratchvae as sv
    D, hidden, d = arch
    S = fit_steps(B)
    rng = np.random.default_rng(seed + 1)
    x = (rng.random((B * S, D)) < 0.3).astype(dtype)   # binarized, as for the Bernoulli decoder

    own = sv.VAE(D, hidden, d, dtype=dtype, seed=seed)
    opt = sv.Adam(lr=1e-3)
    batches = [x[i * B:(i + 1) * B] for i in range(S)]

    def own_loop():
        for xb in batches:
            loss, grads = own.loss_and_grads(xb)
            opt.step(own.params, grads)

    fitted = sv.VAE(D, hidden, d, dtype=dtype, seed=seed)
    fit_opt = sv.Adam(lr=1e-3)
    counter = iter(range(10**9))

    def fit_epoch():
        sv.fit(fitted, x, x_val=x[:1], epochs=1, batch_size=B, optimizer=fit_opt,
               seed=next(counter), progress=False)

    return own_loop, fit_epoch, S


def time_own_loop(batches, dtypes, min_time, rounds, seed=0):
    """The own loop and fit's step in interleaved rounds per (dtype, B); rows of ms per step."""
    rows = []
    for dt in dtypes:
        for B in batches:
            own_loop, fit_epoch, S = make_own_loop_and_fit(ARCHS["784-400-20"], B, dt, seed)
            own_loop()
            fit_epoch()
            R = C.interleaved_times({"own": own_loop, "fit": fit_epoch}, min_time, rounds)
            own, fit_ = R.median("own") / S * 1e3, R.median("fit") / S * 1e3
            rows.append([np.dtype(dt).name, B, S, C.fmt(own, ".3f"), C.fmt(fit_, ".3f"),
                         C.fmt(R.ratio("own", "fit"), ".3f"),
                         C.fmt(R.best("own") / R.best("fit"), ".3f")])
            print(f"  done {np.dtype(dt).name} B={B}: own {own:.3f} ms, fit {fit_:.3f} ms per step",
                  flush=True)
    return rows


# ============================================================================ PyTorch step
def torch_available() -> tuple[bool, str]:
    """(True, version) when torch imports, else (False, the reason)."""
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        return False, f"{type(e).__name__}: {e}"
    return True, torch.__version__


def make_torch_step(arch: tuple, B: int, dtype, adam: str, seed: int = 0):
    """The same step in PyTorch CPU eager: Linear/ReLU VAE, BCE-with-logits summed over D plus the
    closed-form KL, mean over the batch, K = 1, fixed eps; then Adam (``adam``: "fused", "default"
    or "foreach"). Returns the step closure; raises when this Adam variant is unsupported."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    D, hidden, d = arch
    tdt = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    torch.manual_seed(seed)

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            enc = (D,) + tuple(hidden)
            dec = (d,) + tuple(hidden[::-1])
            self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(enc[:-1], enc[1:]))
            self.mu = nn.Linear(enc[-1], d)
            self.logvar = nn.Linear(enc[-1], d)
            self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dec[:-1], dec[1:]))
            self.out = nn.Linear(dec[-1], D)

        def forward(self, x, eps):
            h = x
            for layer in self.enc:
                h = F.relu(layer(h))
            mu, logvar = self.mu(h), self.logvar(h)
            z = mu + torch.exp(0.5 * logvar) * eps
            h = z
            for layer in self.dec:
                h = F.relu(layer(h))
            logits = self.out(h)
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
            kl = 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)
            return (rec + kl).mean()

    model = TorchVAE().to(tdt)
    kwargs = {"fused": {"fused": True}, "default": {}, "foreach": {"foreach": True}}[adam]
    opt = torch.optim.Adam(model.parameters(), lr=LR, **kwargs)
    rng = np.random.default_rng(seed + 1)
    x = torch.from_numpy(rng.random((B, D)).astype(dtype))
    eps = torch.from_numpy(rng.standard_normal((B, d)).astype(dtype))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(x, eps)
        loss.backward()
        opt.step()
        return loss.item()

    step()  # raises here if e.g. fused Adam does not support this dtype/device
    return step


# ============================================================================ timings
def time_first_call(backends, dtypes, seed=0):
    """First and second step of a fresh model per backend and dtype (784-400-20, B=32): the first
    includes numba's JIT compile, or the load of its on-disk cache. Also the loss of that first
    step, which must agree across backends (same seed, x and eps)."""
    rows = []
    for dt in dtypes:
        for be in backends:
            step, _, _ = make_step(be, ARCHS["784-400-20"], 32, dt, seed)
            t0 = time.perf_counter()
            loss = step()
            t1 = time.perf_counter()
            step()
            t2 = time.perf_counter()
            rows.append([be, np.dtype(dt).name, C.fmt((t1 - t0) * 1e3, ".1f"),
                         C.fmt((t2 - t1) * 1e3, ".2f"), f"{loss:.10g}"])
    return rows


def time_steps(archs, batches, dtypes, backends, torch_adams, min_time, rounds, seed=0):
    """Every (arch, dtype, B): each backend's step, torch's steps and each of the step's GEMMs,
    timed in interleaved rounds (``_common.interleaved_times``); the GEMM sum of a round is the
    sum of that round's GEMM times. Returns the long table rows and one summary dict per
    (arch, dtype, B) with per-round paired ratios."""
    long_rows, summary, dumps = [], [], []
    for arch_name in archs:
        D, hidden, d = ARCHS[arch_name]
        for dt in dtypes:
            dname = np.dtype(dt).name
            for B in batches:
                gemms = step_gemms(D, hidden, d, B)
                flops = step_flops(gemms)
                fns = {}
                for be in backends:
                    fns[be] = make_step(be, ARCHS[arch_name], B, dt, seed)[0]
                for adam in torch_adams:
                    try:
                        fns[f"torch-{adam}"] = make_torch_step(ARCHS[arch_name], B, dt, adam, seed)
                    except Exception as e:  # unsupported variant: note it and go on
                        print(f"note: torch Adam {adam} failed for {dname}: "
                              f"{type(e).__name__}: {e}")
                impls = list(fns)
                gfns = gemm_closures(gemms, dt)
                fns.update({f"gemm:{k}": v for k, v in gfns.items()})
                tgfns = torch_gemm_closures(gemms, dt) if torch_adams else {}
                fns.update({f"torch-gemm:{k}": v for k, v in tgfns.items()})
                for fn in fns.values():
                    for _ in range(3):
                        fn()
                groups = {n: "torch" if n.startswith("torch") else "numpy/openblas" for n in fns}
                R = C.interleaved_times(fns, min_time, rounds, groups=groups)
                gemm_rounds = sum(R.times[f"gemm:{k}"] for k in gfns)
                R.times["GEMM sum"] = gemm_rounds
                gemm_sum = float(np.median(gemm_rounds))
                extra = ["GEMM sum"]
                if tgfns:
                    R.times["torch GEMM sum"] = sum(R.times[f"torch-gemm:{k}"] for k in tgfns)
                    extra.append("torch GEMM sum")
                dumps.append(dict(arch=arch_name, dtype=dname, B=B, flops=flops,
                                  rounds={k: v.tolist() for k, v in R.times.items()},
                                  faults=R.faults, noisy=R.noisy))
                has_np, has_tf = "numpy" in impls, "torch-fused" in impls
                for name in impls + extra:
                    t = R.median(name)
                    long_rows.append(dict(
                        arch=arch_name, dtype=dname, B=B, impl=name, t=t,
                        best=R.best(name),
                        gflops=flops / t / 1e9, xgemm=R.ratio(name, "GEMM sum"),
                        vs_numpy=R.ratio(name, "numpy") if has_np else None,
                        vs_torch=R.ratio(name, "torch-fused") if has_tf else None,
                        faults=R.faults.get(name), noisy=R.noisy.get(name)))
                summary.append(dict(
                    arch=arch_name, dtype=dname, B=B, flops=flops, gemm_sum=gemm_sum,
                    **{k: R.median(k) for k in impls},
                    r_numpy_numba=(_ratios(R, "numpy", "numba")
                                   if has_np and "numba" in impls else None),
                    r_numba_gemm=_ratios(R, "numba", "GEMM sum") if "numba" in impls else None,
                    r_numba_torch=(_ratios(R, "numba", "torch-fused")
                                   if has_tf and "numba" in impls else None)))
                print(f"  done {arch_name} {dname} B={B}: "
                      + ", ".join(f"{k} {R.median(k) * 1e3:.3f} ms" for k in impls)
                      + f", GEMM sum {gemm_sum * 1e3:.3f} ms", flush=True)
    return long_rows, summary, dumps


def _ratios(R, num: str, den: str) -> tuple[float, float]:
    """(median of the per-round ratios num/den, ratio of the best rounds): two estimates that
    disagree when slow spells of the machine hit the two unevenly."""
    best = lambda n: float(np.min(R.times[n]))  # noqa: E731  ("GEMM sum" has per-round sums)
    return R.ratio(num, den), best(num) / best(den)


def _fmt_ratio(r) -> str:
    return "-" if r is None else f"{r[0]:.2f} ({r[1]:.2f})"


def time_breakdown(archs, batches, dtypes, backends, min_time, repeats, seed=0):
    """Where a step's time goes: every kernel of the model and the optimizer wrapped in a timer.

    Categories per step: GEMM (matmul, matmul_at, matmul_bt), fused (the other model kernels),
    Adam (adam_step kernels), and the rest (Python glue, validation, dict building), as total
    minus the timed kernels. ``valid.`` is the validation a step runs, timed alone: Adam.step's
    checks of the parameters and gradients (shapes, dtypes, and an ``all_finite`` kernel pass
    over every gradient; the all_finite calls are also inside the fused column).
    """
    from scratchvae.kernels import KERNEL_NAMES
    rows = []
    gemm_names = {"matmul", "matmul_at", "matmul_bt"}
    for arch_name in archs:
        for dt in dtypes:
            for B in batches:
                for be in backends:
                    step, model, opt = make_step(be, ARCHS[arch_name], B, dt, seed)
                    acc = dict.fromkeys(KERNEL_NAMES, 0.0)

                    def timed(name, fn):
                        @functools.wraps(fn)   # keeps the signature, so bind() sees ``ws``
                        def wrapper(*args, **kwargs):
                            t0 = time.perf_counter()
                            r = fn(*args, **kwargs)
                            acc[name] += time.perf_counter() - t0
                            return r
                        return wrapper

                    from scratchvae.kernels import bind
                    k = model.kernels
                    wrapped = k._replace(**{n: timed(n, getattr(k, n)) for n in KERNEL_NAMES})
                    # the kernel sets only (benchmark-only surgery); model.backend is unchanged
                    # bind() of the timed set gives timed bound kernels (each call timed once)
                    model._bound = bind(wrapped, model._workspace) if WORKSPACE else wrapped
                    opt._k = wrapped
                    for _ in range(3):
                        step()
                    number = C.calibrate(step, min_time)
                    best = None
                    for _ in range(repeats):  # keep the fastest quiet repeat
                        for key in acc:
                            acc[key] = 0.0
                        busy, f0 = C.other_cpu_ticks(), C.minor_faults()
                        t0 = time.perf_counter()
                        for _ in range(number):
                            step()
                        total = (time.perf_counter() - t0) / number
                        snap = (total, {key: v / number for key, v in acc.items()},
                                C.other_cpu_ticks() == busy, (C.minor_faults() - f0) / number)
                        # keep the fastest quiet repeat: least disturbed by others
                        if (best is None or (snap[2] and not best[2])
                                or (snap[2] == best[2] and snap[0] < best[0])):
                            best = snap
                    total, per, _, faults = best
                    gemm = sum(v for n, v in per.items() if n in gemm_names)
                    adam = per["adam_step"]
                    fused = sum(v for n, v in per.items()
                                if n not in gemm_names and n != "adam_step")
                    rest = total - gemm - adam - fused
                    x = np.random.default_rng(0).random((B, ARCHS[arch_name][0])).astype(dt)
                    eps = model.draw_eps(1, B, np.random.default_rng(1))
                    _, grads = model.loss_and_grads(x, eps=eps)

                    def validate():
                        opt._check_step_args(model.params, grads)

                    validate()
                    t_val = C.median_time(validate, min_time, repeats).median
                    top = sorted(((v, n) for n, v in per.items() if n not in gemm_names),
                                 reverse=True)[:3]
                    rows.append([arch_name, np.dtype(dt).name, B, be, C.fmt(total * 1e3, ".3f"),
                                 C.fmt(gemm * 1e3, ".3f"), C.fmt(fused * 1e3, ".3f"),
                                 C.fmt(adam * 1e3, ".3f"), C.fmt(rest * 1e3, ".3f"),
                                 C.fmt(t_val * 1e3, ".3f"), C.fmt(faults, ".0f"),
                                 ", ".join(f"{n} {v * 1e3:.3f}" for v, n in top)])
    return rows


def time_fit_guards(dtypes, min_time, repeats, seed=0):
    """What ``sv.fit`` adds to every training step beyond this benchmark's step (train.py), on
    the numba backend: an ``all_finite`` pass over all gradients (the optimizer then skips its
    own), a copy of every parameter into a backup, and an ``all_finite`` pass over every
    parameter after the update. Timed alone for the 784-400-20 model; returns rows (dtype,
    parameters, ms per step)."""
    from scratchvae.train import _all_finite, _copy_all
    rows = []
    for dt in dtypes:
        _, model, _ = make_step("numba", ARCHS["784-400-20"], 1, dt, seed)
        k, params = model.kernels, model.params
        grads = {key: np.full_like(v, 1e-3) for key, v in params.items()}
        backup = {key: np.empty_like(v) for key, v in params.items()}

        def guards():
            _all_finite(k, 0.0, grads)
            _copy_all(k, backup, params)
            _all_finite(k, 0.0, params)

        guards()
        t = C.median_time(guards, min_time, repeats).median
        n_params = sum(v.size for v in params.values())
        rows.append([np.dtype(dt).name, n_params, C.fmt(t * 1e3, ".3f")])
    return rows


# ============================================================================ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 32, 512; 3 repeats of >= 10 ms")
    parser.add_argument("--backends", default="numpy,numba", help="comma list (numpy,numba,cuda)")
    parser.add_argument("--dtypes", default="float32,float64", help="comma list")
    parser.add_argument("--batch-sizes", default=None, help="comma list (default 1,32,128,512)")
    parser.add_argument("--archs", default=",".join(ARCHS), help=f"comma list of {tuple(ARCHS)}")
    parser.add_argument("--torch-adam", default="fused,default,foreach",
                        help="torch Adam variants to time (comma list), or 'none'")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the per-kernel breakdown")
    parser.add_argument("--no-probes", action="store_true", help="skip the fit-guards probe")
    parser.add_argument("--min-time", type=float, default=None, help="seconds per timed loop")
    parser.add_argument("--repeats", type=int, default=None, help="timed loops per median")
    parser.add_argument("--max-tries", type=int, default=None,
                        help="tries per repeat while another process uses the CPU (default 10, "
                             "--quick 2)")
    parser.add_argument("--cold", action="store_true",
                        help="use a fresh NUMBA_CACHE_DIR, so the first-call row is the true "
                             "JIT cost")
    parser.add_argument("--malloc", choices=tuple(C.MALLOC_MODES), default="default",
                        help="glibc large-block policy (see _common.set_malloc_mode): default, "
                             "reuse (freed arrays reused: no page faults) or mmap (every array "
                             "above 128 KiB mapped fresh: faults on every step)")
    parser.add_argument("--workspace", choices=("on", "off"), default="on",
                        help="reuse one Workspace across steps as fit does (on), or give every "
                             "kernel fresh output arrays (off)")
    parser.add_argument("--own-loop", action="store_true",
                        help="only time the README's own training loop beside fit's step "
                             "(784-400-20, numba)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument("--json", default=None, help="also write every round's times to this file")
    args = parser.parse_args(argv)
    malloc_note = C.set_malloc_mode(args.malloc)  # first, before any large array exists
    global WORKSPACE
    WORKSPACE = args.workspace == "on"
    backends = [b for b in args.backends.split(",") if b]
    dtypes = [np.dtype(s).type for s in args.dtypes.split(",") if s]
    archs = [a for a in args.archs.split(",") if a]
    for a in archs:
        if a not in ARCHS:
            parser.error(f"--archs: unknown architecture {a!r}; choose from {tuple(ARCHS)}")
    if args.batch_sizes:
        batches = tuple(int(s) for s in args.batch_sizes.split(","))
    else:
        batches = (32, 512) if args.quick else BATCHES
    min_time = args.min_time or (0.01 if args.quick else 0.03)
    repeats = args.repeats or (3 if args.quick else 7)
    C.SETTINGS["max_tries"] = args.max_tries or (2 if args.quick else 10)
    if args.cold:  # before numba is imported
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="scratchvae-numba-cache-")

    # torch first (if wanted), so its OpenMP runtime starts before anything else is loaded
    torch_adams = ([] if args.torch_adam == "none" or args.own_loop
                   else [s for s in args.torch_adam.split(",") if s])
    torch_note = ""
    if torch_adams:
        ok, info = torch_available()
        if ok:
            import torch
            torch.set_num_threads(2)
            torch_note = (f"torch {info}: CPU eager, torch.get_num_threads() = "
                          f"{torch.get_num_threads()}, Adam variants {torch_adams}")
        else:
            torch_note = f"torch not importable ({info}): PyTorch rows skipped"
            torch_adams = []
    C.add_repo_to_path()
    import scratchvae  # noqa: F401
    if args.own_loop:
        print(f"# bench_step.py {' '.join(sys.argv[1:] if argv is None else argv)}")
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}")
        for line in C.env_report(INITIAL_ENV):
            print("# " + line)
        for line in C.threadpool_summary():
            print("# " + line)
        print(f"\n## own loop vs fit's step (784-400-20, numba, ms per step; {repeats} "
              f"interleaved rounds; own/fit = median of the per-round ratios, best = ratio of the "
              f"best rounds)", flush=True)
        rows = time_own_loop(batches, dtypes, min_time, repeats)
        print(C.format_table(["dtype", "B", "steps S", "own loop ms", "fit step ms", "own/fit",
                              "best/best"], rows, args.markdown))
        return
    for be in backends:
        scratchvae.kernels.get_kernels(be)  # fail early on an unavailable backend

    print(f"# bench_step.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"# {torch_note or 'torch: not requested'}")
    print(f"# malloc: {malloc_note}")
    print(f"# workspace: {args.workspace}")
    t_start = time.perf_counter()

    first = time_first_call(backends, dtypes)
    for line in C.env_report(INITIAL_ENV):
        print("# " + line)

    print("\n## first step of a fresh model (784-400-20, B=32): compile or cache load, then warm")
    print(C.format_table(["backend", "dtype", "1st step ms", "2nd step ms", "loss of 1st step"],
                         first, args.markdown))

    print(f"\n## steps: {repeats} interleaved rounds, each timing every implementation and GEMM "
          f"once (a loop of >= {min_time * 1e3:.0f} ms); ms = median over rounds, ratios = median "
          "of the per-round ratios", flush=True)
    long_rows, summary, dumps = time_steps(archs, batches, dtypes, backends, torch_adams,
                                           min_time, repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(argv=sys.argv[1:], malloc=malloc_note, rows=dumps), f)
    # measured after the steps: its 4-8 MB temporaries would raise glibc's dynamic mmap
    # threshold and so change how the steps' own allocations behave (see --malloc)
    peaks = {np.dtype(dt).name: C.time_gemm_peak(dt) for dt in dtypes}
    print("\n## GEMM peak (best of 10 NumPy (1024,1024) @ (1024,1024), GFLOP/s)")
    print(C.format_table(["dtype", "GFLOP/s"], [[k, C.fmt(v, ".1f")] for k, v in peaks.items()],
                         args.markdown))
    print()
    table = [[r["arch"], r["dtype"], r["B"], r["impl"], C.fmt(r["t"] * 1e3, ".3f"),
              C.fmt(r["best"] and r["best"] * 1e3, ".3f"), C.fmt(r["gflops"], ".1f"),
              C.fmt(100 * r["gflops"] / peaks[r["dtype"]], ".1f"), C.fmt(r["xgemm"], ".2f"),
              C.fmt(r["vs_numpy"], ".2f"), C.fmt(r["vs_torch"], ".2f"), C.fmt(r["faults"], ".0f"),
              "" if r["noisy"] is None else r["noisy"]] for r in long_rows]
    print(C.format_table(["arch", "dtype", "B", "impl", "ms", "best ms", "GFLOP/s", "%peak",
                          "xGEMM", "/numpy", "/torch", "faults", "noisy"], table, args.markdown))

    print("\n## summary: the issue's targets; each ratio is the median of the per-round paired "
          "ratios, with the ratio of the best (fastest-round) times in parentheses")
    srows = []
    for s in summary:
        nb, npy, tf = s.get("numba"), s.get("numpy"), s.get("torch-fused")
        srows.append([s["arch"], s["dtype"], s["B"], C.fmt(s["flops"] / 1e6, ".2f"),
                      C.fmt(npy and npy * 1e3, ".3f"), C.fmt(nb and nb * 1e3, ".3f"),
                      C.fmt(tf and tf * 1e3, ".3f"), C.fmt(s["gemm_sum"] * 1e3, ".3f"),
                      _fmt_ratio(s["r_numpy_numba"]), _fmt_ratio(s["r_numba_gemm"]),
                      _fmt_ratio(s["r_numba_torch"])])
    print(C.format_table(["arch", "dtype", "B", "MFLOP", "numpy ms", "numba ms", "torch fused ms",
                          "GEMM sum ms", "numpy/numba (>=1.5 B32, >=1.3 B512)",
                          "numba/GEMM (<=1.5 B512 f32)", "numba/torch (<=0.8)"],
                         srows, args.markdown))

    if not args.no_breakdown:
        print("\n## breakdown of one step, ms (kernels timed in place; rest = Python, validation, "
              "allocation)", flush=True)
        rows = time_breakdown(archs[:1], batches, dtypes, backends, min_time, repeats)
        print(C.format_table(["arch", "dtype", "B", "backend", "step", "GEMM", "fused", "Adam",
                              "rest", "valid.", "faults", "largest non-GEMM kernels"],
                             rows, args.markdown))

    if not args.no_probes:
        print("\n## fit guards: what sv.fit adds per step (isfinite of grads, backup copy of the "
              "params, isfinite of the params), 784-400-20, ms", flush=True)
        print(C.format_table(["dtype", "parameters", "ms per step"],
                             time_fit_guards(dtypes, min_time, repeats), args.markdown))

    print(f"\n# {C.NOISY_TOTAL['repeats']} of the timed repeats ran while another process used "
          f"the CPU (kept after {C.SETTINGS['max_tries']} tries); "
          f"total {time.perf_counter() - t_start:.0f} s")
    for line in C.env_report(INITIAL_ENV):  # thread pools after the run (numba, BLAS, torch)
        if line.startswith(("numba", "threadpoolctl")):
            print("# after run: " + line)


if __name__ == "__main__":
    main()
