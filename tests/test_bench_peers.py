"""The peer benchmark's pure helpers (round rotation, paired ratios, the BLAS-override guard and
the FLOP count); needs neither torch nor jax, and times nothing."""
import importlib.util
import os
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


@pytest.fixture(scope="module")
def bp():
    sys.path.insert(0, os.path.abspath(BENCH))  # bench_peers imports its sibling _common
    try:
        spec = importlib.util.spec_from_file_location("bench_peers",
                                                      os.path.join(BENCH, "bench_peers.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.path.remove(os.path.abspath(BENCH))


def test_rotation_puts_every_name_first_once_per_cycle(bp):
    names = ["jax", "torch", "gemm", "sv"]
    orders = [bp.rotate(names, r) for r in range(8)]
    assert orders[1] == ["torch", "gemm", "sv", "jax"]
    assert orders[4] == names and orders[5] == orders[1]
    assert sorted(o[0] for o in orders[:4]) == sorted(names)
    assert all(sorted(o) == sorted(names) for o in orders)


def test_median_of_ratios_pairs_rounds_not_medians(bp):
    # medians of each series give 2/2 = 1; the paired ratios are 0.5, 0.5, 4 -> median 0.5
    num, den = [1.0, 2.0, 8.0], [2.0, 4.0, 2.0]
    assert bp.median_of_ratios(num, den) == 0.5
    assert bp.median_of_ratios([1.0, np.nan, 3.0], [1.0, 1.0, 1.0]) == 2.0  # a lost round is skipped
    assert np.isnan(bp.median_of_ratios([np.nan], [1.0]))
    with pytest.raises(ValueError, match="one value per round"):
        bp.median_of_ratios([1.0, 2.0], [1.0])


def test_best_peer_is_the_roundwise_minimum(bp):
    best = bp.best_per_round([3.0, 1.0, np.nan], [2.0, 5.0, 4.0])
    np.testing.assert_array_equal(best, [2.0, 1.0, 4.0])
    assert np.isnan(bp.best_per_round([np.nan], [np.nan])[0])


def test_blas_override_guard(bp):
    assert bp.blas_overrides({"PATH": "/bin"}) == {}
    assert bp.blas_overrides({"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}) == {
        "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}


def test_refuses_to_run_with_the_haswell_override(bp, monkeypatch, capsys):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert bp.main(["--quick"]) == 2
    assert "env -u OPENBLAS_CORETYPE" in capsys.readouterr().err


def test_flop_count_matches_the_closed_form(bp):
    # one hidden layer, K = 1: 2 B (5 D H + 9 H d); the first layer has no input gradient
    for D, H, d, B in [(784, 400, 20, 512), (64, 32, 8, 1), (3, 5, 2, 7)]:
        assert bp.step_flops(D, H, d, B) == 2 * B * (5 * D * H + 9 * H * d)
    assert len(bp.step_gemms(784, 400, 20, 1)) == 14


def test_frameworks_collapse_when_numba_is_the_default(bp):
    assert bp.frameworks_for(["default", "numba"], "numba") == ["jax", "torch", "gemm", "sv-loop",
                                                                "sv-fit"]
    assert bp.frameworks_for(["default", "numba"], "numpy")[-2:] == ["sv-loop@numba",
                                                                     "sv-fit@numba"]
