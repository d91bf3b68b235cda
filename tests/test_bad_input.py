"""Bad input gives ``anovae.DataError`` (a ``ValueError``) naming the problem, never a torch or
numpy error from deep inside."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse

from anovae import AEDetector, DataError, VAEDetector

SCORING_METHODS = ["decision_function", "predict", "predict_proba", "feature_scores",
                   "score_samples", "transform", "reconstruct"]


def raises_data_error(call, *fragments: str) -> DataError:
    """Run ``call``; it must raise DataError whose message contains every fragment."""
    with pytest.raises(DataError) as info:
        call()
    err = info.value
    assert isinstance(err, ValueError)
    message = str(err)
    for fragment in fragments:
        assert re.search(fragment, message), f"{fragment!r} not in {message!r}"
    return err


@pytest.fixture
def fresh(make_detector):
    return make_detector(VAEDetector, epochs=1)


# -- at fit -------------------------------------------------------------------------------------
# (VAEDetector models text, categorical columns and missing values of DataFrames: see
# tests/test_mixed.py; AEDetector takes complete numeric tables only.)
def test_non_numeric_columns(make_detector):
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "city": ["x", "y", "z"],
                       "kind": pd.Categorical(["u", "v", "u"]), "ok": [True, False, True]})
    ae = make_detector(AEDetector, epochs=1)
    raises_data_error(lambda: ae.fit(df), "non-numeric", "'city'", "'kind'",
                      "numeric and boolean columns only")
    assert "'ok'" not in str(pytest.raises(DataError, ae.fit, df).value)  # bools are fine


def test_non_numeric_array(fresh):
    X = np.array([["a", "b"], ["c", "d"], ["e", "f"]])
    raises_data_error(lambda: fresh.fit(X), "non-numeric", "DataFrame")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_name_the_column(bad, fresh, data, make_detector):
    df = data.frame(data.X_train[:20].copy())
    df.loc[3, "f2"] = bad
    raises_data_error(lambda: make_detector(AEDetector, epochs=1).fit(df), "'f2'", "NaN",
                      "1 rows")
    if not np.isnan(bad):
        raises_data_error(lambda: fresh.fit(df), "'f2'", "infinite", "1 rows")
    X = data.X_train[:20].copy()
    X[5, 4] = bad
    # an array's columns are named as numeric= names them (the message said "column 4")
    raises_data_error(lambda: fresh.fit(X), "'x4'", "NaN",
                      *([r"numeric=\['x4'\]"] if np.isnan(bad) else []))


def test_pandas_missing_values(make_detector):
    df = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [1.0, 2.0, 3.0]})
    raises_data_error(lambda: make_detector(AEDetector, epochs=1).fit(df), "NaN", "'a'")


@pytest.mark.parametrize("X", [np.empty((0, 3)), pd.DataFrame(), pd.DataFrame({"a": []}),
                               np.empty((0, 0))], ids=["array", "frame", "frame-rows", "0x0"])
def test_empty_input(X, fresh):
    raises_data_error(lambda: fresh.fit(X), "no rows")


def test_no_columns(fresh):
    raises_data_error(lambda: fresh.fit(np.empty((4, 0))), "no columns")


@pytest.mark.parametrize("cls", [VAEDetector, AEDetector])
def test_one_row_in_fit(cls, make_detector, data):
    det = make_detector(cls, epochs=1)
    raises_data_error(lambda: det.fit(data.X_train[:1]), "1 row", "at least 2")
    raises_data_error(lambda: det.fit(data.frame(data.X_train[:1])), "1 row", "at least 2")


def test_one_dimensional_array(fresh):
    raises_data_error(lambda: fresh.fit(np.arange(10.0)), "1-D", r"reshape\(-1, 1\)")


def test_three_dimensional_array(fresh):
    raises_data_error(lambda: fresh.fit(np.zeros((4, 3, 2))), "2-D", r"\(4, 3, 2\)")


def test_ragged_lists(fresh):
    raises_data_error(lambda: fresh.fit([[1.0, 2.0], [3.0]]), "2-D numeric table")


def test_sparse_matrix(fresh):
    X = scipy.sparse.csr_matrix(np.eye(4))
    raises_data_error(lambda: fresh.fit(X), "sparse", r"toarray\(\)")


def test_complex_values(fresh):
    raises_data_error(lambda: fresh.fit(np.ones((4, 2)) * (1 + 2j)), "complex")


@pytest.mark.parametrize("kinds", [{}, {"categorical": ["c"]}], ids=["numeric", "mixed"])
def test_complex_and_date_columns_of_a_frame_name_the_column(make_detector, data, kinds):
    df = data.frame(data.X_train[:40].copy())
    if kinds:
        df["c"] = np.where(np.arange(40) % 2, "u", "v")
    det = make_detector(VAEDetector, epochs=1, **kinds)
    raises_data_error(lambda: det.fit(df.assign(f1=df["f1"] + 1j)), "column 'f1'", "complex")
    det.fit(df)
    rows = df.head(2)
    for value, what in ((1j, "complex"), (pd.Timestamp("2020-01-01"), "dates or times"),
                        (pd.Timedelta("1s"), "dates or times"),
                        (pd.Period("2020-01", "M"), "dates or times")):
        raises_data_error(lambda v=value: det.decision_function(rows.assign(f2=v)),
                          "column 'f2'", what)


def test_a_row_as_a_series_is_refused_and_a_column_still_is_a_table(fitted_vae_frame, data,
                                                                   make_detector):
    row = data.frame(data.X_test[:3]).iloc[0]
    raises_data_error(lambda: fitted_vae_frame.decision_function(row), "one row",
                      r"df.iloc\[\[i\]\]")
    column = pd.Series(data.X_train[:50, 0], name="f0")  # fitting on a Series: one column
    assert make_detector(VAEDetector, epochs=1).fit(column).n_features_in_ == 1


def test_gaps_at_scoring_say_how_to_get_a_model_of_gaps(fitted_vae_frame, data):
    df = data.frame(data.X_test[:5].copy())
    df.loc[2, "f3"] = np.nan
    raises_data_error(lambda: fitted_vae_frame.decision_function(df), "'f3'",
                      r"numeric=\['f3'\]", "--numeric f3")


def test_duplicate_column_names(fresh):
    df = pd.DataFrame(np.zeros((3, 3)), columns=["a", "b", "a"])
    raises_data_error(lambda: fresh.fit(df), "duplicate", "'a'")


# -- y --------------------------------------------------------------------------------------------
def test_y_with_wrong_length(fresh, data):
    raises_data_error(lambda: fresh.fit(data.X_train[:20], np.zeros(19)), "19 labels", "20 rows")


@pytest.mark.parametrize("y_bad", [2, 0.5, -1, np.nan, "a"])
def test_y_with_non_binary_values(y_bad, fresh, data):
    y = np.zeros(20, dtype=object)
    y[4] = y_bad
    raises_data_error(lambda: fresh.fit(data.X_train[:20], y), "0 .normal.", "1 .anomaly.")


def test_y_with_too_few_normal_rows(fresh, data):
    y = np.ones(20, dtype=int)
    y[0] = 0
    raises_data_error(lambda: fresh.fit(data.X_train[:20], y), "fewer than 2", "y == 0")


def test_y_selects_the_training_rows(make_detector, data):
    X = np.vstack([data.X_train[:60], data.X_test[:12]])  # the test set's first 12 are anomalies
    y = np.r_[np.zeros(60, dtype=int), np.ones(12, dtype=int)]
    with_y = make_detector(AEDetector).fit(X, y)
    clean = make_detector(AEDetector).fit(X[:60])
    np.testing.assert_array_equal(with_y.decision_function(data.X_test),
                                  clean.decision_function(data.X_test))
    assert with_y.decision_scores_.shape == (72,)  # every row is scored


# -- at scoring -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", SCORING_METHODS)
def test_wrong_number_of_columns(method, fitted_vae, data):
    call = getattr(fitted_vae, method)
    raises_data_error(lambda: call(data.X_test[:, :4]), "4 columns", "fitted on 5")
    raises_data_error(lambda: call(np.hstack([data.X_test, data.X_test[:, :1]])), "6 columns")


@pytest.mark.parametrize("method", SCORING_METHODS)
def test_bad_values_at_scoring(method, fitted_vae_frame, data):
    call = getattr(fitted_vae_frame, method)
    df = data.frame(data.X_test[:5].copy())
    df.loc[2, "f1"] = np.nan
    raises_data_error(lambda: call(df), "'f1'", "NaN")
    raises_data_error(lambda: call(df.iloc[:0]), "no rows")
    raises_data_error(lambda: call(df["f0"].to_numpy()), "1-D")


def test_missing_and_extra_columns_are_named(fitted_vae_frame, data):
    df = data.frame(data.X_test[:5])
    raises_data_error(lambda: fitted_vae_frame.decision_function(df.drop(columns=["f3"])),
                      "missing columns 'f3'")
    raises_data_error(lambda: fitted_vae_frame.predict(df.assign(extra=1.0)),
                      "unexpected columns 'extra'")
    renamed = df.rename(columns={"f0": "zz"})
    raises_data_error(lambda: fitted_vae_frame.feature_scores(renamed), "missing columns 'f0'",
                      "unexpected columns 'zz'")


def test_reordered_columns_give_the_same_scores(fitted_vae_frame, data):
    df = data.frame(data.X_test)
    shuffled = df[list(reversed(df.columns))]
    np.testing.assert_array_equal(fitted_vae_frame.decision_function(shuffled),
                                  fitted_vae_frame.decision_function(df))
    np.testing.assert_array_equal(fitted_vae_frame.feature_scores(shuffled),
                                  fitted_vae_frame.feature_scores(df))
    # and the array in the fitted column order scores the same too, with scikit-learn's
    # warning (an array's columns are taken by position, unchecked)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        by_position = fitted_vae_frame.decision_function(data.X_test)
    np.testing.assert_array_equal(by_position, fitted_vae_frame.decision_function(df))


def test_non_numeric_column_at_scoring(fitted_vae_frame, data):
    df = data.frame(data.X_test[:4]).astype({"f2": object})
    df["f2"] = ["a", "b", "c", "d"]
    # it said "encode or exclude them (--exclude COLUMN)": score has no --exclude, and the
    # model needs the column; now it names the value and its row
    raises_data_error(lambda: fitted_vae_frame.decision_function(df), "numeric column 'f2'",
                      "'a' in row 0", "fix the data")
    with pytest.raises(DataError, match="'b' in row 1"):
        fitted_vae_frame.decision_function(df.assign(f2=[0.5, "b", 1.0, 2.0]))
    with pytest.raises(DataError, match="'0.5' in row 0: numbers written as text"):
        fitted_vae_frame.decision_function(df.assign(f2=["0.5", "1", "2", "3"]))


def test_errors_are_not_from_torch(fitted_vae, data):
    for bad in (np.zeros((3, 2)), np.arange(5.0), np.zeros((2, 5, 1)), [[1.0], [2.0, 3.0]]):
        with pytest.raises(DataError) as info:
            fitted_vae.decision_function(bad)
        assert not type(info.value.__cause__).__module__.startswith("torch")


def test_a_row_number_left_among_numeric_features_gets_a_warning() -> None:
    import warnings as _warnings

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"id": np.arange(100), "a": rng.normal(size=100),
                      "n": rng.integers(0, 5, 100)})
    with pytest.warns(UserWarning, match="column 'id' counts up by one row by row"):
        det = VAEDetector(epochs=1, random_state=0).fit(X)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")  # scoring, and a table without ids: no warning
        det.decision_function(X)
        VAEDetector(epochs=1, random_state=0).fit(X.drop(columns="id"))


def test_a_shuffled_integer_id_gets_a_warning_and_wide_distinct_counts_do_not() -> None:
    # a shuffled customer id (all distinct, densely numbered) was modelled as a number with no
    # warning, and every new customer was flagged
    import warnings as _warnings

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"customer_id": rng.permutation(n) + 100_000,
                          "amount": rng.lognormal(3, 0.3, n),
                          "country": rng.choice(["FR", "DE"], n)})
    for X in (frame, frame.drop(columns="country")):  # a mixed table and a numeric one
        with pytest.warns(UserWarning, match="column 'customer_id' holds a distinct integer in "
                                             "every row, densely numbered: it looks like an id"):
            VAEDetector(epochs=1, random_state=0).fit(X)
    # distinct integers over a wide range (byte counts): no id
    counts = frame.assign(customer_id=rng.choice(10**9, n, replace=False))
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        VAEDetector(epochs=1, random_state=0).fit(counts.drop(columns="country"))


@pytest.mark.parametrize("device", ["mps", "meta"])
def test_devices_other_than_cpu_and_cuda_are_refused_before_torch_is_asked(device, fresh):
    # 'mps' failed inside torch's Module.to ("PyTorch is not linked with support for mps").
    with pytest.raises(ValueError, match=f"device='{device}' is not supported"):
        VAEDetector(device=device).fit(np.zeros((10, 2)))


@pytest.mark.parametrize("n", [2.5, "3", 0, True])
def test_sample_checks_its_count(n, fitted_vae):
    with pytest.raises(ValueError, match="n must be"):
        fitted_vae.sample(n)


def test_sample_takes_a_seed_or_a_generator(fitted_vae):
    a = fitted_vae.sample(3, random_state=np.random.default_rng(1))
    np.testing.assert_array_equal(a, fitted_vae.sample(3, random_state=1))
    with pytest.raises(ValueError, match="random_state must be"):
        fitted_vae.sample(3, random_state=-1)


def test_save_and_load_name_a_file_object(fitted_vae):
    import io

    import anovae

    with pytest.raises(TypeError, match="must be a file path .* got BytesIO"):
        fitted_vae.save(io.BytesIO())
    with pytest.raises(TypeError, match="must be a file path .* got BytesIO"):
        anovae.load(io.BytesIO())


def test_masked_cells_are_missing_not_silently_unmasked(fitted_vae, data):
    m = np.ma.masked_array(data.X_test[:3], mask=np.zeros((3, data.X_test.shape[1]), bool))
    np.testing.assert_array_equal(fitted_vae.decision_function(m),
                                  fitted_vae.decision_function(data.X_test[:3]))
    m.mask[0, 1] = True  # the mask was dropped: the value under it was scored
    raises_data_error(lambda: fitted_vae.decision_function(m), "NaN", "'x1'")


def test_a_series_of_one_row_says_how_to_pass_it(fitted_vae, data):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no names warning for the Series' position name 0
        with pytest.raises(DataError, match=r"a pandas Series is one column.*to_frame\(\).T"):
            fitted_vae.decision_function(pd.Series(data.X_test[0]))
