"""Tests for scratchvae.viz: every figure renders, saves a PNG of the right size, and validates.

Figures are small (a few inches at 20 dpi) so the whole file runs in seconds.
"""
import ast
import re
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import imread

from scratchvae import viz

DPI = 20
FIGSIZE = (3.0, 2.0)                 # 3 in x 2 in at 20 dpi: a 40 x 60 pixel PNG, exactly
EXPECTED_PX = (40, 60)               # (rows, columns) as imread returns them
D, SIDE = 16, 4                      # 4 x 4 images keep every figure cheap


def _cases():
    """One small, seeded call per public function: name -> (function, args, kwargs)."""
    rng = np.random.default_rng(1234)
    img = lambda *shape: rng.uniform(size=shape + (D,))      # noqa: E731
    g1, g2 = np.linspace(-2.0, 2.0, 9), np.linspace(-1.5, 1.5, 7)
    zz1, zz2 = np.meshgrid(g1, g2)
    log_p = np.stack([-(zz1 ** 2 + zz2 ** 2 + zz1 * zz2) / 2, -((zz1 - 1) ** 2 + zz2 ** 2) / 2])
    log_q = np.stack([-(zz1 ** 2 + zz2 ** 2) / 2, -((zz1 - 0.5) ** 2 + zz2 ** 2) / 2])
    mask = rng.uniform(size=(3, D)) < 0.5
    x_true = img(3)
    ks = np.array([1, 10, 100])
    history = {"epoch": [1, 2, 3], "train_loss": [5.0, 4.0, 3.5], "val_loss": [5.5, 4.5, 4.0],
               "kl": [1.0, 2.0, 2.5], "recon": [4.0, 2.0, 1.0]}

    def decode(z):
        return 1.0 / (1.0 + np.exp(-np.repeat(z[:, :1], D, axis=1)))

    return {
        "image_grid": (viz.image_grid, (img(5),), {"titles": list("abcde")}),
        "plot_history": (viz.plot_history, (history,), {}),
        "plot_reconstructions": (viz.plot_reconstructions, (img(4), img(4)), {"n": 3}),
        "plot_samples": (viz.plot_samples, (img(6),), {}),
        "plot_latent_scatter_pca": (viz.plot_latent_scatter, (rng.normal(size=(30, 4)),),
                                    {"labels": rng.integers(0, 3, 30)}),
        "plot_latent_scatter_2d": (viz.plot_latent_scatter, (rng.normal(size=(30, 2)),),
                                   {"labels": rng.normal(size=30)}),
        "plot_latent_scatter_1d": (viz.plot_latent_scatter, (rng.normal(size=(30, 1)),), {}),
        "plot_manifold": (viz.plot_manifold, (decode,), {"n": 4}),
        "plot_interpolation": (viz.plot_interpolation, ([img(5), img(5)],),
                               {"row_labels": ["linear", "slerp"]}),
        "plot_arithmetic": (viz.plot_arithmetic, (img(2), img(2), img(2), img(2)), {}),
        "plot_posterior_contours": (viz.plot_posterior_contours, (g1, g2, log_p, log_q),
                                    {"x_images": img(2)}),
        "plot_iw_bound": (viz.plot_iw_bound, (ks, [-90.0, -88.0, -87.5]),
                          {"lk_stderr": [0.5, 0.3, 0.2], "exact": -87.2, "elbo": -90.5}),
        "plot_kl_per_dim_lines": (viz.plot_kl_per_dim, (rng.uniform(size=(5, 3)),),
                                  {"active_units": [0, 1, 2, 2, 3]}),
        "plot_kl_per_dim_heatmap": (viz.plot_kl_per_dim, (rng.uniform(size=(4, 12)),),
                                    {"active_units": [1, 4, 8, 9], "epochs": [1, 2, 4, 8]}),
        "plot_kl_per_dim_bars": (viz.plot_kl_per_dim, (rng.uniform(size=6),), {}),
        "plot_estimator_variance": (viz.plot_estimator_variance,
                                    (ks, {"reparameterization": 1.0 / ks,
                                          "score function": 20.0 / ks}), {}),
        "plot_analogies": (viz.plot_analogies, (img(2), img(2, 3)), {}),
        "plot_imputation": (viz.plot_imputation,
                            (x_true, np.where(mask, 0.0, x_true), img(3), mask), {}),
        "plot_roc": (viz.plot_roc, (np.linspace(0, 1, 11), np.linspace(0, 1, 11) ** 0.5),
                     {"auc": 0.8}),
        "plot_codebook_usage": (viz.plot_codebook_usage, (rng.integers(0, 5, (2, 8)) + 1,),
                                {"labels": ["a", "b"]}),
        "plot_posterior_comparison": (viz.plot_posterior_comparison,
                                      (g1, g2, np.stack([log_p, log_q, log_q], axis=1),
                                       ["exact", "flow q", "Gaussian q"]),
                                      {"x_images": img(2), "row_titles": ["a", "b"]}),
        "plot_posterior_holes": (viz.plot_posterior_holes,
                                 (g1, g2, log_q[0], log_p[0], log_q[0] < log_p[0] - 0.5, img(3),
                                  img(2)), {"hole_mass": 0.1}),
        "plot_sweep_numeric": (viz.plot_sweep,
                               ([2, 4, 8], {"beta=1": (rng.normal(size=(3, 2)), np.full((3, 2), 0.1)),
                                            "beta=2": (np.array([[1.0, np.nan], [2.0, 1.0], [3.0, 2.0]]),
                                                       np.full((3, 2), np.nan))},
                                ["test_neg_elbo", "seconds"]), {"xscale": "log", "xlabel": "d"}),
        "plot_sweep_categories": (viz.plot_sweep,
                                  (["vae", "hvae"], {"": (rng.normal(size=(2, 4)), np.ones((2, 4)))},
                                   list("abcd")), {}),
    }


CASE_NAMES = sorted(_cases())


def _png_rows_cols(path: Path) -> tuple[int, int]:
    assert path.is_file(), f"{path} was not written"
    assert path.stat().st_size > 0, f"{path} is empty"
    return imread(path).shape[:2]


# --------------------------------------------------------------------------------------------
# Every function renders and saves a PNG of the requested size
# --------------------------------------------------------------------------------------------

def test_every_public_function_has_a_case():
    called = {fn.__name__ for fn, _, _ in _cases().values()}
    assert called == set(viz.__all__)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_saves_png_of_requested_size(name, tmp_path):
    fn, args, kwargs = _cases()[name]
    path = tmp_path / f"{name}.png"
    fig = fn(*args, path=path, dpi=DPI, figsize=FIGSIZE, **kwargs)
    assert isinstance(fig, Figure)
    assert _png_rows_cols(path) == EXPECTED_PX, name


@pytest.mark.parametrize("name", CASE_NAMES)
def test_default_size_matches_figsize_times_dpi(name, tmp_path):
    fn, args, kwargs = _cases()[name]
    path = tmp_path / f"{name}.png"
    fig = fn(*args, path=str(path), dpi=DPI, **kwargs)     # a str path works too
    assert isinstance(fig, Figure)
    width, height = fig.get_size_inches()
    # Agg sizes the canvas as int(inches * dpi) pixels
    assert _png_rows_cols(path) == (int(height * DPI), int(width * DPI)), name


def test_without_path_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fn, args, kwargs = _cases()["plot_roc"]
    fig = fn(*args, **kwargs)
    assert isinstance(fig, Figure)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".pdf", ".svg"])
def test_other_vector_formats(suffix, tmp_path):
    path = tmp_path / f"roc{suffix}"
    viz.plot_roc([0.0, 0.5, 1.0], [0.0, 0.8, 1.0], path=path, dpi=DPI, figsize=FIGSIZE)
    head = path.read_bytes()[:64]
    assert (b"%PDF" in head) if suffix == ".pdf" else (b"<svg" in path.read_bytes()[:2000])


def test_module_uses_no_pyplot_and_no_model_code():
    tree = ast.parse(Path(viz.__file__).read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    assert not any(m.startswith(("matplotlib.pyplot", "pylab")) for m in modules), modules
    assert {m for m in modules if m.startswith("scratchvae")} <= {"scratchvae._checks"}, modules


def test_inputs_are_not_modified_and_float32_is_accepted(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(3, D)).astype(np.float32)
    mask = rng.uniform(size=(3, D)) < 0.5
    before = x.copy()
    viz.plot_imputation(x, x, x, mask, path=tmp_path / "imp.png", dpi=DPI, figsize=FIGSIZE)
    np.testing.assert_array_equal(x, before)
    assert x.dtype == np.float32


# --------------------------------------------------------------------------------------------
# Content of the figures
# --------------------------------------------------------------------------------------------

def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def test_image_grid_layout_and_titles():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(7, 12))
    fig = viz.image_grid(x, image_shape=(3, 4), ncols=3, titles=[f"t{i}" for i in range(7)])
    assert len(fig.axes) == 9                       # 3 rows x 3 columns, two blank cells
    shown = _image_axes(fig)
    assert len(shown) == 7
    for i, ax in enumerate(shown):
        np.testing.assert_array_equal(ax.images[0].get_array(), x[i].reshape(3, 4))
        assert ax.get_title() == f"t{i}"


def test_reconstructions_rows_are_inputs_then_reconstructions():
    rng = np.random.default_rng(1)
    x, x_rec = rng.uniform(size=(6, D)), rng.uniform(size=(6, D))
    fig = viz.plot_reconstructions(x, x_rec, n=4)
    shown = _image_axes(fig)
    assert len(shown) == 8
    for i in range(4):
        np.testing.assert_array_equal(shown[i].images[0].get_array(), x[i].reshape(SIDE, SIDE))
        np.testing.assert_array_equal(shown[4 + i].images[0].get_array(),
                                      x_rec[i].reshape(SIDE, SIDE))
    assert shown[0].get_ylabel() == "input" and shown[4].get_ylabel() == "reconstruction"


def test_imputation_paints_missing_pixels_in_missing_color():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(3, D))
    mask = rng.uniform(size=(3, D)) < 0.5
    fig = viz.plot_imputation(x, x, [x, x], mask, missing_color=(1.0, 0.0, 0.0))
    shown = _image_axes(fig)
    assert len(shown) == 3 * 4                      # original, observed, two imputed rows
    for i in range(3):
        rgb = np.asarray(shown[3 + i].images[0].get_array()).reshape(D, 3)
        np.testing.assert_array_equal(rgb[mask[i]], np.tile([1.0, 0.0, 0.0], (mask[i].sum(), 1)))
        np.testing.assert_array_equal(rgb[~mask[i]], np.repeat(x[i][~mask[i]][:, None], 3, 1))
    assert [ax.get_ylabel() for ax in shown[::3]] == ["original", "observed", "imputed 0",
                                                      "imputed 1"]


def test_manifold_decodes_prior_quantiles_in_picture_order():
    n = 3
    calls = []

    def decode(z):
        calls.append(z.copy())
        # each decoded image is constant: its row index / n^2, so tiles can be identified
        return np.repeat((np.arange(z.shape[0]) / z.shape[0])[:, None], D, axis=1)

    fig = viz.plot_manifold(decode, n=n, dtype="float32", pad=1)
    assert len(calls) == 1
    z = calls[0]
    assert z.shape == (n * n, 2) and z.dtype == np.float32
    g = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
    for r in range(n):
        for c in range(n):
            np.testing.assert_array_equal(z[r * n + c], np.float32([g[c], g[n - 1 - r]]))
    mosaic = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    assert mosaic.shape == (n * SIDE + n - 1, n * SIDE + n - 1)
    for r in range(n):
        for c in range(n):
            top, left = r * (SIDE + 1), c * (SIDE + 1)
            tile = mosaic[top:top + SIDE, left:left + SIDE]
            np.testing.assert_array_equal(tile, np.full((SIDE, SIDE), (r * n + c) / (n * n)))
    assert np.isnan(mosaic[SIDE, :]).all()          # the padding row between tiles


def test_latent_scatter_pca_labels_give_explained_variance():
    rng = np.random.default_rng(3)
    # centred orthonormal columns scaled by 3, 2, 1, 1: explained shares 9/15, 4/15, ...
    a = rng.normal(size=(40, 4))
    q, _ = np.linalg.qr(a - a.mean(axis=0))
    z = q * np.array([3.0, 2.0, 1.0, 1.0]) + 5.0
    fig = viz.plot_latent_scatter(z)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "principal axis 1 (60.0% var)"
    assert ax.get_ylabel() == "principal axis 2 (26.7% var)"
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(np.abs(offsets[:, 0]), np.abs(3.0 * q[:, 0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.abs(offsets[:, 1]), np.abs(2.0 * q[:, 1]), rtol=0, atol=1e-12)


@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(3, 25), d=st.integers(3, 6),
       scale=st.floats(0.1, 10.0, allow_nan=False, allow_infinity=False, allow_subnormal=False))
def test_principal_axes_match_covariance_eigenvalues(seed, n, d, scale):
    rng = np.random.default_rng(seed)
    z = scale * rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=d)
    proj, explained = viz._principal_axes(z)
    eig = np.sort(np.linalg.eigvalsh(np.cov(z, rowvar=False, bias=True)))[::-1]
    np.testing.assert_allclose(explained, eig[:2] / eig.sum(), rtol=0, atol=1e-12)
    # the projection's variances are the top eigenvalues, and its two columns are uncorrelated
    cov = proj.T @ proj / n
    np.testing.assert_allclose(np.diag(cov), eig[:2], rtol=0, atol=1e-12 * eig.sum())
    np.testing.assert_allclose(cov[0, 1], 0.0, rtol=0, atol=1e-12 * eig.sum())


def test_latent_scatter_2d_and_1d_axes():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(20, 2))
    ax = viz.plot_latent_scatter(z).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("z_1", "z_2")
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), z)

    labels = np.repeat([3, 7], 10)
    fig = viz.plot_latent_scatter(z[:, :1], labels)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "z_1"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["3", "7"]
    np.testing.assert_array_equal(ax.collections[0].get_offsets()[:, 0], z[:10, 0])
    # the strip jitter is fixed, so the same call draws the same picture
    again = viz.plot_latent_scatter(z[:, :1], labels).axes[0]
    np.testing.assert_array_equal(again.collections[1].get_offsets(),
                                  ax.collections[1].get_offsets())


def test_latent_scatter_continuous_labels_get_a_colorbar():
    rng = np.random.default_rng(5)
    fig = viz.plot_latent_scatter(rng.normal(size=(20, 2)), rng.normal(size=20))
    assert len(fig.axes) == 2                       # the scatter and its colour bar
    assert fig.axes[0].get_legend() is None


def test_history_plots_the_keys_present():
    fig = viz.plot_history({"train_loss": [3.0, 2.0], "val_loss": [3.5, np.nan]})
    assert len(fig.axes) == 1                       # no kl/recon: one axis
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss", "val_loss"]
    assert "nats" in ax.get_ylabel()
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), [1.0, 2.0])

    fig = viz.plot_history({"epoch": [2, 4], "loss": [3.0, 2.0], "kl": [1.0, 1.5],
                            "recon": [2.0, 0.5], "lr": [1e-3, 1e-3]})
    loss_ax, term_ax = fig.axes
    assert [line.get_label() for line in term_ax.get_lines()] == ["kl", "recon"]
    assert "nats" in term_ax.get_ylabel()
    np.testing.assert_array_equal(loss_ax.get_lines()[0].get_xdata(), [2.0, 4.0])


def test_iw_bound_log_axis_and_reference_lines():
    ax = viz.plot_iw_bound([1, 10, 100], [-3.0, -2.5, -2.4], exact=-2.3, elbo=-3.0).axes[0]
    assert ax.get_xscale() == "log"
    flat = {ln.get_label(): ln for ln in ax.get_lines() if len(set(ln.get_ydata())) == 1}
    assert flat["exact log p(x)"].get_ydata()[0] == -2.3
    assert flat["ELBO"].get_ydata()[0] == -3.0
    lo, hi = ax.get_ylim()
    assert lo < -3.0 and hi > -2.3                 # both reference lines inside the view


def test_kl_per_dim_modes():
    rng = np.random.default_rng(6)
    fig = viz.plot_kl_per_dim(rng.uniform(size=(5, 3)), active_units=[0, 1, 1, 2, 3])
    kl_ax, au_ax = fig.axes
    assert len(kl_ax.get_lines()) == 3 and au_ax.get_ylabel() == "active units"

    fig = viz.plot_kl_per_dim(rng.uniform(size=(5, 11)), max_lines=10)
    assert any(isinstance(c, QuadMesh) for c in fig.axes[0].collections)

    fig = viz.plot_kl_per_dim(rng.uniform(size=7))
    assert len(fig.axes[0].patches) == 7            # one bar per latent dimension


def test_estimator_variance_is_log_log_with_one_curve_per_estimator():
    ks = np.array([1.0, 10.0, 100.0])
    ax = viz.plot_estimator_variance(ks, {"a": 1 / ks, "b": 5 / ks}, reference=False).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert [ln.get_label() for ln in ax.get_lines()] == ["a", "b"]


def test_roc_legend_reports_auc():
    ax = viz.plot_roc([0.0, 0.2, 1.0], [0.0, 0.7, 1.0], auc=0.77).axes[0]
    assert "AUC = 0.770" in [t.get_text() for t in ax.get_legend().get_texts()][0]


def test_analogies_column_titles_are_labels():
    rng = np.random.default_rng(8)
    fig = viz.plot_analogies(rng.uniform(size=(2, D)), rng.uniform(size=(2, 3, D)))
    titles = [ax.get_title() for ax in fig.axes[:5]]
    assert titles == ["input", "", "0", "1", "2"]


def test_posterior_contours_panels():
    g1, g2 = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    lp = np.zeros((3, 4, 5))
    lp[:, 0, 0] = -np.inf                           # -inf (zero density) is allowed
    fig = viz.plot_posterior_contours(g1, g2, lp, lp)
    contour_axes = [ax for ax in fig.axes if ax.get_xlabel() == "z_1"]
    assert len(contour_axes) == 6                   # exact and q for each of 3 inputs


# --------------------------------------------------------------------------------------------
# Bad input raises an error naming the argument
# --------------------------------------------------------------------------------------------

def _bad_cases(tmp):
    rng = np.random.default_rng(9)
    x = rng.uniform(size=(3, D))
    g1, g2 = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    lp = np.zeros((2, 4, 5))
    ks = np.array([1, 10])
    return [
        (viz.image_grid, (x[0],), {}, "images"),
        (viz.image_grid, (rng.uniform(size=(3, 10)),), {}, "images"),     # D=10 not square
        (viz.image_grid, (x,), {"image_shape": (3, 3)}, "image_shape"),
        (viz.image_grid, (np.zeros((0, D)),), {}, "images"),
        (viz.image_grid, (np.full((2, D), np.nan),), {}, "images"),
        (viz.image_grid, (np.full((2, D), 255, dtype=np.uint8),), {}, "images"),
        (viz.image_grid, (x,), {"titles": ["a"]}, "titles"),
        (viz.image_grid, (x,), {"ncols": 0}, "ncols"),
        (viz.image_grid, (x,), {"path": tmp / "missing_dir" / "f.png"}, "path"),
        (viz.image_grid, (x,), {"path": tmp / "f.jpg"}, "path"),
        (viz.image_grid, (x,), {"dpi": 0}, "dpi"),
        (viz.image_grid, (x,), {"figsize": (3.0,)}, "figsize"),
        (viz.image_grid, (x,), {"figsize": (3.0, -1.0)}, "figsize"),
        (viz.plot_samples, (x[None],), {}, "x"),
        (viz.plot_reconstructions, (x, x[:2]), {}, "x_rec"),
        (viz.plot_reconstructions, (x, x), {"n": 0}, "n"),
        (viz.plot_latent_scatter, (np.zeros(5),), {}, "z"),
        (viz.plot_latent_scatter, (np.zeros((5, 2)),), {"labels": np.arange(4)}, "labels"),
        (viz.plot_manifold, (lambda z: z,), {"n": 0}, "n"),
        (viz.plot_manifold, (lambda z: z,), {"quantiles": (0.9, 0.1)}, "quantiles"),
        (viz.plot_manifold, (lambda z: z,), {"dtype": "int32"}, "dtype"),
        (viz.plot_manifold, (lambda z: z[:1],), {"n": 2}, "decode"),
        (viz.plot_interpolation, ([],), {}, "rows"),
        (viz.plot_interpolation, ([x, rng.uniform(size=(3, 9))],), {}, "rows[1]"),
        (viz.plot_interpolation, ([x, x],), {"row_labels": ["one"]}, "row_labels"),
        (viz.plot_arithmetic, (x, x, x[:2], x), {}, "minus"),
        (viz.plot_analogies, (x, rng.uniform(size=(2, 2, D))), {}, "grid"),
        (viz.plot_analogies, (x, rng.uniform(size=(3, 2, D))), {"class_names": ["a"]},
         "class_names"),
        (viz.plot_imputation, (x, x, x, np.zeros((3, 9), bool)), {}, "mask"),
        (viz.plot_imputation, (x, x, x[:2], np.zeros((3, D), bool)), {}, "x_imputed"),
        (viz.plot_posterior_contours, (g1[::-1], g2, lp, lp), {}, "z1"),
        (viz.plot_posterior_contours, (g1, g2, lp[:, :, :4], lp[:, :, :4]), {}, "log_p_exact"),
        (viz.plot_posterior_contours, (g1, g2, lp, lp[:1]), {}, "log_q"),
        (viz.plot_posterior_contours, (g1, g2, lp, np.full_like(lp, np.nan)), {}, "log_q"),
        (viz.plot_posterior_contours, (g1, g2, np.full_like(lp, -np.inf), lp), {},
         "log_p_exact"),
        (viz.plot_posterior_contours, (g1, g2, lp, lp), {"x_images": x}, "x_images"),
        (viz.plot_iw_bound, ([0, 10], [1.0, 2.0]), {}, "ks"),
        (viz.plot_iw_bound, (ks, [1.0]), {}, "lk"),
        (viz.plot_iw_bound, (ks, [1.0, 2.0]), {"lk_stderr": [0.1, -0.1]}, "lk_stderr"),
        (viz.plot_iw_bound, (ks, [1.0, 2.0]), {"exact": float("nan")}, "exact"),
        (viz.plot_kl_per_dim, (np.zeros((2, 2, 2)),), {}, "kl_per_dim"),
        (viz.plot_kl_per_dim, (np.zeros((3, 2)),), {"active_units": [1, 2]}, "active_units"),
        (viz.plot_kl_per_dim, (np.zeros((3, 2)),), {"epochs": [1, 3, 2]}, "epochs"),
        (viz.plot_kl_per_dim, (np.zeros(3),), {"epochs": [1, 2, 3]}, "epochs"),
        (viz.plot_estimator_variance, (ks, {}), {}, "variances"),
        (viz.plot_estimator_variance, (ks, {"a": np.array([1.0, -1.0])}), {}, "variances['a']"),
        (viz.plot_estimator_variance, (ks, {"a": np.array([1.0])}), {}, "variances['a']"),
        (viz.plot_roc, ([0.0, 1.0], [0.0, 1.5]), {}, "tpr"),
        (viz.plot_roc, ([0.0, 1.0], [0.0]), {}, "tpr"),
        (viz.plot_roc, ([0.0, 1.0], [0.0, 1.0]), {"auc": 1.5}, "auc"),
        (viz.plot_history, ({"lr": [1.0]},), {}, "history"),
        (viz.plot_history, ({"train_loss": [1.0, 2.0], "val_loss": [1.0]},), {},
         "history['val_loss']"),
        (viz.plot_history, ({"train_loss": []},), {}, "history['train_loss']"),
        (viz.plot_posterior_comparison, (g1, g2, lp, ["a"]), {}, "log_densities"),
        (viz.plot_posterior_comparison, (g1, g2, lp[:, None, :, :4], ["a"]), {}, "log_densities"),
        (viz.plot_posterior_comparison, (g1, g2, np.full((2, 1, 4, 5), -np.inf), ["a"]), {},
         "log_densities"),
        (viz.plot_posterior_comparison, (g1, g2[::-1], lp[:, None], ["a"]), {}, "z2"),
        (viz.plot_posterior_comparison, (g1, g2, lp[:, None], ["a", "b"]), {}, "column_titles"),
        (viz.plot_posterior_comparison, (g1, g2, lp[:, None], ["a"]), {"x_images": x},
         "x_images"),
    ]


def test_bad_inputs_raise_value_error_naming_the_argument(tmp_path):
    for fn, args, kwargs, name in _bad_cases(tmp_path):
        with pytest.raises(ValueError, match=re.escape(name)) as info:
            fn(*args, **kwargs)
        assert name in str(info.value), (fn.__name__, name)
    assert list(tmp_path.iterdir()) == []           # nothing was written on failure


@pytest.mark.parametrize("fn, args, name", [
    (viz.image_grid, (np.zeros((2, D)),), "path"),
    (viz.plot_imputation, (np.zeros((2, D)),) * 3 + (np.zeros((2, D)),), "mask"),
    (viz.plot_manifold, ("not callable",), "decode"),
    (viz.plot_history, ([1.0, 2.0],), "history"),
    (viz.plot_latent_scatter, (np.array([["a", "b"]]),), "z"),
])
def test_wrong_types_raise_type_error_naming_the_argument(fn, args, name):
    kwargs = {"path": 123} if name == "path" else {}
    with pytest.raises(TypeError, match=re.escape(name)):
        fn(*args, **kwargs)


def test_failed_validation_writes_no_file(tmp_path):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="tpr"):
        viz.plot_roc([0.0, 1.0], [0.0, 2.0], path=path)
    assert not path.exists()
