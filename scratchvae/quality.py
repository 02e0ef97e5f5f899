"""Sample quality for digits: a Frechet distance in the feature space of a small classifier.

This is an ANALOGUE of the Frechet Inception Distance (FID, Heusel et al. 2017), not the FID:
the features come from a one-hidden-layer classifier trained here, in NumPy, on the same data
(the 8x8 digits or MNIST), instead of from the Inception network on ImageNet. Its numbers are
comparable between models evaluated with the same classifier (same data, seed and settings),
and not with published FID values.

Symbols: n examples, D data dimension, H hidden (feature) width, C classes.

The classifier (softmax regression on tanh features), built from ``layers.dense_forward`` /
``dense_backward``, trained with ``optim.Adam``; the only gradient of its own is that of the
softmax cross-entropy:

    h      = tanh(x @ W0 + b0)                  (n, H)   the features ("penultimate layer")
    logits = h @ W1 + b1                        (n, C)
    loss   = mean_i [ logsumexp(logits_i) - logits_i[y_i] ] + (wd / 2) (|W0|^2 + |W1|^2)

The Frechet distance between the Gaussians N(mu1, C1) and N(mu2, C2) fitted to two feature
sets (the 2-Wasserstein distance between them, squared):

    FD = |mu1 - mu2|^2 + Tr( C1 + C2 - 2 (C1^(1/2) C2 C1^(1/2))^(1/2) )

Matrix square roots come from the symmetric eigendecomposition S = V diag(w) V^T,
S^(1/2) = V diag(sqrt(max(w, 0))) V^T (tiny negative eigenvalues from rounding are clipped).
Writing the cross term with the symmetric C1^(1/2) C2 C1^(1/2) (instead of the usual sqrtm of
C1 C2, which is not symmetric) keeps everything in eigh, with NumPy only.
"""
from __future__ import annotations

import numpy as np

from ._checks import as_dtype, check_array, check_float, check_int, check_rng
from .distributions import logsumexp_forward
from .kernels import ACTIVATION_CODES, get_kernels
from .layers import dense_backward, dense_forward, glorot_uniform

TANH, IDENTITY = ACTIVATION_CODES["tanh"], ACTIVATION_CODES["identity"]
# the classifier is a small host-side model: the reference kernels run its layers
_K = get_kernels("numpy")


# ============================================================================ the classifier
class DigitClassifier:
    """One-hidden-layer tanh classifier whose hidden layer provides the features for the FD.

    Parameters (dict ``params``): W0 (D, H), b0 (H,), W1 (H, C), b1 (C,), Glorot-uniform
    weights and zero biases drawn from ``seed``.
    """

    def __init__(self, input_dim, n_classes=10, hidden=64, dtype="float64", seed=0):
        self.input_dim = check_int("input_dim", input_dim, min_value=1)
        self.n_classes = check_int("n_classes", n_classes, min_value=2)
        self.hidden = check_int("hidden", hidden, min_value=1)
        self.dtype = as_dtype("dtype", dtype)
        rng = np.random.default_rng(check_int("seed", seed, min_value=0))
        H, C = self.hidden, self.n_classes
        self.params = {"W0": glorot_uniform(rng, self.input_dim, H, self.dtype),
                       "b0": np.zeros(H, self.dtype),
                       "W1": glorot_uniform(rng, H, C, self.dtype),
                       "b1": np.zeros(C, self.dtype)}

    def _check_x(self, x):
        return check_array("x", x, ndim=2, shape=(None, self.input_dim), dtype=self.dtype)

    def _check_y(self, y, n):
        if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
            raise TypeError(f"y must be a numpy array of integer labels; got "
                            f"{getattr(y, 'dtype', type(y).__name__)}")
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match x; got {y.shape}")
        if y.min() < 0 or y.max() >= self.n_classes:
            raise ValueError(f"y must lie in [0, {self.n_classes}); got values in [{y.min()}, {y.max()}]")
        return y

    def _forward(self, x):
        """h = tanh(x @ W0 + b0), logits = h @ W1 + b1, and the two layers' caches."""
        p = self.params
        h, c0 = dense_forward(x, p["W0"], p["b0"], TANH, k=_K)
        logits, c1 = dense_forward(h, p["W1"], p["b1"], IDENTITY, k=_K)
        return h, logits, (c0, c1)

    def features(self, x):
        """The penultimate features h = tanh(x @ W0 + b0). Shapes: x (n, D) -> (n, H)."""
        return self._forward(self._check_x(x))[0]

    def logits(self, x):
        """Class scores h @ W1 + b1. Shapes: x (n, D) -> (n, C)."""
        return self._forward(self._check_x(x))[1]

    def predict(self, x):
        """The most likely class per row, (n,) int64."""
        return np.argmax(self.logits(x), axis=1).astype(np.int64)

    def accuracy(self, x, y) -> float:
        """Fraction of rows whose predicted class equals y."""
        return float(np.mean(self.predict(x) == self._check_y(y, np.shape(x)[0])))

    def loss_and_grads(self, x, y, weight_decay=0.0):
        """Mean softmax cross-entropy (+ L2 on weights) and its gradients, a dict keyed as params.

        Shapes: x (n, D), y (n,) ints -> loss (float), grads {W0 (D, H), b0 (H,), W1 (H, C), b1 (C,)}.
        Equation (p = softmax(logits), Y = onehot(y)):
            loss    = (1/n) sum_i [ logsumexp_c logits_ic - logits_{i, y_i} ] + wd/2 (|W0|^2 + |W1|^2)
            dlogits = (p - Y) / n                        (n, C)
            then the dense layers' backward (tanh' = 1 - tanh^2), plus wd W on each weight.
        Derivation: docs/derivations.md, "Digit classifier (softmax cross-entropy)".
        """
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        wd = self.dtype.type(check_float("weight_decay", weight_decay, min_value=0.0))
        p = self.params
        n = x.shape[0]
        _, logits, (c0, c1) = self._forward(x)
        # classes along the leading axis: the (K, B) layout of log-sum-exp and softmax
        lse, cache = logsumexp_forward(np.ascontiguousarray(logits.T), k=_K)
        rows = np.arange(n)
        loss = float(np.mean(lse - logits[rows, y]))
        loss += 0.5 * float(wd) * float((p["W0"] ** 2).sum() + (p["W1"] ** 2).sum())
        prob = _K.softmax(cache.a).T                   # (n, C), the gradient of logsumexp
        prob[rows, y] -= 1
        dlogits = prob / self.dtype.type(n)
        dh, dW1, db1 = dense_backward(dlogits, c1, k=_K)
        _, dW0, db0 = dense_backward(dh, c0, k=_K, need_da=False)
        return loss, {"W0": dW0 + wd * p["W0"], "b0": db0, "W1": dW1 + wd * p["W1"], "b1": db1}

    def fit(self, x, y, epochs=30, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=0):
        """Train in place with Adam on shuffled minibatches (seeded); returns self."""
        from .optim import Adam   # the package's Adam (opt.step(params, grads) updates in place)
        x = self._check_x(x)
        y = self._check_y(y, x.shape[0])
        epochs = check_int("epochs", epochs, min_value=1)
        batch_size = check_int("batch_size", batch_size, min_value=1)
        lr = check_float("lr", lr, min_value=0.0, min_inclusive=False)
        rng = check_rng("seed", seed)
        opt = Adam(lr=lr)
        for _ in range(epochs):
            order = rng.permutation(x.shape[0])
            for s in range(0, x.shape[0], batch_size):
                idx = order[s:s + batch_size]
                _, grads = self.loss_and_grads(x[idx], y[idx], weight_decay)
                opt.step(self.params, grads)
        return self


def train_classifier(x, y, n_classes=None, hidden=64, epochs=30, batch_size=64, lr=3e-3,
                     weight_decay=1e-4, seed=0):
    """Build and train a ``DigitClassifier`` on (x, y) in x's dtype; returns it.

    Shapes: x (n, D) float32/float64, y (n,) ints in [0, C). C defaults to max(y) + 1.
    About a second on the 8x8 digits (1258 images, 30 epochs), where it reaches ~95% test
    accuracy; use fewer epochs on MNIST (60000 images): 3-5 are plenty.
    """
    x = check_array("x", x, ndim=2)
    if not isinstance(y, np.ndarray) or not np.issubdtype(y.dtype, np.integer):
        raise TypeError("y must be a numpy array of integer labels")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    seed = check_int("seed", seed, min_value=0)
    clf = DigitClassifier(x.shape[1], n_classes, hidden, dtype=x.dtype, seed=seed)
    return clf.fit(x, y, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                   seed=seed)


# ============================================================================ Frechet distance
def _sqrtm_psd(s):
    """Square root of a symmetric positive semi-definite matrix by eigh; (k, k) -> (k, k)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _as_float_array(a):
    """Lists and tuples of numbers become float64 arrays; anything else is checked as given."""
    return np.asarray(a, dtype=np.float64) if isinstance(a, (list, tuple)) else a


def _check_gaussian(name_mu, mu, name_cov, cov):
    mu, cov = _as_float_array(mu), _as_float_array(cov)
    mu = np.asarray(check_array(name_mu, mu, ndim=1), dtype=np.float64)
    cov = np.asarray(check_array(name_cov, cov, shape=(mu.shape[0], mu.shape[0])), dtype=np.float64)
    scale = max(float(np.abs(cov).max()), 1e-300)
    if np.abs(cov - cov.T).max() > 1e-8 * scale:
        raise ValueError(f"{name_cov} must be a symmetric covariance matrix")
    return mu, 0.5 * (cov + cov.T)


def gaussian_stats(features):
    """Mean and covariance of a feature set, the Gaussian the Frechet distance compares.

    Shapes: features (n, k), n >= 2 -> mu (k,), cov (k, k), float64.
    Equation: mu = mean_i f_i,  cov = sum_i (f_i - mu)(f_i - mu)^T / (n - 1).
    """
    f = check_array("features", features, ndim=2).astype(np.float64)
    if f.shape[0] < 2:
        raise ValueError(f"features must have at least 2 rows for a covariance; got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2).

    Shapes: mu1, mu2 (k,), cov1, cov2 (k, k) symmetric PSD (arrays, lists or tuples)
    -> a float >= 0 (computed in float64).
    Equation: |mu1 - mu2|^2 + Tr(C1 + C2 - 2 (C1^(1/2) C2 C1^(1/2))^(1/2)).
    Zero for identical Gaussians; for diagonal C1 = diag(s1), C2 = diag(s2) it reduces to
    |mu1 - mu2|^2 + sum_j (sqrt(s1_j) - sqrt(s2_j))^2.
    """
    mu1, cov1 = _check_gaussian("mu1", mu1, "cov1", cov1)
    mu2, cov2 = _check_gaussian("mu2", mu2, "cov2", cov2)
    if mu2.shape != mu1.shape:
        raise ValueError(f"mu2 must have the shape of mu1 {mu1.shape}; got {mu2.shape}")
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * cross, 0.0))


def digit_frechet_distance(x_gen, x_ref, classifier) -> float:
    """The Frechet distance between generated and reference images in the classifier's features.

    Shapes: x_gen (n1, D), x_ref (n2, D), both in the classifier's dtype, n1, n2 >= 2 -> float.
    Equation: FD(N(mu_g, C_g), N(mu_r, C_r)) with (mu, C) = gaussian_stats(classifier.features(x)).
    Lower is better; use the same classifier and similar n for every model compared (the
    estimate is biased upwards for small n). An FID analogue for digits, not the Inception FID.
    """
    if not hasattr(classifier, "features"):
        raise TypeError(f"classifier must have a features(x) method (e.g. a DigitClassifier); "
                        f"got {type(classifier).__name__}")
    mu_g, c_g = gaussian_stats(classifier.features(check_array("x_gen", x_gen, ndim=2)))
    mu_r, c_r = gaussian_stats(classifier.features(check_array("x_ref", x_ref, ndim=2)))
    return frechet_distance(mu_g, c_g, mu_r, c_r)


__all__ = ["DigitClassifier", "train_classifier", "gaussian_stats", "frechet_distance",
           "digit_frechet_distance"]
