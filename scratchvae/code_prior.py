"""Priors over the codes of a VQ-VAE, fitted after training: pi(k) for code vectors k of m slots,
each in [0, C).

    uniform       pi(k) = C^-m                                   (the prior the model trains with)
    categorical   pi(k) = prod_j pi_j(k_j)                       (one categorical per slot)
    markov        pi(k) = pi_0(k_0) prod_{j>0} pi_j(k_j | k_{j-1})  (first-order autoregressive)

Fitted tables are counts over the training codes with add-``alpha`` smoothing, so a code never
seen in a slot keeps a small probability and log pi stays finite on new data. Every prior gives
``log_prob(codes) -> (B,)`` and ``sample(n, rng) -> (n, m) int64``; its tables are plain arrays
(``arrays()`` / ``from_arrays``) for the checkpoint. Derivation: docs/derivations.md, "VQ-VAE",
"The bound on log p(x)".
"""
from __future__ import annotations

import numpy as np

from ._checks import check_float, check_int, check_rng

KINDS = ("uniform", "categorical", "markov")


def check_codes(name, codes, n_latents, n_codes) -> np.ndarray:
    """``codes`` as a C-contiguous (B, m) int64 array of values in [0, C), m = ``n_latents``
    (None: any m >= 1), C = ``n_codes``; else ValueError/TypeError naming ``name``."""
    if not isinstance(codes, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of int64 codes; got {type(codes).__name__}")
    if codes.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer codes (int64); got dtype {codes.dtype}")
    m = codes.shape[1] if codes.ndim == 2 and n_latents is None else n_latents
    if codes.ndim != 2 or codes.shape[1] != m or codes.shape[0] == 0 or m == 0:
        raise ValueError(f"{name} must have shape (B, n_latents) = (B, {m or 'm'}) with "
                         f"B >= 1; got {codes.shape}")
    if codes.min() < 0 or codes.max() >= n_codes:
        raise ValueError(f"{name} must lie in [0, n_codes) = [0, {n_codes}); got values in "
                         f"[{codes.min()}, {codes.max()}]")
    return np.ascontiguousarray(codes, dtype=np.int64)


class CodePrior:
    """A prior over (m,) code vectors with C codes per slot; ``kind`` is one of KINDS.

    Tables (log probabilities, float64): categorical ``log_pi`` (m, C); markov ``log_pi`` (m, C)
    (row 0 is pi_0; rows j > 0 unused) and ``log_trans`` (m, C, C) with
    log_trans[j, a, b] = log pi_j(k_j = b | k_{j-1} = a) (slot 0's block unused)."""

    def __init__(self, kind: str, n_latents: int, n_codes: int, log_pi=None, log_trans=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        self.kind = kind
        self.n_latents = check_int("n_latents", n_latents, min_value=1)
        self.n_codes = check_int("n_codes", n_codes, min_value=1)
        m, c = self.n_latents, self.n_codes
        self.log_pi = np.full((m, c), -np.log(c)) if log_pi is None else np.asarray(log_pi, np.float64)
        self.log_trans = (np.full((m, c, c), -np.log(c)) if log_trans is None
                          else np.asarray(log_trans, np.float64))
        if self.log_pi.shape != (m, c) or self.log_trans.shape != (m, c, c):
            raise ValueError(f"prior tables must have shapes {(m, c)} and {(m, c, c)}; got "
                             f"{self.log_pi.shape} and {self.log_trans.shape}")

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, kind: str, codes: np.ndarray, n_codes: int, alpha: float = 1.0) -> "CodePrior":
        """Smoothed maximum-likelihood tables from training codes (B, m):
        pi_j(c) = (n_jc + alpha) / (B + C alpha);
        pi_j(b | a) = (n_j,ab + alpha) / (n_{j-1},a + C alpha)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        c = check_int("n_codes", n_codes, min_value=1)
        codes = check_codes("codes", codes, None, c)
        alpha = check_float("alpha", alpha, min_value=0.0, min_inclusive=False)
        b, m = codes.shape
        if kind == "uniform":
            return cls("uniform", m, c)
        counts = np.stack([np.bincount(codes[:, j], minlength=c) for j in range(m)]).astype(np.float64)
        log_pi = np.log(counts + alpha) - np.log(b + c * alpha)
        if kind == "categorical":
            return cls("categorical", m, c, log_pi=log_pi)
        pairs = np.zeros((m, c, c))
        for j in range(1, m):
            np.add.at(pairs[j], (codes[:, j - 1], codes[:, j]), 1.0)
        log_trans = np.log(pairs + alpha) - np.log(pairs.sum(axis=2, keepdims=True) + c * alpha)
        return cls("markov", m, c, log_pi=log_pi, log_trans=log_trans)

    # ---------------------------------------------------------------- use
    def log_prob(self, codes: np.ndarray) -> np.ndarray:
        """log pi(codes), one value per row of codes (B, m), in nats."""
        codes = check_codes("codes", codes, self.n_latents, self.n_codes)
        slots = np.arange(self.n_latents)
        if self.kind == "uniform":
            return np.full(codes.shape[0], -self.n_latents * np.log(self.n_codes))
        if self.kind == "categorical":
            return self.log_pi[slots, codes].sum(axis=1)
        first = self.log_pi[0, codes[:, 0]]
        steps = self.log_trans[slots[1:], codes[:, :-1], codes[:, 1:]].sum(axis=1)
        return first + steps

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n code vectors (n, m) int64 drawn from the prior (slot by slot for markov)."""
        n = check_int("n", n, min_value=1)
        rng = check_rng("rng", rng)
        m, c = self.n_latents, self.n_codes
        out = np.empty((n, m), np.int64)
        probs = np.exp(self.log_pi)
        for j in range(m):
            if self.kind == "markov" and j > 0:
                p = np.exp(self.log_trans[j, out[:, j - 1]])           # (n, C)
            else:
                p = np.broadcast_to(probs[0 if self.kind == "markov" else j], (n, c))
            u = rng.random((n, 1))
            cdf = np.cumsum(p, axis=1)
            out[:, j] = np.minimum((u * cdf[:, -1:] > cdf).sum(axis=1), c - 1)   # inverse CDF
        return out

    # ---------------------------------------------------------------- checkpoint
    def arrays(self) -> dict:
        return {"prior.kind": np.array(KINDS.index(self.kind)), "prior.log_pi": self.log_pi,
                "prior.log_trans": self.log_trans}

    @classmethod
    def from_arrays(cls, arrays: dict, n_latents: int, n_codes: int) -> "CodePrior":
        kind_code = int(np.asarray(arrays["prior.kind"]))
        if not 0 <= kind_code < len(KINDS):
            raise ValueError(f"checkpoint has an unknown prior kind {kind_code}")
        return cls(KINDS[kind_code], n_latents, n_codes, log_pi=arrays["prior.log_pi"],
                   log_trans=arrays["prior.log_trans"])

    def __repr__(self):
        return f"CodePrior({self.kind!r}, n_latents={self.n_latents}, n_codes={self.n_codes})"
