"""Controlled generation with the conditional VAE: choose the digit, keep the style.

Trains ``CVAE`` on the bundled 8x8 digits, where the encoder q(z|x, y) and the decoder
p(x|z, y) both read the one-hot label, so the label carries the class and the code z is free to
carry the rest (slant, thickness, size). Writes two figures:

  OUT/cvae_samples.png    one row per digit: decoded means of z ~ N(0, I) under that label
                          (the same z in every row, so a column shows one style in ten classes)
  OUT/cvae_analogies.png  analogies: test digits (rows) encoded with their own labels, the
                          code mu(x, y) decoded under every label 0..9 (columns)

and prints the test negative ELBO and the importance-weighted estimate of -log p(x|y).

    python examples/08_cvae_analogies.py            # about 20 s on 2 cores
    python examples/08_cvae_analogies.py --quick    # a few seconds
"""
from __future__ import annotations

import argparse
import os

# Small matrices run faster on one BLAS thread than on OpenBLAS's default two;
# set the variable to override. It must be set before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from scratchvae import Adam, viz  # noqa: E402
from scratchvae.cvae import CVAE, cvae_analogies  # noqa: E402
from scratchvae.data import load_digits  # noqa: E402
from scratchvae.train import fit  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few epochs (seconds)")
    ap.add_argument("--out", default=os.path.join("runs", "08_cvae_analogies"),
                    help="output directory for the figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default 200 (--quick: 5)")
    ap.add_argument("--latent-dim", type=int, default=4)
    ap.add_argument("--n-samples", type=int, default=8, help="samples per digit")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    x_tr, y_tr, x_val, y_val, x_te, y_te = load_digits(seed=args.seed)
    epochs = args.epochs if args.epochs is not None else (5 if args.quick else 200)
    model = CVAE(x_tr.shape[1], n_classes=10, hidden_dims=(128,), latent_dim=args.latent_dim,
                 activation="tanh", seed=int(rng.integers(2**31)))
    history = fit(model, x_tr, x_val=x_val, y_train=y_tr, y_val=y_val, epochs=epochs,
                  batch_size=100, optimizer=Adam(lr=3e-3), seed=int(rng.integers(2**31)),
                  progress=False)
    print(f"trained {epochs} epochs: validation -ELBO {history['val_loss'][-1]:.2f} nats, "
          f"{history['active_units'][-1]}/{model.latent_dim} active units")

    neg_elbo = -model.elbo(x_te, y_te, n_samples=10, rng=rng).mean()
    k = 100 if args.quick else 1000
    est, se = model.log_likelihood(x_te, y_te, k=k, rng=rng, return_stderr=True)
    print(f"test: -ELBO {neg_elbo:.2f} nats, -log p(x|y) ~ {-est.mean():.2f} "
          f"± {np.sqrt((se ** 2).sum()) / se.size:.3f} (importance-weighted, k = {k})")

    os.makedirs(args.out, exist_ok=True)
    # the same n codes under every label: row c is digit c, a column keeps one z
    z = rng.standard_normal((args.n_samples, model.latent_dim))
    rows = np.stack([model.decode(z, np.full(args.n_samples, c)) for c in range(10)])
    path = os.path.join(args.out, "cvae_samples.png")
    viz.plot_interpolation(rows, row_labels=[f"y = {c}" for c in range(10)], path=path,
                           title="CVAE samples: one row per label, one z per column")
    print(f"wrote {path}")

    # one test example of each digit, decoded under every label
    idx = np.array([np.flatnonzero(y_te == c)[0] for c in range(10)])
    grid = cvae_analogies(model, x_te[idx], y_te[idx])
    path = os.path.join(args.out, "cvae_analogies.png")
    viz.plot_analogies(x_te[idx], grid, path=path,
                       title="style of each input (rows) under every label (columns)")
    print(f"wrote {path}")
    return model


if __name__ == "__main__":
    main()
