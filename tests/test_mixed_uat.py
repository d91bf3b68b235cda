"""Mixed tables, user-acceptance findings of anovae 0.6.0: dates written as text, columns where
new values will be common, empty strings, unknown values in boolean columns, the wording and
the form of booleans in explanations."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from anovae import DataError, VAEDetector, load
from anovae.cli import app
from anovae.mixed import MixedSchema, infer_schema
from anovae.scoring import score_file
from anovae.streaming import RecordScorer, score_stream
from test_mixed import make_frame

TINY = {"epochs": 3, "hidden_dims": (16,), "latent_dim": 2, "batch_size": 64, "n_samples": 4,
        "device": "cpu", "random_state": 0}


@pytest.fixture(scope="module")
def det() -> VAEDetector:
    return VAEDetector(**TINY).fit(make_frame(400, 0))


def _caught(fn, *args, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [str(w.message) for w in caught]


# -- 1. dates written as text ----------------------------------------------------------------
DAYS = pd.date_range("2024-01-01", periods=60, freq="D")
DATES_AS_TEXT = {
    "date": [d.strftime("%Y-%m-%d") for d in DAYS],
    "timestamp": [(d + pd.Timedelta(seconds=37 * i)).strftime("%Y-%m-%d %H:%M:%S")
                  for i, d in enumerate(DAYS)],
    "iso T and zone": [d.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if i % 2 else "+02:00")
                       for i, d in enumerate(DAYS)],
    "iso with fractions": [d.strftime("%Y-%m-%dT%H:%M:%S.%f") for d in DAYS],
    "day first": [d.strftime("%d/%m/%Y") for d in DAYS],
    "month name": [d.strftime("%b %d, %Y") for d in DAYS],
    "time of day": [f"{i % 24:02d}:{i % 60:02d}:{(7 * i) % 60:02d}" for i in range(60)],
}


@pytest.mark.parametrize("values", list(DATES_AS_TEXT.values()), ids=list(DATES_AS_TEXT))
def test_dates_written_as_text_are_refused_as_datetime_columns_are(values) -> None:
    rng = np.random.default_rng(0)
    values = list(values)
    values[5] = None  # gaps are fine
    df = pd.DataFrame({"amount": rng.normal(size=60), "when": values})
    with pytest.raises(DataError, match=r"column 'when' holds dates or times written as text"
                                        r".*--exclude when.*day of the week.*"
                                        r"categorical=\['when'\]"):
        infer_schema(df)
    with pytest.raises(DataError, match="'when' holds dates or times"):
        VAEDetector(**TINY).fit(df)
    # declared a category (the dates are labels): taken as one, no error
    schema = infer_schema(df, categorical=["when"])
    assert schema.kinds == ("numeric", "categorical")


def test_dates_need_essentially_all_values_in_one_format() -> None:
    dates = DATES_AS_TEXT["date"]
    stray = dates[:-1] + ["unknown"]  # one stray word in 60 (1.7 %) is still a column of text
    assert infer_schema(pd.DataFrame({"d": stray * 2})).kinds == ("categorical",)
    stray = dates * 3 + ["unknown"]  # one in 181: dates
    with pytest.raises(DataError, match="dates or times"):
        infer_schema(pd.DataFrame({"d": stray}))
    mixed = DATES_AS_TEXT["date"][:30] + DATES_AS_TEXT["day first"][:30]  # two formats
    assert infer_schema(pd.DataFrame({"d": mixed})).kinds == ("categorical",)


@pytest.mark.parametrize("values", [
    ["001", "002", "010", "123"],  # codes
    ["A1", "B2", "C3", "D4"],
    ["1", "2.5", "-3", "40"],  # numbers as text
    ["2024", "2023", "1999", "2001"],  # years alone
    ["20240105", "20231231", "20240201", "20240202"],  # a date as a number: a code
    ["DE", "FR", "US", "JP"],  # country codes
    ["May", "June", "Jan", "Dec"],  # short tokens
    ["08:00", "16:00", "00:00", "12:30"],  # opening hours, shifts: labels
    ["10-20", "20-30", "1/2", "3/4"],  # ranges, fractions
    ["192.168.0.1", "10.0.0.2", "1.2.3", "2.0.1"],  # addresses, versions
    ["555-1234", "12345-6789", "AB-12-34", "3:1"],  # phone, zip+4, product codes, scores
    ["12-31", "01-05", "06-15", "11-11"],  # month-day, no year
], ids=["codes", "A1", "numbers", "years", "compact", "countries", "months", "hh:mm", "ranges",
        "versions", "misc", "month-day"])
def test_text_that_is_no_date_stays_categorical(values) -> None:
    df = pd.DataFrame({"c": values * 10})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numbers written as text: their own warning
        assert infer_schema(df).kinds == ("categorical",)


def test_plain_integers_and_years_are_not_dates() -> None:
    df = pd.DataFrame({"year": np.arange(1990, 2030) % 2000 + 2000, "n": np.arange(40) % 7})
    assert infer_schema(df).kinds == ("numeric", "numeric")


def test_the_cli_refuses_a_csv_date_column_and_takes_it_excluded_or_declared(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 120
    df = make_frame(n, 0).assign(day=[d.strftime("%Y-%m-%d") for d in
                                      pd.date_range("2024-01-01", periods=n, freq="D")])
    df["amount"] += rng.normal(size=n) * 0
    df.to_csv(tmp_path / "t.csv", index=False)
    runner = CliRunner()
    base = ["fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m"), "--epochs", "2",
            "--hidden-dims", "8", "--seed", "0"]
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "'day' holds dates or times" in res.output, res.output
    assert "Traceback" not in res.output
    assert runner.invoke(app, [*base, "--exclude", "day"]).exit_code == 0
    res = runner.invoke(app, [*base, "--categorical", "day"])
    assert res.exit_code == 0, res.output


# -- 2. columns where new values will be common ----------------------------------------------
def test_a_column_of_mostly_rare_values_warns_with_the_good_turing_estimate() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    merchant = np.array([f"m{i:04d}" for i in rng.integers(0, 5000, n)])
    df = pd.DataFrame({"amount": rng.normal(size=n), "merchant": merchant,
                       "city": rng.choice(["north", "south"], n)})
    counts = pd.Series(merchant).value_counts()
    assert 2000 < len(counts) < n  # not all distinct: no id warning
    share = (counts == 1).sum() / n
    text = _caught(infer_schema, df)
    gt = [t for t in text if "not seen in training" in t]
    assert len(gt) == 1 and not [t for t in text if "looks like an id" in t]
    assert f"about {share:.0%} of new rows will hold a value not seen in training" in gt[0]
    assert "'merchant'" in gt[0] and "maximally surprising" in gt[0]
    assert "--exclude merchant" in gt[0] and "group its values" in gt[0]
    assert "more rows" in gt[0]
    # declared categorical too: the consequence at scoring is the same
    assert [t for t in _caught(infer_schema, df, categorical=["merchant"])
            if "not seen in training" in t]
    # and through fit (the detector's own path)
    with pytest.warns(UserWarning, match="'merchant' has many values seen only once"):
        VAEDetector(**{**TINY, "epochs": 1}).fit(df.head(1000))


def test_an_id_column_warns_once_as_an_id() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=200), "customer": [f"c{i}" for i in range(200)]})
    text = _caught(infer_schema, df)
    assert len([t for t in text if "'customer'" in t]) == 1
    assert "looks like an id" in next(t for t in text if "'customer'" in t)


#: The services of NSL-KDD's KDDTrain+ file with their counts (70 values, a few rare).
NSL_KDD_SERVICES = {
    "http": 40338, "private": 21853, "domain_u": 9043, "smtp": 7313, "ftp_data": 6860,
    "eco_i": 4586, "other": 4359, "ecr_i": 3077, "telnet": 2353, "finger": 1767, "ftp": 1754,
    "auth": 955, "Z39_50": 862, "uucp": 780, "courier": 734, "bgp": 710, "whois": 693,
    "uucp_path": 689, "iso_tsap": 687, "time": 654, "imap4": 647, "nnsp": 630, "vmnet": 617,
    "urp_i": 602, "domain": 569, "ctf": 563, "csnet_ns": 545, "supdup": 544, "discard": 538,
    "http_443": 530, "daytime": 521, "gopher": 518, "efs": 485, "systat": 477, "link": 475,
    "exec": 474, "hostnames": 460, "name": 451, "mtp": 439, "echo": 434, "klogin": 433,
    "login": 429, "ldap": 410, "netbios_dgm": 405, "sunrpc": 381, "netbios_ssn": 362,
    "netstat": 360, "netbios_ns": 347, "ssh": 311, "kshell": 299, "nntp": 296, "pop_3": 264,
    "sql_net": 245, "IRC": 187, "ntp_u": 168, "rje": 86, "remote_job": 78, "pop_2": 78,
    "X11": 73, "printer": 69, "shell": 65, "urh_i": 10, "tim_i": 8, "red_i": 8, "pm_dump": 5,
    "tftp_u": 3, "http_8001": 2, "aol": 2, "harvest": 2, "http_2784": 1,
}


@pytest.mark.parametrize("rows", [None, 25_000, 5_000])
def test_nsl_kdd_like_categories_do_not_warn(rows) -> None:
    rng = np.random.default_rng(0)
    service = np.repeat(list(NSL_KDD_SERVICES), list(NSL_KDD_SERVICES.values()))
    assert len(NSL_KDD_SERVICES) == 70
    if rows is not None:  # a split of the file, as the benchmark's
        service = rng.choice(service, rows, replace=False)
    n = len(service)
    df = pd.DataFrame({"service": service, "protocol_type": rng.choice(["tcp", "udp", "icmp"], n),
                       "flag": rng.choice(["SF", "S0", "REJ", "RSTR", "SH", "RSTO", "S1", "RSTOS0",
                                           "S3", "S2", "OTH"], n,
                                          p=[.59, .27, .09, .02, .01, .008, .003, .003, .002,
                                             .001, .003]),
                       "src_bytes": rng.lognormal(5, 2, n).round()})
    assert not [t for t in _caught(infer_schema, df) if "not seen in training" in t]


def test_few_categories_and_small_tables_do_not_warn() -> None:
    rng = np.random.default_rng(0)
    assert not _caught(infer_schema, make_frame(300, 0))
    # fewer observed cells than the estimate needs (19, all distinct but one): no warning
    small = pd.DataFrame({"c": [f"v{i}" for i in range(18)] + ["v0"], "x": rng.normal(size=19)})
    assert not [t for t in _caught(infer_schema, small) if "not seen in training" in t]
    # two singletons among 40 countries: 5 %, but too few values seen once to mean a long tail
    countries = pd.DataFrame({"c": ["US"] * 30 + ["FR"] * 8 + ["DE", "IT"],
                              "x": rng.normal(size=40)})
    assert not [t for t in _caught(infer_schema, countries) if "not seen in training" in t]


# -- 3. empty and whitespace-only strings: missing -------------------------------------------
def _with(rows: pd.DataFrame, column: str, values: list) -> pd.DataFrame:
    out = rows.copy()
    out[column] = pd.Series(values, index=out.index, dtype=object)
    return out


def test_empty_strings_are_missing_in_frames(det: VAEDetector) -> None:
    rows = make_frame(4, 1).astype({"city": object, "zone": object})
    zone = list(rows["zone"])
    gap = det.decision_function(_with(rows, "zone", [None, *zone[1:]]))
    for blank in ("", "  ", "\t"):
        blanked = _with(rows, "zone", [blank, *zone[1:]])
        np.testing.assert_array_equal(det.decision_function(blanked), gap)
        assert not det.unseen_categories(blanked).to_numpy().any()
        ex = det.explain(blanked.iloc[[0]], k=5)
        assert ex.loc[ex["feature"] == "zone", "missing"].item()
    # a pandas category "" (a categorical column) and pandas' string dtype read alike
    cat = rows.assign(zone=pd.Categorical(["", *zone[1:]]))
    np.testing.assert_array_equal(det.decision_function(cat), gap)
    text = rows.assign(zone=pd.array(["", *zone[1:]], dtype="string"))
    np.testing.assert_array_equal(det.decision_function(text), gap)
    # in a boolean and a numeric column too (a frame read as text)
    vip = list(rows["vip"])
    np.testing.assert_array_equal(det.decision_function(_with(rows, "vip", [" ", *vip[1:]])),
                                  det.decision_function(_with(rows, "vip", [None, *vip[1:]])))
    amount = [str(v) for v in rows["amount"]]
    np.testing.assert_array_equal(
        det.decision_function(_with(rows, "amount", ["", *amount[1:]])),
        det.decision_function(_with(rows, "amount", [None, *amount[1:]])))


def test_empty_strings_are_missing_at_fit() -> None:
    df = make_frame(300, 0).astype({"zone": object})
    df.loc[::10, "zone"] = ""
    df.loc[5::10, "zone"] = " "
    gaps = df.assign(zone=df["zone"].where(df["zone"].str.strip() != ""))
    schema, want = infer_schema(df), infer_schema(gaps)
    assert schema == want and "" not in schema.vocabularies[2] and " " not in schema.vocabularies[2]
    assert schema.n_observed[2] == 240
    a = VAEDetector(**TINY).fit(df)
    b = VAEDetector(**TINY).fit(gaps)
    np.testing.assert_array_equal(a.decision_function(df), b.decision_function(gaps))


def test_empty_strings_score_alike_in_frames_csv_records_and_streams(
        det: VAEDetector, tmp_path: Path) -> None:
    rows = make_frame(6, 2).astype({"city": object, "zone": object})
    rows.loc[[0, 3], "zone"] = ["", "   "]
    rows.loc[1, "city"] = ""
    frame = det.decision_function(rows)
    gaps = rows.replace({"": None, "   ": None})
    np.testing.assert_array_equal(frame, det.decision_function(gaps))
    # CSV: "" is read as missing by the reader, "   " by the model
    rows.to_csv(tmp_path / "in.csv", index=False)
    score_file(det, tmp_path / "in.csv", tmp_path / "out.csv")
    csv = pd.read_csv(tmp_path / "out.csv")
    np.testing.assert_allclose(csv["anomaly_score"], frame, rtol=1e-6)
    assert csv["unseen_category"].isna().all()
    # service records and streamed lines
    records = json.loads(rows.to_json(orient="records"))
    scored = RecordScorer(det).score_records(records)
    np.testing.assert_allclose([r["anomaly_score"] for r in scored], frame, rtol=1e-6)
    assert all(r["unseen_category"] == [] for r in scored)
    out = io.StringIO()
    score_stream(det, io.StringIO("\n".join(json.dumps(r) for r in records)), out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    np.testing.assert_allclose([r["anomaly_score"] for r in lines], frame, rtol=1e-6)


# -- 4. an unknown value in a boolean column: unseen, not an error ---------------------------
def test_an_unknown_value_in_a_boolean_column_is_an_unseen_value(det: VAEDetector,
                                                                 tmp_path: Path) -> None:
    rows = make_frame(5, 1)
    vip = list(rows["vip"])
    maybe = _with(rows, "vip", [vip[0], "maybe", *vip[2:]])
    two = _with(rows, "vip", [vip[0], 2, *vip[2:]])
    assert det.unseen_categories(maybe)["vip"].tolist() == [False, True, False, False, False]
    np.testing.assert_array_equal(det.feature_scores(maybe), det.feature_scores(two))
    assert det.feature_scores(maybe)[1, 3] >= np.log(401) - 1e-4  # maximally surprising
    ex = det.explain(maybe.iloc[[1]], k=5)
    assert ex.loc[ex["feature"] == "vip", "unseen_category"].item()
    assert ex.loc[ex["feature"] == "vip", "value"].item() == "maybe"
    # a CSV file is scored (the row flagged), not refused
    maybe.to_csv(tmp_path / "in.csv", index=False)
    score_file(det, tmp_path / "in.csv", tmp_path / "out.csv")
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert out["unseen_category"].tolist() == ["", "vip", "", "", ""]
    # a service request too
    records = json.loads(maybe.to_json(orient="records"))
    scored = RecordScorer(det).score_records(records)
    assert [r["unseen_category"] for r in scored] == [[], ["vip"], [], [], []]
    # Python objects that are no value at all stay an error
    with pytest.raises(DataError, match="'vip' of X is boolean in the model but holds dict"):
        det.decision_function(_with(rows, "vip", [{"a": 1}, *vip[1:]]))


# -- 5. wording; booleans explained in the form the data had ---------------------------------
def test_one_column_listed_as_both_kinds_is_worded_in_the_singular(tmp_path: Path) -> None:
    df = make_frame(40, 0)
    with pytest.raises(DataError, match=r"^column 'amount' is listed as both categorical"):
        infer_schema(df, categorical=["amount"], numeric=["amount"])
    with pytest.raises(DataError, match=r"^columns 'amount', 'count' are listed as both"):
        infer_schema(df, categorical=["amount", "count"], numeric=["count", "amount"])
    df.to_csv(tmp_path / "t.csv", index=False)
    res = CliRunner().invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m"),
                                   "--numeric", "amount", "--categorical", "amount"])
    assert res.exit_code == 2 and "column 'amount' is listed" in res.output, res.output


def test_booleans_are_explained_in_the_form_the_training_data_had(tmp_path: Path) -> None:
    df = make_frame(400, 0)
    df["vip01"] = df["vip"].astype(int)  # the same flag as 0/1
    df["half"] = (np.arange(len(df)) % 2).astype(float)  # 0.0/1.0 with a gap
    df.loc[3, "half"] = np.nan
    det = VAEDetector(**TINY).fit(df)
    assert det.schema_.boolean_forms == (None, None, None, "bool", None, "number", "number")
    rows = df.head(8)
    ex = det.explain(rows, k=7)
    for col, want in (("vip", {bool}), ("vip01", {int}), ("half", {int})):
        part = ex[(ex["feature"] == col) & ~ex["missing"]]
        assert {type(v) for v in part["value"]} == want, col
        assert {type(v) for v in part["expected"]} == want, col
        assert set(part["expected"]) <= {0, 1}
    # what the user wrote ("1", "no", True) reads as the training form
    text = rows.astype({"vip01": object})
    text["vip01"] = ["1", "0", "yes", "no", True, False, 1.0, 0]
    ex = det.explain(text, k=7)
    assert ex.loc[ex["feature"] == "vip01", "value"].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    # saved and loaded; the CLI's explanations of a CSV, read as text, as 0/1
    det.save(tmp_path / "m")
    again = load(tmp_path / "m")
    assert again.schema_ == det.schema_
    pd.testing.assert_frame_equal(again.explain(rows, k=7), det.explain(rows, k=7))
    rows.to_csv(tmp_path / "in.csv", index=False)
    score_file(det, tmp_path / "in.csv", tmp_path / "out.csv", top_k=7, explain=True)
    out = pd.read_csv(tmp_path / "out.csv", dtype=str, keep_default_na=False)
    for i in range(1, 8):
        picked = out[f"top_feature_{i}"] == "vip01"
        assert set(out.loc[picked, f"top_expected_{i}"]) <= {"0", "1"}
        assert set(out.loc[picked, f"top_value_{i}"]) <= {"0", "1"}


def test_models_without_boolean_forms_explain_booleans_as_before() -> None:
    df = make_frame(200, 0).assign(vip01=lambda d: d["vip"].astype(int))
    schema = infer_schema(df)
    doc = schema.to_dict()
    assert doc["boolean_forms"][-1] == "number"
    old = MixedSchema.from_dict({k: v for k, v in doc.items() if k != "boolean_forms"})
    assert old.boolean_forms is None and old.as_written(5, 1.0) is True
    assert schema.as_written(5, 1.0) == 1 and schema.as_written(3, 0.0) is False
    assert schema.as_written(5, None) is None
    # a table whose booleans are all True/False keeps the document it had
    assert "boolean_forms" not in infer_schema(make_frame(200, 0)).to_dict()
