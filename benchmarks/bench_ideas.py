"""The micro-measurements behind the "ways there" of the third peer run (benchmarks/results.md):
each idea's kernel against the one it replaced, written out here, at the step's shapes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_ideas.py

- ``adam``: the textbook update (three divisions, as before) against scratchvae's (one division,
  one square root, subnormals flushed) over the 784-400-20 VAE's 652,824 parameters;
- ``bernoulli``: the forward's softplus tail as one log1p per entry (before) against
  scratchvae's logs of products over blocks, at logits (1, B, 784), with the largest relative
  difference from a float64 NumPy reference; and the backward's sigmoid from a tanh (before)
  against the one pass that reuses the forward's e = exp(-|out|);
- ``all_finite``: a block scan of ``np.isfinite`` with an exit per block (before) against
  scratchvae's one-pass kernel, over 652,824 values;
- ``heads``: the encoder's two Gaussian heads as two products each way (forward, weight
  gradient, input gradient, and the sum of the two input gradients) against one product of
  twice the width: the most a joint layout could save, before the copies it would need;
- ``opt_step``: ``sv.Adam.step`` on the 64-32-8 VAE, where the Python around the kernels is
  most of the cost.

Each number is the best of 5 means over loops of 200 calls (opt_step: 2000), ms.
"""
from __future__ import annotations

import time

import numpy as np
from numba import njit

import _common as C

C.add_repo_to_path()
import scratchvae as sv  # noqa: E402
from scratchvae.kernels import numba_cpu as nk, numpy_ref  # noqa: E402

N_PARAMS = 652_824


def best_ms(fn, n=200, tries=5) -> float:
    fn()
    fn()
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e3)
    return min(times)


# ---------------------------------------------------------------- the replaced kernels
@njit(error_model="numpy")
def adam_textbook(p, g, m, v, lr, beta1, one_m_beta1, beta2, one_m_beta2, c1, c2, eps):
    for i in range(p.size):
        mi = beta1 * m[i] + one_m_beta1 * g[i]
        vi = beta2 * v[i] + one_m_beta2 * g[i] * g[i]
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)


@njit(fastmath={"reassoc", "contract"}, error_model="numpy")
def bernoulli_rows_log1p(x, out, tail, ll):
    k_, b_, d_ = out.shape
    zero = out.dtype.type(0)
    for k in range(k_):
        for i in range(b_):
            acc = zero
            for j in range(d_):
                o = out[k, i, j]
                acc += x[i, j] * o - ((o if o > zero else zero) + tail[k, i, j])
            ll[k, i] = acc


def bernoulli_fwd_log1p(x, out):
    ll, e, tail = np.empty(out.shape[:2], out.dtype), np.empty_like(out), np.empty_like(out)
    nk._neg_abs(out.reshape(-1), e.reshape(-1))
    np.exp(e, out=e)
    np.log1p(e, out=tail)
    bernoulli_rows_log1p(x, out, tail, ll)
    return ll, e


@njit(error_model="numpy")
def bernoulli_bwd_tanh_inplace(dll, x, t):
    k_, b_, d_ = t.shape
    half = t.dtype.type(0.5)
    for k in range(k_):
        for i in range(b_):
            g = dll[k, i]
            for j in range(d_):
                t[k, i, j] = g * (x[i, j] - (half * t[k, i, j] + half))


def bernoulli_bwd_tanh(dll, x, out):
    """The backward before: sigmoid(out) as 0.5 tanh(out / 2) + 0.5, a multiply, a tanh, a pass."""
    dout = np.empty_like(out)
    np.multiply(out, 0.5, out=dout)
    np.tanh(dout, out=dout)
    bernoulli_bwd_tanh_inplace(dll, x, dout)
    return dout


@njit(error_model="numpy")
def all_finite_blocks(a):
    for start in range(0, a.size, 4096):
        block = a[start:start + 4096]
        bad = 0
        for i in range(block.size):
            bad += not np.isfinite(block[i])
        if bad:
            return False
    return True


# ---------------------------------------------------------------- the measurements
def adam(rows):
    for dt in (np.float32, np.float64):
        f = dt
        rng = np.random.default_rng(0)
        p, g = rng.random(N_PARAMS).astype(dt), (rng.random(N_PARAMS) * 1e-3).astype(dt)
        m, v = np.zeros(N_PARAMS, dt), np.zeros(N_PARAMS, dt)
        old = (f(1e-3), f(0.9), f(0.1), f(0.999), f(0.001), f(0.5), f(0.5), f(1e-8))
        before = best_ms(lambda: adam_textbook(p, g, m, v, *old))
        after = best_ms(lambda: nk.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 5))
        rows.append(["adam", dt.__name__, f"{N_PARAMS} parameters", before, after, ""])


def bernoulli(rows):
    for dt in (np.float32, np.float64):
        for B in (128, 512):
            rng = np.random.default_rng(0)
            x = (rng.random((B, 784)) > 0.5).astype(dt)
            out = (rng.standard_normal((1, B, 784)) * 4).astype(dt)
            want = numpy_ref.bernoulli_ll_fwd(x.astype(np.float64), out.astype(np.float64))[0]
            err = [float(np.max(np.abs(f(x, out)[0] - want) / np.abs(want)))
                   for f in (bernoulli_fwd_log1p, nk.bernoulli_ll_fwd)]
            before = best_ms(lambda: bernoulli_fwd_log1p(x, out))
            after = best_ms(lambda: nk.bernoulli_ll_fwd(x, out))
            rows.append(["bernoulli_ll_fwd", dt.__name__, f"(1, {B}, 784)", before, after,
                         f"max rel. err {err[0]:.1e} -> {err[1]:.1e}"])
            dll = rng.standard_normal((1, B)).astype(dt)
            e = nk.bernoulli_ll_fwd(x, out)[1]
            before = best_ms(lambda: bernoulli_bwd_tanh(dll, x, out))
            after = best_ms(lambda: nk.bernoulli_ll_bwd(dll, x, out, e))
            rows.append(["bernoulli_ll_bwd", dt.__name__, f"(1, {B}, 784)", before, after,
                         "sigmoid from the forward's e"])


def all_finite(rows):
    for dt in (np.float32, np.float64):
        a = np.random.default_rng(0).random(N_PARAMS).astype(dt)
        before = best_ms(lambda: all_finite_blocks(a))
        after = best_ms(lambda: nk.all_finite(a))
        rows.append(["all_finite", dt.__name__, f"{N_PARAMS} values", before, after, ""])


def heads(rows):
    for B in (32, 128, 512):
        dt = np.float32
        rng = np.random.default_rng(0)
        a = rng.random((B, 400)).astype(dt)
        w1, w2 = rng.random((400, 20)).astype(dt), rng.random((400, 20)).astype(dt)
        w = np.concatenate([w1, w2], axis=1)
        d1, d2 = rng.random((B, 20)).astype(dt), rng.random((B, 20)).astype(dt)
        d = np.concatenate([d1, d2], axis=1)
        o1, o2, o = np.empty((B, 20), dt), np.empty((B, 20), dt), np.empty((B, 40), dt)
        g1, g2, g = np.empty((400, 20), dt), np.empty((400, 20), dt), np.empty((400, 40), dt)
        e1, e2, e = np.empty((B, 400), dt), np.empty((B, 400), dt), np.empty((B, 400), dt)

        def two():
            np.matmul(a, w1, out=o1)
            np.matmul(a, w2, out=o2)
            np.matmul(a.T, d1, out=g1)
            np.matmul(a.T, d2, out=g2)
            np.matmul(d1, w1.T, out=e1)
            np.matmul(d2, w2.T, out=e2)
            np.add(e1, e2, out=e)

        def one():
            np.matmul(a, w, out=o)
            np.matmul(a.T, d, out=g)
            np.matmul(d, w.T, out=e)

        rows.append(["two heads -> one GEMM", "float32", f"B = {B}", best_ms(two), best_ms(one),
                     "GEMMs and the sum only"])


def opt_step(rows):
    model = sv.VAE(64, (32,), 8, dtype="float32", seed=0)
    opt = sv.Adam(lr=1e-3)
    x = np.random.default_rng(1).random((1, 64)).astype(np.float32)
    _, grads = model.loss_and_grads(x)
    opt.step(model.params, grads)
    after = best_ms(lambda: opt.step(model.params, grads), n=2000)
    rows.append(["sv.Adam.step", "float32", "64-32-8 (10 arrays)", None, after,
                 "before: 0.117 ms (commit f6b0c35)"])


def main() -> None:
    for line in C.env_report():
        print("#", line)
    rows: list = []
    for measure in (adam, bernoulli, all_finite, heads, opt_step):
        measure(rows)
    print(C.format_table(["what", "dtype", "size", "before ms", "after ms", "note"],
                         [[w, dt, size, C.fmt(b, ".3f"), C.fmt(a, ".3f"), note]
                          for w, dt, size, b, a, note in rows], markdown=True))


if __name__ == "__main__":
    main()
