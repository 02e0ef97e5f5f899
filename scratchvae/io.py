"""Checkpoints and training histories on disk: atomic writes, no pickle anywhere.

A checkpoint is ONE ``.npz`` file (a zip of ``.npy`` members, readable with
``np.load(path, allow_pickle=False)``) holding

- every parameter array under its own key (``"enc.W0"``, ``"dec.b_out"``, ...), and
- a JSON header under the reserved key ``"__config__.json"``, stored as a 0-d unicode array::

      {"format_version": 1,
       "param_keys": ["enc.W0", ...],                      # order of the params dict
       "params": {"enc.W0": {"shape": [64, 400], "dtype": "<f8"}, ...},
       "config": {...}}                                    # the caller's config, as given

Every file is written atomically: the bytes go to a temporary file in the target directory,
which is flushed, fsync'ed and then renamed over the target with ``os.replace``. A reader
therefore sees either the old file or the complete new one, and a failed write leaves the old
file untouched and no temporary file behind.

This module knows nothing about models: it stores dicts of arrays and JSON-able configs.
"""
from __future__ import annotations

import csv
import glob
import json
import numbers
import os
import tempfile
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np

FORMAT_VERSION = 1
CONFIG_KEY = "__config__.json"
DEFAULT_CHECKPOINT_NAME = "checkpoint.npz"

# The process umask, read once at import, so atomically written files get the usual mode
# (0o666 & ~umask) rather than tempfile's private 0o600.
_UMASK = os.umask(0)
os.umask(_UMASK)


# ---------------------------------------------------------------- atomic write
def _write_atomic(path: str, write, *, binary: bool) -> None:
    """Call ``write(f)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"path {path}: directory {directory} does not exist")
    text = {} if binary else {"encoding": "utf-8", "newline": ""}
    tmp = tempfile.NamedTemporaryFile(mode="wb" if binary else "w", delete=False, dir=directory,
                                      prefix=f".{os.path.basename(path)}.", suffix=".tmp", **text)
    try:
        with tmp as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.chmod(tmp.name, 0o666 & ~_UMASK)
        os.replace(tmp.name, path)
    except BaseException:
        try:
            os.unlink(tmp.name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj):
    """JSON encoding of NumPy scalars and arrays (everything else is an error)."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def _to_json(name: str, obj, **kwargs) -> str:
    try:
        return json.dumps(obj, default=_json_default, allow_nan=False, **kwargs)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name} must be JSON-serializable (str, finite numbers, lists, dicts; "
                      f"use None for a missing value): {e}") from e


def _check_path(name: str, path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike; got {type(path).__name__}")
    return os.fspath(path)


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path, params: dict, config: dict) -> str:
    """Write ``params`` and ``config`` atomically to one ``.npz`` file; return its path.

    ``path`` gets ``.npz`` appended when it does not end in it (as ``np.savez`` does), so
    ``save_checkpoint("run/model", ...)`` writes ``run/model.npz``; the directory must exist.
    ``params`` maps str keys to finite numeric (float, int or bool) ndarrays; ``config`` is a
    JSON-serializable dict (tuples come back as lists). An existing file at the final path is
    replaced only once the new one is complete.
    """
    path = _check_path("path", path)
    if not path.endswith(".npz"):
        path += ".npz"
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict; got {type(config).__name__}")
    meta = {}
    for key, a in params.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"params keys must be non-empty str; got {key!r}")
        if key == CONFIG_KEY:
            raise ValueError(f"params must not use the reserved key {CONFIG_KEY!r}")
        if not isinstance(a, np.ndarray):
            raise TypeError(f"params[{key!r}] must be a numpy.ndarray; got {type(a).__name__}")
        if a.dtype.kind not in "biuf":
            raise ValueError(f"params[{key!r}] must have a numeric dtype; got {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"params[{key!r}] must be finite; it has NaN or inf entries")
        meta[key] = {"shape": list(a.shape), "dtype": a.dtype.str}
    header = {"format_version": FORMAT_VERSION, "param_keys": list(params), "params": meta,
              "config": dict(config)}
    header_json = _to_json("config", header)

    def write(f):
        # zipfile + np.lib.format directly (rather than np.savez) so that keys such as "file"
        # cannot clash with np.savez's own arguments, and pickle is refused explicitly.
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, a in [*params.items(), (CONFIG_KEY, np.array(header_json))]:
                with zf.open(key + ".npy", mode="w", force_zip64=True) as member:
                    # C order always: load_checkpoint refuses Fortran-ordered members
                    np.lib.format.write_array(member, np.require(a, requirements="C"),
                                              allow_pickle=False)

    _write_atomic(path, write, binary=True)
    return path


def _resolve_checkpoint(path: str) -> str:
    """Map a run directory (or a path given without its ``.npz``) to the checkpoint file."""
    if os.path.isdir(path):
        preferred = os.path.join(path, DEFAULT_CHECKPOINT_NAME)
        if os.path.isfile(preferred):
            return preferred
        found = sorted(glob.glob(os.path.join(glob.escape(path), "*.npz")))
        if not found:
            raise FileNotFoundError(f"checkpoint directory {path} contains no .npz checkpoint")
        if len(found) > 1:
            names = [os.path.basename(p) for p in found]
            raise ValueError(f"checkpoint directory {path} contains several .npz files {names} "
                             f"and no {DEFAULT_CHECKPOINT_NAME}; pass the file itself")
        return found[0]
    if not os.path.exists(path) and not path.endswith(".npz") and os.path.isfile(path + ".npz"):
        return path + ".npz"  # the same name save_checkpoint(path) wrote
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def load_checkpoint(path) -> tuple[dict, dict]:
    """Read a checkpoint written by ``save_checkpoint``; return ``(params, config)``.

    ``path`` is the ``.npz`` file, the same path without ``.npz``, or a run directory holding
    ``checkpoint.npz`` (or exactly one other ``*.npz``). ``params`` is ordered as when saved.
    Raises FileNotFoundError when nothing is there, and ValueError naming the problem when the
    file is corrupt or truncated, has no or an unknown header, or its arrays do not match the
    keys, shapes and dtypes the header records, or are not finite.

    Nothing is allocated from what a member's ``.npy`` header claims: every member's header
    (shape, dtype, fortran order) is read first and checked against the JSON header's record
    and against the number of bytes the member actually holds, and only then is its data read.
    A header that declares a huge shape is therefore a ValueError naming the member, not a
    MemoryError.
    """
    path = _resolve_checkpoint(_check_path("path", path))
    with open(path, "rb") as f:
        if f.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise ValueError(f"checkpoint {path} is a single .npy array, not an .npz checkpoint")
    try:
        with zipfile.ZipFile(path) as zf:
            return _read_members(path, zf)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:
        raise ValueError(f"checkpoint {path} is corrupt or truncated: "
                         f"{type(e).__name__}: {e}") from e


_NPY_MAGIC = b"\x93NUMPY"


class _Member:
    """One ``.npy`` member of a checkpoint, its header read and its data not yet."""

    def __init__(self, path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo):
        self.key = info.filename[:-len(".npy")]
        self.name = f"checkpoint {path}: member {info.filename!r}"
        self._zf, self._info = zf, info
        with zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"npy format version {version} is not one scratchvae writes")
            except ValueError as e:
                raise ValueError(f"{self.name} has no valid .npy header: {e}") from e
            self._offset = f.tell()
        if dtype.hasobject:
            raise ValueError(f"{self.name} holds Python objects (dtype {dtype}); checkpoints "
                             "hold numbers only and are read without unpickling")
        self.shape, self.fortran_order, self.dtype = tuple(shape), bool(fortran), dtype
        self.nbytes = int(np.prod(self.shape, dtype=object)) * dtype.itemsize
        held = info.file_size - self._offset
        if self.nbytes != held:
            raise ValueError(f"{self.name}: its header declares shape {self.shape} and dtype "
                             f"{dtype.str} ({self.nbytes} bytes) but it holds {held} bytes of data")

    def read(self) -> np.ndarray:
        """The member's array: exactly ``nbytes`` read after the header (allocated as read)."""
        with self._zf.open(self._info) as f:
            f.seek(self._offset)
            data = f.read(self.nbytes)
            if len(data) != self.nbytes or f.read(1):
                raise ValueError(f"{self.name} is truncated")
        a = np.frombuffer(bytearray(data), dtype=self.dtype)
        return a.reshape(self.shape)   # C order: _read_members refuses Fortran-order members


def _read_members(path: str, zf: zipfile.ZipFile) -> tuple[dict, dict]:
    infos = zf.infolist()
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise ValueError(f"checkpoint {path}: member {info.filename!r} is not a .npy array")
    members = {m.key: m for m in (_Member(path, zf, info) for info in infos)}
    cfg = members.pop(CONFIG_KEY, None)
    if cfg is not None and (cfg.dtype.kind != "U" or cfg.shape != ()):
        raise ValueError(f"checkpoint {path}: {CONFIG_KEY!r} must be a 0-d str array; "
                         f"got dtype {cfg.dtype} and shape {cfg.shape}")
    header = _read_header(path, None if cfg is None else cfg.read())
    keys = header["param_keys"]
    if set(members) != set(keys):
        missing = [k for k in keys if k not in members]
        extra = [k for k in members if k not in keys]
        raise ValueError(f"checkpoint {path}: arrays do not match the recorded param_keys; "
                         f"missing {missing}, unexpected {extra}")
    for key in keys:          # every header against the record before any array is read
        m, want = members[key], header["params"].get(key)
        if not isinstance(want, dict) or "shape" not in want or "dtype" not in want:
            raise ValueError(f"checkpoint {path}: no recorded shape and dtype for {key!r}")
        if list(m.shape) != list(want["shape"]) or m.dtype.str != want["dtype"]:
            raise ValueError(f"checkpoint {path}: array {key!r} has shape {m.shape} and dtype "
                             f"{m.dtype.str} but the header records {tuple(want['shape'])} "
                             f"and {want['dtype']}")
        if m.fortran_order:
            raise ValueError(f"checkpoint {path}: array {key!r} is stored in Fortran order; "
                             "save_checkpoint writes C order")
    params = {}
    for key in keys:
        a = members[key].read()
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"checkpoint {path}: array {key!r} has NaN or inf entries")
        params[key] = a
    return params, header["config"]


def _read_header(path: str, raw) -> dict:
    """Decode and check the JSON header of checkpoint ``path``."""
    if raw is None:
        raise ValueError(f"checkpoint {path} has no {CONFIG_KEY!r} entry; "
                         "it was not written by scratchvae.io.save_checkpoint")
    try:   # (raw: a 0-d str array, checked by _read_members)
        header = json.loads(raw.item())
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {CONFIG_KEY!r} is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise ValueError(f"checkpoint {path}: {CONFIG_KEY!r} must hold a JSON object")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path} has format_version {version!r}; this version of "
                         f"scratchvae reads format_version {FORMAT_VERSION}")
    keys = header.get("param_keys")
    if (not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
            or len(set(keys)) != len(keys)):
        raise ValueError(f"checkpoint {path}: param_keys must be a list of distinct str")
    if not isinstance(header.get("params"), dict) or not isinstance(header.get("config"), dict):
        raise ValueError(f"checkpoint {path}: the header must have 'params' and 'config' objects")
    return header


# ---------------------------------------------------------------- histories
def write_json_atomic(path, obj, *, indent: int = 2) -> str:
    """Write ``obj`` as strict JSON (no NaN/inf; NumPy scalars and arrays become numbers/lists)
    to ``path`` atomically; return the path."""
    path = _check_path("path", path)
    text = _to_json("obj", obj, indent=indent) + "\n"
    _write_atomic(path, lambda f: f.write(text), binary=False)
    return path


def write_csv_atomic(path, rows: list, fieldnames=None) -> str:
    """Write ``rows`` (a list of dicts, e.g. one per epoch) as CSV to ``path`` atomically.

    The columns are ``fieldnames`` if given, else every key in order of first appearance; a
    row without a column leaves that cell empty. Floats are written with ``repr``, so they read
    back exactly. An empty ``rows`` gives a header-only file (or an empty one). Returns the path.
    """
    path = _check_path("path", path)
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"rows must be a list of dicts; got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict; got {type(row).__name__}")
    if fieldnames is None:
        fieldnames = list(dict.fromkeys(k for row in rows for k in row))
    else:
        fieldnames = list(fieldnames)
        for i, row in enumerate(rows):
            extra = [k for k in row if k not in fieldnames]
            if extra:
                raise ValueError(f"rows[{i}] has keys {extra} that are not in fieldnames")

    def cell(v):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral)):
            return repr(float(v))
        return v

    def write(f):
        if not fieldnames:
            return
        writer = csv.DictWriter(f, fieldnames=fieldnames, restval="", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(v) for k, v in row.items()})

    _write_atomic(path, write, binary=False)
    return path


__all__ = ["save_checkpoint", "load_checkpoint", "write_json_atomic", "write_csv_atomic",
           "FORMAT_VERSION", "CONFIG_KEY"]
