"""Vector quantisation for the VQ-VAE: the nearest-code forward paired with its straight-through
backward, the EMA codebook step, dead-code restarts and the usage statistics.

Symbols (docs/derivations.md, "VQ-VAE"): B batch, m slots, e code size, C codes, N = B * m rows.

    z_e        (N, e)   encoder outputs, one row per slot (z_e.reshape(B * m, e))
    codebook   (C, e)   the code vectors
    idx        (N,)     int64 code of each row: argmin_c ||z_e_n - codebook_c||^2, ties to the smallest c
    z_q        (N, e)   codebook[idx], what the decoder reads
    d2         (N,)     ||z_e_n - z_q_n||^2, the value of both the codebook and the commitment term

Every function takes the backend's kernel set ``k`` (bound to a workspace or not) and never
branches on the backend. The host reads the model needs (the codes, the code counts of a step,
the rows a restart copies) happen here, not in the model; the loss's own are in
``losses.vq_objective_forward``.
Derivation: docs/derivations.md, "VQ-VAE".
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import Kernels

# Laplace smoothing of the EMA counts (van den Oord et al. 2017, appendix A.1; the value of the
# reference implementation): large enough to keep an unused code's division finite, small
# enough not to move a used one.
EMA_EPS = 1e-5


class QuantizeCache(NamedTuple):
    z_e: np.ndarray      # (N, e) encoder outputs (rows)
    z_q: np.ndarray      # (N, e) their codes' vectors
    idx: np.ndarray      # (N,) int64 codes
    n_codes: int         # C


def quantize_forward(z_e, codebook, *, k: Kernels):
    """Nearest-code quantisation of the rows of z_e.

    Shapes: z_e (N, e), codebook (C, e) -> z_q (N, e), idx (N,) int64, d2 (N,), cache.
    Equation: idx_n = argmin_c ||z_e_n - codebook_c||^2 (ties: the smallest c);
              z_q_n = codebook[idx_n];  d2_n = ||z_e_n - z_q_n||^2.
    """
    idx = k.vq_assign(z_e, codebook)
    z_q = k.gather_fwd(codebook, idx)
    d2 = k.sqdist_fwd(z_e, z_q)
    return z_q, idx, d2, QuantizeCache(z_e, z_q, idx, codebook.shape[0])


def quantize_backward(dz_q, dd_commit, dd_code, cache: QuantizeCache, *, k: Kernels):
    """The straight-through backward of the quantiser and its two squared terms.

    Shapes: dz_q (N, e) (the decoder's input gradient), dd_commit, dd_code (N,) (the loss's
    derivative with respect to each slot's commitment and codebook term) -> dz_e (N, e),
    dcodebook (C, e), counts (C,) (rows assigned to each code).
    Equation: dz_e      = dz_q + 2 dd_commit (z_e - z_q)          (straight-through + commitment)
              dcodebook = scatter_idx( 2 dd_code (z_q - z_e) )     (codebook term only)
    The reconstruction gradient dz_q goes to z_e alone, never to the codebook.
    Derivation: docs/derivations.md, "VQ-VAE", "The backward, in code order".
    """
    dz_e = k.add(dz_q, k.sqdist_bwd(dd_commit, cache.z_e, cache.z_q))
    dcodebook, counts = k.gather_bwd(k.sqdist_bwd(dd_code, cache.z_q, cache.z_e), cache.idx,
                                     cache.n_codes)
    return dz_e, dcodebook, counts


class Frozen(NamedTuple):
    """The non-smooth parts of a forward pass, held fixed: the codes and both stop-gradient
    values (host arrays)."""
    idx: np.ndarray      # (N,) int64 codes k
    z_e: np.ndarray      # (N, e) a0, the encoder outputs
    z_q: np.ndarray      # (N, e) q0, their codes' vectors


def freeze(cache: QuantizeCache, *, k: Kernels) -> Frozen:
    """Copies of a forward pass's codes, z_e and z_q on the host."""
    return Frozen(*(np.array(k.to_host(a)) for a in (cache.idx, cache.z_e, cache.z_q)))


def surrogate_forward(z_e, codebook, frozen: Frozen, *, k: Kernels):
    """The quantiser of the straight-through surrogate, smooth in z_e and the codebook:

        z_st   = z_e + (q0 - a0)                 (N, e)  what the decoder reads (= z_q at a0)
        code   = ||a0 - codebook[k]||^2          (N,)    the codebook term, a0 frozen
        commit = ||z_e - q0||^2                  (N,)    the commitment term, q0 frozen

    Its exact gradient is what ``quantize_backward`` computes (docs/derivations.md, "VQ-VAE",
    "The straight-through estimator, as the gradient of a surrogate"). For checking gradients
    (host arrays)."""
    z_st = k.add(z_e, frozen.z_q - frozen.z_e)
    code = k.sqdist_fwd(frozen.z_e, k.gather_fwd(codebook, frozen.idx))
    commit = k.sqdist_fwd(z_e, frozen.z_q)
    return z_st, code, commit


def host_rows(a, *, k: Kernels) -> np.ndarray:
    """``a`` as a host NumPy array (the identity on the CPU backends): the codes a forward pass
    reports (and ``encode`` returns) are read here."""
    return np.asarray(k.to_host(a))


def code_counts(counts, *, k: Kernels) -> np.ndarray:
    """The counts of a step as a host float64 array (C,): read once per step by the usage
    statistics and the dead-code restarts."""
    return np.asarray(k.to_host(counts), dtype=np.float64)


# ------------------------------------------------------------------ EMA codebook step
class EMAState(NamedTuple):
    count: np.ndarray    # (C,) N_c, the smoothed moving count of rows assigned to each code
    sum: np.ndarray      # (C, e) M_c, the moving sum of those rows


def ema_init(codebook, *, k: Kernels) -> EMAState:
    """N_c = 1, M_c = codebook_c: each code one pseudo-observation of its current vector, so
    M_c / N_c starts at the codebook (docs/derivations.md, "EMA codebook updates"). The state
    lives on the host (a copy of a device codebook is read once)."""
    table = np.array(k.to_host(codebook))     # a copy, never the parameter itself
    return EMAState(np.ones(table.shape[0], table.dtype), table)


def ema_update(state: EMAState, codebook, cache: QuantizeCache, counts, decay: float, *, k: Kernels):
    """One EMA step from a step's assignments: state and ``codebook`` updated in place.

    Equation: n_c, s_c = the number and sum of the rows of z_e assigned to c;
              N_c <- decay N_c + (1 - decay) n_c;  M_c <- decay M_c + (1 - decay) s_c;
              codebook_c = M_c / ((N_c + eps) / (sum N + C eps) * sum N),  eps = EMA_EPS.
    ``codebook`` may be a device array (the training loop's copy); ``state`` lives on the host.
    """
    sums, _ = k.gather_bwd(cache.z_e, cache.idx, cache.n_codes)
    count, ema, new = k.vq_ema(state.count, state.sum, counts, sums, decay, EMA_EPS)
    k.copyto(state.count, count)
    k.copyto(state.sum, ema)
    k.copyto(codebook, new)


# ------------------------------------------------------------------ dead-code restarts
def restart_dead_codes(codebook, idle_steps: np.ndarray, restart_after: int, cache: QuantizeCache,
                       rng: np.random.Generator, *, k: Kernels, ema: EMAState | None = None) -> int:
    """Re-initialise every code idle (no row assigned) for ``restart_after`` steps or more to a
    row of this step's z_e drawn at random (distinct rows while there are enough); its idle
    count goes back to 0 and, with EMA, its state to (1, that row). Returns how many restarted.

    ``idle_steps`` (C,) int64 is updated by the caller from the step's counts before the call.
    """
    dead = np.flatnonzero(idle_steps >= restart_after)
    if dead.size == 0:
        return 0
    rows = np.asarray(k.to_host(cache.z_e))
    pick = rng.choice(rows.shape[0], size=dead.size, replace=dead.size > rows.shape[0])
    table = np.array(k.to_host(codebook))      # a copy: written, then put back where it lives
    table[dead] = rows[pick]
    k.copyto(codebook, table)
    idle_steps[dead] = 0
    if ema is not None:
        ema.count[dead] = 1.0
        ema.sum[dead] = rows[pick]
    return int(dead.size)


# ------------------------------------------------------------------ usage statistics
def usage_stats(counts: np.ndarray) -> dict:
    """Codebook usage from the code counts of a pass (C,):

        pbar_c = n_c / sum n;  perplexity = exp(-sum_c pbar_c log pbar_c)  (0 log 0 = 0)
        usage = #{c: n_c > 0} / C;  dead_codes = #{c: n_c = 0}

    Returns {"perplexity", "usage", "dead_codes"} as Python numbers."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return {"perplexity": float("nan"), "usage": 0.0, "dead_codes": int(counts.size)}
    p = counts[counts > 0] / total
    return {"perplexity": float(np.exp(-np.sum(p * np.log(p)))),
            "usage": float(np.count_nonzero(counts) / counts.size),
            "dead_codes": int(counts.size - np.count_nonzero(counts))}
