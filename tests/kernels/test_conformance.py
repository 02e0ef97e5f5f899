"""The kernel contract, made executable: every backend has every kernel with the reference's
signature; the registry rejects unknown names; the CUDA kernels compile to PTX; and
``backend="cuda"`` without a GPU fails with a ValueError that says what to do.

This module also holds the helpers the backend tests share (``make_args``, ``run_kernel``,
``assert_matches_reference``): inputs for every kernel drawn from a seed, and a comparison whose
tolerance is the dtype's RTOL times the magnitude of the terms that make up each output (so a
result that cancels to near zero is judged against the size of what was added, not against 0).
"""
import importlib
import inspect
import math

import numpy as np
import pytest

from scratchvae.kernels import BACKENDS, KERNEL_NAMES, Kernels, get_kernels, numpy_ref
from scratchvae.kernels._activation_codes import ACTIVATION_CODES, ELU, IDENTITY, LEAKY_RELU, RELU
from tests.conftest import RTOL

BACKEND_MODULES = {name: f"scratchvae.kernels.{mod}" for name, mod in
                   (("numpy", "numpy_ref"), ("numba", "numba_cpu"), ("cuda", "cuda"))}
IN_PLACE = {"sgd_step": 1, "adam_step": 2, "adagrad_step": 1}  # kernel -> number of state arrays
# kernels that move, copy or check arrays rather than compute them (tested on their own)
GLUE = ("all_finite", "to_device", "to_host", "copyto")
ARRAY_KERNELS = tuple(n for n in KERNEL_NAMES if n not in GLUE)


# ---------------------------------------------------------------- shared helpers
def make_args(name, rng, dtype, dims, act=RELU, scale=1.0):
    """Arguments for kernel ``name`` (numpy_ref's signature) from a Generator.

    ``dims = (K, B, F, N, D)``: samples, batch, a width, an inner (matmul) size, a data size.
    The latent size d is F. ``scale`` widens the values (logits, pre-activations, log-weights).
    Kink-free: pre-activations of piecewise activations are kept at least 0.05 away from 0.
    """
    K, B, F, N, D = dims
    dt = np.dtype(dtype)

    def normal(*shape, s=1.0):
        return (rng.standard_normal(shape) * s).astype(dt)

    if name == "add":
        return normal(B, F), normal(B, F)
    if name == "matmul":
        return normal(B, N), normal(N, F)
    if name == "matmul_at":
        return normal(N, B), normal(N, F)
    if name == "matmul_bt":
        return normal(B, N), normal(F, N)
    if name in ("bias_act_fwd", "bias_act_bwd"):
        z, b = normal(B, F, s=scale), normal(F)
        if act in (RELU, LEAKY_RELU, ELU):
            h = z + b
            z = np.where(np.abs(h) < 0.05, z + dt.type(0.1), z).astype(dt)  # away from the kink
        if name == "bias_act_fwd":
            return z, b, act
        h, y = numpy_ref.bias_act_fwd(z, b, act)
        return normal(B, F), h, y, act
    mu, logvar, eps = normal(B, F), normal(B, F, s=min(scale, 3.0)), normal(K, B, F)
    if name == "reparam_fwd":
        return mu, logvar, eps
    if name == "reparam_bwd":
        return normal(K, B, F), eps, np.exp(0.5 * logvar)
    if name == "kl_fwd":
        return mu, logvar
    if name == "kl_bwd":
        return normal(B), mu, logvar
    x, out = rng.random((B, D)).astype(dt), normal(K, B, D, s=2.0 * scale)
    glv = normal(D, s=min(scale, 2.0))
    if name == "bernoulli_ll_fwd":
        return x, out
    if name == "bernoulli_ll_bwd":
        return normal(K, B), x, out, np.exp(-np.abs(out))
    if name == "gaussian_ll_fwd":
        return x, out, glv
    if name == "gaussian_ll_bwd":
        return normal(K, B), x, out, glv
    if name in ("logsumexp", "softmax"):
        a = normal(K, B, s=3.0 * scale)
        if B > 1:
            a[:, 0] = -np.inf  # a column of zero weights: the -inf guard (softmax: NaN, 0/0)
        if K > 1:
            a[0, -1] = -np.inf  # one zero weight among finite ones
        return (a,)
    p, g = normal(B, F), normal(B, F)
    if name == "sgd_step":
        return p, g, normal(B, F), 0.1, 0.9
    if name == "adam_step":
        return p, g, normal(B, F, s=0.1), np.abs(normal(B, F, s=0.1)), 1e-2, 0.9, 0.999, 1e-8, int(rng.integers(1, 20))
    if name == "adagrad_step":
        return p, g, np.abs(normal(B, F)), 0.1, 1e-8
    # ---- vector quantisation: N = K * B rows of e = F numbers, a codebook of C = D rows
    if name in VQ_KERNELS:
        return _vq_args(name, rng, dt, K * B, F, D, scale)
    if name.startswith("planar_flow"):  # ---- planar flows: L = min(N, 3) steps, latent d = F
        L = min(N, 3)
        z0, u, b = normal(K, B, F, s=scale), normal(B, L, F), normal(B, L, s=scale)
        w = normal(B, L, F)
        w = (w + np.where(w < 0, -0.5, 0.5)).astype(dt)  # ||w|| away from 0 (c divides by it)
        if name == "planar_flow_fwd":
            return z0, u, w, b
        _, _, zin, t, uh = numpy_ref.planar_flow_fwd(z0, u, w, b)
        return normal(K, B, F), normal(K, B), zin, t, uh, u, w
    raise ValueError(f"no test inputs for kernel {name!r}")


VQ_KERNELS = ("vq_assign", "gather_fwd", "gather_bwd", "sqdist_fwd", "sqdist_bwd", "vq_ema")


def _vq_args(name, rng, dt, n, e, c, scale):
    """Arguments of the vector-quantisation kernels: rows z (n, e), a codebook (c, e) with
    exact ties (its last row repeats its first, and the first row of z is a codebook row),
    row numbers drawn from [0, c) with code 0 always among them."""
    z = (rng.standard_normal((n, e)) * scale).astype(dt)
    codebook = (rng.standard_normal((c, e)) * scale).astype(dt)
    if c > 1:
        codebook[-1] = codebook[0]  # a tie: the smaller number must win
    z[0] = codebook[-1]             # a zero distance, to a tied code
    idx = rng.integers(0, c, n).astype(np.int64)
    idx[0] = 0
    if name == "vq_assign":
        return z, codebook
    if name == "gather_fwd":
        return codebook, idx
    if name == "gather_bwd":
        return z, idx, c
    b = (rng.standard_normal((n, e)) * scale).astype(dt)
    if name == "sqdist_fwd":
        return z, b
    if name == "sqdist_bwd":
        return (rng.standard_normal(n) * scale).astype(dt), z, b
    counts = rng.integers(0, 4, c).astype(dt)
    return (np.abs(rng.standard_normal(c)).astype(dt), codebook, counts, codebook * counts[:, None],
            0.9, 1e-5)


def run_kernel(fn, name, args):
    """Call ``fn(*args)`` on copies of the arrays; return its outputs as a tuple.

    For the in-place optimizer updates, the outputs are the updated (p, *state) arrays, and the
    call must return None.
    """
    args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
    result = fn(*args)
    if name in IN_PLACE:
        assert result is None, f"{name} must update in place and return None"
        return (args[0],) + args[2:2 + IN_PLACE[name]]
    return result if isinstance(result, tuple) else (result,)


def _term_scales(name, args, expected):
    """Per output, the magnitude of the terms summed to make it (same shape as the output)."""
    a64 = [np.asarray(x, dtype=np.float64) if isinstance(x, np.ndarray) else x for x in args]
    e64 = [np.asarray(e, dtype=np.float64) for e in expected]
    if name == "add":
        return [np.abs(a64[0]) + np.abs(a64[1])]
    if name == "matmul":
        return [np.abs(a64[0]) @ np.abs(a64[1])]
    if name == "matmul_at":
        return [np.abs(a64[0]).T @ np.abs(a64[1])]
    if name == "matmul_bt":
        return [np.abs(a64[0]) @ np.abs(a64[1]).T]
    if name == "bias_act_fwd":
        zb = np.abs(a64[0]) + np.abs(a64[1])
        return [zb, zb + np.abs(e64[1])]
    if name == "bias_act_bwd":
        dy, y = np.abs(a64[0]), np.abs(a64[2])
        term = dy * (1.0 + y + y * y)
        return [term, term.sum(axis=0)]
    if name == "reparam_fwd":
        mu, lv, eps = a64
        return [np.abs(mu) + np.exp(0.5 * lv) * np.abs(eps), np.exp(0.5 * lv)]
    if name == "reparam_bwd":
        dz, eps, std = a64
        return [np.abs(dz).sum(axis=0), std * np.abs(dz * eps).sum(axis=0)]
    if name == "kl_fwd":
        mu, lv = a64
        return [(mu * mu + np.abs(np.expm1(lv)) + np.abs(lv)).sum(axis=1)]
    if name == "kl_bwd":
        mu = a64[1]
        return [np.zeros_like(mu), np.zeros_like(mu)]  # products of accurate factors: relative
    if name == "bernoulli_ll_fwd":
        x, out = a64
        return [(np.abs(x * out) + np.logaddexp(0.0, out)).sum(axis=-1), np.exp(-np.abs(out))]
    if name == "bernoulli_ll_bwd":
        dll, x, out, _ = a64
        return [np.abs(dll)[..., None] * (x + 1.0)]
    if name == "gaussian_ll_fwd":
        x, out, lv = a64
        return [((x - out) ** 2 * np.exp(-lv) + np.abs(lv) + math.log(2 * math.pi)).sum(axis=-1)]
    if name == "gaussian_ll_bwd":
        dll, x, out, lv = a64
        mag = np.abs(dll)[..., None] * (np.abs(x) + np.abs(out)) * np.exp(-lv)
        return [mag, (np.abs(dll)[..., None] * ((x - out) ** 2 * np.exp(-lv) + 1.0)).sum(axis=(0, 1))]
    if name == "logsumexp":
        a = a64[0]
        finite = np.where(np.isfinite(a), np.abs(a), 0.0)
        return [finite.max(axis=0) + math.log(a.shape[0])]  # |m| + log(sum) <= |m| + log K
    if name == "softmax":
        a = a64[0]
        finite = np.where(np.isfinite(a), np.abs(a), 0.0)
        return [e64[0] * (finite + finite.max(axis=0) + math.log(a.shape[0]))]  # w * |a - lse|
    if name == "vq_assign":
        return [None]  # row numbers: compared exactly
    if name == "gather_fwd":
        return [np.zeros_like(e64[0])]  # copies: exact
    if name == "gather_bwd":
        drows, idx, c = a64[0], args[1], args[2]  # (a64 made idx float)
        mag = np.zeros((c, drows.shape[1]))
        np.add.at(mag, idx, np.abs(drows))
        return [mag, np.zeros_like(e64[1])]
    if name == "sqdist_fwd":
        return [((a64[0] - a64[1]) ** 2).sum(axis=1)]
    if name == "sqdist_bwd":
        return [np.zeros_like(e64[0])]  # one product of rounded factors: relative
    if name == "vq_ema":
        ema_count, ema_sum, counts, sums = a64[:4]
        count = np.abs(ema_count) + np.abs(counts)
        mag = np.abs(ema_sum) + np.abs(sums)
        return [count, mag, np.abs(e64[2]) * 4.0 + mag / (np.abs(e64[0])[:, None] + 1e-5)]
    if name.startswith("planar_flow"):  # a chain of nonlinear steps: judged per output array
        return [np.full_like(e, np.abs(e).max() + 1.0) for e in e64]
    if name in IN_PLACE:
        old = [a64[0]] + a64[2:2 + IN_PLACE[name]]
        return [np.abs(o) + np.abs(e - o) for o, e in zip(old, e64)]
    raise ValueError(name)


def assert_matches_reference(name, args, actual, expected, dtype, rtol_factor=1.0):
    """Each output: same dtype and shape as numpy_ref's, and |actual - expected| <= RTOL * scale.

    ``scale`` is |expected| plus the magnitude of the terms summed into it (``_term_scales``);
    infinities must match exactly.
    """
    dt = np.dtype(dtype)
    rtol = RTOL[dt] * rtol_factor
    assert len(actual) == len(expected), f"{name}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e, s) in enumerate(zip(actual, expected, _term_scales(name, args, expected))):
        where = f"{name} output {i} ({dt.name})"
        assert isinstance(a, np.ndarray), f"{where}: got {type(a).__name__}"
        if s is None:  # integer outputs (row numbers): identical
            assert a.dtype == e.dtype and a.shape == e.shape, f"{where}: {a.dtype}{a.shape}, expected {e.dtype}{e.shape}"
            np.testing.assert_array_equal(a, e, err_msg=where)
            continue
        assert a.dtype == dt, f"{where}: dtype {a.dtype}, expected {dt}"
        assert a.shape == e.shape, f"{where}: shape {a.shape}, expected {e.shape}"
        e64, a64 = e.astype(np.float64), a.astype(np.float64)
        same = (a64 == e64) | (np.isnan(a64) & np.isnan(e64))
        tol = rtol * (np.abs(np.where(np.isfinite(e64), e64, 0.0)) + s)
        with np.errstate(invalid="ignore"):
            ok = same | (np.abs(a64 - e64) <= tol)
        assert ok.all(), (f"{where}: max |diff| {np.max(np.abs(a64 - e64)[~ok])} at "
                          f"{np.argwhere(~ok)[0].tolist()}; actual {a64[~ok][:3]}, expected {e64[~ok][:3]}")


# ---------------------------------------------------------------- signatures and registry
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_module_has_every_kernel_with_the_reference_signature(backend):
    module = importlib.import_module(BACKEND_MODULES[backend])  # no GPU needed to import
    for name in KERNEL_NAMES:
        fn = getattr(module, name, None)
        assert callable(fn), f"{BACKEND_MODULES[backend]} lacks kernel {name}"
        assert inspect.signature(fn) == inspect.signature(getattr(numpy_ref, name)), (
            f"{backend}.{name}{inspect.signature(fn)} != numpy_ref.{name}{inspect.signature(getattr(numpy_ref, name))}")


def test_kernels_fields_are_the_kernel_names_plus_name_and_workspace():
    assert Kernels._fields == ("name",) + KERNEL_NAMES + ("workspace",)


@pytest.mark.parametrize("validate", [True, False])
def test_bind_takes_the_array_kernels_outputs_from_the_workspace(validate):
    from scratchvae.kernels import bind, unbind
    from scratchvae.kernels.workspace import Workspace
    k = get_kernels("numba", validate=validate)
    ws = Workspace()
    kb = bind(k, ws)
    assert kb.workspace is ws and k.workspace is None and kb.name == "numba"
    a, b = np.ones((3, 4)), np.ones((4, 2))
    c1 = kb.matmul(a, b)
    ws.rewind()
    c2 = kb.matmul(2 * a, b)
    assert c2 is c1 and np.array_equal(c1, np.full((3, 2), 8.0)), "the workspace's buffer, reused"
    assert k.matmul(a, b) is not k.matmul(a, b), "the unbound set still allocates"
    ws.rewind()
    e = kb.empty((2,), np.float64)
    ws.rewind()
    assert kb.empty((2,), np.float64) is e and k.empty((2,), np.float64) is not e
    assert kb.adam_step is k.adam_step and kb.to_host is k.to_host   # no arrays returned: shared
    assert unbind(kb) == k and bind(kb, None) == k
    with pytest.raises(TypeError, match="workspace"):
        bind(k, {})
    with pytest.raises(TypeError, match="Kernels"):
        bind("numba", ws)
    assert set(BACKEND_MODULES) == set(BACKENDS)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_get_kernels_returns_the_backend_module_functions(backend):
    """validate=False: the module's functions themselves; by default: wrappers with the same
    signature that call them."""
    raw, checked = get_kernels(backend, validate=False), get_kernels(backend)
    module = importlib.import_module(BACKEND_MODULES[backend])
    assert raw.name == checked.name == backend
    for name in KERNEL_NAMES:
        assert getattr(raw, name) is getattr(module, name), name
        assert getattr(checked, name).__wrapped__ is getattr(module, name), name
        assert inspect.signature(getattr(checked, name)) == inspect.signature(getattr(module, name))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_validated_kernels_give_the_backend_results(backend):
    rng = np.random.default_rng(3)
    raw, checked = get_kernels(backend, validate=False), get_kernels(backend)
    for name in ARRAY_KERNELS:
        args = make_args(name, rng, np.float64, (2, 3, 4, 5, 6))
        for a, b in zip(run_kernel(getattr(raw, name), name, args),
                        run_kernel(getattr(checked, name), name, args)):
            np.testing.assert_array_equal(a, b, err_msg=name)


# every kernel with a mismatched shape: (kernel, index of the argument to break, its name);
# the argument's last axis is made one longer (first axis for "b" of matmul / matmul_at)
MISMATCHES = [("matmul", 1, "b"), ("matmul_at", 1, "b"), ("matmul_bt", 1, "b"),
              ("bias_act_fwd", 1, "b"), ("bias_act_bwd", 2, "y"), ("reparam_fwd", 2, "eps"),
              ("reparam_bwd", 2, "std"), ("kl_fwd", 1, "logvar"), ("kl_bwd", 0, "dkl"),
              ("bernoulli_ll_fwd", 1, "out"), ("bernoulli_ll_bwd", 0, "dll"),
              ("gaussian_ll_fwd", 2, "logvar"), ("gaussian_ll_bwd", 3, "logvar"),
              ("add", 1, "b"), ("sgd_step", 2, "velocity"), ("adam_step", 3, "v"),
              ("adagrad_step", 1, "g"),
              ("vq_assign", 1, "codebook"), ("gather_bwd", 1, "idx"),
              ("sqdist_fwd", 1, "b"), ("sqdist_bwd", 0, "dd"), ("vq_ema", 3, "sums")]


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("name, index, arg", MISMATCHES)
def test_a_kernel_called_with_a_mismatched_shape_names_the_argument(backend, name, index, arg):
    """One axis of one argument one too long: a ValueError naming the kernel and the argument,
    before any njit loop could read past the end of an array; nothing is written."""
    args = list(make_args(name, np.random.default_rng(0), np.float64, (2, 3, 4, 5, 6)))
    shape = list(args[index].shape)
    shape[0 if name in ("matmul", "matmul_at") else -1] += 1
    args[index] = np.zeros(shape, args[index].dtype)
    before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    with pytest.raises(ValueError, match=rf"^{name}: (.*\b)?{arg}\b"):
        getattr(get_kernels(backend), name)(*args)
    for a, b in zip(args, before):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_validated_kernels_refuse_mixed_dtypes_wrong_types_and_bad_scalars(backend):
    k = get_kernels(backend)
    a = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"^matmul: b has dtype float32 but a has float64"):
        k.matmul(a, np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"^matmul: a must have dtype float32 or float64"):
        k.matmul(np.ones((2, 3), np.int64), np.ones((3, 2), np.int64))
    with pytest.raises(TypeError, match=r"^matmul: b must be a numpy.ndarray"):
        k.matmul(a, [[1.0], [2.0], [3.0]])
    with pytest.raises(ValueError, match=r"^matmul: a must be 2-dimensional"):
        k.matmul(np.ones(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"^bias_act_fwd: act must be an activation code"):
        k.bias_act_fwd(a, np.ones(3), 99)
    with pytest.raises(ValueError, match=r"^adam_step: t must be the step count"):
        k.adam_step(a, a.copy(), a.copy(), a.copy(), 0.1, 0.9, 0.999, 1e-8, 0)
    with pytest.raises(ValueError, match=r"^sgd_step: lr must be a finite number"):
        k.sgd_step(a, a.copy(), a.copy(), float("nan"), 0.0)
    frozen = np.ones((2, 3))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"^adagrad_step: p is updated in place"):
        k.adagrad_step(frozen, a, a.copy(), 0.1, 1e-8)
    with pytest.raises(TypeError, match=r"^matmul: ws must be a Workspace"):
        k.matmul(a, np.ones((3, 2)), ws={})
    with pytest.raises(TypeError, match=r"^matmul"):
        k.matmul(a)


@pytest.mark.parametrize("bad", ["bogus", "NUMPY", "", "cpu"])
def test_unknown_backend_raises_value_error_naming_backend(bad):
    with pytest.raises(ValueError, match="backend") as info:
        get_kernels(bad)
    assert repr(bad) in str(info.value)


def test_non_string_backend_raises_type_error():
    with pytest.raises(TypeError, match="backend"):
        get_kernels(3)


def test_numba_backend_matches_reference_on_one_fixed_case(dtype):
    """A quick cross-backend check (the property tests live in test_numba_cpu.py)."""
    from scratchvae.kernels import numba_cpu
    rng = np.random.default_rng(0)
    for name in ARRAY_KERNELS:
        for act in (sorted(ACTIVATION_CODES.values()) if name.startswith("bias_act") else [IDENTITY]):
            args = make_args(name, rng, dtype, (2, 3, 4, 5, 6), act=act)
            expected = run_kernel(getattr(numpy_ref, name), name, args)
            actual = run_kernel(getattr(numba_cpu, name), name, args)
            assert_matches_reference(name, args, actual, expected, dtype)


# ---------------------------------------------------------------- CUDA without a GPU
def _cuda_mode():
    from numba import config, cuda
    if config.ENABLE_CUDASIM:
        return "sim"
    return "gpu" if cuda.is_available() else None


def test_cuda_backend_without_gpu_raises_value_error_naming_the_simulator():
    if _cuda_mode() is not None:
        pytest.skip("a GPU or the CUDA simulator is available here")
    from scratchvae.kernels.cuda import NO_CUDA_MESSAGE
    with pytest.raises(ValueError) as info:
        get_kernels("cuda")
    assert str(info.value) == NO_CUDA_MESSAGE
    assert "NUMBA_ENABLE_CUDASIM=1" in str(info.value)


def _array_type(dtype, ndim):
    return f"{dtype}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


def _cuda_kernel_signatures(dt):
    """name -> numba signature of every @cuda.jit kernel in scratchvae.kernels.cuda."""
    a1, a2, a3 = (_array_type(dt, n) for n in (1, 2, 3))
    return {
        "_bias_act_fwd_kernel": f"void({a2}, {a1}, int64, {a2}, {a2})",
        "_act_bwd_kernel": f"void({a2}, {a2}, {a2}, int64, {a2})",
        "_colsum_kernel": f"void({a2}, {a1})",
        "_reparam_fwd_kernel": f"void({a2}, {a2}, {a3}, {a3}, {a2})",
        "_reparam_bwd_kernel": f"void({a3}, {a3}, {a2}, {a2}, {a2})",
        "_kl_fwd_kernel": f"void({a2}, {a2}, {a1})",
        "_kl_bwd_kernel": f"void({a1}, {a2}, {a2}, {a2}, {a2})",
        "_bernoulli_fwd_kernel": f"void({a2}, {a3}, {a2}, {a3})",
        "_bernoulli_bwd_kernel": f"void({a2}, {a2}, {a3}, {a3}, {a3})",
        "_gaussian_fwd_kernel": f"void({a2}, {a3}, {a1}, {a2})",
        "_gaussian_dout_kernel": f"void({a2}, {a2}, {a3}, {a1}, {a3})",
        "_gaussian_dlogvar_kernel": f"void({a2}, {a2}, {a3}, {a1}, {a1})",
        "_logsumexp_kernel": f"void({a2}, {a1})",
        "_softmax_kernel": f"void({a2}, {a2})",
        "_sgd_kernel": f"void({a1}, {a1}, {a1}, {dt}, {dt}, {dt})",
        "_adam_kernel": f"void({a1}, {a1}, {a1}, {a1}, {', '.join([dt] * 8)})",
        "_adagrad_kernel": f"void({a1}, {a1}, {a1}, {dt}, {dt})",
        "_add_kernel": f"void({a1}, {a1}, {a1})",
        "_all_finite_kernel": f"void({a1}, int32[::1])",
        "_vq_assign_kernel": f"void({a2}, {a2}, int64[::1])",
        "_gather_fwd_kernel": f"void({a2}, int64[::1], {a2})",
        "_gather_bwd_kernel": f"void({a2}, int64[::1], {a2}, {a1})",
        "_sqdist_fwd_kernel": f"void({a2}, {a2}, {a1})",
        "_sqdist_bwd_kernel": f"void({a1}, {a2}, {a2}, {a2})",
        "_vq_ema_kernel": f"void({a1}, {a2}, {a1}, {a2}, {', '.join([dt] * 4)}, {a1}, {a2}, {a2})",
        # ---- planar flows
        "_planar_uh_kernel": f"void({a3}, {a3}, {a3}, {a2})",
        "_planar_fwd_kernel": f"void({a3}, {a3}, {a2}, {a3}, {a2}, {a3}, {a2}, {_array_type(dt, 4)}, {a3})",
        "_planar_bwd_kernel": f"void({a3}, {a2}, {_array_type(dt, 4)}, {a3}, {a3}, {a3}, {a3}, {a3}, {a3}, {a3}, {a2})",
    }


@pytest.fixture(scope="module")
def compile_ptx():
    """numba.cuda.compile_ptx, or skip: under the simulator it does not exist, and it needs NVVM."""
    if _cuda_mode() == "sim":
        pytest.skip("the CUDA simulator neither type-checks nor compiles kernels")
    from numba import cuda

    def trivial(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = 1.0

    try:
        cuda.compile_ptx(trivial, "void(float32[::1])", cc=(8, 0))
    except Exception as e:  # no NVVM / libdevice on this machine
        pytest.skip(f"cuda.compile_ptx unavailable: {type(e).__name__}: {e}")
    return lambda fn, sig: cuda.compile_ptx(fn, sig, cc=(8, 0))[0]


@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_every_cuda_kernel_compiles_to_ptx(compile_ptx, dt):
    """Type-checks every kernel as real hardware would (the simulator does not), per dtype;
    float32 kernels must contain no float64 arithmetic (constants typed with the array dtype)."""
    from scratchvae.kernels import cuda as cuda_kernels
    sigs = _cuda_kernel_signatures(dt)
    launched = {n for n in dir(cuda_kernels) if n.endswith("_kernel") and n != "_gemm_kernel"}
    assert launched == set(sigs), f"kernels without a PTX test: {launched ^ set(sigs)}"
    a2 = _array_type(dt, 2)
    sigs["gemm"] = f"void({a2}, {a2}, {a2}, int64, int64)"
    for name, sig in sigs.items():
        fn = cuda_kernels._gemm_kernel(16, np.dtype(dt)) if name == "gemm" else getattr(cuda_kernels, name)
        ptx = compile_ptx(fn.py_func, sig)
        assert ".entry" in ptx, name
        if dt == "float32":
            assert ".f64" not in ptx, f"{name}: float64 arithmetic in the float32 kernel"


def test_empty_codebook_and_bad_decay_or_eps_are_refused():
    """With no codes, numba's and cuda's argmin would return row 0 of an empty table; a decay
    outside [0, 1) or an eps <= 0 makes the EMA (or Adam) divide by zero or grow without bound."""
    k = get_kernels("numba")
    z = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"^vq_assign: codebook must not be empty"):
        k.vq_assign(z, np.zeros((0, 2)))
    c, s = np.ones(2), np.ones((2, 3))
    with pytest.raises(ValueError, match=r"^vq_ema: decay must be a decay rate in \[0, 1\)"):
        k.vq_ema(c, s, c, s, 1.0, 1e-5)
    with pytest.raises(ValueError, match=r"^vq_ema: eps must be a positive finite number"):
        k.vq_ema(c, s, c, s, 0.99, -1.0)
    a = np.ones(4)
    with pytest.raises(ValueError, match=r"^adam_step: eps must be a positive finite number"):
        k.adam_step(a, a.copy(), a.copy(), a.copy(), 0.1, 0.9, 0.999, 0.0, 1)
