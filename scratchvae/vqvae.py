"""The vector-quantised VAE of van den Oord et al. (2017): a discrete latent of m slots, each one
of C code vectors, learnt with the straight-through estimator.

Symbols: B batch, D data dimension, m = n_latents slots, e = code_dim, C = n_codes, N = B m.

    z_e       (N, e)    reshape(a_L @ enc.W_e + enc.b_e, (B m, e)): one row per slot
    codebook  (C, e)    the code vectors (a parameter)
    codes     (B, m)    k_bj = argmin_c ||z_e[b, j] - codebook[c]||^2, ties to the smallest c
    z_q       (N, e)    codebook[k]; the decoder reads reshape(z_q, (B, m e))
    out       (B, D)    decoder output: logits (bernoulli) or means (gaussian)
    ll        (1, B)    log p(x | z_q) (one "sample": the encoder is deterministic)
    d2        (N,)      ||z_e[b, j] - z_q[b, j]||^2, row b m + j

Loss per example (minimised), w = 1 for codebook_update="gradient" and 0 for "ema":

    loss(x) = -ll + w sum_j ||sg[z_e] - z_q||^2 + commitment sum_j ||z_e - sg[z_q]||^2

The batch loss is the mean over the batch. Gradients: the straight-through estimator (the
decoder's input gradient is copied to z_e), the commitment term into z_e, the codebook term
into the codebook rows. Derivation: docs/derivations.md, "VQ-VAE".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import quantize
from ._base import Model
from ._checks import check_choice, check_float, check_int, check_rng, check_sizes
from .code_prior import CodePrior, check_codes
from .kernels import ACTIVATION_CODES
from .layers import (add_mlp_params, add_output_params, dense_backward, dense_forward,
                     glorot_uniform, mlp_backward, mlp_forward, mlp_layers, output_net_backward,
                     output_net_forward, put_mlp_grads)
from .losses import vq_objective_backward, vq_objective_forward

IDENTITY = ACTIVATION_CODES["identity"]
CODEBOOK_UPDATES = ("gradient", "ema")
PRIOR_KINDS = ("categorical", "markov")


class VQResult(NamedTuple):
    """What one forward pass computed (per example, nats, on the host); the first five fields
    are those of ``losses.LossResult``."""
    loss: float               # the batch loss: mean of ``per_example``
    per_example: np.ndarray   # (B,)
    ll: np.ndarray            # (1, B) log p(x | z_q) (one "sample": the encoder is deterministic)
    kl: np.ndarray            # (B,) m log C: the one-hot posterior's KL to the uniform prior
    logw: None                # (no importance weights)
    d2: np.ndarray            # (B,) sum_j ||z_e[b, j] - z_q[b, j]||^2 (either squared term's value)
    codes: np.ndarray         # (B, m) int64


class VQVAE(Model):
    """Vector-quantised VAE: an MLP encoder to m slots of size e, nearest-code quantisation
    against a learnt codebook of C codes, and the VAE's decoder on the m e quantised numbers.

    Parameters (``self.params``, in this order): enc.W0, enc.b0, ..., enc.W_e (h_L, m e),
    enc.b_e (m e,), codebook (C, e), dec.W0 (m e, g_1), dec.b0, ..., dec.W_out, dec.b_out
    (, dec.logvar). Weights Glorot-uniform, biases zero, the codebook U(-1/C, 1/C), from ``seed``.

    ``codebook_update="gradient"`` learns the codebook from the codebook term's gradient;
    ``"ema"`` drops that term and moves each code to the exponential moving average (decay
    ``ema_decay``) of the encoder outputs assigned to it, after every optimizer step of ``fit``
    (``after_step``). ``restart_after=N`` re-initialises every code unused for N steps to a
    random encoder output of the current batch. The prior over codes is uniform until
    ``fit_prior`` fits one to training codes.
    """

    model_type = "vqvae"
    prior = "categorical"

    def __init__(self, input_dim, hidden_dims=(400,), n_latents=8, code_dim=4, n_codes=32,
                 commitment=0.25, codebook_update="gradient", ema_decay=0.99, restart_after=None,
                 activation="relu", likelihood="bernoulli", output_var=1.0, dtype="float64",
                 seed=0, backend="numba", decoder_hidden_dims=None):
        self.input_dim = check_int("input_dim", input_dim, min_value=1)
        self.hidden_dims = check_sizes("hidden_dims", hidden_dims)
        self.n_latents = check_int("n_latents", n_latents, min_value=1)
        self.code_dim = check_int("code_dim", code_dim, min_value=1)
        self.n_codes = check_int("n_codes", n_codes, min_value=1)
        self.commitment = check_float("commitment", commitment, min_value=0.0)
        self.codebook_update = check_choice("codebook_update", codebook_update, CODEBOOK_UPDATES)
        self.ema_decay = check_float("ema_decay", ema_decay, min_value=0.0, max_value=1.0,
                                     min_inclusive=False, max_inclusive=False)
        self.restart_after = (None if restart_after is None
                              else check_int("restart_after", restart_after, min_value=1))
        self.decoder_hidden_dims = (self.hidden_dims[::-1] if decoder_hidden_dims is None
                                    else check_sizes("decoder_hidden_dims", decoder_hidden_dims))
        self._init_common(activation, likelihood, output_var, dtype, seed, backend)
        self.params = self._build_params(np.random.default_rng(self._init_seed))
        self.code_prior = CodePrior("uniform", self.n_latents, self.n_codes)
        self._reset_training_state()

    @property
    def latent_dim(self) -> int:
        """Numbers the decoder reads: m e (the quantised slots, flattened)."""
        return self.n_latents * self.code_dim

    def _build_params(self, rng) -> dict:
        m_e, C = self.latent_dim, self.n_codes
        params: dict = {}
        enc = (self.input_dim,) + self.hidden_dims
        add_mlp_params(params, rng, "enc", enc, self.dtype)
        params["enc.W_e"] = glorot_uniform(rng, enc[-1], m_e, self.dtype)
        params["enc.b_e"] = np.zeros(m_e, self.dtype)
        # small codes around 0, as in common VQ-VAE implementations: the encoder's outputs at
        # initialisation spread around them
        params["codebook"] = rng.uniform(-1.0 / C, 1.0 / C, (C, self.code_dim)).astype(self.dtype)
        dec = (m_e,) + self.decoder_hidden_dims
        add_mlp_params(params, rng, "dec", dec, self.dtype)
        add_output_params(params, rng, "dec", dec[-1], self.input_dim, self.dtype)
        if self.likelihood == "gaussian" and self.output_var == "learned":
            params["dec.logvar"] = np.zeros(self.input_dim, self.dtype)
        return params

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``type(self)(**config)`` rebuilds the model."""
        return dict(input_dim=self.input_dim, hidden_dims=list(self.hidden_dims),
                    n_latents=self.n_latents, code_dim=self.code_dim, n_codes=self.n_codes,
                    commitment=self.commitment, codebook_update=self.codebook_update,
                    ema_decay=self.ema_decay, restart_after=self.restart_after,
                    activation=self.activation, likelihood=self.likelihood,
                    output_var=self.output_var, dtype=self.dtype.name, seed=self.seed,
                    backend=self.backend, decoder_hidden_dims=list(self.decoder_hidden_dims))

    # ------------------------------------------------------------------ training state
    def _reset_training_state(self):
        """What training carries between steps besides the parameters: the EMA statistics
        (made from the codebook at the first EMA step), steps since each code was last used,
        the current epoch's code counts, and the last step's quantiser cache and counts."""
        self._ema = None
        self._idle = np.zeros(self.n_codes, np.int64)
        self._epoch_counts = np.zeros(self.n_codes)
        self._last_step = None
        self._restart_rng = np.random.default_rng(np.random.SeedSequence(self.seed).spawn(3)[2])

    @property
    def _codebook_weight(self) -> float:
        """w of the codebook term: 1 when the codebook learns from its gradient, 0 with EMA."""
        return 1.0 if self.codebook_update == "gradient" else 0.0

    # ------------------------------------------------------------------ the chain
    def _forward(self, p, x, y, eps, beta, objective, free_bits, *, k):
        """x -> z_e rows -> nearest codes -> z_q -> decoder -> log p(x|z_q), with the codebook
        and commitment terms. Returns (VQResult, cache)."""
        return self._chain_forward(p, x, k=k)

    def _encoder_forward(self, p, x, *, k):
        """x -> z_e (B, m e): the encoder MLP and its linear head. Returns (z_e, enc, head)."""
        a, enc = mlp_forward(x, mlp_layers(p, "enc", len(self.hidden_dims)), self._act, k=k)
        z_e, head = dense_forward(a, p["enc.W_e"], p["enc.b_e"], IDENTITY, k=k)
        return z_e, enc, head

    def _chain_forward(self, p, x, *, k, frozen=None):
        """The forward of ``_forward``; with ``frozen`` (a ``quantize.Frozen``), the forward of
        the smooth surrogate instead: codes and stop-gradient values held fixed."""
        B = x.shape[0]
        m, e = self.n_latents, self.code_dim
        z_e, enc, head = self._encoder_forward(p, x, k=k)
        if frozen is None:
            z_q, idx, d2, quant = quantize.quantize_forward(z_e.reshape(B * m, e), p["codebook"], k=k)
            code = commit = d2          # both squared terms have the value ||z_e - z_q||^2
        else:
            z_q, code, commit = quantize.surrogate_forward(z_e.reshape(B * m, e), p["codebook"],
                                                           frozen, k=k)
            idx, quant = frozen.idx, None
        out, dec = output_net_forward(p, "dec", len(self.decoder_hidden_dims),
                                      z_q.reshape(B, m * e), self._act, k=k)
        # the likelihood kernels take (K, B, D): one "sample", the encoder being deterministic
        ll, lik = self._loglik_forward(x, out.reshape(1, B, self.input_dim), p, k=k)
        (loss, per_example, ll_h, d2_b), obj = vq_objective_forward(
            ll, code, commit, m, self._codebook_weight, self.commitment, k=k)
        kl = np.full(B, m * np.log(self.n_codes), self.dtype)
        result = VQResult(loss, per_example, ll_h, kl, None, d2_b,
                          quantize.host_rows(idx, k=k).reshape(B, m))
        return result, (enc, head, quant, dec, lik, obj)

    def _backward(self, cache, *, k, need_dx):
        """The straight-through backward: the likelihood -> decoder -> dz_q, copied to z_e and
        joined by the commitment term's gradient; the codebook term's gradient scattered into
        the codebook rows; then the encoder head and hidden stack. No input gradient (the
        quantiser has none)."""
        enc, head, quant, dec, lik, obj = cache
        B, m, e = obj.batch, self.n_latents, self.code_dim
        if need_dx:
            raise ValueError("return_dx is not available for a VQVAE: the quantiser has no "
                             "gradient with respect to x")
        grads: dict = {}
        dll, dd_code, dd_commit = vq_objective_backward(obj, k=k)
        dout = self._loglik_backward(dll, lik, grads, k=k)
        dz_q = output_net_backward(dout.reshape(B, self.input_dim), dec, "dec", grads, k=k)
        dz_e, grads["codebook"], counts = quantize.quantize_backward(
            dz_q.reshape(B * m, e), dd_commit, dd_code, quant, k=k)
        da, grads["enc.W_e"], grads["enc.b_e"] = dense_backward(
            dz_e.reshape(B, m * e), head, k=k, need_da=len(enc) > 0)
        _, hidden_grads = mlp_backward(da, enc, k=k, need_da=False)
        put_mlp_grads(grads, "enc", hidden_grads)
        # what after_step reads: valid until the next loss_and_grads (the same rule as grads)
        self._last_step = (quant, counts)
        return grads, None

    # ------------------------------------------------------------------ validation
    def check_call(self, x, y, n_samples, beta, objective, free_bits):
        """As the base's, with the options of the Gaussian models refused unless at their
        defaults (fit passes them to every model; the VQ-VAE has no noise, no KL to weight, one
        objective). Returns (x, None, 1, 1.0, "elbo", 0.0)."""
        x = self.check_x(x)
        self.check_y(y, x.shape[0])
        if check_int("n_samples", n_samples, min_value=1) != 1:
            raise ValueError(f"n_samples must be 1 for VQVAE (its encoder is deterministic); got {n_samples}")
        if check_float("beta", beta, min_value=0.0) != 1.0:
            raise ValueError(f"beta must be 1 for VQVAE (its KL to the uniform prior is the constant "
                             f"m log C, with no gradient to weight); got {beta}")
        if check_choice("objective", objective, ("elbo", "iwae")) != "elbo":
            raise ValueError("objective must be 'elbo' for VQVAE")
        if check_float("free_bits", free_bits, min_value=0.0) != 0.0:
            raise ValueError(f"free_bits must be 0 for VQVAE; got {free_bits}")
        return x, None, 1, 1.0, "elbo", 0.0

    def _check_eps(self, eps, n_samples, batch):
        raise ValueError("eps must be None for VQVAE: the model has no noise (draw_eps returns None)")

    def draw_eps(self, n_samples, batch, rng):
        """The VQ-VAE has no noise: None (the structure its ``eps`` takes)."""
        return None

    def check_codes(self, codes, name="codes") -> np.ndarray:
        """codes as a C-contiguous (B, m) int64 array of values in [0, C), else ValueError/TypeError."""
        return check_codes(name, codes, self.n_latents, self.n_codes)

    # ------------------------------------------------------------------ public API
    # loss_and_grads, loss and forward are the base class's: deterministic, no eps.
    def straight_through_surrogate(self, x):
        """The smooth function S(params) whose exact gradient ``loss_and_grads(x)`` returns at the
        current parameters: the loss with the codes and both stop-gradient values frozen at
        their current values (docs/derivations.md, "VQ-VAE"). For gradient checks:
        ``sv.check_gradients(model.straight_through_surrogate(x), model.params, grads)``."""
        x = self.check_x(x)
        k = self.kernels
        _, (_, _, quant, _, _, _) = self._chain_forward(self.params, x, k=k)
        frozen = quantize.freeze(quant, k=k)
        return lambda params: self._chain_forward(params, x, k=k, frozen=frozen)[0].loss

    def encode(self, x):
        """The codes of x: (B, m) int64, each the nearest code of its slot (ties: the smallest).
        The encoder and the nearest-code search only (no decoder pass)."""
        x = self.check_x(x)
        k, B = self.kernels, x.shape[0]
        z_e, _, _ = self._encoder_forward(self.params, x, k=k)
        idx = k.vq_assign(z_e.reshape(B * self.n_latents, self.code_dim), self.params["codebook"])
        return quantize.host_rows(idx, k=k).reshape(B, self.n_latents)

    def decode(self, codes):
        """Mean of p(x | z_q(codes)): probabilities (bernoulli) or means (gaussian), (B, D)."""
        codes = self.check_codes(codes)
        k = self.kernels
        z_q = k.gather_fwd(self.params["codebook"], codes.reshape(-1))
        out, _ = output_net_forward(self.params, "dec", len(self.decoder_hidden_dims),
                                    z_q.reshape(codes.shape[0], self.latent_dim), self._act, k=k)
        return self._mean_of(out)

    def reconstruction_log_likelihood(self, x):
        """log p(x | z_q(x)) per example, (B,), nats."""
        return self.forward(x).ll[0]

    def elbo(self, x, n_samples=1, rng=None, y=None, eps=None, prior="uniform"):
        """The bound on log p(x) per example, (B,), nats (higher is better):
        log p(x | z_q(x)) + log pi(codes(x)), with pi uniform (-m log C) or, with
        ``prior="fitted"``, the prior ``fit_prior`` fitted. (``rng`` is unused: no noise.)"""
        prior = check_choice("prior", prior, ("uniform", "fitted"))
        r = self.forward(x, n_samples=n_samples, eps=eps, y=y)
        if prior == "uniform":
            return r.ll[0] - r.kl
        if self.code_prior.kind == "uniform":
            raise ValueError("prior='fitted' needs a fitted prior over codes: call fit_prior first")
        return r.ll[0] + self.code_prior.log_prob(r.codes)

    def sample(self, n, rng=None):
        """Decoded means of n code vectors drawn from the prior over codes: (n, D)."""
        n = check_int("n", n, min_value=1)
        rng = self.rng if rng is None else check_rng("rng", rng)
        return self.decode(self.code_prior.sample(n, rng))

    @property
    def prior_kind(self) -> str:
        """The prior over codes in use: "uniform", "categorical" or "markov"."""
        return self.code_prior.kind

    def fit_prior(self, x, kind="auto", x_val=None, alpha=1.0) -> dict:
        """Fit a prior over codes to the codes of x (B, D); returns {kind: held-out -log pi},
        the mean over x_val's codes (over x's without x_val), for each kind tried.

        kind "categorical" (independent per slot), "markov" (first-order autoregressive over
        the slots) or "auto" (both; keeps the one with the lower held-out -log pi)."""
        kind = check_choice("kind", kind, ("auto",) + PRIOR_KINDS)
        alpha = check_float("alpha", alpha, min_value=0.0, min_inclusive=False)
        codes = self.encode(x)
        held = codes if x_val is None else self.encode(x_val)
        scores, fitted = {}, {}
        for kd in (PRIOR_KINDS if kind == "auto" else (kind,)):
            fitted[kd] = CodePrior.fit(kd, codes, self.n_codes, alpha=alpha)
            scores[kd] = float(-fitted[kd].log_prob(held).mean())
        self.code_prior = fitted[min(scores, key=scores.get)]
        return scores

    # ------------------------------------------------------------------ codebook diagnostics
    def codebook_usage(self, x) -> dict:
        """Usage of the codebook on x: {"counts" (C,), "perplexity", "usage", "dead_codes"}."""
        counts = np.bincount(self.encode(x).reshape(-1), minlength=self.n_codes).astype(np.float64)
        return dict(quantize.usage_stats(counts), counts=counts)

    def after_step(self, params=None):
        """Called by ``fit`` after each optimizer step (a training loop of your own calls it
        after ``opt.step``): the EMA codebook update, the usage counts of the epoch, and the
        dead-code restarts, from the assignments of the last ``loss_and_grads``. ``params``:
        the dict the step updated (fit's device copies on the cuda backend)."""
        if self._last_step is None:
            return
        cache, counts = self._last_step
        self._last_step = None
        p = self.params if params is None else params
        k = self.kernels
        counts_h = quantize.code_counts(counts, k=k)
        self._epoch_counts += counts_h
        self._idle = np.where(counts_h > 0, 0, self._idle + 1)
        if self.codebook_update == "ema":
            if self._ema is None:
                self._ema = quantize.ema_init(p["codebook"], k=k)
            quantize.ema_update(self._ema, p["codebook"], cache, counts, self.ema_decay, k=k)
        if self.restart_after is not None:
            quantize.restart_dead_codes(p["codebook"], self._idle, self.restart_after, cache,
                                        self._restart_rng, k=k, ema=self._ema)

    def history_terms(self, x) -> dict:
        """The entries ``fit`` records at the end of an epoch, x the validation data:
        val_loss (the mean loss), recon (mean -log p(x|z_q)), kl (m log C, the one-hot
        posterior's KL to the uniform prior, per slot in kl_per_dim), active_units (slots whose
        code varies over x), and the codebook's use over the epoch's training steps:
        perplexity, usage, dead_codes (``epoch_summary``)."""
        r = self.forward(x)
        log_c = float(np.log(self.n_codes))
        varying = int(np.sum(np.any(r.codes != r.codes[:1], axis=0)))
        return dict(val_loss=float(r.per_example.mean()), recon=float(-r.ll.mean()),
                    kl=self.n_latents * log_c, kl_per_dim=[log_c] * self.n_latents,
                    active_units=varying, **self.epoch_summary())

    def epoch_summary(self) -> dict:
        """The codebook's use over the training steps since the last call (``fit`` calls it at
        the end of every epoch, for the history): perplexity, usage, dead_codes."""
        stats = quantize.usage_stats(self._epoch_counts)
        self._epoch_counts = np.zeros(self.n_codes)
        return stats

    def astype(self, dtype):
        """A copy of the model with parameters (and the EMA statistics) cast to ``dtype``, the
        prior over codes and the idle counts kept."""
        new = super().astype(dtype)
        new.code_prior, new._idle = self.code_prior, self._idle.copy()
        if self._ema is not None:
            new._ema = quantize.EMAState(*(a.astype(new.dtype) for a in self._ema))
        return new

    # ------------------------------------------------------------------ checkpoints
    def _state_arrays(self) -> dict:
        """What a checkpoint holds besides the parameters: the prior over codes, the steps
        since each code was used and (once made) the EMA statistics."""
        state = dict(self.code_prior.arrays(), **{"state.idle": self._idle})
        if self._ema is not None:
            state.update({"state.ema_count": self._ema.count, "state.ema_sum": self._ema.sum})
        return state

    def _load_state_arrays(self, arrays: dict, path) -> None:
        m, c, e = self.n_latents, self.n_codes, self.code_dim
        want = {"prior.kind": (), "prior.log_pi": (m, c), "prior.log_trans": (m, c, c), "state.idle": (c,)}
        if "state.ema_count" in arrays:
            want.update({"state.ema_count": (c,), "state.ema_sum": (c, e)})
        if set(arrays) != set(want):
            raise ValueError(f"checkpoint {path} holds the extra arrays {sorted(arrays)}; a VQVAE "
                             f"checkpoint holds {sorted(want)}")
        for key, shape in want.items():
            if arrays[key].shape != shape:
                raise ValueError(f"checkpoint {path}: {key} has shape {arrays[key].shape}; expected {shape}")
        self.code_prior = CodePrior.from_arrays(arrays, m, c)
        self._idle = np.array(arrays["state.idle"], dtype=np.int64)
        if "state.ema_count" in arrays:
            self._ema = quantize.EMAState(np.array(arrays["state.ema_count"], self.dtype),
                                          np.array(arrays["state.ema_sum"], self.dtype))
