"""Gradient estimators for the reconstruction term of the ELBO, hand-written, and a study of their
variance.

The reconstruction term of one example, as a function of the encoder's outputs:

    f(z)            = log p(x|z)                      the decoder's log-likelihood
    R(mu, logvar)   = E_{z ~ q}[ f(z) ],   q = N(mu, diag(var)),
                      var = exp(logvar),  std = exp(logvar / 2)

Its gradient (dR/dmu, dR/dlogvar) has no closed form for a neural decoder. Two unbiased Monte Carlo
estimators use K draws eps_k ~ N(0, I) and z_k = mu + std * eps_k (the same z_k for both):

Reparameterization (pathwise; Kingma & Welling 2014), differentiating through z_k:
    dR/dmu     ~ (1/K) sum_k f'(z_k)
    dR/dlogvar ~ (1/K) sum_k f'(z_k) * eps_k * std / 2            (dz_k/dlogvar = eps_k * std / 2)
  where f'(z) = d log p(x|z) / dz comes from the decoder's hand-written backward.

Score function (REINFORCE, likelihood ratio; Williams 1992), from dR = E_q[ f(z) d log q(z|x) ]:
    d log q / dmu     = (z - mu) / var                  = eps / std
    d log q / dlogvar = ((z - mu)^2 / var - 1) / 2      = (eps^2 - 1) / 2
    dR/dmu     ~ (1/K) sum_k f(z_k) eps_k / std
    dR/dlogvar ~ (1/K) sum_k f(z_k) (eps_k^2 - 1) / 2
  It needs only values of f, not its gradient (it works for discrete z too), but f(z) ~ -tens of
  nats multiplies a zero-mean score, so its variance is typically orders of magnitude larger.

These are gradients of R itself (ascent directions); the loss -R has the negated gradient.
Both estimators are averages of K independent per-sample terms, so the variance of each is
Var(one term) / K.

Shapes: x (B, D); mu, logvar (B, d); eps, z (K, B, d); f values (K, B).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._checks import check_array, check_float, check_int, check_rng
from .distributions import (log_normal_backward, log_normal_forward, reparameterize_backward,
                            reparameterize_forward)
from .kernels import get_kernels

# the estimators work on host arrays; the reference kernels run their reparameterization
_K = get_kernels("numpy")

ESTIMATORS = ("reparameterization", "score function")


class Gradient(NamedTuple):
    """A gradient (or its estimate) with respect to the encoder's outputs."""
    dmu: np.ndarray        # (B, d), or (K, B, d) per sample
    dlogvar: np.ndarray    # (B, d), or (K, B, d) per sample


# ====================================================================== f(z) and f'(z)
def _check_mu_logvar(model, x, mu, logvar):
    B, d = x.shape[0], model.latent_dim
    mu = check_array("mu", mu, shape=(B, d), dtype=model.dtype)
    logvar = check_array("logvar", logvar, shape=(B, d), dtype=model.dtype)
    return mu, logvar


def _check_z(model, x, z, name):
    return check_array(name, z, ndim=3, shape=(None, x.shape[0], model.latent_dim),
                       dtype=model.dtype)


def loglik(model, x, z, y=None):
    """f(z) = log p(x|z) for K codes per example.

    Shapes: x (B, D), z (K, B, d) -> (K, B).
    Equation: the model's likelihood of x under the decoder output at z_kb.
    """
    x = model.check_x(x)
    return model.loglik_given_z(x, _check_z(model, x, z, "z"), y=y)


def loglik_and_grad_z(model, x, z, y=None):
    """f(z) = log p(x|z) and its gradient f'(z) with respect to z, by the decoder's backward.

    Shapes: x (B, D), z (K, B, d) -> ll (K, B), dz (K, B, d) with dz_kb = d ll_kb / d z_kb.
    Equation: dll = 1 per (k, b), then the likelihood's backward (dout = x - sigmoid(out), or
    (x - out) exp(-logvar)) and the decoder MLP's backward down to its input c_0 = z.
    """
    x = model.check_x(x)
    return model.loglik_given_z(x, _check_z(model, x, z, "z"), y=y, need_dz=True)


# ====================================================================== per-sample terms
def _draw_z(mu, logvar, eps):
    """z_k = mu + std eps_k by the one reparameterization (``distributions``), with each of the
    K samples as a row of its own, so that the backward returns per-sample terms.

    Shapes: mu, logvar (B, d), eps (K, B, d) -> z (K, B, d), the reparameterization's cache.
    """
    K, B, d = eps.shape
    z, cache = reparameterize_forward(np.tile(mu, (K, 1)), np.tile(logvar, (K, 1)),
                                      np.ascontiguousarray(eps).reshape(1, K * B, d), k=_K)
    return z.reshape(K, B, d), cache


def _pathwise_terms(dz, cache):
    """Per-sample pathwise terms (f'(z_k), f'(z_k) eps_k std / 2): the reparameterization's
    backward on the rows of ``_draw_z``. Shapes: dz (K, B, d) -> two (K, B, d)."""
    K, B, d = dz.shape
    dmu, dlogvar = reparameterize_backward(np.ascontiguousarray(dz).reshape(1, K * B, d), cache,
                                           k=_K)
    return dmu.reshape(K, B, d), dlogvar.reshape(K, B, d)


def _score_terms(f, z, mu, logvar):
    """Per-sample score terms f(z_k) d log q(z_k|x) / d(mu, logvar) at fixed z_k: the gradients
    in m and logvar of ``distributions.log_normal`` with upstream f.

    Shapes: f (K, B), z (K, B, d), mu and logvar (B, d) -> two (K, B, d):
    f (z - mu) / var = f eps / std  and  f ((z - mu)^2 / var - 1) / 2 = f (eps^2 - 1) / 2.
    """
    full = lambda a: np.ascontiguousarray(np.broadcast_to(a, z.shape))   # noqa: E731  per sample
    _, cache = log_normal_forward(z, full(mu), full(logvar))
    _, dmu, dlogvar = log_normal_backward(f, cache)
    return dmu, dlogvar


# ====================================================================== the two estimators
def reparam_gradient(model, x, mu, logvar, eps, y=None, per_sample=False) -> Gradient:
    """Reparameterization (pathwise) estimate of the gradient of E_q[log p(x|z)].

    Shapes: x (B, D); mu, logvar (B, d); eps (K, B, d) -> Gradient of (B, d) arrays, or of
    (K, B, d) per-sample terms when ``per_sample`` (their mean over K is the estimate).
    Equation: z_k = mu + std eps_k;  dmu = (1/K) sum_k f'(z_k);
              dlogvar = (1/K) sum_k f'(z_k) eps_k std / 2.
    """
    x = model.check_x(x)
    mu, logvar = _check_mu_logvar(model, x, mu, logvar)
    eps = _check_z(model, x, eps, "eps")
    z, cache = _draw_z(mu, logvar, eps)
    _, dz = loglik_and_grad_z(model, x, z, y=y)
    dmu, dlogvar = _pathwise_terms(dz, cache)
    if per_sample:
        return Gradient(dmu, dlogvar)
    return Gradient(dmu.mean(axis=0), dlogvar.mean(axis=0))


def score_function_gradient(model, x, mu, logvar, eps, y=None, per_sample=False) -> Gradient:
    """Score-function (REINFORCE) estimate of the gradient of E_q[log p(x|z)].

    Shapes: x (B, D); mu, logvar (B, d); eps (K, B, d) -> Gradient of (B, d) arrays, or of
    (K, B, d) per-sample terms when ``per_sample``.
    Equation: z_k = mu + std eps_k;  dmu = (1/K) sum_k f(z_k) (z_k - mu) / var
                                         = (1/K) sum_k f(z_k) eps_k / std;
              dlogvar = (1/K) sum_k f(z_k) ((z_k - mu)^2 / var - 1) / 2
                      = (1/K) sum_k f(z_k) (eps_k^2 - 1) / 2.
    Uses only values of f (no decoder backward).
    """
    x = model.check_x(x)
    mu, logvar = _check_mu_logvar(model, x, mu, logvar)
    eps = _check_z(model, x, eps, "eps")
    z, _ = _draw_z(mu, logvar, eps)
    dmu, dlogvar = _score_terms(loglik(model, x, z, y=y), z, mu, logvar)
    if per_sample:
        return Gradient(dmu, dlogvar)
    return Gradient(dmu.mean(axis=0), dlogvar.mean(axis=0))


# ====================================================================== reference values
def _hermite_rule(n_nodes, d, dtype):
    """Tensor Gauss-Hermite rule for E_{N(0, I_d)}: nodes u (n^d, d), weights (n^d,) summing to 1.
    Equation: E[g(eps)] ~ sum_i W_i g(u_i),  u = sqrt(2) t,  W = prod_j w_j / sqrt(pi)."""
    t, w = np.polynomial.hermite.hermgauss(n_nodes)
    grids = np.meshgrid(*([t] * d), indexing="ij")
    wgrids = np.meshgrid(*([w] * d), indexing="ij")
    u = math.sqrt(2.0) * np.stack([g.ravel() for g in grids], axis=1)
    W = np.prod(np.stack([g.ravel() for g in wgrids], axis=1), axis=1) / math.pi ** (d / 2)
    return u.astype(dtype), W.astype(dtype)


def expected_loglik(model, x, mu, logvar, y=None, n_nodes=40):
    """E_q[log p(x|z)] by tensor-product Gauss-Hermite quadrature (deterministic, no sampling).

    Shapes: x (B, D); mu, logvar (B, d) -> (B,).
    Equation: E_q[f(z)] = E_{eps ~ N(0, I)}[ f(mu + std eps) ] ~ sum_i W_i f(mu + std u_i) with the
    n_nodes**d Gauss-Hermite nodes u_i and weights W_i; exact when f is a polynomial of degree
    < 2 n_nodes in each z_j (e.g. a linear-Gaussian decoder), spectrally accurate for smooth f.
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    mu, logvar = _check_mu_logvar(model, x, mu, logvar)
    n_nodes = check_int("n_nodes", n_nodes, min_value=1, max_value=200)
    d = model.latent_dim
    if n_nodes ** d > 2 ** 16:
        raise ValueError(f"n_nodes ** latent_dim must be <= 65536 (a tensor rule); got "
                         f"n_nodes = {n_nodes} with latent_dim = {d}")
    u, W = _hermite_rule(n_nodes, d, model.dtype)
    total = np.zeros(x.shape[0], model.dtype)
    chunk = max(1, 2 ** 14 // x.shape[0])
    for s in range(0, u.shape[0], chunk):
        nodes = np.broadcast_to(u[s:s + chunk, None, :], (min(chunk, u.shape[0] - s),) + mu.shape)
        z, _ = _draw_z(mu, logvar, nodes)                               # mu + std u_i, (n, B, d)
        total += W[s:s + chunk] @ model.loglik_given_z(x, z, y=y)
    return total


def exact_gradient(model, x, mu, logvar, y=None, n_nodes=40, h=1e-5) -> Gradient:
    """Reference gradient of E_q[log p(x|z)]: central differences of ``expected_loglik``.

    Shapes: x (B, D); mu, logvar (B, d) -> Gradient of (B, d) arrays. float64 models only.
    Equation: dR/dmu_bj ~ (R(mu + h e_j) - R(mu - h e_j))_b / (2 h), likewise for logvar (every
    example's coordinate j moves at once: R of one example does not depend on the others').
    """
    if model.dtype != np.float64:
        raise ValueError(f"exact_gradient needs a float64 model (finite differences); this one is "
                         f"{model.dtype.name}: use model.astype('float64')")
    x = model.check_x(x)
    mu, logvar = _check_mu_logvar(model, x, mu, logvar)
    h = check_float("h", h, min_value=0.0, min_inclusive=False)
    grads = []
    for which in (0, 1):
        g = np.empty_like(mu)
        for j in range(model.latent_dim):
            args = []
            for sign in (1.0, -1.0):
                m, lv = mu.copy(), logvar.copy()
                (m if which == 0 else lv)[:, j] += sign * h
                args.append(expected_loglik(model, x, m, lv, y=y, n_nodes=n_nodes))
            g[:, j] = (args[0] - args[1]) / (2.0 * h)
        grads.append(g)
    return Gradient(*grads)


# ====================================================================== the variance study
class EstimatorStudy(NamedTuple):
    """Results of ``estimator_variance``; names are ESTIMATORS."""
    ks: np.ndarray          # (m,) sample counts K
    variance: dict          # name -> (m,) variance of the K-sample estimator (see the function)
    mean: dict              # name -> Gradient (B, d): mean of all n_repeats * max(ks) samples
    stderr: dict            # name -> Gradient (B, d): Monte Carlo standard error of ``mean``
    mu: np.ndarray          # (B, d) the encoder outputs the gradient was taken at
    logvar: np.ndarray      # (B, d)


def estimator_variance(model, x, ks=(1, 10, 100), n_repeats=200, rng=None, y=None, mu=None,
                       logvar=None, max_rows=2 ** 14) -> EstimatorStudy:
    """Variance of the reparameterization and score-function estimators against K.

    Shapes: x (B, D); mu, logvar (B, d) (default: the encoder's outputs for x); ks (m,).
    For each of ``n_repeats`` independent repeats, max(ks) per-sample terms of both estimators are
    drawn (the same z for both); the K-sample estimate of a repeat is the mean of its first K terms.
    Equation: variance[name][i] = (1/B) sum_b sum_j [ Var(dmu_bj) + Var(dlogvar_bj) ] over the
    repeats (ddof 1): the trace of the estimator's covariance, averaged over examples. Expected
    to fall as 1/K for both. ``mean`` pools all n_repeats * max(ks) terms; ``stderr`` is the
    standard deviation of the n_repeats max(ks)-sample estimates over sqrt(n_repeats).
    """
    x = model.check_x(x)
    y = model.check_y(y, x.shape[0])
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise TypeError(f"ks must be a sequence of positive ints; got {type(ks).__name__}")
    ks = np.asarray([check_int(f"ks[{i}]", k, min_value=1) for i, k in enumerate(ks)], np.int64)
    if ks.size == 0:
        raise ValueError("ks must not be empty; give at least one sample count K >= 1")
    n_repeats = check_int("n_repeats", n_repeats, min_value=2)
    max_rows = check_int("max_rows", max_rows, min_value=1)
    rng = model.rng if rng is None else check_rng("rng", rng)
    if (mu is None) != (logvar is None):
        raise ValueError("mu and logvar must be given together (or both None for the encoder's)")
    if mu is None:
        mu, logvar = model.encode(x, **({} if y is None else {"y": y}))
    mu, logvar = _check_mu_logvar(model, x, mu, logvar)
    B, d = mu.shape
    kmax = int(ks.max())
    # est[name][i] holds the ks[i]-sample estimates of every repeat: (n_repeats, 2, B, d)
    est = {name: np.empty((ks.size, n_repeats, 2, B, d), model.dtype) for name in ESTIMATORS}
    chunk = max(1, max_rows // B)
    for r in range(n_repeats):
        eps = rng.standard_normal((kmax, B, d), dtype=model.dtype)
        terms = {name: np.empty((kmax, 2, B, d), model.dtype) for name in ESTIMATORS}
        for s in range(0, kmax, chunk):
            z, cache = _draw_z(mu, logvar, eps[s:s + chunk])    # the same z for both
            f, dz = loglik_and_grad_z(model, x, z, y=y)
            for name, (dmu, dlogvar) in (("reparameterization", _pathwise_terms(dz, cache)),
                                         ("score function", _score_terms(f, z, mu, logvar))):
                terms[name][s:s + chunk, 0] = dmu
                terms[name][s:s + chunk, 1] = dlogvar
        for name, t in terms.items():
            csum = np.cumsum(t, axis=0)
            for i, k in enumerate(ks):
                est[name][i, r] = csum[k - 1] / k
    i_max = int(np.argmax(ks))       # the max(ks)-sample estimates average every drawn term
    variance, mean, stderr = {}, {}, {}
    for name in ESTIMATORS:
        variance[name] = est[name].var(axis=1, ddof=1).sum(axis=(1, 2, 3)) / B
        full = est[name][i_max]                                  # (n_repeats, 2, B, d)
        mean[name] = Gradient(*full.mean(axis=0))
        stderr[name] = Gradient(*(full.std(axis=0, ddof=1) / math.sqrt(n_repeats)))
    return EstimatorStudy(ks, variance, mean, stderr, mu, logvar)
