"""Make the ELBO gap visible: exact log p(x) by quadrature for a 2-D latent VAE on the digits.

Shows: for a VAE with a 2-D latent space trained on the bundled 8x8 digits, every quantity of the
bound chain  ELBO = E[L_1] <= E[L_10] <= ... <= E[L_5000] <= log p(x)  on the test digits, where
log p(x) = log int p(x|z) p(z) dz is computed exactly (trapezoid quadrature on a refined grid, not
sampled). The gap log p(x) - ELBO is computed two ways, (a) as log p(x) minus the exact ELBO
(its E_q[log p(x|z)] by the same quadrature) and (b) as KL(q(z|x) || p(z|x)) integrated on the grid
of the exact posterior; the two agree to rounding. Figures: L_k against k with the exact log p(x)
and the ELBO as lines, and the exact posterior p(z|x) beside the Gaussian q(z|x) for the test
digits with the largest gaps.
Headline numbers: the table (means over the test digits, nats per image).

    python examples/06_elbo_gap.py            # ~30 s on 2 cores
    python examples/06_elbo_gap.py --quick    # a few seconds (short training, 40 test digits)
"""
from __future__ import annotations

import os

# small matrices: BLAS threads only add synchronisation; set before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import scratchvae as sv  # noqa: E402
from scratchvae import evaluate, viz  # noqa: E402

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (a few seconds)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figures")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def posterior_window(mu, logvar, n_std=4.0, n=121):
    """A square grid covering q(z|x) of the given examples to +-n_std std (shared by all panels)."""
    std = np.exp(0.5 * logvar)
    lo, hi = (mu - n_std * std).min(axis=0), (mu + n_std * std).max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2
    return tuple(np.linspace(centre[j] - half, centre[j] + half, n) for j in range(2))


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    x_tr, _, x_val, _, x_te, _ = sv.data.load_digits(seed=args.seed, dtype="float64")
    epochs = 5 if args.quick else 150
    ks = (1, 10, 100) if args.quick else (1, 10, 100, 1000, 5000)
    if args.quick:
        x_te = x_te[:40]

    t0 = time.perf_counter()
    model = sv.VAE(64, hidden_dims=(64,), latent_dim=2, activation="tanh", seed=args.seed)
    sv.fit(model, x_tr, x_val, epochs=epochs, batch_size=64, optimizer=sv.Adam(lr=3e-3),
           seed=args.seed, progress=False)
    t_fit = time.perf_counter() - t0

    t0 = time.perf_counter()
    gap = evaluate.elbo_gap(model, x_te, tol=1e-8)            # exact: quadrature, no sampling
    t_quad = time.perf_counter() - t0
    t0 = time.perf_counter()
    curve = evaluate.iw_bound_curve(model, x_te, ks=ks, rng=rng)
    t_iw = time.perf_counter() - t0

    B = x_te.shape[0]
    print(f"VAE 64-64-2 (tanh, bernoulli), {epochs} epochs on {x_tr.shape[0]} digits "
          f"({t_fit:.1f} s); means over {B} test digits, nats per image")
    print(f"{'quantity':<46}{'mean':>12}{'MC s.e.':>10}")
    print(f"{'ELBO (exact: quadrature of E_q log p(x|z))':<46}{gap.elbo.mean():>12.4f}{'-':>10}")
    for k, lk, se in zip(curve.ks, curve.mean, curve.stderr):
        print(f"{'L_' + str(k) + ' (importance weighted)':<46}{lk:>12.4f}{se:>10.4f}")
    print(f"{'log p(x) (exact: quadrature)':<46}{gap.log_px.mean():>12.4f}{'-':>10}")
    print(f"{'gap (a): log p(x) - ELBO':<46}{gap.gap.mean():>12.6f}")
    print(f"{'gap (b): KL(q(z|x) || p(z|x)) on the grid':<46}{gap.kl_posterior.mean():>12.6f}")
    print(f"max over digits of |(a) - (b)|: {np.abs(gap.gap - gap.kl_posterior).max():.2e};  "
          f"int q dz on the grid: 1 + {np.abs(gap.q_mass - 1).max():.1e}")
    print(f"time: quadrature {t_quad:.1f} s, importance sampling (k up to {max(ks)}) {t_iw:.1f} s")

    dpi = 80
    out = lambda name: os.path.join(args.out, name)  # noqa: E731
    viz.plot_iw_bound(curve.ks, curve.mean, curve.stderr, exact=float(gap.log_px.mean()),
                      elbo=float(gap.elbo.mean()), path=out("elbo_gap_iw_bound.png"), dpi=dpi,
                      title=f"L_k on {B} test digits (2-D latent)")
    pick = np.argsort(gap.gap)[::-1][:3]                      # the digits with the largest gaps
    mu, logvar = model.encode(x_te[pick])
    axes = posterior_window(mu, logvar)
    log_joint, log_q = evaluate.grid_log_densities(model, x_te[pick], axes)
    viz.plot_posterior_contours(axes[0], axes[1], log_joint - gap.log_px[pick, None, None], log_q,
                                x_images=x_te[pick], path=out("elbo_gap_posteriors.png"), dpi=dpi,
                                title="exact posterior p(z|x) vs q(z|x): the largest gaps "
                                      + ", ".join(f"{g:.2f}" for g in gap.gap[pick]) + " nats")
    print(f"figures in {os.path.abspath(args.out)}: elbo_gap_iw_bound.png elbo_gap_posteriors.png")


if __name__ == "__main__":
    main()
