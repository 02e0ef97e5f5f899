"""How many latent dimensions? Test ELBO against sample quality, over 5 seeds with error bars.

Shows: VAEs with d = 2, 4, 8, 16, 32 latent dimensions trained alike, 5 seeds each, run as one
sweep (``scratchvae.sweep``: one ``train`` per d and seed, in parallel processes). For each d:
the test negative ELBO (a likelihood bound: lower is better) and the quality of samples from the
prior, measured as a Frechet distance between generated and test digits in the feature space of
a small classifier trained on the same data (``scratchvae.quality``; an FID analogue for digits,
not the Inception FID; lower is better), each as the mean over the seeds with its t-based 95%
interval. The seed changes the data split, the initial weights, the minibatches and the noise,
so the bars show how much of a difference between two d is seed noise. The two metrics need not
agree: extra dimensions may improve the bound while the prior covers regions the decoder never
learned. As a floor, the distance between training and test images (seed 0's split) is shown.
Headline numbers: per d, the mean test negative ELBO and Frechet digit distance, +- 95%.

    python examples/10_latent_dim_sweep.py            # 25 runs; about 3 minutes on 2 cores
    scratchvae sweep --grid "latent_dim=2,4,8,16,32" --seeds 5 --epochs 60 --out runs/sweep-d
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import scratchvae as sv
from scratchvae.data import load_spec
from scratchvae.metrics import CLASSIFIER_SEED
from scratchvae.quality import digit_frechet_distance, train_classifier

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a few seconds per run)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figure")
    ap.add_argument("--sweep-dir", default=None,
                    help="the sweep's directory (default: runs/sweep-latent-dim[-quick]); "
                         "run again with the same settings, it resumes")
    ap.add_argument("--jobs", type=int, default=None, help="runs at a time (default: the cores)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dims = (2, 4) if args.quick else (2, 4, 8, 16, 32)
    seeds = 2 if args.quick else 5
    train = dict(epochs=1, hidden=(8,)) if args.quick else dict(epochs=60, hidden=(128,))
    sweep_dir = args.sweep_dir or os.path.join("runs", "sweep-latent-dim" + ("-quick" * args.quick))
    result = sv.sweep.run({"latent_dim": list(dims)}, seeds=seeds, n_jobs=args.jobs, out=sweep_dir,
                          progress=False, **train)
    rows = result.summary
    for r in rows:
        print(f"d = {int(r['latent_dim']):2d}: test negative ELBO {r['test_neg_elbo_mean']:.2f} "
              f"+- {r['test_neg_elbo_ci95']:.2f} nats, Frechet digit distance "
              f"{r['frechet_digit_distance_mean']:.2f} +- {r['frechet_digit_distance_ci95']:.2f} "
              f"({r['finished']} seeds, 95% t intervals)")

    # the floor: training images against test images, in the features of seed 0's classifier
    x_tr, y_tr, _, _, x_te, _ = load_spec("digits", dtype="float32", seed=0)
    clf = train_classifier(x_tr, y_tr, seed=CLASSIFIER_SEED)
    n = min(1000, x_te.shape[0])
    pick = np.random.default_rng(0).choice(x_tr.shape[0], n, replace=False)
    floor = digit_frechet_distance(x_tr[pick], x_te, clf)
    print(f"Frechet distance train vs test images (seed 0): {floor:.2f}")

    metrics = ["test_neg_elbo", "frechet_digit_distance"]
    mean = np.array([[r[f"{m}_mean"] for m in metrics] for r in rows], dtype=float)
    err = np.array([[r[f"{m}_ci95"] for m in metrics] for r in rows], dtype=float)
    fig = sv.viz.plot_sweep(list(dims), {"": (mean, err)},
                            ["test negative ELBO (nats)", "Frechet digit distance"],
                            xlabel="latent dimensions d", xscale="log", figsize=(8, 3.4),
                            title=f"latent-dimension sweep: mean and 95% interval over {seeds} seeds")
    fig.axes[1].axhline(floor, color="grey", linestyle="--", label="train vs test images")
    fig.axes[1].legend(fontsize=8)
    path = os.path.join(args.out, "latent_sweep.png")
    fig.savefig(path, dpi=80)
    print(f"sweep: {os.path.abspath(result.summary_csv)}")
    print(f"figure: {os.path.abspath(path)}")


if __name__ == "__main__":
    main()
