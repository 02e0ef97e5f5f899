"""Anomaly detection with a VAE: train on some digit classes, score the others.

Shows: a VAE trained only on the digits 0-4 assigns the held-out classes 5-9 a lower
likelihood. Each test digit is scored by the negative ELBO and by the negative
importance-weighted bound -L_k (a tighter estimate of -log p(x)); the ROC curve and its area
(AUC: the probability that an anomaly outscores a normal digit) measure how well the score
separates them. Headline numbers: the ROC AUC of both scores.

    python examples/12_anomaly_detection.py
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import scratchvae as sv
from scratchvae import viz
from scratchvae.applications import anomaly_scores, roc_auc, roc_curve
from scratchvae.data import load_spec

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")
NORMAL = (0, 1, 2, 3, 4)


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
    x_tr, y_tr, x_val, y_val, x_te, y_te = load_spec(spec, dtype="float64", seed=args.seed)
    normal_tr, normal_val = np.isin(y_tr, NORMAL), np.isin(y_val, NORMAL)
    epochs = 2 if args.quick else (10 if args.mnist else 100)
    model = sv.VAE(x_tr.shape[1], hidden_dims=(256,) if args.mnist else (128,), latent_dim=8,
                   seed=args.seed)
    sv.fit(model, x_tr[normal_tr], x_val[normal_val], epochs=epochs, batch_size=64,
           optimizer=sv.Adam(lr=2e-3), seed=args.seed, progress=not args.quick)
    if args.mnist:                    # keep the importance sampling affordable
        keep = rng.choice(x_te.shape[0], 2000, replace=False)
        x_te, y_te = x_te[keep], y_te[keep]
    is_anomaly = ~np.isin(y_te, NORMAL)
    k = 10 if args.quick else 200
    s_elbo = anomaly_scores(model, x_te, "elbo", k=1, rng=rng)
    s_iw = anomaly_scores(model, x_te, "iw", k=k, rng=rng)
    auc_elbo, auc_iw = roc_auc(s_elbo, is_anomaly), roc_auc(s_iw, is_anomaly)
    fpr, tpr, _ = roc_curve(s_iw, is_anomaly)
    viz.plot_roc(fpr, tpr, auc_iw, path=os.path.join(args.out, "anomaly_roc.png"), dpi=80,
                 label=f"-L_{k} score", title="normal: digits 0-4; anomalies: 5-9")
    print(f"trained on classes {NORMAL} ({normal_tr.sum()} images); test: "
          f"{(~is_anomaly).sum()} normal, {is_anomaly.sum()} anomalies")
    print(f"mean score (nats): normal {s_iw[~is_anomaly].mean():.2f}, anomalies "
          f"{s_iw[is_anomaly].mean():.2f}")
    print(f"ROC AUC: negative ELBO {auc_elbo:.3f}, negative IW bound (k = {k}) {auc_iw:.3f}")
    print(f"figure: {os.path.abspath(os.path.join(args.out, 'anomaly_roc.png'))}")


if __name__ == "__main__":
    main()
