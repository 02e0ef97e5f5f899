"""Check every hand-written gradient of a VAE against central finite differences.

Shows: ``sv.gradcheck`` on a float64 model with fixed noise eps, one row per parameter tensor
(plus the input x and the KL's mu/logvar), the worst relative error of each, and a directional
check over all parameters at once. Writes a bar chart of the per-tensor errors.
Headline number: the largest relative error (it should be ~1e-8, far below the 1e-6 tolerance).

    python examples/02_gradcheck.py               # 4 digits, every entry of every tensor
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from matplotlib.figure import Figure

import scratchvae as sv
from scratchvae.data import load_spec

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a random subset of entries (seconds)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mnist", metavar="DIR", default=None,
                    help="directory with the four MNIST IDX files (default: the bundled digits)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    spec = f"mnist:{args.mnist}" if args.mnist else "digits"
    x_tr, *_ = load_spec(spec, dtype="float64", seed=args.seed)
    x = x_tr[rng.choice(x_tr.shape[0], 4, replace=False)]
    # tanh keeps the loss smooth everywhere (ReLU kinks can make a finite difference straddle
    # a corner); two samples K and beta != 1 exercise the whole chain
    model = sv.VAE(x.shape[1], hidden_dims=(32, 16), latent_dim=3, activation="tanh",
                   dtype="float64", seed=args.seed)
    t0 = time.perf_counter()
    report = sv.gradcheck(model, x, n_samples=2, beta=0.7, seed=args.seed,
                          max_entries=20 if args.quick or args.mnist else None)
    seconds = time.perf_counter() - t0
    print(report)

    fig = Figure(figsize=(7, 3.6), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    names = [r.name for r in report.rows]
    errs = [max(r.max_rel_err, 1e-16) for r in report.rows]
    ax.bar(range(len(names)), errs, color=["tab:blue" if r.passed else "tab:red" for r in report.rows])
    ax.axhline(report.tol, color="grey", linestyle="--", linewidth=1, label=f"tolerance {report.tol:g}")
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("max relative error")
    ax.set_title("analytic vs finite-difference gradients (float64)")
    ax.legend(fontsize=8)
    path = os.path.join(args.out, "gradcheck.png")
    fig.savefig(path, dpi=80)
    print(f"checked {sum(r.n_checked for r in report.rows)} entries in {seconds:.1f} s; "
          f"max relative error {report.max_rel_error:.2e} -> {'PASSED' if report.passed else 'FAILED'}")
    print(f"figure: {os.path.abspath(path)}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
