"""scratchvae: the Variational Autoencoder of Kingma & Welling (2014) from scratch in NumPy,
with every gradient of the reparameterized ELBO derived and written by hand.

Public names: VAE, CVAE, HVAE, gradcheck, check_gradients, SGD, Adam, Adagrad, fit, Workspace, and the
submodules data, evaluate, viz (imported on first use, so `import scratchvae` stays light).
"""
import importlib
import os

# numba's OpenMP workers otherwise spin after a parallel region and stall OpenBLAS's threads on a
# 2-core machine by a scheduler slice (~7 ms per BLAS call, NOTES.md 3.7). Must be set before
# numba starts its thread pool; setdefault keeps a user's own choice.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

__version__ = "0.1.0"

from .gradcheck import check_gradients, gradcheck  # noqa: E402
from .model import VAE  # noqa: E402
from .optim import SGD, Adagrad, Adam  # noqa: E402
from .train import DivergenceError, fit  # noqa: E402
from .kernels.workspace import Workspace  # noqa: E402

_SUBMODULES = ("data", "evaluate", "viz", "schedules", "io", "kernels")
_LAZY = {"CVAE": "cvae", "HVAE": "hvae"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'scratchvae' has no attribute {name!r}")


__all__ = ["VAE", "CVAE", "HVAE", "gradcheck", "check_gradients", "SGD", "Adam", "Adagrad", "fit",
           "DivergenceError", "Workspace", "data", "evaluate", "viz", "schedules", "__version__"]
