"""The ``scratchvae`` command line: parse, call the library, print. No maths here.

    scratchvae train       [--data SPEC] [--out DIR] [--epochs N] [--batch-size N] [--lr F]
                           [--hidden 400,200] [--latent-dim d] [--activation NAME]
                           [--likelihood NAME] [--output-var F|learned] [--samples K] [--beta F]
                           [--seed N] [--dtype float32|float64] [--backend NAME]
                           [--model vae|cvae|hvae|flow] [--latent-dims d1,d2] [--hidden2 W]
                           [--flow-length L]
                           [--objective elbo|iwae] [--schedule constant|linear|cyclical]
                           [--warmup N] [--free-bits F] [--binarize] [--patience N]
                           [--model vqvae] [--n-latents m] [--code-dim e] [--n-codes C]
                           [--commitment F] [--codebook-update gradient|ema] [--restart-after N]
    scratchvae eval        --checkpoint RUN [--data SPEC] [--k N]
    scratchvae sample      --checkpoint RUN [--out DIR] [--n N] [--label N]
    scratchvae reconstruct --checkpoint RUN [--out DIR] [--data SPEC]
    scratchvae interpolate --checkpoint RUN [--out DIR] [--steps N]
    scratchvae gradcheck   [model options as for train] [--tol F]
    scratchvae sweep       --grid "latent_dim=2,4,8 beta=0.5,1" [--seeds N] [train options]
                           [--jobs N] [--engine joblib|dask] [--scheduler ADDRESS] --out DIR

Every subcommand takes --quiet (no progress bars) and --debug (a traceback on error).
Errors are one line on stderr; the exit code is 2 for a usage error (a bad option), 1 for
anything else (missing files, a checkpoint that does not fit the data, divergence, ...).
Files are written atomically (a temporary file renamed into place), and nothing is deleted, so
an error never destroys what a run directory already holds.
"""
from __future__ import annotations

import argparse
import datetime
import io as _stdio
import math
import os
import sys
import time
import traceback

import numpy as np

MODELS = ("vae", "cvae", "hvae", "vqvae", "flow")
CLASS_NAMES = {"flow": "FlowVAE"}   # model_type -> class name where it is not model_type.upper()
SCHEDULES = ("constant", "linear", "cyclical")
DEFAULT_WARMUP = 10      # epochs, when --schedule linear|cyclical is given without --warmup
FIG_DPI = 80


class UsageError(Exception):
    """A combination of options that cannot work together (exit code 2)."""


# ============================================================================ option types
def _type(fn, what):
    """Wrap ``fn`` so that a bad value becomes argparse's one-line 'invalid value' error."""
    def parse(text):
        try:
            return fn(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    parse.__name__ = what
    return parse


def _int_min(lo):
    def f(text):
        v = int(text)
        if v < lo:
            raise ValueError
        return v
    return _type(f, f"an integer >= {lo}")


def _float_range(lo, lo_inclusive, what):
    def f(text):
        v = float(text)
        if not math.isfinite(v) or v < lo or (v == lo and not lo_inclusive):
            raise ValueError
        return v
    return _type(f, what)


def _widths(text):
    """'400,200' -> (400, 200); '' or 'none' -> () (no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return ()
    out = tuple(int(t) for t in text.split(","))
    if any(w < 1 for w in out):
        raise ValueError
    return out


def _pair(text):
    out = tuple(int(t) for t in text.split(","))
    if len(out) != 2 or any(v < 1 for v in out):
        raise ValueError
    return out


def _output_var(text):
    if text == "learned":
        return "learned"
    v = float(text)
    if not (math.isfinite(v) and v > 0):
        raise ValueError
    return v


def _max_entries(text):
    if text == "all":
        return None
    v = int(text)
    if v < 1:
        raise ValueError
    return v


POS_INT = _int_min(1)
NONNEG_INT = _int_min(0)
POS_FLOAT = _float_range(0.0, False, "a positive number")
NONNEG_FLOAT = _float_range(0.0, True, "a number >= 0")
WIDTHS = _type(_widths, "comma-separated positive widths such as 400,200 (or 'none')")
PAIR = _type(_pair, "two comma-separated positive integers such as 8,4")
OUTPUT_VAR = _type(_output_var, "a positive number or 'learned'")
MAX_ENTRIES = _type(_max_entries, "a positive integer or 'all'")


# ============================================================================ the parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _common_options():
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    # SUPPRESS: the sub-command's default must not overwrite a --debug given before it
    g.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback when an error occurs")
    return p


def _model_options():
    from .activations import ACTIVATIONS
    from .kernels import BACKENDS
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=MODELS, default="vae",
                   help="vae: the VAE; cvae: conditioned on the labels (needs labelled data); "
                        "hvae: two stochastic layers z1, z2; flow: the VAE with a planar-flow "
                        "posterior (default: %(default)s)")
    g.add_argument("--hidden", type=WIDTHS, default=(128,), metavar="W[,W...]",
                   help="hidden widths of the encoder, e.g. 400,200; the decoder uses them "
                        "reversed; 'none' for no hidden layer (default: 128)")
    g.add_argument("--hidden2", type=WIDTHS, default=None, metavar="W[,W...]",
                   help="hvae only: hidden widths between z1 and z2 (default: 64)")
    g.add_argument("--latent-dim", type=POS_INT, default=None, metavar="d",
                   help="number of latent dimensions d (vae, cvae; default: 8; 2 gives a "
                        "latent scatter and manifold figure)")
    g.add_argument("--latent-dims", type=PAIR, default=None, metavar="d1,d2",
                   help="hvae only: sizes of the two latent layers (default: 8,4)")
    # ---- vqvae (each None unless given, so that other models can refuse them)
    g.add_argument("--n-latents", type=POS_INT, default=None, metavar="m",
                   help="vqvae only: discrete latent slots (default: 8)")
    g.add_argument("--code-dim", type=POS_INT, default=None, metavar="e",
                   help="vqvae only: size of each code vector (default: 4)")
    g.add_argument("--n-codes", type=POS_INT, default=None, metavar="C",
                   help="vqvae only: codebook size (default: 32)")
    g.add_argument("--commitment", type=NONNEG_FLOAT, default=None, metavar="F",
                   help="vqvae only: weight of the commitment term (default: 0.25)")
    g.add_argument("--codebook-update", choices=("gradient", "ema"), default=None,
                   help="vqvae only: learn the codebook from its gradient, or by exponential "
                        "moving averages of the assigned encoder outputs (default: gradient)")
    g.add_argument("--restart-after", type=POS_INT, default=None, metavar="N",
                   help="vqvae only: restart codes unused for N steps at encoder outputs "
                        "(default: never)")
    g.add_argument("--flow-length", type=NONNEG_INT, default=None, metavar="L",
                   help="flow only: number of planar steps of q(z|x); 0 is the Gaussian "
                        "(default: 4)")
    g.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="hidden-layer activation (default: %(default)s)")
    g.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli",
                   help="p(x|z): bernoulli (logits; data in [0, 1]) or gaussian (means) "
                        "(default: %(default)s)")
    g.add_argument("--output-var", type=OUTPUT_VAR, default=1.0, metavar="F|learned",
                   help="gaussian likelihood: the fixed variance, or 'learned' for a learned "
                        "per-pixel variance (default: 1.0)")
    # numba is the default here as in the Python API: faster than numpy at every size of
    # benchmarks/bench_step.py; numpy is the readable reference.
    g.add_argument("--backend", choices=BACKENDS, default="numba",
                   help="kernels: numpy (the readable reference), numba (CPU, compiled on first "
                        "use and cached on disk), cuda (default: %(default)s)")
    g = p.add_argument_group("objective")
    g.add_argument("--objective", choices=("elbo", "iwae"), default="elbo",
                   help="elbo: the (beta-weighted) evidence lower bound; iwae: the "
                        "importance-weighted bound with --samples K (default: %(default)s)")
    g.add_argument("--samples", type=POS_INT, default=1, metavar="K",
                   help="Monte Carlo samples z_k per example and step (default: %(default)s)")
    g.add_argument("--beta", type=NONNEG_FLOAT, default=1.0, metavar="F",
                   help="weight of the KL term; 1 is the ELBO, other values the beta-VAE "
                        "(default: %(default)s)")
    g.add_argument("--free-bits", type=NONNEG_FLOAT, default=0.0, metavar="F",
                   help="minimum KL per latent dimension in nats, against posterior collapse; "
                        "0 = off (default: %(default)s)")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, metavar="SPEC",
                   help="digits (the bundled 8x8 digits, offline), mnist:DIR, "
                        "fashion-mnist:DIR (the four IDX files in DIR), or FILE.npy / "
                        "FILE.npz (default: digits)")
    g.add_argument("--seed", type=NONNEG_INT, default=0, metavar="N",
                   help="seed of the data split, the initial weights, the minibatches and the "
                        "noise (default: %(default)s)")
    return p


def _training_options():
    """The training options of ``train`` (all but --out), shared with ``sweep``."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=POS_INT, default=100, metavar="N",
                   help="passes over the training set (default: %(default)s)")
    g.add_argument("--batch-size", type=POS_INT, default=64, metavar="N",
                   help="examples per optimizer step (default: %(default)s)")
    g.add_argument("--lr", type=POS_FLOAT, default=2e-3, metavar="F",
                   help="Adam learning rate (default: %(default)s)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point precision of data and model (default: %(default)s)")
    g.add_argument("--schedule", choices=SCHEDULES, default="constant",
                   help="KL weight schedule: constant beta; linear warm-up from 0 to beta over "
                        "--warmup epochs; cyclical ramps, one cycle every --warmup epochs "
                        "(default: %(default)s)")
    g.add_argument("--warmup", type=POS_INT, default=None, metavar="N",
                   help=f"epochs of the linear warm-up, or of one cycle (default: {DEFAULT_WARMUP}, "
                        "used only with --schedule linear|cyclical)")
    g.add_argument("--binarize", action="store_true",
                   help="dynamic binarization: train on a fresh Bernoulli(x) draw each epoch "
                        "(validation and test data are binarized once, seeded)")
    g.add_argument("--patience", type=POS_INT, default=None, metavar="N",
                   help="early stopping: stop after N epochs without a better validation loss "
                        "and keep the best parameters (default: train all epochs)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``scratchvae`` command and its sub-commands."""
    common, model = _common_options(), _model_options()
    parser = _Parser(
        prog="scratchvae",
        description="A variational autoencoder in NumPy with hand-derived gradients: train, "
                    "evaluate, sample, reconstruct, interpolate and check gradients.",
        epilog="Run 'scratchvae COMMAND --help' for the options of a command. Quick start: "
               "'scratchvae train' trains on the bundled digits in under a minute.")
    parser.add_argument("--debug", action="store_true", default=False,
                        help="show the full traceback when an error occurs")
    parser.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    # ---- train
    p = sub.add_parser("train", parents=[model, _training_options(), common],
                       help="train a model and write a run directory",
                       description="Train a model (the bundled digits by default) and write a run "
                                   "directory: checkpoint.npz, history.csv, history.json, "
                                   "config.json, metrics.json, loss_curves.png, "
                                   "reconstructions.png, samples.png, latent.png (and "
                                   "manifold.png for a 2-D latent space; codebook_usage.png for "
                                   "a vqvae). Prints the final test negative ELBO.")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="run directory (created if needed; files in it are replaced, never "
                        "deleted) (default: a new directory under ./runs/ named by time and model)")
    p.set_defaults(func=cmd_train)

    # ---- sweep
    p = sub.add_parser("sweep", parents=[model, _training_options(), common],
                       help="train every grid point with every seed, in parallel",
                       description="Run one 'train' per grid point and seed (the other options "
                                   "as given, for every run) in parallel worker processes, and "
                                   "write DIR/runs.csv (one row per finished run), "
                                   "DIR/summary.csv (per grid point: mean and t-based 95% "
                                   "interval of each metric over the seeds), one figure per "
                                   "grid option, and each run's directory under DIR/runs/. The "
                                   "seeds are --seed, --seed + 1, ... Started again with the "
                                   "same command, a sweep skips the runs already in runs.csv. "
                                   "Needs pip install \"scratchvae[sweep]\".")
    g = p.add_argument_group("sweep")
    g.add_argument("--grid", required=True, metavar="GRID",
                   help="space-separated OPTION=V1,V2,... over any train option, e.g. "
                        "\"latent_dim=2,4,8 beta=0.5,1\"; values holding commas are separated "
                        "by ';' (hidden=128,64;256); ' | ' joins grids (\"model=vae | model=hvae\")")
    g.add_argument("--seeds", type=POS_INT, default=5, metavar="N",
                   help="seeds per grid point (default: %(default)s)")
    g.add_argument("--jobs", type=POS_INT, default=None, metavar="N",
                   help="runs at a time (default: the number of cores; each run gets "
                        "cores // N BLAS threads)")
    g.add_argument("--engine", choices=("joblib", "dask"), default="joblib",
                   help="joblib: worker processes on this machine; dask: a Dask distributed "
                        "cluster (default: %(default)s)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="--engine dask: the scheduler to send the runs to, e.g. "
                        "tcp://host:8786 (default: a local cluster of --jobs workers, started "
                        "and closed by the sweep)")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="sweep directory (created if needed; an existing sweep in it is resumed)")
    p.set_defaults(func=cmd_sweep)

    # ---- eval
    p = sub.add_parser("eval", parents=[common], help="evaluate a trained model on test data",
                       description="Print the evaluation report of a trained model on the test "
                                   "split: negative ELBO, the importance-weighted estimate of "
                                   "log p(x) with k samples and its standard error, active units, "
                                   "KL per latent dimension, and for latent_dim <= 2 the exact "
                                   "log p(x) by quadrature and the ELBO gap.")
    _checkpoint_options(p)
    p.add_argument("--k", type=POS_INT, default=1000, metavar="N",
                   help="importance samples per example for the log p(x) estimate "
                        "(default: %(default)s)")
    p.add_argument("--surgery-samples", type=POS_INT, default=2000, metavar="N",
                   help="draws from the aggregate posterior for the ELBO surgery (mutual "
                        "information, KL(q(z) || p(z))) and the prior mass in holes of a 2-D "
                        "latent, Gaussian-prior models (default: %(default)s)")
    p.set_defaults(func=cmd_eval)

    # ---- sample
    p = sub.add_parser("sample", parents=[common], help="draw samples from the prior",
                       description="Decode z ~ N(0, I) (down the chain for an hvae) and write "
                                   "a grid of the decoded means as a PNG.")
    _checkpoint_options(p, data=False)
    p.add_argument("--n", type=POS_INT, default=64, metavar="N",
                   help="number of samples (default: %(default)s)")
    p.add_argument("--label", type=NONNEG_INT, default=None, metavar="N",
                   help="cvae only: the class to sample (default: cycle through all classes)")
    p.set_defaults(func=cmd_sample)

    # ---- reconstruct
    p = sub.add_parser("reconstruct", parents=[common], help="reconstruct test examples",
                       description="Encode test examples, decode their codes mu(x), and write "
                                   "the inputs above their reconstructions as a PNG.")
    _checkpoint_options(p)
    p.add_argument("--n", type=POS_INT, default=10, metavar="N",
                   help="number of examples shown (default: %(default)s)")
    p.set_defaults(func=cmd_reconstruct)

    # ---- interpolate
    p = sub.add_parser("interpolate", parents=[common], help="interpolate between test examples",
                       description="Decode the latent paths between pairs of test examples, "
                                   "linear and spherical (slerp), and write them as a PNG.")
    _checkpoint_options(p)
    p.add_argument("--steps", type=_int_min(2), default=10, metavar="N",
                   help="points on each path, endpoints included (default: %(default)s)")
    p.add_argument("--pairs", type=POS_INT, default=3, metavar="N",
                   help="number of example pairs (default: %(default)s)")
    p.set_defaults(func=cmd_interpolate)

    # ---- gradcheck
    # a parent of its own: set_defaults on a parser changes the (shared) actions of its parents
    p = sub.add_parser("gradcheck", parents=[_model_options(), common],
                       help="check the hand-written gradients by finite differences",
                       description="Build a float64 model from the options, take a few examples "
                                   "of --data (or random data with --input-dim), and compare "
                                   "every analytic gradient with central differences. Prints "
                                   "one row per tensor; exit code 1 if any check fails.")
    # K = 2 by default: at K = 1 a missing 1/K or unnormalised IWAE weights check as correct
    p.set_defaults(samples=None)   # None: sv.gradcheck's default, K = 2
    for action in p._actions:      # this parser's own copy of the option: its help says so
        if action.dest == "samples":
            action.help = "Monte Carlo samples z_k per example (default: 2, sv.gradcheck's)"
    g = p.add_argument_group("check")
    g.add_argument("--tol", type=POS_FLOAT, default=1e-6, metavar="F",
                   help="largest relative error that passes (default: %(default)s)")
    g.add_argument("--batch", type=POS_INT, default=4, metavar="N",
                   help="examples in the checked batch (default: %(default)s)")
    g.add_argument("--max-entries", type=MAX_ENTRIES, default=30, metavar="N|all",
                   help="entries checked per tensor, a seeded random subset; 'all' checks "
                        "every entry (default: %(default)s)")
    g.add_argument("--input-dim", type=POS_INT, default=None, metavar="D",
                   help="use random data in [0, 1] of this dimension instead of --data")
    p.set_defaults(func=cmd_gradcheck)
    return parser


def _checkpoint_options(p, data=True):
    p.add_argument("--checkpoint", required=True, metavar="RUN",
                   help="a run directory written by 'scratchvae train', or the .npz checkpoint")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where to write the figure (default: the run directory)")
    if data:
        p.add_argument("--data", default=None, metavar="SPEC",
                       help="digits, mnist:DIR, fashion-mnist:DIR, FILE.npy or FILE.npz; the "
                            "test split is used (default: the data the run was trained on)")
    p.add_argument("--seed", type=NONNEG_INT, default=0, metavar="N",
                   help="seed of the random draws (samples, chosen examples) (default: %(default)s)")


# ============================================================================ helpers
def _say(*parts):
    print(*parts, flush=True)


def _write_bytes_atomic(path, data: bytes):
    from . import io as svio
    svio._write_atomic(path, lambda f: f.write(data), binary=True)
    return path


def _save_figure(fig, path):
    """Save a matplotlib Figure as PNG atomically (temporary file, then rename)."""
    buf = _stdio.BytesIO()
    fig.savefig(buf, format="png", dpi=FIG_DPI)
    return _write_bytes_atomic(path, buf.getvalue())


def _image_shape(D):
    side = math.isqrt(D)
    return (side, side) if side * side == D else None


def _new_run_dir(model_type):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join("runs", f"{stamp}-{model_type}")
    path, i = base, 1
    while os.path.exists(path):
        path, i = f"{base}-{i}", i + 1
    return path


def _prepare_out(out):
    """Create the output directory if needed; refuse a path that is a file."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise FileExistsError(f"--out {out} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    return out


def _load_data(spec, dtype, seed, binarize=False):
    from . import data as svdata
    x_tr, y_tr, x_val, y_val, x_te, y_te = svdata.load_spec(spec, dtype=dtype, seed=seed)
    if binarize:
        # validation and test sets are binarized once (seeded); training draws afresh per epoch
        x_val = svdata.binarize(x_val, "bernoulli", rng=np.random.default_rng([seed, 1]))
        x_te = svdata.binarize(x_te, "bernoulli", rng=np.random.default_rng([seed, 2]))
    return x_tr, y_tr, x_val, y_val, x_te, y_te


def _model_class(model_type):
    import scratchvae as sv
    if model_type not in MODELS:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {MODELS}")
    return getattr(sv, CLASS_NAMES.get(model_type, model_type.upper()))   # sv.VAE, ..., sv.FlowVAE


def _load_run(path):
    """(model, run config dict or {}, run directory) from a run directory or checkpoint file."""
    import json

    from . import io as svio
    ckpt = svio._resolve_checkpoint(os.fspath(path))
    _, config = svio.load_checkpoint(ckpt)
    model = _model_class(config.get("model_type")).load(ckpt)
    run_dir = os.path.dirname(os.path.abspath(ckpt))
    run_cfg = {}
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            try:
                run_cfg = json.load(f)
            except ValueError as e:
                raise ValueError(f"{cfg_path} is not valid JSON: {e}") from e
    return model, run_cfg, run_dir


def _labels_kw(model, y):
    return {"y": y} if getattr(model, "conditional", False) else {}


def _run_test_data(model, run_cfg, args):
    """The test split the run was evaluated on (or of --data), checked against the model."""
    spec = args.data or run_cfg.get("data") or "digits"
    seed = run_cfg.get("seed", 0)
    _, _, _, _, x_te, y_te = _load_data(spec, model.dtype.name, seed, run_cfg.get("binarize", False))
    _check_fits(model, x_te, spec, args.checkpoint)
    if getattr(model, "conditional", False) and y_te is None:
        raise ValueError(f"data {spec!r} has no labels; the cvae checkpoint needs them")
    return spec, x_te, y_te


def _check_fits(model, x, spec, ckpt):
    if x.shape[1] != model.input_dim:
        raise ValueError(f"checkpoint {ckpt} was trained on inputs of dimension {model.input_dim} "
                         f"but data {spec!r} has dimension {x.shape[1]}; pass the matching --data")


def _fig_path(args, run_dir, name):
    out = _prepare_out(args.out) if args.out else run_dir
    return os.path.join(out, name)


def _sample_labels(model, n, label):
    if not getattr(model, "conditional", False):
        if label is not None:
            raise UsageError(f"--label is for a cvae; this checkpoint holds a {model.model_type}")
        return None
    if label is None:
        return np.arange(n, dtype=np.int64) % model.n_classes
    if label >= model.n_classes:
        raise UsageError(f"--label must lie in [0, {model.n_classes}); got {label}")
    return np.full(n, label, dtype=np.int64)


def _sample(model, n, rng, labels):
    return model.sample(n, rng=rng) if labels is None else model.sample(n, y=labels, rng=rng)


# ============================================================================ train
VQ_DEFAULTS = {"n_latents": 8, "code_dim": 4, "n_codes": 32, "commitment": 0.25,
               "codebook_update": "gradient", "restart_after": None}


def _check_vq_options(args):
    """--model vqvae: the VQ options filled in, the Gaussian-latent options refused; other
    models refuse the VQ options."""
    given = [k for k in VQ_DEFAULTS if getattr(args, k, None) is not None]
    if args.model != "vqvae":
        if given:
            raise UsageError(f"--{given[0].replace('_', '-')} is for --model vqvae")
        return
    for opt, bad in (("--latent-dim", args.latent_dim is not None),
                     ("--objective iwae", args.objective != "elbo"), ("--samples", args.samples not in (None, 1)),
                     ("--beta", args.beta != 1.0), ("--free-bits", args.free_bits != 0.0),
                     ("--schedule", getattr(args, "schedule", "constant") != "constant")):
        if bad:
            raise UsageError(f"{opt} is not for --model vqvae (a deterministic encoder with a "
                             "discrete latent: no samples, no KL weight); it takes --n-latents, "
                             "--code-dim, --n-codes, --commitment, --codebook-update")
    for k, v in VQ_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def _check_model_options(args):
    """Cross-option checks; fill in the model-dependent defaults."""
    _check_vq_options(args)
    if getattr(args, "schedule", "constant") == "constant" and getattr(args, "warmup", None) is not None:
        raise UsageError("--warmup needs --schedule linear or cyclical")
    if args.model == "hvae":
        if args.latent_dim is not None:
            raise UsageError("--latent-dim is for vae and cvae; an hvae takes --latent-dims d1,d2")
        args.latent_dims = args.latent_dims or (8, 4)
        args.hidden2 = (64,) if args.hidden2 is None else args.hidden2
    else:
        for opt, v in (("--latent-dims", args.latent_dims), ("--hidden2", args.hidden2)):
            if v is not None:
                raise UsageError(f"{opt} is for --model hvae")
        args.latent_dim = args.latent_dim or 8
    if args.model == "flow":
        args.flow_length = 4 if args.flow_length is None else args.flow_length
        if args.free_bits:
            raise UsageError("--free-bits needs a closed-form KL; a flow's KL is sampled")
    elif args.flow_length is not None:
        raise UsageError("--flow-length is for --model flow")
    if args.output_var != 1.0 and args.likelihood != "gaussian":
        raise UsageError("--output-var is for --likelihood gaussian")
    if args.objective == "iwae" and (args.beta != 1.0 or args.free_bits):
        raise UsageError("--beta and --free-bits apply to --objective elbo only")
    args.data = args.data or "digits"


def _build_model(args, input_dim, n_classes, dtype):
    common = dict(activation=args.activation, likelihood=args.likelihood,
                  output_var=args.output_var, dtype=dtype, seed=args.seed, backend=args.backend)
    cls = _model_class(args.model)
    if args.model == "vae":
        return cls(input_dim, hidden_dims=args.hidden, latent_dim=args.latent_dim, **common)
    if args.model == "cvae":
        return cls(input_dim, n_classes, hidden_dims=args.hidden, latent_dim=args.latent_dim, **common)
    if args.model == "vqvae":
        return cls(input_dim, hidden_dims=args.hidden, **{k: getattr(args, k) for k in VQ_DEFAULTS},
                   **common)
    if args.model == "flow":
        return cls(input_dim, hidden_dims=args.hidden, latent_dim=args.latent_dim,
                   flow_length=args.flow_length, **common)
    return cls(input_dim, latent_dims=args.latent_dims, hidden_dims=(args.hidden, args.hidden2),
               **common)


def _n_classes(args, y_tr, y_val, y_te):
    if args.model != "cvae":
        return None
    if y_tr is None:
        raise ValueError(f"--model cvae needs labelled data; {args.data!r} has no labels "
                         "(save an .npz with arrays x and y)")
    return int(max(y.max() for y in (y_tr, y_val, y_te) if y is not None and y.size)) + 1


def _schedule(args, n_train):
    from . import schedules
    if args.schedule == "constant":
        return args.beta
    warmup = args.warmup or DEFAULT_WARMUP
    steps = warmup * -(-n_train // args.batch_size)      # epochs -> optimizer steps
    return schedules.make_schedule(args.schedule, beta=args.beta, n_steps=steps)


def _jsonable(args):
    skip = {"func", "command"}
    out = {}
    for k, v in vars(args).items():
        if k in skip:
            continue
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def cmd_train(args) -> int:
    import scratchvae as sv
    from . import io as svio
    _check_model_options(args)
    if args.objective == "iwae" and args.samples == 1 and not args.quiet:
        _say("note: --objective iwae with --samples 1 is the ELBO; use --samples K > 1")
    x_tr, y_tr, x_val, y_val, x_te, y_te = _load_data(args.data, args.dtype, args.seed,
                                                      args.binarize)
    n_classes = _n_classes(args, y_tr, y_val, y_te)
    beta = _schedule(args, x_tr.shape[0])
    model = _build_model(args, x_tr.shape[1], n_classes, args.dtype)
    cond = getattr(model, "conditional", False)
    out = _prepare_out(args.out or _new_run_dir(args.model))
    config = dict(_jsonable(args), out=out, model_type=model.model_type, model_config=model.config,
                  input_dim=int(x_tr.shape[1]), n_train=int(x_tr.shape[0]),
                  n_val=int(x_val.shape[0]), n_test=int(x_te.shape[0]),
                  scratchvae_version=sv.__version__)
    if not args.quiet:
        _say(f"training a {model.model_type} on {args.data} ({x_tr.shape[0]} train, "
             f"{x_val.shape[0]} validation, {x_te.shape[0]} test, D = {x_tr.shape[1]}) "
             f"for {args.epochs} epochs -> {out}")
    seen = {}

    def keep(epoch, history):
        seen["history"] = history

    t0 = time.perf_counter()
    status, error = "finished", None
    try:
        history = sv.fit(model, x_tr, x_val, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=sv.Adam(lr=args.lr, backend=args.backend),
                         n_samples=args.samples, beta=beta, seed=args.seed,
                         progress=not args.quiet, objective=args.objective,
                         free_bits=args.free_bits, binarize=args.binarize,
                         patience=args.patience, callback=keep,
                         **({"y_train": y_tr, "y_val": y_val} if cond else {}))
    except sv.DivergenceError as e:
        history, status, error = seen.get("history"), "diverged", e
    except KeyboardInterrupt as e:
        history, status, error = seen.get("history"), "interrupted", e
    seconds = time.perf_counter() - t0
    if getattr(model, "prior", None) == "categorical" and history is not None:
        # the VQ-VAE's prior over codes, fitted to the training codes (sample and the bound use it)
        scores = model.fit_prior(x_tr, kind="auto", x_val=x_val)
        config["code_prior"] = dict(kind=model.prior_kind, held_out_neg_log_pi=scores)
    written = [model.save(os.path.join(out, "checkpoint.npz"))]
    if history is not None and len(history["epoch"]):
        written.append(svio.write_csv_atomic(os.path.join(out, "history.csv"), history.rows()))
        written.append(svio.write_json_atomic(os.path.join(out, "history.json"), dict(history)))
    config.update(status=status, seconds=round(seconds, 3),
                  epochs_run=0 if history is None else len(history["epoch"]))
    if error is not None:
        config["error"] = " ".join(str(error).split())
        written.append(svio.write_json_atomic(os.path.join(out, "config.json"), config))
        if isinstance(error, KeyboardInterrupt):
            raise error
        raise type(error)(f"{error} The run so far is saved in {out}")

    # final test negative ELBO: -ELBO per test example, one sample each, seeded noise
    neg_elbo = -model.elbo(x_te, rng=np.random.default_rng([args.seed, 3]), **_labels_kw(model, y_te))
    config["test_neg_elbo"] = float(np.mean(neg_elbo))
    from .metrics import run_metrics
    metrics = run_metrics(model, data=args.data, x_train=x_tr, y_train=y_tr, x_test=x_te,
                          y_test=y_te, test_neg_elbo=config["test_neg_elbo"], seconds=seconds,
                          seed=args.seed)
    written.append(svio.write_json_atomic(os.path.join(out, "metrics.json"), metrics))
    written += _train_figures(model, history, x_te, y_te, out, args.seed)
    written.append(svio.write_json_atomic(os.path.join(out, "config.json"), config))
    _say(f"trained {config['epochs_run']} epochs in {seconds:.1f} s")
    _say(f"test negative ELBO: {config['test_neg_elbo']:.4f} nats per example "
         f"({x_te.shape[0]} test examples, 1 sample each; lower is better)")
    _say("wrote:")
    for p in written:
        _say(f"  {p}")
    return 0


def _vq_figures(model, history, x_te, out, seed):
    """The VQ-VAE's run figures: loss curves, reconstructions through the codes, samples from
    the fitted prior over codes, and the codebook usage on the test set."""
    from . import viz
    curves = {k: history[k] for k in ("epoch", "train_loss", "val_loss", "recon")}
    written = [_save_figure(viz.plot_history(curves, title="vqvae training"),
                            os.path.join(out, "loss_curves.png"))]
    usage = model.codebook_usage(x_te)
    written.append(_save_figure(viz.plot_codebook_usage(usage["counts"], title="codebook usage "
                                                        "on the test set"),
                                os.path.join(out, "codebook_usage.png")))
    if _image_shape(model.input_dim) is None:
        _say(f"note: D = {model.input_dim} is not a square image; image figures skipped")
        return written
    n = min(10, x_te.shape[0])
    written.append(_save_figure(viz.plot_reconstructions(x_te[:n], model.decode(model.encode(x_te[:n])), n=n),
                                os.path.join(out, "reconstructions.png")))
    written.append(_save_figure(viz.plot_samples(model.sample(64, rng=np.random.default_rng([seed, 4])),
                                                 ncols=8),
                                os.path.join(out, "samples.png")))
    return written


def _train_figures(model, history, x_te, y_te, out, seed):
    from . import latent, viz
    if getattr(model, "prior", None) == "categorical":
        return _vq_figures(model, history, x_te, out, seed)
    hw = _image_shape(model.input_dim)
    rng = np.random.default_rng([seed, 4])
    cond = getattr(model, "conditional", False)
    written = []
    curves = {k: history[k] for k in ("epoch", "train_loss", "val_loss", "recon", "kl")}
    written.append(_save_figure(viz.plot_history(curves, title=f"{model.model_type} training"),
                                os.path.join(out, "loss_curves.png")))
    mu, _ = latent.encode_dataset(model, x_te, y_te if cond else None)
    if model.latent_dim >= 2:
        written.append(_save_figure(
            viz.plot_latent_scatter(mu, y_te, title="test set in latent space (codes mu(x))"),
            os.path.join(out, "latent.png")))
    if hw is None:
        _say(f"note: D = {model.input_dim} is not a square image; image figures skipped")
        return written
    n = min(10, x_te.shape[0])
    rec = model.decode(mu[:n], **_labels_kw(model, None if y_te is None else y_te[:n]))
    written.append(_save_figure(viz.plot_reconstructions(x_te[:n], rec, n=n),
                                os.path.join(out, "reconstructions.png")))
    labels = _sample_labels(model, 64, None)
    written.append(_save_figure(viz.plot_samples(_sample(model, 64, rng, labels), ncols=8),
                                os.path.join(out, "samples.png")))
    if model.latent_dim == 2 and not cond:
        written.append(_save_figure(
            viz.plot_manifold(model.decode, n=15, dtype=model.dtype.name,
                              title="decoded means over the 2-D latent grid"),
            os.path.join(out, "manifold.png")))
    return written


# ============================================================================ sweep
def cmd_sweep(args) -> int:
    from . import sweep
    if args.scheduler is not None and args.engine != "dask":
        raise UsageError("--scheduler needs --engine dask")
    options = sweep.train_options_of(args)
    try:
        result = sweep.run(args.grid, range(args.seed, args.seed + args.seeds), engine=args.engine,
                           n_jobs=args.jobs, out=args.out, scheduler=args.scheduler,
                           progress=not args.quiet, **options)
    except sweep.GridError as e:
        raise UsageError(str(e)) from None
    _say(f"{result.finished} runs finished, {result.failed} failed, {result.skipped} already "
         f"in {result.runs_csv}")
    _say("wrote:")
    for p in result.written:
        _say(f"  {p}")
    return 0 if result.failed == 0 else 1


# ============================================================================ eval, sample, ...
def cmd_eval(args) -> int:
    from . import evaluate
    if not hasattr(evaluate, "evaluation_report"):
        raise RuntimeError("this version of scratchvae.evaluate has no evaluation_report")
    model, run_cfg, _ = _load_run(args.checkpoint)
    spec, x_te, y_te = _run_test_data(model, run_cfg, args)
    if not args.quiet:
        _say(f"evaluating {args.checkpoint} on the test split of {spec} ({x_te.shape[0]} "
             f"examples, k = {args.k})")
    kw = {"y": y_te} if getattr(model, "conditional", False) else {}
    report = evaluate.evaluation_report(model, x_te, k=args.k, rng=np.random.default_rng(args.seed),
                                        n_surgery_samples=args.surgery_samples, **kw)
    _say(evaluate.format_report(report))
    return 0


def cmd_sample(args) -> int:
    from . import viz
    model, _, run_dir = _load_run(args.checkpoint)
    labels = _sample_labels(model, args.n, args.label)
    hw = _image_shape(model.input_dim)
    if hw is None:
        raise ValueError(f"inputs of dimension {model.input_dim} are not square images; "
                         f"cannot draw them")
    x = _sample(model, args.n, np.random.default_rng(args.seed), labels)
    tag = "" if args.label is None else f"_label{args.label}"
    path = _fig_path(args, run_dir, f"samples{tag}_seed{args.seed}.png")
    _save_figure(viz.plot_samples(x), path)
    _say(f"wrote {path}")
    return 0


def cmd_reconstruct(args) -> int:
    from . import viz
    model, run_cfg, run_dir = _load_run(args.checkpoint)
    _, x_te, y_te = _run_test_data(model, run_cfg, args)
    if _image_shape(model.input_dim) is None:
        raise ValueError(f"inputs of dimension {model.input_dim} are not square images")
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(x_te.shape[0], min(args.n, x_te.shape[0]), replace=False))
    kw = _labels_kw(model, None if y_te is None else y_te[idx])
    if getattr(model, "prior", None) == "categorical":    # a VQ-VAE: decode its codes
        rec = model.decode(model.encode(x_te[idx]))
    else:
        mu, _ = model.encode(x_te[idx], **kw)
        rec = model.decode(mu, **kw)
    path = _fig_path(args, run_dir, f"reconstructions_seed{args.seed}.png")
    _save_figure(viz.plot_reconstructions(x_te[idx], rec, n=idx.size), path)
    _say(f"wrote {path}")
    return 0


def cmd_interpolate(args) -> int:
    from . import latent, viz
    model, run_cfg, run_dir = _load_run(args.checkpoint)
    if getattr(model, "prior", None) == "categorical":
        raise ValueError("interpolate needs a continuous latent space; a vqvae has discrete codes")
    _, x_te, y_te = _run_test_data(model, run_cfg, args)
    if _image_shape(model.input_dim) is None:
        raise ValueError(f"inputs of dimension {model.input_dim} are not square images")
    if x_te.shape[0] < 2:
        raise ValueError("interpolation needs at least 2 test examples")
    rng = np.random.default_rng(args.seed)
    rows, labels = [], []
    for _ in range(args.pairs):
        i, j = rng.choice(x_te.shape[0], 2, replace=False)
        yk = {"y0": int(y_te[i]), "y1": int(y_te[j])} if getattr(model, "conditional", False) else {}
        tag = "" if y_te is None else f" {y_te[i]}->{y_te[j]}"
        for method in ("linear", "spherical"):
            rows.append(latent.interpolate_inputs(model, x_te[i], x_te[j], args.steps, method, **yk))
            labels.append(f"{method}{tag}")
    path = _fig_path(args, run_dir, f"interpolation_seed{args.seed}.png")
    _save_figure(viz.plot_interpolation(rows, row_labels=labels), path)
    _say(f"wrote {path}")
    return 0


def cmd_gradcheck(args) -> int:
    import scratchvae as sv
    _check_model_options(args)
    rng = np.random.default_rng(args.seed)
    if args.input_dim is not None:
        x = rng.random((args.batch, args.input_dim))
        y = rng.integers(0, 10, args.batch) if args.model == "cvae" else None
        source = f"random data, D = {args.input_dim}"
        n_classes = 10
    else:
        x_tr, y_tr, x_val, y_val, x_te, y_te = _load_data(args.data, "float64", args.seed)
        x, y = x_tr[:args.batch], (None if y_tr is None else y_tr[:args.batch])
        n_classes = _n_classes(args, y_tr, y_val, y_te)
        y = y if args.model == "cvae" else None
        source = f"{x.shape[0]} examples of {args.data}"
    model = _build_model(args, x.shape[1], n_classes, "float64")
    n_params = sum(v.size for v in model.params.values())
    _say(f"gradient check of a float64 {model.model_type} ({n_params} parameters) on {source}; "
         f"objective {args.objective}, K = {2 if args.samples is None else args.samples}, "
         f"entries per tensor: "
         f"{'all' if args.max_entries is None else args.max_entries}")
    report = sv.gradcheck(model, x, y=y, n_samples=args.samples, beta=args.beta,
                          objective=args.objective, free_bits=args.free_bits, seed=args.seed,
                          tol=args.tol, max_entries=args.max_entries)
    _say(str(report))
    return 0 if report.passed else 1


# ============================================================================ entry point
def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, KeyError) or not text:
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text


def main(argv=None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    args.quiet = getattr(args, "quiet", False)
    args.debug = getattr(args, "debug", False)
    prog = f"scratchvae {args.command}"
    try:
        if args.debug:
            return args.func(args)
        # overflow warnings of a diverging run would bury the one-line error; fit detects
        # NaN/inf itself and says so. --debug shows them.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            return args.func(args)
    except UsageError as e:
        print(f"{prog}: error: {_one_line(e)} (see '{prog} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:           # noqa: BLE001 - every error becomes one line (or --debug)
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
