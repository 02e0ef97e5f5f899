"""Datasets for scratchvae: loaders, seeded splits, binarization and the MNIST IDX reader.

Every loader returns images as rows, ``x`` of shape (n, D) in [0, 1] (for image data) in the
float dtype you ask for, and labels ``y`` as int64 of shape (n,) or None when a file has none.

What is here:

    load_digits(seed=0, dtype="float64", val_fraction=0.1, test_fraction=0.2)
        scikit-learn's bundled 8x8 digits (1797 images, D = 64, offline), pixels / 16,
        split train/val/test with a seeded shuffle stratified by label
        -> (x_tr, y_tr, x_val, y_val, x_te, y_te)
    load_mnist(directory, dtype="float32"), load_fashion_mnist(directory, dtype="float32")
        the four standard IDX files (gzipped or not), pixels / 255, D = 784
        -> (x_tr, y_tr, x_te, y_te)
    download_mnist(directory, dataset="mnist" | "fashion-mnist")
        opt-in download of the four .gz files, each checked against its known SHA-256
    read_idx(path)
        one IDX file (the MNIST container format) -> ndarray, with strict validation
    load_array(path, dtype=None)
        your own data from a .npy (x) or .npz (x, optional y) file -> (x, y_or_None)
    load_spec(spec, dtype="float64", seed=0, val_fraction=0.1)
        what the command line's --data SPEC means: "digits", "mnist:DIR", "fashion-mnist:DIR",
        "FILE.npy" or "FILE.npz" -> (x_tr, y_tr, x_val, y_val, x_te, y_te)
    binarize(x, method="threshold" | "bernoulli", threshold=0.5, rng=None)
        static binarization (once, before training)
    bernoulli_sample(x, rng), dynamic_binarizer(seed)
        dynamic binarization: a fresh x_bin ~ Bernoulli(x) every epoch

Nothing here touches the network except ``download_mnist``, and only when you call it.
scikit-learn is needed only by ``load_digits`` (``pip install "scratchvae[data]"``).
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from scratchvae._checks import (as_dtype, check_array, check_choice, check_float, check_int,
                                check_rng)

__all__ = [
    "load_digits", "load_array", "binarize", "bernoulli_sample", "dynamic_binarizer",
    "read_idx", "load_mnist", "load_fashion_mnist", "download_mnist", "load_spec",
    "MNIST_FILES",
]

# The four standard file names, in the order train images, train labels, test images, test
# labels. Each may sit in the directory as is or with a ".gz" suffix.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# SHA-256 of the published .gz files. The MNIST values appear, identical, in many independent
# projects (torchvision-style resource lists, Bazel http_file rules, Go and Rust loaders); the
# Fashion-MNIST values come from two independent projects that agree. A file whose hash differs
# is never written to the cache.
_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz":
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz":
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz":
            "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train-labels-idx1-ubyte.gz":
            "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "t10k-images-idx3-ubyte.gz":
            "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "t10k-labels-idx1-ubyte.gz":
            "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
}

# Mirrors tried in order; the hash check makes plain http as safe as https here.
_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}

_DOWNLOAD_TIMEOUT = 20.0            # seconds per blocking socket operation
_MAX_DOWNLOAD_BYTES = 64 * 2**20    # the largest file (train images) is 9.9 MB
_BERNOULLI_CHUNK = 2**20            # uniforms drawn at a time: bounds the float64 temporary
_GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian numpy dtype (the format stores numbers most significant byte first).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ----------------------------------------------------------------------------------------------
# Small shared helpers
# ----------------------------------------------------------------------------------------------

def _as_path(name: str, path) -> Path:
    """Return ``path`` as a Path (``~`` expanded), or raise TypeError naming ``name``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike path; got {type(path).__name__}")
    return Path(path).expanduser()


def _check_fractions(val_fraction, test_fraction) -> tuple[float, float]:
    """Check that both fractions lie in [0, 1) and leave some data for training."""
    val_fraction = check_float("val_fraction", val_fraction, min_value=0.0, max_value=1.0,
                               max_inclusive=False)
    test_fraction = check_float("test_fraction", test_fraction, min_value=0.0, max_value=1.0,
                                max_inclusive=False)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1 so that training data remain; "
                         f"got {val_fraction} + {test_fraction}")
    return val_fraction, test_fraction


def _split_order(n: int, y: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Return a seeded permutation of range(n) in which every prefix is stratified by ``y``.

    Shapes: y (n,) or None -> order (n,).
    Equation: shuffle; give the r-th example (r = 0, 1, ...) of a class with n_c members the key
    (r + 0.5) / n_c; sort by key (ties keep the shuffled order). Any prefix of length m then
    holds round(t * n_c) examples of each class for the same t ~ m / n, so taking test, then
    validation, then training from the front keeps the class proportions in every part.
    """
    perm = rng.permutation(n)
    if y is None:
        return perm
    _, cls = np.unique(y[perm], return_inverse=True)
    counts = np.bincount(cls)
    by_class = np.argsort(cls, kind="stable")          # positions grouped by class, shuffled within
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[by_class] = np.arange(n) - starts[cls[by_class]]
    key = (rank + 0.5) / counts[cls]
    return perm[np.argsort(key, kind="stable")]


def _n_part(n: int, fraction: float) -> int:
    """Number of examples for a split part: round(n * fraction), at least 1 when fraction > 0."""
    return 0 if fraction == 0.0 else max(1, int(round(n * fraction)))


def _split(x: np.ndarray, y: np.ndarray | None, val_fraction: float, test_fraction: float,
           rng: np.random.Generator):
    """Seeded, label-stratified split into (x_tr, y_tr, x_val, y_val, x_te, y_te).

    Shapes: x (n, D), y (n,) or None -> parts (n_part, D) and (n_part,) or None.
    """
    n = x.shape[0]
    n_te, n_val = _n_part(n, test_fraction), _n_part(n, val_fraction)
    if n - n_te - n_val < 1:
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no "
                         f"training examples out of n={n}")
    order = _split_order(n, y, rng)
    te, val, tr = order[:n_te], order[n_te:n_te + n_val], order[n_te + n_val:]
    pick = (lambda a, i: None if a is None else a[i])
    return x[tr], pick(y, tr), x[val], pick(y, val), x[te], pick(y, te)


# ----------------------------------------------------------------------------------------------
# Bundled digits
# ----------------------------------------------------------------------------------------------

def load_digits(seed=0, dtype="float64", val_fraction=0.1, test_fraction=0.2):
    """Load scikit-learn's bundled 8x8 digits, scaled to [0, 1], with a seeded stratified split.

    Shapes: x_* (n_part, 64) in ``dtype``; y_* (n_part,) int64 in 0..9. With the defaults the
    1797 images split into 1258 train, 180 validation and 359 test.
    Equation: x = pixels / 16 (the raw pixels are counts 0..16 from a 4x4 block of a 32x32
    bitmap); n_te = round(1797 * test_fraction), n_val = round(1797 * val_fraction) (at least 1
    when the fraction is positive, 0 when it is 0); every class is spread evenly over the parts.

    The data ship inside scikit-learn, so this works offline. The same seed gives the same split.
    """
    dt = as_dtype("dtype", dtype)
    rng = check_rng("seed", seed)
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    try:
        from sklearn.datasets import load_digits as _sklearn_load_digits
    except ImportError as e:
        raise ImportError('load_digits needs scikit-learn, which is not installed; install the '
                          '"data" extra: pip install "scratchvae[data]"') from e
    bunch = _sklearn_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(dt)
    y = np.asarray(bunch.target).astype(np.int64)
    return _split(x, y, val_fraction, test_fraction, rng)


# ----------------------------------------------------------------------------------------------
# Your own arrays
# ----------------------------------------------------------------------------------------------

def _prepare_x(x: np.ndarray, dt: np.dtype | None, where: str) -> np.ndarray:
    """Validate and convert a loaded data array: 2-D (3-D images flattened), finite, float.

    Integer images must hold 0..255 and are divided by 255; bool becomes 0/1. Float32/float64
    data keep their dtype unless ``dt`` is given; any other input becomes ``dt`` or float64.
    """
    if x.dtype.hasobject:
        raise ValueError(f"{where} is an object array; save a plain numeric array instead")
    if x.ndim == 3:                    # (n, H, W) images -> (n, H*W)
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise ValueError(f"{where} must be 2-D (n, D) or 3-D (n, H, W) images; got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{where} must not be empty; got shape {x.shape}")
    target = dt if dt is not None else (x.dtype if x.dtype in (np.float32, np.float64)
                                        else np.dtype(np.float64))
    if x.dtype == np.bool_:
        return x.astype(target)
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{where} holds integers, read as 8-bit pixels, so they must lie in "
                             f"0..255; got values in [{lo}, {hi}]. Save floats to load other data")
        out = x.astype(target)
        out /= target.type(255)
        return out
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{where} must hold real numbers (float, int or bool); got dtype "
                         f"{x.dtype.name}")
    if not np.isfinite(x).all():
        bad = int(x.size - np.isfinite(x).sum())
        raise ValueError(f"{where} must be finite; it has {bad} NaN or inf entries")
    return np.ascontiguousarray(x.astype(target, copy=False))


def _prepare_y(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Validate labels: integer dtype, shape (n,), non-negative -> int64."""
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{where} (labels) must have an integer dtype; got {y.dtype.name}")
    if y.shape != (n,):
        raise ValueError(f"{where} (labels) must have shape ({n},) to match x; got {y.shape}")
    if y.min() < 0:
        raise ValueError(f"{where} (labels) must be >= 0; got a minimum of {y.min()}")
    return y.astype(np.int64)


def load_array(path, dtype=None):
    """Load your own data from a ``.npy`` (x) or ``.npz`` (x and optional labels y) file.

    Shapes: x (n, D) (an (n, H, W) array is flattened to (n, H*W)); y (n,) int64 or None.
    Equation: integer pixels become x = pixels / 255 (they must lie in 0..255).

    A ``.npz`` must hold an array ``x`` (or exactly one array besides ``y``) and may hold
    integer labels ``y``. Files load with ``allow_pickle=False``. Float32/float64 data keep their
    dtype unless ``dtype`` is given; integer or bool data become ``dtype`` or float64.
    """
    p = _as_path("path", path)
    dt = None if dtype is None else as_dtype("dtype", dtype)
    if p.suffix.lower() not in (".npy", ".npz"):
        raise ValueError(f"path must end in .npy or .npz; got {str(p)!r}")
    if not p.is_file():
        raise FileNotFoundError(f"path: no such file {str(p)!r}")
    try:
        loaded = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"path: cannot read {str(p)!r} as a NumPy .npy/.npz file "
                         f"(object arrays and pickles are refused): {e}") from e
    y = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.files)
            others = [k for k in keys if k != "y"]
            if "x" in keys:
                key = "x"
            elif len(others) == 1:
                key = others[0]
            else:
                raise ValueError(f"path: {str(p)!r} must hold an array named 'x' (or a single "
                                 f"array besides 'y'); it holds {keys}")
            try:
                x = loaded[key]
                if "y" in keys:
                    y = loaded["y"]
            except ValueError as e:   # object arrays cannot load without pickle
                raise ValueError(f"path: {str(p)!r} holds an object array; save plain numeric "
                                 f"arrays ({e})") from e
        where = f"array {key!r} in {str(p)!r}"
    else:
        x, where = loaded, f"array in {str(p)!r}"
    x = _prepare_x(x, dt, where)
    if y is not None:
        y = _prepare_y(y, x.shape[0], f"array 'y' in {str(p)!r}")
    return x, y


# ----------------------------------------------------------------------------------------------
# Binarization
# ----------------------------------------------------------------------------------------------

def _check_unit_interval(x) -> np.ndarray:
    x = check_array("x", x)
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"x must lie in [0, 1] to be binarized; got values in "
                         f"[{x.min()}, {x.max()}]")
    return x


def binarize(x, method="threshold", threshold=0.5, rng=None):
    """Binarize data in [0, 1]: a fixed threshold, or one seeded Bernoulli draw.

    Shapes: x (...) float32/float64 in [0, 1] -> x_bin (...) in {0, 1}, same dtype.
    Equation: "threshold": x_bin = 1 if x > threshold else 0.
              "bernoulli": x_bin = 1 if u < x else 0 with u ~ Uniform[0, 1) drawn from ``rng``,
              so x_bin ~ Bernoulli(x) elementwise (x = 0 gives 0, x = 1 gives 1).

    This is static binarization: call it once and train on the result. For a fresh draw every
    epoch (dynamic binarization) use ``dynamic_binarizer``. ``rng`` is a Generator, an int seed
    or None (fresh entropy, not reproducible); the uniforms are drawn in float64, so float32 and
    float64 copies of the same x give the same pattern for the same seed.
    """
    method = check_choice("method", method, ("threshold", "bernoulli"))
    x = _check_unit_interval(x)
    if method == "threshold":
        threshold = check_float("threshold", threshold, min_value=0.0, max_value=1.0)
        return (x > threshold).astype(x.dtype)
    rng = check_rng("rng", rng)
    flat_x = x.reshape(-1)
    out = np.empty_like(flat_x)
    # Draw in chunks: the uniforms come from one stream in order, so the result equals a single
    # rng.random(x.shape) call while the float64 temporary stays small.
    for start in range(0, flat_x.size, _BERNOULLI_CHUNK):
        part = slice(start, start + _BERNOULLI_CHUNK)
        u = rng.random(flat_x[part].shape)
        out[part] = u < flat_x[part]       # bool -> x.dtype on assignment, no float64 leaks out
    return out.reshape(x.shape)


def bernoulli_sample(x, rng):
    """One Bernoulli draw x_bin ~ Bernoulli(x); same as ``binarize(x, "bernoulli", rng=rng)``.

    Shapes: x (...) float32/float64 in [0, 1] -> x_bin (...) in {0, 1}, same dtype.
    """
    return binarize(x, method="bernoulli", rng=rng)


def dynamic_binarizer(seed) -> Callable[..., np.ndarray]:
    """Return ``draw(x, epoch=None)`` that gives a fresh, reproducible Bernoulli draw per epoch.

    Shapes: x (n, D) float32/float64 in [0, 1] -> x_bin (n, D) in {0, 1}, same dtype.
    Equation: x_bin ~ Bernoulli(x) with the generator np.random.default_rng([seed, epoch]).

    Use it in a training loop as::

        draw = dynamic_binarizer(seed)
        for epoch in range(n_epochs):
            x_epoch = draw(x_train, epoch)     # a new binary dataset each epoch
            ...train one epoch on x_epoch...

    Each epoch's draw depends only on (seed, epoch), so a resumed run sees the same data as an
    uninterrupted one. Without ``epoch`` the calls count 0, 1, 2, ... themselves. ``seed`` is a
    non-negative int or a Generator (one integer is drawn from it once, here).
    """
    if isinstance(seed, np.random.Generator):
        base = int(seed.integers(0, 2**63))
    else:
        base = check_int("seed", seed, min_value=0)
    calls = [0]

    def draw(x, epoch=None):
        """Return a Bernoulli(x) draw for ``epoch`` (default: the number of earlier calls)."""
        epoch = calls[0] if epoch is None else check_int("epoch", epoch, min_value=0)
        calls[0] += 1
        return binarize(x, method="bernoulli", rng=np.random.default_rng([base, epoch]))

    return draw


# ----------------------------------------------------------------------------------------------
# IDX files and MNIST
# ----------------------------------------------------------------------------------------------

def read_idx(path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not, with every field checked.

    Shapes: -> array of shape (dim_0, ..., dim_{ndim-1}), native byte order.
    Format: bytes 0-1 are zero; byte 2 is the type (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64); byte 3 is ndim; then ndim big-endian uint32 sizes;
    then exactly prod(sizes) items, big-endian. Gzip is recognised by its magic bytes 1f 8b,
    whatever the file name. A truncated file, extra trailing bytes or a bad header raise
    ValueError naming the file.
    """
    p = _as_path("path", path)
    if not p.is_file():
        raise FileNotFoundError(f"path: no such IDX file {str(p)!r}")
    raw = p.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"IDX file {str(p)!r}: corrupt or truncated gzip data ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"IDX file {str(p)!r}: {len(raw)} bytes is too short for the 4-byte "
                         f"magic number")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"IDX file {str(p)!r}: bad magic number {raw[:4].hex()}; an IDX file "
                         f"starts with two zero bytes")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"IDX file {str(p)!r}: unknown data type code 0x{code:02x}; expected one "
                         f"of {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}")
    if ndim == 0:
        raise ValueError(f"IDX file {str(p)!r}: number of dimensions is 0; expected at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"IDX file {str(p)!r}: truncated header; {ndim} dimensions need "
                         f"{header} bytes, the file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    item = np.dtype(_IDX_DTYPES[code])
    expected = math.prod(dims) * item.itemsize
    payload = len(raw) - header
    if payload != expected:
        what = "truncated" if payload < expected else "has trailing bytes"
        raise ValueError(f"IDX file {str(p)!r}: {what}; dimensions {dims} of {item.name} need "
                         f"{expected} data bytes after the header, found {payload}")
    arr = np.frombuffer(raw, dtype=item, offset=header).reshape(dims)
    return arr.astype(item.newbyteorder("="))        # a writable copy in native byte order


def _find_idx(directory: Path, name: str) -> Path | None:
    """Return directory/name or directory/name.gz, whichever exists (plain first), else None."""
    for candidate in (directory / name, directory / (name + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(directory, dtype, label: str):
    """Shared body of load_mnist / load_fashion_mnist; ``label`` names the dataset in messages."""
    d = _as_path("directory", directory)
    dt = as_dtype("dtype", dtype)
    found = [_find_idx(d, name) for name in MNIST_FILES]
    if any(f is None for f in found):
        missing = [n for n, f in zip(MNIST_FILES, found) if f is None]
        raise FileNotFoundError(
            f"{label} files not found in directory {str(d)!r}: expected "
            f"{', '.join(MNIST_FILES)} (each may end in .gz); missing {', '.join(missing)}. "
            f"Download them with scratchvae.data.download_mnist({str(d)!r}, "
            f"dataset={label.lower()!r}) or place them there by hand")
    tr_img, tr_lab, te_img, te_lab = (read_idx(f) for f in found)

    def images(arr, f):
        if arr.dtype != np.uint8 or arr.ndim != 3:
            raise ValueError(f"{label} file {str(f)!r} must hold uint8 images of shape "
                             f"(n, H, W); got {arr.dtype.name} of shape {arr.shape}")
        return arr

    def labels(arr, f, n):
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise ValueError(f"{label} file {str(f)!r} must hold uint8 labels of shape (n,); got "
                             f"{arr.dtype.name} of shape {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{label} file {str(f)!r} holds {arr.shape[0]} labels but the "
                             f"matching images file holds {n} images")
        if arr.size and arr.max() > 9:
            raise ValueError(f"{label} file {str(f)!r}: labels must lie in 0..9; got a maximum "
                             f"of {arr.max()}")
        return arr.astype(np.int64)

    tr_img, te_img = images(tr_img, found[0]), images(te_img, found[2])
    if tr_img.shape[1:] != te_img.shape[1:]:
        raise ValueError(f"{label}: training images are {tr_img.shape[1]}x{tr_img.shape[2]} but "
                         f"test images are {te_img.shape[1]}x{te_img.shape[2]} "
                         f"({str(found[0])!r}, {str(found[2])!r})")
    y_tr = labels(tr_lab, found[1], tr_img.shape[0])
    y_te = labels(te_lab, found[3], te_img.shape[0])

    def scale(arr):                     # (n, H, W) uint8 -> (n, H*W) in [0, 1], dtype dt
        x = arr.reshape(arr.shape[0], -1).astype(dt)
        x /= dt.type(255)
        return x

    return scale(tr_img), y_tr, scale(te_img), y_te


def load_mnist(directory, dtype="float32"):
    """Load MNIST from the four standard IDX files in ``directory`` (each gzipped or not).

    Shapes: x_tr (60000, 784), x_te (10000, 784) in ``dtype``; y_tr, y_te int64 in 0..9.
    Equation: x = pixels / 255.

    The files are train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
    and t10k-labels-idx1-ubyte, optionally with ".gz". Missing files raise FileNotFoundError
    naming all four and the directory. Nothing is downloaded; see ``download_mnist``.
    """
    return _load_idx_dataset(directory, dtype, "MNIST")


def load_fashion_mnist(directory, dtype="float32"):
    """Load Fashion-MNIST (same file names and format as MNIST) from ``directory``.

    Shapes: x_tr (60000, 784), x_te (10000, 784) in ``dtype``; y_tr, y_te int64 in 0..9.
    Equation: x = pixels / 255.
    """
    return _load_idx_dataset(directory, dtype, "Fashion-MNIST")


def download_mnist(directory, dataset="mnist", *, timeout=_DOWNLOAD_TIMEOUT) -> Path:
    """Download the four .gz files of MNIST or Fashion-MNIST into ``directory``, checked by SHA-256.

    Files already present with the right hash are kept; anything else is fetched from the
    mirrors in turn, checked against its known SHA-256, and only then written (atomically).
    Returns the directory, ready for ``load_mnist`` / ``load_fashion_mnist``. When no mirror
    delivers a correct file (offline, timeout, wrong hash) this raises RuntimeError whose one-line
    message names the four files to place there by hand.
    """
    dataset = check_choice("dataset", dataset, tuple(_SHA256))
    timeout = check_float("timeout", timeout, min_value=0.0, min_inclusive=False)
    d = _as_path("directory", directory)
    hashes = _SHA256[dataset]
    by_hand = ", ".join(hashes)

    def fail(reason: str):
        reason = " ".join(str(reason).split())          # keep the message on one line
        raise RuntimeError(f"download of {dataset} failed ({reason}); place the four files "
                           f"{by_hand} (gzipped or not) by hand in {str(d)!r}")

    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot create directory: {e}")
    for name, want in hashes.items():
        target = d / name
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == want:
            continue
        reasons = []
        for mirror in _MIRRORS[dataset]:
            url = mirror + name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read(_MAX_DOWNLOAD_BYTES + 1)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reasons.append(f"{url}: {e}")
                continue
            got = hashlib.sha256(payload).hexdigest()
            if len(payload) > _MAX_DOWNLOAD_BYTES:
                reasons.append(f"{url}: more than {_MAX_DOWNLOAD_BYTES} bytes")
            elif got != want:
                reasons.append(f"{url}: SHA-256 mismatch, expected {want}, got {got}")
            else:
                partial = target.with_name(name + ".part")
                try:
                    partial.write_bytes(payload)
                    os.replace(partial, target)
                except OSError as e:
                    partial.unlink(missing_ok=True)
                    fail(f"cannot write {str(target)!r}: {e}")
                break
        else:
            fail("; ".join(reasons))
    return d


# ----------------------------------------------------------------------------------------------
# The command line's --data SPEC
# ----------------------------------------------------------------------------------------------

_SPEC_FORMS = "'digits' (the default), 'mnist:DIR', 'fashion-mnist:DIR', 'FILE.npy' or 'FILE.npz'"


def load_spec(spec="digits", dtype="float64", seed=0, val_fraction=0.1, *, test_fraction=0.2):
    """Load the data a ``--data SPEC`` names, split into train, validation and test.

    Shapes: -> (x_tr, y_tr, x_val, y_val, x_te, y_te), x_* (n_part, D) in ``dtype``,
    y_* (n_part,) int64, or None for a .npy file or a .npz without ``y``.

    SPEC is one of:
      digits              load_digits(seed, dtype, val_fraction, test_fraction)
      mnist:DIR           load_mnist(DIR); the validation set is a seeded, stratified
      fashion-mnist:DIR   val_fraction of the training set; the test set is the official one
      FILE.npy, FILE.npz  load_array(FILE, dtype), then a seeded split by val_fraction and
                          test_fraction (stratified when the file has labels)
    """
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(f"data must be a str, one of {_SPEC_FORMS}; got {type(spec).__name__}")
    dt = as_dtype("dtype", dtype)
    rng = check_rng("seed", seed)
    val_fraction, test_fraction = _check_fractions(val_fraction, test_fraction)
    if spec == "digits":
        return load_digits(seed=rng, dtype=dt, val_fraction=val_fraction,
                           test_fraction=test_fraction)
    for prefix, loader in (("mnist:", load_mnist), ("fashion-mnist:", load_fashion_mnist)):
        if spec.startswith(prefix):
            directory = spec[len(prefix):]
            if not directory:
                raise ValueError(f"data {spec!r} names no directory; use {prefix}DIR")
            x_tr, y_tr, x_te, y_te = loader(directory, dtype=dt)
            x_tr, y_tr, x_val, y_val, _, _ = _split(x_tr, y_tr, val_fraction, 0.0, rng)
            return x_tr, y_tr, x_val, y_val, x_te, y_te
    if spec.lower().endswith((".npy", ".npz")):
        x, y = load_array(spec, dtype=dt)
        return _split(x, y, val_fraction, test_fraction, rng)
    raise ValueError(f"data must be one of {_SPEC_FORMS}; got {spec!r}")
