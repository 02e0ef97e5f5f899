"""fit: learns a tiny synthetic dataset, is deterministic given the seed, records its history,
warms beta up, stops early restoring the best parameters, stops on divergence naming the epoch
and step with the last good parameters, is silent without progress, and validates its input."""
import numpy as np
import pytest

import scratchvae as sv
from scratchvae.train import DivergenceError, History, fit

N, D = 48, 6


def dataset(seed=0):
    """48 binary examples: noisy-free copies of 3 random prototypes; a grey-level validation set
    of 12 blurred prototypes."""
    rng = np.random.default_rng(seed)
    protos = (rng.random((3, D)) > 0.5).astype(float)
    x = protos[rng.integers(0, 3, N)]
    x_val = np.clip(0.8 * protos[rng.integers(0, 3, 12)] + 0.2 * rng.random((12, D)), 0, 1)
    return x, x_val


def new_model(dtype="float64", **kw):
    return sv.VAE(D, (8,), 2, activation="tanh", seed=0, dtype=dtype, **kw)


def snapshot(model):
    return {k: v.copy() for k, v in model.params.items()}


def assert_params_equal(model, expected, what):
    for key, v in model.params.items():
        assert np.array_equal(v, expected[key]), f"{key}: params differ from {what}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_reduces_the_loss(dtype):
    x, _ = dataset()
    model = new_model(dtype)
    x = x.astype(dtype)
    before = model.loss(x, n_samples=8, rng=0)
    history = fit(model, x, epochs=15, batch_size=8, optimizer=sv.Adam(lr=0.02), progress=False)
    after = model.loss(x, n_samples=8, rng=0)
    assert after < before - 1.0, f"loss {before} -> {after}"
    tl = history["train_loss"]
    assert tl[-1] < tl[0] and history["val_loss"][-1] < history["val_loss"][0]
    assert all(v.dtype == np.dtype(dtype) for v in model.params.values())


def test_fit_is_deterministic_given_the_seed():
    x, x_val = dataset()
    runs = []
    for _ in range(2):
        model = new_model()
        h = fit(model, x, x_val, epochs=3, batch_size=10, optimizer=sv.Adam(lr=0.01), seed=4,
                progress=False, n_samples=2)
        runs.append((snapshot(model), h))
    (p1, h1), (p2, h2) = runs
    for key in p1:
        assert np.array_equal(p1[key], p2[key]), key
    for col in ("train_loss", "val_loss", "recon", "kl", "kl_per_dim", "active_units", "beta"):
        assert h1[col] == h2[col], col
    other = new_model()
    fit(other, x, x_val, epochs=3, batch_size=10, optimizer=sv.Adam(lr=0.01), seed=5,
        progress=False, n_samples=2)
    assert not np.array_equal(other.params["enc.W0"], p1["enc.W0"]), "the seed must matter"


def test_history_columns():
    x, x_val = dataset()
    model = new_model()
    h = fit(model, x, x_val, epochs=3, batch_size=16, progress=False, beta=0.5)
    assert isinstance(h, History)
    for col in ("epoch", "beta", "train_loss", "val_loss", "recon", "kl", "kl_per_dim",
                "active_units", "seconds"):
        assert len(h[col]) == 3, col
    assert h["epoch"] == [1, 2, 3] and h["beta"] == [0.5] * 3
    assert all(len(k) == 2 for k in h["kl_per_dim"])
    for rec, kl, val in zip(h["recon"], h["kl"], h["val_loss"]):
        assert val == pytest.approx(rec + kl, rel=1e-12), "val_loss is the beta = 1 negative ELBO"
    for kl, per_dim in zip(h["kl"], h["kl_per_dim"]):
        assert kl == pytest.approx(sum(per_dim), rel=1e-12)
    assert all(0 <= a <= 2 for a in h["active_units"])
    rows = h.rows()
    assert len(rows) == 3 and {"kl_0", "kl_1", "train_loss"} <= set(rows[0])


def test_kl_warmup_increases_beta():
    x, _ = dataset()
    h = fit(new_model(), x, epochs=5, batch_size=16, kl_warmup=3, beta=0.8, progress=False)
    b = h["beta"]
    assert b[0] < b[1] < b[2] == pytest.approx(0.8) and b[3] == b[4] == pytest.approx(0.8)
    assert b[0] > 0


def test_early_stopping_restores_the_best_params():
    x, x_val = dataset()
    model = new_model()
    seen = {}
    h = fit(model, x, x_val, epochs=40, batch_size=8, optimizer=sv.Adam(lr=0.05), patience=2,
            progress=False, callback=lambda epoch, hist: seen.__setitem__(epoch, snapshot(model)))
    val = h["val_loss"]
    best = int(np.argmin(val))
    assert len(val) < 40, "fixture: this setting overfits the validation set, so fit stops"
    assert best < len(val) - 1, "fixture: the best epoch is not the last"
    assert len(val) == best + 1 + 2, "stops `patience` epochs after the best"
    assert_params_equal(model, seen[best + 1], f"epoch {best + 1} (the best val_loss)")


def sabotage_loss(monkeypatch, model, bad_call, value=np.nan):
    """Make the ``bad_call``-th training step (1-based; fit calls model.loss_and_grads once per
    step) report ``value`` as its loss; record the parameters every step saw."""
    seen, original = [], model.loss_and_grads

    def wrapped(*a, **kw):
        seen.append(snapshot(model))
        loss, grads = original(*a, **kw)
        return (value if len(seen) == bad_call else loss), grads

    monkeypatch.setattr(model, "loss_and_grads", wrapped)
    return seen


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_divergence_names_the_epoch_and_step(monkeypatch, value):
    x, _ = dataset()
    model = new_model()
    seen = sabotage_loss(monkeypatch, model, bad_call=9, value=value)   # 6 steps per epoch
    with pytest.raises(DivergenceError, match=r"epoch 2, step 3\b"):
        fit(model, x, epochs=3, batch_size=8, progress=False)
    assert len(seen) == 9, "training stops at the first non-finite loss"
    assert all(np.isfinite(v).all() for v in model.params.values())


def test_divergence_leaves_the_last_parameters_with_a_finite_loss(monkeypatch):
    x, _ = dataset()
    model = new_model()
    seen = sabotage_loss(monkeypatch, model, bad_call=9)
    with pytest.raises(DivergenceError):
        fit(model, x, epochs=3, batch_size=8, progress=False)
    assert_params_equal(model, seen[7], "those of the last call with a finite loss (call 8)")


def test_a_non_finite_optimizer_step_is_undone():
    """An optimizer step that makes a parameter inf is rolled back before the error."""
    class Exploding:
        calls = 0

        def step(self, params, grads):
            Exploding.calls += 1
            for key, g in grads.items():
                params[key] -= 0.01 * g
            if Exploding.calls == 4:
                params["dec.b_out"][0] = np.inf

    x, _ = dataset()
    model = new_model()
    before_steps = []
    original = model.loss_and_grads

    def recording(*a, **kw):
        before_steps.append(snapshot(model))
        return original(*a, **kw)

    model.loss_and_grads = recording
    with pytest.raises(DivergenceError, match=r"epoch 1, step 4\b"):
        fit(model, x, epochs=2, batch_size=8, optimizer=Exploding(), progress=False)
    assert_params_equal(model, before_steps[3], "those before the exploding step")


def test_huge_learning_rate_raises_divergence_with_finite_params():
    x, _ = dataset()
    model = new_model()
    model.params["enc.W0"] *= 0.0          # a start from which SGD at lr 1e6 overflows quickly
    with np.errstate(all="ignore"), pytest.raises(DivergenceError, match=r"epoch \d+, step \d+"):
        fit(model, x, epochs=5, batch_size=8, optimizer=sv.SGD(lr=1e6), progress=False)
    assert all(np.isfinite(v).all() for v in model.params.values())


def test_progress_false_prints_nothing(capsys):
    x, _ = dataset()
    fit(new_model(), x, epochs=2, batch_size=16, progress=False)
    out = capsys.readouterr()
    assert out.err == "" and out.out == ""
    fit(new_model(), x, epochs=2, batch_size=16, progress=True)
    assert "epoch" in capsys.readouterr().err, "the progress bar goes to stderr when enabled"


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(epochs=0), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=-4), ValueError, "batch_size"),
    (dict(batch_size="8"), TypeError, "batch_size"),
    (dict(y_train=np.zeros(N, np.int64)), ValueError, "y_train"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(beta=-1.0), ValueError, "beta"),
    (dict(kl_warmup=-1), ValueError, "kl_warmup"),
    (dict(patience=0), ValueError, "patience"),
    (dict(x_val=np.full((3, D + 1), 0.5)), ValueError, "x_val"),
    (dict(x_val=np.full((3, D), 0.5, np.float32)), ValueError, "x_val"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(objective="vi"), ValueError, "objective"),
])
def test_fit_rejects_bad_arguments(kwargs, exc, match):
    x, _ = dataset()
    model = new_model()
    before = snapshot(model)
    with pytest.raises(exc, match=match):
        fit(model, x, **dict(dict(epochs=1, batch_size=8, progress=False), **kwargs))
    assert_params_equal(model, before, "the initial ones")


@pytest.mark.parametrize("make_x,match", [
    (lambda x: x[:, :3], "x_train"),
    (lambda x: x * 2.0, r"x_train must lie in \[0, 1\]"),
    (lambda x: np.where(x > 0.5, np.nan, x), "x_train must be finite"),
    (lambda x: x.astype(np.float32), "x_train must have dtype float64"),
    (lambda x: x.astype(np.int64), "x_train"),
])
def test_fit_rejects_bad_x_train(make_x, match):
    x, _ = dataset()
    with pytest.raises(ValueError, match=match):
        fit(new_model(), make_x(x), epochs=1, progress=False)
