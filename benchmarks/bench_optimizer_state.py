"""Subnormal optimizer state: the time of one Adam update as training goes on.

A weight whose gradient is exactly 0 step after step (the first-layer weights of a pixel that
is 0 in every image, a dead ReLU unit) has its Adam moments m and v multiplied by beta1 and
beta2 every step. After some hundreds of steps they fall below the smallest normal float, and
arithmetic on such subnormal numbers costs far more on many x86 CPUs. scratchvae's update sets
such entries to 0 (``numpy_ref.flush_subnormal``); this script shows what that buys, by timing
``sv.Adam``'s step and the textbook kernel without the flush (written out below, the update
scratchvae used before) on the same state, every ``--every`` steps of training.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_optimizer_state.py

Training: the 784-400-20 ReLU/Bernoulli VAE in float32 on one fixed batch of 32 rows whose
first 100 pixels are 0 (as MNIST's borders are), ``sv.Adam(lr=1e-3)``. At each checkpoint both
updates are timed on copies of the optimizer state (median of 7 repeats of 20 updates), and the
number of subnormal entries of m and v in the no-flush run's state is printed.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import _common as C
from bench_ideas import adam_textbook  # the update without the flush, three divisions

C.add_repo_to_path()
import scratchvae as sv  # noqa: E402


def subnormals(arrays) -> int:
    tiny = np.finfo(np.float32).tiny
    return int(sum(((a != 0) & (np.abs(a) < tiny)).sum() for a in arrays))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2400)
    ap.add_argument("--every", type=int, default=300)
    args = ap.parse_args()
    for line in C.env_report():
        print("#", line)
    model = sv.VAE(784, (400,), 20, dtype="float32", seed=0)
    x = np.random.default_rng(1).random((32, 784)).astype(np.float32)
    x[:, :100] = 0.0
    opt = sv.Adam(lr=1e-3)
    # the no-flush run keeps its own moments, updated by the textbook kernel beside opt's
    m0 = {k: np.zeros_like(v) for k, v in model.params.items()}
    v0 = {k: np.zeros_like(v) for k, v in model.params.items()}
    f = np.float32
    print("| steps | sv.Adam step ms | textbook step ms (no flush) | subnormal m, v entries (no flush) |")
    print("|---|---|---|---|")
    for step in range(1, args.steps + 1):
        loss, grads = model.loss_and_grads(x)
        scal = (f(1e-3), f(0.9), f(0.1), f(0.999), f(0.001), f(1 - 0.9**step), f(1 - 0.999**step),
                f(1e-8))
        for k, g in grads.items():  # the textbook moments on a scratch copy of p
            adam_textbook(model.params[k].copy().reshape(-1), g.reshape(-1), m0[k].reshape(-1),
                           v0[k].reshape(-1), *scal)
        opt.step(model.params, grads)
        if step % args.every:
            continue
        p = {k: a.copy() for k, a in model.params.items()}

        def ours():
            o = sv.Adam(lr=1e-3)
            o.load_state_dict(state)
            t0 = time.perf_counter()
            for _ in range(20):
                o.step(p, grads, check_finite=False)  # the textbook side checks nothing
            return (time.perf_counter() - t0) / 20

        def textbook():
            ms = {k: a.copy() for k, a in m0.items()}
            vs = {k: a.copy() for k, a in v0.items()}
            t0 = time.perf_counter()
            for _ in range(20):
                for k, g in grads.items():
                    adam_textbook(p[k].reshape(-1), g.reshape(-1), ms[k].reshape(-1),
                                   vs[k].reshape(-1), *scal)
            return (time.perf_counter() - t0) / 20

        state = opt.state_dict()
        t_ours = np.median([ours() for _ in range(7)])
        t_text = np.median([textbook() for _ in range(7)])
        print(f"| {step} | {t_ours * 1e3:.3f} | {t_text * 1e3:.3f} | "
              f"{subnormals(list(m0.values()) + list(v0.values()))} |", flush=True)


if __name__ == "__main__":
    main()
