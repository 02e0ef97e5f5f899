"""Does the numba training step need ``OMP_WAIT_POLICY=passive``? The package used to set it on
import; this measures the step with and without it, each in a fresh process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_wait_policy.py

Each child builds ``VAE(784, (400,), 20)`` on the numba backend, runs the user's own loop
(``model.loss_and_grads(x)`` then ``opt.step(model.params, grads)``) at B = 32 and 128 in
float32 and float64, and reports the median ms per step, whether numba launched its OpenMP
thread pool (``numba.threading_layer()``), and the thread pools threadpoolctl sees. The policy
only changes how OpenMP workers wait; with no parallel region launched there are none to wait.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import _common as C

CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, REPO)
import scratchvae as sv
import numba
out = {}
for dtype in ("float32", "float64"):
    for B in (32, 128):
        model = sv.VAE(784, (400,), 20, dtype=dtype, seed=0)
        rng = np.random.default_rng(0)
        x = (rng.random((B, 784)) < 0.3).astype(dtype)
        eps = model.draw_eps(1, B, rng)
        opt = sv.Adam(lr=1e-4)
        def step():
            loss, grads = model.loss_and_grads(x, eps=eps)
            opt.step(model.params, grads)
        for _ in range(5):
            step()
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(10):
                step()
            times.append((time.perf_counter() - t0) / 10 * 1e3)
        out[f"{dtype} B={B}"] = float(np.median(times))
try:
    layer = numba.threading_layer()
except ValueError:
    layer = "none launched"
import threadpoolctl
pools = [f"{i['user_api']}/{i['internal_api']} {i.get('architecture', '-')}"
         for i in threadpoolctl.threadpool_info()]
print(json.dumps(dict(ms=out, numba_threading_layer=layer, pools=pools)))
"""


def run(policy):
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    code = f"REPO = {C.REPO!r}\n" + CHILD
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    print("\n".join(C.threadpool_summary()))
    rows = {}
    for round_ in range(2):          # two alternating rounds against the host's drift
        for policy in (None, "passive"):
            r = run(policy)
            name = policy or "unset"
            print(f"round {round_}, OMP_WAIT_POLICY={name}: numba thread pool: "
                  f"{r['numba_threading_layer']}; pools: {r['pools']}")
            for key, ms in r["ms"].items():
                rows.setdefault(key, {}).setdefault(name, []).append(ms)
    print(f"{'case':<16} {'unset ms':>10} {'passive ms':>11}")
    for key, by in rows.items():
        print(f"{key:<16} {min(by['unset']):>10.3f} {min(by['passive']):>11.3f}")


if __name__ == "__main__":
    main()
