"""The base class every model of the family derives from: what is the same for all of them and is
not their math.

It owns the backend (the unbound kernel set ``model.kernels``), the model's own work buffers
(a ``Workspace`` and the kernel set bound to it), the config and checkpoints, the seeded noise,
and the validation of the arguments every model shares. A model file then writes only its chain:

    _forward(p, x, y, eps, beta, objective, free_bits, *, k) -> (result, cache)
        the forward pass with the parameter dict ``p`` on the kernel set ``k``; ``result`` is a
        ``LossResult`` (or a NamedTuple that starts with its fields), ``cache`` what the backward
        reads.
    _backward(cache, *, k, need_dx) -> (grads, dx)
        the same chain in reverse: a dict of parameter gradients (any order) and d loss / d x
        (None unless ``need_dx``).

``loss_and_grads`` rewinds the model's workspace and runs both on the bound set; every other
public method runs ``_forward`` on the unbound set, whose kernels return fresh arrays.

Aliasing rule: the gradient arrays returned by ``loss_and_grads`` live in the model's workspace
and stay valid until the next ``loss_and_grads`` call on the same model (as PyTorch's ``.grad``);
copy them to keep them longer. ``loss``, ``forward``, ``encode``, ``decode``, ``elbo``,
``sample``, ``log_likelihood`` allocate their own arrays and never overwrite them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from . import io as _io
from ._checks import (as_dtype, check_array, check_bool, check_choice, check_float, check_int,
                      check_rng)
from .activations import ACTIVATIONS, activation_code
from .distributions import (bernoulli_loglik_backward, bernoulli_loglik_dx,
                            bernoulli_loglik_forward, gaussian_loglik_backward, gaussian_loglik_dx,
                            gaussian_loglik_forward)
from .kernels import bind, get_kernels
from .kernels.workspace import Workspace

LIKELIHOODS = ("bernoulli", "gaussian")
OBJECTIVES = ("elbo", "iwae")
FORMAT_VERSION = 1


class Model:
    """Backend, work buffers, config, checkpoints, noise and shared validation (see the module
    docstring). A subclass sets ``model_type``, builds ``self.params`` in ``__init__`` after
    ``_init_common``, and defines ``config``, ``_forward`` and ``_backward``."""

    model_type = "model"
    prior = "gaussian"      # p(z) on the latent the decoder reads: "gaussian", "hierarchical", ...
    conditional = False     # True for models that read labels y (the CVAE)
    host_chain = False      # True for a chain with NumPy glue between its kernels: it gets its
                            # parameters as host arrays (a copy only for device arrays)

    # ------------------------------------------------------------------ construction
    def _init_common(self, activation, likelihood, output_var, dtype, seed, backend):
        """Validate and store the arguments every model of the family shares."""
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self._act = activation_code(activation)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.dtype = as_dtype("dtype", dtype)
        self._output_var = None
        self.output_var = output_var
        self.seed = check_int("seed", seed, min_value=0)
        # one stream for the initial weights, another for the noise drawn when no rng is given
        init_ss, noise_ss = np.random.SeedSequence(self.seed).spawn(2)
        self._init_seed = init_ss
        self.rng = np.random.default_rng(noise_ss)
        self.backend = backend

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON-serialisable); ``type(self)(**config)`` rebuilds the model."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the decoder's variance
    @property
    def output_var(self):
        """The Gaussian likelihood's variance s2: a positive number (fixed) or "learned" (the
        parameter ``dec.logvar``). A fixed value may be reassigned; learned and fixed cannot be
        swapped on an existing model (the parameters differ)."""
        return self._output_var

    @output_var.setter
    def output_var(self, value):
        if isinstance(value, str):
            if value != "learned":
                raise ValueError(f"output_var must be a positive number or 'learned'; got {value!r}")
        else:
            value = check_float("output_var", value, min_value=0.0, min_inclusive=False)
        if self._output_var is not None and (value == "learned") != (self._output_var == "learned"):
            raise ValueError("output_var cannot switch between 'learned' and a fixed value on an "
                             "existing model (the parameters differ); build a new model")
        self._output_var = value
        # the fixed log-variance vector, built here once rather than on every step
        self._fixed_logvar = (None if value == "learned" else
                              np.full(self.input_dim, math.log(value), self.dtype))

    def _dec_logvar(self, p=None):
        """log s2 per data dimension, (D,): the learned vector of ``p`` (default the model's
        parameters) or the fixed one."""
        if self.output_var == "learned":
            return (self.params if p is None else p)["dec.logvar"]
        return self._fixed_logvar

    # ------------------------------------------------------------------ backend and buffers
    @property
    def backend(self) -> str:
        """The kernel backend: "numpy", "numba" or "cuda". Assign to switch an existing model."""
        return self._backend

    @backend.setter
    def backend(self, name):
        # validates the name (and CUDA availability); the raw kernels, since the model
        # validates its own inputs. A new backend gets new work buffers.
        self._k = get_kernels(name, validate=False)
        self._backend = name
        self._workspace = Workspace()
        self._bound = bind(self._k, self._workspace)

    @property
    def kernels(self):
        """The model's kernel set (unbound: its kernels return fresh arrays)."""
        return self._k

    def astype(self, dtype):
        """A copy of the model with parameters cast to ``dtype`` (e.g. float64 for gradcheck)."""
        cfg = dict(self.config, dtype=as_dtype("dtype", dtype).name)
        new = type(self)(**cfg)
        new.params = {key: v.astype(new.dtype) for key, v in self.params.items()}
        return new

    # ------------------------------------------------------------------ validation
    def check_x(self, x, name="x"):
        """``x`` validated as a batch of data, (B, input_dim) of the model's dtype, finite, and in
        [0, 1] for the Bernoulli likelihood; returned C-contiguous."""
        x = check_array(name, x, ndim=2, shape=(None, self.input_dim), dtype=self.dtype)
        if self.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{name} must lie in [0, 1] for the bernoulli likelihood; got values "
                             f"in [{x.min():.4g}, {x.max():.4g}]")
        return x

    def check_y(self, y, batch, name="y"):
        """Labels: refused by the unconditional models (the CVAE overrides this)."""
        if y is not None:
            raise ValueError(f"{name} must be None for {type(self).__name__} (labels are for the CVAE)")
        return None

    def check_call(self, x, y, n_samples, beta, objective, free_bits):
        """The arguments of ``loss_and_grads`` validated: (x, y, n_samples, beta, objective,
        free_bits)."""
        x = self.check_x(x)
        y = self.check_y(y, x.shape[0])
        n_samples = check_int("n_samples", n_samples, min_value=1)
        beta = check_float("beta", beta, min_value=0.0)
        objective = check_choice("objective", objective, OBJECTIVES)
        free_bits = check_float("free_bits", free_bits, min_value=0.0)
        return x, y, n_samples, beta, objective, free_bits

    def _check_params(self, params):
        """``params`` (None: the model's own) as another dict of the same keys and shapes."""
        if params is None:
            return self.params
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
        if params.keys() != self.params.keys():
            raise ValueError(f"params must be a dict with the keys of model.params "
                             f"{list(self.params)}; got {list(params)}")
        for key, v in params.items():
            if not hasattr(v, "shape") or not hasattr(v, "dtype"):
                raise TypeError(f"params[{key!r}] must be an array (NumPy, or a device array of "
                                f"the cuda backend); got {type(v).__name__}")
            if tuple(v.shape) != self.params[key].shape or np.dtype(v.dtype) != self.dtype:
                raise ValueError(f"params[{key!r}] must have shape {self.params[key].shape} and "
                                 f"dtype {self.dtype.name}; got {tuple(v.shape)} {v.dtype}")
        return params

    # ------------------------------------------------------------------ noise
    def _check_eps(self, eps, n_samples, batch):
        return check_array("eps", eps, shape=(n_samples, batch, self.latent_dim), dtype=self.dtype)

    def _noise(self, eps, n_samples, batch, rng):
        """The noise of one call: ``eps`` validated when given, else drawn from ``rng`` (or the
        model's own seeded stream when rng is None)."""
        if eps is not None:
            return self._check_eps(eps, n_samples, batch)
        return self.draw_eps(n_samples, batch, self.rng if rng is None else check_rng("rng", rng))

    def draw_eps(self, n_samples, batch, rng):
        """Standard-normal noise of the structure ``eps`` takes: (n_samples, batch, latent_dim)."""
        n_samples = check_int("n_samples", n_samples, min_value=1)
        batch = check_int("batch", batch, min_value=1)
        return check_rng("rng", rng).standard_normal((n_samples, batch, self.latent_dim),
                                                     dtype=self.dtype)

    # ------------------------------------------------------------------ the likelihood p(x|z)
    def _loglik_forward(self, x, out, p, *, k):
        """log p(x|z_k), (K, B), from the decoder output ``out`` (K, B, D), and its cache."""
        if self.likelihood == "bernoulli":
            return bernoulli_loglik_forward(x, out, k=k)
        return gaussian_loglik_forward(x, out, self._dec_logvar(p), k=k)

    def _loglik_backward(self, dll, cache, grads, *, k):
        """d loss / d out (K, B, D); the learned log-variance's gradient goes into ``grads``."""
        if self.likelihood == "bernoulli":
            return bernoulli_loglik_backward(dll, cache, k=k)
        dout, dlogvar = gaussian_loglik_backward(dll, cache, k=k)
        if self.output_var == "learned":
            grads["dec.logvar"] = dlogvar
        return dout

    def _loglik_dx(self, dll, cache, *, k):
        """d loss / d x through log p(x|z) alone, (B, D), on the host."""
        if self.likelihood == "bernoulli":
            return bernoulli_loglik_dx(dll, cache, k=k)
        return gaussian_loglik_dx(dll, cache, k=k)

    def _mean_of(self, out):
        """The likelihood's mean given the decoder output: sigmoid(logits) or the Gaussian mean."""
        if self.likelihood == "bernoulli":
            return 0.5 * np.tanh(0.5 * out) + 0.5   # sigmoid without overflow
        return out

    # ------------------------------------------------------------------ the chain
    def _forward(self, p, x, y, eps, beta, objective, free_bits, *, k):
        raise NotImplementedError

    def _backward(self, cache, *, k, need_dx):
        raise NotImplementedError

    def _run(self, x, y, eps, beta, objective, free_bits, *, p, k, need_grads, need_dx=False):
        """Forward (and backward) on validated inputs: (result, grads or None, dx or None)."""
        if self.host_chain:
            p = {key: k.to_host(v) for key, v in p.items()}
        result, cache = self._forward(p, x, y, eps, beta, objective, free_bits, k=k)
        if not need_grads:
            return result, None, None
        grads, dx = self._backward(cache, k=k, need_dx=need_dx)
        return result, {key: grads[key] for key in self.params}, dx

    # ------------------------------------------------------------------ public API
    def loss_and_grads(self, x, n_samples=1, beta=1.0, eps=None, rng=None, objective="elbo",
                       free_bits=0.0, y=None, params=None, return_dx=False):
        """Batch loss (nats, mean over the batch) and its gradients, a dict keyed as params.

        Shapes: x (B, D); eps of the structure ``draw_eps`` gives, or None (then drawn from
        ``rng``, or the model's seeded stream). ``objective`` "elbo" (beta-weighted, with
        optional free bits per latent dimension) or "iwae" (minimises -L_K; beta and free_bits
        unused). Passing ``eps`` makes the call deterministic to the last bit on one backend.
        ``params``: evaluate at another dict of arrays with the keys and shapes of
        ``model.params`` (``fit`` passes the device copies on the cuda backend).
        ``return_dx``: also return d loss / d x, (B, D): (loss, grads, dx).

        The gradient arrays are the model's work buffers: valid until the next
        ``loss_and_grads`` on this model, which overwrites them (copy them to keep them). Other
        methods (``loss``, ``encode``, ...) never touch them.
        """
        x, y, n_samples, beta, objective, free_bits = self.check_call(
            x, y, n_samples, beta, objective, free_bits)
        p = self._check_params(params)
        return_dx = check_bool("return_dx", return_dx)
        eps = self._noise(eps, n_samples, x.shape[0], rng)
        self._workspace.rewind()
        result, grads, dx = self._run(x, y, eps, beta, objective, free_bits, p=p, k=self._bound,
                                      need_grads=True, need_dx=return_dx)
        return (result.loss, grads, dx) if return_dx else (result.loss, grads)

    def loss(self, x, n_samples=1, beta=1.0, eps=None, rng=None, objective="elbo",
             free_bits=0.0, y=None, params=None):
        """The same value as ``loss_and_grads`` without the backward pass."""
        x, y, n_samples, beta, objective, free_bits = self.check_call(
            x, y, n_samples, beta, objective, free_bits)
        p = self._check_params(params)
        eps = self._noise(eps, n_samples, x.shape[0], rng)
        return self._run(x, y, eps, beta, objective, free_bits, p=p, k=self._k,
                         need_grads=False)[0].loss

    def forward(self, x, n_samples=1, eps=None, rng=None, objective="elbo", y=None, beta=1.0,
                free_bits=0.0):
        """The forward pass's per-example quantities as a ``LossResult`` (ll, kl, logw, ...)."""
        x, y, n_samples, beta, objective, free_bits = self.check_call(
            x, y, n_samples, beta, objective, free_bits)
        eps = self._noise(eps, n_samples, x.shape[0], rng)
        return self._run(x, y, eps, beta, objective, free_bits, p=self.params, k=self._k,
                         need_grads=False)[0]

    # ------------------------------------------------------------------ checkpoints
    def save(self, path) -> str:
        """Write the parameters and the config to one ``.npz`` (atomically); returns its path."""
        config = {"model_type": self.model_type, "args": self.config,
                  "scratchvae_format": FORMAT_VERSION}
        return _io.save_checkpoint(path, dict(self.params, **self._state_arrays()), config)

    def _state_arrays(self) -> dict:
        """Arrays beyond the parameters that a checkpoint keeps (none here; the VQ-VAE keeps its
        prior over codes and training state). Keys must not collide with parameter keys."""
        return {}

    def _load_state_arrays(self, arrays: dict, path) -> None:
        """Restore what ``_state_arrays`` wrote; ``arrays`` are the checkpoint's non-parameter
        members. A model that keeps none refuses any."""
        if arrays:
            raise ValueError(f"checkpoint {path} has arrays {sorted(arrays)} that are not "
                             f"parameters of a {type(self).__name__}")

    @classmethod
    def load(cls, path):
        """Load a checkpoint written by ``save`` (no pickle). Raises ValueError if the file is
        corrupt, or was written by another model class or architecture."""
        arrays, config = _io.load_checkpoint(path)
        model_type = config.get("model_type")
        if model_type != cls.model_type:
            raise ValueError(f"checkpoint {path} holds a {model_type!r} model; "
                             f"{cls.__name__}.load expects {cls.model_type!r}")
        try:
            model = cls(**config["args"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"checkpoint {path} has an invalid config: {e}") from e
        params = {key: arrays.pop(key) for key in list(arrays) if key in model.params}
        if list(params) != list(model.params):
            raise ValueError(f"checkpoint {path} has parameter keys {list(params)}; the model "
                             f"built from its config expects {list(model.params)}")
        for key, v in params.items():
            want = model.params[key]
            if v.shape != want.shape or v.dtype != want.dtype:
                raise ValueError(f"checkpoint {path}: parameter {key} has shape {v.shape} and "
                                 f"dtype {v.dtype}; expected {want.shape} {want.dtype}")
        model.params = {key: np.ascontiguousarray(v) for key, v in params.items()}
        model._load_state_arrays(arrays, path)
        return model

    def __repr__(self):
        args = ", ".join(f"{name}={v!r}" for name, v in self.config.items())
        return f"{type(self).__name__}({args})"
