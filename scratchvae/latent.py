"""Latent-space operations: encode a dataset, interpolate between codes, latent arithmetic.

Symbols: n examples, D data dimension, d latent dimension, T interpolation steps.

    encode_dataset(model, x, y=None, batch_size=1000)   -> mu (n, d), logvar (n, d)
    interpolate(z0, z1, steps, method)                  -> (T, d), or (n, T, d) for rows of pairs
    interpolate_inputs(model, x0, x1, steps, method)    -> decoded path (T, D) or (n, T, D)
    class_means(model, x, y)                            -> classes (C,), means (C, d)
    latent_arithmetic(model, x_base, attr_plus, attr_minus)
        z_target = z_base + (mean_code(attr_plus) - mean_code(attr_minus)) -> decode(z_target)

Every code here is the encoder's mean mu(x) (the centre of q(z|x)), which is what one uses to
place an input in latent space deterministically. Works for every model of the family: the
VAE, the HVAE (codes are z1, the lower layer) and the CVAE (pass labels ``y``; the decoder then
needs labels too, see each function).
"""
from __future__ import annotations

import numpy as np

from ._checks import check_array, check_choice, check_int

METHODS = ("linear", "spherical")

# Below this |sin(omega)| the two codes are (anti)parallel: the great circle through them is not
# defined by the pair (or the slerp weights lose all precision), so slerp falls back to lines.
_PARALLEL_SIN = 1e-7


def _kw(y):
    return {} if y is None else {"y": y}


def encode_dataset(model, x, y=None, batch_size=1000):
    """Encode ``x`` in batches: the parameters (mu, logvar) of q(z|x) for every row.

    Shapes: x (n, D), y (n,) labels for a conditional model or None -> mu (n, d), logvar (n, d),
    in the model's dtype. Equal (to the last bit) to one ``model.encode(x)`` call up to the
    row-blocking of the matrix products; memory stays bounded by ``batch_size`` rows.
    """
    batch_size = check_int("batch_size", batch_size, min_value=1)
    x = check_array("x", x, ndim=2, dtype=model.dtype)
    if y is not None and (not isinstance(y, np.ndarray) or y.shape[:1] != x.shape[:1]):
        raise ValueError(f"y must be an array of {x.shape[0]} labels (one per row of x); got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    mus, logvars = [], []
    for s in range(0, x.shape[0], batch_size):
        mu, logvar = model.encode(x[s:s + batch_size], **_kw(None if y is None else y[s:s + batch_size]))
        mus.append(mu)
        logvars.append(logvar)
    return np.concatenate(mus), np.concatenate(logvars)


def interpolate(z0, z1, steps=10, method="linear"):
    """Points on the path from z0 to z1, endpoints included.

    Shapes: z0, z1 (d,) -> (T, d); or (n, d) each -> (n, T, d) (one path per row pair).
    Same float dtype as z0 (z1 must match it).
    Equation, t_i = i / (T - 1), i = 0..T-1:
      linear:     z(t) = (1 - t) z0 + t z1
      spherical:  z(t) = sin((1 - t) omega) / sin(omega) z0 + sin(t omega) / sin(omega) z1,
                  cos(omega) = <z0, z1> / (|z0| |z1|)           (slerp, Shoemake 1985)
    Why spherical: under the prior N(0, I) in d dimensions almost all mass sits near the sphere
    of radius sqrt(d); the straight line between two typical codes passes nearer the origin,
    through codes the decoder rarely saw (White 2016). For |z0| = |z1| the slerp path keeps
    that norm exactly. When z0 and z1 are (anti)parallel, |sin(omega)| < 1e-7, or one is zero,
    the great circle is not defined by the pair and slerp returns the linear path.
    """
    method = check_choice("method", method, METHODS)
    steps = check_int("steps", steps, min_value=2)
    z0 = check_array("z0", z0)
    if z0.ndim not in (1, 2):
        raise ValueError(f"z0 must have shape (d,) or (n, d); got {z0.shape}")
    z1 = check_array("z1", z1, shape=z0.shape, dtype=z0.dtype)
    single = z0.ndim == 1
    a, b = np.atleast_2d(z0), np.atleast_2d(z1)                       # (n, d)
    t = np.linspace(0.0, 1.0, steps)                                  # (T,) float64 weights
    w0 = np.broadcast_to(1.0 - t, (a.shape[0], steps)).copy()         # (n, T) weight of z0
    w1 = np.broadcast_to(t, (a.shape[0], steps)).copy()               # (n, T) weight of z1
    if method == "spherical":
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        na, nb = np.linalg.norm(a64, axis=1), np.linalg.norm(b64, axis=1)
        ok = (na > 0) & (nb > 0)
        cos = np.ones_like(na)
        cos[ok] = np.clip((a64[ok] * b64[ok]).sum(axis=1) / (na[ok] * nb[ok]), -1.0, 1.0)
        omega = np.arccos(cos)
        sin = np.sin(omega)
        arc = ok & (np.abs(sin) >= _PARALLEL_SIN)                     # rows on a great circle
        om, s = omega[arc, None], sin[arc, None]
        w0[arc] = np.sin((1.0 - t) * om) / s
        w1[arc] = np.sin(t * om) / s
    # weights are computed in float64 and cast, so a float32 path stays float32
    w0, w1 = w0.astype(z0.dtype), w1.astype(z0.dtype)
    path = w0[:, :, None] * a[:, None, :] + w1[:, :, None] * b[:, None, :]   # (n, T, d)
    return path[0] if single else path


def _decode(model, z, y):
    return model.decode(z, **_kw(y))


def interpolate_inputs(model, x0, x1, steps=10, method="linear", y0=None, y1=None):
    """Decode the latent path between two inputs' codes mu(x0) and mu(x1).

    Shapes: x0, x1 (D,) -> (T, D); or (n, D) each -> (n, T, D). For a conditional model give
    the labels y0, y1 (ints, or (n,) arrays) used to encode x0 and x1; the whole path is then
    decoded with y0 (a style interpolation at a fixed label).
    Equation: path = decode(interpolate(mu(x0), mu(x1), steps, method)).
    """
    x0 = check_array("x0", x0, dtype=model.dtype)
    if x0.ndim not in (1, 2):
        raise ValueError(f"x0 must have shape (D,) or (n, D); got {x0.shape}")
    x1 = check_array("x1", x1, shape=x0.shape, dtype=model.dtype)
    single = x0.ndim == 1
    a, b = np.atleast_2d(x0), np.atleast_2d(x1)
    n = a.shape[0]
    conditional = getattr(model, "conditional", False)
    if conditional and (y0 is None or y1 is None):
        raise ValueError("y0 and y1 (the labels of x0 and x1) are required for a conditional model")
    if not conditional and (y0 is not None or y1 is not None):
        raise ValueError(f"y0 and y1 must be None for {type(model).__name__} (labels are for the CVAE)")
    ya = None if y0 is None else np.broadcast_to(np.asarray(y0, dtype=np.int64), (n,)).copy()
    yb = None if y1 is None else np.broadcast_to(np.asarray(y1, dtype=np.int64), (n,)).copy()
    mu0, _ = model.encode(a, **_kw(ya))
    mu1, _ = model.encode(b, **_kw(yb))
    path = interpolate(mu0, mu1, steps, method)                        # (n, T, d)
    y_path = None if ya is None else np.repeat(ya, steps)
    out = _decode(model, path.reshape(n * steps, -1), y_path).reshape(n, steps, -1)
    return out[0] if single else out


def class_means(model, x, y, batch_size=1000):
    """The mean code of each class: m_c = mean over {i : y_i = c} of mu(x_i).

    Shapes: x (n, D), y (n,) integer labels -> classes (C,) the sorted distinct labels,
    means (C, d) in the model's dtype, means[j] belonging to classes[j]. A conditional model
    encodes each x_i with its own label.
    """
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must be a numpy array of integer labels; got "
                        f"{getattr(y, 'dtype', type(y).__name__)}")
    x = check_array("x", x, ndim=2, dtype=model.dtype)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},) to match x; got {y.shape}")
    mu, _ = encode_dataset(model, x, y if getattr(model, "conditional", False) else None,
                           batch_size=batch_size)
    classes = np.unique(y)
    means = np.stack([mu[y == c].mean(axis=0) for c in classes]).astype(model.dtype, copy=False)
    return classes, means


def latent_arithmetic(model, x_base, attr_plus, attr_minus, *, y_base=None, y_plus=None,
                      y_minus=None, return_latent=False):
    """Add an attribute vector to codes and decode: "base + (attr+ - attr-)".

    Shapes: x_base (n, D); attr_plus (m1, D) and attr_minus (m2, D) are sets of inputs whose
    mean codes define the attribute vector (e.g. all training images of class 7 and of class 1:
    the class means as attribute vectors) -> decoded images (n, D); with ``return_latent`` also
    z_target (n, d).
    Equation: a = mean_i mu(attr_plus_i) - mean_j mu(attr_minus_j);
              z_target = mu(x_base) + a;   result = decode(z_target).
    A conditional model needs the labels of each set (y_base, y_plus, y_minus; (n,), (m1,),
    (m2,)) and decodes with y_base.
    """
    for name, v in (("x_base", x_base), ("attr_plus", attr_plus), ("attr_minus", attr_minus)):
        check_array(name, v, ndim=2, shape=(None, model.input_dim), dtype=model.dtype)
    conditional = getattr(model, "conditional", False)
    labels = (y_base, y_plus, y_minus)
    if conditional and any(v is None for v in labels):
        raise ValueError("y_base, y_plus and y_minus are required for a conditional model")
    if not conditional and any(v is not None for v in labels):
        raise ValueError(f"y_base, y_plus and y_minus must be None for {type(model).__name__}")
    z_base, _ = encode_dataset(model, x_base, y_base)
    z_plus = encode_dataset(model, attr_plus, y_plus)[0].mean(axis=0)
    z_minus = encode_dataset(model, attr_minus, y_minus)[0].mean(axis=0)
    z_target = z_base + (z_plus - z_minus)
    out = _decode(model, z_target, y_base)
    return (out, z_target) if return_latent else out


__all__ = ["encode_dataset", "interpolate", "interpolate_inputs", "class_means",
           "latent_arithmetic", "METHODS"]
