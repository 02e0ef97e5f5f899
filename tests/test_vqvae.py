"""The VQ-VAE: its quantiser pieces, the priors over codes, and the model.

Pieces (scratchvae.quantize): the forward against the reference formulas, the straight-through
backward as the exact gradient of its frozen surrogate (finite differences, float64), the EMA
step and restarts, the usage statistics. Priors (scratchvae.code_prior): normalised, fitted to
counts, sampled at their own frequencies.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import config

from scratchvae import quantize
from scratchvae.code_prior import CodePrior
from scratchvae.kernels import get_kernels
from tests import reference as ref
from tests.conftest import FD_RTOL, FD_STEP

BACKENDS = ["numpy", "numba",
            pytest.param("cuda", marks=[pytest.mark.cudasim, pytest.mark.skipif(
                not config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported")])]
SEEDS = st.integers(0, 2**32 - 1)


def _host(k, a):
    return np.asarray(k.to_host(a))


# ================================================================ the quantiser pieces
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(n=st.integers(1, 6), e=st.integers(1, 3), c=st.integers(1, 5), seed=SEEDS)
def test_quantize_forward_is_the_nearest_code_its_vector_and_distance(backend, n, e, c, seed):
    rng = np.random.default_rng(seed)
    z_e, codebook = rng.standard_normal((n, e)), rng.standard_normal((c, e))
    k = get_kernels(backend)
    z_q, idx, d2, cache = quantize.quantize_forward(z_e, codebook, k=k)
    want = ref.nearest_codes(z_e, codebook)
    np.testing.assert_array_equal(_host(k, idx), want)
    np.testing.assert_array_equal(_host(k, z_q), codebook[want])
    np.testing.assert_allclose(_host(k, d2), ((z_e - codebook[want]) ** 2).sum(axis=1), rtol=1e-13)
    assert cache.n_codes == c


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=10)
@given(n=st.integers(1, 6), e=st.integers(1, 3), c=st.integers(1, 5), seed=SEEDS)
def test_quantize_backward_is_the_gradient_of_the_frozen_surrogate(backend, n, e, c, seed):
    """With the codes idx0 and the stop-gradient values a0 = z_e, q0 = z_q frozen, the
    surrogate  S(z_e, codebook) = <dz_q, z_e> + sum_n dd_commit_n ||z_e_n - q0_n||^2
                                 + sum_n dd_code_n ||a0_n - codebook[idx0_n]||^2
    has gradients (dz_e, dcodebook) = quantize_backward(dz_q, dd_commit, dd_code): checked by
    central differences in float64."""
    rng = np.random.default_rng(seed)
    z_e, codebook = rng.standard_normal((n, e)), rng.standard_normal((c, e))
    dz_q, dd_commit, dd_code = rng.standard_normal((n, e)), rng.random(n), rng.random(n)
    k = get_kernels(backend)
    z_q, idx, _, cache = quantize.quantize_forward(z_e, codebook, k=k)
    idx0, a0, q0 = _host(k, idx).copy(), z_e.copy(), _host(k, z_q).copy()
    dz_e, dcodebook, counts = (_host(k, a) for a in quantize.quantize_backward(dz_q, dd_commit, dd_code, cache, k=k))

    def surrogate(z_e, codebook):
        return (np.sum(dz_q * z_e) + np.sum(dd_commit * ((z_e - q0) ** 2).sum(axis=1))
                + np.sum(dd_code * ((a0 - codebook[idx0]) ** 2).sum(axis=1)))

    inputs = {"z_e": z_e, "codebook": codebook}
    ref.assert_gradient_close(dz_e, ref.numerical_vjp(surrogate, inputs, "z_e", 1.0, FD_STEP), "dz_e", FD_RTOL)
    ref.assert_gradient_close(dcodebook, ref.numerical_vjp(surrogate, inputs, "codebook", 1.0, FD_STEP),
                              "dcodebook", FD_RTOL)
    np.testing.assert_array_equal(counts, np.bincount(idx0, minlength=c))


def test_usage_stats_on_hand_counts():
    s = quantize.usage_stats(np.array([2.0, 0.0, 2.0]))
    assert s == {"perplexity": pytest.approx(2.0, rel=1e-15), "usage": 2 / 3, "dead_codes": 1}
    s = quantize.usage_stats(np.array([0.0, 7.0, 0.0, 0.0]))
    assert s["perplexity"] == 1.0 and s["dead_codes"] == 3 and s["usage"] == 0.25
    p = np.array([1.0, 2.0, 3.0, 4.0])
    assert quantize.usage_stats(p)["perplexity"] == pytest.approx(
        np.exp(-np.sum(p / 10 * np.log(p / 10))), rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ema_update_moves_the_codebook_and_state_as_the_reference(backend):
    rng = np.random.default_rng(3)
    z_e, codebook = rng.standard_normal((7, 2)), rng.standard_normal((3, 2))
    k = get_kernels(backend)
    _, idx, _, cache = quantize.quantize_forward(z_e, codebook, k=k)
    _, _, counts = quantize.quantize_backward(np.zeros((7, 2)), np.zeros(7), np.zeros(7), cache, k=k)
    state = quantize.ema_init(codebook)
    np.testing.assert_array_equal(state.count, np.ones(3))
    np.testing.assert_array_equal(state.sum, codebook)
    target = codebook.copy()
    want = ref.codebook_ema(np.ones(3), codebook, z_e, _host(k, idx), 3, 0.9, quantize.EMA_EPS)
    quantize.ema_update(state, target, cache, counts, 0.9, k=k)
    np.testing.assert_allclose(state.count, want[0], rtol=1e-13)
    np.testing.assert_allclose(state.sum, want[1], rtol=1e-13)
    np.testing.assert_allclose(target, want[2], rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_restart_dead_codes_moves_idle_codes_to_encoder_outputs(backend):
    rng = np.random.default_rng(4)
    z_e = rng.standard_normal((6, 2))
    codebook = np.array([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [0.1, 0.0]])
    k = get_kernels(backend)
    _, _, _, cache = quantize.quantize_forward(z_e, codebook, k=k)
    idle = np.array([0, 5, 2, 7])
    state = quantize.ema_init(codebook)
    n = quantize.restart_dead_codes(codebook, idle, 5, cache, np.random.default_rng(0), k=k, ema=state)
    assert n == 2
    np.testing.assert_array_equal(idle, [0, 0, 2, 0])
    np.testing.assert_array_equal(codebook[[0, 2]], [[0.0, 0.0], [60.0, 60.0]])   # not idle long enough
    rows = {tuple(r) for r in z_e}
    assert tuple(codebook[1]) in rows and tuple(codebook[3]) in rows
    assert tuple(codebook[1]) != tuple(codebook[3])                    # distinct rows
    np.testing.assert_array_equal(state.count, [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(state.sum[[1, 3]], codebook[[1, 3]])
    assert quantize.restart_dead_codes(codebook, idle, 5, cache, np.random.default_rng(0), k=k) == 0


# ================================================================ priors over codes
@pytest.mark.parametrize("kind", ["uniform", "categorical", "markov"])
def test_every_prior_is_normalised_over_all_code_vectors(kind):
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 3, (40, 3))
    prior = CodePrior.fit(kind, codes, 3)
    every = np.array(list(itertools.product(range(3), repeat=3)))
    assert np.exp(prior.log_prob(every)).sum() == pytest.approx(1.0, rel=1e-12)


def test_categorical_prior_is_the_smoothed_frequency_per_slot():
    codes = np.array([[0, 1], [0, 1], [2, 1], [0, 0]])
    prior = CodePrior.fit("categorical", codes, 3, alpha=1.0)
    # slot 0: counts (3, 0, 1) -> (4, 1, 2) / 7;  slot 1: counts (1, 3, 0) -> (2, 4, 1) / 7
    np.testing.assert_allclose(np.exp(prior.log_pi), [[4 / 7, 1 / 7, 2 / 7], [2 / 7, 4 / 7, 1 / 7]], rtol=1e-14)
    np.testing.assert_allclose(prior.log_prob(np.array([[2, 2]])), [np.log(2 / 7) + np.log(1 / 7)], rtol=1e-14)


def test_markov_prior_beats_the_independent_one_on_dependent_slots():
    """Codes whose second slot copies the first: the transition table captures it."""
    rng = np.random.default_rng(6)
    first = rng.integers(0, 4, 400)
    codes = np.stack([first, first, rng.integers(0, 4, 400)], axis=1)
    held = np.stack([first[:100], first[:100], rng.integers(0, 4, 100)], axis=1)
    cat, markov = CodePrior.fit("categorical", codes, 4), CodePrior.fit("markov", codes, 4)
    assert -markov.log_prob(held).mean() < -cat.log_prob(held).mean() - np.log(4) + 0.1


@pytest.mark.parametrize("kind", ["categorical", "markov"])
def test_prior_samples_follow_the_prior(kind):
    """Frequencies of 20000 draws within 5 binomial standard deviations of pi (fixed seed)."""
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 3, (60, 2))
    codes[:, 1] = (codes[:, 0] + (rng.random(60) < 0.2)) % 3
    prior = CodePrior.fit(kind, codes, 3)
    draws = prior.sample(20000, np.random.default_rng(8))
    assert draws.dtype == np.int64 and draws.shape == (20000, 2)
    every = np.array(list(itertools.product(range(3), repeat=2)))
    p = np.exp(prior.log_prob(every))
    freq = np.array([np.mean((draws == v).all(axis=1)) for v in every])
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / 20000))


def test_prior_tables_round_trip_and_bad_kinds_are_refused():
    prior = CodePrior.fit("markov", np.array([[0, 1], [1, 0]]), 2)
    back = CodePrior.from_arrays(prior.arrays(), 2, 2)
    assert back.kind == "markov"
    np.testing.assert_array_equal(back.log_trans, prior.log_trans)
    with pytest.raises(ValueError, match="kind"):
        CodePrior.fit("gaussian", np.zeros((2, 2), np.int64), 2)
    with pytest.raises(ValueError, match="kind"):
        CodePrior("bogus", 2, 2)
