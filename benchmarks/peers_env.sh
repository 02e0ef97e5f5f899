#!/usr/bin/env bash
# The peer benchmark's own environment (benchmarks/bench_peers.py): a venv OUTSIDE the repository
# with scratchvae's runtime dependencies plus PyTorch (CPU) and JAX + optax. Neither torch nor jax
# is, or may become, a dependency of scratchvae; they live only here.
#
#   bash benchmarks/peers_env.sh [VENV]          # default VENV: /work/benchenv
#
# PyTorch: the default Linux wheel on PyPI is the CUDA build. Installed with `--no-deps` it does
# not even import without the NVIDIA wheels (libtorch.so links libcudnn.so.9, libcublas.so.13, ...;
# checked with torch 2.14.1: "ImportError: libcudnn.so.9"), and with them it pulls several GB of
# CUDA libraries that a CPU benchmark never uses. So this script installs PyTorch's CPU-only build
# (version tag `+cpu`, from PyTorch's CPU wheel index) with `--no-deps`, then its pure-Python
# dependencies by name. Point TORCH_CPU_WHEEL at a downloaded `torch-*+cpu-*.whl` file, or at a
# requirement pip can resolve (e.g. `torch==2.13.0+cpu` with PyTorch's CPU index configured as
# pip's extra index), where the default below does not exist.
set -euo pipefail

VENV=${1:-/work/benchenv}
TORCH_CPU_WHEEL=${TORCH_CPU_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}

python3 -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip
# scratchvae's own runtime stack, the same versions as the project's environment
"$VENV/bin/pip" install numpy==2.4.6 numba==0.68.1 scipy==1.17.1 threadpoolctl==3.8.0 tqdm matplotlib
# PyTorch CPU build, without its CUDA dependency list, then the pure-Python packages it imports
"$VENV/bin/pip" install --no-deps "$TORCH_CPU_WHEEL"
"$VENV/bin/pip" install filelock typing-extensions sympy networkx jinja2 fsspec "setuptools>=77.0.3"
# JAX (the PyPI jaxlib wheel is CPU-only) and optax
"$VENV/bin/pip" install jax==0.10.2 jaxlib==0.10.2 optax==0.2.8

# check: both peers import, run a step on the CPU, and torch's fused Adam exists there
"$VENV/bin/python" - <<'EOF'
import torch, jax, jax.numpy as jnp, optax
lin = torch.nn.Linear(3, 2)
lin(torch.randn(4, 3)).sum().backward()
torch.optim.Adam(lin.parameters(), fused=True).step()
print("torch", torch.__version__, "cuda built:", torch.backends.cuda.is_built(),
      "threads:", torch.get_num_threads())
print("jax", jax.__version__, jax.devices(), "optax", optax.__version__,
      float(jax.jit(lambda a: (a * a).sum())(jnp.ones(3))))
EOF
