"""Train a VAE with a 2-D latent space on the digits and look at what it learned.

Shows: the training curves, reconstructions of test digits, samples from the prior, the test
set scattered in latent space coloured by digit (each class gets its own region without ever
seeing a label), and the latent manifold: the decoder's mean image at a grid of prior quantiles.
Headline number: the final test negative ELBO (nats per image; lower is better).

    python examples/01_train_digits.py            # the bundled 8x8 digits, offline (~40 s)
    python examples/01_train_digits.py --mnist DIR  # MNIST from the four IDX files in DIR
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import scratchvae as sv
from scratchvae import latent, viz
from scratchvae.data import load_spec

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


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
    x_tr, y_tr, x_val, y_val, x_te, y_te = load_spec(spec, dtype="float32", seed=args.seed)
    if args.quick:                       # a small subset: the smoke test only checks it runs
        x_tr, y_tr = x_tr[:300], y_tr[:300]
    hidden = (512, 256) if args.mnist else (128,)
    epochs = 2 if args.quick else (20 if args.mnist else 150)
    model = sv.VAE(x_tr.shape[1], hidden_dims=hidden, latent_dim=2, dtype="float32",
                   seed=args.seed)
    t0 = time.perf_counter()
    history = sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=64 if not args.mnist else 128,
                     optimizer=sv.Adam(lr=2e-3), seed=args.seed, progress=not args.quick)
    seconds = time.perf_counter() - t0
    neg_elbo = -model.elbo(x_te, rng=rng).mean()

    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    dpi = 80
    viz.plot_history({k: history[k] for k in ("epoch", "train_loss", "val_loss", "recon", "kl")},
                     path=out("loss_curves.png"), dpi=dpi, title="training a 2-D VAE")
    mu, _ = latent.encode_dataset(model, x_te)
    viz.plot_reconstructions(x_te[:10], model.decode(mu[:10]), path=out("reconstructions.png"),
                             dpi=dpi)
    n_samples = 16 if args.quick else 64
    viz.plot_samples(model.sample(n_samples, rng=rng), path=out("samples.png"), ncols=8, dpi=dpi)
    viz.plot_latent_scatter(mu, y_te, path=out("latent_scatter.png"), dpi=dpi,
                            title="test digits in latent space (mu(x))")
    viz.plot_manifold(model.decode, n=6 if args.quick else 15, dtype=model.dtype.name, path=out("manifold.png"),
                      dpi=dpi, title="decoded means over the latent grid")
    print(f"trained {epochs} epochs in {seconds:.1f} s on {spec} ({x_tr.shape[0]} images)")
    print(f"test negative ELBO: {neg_elbo:.3f} nats per image (latent_dim 2)")
    print(f"figures in {os.path.abspath(args.out)}: loss_curves.png reconstructions.png "
          f"samples.png latent_scatter.png manifold.png")


if __name__ == "__main__":
    main()
