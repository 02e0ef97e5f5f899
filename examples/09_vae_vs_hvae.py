"""One stochastic layer or two, trained with the ELBO or the importance-weighted bound.

Trains four models with the same budget (the same epochs, batch size and learning rates):
VAE and HVAE (two stochastic layers), each with the ELBO (objective "elbo", K = 1) and with
the IWAE bound (objective "iwae", K = --k-train samples). For each it reports, on the test set:
the negative ELBO (nats, averaged over 100 draws per example), the importance-weighted estimate
of -log p(x) with k = --k samples (k = 5000 by default, Burda et al.'s choice) and its Monte Carlo
standard error, the active units of each stochastic layer (Var_x E_q[z_j] > 0.01), and the wall
time of training and of evaluation. It prints a markdown table, with the published reference
beside it, and writes it to OUT/vae_vs_hvae.md (and OUT/vae_vs_hvae.json), and draws ten samples of each
model (decoded means, down the chain for the HVAE) into OUT/vae_vs_hvae_samples.png.

Published reference (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
Table 1, MNIST, test NLL estimated with k = 5000, about 3,280 passes over the data):

    one stochastic layer    VAE (k=1) 86.76   IWAE (k=50) 84.78
    two stochastic layers   VAE (k=1) 85.33   IWAE (k=50) 82.90

On the bundled 8x8 digits (the default; runs offline in under two minutes on 2 cores) the
numbers are in nats per 64-pixel grey-level image and are not comparable with MNIST's. With
``--mnist DIR`` (the four IDX files) the models are Burda et al.'s (tanh; one layer 784-200-200-50;
two layers 784-200-200-100 and 100-100-50), trained on MNIST binarized afresh each epoch
(x_bin ~ Bernoulli(x), ``fit(binarize=True)``) and tested on one seeded Bernoulli draw of the
test images (our choices of binarization). ``--schedule burda`` runs their schedule: 8 stages
i = 0..7 of 3^i epochs (3,280 in all) with Adam at learning rate 1e-3 * 10^(-i/7), beta1 0.9,
beta2 0.999, eps 1e-4, batch size 20. That is about 10 million steps per model: days on two
cores for the K = 1 models, far longer for K = 50. The command for that run is printed at the
end of every run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Small matrices (batch 100 x width 100) run several times faster on one BLAS thread than on
# OpenBLAS's default two, which wait on each other; set the variable to override.
# It must be set before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import scratchvae as sv  # noqa: E402
from scratchvae import viz  # noqa: E402
from scratchvae.data import binarize, load_digits, load_mnist  # noqa: E402
from scratchvae.evaluate import active_units  # noqa: E402
from scratchvae.hvae import HVAE, active_units_per_layer  # noqa: E402
from scratchvae.train import fit  # noqa: E402

REFERENCE = """Burda et al. (2016), Table 1, MNIST test -log p(x) (k = 5000), ~3,280 passes:

| model | VAE (k=1) | IWAE (k=50) |
| --- | --- | --- |
| one stochastic layer | 86.76 | 84.78 |
| two stochastic layers | 85.33 | 82.90 |"""

LONG_COMMAND = ("python examples/09_vae_vs_hvae.py --mnist DIR --schedule burda --k-train 50 "
                "--k 5000 --backend numba --dtype float32 --out runs/09_mnist_burda")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few epochs and k = 100 (seconds)")
    ap.add_argument("--out", default=os.path.join("runs", "09_vae_vs_hvae"),
                    help="output directory (vae_vs_hvae.md, vae_vs_hvae.json)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mnist", metavar="DIR", default=None,
                    help="directory with the four MNIST IDX files (default: the bundled digits)")
    ap.add_argument("--schedule", choices=("fixed", "burda"), default="fixed",
                    help="fixed: --epochs at --lr; burda: 3^i epochs at 1e-3*10^(-i/7), i=0..7")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the fixed schedule")
    ap.add_argument("--lr", type=float, default=3e-3, help="learning rate of the fixed schedule")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--k-train", type=int, default=5, help="samples K of the IWAE objective")
    ap.add_argument("--k", type=int, default=None, help="importance samples of the test estimate")
    ap.add_argument("--n-test", type=int, default=None, help="use the first N test examples")
    ap.add_argument("--backend", default="numpy", choices=("numpy", "numba"))
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    return ap.parse_args(argv)


def setup(args):
    """Data, architectures and schedule: the digits defaults, or Burda et al.'s for MNIST."""
    if args.mnist:
        x_tr, _, x_te, _ = load_mnist(args.mnist, dtype=args.dtype)
        x_te = binarize(x_te, method="bernoulli", rng=args.seed)
        archs = dict(vae=dict(hidden_dims=(200, 200), latent_dim=50),
                     hvae=dict(hidden_dims=((200, 200), (100, 100)), latent_dims=(100, 50)))
        epochs, batch, k, dynamic = 10, 20, 5000, True
    else:
        x_tr, _, x_val, _, x_te, _ = load_digits(seed=args.seed, dtype=args.dtype)
        x_tr = np.concatenate([x_tr, x_val])
        archs = dict(vae=dict(hidden_dims=(100,), latent_dim=10),
                     hvae=dict(hidden_dims=((100,), (50,)), latent_dims=(10, 5)))
        epochs, batch, k, dynamic = 150, 100, 5000, False
    if args.quick:
        epochs, k = 3, 100
        x_tr, x_te = x_tr[:2000], x_te[:100]
    epochs = args.epochs if args.epochs is not None else epochs
    batch = args.batch_size if args.batch_size is not None else batch
    k = args.k if args.k is not None else k
    if args.n_test is not None:
        x_te = x_te[:args.n_test]
    if args.schedule == "burda":
        # --quick keeps the 8 learning rates but runs one epoch of each (a smoke test)
        stages = [(1 if args.quick else 3 ** i, 1e-3 * 10 ** (-i / 7)) for i in range(8)]
    else:
        stages = [(epochs, args.lr)]
    return x_tr, x_te, archs, stages, batch, k, dynamic


def train(model, x_tr, stages, batch, objective, k_train, dynamic, seed, schedule):
    """Run the stages (epochs, lr) with one Adam whose moments carry over; returns seconds."""
    opt = sv.Adam(lr=stages[0][1], eps=1e-4 if schedule == "burda" else 1e-8)
    t0 = time.perf_counter()
    for i, (epochs, lr) in enumerate(stages):
        opt.lr = lr
        fit(model, x_tr, epochs=epochs, batch_size=batch, optimizer=opt,
               n_samples=k_train if objective == "iwae" else 1, objective=objective,
               binarize=dynamic, seed=seed + i, progress=False)
    return time.perf_counter() - t0


def evaluate(model, x_te, k, rng):
    """Test -ELBO (100 draws), IW estimate of -log p(x) with its standard error, active units."""
    t0 = time.perf_counter()
    neg_elbo = -float(np.mean(np.concatenate([
        model.elbo(x_te[s:s + 500], n_samples=100, rng=rng) for s in range(0, len(x_te), 500)])))
    est, se = model.log_likelihood(x_te, k=k, rng=rng, return_stderr=True)
    if isinstance(model, HVAE):
        au = active_units_per_layer(model, x_te)
    else:
        au = (active_units(model, x_te),)
    return dict(neg_elbo=neg_elbo, nll=-float(np.mean(est)),
                nll_se=float(np.sqrt(np.sum(se.astype(np.float64) ** 2)) / len(se)),
                active_units=list(au), eval_seconds=time.perf_counter() - t0)


def markdown(rows, data_name, k, budget):
    lines = [f"Test set of {data_name}; {budget}; -log p(x) estimated with k = {k} "
             f"(± its Monte Carlo standard error over the test set mean).", "",
             "| model | objective | test -ELBO | test -log p(x) (IW, k=%d) | active units | "
             "train s | eval s |" % k,
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        au = " / ".join(f"{a}/{d}" for a, d in zip(r["active_units"], r["latent"]))
        lines.append(f"| {r['model']} | {r['objective']} | {r['neg_elbo']:.2f} | "
                     f"{r['nll']:.2f} ± {r['nll_se']:.3f} | {au} | {r['train_seconds']:.1f} | "
                     f"{r['eval_seconds']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    x_tr, x_te, archs, stages, batch, k, dynamic = setup(args)
    data_name = f"MNIST ({args.mnist})" if args.mnist else "the 8x8 digits"
    n_epochs = sum(e for e, _ in stages)
    budget = (f"{n_epochs} epochs of {len(x_tr)} examples, batch {batch}, Adam, "
              f"IWAE with K = {args.k_train}")
    print(f"{data_name}: {len(x_tr)} train, {len(x_te)} test; {budget}", flush=True)
    common = dict(activation="tanh", likelihood="bernoulli", dtype=args.dtype,
                  backend=args.backend)
    rows, samples = [], []
    for kind in ("vae", "hvae"):
        for objective in ("elbo", "iwae"):
            seed = int(rng.integers(2**31))
            if kind == "vae":
                model = sv.VAE(x_tr.shape[1], seed=seed, **archs["vae"], **common)
                latent = [model.latent_dim]
            else:
                model = HVAE(x_tr.shape[1], seed=seed, **archs["hvae"], **common)
                latent = list(model.latent_dims)
            secs = train(model, x_tr, stages, batch, objective, args.k_train, dynamic, seed,
                         args.schedule)
            res = evaluate(model, x_te, k, np.random.default_rng(seed))
            row = dict(model=kind.upper() + (" (2 layers)" if kind == "hvae" else " (1 layer)"),
                       objective=objective if objective == "elbo" else f"iwae K={args.k_train}",
                       latent=latent, train_seconds=secs, **res)
            rows.append(row)
            samples.append(model.sample(10, rng=np.random.default_rng(seed)))
            print(f"  {row['model']:<16} {row['objective']:<10} -ELBO {row['neg_elbo']:.2f}  "
                  f"-log p(x) {row['nll']:.2f} ± {row['nll_se']:.3f}  AU {row['active_units']}  "
                  f"{secs:.1f} s + {row['eval_seconds']:.1f} s", flush=True)
    table = markdown(rows, data_name, k, budget)
    text = f"{table}\n\n{REFERENCE}\n\nLong schedule (MNIST):\n\n    {LONG_COMMAND}\n"
    print("\n" + text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "vae_vs_hvae.md"), "w") as f:
        cmd = " ".join(["python examples/09_vae_vs_hvae.py",
                        *(sys.argv[1:] if argv is None else argv)])
        f.write(f"Command: {cmd}\n\n{text}")
    with open(os.path.join(args.out, "vae_vs_hvae.json"), "w") as f:
        json.dump(dict(args=vars(args), k=k, budget=budget, rows=rows), f, indent=2)
    path = os.path.join(args.out, "vae_vs_hvae_samples.png")
    viz.plot_interpolation(samples, row_labels=[f"{r['model'].split()[0]} {r['objective'].split()[0]}" for r in rows],
                           path=path, title="samples (decoded means)")
    print(f"wrote {os.path.join(args.out, 'vae_vs_hvae.md')} and {path}")
    return rows


if __name__ == "__main__":
    main()
