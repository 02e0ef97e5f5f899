"""FlowVAE: the VAE with a planar-flow posterior (Rezende & Mohamed 2015), amortised.

Symbols: B batch, D data dimension, d latent dimension, K samples, L flow_length, h_L the width
of the encoder's last hidden layer (D with no hidden layer).

    mu, logvar  (B, d)      a_L @ enc.W_mu + enc.b_mu,  a_L @ enc.W_logvar + enc.b_logvar
    u, w        (B, L, d)   (a_L @ enc.W_flow_u + enc.b_flow_u).reshape(B, L, d), and w alike
    b           (B, L)      a_L @ enc.W_flow_b + enc.b_flow_b
    z0          (K, B, d)   mu + exp(logvar / 2) * eps
    zL          (K, B, d)   z_i = z_{i-1} + uh_i tanh(w_i . z_{i-1} + b_i),  i = 1..L
    logdet      (K, B)      sum_i log |1 + (1 - tanh^2) w_i . uh_i|
    log q(zL | x) = log N(z0; mu, exp(logvar)) - logdet

Loss per example (minimised):
    -(1/K) sum_k [ log p(x|zL_k) + beta (log p(zL_k) - log q(zL_k|x)) ]     (objective "elbo")
    -(logsumexp_k log w_k - log K),  log w = log p(x|zL) + log p(zL) - log q (objective "iwae")
Derivation: docs/derivations.md, "Planar flows".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import check_array, check_int, check_rng
from .distributions import (flow_log_density, flow_log_q_forward, planar_flow_backward,
                            planar_flow_forward, reparameterize_backward, reparameterize_forward)
from .layers import (IDENTITY, add_mlp_params, dense_backward, dense_forward, glorot_uniform,
                     leading_columns, mlp_backward, mlp_forward, mlp_layers, put_mlp_grads)
from .losses import flow_objective_backward, flow_objective_forward
from .model import VAE

HEADS = ("mu", "logvar", "flow_u", "flow_w", "flow_b")   # the encoder's linear heads, in order


class FlowCache(NamedTuple):
    hidden: tuple     # DenseCaches of the encoder's hidden stack
    heads: tuple      # DenseCaches of the five heads, in HEADS order
    rep: object       # ReparamCache of z0 = mu + std * eps
    flow: object      # PlanarFlowCache: what the flow's backward reads
    dec: object       # the decoder's and the likelihood's caches (model.DecoderCache)
    obj: object       # the objective's cache


class FlowVAE(VAE):
    """VAE whose q(z|x) is a diagonal Gaussian pushed through ``flow_length`` planar steps whose
    parameters the encoder predicts for each example (an amortised planar flow, Rezende &
    Mohamed 2015).

    Parameters, in this order: the VAE's encoder keys (enc.W0, enc.b0, ..., enc.W_mu, enc.b_mu,
    enc.W_logvar, enc.b_logvar), then enc.W_flow_u (h_L, L*d), enc.b_flow_u (L*d,),
    enc.W_flow_w (h_L, L*d), enc.b_flow_w (L*d,), enc.W_flow_b (h_L, L), enc.b_flow_b (L,),
    then the decoder's (as the VAE's). ``flow_length = 0`` is the VAE with its KL estimated by
    sampling. The w head's bias starts at N(0, 1/d) draws rather than zero: each step divides
    by ||w||^2, which must not vanish for an input whose last hidden activations are all zero.
    ``encode`` returns (mu, logvar) of the base Gaussian; ``sample_posterior`` and
    ``posterior_log_density`` are the flow's q(z|x).
    """

    model_type = "flow"
    prior = "gaussian"
    gaussian_posterior = False   # q(z|x) is the flow's, not the base Gaussian ``encode`` returns

    def __init__(self, input_dim, hidden_dims=(400,), latent_dim=20, flow_length=4,
                 activation="relu", likelihood="bernoulli", output_var=1.0, dtype="float64",
                 seed=0, backend="numba", decoder_hidden_dims=None):
        self.flow_length = check_int("flow_length", flow_length, min_value=0)
        super().__init__(input_dim, hidden_dims=hidden_dims, latent_dim=latent_dim,
                         activation=activation, likelihood=likelihood, output_var=output_var,
                         dtype=dtype, seed=seed, backend=backend,
                         decoder_hidden_dims=decoder_hidden_dims)

    def _build_params(self, rng) -> dict:
        D, d, L = self.input_dim, self.latent_dim, self.flow_length
        params: dict = {}
        enc = (D,) + self.hidden_dims
        add_mlp_params(params, rng, "enc", enc, self.dtype)
        for head, width in zip(HEADS, (d, d, L * d, L * d, L)):
            params[f"enc.W_{head}"] = glorot_uniform(rng, enc[-1], width, self.dtype)
            params[f"enc.b_{head}"] = np.zeros(width, self.dtype)
        params["enc.b_flow_w"] = (rng.standard_normal(L * d) / np.sqrt(d)).astype(self.dtype)
        self._add_decoder_params(params, rng, (d,) + self.decoder_hidden_dims)
        return params

    @property
    def config(self) -> dict:
        return dict(super().config, flow_length=self.flow_length)

    # ------------------------------------------------------------------ the encoder's five heads
    def _encoder_forward(self, p, x, *, k):
        """a_L, then the heads: (mu, logvar (B, d), u, w (B, L, d), b (B, L), hidden, heads)."""
        B, L, d = x.shape[0], self.flow_length, self.latent_dim
        a, hidden = mlp_forward(x, mlp_layers(p, "enc", len(self.hidden_dims)), self._act, k=k)
        outs, caches = [], []
        for head in HEADS:
            y, c = dense_forward(a, p[f"enc.W_{head}"], p[f"enc.b_{head}"], IDENTITY, k=k)
            outs.append(y)
            caches.append(c)
        mu, logvar, u, w, b = outs
        # a reshape relabels the same row-major numbers (a view): (B, L*d) -> (B, L, d)
        return mu, logvar, u.reshape(B, L, d), w.reshape(B, L, d), b, hidden, tuple(caches)

    def _encoder_backward(self, dheads, hidden, heads, grads, *, k, need_dx):
        """The heads' backward (gradients (B, width) in HEADS order) and the hidden stack's:
        da_L = sum over the heads of dhead @ W_head.T (all five read a_L), then the MLP."""
        need_da = need_dx or len(hidden) > 0
        da = None
        for head, dy, c in zip(HEADS, dheads, heads):
            da_h, grads[f"enc.W_{head}"], grads[f"enc.b_{head}"] = dense_backward(
                dy, c, k=k, need_da=need_da)
            if need_da:
                da = da_h if da is None else k.add(da, da_h)
        da, hidden_grads = mlp_backward(da, hidden, k=k, need_da=need_dx)
        put_mlp_grads(grads, "enc", hidden_grads)
        return da

    # ------------------------------------------------------------------ forward and backward
    def _forward(self, p, x, y, eps, beta, objective, free_bits, *, k):
        """x -> heads -> z0 = mu + std eps -> L planar steps -> zL -> out -> log p(x|zL) -> the
        objective (log q(zL|x) = log N(z0; mu, exp(logvar)) - logdet). Returns (LossResult, cache).
        """
        if free_bits:
            raise ValueError("free_bits needs a closed-form KL per latent dimension; the "
                             "FlowVAE's KL is estimated by sampling (use free_bits=0)")
        K, B, d = eps.shape
        mu, logvar, u, w, b, hidden, heads = self._encoder_forward(p, x, k=k)
        z0, rep = reparameterize_forward(mu, logvar, eps, k=k)
        zL, logdet, flow = planar_flow_forward(z0, u, w, b, k=k)
        ll, dec = self._decoder_loglik_forward(p, zL.reshape(K * B, d), x, k=k)
        result, obj = flow_objective_forward(objective, ll, z0, zL, logdet, mu, logvar, beta, k=k)
        return result, FlowCache(hidden, heads, rep, flow, dec, obj)

    def _backward(self, cache, *, k, need_dx):
        """The forward in reverse: objective -> out -> zL -> the flow -> z0 -> (mu, logvar) and
        (u, w, b) -> the heads -> the encoder (docs/derivations.md, "Planar flows")."""
        K, B, d = cache.rep.eps.shape
        L = self.flow_length
        grads: dict = {}
        dll, dzL_obj, dlogdet, dz0_obj, dmu, dlogvar = flow_objective_backward(cache.obj, k=k)
        dc0 = self._decoder_loglik_backward(dll, cache.dec, grads, k=k)
        dzL = k.add(dc0.reshape(K, B, d), dzL_obj)
        dz0, du, dw, db = planar_flow_backward(dzL, dlogdet, cache.flow, k=k)
        dmu_z, dlogvar_z = reparameterize_backward(k.add(dz0, dz0_obj), cache.rep, k=k)
        # the objective's partials are host arrays; the kernels take them wherever they live
        dheads = (k.add(dmu, dmu_z), k.add(dlogvar, dlogvar_z),
                  du.reshape(B, L * d), dw.reshape(B, L * d), db)
        dx_enc = self._encoder_backward(dheads, cache.hidden, cache.heads, grads, k=k,
                                        need_dx=need_dx)
        dx = None
        if need_dx:   # x is read by the encoder and by the likelihood
            dx = leading_columns(dx_enc, self.input_dim, k=k) + self._loglik_dx(dll, cache.dec.lik, k=k)
        return grads, dx

    # ------------------------------------------------------------------ the posterior q(z|x)
    def sample_posterior(self, x, n_samples, rng=None, y=None):
        """Draws zL ~ q(z|x) and their log-densities log q(zL|x): (z (n, B, d), log_q (n, B)).

        The same chain as the loss: z0 = mu + std eps with eps ~ N(0, I) from ``rng`` (or the
        model's seeded stream), then the planar steps, log q by the change of variables."""
        x = self.check_x(x)
        self.check_y(y, x.shape[0])
        rng = self.rng if rng is None else check_rng("rng", rng)
        eps = self.draw_eps(n_samples, x.shape[0], rng)
        k = self.kernels
        mu, logvar, u, w, b, _, _ = self._encoder_forward(self.params, x, k=k)
        z0, _ = reparameterize_forward(mu, logvar, eps, k=k)
        zL, logdet, _ = planar_flow_forward(z0, u, w, b, k=k)
        log_q, _ = flow_log_q_forward(z0, logdet, mu, logvar, k=k)
        return zL, log_q

    def elbo_samples(self, x, n_samples, rng=None, y=None):
        """The ELBO's one-sample terms, (n_samples, B): the log weights
        log p(x|z_k) + log p(z_k) - log q(z_k|x) at z_k from the flow (the KL is sampled); and
        the forward's LossResult."""
        r = self.forward(x, n_samples=n_samples, rng=rng, y=y, objective="iwae")
        return r.logw, r

    def posterior_log_density(self, z, x, y=None):
        """log q(z_m | x_n) for every pair of a row of z (M, d) and of x (N, D): (M, N).

        Each planar step is inverted (a scalar root per step: it is monotone along w), giving
        z0; then log q(z|x) = log N(z0; mu, exp(logvar)) - sum_i logdet_i (change of variables).
        """
        x = self.check_x(x)
        self.check_y(y, x.shape[0])
        z = check_array("z", z, ndim=2, shape=(None, self.latent_dim), dtype=self.dtype)
        k = self.kernels
        mu, logvar, u, w, b, _, _ = self._encoder_forward(self.params, x, k=k)
        return flow_log_density(z, mu, logvar, u, w, b, k=k)
