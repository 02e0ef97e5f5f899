"""The family's reference table on the bundled digits: every model, 5 seeds, mean +- 95% interval.

Runs ONE sweep (``scratchvae sweep``, resumable) whose grid is the union of one point per family
member, then writes the table from the sweep's summary.csv into docs/results.md (between its
table markers), with the command and how long the sweep took:

    python benchmarks/reference_table.py --jobs 2                          # this machine
    python benchmarks/reference_table.py --engine dask --scheduler tcp://HOST:8786
    python benchmarks/reference_table.py --from-summary runs/reference     # table only

The family members are those the installed scratchvae offers (``--model`` choices of train):
VAE, beta-VAE at beta = 0.5 and 2, IWAE with K = 5, CVAE, HVAE, and VQ-VAE and FlowVAE where
present. Every other option is train's default (hidden 128, d = 8, 100 epochs, float32, numba).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
sys.path.insert(0, REPO)

from scratchvae import cli, sweep  # noqa: E402
from scratchvae.metrics import IW_K, METRICS  # noqa: E402

# (table name, grid point); the point spells only what differs from train's defaults
FAMILY = [
    ("VAE", "model=vae"),
    ("beta-VAE, beta = 0.5", "model=vae beta=0.5"),
    ("beta-VAE, beta = 2", "model=vae beta=2"),
    ("IWAE, K = 5", "model=vae objective=iwae samples=5"),
    ("CVAE", "model=cvae"),
    ("HVAE", "model=hvae"),
    ("VQ-VAE", "model=vqvae"),
    ("FlowVAE", "model=flow"),
]
SEEDS = 5
DOC = os.path.join(REPO, "docs", "results.md")
START, END = "<!-- reference-table:start -->", "<!-- reference-table:end -->"
COLUMNS = [("test_neg_elbo", "test -ELBO (nats)", 2), ("iw_ll", f"IW log p(x), k = {IW_K}", 2),
           ("active_units", "active units", 1), ("frechet_digit_distance", "Frechet digit dist.", 2),
           ("kl_qz_pz", "KL(q(z) ‖ p(z))", 2), ("seconds", "train s", 1)]


def family():
    """The members whose --model the installed train accepts."""
    return [(name, point) for name, point in FAMILY
            if point.split()[0].split("=")[1] in cli.MODELS]


def grid_text(members):
    return " | ".join(point for _, point in members)


def command(members, args):
    argv = ["scratchvae", "sweep", "--grid", grid_text(members), "--seeds", str(args.seeds),
            "--epochs", str(args.epochs), "--out", args.out]
    if args.jobs:
        argv += ["--jobs", str(args.jobs)]
    if args.engine == "dask":
        argv += ["--engine", "dask"] + (["--scheduler", args.scheduler] if args.scheduler else [])
    return shlex.join(argv)


def read_summary(path):
    with open(os.path.join(path, "summary.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _cell(row, metric, digits):
    mean, half = row.get(f"{metric}_mean", ""), row.get(f"{metric}_ci95", "")
    if mean == "":
        return "-"
    return f"{float(mean):.{digits}f}" + ("" if half == "" else f" ± {float(half):.{digits}f}")


def table(members, summary):
    """The markdown table: a row per member in FAMILY order, 'mean ± half-width' per metric."""
    assert [m for m, _, _ in COLUMNS] == [m for m in METRICS if not m.endswith("_stderr")]
    lines = ["| model | seeds | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    grid_cols = [c for c in summary[0] if c not in ("finished", "failed") and not
                 c.endswith(("_mean", "_ci95"))] if summary else []
    for name, point in members:
        want = dict(kv.split("=") for kv in point.split())
        row = next((r for r in summary if all(
            _same(r.get(c, ""), want.get(c, "")) for c in grid_cols)), None)
        if row is None:
            lines.append(f"| {name} | 0 | " + " | ".join("-" for _ in COLUMNS) + " |")
            continue
        seeds = row["finished"] + ("" if row["failed"] == "0" else f" ({row['failed']} failed)")
        lines.append(f"| {name} | {seeds} | " + " | ".join(_cell(row, m, d) for m, _, d in COLUMNS)
                     + " |")
    return "\n".join(lines)


def _same(a, b):
    if a == b:
        return True
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def write_doc(text):
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    if START not in doc or END not in doc:
        raise SystemExit(f"{DOC} has no {START} ... {END} markers")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    from scratchvae import io as svio
    svio._write_atomic(DOC, lambda f: f.write(f"{head}{START}\n{text}\n{END}{tail}"), binary=False)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/reference", help="the sweep directory (resumable)")
    ap.add_argument("--jobs", type=int, default=None, help="runs at a time (default: the cores)")
    ap.add_argument("--engine", choices=("joblib", "dask"), default="joblib")
    ap.add_argument("--scheduler", default=None, help="a Dask scheduler address (--engine dask)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=SEEDS, help="seeds per model (the table: 5)")
    ap.add_argument("--from-summary", metavar="DIR", default=None,
                    help="write the table from DIR/summary.csv without running anything")
    ap.add_argument("--no-doc", action="store_true", help="print the table, leave docs/results.md")
    args = ap.parse_args(argv)
    members = family()
    timing = None
    if args.from_summary is None:
        t0 = time.perf_counter()
        result = sweep.run(grid_text(members), args.seeds, engine=args.engine, n_jobs=args.jobs,
                           out=args.out, scheduler=args.scheduler, epochs=args.epochs)
        seconds = time.perf_counter() - t0
        timing = (f"{result.finished + result.failed} runs in {seconds / 60:.1f} min "
                  f"({result.skipped} resumed from an earlier start)")
        if result.skipped == 0:      # a resumed sweep's time says nothing; keep the first one
            with open(os.path.join(args.out, "reference_time.txt"), "w", encoding="utf-8") as f:
                f.write(f"{timing}, --jobs {args.jobs or 'one per core'}, engine {args.engine}\n")
        summary = [{k: ("" if v is None else str(v)) for k, v in r.items()} for r in result.summary]
    else:
        summary = read_summary(args.from_summary)
        path = os.path.join(args.from_summary, "reference_time.txt")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                timing = f.read().strip()
    text = table(members, summary)
    cmd = command(members, args)
    cpu = platform.processor() or platform.machine()
    info = [f"Command: `{cmd}`", f"Machine: {os.cpu_count()} cores ({cpu}), Python "
            f"{platform.python_version()}; {time.strftime('%Y-%m-%d')}."]
    if timing:
        info.append(f"Time: {timing}.")
    block = "\n\n".join([text, *info])
    print(block)
    if not args.no_doc:
        write_doc(block)
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
