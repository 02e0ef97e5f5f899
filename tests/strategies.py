"""Hypothesis strategies shared by the tests: bounded floats, and whole VAE test cases.

A ``VAECase`` is drawn as a handful of small choices (architecture, likelihood, objective, dtype,
K, beta) plus integer seeds; the tensors (data, noise, perturbed parameters) are generated from
the seeds with ``np.random.default_rng`` by ``build``. Large tensors then cost no Hypothesis
entropy and shrinking works on the shape.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

import scratchvae as sv

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "softplus", "elu", "identity")
SMOOTH_ACTIVATIONS = ("tanh", "sigmoid", "softplus", "identity")
KINKED_ACTIVATIONS = ("relu", "leaky_relu", "elu")   # elu is C1 at 0 but not C2
DTYPES = ("float32", "float64")
SEEDS = st.integers(0, 2**32 - 1)


def finite(lo, hi, width=64):
    """A bounded float strategy without NaN, inf or subnormals."""
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=width)


@dataclass(frozen=True)
class VAECase:
    """One drawn VAE problem: constructor arguments, call arguments and the seeds of its tensors."""

    input_dim: int
    hidden_dims: tuple
    decoder_hidden_dims: tuple | None
    latent_dim: int
    activation: str
    likelihood: str
    output_var: float | str
    objective: str
    dtype: str
    batch: int
    n_samples: int
    beta: float
    seed: int          # model initialisation
    data_seed: int     # x, eps and the parameter perturbation

    def model_kwargs(self, dtype=None) -> dict:
        return dict(input_dim=self.input_dim, hidden_dims=self.hidden_dims,
                    latent_dim=self.latent_dim, activation=self.activation,
                    likelihood=self.likelihood, output_var=self.output_var,
                    dtype=dtype or self.dtype, seed=self.seed % 2**31,
                    decoder_hidden_dims=self.decoder_hidden_dims)

    @property
    def call_kwargs(self) -> dict:
        return dict(n_samples=self.n_samples, beta=self.beta, objective=self.objective)

    @property
    def n_params(self) -> int:
        return sum(v.size for v in sv.VAE(**self.model_kwargs("float64")).params.values())


def build(case: VAECase, dtype=None, backend="numpy"):
    """(model, x, eps) for ``case``: a VAE whose parameters are the seeded initialisation plus a
    seeded perturbation (so biases and ``dec.logvar`` are not zero), data in the likelihood's
    support, and standard-normal noise of shape (K, B, d). All in ``dtype`` (default the case's).
    The model runs on ``backend``, the readable reference unless a test asks for another.

    The perturbation, x and eps are drawn in float64 and then cast, so the float32 and float64
    builds of a case hold the same numbers up to one rounding.
    """
    dtype = np.dtype(dtype or case.dtype)
    model = sv.VAE(**case.model_kwargs(dtype.name), backend=backend)
    rng = np.random.default_rng(case.data_seed)
    for key, v in model.params.items():
        if key == "dec.logvar":
            new = rng.uniform(-1.0, 1.0, v.shape)
        else:
            new = v.astype(np.float64) + 0.1 * rng.standard_normal(v.shape)
        v[...] = new.astype(dtype)              # in place: the arrays are the model's own
    B, D = case.batch, case.input_dim
    if case.likelihood == "bernoulli":
        x = rng.random((B, D))
        x[:, ::2] = x[:, ::2] > 0.5             # a mix of binary and grey-level targets
    else:
        x = rng.standard_normal((B, D))
    eps = rng.standard_normal((case.n_samples, B, case.latent_dim))
    return model, x.astype(dtype), eps.astype(dtype)


@st.composite
def vae_cases(draw, dtypes=DTYPES, activations=ACTIVATIONS, objectives=("elbo", "iwae"),
              likelihoods=("bernoulli", "gaussian"), max_hidden_layers=3, max_width=16,
              max_latent=8, max_batch=8, max_samples=4, max_input=16):
    """A ``VAECase``: 0-3 hidden layers of widths 1-16 (decoder default reversed, or drawn),
    latent 1-8, batch 1-8, K 1-4, beta in [0, 2], an activation, a likelihood (bernoulli, or
    gaussian with a fixed or learned variance), an objective, a dtype and two integer seeds."""
    widths = st.integers(1, max_width)
    hidden = tuple(draw(st.lists(widths, min_size=0, max_size=max_hidden_layers)))
    dec_hidden = draw(st.one_of(st.none(),
                                st.lists(widths, min_size=0, max_size=max_hidden_layers).map(tuple)))
    likelihood = draw(st.sampled_from(likelihoods))
    output_var = 1.0
    if likelihood == "gaussian":
        output_var = draw(st.one_of(st.just("learned"), finite(0.25, 4.0)))
    return VAECase(
        input_dim=draw(st.integers(1, max_input)),
        hidden_dims=hidden,
        decoder_hidden_dims=dec_hidden,
        latent_dim=draw(st.integers(1, max_latent)),
        activation=draw(st.sampled_from(activations)),
        likelihood=likelihood,
        output_var=output_var,
        objective=draw(st.sampled_from(objectives)),
        dtype=draw(st.sampled_from(dtypes)),
        batch=draw(st.integers(1, max_batch)),
        n_samples=draw(st.integers(1, max_samples)),
        beta=draw(finite(0.0, 2.0)),
        seed=draw(SEEDS),
        data_seed=draw(SEEDS),
    )


@st.composite
def mu_logvar(draw, max_batch=6, max_latent=5, dtype=np.float64):
    """(mu, logvar), each (B, d), drawn from a seed: mu in about [-3, 3], logvar in [-3, 2]."""
    rng = np.random.default_rng(draw(SEEDS))
    B, d = draw(st.integers(1, max_batch)), draw(st.integers(1, max_latent))
    mu = rng.uniform(-3.0, 3.0, (B, d))
    logvar = rng.uniform(-3.0, 2.0, (B, d))
    return mu.astype(dtype), logvar.astype(dtype)
