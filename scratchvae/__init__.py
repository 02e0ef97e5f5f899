"""scratchvae: the Variational Autoencoder of Kingma & Welling (2014) from scratch in NumPy,
with every gradient of the reparameterized ELBO derived and written by hand.

Public names: VAE, CVAE, HVAE, VQVAE, FlowVAE, gradcheck, check_gradients, SGD, Adam, Adagrad,
fit, Workspace, and the submodules data, evaluate, viz (imported on first use, so `import
scratchvae` stays light).
"""
import importlib

__version__ = "0.1.0"

from .gradcheck import check_gradients, gradcheck
from .model import VAE
from .optim import SGD, Adagrad, Adam
from .train import DivergenceError, fit
from .kernels.workspace import Workspace

_SUBMODULES = ("data", "evaluate", "viz", "schedules", "io", "kernels", "sweep")
_LAZY = {"CVAE": "cvae", "HVAE": "hvae", "VQVAE": "vqvae", "FlowVAE": "flows"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'scratchvae' has no attribute {name!r}")


__all__ = ["VAE", "CVAE", "HVAE", "VQVAE", "FlowVAE", "gradcheck", "check_gradients", "SGD", "Adam",
           "Adagrad", "fit", "DivergenceError", "Workspace", "data", "evaluate", "viz", "schedules",
           "__version__"]
