"""The command line: every sub-command on a tiny run, the one-line errors and exit codes, the
--debug traceback, and that an error never destroys what a run directory holds."""
import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import scratchvae as sv
from scratchvae.cli import main

TINY = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--quiet"]
RUN_FILES = ("checkpoint.npz", "history.csv", "history.json", "config.json", "loss_curves.png",
             "reconstructions.png", "samples.png", "latent.png", "manifold.png")


def run(argv):
    """main(argv) in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code, err, expected_code, *fragments):
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error" in lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]


def snapshot(directory):
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory))}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    code, stdout, err = run(["train", "--out", out, *TINY])
    assert code == 0, err
    return out, stdout


def test_train_writes_the_run_directory(run_dir):
    out, stdout = run_dir
    for name in RUN_FILES:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert "test negative ELBO:" in stdout
    for name in RUN_FILES:
        assert os.path.join(out, name) in stdout
    import json
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["model_type"] == "vae" and cfg["epochs"] == 2 and cfg["status"] == "finished"
    assert cfg["hidden"] == [16] and np.isfinite(cfg["test_neg_elbo"])
    value = float(stdout.split("test negative ELBO:")[1].split()[0])
    assert value == pytest.approx(cfg["test_neg_elbo"], abs=5e-5)
    model = sv.VAE.load(out)
    assert model.latent_dim == 2 and model.dtype == np.float32
    assert open(os.path.join(out, "history.csv")).readline().startswith("epoch,")


@pytest.mark.skipif(not hasattr(sv.evaluate, "evaluation_report"),
                    reason="evaluate.evaluation_report not available yet")
def test_eval(run_dir):
    out, _ = run_dir
    code, stdout, err = run(["eval", "--checkpoint", out, "--k", "5", "--quiet"])
    assert code == 0, err
    assert "ELBO" in stdout and len(stdout.strip().splitlines()) > 2


@pytest.mark.parametrize("argv, name", [
    (["sample", "--n", "9", "--seed", "3"], "samples_seed3.png"),
    (["reconstruct", "--n", "4"], "reconstructions_seed0.png"),
    (["interpolate", "--steps", "5", "--pairs", "2"], "interpolation_seed0.png"),
])
def test_figure_commands(run_dir, tmp_path, argv, name):
    out, _ = run_dir
    code, stdout, err = run([*argv, "--checkpoint", os.path.join(out, "checkpoint.npz"),
                             "--out", str(tmp_path / "figs")])
    assert code == 0, err
    path = tmp_path / "figs" / name
    assert path.stat().st_size > 0 and str(path) in stdout
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_figure_command_defaults_to_the_run_directory(run_dir):
    out, _ = run_dir
    code, stdout, err = run(["sample", "--checkpoint", out, "--n", "4", "--seed", "11"])
    assert code == 0, err
    assert os.path.isfile(os.path.join(out, "samples_seed11.png"))


def test_gradcheck_passes_and_prints_a_table():
    code, stdout, err = run(["gradcheck", "--hidden", "8", "--latent-dim", "2",
                             "--activation", "tanh", "--max-entries", "5"])
    assert code == 0, err
    assert "enc.W0" in stdout and "dec.W_out" in stdout and "PASSED" in stdout


def test_gradcheck_random_data_and_failure_exit_code():
    code, stdout, _ = run(["gradcheck", "--hidden", "none", "--latent-dim", "2",
                           "--input-dim", "5", "--max-entries", "all"])
    assert code == 0 and "random data" in stdout and "PASSED" in stdout
    code, stdout, _ = run(["gradcheck", "--hidden", "4", "--latent-dim", "2", "--input-dim", "5",
                           "--tol", "1e-300"])
    assert code == 1 and "FAILED" in stdout


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--latent-dim", "0"], "--latent-dim"),
    (["train", "--lr", "0"], "--lr"),
    (["train", "--hidden", "400,x"], "--hidden"),
    (["train", "--output-var", "-2", "--likelihood", "gaussian"], "--output-var"),
    (["train", "--model", "gan"], "--model"),
    (["train", "--latent-dims", "4,2"], "--latent-dims"),
    (["train", "--warmup", "5"], "--warmup"),
    (["train", "--nonsense"], "--nonsense"),
    (["sample"], "--checkpoint"),
    (["interpolate", "--checkpoint", "x", "--steps", "1"], "--steps"),
    (["frobnicate"], "frobnicate"),
])
def test_usage_errors_exit_2_with_one_line(argv, fragment):
    code, _, err = run(argv)
    assert_one_line_error(code, err, 2, fragment)


def test_runtime_errors_exit_1_with_one_line(tmp_path, run_dir):
    code, _, err = run(["eval", "--checkpoint", str(tmp_path / "missing")])
    assert_one_line_error(code, err, 1, "does not exist")
    code, _, err = run(["train", "--data", "unknown-dataset", "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, 1, "data")
    assert not (tmp_path / "r").exists()          # nothing created for a run that never started
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    code, _, err = run(["sample", "--checkpoint", str(bad)])
    assert_one_line_error(code, err, 1, "corrupt")
    code, _, err = run(["sample", "--checkpoint", run_dir[0], "--label", "3"])
    assert_one_line_error(code, err, 2, "--label")


def test_checkpoint_data_mismatch(run_dir, tmp_path):
    x = np.random.default_rng(0).random((40, 10))
    np.save(tmp_path / "x10.npy", x)
    for cmd in ("reconstruct", "eval", "interpolate"):
        code, _, err = run([cmd, "--checkpoint", run_dir[0], "--data", str(tmp_path / "x10.npy")])
        assert_one_line_error(code, err, 1, "dimension 64", "dimension 10")


def test_debug_shows_the_traceback(tmp_path):
    for argv in (["eval", "--debug", "--checkpoint", str(tmp_path / "nope")],
                 ["--debug", "eval", "--checkpoint", str(tmp_path / "nope")]):
        code, _, err = run(argv)
        assert code == 1
        assert "Traceback" in err and "does not exist" in err.strip().splitlines()[-1]


def test_errors_keep_an_existing_run_directory(run_dir, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run_dir[0], out)
    before = snapshot(out)
    for argv, code_expected in (
            (["train", "--out", str(out), "--epochs", "0"], 2),
            (["train", "--out", str(out), "--data", str(tmp_path / "missing.npy")], 1),
            (["train", "--out", str(out), "--model", "cvae", "--data", str(tmp_path / "x.npy")], 1),
            (["sample", "--checkpoint", str(out), "--label", "1"], 2)):
        if "x.npy" in argv[-1]:
            np.save(tmp_path / "x.npy", np.random.default_rng(0).random((30, 64)))
        code, _, err = run(argv)
        assert code == code_expected, err
        assert snapshot(out) == before


def test_out_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    code, _, err = run(["train", "--out", str(f), *TINY])
    assert_one_line_error(code, err, 1, "not a directory")
    assert f.read_text() == "keep me"


def test_divergence_is_one_line_and_saves_the_run(tmp_path):
    out = tmp_path / "div"
    code, _, err = run(["train", "--out", str(out), "--lr", "1e6", "--likelihood", "gaussian",
                        "--epochs", "3", "--hidden", "8", "--quiet"])
    assert_one_line_error(code, err, 1, "diverged", str(out))
    import json
    assert json.load(open(out / "config.json"))["status"] == "diverged"
    sv.VAE.load(out)          # the last good parameters, loadable


def test_cvae_and_hvae_runs(tmp_path):
    out = tmp_path / "cvae"
    code, stdout, err = run(["train", "--model", "cvae", "--out", str(out), *TINY])
    assert code == 0, err
    code, stdout, err = run(["sample", "--checkpoint", str(out), "--label", "7", "--n", "4"])
    assert code == 0 and os.path.isfile(out / "samples_label7_seed0.png"), err
    code, _, err = run(["sample", "--checkpoint", str(out), "--label", "10"])
    assert_one_line_error(code, err, 2, "--label")
    out = tmp_path / "hvae"
    code, stdout, err = run(["train", "--model", "hvae", "--latent-dims", "2,2", "--hidden", "16",
                             "--hidden2", "8", "--epochs", "2", "--quiet", "--out", str(out)])
    assert code == 0, err
    assert "test negative ELBO" in stdout and os.path.isfile(out / "manifold.png")
    code, stdout, err = run(["interpolate", "--checkpoint", str(out), "--steps", "3", "--pairs", "1"])
    assert code == 0, err


def test_python_dash_m_help():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "scratchvae", "train", "--help"], capture_output=True,
                       text=True, timeout=120, env=env)
    assert r.returncode == 0
    for opt in ("--data", "--epochs", "--latent-dim", "--objective", "--schedule", "--free-bits",
                "--binarize", "--patience", "--quiet", "--debug", "--model"):
        assert opt in r.stdout, opt


def test_gradcheck_checks_two_samples_by_default_and_train_keeps_one():
    """gradcheck's K = 2 default (K-dependent bugs hide at K = 1) must not leak into train's
    options, which share the same option definitions."""
    from scratchvae.cli import build_parser
    parser = build_parser()
    assert parser.parse_args(["train"]).samples == 1
    assert parser.parse_args(["sweep", "--grid", "beta=1", "--out", "x"]).samples == 1
    assert parser.parse_args(["gradcheck"]).samples is None      # sv.gradcheck's default: 2
    assert parser.parse_args(["gradcheck", "--samples", "3"]).samples == 3
    import argparse
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "(default: 2, sv.gradcheck's)" in " ".join(sub.choices["gradcheck"].format_help().split())
    assert "(default: None)" not in sub.choices["gradcheck"].format_help()
    assert "step (default: 1)" in " ".join(sub.choices["train"].format_help().split())
