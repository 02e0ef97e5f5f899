"""Posterior collapse on the digits, and three remedies: KL warm-up, cyclical KL, free bits.

Shows: a VAE with a 16-dimensional latent space and a strong decoder (two hidden layers of 128
units) trained on the bundled 8x8 digits with the plain ELBO uses only a few latent dimensions:
the rest "collapse", q(z_j|x) = p(z_j) for every x, so KL_j ~ 0 and E_q[z_j] does not vary with x.
The same model is trained four ways, everything else equal:
    plain      beta = 1 throughout
    warm-up    beta rises linearly from ~0 to 1 over the first half of training (Bowman et al. 2016)
    cyclical   four cycles, beta ramps up over the first half of each (Fu et al. 2019)
    free bits  each dimension's batch-mean KL is charged at least 0.5 nats, so below that floor
               the KL exerts no pull towards the prior (Kingma et al. 2016)
Reported per method on the test digits: active units (Var_x E_q[z_j] > 0.01, Burda et al.),
KL per dimension, and the negative ELBO (beta = 1). Figures: KL per dimension (heat map) and
active units over training, one per method.
Headline numbers: active units out of 16 (seed 0: plain 4, warm-up 7, cyclical 6, free bits 16;
seed 1: 5, 7, 6, 16) and what the remedies cost in test negative ELBO (about +0.1 nats for the
schedules; +2.6 nats for free bits, which makes every dimension pay its 0.5-nat floor).

    python examples/05_posterior_collapse.py            # ~1 min on 2 cores
    python examples/05_posterior_collapse.py --quick    # a few seconds (too short to show collapse)
"""
from __future__ import annotations

import os

# small matrices: BLAS threads only add synchronisation; set before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import scratchvae as sv  # noqa: E402
from scratchvae import evaluate, schedules, viz  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")
LATENT_DIM = 16
FREE_BITS = 0.5          # nats per latent dimension


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figures")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def methods(epochs, steps_per_epoch):
    """name -> keyword arguments of ``fit`` (everything else is shared)."""
    total = epochs * steps_per_epoch
    return {
        "plain": dict(beta=1.0),
        "warm-up": dict(beta=schedules.linear_warmup(max(1, total // 2), beta=1.0)),
        "cyclical": dict(beta=schedules.cyclical(max(1, total // 4), ratio=0.5, beta=1.0)),
        "free bits": dict(beta=1.0, free_bits=FREE_BITS),
    }


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    x_tr, _, x_val, _, x_te, _ = sv.data.load_digits(seed=args.seed, dtype="float64")
    epochs, batch_size = (3 if args.quick else 150), 64
    steps_per_epoch = -(-x_tr.shape[0] // batch_size)
    print(f"VAE 64-64-{LATENT_DIM}, decoder {LATENT_DIM}-128-128-64 (tanh, bernoulli), "
          f"{epochs} epochs of {steps_per_epoch} steps, Adam lr 3e-3, seed {args.seed}")
    print(f"{'method':<11}{'active':>8}{'KL>0.05':>9}{'total KL':>10}{'test -ELBO':>12}"
          f"{'seconds':>9}   KL per dimension, largest first (nats)")
    dpi = 80
    for name, kw in methods(epochs, steps_per_epoch).items():
        model = sv.VAE(64, hidden_dims=(64,), latent_dim=LATENT_DIM, activation="tanh",
                       decoder_hidden_dims=(128, 128), seed=args.seed)
        t0 = time.perf_counter()
        history = sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=batch_size,
                         optimizer=sv.Adam(lr=3e-3), seed=args.seed, progress=False, **kw)
        seconds = time.perf_counter() - t0
        au = evaluate.active_units(model, x_te)
        kl = evaluate.kl_per_dimension(model, x_te)
        neg_elbo = -model.elbo(x_te, n_samples=10, rng=rng).mean()
        top = " ".join(f"{v:.2f}" for v in np.sort(kl)[::-1][:8])
        print(f"{name:<11}{au:>5d}/{LATENT_DIM}{int((kl > 0.05).sum()):>9d}{kl.sum():>10.3f}"
              f"{neg_elbo:>12.3f}{seconds:>9.1f}   {top} ...")
        stem = name.replace(" ", "_").replace("-", "")
        viz.plot_kl_per_dim(np.array(history["kl_per_dim"]), np.array(history["active_units"]),
                            path=os.path.join(args.out, f"posterior_collapse_{stem}.png"), dpi=dpi,
                            title=f"{name}: KL per latent dimension (validation digits)")
    print("active = Var_x E_q[z_j|x] > 0.01 on the test digits; KL>0.05: dimensions with a mean KL "
          "above 0.05 nats")
    print(f"figures in {os.path.abspath(args.out)}: posterior_collapse_plain.png "
          f"posterior_collapse_warmup.png posterior_collapse_cyclical.png "
          f"posterior_collapse_free_bits.png")


if __name__ == "__main__":
    main()
