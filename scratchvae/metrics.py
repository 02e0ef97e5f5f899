"""The metrics of one trained model that ``scratchvae train`` writes to ``metrics.json``.

A sweep (``scratchvae.sweep``) tabulates these over grid points and seeds, so they are kept
cheap: a run on the bundled digits spends about as long on its metrics as on a few epochs.

    test_neg_elbo           -ELBO per test example, one z sample each (nats, lower is better)
    iw_ll, iw_ll_stderr     importance-weighted estimate of the mean test log p(x) with
                            k = IW_K samples per example, and its Monte Carlo standard error
                            sqrt(sum_b se_b^2) / B (nats, higher is better)
    active_units            latent units with Var_x(E_q[z_j]) > 0.01
    frechet_digit_distance  Frechet distance between prior samples and the test images in the
                            features of a small digit classifier (``scratchvae.quality``; digits
                            data only, else None; lower is better)
    kl_qz_pz, kl_qz_pz_stderr
                            KL(q(z) || p(z)) of the aggregate posterior, for models with a
                            standard Gaussian prior (``evaluate.aggregate_posterior_kl``; else
                            None)
    seconds                 wall-clock seconds of the training loop

A metric that does not apply to the model (no ``log_likelihood``, no Gaussian prior) is None.
"""
from __future__ import annotations

import numpy as np

# k for the importance-weighted log-likelihood: 100 samples per test example keeps it well under
# a second on the digits; ``scratchvae eval --k 5000`` gives the tighter estimate for one model.
IW_K = 100
FD_SAMPLES = 1000        # prior samples compared with the test images (at most the test size)
KL_QZ_SAMPLES = 1000     # samples of z ~ q(z) for the aggregate-posterior KL
CLASSIFIER_SEED = 0      # one classifier per data split, independent of the model's seed

METRICS = ("test_neg_elbo", "iw_ll", "iw_ll_stderr", "active_units", "frechet_digit_distance",
           "kl_qz_pz", "kl_qz_pz_stderr", "seconds")


def _ykw(model, y):
    return {"y": y} if getattr(model, "conditional", False) else {}


def _iw(model, x, y, rng):
    if not hasattr(model, "log_likelihood"):
        return None, None
    ll, se = model.log_likelihood(x, k=IW_K, rng=rng, return_stderr=True, **_ykw(model, y))
    return float(np.mean(ll)), float(np.sqrt(np.sum(np.square(se, dtype=np.float64))) / ll.size)


def _active_units(model, x, y):
    from .evaluate import active_units
    if not hasattr(model, "encode") or getattr(model, "prior", None) == "categorical":
        return None     # a VQ-VAE's code is a codebook index, not a Gaussian mean
    return int(active_units(model, x, **_ykw(model, y)))


def _frechet(model, data, x_tr, y_tr, x_te, rng):
    from . import quality
    if data != "digits" or y_tr is None or not hasattr(model, "sample"):
        return None
    clf = quality.train_classifier(x_tr, y_tr, seed=CLASSIFIER_SEED)
    n = min(FD_SAMPLES, x_te.shape[0])
    if getattr(model, "conditional", False):
        x_gen = model.sample(n, y=np.arange(n, dtype=np.int64) % model.n_classes, rng=rng)
    else:
        x_gen = model.sample(n, rng=rng)
    return float(quality.digit_frechet_distance(np.asarray(x_gen, dtype=x_te.dtype), x_te, clf))


def _aggregate_kl(model, x, y, rng):
    from . import evaluate
    if getattr(model, "prior", None) != "gaussian":
        return None, None
    kl, se = evaluate.aggregate_posterior_kl(model, x, n_samples=KL_QZ_SAMPLES, rng=rng,
                                             **_ykw(model, y))
    return float(kl), float(se)


def run_metrics(model, *, data, x_train, y_train, x_test, y_test, test_neg_elbo, seconds, seed=0):
    """The dict written to ``metrics.json``: the keys of ``METRICS`` in that order, each a float,
    an int or None. ``test_neg_elbo`` and ``seconds`` are the values ``train`` already measured;
    the random draws come from generators seeded by ``seed``."""
    iw_ll, iw_se = _iw(model, x_test, y_test, np.random.default_rng([seed, 5]))
    kl, kl_se = _aggregate_kl(model, x_test, y_test, np.random.default_rng([seed, 7]))
    out = {"test_neg_elbo": float(test_neg_elbo), "iw_ll": iw_ll, "iw_ll_stderr": iw_se,
           "active_units": _active_units(model, x_test, y_test),
           "frechet_digit_distance": _frechet(model, data, x_train, y_train, x_test,
                                              np.random.default_rng([seed, 6])),
           "kl_qz_pz": kl, "kl_qz_pz_stderr": kl_se, "seconds": float(seconds)}
    return {k: out[k] for k in METRICS}


__all__ = ["METRICS", "IW_K", "run_metrics"]
