"""The conditional VAE (Sohn, Lee & Yan 2015): the VAE of ``model.py`` with both networks reading
the class label, so that ``sample(n, y=3)`` draws a chosen digit.

Symbols: B batch, D data dimension, d latent dimension, K samples,
C number of classes.

    x          (B, D)      data
    y          (B,)        integer labels in [0, C)
    onehot(y)  (B, C)      one-hot rows in the model's dtype
    mu, logvar (B, d)      encoder MLP on [x, onehot(y)]             (B, D + C) -> (B, d)
    eps        (K, B, d)   N(0, I) noise
    z          (K, B, d)   mu + exp(logvar / 2) * eps
    out        (K, B, D)   decoder MLP on [z_k, onehot(y)]           (K*B, d + C) -> (K*B, D)

Model:  q(z|x, y) = N(mu, diag(exp(logvar))),  p(z) = N(0, I),  p(x|z, y) = the likelihood of
section 1 with the decoder conditioned on y. The loss is section 1's, both networks conditioned:

    loss(x, y) = -(1/K) sum_k log p(x|z_k, y) + beta * KL(q(z|x, y) || N(0, I))      ("elbo")
    loss(x, y) = -( logsumexp_k [ log p(x|z_k, y) + log p(z_k) - log q(z_k|x, y) ] - log K )
                                                                                     ("iwae")

Everything but the two inputs is the VAE's: the label columns are constants, so the backward is
the VAE's chain, and the gradient of the decoder input is sliced to its first d columns (the
label columns need no gradient). Derivation: docs/derivations.md, "Conditional VAE".
"""
from __future__ import annotations

import numbers

import numpy as np

from ._checks import check_int, check_labels, check_rng
from .layers import add_gaussian_head_params, add_mlp_params, append_columns, leading_columns
from .model import VAE


class CVAE(VAE):
    """Conditional VAE: encoder q(z|x, y) and decoder p(x|z, y) read the one-hot label.

    Parameters have the VAE's keys and order, with ``enc.W0`` of shape
    (D + C, h_1) and ``dec.W0`` of shape (d + C, g_1) (with no hidden layers, ``enc.W_mu`` and
    ``enc.W_logvar`` take D + C rows and ``dec.W_out`` takes d + C). Every method takes the labels
    ``y`` right after ``x``: an integer ndarray of shape (B,) with values in [0, n_classes). It
    defaults to None only so that a call without labels gets the clear error "CVAE needs labels
    y" rather than a bare TypeError. The other arguments are those of ``VAE``.
    """

    model_type = "cvae"
    conditional = True

    def __init__(self, input_dim, n_classes, hidden_dims=(400,), latent_dim=20, activation="relu",
                 likelihood="bernoulli", output_var=1.0, dtype="float64", seed=0,
                 backend="numba", decoder_hidden_dims=None):
        # set before VAE.__init__, which builds the parameters through _build_params
        self.n_classes = check_int("n_classes", n_classes, min_value=2)
        super().__init__(input_dim, hidden_dims=hidden_dims, latent_dim=latent_dim,
                         activation=activation, likelihood=likelihood, output_var=output_var,
                         dtype=dtype, seed=seed, backend=backend,
                         decoder_hidden_dims=decoder_hidden_dims)

    def _build_params(self, rng) -> dict:
        """The VAE's parameters with C extra input rows on the first layer of each network."""
        D, d, C = self.input_dim, self.latent_dim, self.n_classes
        params: dict = {}
        enc = (D + C,) + self.hidden_dims
        add_mlp_params(params, rng, "enc", enc, self.dtype)
        add_gaussian_head_params(params, rng, "enc", enc[-1], d, self.dtype)
        self._add_decoder_params(params, rng, (d + C,) + self.decoder_hidden_dims)
        return params

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``CVAE(**config)`` rebuilds the model."""
        cfg = super().config
        return dict(input_dim=cfg.pop("input_dim"), n_classes=self.n_classes, **cfg)

    # ------------------------------------------------------------------ labels
    def check_y(self, y, batch, name="y"):
        """Labels are required: an integer ndarray of shape (batch,) in [0, n_classes)."""
        if y is None:
            raise ValueError(f"CVAE needs labels {name}: an integer array of shape ({batch},) "
                             f"with values in [0, {self.n_classes})")
        return check_labels(name, y, self.n_classes, batch)

    def onehot(self, y):
        """One-hot rows of the labels in the model's dtype. Shapes: y (B,) -> (B, C)."""
        return np.eye(self.n_classes, dtype=self.dtype)[y]

    # The hooks of the VAE's chain: append the label columns to each network's input, and
    # take the z columns of the decoder input's gradient.
    def _encoder_input(self, x, y, *, k):
        """[x, onehot(y)], (B, D + C)."""
        return append_columns(x, self.onehot(y), k=k)

    def _decoder_input(self, z2d, y, n_samples, *, k):
        """[z_k, onehot(y)] for the K*B rows of z (sample-major, as z.reshape(K*B, d)), so the
        one-hot block is tiled K times: (K*B, d + C)."""
        return append_columns(z2d, np.tile(self.onehot(y), (n_samples, 1)), k=k)

    def _latent_grad(self, dc0, *, k):
        """The z columns of the decoder input's gradient (the label columns are not learned)."""
        return leading_columns(dc0, self.latent_dim, k=k)

    # ------------------------------------------------------------------ public API (y after x)
    def loss_and_grads(self, x, y=None, n_samples=1, beta=1.0, eps=None, rng=None, objective="elbo",
                       free_bits=0.0, params=None, return_dx=False):
        """Batch loss (nats, mean over the batch) and its gradients, a dict keyed as params.

        Shapes: x (B, D), y (B,) int, eps (n_samples, B, latent_dim) or None.
        Equation: the module docstring's loss, objective "elbo" (beta, free bits) or "iwae".
        ``params``, ``return_dx`` and the lifetime of the gradient arrays as in
        ``VAE.loss_and_grads``.
        """
        return super().loss_and_grads(x, n_samples=n_samples, beta=beta, eps=eps, rng=rng,
                                      objective=objective, free_bits=free_bits, y=y,
                                      params=params, return_dx=return_dx)

    def loss(self, x, y=None, n_samples=1, beta=1.0, eps=None, rng=None, objective="elbo",
             free_bits=0.0, params=None):
        """The same value as ``loss_and_grads`` without the backward pass."""
        return super().loss(x, n_samples=n_samples, beta=beta, eps=eps, rng=rng,
                            objective=objective, free_bits=free_bits, y=y, params=params)

    def forward(self, x, y=None, n_samples=1, eps=None, rng=None, objective="elbo", beta=1.0,
                free_bits=0.0):
        """The forward pass's per-example quantities as a ``LossResult`` (ll, kl, logw, ...)."""
        return super().forward(x, n_samples=n_samples, eps=eps, rng=rng, objective=objective, y=y,
                               beta=beta, free_bits=free_bits)

    def encode(self, x, y=None):
        """Parameters of q(z|x, y): (mu, logvar), each (B, latent_dim)."""
        return super().encode(x, y)

    def decode(self, z, y=None):
        """Mean of p(x|z, y): probabilities (bernoulli) or means (gaussian).
        Shapes: z (N, d), y (N,) -> (N, D)."""
        return super().decode(z, y)

    def sample(self, n, y=None, rng=None):
        """Decoded means of n draws z ~ N(0, I) under labels ``y``: (n, D).

        ``y`` is an int (every sample of that class), an integer array of shape (n,), or None:
        the classes in turn, y = [0, 1, ..., C-1, 0, 1, ...] (that is, arange(n) % C).
        """
        n = check_int("n", n, min_value=1)
        if y is None:
            y = np.arange(n) % self.n_classes
        elif isinstance(y, numbers.Integral) and not isinstance(y, bool):
            y = np.full(n, check_int("y", y, min_value=0, max_value=self.n_classes - 1))
        rng = self.rng if rng is None else check_rng("rng", rng)
        return self.decode(rng.standard_normal((n, self.latent_dim), dtype=self.dtype), y)

    def elbo(self, x, y=None, n_samples=1, rng=None, eps=None):
        """Per-example conditional ELBO (beta = 1), (B,), nats, higher is better:
        (1/K) sum_k log p(x|z_k, y) - KL(q(z|x, y) || N(0, I)), a lower bound on log p(x|y)."""
        return super().elbo(x, n_samples=n_samples, rng=rng, y=y, eps=eps)

    def log_weights(self, x, y=None, n_samples=1, rng=None, eps=None):
        """log p(x|z_k, y) + log p(z_k) - log q(z_k|x, y), (n_samples, B)."""
        return super().log_weights(x, n_samples, rng=rng, y=y, eps=eps)

    def log_likelihood(self, x, y=None, k=5000, rng=None, return_stderr=False, max_rows=2**14):
        """Importance-weighted estimate L_k of the conditional log p(x|y) per example, (B,), nats.

        Equation: L_k = logsumexp_i log w_i - log k, w_i = p(x|z_i, y) p(z_i) / q(z_i|x, y),
        z_i ~ q(z|x, y). With ``return_stderr`` also the Monte Carlo standard error (see
        ``VAE.log_likelihood``).
        """
        return super().log_likelihood(x, k=k, rng=rng, y=y, return_stderr=return_stderr,
                                      max_rows=max_rows)


def cvae_analogies(model, x, y):
    """Style kept, class changed: encode each input with its own label, decode under every label.

    Shapes: x (n, D), y (n,) -> grid (n, C, D), grid[i, c] = decode(mu(x_i, y_i), c), the
    likelihood's mean. The code is the posterior mean mu (no sampling), so the result is
    deterministic. Plot with ``scratchvae.viz.plot_analogies(x, grid)``.
    """
    if not isinstance(model, CVAE):
        raise TypeError(f"model must be a CVAE; got {type(model).__name__}")
    mu, _ = model.encode(x, y)
    n, C = mu.shape[0], model.n_classes
    # all n*C (code, label) pairs in one decoder call: row c*n + i is (mu_i, c)
    out = model.decode(np.tile(mu, (C, 1)), np.repeat(np.arange(C), n))
    return out.reshape(C, n, -1).transpose(1, 0, 2).copy()
