"""Every figure of scratchvae, drawn with matplotlib's object-oriented API (no pyplot).

Each function takes plain arrays (``plot_manifold`` takes a ``decode`` callable), returns a
``matplotlib.figure.Figure`` and, given ``path=``, saves it there. Figures are built with
``Figure()`` directly, never through ``pyplot``: nothing opens a window, no global list of
figures grows, and saving works headless (``savefig`` uses the Agg canvas). In a notebook, show
one with ``IPython.display.display(fig)``. This module imports nothing from the model: callers
pass arrays, so the figures can be reused for any model or data.

Symbols and shapes used below:
    n        examples (images, codes, inputs)
    D        pixels per image; an image row is a flattened (height, width) picture
    d        latent dimensions
    E        epochs;  C classes;  G1, G2 grid sizes along z_1 and z_2
    images   (n, D) grey levels in [0, 1]; values outside [vmin, vmax] are clipped by the
             colour map. ``image_shape=(height, width)`` with height * width == D; by default a
             square of side sqrt(D) (an error if D is not a perfect square).

Options shared by every function:
    path     str or pathlib.Path ending in .png (or .pdf / .svg); its directory must exist.
    dpi      resolution of the saved file: the PNG is figsize[1]*dpi by figsize[0]*dpi pixels.
    figsize  (width, height) in inches; each function picks a size from its content if None.
    title    optional figure title.

Log densities and bounds are in nats.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from scratchvae._checks import as_dtype, check_float, check_int

__all__ = [
    "image_grid", "plot_history", "plot_reconstructions", "plot_samples", "plot_latent_scatter",
    "plot_manifold", "plot_interpolation", "plot_arithmetic", "plot_posterior_contours",
    "plot_posterior_holes",
    "plot_iw_bound", "plot_kl_per_dim", "plot_estimator_variance", "plot_analogies",
    "plot_imputation", "plot_roc",
    "plot_codebook_usage",
    "plot_posterior_comparison", "plot_sweep",
]

_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
_MAX_DISCRETE = 20          # up to this many distinct labels get a legend, more a colour bar


# --------------------------------------------------------------------------------------------
# Validation helpers (each error names the argument)
# --------------------------------------------------------------------------------------------

def _check_path(path) -> Path | None:
    """Return ``path`` as a Path (or None); its suffix must be known and its directory exist."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or pathlib.Path; got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() not in _FORMATS:
        raise ValueError(f"path must end in .png (or .pdf, .svg); got {str(p)!r}")
    if not p.parent.is_dir():
        raise ValueError(f"path: the directory {str(p.parent)!r} does not exist; create it first")
    return p


def _is_sequence(v) -> bool:
    """True for lists, tuples and arrays (not for strings)."""
    return isinstance(v, (Sequence, np.ndarray)) and not isinstance(v, (str, bytes))


def _check_common(path, dpi, figsize):
    """Validate the options every function shares; return (path, dpi, figsize)."""
    p = _check_path(path)
    dpi = check_float("dpi", dpi, min_value=0.0, min_inclusive=False)
    if figsize is not None:
        if not _is_sequence(figsize):
            raise TypeError(f"figsize must be a (width, height) pair in inches; "
                            f"got {type(figsize).__name__}")
        if len(figsize) != 2:
            raise ValueError(f"figsize must be a (width, height) pair in inches; got {figsize!r}")
        figsize = (check_float("figsize[0]", figsize[0], min_value=0.0, min_inclusive=False),
                   check_float("figsize[1]", figsize[1], min_value=0.0, min_inclusive=False))
    return p, dpi, figsize


def _grid_axes(z1, z2):
    """The two axes of a 2-D latent grid: 1-D, numeric, strictly increasing, >= 2 points each."""
    axes = (_numeric("z1", z1, ndim=1, expected="(G1,)"), _numeric("z2", z2, ndim=1, expected="(G2,)"))
    for name, a in zip(("z1", "z2"), axes):
        if a.size < 2 or np.any(np.diff(a) <= 0):
            raise ValueError(f"{name} must be a strictly increasing grid of at least 2 points")
    return axes


def _numeric(name: str, a, *, ndim: int, expected: str, allow_nan: bool = False,
             allow_neginf: bool = False) -> np.ndarray:
    """Check an array-like of real numbers with ``ndim`` axes, non-empty and finite.

    Returns a float64 copy for drawing only: nothing computed from it flows back to the caller,
    so converting here never changes the dtype of a model computation.
    """
    try:
        arr = np.asarray(a)
    except ValueError as e:             # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array of numbers {expected}: {e}") from e
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional with shape {expected}; "
                         f"got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    arr = arr.astype(np.float64)
    ok = np.isfinite(arr)
    if allow_nan:
        ok |= np.isnan(arr)
    if allow_neginf:
        ok |= np.isneginf(arr)
    if not ok.all():
        what = "finite" + (" or NaN" if allow_nan else "") + (" or -inf" if allow_neginf else "")
        raise ValueError(f"{name} must be {what}; it has {int(arr.size - ok.sum())} bad entries")
    return arr


def _scalar(name: str, v) -> float | None:
    """Check an optional finite real number."""
    return None if v is None else check_float(name, v)


def _image_shape(image_shape, D: int, data_name: str) -> tuple[int, int]:
    """Return (height, width) with height * width == D; default: a square of side sqrt(D)."""
    if image_shape is None:
        side = math.isqrt(D)
        if side * side != D:
            raise ValueError(f"{data_name} has D={D} columns, which is not a perfect square; "
                             f"pass image_shape=(height, width) with height * width == {D}")
        return side, side
    if not _is_sequence(image_shape):
        raise TypeError(f"image_shape must be a (height, width) pair of ints; "
                        f"got {type(image_shape).__name__}")
    if len(image_shape) != 2:
        raise ValueError(f"image_shape must be a (height, width) pair; got {tuple(image_shape)}")
    h = check_int("image_shape[0]", image_shape[0], min_value=1)
    w = check_int("image_shape[1]", image_shape[1], min_value=1)
    if h * w != D:
        raise ValueError(f"image_shape {(h, w)} holds {h * w} pixels but {data_name} has "
                         f"D={D} columns")
    return h, w


def _images(name: str, a, *, ndim: int = 2, expected: str = "(n, D)") -> np.ndarray:
    """Check flattened images: real numbers, ``ndim`` axes, non-empty, finite, not 0..255."""
    arr = _numeric(name, a, ndim=ndim, expected=expected)
    if np.asarray(a).dtype.kind in "iu" and arr.max() > 1:
        raise ValueError(f"{name} must hold grey levels in [0, 1]; got integers up to "
                         f"{arr.max():.0f} (divide 8-bit images by 255)")
    return arr


def _strings(name: str, labels, n: int) -> list[str] | None:
    """Check an optional sequence of ``n`` labels; return them as strings."""
    if labels is None:
        return None
    if not _is_sequence(labels):
        raise TypeError(f"{name} must be a sequence of {n} strings; got {type(labels).__name__}")
    if len(labels) != n:
        raise ValueError(f"{name} must have {n} entries; got {len(labels)}")
    return [str(s) for s in labels]


# --------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------

def _finish(fig: Figure, path: Path | None, dpi: float) -> Figure:
    """Save ``fig`` to ``path`` (if given) at ``dpi`` and return it."""
    if path is not None:
        fig.savefig(path, dpi=dpi, format=_FORMATS[path.suffix.lower()])
    return fig


def _blank(ax) -> None:
    """Remove ticks and frame but keep the axis labels usable (row labels are y labels)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _image_table(cells, *, hw: tuple[int, int], dpi: float, figsize, title=None,
                 row_labels=None, col_titles=None, cell_titles=None, width_ratios=None,
                 cell_inches: float = 0.8, cmap: str = "gray", vmin: float = 0.0,
                 vmax: float = 1.0) -> Figure:
    """Lay out a table of cells: an image (h, w) or (h, w, 3), a text symbol (str), or None.

    Sizes are worked out in inches so that every image cell is cell_inches wide, with margins
    for row labels, column titles, per-cell titles and the figure title.
    """
    nrows, ncols = len(cells), len(cells[0])
    wr = np.ones(ncols) if width_ratios is None else np.asarray(width_ratios, dtype=float)
    cell_h = cell_inches * hw[0] / hw[1]
    gap = 0.06                                      # space between cells, fraction of a cell
    per_cell_title = 0.22 if cell_titles is not None else 0.0
    left = 1.05 if row_labels is not None else 0.06
    right, bottom = 0.06, 0.06
    top = (0.06 + per_cell_title + (0.25 if col_titles is not None else 0.0)
           + (0.35 if title else 0.0))
    hspace = gap + per_cell_title / cell_h
    axes_w = cell_inches * float(wr.mean())         # average column width (ratio 1 = one image)
    width = left + right + axes_w * (ncols + gap * (ncols - 1))
    height = top + bottom + cell_h * (nrows + hspace * (nrows - 1))
    if figsize is None:
        figsize = (width, height)
    fw, fh = figsize
    fig = Figure(figsize=figsize, dpi=dpi)
    gs = fig.add_gridspec(nrows, ncols, width_ratios=wr, wspace=gap, hspace=hspace,
                          left=min(left / fw, 0.45), right=1 - min(right / fw, 0.2),
                          bottom=min(bottom / fh, 0.2), top=1 - min(top / fh, 0.45))
    for r in range(nrows):
        for c in range(ncols):
            ax = fig.add_subplot(gs[r, c])
            _blank(ax)
            cell = cells[r][c]
            if isinstance(cell, str):
                ax.text(0.5, 0.5, cell, ha="center", va="center", fontsize=14,
                        transform=ax.transAxes)
            elif cell is not None:
                if cell.ndim == 2:
                    ax.imshow(cell, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
                else:
                    ax.imshow(np.clip(cell, 0.0, 1.0), interpolation="nearest")
            if cell_titles is not None and cell_titles[r][c]:
                ax.set_title(cell_titles[r][c], fontsize=8, pad=2)
            if r == 0 and col_titles is not None and col_titles[c]:
                ax.set_title(col_titles[c], fontsize=9, pad=3)
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9,
                              labelpad=4)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _principal_axes(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project ``z`` (n, d) on its first two principal axes.

    Equation: zc = z - mean(z, axis=0);  zc = U S Vt (thin SVD);  proj = zc @ Vt[:2].T;
    explained[i] = S[i]^2 / sum(S^2)  (0 when all rows are equal). Each axis's sign is chosen so
    that its largest-magnitude loading is positive, which makes the picture reproducible.
    Returns proj (n, 2) and explained (2,).
    """
    zc = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(zc, full_matrices=False)
    axes = vt[:2]
    if axes.shape[0] < 2:               # n == 1: one singular vector; pad with a zero axis
        axes = np.vstack([axes, np.zeros((2 - axes.shape[0], z.shape[1]))])
        s = np.concatenate([s, np.zeros(2 - s.shape[0])])
    signs = np.sign(axes[np.arange(2), np.argmax(np.abs(axes), axis=1)])
    axes = axes * np.where(signs == 0, 1.0, signs)[:, None]
    total = float(np.sum(s ** 2))
    explained = s[:2] ** 2 / total if total > 0 else np.zeros(2)
    return zc @ axes.T, explained


# --------------------------------------------------------------------------------------------
# Image figures
# --------------------------------------------------------------------------------------------

def _grid(images, image_shape, ncols, titles, path, *, name, dpi, figsize, title, cell_inches,
          cmap, vmin, vmax) -> Figure:
    """Shared body of image_grid and plot_samples (``name`` is the argument in messages)."""
    path, dpi, figsize = _check_common(path, dpi, figsize)
    x = _images(name, images)
    hw = _image_shape(image_shape, x.shape[1], name)
    n = x.shape[0]
    ncols = math.ceil(math.sqrt(n)) if ncols is None else check_int("ncols", ncols, min_value=1)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    titles = _strings("titles", titles, n)
    cells = [[x[r * ncols + c].reshape(hw) if r * ncols + c < n else None
              for c in range(ncols)] for r in range(nrows)]
    cell_titles = None if titles is None else [
        [titles[r * ncols + c] if r * ncols + c < n else "" for c in range(ncols)]
        for r in range(nrows)]
    fig = _image_table(cells, hw=hw, dpi=dpi, figsize=figsize, title=title,
                       cell_titles=cell_titles, cell_inches=cell_inches, cmap=cmap, vmin=vmin,
                       vmax=vmax)
    return _finish(fig, path, dpi)


def image_grid(images, image_shape=None, ncols=None, titles=None, path=None, *, dpi=100,
               figsize=None, title=None, cell_inches=0.8, cmap="gray", vmin=0.0,
               vmax=1.0) -> Figure:
    """Show flattened images as a grid of greyscale pictures.

    Shapes: images (n, D) with values in [0, 1]; titles: n strings or None. ncols defaults to
    ceil(sqrt(n)); the grid has ceil(n / ncols) rows.
    """
    return _grid(images, image_shape, ncols, titles, path, name="images", dpi=dpi,
                 figsize=figsize, title=title, cell_inches=cell_inches, cmap=cmap, vmin=vmin,
                 vmax=vmax)


def plot_samples(x, image_shape=None, path=None, *, ncols=None, dpi=100, figsize=None,
                 title="samples from the prior", cell_inches=0.8, cmap="gray", vmin=0.0,
                 vmax=1.0) -> Figure:
    """Show samples from the prior (decoded means of z ~ N(0, I)) as a grid.

    Shapes: x (n, D), e.g. ``model.sample(n)``.
    """
    return _grid(x, image_shape, ncols, None, path, name="x", dpi=dpi, figsize=figsize,
                 title=title, cell_inches=cell_inches, cmap=cmap, vmin=vmin, vmax=vmax)


def plot_reconstructions(x, x_rec, image_shape=None, n=10, path=None, *, dpi=100, figsize=None,
                         title=None, cell_inches=0.8, cmap="gray", vmin=0.0,
                         vmax=1.0) -> Figure:
    """Show inputs (top row) above their reconstructions (bottom row).

    Shapes: x (B, D), x_rec (B, D), e.g. ``model.decode(model.encode(x)[0])``; the first
    min(n, B) columns are shown.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    x = _images("x", x)
    x_rec = _images("x_rec", x_rec)
    if x_rec.shape != x.shape:
        raise ValueError(f"x_rec must have the shape of x {x.shape}; got {x_rec.shape}")
    n = min(check_int("n", n, min_value=1), x.shape[0])
    hw = _image_shape(image_shape, x.shape[1], "x")
    cells = [[row[i].reshape(hw) for i in range(n)] for row in (x, x_rec)]
    fig = _image_table(cells, hw=hw, dpi=dpi, figsize=figsize, title=title,
                       row_labels=["input", "reconstruction"], cell_inches=cell_inches,
                       cmap=cmap, vmin=vmin, vmax=vmax)
    return _finish(fig, path, dpi)


def plot_interpolation(rows, image_shape=None, row_labels=None, path=None, *, dpi=100,
                       figsize=None, title=None, cell_inches=0.8, cmap="gray", vmin=0.0,
                       vmax=1.0) -> Figure:
    """Show interpolation strips (e.g. linear and spherical), one strip per row.

    Shapes: rows is a list of (steps, D) arrays (strips may differ in length) or a single
    (R, steps, D) array; row_labels: one string per strip, e.g. ["linear", "slerp"].
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    if isinstance(rows, np.ndarray):
        if rows.ndim != 3:
            raise ValueError(f"rows must be a list of (steps, D) arrays or an (R, steps, D) "
                             f"array; got an array of shape {rows.shape}")
        rows = list(rows)
    if not _is_sequence(rows):
        raise TypeError(f"rows must be a list of (steps, D) arrays; got {type(rows).__name__}")
    if len(rows) == 0:
        raise ValueError("rows must not be empty; pass at least one (steps, D) strip")
    strips = [_images(f"rows[{i}]", r, expected="(steps, D)") for i, r in enumerate(rows)]
    D = strips[0].shape[1]
    for i, s in enumerate(strips):
        if s.shape[1] != D:
            raise ValueError(f"rows[{i}] must have D={D} columns like rows[0]; got {s.shape[1]}")
    hw = _image_shape(image_shape, D, "rows[0]")
    row_labels = _strings("row_labels", row_labels, len(strips))
    ncols = max(s.shape[0] for s in strips)
    cells = [[s[i].reshape(hw) if i < s.shape[0] else None for i in range(ncols)]
             for s in strips]
    fig = _image_table(cells, hw=hw, dpi=dpi, figsize=figsize, title=title,
                       row_labels=row_labels, cell_inches=cell_inches, cmap=cmap, vmin=vmin,
                       vmax=vmax)
    return _finish(fig, path, dpi)


def plot_arithmetic(base, plus, minus, result, image_shape=None, path=None, *, dpi=100,
                    figsize=None, title=None, cell_inches=0.8, cmap="gray", vmin=0.0,
                    vmax=1.0) -> Figure:
    """Show latent arithmetic, one row per example: base + (attr+ - attr-) = result.

    Shapes: base, plus, minus, result all (n, D). Equation (done by the caller in latent
    space): z_result = z_base + (z_plus - z_minus); result = decode(z_result).
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    base = _images("base", base)
    arrays = {"plus": plus, "minus": minus, "result": result}
    checked = {}
    for name, a in arrays.items():
        checked[name] = _images(name, a)
        if checked[name].shape != base.shape:
            raise ValueError(f"{name} must have the shape of base {base.shape}; "
                             f"got {checked[name].shape}")
    hw = _image_shape(image_shape, base.shape[1], "base")
    cells = [[base[i].reshape(hw), "+ (", checked["plus"][i].reshape(hw), "\u2212",
              checked["minus"][i].reshape(hw), ") =", checked["result"][i].reshape(hw)]
             for i in range(base.shape[0])]
    col_titles = ["base", "", "attribute +", "", "attribute \u2212", "", "result"]
    fig = _image_table(cells, hw=hw, dpi=dpi, figsize=figsize, title=title,
                       col_titles=col_titles, width_ratios=[1, 0.45, 1, 0.35, 1, 0.45, 1],
                       cell_inches=cell_inches, cmap=cmap, vmin=vmin, vmax=vmax)
    return _finish(fig, path, dpi)


def plot_analogies(inputs, grid, image_shape=None, path=None, *, class_names=None, dpi=100,
                   figsize=None, title=None, cell_inches=0.8, cmap="gray", vmin=0.0,
                   vmax=1.0) -> Figure:
    """Show CVAE analogies: each input's style decoded under every label.

    Shapes: inputs (n, D) in the first column; grid (n, C, D), where grid[i, c] is
    decode(mu(x_i, y_i), c). Column titles are the labels 0..C-1 (or class_names, C strings).
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    x = _images("inputs", inputs)
    g = _images("grid", grid, ndim=3, expected="(n, C, D)")
    if g.shape[0] != x.shape[0] or g.shape[2] != x.shape[1]:
        raise ValueError(f"grid must have shape (n, C, D) = ({x.shape[0]}, C, {x.shape[1]}) "
                         f"to match inputs; got {g.shape}")
    hw = _image_shape(image_shape, x.shape[1], "inputs")
    C = g.shape[1]
    names = _strings("class_names", class_names, C) or [str(c) for c in range(C)]
    cells = [[x[i].reshape(hw), None] + [g[i, c].reshape(hw) for c in range(C)]
             for i in range(x.shape[0])]
    fig = _image_table(cells, hw=hw, dpi=dpi, figsize=figsize, title=title,
                       col_titles=["input", ""] + names, width_ratios=[1, 0.25] + [1] * C,
                       cell_inches=cell_inches, cmap=cmap, vmin=vmin, vmax=vmax)
    return _finish(fig, path, dpi)


def plot_imputation(x_true, x_masked, x_imputed, mask, image_shape=None, path=None, *, n=10,
                    imputed_labels=None, missing_color=(1.0, 0.0, 0.0), dpi=100, figsize=None,
                    title=None, cell_inches=0.8) -> Figure:
    """Show missing-data imputation: original, observed (missing pixels coloured), imputed.

    Shapes: x_true, x_masked (n, D); mask (n, D) bool, True where a pixel is MISSING (hidden
    from the model); x_imputed (n, D), or a list of (n, D) arrays / an (R, n, D) array for
    several imputed rows (e.g. successive iterations), labelled by imputed_labels. Observed
    pixels are drawn in grey, missing ones in missing_color (RGB in [0, 1]). The first
    min(n, n_examples) columns are shown.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    xt = _images("x_true", x_true)
    xm = _images("x_masked", x_masked)
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise TypeError(f"mask must be a boolean array (True = missing); got dtype {m.dtype}")
    if isinstance(x_imputed, np.ndarray) and x_imputed.ndim == 3:
        x_imputed = list(x_imputed)
    if _is_sequence(x_imputed) and len(x_imputed) > 0 and np.ndim(x_imputed[0]) == 2:
        imputed = [_images(f"x_imputed[{i}]", a) for i, a in enumerate(x_imputed)]
        names = [f"x_imputed[{i}]" for i in range(len(imputed))]
    else:
        imputed = [_images("x_imputed", x_imputed)]
        names = ["x_imputed"]
    for name, a in [("x_masked", xm), ("mask", m)] + list(zip(names, imputed)):
        if a.shape != xt.shape:
            raise ValueError(f"{name} must have the shape of x_true {xt.shape}; got {a.shape}")
    color = _numeric("missing_color", missing_color, ndim=1, expected="(3,)")
    if color.shape != (3,) or color.min() < 0 or color.max() > 1:
        raise ValueError(f"missing_color must be 3 RGB values in [0, 1]; got {missing_color!r}")
    labels = _strings("imputed_labels", imputed_labels, len(imputed))
    if labels is None:
        labels = ["imputed"] if len(imputed) == 1 else [f"imputed {i}" for i in
                                                          range(len(imputed))]
    hw = _image_shape(image_shape, xt.shape[1], "x_true")
    k = min(check_int("n", n, min_value=1), xt.shape[0])

    def observed_rgb(i):
        # grey levels replicated into RGB, then missing pixels painted in missing_color
        rgb = np.repeat(np.clip(xm[i], 0.0, 1.0)[:, None], 3, axis=1)
        rgb[m[i]] = color
        return rgb.reshape(hw + (3,))

    cells = [[xt[i].reshape(hw) for i in range(k)],
             [observed_rgb(i) for i in range(k)]]
    cells += [[a[i].reshape(hw) for i in range(k)] for a in imputed]
    fig = _image_table(cells, hw=hw, dpi=dpi, figsize=figsize, title=title,
                       row_labels=["original", "observed"] + labels, cell_inches=cell_inches)
    return _finish(fig, path, dpi)


def plot_manifold(decode, n=15, image_shape=None, path=None, *, quantiles=(0.05, 0.95),
                  dtype="float64", pad=1, dpi=100, figsize=None, title=None, cmap="gray",
                  vmin=0.0, vmax=1.0) -> Figure:
    """Decode a grid of 2-D latent codes at prior quantiles and show the means as one image.

    Shapes: decode maps z (m, 2) -> (m, D), e.g. ``model.decode``; it is called once with
    m = n * n codes of dtype ``dtype`` (pass the model's dtype).
    Equation: g_i = Phi^-1(p_i), p = linspace(quantiles[0], quantiles[1], n), Phi^-1 the
    standard normal inverse CDF; the tile in image row r, column c decodes
    z = (g_c, g_{n-1-r}), so z_1 grows to the right and z_2 grows upwards.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    if not callable(decode):
        raise TypeError(f"decode must be a callable mapping z (m, 2) to (m, D); "
                        f"got {type(decode).__name__}")
    n = check_int("n", n, min_value=1, max_value=200)
    pad = check_int("pad", pad, min_value=0)
    dt = as_dtype("dtype", dtype)
    if not _is_sequence(quantiles) or len(quantiles) != 2:
        raise ValueError(f"quantiles must be a (low, high) pair in (0, 1); got {quantiles!r}")
    lo = check_float("quantiles[0]", quantiles[0], min_value=0.0, max_value=1.0,
                     min_inclusive=False, max_inclusive=False)
    hi = check_float("quantiles[1]", quantiles[1], min_value=lo, max_value=1.0,
                     min_inclusive=False, max_inclusive=False)
    normal = NormalDist()
    g = np.array([normal.inv_cdf(float(p)) for p in np.linspace(lo, hi, n)])
    z1, z2 = np.meshgrid(g, g[::-1])                   # row r holds z_2 = g[n-1-r]
    z = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(dt)
    out = np.asarray(decode(z))
    if out.ndim != 2 or out.shape[0] != n * n:
        raise ValueError(f"decode must return an array of shape (m, D) = ({n * n}, D) for "
                         f"z of shape {z.shape}; got shape {out.shape}")
    out = _images("decode(z)", out)
    h, w = _image_shape(image_shape, out.shape[1], "decode(z)")
    # one big picture: tiles separated by `pad` NaN pixels, drawn in the colour map's "bad" colour
    mosaic = np.full((n * h + (n - 1) * pad, n * w + (n - 1) * pad), np.nan)
    for r in range(n):
        for c in range(n):
            mosaic[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = \
                out[r * n + c].reshape(h, w)
    if figsize is None:
        side = min(max(2.5, 0.45 * n), 9.0)
        figsize = (side + 1.0, side * h / w + 0.8 + (0.3 if title else 0.0))
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    step = max(1, math.ceil(n / 8))                    # at most ~8 labelled ticks per axis
    idx = np.arange(0, n, step)
    ax.set_xticks(idx * (w + pad) + (w - 1) / 2, [f"{g[i]:.2f}" for i in idx], fontsize=7)
    ax.set_yticks(idx * (h + pad) + (h - 1) / 2, [f"{g[n - 1 - i]:.2f}" for i in idx],
                  fontsize=7)
    ax.set_xlabel("z_1 (prior quantiles)")
    ax.set_ylabel("z_2 (prior quantiles)")
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------------------------
# Line and scatter figures
# --------------------------------------------------------------------------------------------

def plot_history(history, path=None, *, dpi=100, figsize=None, title=None) -> Figure:
    """Plot training curves: losses on one axis, KL and reconstruction terms on another.

    Shapes: history maps names to equal-length sequences (one value per epoch). Keys containing
    "loss" (e.g. train_loss, val_loss) go on the first axis; keys containing "kl" or "recon"
    (e.g. kl, recon, val_kl) on the second; "epoch" gives the x values (default 1..E). Other
    keys are ignored. NaN marks a missing value (e.g. no validation that epoch).
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a dict of name -> list of per-epoch values; "
                        f"got {type(history).__name__}")
    curves = {}
    for key, values in history.items():
        if not isinstance(key, str):
            raise TypeError(f"history keys must be strings; got {key!r}")
        low = key.lower()
        if key == "epoch" or "loss" in low or "kl" in low or "recon" in low:
            curves[key] = _numeric(f"history[{key!r}]", values, ndim=1, expected="(E,)",
                                   allow_nan=key != "epoch")
    loss_keys = [k for k in curves if "loss" in k.lower()]
    term_keys = [k for k in curves if k not in loss_keys and k != "epoch"]
    if not loss_keys and not term_keys:
        raise ValueError(f"history has nothing to plot: it needs a key containing 'loss', 'kl' "
                         f"or 'recon'; got keys {list(history)}")
    first = (loss_keys + term_keys)[0]
    E = curves[first].shape[0]
    for k, v in curves.items():
        if v.shape[0] != E:
            raise ValueError(f"history[{k!r}] has {v.shape[0]} values but history[{first!r}] "
                             f"has {E}; every list must have one value per epoch")
    epochs = curves.get("epoch", np.arange(1, E + 1, dtype=np.float64))
    groups = [(keys, label) for keys, label in
              [(loss_keys, "loss (nats per example)"), (term_keys, "nats per example")] if keys]
    if figsize is None:
        figsize = (4.5 * len(groups) + 0.5, 3.5)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    axs = fig.subplots(1, len(groups), squeeze=False)[0]
    marker = "o" if E <= 30 else None
    for ax, (keys, ylabel) in zip(axs, groups):
        for k in keys:
            ax.plot(epochs, curves[k], marker=marker, markersize=3, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def plot_latent_scatter(z, labels=None, path=None, *, point_size=8.0, alpha=0.8, dpi=100,
                        figsize=None, title=None) -> Figure:
    """Scatter latent codes in 2-D, coloured by label.

    Shapes: z (n, d); labels (n,) ints or strings (a legend, up to 20 classes) or floats (a
    colour bar). d == 2: z itself. d > 2: the projection on the first two principal axes of
    the centred codes (numpy SVD), with the share of variance on each axis label. d == 1: z on
    the x axis against the label (each class a jittered strip) or one jittered strip.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    z = _numeric("z", z, ndim=2, expected="(n, d)")
    n, d = z.shape
    discrete, lab, classes = False, None, None
    if labels is not None:
        raw = np.asarray(labels)
        if raw.ndim != 1 or raw.shape[0] != n:
            raise ValueError(f"labels must have shape (n,) = ({n},) to match z; got {raw.shape}")
        if raw.dtype.kind in "biuU":
            classes, lab = np.unique(raw, return_inverse=True)
            discrete = len(classes) <= _MAX_DISCRETE
            if not discrete and raw.dtype.kind == "U":
                raise ValueError(f"labels has {len(classes)} distinct strings; at most "
                                 f"{_MAX_DISCRETE} can be shown in a legend")
            if not discrete:
                lab = raw.astype(np.float64)
        else:
            lab = _numeric("labels", raw, ndim=1, expected="(n,)")
    if figsize is None:
        figsize = (5.5, 4.5)
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=n)   # fixed: same picture each run
    if d == 1:
        x = z[:, 0]
        if labels is None:
            y = jitter
        else:
            y = lab + (jitter if discrete else 0.0)
        xlabel, ylabel = "z_1", ("label" if labels is not None else "")
    elif d == 2:
        x, y = z[:, 0], z[:, 1]
        xlabel, ylabel = "z_1", "z_2"
    else:
        proj, explained = _principal_axes(z)
        x, y = proj[:, 0], proj[:, 1]
        xlabel = f"principal axis 1 ({100 * explained[0]:.1f}% var)"
        ylabel = f"principal axis 2 ({100 * explained[1]:.1f}% var)"
    if labels is None:
        ax.scatter(x, y, s=point_size, alpha=alpha)
    elif discrete:
        cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, c in enumerate(classes):
            sel = lab == i
            ax.scatter(x[sel], y[sel], s=point_size, alpha=alpha, color=cmap(i), label=str(c))
        ax.legend(title="label", fontsize=8, markerscale=2, loc="best")
    else:
        sc = ax.scatter(x, y, s=point_size, alpha=alpha, c=lab, cmap="viridis")
        fig.colorbar(sc, ax=ax, label="label")
    if d == 1:
        if labels is None:
            ax.set_yticks([])
        elif discrete:
            ax.set_yticks(np.arange(len(classes)), [str(c) for c in classes])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def plot_posterior_contours(z1, z2, log_p_exact, log_q, x_images=None, image_shape=None,
                            path=None, *, levels=8, overlay=True, dpi=100, figsize=None,
                            title=None) -> Figure:
    """Compare the exact posterior p(z|x) with the Gaussian q(z|x), side by side per input.

    Shapes: z1 (G1,), z2 (G2,) strictly increasing grid axes; log_p_exact, log_q (n, G2, G1)
    with [i, a, b] at z = (z1[b], z2[a]); x_images (n, D) drawn above each pair.
    Each panel shows exp(log - max(log)), the density relative to its own peak, so the log
    densities may be unnormalised (e.g. log p(x, z) for the exact posterior). With
    overlay=True the exact posterior's contour lines are also drawn on the q panel.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    ax1, ax2 = _grid_axes(z1, z2)
    want = f"(n, G2, G1) = (n, {ax2.size}, {ax1.size})"
    lp = _numeric("log_p_exact", log_p_exact, ndim=3, expected=want, allow_neginf=True)
    lq = _numeric("log_q", log_q, ndim=3, expected=want, allow_neginf=True)
    if lp.shape[1:] != (ax2.size, ax1.size):
        raise ValueError(f"log_p_exact must have shape {want} (rows follow z2, columns z1); "
                         f"got {lp.shape}")
    if lq.shape != lp.shape:
        raise ValueError(f"log_q must have the shape of log_p_exact {lp.shape}; got {lq.shape}")
    for name, a in (("log_p_exact", lp), ("log_q", lq)):
        dead = np.all(np.isneginf(a.reshape(a.shape[0], -1)), axis=1)
        if dead.any():
            raise ValueError(f"{name}[{int(np.argmax(dead))}] is -inf everywhere on the grid")
    levels = check_int("levels", levels, min_value=2)
    n = lp.shape[0]
    imgs, hw = None, None
    if x_images is not None:
        imgs = _images("x_images", x_images)
        if imgs.shape[0] != n:
            raise ValueError(f"x_images must have n={n} rows, one per density; "
                             f"got {imgs.shape[0]}")
        hw = _image_shape(image_shape, imgs.shape[1], "x_images")
    if figsize is None:
        figsize = (0.3 + 4.2 * n + 0.8, 2.6 + (1.3 if imgs is not None else 0.0)
                   + (0.3 if title else 0.0))
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    nrows = 2 if imgs is not None else 1
    gs = fig.add_gridspec(nrows, 2 * n, height_ratios=[0.5, 1] if nrows == 2 else [1])
    lev = np.linspace(0.0, 1.0, levels + 1)
    panels, cs = [], None
    for i in range(n):
        if imgs is not None:
            axi = fig.add_subplot(gs[0, 2 * i:2 * i + 2])
            axi.imshow(imgs[i].reshape(hw), cmap="gray", vmin=0.0, vmax=1.0,
                       interpolation="nearest")
            _blank(axi)
            axi.set_title(f"x[{i}]", fontsize=9)
        dens_p = np.exp(lp[i] - lp[i].max())          # relative to the peak: in [0, 1]
        dens_q = np.exp(lq[i] - lq[i].max())
        for j, (dens, name) in enumerate(((dens_p, "exact p(z|x)"), (dens_q, "q(z|x)"))):
            share = panels[0] if panels else None
            ax = fig.add_subplot(gs[nrows - 1, 2 * i + j], sharex=share, sharey=share)
            cs = ax.contourf(ax1, ax2, dens, levels=lev, cmap="viridis")
            if j == 1 and overlay:
                ax.contour(ax1, ax2, dens_p, levels=lev[1:-1], colors="white",
                           linewidths=0.6)
                name += "\n(lines: exact)"
            ax.set_title(f"{name}, x[{i}]", fontsize=9)
            ax.set_xlabel("z_1")
            if i == 0 and j == 0:
                ax.set_ylabel("z_2")
            else:
                ax.tick_params(labelleft=False)
            panels.append(ax)
    fig.colorbar(cs, ax=panels, label="density / peak density", shrink=0.9)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def _mosaic(imgs, hw, ncols):
    """Tile images (n, D) into one picture with one-pixel gaps (NaN, drawn as the background)."""
    n = imgs.shape[0]
    nrows = max(1, -(-n // ncols))
    h, w = hw
    out = np.full((nrows * (h + 1) - 1, ncols * (w + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = imgs[i].reshape(hw)
    return out


def plot_posterior_holes(z1, z2, log_q, log_p, holes, x_holes, x_covered, image_shape=None,
                         path=None, *, hole_mass=None, ncols=4, dpi=100, figsize=None,
                         title=None) -> Figure:
    """The aggregate posterior q(z) against the prior p(z) on a 2-D grid with its holes marked,
    beside decoded samples drawn from the holes and from covered regions.

    Shapes: z1 (G1,), z2 (G2,) increasing grid axes; log_q, log_p (G2, G1) with [a, b] at
    z = (z1[b], z2[a]); holes (G2, G1) bool (e.g. q(z) < 0.1 p(z)); x_holes (n_h, D) and
    x_covered (n_c, D) decoded images (either may have no rows). The left panel fills log q(z),
    draws p(z)'s contours at 1, 2 and 3 standard deviations and hatches the holes;
    ``hole_mass`` (the prior mass in holes) goes in its title.
    (``scratchvae.evaluate.posterior_holes`` returns all of these.)
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    ax1, ax2 = _grid_axes(z1, z2)
    want = f"(G2, G1) = ({ax2.size}, {ax1.size})"
    lq = _numeric("log_q", log_q, ndim=2, expected=want, allow_neginf=True)
    lp = _numeric("log_p", log_p, ndim=2, expected=want)
    mask = np.asarray(holes)
    for name, a in (("log_q", lq), ("log_p", lp), ("holes", mask)):
        if a.shape != (ax2.size, ax1.size):
            raise ValueError(f"{name} must have shape {want} (rows follow z2); got {a.shape}")
    if mask.dtype != bool:
        raise TypeError(f"holes must be a boolean array; got dtype {mask.dtype}")
    hole_mass = _scalar("hole_mass", hole_mass)
    ncols = check_int("ncols", ncols, min_value=1)
    sets = []
    hw = None
    for name, a in (("x_holes", x_holes), ("x_covered", x_covered)):
        arr = np.asarray(a, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-dimensional (n, D); got shape {arr.shape}")
        if arr.shape[0] > 0:
            arr = _images(name, arr)
            hw_i = _image_shape(image_shape, arr.shape[1], name)
            if hw is not None and hw_i != hw:
                raise ValueError("x_holes and x_covered must hold images of one shape")
            hw = hw_i
        sets.append(arr)
    if figsize is None:
        figsize = (11.5, 4.0 + (0.3 if title else 0.0))
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    gs = fig.add_gridspec(1, 3, width_ratios=[1.25, 1, 1])
    ax = fig.add_subplot(gs[0, 0])
    finite = lq[np.isfinite(lq)]
    floor = max(float(finite.min()), float(finite.max()) - 12.0) if finite.size else -12.0
    cs = ax.contourf(ax1, ax2, np.maximum(lq, floor), levels=12, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log q(z)", shrink=0.9)
    # N(0, I): log p = -r^2/2 - log(2 pi); contours at r = 1, 2, 3
    r_levels = [-(r * r) / 2 - math.log(2 * math.pi) for r in (3, 2, 1)]
    ax.contour(ax1, ax2, lp, levels=r_levels, colors="white", linewidths=0.7,
               linestyles="dashed")
    if mask.any():
        ax.contourf(ax1, ax2, mask.astype(float), levels=[0.5, 1.5], colors="none",
                    hatches=["////"])
        ax.contour(ax1, ax2, mask.astype(float), levels=[0.5], colors="red", linewidths=1.0)
    ax.set_xlabel("z_1")
    ax.set_ylabel("z_2")
    ax.set_aspect("equal")
    t = "q(z) (fill), p(z) (dashed: 1-3 sd),\nholes (red, hatched)"
    if hole_mass is not None:
        t += f": prior mass {hole_mass:.3f}"
    ax.set_title(t, fontsize=9)
    for j, (arr, name) in enumerate(zip(sets, ("decoded from holes", "decoded from covered z"))):
        axs = fig.add_subplot(gs[0, j + 1])
        _blank(axs)
        if arr.shape[0] == 0:
            axs.text(0.5, 0.5, "(no draws)", ha="center", va="center", transform=axs.transAxes)
        else:
            cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
            axs.imshow(_mosaic(arr, hw, min(ncols, arr.shape[0])), cmap=cmap, vmin=0.0,
                       vmax=1.0, interpolation="nearest")
        axs.set_title(f"{name} ({arr.shape[0]})", fontsize=9)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def plot_iw_bound(ks, lk, lk_stderr=None, exact=None, elbo=None, path=None, *, dpi=100,
                  figsize=None, title=None) -> Figure:
    """Plot the importance-weighted bound L_k against k (log axis), with reference lines.

    Shapes: ks (m,) positive sample counts; lk (m,) mean L_k in nats; lk_stderr (m,) its
    standard error (error bars), or None. exact: log p(x) (e.g. by quadrature) and elbo: the
    ELBO, both scalars in nats, drawn as horizontal lines. Equation: ELBO = L_1 <= L_k <=
    L_{k'} <= log p(x) for k <= k'.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    k = _numeric("ks", ks, ndim=1, expected="(m,)")
    if np.any(k <= 0):
        raise ValueError("ks must be positive sample counts (the x axis is logarithmic)")
    y = _numeric("lk", lk, ndim=1, expected=f"({k.size},) like ks")
    if y.shape != k.shape:
        raise ValueError(f"lk must have one value per k, shape ({k.size},); got {y.shape}")
    err = None
    if lk_stderr is not None:
        err = _numeric("lk_stderr", lk_stderr, ndim=1, expected=f"({k.size},) like ks")
        if err.shape != k.shape:
            raise ValueError(f"lk_stderr must have shape ({k.size},) like ks; got {err.shape}")
        if np.any(err < 0):
            raise ValueError("lk_stderr must be >= 0 (standard errors)")
    exact, elbo = _scalar("exact", exact), _scalar("elbo", elbo)
    fig = Figure(figsize=figsize or (5.5, 4.0), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.errorbar(k, y, yerr=err, marker="o", markersize=4, capsize=3, label="L_k")
    if exact is not None:
        ax.axhline(exact, color="black", linestyle="--", label="exact log p(x)")
    if elbo is not None:
        ax.axhline(elbo, color="tab:red", linestyle=":", label="ELBO")
    # keep the reference lines inside the view, with some room around everything
    values = [y - (0 if err is None else err), y + (0 if err is None else err)]
    values += [np.array([v]) for v in (exact, elbo) if v is not None]
    lo, hi = float(min(v.min() for v in values)), float(max(v.max() for v in values))
    room = 0.08 * (hi - lo) if hi > lo else 1.0
    ax.set_ylim(lo - room, hi + room)
    ax.set_xscale("log")
    ax.set_xlabel("k (importance samples)")
    ax.set_ylabel("log-likelihood bound (nats)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def plot_kl_per_dim(kl_per_dim, active_units=None, epochs=None, path=None, *, max_lines=10,
                    dpi=100, figsize=None, title=None) -> Figure:
    """Plot the KL of each latent dimension, over training or at one point in time.

    Shapes: kl_per_dim (E, d): one line per dimension over epochs (a heat map when d >
    max_lines), with active_units (E,) (counts) on a second axis below; or kl_per_dim (d,): a
    bar chart (active_units and epochs are then not used and must be None). epochs (E,)
    strictly increasing, default 1..E. Equation: KL_j = 1/2 mean_x(mu_j^2 + exp(logvar_j)
    - 1 - logvar_j), nats.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    kl = np.asarray(kl_per_dim)
    if kl.ndim == 1:
        kl = _numeric("kl_per_dim", kl, ndim=1, expected="(d,)")
        for name, v in (("active_units", active_units), ("epochs", epochs)):
            if v is not None:
                raise ValueError(f"{name} is only used with a 2-D kl_per_dim (E, d); "
                                 f"kl_per_dim has shape {kl.shape}")
        fig = Figure(figsize=figsize or (max(4.0, 0.3 * kl.size + 1.5), 3.5), dpi=dpi,
                     layout="constrained")
        ax = fig.add_subplot()
        ax.bar(np.arange(kl.size), kl, color="tab:blue")
        ax.set_xlabel("latent dimension j")
        ax.set_ylabel("KL_j (nats)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title:
            ax.set_title(title)
        return _finish(fig, path, dpi)
    kl = _numeric("kl_per_dim", kl, ndim=2, expected="(E, d) or (d,)")
    E, d = kl.shape
    max_lines = check_int("max_lines", max_lines, min_value=1)
    if epochs is None:
        ep = np.arange(1, E + 1, dtype=np.float64)
    else:
        ep = _numeric("epochs", epochs, ndim=1, expected=f"(E,) = ({E},)")
        if ep.shape != (E,):
            raise ValueError(f"epochs must have shape (E,) = ({E},) like kl_per_dim; "
                             f"got {ep.shape}")
        if np.any(np.diff(ep) <= 0):
            raise ValueError("epochs must be strictly increasing")
    au = None
    if active_units is not None:
        au = _numeric("active_units", active_units, ndim=1, expected=f"(E,) = ({E},)")
        if au.shape != (E,):
            raise ValueError(f"active_units must have shape (E,) = ({E},) like kl_per_dim; "
                             f"got {au.shape}")
    heat = d > max_lines
    fig = Figure(figsize=figsize or (6.0 if heat else 5.5, 5.5 if au is not None else 3.8),
                 dpi=dpi, layout="constrained")
    if au is not None:
        ax, ax_au = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    else:
        ax, ax_au = fig.add_subplot(), None
    if heat:
        mesh = ax.pcolormesh(ep, np.arange(d), kl.T, shading="nearest", cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="KL_j (nats)")
        ax.set_ylabel("latent dimension j")
    else:
        marker = "o" if E <= 30 else None
        for j in range(d):
            ax.plot(ep, kl[:, j], marker=marker, markersize=3, label=f"z_{j + 1}")
        ax.set_ylabel("KL_j (nats)")
        ax.legend(fontsize=7, ncols=2 if d > 5 else 1)
        ax.grid(alpha=0.3)
    if ax_au is not None:
        ax_au.plot(ep, au, marker="o", markersize=3, color="tab:red")
        ax_au.set_ylabel("active units")
        ax_au.set_ylim(-0.5, d + 0.5)
        ax_au.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_au.set_xlabel("epoch")
        ax_au.grid(alpha=0.3)
    else:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def plot_estimator_variance(ks, variances, path=None, *, reference=True, dpi=100,
                            figsize=None, title=None) -> Figure:
    """Compare gradient-estimator variances against the number of samples on log-log axes.

    Shapes: ks (m,) positive sample counts; variances maps a name (e.g. "reparameterization",
    "score function") to an (m,) array of positive variances. With reference=True a dashed
    line proportional to 1/k through each curve's first point shows the Monte Carlo rate
    Var[mean of k iid estimates] = Var[one estimate] / k.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    k = _numeric("ks", ks, ndim=1, expected="(m,)")
    if np.any(k <= 0):
        raise ValueError("ks must be positive sample counts (the axes are logarithmic)")
    if not isinstance(variances, Mapping):
        raise TypeError(f"variances must be a dict name -> (m,) array; "
                        f"got {type(variances).__name__}")
    if len(variances) == 0:
        raise ValueError("variances must not be empty; pass at least one estimator")
    curves = {}
    for name, v in variances.items():
        label = f"variances[{name!r}]"
        curves[str(name)] = arr = _numeric(label, v, ndim=1, expected=f"({k.size},) like ks")
        if arr.shape != k.shape:
            raise ValueError(f"{label} must have shape ({k.size},) like ks; got {arr.shape}")
        if np.any(arr <= 0):
            raise ValueError(f"{label} must be positive (the y axis is logarithmic)")
    fig = Figure(figsize=figsize or (5.5, 4.0), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, v) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ax.plot(k, v, marker="o", markersize=4, color=color, label=name)
        if reference:
            ax.plot(k, v[0] * k[0] / k, linestyle="--", linewidth=0.8, color=color, alpha=0.6,
                    label="\u221d 1/k" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of samples k")
    ax.set_ylabel("gradient estimator variance")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


def plot_roc(fpr, tpr, auc=None, path=None, *, label=None, dpi=100, figsize=None,
             title=None) -> Figure:
    """Plot a ROC curve (e.g. anomaly detection scored by -ELBO or -log p(x)).

    Shapes: fpr, tpr (m,) in [0, 1], ordered along the curve; auc: the area under it, in
    [0, 1], shown in the legend. The diagonal is a chance-level detector.
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    f = _numeric("fpr", fpr, ndim=1, expected="(m,)")
    t = _numeric("tpr", tpr, ndim=1, expected=f"({f.size},) like fpr")
    if t.shape != f.shape:
        raise ValueError(f"tpr must have shape ({f.size},) like fpr; got {t.shape}")
    for name, a in (("fpr", f), ("tpr", t)):
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"{name} must lie in [0, 1]; got values in [{a.min()}, {a.max()}]")
    if auc is not None:
        auc = check_float("auc", auc, min_value=0.0, max_value=1.0)
    text = label or "ROC"
    if auc is not None:
        text += f" (AUC = {auc:.3f})"
    fig = Figure(figsize=figsize or (4.5, 4.5), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(f, t, color="tab:blue", label=text)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    return _finish(fig, path, dpi)


# --------------------------------------------------------------------------------------------
# VQ-VAE: codebook usage
# --------------------------------------------------------------------------------------------

def plot_codebook_usage(counts, path=None, *, labels=None, dpi=100, figsize=None,
                        title=None) -> Figure:
    """Bar chart of how often each code is used, one panel per codebook, codes sorted by use.

    Shapes: counts (C,) for one codebook, or (R, C) for R codebooks of C codes (e.g. a
    collapsed codebook beside its remedies); labels: R names (optional). Each panel's title
    gives its perplexity exp(H(pbar)), pbar_c = n_c / sum n, and its dead codes (n_c = 0).
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    arr = np.asarray(counts)
    arr = _numeric("counts", arr[None] if arr.ndim == 1 else arr, ndim=2, expected="(C,) or (R, C)")
    if np.any(arr < 0):
        raise ValueError("counts must be non-negative (numbers of assignments)")
    if np.any(arr.sum(axis=1) <= 0):
        raise ValueError("counts: every codebook needs at least one assignment")
    R, C = arr.shape
    names = _strings("labels", labels, R)
    fig = Figure(figsize=figsize or (min(3.2 * R, 13.0), 3.2), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, R, sharey=True, squeeze=False)[0])
    for r, ax in enumerate(axes):
        p = np.sort(arr[r])[::-1] / arr[r].sum()
        used = p[p > 0]
        perplexity = float(np.exp(-np.sum(used * np.log(used))))
        ax.bar(np.arange(C), p, width=1.0, color="tab:blue")
        head = f"{names[r]}\n" if names else ""
        ax.set_title(f"{head}perplexity {perplexity:.1f} / {C}, dead {C - used.size}", fontsize=9)
        ax.set_xlabel("code (sorted by use)")
        ax.set_xlim(-0.5, C - 0.5)
    axes[0].set_ylabel("share of assignments")
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


# Flow posteriors (FlowVAE): several densities of z per input, side by side
# --------------------------------------------------------------------------------------------

def plot_posterior_comparison(z1, z2, log_densities, column_titles, x_images=None,
                              image_shape=None, path=None, *, row_titles=None, levels=8, dpi=100,
                              figsize=None, title=None) -> Figure:
    """Densities of a 2-D latent on one grid, one row per input and one column per density.

    Shapes: z1 (G1,), z2 (G2,) strictly increasing grid axes; log_densities (n, m, G2, G1) with
    [i, c, a, b] the c-th log density for input i at z = (z1[b], z2[a]); column_titles m
    strings; x_images (n, D) drawn at the start of each row; row_titles n strings.
    Each panel shows exp(log - max(log)), the density relative to its own peak, so the log
    densities may be unnormalised (e.g. log p(x, z) for an exact posterior). Typical use: the
    exact p(z|x) beside a flow's q(z|x) and a Gaussian's q(z|x).
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    ax1, ax2 = _grid_axes(z1, z2)
    want = f"(n, m, G2, G1) = (n, m, {ax2.size}, {ax1.size})"
    ld = _numeric("log_densities", log_densities, ndim=4, expected=want, allow_neginf=True)
    if ld.shape[2:] != (ax2.size, ax1.size) or ld.shape[0] == 0 or ld.shape[1] == 0:
        raise ValueError(f"log_densities must have shape {want} (rows follow z2, columns z1) "
                         f"with n, m >= 1; got {ld.shape}")
    n, m = ld.shape[:2]
    dead = np.all(np.isneginf(ld.reshape(n, m, -1)), axis=2)
    if dead.any():
        i, c = np.argwhere(dead)[0]
        raise ValueError(f"log_densities[{i}, {c}] is -inf everywhere on the grid")
    cols = _strings("column_titles", column_titles, m)
    if cols is None:
        raise ValueError(f"column_titles must be {m} strings, one per density; got None")
    rows = _strings("row_titles", row_titles, n)
    levels = check_int("levels", levels, min_value=2)
    imgs, hw = None, None
    if x_images is not None:
        imgs = _images("x_images", x_images)
        if imgs.shape[0] != n:
            raise ValueError(f"x_images must have n={n} rows, one per row of densities; "
                             f"got {imgs.shape[0]}")
        hw = _image_shape(image_shape, imgs.shape[1], "x_images")
    lead = 1 if imgs is not None else 0
    if figsize is None:
        figsize = (0.6 + 1.4 * lead + 2.3 * m + 0.8, 0.4 + 2.2 * n + (0.3 if title else 0.0))
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    gs = fig.add_gridspec(n, lead + m, width_ratios=[0.6] * lead + [1] * m)
    lev = np.linspace(0.0, 1.0, levels + 1)
    panels, cs = [], None
    for i in range(n):
        if imgs is not None:
            axi = fig.add_subplot(gs[i, 0])
            axi.imshow(imgs[i].reshape(hw), cmap="gray", vmin=0.0, vmax=1.0,
                       interpolation="nearest")
            _blank(axi)
            axi.set_title(rows[i] if rows else f"x[{i}]", fontsize=9)
        for c in range(m):
            share = panels[0] if panels else None
            ax = fig.add_subplot(gs[i, lead + c], sharex=share, sharey=share)
            cs = ax.contourf(ax1, ax2, np.exp(ld[i, c] - ld[i, c].max()), levels=lev,
                             cmap="viridis")
            ax.set_title(cols[c] if imgs is not None or not rows else f"{cols[c]}, {rows[i]}",
                         fontsize=9)
            if i == n - 1:
                ax.set_xlabel("z_1")
            else:
                ax.tick_params(labelbottom=False)
            if c == 0:
                ax.set_ylabel("z_2")
            else:
                ax.tick_params(labelleft=False)
            panels.append(ax)
    fig.colorbar(cs, ax=panels, label="density / peak density", shrink=0.9)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)


def plot_sweep(x, series, metrics, path=None, *, xlabel=None, xscale="linear", dpi=100,
               figsize=None, title=None) -> Figure:
    """Plot metrics against one swept setting, with error bars: a panel per metric, a line per
    series (the combination of the other settings).

    Shapes: x (P,) the setting's values, numbers (a numeric axis) or strings (evenly spaced
    categories); series: a dict label -> (mean (P, M), err (P, M)), the mean over seeds and the
    half-width of its interval, NaN where a point has no value (or fewer than 2 seeds for err);
    metrics (M,) the panel titles. ``xscale``: "linear" or "log" (base 2, numeric x only).
    """
    path, dpi, figsize = _check_common(path, dpi, figsize)
    if not _is_sequence(x) or len(x) == 0:
        raise ValueError("x must be a non-empty sequence of the swept values")
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  for v in x)
    xs = _numeric("x", list(x), ndim=1, expected="(P,)") if numeric else np.arange(len(x), dtype=float)
    if xscale not in ("linear", "log"):
        raise ValueError(f"xscale must be 'linear' or 'log'; got {xscale!r}")
    if xscale == "log" and (not numeric or np.any(xs <= 0)):
        raise ValueError("xscale='log' needs positive numeric x values")
    names = _strings("metrics", metrics, len(metrics) if _is_sequence(metrics) else -1)
    if not names:
        raise ValueError("metrics must name at least one metric")
    if not isinstance(series, Mapping) or not series:
        raise TypeError("series must be a non-empty dict label -> (mean, err)")
    expected = f"({xs.size}, {len(names)})"
    checked = {}
    for label, pair in series.items():
        if not _is_sequence(pair) or len(pair) != 2:
            raise TypeError(f"series[{label!r}] must be a (mean, err) pair of arrays {expected}")
        mean = _numeric(f"series[{label!r}] mean", pair[0], ndim=2, expected=expected, allow_nan=True)
        err = _numeric(f"series[{label!r}] err", pair[1], ndim=2, expected=expected, allow_nan=True)
        for what, a in (("mean", mean), ("err", err)):
            if a.shape != (xs.size, len(names)):
                raise ValueError(f"series[{label!r}] {what} must have shape {expected}; got {a.shape}")
        if np.any(err[~np.isnan(err)] < 0):
            raise ValueError(f"series[{label!r}] err must be >= 0 (interval half-widths)")
        checked[str(label)] = (mean, err)
    ncols = min(len(names), 3)
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=figsize or (3.6 * ncols, 2.9 * nrows), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for j, (ax, name) in enumerate(zip(axes, names)):
        for label, (mean, err) in checked.items():
            keep = ~np.isnan(mean[:, j])
            if keep.any():
                e = np.nan_to_num(err[keep, j], nan=0.0)
                ax.errorbar(xs[keep], mean[keep, j], yerr=e, marker="o", markersize=4, capsize=3,
                            label=label or None)
        ax.set_title(name, fontsize=9)
        if xscale == "log":
            ax.set_xscale("log", base=2)
        if numeric:
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
        else:
            ax.set_xticks(xs, [str(v) for v in x])
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if len(checked) > 1 or next(iter(checked)):
        axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _finish(fig, path, dpi)
