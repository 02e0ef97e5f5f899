"""Training: ``fit`` runs shuffled minibatch optimisation of any model of the family, records a
per-epoch history, stops cleanly on divergence and optionally early on validation loss.

History entries (one value per epoch): epoch, beta (at the epoch's last step), train_loss (mean
of the minibatch losses), val_loss (negative ELBO with beta = 1 on x_val, or on up to 1000
training examples when there is no x_val), recon (mean -log p(x|z)), kl (mean KL),
kl_per_dim (list of d values), active_units, seconds. A model may add its own columns: one
with a ``history_terms(x_eval)`` method gives the validation entries itself (the VQ-VAE: its
loss terms and codebook use; see ``VQVAE.history_terms``), and one with ``after_step(params)``
has it called after every optimizer step (the VQ-VAE's EMA codebook update and restarts).
"""
from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ._checks import check_float, check_int
from .data import bernoulli_sample
from .evaluate import active_units, elbo_terms
from .optim import Adam, Optimizer


class DivergenceError(RuntimeError):
    """Training produced a NaN or inf loss or gradient; the model keeps its last good parameters."""


class History(dict):
    """Per-epoch training history: a dict from column name to a list, one entry per epoch."""

    COLUMNS = ("epoch", "beta", "train_loss", "val_loss", "recon", "kl", "active_units", "seconds")

    def __init__(self):
        super().__init__({c: [] for c in self.COLUMNS + ("kl_per_dim",)})

    def rows(self):
        """One dict per epoch (kl_per_dim spread into kl_0, kl_1, ...), e.g. for a CSV file."""
        out = []
        extra = [c for c in self if c not in self.COLUMNS and c != "kl_per_dim"]
        for i in range(len(self["epoch"])):
            row = {c: self[c][i] for c in self.COLUMNS + tuple(extra)}
            row.update({f"kl_{j}": v for j, v in enumerate(self["kl_per_dim"][i])})
            out.append(row)
        return out


def _all_finite(k, loss, arrays) -> bool:
    """The loss and every array finite, checked by the backend's ``all_finite`` kernel (no
    temporary arrays; on the device for device arrays)."""
    return bool(np.isfinite(loss)) and all(k.all_finite(a) for a in arrays.values())


def _copy_all(k, dst: dict, src: dict) -> None:
    """dst[key][...] = src[key] for every key (skipped where they are the same array)."""
    for key, v in src.items():
        if dst[key] is not v:
            k.copyto(dst[key], v)


def fit(model, x_train, x_val=None, epochs=10, batch_size=128, optimizer=None, n_samples=1,
        beta=1.0, seed=0, progress=True, y_train=None, y_val=None, objective="elbo",
        free_bits=0.0, kl_warmup=0, binarize=False, patience=None, callback=None):
    """Train ``model`` in place and return its ``History``.

    Arguments beyond the basic ones:
      beta       a number, or a schedule: a callable step -> beta (see ``scratchvae.schedules``)
      kl_warmup  epochs of linear warm-up of beta from ~0 to ``beta`` (0: none)
      objective  "elbo" or "iwae";  free_bits  minimum KL per latent dimension (nats), 0 = off
      binarize   True: dynamic binarization, a fresh draw x_bin ~ Bernoulli(x) every epoch
      patience   early stopping: stop after this many epochs without a better val_loss and
                 restore the best parameters (None: train all epochs)
      callback   called as callback(epoch, history) after each epoch
    Minibatches are drawn without replacement from a Generator seeded by ``seed``; so is the noise.
    A NaN or inf loss or gradient raises DivergenceError naming the epoch and step, and leaves the
    model at the last parameters whose loss and gradients were finite.

    Each step is ``model.loss_and_grads(xb, ..., params=params)`` then ``optimizer.step``, the
    loop a user writes. The hot path allocates no arrays after the first step of each batch shape
    (the noise aside): the model takes its work arrays from its own workspace, each epoch's data
    is shuffled into one reused buffer (so minibatches are contiguous slices), and the gradients
    of a step are consumed by the optimizer before the next step overwrites them. On the cuda
    backend the parameters, the optimizer state and the work buffers stay on the device across
    steps; the parameters are copied back to ``model.params`` at the end of every epoch (for the
    validation pass, the history, the callback and early stopping) and when training stops.
    """
    x_train = model.check_x(x_train, "x_train")
    n = x_train.shape[0]
    y_train = _check_labels(model, y_train, n, "y_train")
    # objective, free_bits and n_samples validated here, before the first epoch, so that a bad
    # option fails at once (each step's loss_and_grads checks its arguments again)
    _, _, n_samples, _, objective, free_bits = model.check_call(
        x_train[:1], _head(y_train, 1), n_samples, 1.0, objective, free_bits)
    if x_val is not None:
        x_val = model.check_x(x_val, "x_val")
        y_val = _check_labels(model, y_val, x_val.shape[0], "y_val")
    epochs = check_int("epochs", epochs, min_value=1)
    batch_size = check_int("batch_size", batch_size, min_value=1)
    seed = check_int("seed", seed, min_value=0)
    kl_warmup = check_int("kl_warmup", kl_warmup, min_value=0)
    if patience is not None:
        patience = check_int("patience", patience, min_value=1)
    steps_per_epoch = -(-n // batch_size)
    if callable(beta):
        if kl_warmup:
            raise ValueError("kl_warmup must be 0 when beta is a schedule (the schedule sets beta)")
        schedule = beta
    else:
        beta = check_float("beta", beta, min_value=0.0)
        schedule = ((lambda t: beta * min(1.0, (t + 1) / (kl_warmup * steps_per_epoch)))
                    if kl_warmup else (lambda t: beta))
    optimizer = Adam() if optimizer is None else optimizer

    rng = np.random.default_rng(seed)
    x_eval, y_eval = (x_val, y_val) if x_val is not None else (x_train[:1000], _head(y_train, 1000))
    history = History()
    k = model.kernels
    # the arrays the steps update: model.params itself on the CPU backends (to_device is the
    # identity there), their device copies on the cuda backend
    params = {key: k.to_device(v) for key, v in model.params.items()}
    backup = {key: k.to_device(np.empty_like(v)) for key, v in model.params.items()}
    x_shuffled = np.empty_like(x_train)
    after_step = getattr(model, "after_step", None)
    best = (np.inf, None)
    since_best = 0
    step = 0
    bar = tqdm(range(1, epochs + 1), desc="epochs", unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        x_epoch = bernoulli_sample(x_train, rng) if binarize else x_train
        order = rng.permutation(n)
        np.take(x_epoch, order, axis=0, out=x_shuffled)   # minibatches become contiguous slices
        y_shuffled = None if y_train is None else y_train[order]
        losses = []
        for i, start in enumerate(range(0, n, batch_size), start=1):
            xb = x_shuffled[start:start + batch_size]
            yb = None if y_shuffled is None else y_shuffled[start:start + batch_size]
            beta_t = check_float("beta", schedule(step), min_value=0.0)
            eps = model.draw_eps(n_samples, xb.shape[0], rng)
            loss, grads = model.loss_and_grads(xb, y=yb, n_samples=n_samples, beta=beta_t,
                                               eps=eps, objective=objective,
                                               free_bits=free_bits, params=params)
            if not _all_finite(k, loss, grads):
                if step > 0:   # the parameters before the last update had a finite loss and grads
                    _copy_all(k, params, backup)
                _copy_all(k, model.params, params)
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {i} (global step {step + 1}): the "
                    f"loss or a gradient is NaN or inf (loss = {loss}); the model keeps the last "
                    f"parameters whose loss and gradients were finite. Try a smaller learning rate.")
            _copy_all(k, backup, params)
            if isinstance(optimizer, Optimizer):
                optimizer.step(params, grads, check_finite=False)   # just checked above
            else:
                optimizer.step(params, grads)
            if not all(k.all_finite(v) for v in params.values()):
                _copy_all(k, params, backup)
                _copy_all(k, model.params, params)
                raise DivergenceError(
                    f"training diverged at epoch {epoch}, step {i}: the optimizer step made a "
                    f"parameter NaN or inf; the parameters before that step were restored.")
            if after_step is not None:
                after_step(params)      # e.g. the VQ-VAE's EMA codebook update and restarts
            losses.append(loss)
            step += 1
        _copy_all(k, model.params, params)   # the device copies come back (cuda only)
        if hasattr(model, "history_terms"):       # the model's own validation entries
            entries = model.history_terms(x_eval)
        else:
            terms = elbo_terms(model, x_eval, y=y_eval, rng=np.random.default_rng([seed, epoch]))
            entries = dict(val_loss=float(np.mean(terms.recon + terms.kl)),
                           recon=float(terms.recon.mean()), kl=float(terms.kl.mean()),
                           kl_per_dim=[float(v) for v in terms.kl_per_dim.mean(axis=0)],
                           active_units=int(active_units(model, x_eval, y=y_eval)))
        val_loss = entries["val_loss"]
        _append(history, epoch=epoch, beta=float(beta_t), train_loss=float(np.mean(losses)),
                seconds=time.perf_counter() - t0, **entries)
        bar.set_postfix(train=f"{history['train_loss'][-1]:.3f}", val=f"{val_loss:.3f}")
        if callback is not None:
            callback(epoch, history)
        if patience is not None:
            if val_loss < best[0]:
                best = (val_loss, {key: v.copy() for key, v in model.params.items()})
                since_best = 0
            else:
                since_best += 1
                if since_best >= patience:
                    break
    if patience is not None and best[1] is not None:
        for key, v in model.params.items():
            np.copyto(v, best[1][key])
    return history


def _append(history, **values):
    for key, v in values.items():
        history.setdefault(key, []).append(v)


def _head(y, n):
    return None if y is None else y[:n]


def _check_labels(model, y, n, name):
    """Labels go with the conditional model only; its own check validates them."""
    if getattr(model, "conditional", False):
        return model.check_y(y, n, name=name)      # raises "CVAE needs labels y_train" on None
    if y is not None:
        raise ValueError(f"{name} must be None for {type(model).__name__} (labels are for the CVAE)")
    return None
