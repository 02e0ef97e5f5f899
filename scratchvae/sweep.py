"""Sweeps: one ``train`` per grid point and seed, run in parallel on joblib or Dask.

    import scratchvae as sv
    result = sv.sweep.run("latent_dim=2,4,8 beta=0.5,1", seeds=5, out="sweeps/d-beta",
                          epochs=30, hidden=(64,))

is ``scratchvae sweep --grid "latent_dim=2,4,8 beta=0.5,1" --seeds 5 --epochs 30 --hidden 64
--out sweeps/d-beta``. The grid may range over any option of ``train``; every value is parsed
and checked by the same argparse types as ``train``'s own options, before any run starts.

Grid syntax: space-separated ``OPTION=V1,V2,...`` (option names with ``_`` or ``-``), the
product of all of them; values that hold commas themselves are separated by ``;``
(``hidden=128,64;256``); `` | `` joins several grids into one sweep
(``"model=vae | model=vae beta=0.5 | model=hvae"``). A Python grid is a dict
``{option: [values]}`` or a list of them.

Each run is ``scratchvae train OPTIONS --out DIR/runs/<point>-seed<s> --quiet`` called in a
worker process (``cli.main``, in-process there), with its BLAS threads limited so that
jobs x threads <= cores. The parent process alone writes the sweep's files:

    DIR/sweep.json    the grid, the seeds and the train options; a sweep started again into DIR
                      must have the same ones (it then resumes)
    DIR/runs.csv      one row per finished run, appended as one write() of the whole line and
                      fsync'ed; columns: the grid's options as spelled in the grid, seed, the
                      metrics of ``scratchvae.metrics`` (test_neg_elbo first, seconds last),
                      status (finished or failed) and error (the run's one-line error)
    DIR/summary.csv   per grid point: finished and failed runs, and per metric the mean over
                      the seeds and the half-width of its t-based 95% interval
    DIR/sweep_<option>.png   each metric against each grid option, with error bars

Resuming: runs already in runs.csv (finished or failed) are skipped; a last line that a kill
cut short is dropped (the file is truncated to its last complete line) and that run is redone.
A run is recorded as failed only for a failure of its own (an error or a non-zero exit of
``train``); a run cut off by Ctrl-C or by the loss of its Dask worker is not written, so it is
redone too.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ._checks import check_float, check_int
from .metrics import METRICS

INSTALL_HINT = 'pip install "scratchvae[sweep]"'
ENGINES = ("joblib", "dask")
NOT_IN_GRID = {"out": "each run's --out is DIR/runs/<point>-seed<s>",
               "seed": "give the seeds with --seeds (the first is --seed)",
               "quiet": "--quiet is an option of the sweep", "debug": "--debug is an option of the sweep"}
STATUS_COLUMNS = ("status", "error")
LOST = "lost"   # a run whose Dask worker died: counted as failed, never written to runs.csv
CONFIDENCE = 0.95


class GridError(ValueError):
    """A bad grid, option or seed list (the command line's usage error)."""


# ============================================================================ train's options
class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises GridError instead of printing and exiting."""

    def error(self, message):
        raise GridError(message)


def _train_parser():
    from . import cli
    return _RaisingParser(prog="scratchvae train", add_help=False,
                          parents=[cli._model_options(), cli._training_options()])


def _actions(parser):
    """dest -> the argparse action of every train option (--out and --seed excluded)."""
    return {a.dest: a for a in parser._actions
            if a.option_strings and a.dest not in NOT_IN_GRID}


def _is_flag(action):
    return action.nargs == 0


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _as_text(value):
    """A Python value as the text of a command-line value (tuples joined by commas)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) if value else "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parse(action, name, text):
    """Parse one value with the option's own argparse type and choices; return the Python value."""
    if not isinstance(text, str):
        text = _as_text(text)
    if _is_flag(action):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise GridError(f"{name}: expected true or false; got {text!r}")
    value = text
    if action.type is not None:
        try:
            value = action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            raise GridError(f"{name}: {e}") from None
    if action.choices is not None and value not in action.choices:
        raise GridError(f"{name}: expected one of {', '.join(map(str, action.choices))}; "
                        f"got {text!r}")
    return value


def _argv(options, actions):
    """The train argument list of {dest: value}: flags for True switches, nothing for None."""
    out = []
    for dest, value in options.items():
        flag = max(actions[dest].option_strings, key=len)
        if _is_flag(actions[dest]):
            out += [flag] if value else []
        elif value is not None:
            out += [flag, _as_text(value)]
    return out


def _absolute_data(argv):
    """A --data FILE relative to this directory, made absolute for the workers."""
    argv = list(argv)
    for i, a in enumerate(argv[:-1]):
        if a == "--data" and os.path.exists(argv[i + 1]):
            argv[i + 1] = os.path.abspath(argv[i + 1])
    return argv


def _dest(name, actions):
    if not isinstance(name, str) or not name.strip("-"):
        raise GridError(f"grid option names must be non-empty strings; got {name!r}")
    dest = name.lstrip("-").replace("-", "_")
    if dest in NOT_IN_GRID:
        raise GridError(f"{name} cannot be swept: {NOT_IN_GRID[dest]}")
    if dest not in actions:
        raise GridError(f"unknown train option {name!r} in the grid (see 'scratchvae train --help')")
    return dest


def train_options_of(args) -> dict:
    """The train options of a parsed ``sweep`` namespace that differ from train's defaults."""
    actions = _actions(_train_parser())
    return {d: getattr(args, d) for d, a in actions.items()
            if hasattr(args, d) and getattr(args, d) != a.default}


# ============================================================================ the grid
class Point(NamedTuple):
    """One grid point: (grid name, canonical value text) pairs, and {dest: value}."""
    labels: tuple
    options: dict


def parse_grid(text):
    """The grid string -> a list of {name: [value texts]} (one dict per ' | '-joined grid)."""
    if not isinstance(text, str):
        raise GridError(f"grid must be a string such as 'latent_dim=2,4 beta=0.5,1'; "
                        f"got {type(text).__name__}")
    grids = []
    for part in text.split("|"):
        grid = {}
        for token in part.split():
            name, eq, values = token.partition("=")
            if not eq or not name or not values:
                raise GridError(f"bad grid entry {token!r}: expected OPTION=V1,V2,...")
            sep = ";" if ";" in values else ","
            vals = values.split(sep)
            if any(v == "" for v in vals):
                raise GridError(f"bad grid entry {token!r}: an empty value")
            if name in grid:
                raise GridError(f"grid option {name!r} is given twice")
            grid[name] = vals
        if not grid:
            raise GridError(f"bad grid {text!r}: expected OPTION=V1,V2,... (' | ' between grids)")
        grids.append(grid)
    return grids


def _grids(grid):
    if isinstance(grid, str):
        return parse_grid(grid)
    if isinstance(grid, Mapping):
        grid = [grid]
    if not isinstance(grid, Sequence) or not grid or not all(isinstance(g, Mapping) and g for g in grid):
        raise GridError("grid must be a string, a non-empty dict {option: [values]} or a list of them")
    out = []
    for g in grid:
        d = {}
        for name, values in g.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                values = [values]
            if not values:
                raise GridError(f"grid option {name!r} has no values")
            d[name] = list(values)
        out.append(d)
    return out


def expand(grid, actions, fixed):
    """Validate the grid and expand it: (column names in grid spelling, [Point, ...])."""
    columns, points, seen = [], [], set()
    for g in _grids(grid):
        parsed = {}
        for name, values in g.items():
            dest = _dest(name, actions)
            if dest in fixed:
                raise GridError(f"{name} is both in the grid and given as a fixed option")
            if any(_dest(c, actions) == dest and c != name for c in columns):
                raise GridError(f"grid option {name!r} is spelled two ways in the grid")
            if name not in columns:
                columns.append(name)
            vals = [_parse(actions[dest], name, v) for v in values]
            parsed[name] = (dest, list(dict.fromkeys(vals)))
        for combo in itertools.product(*(v for _, v in parsed.values())):
            labels = tuple((n, _as_text(v)) for n, v in zip(parsed, combo))
            key = tuple(sorted(labels))
            if key not in seen:
                seen.add(key)
                points.append(Point(labels, {d: v for (d, _), v in zip(parsed.values(), combo)}))
    return columns, points


def _check_point(point, fixed, actions, parser):
    """Parse the run's whole train argument list and apply train's cross-option checks."""
    from . import cli
    args = parser.parse_args(_argv({**fixed, **point.options}, actions))
    try:
        cli._check_model_options(args)
    except cli.UsageError as e:
        where = " ".join(f"{n}={v}" for n, v in point.labels)
        raise GridError(f"grid point {where}: {e}") from None


def _seeds(seeds):
    if isinstance(seeds, bool):
        raise GridError(f"seeds must be a number of seeds or a list of seeds; got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise GridError(f"seeds must be >= 1; got {seeds}")
        return list(range(seeds))
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise GridError(f"seeds must be a number of seeds or a list of seeds; got {seeds!r}") from None
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise GridError(f"seeds must be distinct integers >= 0, at least one; got {list(seeds)}")
    return out


def _run_name(point):
    text = "_".join(f"{n}={v}" for n, v in point.labels)
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)


# ============================================================================ the t interval
def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a, b, x):
    """The regularised incomplete beta function I_x(a, b), for a, b > 0 and x in [0, 1].

    Equation: I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * CF(a, b, x), the continued fraction taken
    on the side of (a + 1) / (a + b + 2) where it converges fast, else I_x = 1 - I_{1-x}(b, a).
    """
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_quantile(p, df):
    """The p-quantile of Student's t distribution with ``df`` degrees of freedom.

    Equation: for t > 0, P(T > t) = I_x(df/2, 1/2) / 2 with x = df / (df + t^2); the x with
    I_x = 2 (1 - p) is found by bisection (I_x rises with x), then t = sqrt(df (1 - x) / x).
    """
    p = check_float("p", p, min_value=0.0, max_value=1.0, min_inclusive=False,
                    max_inclusive=False)
    df = check_float("df", df, min_value=0.0, min_inclusive=False)
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    target = 2.0 * (1.0 - p)
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if betainc(0.5 * df, 0.5, mid) < target:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return math.sqrt(df * (1.0 - x) / x)


def mean_interval(values, confidence=CONFIDENCE):
    """(mean, half-width of the t-based interval) of a list of numbers; half-width None for
    fewer than 2 values. Equation: mean +- t_{(1+c)/2, n-1} s / sqrt(n), s the sample sd."""
    n = len(values)
    if n == 0:
        raise ValueError("values must hold at least one number")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    s = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(0.5 * (1.0 + confidence), n - 1) * s / math.sqrt(n)


# ============================================================================ runs.csv
def _csv_line(values):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def append_line(path, line):
    """Append ``line`` to ``path`` as one write() on an O_APPEND descriptor, then fsync: a
    reader sees the whole line or, after a kill mid-write, a last line without its newline."""
    data = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        if os.write(fd, data) != len(data):
            raise OSError(f"{path}: short write while appending a row")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_runs(path, columns):
    """The complete rows of runs.csv as dicts. A last line without its newline (a write cut
    short by a kill) is cut off the file; a file without its header gets it (again)."""
    raw = b""
    if os.path.exists(path):
        with open(path, "rb") as f:
            raw = f.read()
    cut = raw.rfind(b"\n") + 1
    if cut < len(raw):
        os.truncate(path, cut)
    rows = list(csv.reader(io.StringIO(raw[:cut].decode("utf-8"))))
    if not rows:
        append_line(path, _csv_line(columns))
        return []
    if rows[0] != list(columns):
        raise ValueError(f"{path} has the columns {rows[0]}, not this sweep's {list(columns)}; "
                         "use another --out")
    for i, r in enumerate(rows[1:], start=2):
        if len(r) != len(columns):
            raise ValueError(f"{path} line {i} has {len(r)} fields, expected {len(columns)}")
    return [dict(zip(columns, r)) for r in rows[1:]]


# ============================================================================ the worker
def _one_run(key, argv, run_dir, threads):
    """Run ``scratchvae train`` in this worker process; never raises. Returns (key, status,
    error, metrics dict or None)."""
    try:
        from threadpoolctl import threadpool_limits

        from . import cli
        os.makedirs(run_dir, exist_ok=True)
        out, err = io.StringIO(), io.StringIO()
        with threadpool_limits(limits=threads), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            code = cli.main(["train", *argv, "--out", run_dir, "--quiet"])
        with open(os.path.join(run_dir, "train.log"), "w", encoding="utf-8") as f:
            f.write(out.getvalue() + err.getvalue())
        if code != 0:
            lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
            msg = lines[-1] if lines else f"train exited with code {code}"
            return key, "failed", msg.replace("scratchvae train: error: ", "", 1), None
        with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as f:
            return key, "finished", "", json.load(f)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a failed run is recorded, never raised
        # (a KeyboardInterrupt is not the run's failure: it stops the sweep, and the run is
        # redone when the sweep is started again)
        return key, "failed", " ".join(f"{type(e).__name__}: {e}".split()), None


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _joblib_results(tasks, n_jobs):
    try:
        from joblib import Parallel, delayed
    except ImportError:
        raise ImportError(f"--engine joblib needs joblib: {INSTALL_HINT}") from None
    return Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(
        delayed(_one_run)(*t) for t in tasks)


def _dask_results(tasks, n_jobs, scheduler):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ImportError(f"--engine dask needs dask[distributed]: {INSTALL_HINT}") from None
    with contextlib.ExitStack() as stack:
        if scheduler is None:
            cluster = stack.enter_context(LocalCluster(n_workers=n_jobs, threads_per_worker=1,
                                                       processes=True, dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(Client(scheduler))
        futures = {client.submit(_one_run, *t, pure=False): t[0] for t in tasks}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as e:   # noqa: BLE001 - a lost worker loses its run only
                yield futures[future], LOST, " ".join(f"{type(e).__name__}: {e}".split()), None


def _require(engine):
    """Fail early, in one line, when the sweep's optional dependencies are missing."""
    needed = {"joblib": ("threadpoolctl", "joblib"), "dask": ("threadpoolctl", "dask.distributed")}
    for module in needed[engine]:
        try:
            __import__(module)
        except ImportError:
            raise ImportError(f"scratchvae sweep --engine {engine} needs {module.split('.')[0]}: "
                              f"{INSTALL_HINT}") from None


# ============================================================================ summary, figures
def _number(text):
    return None if text in ("", None) else float(text)


def summarize(rows, columns, points):
    """Per grid point (in grid order): its labels, runs finished and failed, and per metric the
    mean and the 95% half-width over the finished seeds."""
    grid_cols = columns[:columns.index("seed")]
    out = []
    for point in points:
        labels = dict(point.labels)
        mine = [r for r in rows if all(r[c] == labels.get(c, "") for c in grid_cols)]
        done = [r for r in mine if r["status"] == "finished"]
        row = {c: labels.get(c, "") for c in grid_cols}
        row.update(finished=len(done), failed=len(mine) - len(done))
        for m in METRICS:
            vals = [v for v in (_number(r[m]) for r in done) if v is not None]
            mean, half = mean_interval(vals) if vals else (None, None)
            row[f"{m}_mean"], row[f"{m}_ci95"] = mean, half
        out.append(row)
    return out


def _as_number(text):
    try:
        v = float(text)
    except ValueError:
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def sweep_figures(summary, grid_cols, out):
    """One figure per grid option with more than one value: each metric against its values,
    a line per combination of the other options. Returns the paths written."""
    import numpy as np

    from . import viz
    from .cli import _save_figure
    metrics = [m for m in METRICS if not m.endswith("_stderr")
               and any(r[f"{m}_mean"] is not None for r in summary)]
    written = []
    for col in grid_cols:
        xs = list(dict.fromkeys(r[col] for r in summary if r[col] != ""))
        if len(xs) < 2 or not metrics:
            continue
        series = {}
        for r in summary:
            if r[col] == "":
                continue
            label = " ".join(f"{c}={r[c]}" for c in grid_cols if c != col and r[c] != "")
            mean, err = series.setdefault(label, (np.full((len(xs), len(metrics)), np.nan),
                                                  np.full((len(xs), len(metrics)), np.nan)))
            i = xs.index(r[col])
            for j, m in enumerate(metrics):
                mean[i, j] = np.nan if r[f"{m}_mean"] is None else r[f"{m}_mean"]
                err[i, j] = np.nan if r[f"{m}_ci95"] is None else r[f"{m}_ci95"]
        x = [_as_number(v) for v in xs]
        numeric = all(isinstance(v, (int, float)) for v in x)
        scale = "log" if numeric and min(x) > 0 and max(x) / min(x) >= 8 else "linear"
        fig = viz.plot_sweep(x if numeric else xs, series, metrics, xlabel=col, xscale=scale,
                             title=f"sweep over {col}: mean and 95% interval over seeds")
        written.append(_save_figure(fig, os.path.join(out, f"sweep_{col}.png")))
    return written


# ============================================================================ run
class SweepResult(NamedTuple):
    out: str
    runs_csv: str
    summary_csv: str
    finished: int          # runs finished by this call
    failed: int            # runs that failed in this call
    skipped: int           # runs already in runs.csv
    summary: list          # the rows of summary.csv
    written: list          # the files written


def _sweep_record(grids, columns, seeds, fixed, actions):
    grid = [{n: [_as_text(_parse(actions[_dest(n, actions)], n, v)) for v in vals]
             for n, vals in g.items()} for g in grids]
    command = ["scratchvae", "sweep", "--grid", " | ".join(
        " ".join(f"{n}={(';' if any(',' in v for v in vals) else ',').join(vals)}"
                 for n, vals in g.items()) for g in grid)]
    command += ["--seed", str(seeds[0]), "--seeds", str(len(seeds)), *_argv(fixed, actions)]
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        command = None      # seeds that are not consecutive: only the Python API can say them
    return {"grid": grid, "seeds": seeds, "train_options": {d: _as_text(v) for d, v in fixed.items()},
            "columns": columns, "command": command}


def _check_resume(path, record):
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        try:
            old = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); use another --out") from None
    for what in ("grid", "seeds", "train_options"):
        if old.get(what) != record[what]:
            raise GridError(f"{os.path.dirname(path)} holds a sweep with other {what.replace('_', ' ')} "
                            f"({json.dumps(old.get(what))}, now {json.dumps(record[what])}); "
                            "resume it with its own command or use another --out")
    return True


def run(grid, seeds, engine="joblib", n_jobs=None, out=None, *, scheduler=None, progress=True,
        **train_options) -> SweepResult:
    """Train every grid point with every seed, ``n_jobs`` runs at a time; see the module text.

    grid: a grid string or a dict {option: [values]} (or a list of dicts); seeds: a count N
    (seeds 0..N-1) or a list of seeds; engine: "joblib" or "dask" (``scheduler``: the address of
    a Dask scheduler; None starts a local cluster of ``n_jobs`` workers); n_jobs: runs at a time
    (default: the cores); out: the sweep directory (required); train_options: the other train
    options for every run, by their names in ``train`` (``epochs=30, hidden=(64,)``).
    Returns a ``SweepResult``. Raises ``GridError`` for a bad grid, option or seed list.
    """
    if out is None or not isinstance(out, (str, os.PathLike)):
        raise GridError("out must name the sweep directory")
    out = os.fspath(out)
    if engine not in ENGINES:
        raise GridError(f"engine must be one of {ENGINES}; got {engine!r}")
    if scheduler is not None and engine != "dask":
        raise GridError("scheduler needs engine='dask'")
    cores = _cores()
    if n_jobs is None:
        n_jobs = cores
    try:
        n_jobs = check_int("n_jobs", n_jobs, min_value=1)
    except (TypeError, ValueError) as e:
        raise GridError(str(e)) from e
    # jobs x threads <= cores here; on a scheduler's workers, one BLAS thread per run (a worker
    # runs as many runs at once as it has threads)
    threads = 1 if scheduler is not None else max(1, cores // n_jobs)
    _require(engine)
    parser = _train_parser()
    actions = _actions(parser)
    fixed = {}
    for name, value in train_options.items():
        dest = _dest(name, actions)
        fixed[dest] = _parse(actions[dest], name, value)
    seeds = _seeds(seeds)
    grids = _grids(grid)
    grid_cols, points = expand(grids, actions, fixed)
    for point in points:
        _check_point(point, fixed, actions, parser)
    columns = [*grid_cols, "seed", *METRICS, *STATUS_COLUMNS]
    names = [_run_name(p) for p in points]
    if len(set(names)) != len(names):
        names = [f"{i:03d}-{n}" for i, n in enumerate(names)]

    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} exists and is not a directory")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    with _lock(out):
        return _run_locked(out, grids, grid_cols, points, names, columns, seeds, fixed, actions,
                           parser, engine, n_jobs, scheduler, threads, progress)


@contextlib.contextmanager
def _lock(out):
    """Hold an exclusive lock on DIR/.lock while the sweep runs: two sweeps into one DIR would
    both run the missing runs. The kernel drops the lock when the process dies, even by SIGKILL."""
    try:
        import fcntl
    except ImportError:          # not POSIX: no lock
        yield
        return
    fd = os.open(os.path.join(out, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another sweep is running in {out}; wait for it or use another "
                               "--out") from None
        yield
    finally:
        os.close(fd)


def _run_locked(out, grids, grid_cols, points, names, columns, seeds, fixed, actions, parser,
                engine, n_jobs, scheduler, threads, progress):
    from . import io as svio
    record = _sweep_record(grids, columns, seeds, fixed, actions)
    sweep_json, runs_csv = os.path.join(out, "sweep.json"), os.path.join(out, "runs.csv")
    if not _check_resume(sweep_json, record):
        if os.path.exists(runs_csv):
            raise GridError(f"{out} holds a runs.csv but no sweep.json; use another --out")
        svio.write_json_atomic(sweep_json, record)
    rows = read_runs(runs_csv, columns)
    done = {tuple(r[c] for c in columns[:len(grid_cols) + 1]) for r in rows}

    def key_of(point, seed):
        labels = dict(point.labels)
        return tuple(labels.get(c, "") for c in grid_cols) + (str(seed),)

    tasks = []
    for point, name in zip(points, names):
        for seed in seeds:
            key = key_of(point, seed)
            if key in done:
                continue
            argv = _argv({**fixed, **point.options, "seed": seed},
                         {**actions, "seed": parser._option_string_actions["--seed"]})
            run_dir = os.path.abspath(os.path.join(out, "runs", f"{name}-seed{seed}"))
            tasks.append((key, _absolute_data(argv), run_dir, threads))
    skipped = len(points) * len(seeds) - len(tasks)

    from tqdm.auto import tqdm
    finished = failed = 0
    if tasks:
        results = (_joblib_results(tasks, n_jobs) if engine == "joblib"
                   else _dask_results(tasks, n_jobs, scheduler))
        with tqdm(total=len(points) * len(seeds), initial=skipped, unit="run", desc="sweep",
                  disable=not progress, file=sys.stderr) as bar:
            for key, status, error, metrics in results:
                metrics = metrics or {}
                if status != LOST:   # a lost run is not recorded: a resume redoes it
                    line = _csv_line([*key, *(metrics.get(m) for m in METRICS), status, error])
                    append_line(runs_csv, line)
                finished += status == "finished"
                failed += status != "finished"
                bar.update(1)
                if status != "finished" and progress:
                    bar.write(f"run {' '.join(key)} failed: {error}")
    rows = read_runs(runs_csv, columns)
    summary = summarize(rows, columns, points)
    summary_csv = svio.write_csv_atomic(os.path.join(out, "summary.csv"), summary)
    written = [runs_csv, summary_csv, *sweep_figures(summary, grid_cols, out)]
    return SweepResult(out, runs_csv, summary_csv, finished, failed, skipped, summary, written)


__all__ = ["run", "parse_grid", "expand", "t_quantile", "betainc", "mean_interval", "GridError",
           "SweepResult", "append_line", "read_runs", "summarize", "INSTALL_HINT"]
