"""scikit-learn's feature-name warnings: rows without column names (an array) given to a model
fitted on a DataFrame, and named columns given to a mixed-table model fitted on an array; one
warning per public call, on the caller's line, and none on the library's own paths (files,
streams, the service), which hand the detector rows in the fitted column order."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import get_scorer
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import anovae
from anovae import AEDetector, VAEDetector

DETECTORS = [VAEDetector, AEDetector]
NO_NAMES = "X does not have valid feature names, but {} was fitted with feature names"
HAS_NAMES = "X has column names, but the model was fitted on an array without names"


@contextmanager
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def names_warnings(record: Any) -> list[str]:
    return [str(w.message) for w in record
            if "feature names" in str(w.message) or "column names" in str(w.message)]


@pytest.fixture(scope="module")
def on_frame(data: Any, make_detector: Callable[..., Any]) -> dict[type, Any]:
    """One tiny detector of each class fitted on a DataFrame (tests must not mutate them)."""
    return {cls: make_detector(cls).fit(data.frame(data.X_train)) for cls in DETECTORS}


_CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "decision_function": lambda det, X: det.decision_function(X),
    "score_samples": lambda det, X: det.score_samples(X),
    "predict": lambda det, X: det.predict(X),
    "predict+confidence": lambda det, X: det.predict(X, return_confidence=True),
    "predict_proba": lambda det, X: det.predict_proba(X, return_confidence=True),
    "predict_confidence": lambda det, X: det.predict_confidence(X),
    "feature_scores": lambda det, X: det.feature_scores(X),
    "score_with_feature_scores": lambda det, X: det.score_with_feature_scores(X),
    "explain": lambda det, X: det.explain(X, k=2),
    "transform": lambda det, X: det.transform(X),
    "reconstruct": lambda det, X: det.reconstruct(X),
    "refit_threshold": lambda det, X: copy.deepcopy(det).refit_threshold(X),
}


# -- an array given to a model fitted on a DataFrame ------------------------------------------
@pytest.mark.parametrize("call", list(_CALLS))
@pytest.mark.parametrize("cls", DETECTORS)
def test_every_public_method_warns_once_for_an_array(cls, call, on_frame, data):
    # fitted on a DataFrame, given df.to_numpy(): no word, though nothing checks the columns
    det = on_frame[cls]
    with pytest.warns(UserWarning) as rec:
        _CALLS[call](det, data.X_test[:6])
    got = names_warnings(rec)
    assert len(got) == 1, got  # one per call, also where methods call each other
    assert got[0].startswith(NO_NAMES.format(cls.__name__))
    assert "pass a pandas DataFrame with the fitted columns 'f0', 'f1', 'f2'" in got[0]
    assert {w.filename for w in rec} == {__file__}  # the caller's line
    with no_warnings():  # the same rows as a DataFrame: quiet
        _CALLS[call](det, data.frame(data.X_test[:6]))


def test_unseen_categories_warns_for_an_array(on_frame, data):
    with pytest.warns(UserWarning, match=NO_NAMES.format("VAEDetector")):
        on_frame[VAEDetector].unseen_categories(data.X_test[:3])


def test_a_list_of_rows_warns_too(on_frame, data):
    with pytest.warns(UserWarning, match=NO_NAMES.format("AEDetector")):
        on_frame[AEDetector].decision_function(data.X_test[:3].tolist())


def test_bad_rows_get_their_error_without_a_warning(on_frame, data):
    with no_warnings(), pytest.raises(anovae.DataError, match="1-D"):
        on_frame[AEDetector].predict(data.X_test[:, 0])
    with no_warnings(), pytest.raises(anovae.DataError, match="4 columns"):
        on_frame[AEDetector].predict(data.X_test[:, :4])


def test_reordered_columns_the_motivating_case(on_frame, data):
    # a frame with its columns in another order is matched by name; its to_numpy() is scored
    # as silently wrong numbers, which is what the warning is for
    det = on_frame[VAEDetector]
    df = data.frame(data.X_test[:20])
    shuffled = df[list(reversed(df.columns))]
    with no_warnings():
        right = det.decision_function(df)
        np.testing.assert_array_equal(det.decision_function(shuffled), right)
    with pytest.warns(UserWarning, match=NO_NAMES.format("VAEDetector")):
        wrong = det.decision_function(shuffled.to_numpy())
    assert not np.allclose(wrong, right)
    # missing or unexpected columns stay errors (no warning first)
    with no_warnings(), pytest.raises(anovae.DataError, match="missing columns 'f0'"):
        det.decision_function(df.drop(columns="f0"))
    with no_warnings(), pytest.raises(anovae.DataError, match="unexpected columns 'extra'"):
        det.decision_function(df.assign(extra=1.0))


@pytest.mark.parametrize("cls", DETECTORS)
def test_no_warning_without_names_on_either_side(cls, make_detector, data):
    det = make_detector(cls).fit(data.X_train)
    with no_warnings():
        det.predict(data.X_test[:5])
        det.explain(data.X_test[:5], k=1)
        det.fit(data.frame(data.X_train)).fit(data.X_train)  # a refit on an array: no names
        det.decision_function(data.X_test[:5])


def test_range_index_columns_are_positions(make_detector, data):
    # pd.DataFrame(array) has columns 0..d-1, kept as the names "0".."4": an array's positions
    # are those very columns, so neither direction warns (scikit-learn keeps no names for them)
    det = make_detector(AEDetector).fit(pd.DataFrame(data.X_train))
    assert list(det.feature_names_in_) == ["0", "1", "2", "3", "4"]  # as before
    with no_warnings():
        a = det.decision_function(data.X_test[:5])
        np.testing.assert_array_equal(det.decision_function(pd.DataFrame(data.X_test[:5])), a)
    arr = make_detector(AEDetector).fit(data.X_train)
    with no_warnings():
        arr.decision_function(pd.DataFrame(data.X_test[:5]))
    # other integer names (a selection of columns) are names: an array may be in another order
    cols = make_detector(AEDetector).fit(pd.DataFrame(data.X_train, columns=[3, 1, 4, 0, 2]))
    with pytest.warns(UserWarning, match=NO_NAMES.format("AEDetector")):
        cols.decision_function(data.X_test[:5])


# -- mixed tables --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"amount": rng.normal(50, 5, 120),
                         "city": rng.choice(["paris", "lyon", "nice"], 120)})


def test_a_mixed_model_fitted_on_a_frame_warns_for_an_array(make_detector, mixed_table):
    # arrays are read by position (object arrays of numbers and text)
    det = make_detector(VAEDetector).fit(mixed_table)
    with pytest.warns(UserWarning) as rec:
        det.explain(mixed_table.to_numpy()[:4], k=1)
    got = names_warnings(rec)
    assert len(got) == 1 and got[0].startswith(NO_NAMES.format("VAEDetector")), got
    assert "'amount', 'city'" in got[0]
    with no_warnings():
        det.explain(mixed_table[["city", "amount"]][:4], k=1)


def test_a_mixed_model_fitted_on_an_array_warns_for_named_columns(make_detector, mixed_table):
    # as a numeric model does (anovae.tabular): its columns are taken by position
    det = make_detector(VAEDetector, categorical=["x1"]).fit(mixed_table.to_numpy())
    assert not hasattr(det, "feature_names_in_")
    with pytest.warns(UserWarning) as rec:
        by_frame = det.decision_function(mixed_table[:5])
    got = names_warnings(rec)
    assert len(got) == 1 and got[0].startswith(HAS_NAMES), got
    assert "taken by position" in got[0]
    with no_warnings():  # arrays, its own frames (x0, x1: sample, reconstruct), a RangeIndex
        np.testing.assert_array_equal(det.decision_function(mixed_table.to_numpy()[:5]),
                                      by_frame)
        det.decision_function(det.sample(4, random_state=0))
        det.decision_function(det.reconstruct(mixed_table.to_numpy()[:3]))
        det.decision_function(pd.DataFrame(mixed_table.to_numpy()[:3]))


# -- scikit-learn tools and persistence --------------------------------------------------------
def test_clone_cross_val_score_and_pipelines(on_frame, make_detector, data):
    det = on_frame[AEDetector]
    twin = clone(det)
    assert not hasattr(twin, "feature_names_in_")
    X = np.vstack([data.X_train[:120], data.X_test])
    y = np.r_[np.zeros(120, dtype=int), data.y_test]
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    with no_warnings():
        twin.fit(data.X_train).decision_function(data.X_test[:3])
        scores = cross_val_score(make_detector(AEDetector), data.frame(X), y, cv=cv,
                                 scoring="roc_auc", error_score="raise")
        # a transformer before the detector hands it arrays: it is fitted without names
        pipe = make_pipeline(StandardScaler(), make_detector(AEDetector))
        pipe.fit(data.frame(data.X_train))
        assert not hasattr(pipe[-1], "feature_names_in_")
        pipe.decision_function(data.frame(data.X_test[:5]))
        # ... unless it outputs DataFrames: then the detector knows the names
        pipe = make_pipeline(StandardScaler().set_output(transform="pandas"),
                             make_detector(AEDetector)).fit(data.frame(data.X_train))
        assert list(pipe[-1].feature_names_in_) == list(data.columns)
        pipe.decision_function(data.frame(data.X_test[:5]))
    assert scores.shape == (2,)
    # a tool's call (here a scikit-learn scorer's) gets the warning as the user's does
    with pytest.warns(UserWarning, match=NO_NAMES.format("AEDetector")):
        get_scorer("roc_auc")(det, X, y)


@pytest.mark.parametrize("cls", DETECTORS)
def test_a_loaded_model_warns_the_same(cls, on_frame, make_detector, data, tmp_path):
    back = anovae.load(on_frame[cls].save(tmp_path / "m.safetensors"))
    with pytest.warns(UserWarning, match=NO_NAMES.format(cls.__name__)):
        back.predict(data.X_test[:4])
    with no_warnings():
        back.predict(data.frame(data.X_test[:4]))
        plain = anovae.load(make_detector(cls).fit(data.X_train).save(tmp_path / "a"))
        plain.predict(data.X_test[:4])


# -- the library's own paths stay quiet --------------------------------------------------------
def test_score_file_is_quiet(on_frame, make_detector, mixed_table, data, tmp_path: Path):
    from anovae.scoring import score_file

    table = tmp_path / "t.csv"
    data.frame(data.X_test[:40]).to_csv(table, index=False)
    mixed = make_detector(VAEDetector).fit(mixed_table)
    mixed_csv = tmp_path / "m.csv"
    mixed_table[:40].to_csv(mixed_csv, index=False)
    with no_warnings():
        for det in on_frame.values():
            score_file(det, table, tmp_path / "s.csv", chunk_rows=16, explain=True)
        score_file(mixed, mixed_csv, tmp_path / "s.csv", chunk_rows=16, explain=True)
    assert len(pd.read_csv(tmp_path / "s.csv")) == 40


def test_streams_and_the_service_are_quiet(on_frame, make_detector, mixed_table, data):
    import io

    from anovae.streaming import RecordScorer, score_stream

    cols = list(data.columns)
    records = [dict(zip(cols, map(float, row), strict=True)) for row in data.X_test[:5]]
    mixed = make_detector(VAEDetector).fit(mixed_table)
    lines = "".join(pd.Series(r).to_json() + "\n" for r in records)
    with no_warnings():
        for det in on_frame.values():
            scorer = RecordScorer(det)
            scorer.score(scorer.rows_from_records(records), explain=True)
            scorer.score(scorer.rows_from_instances(data.X_test[:5].tolist()), explain=True)
            score_stream(det, io.StringIO(lines), io.StringIO())
        scorer = RecordScorer(mixed)
        scorer.score(scorer.rows_from_records(mixed_table[:5].to_dict("records")),
                     explain=True)
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from anovae.service import create_app

    with no_warnings(), TestClient(create_app(on_frame[VAEDetector])) as client:  # warm-up too
        r = client.post("/v1/score", json={"records": records, "explain": True})
        assert r.status_code == 200, r.text
        r = client.post("/v1/score", json={"instances": data.X_test[:3].tolist()})
        assert r.status_code == 200, r.text


def test_a_report_on_an_array_warns_as_the_detector_does(on_frame, data, tmp_path):
    from anovae.report import build_report

    det = on_frame[VAEDetector]
    with pytest.warns(UserWarning, match="X does not have valid feature names") as rec:
        build_report(det, np.asarray(data.X_test), out_path=tmp_path / "r.html")
    assert len(names_warnings(rec)) == 1
    with no_warnings():
        build_report(det, data.frame(data.X_test), out_path=tmp_path / "r.html")
