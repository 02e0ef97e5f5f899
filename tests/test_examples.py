"""Smoke test of every example script: ``python examples/NN_name.py --quick --out TMP`` must
exit 0 within the timeout and write at least one PNG. Examples are discovered, so new ones are
covered without editing this file."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "[0-9]*.py")))
TIMEOUT = 300   # seconds; a quick run takes a few seconds, the margin is for a loaded machine


def test_examples_exist():
    assert len(EXAMPLES) >= 8, EXAMPLES


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_runs_quick(script, tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    try:
        r = subprocess.run([sys.executable, script, "--quick", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{os.path.basename(script)} --quick did not finish within {TIMEOUT} s")
    assert r.returncode == 0, f"exit code {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    pngs = glob.glob(os.path.join(str(tmp_path), "**", "*.png"), recursive=True)
    assert pngs, f"{os.path.basename(script)} wrote no PNG into {tmp_path}\nstdout:\n{r.stdout}"
    assert all(os.path.getsize(p) > 0 for p in pngs)
    assert r.stdout.strip(), "an example prints its headline numbers"
