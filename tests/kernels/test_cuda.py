"""The CUDA kernels against numpy_ref, run in numba's CUDA simulator on tiny shapes.

Runs only when NUMBA_ENABLE_CUDASIM=1 was set before numba was imported, in its own process:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim

The simulator costs ~0.2 ms per simulated thread, so outputs are at most 8x8, blocks are made
small (TPB = 4, TPB_1D = 8 instead of 16 and 128) and each property test draws few examples.
That the kernels also compile for real hardware is checked (without the simulator) by
test_conformance.py::test_every_cuda_kernel_compiles_to_ptx.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import config

from scratchvae.kernels import KERNEL_NAMES, _jit, get_kernels, numpy_ref
from scratchvae.kernels._activation_codes import ACTIVATION_CODES
from tests.kernels.test_conformance import assert_matches_reference, make_args, run_kernel

pytestmark = pytest.mark.cudasim

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported", allow_module_level=True)

from scratchvae.kernels import cuda as cuda_kernels  # noqa: E402

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ACTS = sorted(ACTIVATION_CODES.items(), key=lambda kv: kv[1])
PLAIN_KERNELS = [n for n in KERNEL_NAMES if not n.startswith("bias_act")]
# (K, B, F, N, D): every output at most 8x8 (matmul: B x F, likelihoods: K*B rows of D)
DIMS = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.integers(1, 8), st.integers(1, 5))
SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=5)


@pytest.fixture(scope="module", autouse=True)
def small_blocks():
    """Small thread blocks: fewer simulated threads per launch, and multi-block grids."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_jit, "TPB", 4)
        mp.setattr(_jit, "TPB_1D", 8)
        yield


def _check(name, dtype, dims, seed, act=0, scale=1.0):
    args = make_args(name, np.random.default_rng(seed), dtype, dims, act=act, scale=scale)
    expected = run_kernel(getattr(numpy_ref, name), name, args)
    actual = run_kernel(getattr(cuda_kernels, name), name, args)
    assert_matches_reference(name, args, actual, expected, dtype)


def test_get_kernels_cuda_works_under_the_simulator():
    k = get_kernels("cuda")
    assert k.name == "cuda"
    assert k.matmul is cuda_kernels.matmul


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", PLAIN_KERNELS)
@FEW
@given(dims=DIMS, seed=SEEDS, scale=st.sampled_from([0.5, 3.0]))
def test_kernel_matches_reference(name, dtype, dims, seed, scale):
    _check(name, dtype, dims, seed, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act_name,act", ACTS)
@pytest.mark.parametrize("name", ["bias_act_fwd", "bias_act_bwd"])
@FEW
@given(dims=DIMS, seed=SEEDS, scale=st.sampled_from([0.5, 3.0]))
def test_bias_act_matches_reference_for_every_activation(name, act_name, act, dtype, dims, seed, scale):
    _check(name, dtype, dims, seed, act=act, scale=scale)


@pytest.mark.parametrize("name", ["matmul", "matmul_at", "matmul_bt"])
def test_gemm_with_the_default_tile_larger_than_the_matrices(name, monkeypatch):
    monkeypatch.setattr(_jit, "TPB", 16)  # one 16x16 block for a 3x5 output
    _check(name, np.dtype(np.float64), (1, 3, 5, 7, 1), seed=11)


@pytest.mark.parametrize("name", ["matmul", "matmul_at", "matmul_bt"])
def test_gemm_over_several_tiles_of_the_inner_dimension(name):
    _check(name, np.dtype(np.float32), (1, 5, 6, 9, 1), seed=12)  # N = 9 spans 3 tiles of 4


def test_same_inputs_give_identical_bits():
    rng = np.random.default_rng(13)
    for name in ("matmul_at", "bias_act_bwd", "reparam_bwd", "gaussian_ll_bwd", "logsumexp", "adam_step"):
        args = make_args(name, rng, np.float32, (2, 3, 4, 5, 6), act=ACTIVATION_CODES["tanh"])
        first = run_kernel(getattr(cuda_kernels, name), name, args)
        second = run_kernel(getattr(cuda_kernels, name), name, args)
        for x, y in zip(first, second):
            assert x.tobytes() == y.tobytes(), f"{name} is not deterministic"


@pytest.mark.parametrize("name", ["sgd_step", "adam_step", "adagrad_step"])
def test_optimizer_updates_a_non_contiguous_caller_array_in_place(name):
    rng = np.random.default_rng(14)
    args = list(make_args(name, rng, np.float64, (1, 2, 3, 1, 1)))
    expected = run_kernel(getattr(numpy_ref, name), name, args)
    big = np.zeros((2, 6))
    big[:, ::2] = args[0]
    args[0] = big[:, ::2]  # p as a strided view
    assert getattr(cuda_kernels, name)(*args) is None
    np.testing.assert_allclose(big[:, ::2], expected[0], rtol=1e-12, err_msg=name)
    np.testing.assert_array_equal(big[:, 1::2], 0.0, err_msg=name)
