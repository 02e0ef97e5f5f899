"""The VAE of Kingma & Welling (2014): wires layers and distributions; forward with caches and the
hand-written backward, written out as one chain and its reverse.

Symbols (DESIGN.md section 1): B batch, D data dimension, d latent dimension, K samples.

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

import math
from typing import NamedTuple

import numpy as np

from . import io as _io
from ._checks import (as_dtype, check_array, check_choice, check_float, check_int, check_rng,
                      check_sizes)
from .activations import ACTIVATIONS, activation_code
from .distributions import (bernoulli_loglik_backward, bernoulli_loglik_forward,
                            gaussian_kl_backward, gaussian_kl_forward, gaussian_kl_per_dim,
                            gaussian_loglik_backward, gaussian_loglik_forward,
                            log_normal_backward, log_normal_forward,
                            log_standard_normal_backward, log_standard_normal_forward,
                            reparameterize_backward, reparameterize_forward)
from .kernels import ACTIVATION_CODES, get_kernels
from .kernels.workspace import Workspace
from .layers import dense_backward, dense_forward, mlp_backward, mlp_forward
from .losses import (free_bits_kl_backward, free_bits_kl_forward, neg_elbo_backward,
                     neg_elbo_forward, neg_iwae_backward, neg_iwae_forward)

LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae")
IDENTITY = ACTIVATION_CODES["identity"]
FORMAT_VERSION = 1


# ====================================================================== parameter construction
def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int, dtype) -> np.ndarray:
    """Glorot (Xavier) uniform initialisation: W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)),
    which keeps the variance of activations and gradients roughly constant across layers."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_in, fan_out)).astype(dtype)


def add_mlp_params(params: dict, rng, prefix: str, sizes, dtype) -> None:
    """Add ``prefix.W{l}``, ``prefix.b{l}`` for consecutive widths sizes[0] -> sizes[1] -> ..."""
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"{prefix}.W{i}"] = glorot_uniform(rng, fi, fo, dtype)
        params[f"{prefix}.b{i}"] = np.zeros(fo, dtype)


def add_gaussian_head_params(params: dict, rng, prefix: str, fan_in: int, d: int, dtype) -> None:
    """Add the two linear heads ``prefix.W_mu, b_mu, W_logvar, b_logvar`` (logvar starts at 0)."""
    params[f"{prefix}.W_mu"] = glorot_uniform(rng, fan_in, d, dtype)
    params[f"{prefix}.b_mu"] = np.zeros(d, dtype)
    params[f"{prefix}.W_logvar"] = glorot_uniform(rng, fan_in, d, dtype)
    params[f"{prefix}.b_logvar"] = np.zeros(d, dtype)


def mlp_layers(params: dict, prefix: str, n: int):
    """[(W0, b0), ..., (W_{n-1}, b_{n-1})] of ``prefix``."""
    return [(params[f"{prefix}.W{i}"], params[f"{prefix}.b{i}"]) for i in range(n)]


# ====================================================================== network pieces
class GaussianNetCache(NamedTuple):
    hidden: tuple       # DenseCaches of the hidden stack
    mu: object          # DenseCache of the mu head
    logvar: object      # DenseCache of the logvar head


def gaussian_net_forward(params, prefix: str, n_hidden: int, a, act: int, *, k, ws=None):
    """An MLP with two linear heads: (mu, logvar) of a diagonal Gaussian given ``a``.

    Shapes: a (N, F_in) -> mu (N, d), logvar (N, d).
    Equation: a_l = f(a_{l-1} @ W_l + b_l);  mu = a_L @ W_mu + b_mu;  logvar = a_L @ W_logvar + b_logvar.
    """
    a, hidden = mlp_forward(a, mlp_layers(params, prefix, n_hidden), act, k=k, ws=ws)
    mu, c_mu = dense_forward(a, params[f"{prefix}.W_mu"], params[f"{prefix}.b_mu"], IDENTITY,
                             k=k, ws=ws)
    logvar, c_lv = dense_forward(a, params[f"{prefix}.W_logvar"], params[f"{prefix}.b_logvar"],
                                 IDENTITY, k=k, ws=ws)
    return mu, logvar, GaussianNetCache(hidden, c_mu, c_lv)


def gaussian_net_backward(dmu, dlogvar, cache: GaussianNetCache, prefix: str, grads: dict, *, k,
                          need_da: bool = True, ws=None):
    """Backward of ``gaussian_net_forward``: writes the prefix's gradients into ``grads`` and
    returns da (the input's gradient, or None when not needed).

    Equation: da_L = dmu @ W_mu.T + dlogvar @ W_logvar.T (both heads read a_L), then the MLP.
    """
    need_head_da = need_da or len(cache.hidden) > 0
    da_mu, grads[f"{prefix}.W_mu"], grads[f"{prefix}.b_mu"] = dense_backward(
        dmu, cache.mu, k=k, need_da=need_head_da, ws=ws)
    da_lv, grads[f"{prefix}.W_logvar"], grads[f"{prefix}.b_logvar"] = dense_backward(
        dlogvar, cache.logvar, k=k, need_da=need_head_da, ws=ws)
    da = k.add(da_mu, da_lv, ws=ws) if need_head_da else None
    da, hidden_grads = mlp_backward(da, cache.hidden, k=k, need_da=need_da, ws=ws)
    for i, (dW, db) in enumerate(hidden_grads):
        grads[f"{prefix}.W{i}"], grads[f"{prefix}.b{i}"] = dW, db
    return da


def output_net_forward(params, prefix: str, n_hidden: int, c, act: int, *, k, ws=None):
    """The decoder MLP with a linear output layer. Shapes: c (N, F_in) -> out (N, D).
    Equation: c_m = f(c_{m-1} @ W_m + b_m);  out = c_M @ W_out + b_out."""
    c, hidden = mlp_forward(c, mlp_layers(params, prefix, n_hidden), act, k=k, ws=ws)
    out, c_out = dense_forward(c, params[f"{prefix}.W_out"], params[f"{prefix}.b_out"], IDENTITY,
                               k=k, ws=ws)
    return out, (hidden, c_out)


def output_net_backward(dout, cache, prefix: str, grads: dict, *, k, ws=None):
    """Backward of ``output_net_forward``; writes the prefix's gradients, returns dc_0."""
    hidden, c_out = cache
    dc, grads[f"{prefix}.W_out"], grads[f"{prefix}.b_out"] = dense_backward(dout, c_out, k=k, ws=ws)
    dc, hidden_grads = mlp_backward(dc, hidden, k=k, ws=ws)
    for i, (dW, db) in enumerate(hidden_grads):
        grads[f"{prefix}.W{i}"], grads[f"{prefix}.b{i}"] = dW, db
    return dc


class LossResult(NamedTuple):
    """What one forward pass computed (all per example, nats)."""
    loss: float              # the batch loss: mean of ``per_example`` (with free bits, the KL
                             # part is the free-bits term instead, so it differs)
    per_example: np.ndarray  # (B,) loss per example
    ll: np.ndarray           # (K, B) log p(x|z_k)
    kl: np.ndarray           # (B,) closed-form KL(q(z|x) || N(0, I))
    logw: np.ndarray | None  # (K, B) log importance weights (objective "iwae"), else None


# ====================================================================== the model
class VAE:
    """Variational autoencoder with a diagonal-Gaussian encoder and a Bernoulli or Gaussian decoder.

    Parameters are in ``self.params`` (DESIGN.md section 2), a dict in this order:
    enc.W0, enc.b0, ..., enc.W_mu, enc.b_mu, enc.W_logvar, enc.b_logvar, dec.W0, dec.b0, ...,
    dec.W_out, dec.b_out (, dec.logvar when ``output_var="learned"``).
    Weights use Glorot-uniform initialisation and biases start at zero, drawn from ``seed``.
    """

    model_type = "vae"

    def __init__(self, input_dim, hidden_dims=(400,), latent_dim=20, activation="relu",
                 likelihood="bernoulli", output_var=1.0, dtype="float64", seed=0,
                 backend="numpy", decoder_hidden_dims=None):
        self.input_dim = check_int("input_dim", input_dim, min_value=1)
        self.hidden_dims = check_sizes("hidden_dims", hidden_dims)
        self.latent_dim = check_int("latent_dim", latent_dim, min_value=1)
        self.decoder_hidden_dims = (self.hidden_dims[::-1] if decoder_hidden_dims is None
                                    else check_sizes("decoder_hidden_dims", decoder_hidden_dims))
        self._init_common(activation, likelihood, output_var, dtype, seed, backend)
        self.params = self._build_params(np.random.default_rng(self._init_seed))

    # ------------------------------------------------------------------ construction helpers
    def _init_common(self, activation, likelihood, output_var, dtype, seed, backend):
        """Validate and store the arguments every model of the family shares."""
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self._act = activation_code(activation)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        if isinstance(output_var, str):
            if output_var != "learned":
                raise ValueError(f"output_var must be a positive number or 'learned'; got {output_var!r}")
            self.output_var = "learned"
        else:
            self.output_var = check_float("output_var", output_var, min_value=0.0, min_inclusive=False)
        self.dtype = as_dtype("dtype", dtype)
        self.seed = check_int("seed", seed, min_value=0)
        # one stream for the initial weights, another for the noise drawn when no rng is given
        init_ss, noise_ss = np.random.SeedSequence(self.seed).spawn(2)
        self._init_seed = init_ss
        self.rng = np.random.default_rng(noise_ss)
        self.backend = backend

    def _build_params(self, rng) -> dict:
        D, d = self.input_dim, self.latent_dim
        params: dict = {}
        enc = (D,) + self.hidden_dims
        add_mlp_params(params, rng, "enc", enc, self.dtype)
        add_gaussian_head_params(params, rng, "enc", enc[-1], d, self.dtype)
        dec = (d,) + self.decoder_hidden_dims
        self._add_decoder_params(params, rng, dec)
        return params

    def _add_decoder_params(self, params, rng, dec_sizes):
        """dec.W0.., dec.W_out, dec.b_out and (learned variance) dec.logvar, in DESIGN order."""
        add_mlp_params(params, rng, "dec", dec_sizes, self.dtype)
        params["dec.W_out"] = glorot_uniform(rng, dec_sizes[-1], self.input_dim, self.dtype)
        params["dec.b_out"] = np.zeros(self.input_dim, self.dtype)
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

    # ------------------------------------------------------------------ backend and dtype
    @property
    def backend(self) -> str:
        """The kernel backend: "numpy", "numba" or "cuda". Assign to switch an existing model."""
        return self._backend

    @backend.setter
    def backend(self, name):
        # validates the name (and CUDA availability); the raw kernels, since the model
        # validates its own inputs
        self._k = get_kernels(name, validate=False)
        self._backend = name

    def astype(self, dtype):
        """A copy of the model with parameters cast to ``dtype`` (e.g. float64 for gradcheck)."""
        cfg = dict(self.config, dtype=as_dtype("dtype", dtype).name)
        new = type(self)(**cfg)
        new.params = {key: v.astype(new.dtype) for key, v in self.params.items()}
        return new

    # ------------------------------------------------------------------ validation
    def _check_x(self, x, name="x"):
        x = check_array(name, x, ndim=2, shape=(None, self.input_dim), dtype=self.dtype)
        if self.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{name} must lie in [0, 1] for the bernoulli likelihood; got values "
                             f"in [{x.min():.4g}, {x.max():.4g}]")
        return x

    conditional = False   # True for models that read labels y (the CVAE)

    def _check_y(self, y, batch, name="y"):
        """Labels: refused by the unconditional models (the CVAE overrides this)."""
        if y is not None:
            raise ValueError(f"{name} must be None for {type(self).__name__} (labels are for the CVAE)")
        return None

    def _check_eps(self, eps, n_samples, batch):
        return check_array("eps", eps, shape=(n_samples, batch, self.latent_dim), dtype=self.dtype)

    def _noise(self, eps, n_samples, batch, rng):
        """The noise of one call: ``eps`` validated when given, else drawn from ``rng`` (or the
        model's own seeded stream when rng is None)."""
        if eps is not None:
            return self._check_eps(eps, n_samples, batch)
        return self.draw_eps(n_samples, batch, self.rng if rng is None else check_rng("rng", rng))

    def draw_eps(self, n_samples, batch, rng):
        """Standard-normal noise of the structure ``eps`` takes: (n_samples, batch, latent_dim)."""
        n_samples = check_int("n_samples", n_samples, min_value=1)
        batch = check_int("batch", batch, min_value=1)
        return check_rng("rng", rng).standard_normal((n_samples, batch, self.latent_dim),
                                                     dtype=self.dtype)

    def _check_call(self, x, y, n_samples, beta, objective, free_bits):
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        n_samples = check_int("n_samples", n_samples, min_value=1)
        beta = check_float("beta", beta, min_value=0.0)
        objective = check_choice("objective", objective, OBJECTIVES)
        free_bits = check_float("free_bits", free_bits, min_value=0.0)
        return x, y, n_samples, beta, objective, free_bits

    # ------------------------------------------------------------------ the likelihood p(x|z)
    def _dec_logvar(self, params=None):
        """log s2 per data dimension, (D,): the learned vector or the fixed constant (built once,
        not on every step)."""
        if self.output_var == "learned":
            return (self.params if params is None else params)["dec.logvar"]
        if getattr(self, "_fixed_logvar", None) is None:
            self._fixed_logvar = np.full(self.input_dim, math.log(self.output_var), self.dtype)
        return self._fixed_logvar

    def _loglik_forward(self, x, out, params=None, ws=None):
        if self.likelihood == "bernoulli":
            return bernoulli_loglik_forward(x, out, k=self._k, ws=ws)
        return gaussian_loglik_forward(x, out, self._dec_logvar(params), k=self._k, ws=ws)

    def _loglik_backward(self, dll, cache, grads, ws=None):
        if self.likelihood == "bernoulli":
            return bernoulli_loglik_backward(dll, cache, k=self._k, ws=ws)
        dout, dlogvar = gaussian_loglik_backward(dll, cache, k=self._k, ws=ws)
        if self.output_var == "learned":
            grads["dec.logvar"] = dlogvar
        return dout

    # ------------------------------------------------------------------ encoder/decoder inputs
    # The CVAE overrides these two to append onehot(y); the VAE passes x and z through.
    def _encoder_input(self, x, y):
        return x

    def _decoder_input(self, z2d, y, n_samples):
        return z2d

    def _latent_grad(self, dc0):
        """The gradient of z from that of the decoder's input (the CVAE drops its label columns)."""
        return dc0

    # ------------------------------------------------------------------ forward and backward
    def _loss_and_grads(self, x, y, eps, beta, objective, free_bits=0.0, need_grads=True,
                        need_dx=False, params=None, ws=None):
        """The whole chain on validated inputs: returns (LossResult, grads or None, dx or None).

        Forward: encoder -> heads -> reparameterize -> decoder -> likelihood (+ KL | + log p(z)
        - log q(z|x)) -> loss. Backward: the same chain reversed, with the gradients of mu and
        logvar collected from every term that reads them.

        ``params`` (default ``self.params``) may be another dict of the same arrays, e.g. their
        device copies during ``fit`` on the cuda backend; ``ws`` a Workspace the kernels take
        their buffers from (the results then live until the next pass that rewinds it). The
        per-example values (ll, kl, log-weights) are read on the host (``k.to_host``, the
        identity on the CPU backends); so are z, mu and logvar for the IWAE and free-bits terms.
        """
        k = self._k
        p = self.params if params is None else params
        if ws is not None:
            ws.rewind()
        K, B, d = eps.shape
        D = self.input_dim
        # ---- forward
        mu, logvar, enc_cache = gaussian_net_forward(
            p, "enc", len(self.hidden_dims), self._encoder_input(x, y), self._act, k=k, ws=ws)
        z, rep_cache = reparameterize_forward(mu, logvar, eps, k=k, ws=ws)
        # matmul is 2-D: the K samples of the batch become K*B decoder rows
        out, dec_cache = output_net_forward(
            p, "dec", len(self.decoder_hidden_dims),
            self._decoder_input(z.reshape(K * B, d), y, K), self._act, k=k, ws=ws)
        out = out.reshape(K, B, D)
        ll, ll_cache = self._loglik_forward(x, out, p, ws=ws)
        kl, kl_cache = gaussian_kl_forward(mu, logvar, k=k, ws=ws)
        ll_h, kl_h = k.to_host(ll), k.to_host(kl)
        logw = None
        if objective == "elbo":
            loss, per_example = neg_elbo_forward(ll_h, kl_h, beta)
            if free_bits > 0:
                fb_term, fb_mask = free_bits_kl_forward(
                    gaussian_kl_per_dim(k.to_host(mu), k.to_host(logvar)), free_bits)
                loss = -ll_h.mean() + beta * fb_term
        else:
            # log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), with z_k as a function of
            # (mu, logvar) through the reparameterization: the total derivative below sees all paths
            z_host = k.to_host(z)
            logpz, pz_cache = log_standard_normal_forward(z_host)
            logqz, qz_cache = log_normal_forward(z_host, k.to_host(mu), k.to_host(logvar))
            logw = ll_h + logpz - logqz
            loss, lk, lse_cache = neg_iwae_forward(logw, k=k)
            per_example = -lk
        result = LossResult(float(loss), per_example, ll_h, kl_h, logw)
        if not need_grads:
            return result, None, None

        # ---- backward
        grads: dict = {}
        dz_extra = None
        if objective == "elbo":
            dll, dkl = neg_elbo_backward(ll.shape, beta, self.dtype, ws=ws)
            dmu, dlogvar = gaussian_kl_backward(dkl, kl_cache, k=k, ws=ws)
            if free_bits > 0:
                dmu = free_bits_kl_backward(k.to_host(dmu), fb_mask)
                dlogvar = free_bits_kl_backward(k.to_host(dlogvar), fb_mask)
        else:
            dlogw = neg_iwae_backward(lse_cache, k=k)
            dll = dlogw
            dz_p = log_standard_normal_backward(dlogw, pz_cache)
            dz_q, dmu, dlogvar = log_normal_backward(-dlogw, qz_cache)
            dz_extra = dz_p + dz_q
        dout = self._loglik_backward(dll, ll_cache, grads, ws=ws)
        dc0 = output_net_backward(dout.reshape(K * B, D), dec_cache, "dec", grads, k=k, ws=ws)
        dz = self._latent_grad(dc0).reshape(K, B, d)
        if dz_extra is not None:
            dz = k.add(dz, dz_extra, ws=ws)
        dmu_r, dlogvar_r = reparameterize_backward(dz, rep_cache, k=k, ws=ws)
        dmu, dlogvar = k.add(dmu, dmu_r, ws=ws), k.add(dlogvar, dlogvar_r, ws=ws)
        dx_in = gaussian_net_backward(dmu, dlogvar, enc_cache, "enc", grads, k=k, need_da=need_dx,
                                      ws=ws)
        dx = None
        if need_dx:
            # x is read by the encoder and by the likelihood: add the likelihood's path
            dx = k.to_host(dx_in)[:, :D] + self._loglik_dx(x, k.to_host(out), dll, p)
        return result, self._ordered(grads), dx

    def _loglik_dx(self, x, out, dll, params=None):
        """d loss / d x through log p(x|z) alone: sum_k dll_k * d ll_k / dx, where
        d ll/dx = out (bernoulli logits) or -(x - out) exp(-logvar) (gaussian)."""
        if self.likelihood == "bernoulli":
            return (dll[..., None] * out).sum(axis=0)
        logvar = self._k.to_host(self._dec_logvar(params))
        return -(dll[..., None] * (x - out)).sum(axis=0) * np.exp(-logvar)

    def _ordered(self, grads: dict) -> dict:
        """A new dict with the params' keys, in the params' order."""
        return {key: grads[key] for key in self.params}

    # ------------------------------------------------------------------ public API
    def loss_and_grads(self, x, n_samples=1, beta=1.0, eps=None, rng=None, objective="elbo",
                       free_bits=0.0, y=None, workspace=None):
        """Batch loss (nats, mean over the batch) and its gradients, a new dict keyed as params.

        Shapes: x (B, D); eps (n_samples, B, latent_dim) or None (then drawn from ``rng``, or the
        model's seeded stream). ``objective`` "elbo" (beta-weighted, with optional free bits per
        latent dimension) or "iwae" (minimises -L_K; beta and free_bits unused).
        Passing ``eps`` makes the call deterministic to the last bit on one backend.
        ``workspace``: a ``scratchvae.kernels.workspace.Workspace`` to take the work arrays from (for a
        training loop of your own: no allocation after the first call of a shape); the gradient
        arrays returned then belong to it and are overwritten by the next call that uses it.
        """
        x, y, n_samples, beta, objective, free_bits = self._check_call(
            x, y, n_samples, beta, objective, free_bits)
        if workspace is not None and not isinstance(workspace, Workspace):
            raise TypeError(f"workspace must be a scratchvae.kernels.workspace.Workspace or None; got "
                            f"{type(workspace).__name__}")
        eps = self._noise(eps, n_samples, x.shape[0], rng)
        result, grads, _ = self._loss_and_grads(x, y, eps, beta, objective, free_bits,
                                                ws=workspace)
        return result.loss, grads

    def loss(self, x, n_samples=1, beta=1.0, eps=None, rng=None, objective="elbo",
             free_bits=0.0, y=None):
        """The same value as ``loss_and_grads`` without the backward pass."""
        x, y, n_samples, beta, objective, free_bits = self._check_call(
            x, y, n_samples, beta, objective, free_bits)
        eps = self._noise(eps, n_samples, x.shape[0], rng)
        return self._loss_and_grads(x, y, eps, beta, objective, free_bits, need_grads=False)[0].loss

    def forward(self, x, n_samples=1, eps=None, rng=None, objective="elbo", y=None):
        """The forward pass's per-example quantities as a ``LossResult`` (ll, kl, logw, ...)."""
        x, y, n_samples, _, objective, _ = self._check_call(x, y, n_samples, 1.0, objective, 0.0)
        eps = self._noise(eps, n_samples, x.shape[0], rng)
        return self._loss_and_grads(x, y, eps, 1.0, objective, need_grads=False)[0]

    def encode(self, x, y=None):
        """Parameters of q(z|x): (mu, logvar), each (B, latent_dim)."""
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        mu, logvar, _ = gaussian_net_forward(self.params, "enc", len(self.hidden_dims),
                                             self._encoder_input(x, y), self._act, k=self._k)
        return mu, logvar

    def _decode_out(self, z, y=None):
        z = check_array("z", z, ndim=2, shape=(None, self.latent_dim), dtype=self.dtype)
        out, _ = output_net_forward(self.params, "dec", len(self.decoder_hidden_dims),
                                    self._decoder_input(z, y, 1), self._act, k=self._k)
        return out

    def _mean_of(self, out):
        """The likelihood's mean given the decoder output: sigmoid(logits) or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            return 0.5 * np.tanh(0.5 * out) + 0.5   # sigmoid without overflow
        return out

    def decode(self, z, y=None):
        """Mean of p(x|z): probabilities (bernoulli) or means (gaussian), (N, D) for z (N, d)."""
        y = self._check_y(y, np.shape(z)[0] if np.ndim(z) else 0)
        return self._mean_of(self._decode_out(z, y))

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

    def log_weights(self, x, n_samples, rng=None, y=None, eps=None):
        """Log importance weights log p(x|z_k) + log p(z_k) - log q(z_k|x), (n_samples, B)."""
        return self.forward(x, n_samples=n_samples, eps=eps, rng=rng, objective="iwae", y=y).logw

    def log_likelihood(self, x, k=5000, rng=None, y=None, return_stderr=False, max_rows=2**14):
        """Importance-weighted estimate L_k of log p(x) per example, (B,), nats (Burda et al.).

        Equation: L_k(x) = logsumexp_i log w_i - log k,  w_i = p(x, z_i) / q(z_i|x), z_i ~ q(z|x).
        Computed in chunks of at most ``max_rows`` decoder rows (samples x examples), so memory
        stays bounded for k = 5000 on thousands of examples. With ``return_stderr`` also returns
        the Monte Carlo standard error of the estimate (delta method):
        se = sqrt( (mean(w^2) / mean(w)^2 - 1) / k ).
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        k = check_int("k", k, min_value=1)
        max_rows = check_int("max_rows", max_rows, min_value=1)
        rng = self.rng if rng is None else check_rng("rng", rng)
        B = x.shape[0]
        est = np.empty(B, self.dtype)
        se = np.empty(B, self.dtype)
        batch = max(1, min(B, max_rows // min(k, max_rows)))
        for s in range(0, B, batch):
            xb = x[s:s + batch]
            yb = None if y is None else y[s:s + batch]
            chunk = max(1, max_rows // xb.shape[0])
            logw = np.concatenate([
                self._loss_and_grads(xb, yb, self.draw_eps(min(chunk, k - i), xb.shape[0], rng),
                                     1.0, "iwae", need_grads=False)[0].logw
                for i in range(0, k, chunk)])
            lse = self._k.logsumexp(logw)
            est[s:s + batch] = lse - np.log(k)
            w = self._k.softmax(logw)        # normalised weights: mean(w^2)/mean(w)^2 = k sum w~^2
            se[s:s + batch] = np.sqrt(np.maximum(k * (w * w).sum(axis=0) - 1.0, 0.0) / k)
        return (est, se) if return_stderr else est

    # ------------------------------------------------------------------ checkpoints
    def save(self, path) -> str:
        """Write the parameters and the config to one ``.npz`` (atomically); returns its path."""
        config = {"model_type": self.model_type, "args": self.config,
                  "scratchvae_format": FORMAT_VERSION}
        return _io.save_checkpoint(path, self.params, config)

    @classmethod
    def load(cls, path):
        """Load a checkpoint written by ``save`` (no pickle). Raises ValueError if the file is
        corrupt, or was written by another model class or architecture."""
        params, config = _io.load_checkpoint(path)
        model_type = config.get("model_type")
        if model_type != cls.model_type:
            raise ValueError(f"checkpoint {path} holds a {model_type!r} model; "
                             f"{cls.__name__}.load expects {cls.model_type!r}")
        try:
            model = cls(**config["args"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path} has an invalid config: {e}") from e
        if list(params) != list(model.params):
            raise ValueError(f"checkpoint {path} has parameter keys {list(params)}; the model "
                             f"built from its config expects {list(model.params)}")
        for key, v in params.items():
            want = model.params[key]
            if v.shape != want.shape or v.dtype != want.dtype:
                raise ValueError(f"checkpoint {path}: parameter {key} has shape {v.shape} and "
                                 f"dtype {v.dtype}; expected {want.shape} {want.dtype}")
        model.params = {key: np.ascontiguousarray(v) for key, v in params.items()}
        return model

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"
