"""The Frechet digit distance: the matrix formula against closed forms, and the small
classifier (accuracy on digits, hand-written gradient against finite differences)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import scratchvae as sv
from scratchvae import quality
from tests.conftest import FD_RTOL


def random_cov(rng, k):
    a = rng.normal(size=(k, k))
    return a @ a.T + 0.1 * np.eye(k)


@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_distance_to_itself_is_zero(seed, k):
    rng = np.random.default_rng(seed)
    mu, cov = rng.normal(size=k), random_cov(rng, k)
    assert quality.frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-8 * np.trace(cov))


@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_diagonal_closed_form(seed, k):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=k), rng.normal(size=k)
    s1, s2 = rng.uniform(0.1, 3, k), rng.uniform(0.1, 3, k)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    got = quality.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


@given(st.integers(0, 2**32 - 1), st.integers(1, 6))
def test_symmetric_and_translation(seed, k):
    rng = np.random.default_rng(seed)
    mu1, mu2, c1, c2 = rng.normal(size=k), rng.normal(size=k), random_cov(rng, k), random_cov(rng, k)
    d12 = quality.frechet_distance(mu1, c1, mu2, c2)
    assert d12 == pytest.approx(quality.frechet_distance(mu2, c2, mu1, c1), rel=1e-8)
    # same covariance: only the means differ
    assert quality.frechet_distance(mu1, c1, mu2, c1) == pytest.approx(
        np.sum((mu1 - mu2) ** 2), rel=1e-8, abs=1e-8 * np.trace(c1))


def test_scalar_case_is_wasserstein():
    # 1-D: W2^2 between N(m1, s1^2) and N(m2, s2^2) = (m1 - m2)^2 + (s1 - s2)^2
    assert quality.frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9.0 + 1.0)


def test_gaussian_stats():
    f = np.array([[1.0, 2.0], [3.0, 0.0], [5.0, 4.0]])
    mu, cov = quality.gaussian_stats(f)
    np.testing.assert_allclose(mu, [3.0, 2.0])
    np.testing.assert_allclose(cov, np.cov(f.T))
    with pytest.raises(ValueError, match="at least 2"):
        quality.gaussian_stats(f[:1])


@pytest.mark.parametrize("args, match", [
    ((np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]), np.zeros(2), np.eye(2)), "symmetric"),
    ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "cov1"),
    ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "mu2"),
    ((np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2)), "cov1"),
])
def test_frechet_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        quality.frechet_distance(*args)


@pytest.fixture(scope="module")
def digits():
    return sv.data.load_digits(seed=0)


@pytest.fixture(scope="module")
def classifier(digits):
    x_tr, y_tr = digits[0], digits[1]
    return quality.train_classifier(x_tr, y_tr, epochs=15, seed=0)


def test_classifier_learns_digits(classifier, digits):
    x_te, y_te = digits[4], digits[5]
    assert classifier.accuracy(x_te, y_te) > 0.9


def test_classifier_gradient_matches_finite_differences(digits):
    x, y = digits[0][:12], digits[1][:12]
    clf = quality.DigitClassifier(64, 10, hidden=5, seed=3)
    loss, grads = clf.loss_and_grads(x, y, weight_decay=0.01)
    report = sv.check_gradients(lambda p: clf.loss_and_grads(x, y, weight_decay=0.01)[0],
                                clf.params, grads, tol=FD_RTOL)
    assert report.passed, str(report)


def test_classifier_float32_stays_float32(digits):
    x, y = digits[0][:20].astype(np.float32), digits[1][:20]
    clf = quality.DigitClassifier(64, 10, hidden=4, dtype="float32")
    _, grads = clf.loss_and_grads(x, y)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert clf.features(x).dtype == np.float32


def test_digit_frechet_distance(classifier, digits):
    x_tr, x_te = digits[0], digits[4]
    assert quality.digit_frechet_distance(x_te, x_te, classifier) == pytest.approx(0, abs=1e-8)
    noise = np.random.default_rng(0).random((300, 64))
    assert quality.digit_frechet_distance(noise, x_te, classifier) > \
        5 * quality.digit_frechet_distance(x_tr, x_te, classifier)
    with pytest.raises(TypeError, match="classifier"):
        quality.digit_frechet_distance(x_te, x_te, object())


def test_classifier_bad_input(digits):
    clf = quality.DigitClassifier(64, 10, hidden=4)
    x, y = digits[0][:5], digits[1][:5]
    with pytest.raises(ValueError, match="y"):
        clf.loss_and_grads(x, y + 10)
    with pytest.raises(TypeError, match="y"):
        clf.loss_and_grads(x, y.astype(float))
    with pytest.raises(ValueError, match="x"):
        clf.loss_and_grads(x[:, :10], y)
