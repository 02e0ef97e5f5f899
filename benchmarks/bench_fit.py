"""Training benchmark: seconds per epoch of ``sv.fit`` on the bundled digits per backend, and the
cold and warm start-up time of ``scratchvae train`` (numba's JIT compile against its disk cache).

Run from the repository root:

    python benchmarks/bench_fit.py                 # full: 10 epochs per fit, 3 start-up pairs
    python benchmarks/bench_fit.py --quick         # 3 epochs, 1 start-up pair
    python benchmarks/bench_fit.py --clear-cache   # cold = after deleting the in-tree cache files
    python benchmarks/bench_fit.py --markdown      # tables as markdown (for results.md)

Epochs: ``sv.fit(model, x_train, x_val, epochs=N, batch_size=128, progress=False)`` with
``VAE(64, (H,), d, relu, bernoulli)`` (default 64-400-20, what ``scratchvae train`` builds) on
digits (1258 train, 180 validation images, so 10 minibatches per epoch), for each backend and
dtype, after a one-epoch warm-up fit (compile or cache load). An epoch's time is
``history["seconds"]``: the minibatch steps plus the epoch's evaluation on x_val (elbo_terms and
active_units). The backends' fits alternate over ``--fit-rounds`` rounds in one process, and
numpy/this is the median of the per-round ratios (the machine's speed drifts over seconds).

Start-up: each run is a fresh subprocess, timed from spawn to exit with ``time.perf_counter``.

- cold: the first run after numba's on-disk cache is emptied, so every kernel the run uses is
  compiled. By default the subprocess gets a fresh, empty ``NUMBA_CACHE_DIR`` (numba then reads
  and writes only there, and the shared source tree is left alone); with ``--clear-cache`` the
  ``*.nbi``/``*.nbc`` files of ``scratchvae/kernels/__pycache__`` (and of ``$NUMBA_CACHE_DIR``,
  when set) are deleted instead.
- warm: the second run, with the cache the cold run wrote.
- numpy: the same command with ``--backend numpy``, the baseline without any numba kernel;
  ``cold - numpy`` and ``warm - numpy`` are the start-up cost of the numba backend.

The command is ``python -m scratchvae train --epochs 1 --backend B --quiet --out TMP`` when the
CLI exists; otherwise (and always, as a finer measure) a small script that imports scratchvae,
builds a model and runs one training step, reporting the time to the end of its first step.
Targets (issue 4): cold < 10 s, warm < 2 s.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

INITIAL_ENV = dict(os.environ)

import numpy as np  # noqa: E402

import _common as C  # noqa: E402  (benchmarks/ is sys.path[0] when this script runs)

CACHE_DIR_IN_TREE = os.path.join(C.REPO, "scratchvae", "kernels", "__pycache__")

# The child of the script-based start-up measure: spawn -> import -> model -> first step.
# It prints wall-clock instants (time.time(), comparable across processes) as JSON.
FIRST_STEP_SCRIPT = r"""
import json, sys, time
t_start = time.time()
sys.path.insert(0, {repo!r})
import numpy as np
import scratchvae as sv
t_import = time.time()
backend, dtype = {backend!r}, {dtype!r}
model = sv.VAE(64, (400,), 20, activation="relu", likelihood="bernoulli", dtype=dtype,
               backend=backend)
opt = sv.Adam(1e-3)
opt.set_backend(model.backend)
x = np.random.default_rng(0).random((128, 64)).astype(dtype)
t_model = time.time()
loss, grads = model.loss_and_grads(x, rng=np.random.default_rng(1))
opt.step(model.params, grads)
t_first = time.time()
loss, grads = model.loss_and_grads(x, rng=np.random.default_rng(2))
opt.step(model.params, grads)
t_second = time.time()
print(json.dumps(dict(start=t_start, imported=t_import, model=t_model, first=t_first,
                      second=t_second)))
"""


# ============================================================================ epochs
def time_fit_epochs(backends, dtypes, hidden, latent, epochs, batch_size, rounds, seed=0):
    """Seconds per epoch of sv.fit on digits per backend and dtype.

    After a one-epoch warm-up fit per backend (compile or cache load, reported), ``rounds``
    rounds each run one ``epochs``-epoch fit of a fresh model per backend, alternating, so that
    the machine's drift (see _common.interleaved_times) hits both backends alike. Reported: the
    median epoch over all rounds, the fastest epoch, the evaluation alone (elbo_terms and
    active_units on x_val, part of every epoch), and numpy/this as the median over rounds of the
    per-round ratio of median epochs.
    """
    C.add_repo_to_path()
    import scratchvae as sv
    from scratchvae.evaluate import active_units, elbo_terms
    rows = []
    label = f"64-{'-'.join(map(str, hidden))}-{latent}"
    for dt in dtypes:
        x_tr, _, x_val, _, _, _ = sv.data.load_digits(seed=seed, dtype=dt)
        steps = -(-x_tr.shape[0] // batch_size)

        def new_model(be):
            return sv.VAE(x_tr.shape[1], hidden, latent, activation="relu",
                          likelihood="bernoulli", dtype=dt, seed=seed, backend=be)

        warm_up, per_round, totals, last, t_eval = {}, {}, {}, {}, {}
        for be in backends:
            t0 = time.perf_counter()
            sv.fit(new_model(be), x_tr, x_val, epochs=1, batch_size=batch_size, progress=False,
                   seed=seed)
            warm_up[be] = time.perf_counter() - t0
            per_round[be], totals[be] = [], []
        C.wait_for_quiet(0.5, max_wait=20)
        for r in range(rounds):
            for be in (backends if r % 2 == 0 else backends[::-1]):
                model = new_model(be)
                t0 = time.perf_counter()
                hist = sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=batch_size,
                              progress=False, seed=seed)
                totals[be].append(time.perf_counter() - t0)
                per_round[be].append(np.array(hist["seconds"]))
                last[be] = (model, hist["train_loss"][-1])
        for be in backends:
            model = last[be][0]

            def evaluate():
                elbo_terms(model, x_val, rng=np.random.default_rng(0))
                active_units(model, x_val)

            evaluate()
            t_eval[be] = C.median_time(evaluate, 0.03, 5).median
        for be in backends:
            secs = np.concatenate(per_round[be])
            med = float(np.median(secs))
            ratio = None
            if "numpy" in per_round:
                ratio = float(np.median([np.median(a) / np.median(b) for a, b in
                                         zip(per_round["numpy"], per_round[be])]))
            rows.append([be, np.dtype(dt).name, label, steps, C.fmt(warm_up[be] * 1e3, ".0f"),
                         C.fmt(med * 1e3, ".1f"), C.fmt(secs.min() * 1e3, ".1f"),
                         C.fmt(t_eval[be] * 1e3, ".1f"),
                         C.fmt((med - t_eval[be]) / steps * 1e3, ".2f"),
                         C.fmt(np.median(totals[be]), ".2f"), f"{last[be][1]:.3f}",
                         C.fmt(ratio, ".2f")])
    return rows


# ============================================================================ start-up
def cli_available(timeout=60) -> bool:
    """True when ``python -m scratchvae train --help`` exits 0 (the CLI exists)."""
    try:
        r = subprocess.run([sys.executable, "-m", "scratchvae", "train", "--help"], cwd=C.REPO,
                           env=_child_env(None), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def _child_env(cache_dir):
    """The environment of a timed child: ours, the repo importable, NUMBA_CACHE_DIR as asked."""
    env = dict(os.environ)
    env["PYTHONPATH"] = C.REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def clear_numba_cache() -> int:
    """Delete numba's cache files of scratchvae: ``*.nbi``/``*.nbc`` in the in-tree __pycache__
    and, when NUMBA_CACHE_DIR is set, those under it. Returns the number of files deleted."""
    files = glob.glob(os.path.join(CACHE_DIR_IN_TREE, "*.nb[ic]"))
    if os.environ.get("NUMBA_CACHE_DIR"):
        files += glob.glob(os.path.join(os.environ["NUMBA_CACHE_DIR"], "**", "*.nb[ic]"),
                           recursive=True)
    for f in files:
        try:
            os.remove(f)
        except FileNotFoundError:
            pass  # removed meanwhile by another process
    return len(files)


def run_timed(cmd, env, timeout=600) -> tuple[float, str]:
    """Wall seconds of one subprocess from spawn to exit, and its stdout; raises on failure."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=C.REPO, env=env, capture_output=True, text=True, timeout=timeout)
    t = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-2000:]}")
    return t, r.stdout


def time_startup(kind, repeats, dtype, clear_cache):
    """Cold/warm/numpy start-up, ``repeats`` times each; ``kind`` "cli" or "script".

    Returns a dict name -> list of measurements; each measurement is the wall time of the whole
    process and, for "script", the time from spawn to the end of the first training step.
    """
    results = {"cold": [], "warm": [], "numpy": []}
    for _ in range(repeats):
        tmp = tempfile.mkdtemp(prefix="scratchvae-bench-")
        try:
            cache = None if clear_cache else os.path.join(tmp, "numba-cache")
            if clear_cache:
                clear_numba_cache()
            else:
                os.makedirs(cache)
            for name, backend in (("cold", "numba"), ("warm", "numba"), ("numpy", "numpy")):
                C.wait_for_quiet(0.5, max_wait=20)
                if kind == "cli":
                    cmd = [sys.executable, "-m", "scratchvae", "train", "--epochs", "1",
                           "--backend", backend, "--quiet", "--out", os.path.join(tmp, name)]
                    if dtype:
                        cmd += ["--dtype", dtype]
                    wall, _ = run_timed(cmd, _child_env(cache))
                    results[name].append({"wall": wall})
                else:
                    src = FIRST_STEP_SCRIPT.format(repo=C.REPO, backend=backend,
                                                   dtype=dtype or "float32")
                    t_spawn = time.time()
                    wall, out = run_timed([sys.executable, "-c", src], _child_env(cache))
                    m = json.loads(out.strip().splitlines()[-1])
                    results[name].append({"wall": wall,
                                          "to_import": m["imported"] - t_spawn,
                                          "first_step": m["first"] - m["model"],
                                          "second_step": m["second"] - m["first"],
                                          "to_first_step": m["first"] - t_spawn})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def startup_rows(kind, results):
    """Median rows of a time_startup result."""
    med = lambda name, key: float(np.median([r[key] for r in results[name]]))  # noqa: E731
    rows = []
    for name in ("cold", "warm", "numpy"):
        row = [kind, name, len(results[name]), C.fmt(med(name, "wall"), ".2f"),
               C.fmt(med(name, "wall") - med("numpy", "wall") if name != "numpy" else None, ".2f")]
        if kind == "script":
            row += [C.fmt(med(name, "to_import"), ".2f"), C.fmt(med(name, "first_step"), ".3f"),
                    C.fmt(med(name, "second_step") * 1e3, ".1f"),
                    C.fmt(med(name, "to_first_step"), ".2f")]
        else:
            row += ["", "", "", ""]
        rows.append(row)
    return rows


# ============================================================================ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs, 1 start-up repeat")
    parser.add_argument("--backends", default="numpy,numba", help="comma list")
    parser.add_argument("--dtypes", default="float32,float64", help="comma list, for the epochs")
    parser.add_argument("--hidden", default="400",
                        help="hidden widths, e.g. 400 or 32 (comma list)")
    parser.add_argument("--latent", type=int, default=20, help="latent dimension")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per timed fit (10)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--fit-rounds", type=int, default=None,
                        help="alternating fits per backend (5)")
    parser.add_argument("--startup-repeats", type=int, default=None, help="cold/warm pairs (3)")
    parser.add_argument("--startup-dtype", default=None,
                        help="--dtype passed to the command (default: the CLI's own default, "
                             "float32; the script uses the same)")
    parser.add_argument("--clear-cache", action="store_true",
                        help="cold runs after deleting the in-tree cache files instead of using a "
                             "fresh NUMBA_CACHE_DIR")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: fit,startup")
    parser.add_argument("--malloc", choices=tuple(C.MALLOC_MODES), default="default",
                        help="glibc large-block policy for the in-process fits (see bench_step.py)")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    args = parser.parse_args(argv)
    malloc_note = C.set_malloc_mode(args.malloc)
    epochs = args.epochs or (3 if args.quick else 10)
    fit_rounds = args.fit_rounds or (2 if args.quick else 5)
    repeats = args.startup_repeats or (1 if args.quick else 3)
    backends = [b for b in args.backends.split(",") if b]
    dtypes = [np.dtype(s).type for s in args.dtypes.split(",") if s]
    hidden = tuple(int(s) for s in args.hidden.split(",") if s)
    skip = set(args.skip.split(","))

    C.add_repo_to_path()
    import scratchvae  # noqa: F401  (sets OMP_WAIT_POLICY before numba starts)
    print(f"# bench_fit.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(f"# malloc (in-process fits): {malloc_note}")
    t_start = time.perf_counter()

    if "fit" not in skip:
        rows = time_fit_epochs(backends, dtypes, hidden, args.latent, epochs, args.batch_size,
                               fit_rounds)
        for line in C.env_report(INITIAL_ENV):
            print("# " + line)
        print(f"\n## sv.fit on digits, batch {args.batch_size}: {fit_rounds} rounds of one "
              f"{epochs}-epoch fit per backend, alternating (after a 1-epoch warm-up fit); ms")
        print(C.format_table(["backend", "dtype", "arch", "steps/epoch", "warm-up fit",
                              "epoch (median)", "epoch (best)", "eval alone", "per step",
                              "fit s (median)", "final train loss", "numpy/this (paired)"],
                             rows, args.markdown))
    else:
        for line in C.env_report(INITIAL_ENV):
            print("# " + line)

    if "startup" not in skip:
        have_cli = cli_available()
        mode = ("deleting scratchvae/kernels/__pycache__/*.nb[ic]" if args.clear_cache
                else "a fresh empty NUMBA_CACHE_DIR per cold/warm pair")
        print(f"\n## start-up (fresh subprocesses; cold = {mode}); seconds, medians of {repeats}")
        if not have_cli:
            print("note: `python -m scratchvae train` is not available (no CLI yet): only the "
                  "script measure is reported")
        rows = []
        if have_cli:
            rows += startup_rows("cli", time_startup("cli", repeats, args.startup_dtype,
                                                    args.clear_cache))
        rows += startup_rows("script", time_startup("script", repeats, args.startup_dtype,
                                                    args.clear_cache))
        print(C.format_table(["command", "run", "n", "wall s", "minus numpy s", "to import s",
                              "1st step s", "2nd step ms", "spawn to 1st step s"],
                             rows, args.markdown))
        print("targets: cold < 10 s, warm < 2 s (the numba backend's start-up: 'wall' and "
              "'minus numpy' above)")
        if have_cli:
            dtype_opt = f" --dtype {args.startup_dtype}" if args.startup_dtype else ""
            print("cli command: python -m scratchvae train --epochs 1 --backend {numba|numpy} "
                  f"--quiet --out TMP{dtype_opt}")
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
