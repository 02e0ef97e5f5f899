"""The VAE of Kingma & Welling (2014): wires layers and distributions; forward with caches and the
hand-written backward, written out as one chain and its reverse.

Symbols: B batch, D data dimension, d latent dimension, K samples.

    x       (B, D)      data
    mu      (B, d)      a_L @ enc.W_mu + enc.b_mu
    logvar  (B, d)      a_L @ enc.W_logvar + enc.b_logvar
    eps     (K, B, d)   N(0, I) noise
    z       (K, B, d)   mu + exp(logvar / 2) * eps
    out     (K, B, D)   decoder output: logits (bernoulli) or means (gaussian)
    ll      (K, B)      log p(x | z_k)
    kl      (B,)        KL(q(z|x) || N(0, I))
    logw    (K, B)      log p(x|z_k) + log p(z_k) - log q(z_k|x)   (IWAE)

Loss per example (minimised):  -(1/K) sum_k ll_k + beta * kl      (objective "elbo")
                               -(logsumexp_k logw_k - log K)        (objective "iwae")
The batch loss is the mean over the batch. Derivation: docs/derivations.md.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._base import Model
from ._checks import check_array, check_bool, check_int, check_rng, check_sizes
from .distributions import log_normal_forward, reparameterize_backward, reparameterize_forward
from .layers import (add_gaussian_head_params, add_mlp_params, add_output_params,
                     gaussian_net_backward, gaussian_net_forward, leading_columns,
                     output_net_backward, output_net_forward)
from .losses import gaussian_objective_backward, gaussian_objective_forward


class DecoderCache(NamedTuple):
    dec: tuple       # the decoder network's caches
    lik: object      # the likelihood's cache


class VAE(Model):
    """Variational autoencoder with a diagonal-Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters are in ``self.params``, a dict in this order:
    enc.W0, enc.b0, ..., enc.W_mu, enc.b_mu, enc.W_logvar, enc.b_logvar, dec.W0, dec.b0, ...,
    dec.W_out, dec.b_out (, dec.logvar when ``output_var="learned"``).
    Weights use Glorot-uniform initialisation and biases start at zero, drawn from ``seed``.
    ``backend`` "numba" (the default: fused CPU kernels) or "numpy" (the readable reference),
    or "cuda"; the same math on each.
    """

    model_type = "vae"
    gaussian_posterior = True   # q(z|x) is the diagonal Gaussian that ``encode`` returns

    def __init__(self, input_dim, hidden_dims=(400,), latent_dim=20, activation="relu",
                 likelihood="bernoulli", output_var=1.0, dtype="float64", seed=0,
                 backend="numba", decoder_hidden_dims=None):
        self.input_dim = check_int("input_dim", input_dim, min_value=1)
        self.hidden_dims = check_sizes("hidden_dims", hidden_dims)
        self.latent_dim = check_int("latent_dim", latent_dim, min_value=1)
        self.decoder_hidden_dims = (self.hidden_dims[::-1] if decoder_hidden_dims is None
                                    else check_sizes("decoder_hidden_dims", decoder_hidden_dims))
        self._init_common(activation, likelihood, output_var, dtype, seed, backend)
        self.params = self._build_params(np.random.default_rng(self._init_seed))

    def _build_params(self, rng) -> dict:
        D, d = self.input_dim, self.latent_dim
        params: dict = {}
        enc = (D,) + self.hidden_dims
        add_mlp_params(params, rng, "enc", enc, self.dtype)
        add_gaussian_head_params(params, rng, "enc", enc[-1], d, self.dtype)
        self._add_decoder_params(params, rng, (d,) + self.decoder_hidden_dims)
        return params

    def _add_decoder_params(self, params, rng, dec_sizes):
        """dec.W0.., dec.W_out, dec.b_out and (learned variance) dec.logvar, in that order."""
        add_mlp_params(params, rng, "dec", dec_sizes, self.dtype)
        add_output_params(params, rng, "dec", dec_sizes[-1], self.input_dim, self.dtype)
        if self.likelihood == "gaussian" and self.output_var == "learned":
            params["dec.logvar"] = np.zeros(self.input_dim, self.dtype)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``type(self)(**config)`` rebuilds the model."""
        return dict(input_dim=self.input_dim, hidden_dims=list(self.hidden_dims),
                    latent_dim=self.latent_dim, activation=self.activation,
                    likelihood=self.likelihood, output_var=self.output_var,
                    dtype=self.dtype.name, seed=self.seed, backend=self.backend,
                    decoder_hidden_dims=list(self.decoder_hidden_dims))

    # ------------------------------------------------------------------ the networks' inputs
    # The CVAE overrides these three to append onehot(y); the VAE passes x and z through.
    def _encoder_input(self, x, y, *, k):
        return x

    def _decoder_input(self, z2d, y, n_samples, *, k):
        return z2d

    def _latent_grad(self, dc0, *, k):
        """The gradient of z from that of the decoder's input (the CVAE drops its label columns)."""
        return dc0

    # ------------------------------------------------------------------ forward and backward
    def _decoder_loglik_forward(self, p, c, x, *, k):
        """The decoder and the likelihood: c (K*B, F) -> out (K, B, D) -> ll = log p(x|z) (K, B),
        the K samples of each example as K*B decoder rows. Returns (ll, DecoderCache)."""
        K, B = c.shape[0] // x.shape[0], x.shape[0]
        out, dec = output_net_forward(p, "dec", len(self.decoder_hidden_dims), c, self._act, k=k)
        ll, lik = self._loglik_forward(x, out.reshape(K, B, self.input_dim), p, k=k)
        return ll, DecoderCache(dec, lik)

    def _decoder_loglik_backward(self, dll, cache, grads, *, k):
        """Its reverse: dll (K, B) -> d out -> dc (K*B, F), the decoder's (and a learned
        dec.logvar's) gradients written into ``grads``."""
        K, B = dll.shape
        dout = self._loglik_backward(dll, cache.lik, grads, k=k)
        return output_net_backward(dout.reshape(K * B, self.input_dim), cache.dec, "dec", grads,
                                   k=k)

    def _forward(self, p, x, y, eps, beta, objective, free_bits, *, k):
        """x -> (mu, logvar) -> z = mu + exp(logvar/2) eps -> out -> log p(x|z) -> the objective.

        Returns (LossResult, cache). The K samples of the batch become K*B decoder rows,
        because matmul is 2-D.
        """
        K, B, d = eps.shape
        mu, logvar, enc = gaussian_net_forward(p, "enc", len(self.hidden_dims),
                                               self._encoder_input(x, y, k=k), self._act, k=k)
        z, rep = reparameterize_forward(mu, logvar, eps, k=k)
        ll, dec = self._decoder_loglik_forward(
            p, self._decoder_input(z.reshape(K * B, d), y, K, k=k), x, k=k)
        result, obj = gaussian_objective_forward(objective, ll, z, mu, logvar, beta, free_bits,
                                                 k=k)
        return result, (enc, rep, dec, obj)

    def _backward(self, cache, *, k, need_dx):
        """The forward in reverse: the objective -> out -> z -> (mu, logvar) -> the encoder.

        mu and logvar collect their gradients from the objective (the KL, or log q(z|x)) and
        through z; z collects the decoder's and (IWAE) the log-weights' own.
        """
        enc, rep, dec, obj = cache
        K, B, d = rep.eps.shape
        grads: dict = {}
        dll, dz_obj, dmu, dlogvar = gaussian_objective_backward(obj, k=k)
        dc0 = self._decoder_loglik_backward(dll, dec, grads, k=k)
        dz = self._latent_grad(dc0, k=k).reshape(K, B, d)
        if dz_obj is not None:
            dz = k.add(dz, dz_obj)
        dmu_z, dlogvar_z = reparameterize_backward(dz, rep, k=k)
        dx_enc = gaussian_net_backward(k.add(dmu, dmu_z), k.add(dlogvar, dlogvar_z), enc, "enc",
                                       grads, k=k, need_da=need_dx)
        dx = None
        if need_dx:   # x is read by the encoder and by the likelihood
            dx = leading_columns(dx_enc, self.input_dim, k=k) + self._loglik_dx(dll, dec.lik, k=k)
        return grads, dx

    # ------------------------------------------------------------------ the networks on their own
    def encode(self, x, y=None):
        """Parameters of q(z|x): (mu, logvar), each (B, latent_dim)."""
        x = self.check_x(x)
        y = self.check_y(y, x.shape[0])
        k = self.kernels
        mu, logvar, _ = gaussian_net_forward(self.params, "enc", len(self.hidden_dims),
                                             self._encoder_input(x, y, k=k), self._act, k=k)
        return mu, logvar

    def decoder_output(self, z, y=None):
        """The decoder's output for latents z (N, latent_dim): logits (bernoulli) or means
        (gaussian), (N, D)."""
        z = check_array("z", z, ndim=2, shape=(None, self.latent_dim), dtype=self.dtype)
        y = self.check_y(y, z.shape[0])
        k = self.kernels
        out, _ = output_net_forward(self.params, "dec", len(self.decoder_hidden_dims),
                                    self._decoder_input(z, y, 1, k=k), self._act, k=k)
        return out

    def loglik_given_z(self, x, z, y=None, need_dz=False):
        """log p(x|z) of the decoder at K latents per example and, with ``need_dz``, its gradient
        in z by the decoder's backward (what the gradient-estimator studies differentiate).

        Shapes: x (B, D), z (K, B, latent_dim) -> ll (K, B) [, dz (K, B, latent_dim)].
        Equation: ll_kb = log p(x_b | dec(z_kb));  dz_kb = d ll_kb / d z_kb (dll = 1, then the
        likelihood's and the decoder MLP's backward; a CVAE's label columns are not returned).
        """
        x = self.check_x(x)
        y = self.check_y(y, x.shape[0])
        z = check_array("z", z, ndim=3, shape=(None, x.shape[0], self.latent_dim), dtype=self.dtype)
        need_dz = check_bool("need_dz", need_dz)
        K, B, d = z.shape
        k, p = self.kernels, self.params
        ll, dec = self._decoder_loglik_forward(
            p, self._decoder_input(z.reshape(K * B, d), y, K, k=k), x, k=k)
        if not need_dz:
            return ll
        unused: dict = {}   # the parameter gradients the backward also produces are not needed
        dc0 = self._decoder_loglik_backward(np.ones((K, B), self.dtype), dec, unused, k=k)
        return ll, self._latent_grad(dc0, k=k).reshape(K, B, d)

    def decode(self, z, y=None):
        """Mean of p(x|z): probabilities (bernoulli) or means (gaussian), (N, D) for z (N, d)."""
        return self._mean_of(self.decoder_output(z, y))

    def sample(self, n, rng=None):
        """Decoded means of n draws z ~ N(0, I): (n, D)."""
        n = check_int("n", n, min_value=1)
        rng = self.rng if rng is None else check_rng("rng", rng)
        return self.decode(rng.standard_normal((n, self.latent_dim), dtype=self.dtype))

    def elbo(self, x, n_samples=1, rng=None, y=None, eps=None):
        """Per-example ELBO (beta = 1), (B,), nats, higher is better:
        (1/K) sum_k log p(x|z_k) - KL(q(z|x) || N(0, I))."""
        r = self.forward(x, n_samples=n_samples, eps=eps, rng=rng, y=y)
        return r.ll.mean(axis=0) - r.kl

    def elbo_samples(self, x, n_samples, rng=None, y=None):
        """The ELBO's one-sample terms, (n_samples, B), whose mean over k is ``elbo``:
        log p(x|z_k) - KL(q(z|x) || N(0, I)) with the closed-form KL; and the forward's
        LossResult. (The HVAE and the FlowVAE, whose KL is sampled, say theirs.)"""
        r = self.forward(x, n_samples=n_samples, rng=rng, y=y)
        return r.ll - r.kl[None, :], r

    def log_weights(self, x, n_samples, rng=None, y=None, eps=None):
        """Log importance weights log p(x|z_k) + log p(z_k) - log q(z_k|x), (n_samples, B)."""
        return self.forward(x, n_samples=n_samples, eps=eps, rng=rng, objective="iwae", y=y).logw

    # ------------------------------------------------------------------ the posterior q(z|x)
    def sample_posterior(self, x, n_samples=1, rng=None, y=None):
        """Draws z ~ q(z|x) with their log-densities: z (n_samples, B, d), log_q (n_samples, B).

        Equation: z = mu + exp(logvar / 2) * eps;  log_q = log N(z; mu, diag(exp(logvar))).
        """
        mu, logvar = self.encode(x, y=y)
        eps = self.draw_eps(n_samples, mu.shape[0], self.rng if rng is None else rng)
        z, _ = reparameterize_forward(mu, logvar, eps, k=self.kernels)
        return z, log_normal_forward(z, mu, logvar)[0]

    def posterior_log_density(self, z, x, y=None, max_elements=2 ** 22):
        """log q(z_m | x_n) for every pair of rows: z (M, d), x (N, D) -> (M, N).

        Equation: log N(z_m; mu_n, diag(exp(logvar_n))), computed in blocks of z rows so that at
        most ``max_elements`` (rows x N x d) numbers are held at once.
        """
        z = check_array("z", z, ndim=2, shape=(None, self.latent_dim), dtype=self.dtype)
        mu, logvar = self.encode(x, y=y)
        step = max(1, max_elements // (mu.shape[0] * self.latent_dim))
        return np.concatenate([log_normal_forward(z[s:s + step, None, :], mu[None], logvar[None])[0]
                               for s in range(0, z.shape[0], step)])

    def log_likelihood(self, x, k=5000, rng=None, y=None, return_stderr=False, max_rows=2**14):
        """Importance-weighted estimate L_k of log p(x) per example, (B,), nats (Burda et al.):
        ``scratchvae.evaluate.iw_log_likelihood`` (the one definition; see it for the equation,
        the chunking and the standard errors). With ``return_stderr`` also the delta-method
        standard error, which understates the spread of heavy-tailed weights
        (``iw_log_likelihood(..., stderr="batch_means")`` measures it instead).
        """
        from .evaluate import iw_log_likelihood   # evaluate sits above the model: at call time
        est, se = iw_log_likelihood(self, x, k=k, rng=rng, y=y, max_rows=max_rows)
        return (est, se) if return_stderr else est
