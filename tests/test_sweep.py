"""Sweeps: the grid and its errors, the t interval against scipy, small sweeps on joblib and a
Dask cluster, failed runs, metrics.json, and resuming after SIGKILL without losing or repeating
a run."""
import contextlib
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from scratchvae import sweep
from scratchvae.cli import main
from scratchvae.metrics import METRICS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T975 = {1: 12.706204736174707, 2: 4.302652729749464}    # scipy.stats.t.ppf(0.975, df)
TINY = ["--epochs", "1", "--hidden", "4", "--batch-size", "32", "--quiet"]


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def data(tmp_path):
    """120 rows of 16 'pixels' in [0, 1], no labels: a run takes a fraction of a second."""
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((120, 16)))
    return str(path)


def assert_usage_error(argv, *fragments):
    code, _, err = run(argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err and "error" in lines[0], err
    for f in fragments:
        assert f in lines[0], lines[0]


# ============================================================================ the t interval
@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 250, 0.5, 2.5])
@pytest.mark.parametrize("p", [0.975, 0.995, 0.9, 0.6, 0.025, 0.5])
def test_t_quantile_matches_scipy(p, df):
    stats = pytest.importorskip("scipy.stats")
    assert sweep.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("a,b,x", [(0.5, 0.5, 0.3), (2.0, 0.5, 0.9), (10.0, 0.5, 0.05),
                                   (3.0, 7.0, 0.4), (0.2, 4.0, 0.999)])
def test_betainc_matches_scipy(a, b, x):
    special = pytest.importorskip("scipy.special")
    assert sweep.betainc(a, b, x) == pytest.approx(special.betainc(a, b, x), rel=1e-12)


def test_mean_interval_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    v = [41.2, 40.7, 42.9, 41.8, 40.1]
    mean, half = sweep.mean_interval(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert mean == pytest.approx(np.mean(v), rel=1e-15)
    assert (mean - half, mean + half) == pytest.approx((lo, hi), rel=1e-12)
    assert sweep.mean_interval([3.0]) == (3.0, None)


@pytest.mark.parametrize("p,df", [(0.0, 3), (1.0, 3), (0.9, 0), (0.9, float("inf"))])
def test_t_quantile_refuses_bad_arguments(p, df):
    with pytest.raises(ValueError, match="p must|df must"):
        sweep.t_quantile(p, df)


# ============================================================================ the grid
def test_grid_parsing_products_unions_and_semicolons():
    actions = sweep._actions(sweep._train_parser())
    cols, points = sweep.expand("latent_dim=2,4 beta=0.5,1", actions, {})
    assert cols == ["latent_dim", "beta"]
    assert [p.labels for p in points] == [
        (("latent_dim", "2"), ("beta", "0.5")), (("latent_dim", "2"), ("beta", "1.0")),
        (("latent_dim", "4"), ("beta", "0.5")), (("latent_dim", "4"), ("beta", "1.0"))]
    assert points[0].options == {"latent_dim": 2, "beta": 0.5}
    _, points = sweep.expand("hidden=128,64;256", actions, {})
    assert [p.options["hidden"] for p in points] == [(128, 64), (256,)]
    # ' | ' joins grids; a point given twice (beta=1 and beta=1.0) runs once
    cols, points = sweep.expand("model=vae beta=1,1.0 | model=hvae objective=iwae samples=5",
                                actions, {})
    assert cols == ["model", "beta", "objective", "samples"]
    assert len(points) == 2 and points[1].options == {"model": "hvae", "objective": "iwae",
                                                      "samples": 5}
    # a Python grid: values of Python types, checked by the same argparse types
    _, points = sweep.expand({"hidden": [(8,), (8, 4)], "binarize": [True, False]}, actions, {})
    assert points[1].options == {"hidden": (8,), "binarize": False}
    assert points[2].labels == (("hidden", "8,4"), ("binarize", "true"))


@pytest.mark.parametrize("grid,fragment", [
    ("latent_dim", "expected OPTION=V1,V2"),
    ("latent_dim=", "expected OPTION=V1,V2"),
    ("latent_dim=2,,4", "an empty value"),
    ("latent_dim=2 latent_dim=4", "given twice"),
    ("  ", "bad grid"),
    ("wings=2,4", "unknown train option 'wings'"),
    ("latent_dim=two", "latent_dim: expected an integer >= 1; got 'two'"),
    ("beta=-1", "beta: expected a number >= 0"),
    ("model=gan", "model: expected one of"),
    ("binarize=maybe", "binarize: expected true or false"),
    ("seed=1,2", "--seeds"),
    ("out=a,b", "cannot be swept"),
    ("model=vae,hvae latent_dim=2", "grid point model=hvae latent_dim=2: --latent-dim is for vae"),
    ("epochs=1,2", "both in the grid and given as a fixed option"),
])
def test_bad_grid_is_a_one_line_usage_error(tmp_path, grid, fragment):
    out = tmp_path / "sw"
    assert_usage_error(["sweep", "--grid", grid, "--out", str(out), *TINY], fragment)
    assert not out.exists()             # nothing is created before the grid is valid


def test_bad_seeds_jobs_and_missing_out_are_usage_errors(tmp_path):
    out = str(tmp_path / "sw")
    assert_usage_error(["sweep", "--grid", "beta=1", "--seeds", "0", "--out", out], "--seeds")
    assert_usage_error(["sweep", "--grid", "beta=1", "--jobs", "-1", "--out", out], "--jobs")
    assert_usage_error(["sweep", "--grid", "beta=1"], "--out")
    assert_usage_error(["sweep", "--grid", "beta=1", "--latent-dim", "x", "--out", out],
                       "--latent-dim")
    assert_usage_error(["sweep", "--grid", "beta=1", "--scheduler", "tcp://h:1", "--out", out],
                       "--scheduler needs --engine dask")
    with pytest.raises(sweep.GridError, match="seeds must be >= 1"):
        sweep.run("beta=1", 0, out=out)
    with pytest.raises(sweep.GridError, match="seeds must be distinct"):
        sweep.run("beta=1", [1, 1], out=out)
    with pytest.raises(sweep.GridError, match="unknown train option 'wings'"):
        sweep.run("beta=1", 2, out=out, wings=3)


def test_missing_engine_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "joblib", None)       # import joblib now fails
    code, _, err = run(["sweep", "--grid", "beta=1", "--out", str(tmp_path / "sw"), *TINY])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert 'pip install "scratchvae[sweep]"' in err


def test_package_imports_without_the_sweep_extras():
    code = ("import sys\nfor m in ('joblib', 'dask', 'distributed', 'threadpoolctl'): "
            "sys.modules[m] = None\nimport scratchvae, scratchvae.sweep, scratchvae.cli\n"
            "print(scratchvae.sweep.t_quantile(0.975, 4))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) == pytest.approx(2.7764451051977987, rel=1e-12)


# ============================================================================ sweeps
def check_sweep_files(out, grid_cols, n_points, n_seeds):
    rows = read_csv(os.path.join(out, "runs.csv"))
    assert list(rows[0]) == [*grid_cols, "seed", *METRICS, "status", "error"]
    assert len(rows) == n_points * n_seeds
    assert len({tuple(r[c] for c in [*grid_cols, "seed"]) for r in rows}) == len(rows)
    summary = read_csv(os.path.join(out, "summary.csv"))
    assert len(summary) == n_points
    for s in summary:
        mine = [r for r in rows if all(r[c] == s[c] for c in grid_cols) and r["status"] == "finished"]
        assert int(s["finished"]) == len(mine)
        v = [float(r["test_neg_elbo"]) for r in mine]
        if len(v) >= 2:   # the interval from tabulated t quantiles t_{0.975, n-1}
            half = T975[len(v) - 1] * np.std(v, ddof=1) / math.sqrt(len(v))
            assert float(s["test_neg_elbo_mean"]) == pytest.approx(np.mean(v), rel=1e-12)
            assert float(s["test_neg_elbo_ci95"]) == pytest.approx(half, rel=1e-9)
    return rows, summary


def test_joblib_sweep_on_digits_writes_runs_summary_metrics_and_figures(tmp_path):
    out = str(tmp_path / "sw")
    code, stdout, err = run(["sweep", "--grid", "latent_dim=2,3", "--seeds", "2", "--jobs", "2",
                             "--out", out, *TINY])
    assert code == 0, err
    rows, summary = check_sweep_files(out, ["latent_dim"], 2, 2)
    assert {r["status"] for r in rows} == {"finished"}
    for r in rows:                  # every run has its directory and its metrics.json
        run_dir = os.path.join(out, "runs", f"latent_dim={r['latent_dim']}-seed{r['seed']}")
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(run_dir, "config.json")) as f:
            config = json.load(f)
        assert list(metrics) == list(METRICS)
        assert metrics["test_neg_elbo"] == config["test_neg_elbo"]
        assert config["latent_dim"] == int(r["latent_dim"]) and config["seed"] == int(r["seed"])
        assert float(r["test_neg_elbo"]) == metrics["test_neg_elbo"]
        assert metrics["iw_ll"] < 0 and metrics["iw_ll_stderr"] > 0
        assert 0 <= metrics["active_units"] <= int(r["latent_dim"])
        assert metrics["frechet_digit_distance"] > 0          # digits: the sample quality
        assert math.isfinite(metrics["kl_qz_pz"]) and metrics["kl_qz_pz_stderr"] >= 0
    assert os.path.isfile(os.path.join(out, "sweep_latent_dim.png"))
    assert "4 runs finished, 0 failed" in stdout
    # started again with the same command: nothing to do, nothing repeated
    code, stdout, _ = run(["sweep", "--grid", "latent_dim=2,3", "--seeds", "2", "--out", out, *TINY])
    assert code == 0 and "0 runs finished, 0 failed, 4 already" in stdout
    assert read_csv(os.path.join(out, "runs.csv")) == rows
    # ... but with other options it refuses, in one line
    assert_usage_error(["sweep", "--grid", "latent_dim=2,3", "--seeds", "2", "--out", out,
                        *TINY, "--lr", "0.01"], "other train options", "another --out")
    assert_usage_error(["sweep", "--grid", "latent_dim=2,4", "--seeds", "2", "--out", out,
                        *TINY], "other grid")


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, data):
    out = str(tmp_path / "sw")
    code, _, err = run(["sweep", "--grid", "model=vae,cvae", "--seeds", "2", "--jobs", "1",
                        "--data", data, "--out", out, *TINY])
    assert code == 1, err                      # some run failed
    rows, summary = check_sweep_files(out, ["model"], 2, 2)
    for r in rows:
        if r["model"] == "vae":
            assert r["status"] == "finished" and r["error"] == "" and r["frechet_digit_distance"] == ""
        else:       # the .npy file has no labels for the cvae
            assert r["status"] == "failed" and "needs labelled data" in r["error"]
            assert all(r[m] == "" for m in METRICS)
    assert [(s["model"], s["finished"], s["failed"]) for s in summary] == [("vae", "2", "0"),
                                                                          ("cvae", "0", "2")]


def test_a_run_lost_with_its_worker_is_not_recorded_and_is_redone(tmp_path, data, monkeypatch):
    """A run that failed through no fault of its own (its Dask worker died) counts as failed
    in this sweep but is not written to runs.csv, so the sweep started again redoes it."""
    out = str(tmp_path / "sw")
    argv = ["sweep", "--grid", "latent_dim=2,3", "--seeds", "1", "--jobs", "1", "--data", data,
            "--out", out, *TINY]
    real = sweep._joblib_results

    def losing_one(tasks, n_jobs):
        for result in real(tasks, n_jobs):
            key = result[0]
            yield (key, sweep.LOST, "KilledWorker: lost", None) if key[0] == "3" else result

    monkeypatch.setattr(sweep, "_joblib_results", losing_one)
    code, stdout, _ = run(argv)
    assert code == 1 and "1 runs finished, 1 failed" in stdout
    rows = read_csv(os.path.join(out, "runs.csv"))
    assert [(r["latent_dim"], r["status"]) for r in rows] == [("2", "finished")]
    monkeypatch.setattr(sweep, "_joblib_results", real)
    code, stdout, _ = run(argv)
    assert code == 0 and "1 runs finished, 0 failed, 1 already" in stdout
    check_sweep_files(out, ["latent_dim"], 2, 1)


def test_dask_sweep_on_an_existing_scheduler(tmp_path, data):
    distributed = pytest.importorskip("dask.distributed")
    out = str(tmp_path / "sw")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        result = sweep.run({"latent_dim": [2, 3]}, seeds=[0, 1], engine="dask", n_jobs=1, out=out,
                           scheduler=cluster.scheduler_address, progress=False,
                           data=data, epochs=1, hidden=(4,), batch_size=32)
    assert (result.finished, result.failed, result.skipped) == (4, 0, 0)
    check_sweep_files(out, ["latent_dim"], 2, 2)


@pytest.mark.slow
def test_dask_sweep_on_its_own_local_cluster(tmp_path, data):
    pytest.importorskip("dask.distributed")
    out = str(tmp_path / "sw")
    code, _, err = run(["sweep", "--grid", "beta=0.5,1", "--seeds", "2", "--engine", "dask",
                        "--jobs", "1", "--data", data, "--out", out, *TINY])
    assert code == 0, err
    check_sweep_files(out, ["beta"], 2, 2)


# ============================================================================ resume
def test_resume_after_sigkill_loses_and_repeats_no_run(tmp_path, data):
    out = str(tmp_path / "sw")
    argv = [sys.executable, "-m", "scratchvae", "sweep", "--grid", "latent_dim=2,3", "--seeds", "3",
            "--jobs", "1", "--data", data, "--out", out, *TINY]
    env = {**os.environ, "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}
    runs_csv = os.path.join(out, "runs.csv")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.exists(runs_csv) and len(read_csv(runs_csv)) >= 1:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)      # the sweep and its workers, mid-run
        proc.wait()
    before = read_csv(runs_csv)
    assert 1 <= len(before) < 6, "the sweep was not killed midway"
    # a row cut short by the kill, as if it died inside write()
    with open(runs_csv, "a", encoding="utf-8") as f:
        f.write("3,2,-41.5,")
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after, _ = check_sweep_files(out, ["latent_dim"], 2, 3)
    assert after[:len(before)] == before          # the finished rows are kept as they were
    assert f"{len(before)} already in" in r.stdout


@pytest.mark.parametrize("args,kwargs,error", [
    (([], {"a": (np.zeros((0, 1)), np.zeros((0, 1)))}, ["m"]), {}, ValueError),
    (([1, 2], {"a": (np.zeros((2, 2)), np.zeros((2, 2)))}, ["m"]), {}, ValueError),      # shape
    (([1, 2], {"a": (np.zeros((2, 1)), -np.ones((2, 1)))}, ["m"]), {}, ValueError),      # err < 0
    ((["a", "b"], {"a": (np.zeros((2, 1)), np.zeros((2, 1)))}, ["m"]), {"xscale": "log"}, ValueError),
    (([1, 2], {}, ["m"]), {}, TypeError),
    (([1, 2], {"a": (np.zeros((2, 1)), np.zeros((2, 1)))}, ["m"]), {"xscale": "ln"}, ValueError),
])
def test_plot_sweep_refuses_bad_input(args, kwargs, error):
    from scratchvae import viz
    with pytest.raises(error):
        viz.plot_sweep(*args, **kwargs)


def test_reference_table_reads_a_summary():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "reference_table", os.path.join(ROOT, "benchmarks", "reference_table.py"))
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    members = [("VAE", "model=vae"), ("beta-VAE, beta = 2", "model=vae beta=2"),
               ("HVAE", "model=hvae")]
    empty = {f"{m}_{s}": "" for m in METRICS for s in ("mean", "ci95")}
    summary = [{"model": "vae", "beta": "", "finished": "5", "failed": "0", **empty,
                "test_neg_elbo_mean": "24.5612", "test_neg_elbo_ci95": "0.1949"},
               {"model": "vae", "beta": "2.0", "finished": "4", "failed": "1", **empty,
                "test_neg_elbo_mean": "30.0", "test_neg_elbo_ci95": "0.5"}]
    lines = ref.table(members, summary).splitlines()
    assert lines[2].startswith("| VAE | 5 | 24.56 ± 0.19 | - |")
    assert lines[3].startswith("| beta-VAE, beta = 2 | 4 (1 failed) | 30.00 ± 0.50 |")
    assert lines[4].startswith("| HVAE | 0 | - |")


def test_two_sweeps_never_share_a_directory(tmp_path):
    with sweep._lock(str(tmp_path)):
        with pytest.raises(RuntimeError, match="another sweep is running"):
            with sweep._lock(str(tmp_path)):
                pass
    with sweep._lock(str(tmp_path)):     # released when the first one ends
        pass


@pytest.mark.parametrize("prior,expected", [("gaussian", (0.5, 0.01)), ("hierarchical", (None, None))])
def test_metrics_use_the_aggregate_kl_for_gaussian_priors_only(monkeypatch, prior, expected):
    import scratchvae as sv
    from scratchvae.metrics import KL_QZ_SAMPLES, run_metrics
    calls = []

    def fake_kl(model, x, n_samples, rng=None, y=None):
        calls.append((x.shape, n_samples))
        return 0.5, 0.01

    monkeypatch.setattr(sv.evaluate, "aggregate_posterior_kl", fake_kl)
    monkeypatch.setattr(sv.VAE, "prior", prior, raising=False)
    model = sv.VAE(16, hidden_dims=(4,), latent_dim=2, dtype="float64", seed=0, backend="numpy")
    x = np.random.default_rng(0).random((30, 16))
    m = run_metrics(model, data="x.npy", x_train=x, y_train=None, x_test=x[:10], y_test=None,
                    test_neg_elbo=12.5, seconds=1.0)
    assert list(m) == list(METRICS)
    assert (m["kl_qz_pz"], m["kl_qz_pz_stderr"]) == expected
    assert calls == ([((10, 16), KL_QZ_SAMPLES)] if prior == "gaussian" else [])
    assert m["frechet_digit_distance"] is None and m["test_neg_elbo"] == 12.5
    ll, se = model.log_likelihood(x[:10], k=100, rng=np.random.default_rng([0, 5]),
                                  return_stderr=True)
    assert m["iw_ll"] == pytest.approx(ll.mean(), rel=1e-12)
    assert m["iw_ll_stderr"] == pytest.approx(np.sqrt((se ** 2).sum()) / 10, rel=1e-12)
