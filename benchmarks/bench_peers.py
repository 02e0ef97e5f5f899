"""Peer benchmark: one training step of the canonical VAE in scratchvae, PyTorch and JAX, each
framework in a process of its own, in rounds whose order rotates.

Run it from the repository root in the benchmark's own environment (benchmarks/peers_env.sh
builds it; torch and jax are never dependencies of scratchvae), with OpenBLAS's overrides unset
for this command alone:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /work/benchenv/bin/python \\
        benchmarks/bench_peers.py --markdown            # full grid, about 15 minutes
    ... benchmarks/bench_peers.py --quick               # smoke run, about a minute

The step (the same model in every framework): VAE D-H-d with one hidden layer of ReLU in
encoder and decoder, diagonal Gaussian posterior (mu and logvar heads), standard normal prior,
Bernoulli likelihood on logits, K = 1 sample drawn anew every step, loss = batch mean of
(sum over D of the Bernoulli negative log-likelihood + closed-form KL), its gradients, one Adam
step (lr 1e-3, betas 0.9/0.999, eps 1e-8). Weights Glorot-uniform, biases zero. Data: a fixed
batch x ~ U[0, 1] of B rows.

Implementations (``FRAMEWORKS``):
- ``jax``: the whole step (forward, ``jax.value_and_grad``, ``optax.adam`` update, the noise
  from ``jax.random``) in one ``jax.jit``, parameters and optimizer state donated; every call
  blocks until its outputs are ready (``jax.block_until_ready``).
- ``torch``: PyTorch eager, ``nn.Linear`` layers, ``binary_cross_entropy_with_logits``,
  ``torch.randn`` noise, ``zero_grad(set_to_none=True)``, ``backward()``,
  ``torch.optim.Adam(fused=True)`` (the worker falls back to ``foreach=True`` and says so where
  fused is unsupported), ``loss.item()``.
- ``sv-loop``: the user's own loop as the README writes it, default construction:
  ``model = sv.VAE(D, (H,), d, activation="relu", likelihood="bernoulli", dtype=dt, seed=0)``,
  ``opt = sv.Adam(lr=1e-3)``, then per step ``loss, grads = model.loss_and_grads(x)`` and
  ``opt.step(model.params, grads)``.
- ``sv-fit``: ``sv.fit``'s own step. Method: ``sv.fit(model, X, x_val=X[:B], epochs=E,
  batch_size=B, optimizer=sv.Adam(lr=1e-3), progress=False)`` over a dataset X of S * B rows
  (S = 32 steps per epoch, so E * S steps in all); the reported time is the wall time of the
  whole ``fit`` call divided by E * S, subtracting nothing. It therefore includes everything fit
  does besides the steps, amortised: the per-epoch shuffle of X, one validation pass over B rows
  and the history per epoch, and the workspace's allocation at the first step of the call
  (each repeat is a fresh ``fit`` call, after one untimed warm-up call).
- ``sv-loop@numba`` / ``sv-fit@numba``: the same two with ``backend="numba"`` passed to the model
  (and, for the loop, to ``sv.Adam``), timed while the default construction is not the numba
  backend (``--sv-backends``).
- ``gemm``: NumPy alone (same process kind, no framework): each of the step's matrix products
  (forward ``a @ W``, weight gradient ``a.T @ dh``, input gradient ``dh @ W.T``, in the layout
  the model calls them) timed alone at its shape; their sum is the step's "GEMM sum", the floor
  of a design that calls BLAS for every product. The same process measures the machine's GEMM
  peak (best of 10 NumPy 1024^3 matmuls per dtype) every round.

Rounds: for each dtype and each round r, every implementation runs once in a fresh process
(``--worker``), in the order ``rotate(implementations, r)``; the process times every (arch, B)
point of that dtype: it builds the point's step, warms it up (compile included) and reports the
median over ``--repeats`` repeats of ``time.perf_counter`` around a loop of at least
``--min-time`` s. Ratios are taken per round (a
framework's time over the best peer's time of the same round, or over the same round's GEMM
sum) and the table reports their median over rounds; ms columns are medians over rounds.
Threads: each framework as it defaults on this machine (printed per worker): NumPy's OpenBLAS
pool, torch's intra-op pool, XLA's CPU client. GFLOP/s counts the step's matrix products only
(2 m n p each); %peak divides it by the GEMM peak of the dtype.

The header prints the CPU (/proc/cpuinfo), OpenBLAS's kernel (threadpoolctl ``architecture``),
numba's threading layer and threads, and versions. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE force a
BLAS kernel (this machine's environment sets the Haswell one, about half the speed of the kernel
OpenBLAS picks itself): the benchmark refuses to run while either is set (exit 2) unless
``--allow-override`` is given, and then it warns in the header and in every table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

INITIAL_ENV = dict(os.environ)  # before anything: what every worker gets

import numpy as np  # noqa: E402

import _common as C  # noqa: E402  (benchmarks/ is sys.path[0] when this script runs)

ARCHS = {"784-400-20": (784, 400, 20), "64-32-8": (64, 32, 8)}
BATCHES = (1, 32, 128, 512)
DTYPES = ("float32", "float64")
PEERS = ("jax", "torch")
LR = 1e-3
OVERRIDE_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
RESULT_TAG = "RESULT-JSON "


# ============================================================================ pure helpers
def rotate(names, r: int) -> list:
    """``names`` rotated left by ``r`` (round r's order): every name leads once per len rounds."""
    names = list(names)
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


def median_of_ratios(num, den) -> float:
    """Median over rounds of the paired ratios num[r] / den[r] (NaN where no round has both)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    if num.shape != den.shape:
        raise ValueError(f"num and den must have one value per round; got {num.shape}, {den.shape}")
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    return float(np.median(num[ok] / den[ok])) if ok.any() else float("nan")


def best_per_round(*series) -> np.ndarray:
    """Round-wise minimum over several per-round series (NaN entries ignored; all NaN -> NaN)."""
    stack = np.asarray(series, float)
    out = np.full(stack.shape[1:], np.nan)
    ok = np.isfinite(stack).any(axis=0)
    out[ok] = np.nanmin(stack[:, ok], axis=0)
    return out


def blas_overrides(env) -> dict:
    """The OpenBLAS kernel overrides set in ``env``: {name: value}."""
    return {v: env[v] for v in OVERRIDE_VARS if env.get(v) is not None}


def step_gemms(D: int, H: int, d: int, B: int) -> list[tuple]:
    """The matrix products of one step (K = 1): (label, kind, (m, n, p)), kind "nn" (a @ b),
    "tn" (a.T @ b) or "nt" (a @ b.T), each 2 m n p flops; layers D->H, H->d (mu and logvar
    heads), d->H, H->D; the first layer needs no input gradient."""
    layers = [("enc.W0", D, H, False), ("enc.W_mu", H, d, True), ("enc.W_logvar", H, d, True),
              ("dec.W0", d, H, True), ("dec.W_out", H, D, True)]
    out = []
    for name, fi, fo, needs_da in layers:
        out.append((f"{name} fwd", "nn", (B, fi, fo)))
        out.append((f"{name} dW", "tn", (fi, B, fo)))
        if needs_da:
            out.append((f"{name} da", "nt", (B, fo, fi)))
    return out


def step_flops(D: int, H: int, d: int, B: int) -> int:
    """2 m n p summed over the step's products: 2 B (5 D H + 9 H d)."""
    return sum(2 * m * n * p for _, _, (m, n, p) in step_gemms(D, H, d, B))


# ============================================================================ workers
def _glorot(rng, fan_in, fan_out, dtype):
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(dtype)


def init_params(D, H, d, dtype, seed=0) -> dict:
    """Glorot-uniform weights (fan_in, fan_out), zero biases, for the peers (NumPy arrays)."""
    rng = np.random.default_rng(seed)
    shapes = {"e0": (D, H), "mu": (H, d), "lv": (H, d), "d0": (d, H), "out": (H, D)}
    p = {}
    for k, (fi, fo) in shapes.items():
        p[k + ".W"] = _glorot(rng, fi, fo, dtype)
        p[k + ".b"] = np.zeros(fo, dtype)
    return p


def data(D, B, dtype, seed=1):
    return np.random.default_rng(seed).random((B, D)).astype(dtype)


def make_jax_step(D, H, d, B, dtype):
    import jax
    import jax.numpy as jnp
    import optax

    def loss_fn(p, x, key):
        h = jax.nn.relu(x @ p["e0.W"] + p["e0.b"])
        mu = h @ p["mu.W"] + p["mu.b"]
        lv = h @ p["lv.W"] + p["lv.b"]
        z = mu + jnp.exp(0.5 * lv) * jax.random.normal(key, mu.shape, mu.dtype)
        hd = jax.nn.relu(z @ p["d0.W"] + p["d0.b"])
        logits = hd @ p["out.W"] + p["out.b"]
        # Bernoulli negative log-likelihood on logits: softplus(l) - x l, summed over D
        rec = jnp.sum(jax.nn.softplus(logits) - x * logits, axis=1)
        kl = 0.5 * jnp.sum(mu * mu + jnp.exp(lv) - 1.0 - lv, axis=1)
        return jnp.mean(rec + kl)

    opt = optax.adam(LR, b1=0.9, b2=0.999, eps=1e-8)

    def step(p, state, key, x):
        key, sub = jax.random.split(key)
        loss, g = jax.value_and_grad(loss_fn)(p, x, sub)
        updates, state = opt.update(g, state, p)
        return optax.apply_updates(p, updates), state, key, loss

    jstep = jax.jit(step, donate_argnums=(0, 1))
    box = {"p": {k: jnp.asarray(v) for k, v in init_params(D, H, d, dtype).items()}}
    box["s"] = opt.init(box["p"])
    box["k"] = jax.random.key(0)
    x = jnp.asarray(data(D, B, dtype))

    def run():
        box["p"], box["s"], box["k"], loss = jstep(box["p"], box["s"], box["k"], x)
        jax.block_until_ready((box["p"], loss))
        return loss

    return run


def make_torch_step(D, H, d, B, dtype, info):
    import torch
    import torch.nn.functional as F
    from torch import nn

    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    p = init_params(D, H, d, dtype)

    def linear(name):
        fi, fo = p[name + ".W"].shape
        layer = nn.Linear(fi, fo).to(tdt)
        with torch.no_grad():  # the same Glorot draw as the other frameworks (torch's W is (fo, fi))
            layer.weight.copy_(torch.from_numpy(p[name + ".W"].T.copy()))
            layer.bias.zero_()
        return layer

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.e0, self.mu, self.lv = linear("e0"), linear("mu"), linear("lv")
            self.d0, self.out = linear("d0"), linear("out")

        def forward(self, x):
            h = F.relu(self.e0(x))
            mu, lv = self.mu(h), self.lv(h)
            z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
            logits = self.out(F.relu(self.d0(z)))
            rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
            kl = 0.5 * (mu * mu + torch.exp(lv) - 1.0 - lv).sum(dim=1)
            return (rec + kl).mean()

    torch.manual_seed(0)
    model = VAE()
    x = torch.from_numpy(data(D, B, dtype))
    box = {}

    def run():
        opt = box["opt"]
        opt.zero_grad(set_to_none=True)
        loss = model(x)
        loss.backward()
        opt.step()
        return loss.item()

    try:
        box["opt"] = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
        run()  # raises here where fused Adam does not support this dtype/device
        info["torch_adam"] = "fused=True"
    except (RuntimeError, ValueError, TypeError) as e:
        box["opt"] = torch.optim.Adam(model.parameters(), lr=LR, foreach=True)
        info["torch_adam"] = f"foreach=True (fused unavailable: {e})"
    return run


def make_sv_loop(D, H, d, B, dtype, backend):
    import scratchvae as sv
    kw = {} if backend == "default" else {"backend": backend}
    model = sv.VAE(D, (H,), d, activation="relu", likelihood="bernoulli", dtype=dtype, seed=0, **kw)
    opt = sv.Adam(lr=LR, **kw)
    x = data(D, B, dtype)

    def run():
        loss, grads = model.loss_and_grads(x)
        opt.step(model.params, grads)
        return loss

    return run, model, opt


def make_sv_fit(D, H, d, B, dtype, backend, min_time):
    """Returns (run_fit, steps_per_call): one ``sv.fit`` call of E epochs of S steps."""
    import scratchvae as sv
    kw = {} if backend == "default" else {"backend": backend}
    model = sv.VAE(D, (H,), d, activation="relu", likelihood="bernoulli", dtype=dtype, seed=0, **kw)
    S = 32
    X = np.random.default_rng(1).random((S * B, D)).astype(dtype)
    opt = sv.Adam(lr=LR)

    def fit(epochs):
        sv.fit(model, X, x_val=X[:B], epochs=epochs, batch_size=B, optimizer=opt, progress=False,
               seed=0)

    fit(1)  # warm-up: compiles, first allocations
    t0 = time.perf_counter()
    fit(1)
    per_epoch = time.perf_counter() - t0
    epochs = max(1, int(np.ceil(min_time / max(per_epoch, 1e-9))))
    return (lambda: fit(epochs)), epochs * S, model


def thread_report(framework) -> dict:
    out = {"threadpools": C.threadpool_summary(), "numba": C.numba_thread_info()}
    if framework == "torch":
        import torch
        out["torch"] = (f"torch {torch.__version__}: get_num_threads()={torch.get_num_threads()}, "
                        f"interop={torch.get_num_interop_threads()}, "
                        f"{torch.__config__.parallel_info().splitlines()[-1].strip()}")
    if framework == "jax":
        import jax
        import jaxlib
        dev = jax.devices()
        out["jax"] = (f"jax {jax.__version__} / jaxlib {jaxlib.__version__}: devices={dev}, "
                      f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')}, "
                      f"x64={jax.config.jax_enable_x64}")
    if framework.startswith("sv"):
        import scratchvae as sv
        out["scratchvae"] = f"scratchvae {getattr(sv, '__version__', '?')}"
    return out


def worker(args) -> int:
    """Time one framework at every (arch, B) point of one dtype; print one JSON line."""
    framework, dtype = args.worker, args.dtype
    C.SETTINGS["max_tries"] = args.max_tries
    if framework == "jax" and dtype == "float64":
        import jax
        jax.config.update("jax_enable_x64", True)
    if framework.startswith("sv"):
        C.add_repo_to_path()
    info: dict = {}
    out = {"framework": framework, "dtype": dtype, "times": {}, "noisy": {}, "info": info}
    for arch, B in ((a, b) for a in args.archs.split(",") for b in args.batches):
        D, H, d = ARCHS[arch]
        point = f"{arch}|{B}"
        t_build = time.perf_counter()
        number = None
        if framework == "gemm":
            from bench_step import gemm_closures
            fns = gemm_closures([(lbl, kind, mnp) for lbl, kind, mnp in step_gemms(D, H, d, B)],
                                np.dtype(dtype))
            total, noisy = 0.0, 0
            for fn in fns.values():
                fn()
                t = C.median_time(fn, args.min_time / 4, args.repeats)
                total += t.median
                noisy += t.noisy
            out["times"][point], out["noisy"][point] = total, noisy
            continue
        if framework == "jax":
            fn = make_jax_step(D, H, d, B, dtype)
        elif framework == "torch":
            fn = make_torch_step(D, H, d, B, dtype, info)
        elif framework.startswith("sv-loop"):
            backend = framework.partition("@")[2] or "default"
            fn, model, opt = make_sv_loop(D, H, d, B, dtype, backend)
            info["sv_backend"] = f"model.backend={model.backend!r}, opt.backend={opt.backend!r}"
        elif framework.startswith("sv-fit"):
            backend = framework.partition("@")[2] or "default"
            fn, steps, model = make_sv_fit(D, H, d, B, dtype, backend, args.min_time)
            info["sv_backend"] = f"model.backend={model.backend!r} (fit sets Adam's backend)"
            info.setdefault("fit_steps_per_call", {})[point] = steps
            number = 1
        else:
            raise SystemExit(f"unknown framework {framework!r}")
        if number != 1:  # (make_sv_fit has warmed up its fit already)
            # warm-up: compile (numba / XLA), first allocations, then at least 0.2 s of steps
            fn()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.2:
                fn()
        info.setdefault("warmup_s", {})[point] = round(time.perf_counter() - t_build, 2)
        t = C.median_time(fn, args.min_time, args.repeats, number=number)
        per_step = t.median / (steps if framework.startswith("sv-fit") else 1)
        out["times"][point], out["noisy"][point] = per_step, t.noisy
    if framework == "gemm":
        out["peak_gflops"] = C.time_gemm_peak(np.dtype(dtype))
    out["threads"] = thread_report(framework)
    print(RESULT_TAG + json.dumps(out), flush=True)
    return 0


# ============================================================================ driver
def run_worker(framework, archs, dtype, batches, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--archs", archs,
           "--dtype", dtype, "--batches", ",".join(map(str, batches)),
           "--min-time", str(args.min_time), "--repeats", str(args.repeats),
           "--max-tries", str(args.max_tries)]
    # each worker gets the environment this script was started with, so that nothing the driver
    # does to its own environment reaches a peer's thread pools
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=C.REPO, env=INITIAL_ENV)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"worker {framework} {dtype} failed (rc {proc.returncode}):\n"
                       f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def default_backend() -> str:
    """The backend ``sv.VAE(...)`` gets by default, read from its signature without importing
    numba-heavy state in the driver."""
    import inspect
    C.add_repo_to_path()
    import scratchvae as sv
    return inspect.signature(sv.VAE.__init__).parameters["backend"].default


def frameworks_for(sv_backends: list[str], default: str) -> list[str]:
    """Implementations to time: the peers, the GEMM floor, sv-loop/sv-fit at the default
    construction and at each other requested backend that differs from the default."""
    names = ["jax", "torch", "gemm", "sv-loop", "sv-fit"]
    for be in sv_backends:
        if be != "default" and be != default:
            names += [f"sv-loop@{be}", f"sv-fit@{be}"]
    return names


def summarise(results: dict, names, arch, dtype, batches, rounds) -> list[dict]:
    """Per batch size: median ms of each implementation, and per-round ratios' medians."""
    D, H, d = ARCHS[arch]
    rows = []
    for B in batches:
        per = {n: np.array([results[(n, r)]["times"].get(f"{arch}|{B}", np.nan)
                            if (n, r) in results else np.nan for r in range(rounds)], float)
               for n in names}
        best_peer = best_per_round(*(per[p] for p in PEERS if p in per))
        peaks = np.array([results[("gemm", r)]["peak_gflops"] for r in range(rounds)
                          if ("gemm", r) in results], float)
        peak = float(np.median(peaks)) if peaks.size else float("nan")
        flops = step_flops(D, H, d, B)
        row = {"arch": arch, "dtype": dtype, "B": B, "mflop": flops / 1e6, "peak": peak,
               "ms": {n: float(np.nanmedian(per[n])) * 1e3 for n in names},
               "winner": [min(PEERS, key=lambda p: per[p][r]) for r in range(rounds)],
               "vs_peer": {}, "vs_gemm": {}, "pct_peak": {}}
        for n in names:
            if n == "gemm":
                continue
            if n not in PEERS:
                row["vs_peer"][n] = median_of_ratios(per[n], best_peer)
            row["vs_gemm"][n] = median_of_ratios(per[n], per["gemm"])
            row["pct_peak"][n] = 100 * flops / (row["ms"][n] * 1e-3) / 1e9 / peak
        rows.append(row)
    return rows


def tables(rows, names, markdown) -> str:
    sv_names = [n for n in names if n.startswith("sv")]
    h1 = (["arch", "dtype", "B", "MFLOP"] + [f"{n} ms" for n in names if n != "gemm"]
          + ["GEMM sum ms", "best peer"])
    t1 = []
    for r in rows:
        winners = sorted(set(r["winner"]))
        t1.append([r["arch"], r["dtype"], r["B"], C.fmt(r["mflop"])]
                  + [C.fmt(r["ms"][n], ".3f") for n in names if n != "gemm"]
                  + [C.fmt(r["ms"]["gemm"], ".3f"), "/".join(winners)])
    h2 = (["arch", "dtype", "B"] + [f"{n} / best peer" for n in sv_names]
          + [f"{n} / GEMM sum" for n in names if n != "gemm"]
          + [f"{n} GFLOP/s (%peak)" for n in names if n != "gemm"])
    t2 = []
    for r in rows:
        gfl = lambda n: r["mflop"] / r["ms"][n]  # noqa: E731  MFLOP / ms = GFLOP/s
        t2.append([r["arch"], r["dtype"], r["B"]]
                  + [C.fmt(r["vs_peer"][n]) for n in sv_names]
                  + [C.fmt(r["vs_gemm"][n]) for n in names if n != "gemm"]
                  + [f"{C.fmt(gfl(n), '.0f')} ({C.fmt(r['pct_peak'][n], '.0f')}%)"
                     for n in names if n != "gemm"])
    return (C.format_table(h1, t1, markdown) + "\n\n" + C.format_table(h2, t2, markdown))


def header(args, names, default) -> list[str]:
    lines = ["# bench_peers: " + " ".join(sys.argv[1:]),
             f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"]
    lines += C.env_report(INITIAL_ENV)
    lines.append(f"scratchvae default construction: backend={default!r}")
    lines.append(f"implementations: {', '.join(names)}; rounds {args.rounds}, repeats {args.repeats}, "
                 f"min-time {args.min_time} s, max-tries {args.max_tries}")
    try:
        with open("/proc/loadavg") as f:
            lines.append(f"load average at start: {f.read().split()[:3]}")
    except OSError:
        pass
    return lines


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: B=32, float32, 2 rounds, short loops")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--dtypes", default=",".join(DTYPES))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.1)
    ap.add_argument("--max-tries", type=int, default=3,
                    help="tries per repeat while another process uses the CPU (see _common.py)")
    ap.add_argument("--sv-backends", default="default,numba",
                    help="scratchvae constructions to time (default = no backend argument)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", help="write the per-round raw results here")
    ap.add_argument("--allow-override", action="store_true",
                    help="run although OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE is set (warns)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.dtypes, args.batches, args.rounds, args.repeats, args.min_time = (
            "float32", "32", 2, 3, 0.03)
    args.batches = [int(b) for b in str(args.batches).split(",")]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        return worker(args)
    overrides = blas_overrides(os.environ)
    warning = ""
    if overrides:
        desc = ", ".join(f"{k}={v}" for k, v in overrides.items())
        if not args.allow_override:
            print(f"bench_peers: refusing to run: {desc} is set. It forces an OpenBLAS kernel "
                  "(Haswell: about half of this CPU's GEMM rate), so NumPy would be measured on "
                  "a handicapped BLAS. Unset it for this command alone:\n  env -u "
                  "OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_peers.py ...\n"
                  "or pass --allow-override to measure it anyway.", file=sys.stderr)
            return 2
        warning = (f"WARNING: {desc} is set (--allow-override): NumPy/OpenBLAS runs on a forced "
                   "kernel; every scratchvae and GEMM number below is handicapped")
        print("!" * 80 + "\n" + warning + "\n" + "!" * 80, file=sys.stderr)
    default = default_backend()
    names = frameworks_for(args.sv_backends.split(","), default)
    archs, dtypes = args.archs.split(","), args.dtypes.split(",")
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise SystemExit(f"--archs: unknown {unknown}; choose from {list(ARCHS)}")
    for line in header(args, names, default) + ([warning] if warning else []):
        print(line)
    print(flush=True)
    results, threads = {}, {}
    t_start = time.perf_counter()
    for i_cell, dtype in enumerate(dtypes):
        cell = {}
        for r in range(args.rounds):
            order = rotate(names, r + i_cell)
            for n in order:
                res = run_worker(n, args.archs, dtype, args.batches, args)
                cell[(n, r)] = res
                threads.setdefault(n, (res["threads"], res["info"]))
            print(f"  {dtype} round {r + 1}/{args.rounds} ({' '.join(order)}) "
                  f"{time.perf_counter() - t_start:.0f} s", file=sys.stderr, flush=True)
        results[dtype] = cell
        if len(dtypes) > 1:  # partial tables as each dtype completes
            part = [row for arch in archs
                    for row in summarise(cell, names, arch, dtype, args.batches, args.rounds)]
            print(f"[{dtype} done after {time.perf_counter() - t_start:.0f} s]\n"
                  + tables(part, names, args.markdown) + "\n", file=sys.stderr, flush=True)
    print("threads and settings reported by each worker (first round):")
    for n, (th, info) in threads.items():
        print(f"  {n}: " + "; ".join(str(v) for v in th.values()) +
              (f"; {json.dumps(info)}" if info else ""))
    noisy = sum(v for cell in results.values() for res in cell.values()
                for v in res["noisy"].values())
    print(f"repeats kept although another process used the CPU: {noisy}")
    print(f"total wall time: {time.perf_counter() - t_start:.0f} s\n")
    rows = []
    for arch in archs:
        for dtype, cell in results.items():
            rows += summarise(cell, names, arch, dtype, args.batches, args.rounds)
    peaks = {r["dtype"]: r["peak"] for r in rows}
    print("measured GEMM peak (median over rounds of the best 1024^3 NumPy matmul): " +
          ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    if warning:
        print(warning)
    print(tables(rows, names, args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows,
                       "raw": {f"{dt}|{n}|{r}": res for dt, cell in results.items()
                               for (n, r), res in cell.items()}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
