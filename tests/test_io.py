"""Checkpoints and history files: bit-identical round trips, atomic writes, clear errors on
corrupt, truncated or manipulated files, run-directory loading, no pickle."""
import csv
import json
import os
import zipfile

import numpy as np
import pytest

from scratchvae import io as svio

CONFIG = {"input_dim": 4, "hidden_dims": [3], "latent_dim": 2, "activation": "relu",
          "output_var": 0.5, "nested": {"a": [1, 2.5, None, True]}}


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    # insertion order deliberately not sorted; "file" would clash with np.savez's argument
    shapes = {"enc.W0": (4, 3), "enc.b0": (3,), "dec.W_out": (2, 4), "file": (1,), "a": ()}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def listing(directory):
    return sorted(os.listdir(directory))


def rewrite(path, arrays):
    """Write ``arrays`` (str -> ndarray, config included) as an npz, bypassing the checks."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, a in arrays.items():
            with zf.open(k + ".npy", "w") as f:
                np.lib.format.write_array(f, a, allow_pickle=False)


def raw_contents(path):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, json.loads(arrays[svio.CONFIG_KEY].item())


def with_header(arrays, header):
    return dict(arrays, **{svio.CONFIG_KEY: np.array(json.dumps(header))})


# ---------------------------------------------------------------- round trip
def test_round_trip_is_bit_identical(tmp_path, dtype):
    params = make_params(dtype)
    path = svio.save_checkpoint(tmp_path / "ckpt.npz", params, CONFIG)
    assert path == str(tmp_path / "ckpt.npz")
    loaded, config = svio.load_checkpoint(path)
    assert list(loaded) == list(params)  # insertion order kept
    for k, p in params.items():
        assert loaded[k].dtype == p.dtype and loaded[k].shape == p.shape, k
        assert loaded[k].tobytes() == p.tobytes(), k
    assert config == CONFIG
    assert listing(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_suffix_appended_and_optional_on_load(tmp_path):
    params = make_params(np.float32)
    path = svio.save_checkpoint(str(tmp_path / "model"), params, {})
    assert path == str(tmp_path / "model.npz") and os.path.isfile(path)
    loaded, config = svio.load_checkpoint(tmp_path / "model")
    assert config == {} and list(loaded) == list(params)


def test_tuples_in_config_come_back_as_lists(tmp_path):
    path = svio.save_checkpoint(tmp_path / "c", {"w": np.zeros(2)},
                                {"hidden_dims": (4, 2), "lr": np.float64(0.1), "k": np.int64(3)})
    _, config = svio.load_checkpoint(path)
    assert config == {"hidden_dims": [4, 2], "lr": 0.1, "k": 3}


def test_file_needs_no_pickle_and_records_header(tmp_path, dtype):
    params = make_params(dtype)
    path = svio.save_checkpoint(tmp_path / "c", params, CONFIG)
    arrays, header = raw_contents(path)  # np.load(allow_pickle=False) reads every member
    assert set(arrays) == set(params) | {svio.CONFIG_KEY}
    assert arrays[svio.CONFIG_KEY].dtype.kind == "U" and arrays[svio.CONFIG_KEY].ndim == 0
    assert header["format_version"] == 1
    assert header["param_keys"] == list(params)
    assert header["params"]["enc.W0"] == {"shape": [4, 3], "dtype": np.dtype(dtype).str}
    assert header["config"] == CONFIG
    with zipfile.ZipFile(path) as zf:
        assert all(name.endswith(".npy") for name in zf.namelist())


def test_file_mode_follows_umask(tmp_path):
    path = svio.save_checkpoint(tmp_path / "c", {"w": np.zeros(1)}, {})
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- atomicity
def test_failed_replace_keeps_old_checkpoint_and_no_temp(tmp_path, monkeypatch):
    old = make_params(np.float64, seed=1)
    path = svio.save_checkpoint(tmp_path / "ckpt", old, {"version": "old"})

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(svio.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        svio.save_checkpoint(tmp_path / "ckpt", make_params(np.float64, seed=2), {"version": "new"})
    monkeypatch.undo()
    assert listing(tmp_path) == ["ckpt.npz"]
    loaded, config = svio.load_checkpoint(path)
    assert config == {"version": "old"}
    for k in old:
        np.testing.assert_array_equal(loaded[k], old[k], err_msg=k)


def test_failure_midway_through_writing_leaves_no_temp(tmp_path, monkeypatch):
    path = svio.save_checkpoint(tmp_path / "ckpt", {"w": np.ones(3)}, {"version": "old"})
    calls = []
    real = np.lib.format.write_array

    def write_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # even an interrupt cleans up
        return real(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        svio.save_checkpoint(tmp_path / "ckpt", {"w": np.zeros(3), "b": np.zeros(1)}, {})
    monkeypatch.undo()
    assert listing(tmp_path) == ["ckpt.npz"]
    assert svio.load_checkpoint(path)[1] == {"version": "old"}


def test_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        svio.save_checkpoint(tmp_path / "nope" / "c", {"w": np.zeros(1)}, {})


# ---------------------------------------------------------------- corrupt or manipulated files
def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        svio.load_checkpoint(tmp_path / "absent.npz")


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1, -30])
def test_truncated_file_raises_value_error(tmp_path, keep):
    path = svio.save_checkpoint(tmp_path / "c", make_params(np.float64), CONFIG)
    data = open(path, "rb").read()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    with open(path, "wb") as f:
        f.write(data[:n])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        svio.load_checkpoint(path)


def test_flipped_byte_in_array_data_raises_value_error(tmp_path):
    params = {"w": np.arange(64.0)}
    path = svio.save_checkpoint(tmp_path / "c", params, {})
    data = bytearray(open(path, "rb").read())
    at = bytes(data).index(params["w"].tobytes()[8:16])  # inside the array's bytes
    data[at] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="corrupt or truncated"):  # the zip CRC catches it
        svio.load_checkpoint(path)


def test_garbage_file_raises_value_error(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        svio.load_checkpoint(path)


def test_npy_and_foreign_npz_are_rejected(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single .npy array"):
        svio.load_checkpoint(tmp_path / "a.npy")
    np.savez(tmp_path / "b.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match="__config__.json"):
        svio.load_checkpoint(tmp_path / "b.npz")


def test_header_not_json_or_not_a_string(tmp_path):
    path = tmp_path / "c.npz"
    rewrite(path, {"w": np.zeros(1), svio.CONFIG_KEY: np.array("{not json")})
    with pytest.raises(ValueError, match="not valid JSON"):
        svio.load_checkpoint(path)
    rewrite(path, {"w": np.zeros(1), svio.CONFIG_KEY: np.zeros(3, np.uint8)})
    with pytest.raises(ValueError, match="0-d str"):
        svio.load_checkpoint(path)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unknown_format_version(tmp_path, version):
    path = svio.save_checkpoint(tmp_path / "c", {"w": np.zeros(2)}, {})
    arrays, header = raw_contents(path)
    header["format_version"] = version
    rewrite(path, with_header(arrays, header))
    with pytest.raises(ValueError, match="format_version"):
        svio.load_checkpoint(path)


def _manipulations():
    def shape(arrays, header):
        header["params"]["enc.W0"]["shape"] = [3, 4]

    def swapped_array(arrays, header):
        arrays["enc.W0"] = arrays["enc.W0"].T.copy()

    def dtype(arrays, header):
        arrays["enc.b0"] = arrays["enc.b0"].astype(np.float32)

    def extra_array(arrays, header):
        arrays["sneaky"] = np.zeros(2)

    def missing_array(arrays, header):
        del arrays["dec.W_out"]

    def missing_meta(arrays, header):
        del header["params"]["enc.b0"]

    def nan(arrays, header):
        arrays["enc.b0"] = arrays["enc.b0"].copy()
        arrays["enc.b0"][0] = np.nan

    def duplicate_keys(arrays, header):
        header["param_keys"].append("enc.W0")

    def no_config(arrays, header):
        del header["config"]

    return [(shape, "enc.W0"), (swapped_array, "enc.W0"), (dtype, "enc.b0"),
            (extra_array, "sneaky"), (missing_array, "dec.W_out"), (missing_meta, "enc.b0"),
            (nan, "enc.b0"), (duplicate_keys, "param_keys"), (no_config, "config")]


@pytest.mark.parametrize("manipulate, text", _manipulations(),
                         ids=[f.__name__ for f, _ in _manipulations()])
def test_manipulated_checkpoint_is_rejected_naming_the_problem(tmp_path, manipulate, text):
    path = svio.save_checkpoint(tmp_path / "c", make_params(np.float64), CONFIG)
    arrays, header = raw_contents(path)
    del arrays[svio.CONFIG_KEY]
    manipulate(arrays, header)
    rewrite(path, with_header(arrays, header))
    with pytest.raises(ValueError, match=text):
        svio.load_checkpoint(path)


def write_member(zf, key, header, data=b""):
    """A .npy member with an arbitrary header and data (no check that the two agree)."""
    with zf.open(key + ".npy", "w") as f:
        np.lib.format.write_array_header_2_0(f, header)
        f.write(data)


@pytest.mark.parametrize("recorded", ["true shape", "declared shape"])
def test_member_declaring_a_huge_shape_is_a_value_error_naming_it(tmp_path, recorded):
    """A member header claiming 2**40 float64 entries (8 TiB) is refused from its header alone,
    whether the JSON header records the true shape or repeats the lie."""
    path = svio.save_checkpoint(tmp_path / "c", {"w": np.zeros(3), "b": np.zeros(2)}, {})
    arrays, header = raw_contents(path)
    huge = (2 ** 20, 2 ** 20)
    if recorded == "declared shape":
        header["params"]["w"]["shape"] = list(huge)
    with zipfile.ZipFile(path, "w") as zf:
        write_member(zf, "b", {"descr": "<f8", "fortran_order": False, "shape": (2,)},
                     np.zeros(2).tobytes())
        write_member(zf, "w", {"descr": "<f8", "fortran_order": False, "shape": huge},
                     np.zeros(3).tobytes())
        with zf.open(svio.CONFIG_KEY + ".npy", "w") as f:
            np.lib.format.write_array(f, np.array(json.dumps(header)))
    with pytest.raises(ValueError, match="'w"):
        svio.load_checkpoint(path)


def test_config_member_declaring_a_huge_string_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    with zipfile.ZipFile(path, "w") as zf:
        write_member(zf, svio.CONFIG_KEY, {"descr": "<U1000000000000", "fortran_order": False,
                                           "shape": ()}, b"{}")
    with pytest.raises(ValueError, match=svio.CONFIG_KEY):
        svio.load_checkpoint(path)


def test_fortran_ordered_member_is_refused_and_save_writes_c_order(tmp_path):
    w = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    path = svio.save_checkpoint(tmp_path / "c", {"w": w}, {})
    loaded, _ = svio.load_checkpoint(path)          # written in C order, read back equal
    np.testing.assert_array_equal(loaded["w"], w)
    assert loaded["w"].flags.c_contiguous and loaded["w"].flags.writeable
    arrays, header = raw_contents(path)
    with zipfile.ZipFile(path, "w") as zf:
        write_member(zf, "w", {"descr": "<f8", "fortran_order": True, "shape": (2, 3)},
                     w.tobytes(order="F"))
        with zf.open(svio.CONFIG_KEY + ".npy", "w") as f:
            np.lib.format.write_array(f, arrays[svio.CONFIG_KEY])
    with pytest.raises(ValueError, match="'w'.*Fortran"):
        svio.load_checkpoint(path)


def test_member_that_is_not_npy_is_refused(tmp_path):
    path = svio.save_checkpoint(tmp_path / "c", {"w": np.zeros(3)}, {})
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("w2.npy", b"not an npy header at all")
    with pytest.raises(ValueError, match="w2.npy"):
        svio.load_checkpoint(path)


# ---------------------------------------------------------------- save validation
@pytest.mark.parametrize("params, config, exc, text", [
    ({"w": np.array([1.0, np.nan])}, {}, ValueError, r"params\['w'\].*finite"),
    ({"w": np.array([1.0, np.inf], np.float32)}, {}, ValueError, r"params\['w'\].*finite"),
    ({"w": np.array([object()])}, {}, ValueError, r"params\['w'\].*numeric"),
    ({"w": [1.0]}, {}, TypeError, r"params\['w'\]"),
    ({svio.CONFIG_KEY: np.zeros(1)}, {}, ValueError, "reserved"),
    ({1: np.zeros(1)}, {}, TypeError, "keys"),
    ([np.zeros(1)], {}, TypeError, "params"),
    ({"w": np.zeros(1)}, [], TypeError, "config"),
    ({"w": np.zeros(1)}, {"f": object()}, TypeError, "config"),
    ({"w": np.zeros(1)}, {"x": float("nan")}, ValueError, "config"),
])
def test_save_rejects_bad_input_and_writes_nothing(tmp_path, params, config, exc, text):
    with pytest.raises(exc, match=text):
        svio.save_checkpoint(tmp_path / "c", params, config)
    assert listing(tmp_path) == []


def test_integer_and_bool_arrays_round_trip(tmp_path):
    params = {"counts": np.arange(5, dtype=np.int64), "mask": np.array([True, False])}
    loaded, _ = svio.load_checkpoint(svio.save_checkpoint(tmp_path / "c", params, {}))
    for k in params:
        assert loaded[k].dtype == params[k].dtype
        np.testing.assert_array_equal(loaded[k], params[k])


# ---------------------------------------------------------------- run directories
def test_directory_prefers_checkpoint_npz(tmp_path):
    svio.save_checkpoint(tmp_path / "checkpoint.npz", {"w": np.ones(1)}, {"which": "default"})
    svio.save_checkpoint(tmp_path / "other.npz", {"w": np.zeros(1)}, {"which": "other"})
    assert svio.load_checkpoint(tmp_path)[1] == {"which": "default"}


def test_directory_with_single_npz(tmp_path):
    svio.save_checkpoint(tmp_path / "best.npz", {"w": np.ones(1)}, {"which": "best"})
    (tmp_path / "history.json").write_text("{}")
    assert svio.load_checkpoint(str(tmp_path))[1] == {"which": "best"}


def test_directory_without_or_with_ambiguous_npz(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .npz"):
        svio.load_checkpoint(tmp_path)
    svio.save_checkpoint(tmp_path / "a.npz", {"w": np.ones(1)}, {})
    svio.save_checkpoint(tmp_path / "b.npz", {"w": np.ones(1)}, {})
    with pytest.raises(ValueError, match="several"):
        svio.load_checkpoint(tmp_path)


# ---------------------------------------------------------------- history files
def test_write_json_atomic_round_trip(tmp_path):
    history = {"epoch": [1, 2], "loss": [np.float32(3.5), 2.25], "w": np.arange(2.0),
               "best": np.int64(2), "val": None}
    path = svio.write_json_atomic(tmp_path / "history.json", history)
    assert json.loads(open(path).read()) == {"epoch": [1, 2], "loss": [3.5, 2.25],
                                             "w": [0.0, 1.0], "best": 2, "val": None}
    assert listing(tmp_path) == ["history.json"]


def test_write_json_atomic_rejects_nan_and_keeps_old(tmp_path):
    path = svio.write_json_atomic(tmp_path / "h.json", {"loss": 1.0})
    with pytest.raises(ValueError, match="obj"):
        svio.write_json_atomic(path, {"loss": float("nan")})
    with pytest.raises(TypeError, match="obj"):
        svio.write_json_atomic(path, {"loss": object()})
    assert json.loads(open(path).read()) == {"loss": 1.0}
    assert listing(tmp_path) == ["h.json"]


def test_write_csv_atomic_round_trip_exact_floats(tmp_path):
    rows = [{"epoch": 1, "loss": 0.1 + 0.2, "lr": np.float32(0.1)},
            {"epoch": 2, "loss": np.float64(1 / 3), "val_loss": 2.5}]
    path = svio.write_csv_atomic(tmp_path / "history.csv", rows)
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == ["epoch", "loss", "lr", "val_loss"]
    assert float(back[0]["loss"]) == 0.1 + 0.2
    assert np.float32(back[0]["lr"]) == np.float32(0.1)
    assert float(back[1]["loss"]) == 1 / 3
    assert back[0]["val_loss"] == "" and back[1]["lr"] == ""
    assert back[1]["epoch"] == "2"


def test_write_csv_atomic_validation_and_fieldnames(tmp_path):
    path = tmp_path / "h.csv"
    svio.write_csv_atomic(path, [{"b": 1, "a": 2}], fieldnames=["a", "b", "c"])
    assert path.read_text() == "a,b,c\n2,1,\n"
    with pytest.raises(ValueError, match="rows"):
        svio.write_csv_atomic(path, [{"z": 1}], fieldnames=["a"])
    with pytest.raises(TypeError, match=r"rows\[1\]"):
        svio.write_csv_atomic(path, [{"a": 1}, 5])
    with pytest.raises(TypeError, match="rows"):
        svio.write_csv_atomic(path, {"a": 1})
    assert path.read_text() == "a,b,c\n2,1,\n"  # failed calls left the old file
    svio.write_csv_atomic(path, [])
    assert path.read_text() == ""
