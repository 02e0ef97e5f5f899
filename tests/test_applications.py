"""Anomaly scores, ROC curve and AUC (ties), and pseudo-Gibbs imputation."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import scratchvae as sv
from scratchvae.applications import anomaly_scores, impute, roc_auc, roc_curve


def test_auc_hand_computed():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 1 + 0 + 1 + 1 = 3 of 4
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75


def test_auc_ties_count_one_half():
    # positives {2, 3}, negatives {1, 2}: 1 + 0.5 + 1 + 1 = 3.5 of 4
    assert roc_auc([1, 2, 2, 3], [0, 1, 0, 1]) == 0.875
    assert roc_auc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5


def test_roc_curve_hand_computed():
    fpr, tpr, thr = roc_curve([1, 2, 2, 3], [0, 1, 0, 1])
    np.testing.assert_array_equal(thr, [np.inf, 3, 2, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])


@given(st.lists(st.integers(0, 5), min_size=2, max_size=40), st.integers(0, 2**32 - 1))
def test_auc_is_area_under_curve_and_pair_probability(scores, seed):
    labels = np.random.default_rng(seed).integers(0, 2, len(scores))
    if labels.min() == labels.max():
        labels[0] = 1 - labels[0]
    s = np.array(scores, float)
    fpr, tpr, _ = roc_curve(s, labels)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    trapezoid = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    pos, neg = s[labels == 1], s[labels == 0]
    pairs = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    auc = roc_auc(s, labels)
    assert auc == pytest.approx(trapezoid, abs=1e-12)
    assert auc == pytest.approx(pairs, abs=1e-12)


@pytest.mark.parametrize("scores, labels, match", [
    ([1.0, 2.0], [1, 1], "both classes"), ([1.0, 2.0], [0, 2], "labels"),
    ([1.0, np.nan], [0, 1], "finite"), ([1.0, 2.0, 3.0], [0, 1], "shape"), ([], [], "scores"),
])
def test_roc_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(scores, labels)
    with pytest.raises(ValueError, match=match):
        roc_curve(scores, labels)


@pytest.fixture(scope="module")
def trained():
    """A small VAE trained briefly on the digits (about a second)."""
    x_tr, _, x_val, _, x_te, _ = sv.data.load_digits(seed=0)
    model = sv.VAE(64, hidden_dims=(64,), latent_dim=6, seed=0)
    sv.fit(model, x_tr, x_val, epochs=25, batch_size=64, optimizer=sv.Adam(lr=3e-3), progress=False)
    return model, x_tr, x_te


def test_anomaly_scores_are_negative_bounds(trained):
    model, _, x_te = trained
    x = x_te[:20]
    s = anomaly_scores(model, x, "elbo", k=3, rng=5)
    np.testing.assert_array_equal(s, -model.elbo(x, n_samples=3, rng=np.random.default_rng(5)))
    s_iw = anomaly_scores(model, x, "iw", k=7, rng=5, batch_size=6)
    assert s_iw.shape == (20,) and s_iw.dtype == model.dtype
    np.testing.assert_array_equal(s_iw, anomaly_scores(model, x, "iw", k=7, rng=5, batch_size=6))
    with pytest.raises(ValueError, match="method"):
        anomaly_scores(model, x, "likelihood")
    with pytest.raises(ValueError, match="k"):
        anomaly_scores(model, x, "iw", k=0)


def test_noise_scores_higher_than_digits(trained):
    model, _, x_te = trained
    noise = np.random.default_rng(1).random((100, 64))
    s = anomaly_scores(model, np.vstack([x_te[:100], noise]), "elbo", rng=0)
    assert roc_auc(s, np.r_[np.zeros(100), np.ones(100)].astype(int)) > 0.95


def test_impute_keeps_observed_and_is_seeded(trained):
    model, _, x_te = trained
    x = x_te[:30]
    mask = np.random.default_rng(2).random(x.shape) < 0.4
    x_obs = np.where(mask, np.nan, x)
    a = impute(model, x_obs, mask, n_iter=10, rng=3)
    b = impute(model, x_obs, mask, n_iter=10, rng=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[~mask], x[~mask])      # bit for bit
    assert np.isfinite(a).all() and a.dtype == model.dtype
    assert not np.array_equal(a, impute(model, x_obs, mask, n_iter=10, rng=4))


def test_impute_trace_and_zero_iterations(trained):
    model, x_tr, x_te = trained
    x = x_te[:5]
    mask = np.zeros(x.shape, bool)
    mask[:, :32] = True
    out0 = impute(model, x, mask, n_iter=0, fill_value=0.25)
    np.testing.assert_array_equal(out0, np.where(mask, 0.25, x))
    out, trace = impute(model, x, mask, n_iter=4, rng=0, return_trace=True)
    assert trace.shape == (5, 5, 64)
    np.testing.assert_array_equal(trace[-1], out)


def test_impute_burn_in_averages_the_chain(trained):
    model, _, x_te = trained
    x = x_te[:6]
    mask = np.random.default_rng(1).random(x.shape) < 0.5
    avg, trace = impute(model, x, mask, n_iter=6, rng=0, burn_in=2, return_trace=True)
    np.testing.assert_allclose(avg[mask], trace[3:].mean(axis=0)[mask], rtol=1e-12)
    np.testing.assert_array_equal(avg[~mask], x[~mask])
    np.testing.assert_array_equal(trace, impute(model, x, mask, n_iter=6, rng=0, return_trace=True)[1])
    with pytest.raises(ValueError, match="burn_in"):
        impute(model, x, mask, n_iter=6, burn_in=6)


def test_impute_beats_mean_fill(trained):
    model, x_tr, x_te = trained
    x = x_te[:200]
    mask = np.random.default_rng(0).random(x.shape) < 0.5
    pixel_mean = x_tr.mean(axis=0)
    out = impute(model, np.where(mask, np.nan, x), mask, n_iter=30, rng=0, fill_value=pixel_mean)
    avg = impute(model, np.where(mask, np.nan, x), mask, n_iter=30, rng=0, fill_value=pixel_mean,
                 burn_in=5)
    base = np.mean((np.broadcast_to(pixel_mean, x.shape) - x)[mask] ** 2)
    assert np.mean((out - x)[mask] ** 2) < 0.9 * base
    assert np.mean((avg - x)[mask] ** 2) < np.mean((out - x)[mask] ** 2)


def test_impute_float32():
    model = sv.VAE(8, hidden_dims=(4,), latent_dim=2, dtype="float32")
    x = np.random.default_rng(0).random((3, 8)).astype(np.float32)
    mask = np.eye(3, 8, dtype=bool)
    for init in ("mean", "half", "noise"):
        assert impute(model, x, mask, n_iter=2, rng=0, init=init).dtype == np.float32


@pytest.mark.parametrize("change, err, match", [
    (dict(mask="ones_int"), TypeError, "mask"), (dict(mask="short"), ValueError, "mask"),
    (dict(x="nan_observed"), ValueError, "observed"), (dict(n_iter=-1), ValueError, "n_iter"),
    (dict(init="zeros"), ValueError, "init"), (dict(x="wrong_dtype"), ValueError, "x"),
])
def test_impute_bad_input(trained, change, err, match):
    model, _, x_te = trained
    x, mask = x_te[:4].copy(), np.zeros((4, 64), bool)
    mask[:, 0] = True
    kw = dict(n_iter=1)
    if change.get("mask") == "ones_int":
        mask = mask.astype(int)
    elif change.get("mask") == "short":
        mask = mask[:, :10]
    if change.get("x") == "nan_observed":
        x[0, 5] = np.nan
    elif change.get("x") == "wrong_dtype":
        x = x.astype(np.float32)
    kw.update({k: v for k, v in change.items() if k in ("n_iter", "init")})
    with pytest.raises(err, match=match):
        impute(model, x, mask, **kw)
