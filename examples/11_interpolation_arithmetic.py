"""Walking through latent space: linear and spherical interpolation, and latent arithmetic.

Shows: (1) the decoded paths between the codes mu(x0) and mu(x1) of pairs of test digits, on a
straight line and on the great circle (slerp), which keeps the path at the radius where prior
samples live; (2) latent arithmetic z = mu(base) + (mean code of class b - mean code of class a):
adding the difference of two class means to a digit of class a tends to turn it into a b.
Headline numbers: how often the classifier of ``scratchvae.quality`` reads the arithmetic
results as the target class b (and, for reference, how often it reads the plain
reconstructions of the bases as a), and the mean code norm along each kind of path.

    python examples/11_interpolation_arithmetic.py
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import scratchvae as sv
from scratchvae import latent, viz
from scratchvae.data import load_spec
from scratchvae.quality import train_classifier

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")
PAIRS = ((0, 6), (1, 7), (3, 8), (4, 9))    # (class a of the base, target class b)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figures")
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
    epochs = 2 if args.quick else (10 if args.mnist else 100)
    model = sv.VAE(x_tr.shape[1], hidden_dims=(256,) if args.mnist else (128,), latent_dim=8,
                   dtype="float32", seed=args.seed)
    sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=64, optimizer=sv.Adam(lr=2e-3),
           seed=args.seed, progress=not args.quick)

    # (1) interpolation between test digits of different classes
    rows, labels, norms = [], [], {"linear": [], "spherical": []}
    for a, b in PAIRS[:3]:
        i, j = rng.choice(np.flatnonzero(y_te == a)), rng.choice(np.flatnonzero(y_te == b))
        mu, _ = model.encode(x_te[[i, j]])
        for method in ("linear", "spherical"):
            path = latent.interpolate(mu[0], mu[1], 10, method)
            norms[method].append(np.linalg.norm(path, axis=1).mean())
            rows.append(model.decode(path))
            labels.append(f"{method} {a}->{b}")
    viz.plot_interpolation(rows, row_labels=labels, path=os.path.join(args.out, "interpolation.png"),
                           dpi=80)

    # (2) arithmetic with class means as attribute vectors: base (class a) + (mean b - mean a)
    classes, means = latent.class_means(model, x_tr, y_tr)      # classes are 0..9 here
    base, plus, minus, result, targets = [], [], [], [], []
    for a, b in PAIRS:
        i = rng.choice(np.flatnonzero(y_te == a))
        out = latent.latent_arithmetic(model, x_te[[i]], x_tr[y_tr == b], x_tr[y_tr == a])
        base.append(x_te[i])
        plus.append(model.decode(means[[b]])[0])       # the decoded attribute codes, for show
        minus.append(model.decode(means[[a]])[0])
        result.append(out[0])
        targets.append(b)
    viz.plot_arithmetic(np.array(base), np.array(plus), np.array(minus), np.array(result),
                        path=os.path.join(args.out, "arithmetic.png"), dpi=80,
                        title="base + (class mean b - class mean a)")

    # how often does a classifier read the arithmetic result as the target class?
    clf = train_classifier(x_tr, y_tr, epochs=3 if args.mnist else 30, seed=args.seed)
    hits, recon_hits, n = 0, 0, 0
    for a, b in PAIRS:
        xa = x_te[y_te == a]
        out = latent.latent_arithmetic(model, xa, x_tr[y_tr == b], x_tr[y_tr == a])
        hits += int((clf.predict(out) == b).sum())
        recon_hits += int((clf.predict(model.decode(model.encode(xa)[0])) == a).sum())
        n += xa.shape[0]
    print(f"mean code norm along the paths: linear {np.mean(norms['linear']):.3f}, "
          f"spherical {np.mean(norms['spherical']):.3f}")
    print(f"latent arithmetic a -> b for {PAIRS}: classified as b in {hits / n:.1%} of {n} "
          f"test digits (reconstructions of the bases classified as a: {recon_hits / n:.1%})")
    print(f"figures: {os.path.abspath(os.path.join(args.out, 'interpolation.png'))}, "
          f"{os.path.abspath(os.path.join(args.out, 'arithmetic.png'))}")


if __name__ == "__main__":
    main()
