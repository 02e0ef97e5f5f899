"""The CUDA kernels against numpy_ref, run in numba's CUDA simulator on tiny shapes.

Runs only when NUMBA_ENABLE_CUDASIM=1 was set before numba was imported, in its own process:

    NUMBA_ENABLE_CUDASIM=1 python -m pytest -m cudasim

The simulator costs ~0.2 ms per simulated thread, so outputs are at most 8x8, blocks are made
small (TPB = 4, TPB_1D = 8 instead of 16 and 128) and each property test draws few examples.
That the kernels also compile for real hardware is checked (without the simulator) by
test_conformance.py::test_every_cuda_kernel_compiles_to_ptx.

Besides the arithmetic, this module checks where arrays live: host inputs give host outputs,
any device input gives device outputs bit-identical to the host path, a workspace makes a
repeated call allocate nothing, and the optimizers update device state in place on the device.
In the simulator a device array is a ``FakeCUDAArray`` (a NumPy array in a wrapper).
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import config

from scratchvae.kernels import KERNEL_NAMES, _jit, get_kernels, numpy_ref
from scratchvae.kernels._activation_codes import ACTIVATION_CODES
from scratchvae.kernels.workspace import Workspace
from tests.kernels.test_conformance import GLUE, IN_PLACE, assert_matches_reference, make_args, run_kernel

pytestmark = pytest.mark.cudasim

if not config.ENABLE_CUDASIM:
    pytest.skip("needs NUMBA_ENABLE_CUDASIM=1 set before numba is imported", allow_module_level=True)

from numba import cuda  # noqa: E402

from scratchvae.kernels import cuda as cuda_kernels  # noqa: E402

DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
ACTS = sorted(ACTIVATION_CODES.items(), key=lambda kv: kv[1])
TANH = ACTIVATION_CODES["tanh"]
PLAIN_KERNELS = [n for n in KERNEL_NAMES if not n.startswith("bias_act") and n not in GLUE]
# kernels that return arrays (they take ws); those with two or more array arguments
ARRAY_KERNELS = [n for n in KERNEL_NAMES if "ws" in inspect.signature(getattr(numpy_ref, n)).parameters]
MULTI_INPUT_KERNELS = [n for n in ARRAY_KERNELS if n not in ("logsumexp", "softmax")]
OPTIMIZERS = list(IN_PLACE)
# (K, B, F, N, D): every output at most 8x8 (matmul: B x F, likelihoods: K*B rows of D)
DIMS = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 5), st.integers(1, 8), st.integers(1, 5))
FIXED_DIMS = (2, 3, 4, 5, 6)  # several blocks of TPB_1D = 8 for the larger kernels
SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=5)
FakeCUDAArray = type(cuda.device_array(1))  # the simulator's device array class


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
    k, checked = get_kernels("cuda", validate=False), get_kernels("cuda")
    assert k.name == checked.name == "cuda"
    for name in KERNEL_NAMES:
        assert getattr(k, name) is getattr(cuda_kernels, name), name
        assert getattr(checked, name).__wrapped__ is getattr(cuda_kernels, name), name


def test_validated_cuda_kernels_accept_device_arrays_and_check_their_shapes():
    k = get_kernels("cuda")
    a, b = cuda.to_device(np.ones((2, 3))), cuda.to_device(np.ones((3, 4)))
    np.testing.assert_array_equal(k.to_host(k.matmul(a, b)), np.full((2, 4), 3.0))
    with pytest.raises(ValueError, match=r"^matmul: b has N = 2"):
        k.matmul(a, cuda.to_device(np.ones((2, 4))))
    with pytest.raises(ValueError, match=r"^add: b has dtype float32 but a has float64"):
        k.add(a, cuda.to_device(np.ones((2, 3), np.float32)))


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


# ---------------------------------------------------------------- host and device arrays
def _args(name, rng, dtype):
    """Host arguments for kernel ``name`` (make_args with FIXED_DIMS and tanh)."""
    return make_args(name, rng, dtype, FIXED_DIMS, act=TANH)


def _array_positions(args):
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]


def _on_device(args, which=None):
    """``args`` with every array copied to the device, or only the array number ``which``."""
    positions = _array_positions(args)
    chosen = positions if which is None else [positions[which]]
    return tuple(cuda.to_device(a) if i in chosen else a for i, a in enumerate(args))


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _is_device(a):
    return bool(cuda.devicearray.is_cuda_ndarray(a))


def _host_copy(a):
    return a.copy_to_host() if _is_device(a) else np.array(a)


def _assert_same_bits(actual, expected, where):
    """Same dtype, shape and bytes (NaNs included) as ``expected`` (a host array)."""
    actual = _host_copy(actual)
    assert actual.dtype == expected.dtype, f"{where}: dtype {actual.dtype}, expected {expected.dtype}"
    assert actual.shape == expected.shape, f"{where}: shape {actual.shape}, expected {expected.shape}"
    assert actual.tobytes() == expected.tobytes(), f"{where}: {actual} != {expected}"


def _forbidden(*args, **kwargs):
    raise AssertionError("a host<->device copy where none was expected")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FEW
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=SEEDS)
def test_add_matches_numpy_exactly(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    a, b = ((rng.standard_normal(shape) * 3.0).astype(dtype) for _ in range(2))
    _assert_same_bits(cuda_kernels.add(a, b), a + b, "add")
    _assert_same_bits(cuda_kernels.add(a, b), numpy_ref.add(a, b), "add")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ARRAY_KERNELS)
def test_device_inputs_give_device_outputs_identical_to_the_host_path(name, dtype, monkeypatch):
    args = _args(name, np.random.default_rng(21), dtype)
    fn = getattr(cuda_kernels, name)
    host = _as_tuple(fn(*args))
    dev_args = _on_device(args)
    with monkeypatch.context() as mp:  # device inputs are used as they are: no transfer at all
        for method in ("copy_to_host", "copy_to_device"):
            mp.setattr(FakeCUDAArray, method, _forbidden)
        mp.setattr(cuda, "to_device", _forbidden)
        dev = _as_tuple(fn(*dev_args))
    assert len(dev) == len(host)
    for i, (d, h) in enumerate(zip(dev, host)):
        assert type(h) is np.ndarray, f"{name} output {i}: host inputs must give a NumPy array"
        assert _is_device(d), f"{name} output {i}: device inputs must give a device array, got {type(d)}"
        _assert_same_bits(d, h, f"{name} output {i}")
    for i in _array_positions(args):  # inputs untouched
        _assert_same_bits(dev_args[i], args[i], f"{name} input {i}")


@pytest.mark.parametrize("which", [0, -1], ids=["first_on_device", "last_on_device"])
@pytest.mark.parametrize("name", MULTI_INPUT_KERNELS)
def test_mixed_host_and_device_inputs_give_device_outputs(name, which):
    args = _args(name, np.random.default_rng(22), np.float32)
    fn = getattr(cuda_kernels, name)
    host = _as_tuple(fn(*args))
    mixed = _on_device(args, which)
    assert sum(_is_device(a) for a in mixed) == 1
    out = _as_tuple(fn(*mixed))
    for i, (m, h) in enumerate(zip(out, host)):
        assert _is_device(m), f"{name} output {i}: a device input must give a device array"
        _assert_same_bits(m, h, f"{name} output {i}")


@pytest.fixture
def device_allocations(monkeypatch):
    """Records every cuda.device_array / cuda.to_device call (a list of names)."""
    calls = []
    real = {"device_array": cuda.device_array, "to_device": cuda.to_device}

    def counting(name):
        def allocate(*args, **kwargs):
            calls.append(name)
            return real[name](*args, **kwargs)
        return allocate

    for name in real:
        monkeypatch.setattr(cuda, name, counting(name))
    return calls


@pytest.mark.parametrize("where", ["host", "device", "mixed"])
@pytest.mark.parametrize("name", ARRAY_KERNELS)
def test_a_repeated_call_with_a_workspace_allocates_nothing(name, where, device_allocations):
    args = _args(name, np.random.default_rng(23), np.float32)
    if where == "device":
        args = _on_device(args)
    elif where == "mixed":
        args = _on_device(args, 0)
    fn = getattr(cuda_kernels, name)
    ws = Workspace()
    first = _as_tuple(fn(*args, ws=ws))
    first_bits = [_host_copy(o) for o in first]
    buffers, calls = ws.allocations, len(device_allocations)
    assert buffers >= len(first)
    ws.rewind()
    second = _as_tuple(fn(*args, ws=ws))
    assert ws.allocations == buffers, f"{name} ({where}): the second call allocated workspace buffers"
    assert len(device_allocations) == calls, f"{name} ({where}): device memory outside the workspace"
    for i, (a, b) in enumerate(zip(first, second)):
        assert a is b, f"{name} output {i}: not the workspace's buffer"
        assert _is_device(b) == (where != "host"), f"{name} output {i} on the wrong side"
    fresh = _as_tuple(fn(*args))  # without a workspace: fresh arrays, the same bits
    assert len(device_allocations) > calls  # (so the counter above does see allocations)
    for i, (f, s_bits, b) in enumerate(zip(fresh, first_bits, second)):
        assert f is not b
        _assert_same_bits(b, s_bits, f"{name} output {i} (second call)")
        _assert_same_bits(f, s_bits, f"{name} output {i} (no workspace)")


@pytest.mark.parametrize("g_where", ["host", "device"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_updates_device_arrays_in_place_on_the_device(name, dtype, g_where, monkeypatch):
    args = make_args(name, np.random.default_rng(24), dtype, FIXED_DIMS)  # p, g, state: (B, F)
    expected = run_kernel(getattr(numpy_ref, name), name, args)
    host_path = run_kernel(getattr(cuda_kernels, name), name, args)
    state_positions = [0, *range(2, 2 + IN_PLACE[name])]
    dev = list(args)
    for i in state_positions + ([1] if g_where == "device" else []):
        dev[i] = cuda.to_device(args[i])
    state = [dev[i] for i in state_positions]
    uploads = []
    real_to_device = cuda.to_device
    with monkeypatch.context() as mp:  # no copy back to the host; only a host g is uploaded
        mp.setattr(FakeCUDAArray, "copy_to_host", _forbidden)
        mp.setattr(cuda, "to_device", lambda a, *r, **k: uploads.append(a.shape) or real_to_device(a, *r, **k))
        assert getattr(cuda_kernels, name)(*dev) is None
    assert uploads == ([(args[1].size,)] if g_where == "host" else [])
    actual = tuple(d.copy_to_host() for d in state)  # the caller's own device arrays changed
    assert_matches_reference(name, args, actual, expected, dtype)
    for i, (a, h) in enumerate(zip(actual, host_path)):
        _assert_same_bits(a, h, f"{name} state {i}")
        assert not np.array_equal(a, args[state_positions[i]]), f"{name} state {i} did not change"


@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_finite_finds_a_nan_or_inf_anywhere(dtype, bad, where):
    a = np.random.default_rng(25).standard_normal((3, 7)).astype(dtype)  # 21 threads, 3 blocks
    for pos in [(0, 0), (1, 3), (2, 6)]:
        b = a.copy()
        b[pos] = bad
        arg = cuda.to_device(b) if where == "device" else b
        result = cuda_kernels.all_finite(arg)
        assert result is False, f"{bad} at {pos} not found"
        assert result == numpy_ref.all_finite(b)


@pytest.mark.parametrize("where", ["host", "device"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_all_finite_is_true_without_nan_or_inf(dtype, where):
    a = np.random.default_rng(26).standard_normal((3, 7)).astype(dtype)
    a[1, 1] = np.finfo(dtype).max
    a[2, 2] = -np.finfo(dtype).max
    a[0, 5] = np.finfo(dtype).smallest_subnormal
    for arr in (a, a[:0]):  # an empty array has no NaN either
        arg = cuda.to_device(arr) if where == "device" else arr
        assert cuda_kernels.all_finite(arg) is True
        assert numpy_ref.all_finite(arr) is True


def test_all_finite_copies_only_a_one_element_flag_to_the_host(monkeypatch):
    a = cuda.to_device(np.ones((3, 7), np.float32))
    copies = []
    real_copy_to_host = FakeCUDAArray.copy_to_host

    def recording_copy_to_host(self, *args, **kwargs):
        copies.append(self.size)
        return real_copy_to_host(self, *args, **kwargs)

    monkeypatch.setattr(FakeCUDAArray, "copy_to_host", recording_copy_to_host)
    assert cuda_kernels.all_finite(a) is True
    assert copies == [1]


def test_all_finite_reuses_its_flag_and_allocates_nothing_on_the_device(monkeypatch):
    """fit calls it ~20 times a step: after the first call no device memory is allocated, and a
    NaN found by one call does not stick to the next (the flag is reset each time)."""
    bad = np.ones((2, 5))
    bad[1, 3] = np.nan
    a, b = cuda.to_device(np.ones((2, 5))), cuda.to_device(bad)
    cuda_kernels.all_finite(a)                           # creates the flag
    made = []
    real = cuda.device_array
    monkeypatch.setattr(cuda, "device_array", lambda *args, **kw: made.append(args) or real(*args, **kw))
    monkeypatch.setattr(cuda, "to_device", lambda *args, **kw: made.append(args))
    assert cuda_kernels.all_finite(b) is False
    assert cuda_kernels.all_finite(a) is True
    assert made == []


@pytest.mark.parametrize("src_where", ["host", "device"])
@pytest.mark.parametrize("dst_where", ["host", "device"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_copyto_copies_between_host_and_device(dtype, dst_where, src_where):
    rng = np.random.default_rng(27)
    values = rng.standard_normal((3, 4)).astype(dtype)
    src = cuda.to_device(values) if src_where == "device" else values.copy()
    dst = cuda.to_device(np.zeros((3, 4), dtype)) if dst_where == "device" else np.zeros((3, 4), dtype)
    assert cuda_kernels.copyto(dst, src) is None
    _assert_same_bits(dst, values, "dst")
    cuda_kernels.copyto(src, np.full((3, 4), 7.0, dtype))  # dst has its own memory
    _assert_same_bits(dst, values, "dst after changing src")


def test_copyto_from_the_device_into_a_strided_host_view():
    values = np.arange(6.0).reshape(2, 3)
    big = np.zeros((2, 6))
    cuda_kernels.copyto(big[:, ::2], cuda.to_device(values))
    np.testing.assert_array_equal(big[:, ::2], values)
    np.testing.assert_array_equal(big[:, 1::2], 0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_to_device_and_to_host_round_trip(dtype):
    a = np.random.default_rng(28).standard_normal((3, 4)).astype(dtype)
    d = cuda_kernels.to_device(a)
    assert _is_device(d)
    assert cuda_kernels.to_device(d) is d  # already there: no copy
    h = cuda_kernels.to_host(d)
    assert type(h) is np.ndarray
    _assert_same_bits(h, a, "round trip")
    assert cuda_kernels.to_host(a) is a  # already there: no copy
    a[0, 0] = 99.0  # to_device copied: the device array keeps the old value
    assert cuda_kernels.to_host(d)[0, 0] != 99.0
    big = np.arange(12.0, dtype=dtype).reshape(3, 4)
    _assert_same_bits(cuda_kernels.to_host(cuda_kernels.to_device(big[:, ::2])), big[:, ::2].copy(), "strided")


def test_device_outputs_reshape_to_views_that_kernels_take():
    """Model code reshapes device outputs ((K, B, d) samples to (K*B, d) rows): the reshape is a
    view of the same device memory, and the kernels accept it."""
    rng = np.random.default_rng(29)
    mu, logvar, eps = make_args("reparam_fwd", rng, np.float64, (2, 3, 4, 1, 1))
    w = rng.standard_normal((4, 2))
    z_host, _ = cuda_kernels.reparam_fwd(mu, logvar, eps)
    z, _ = cuda_kernels.reparam_fwd(*_on_device((mu, logvar, eps)))
    rows = z.reshape(6, 4)
    assert _is_device(rows) and rows.shape == (6, 4)
    _assert_same_bits(cuda_kernels.matmul(rows, w), cuda_kernels.matmul(z_host.reshape(6, 4), w), "matmul")
    cuda_kernels.copyto(rows, np.zeros((6, 4)))  # writing through the view changes z
    _assert_same_bits(z, np.zeros((2, 3, 4)), "z after writing its reshaped view")
