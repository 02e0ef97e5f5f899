"""The hole problem, measured: how much of the prior the aggregate posterior leaves uncovered, and
how the usual remedies move it.

Shows: q(z) = (1/N) sum_n q(z|x_n), the aggregate posterior of the test digits, against the
prior p(z) = N(0, I) of a 2-D latent. Holes are where q(z) < 0.1 p(z): prior draws there reach
a decoder that never saw such codes. Four models are trained on the bundled 8x8 digits with the
same budget (architecture, epochs, batch size, optimizer, seed): a plain VAE, beta = 0.5, free
bits (0.5 nats per dimension) and a FlowVAE (planar flow, L = 8). For each, on the test digits:
the prior mass in holes (trapezoid rule on a 101 x 101 grid, with the grid's own error, and by
prior draws with a binomial standard error), the ELBO surgery of Hoffman & Johnson (2016),
mean KL(q(z|x) || p(z)) = I(x; z) + KL(q(z) || p(z)) (the mutual information by the
dataset-mixture estimator, at most log N), and the test -ELBO (Monte Carlo).
Writes docs/figures/holes.md (the table) and docs/figures/holes.png (the plain VAE's q(z) vs
p(z) with its holes, and digits decoded from holes beside digits decoded from covered z).

    python examples/16_holes.py            # about ten minutes on 2 cores (the flow's
                                           # density inverts every planar step)
    python examples/16_holes.py --quick    # seconds (short training, 40 test digits)
"""
from __future__ import annotations

import os

# small matrices: BLAS threads only add synchronisation; set before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402

import scratchvae as sv  # noqa: E402
from scratchvae import evaluate, viz  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    ap.add_argument("--out", default=FIGURES, help="directory for the figure and the table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per model (default 150; "
                                                             "--quick: 3)")
    ap.add_argument("--draws", type=int, default=None,
                    help="draws for the surgery and the prior draws (default 4000; --quick: 500)")
    ap.add_argument("--grid", type=int, default=None,
                    help="grid points per axis, odd (default 101; --quick: 41)")
    return ap.parse_args(argv)


def models(seed):
    """name -> (model, fit options): one architecture, one budget, four remedies."""
    arch = dict(hidden_dims=(64,), latent_dim=2, activation="tanh", seed=seed)
    return {"VAE": (sv.VAE(64, **arch), {}),
            "beta = 0.5": (sv.VAE(64, **arch), {"beta": 0.5}),
            "free bits 0.5": (sv.VAE(64, **arch), {"free_bits": 0.5}),
            "FlowVAE L=8": (sv.FlowVAE(64, flow_length=8, **arch), {})}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    epochs = args.epochs or (3 if args.quick else 150)
    draws = args.draws or (500 if args.quick else 4000)
    grid = args.grid or (41 if args.quick else 101)
    x_tr, _, x_val, _, x_te, _ = sv.data.load_digits(seed=args.seed, dtype="float64")
    if args.quick:
        x_te = x_te[:40]
    N = x_te.shape[0]
    head = (f"64-64-2 (tanh, bernoulli), {epochs} epochs on {x_tr.shape[0]} digits (Adam 3e-3, "
            f"batch 64, seed {args.seed}); on the {N} test digits, nats; +- Monte Carlo standard "
            f"errors ({draws} draws); holes: q(z) < 0.1 p(z), grid {grid}x{grid} on [-4, 4]^2 "
            f"(+- the grid's error) and by {draws} prior draws; I(x; z) <= log N = "
            f"{np.log(N):.3f}")
    rows = ["| model | prior mass in holes (grid) | (prior draws) | KL(q(z) \\|\\| p(z)) | "
            "I(x; z) | mean KL(q(z\\|x) \\|\\| p(z)) | test -ELBO |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    print(head)
    first = None
    for name, (model, opts) in models(args.seed).items():
        sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=64, optimizer=sv.Adam(lr=3e-3),
               seed=args.seed, progress=False, **opts)
        rng = np.random.default_rng(args.seed + 1)
        s = evaluate.elbo_surgery(model, x_te, n_samples=draws, rng=rng)
        h = evaluate.posterior_holes(model, x_te, grid_size=grid, n_prior_samples=draws,
                                     n_decode=16, rng=rng)
        elbo = model.elbo(x_te, n_samples=100, rng=rng)
        neg_elbo = float(-elbo.mean())
        row = (f"| {name} | {h.hole_mass:.4f} +- {h.quadrature_error:.4f} | "
               f"{h.hole_mass_mc:.4f} +- {h.hole_mass_mc_stderr:.4f} | "
               f"{s.marginal_kl:.3f} +- {s.marginal_kl_stderr:.3f} | "
               f"{s.mutual_info:.3f} +- {s.mutual_info_stderr:.3f} | "
               f"{s.mean_kl:.3f} +- {s.mean_kl_stderr:.3f} | {neg_elbo:.3f} |")
        rows.append(row)
        print(row, flush=True)
        if first is None:
            first = (name, h)
    text = head + "\n\n" + "\n".join(rows) + "\n"
    table = os.path.join(args.out, "holes.md")
    _write(table, text)
    name, h = first
    path = os.path.join(args.out, "holes.png")
    viz.plot_posterior_holes(h.z1, h.z2, h.log_q, h.log_p, h.holes, h.x_holes, h.x_covered,
                             path=path, hole_mass=h.hole_mass, dpi=80,
                             title=f"{name}: aggregate posterior of the test digits vs the prior")
    print(f"table: {os.path.abspath(table)}\nfigure: {os.path.abspath(path)}")


def _write(path, text):
    """Write text atomically: a temporary file beside it, then a rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
