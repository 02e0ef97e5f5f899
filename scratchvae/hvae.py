"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2016, section 5): z2 -> z1 -> x.

Symbols: B batch, D data dimension, d1 and d2 the two latent sizes,
K samples. Every sample of z1 has its own z2, so the second layer works on K*B rows.

    x                  (B, D)       data
    mu_q1, logvar_q1   (B, d1)      MLP "q1" on x:    q(z1|x)  = N(mu_q1, diag(exp(logvar_q1)))
    eps1               (K, B, d1)   N(0, I) noise
    z1                 (K, B, d1)   mu_q1 + exp(logvar_q1 / 2) * eps1
    mu_q2, logvar_q2   (K, B, d2)   MLP "q2" on z1:   q(z2|z1) = N(mu_q2, diag(exp(logvar_q2)))
    eps2               (K, B, d2)   N(0, I) noise
    z2                 (K, B, d2)   mu_q2 + exp(logvar_q2 / 2) * eps2
    mu_p1, logvar_p1   (K, B, d1)   MLP "p1" on z2:   p(z1|z2) = N(mu_p1, diag(exp(logvar_p1)))
    out                (K, B, D)    MLP "dec" on z1:  p(x|z1), the likelihood of section 1
    p(z2) = N(0, I)

With log N(v; m, lv) = -1/2 sum_j [ (v_j - m_j)^2 exp(-lv_j) + lv_j + log(2 pi) ], per example:

    ll     = log p(x|z1_k)                                                         (K, B)
    kl1    = log q(z1_k|x) - log p(z1_k|z2_k)      (the middle layer, sampled)      (K, B)
    kl2    = KL(q(z2|z1_k) || N(0, I))             (the top layer, closed form)     (K, B)
    kl     = (1/K) sum_k (kl1 + kl2)               (a one-sample-per-k estimate of the
                                                    joint KL(q(z1, z2|x) || p(z1, z2)))  (B,)
    loss   = -(1/K) sum_k ll + beta * kl                                    objective "elbo"
    logw   = ll + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1)               (K, B)
    loss   = -( logsumexp_k logw - log K )                                  objective "iwae"

The batch loss is the mean over the batch. The backward runs the chain in reverse; z1 collects
four gradients (the decoder, the sampled log q(z1|x) - log p(z1|z2) term, and through q2 the top
KL and (via z2) log p(z1|z2)), and mu_q1/logvar_q1 collect theirs both directly from log q(z1|x)
and through the reparameterization of z1. Derivation: docs/derivations.md, "Two stochastic
layers".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import check_array, check_float, check_int, check_rng, check_sizes
from .distributions import (gaussian_kl_backward, gaussian_kl_forward, log_normal_backward,
                            log_normal_forward, log_standard_normal_backward,
                            log_standard_normal_forward, reparameterize_backward,
                            reparameterize_forward)
from .layers import (add_gaussian_head_params, add_mlp_params, gaussian_net_backward,
                     gaussian_net_forward, output_net_forward)
from .losses import (log_weights_backward, log_weights_forward, neg_elbo_backward,
                     neg_elbo_forward, neg_iwae_backward, neg_iwae_forward)
from .model import VAE


class HLossResult(NamedTuple):
    """What one forward pass of the HVAE computed (per example, nats). The first five fields are
    those of ``model.LossResult``, so code written for the VAE reads it unchanged."""
    loss: float              # the batch loss (mean over the batch of ``per_example``)
    per_example: np.ndarray  # (B,)
    ll: np.ndarray           # (K, B) log p(x|z1_k)
    kl: np.ndarray           # (B,) (1/K) sum_k (kl1 + kl2): the ELBO is ll.mean(0) - kl
    logw: np.ndarray | None  # (K, B) log importance weights (objective "iwae"), else None
    kl1: np.ndarray          # (K, B) log q(z1_k|x) - log p(z1_k|z2_k)
    kl2: np.ndarray          # (K, B) KL(q(z2|z1_k) || N(0, I))


def _check_pair_of_ints(name, v):
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        raise TypeError(f"{name} must be a pair of positive ints (d1, d2); got {type(v).__name__}")
    if len(v) != 2:
        raise ValueError(f"{name} must be a pair of positive ints (d1, d2); got {len(v)} values")
    return tuple(check_int(f"{name}[{i}]", s, min_value=1) for i, s in enumerate(v))


def _check_pair_of_sizes(name, v):
    if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
        raise TypeError(f"{name} must be a pair of sequences of widths, e.g. ((400,), (100,)); "
                        f"got {type(v).__name__}")
    if len(v) != 2:
        raise ValueError(f"{name} must be a pair of sequences of widths, e.g. ((400,), (100,)); "
                         f"got {len(v)} entries")
    return tuple(check_sizes(f"{name}[{i}]", s) for i, s in enumerate(v))


class HVAE(VAE):
    """VAE with two stochastic layers: p(x, z1, z2) = p(x|z1) p(z1|z2) p(z2), q = q(z1|x) q(z2|z1).

    ``latent_dims = (d1, d2)``; ``hidden_dims = (h, g)``: ``h`` the hidden widths of q1 (x -> z1),
    reversed for the decoder (z1 -> x); ``g`` those of q2 (z1 -> z2), reversed for p1 (z2 -> z1).
    Parameters: q1.*, q2.*, p1.* (each like the VAE's enc.*: W0, b0, ..., W_mu, b_mu, W_logvar,
    b_logvar) and dec.* (W0, b0, ..., W_out, b_out, and dec.logvar when learned), in that order.
    Noise ``eps`` is a pair (eps1 (K, B, d1), eps2 (K, B, d2)). The other arguments are those of
    ``VAE``. Equations: the module docstring.
    """

    model_type = "hvae"
    prior = "hierarchical"
    host_chain = True   # NumPy glue between the kernels (the per-sample log-densities)

    def __init__(self, input_dim, latent_dims=(20, 10), hidden_dims=((400,), (100,)),
                 activation="relu", likelihood="bernoulli", output_var=1.0, dtype="float64",
                 seed=0, backend="numba"):
        self.input_dim = check_int("input_dim", input_dim, min_value=1)
        self.latent_dims = _check_pair_of_ints("latent_dims", latent_dims)
        self.hidden_dims = _check_pair_of_sizes("hidden_dims", hidden_dims)
        self._init_common(activation, likelihood, output_var, dtype, seed, backend)
        self.params = self._build_params(np.random.default_rng(self._init_seed))

    @property
    def latent_dim(self) -> int:
        """d1, the size of z1: what ``encode`` returns and ``decode`` reads."""
        return self.latent_dims[0]

    @property
    def decoder_hidden_dims(self) -> tuple:
        """Hidden widths of the decoder (z1 -> x): hidden_dims[0] reversed."""
        return self.hidden_dims[0][::-1]

    def _build_params(self, rng) -> dict:
        D, (d1, d2), (h, g) = self.input_dim, self.latent_dims, self.hidden_dims
        params: dict = {}
        for prefix, fan_in, widths, d_out in (("q1", D, h, d1), ("q2", d1, g, d2),
                                               ("p1", d2, g[::-1], d1)):
            sizes = (fan_in,) + widths
            add_mlp_params(params, rng, prefix, sizes, self.dtype)
            add_gaussian_head_params(params, rng, prefix, sizes[-1], d_out, self.dtype)
        self._add_decoder_params(params, rng, (d1,) + self.decoder_hidden_dims)
        return params

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``HVAE(**config)`` rebuilds the model."""
        return dict(input_dim=self.input_dim, latent_dims=list(self.latent_dims),
                    hidden_dims=[list(h) for h in self.hidden_dims], activation=self.activation,
                    likelihood=self.likelihood, output_var=self.output_var,
                    dtype=self.dtype.name, seed=self.seed, backend=self.backend)

    # ------------------------------------------------------------------ noise and validation
    def _check_eps(self, eps, n_samples, batch):
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise TypeError(f"eps must be a pair (eps1, eps2) of arrays of shapes "
                            f"({n_samples}, {batch}, {self.latent_dims[0]}) and "
                            f"({n_samples}, {batch}, {self.latent_dims[1]}); got "
                            f"{type(eps).__name__}" + (f" of length {len(eps)}"
                                                       if isinstance(eps, (tuple, list)) else ""))
        return tuple(check_array(f"eps[{i}]", e, shape=(n_samples, batch, d), dtype=self.dtype)
                     for i, (e, d) in enumerate(zip(eps, self.latent_dims)))

    def draw_eps(self, n_samples, batch, rng):
        """Standard-normal noise of the structure ``eps`` takes: a pair
        (eps1 (n_samples, batch, d1), eps2 (n_samples, batch, d2)), eps1 drawn first."""
        n_samples = check_int("n_samples", n_samples, min_value=1)
        batch = check_int("batch", batch, min_value=1)
        rng = check_rng("rng", rng)
        return tuple(rng.standard_normal((n_samples, batch, d), dtype=self.dtype)
                     for d in self.latent_dims)

    def check_call(self, x, y, n_samples, beta, objective, free_bits):
        out = super().check_call(x, y, n_samples, beta, objective, free_bits)
        if out[-1] != 0.0:
            raise ValueError(f"free_bits must be 0 for HVAE (free bits are implemented for the "
                             f"single-layer KL only); got {free_bits}")
        return out

    # ------------------------------------------------------------------ forward and backward
    def _forward(self, p, x, y, eps, beta, objective, free_bits, *, k):
        """q1 -> z1 -> (q2 -> z2 -> p1) and dec -> the per-sample terms -> the objective.

        Returns (HLossResult, cache). Every sample of z1 has its own z2: the second layer works
        on N = K*B rows (matmul is 2-D), reparameterized as a single "sample" of N rows.
        """
        eps1, eps2 = eps
        K, B, d1 = eps1.shape
        N, d2 = K * B, eps2.shape[2]
        (h, g), act = self.hidden_dims, self._act
        mu_q1, lv_q1, q1 = gaussian_net_forward(p, "q1", len(h), x, act, k=k)            # (B, d1)
        z1, rep1 = reparameterize_forward(mu_q1, lv_q1, eps1, k=k)                       # (K, B, d1)
        z1f = z1.reshape(N, d1)
        mu_q2, lv_q2, q2 = gaussian_net_forward(p, "q2", len(g), z1f, act, k=k)          # (N, d2)
        z2, rep2 = reparameterize_forward(mu_q2, lv_q2, eps2.reshape(1, N, d2), k=k)
        z2f = z2.reshape(N, d2)
        mu_p1, lv_p1, p1 = gaussian_net_forward(p, "p1", len(g), z2f, act, k=k)          # (N, d1)
        ll, dec = self._decoder_loglik_forward(p, z1f, x, k=k)                         # (K, B)
        logq1, q1d = log_normal_forward(z1, mu_q1, lv_q1)                              # (K, B)
        logp1, p1d = log_normal_forward(z1f, mu_p1, lv_p1)                             # (N,)
        kl2, kl2c = gaussian_kl_forward(mu_q2, lv_q2, k=k)                             # (N,)
        kl1, kl2 = logq1 - logp1.reshape(K, B), kl2.reshape(K, B)
        kl = (kl1 + kl2).mean(axis=0)     # a one-sample-per-k estimate of the joint KL
        if objective == "elbo":
            loss, per_example = neg_elbo_forward(ll, kl, beta)
            logw, top = None, kl2c
        else:
            logpz2, pz2 = log_standard_normal_forward(z2f)                             # (N,)
            logq2, q2d = log_normal_forward(z2f, mu_q2, lv_q2)                         # (N,)
            logw = log_weights_forward((ll, logp1.reshape(K, B), logpz2.reshape(K, B)),
                                       (logq1, logq2.reshape(K, B)))
            loss, lk, top = neg_iwae_forward(logw, k=k)
            per_example, top = -lk, (top, pz2, q2d)
        result = HLossResult(float(loss), per_example, ll, kl, logw, kl1, kl2)
        return result, (x, beta, objective, q1, rep1, q2, rep2, p1, dec, q1d, p1d, top)

    def _backward(self, cache, *, k, need_dx):
        """The forward in reverse. The upstream gradients of the terms:
          "elbo":  dll = -1/(K B),  d kl1 = d kl2 = beta/(K B)  (kl1 = log q1 - log p1)
          "iwae":  dlogw = -(1/B) softmax_k(logw), dll = dlog p1 = dlog p(z2) = dlogw,
                   dlog q1 = dlog q2 = -dlogw
        then the top layer (z2 and q2), log p(z1|z2), the decoder, log q(z1|x), and z1's
        reparameterization back to the q1 network. z1 collects four gradients: the decoder's,
        log q(z1|x)'s, log p(z1|z2)'s and the q2 network's.
        """
        x, beta, objective, q1, rep1, q2, rep2, p1, dec, q1d, p1d, top = cache
        K, B, d1 = rep1.eps.shape
        N, d2 = K * B, rep2.eps.shape[2]
        grads: dict = {}
        if objective == "elbo":
            dll, dkl = neg_elbo_backward((K, B), beta, self.dtype, k=k)
            dkl1 = np.repeat(dkl[None, :] / K, K, axis=0)   # kl = (1/K) sum_k (kl1 + kl2)
            dlogq1, dlogp1 = dkl1, -dkl1
            dmu_q2, dlv_q2 = gaussian_kl_backward(dkl1.reshape(N), top, k=k)
            dz2 = 0.0
        else:
            lse, pz2, q2d = top
            (dll, dlogp1, dlogpz2), (dlogq1, dlogq2) = log_weights_backward(
                neg_iwae_backward(lse, k=k), 3, 2)
            dz2_q, dmu_q2, dlv_q2 = log_normal_backward(dlogq2.reshape(N), q2d)
            dz2 = log_standard_normal_backward(dlogpz2.reshape(N), pz2) + dz2_q
        # log p(z1|z2): z1 directly, and (mu_p1, logvar_p1) -> the p1 network -> z2
        dz1_p, dmu_p1, dlv_p1 = log_normal_backward(dlogp1.reshape(N), p1d)
        dz2 = dz2 + gaussian_net_backward(dmu_p1, dlv_p1, p1, "p1", grads, k=k)
        # z2 = mu_q2 + exp(logvar_q2/2) eps2, then the q2 network back to z1
        dmu_z2, dlv_z2 = reparameterize_backward(dz2.reshape(1, N, d2), rep2, k=k)
        dz1_q2 = gaussian_net_backward(dmu_q2 + dmu_z2, dlv_q2 + dlv_z2, q2, "q2", grads, k=k)
        # the decoder
        dz1_dec = self._decoder_loglik_backward(dll, dec, grads, k=k)
        # log q(z1|x): z1 directly, and mu_q1/logvar_q1 directly (summed over the K samples)
        dz1_q, dmu_q1, dlv_q1 = log_normal_backward(dlogq1, q1d)
        dz1 = dz1_q + (dz1_p + dz1_q2 + dz1_dec).reshape(K, B, d1)
        # z1 = mu_q1 + exp(logvar_q1/2) eps1, then the q1 network back to x
        dmu_z1, dlv_z1 = reparameterize_backward(dz1, rep1, k=k)
        dx_q1 = gaussian_net_backward(dmu_q1 + dmu_z1, dlv_q1 + dlv_z1, q1, "q1", grads, k=k,
                                      need_da=need_dx)
        dx = dx_q1 + self._loglik_dx(dll, dec.lik, k=k) if need_dx else None   # x feeds q1 and p(x|z1)
        return grads, dx

    # ------------------------------------------------------------------ the networks on their own
    def encode(self, x, y=None):
        """Parameters of q(z1|x): (mu_q1, logvar_q1), each (B, d1)."""
        x = self.check_x(x)
        self.check_y(y, x.shape[0])
        mu, logvar, _ = gaussian_net_forward(self.params, "q1", len(self.hidden_dims[0]), x,
                                             self._act, k=self.kernels)
        return mu, logvar

    def encode_z2(self, z1):
        """Parameters of q(z2|z1): (mu_q2, logvar_q2), each (N, d2) for z1 (N, d1)."""
        z1 = check_array("z1", z1, ndim=2, shape=(None, self.latent_dims[0]), dtype=self.dtype)
        mu, logvar, _ = gaussian_net_forward(self.params, "q2", len(self.hidden_dims[1]), z1,
                                             self._act, k=self.kernels)
        return mu, logvar

    def prior_z1(self, z2):
        """Parameters of p(z1|z2): (mu_p1, logvar_p1), each (N, d1) for z2 (N, d2)."""
        z2 = check_array("z2", z2, ndim=2, shape=(None, self.latent_dims[1]), dtype=self.dtype)
        mu, logvar, _ = gaussian_net_forward(self.params, "p1", len(self.hidden_dims[1]), z2,
                                             self._act, k=self.kernels)
        return mu, logvar

    def decoder_output(self, z, y=None):
        """The decoder's output for z1 (N, d1): logits (bernoulli) or means (gaussian), (N, D)."""
        z = check_array("z1", z, ndim=2, shape=(None, self.latent_dims[0]), dtype=self.dtype)
        self.check_y(y, z.shape[0])
        out, _ = output_net_forward(self.params, "dec", len(self.hidden_dims[0]), z, self._act,
                                    k=self.kernels)
        return out

    def decode(self, z1, y=None):
        """Mean of p(x|z1): probabilities (bernoulli) or means (gaussian), (N, D) for z1 (N, d1)."""
        return super().decode(z1, y)

    def sample(self, n, rng=None):
        """Ancestral samples down the chain: z2 ~ N(0, I), z1 ~ p(z1|z2), the decoded mean of
        p(x|z1). Shapes: -> (n, D)."""
        n = check_int("n", n, min_value=1)
        rng = self.rng if rng is None else check_rng("rng", rng)
        z2 = rng.standard_normal((n, self.latent_dims[1]), dtype=self.dtype)
        mu_p1, lv_p1 = self.prior_z1(z2)
        z1, _ = reparameterize_forward(
            mu_p1, lv_p1, rng.standard_normal((1, n, self.latent_dims[0]), dtype=self.dtype),
            k=self.kernels)
        return self.decode(z1[0])

    def elbo(self, x, n_samples=1, rng=None, y=None, eps=None):
        """Per-example ELBO (beta = 1), (B,), nats, higher is better:
        (1/K) sum_k [ log p(x|z1_k) - log q(z1_k|x) + log p(z1_k|z2_k)
                      - KL(q(z2|z1_k) || N(0, I)) ]."""
        return super().elbo(x, n_samples=n_samples, rng=rng, y=y, eps=eps)

    def elbo_samples(self, x, n_samples, rng=None, y=None):
        """The ELBO's one-sample terms, (n_samples, B): log p(x|z1_k) - kl1_k - kl2_k, both KL
        terms sampled at z1_k (see the module docstring); and the forward's HLossResult."""
        r = self.forward(x, n_samples=n_samples, rng=rng, y=y)
        return r.ll - (r.kl1 + r.kl2), r

    def log_likelihood(self, x, k=5000, rng=None, y=None, return_stderr=False, max_rows=2**14):
        """Importance-weighted estimate L_k of log p(x) per example, (B,), nats, with the
        two-layer proposal q(z1|x) q(z2|z1).

        Equation: L_k = logsumexp_i log w_i - log k,
                  log w_i = log p(x|z1_i) + log p(z1_i|z2_i) + log p(z2_i) - log q(z1_i|x)
                            - log q(z2_i|z1_i),   z1_i ~ q(z1|x), z2_i ~ q(z2|z1_i).
        With ``return_stderr`` also the Monte Carlo standard error (see ``VAE.log_likelihood``).
        """
        return super().log_likelihood(x, k=k, rng=rng, y=y, return_stderr=return_stderr,
                                      max_rows=max_rows)


def active_units_per_layer(model, x, threshold=0.01, n_samples=1000, rng=0,
                           return_variance=False, max_rows=2 ** 14):
    """Active units of each stochastic layer (Burda et al. 2016, section 5.2): (au1, au2).

    Equation: au1 = #{j : Var_x( E_q[z1_j | x] ) > threshold},  E_q[z1|x] = mu_q1(x);
              au2 = #{j : Var_x( E_q[z2_j | x] ) > threshold},
              E_q[z2|x] = E_{z1 ~ q(z1|x)}[ mu_q2(z1) ]
                        ~ (1/n) sum_i mu_q2(mu_q1(x) + exp(logvar_q1(x) / 2) eps_i),
    the inner expectation by Monte Carlo with ``n_samples`` draws eps_i ~ N(0, I) from ``rng``
    (a Generator or an int seed: the same seed gives the same counts). It is not the plug-in
    mu_q2(mu_q1(x)), which differs whenever mu_q2 is nonlinear and q(z1|x) is not a point: a
    saturating unit can vary with mu_q1 while its average over q(z1|x) barely moves.
    The Monte Carlo noise of the n-sample means m_x would add (1 - 1/B) mean_x s2_x / n to
    their variance over the B examples (s2_x the sample variance of mu_q2(z1) under q(z1|x));
    that is subtracted, so var2 = max(Var_x m_x - (1 - 1/B) mean_x s2_x / n, 0) is unbiased for
    Var_x E_q[z2|x] up to the clip at 0.
    At most ``max_rows`` rows (samples x examples) go through q2 at once. With
    ``return_variance`` also returns the variances ((d1,), (d2,)).
    """
    if not isinstance(model, HVAE):
        raise TypeError(f"model must be an HVAE; got {type(model).__name__}")
    threshold = check_float("threshold", threshold, min_value=0.0)
    n_samples = check_int("n_samples", n_samples, min_value=2)
    max_rows = check_int("max_rows", max_rows, min_value=1)
    rng = check_rng("rng", rng)
    mu1, logvar1 = model.encode(x)
    B, d1 = mu1.shape
    e_z2 = np.empty((B, model.latent_dims[1]), model.dtype)
    s2 = np.empty_like(e_z2)
    step = max(1, max_rows // n_samples)          # examples per pass
    for s in range(0, B, step):
        m, lv = mu1[s:s + step], logvar1[s:s + step]
        eps = rng.standard_normal((n_samples,) + m.shape, dtype=model.dtype)
        z1, _ = reparameterize_forward(m, lv, eps, k=model.kernels)
        mu2, _ = model.encode_z2(z1.reshape(-1, d1))
        mu2 = mu2.reshape(n_samples, m.shape[0], -1)
        e_z2[s:s + step] = mu2.mean(axis=0)
        s2[s:s + step] = mu2.var(axis=0, ddof=1)
    noise = (1.0 - 1.0 / B) * s2.mean(axis=0) / n_samples
    var1, var2 = mu1.var(axis=0), np.maximum(e_z2.var(axis=0) - noise, 0.0)
    au = (int((var1 > threshold).sum()), int((var2 > threshold).sum()))
    return (au, (var1, var2)) if return_variance else au
