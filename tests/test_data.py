"""Tests for scratchvae.data: IDX reader, MNIST loaders, download (no network), digits, arrays,
binarization and the --data SPEC parser. All files are written into tmp_path by the tests."""
import gzip
import hashlib
import io
import struct
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scratchvae import data

N_TR, N_TE, H, W = 12, 5, 28, 28


# ----------------------------------------------------------------------------------------------
# Helpers: build IDX files by hand
# ----------------------------------------------------------------------------------------------

def idx_bytes(arr, code=0x08, be=">u1"):
    """Serialise ``arr`` as IDX: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.asarray(arr).astype(be).tobytes()


def write(path, payload, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def fake_mnist(directory, n_tr=N_TR, n_te=N_TE, gz=(True, False, False, True), seed=0,
               te_hw=(H, W), tr_labels=None):
    """Write four small MNIST-format files (some gzipped) and return the arrays written."""
    rng = np.random.default_rng(seed)
    x_tr = rng.integers(0, 256, size=(n_tr, H, W), dtype=np.uint8)
    x_te = rng.integers(0, 256, size=(n_te, *te_hw), dtype=np.uint8)
    y_tr = rng.integers(0, 10, size=n_tr).astype(np.uint8) if tr_labels is None else tr_labels
    y_te = rng.integers(0, 10, size=n_te).astype(np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr, z in zip(data.MNIST_FILES, (x_tr, y_tr, x_te, y_te), gz):
        write(directory / (name + (".gz" if z else "")), idx_bytes(arr), gz=z)
    return x_tr, y_tr, x_te, y_te


# ----------------------------------------------------------------------------------------------
# read_idx
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_round_trip_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    labs = np.array([7, 0, 9], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    a = data.read_idx(write(tmp_path / f"i{suffix}", idx_bytes(imgs), gz))
    b = data.read_idx(write(tmp_path / f"l{suffix}", idx_bytes(labs), gz))
    np.testing.assert_array_equal(a, imgs)
    np.testing.assert_array_equal(b, labs)
    assert a.dtype == np.uint8 and a.shape == (3, 4, 5)


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path):
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    gz_no_suffix = write(tmp_path / "images", idx_bytes(arr), gz=True)
    plain_with_suffix = write(tmp_path / "images2.gz", idx_bytes(arr), gz=False)
    np.testing.assert_array_equal(data.read_idx(gz_no_suffix), arr)
    np.testing.assert_array_equal(data.read_idx(plain_with_suffix), arr)


@pytest.mark.parametrize("code,be", [(0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                     (0x0D, ">f4"), (0x0E, ">f8")])
def test_read_idx_other_types_big_endian(tmp_path, code, be):
    arr = np.array([[-3, 2, 100], [5, -1, 0]]).astype(be)
    out = data.read_idx(write(tmp_path / "f", idx_bytes(arr, code, be)))
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative and out.dtype == np.dtype(be).newbyteorder("=")
    out[0, 0] = 1                      # a writable copy, not a view of the file buffer


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**16),
       gz=st.booleans())
def test_read_idx_round_trip_property(tmp_path_factory, shape, seed, gz):
    arr = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path = write(tmp_path_factory.mktemp("idx") / "f", idx_bytes(arr), gz)
    np.testing.assert_array_equal(data.read_idx(path), arr)


def _good():
    return idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize("payload,match", [
    (_good()[:-1], "truncated"),
    (_good() + b"\x00", "trailing bytes"),
    (b"\x01" + _good()[1:], "magic"),
    (_good()[:2] + b"\x07" + _good()[3:], "type code 0x07"),
    (b"\x00\x00\x08\x00", "dimensions is 0"),
    (_good()[:10], "truncated header"),
    (b"\x00\x00", "too short"),
    (b"", "too short"),
], ids=["truncated", "trailing", "bad-magic", "bad-type", "ndim0", "short-header", "short",
        "empty"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx_rejects_bad_files_naming_them(tmp_path, payload, match, gz):
    path = write(tmp_path / "broken-idx3-ubyte", payload, gz)
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(path)
    assert "broken-idx3-ubyte" in str(info.value)


def test_read_idx_rejects_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(_good())
    path = write(tmp_path / "cut.gz", blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="gzip") as info:
        data.read_idx(path)
    assert "cut.gz" in str(info.value)


def test_read_idx_missing_and_wrong_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        data.read_idx(tmp_path / "nope")
    with pytest.raises(TypeError, match="path"):
        data.read_idx(3)


# ----------------------------------------------------------------------------------------------
# load_mnist / load_fashion_mnist
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loader", [data.load_mnist, data.load_fashion_mnist])
def test_load_mnist_shapes_values_dtype(tmp_path, dtype, loader):
    x_tr8, y_tr8, x_te8, y_te8 = fake_mnist(tmp_path)
    x_tr, y_tr, x_te, y_te = loader(tmp_path, dtype=dtype.name)
    assert x_tr.shape == (N_TR, H * W) and x_te.shape == (N_TE, H * W)
    assert x_tr.dtype == dtype and x_te.dtype == dtype
    assert y_tr.dtype == np.int64 and y_te.dtype == np.int64
    np.testing.assert_array_equal(x_tr, x_tr8.reshape(N_TR, -1).astype(dtype) / dtype.type(255))
    np.testing.assert_array_equal(x_te, x_te8.reshape(N_TE, -1).astype(dtype) / dtype.type(255))
    np.testing.assert_array_equal(y_tr, y_tr8)
    np.testing.assert_array_equal(y_te, y_te8)
    assert x_tr.min() >= 0 and x_tr.max() <= 1


def test_load_mnist_all_plain_and_all_gzip_agree(tmp_path):
    fake_mnist(tmp_path / "a", gz=(False,) * 4)
    fake_mnist(tmp_path / "b", gz=(True,) * 4)
    for u, v in zip(data.load_mnist(tmp_path / "a"), data.load_mnist(str(tmp_path / "b"))):
        np.testing.assert_array_equal(u, v)


def test_load_mnist_missing_files_names_all_and_directory(tmp_path):
    fake_mnist(tmp_path)
    (tmp_path / (data.MNIST_FILES[2])).unlink()
    with pytest.raises(FileNotFoundError) as info:
        data.load_mnist(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "download_mnist" in msg
    for name in data.MNIST_FILES:
        assert name in msg


def test_load_mnist_mismatched_counts(tmp_path):
    fake_mnist(tmp_path, tr_labels=np.zeros(N_TR + 1, dtype=np.uint8))
    with pytest.raises(ValueError, match=rf"{N_TR + 1} labels .* {N_TR} images"):
        data.load_mnist(tmp_path)


def test_load_mnist_labels_out_of_range(tmp_path):
    fake_mnist(tmp_path, tr_labels=np.full(N_TR, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match="0..9"):
        data.load_mnist(tmp_path)


def test_load_mnist_inconsistent_image_sizes(tmp_path):
    fake_mnist(tmp_path, te_hw=(27, 28))
    with pytest.raises(ValueError, match="28x28 but test images are 27x28"):
        data.load_mnist(tmp_path)


def test_load_mnist_wrong_ndim_images(tmp_path):
    fake_mnist(tmp_path)
    write(tmp_path / (data.MNIST_FILES[0] + ".gz"), idx_bytes(np.zeros(N_TR, np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"shape \(n, H, W\)") as info:
        data.load_mnist(tmp_path)
    assert data.MNIST_FILES[0] in str(info.value)


def test_load_mnist_bad_dtype_argument(tmp_path):
    fake_mnist(tmp_path)
    with pytest.raises(ValueError, match="dtype"):
        data.load_mnist(tmp_path, dtype="int32")


# ----------------------------------------------------------------------------------------------
# download_mnist: never touches the network
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def offline(monkeypatch):
    """Make every urlopen fail the way an offline machine does; record the URLs asked for."""
    urls = []

    def refuse(url, timeout=None):
        urls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return urls


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_download_offline_message_names_files_and_directory(tmp_path, offline, dataset):
    target = tmp_path / "cache"
    with pytest.raises(RuntimeError) as info:
        data.download_mnist(target, dataset=dataset)
    msg = str(info.value)
    assert "\n" not in msg and "download" in msg and "failed" in msg
    assert str(target) in msg
    for name in data.MNIST_FILES:
        assert name + ".gz" in msg
    assert offline and all(u.endswith("train-images-idx3-ubyte.gz") for u in offline)
    assert list(target.iterdir()) == []


def test_download_rejects_wrong_hash_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(b"not the real file"))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        data.download_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_download_verifies_writes_and_reuses_cache(tmp_path, monkeypatch):
    payloads = {name + ".gz": gzip.compress(name.encode()) for name in data.MNIST_FILES}
    monkeypatch.setitem(data._SHA256, "mnist",
                        {k: hashlib.sha256(v).hexdigest() for k, v in payloads.items()})
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(payloads[url.rsplit("/", 1)[1]]))
    out = data.download_mnist(tmp_path / "c")
    assert out == tmp_path / "c"
    assert sorted(p.name for p in out.iterdir()) == sorted(payloads)
    for name, blob in payloads.items():
        assert (out / name).read_bytes() == blob
    # Second call: every file is present with the right hash, so the network is not used.
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network used"))
    assert data.download_mnist(tmp_path / "c") == out


def test_download_bad_dataset_name(tmp_path, offline):
    with pytest.raises(ValueError, match="dataset"):
        data.download_mnist(tmp_path, dataset="cifar")
    assert offline == []


# ----------------------------------------------------------------------------------------------
# load_digits (needs scikit-learn)
# ----------------------------------------------------------------------------------------------

def _rows_sorted(x, y):
    """Rows of [x | y] in lexicographic order: a multiset fingerprint of a dataset."""
    m = np.column_stack([x.astype(np.float64), y])
    return m[np.lexsort(m.T[::-1])]


def test_load_digits_sizes_range_dtype(dtype):
    pytest.importorskip("sklearn")
    x_tr, y_tr, x_val, y_val, x_te, y_te = data.load_digits(seed=0, dtype=dtype.name)
    assert [len(a) for a in (x_tr, x_val, x_te)] == [1258, 180, 359]
    for x, y in ((x_tr, y_tr), (x_val, y_val), (x_te, y_te)):
        assert x.shape == (len(y), 64) and x.dtype == dtype and y.dtype == np.int64
        assert x.min() == 0 and x.max() == 1
        assert set(np.unique(y)) == set(range(10))


def test_load_digits_is_a_partition_of_the_bundled_data():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    full = sklearn_datasets.load_digits()
    x_tr, y_tr, x_val, y_val, x_te, y_te = data.load_digits(seed=3)
    np.testing.assert_array_equal(
        _rows_sorted(np.concatenate([x_tr, x_val, x_te]), np.concatenate([y_tr, y_val, y_te])),
        _rows_sorted(full.data / 16.0, full.target))


def test_load_digits_deterministic_and_seed_dependent():
    pytest.importorskip("sklearn")
    a, b, c = data.load_digits(seed=5), data.load_digits(seed=5), data.load_digits(seed=6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_load_digits_stratified_by_label():
    pytest.importorskip("sklearn")
    x_tr, y_tr, x_val, y_val, x_te, y_te = data.load_digits(seed=1)
    n = len(y_tr) + len(y_val) + len(y_te)
    for y_part in (y_val, y_te):
        for c in range(10):
            n_c = (y_tr == c).sum() + (y_val == c).sum() + (y_te == c).sum()
            # the (r + 0.5) / n_c ordering keeps each class within one example of proportional
            assert abs((y_part == c).sum() - n_c * len(y_part) / n) <= 1.0, (c, len(y_part))


def test_load_digits_fractions():
    pytest.importorskip("sklearn")
    x_tr, y_tr, x_val, y_val, x_te, y_te = data.load_digits(val_fraction=0.0, test_fraction=0.5)
    assert x_val.shape == (0, 64) and y_val.shape == (0,)
    assert len(x_te) == 898 and len(x_tr) == 1797 - 898
    with pytest.raises(ValueError, match="val_fraction"):
        data.load_digits(val_fraction=1.0)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        data.load_digits(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="dtype"):
        data.load_digits(dtype="float16")


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install "scratchvae\[data\]"'):
        data.load_digits()


# ----------------------------------------------------------------------------------------------
# load_array
# ----------------------------------------------------------------------------------------------

def test_load_array_npy_keeps_float_dtype(tmp_path, dtype):
    x = np.random.default_rng(0).random((6, 3)).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    out, y = data.load_array(tmp_path / "x.npy")
    assert y is None and out.dtype == dtype
    np.testing.assert_array_equal(out, x)


def test_load_array_npz_with_labels_and_conversion(tmp_path):
    x = np.random.default_rng(0).random((6, 3))
    y = np.arange(6, dtype=np.uint8) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    out, labels = data.load_array(str(tmp_path / "d.npz"), dtype="float32")
    assert out.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(out, x.astype(np.float32))
    np.testing.assert_array_equal(labels, y)


def test_load_array_npz_single_array_any_name_and_uint8_images(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, size=(4, 2, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=imgs)
    out, y = data.load_array(tmp_path / "d.npz")
    assert y is None and out.shape == (4, 6) and out.dtype == np.float64
    np.testing.assert_array_equal(out, imgs.reshape(4, 6) / 255.0)
    assert out.max() <= 1


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.zeros(5)}, "2-D"),
    ({"x": np.zeros((2, 2, 2, 2))}, "2-D"),
    ({"x": np.array([[0.0, np.nan]])}, "finite"),
    ({"x": np.array([[0.0, np.inf]])}, "finite"),
    ({"a": np.zeros((2, 2)), "b": np.zeros((2, 2))}, "named 'x'"),
    ({"x": np.zeros((2, 2)), "y": np.zeros(2)}, "integer dtype"),
    ({"x": np.zeros((2, 2)), "y": np.zeros(3, int)}, r"shape \(2,\)"),
    ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, ">= 0"),
    ({"x": np.array([[0, 256]])}, "0..255"),
    ({"x": np.zeros((0, 3))}, "empty"),
    ({"x": np.zeros((2, 2), complex)}, "real numbers"),
], ids=["1d", "4d", "nan", "inf", "no-x", "float-y", "y-length", "neg-y", "int-range", "empty",
        "complex"])
def test_load_array_rejects_bad_content(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match) as info:
        data.load_array(tmp_path / "bad.npz")
    assert "bad.npz" in str(info.value)


def test_load_array_refuses_object_arrays(tmp_path):
    obj = np.array([[1, "a"]], dtype=object)
    np.save(tmp_path / "o.npy", obj, allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=obj)
    for name in ("o.npy", "o.npz"):
        with pytest.raises(ValueError, match="object|pickle") as info:
            data.load_array(tmp_path / name)
        assert name in str(info.value)


def test_load_array_missing_file_and_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        data.load_array(tmp_path / "missing.npy")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"\.npy or \.npz"):
        data.load_array(tmp_path / "x.csv")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="junk.npy"):
        data.load_array(tmp_path / "junk.npy")
    with pytest.raises(TypeError, match="path"):
        data.load_array(None)


# ----------------------------------------------------------------------------------------------
# Binarization
# ----------------------------------------------------------------------------------------------

def test_binarize_threshold_values_and_dtype(dtype):
    x = np.array([[0.0, 0.49, 0.5, 0.51, 1.0]], dtype=dtype)
    out = data.binarize(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, [[0, 0, 0, 1, 1]])
    np.testing.assert_array_equal(data.binarize(x, threshold=0.0), [[0, 1, 1, 1, 1]])


@given(seed=st.integers(0, 2**32 - 1))
def test_binarize_bernoulli_deterministic_binary_and_dtype_independent(seed):
    x = np.random.default_rng(seed).random((7, 5))
    a = data.binarize(x, "bernoulli", rng=seed)
    b = data.binarize(x, "bernoulli", rng=np.random.default_rng(seed))
    c = data.binarize(x.astype(np.float32).astype(np.float64), "bernoulli", rng=seed)
    d = data.binarize(x.astype(np.float32), "bernoulli", rng=seed)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c, d)
    assert a.dtype == np.float64 and d.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0}
    # the draw is exactly u < x for one stream of float64 uniforms
    np.testing.assert_array_equal(a, np.random.default_rng(seed).random(x.shape) < x)


def test_bernoulli_chunking_matches_a_single_draw(monkeypatch):
    x = np.random.default_rng(0).random((5, 7))
    whole = data.bernoulli_sample(x, np.random.default_rng(9))
    monkeypatch.setattr(data, "_BERNOULLI_CHUNK", 3)
    np.testing.assert_array_equal(data.bernoulli_sample(x, np.random.default_rng(9)), whole)


def test_bernoulli_endpoints_and_mean():
    x = np.array([0.0, 1.0] * 50)
    np.testing.assert_array_equal(data.bernoulli_sample(x, 0), x)
    p = np.full(200_000, 0.3, dtype=np.float32)
    mean = data.bernoulli_sample(p, 4).mean(dtype=np.float64)
    # standard error sqrt(0.3 * 0.7 / 2e5) = 1.02e-3; allow five of them (seeded, so not flaky)
    assert abs(mean - 0.3) < 5 * 1.03e-3


def test_dynamic_binarizer_fresh_per_epoch_and_reproducible(dtype):
    x = np.random.default_rng(0).random((20, 8)).astype(dtype)
    draw, again = data.dynamic_binarizer(7), data.dynamic_binarizer(7)
    e0, e1 = draw(x), draw(x)
    assert e0.dtype == dtype and not np.array_equal(e0, e1)
    np.testing.assert_array_equal(again(x, 1), e1)       # resume at epoch 1 gives the same data
    np.testing.assert_array_equal(again(x, 0), e0)
    assert not np.array_equal(data.dynamic_binarizer(8)(x, 0), e0)
    g1 = data.dynamic_binarizer(np.random.default_rng(3))
    g2 = data.dynamic_binarizer(np.random.default_rng(3))
    np.testing.assert_array_equal(g1(x, 2), g2(x, 2))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: data.binarize(np.array([1.5])), ValueError, r"\[0, 1\]"),
    (lambda: data.binarize(np.array([-0.1])), ValueError, r"\[0, 1\]"),
    (lambda: data.binarize(np.array([np.nan])), ValueError, "finite"),
    (lambda: data.binarize(np.array([1, 0])), ValueError, "float32 or float64"),
    (lambda: data.binarize([0.5]), TypeError, "x must be a numpy.ndarray"),
    (lambda: data.binarize(np.array([0.5]), method="gumbel"), ValueError, "method"),
    (lambda: data.binarize(np.array([0.5]), threshold=2.0), ValueError, "threshold"),
    (lambda: data.binarize(np.array([0.5]), "bernoulli", rng="x"), TypeError, "rng"),
    (lambda: data.dynamic_binarizer(-1), ValueError, "seed"),
    (lambda: data.dynamic_binarizer(1.5), TypeError, "seed"),
    (lambda: data.dynamic_binarizer(1)(np.array([0.5]), epoch=-2), ValueError, "epoch"),
], ids=["above-1", "below-0", "nan", "int", "list", "method", "threshold", "rng", "neg-seed",
        "float-seed", "neg-epoch"])
def test_binarize_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ----------------------------------------------------------------------------------------------
# load_spec
# ----------------------------------------------------------------------------------------------

def test_load_spec_digits_matches_load_digits():
    pytest.importorskip("sklearn")
    for u, v in zip(data.load_spec("digits", seed=4, dtype="float32"),
                    data.load_digits(seed=4, dtype="float32")):
        np.testing.assert_array_equal(u, v)
        assert u.dtype == v.dtype


@pytest.mark.parametrize("prefix", ["mnist", "fashion-mnist"])
def test_load_spec_mnist_carves_validation_from_training(tmp_path, prefix):
    fake_mnist(tmp_path, n_tr=40)
    x_tr, y_tr, x_val, y_val, x_te, y_te = data.load_spec(f"{prefix}:{tmp_path}", dtype="float32",
                                                          seed=1, val_fraction=0.25)
    full_tr, full_ytr, full_te, full_yte = data.load_mnist(tmp_path, dtype="float32")
    assert len(x_val) == 10 and len(x_tr) == 30 and x_tr.dtype == np.float32
    np.testing.assert_array_equal(x_te, full_te)
    np.testing.assert_array_equal(y_te, full_yte)
    np.testing.assert_array_equal(
        _rows_sorted(np.concatenate([x_tr, x_val]), np.concatenate([y_tr, y_val])),
        _rows_sorted(full_tr, full_ytr))
    again = data.load_spec(f"{prefix}:{tmp_path}", dtype="float32", seed=1, val_fraction=0.25)
    np.testing.assert_array_equal(again[2], x_val)


def test_load_spec_arrays_with_and_without_labels(tmp_path):
    x = np.random.default_rng(0).random((50, 4))
    y = np.arange(50) % 5
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    parts = data.load_spec(str(tmp_path / "x.npy"), seed=2)
    assert parts[1] is None and parts[3] is None and parts[5] is None
    assert [len(parts[i]) for i in (0, 2, 4)] == [35, 5, 10]
    np.testing.assert_array_equal(_rows_sorted(np.concatenate(parts[0::2]), np.zeros(50)),
                                  _rows_sorted(x, np.zeros(50)))
    x_tr, y_tr, x_val, y_val, x_te, y_te = data.load_spec(tmp_path / "xy.npz", dtype="float32")
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y_te, minlength=5), [2] * 5)   # stratified
    np.testing.assert_array_equal(np.bincount(y_val, minlength=5), [1] * 5)


@pytest.mark.parametrize("spec,exc,match", [
    ("cifar10", ValueError, "data must be one of 'digits'.*'mnist:DIR'.*npz"),
    ("mnist", ValueError, "data must be one of"),
    ("mnist:", ValueError, "names no directory"),
    ("fashion-mnist:", ValueError, "names no directory"),
    (3, TypeError, "data must be a str"),
])
def test_load_spec_rejects_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        data.load_spec(spec)


def test_load_spec_missing_mnist_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_spec(f"mnist:{tmp_path / 'absent'}")
