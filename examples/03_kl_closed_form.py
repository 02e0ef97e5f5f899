"""The closed-form KL divergence between two diagonal Gaussians, checked by Monte Carlo.

Shows: for q = N(mu_q, diag(exp(lv_q))) and p = N(mu_p, diag(exp(lv_p))) in d dimensions,

    KL(q || p) = 1/2 sum_j [ lv_p_j - lv_q_j + (exp(lv_q_j) + (mu_q_j - mu_p_j)^2) / exp(lv_p_j) - 1 ]

against the Monte Carlo estimate (1/n) sum_i [log q(z_i) - log p(z_i)], z_i ~ q, whose error
shrinks like 1/sqrt(n): the figure plots |MC - closed form| and the estimator's standard error
against n on log-log axes. The special case p = N(0, I) is the KL term of the VAE's ELBO.
Headline numbers: the closed form, the MC estimate with n = 10^6 samples, and their difference
in standard errors.

    python examples/03_kl_closed_form.py
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from matplotlib.figure import Figure

FIGURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "docs", "figures")
LOG_2PI = np.log(2 * np.pi)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="up to 10^4 samples (a second)")
    ap.add_argument("--out", default=FIGURES, help="directory for the PNG figure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=5, help="dimension d of the Gaussians")
    ap.add_argument("--mnist", metavar="DIR", default=None, help="not used (no data needed)")
    return ap.parse_args(argv)


def kl_closed_form(mu_q, lv_q, mu_p, lv_p):
    """KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p)) for diagonal Gaussians, summed over dimensions."""
    return 0.5 * np.sum(lv_p - lv_q + (np.exp(lv_q) + (mu_q - mu_p) ** 2) / np.exp(lv_p) - 1.0)


def log_normal(z, mu, lv):
    """log N(z; mu, diag(exp(lv))) per row of z (n, d)."""
    return -0.5 * np.sum((z - mu) ** 2 / np.exp(lv) + lv + LOG_2PI, axis=-1)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    d = args.dim
    mu_q, mu_p = rng.normal(0, 1, d), rng.normal(0, 1, d)
    lv_q, lv_p = rng.normal(0, 0.7, d), rng.normal(0, 0.7, d)
    exact = kl_closed_form(mu_q, lv_q, mu_p, lv_p)
    n_max = 10 ** 4 if args.quick else 10 ** 6
    z = mu_q + np.exp(lv_q / 2) * rng.standard_normal((n_max, d))     # z ~ q
    terms = log_normal(z, mu_q, lv_q) - log_normal(z, mu_p, lv_p)     # log q(z) - log p(z)
    ns = np.unique(np.logspace(1, np.log10(n_max), 25).astype(int))
    err = np.array([abs(terms[:n].mean() - exact) for n in ns])
    se = terms.std(ddof=1) / np.sqrt(ns)
    mc, mc_se = terms.mean(), terms.std(ddof=1) / np.sqrt(n_max)
    # the standard-normal case, the ELBO's KL term: 1/2 sum (mu^2 + e^lv - 1 - lv)
    kl_std = 0.5 * np.sum(mu_q ** 2 + np.exp(lv_q) - 1 - lv_q)
    assert np.isclose(kl_std, kl_closed_form(mu_q, lv_q, np.zeros(d), np.zeros(d)))

    fig = Figure(figsize=(5.5, 4), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    ax.loglog(ns, err, "o-", markersize=3, label="|Monte Carlo - closed form|")
    ax.loglog(ns, se, "--", color="grey", label="standard error of the MC mean")
    ax.set_xlabel("Monte Carlo samples n")
    ax.set_ylabel("nats")
    ax.set_title(f"KL between diagonal Gaussians, d = {d}: closed form {exact:.4f}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    path = os.path.join(args.out, "kl_monte_carlo.png")
    fig.savefig(path, dpi=80)
    print(f"closed form KL(q || p) = {exact:.6f} nats (d = {d})")
    print(f"Monte Carlo, n = {n_max}: {mc:.6f} +- {mc_se:.6f}  "
          f"(difference {abs(mc - exact) / mc_se:.2f} standard errors)")
    print(f"figure: {os.path.abspath(path)}")


if __name__ == "__main__":
    main()
