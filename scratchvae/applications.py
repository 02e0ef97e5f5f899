"""Two uses of a trained VAE beyond sampling: anomaly detection and missing-data imputation.

Symbols: n examples, D data dimension, d latent dimension.

    anomaly_scores(model, x, method="elbo" | "iw", k=None, rng=None)   -> (n,) nats, high = unusual
    roc_curve(scores, labels)    -> fpr (m,), tpr (m,), thresholds (m,)
    roc_auc(scores, labels)      -> area under the ROC curve (ties count one half)
    impute(model, x, mask, n_iter=50, rng=None)  -> x with the missing pixels (mask True) filled

Anomaly detection: a model trained on "normal" data gives unusual inputs a low likelihood, so
the score is an upper bound / estimate of -log p(x): the negative ELBO (cheap) or the negative
importance-weighted bound -L_k (tighter). Labels for the ROC are 1 for anomalies (positives).

Imputation by pseudo-Gibbs sampling (Rezende, Mohamed & Wierstra 2014, appendix F): fill the
missing pixels, then repeat  z ~ q(z | x_t);  x_{t+1}[missing] = E[x | z][missing]  while the
observed pixels stay exactly as given.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_array, check_choice, check_int, check_rng
from .distributions import reparameterize_forward
from .kernels import get_kernels

_K = get_kernels("numpy")     # host-side draws on the arrays the model returned

SCORE_METHODS = ("elbo", "iw")
INIT_FILLS = ("mean", "half", "noise")


def _kw(y, s=None, e=None):
    return {} if y is None else {"y": y if s is None else y[s:e]}


# ============================================================================ anomaly scores
def anomaly_scores(model, x, method="elbo", k=None, rng=None, y=None, batch_size=500):
    """Per-example anomaly score in nats: higher means less likely under the model.

    Shapes: x (n, D) in the model's dtype -> scores (n,) in the model's dtype.
    Equation: "elbo": s(x) = -ELBO(x) = -(1/k) sum_i log p(x|z_i) + KL(q(z|x) || p(z)),
              k samples z_i ~ q(z|x) (default k = 1);
              "iw":   s(x) = -L_k(x) = -(logsumexp_i log w_i - log k), w_i = p(x, z_i) / q(z_i|x)
              (default k = 100), a tighter estimate of -log p(x).
    ``rng`` (Generator or int seed) makes the scores reproducible; ``y`` labels for a CVAE.
    """
    method = check_choice("method", method, SCORE_METHODS)
    k = (1 if method == "elbo" else 100) if k is None else check_int("k", k, min_value=1)
    batch_size = check_int("batch_size", batch_size, min_value=1)
    rng = check_rng("rng", rng)
    x = model.check_x(x)
    out = []
    for s in range(0, x.shape[0], batch_size):
        xb = x[s:s + batch_size]
        if method == "elbo":
            out.append(-model.elbo(xb, n_samples=k, rng=rng, **_kw(y, s, s + batch_size)))
        else:
            out.append(-model.log_likelihood(xb, k=k, rng=rng, **_kw(y, s, s + batch_size)))
    return np.concatenate(out)


def _check_scores_labels(scores, labels):
    s = np.asarray(scores)
    if s.dtype.kind not in "iuf" or s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array of numbers; got "
                         f"{s.dtype} of shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite; it has NaN or inf entries")
    lab = np.asarray(labels)
    if lab.shape != s.shape:
        raise ValueError(f"labels must have the shape of scores {s.shape}; got {lab.shape}")
    if lab.dtype.kind not in "biu" or not np.isin(lab, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomaly), as bool or int")
    lab = lab.astype(bool)
    n_pos = int(lab.sum())
    if n_pos == 0 or n_pos == lab.size:
        raise ValueError(f"labels must contain both classes (0 and 1); got {n_pos} positives "
                         f"out of {lab.size}")
    return s.astype(np.float64), lab


def roc_curve(scores, labels):
    """The ROC curve of the rule "anomaly if score >= threshold", over all thresholds.

    Shapes: scores (n,) numbers, labels (n,) 0/1 (1 = anomaly) -> fpr (m,), tpr (m,),
    thresholds (m,), float64, with m - 1 distinct score values; the curve starts at (0, 0)
    (threshold +inf) and ends at (1, 1).
    Equation: tpr(t) = #{s_i >= t, y_i = 1} / n_pos,  fpr(t) = #{s_i >= t, y_i = 0} / n_neg.
    Tied scores move together: one point per distinct score, so a tie between a positive and a
    negative is a diagonal segment (counted as one half in the AUC).
    """
    s, lab = _check_scores_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s_sorted, l_sorted = s[order], lab[order]
    tp = np.cumsum(l_sorted)
    fp = np.cumsum(~l_sorted)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]     # one point per distinct score
    tpr = np.r_[0.0, tp[last_of_tie] / tp[-1]]
    fpr = np.r_[0.0, fp[last_of_tie] / fp[-1]]
    thresholds = np.r_[np.inf, s_sorted[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the probability that an anomaly outscores a normal example.

    Shapes: scores (n,), labels (n,) 0/1 (1 = anomaly) -> float in [0, 1].
    Equation (Mann-Whitney U with mid-ranks for ties):
        AUC = (sum of the ranks of the positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg)
            = P(s_pos > s_neg) + 1/2 P(s_pos = s_neg),
    which equals the trapezoidal area under ``roc_curve``. 0.5 is chance, 1 perfect.
    """
    s, lab = _check_scores_labels(scores, labels)
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    ranks = np.empty(s.size, np.float64)
    # ranks 1..n; each run of tied scores gets the mean of the ranks it spans
    starts = np.r_[0, np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1]
    ends = np.r_[starts[1:], s.size]
    mid = (starts + 1 + ends) / 2.0
    ranks[order] = np.repeat(mid, ends - starts)
    n_pos = int(lab.sum())
    n_neg = s.size - n_pos
    return float((ranks[lab].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ============================================================================ imputation
def impute(model, x, mask, n_iter=50, rng=None, y=None, init="mean", fill_value=None,
           burn_in=None, return_trace=False):
    """Fill the missing entries of x by pseudo-Gibbs sampling; observed entries are kept exactly.

    Shapes: x (n, D) in the model's dtype (missing entries may hold anything, NaN included);
    mask (n, D) bool, True = missing -> x_imputed (n, D); with ``return_trace`` also the
    states (n_iter + 1, n, D), the initial fill first.
    Equation: x_0 = x with missing entries := the initial fill;
              for t = 0..n_iter-1:  z ~ q(z | x_t) (reparameterized, one sample),
                                    m = E[x | z] (decoder mean),
                                    x_{t+1} = where(mask, m, x).
    Result: burn_in None returns the last state x_{n_iter} (one draw of the chain); an int
    b < n_iter returns the average (1 / (n_iter - b)) sum_{t=b+1..n_iter} x_t, a Monte Carlo
    estimate of the chain's mean, whose squared error is lower than one draw's (the spread of
    the draws is averaged out). Observed entries are x itself either way.
    init: "mean" fills each missing entry with the mean of the observed values in its column
    (column 0.5 when none is observed; or ``fill_value`` when given, a number or a (D,) array
    such as the training-set mean), "half" with 0.5, "noise" with Uniform(0, 1) draws from rng.
    """
    n_iter = check_int("n_iter", n_iter, min_value=0)
    if burn_in is not None:
        burn_in = check_int("burn_in", burn_in, min_value=0, max_value=max(n_iter - 1, 0))
        if n_iter == 0:
            raise ValueError("burn_in needs n_iter >= 1 (there is no state to average)")
    init = check_choice("init", init, INIT_FILLS)
    rng = check_rng("rng", rng)
    x = check_array("x", x, ndim=2, shape=(None, model.input_dim), dtype=model.dtype, finite=False)
    m = np.asarray(mask)
    if not isinstance(mask, np.ndarray) or m.dtype != np.bool_:
        raise TypeError(f"mask must be a numpy bool array (True = missing); got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if m.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {x.shape}; got {m.shape}")
    if not np.isfinite(x[~m]).all():
        raise ValueError("x must be finite at the observed entries (mask False)")
    dt = model.dtype
    if fill_value is not None:
        fill = np.broadcast_to(np.asarray(fill_value, dtype=dt), (x.shape[1],))
        if not np.isfinite(fill).all():
            raise ValueError("fill_value must be finite")
        start = np.broadcast_to(fill, x.shape)
    elif init == "mean":
        obs = np.where(m, 0, x)
        count = (~m).sum(axis=0)
        col = np.where(count > 0, obs.sum(axis=0) / np.maximum(count, 1), 0.5).astype(dt)
        start = np.broadcast_to(col, x.shape)
    elif init == "half":
        start = np.full(x.shape, 0.5, dt)
    else:
        start = rng.random(x.shape).astype(dt)
    cur = np.where(m, start, x).astype(dt, copy=False)
    trace = [cur.copy()] if return_trace else None
    total = np.zeros_like(cur) if burn_in is not None else None
    for t in range(1, n_iter + 1):
        mu, logvar = model.encode(cur, **_kw(y))
        eps = rng.standard_normal((1,) + mu.shape, dtype=dt)
        z = reparameterize_forward(mu, logvar, eps, k=_K)[0][0]     # z ~ q(z | x_t), one sample
        mean = model.decode(z, **_kw(y))
        cur = np.where(m, mean, x)                 # observed entries: x itself, bit for bit
        if return_trace:
            trace.append(cur.copy())
        if burn_in is not None and t > burn_in:
            total += cur
    if burn_in is not None:
        # the mean of the kept states; observed entries are restored bit for bit
        cur = np.where(m, total / dt.type(n_iter - burn_in), x)
    return (cur, np.stack(trace)) if return_trace else cur


__all__ = ["anomaly_scores", "roc_curve", "roc_auc", "impute", "SCORE_METHODS"]
