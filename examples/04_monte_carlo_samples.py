"""One Monte Carlo sample per example or ten: the ELBO and the variance of its gradient.

Shows: the reparameterized ELBO estimate uses K samples z_k = mu + exp(logvar/2) eps_k per
example. (1) Two VAEs trained alike with K = 1 and K = 10: their test negative ELBO.
(2) At one set of parameters (the K = 1 model after training), the variance over fresh noise
of the minibatch loss and of its gradient (summed over all parameter entries), for
K = 1, 2, 5, 10, 20: both fall like 1/K, the Monte Carlo rate, while each step costs K times
the decoder work. Headline numbers: the two test negative ELBOs, and the gradient-variance
ratio between K = 1 and K = 10.

    python examples/04_monte_carlo_samples.py
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import scratchvae as sv
from scratchvae import viz
from scratchvae.data import load_spec

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mnist", metavar="DIR", default=None,
                    help="directory with the four MNIST IDX files (default: the bundled digits)")
    return ap.parse_args(argv)


def gradient_variance(model, x, n_samples, n_draws, rng):
    """Variance over noise draws of the loss and of the gradient (summed over entries)."""
    losses, grads = [], []
    for _ in range(n_draws):
        loss, g = model.loss_and_grads(x, n_samples=n_samples, rng=rng)
        losses.append(loss)
        grads.append(np.concatenate([v.ravel() for v in g.values()]))
    return float(np.var(losses, ddof=1)), float(np.var(np.stack(grads), axis=0, ddof=1).sum())


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    spec = f"mnist:{args.mnist}" if args.mnist else "digits"
    x_tr, _, x_val, _, x_te, _ = load_spec(spec, dtype="float64", seed=args.seed)
    if args.quick:                       # a small subset: the smoke test only checks it runs
        x_tr = x_tr[:300]
    epochs = 2 if args.quick else (5 if args.mnist else 60)
    hidden = (256,) if args.mnist else (128,)
    results = {}
    for K in (1, 10):
        model = sv.VAE(x_tr.shape[1], hidden_dims=hidden, latent_dim=8, seed=args.seed)
        t0 = time.perf_counter()
        sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=64, n_samples=K,
               optimizer=sv.Adam(lr=2e-3), seed=args.seed, progress=not args.quick)
        seconds = time.perf_counter() - t0
        neg_elbo = -model.elbo(x_te, n_samples=20, rng=rng).mean()
        results[K] = (model, neg_elbo, seconds)
        print(f"K = {K:2d}: test negative ELBO {neg_elbo:.3f} nats ({epochs} epochs, {seconds:.1f} s)")

    model = results[1][0]
    x = x_te[:64]
    ks = np.array([1, 2, 5, 10, 20])
    n_draws = 5 if args.quick else 100
    var_loss, var_grad = zip(*(gradient_variance(model, x, int(k), n_draws, rng) for k in ks))
    for k, vl, vg in zip(ks, var_loss, var_grad):
        print(f"K = {k:2d}: Var[loss estimate] {vl:.4g}   sum of Var[gradient entries] {vg:.4g}")
    viz.plot_estimator_variance(ks, {"gradient (sum over entries)": np.array(var_grad),
                                     "loss estimate": np.array(var_loss)},
                                path=os.path.join(args.out, "mc_samples.png"), dpi=80,
                                title="variance of the K-sample estimates")
    print(f"gradient variance K=1 / K=10: {var_grad[0] / var_grad[3]:.1f} (1/K predicts 10)")
    print(f"figure: {os.path.abspath(os.path.join(args.out, 'mc_samples.png'))}")


if __name__ == "__main__":
    main()
