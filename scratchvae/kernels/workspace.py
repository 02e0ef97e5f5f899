"""Work buffers reused across training steps: after the first step of a given shape, a step
allocates no arrays.

A training step computes the same sequence of arrays every time (same shapes, same order), so
the buffers of one step can serve the next. ``Workspace`` hands out buffers *by position in that
sequence*: call ``rewind()`` at the start of a step, then every ``empty(shape, dtype)`` returns
the buffer that the same call returned last step, allocating only when a (position, shape,
dtype) is new. The last minibatch of an epoch is usually smaller; its buffers are kept beside
the full-size ones, so an epoch's two shapes alternate without reallocating.

It lives with the kernels, which import nothing else from scratchvae. Every array-returning
kernel takes ``ws=None`` (``scratchvae/kernels/__init__.py``): with ``None`` its outputs and
temporaries are fresh arrays (what a reader calling a kernel expects); with a Workspace they are
the workspace's buffers. Code above the kernels never passes ``ws``: ``kernels.bind(k, ws)``
gives a kernel set whose kernels take it. The price of reuse is aliasing: whatever a step
returned (loss terms, gradients, caches) is overwritten by the next step that rewinds the same
workspace. Each model owns one workspace and rewinds it at every ``loss_and_grads``, so the
gradients it returns stay valid until its next ``loss_and_grads``.
"""
from __future__ import annotations

import numpy as np


class Workspace:
    """Buffers keyed by (position in the step, shape, dtype, allocator); see the module docstring.

    ``allocations`` is the number of buffers held, each allocated once (a test reads it to check
    that a second step of the same shape creates none); ``nbytes`` is the memory they hold.
    """

    def __init__(self):
        self._buffers: dict = {}
        self._position = 0

    def rewind(self) -> None:
        """Start a new step: the next ``empty`` returns the first buffer again."""
        self._position = 0

    def empty(self, shape, dtype, new=np.empty):
        """An uninitialised array of ``shape`` and ``dtype``: the one this position returned
        before, or a new one from ``new(shape, dtype)`` (``np.empty``; the CUDA kernels pass
        ``cuda.device_array`` so device buffers are reused too)."""
        # the arguments themselves are the key (no normalising: this runs ~100 times a step);
        # a call site passes the same kind of shape and dtype every step
        key = (self._position, shape, dtype, new)
        self._position += 1
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = new(shape, dtype)
        return buf

    @property
    def allocations(self) -> int:
        return len(self._buffers)

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buffers.values())

    def clear(self) -> None:
        """Drop every buffer (memory is freed once nothing else refers to them)."""
        self._buffers.clear()
        self._position = 0

    def __repr__(self):
        return (f"Workspace({len(self._buffers)} buffers, {self.nbytes / 2**20:.1f} MiB, "
                f"position {self._position})")


def empty(ws: Workspace | None, shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` without a workspace, else the workspace's buffer."""
    return np.empty(shape, dtype) if ws is None else ws.empty(shape, dtype)


__all__ = ["Workspace", "empty"]
