"""Saving and loading: bit-identical round trips, a pickle-free safetensors file, clear errors for
bad files, and atomic writes."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import anovae
import anovae.nets
from anovae import (
    AEDetector,
    ImageAEDetector,
    ImageVAEDetector,
    ModelFileError,
    NotFittedError,
    VAEDetector,
)
from anovae.persistence import (
    CHECKSUM_KEY,
    FORMAT_NAME,
    FORMAT_VERSION,
    file_digest,
    read_metadata,
)


def read_header(path: Path) -> tuple[dict, bytes]:
    """The safetensors JSON header of ``path`` and the tensor bytes after it."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write_header(path: Path, header: dict, data: bytes) -> None:
    """Write a safetensors file from a header and the tensor bytes (header padded to 8 bytes)."""
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def edit_anovae_doc(path: Path, edit, *, keep_checksum: bool = False) -> None:
    """Rewrite the ``anovae`` metadata document of a saved model in place: without the file's
    checksum (a file built by hand, or by anovae < 0.5), unless ``keep_checksum``."""
    header, data = read_header(path)
    doc = json.loads(header["__metadata__"]["anovae"])
    edit(doc)
    header["__metadata__"]["anovae"] = json.dumps(doc)
    if not keep_checksum:
        header["__metadata__"].pop(CHECKSUM_KEY)
    write_header(path, header, data)


def edit_tensors(path: Path, edit, *, keep_checksum: bool = False) -> None:
    """Rewrite the tensors of a saved model in place (``edit`` changes the dict), same metadata:
    without the tensors' checksum (a file built by hand, or by anovae < 0.5), unless
    ``keep_checksum`` (a file damaged after it was written)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    if not keep_checksum:
        metadata.pop(CHECKSUM_KEY)
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


def test_a_file_changed_after_it_was_saved_is_refused(fitted_vae, data, tmp_path):
    # flipped bytes that still read as finite weights loaded, and every row was flagged
    path = fitted_vae.save(tmp_path / "m.safetensors")
    key = next(k for k in load_file(str(path)) if k.startswith("net."))

    def nudge(t):
        t[key] = t[key] * 1.5

    edit_tensors(path, nudge, keep_checksum=True)
    refused = r"is corrupt: its contents do not match the checksum"
    with pytest.raises(ModelFileError, match=refused):
        anovae.load(path)
    edit_tensors(path, lambda t: None)  # the same tensors without a checksum (anovae < 0.5)
    assert np.isfinite(anovae.load(path).decision_function(data.X_test)).all()
    # the JSON document too: another threshold that still reads as one
    path = fitted_vae.save(tmp_path / "m2.safetensors")
    edit_anovae_doc(path, lambda d: d.update(threshold=d["threshold"] * 2), keep_checksum=True)
    with pytest.raises(ModelFileError, match=refused):
        anovae.load(path)
    # the digest covers the document and the tensors' names, dtypes, shapes and bytes
    t = {"a": torch.zeros(2), "b": torch.ones(3, dtype=torch.float64)}
    assert file_digest("{}", t) == file_digest("{}", dict(reversed(t.items())))
    assert file_digest("{}", t) != file_digest("{ }", t)
    for other in ({"a": torch.zeros(2), "c": t["b"]}, {"a": torch.zeros(2).double(), "b": t["b"]},
                  {"a": torch.zeros(1, 2), "b": t["b"]}, {"a": torch.tensor([0.0, 1e-30]),
                                                          "b": t["b"]}):
        assert file_digest("{}", other) != file_digest("{}", t)


@pytest.fixture
def saved(fitted_vae, tmp_path) -> Path:
    return fitted_vae.save(tmp_path / "model.safetensors")


# -- round trips ----------------------------------------------------------------------------------
def test_round_trip_is_bit_identical(any_fitted, data, tmp_path):
    path = tmp_path / "m.safetensors"
    assert any_fitted.save(path) == path
    loaded = anovae.load(path)
    assert type(loaded) is type(any_fitted)
    assert loaded.get_params() == any_fitted.get_params()
    X = data.X_test
    np.testing.assert_array_equal(loaded.decision_function(X), any_fitted.decision_function(X))
    np.testing.assert_array_equal(loaded.feature_scores(X), any_fitted.feature_scores(X))
    np.testing.assert_array_equal(loaded.predict(X), any_fitted.predict(X))
    np.testing.assert_array_equal(loaded.predict_proba(X), any_fitted.predict_proba(X))
    np.testing.assert_array_equal(loaded.transform(X), any_fitted.transform(X))
    np.testing.assert_array_equal(loaded.reconstruct(X), any_fitted.reconstruct(X))
    np.testing.assert_array_equal(loaded.sample(5, random_state=1),
                                  any_fitted.sample(5, random_state=1))
    assert loaded.threshold_ == any_fitted.threshold_
    np.testing.assert_array_equal(loaded.decision_scores_, any_fitted.decision_scores_)
    np.testing.assert_array_equal(loaded.labels_, any_fitted.labels_)
    assert loaded.n_features_in_ == any_fitted.n_features_in_
    assert loaded.net_config_ == any_fitted.net_config_
    assert loaded.history_ == any_fitted.history_
    assert loaded.metadata_["format_version"] == 1  # tables need no newer reader
    assert loaded.metadata_["library_version"] == anovae.__version__


def test_feature_baselines_round_trip_and_older_files_rank_raw_contributions(
        fitted_vae, data, tmp_path):
    path = fitted_vae.save(tmp_path / "m.safetensors")
    loaded = anovae.load(path)
    from anovae.scores import SCORES

    assert sorted(loaded.feature_baselines_) == sorted(SCORES)
    for score, base in fitted_vae.feature_baselines_.items():
        np.testing.assert_array_equal(loaded.feature_baselines_[score], base)
    X = data.X_test[:6]
    pd.testing.assert_frame_equal(loaded.explain(X, k=3), fitted_vae.explain(X, k=3))
    # a file written before anovae 0.4 has no baselines: explanations rank the contributions
    edit_tensors(path, lambda t: [t.pop(k) for k in list(t) if k.startswith("feature_baseline")])
    old = anovae.load(path)
    assert not hasattr(old, "feature_baselines_")
    table = old.explain(X, k=5)
    assert table["excess"].isna().all()  # unknown, not made up
    top = -np.sort(-old.feature_scores(X), axis=1)
    np.testing.assert_array_equal(table["contribution"].to_numpy().reshape(6, 5), top)


def test_dataframe_schema_is_kept(fitted_vae_frame, data, tmp_path):
    loaded = anovae.load(fitted_vae_frame.save(str(tmp_path / "frame.safetensors")))
    assert list(loaded.feature_names_in_) == list(data.columns)
    df = data.frame(data.X_test)
    shuffled = df[list(reversed(df.columns))]
    np.testing.assert_array_equal(loaded.decision_function(shuffled),
                                  fitted_vae_frame.decision_function(df))
    with pytest.raises(anovae.DataError, match="missing columns 'f1'"):
        loaded.decision_function(df.drop(columns=["f1"]))


def test_numpy_typed_params_can_be_saved(make_detector, data, tmp_path):
    det = make_detector(AEDetector, hidden_dims=np.array([8, 4]), latent_dim=np.int64(2),
                        random_state=np.int64(0), learning_rate=np.float32(1e-3))
    det.fit(data.X_train[:50])
    loaded = anovae.load(det.save(tmp_path / "np.safetensors"))
    assert loaded.hidden_dims == (8, 4) and loaded.latent_dim == 2
    np.testing.assert_array_equal(loaded.decision_function(data.X_test),
                                  det.decision_function(data.X_test))


def test_array_model_has_no_feature_names(fitted_ae, tmp_path):
    loaded = anovae.load(fitted_ae.save(tmp_path / "ae.safetensors"))
    assert isinstance(loaded, AEDetector)
    assert not hasattr(loaded, "feature_names_in_")


def test_device_override(fitted_vae, tmp_path, data):
    loaded = anovae.load(fitted_vae.save(tmp_path / "m.safetensors"), device="cpu")
    assert loaded.device == "cpu"
    np.testing.assert_array_equal(loaded.decision_function(data.X_test),
                                  fitted_vae.decision_function(data.X_test))


def test_loaded_model_can_be_saved_again(saved, tmp_path, data):
    again = anovae.load(anovae.load(saved).save(tmp_path / "again.safetensors"))
    np.testing.assert_array_equal(again.decision_function(data.X_test),
                                  anovae.load(saved).decision_function(data.X_test))


# -- the file format ------------------------------------------------------------------------------
def test_file_is_safetensors_with_anovae_metadata(saved):
    raw = saved.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 0 < n < len(raw)
    header = json.loads(raw[8:8 + n])
    assert "__metadata__" in header and "anovae" in header["__metadata__"]
    doc = json.loads(header["__metadata__"]["anovae"])
    assert doc["format"] == FORMAT_NAME and doc["format_version"] == 1 <= FORMAT_VERSION
    assert doc["estimator"] == "VAEDetector"
    assert doc["threshold"] == anovae.load(saved).threshold_
    # Only plain numeric tensors, and their bytes fill the rest of the file exactly.
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert any(k.startswith("net.") for k in tensors)
    assert {"scaler.center", "scaler.scale", "decision_scores"} <= set(tensors)
    assert {v["dtype"] for v in tensors.values()} <= {"F32", "F64"}
    assert max(v["data_offsets"][1] for v in tensors.values()) == len(raw) - 8 - n
    assert read_metadata(saved) == doc


def test_loading_never_unpickles(saved, monkeypatch, data):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert anovae.load(saved).decision_function(data.X_test).shape == (len(data.X_test),)


# -- bad files ------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        anovae.load(tmp_path / "nope.safetensors")


def test_directory(tmp_path):
    with pytest.raises(ModelFileError, match="not a file"):
        anovae.load(tmp_path)


def test_truncated_file(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated|corrupt"):
        anovae.load(saved)


@pytest.mark.parametrize("keep", [0, 4, 8, 20])
def test_file_cut_inside_the_header(saved, keep):
    saved.write_bytes(saved.read_bytes()[:keep])
    with pytest.raises(ModelFileError, match="truncated|corrupt"):
        anovae.load(saved)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="not a readable anovae model"):
        anovae.load(path)


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"net": [1, 2, 3]}))
    with pytest.raises(ModelFileError, match="is a pickle .*never unpickles.*save"):
        anovae.load(path)


def test_safetensors_without_anovae_metadata(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"author": "someone"})
    with pytest.raises(ModelFileError, match="not an anovae model"):
        anovae.load(path)
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(ModelFileError, match="not an anovae model"):
        anovae.load(path)


def test_newer_format_version(saved):
    edit_anovae_doc(saved, lambda doc: doc.update(format_version=FORMAT_VERSION + 1))
    for load in (anovae.load, read_metadata):
        with pytest.raises(ModelFileError,
                           match=f"format version {FORMAT_VERSION + 1}.*upgrade anovae"):
            load(saved)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda doc: doc.update(format="something-else"), "not an anovae model"),
    (lambda doc: doc.update(format_version="1"), "format version"),
    (lambda doc: doc.update(estimator="IForest"), "unknown estimator 'IForest'"),
    (lambda doc: doc["params"].update(hidden_units=3), "inconsistent"),
    (lambda doc: doc["net"].update(latent_dim=7), "inconsistent"),
    (lambda doc: doc.pop("threshold"), "inconsistent"),
], ids=["format", "version-type", "estimator", "params", "net", "threshold"])
def test_inconsistent_metadata(saved, edit, match):
    edit_anovae_doc(saved, edit)
    with pytest.raises(ModelFileError, match=match):
        anovae.load(saved)


def test_corrupt_anovae_json(saved):
    header, data = read_header(saved)
    header["__metadata__"]["anovae"] = "{not json"
    write_header(saved, header, data)
    with pytest.raises(ModelFileError, match="corrupt anovae header"):
        anovae.load(saved)


def test_anovae_json_that_is_not_an_object(saved):
    header, data = read_header(saved)
    header["__metadata__"]["anovae"] = "[1, 2]"
    write_header(saved, header, data)
    with pytest.raises(ModelFileError, match="corrupt anovae header"):
        anovae.load(saved)


@pytest.mark.parametrize("missing", ["decision_scores", "scaler.center", "net.encoder.0.weight"])
def test_missing_tensor(saved, missing):
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(saved), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(saved))
    del tensors[missing]
    save_file(tensors, str(saved), metadata=metadata)
    with pytest.raises(ModelFileError, match="inconsistent"):
        anovae.load(saved)


def test_params_that_are_not_an_object(saved):
    edit_anovae_doc(saved, lambda doc: doc.update(params=[1, 2]))
    with pytest.raises(ModelFileError, match="inconsistent"):
        anovae.load(saved)


@pytest.mark.parametrize("cls", [VAEDetector, AEDetector])
def test_saving_an_unfitted_model(cls, tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(NotFittedError, match="fit"):
        cls().save(path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


# -- atomic writes --------------------------------------------------------------------------------
class DiskFull(OSError):
    pass


class WriteFailed(Exception):
    """As safetensors' ``SafetensorError`` (not an OSError) for a failed write."""


def test_failed_write_leaves_the_old_file_and_no_temp_file(fitted_vae, fitted_ae, tmp_path,
                                                           monkeypatch, data):
    import safetensors.torch

    path = fitted_vae.save(tmp_path / "model.safetensors")
    before = path.read_bytes()

    def partial_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)  # a partial file, then the failure
        raise WriteFailed("no space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", partial_save)
    with pytest.raises(OSError, match="could not write .*no space left") as info:
        fitted_ae.save(path)  # safetensors' own error type became an OSError naming the file
    assert isinstance(info.value.__cause__, WriteFailed)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    monkeypatch.undo()
    np.testing.assert_array_equal(anovae.load(path).decision_function(data.X_test),
                                  fitted_vae.decision_function(data.X_test))


def test_failed_first_write_leaves_nothing(fitted_vae, tmp_path, monkeypatch):
    import safetensors.torch

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise DiskFull("no space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    with pytest.raises(DiskFull):
        fitted_vae.save(tmp_path / "new.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_the_model(fitted_vae, fitted_ae, tmp_path, data):
    path = fitted_vae.save(tmp_path / "m.safetensors")
    fitted_ae.save(path)
    assert isinstance(anovae.load(path), AEDetector)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# -- hostile or damaged fields: refused at load, naming the field -------------------------------
@pytest.mark.parametrize(("edit", "match"), [
    (lambda doc: doc.update(estimator=["VAEDetector"]), r"unknown estimator \['VAEDetector'\]"),
    (lambda doc: doc.update(noise_seed=float("inf")), "noise_seed must be an integer, got inf"),
    (lambda doc: doc.update(noise_seed=-1), "noise_seed must be >= 0, got -1"),
    (lambda doc: doc.update(noise_seed=1.5), "noise_seed must be an integer, got 1.5"),
    (lambda doc: doc["training"].update(n_epochs=float("inf")),
     "training.n_epochs must be an integer, got inf"),
    (lambda doc: doc["training"].update(best_epoch="3"), "training.best_epoch must be an integer"),
    (lambda doc: doc["training"].update(history=[1, 2]), "training.history must be a JSON object"),
    (lambda doc: doc.update(training=[]), "training must be a JSON object"),
    (lambda doc: doc.update(threshold=float("nan")), "threshold must be a finite number, got nan"),
    (lambda doc: doc.update(threshold=-float("inf")), "threshold must be a finite number"),
    (lambda doc: doc.update(threshold="1.5"), "threshold must be a number, got '1.5'"),
    # loaded as inf: a contamination model that flagged nothing
    (lambda doc: doc.update(threshold=10**400), "threshold must be a finite number, got an "
                                                "integer of 1329 bits"),
    (lambda doc: doc["net"].update(hidden_dims=[float("inf")]), "inconsistent.*infinity"),
    (lambda doc: doc["net"].update(likelihood="evil"), "likelihood 'evil' is unknown"),
    (lambda doc: doc["net"].update(variational=False), "variational flag is False"),
    (lambda doc: doc["net"].update(logvar_floor=float("inf")), "logvar_floor must be a finite"),
    (lambda doc: doc["schema"].update(n_features=4), "schema has 4 features, the network 5"),
    (lambda doc: doc["schema"].update(names=["a", "b"]), "schema names 2 columns for 5"),
    (lambda doc: doc["schema"].update(names=["a", "b", "a", "c", "b"]),
     r"schema names the columns \['a', 'b'\] more than once"),
    (lambda doc: doc["scaler"].update(method="evil"), "scaler method 'evil' is unknown"),
    (lambda doc: doc["params"].update(n_samples=-1), "n_samples must be >= 1"),
    (lambda doc: doc["params"].update(score="evil"), "score_type must be one of"),
    # a small file that asked for 15 GiB at its first score
    (lambda doc: doc["params"].update(n_samples=10**9), "n_samples must be <= 10000"),
    # these loaded and failed later (threshold, refit), or scored another score than the
    # threshold's
    (lambda doc: doc["params"].update(contamination=float("nan")), "contamination must be"),
    (lambda doc: doc["params"].update(epochs="three"), "epochs must be an integer"),
    (lambda doc: doc["params"].update(hidden_dims="abc"), "hidden_dims must be a sequence"),
    (lambda doc: doc["params"].update(threshold={"a": 1}), "threshold must be one of"),
    (lambda doc: doc["params"].update(device=3), "device must be a string"),
    (lambda doc: doc["net"].update(logvar_floor=1e308), r"logvar_floor must be in \[-20, 10\]"),
    (lambda doc: doc["schema"].update(names=5), "a field has the wrong type"),
    (lambda doc: doc.pop("net"), "it lacks 'net'"),
], ids=["estimator-list", "seed-inf", "seed-negative", "seed-float", "epochs-inf",
        "best-epoch-str", "history-list", "training-list", "threshold-nan", "threshold-minus-inf",
        "threshold-str", "threshold-huge-int", "hidden-inf", "likelihood", "variational",
        "floor-inf", "n-features", "names", "names-twice", "scaler-method", "n-samples", "score",
        "n-samples-huge", "contamination-nan",
        "epochs-str", "hidden-str", "threshold-dict", "device-int", "floor-huge", "names-int",
        "no-net"])
def test_hostile_field_is_refused(saved, edit, match):
    edit_anovae_doc(saved, edit)
    with pytest.raises(ModelFileError, match=match):
        anovae.load(saved)


@pytest.mark.parametrize("version", [True, -1, 0])
def test_format_version_that_is_a_bool_or_not_positive(saved, version):
    edit_anovae_doc(saved, lambda doc: doc.update(format_version=version))
    for load in (anovae.load, read_metadata):
        with pytest.raises(ModelFileError, match=f"no valid format version \\(got {version}\\)"):
            load(saved)


def test_deeply_nested_header(saved):
    header, data = read_header(saved)
    header["__metadata__"]["anovae"] = ('{"format": "anovae-model", "x": ' + "[" * 100_000
                                        + "]" * 100_000 + "}")
    write_header(saved, header, data)
    for load in (anovae.load, read_metadata):
        with pytest.raises(ModelFileError, match="corrupt anovae header: .*nested too deeply"):
            load(saved)


def test_architecture_parameters_that_disagree_with_the_network(saved, data):
    # the model scores with its network; get_params, clone and a refit read the parameters:
    # hidden_dims=[1e9, 1e9] beside a (16, 8) network loaded, and a refit would allocate it.
    # anovae before 0.5 saved such files after set_params: they load, as their network says
    want = anovae.load(saved).decision_function(data.X_test)
    edit_anovae_doc(saved, lambda doc: doc["params"].update(hidden_dims=[10**9, 10**9],
                                                            activation="tanh"))
    with pytest.warns(UserWarning, match=r"states hidden_dims=\(1000000000, 1000000000\), "
                      r"activation='tanh' but holds a network of hidden_dims=\(16, 8\), "
                      r"activation='relu': the network's are its parameters now"):
        det = anovae.load(saved)
    assert det.get_params()["hidden_dims"] == (16, 8) and det.get_params()["activation"] == "relu"
    np.testing.assert_array_equal(det.decision_function(data.X_test), want)
    from sklearn.base import clone

    assert clone(det).set_params(epochs=1).fit(data.X_train).net_config_.hidden_dims == (16, 8)


def test_a_header_inflated_with_empty_lists_is_refused_before_parsing(saved, monkeypatch):
    # 21 MB of "[],[],..." under an ignored key took 564 MB to parse, then loaded
    header, data = read_header(saved)
    doc = header["__metadata__"]["anovae"]
    header["__metadata__"]["anovae"] = doc[:-1] + ', "junk": [' + "[]," * 1_000_001 + "[]]}"
    write_header(saved, header, data)
    monkeypatch.setattr(json, "loads", lambda *a, **k: pytest.fail("parsed"))
    for load in (anovae.load, read_metadata):
        with pytest.raises(ModelFileError, match=r"holds 1,00\d,\d+ JSON arrays and objects, "
                           r"more than the 1,000,000 a model file may have"):
            load(saved)


def test_what_load_refuses_is_not_saved(fitted_vae, saved, tmp_path, monkeypatch):
    # save wrote a header that load then refused as "truncated, corrupt or not a safetensors
    # file (its header declares 18019680 bytes)"
    import anovae.persistence as persistence

    monkeypatch.setattr(persistence, "MAX_HEADER_BYTES", 2000)
    with pytest.raises(ValueError, match=r"metadata is [\d,]+ bytes, more than a model file's "
                       r"header may hold \(2,000\)"):
        fitted_vae.save(tmp_path / "big.safetensors")
    assert not (tmp_path / "big.safetensors").exists()
    with pytest.raises(ModelFileError, match=r"its header declares [\d,]+ bytes, more than the "
                       r"2,000 a model file's header may hold"):
        anovae.load(saved)


def test_infinite_threshold_of_an_fpr_model_still_loads(saved, data):
    # fpr_threshold returns inf (nothing flagged) with too few calibration rows: a valid model
    edit_anovae_doc(saved, lambda doc: doc.update(threshold=float("inf")))
    loaded = anovae.load(saved)
    assert loaded.threshold_ == float("inf")
    assert not loaded.predict(data.X_test).any()


def _scaled(key: str, factor: float):
    return lambda t: t.__setitem__(key, t[key] * factor)


@pytest.mark.parametrize(("edit", "match"), [
    (lambda t: t.__setitem__("scaler.center", t["scaler.center"][:2].clone()),
     r"scaler's center has shape \[2\], the model's inputs need \[5\]"),
    (lambda t: t.__setitem__("scaler.scale", t["scaler.scale"].reshape(1, 5).clone()),
     r"scaler's scale has shape \[1, 5\]"),
    (lambda t: t.__setitem__("scaler.center", t["scaler.center"].long()),
     "scaler's center has dtype torch.int64, not floating point"),
    (_scaled("scaler.center", float("nan")), "scaler's center has values that are not finite"),
    (_scaled("scaler.scale", float("inf")), "scaler's scale has values that are not finite"),
    (_scaled("scaler.scale", 0.0), "scaler's scale has values <= 0"),
    (_scaled("scaler.scale", -1.0), "scaler's scale has values <= 0"),
    (_scaled("net.encoder.0.weight", float("nan")),
     "network tensor 'net.encoder.0.weight' has values that are not finite"),
    # loaded as int32 and cast: every score about 1e15
    (lambda t: t.__setitem__("net.encoder.0.weight", t["net.encoder.0.weight"].int()),
     r"network tensors \['net.encoder.0.weight'\] are not floating point"),
    (lambda t: t.__setitem__("net.extra", torch.zeros(2)),
     r"network tensors \['net.extra'\] that the network config does not have"),
    (lambda t: t.__setitem__("decision_scores", t["decision_scores"].reshape(-1, 1).clone()),
     "'decision_scores' must be a float vector"),
    (lambda t: t.__setitem__("code_mean", torch.zeros(7)),
     r"'code_mean' must hold 2 finite floats .*shape \[7\]"),
    (lambda t: t.__setitem__("feature_baseline.elbo", torch.zeros(3, dtype=torch.float64)),
     r"'feature_baseline.elbo' must hold 5 finite floats .*shape \[3\]"),
    (_scaled("feature_baseline.iwae", float("nan")),
     r"'feature_baseline.iwae' must hold 5 finite floats"),
    (lambda t: t.__setitem__("feature_baseline.magic", torch.zeros(5, dtype=torch.float64)),
     r"'feature_baseline.magic' is the baseline of an unknown score"),
], ids=["center-length", "scale-2d", "center-int", "center-nan", "scale-inf", "scale-zero",
        "scale-negative", "weight-nan", "weight-int", "extra-net-tensor", "scores-2d", "code-mean",
        "baseline-length", "baseline-nan", "baseline-unknown-score"])
def test_bad_tensor_is_refused(saved, edit, match):
    edit_tensors(saved, edit)
    with pytest.raises(ModelFileError, match=f"inconsistent anovae model: .*{match}"):
        anovae.load(saved)


@pytest.mark.parametrize(("edit", "match", "builds"), [
    (lambda doc: doc["net"].update(hidden_dims=[12000, 12000]),
     r"'net.encoder.0.weight' has shape \[16, 5\], the network config implies \[12000, 5\]",
     ["meta"]),
    (lambda doc: doc["net"].update(latent_dim=2 * 10**12),
     r"'net.encoder.4.weight' has shape \[4, 8\], the network config implies "
     r"\[4000000000000, 8\]", ["meta"]),
    (lambda doc: doc["net"].update(hidden_dims=[4] * 100_000),
     "the network config has 100000 hidden layers, the file only 12 network tensors", []),
], ids=["wide", "huge-latent", "deep"])
def test_huge_network_config_fails_before_allocating_it(saved, monkeypatch, edit, match,
                                                       builds):
    # a tiny file whose config implies gigabytes of weights: the shapes are compared on the meta
    # device (no storage) before any real network is built
    edit_anovae_doc(saved, edit)
    built = []
    real_build = anovae.nets.build_net

    def recording_build(cfg):
        net = real_build(cfg)
        built.append(next(net.parameters()).device.type)
        return net

    monkeypatch.setattr(anovae.nets, "build_net", recording_build)
    with pytest.raises(ModelFileError, match=f"inconsistent anovae model: .*{match}"):
        anovae.load(saved)
    assert built == builds  # only ever on the meta device (the deep one not even there)


# -- image and mixed-table schemas against the network config -----------------------------------
@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> Path:
    images = (np.random.default_rng(0).random((24, 8, 8)) * 255).astype(np.uint8)
    det = ImageAEDetector(epochs=1, channels=(4,), latent_dim=2, random_state=0).fit(images)
    return det.save(tmp_path_factory.mktemp("image") / "img.safetensors")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda doc: doc["schema"].update(height=16), r"\(1, 16, 8\) disagree .*\(1, 8, 8\)"),
    (lambda doc: doc["schema"].update(channels=3), r"\(3, 8, 8\) disagree .*\(1, 8, 8\)"),
    (lambda doc: doc.update(estimator="AEDetector", params={}),  # a table's schema
     "schema is for a 'mlp' network, the network config is 'conv'"),
], ids=["height", "channels", "table-estimator"])
def test_image_schema_that_disagrees_with_the_network(image_model, tmp_path, edit, match):
    assert anovae.load(image_model).schema_.shape == (1, 8, 8)  # the untouched file loads
    path = tmp_path / "img.safetensors"
    path.write_bytes(image_model.read_bytes())
    edit_anovae_doc(path, edit)
    with pytest.raises(ModelFileError, match=f"inconsistent anovae model: .*{match}"):
        anovae.load(path)


def test_image_model_of_gigapixel_images_is_refused_before_building(image_model, tmp_path,
                                                                   monkeypatch):
    # a 23 KB file of one-channel stages declaring 4096x4096 images: every tensor stayed tiny,
    # and the load check's probe score ran the network on a full-size image (6 GB, 45 s)
    import anovae.nets

    path = tmp_path / "img.safetensors"
    path.write_bytes(image_model.read_bytes())
    edit_anovae_doc(path, lambda doc: (doc["net"].update(height=4096, width=4096),
                                       doc["schema"].update(height=4096, width=4096)))
    monkeypatch.setattr(anovae.nets, "build_net", lambda *a: pytest.fail("built"))
    with pytest.raises(ModelFileError, match=r"takes images of 4096x4096 pixels, more than the "
                       r"1,048,576 an image model may have"):
        anovae.load(path)


def test_images_beyond_the_pixel_cap_are_refused_at_fit():
    big = np.zeros((2, 1025, 1024), dtype=np.uint8)
    with pytest.raises(anovae.DataError, match=r"1024x1025 pixels .*at most 1,048,576 pixels"):
        ImageAEDetector(epochs=1).fit(big)


def test_draws_of_large_rows_are_bounded():
    # 10,000 draws (the n_samples cap) of a large row would take terabytes in one score
    with pytest.raises(anovae.DataError, match=r"n_samples=10000 draws of 10,000 decoder outputs "
                       r"are 100,000,000 per row.*at most 6710 for these rows"):
        VAEDetector(epochs=1, n_samples=10_000).fit(np.zeros((3, 10_000)))


def test_image_model_with_feature_baselines_is_refused(image_model, tmp_path):
    path = tmp_path / "img.safetensors"
    path.write_bytes(image_model.read_bytes())
    edit_tensors(path, lambda t: t.__setitem__("feature_baseline.reconstruction",
                                               torch.zeros(64, dtype=torch.float64)))
    with pytest.raises(ModelFileError, match="image models have none"):
        anovae.load(path)


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=80), "c": rng.choice(list("abc"), 80),
                          "b": rng.random(80) > 0.5})
    det = VAEDetector(epochs=1, hidden_dims=(8,), latent_dim=2, random_state=0).fit(frame)
    return det.save(tmp_path_factory.mktemp("mixed") / "mixed.safetensors")


def _set_item(key: str, index: int, value):
    return lambda doc: doc["schema"][key].__setitem__(index, value)


@pytest.mark.parametrize(("edit", "match"), [
    (_set_item("vocabularies", 1, ["a", "b"]),
     r"vocabularies \(sizes \[0, 2, 0\]\) disagree with the network's cardinalities "
     r"\[0, 3, 0\]"),
    (_set_item("vocabularies", 1, ["a", "b", "c", "d"]), r"sizes \[0, 4, 0\]"),
    (_set_item("kinds", 0, "evil"), r"schema's kinds\[0\] 'evil' is not one of"),
    (_set_item("kinds", 1, "numeric"), "column 1 is numeric but has a category vocabulary"),
    (lambda doc: doc["schema"].update(kinds=["boolean", "categorical", "numeric"]),
     r"column kinds \['boolean', 'categorical', 'numeric'\] disagree"),
    (lambda doc: doc["schema"].update(columns=["x", "c"]), "schema has 2 columns, 3 kinds"),
    (lambda doc: doc["net"]["kinds"].__setitem__(0, "evil"), "network has unknown column kinds"),
    (lambda doc: doc["net"].update(cardinalities=[0, 3]), "3 column kinds, 2 cardinalities"),
], ids=["vocab-short", "vocab-long", "kind-unknown", "kind-vs-vocab", "kinds-swapped",
        "columns-short", "net-kind", "net-cardinalities"])
def test_mixed_schema_that_disagrees_with_the_network(mixed_model, tmp_path, edit, match):
    assert anovae.load(mixed_model).schema_.kinds == ("numeric", "categorical", "boolean")
    path = tmp_path / "mixed.safetensors"
    path.write_bytes(mixed_model.read_bytes())
    edit_anovae_doc(path, edit)
    with pytest.raises(ModelFileError, match=f"inconsistent anovae model: .*{match}"):
        anovae.load(path)


def test_image_vae_with_a_non_finite_complexity_slope(tmp_path):
    images = (np.random.default_rng(0).random((24, 8, 8)) * 255).astype(np.uint8)
    det = ImageVAEDetector(epochs=1, channels=(4,), latent_dim=2, random_state=0,
                           latent_density=False).fit(images)
    assert det.complexity_slopes_  # the correction is on by default
    path = det.save(tmp_path / "img.safetensors")
    edit_anovae_doc(path, lambda doc: doc["fitted"]["complexity_slopes"].update(elbo=float("nan")))
    with pytest.raises(ModelFileError, match="slopes are not finite"):
        anovae.load(path)


def test_a_file_whose_parameters_give_another_score_is_refused(make_detector, data, tmp_path):
    # params emptied: it loaded and scored the default ELBO against a threshold set on IWAE
    det = make_detector(VAEDetector, score_type="iwae").fit(data.X_train)
    path = det.save(tmp_path / "m.safetensors")
    edit_anovae_doc(path, lambda doc: doc.update(params={}))
    with pytest.raises(ModelFileError, match="set on the 'iwae' score, but its parameters give "
                                             "the 'elbo' score"):
        anovae.load(path)


def test_a_model_whose_weights_score_nan_is_refused(saved):
    # a finite weight of 3e38 passed every check; its scores were NaN, and predict() said
    # normal for every row
    edit_tensors(saved, lambda t: t["net.encoder.0.weight"].fill_(3e38))
    with pytest.raises(ModelFileError, match="is corrupt: it scores a typical row (nan|inf)"):
        anovae.load(saved)


@pytest.mark.parametrize(("vocab", "match"), [
    ("abc", r"vocabularies\[1\] must be a list of strings"),  # was three categories a, b, c
    (["a", "a", "c"], r"vocabularies\[1\] repeats a category"),  # every score failed
    (["a", 1, "c"], "must be a list of strings"),
])
def test_mixed_vocabularies_must_be_distinct_strings(mixed_model, tmp_path, vocab, match):
    path = tmp_path / "mixed.safetensors"
    path.write_bytes(mixed_model.read_bytes())
    edit_anovae_doc(path, _set_item("vocabularies", 1, vocab))
    with pytest.raises(ModelFileError, match=match):
        anovae.load(path)


def test_an_image_vae_without_its_fitted_terms_is_refused(tmp_path):
    # "fitted": {} loaded, and scored without the latent term and the complexity correction
    # against a threshold set with them (278 vs 613)
    images = (np.random.default_rng(0).random((40, 8, 8)) * 255).astype(np.uint8)
    det = ImageVAEDetector(epochs=1, channels=(4,), latent_dim=2, random_state=0).fit(images)
    path = det.save(tmp_path / "img.safetensors")
    assert anovae.load(path).latent_weights_
    edit_anovae_doc(path, lambda doc: doc.update(fitted={}))
    with pytest.raises(ModelFileError, match="latent_density=True, but the file lacks"):
        anovae.load(path)


def test_files_naming_a_thresholder_load_without_it(saved, data):
    # the load-time check of the parameters built PyThresh's object: a model fitted with one
    # did not load where PyThresh is not installed (a service), nor any own thresholder saved
    # before 0.6 (as "pythresh:NAME")
    original = saved.read_bytes()
    for name in ("pythresh:IQR", "pythresh:MyThresholder", "object:Mine"):
        saved.write_bytes(original)
        edit_anovae_doc(saved, lambda doc, n=name: doc["params"].update(threshold=n))
        det = anovae.load(saved)
        assert det.threshold == name and det.predict(data.X_test).shape == (len(data.X_test),)


def test_files_of_a_number_given_twice_still_load(saved):
    # before 0.6, threshold="fpr=0.2" with threshold_param=0.1 used 0.1; such files load
    edit_anovae_doc(saved, lambda doc: doc["params"].update(threshold="fpr=0.2",
                                                            threshold_param=0.1))
    assert anovae.load(saved).threshold_param == 0.1


def test_older_image_files_can_be_saved_again(tmp_path):
    # a file from before the latent term: loading set latent_density=False (as it was fitted),
    # and save refused "latent_density=False (fitted with True)", so did `anovae threshold`
    images = (np.random.default_rng(0).random((40, 8, 8)) * 255).astype(np.uint8)
    det = ImageVAEDetector(epochs=1, channels=(4,), latent_dim=2, random_state=0,
                           latent_density=False).fit(images)
    path = det.save(tmp_path / "img.safetensors")

    def older(doc):
        doc["params"].pop("latent_density")
        doc["format_version"] = 2

    edit_anovae_doc(path, older)
    back = anovae.load(path)
    assert back.latent_density is False
    np.testing.assert_array_equal(anovae.load(back.save(tmp_path / "again.safetensors"))
                                  .decision_function(images[:4]), det.decision_function(images[:4]))


def test_lists_and_tuples_are_the_same_parameter(make_detector, data, tmp_path):
    det = make_detector(VAEDetector, hidden_dims=(8, 4)).fit(data.X_train)
    back = anovae.load(det.save(tmp_path / "m.safetensors"))
    back.set_params(hidden_dims=[8, 4])  # a file gives back tuples; a list is the same
    back.save(tmp_path / "again.safetensors")


def test_confidence_is_measured_against_the_rows_that_set_the_threshold(make_detector, data,
                                                                        tmp_path):
    # after refit_threshold on other rows, the training rows were still the reference: with
    # a threshold above every training score, every flagged row got confidence 0
    det = make_detector(VAEDetector).fit(data.X_train)
    shifted = data.X_train * 3
    det.refit_threshold(shifted)
    labels, conf = det.predict(shifted, return_confidence=True)
    assert labels.sum() and conf[labels == 1].mean() > 0.8
    back = anovae.load(det.save(tmp_path / "m.safetensors"))  # kept by the file
    np.testing.assert_array_equal(back.predict_confidence(shifted), conf)
    np.testing.assert_array_equal(back.threshold_reference_scores_,
                                  det.decision_function(shifted))


def test_a_loaded_model_keeps_its_weights_when_the_file_is_overwritten_in_place(
        tmp_path: Path) -> None:
    """The tensors are a private copy: memory-mapped ones changed with the file (cp, rsync
    --inplace onto a served model) or faulted (SIGBUS) when it was cut short."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    first = VAEDetector(epochs=2, random_state=0, hidden_dims=(8,), latent_dim=2).fit(X)
    other = VAEDetector(epochs=2, random_state=1, hidden_dims=(8,), latent_dim=2).fit(X * 3 + 1)
    path, spare = tmp_path / "live.safetensors", tmp_path / "other.safetensors"
    first.save(path)
    other.save(spare)
    det = anovae.load(path)
    before = det.decision_function(X)
    with open(path, "r+b") as fh:  # in place: the same inode, as cp does
        fh.write(spare.read_bytes())
        fh.truncate()
    np.testing.assert_array_equal(det.decision_function(X), before)
    os.truncate(path, 0)
    np.testing.assert_array_equal(det.decision_function(X), before)
