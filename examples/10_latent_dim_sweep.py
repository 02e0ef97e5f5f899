"""How many latent dimensions? Test ELBO against sample quality across a sweep of d.

Shows: VAEs with d = 2, 4, 8, 16, 32 latent dimensions trained alike. For each: the test
negative ELBO (a likelihood bound: lower is better) and the quality of samples from the prior,
measured as a Frechet distance between generated and test digits in the feature space of a
small classifier trained on the same data (``scratchvae.quality``; an FID analogue for digits,
not the Inception FID; lower is better). The two need not agree: extra dimensions may improve
the bound while the prior covers regions the decoder never learned. As a floor, the distance
between the training and test images themselves is shown.
Headline numbers: per d, the test negative ELBO and the Frechet digit distance.

    python examples/10_latent_dim_sweep.py
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from matplotlib.figure import Figure

import scratchvae as sv
from scratchvae.data import load_spec
from scratchvae.quality import digit_frechet_distance, train_classifier

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")
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
    x_tr, y_tr, x_val, _, x_te, y_te = load_spec(spec, dtype="float32", seed=args.seed)
    if args.quick:                       # a small subset: the smoke test only checks it runs
        x_tr, y_tr = x_tr[:300], y_tr[:300]
    dims = (2, 4) if args.quick else (2, 4, 8, 16, 32)
    epochs = 2 if args.quick else (5 if args.mnist else 60)
    hidden = (256,) if args.mnist else (128,)
    clf = train_classifier(x_tr, y_tr, hidden=128 if args.mnist else 64,
                           epochs=3 if args.mnist else 30, seed=args.seed)
    n_gen = min(2000, x_te.shape[0], x_tr.shape[0])
    floor = digit_frechet_distance(x_tr[rng.choice(x_tr.shape[0], n_gen, replace=False)], x_te, clf)
    print(f"classifier test accuracy {clf.accuracy(x_te, y_te):.3f}; "
          f"Frechet distance train vs test images: {floor:.3f}")
    elbos, fds = [], []
    for d in dims:
        model = sv.VAE(x_tr.shape[1], hidden_dims=hidden, latent_dim=d, dtype="float32",
                       seed=args.seed)
        t0 = time.perf_counter()
        sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=64, optimizer=sv.Adam(lr=2e-3),
               seed=args.seed, progress=False)
        elbos.append(float(-model.elbo(x_te, rng=rng).mean()))
        fds.append(digit_frechet_distance(model.sample(n_gen, rng=rng), x_te, clf))
        print(f"d = {d:2d}: test negative ELBO {elbos[-1]:.3f} nats, Frechet digit distance "
              f"{fds[-1]:.3f} ({time.perf_counter() - t0:.1f} s)")

    fig = Figure(figsize=(8, 3.4), dpi=80, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(dims, elbos, "o-")
    ax1.set_ylabel("test negative ELBO (nats)")
    ax2.plot(dims, fds, "o-", color="tab:orange", label="samples vs test")
    ax2.axhline(floor, color="grey", linestyle="--", label="train vs test images")
    ax2.set_ylabel("Frechet digit distance")
    ax2.legend(fontsize=8)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims, [str(d) for d in dims])
        ax.set_xlabel("latent dimensions d")
        ax.grid(alpha=0.3)
    fig.suptitle("latent-dimension sweep: likelihood bound vs sample quality")
    path = os.path.join(args.out, "latent_sweep.png")
    fig.savefig(path, dpi=80)
    print(f"figure: {os.path.abspath(path)}")


if __name__ == "__main__":
    main()
