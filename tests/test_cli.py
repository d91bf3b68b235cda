"""The CLI, in-process (Typer's CliRunner): fit, score, evaluate, demo, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import anovae
from anovae import load
from anovae.cli import app

runner = CliRunner()
FAST = ["--epochs", "3", "--seed", "0", "--hidden-dims", "16,8", "--latent-dim", "2"]


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    n, d = 400, 5
    X = rng.normal(size=(n, d))
    y = np.zeros(n, dtype=int)
    X[:20] += 6.0
    y[:20] = 1
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(d)])
    df.insert(0, "id", np.arange(n) + 100)
    df["label"] = y
    path = tmp_path_factory.mktemp("cli") / "data.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def model(table: Path) -> Path:
    out = table.parent / "model.safetensors"
    res = runner.invoke(app, ["fit", str(table), "-o", str(out), "--label-column", "label",
                              "--id-column", "id", *FAST])
    assert res.exit_code == 0, res.output
    assert "fitted VAEDetector" in res.output
    return out


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and anovae.__version__ in res.output


@pytest.mark.parametrize("command", ["fit", "score", "evaluate", "demo"])
def test_help(command: str) -> None:
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_fit_saves_a_loadable_model(model: Path) -> None:
    det = anovae.load(model)
    assert list(det.feature_names_in_) == [f"f{i}" for i in range(5)]  # id and label left out


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_score_writes_ids_scores_labels_and_top_features(table: Path, model: Path,
                                                         suffix: str, tmp_path: Path) -> None:
    out = tmp_path / f"scores{suffix}"
    res = runner.invoke(app, ["score", str(model), str(table), "-o", str(out),
                              "--id-column", "id", "--top-features", "2", "--chunk-rows", "150"])
    assert res.exit_code == 0, res.output
    scored = (pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
              if suffix == ".parquet" else pd.DataFrame({k: v for k, v in np.load(out).items()}))
    df = pd.read_csv(table)
    det = anovae.load(model)
    expected = det.decision_function(df[[f"f{i}" for i in range(5)]])
    # the id column is read from the CSV as text: the same in every chunk
    assert scored["id"].astype(str).tolist() == df["id"].astype(str).tolist()
    np.testing.assert_allclose(scored["anomaly_score"].to_numpy(), expected, rtol=1e-6)
    assert scored["is_anomaly"].tolist() == (expected > det.threshold_).astype(int).tolist()
    assert set(scored["top_feature_1"]) <= {f"f{i}" for i in range(5)}
    # ranked by the excess over each feature's typical contribution
    assert (scored["top_excess_1"] >= scored["top_excess_2"]).all()
    base = det.feature_baselines_[det.score_name]
    names = [f"f{i}" for i in range(5)]
    for i in (1, 2):
        j = scored[f"top_feature_{i}"].map(names.index).to_numpy()
        np.testing.assert_allclose(scored[f"top_contribution_{i}"] - base[j],
                                   scored[f"top_excess_{i}"], rtol=1e-6, atol=1e-9)


def test_score_frame_names_follow_the_model_not_the_frame(model: Path, table: Path) -> None:
    from anovae.scoring import score_frame

    det = anovae.load(model)
    feats = pd.read_csv(table)[[f"f{i}" for i in range(5)]].head(5)
    feats.loc[:, "f4"] = 40.0  # broken in f4
    want = score_frame(det, feats, top_k=2, explain=True)
    shuffled = feats[["f4", "f3", "f2", "f1", "f0"]].assign(extra=1.0)
    pd.testing.assert_frame_equal(score_frame(det, shuffled, top_k=2, explain=True), want)
    assert (want["top_feature_1"] == "f4").all()
    # integer column names (the model keeps them as text) are matched the same way
    ints = feats.set_axis(range(5), axis=1)
    det_int = anovae.VAEDetector(epochs=2, random_state=0).fit(
        pd.read_csv(table)[[f"f{i}" for i in range(5)]].set_axis(range(5), axis=1))
    want = score_frame(det_int, ints, top_k=1)
    assert (want["top_feature_1"] == "4").all()
    pd.testing.assert_frame_equal(score_frame(det_int, ints[[4, 2, 0, 1, 3]], top_k=1), want)


def test_score_explain_matches_library(table: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "explained.csv"
    res = runner.invoke(app, ["score", str(model), str(table), "-o", str(out), "--explain", "2"])
    assert res.exit_code == 0, res.output
    scored = pd.read_csv(out)
    det = anovae.load(model)
    feats = pd.read_csv(table)[[f"f{i}" for i in range(5)]]
    lib = det.explain(feats, k=2)
    first = lib[lib["rank"] == 1].reset_index(drop=True)
    assert scored["row"].tolist() == list(range(len(feats)))  # row numbers without --id-column
    assert scored["top_feature_1"].tolist() == first["feature"].tolist()
    np.testing.assert_allclose(scored["top_value_1"], first["value"])
    np.testing.assert_allclose(scored["top_expected_1"], first["expected"], rtol=1e-6)


def test_evaluate_table_and_json(table: Path, model: Path) -> None:
    res = runner.invoke(app, ["evaluate", str(model), str(table), "--label-column", "label",
                              "--id-column", "id"])
    assert res.exit_code == 0, res.output
    assert "auroc" in res.output and "confusion" in res.output
    res = runner.invoke(app, ["evaluate", str(model), str(table), "--label-column", "label",
                              "--id-column", "id", "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert metrics["auroc"] > 0.9
    assert metrics["n"] == 400 and metrics["n_anomalies"] == 20
    assert np.array(metrics["confusion_matrix"]).sum() == 400


def test_fit_ae_and_preset_and_set_options(table: Path, tmp_path: Path) -> None:
    out = tmp_path / "ae.safetensors"
    res = runner.invoke(app, ["fit", str(table), "-o", str(out), "--detector", "ae",
                              "--exclude", "id", "--exclude", "label", *FAST])
    assert res.exit_code == 0, res.output
    assert type(anovae.load(out)).__name__ == "AEDetector"
    out = tmp_path / "preset.safetensors"
    res = runner.invoke(app, ["fit", str(table), "-o", str(out), "--preset", "tutorial-mlp",
                              "--exclude", "id", "--label-column", "label", "--epochs", "2",
                              "--set", "beta=0.5", "--set", "warmup_epochs=1"])
    assert res.exit_code == 0, res.output
    det = anovae.load(out)
    assert det.likelihood == "bernoulli" and det.beta == 0.5 and det.hidden_dims == (32, 16)


def test_demo_runs_offline(tmp_path: Path) -> None:
    res = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["auroc"] > 0.9  # malignant vs benign biopsies
    assert (tmp_path / "demo" / "model.safetensors").exists()
    scores = pd.read_csv(tmp_path / "demo" / "scores.csv")
    assert len(scores) == metrics["n"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "{missing}", "-o", "{out}"], "does not exist"),
        (["fit", "{bad_ext}", "-o", "{out}"], "unsupported file type"),
        (["fit", "{empty}", "-o", "{out}"], "no rows"),
        (["fit", "{table}", "-o", "{out}", "--label-column", "nope"], "label column 'nope'"),
        (["fit", "{table}", "-o", "{out}", "--exclude", "nope"], "--exclude 'nope'"),
        (["fit", "{text}", "-o", "{out}", "--detector", "ae"], "numeric and boolean columns only"),
        (["fit", "{nan}", "-o", "{out}", "--detector", "ae"], "NaN"),
        (["fit", "{table}", "-o", "{out}", "--set", "bogus=1"], "no parameter"),
        (["fit", "{table}", "-o", "{out}", "--learning-rate", "-1"], "--learning-rate must be > 0"),
        (["score", "{not_model}", "{table}", "-o", "{tmp}/s.csv"], "not a readable anovae model"),
        (["score", "{model}", "{narrow}", "-o", "{tmp}/s.csv"], "lacks columns"),
        (["score", "{model}", "{table}", "-o", "{tmp}/x.xlsx"], "unsupported output type"),
        (["evaluate", "{model}", "{table}", "--label-column", "f0"], "cannot be the label column"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_2(args: list[str], message: str, table: Path,
                                                   model: Path, tmp_path: Path) -> None:
    paths = {
        "table": table, "model": model, "tmp": tmp_path, "out": tmp_path / "m.safetensors",
        "missing": tmp_path / "missing.csv", "bad_ext": tmp_path / "data.xlsx",
        "empty": tmp_path / "empty.csv", "text": tmp_path / "text.csv",
        "nan": tmp_path / "nan.csv", "not_model": tmp_path / "junk.safetensors",
        "narrow": tmp_path / "narrow.csv",
    }
    paths["bad_ext"].write_text("a\n1\n")
    paths["empty"].write_text("")
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}).to_csv(paths["text"], index=False)
    pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [1.0, 2.0, 3.0]}).to_csv(paths["nan"],
                                                                       index=False)
    paths["not_model"].write_bytes(b"definitely not a model")
    pd.read_csv(table)[["f0", "f1"]].to_csv(paths["narrow"], index=False)
    res = runner.invoke(app, [a.format(**paths) for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_set_options_read_json_and_python_spellings() -> None:
    from anovae.cli.app import parse_set_options

    assert parse_set_options(["complexity-correction=False", "beta=0.5", "latent_dim=None",
                              "hidden_dims=[64,32]", "activation=tanh", "verbose=true"]) == {
        "complexity_correction": False, "beta": 0.5, "latent_dim": None,
        "hidden_dims": (64, 32), "activation": "tanh", "verbose": True}
    # the name of before 0.5 still works; one key twice is refused, not "last one wins"
    assert parse_set_options(["score=iwae"]) == {"score_type": "iwae"}
    with pytest.raises(typer.BadParameter, match="beta is set twice"):
        parse_set_options(["beta=1", "beta=2"])


@pytest.mark.parametrize(
    "args",
    [
        ["fit", "{table}", "-o", "{dir}", *FAST],
        ["fit", "{table}", "-o", "{table}/m.safetensors", *FAST],
        ["score", "{model}", "{table}", "-o", "{dir}"],
        ["score", "{model}", "{table}", "-o", "{table}/deeper/s.csv"],
        ["score", "{model}", "{jsonl}", "--stream", "-o", "{dir}"],
        ["score", "{model}", "{table}", "--engine", "dask", "-o", "{table}"],
        ["export", "{model}", "-o", "{dir}"],
        ["threshold", "{model}", "{table}", "-o", "{dir}"],
        ["report", "{model}", "{table}", "-o", "{dir}"],
        ["demo", "-o", "{table}"],
    ],
)
def test_unwritable_output_is_reported_before_any_work(args: list[str], table: Path,
                                                       model: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import anovae.demo
    import anovae.detectors
    import anovae.persistence

    def no_work(*a: object, **k: object) -> None:
        raise AssertionError("started work before checking the output path")

    # training, loading a model and the demo fail loudly (exit 1): exit 2 means checked first
    monkeypatch.setattr(anovae.detectors.VAEDetector, "fit", no_work)
    monkeypatch.setattr(anovae.persistence, "load", no_work)
    monkeypatch.setattr(anovae.demo, "run_demo", no_work)
    (tmp_path / "outdir").mkdir()
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"f0": 1, "f1": 2, "f2": 3, "f3": 4, "f4": 5}\n')
    before = table.read_bytes()
    res = runner.invoke(app, [a.format(table=table, model=model, dir=tmp_path / "outdir",
                                       jsonl=jsonl) for a in args])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: cannot write"), res.output
    assert "Traceback" not in res.output
    assert ("outdir" in res.output) or (str(table) in res.output)
    assert table.read_bytes() == before
    assert list((tmp_path / "outdir").iterdir()) == []


def test_os_errors_become_one_line_naming_the_path(model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from anovae.cli.app import handle_errors

    @handle_errors
    def denied() -> None:
        raise PermissionError(13, "Permission denied", "/srv/models/m.safetensors")

    with pytest.raises(typer.Exit) as err:
        denied()
    assert err.value.exit_code == 2
    assert capsys.readouterr().err == "error: '/srv/models/m.safetensors': Permission denied\n"
    (tmp_path / "indir").mkdir()  # reading a folder as JSON lines: said before it is opened
    res = runner.invoke(app, ["score", str(model), str(tmp_path / "indir"), "--stream"])
    assert res.exit_code == 2, res.output
    assert "indir' is a folder" in res.output and "Traceback" not in res.output


def test_stream_to_a_file_is_atomic(model: Path, table: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import anovae.streaming

    src = tmp_path / "in.jsonl"
    rows = pd.read_csv(table)[[f"f{i}" for i in range(5)]].head(4)
    src.write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict("records")))
    out = tmp_path / "prev.jsonl"
    out.write_text("PRECIOUS\n")
    real = anovae.streaming.score_stream

    def fails_half_way(det: object, source: object, dst: Any, **kw: object) -> None:
        dst.write('{"anomaly_score": 1.0}\n')
        dst.flush()
        raise anovae.DataError("the input broke off")

    monkeypatch.setattr(anovae.streaming, "score_stream", fails_half_way)
    res = runner.invoke(app, ["score", str(model), str(src), "--stream", "-o", str(out)])
    assert res.exit_code == 2 and "the input broke off" in res.output
    assert out.read_text() == "PRECIOUS\n"  # not truncated by the failed run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "prev.jsonl"]
    monkeypatch.setattr(anovae.streaming, "score_stream", real)
    res = runner.invoke(app, ["score", str(model), str(src), "--stream", "-o", str(out)])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and all("anomaly_score" in x for x in lines)


def test_score_header_only_csv_says_no_rows_and_keeps_the_output(model: Path,
                                                                 tmp_path: Path) -> None:
    data = tmp_path / "hdr.csv"
    data.write_text("id,f0,f1,f2,f3,f4,label\n")
    out = tmp_path / "s.csv"
    out.write_text("old scores\n")
    for extra in ([], ["--id-column", "id"]):
        res = runner.invoke(app, ["score", str(model), str(data), "-o", str(out), *extra])
        assert res.exit_code == 2, res.output
        assert "'hdr.csv' has no rows" in res.output.replace(str(tmp_path) + "/", "")
        assert "non-numeric" not in res.output
    assert out.read_text() == "old scores\n"


def _codes_table(path: Path, n: int = 1000) -> pd.DataFrame:
    """Codes with leading zeros in the first 990 rows, a code with a letter in the last 10."""
    rng = np.random.default_rng(0)
    code = np.where(np.arange(n) < n - 10, rng.choice(["001", "002", "003"], n), "A07")
    df = pd.DataFrame({"a": rng.normal(size=n), "code": code})
    df.to_csv(path, index=False)
    return df


@pytest.mark.filterwarnings("ignore:column 'code' holds numbers")
def test_mixed_scores_do_not_depend_on_chunk_rows(tmp_path: Path) -> None:
    from anovae.io import read_table
    from anovae.scoring import score_file

    _codes_table(tmp_path / "t.csv")
    det = anovae.VAEDetector(epochs=3, random_state=0).fit(read_table(tmp_path / "t.csv"))
    assert set(det.schema_.vocabularies[1]) == {"001", "002", "003", "A07"}
    outs = []
    for chunk in (1000, 500, 333):
        score_file(det, tmp_path / "t.csv", tmp_path / f"s{chunk}.csv", chunk_rows=chunk)
        outs.append(pd.read_csv(tmp_path / f"s{chunk}.csv"))
    for o in outs:
        assert o["unseen_category"].notna().sum() == 0  # every code is in the vocabulary
        assert o["is_anomaly"].sum() == outs[0]["is_anomaly"].sum()
        np.testing.assert_allclose(o["anomaly_score"], outs[0]["anomaly_score"], rtol=1e-6)


def test_fit_reads_categorical_columns_as_text_and_old_models_still_match(
        tmp_path: Path) -> None:
    from anovae.scoring import score_file

    df = _codes_table(tmp_path / "t.csv", n=300)
    df.iloc[:-10].to_csv(tmp_path / "digits.csv", index=False)  # codes of digits only
    out = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["fit", str(tmp_path / "digits.csv"), "-o", str(out),
                              "--categorical", "code", *FAST])
    assert res.exit_code == 0, res.output
    assert set(anovae.load(out).schema_.vocabularies[1]) == {"001", "002", "003"}
    # a model that saw the codes as integers (1, 2, 3) still recognises "001" when scoring
    ints = df.iloc[:-10].assign(code=df["code"].iloc[:-10].astype(int))
    det = anovae.VAEDetector(epochs=2, random_state=0, categorical=("code",)).fit(ints)
    assert set(det.schema_.vocabularies[1]) == {"1", "2", "3"}
    score_file(det, tmp_path / "t.csv", tmp_path / "s.csv", chunk_rows=100)
    unseen = pd.read_csv(tmp_path / "s.csv")["unseen_category"]
    assert unseen.fillna("").tolist() == [""] * 290 + ["code"] * 10  # only "A07" is new


def test_boolean_columns_read_as_text_keep_numbers_as_numbers(tmp_path: Path) -> None:
    from anovae.scoring import score_file

    rng = np.random.default_rng(1)
    n = 200
    train = pd.DataFrame({"a": rng.normal(size=n), "flag": rng.integers(0, 2, n),
                          "c": rng.choice(list("xyz"), n)})
    det = anovae.VAEDetector(epochs=2, random_state=0).fit(train)
    assert det.schema_.kinds == ("numeric", "boolean", "categorical")
    test = train.head(6).astype({"flag": object})
    test.loc[[0, 1], "flag"] = ["yes", "no"]  # words in one chunk only, a 2 in another
    test.loc[5, "flag"] = 2
    test.to_csv(tmp_path / "b.csv", index=False)
    outs = []
    for chunk in (6, 2):
        score_file(det, tmp_path / "b.csv", tmp_path / f"b{chunk}.csv", chunk_rows=chunk)
        outs.append(pd.read_csv(tmp_path / f"b{chunk}.csv"))
    np.testing.assert_allclose(outs[0]["anomaly_score"], outs[1]["anomaly_score"], rtol=1e-6)
    assert outs[0]["unseen_category"].fillna("").tolist() == [""] * 5 + ["flag"]


def test_parquet_output_with_explain_on_a_mixed_model_and_text_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"id": [str(i) for i in range(n)], "a": rng.normal(size=n),
                       "c": rng.choice(list("xyz"), n)})
    df.loc[250, "id"] = "X250"  # ids look like integers in every chunk but the last
    df.to_csv(tmp_path / "t.csv", index=False)
    model = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(model),
                              "--id-column", "id", *FAST])
    assert res.exit_code == 0, res.output
    out = tmp_path / "o.parquet"
    res = runner.invoke(app, ["score", str(model), str(tmp_path / "t.csv"), "-o", str(out),
                              "--explain", "2", "--id-column", "id", "--chunk-rows", "100"])
    assert res.exit_code == 0, res.output
    scored = pd.read_parquet(out)
    assert scored["id"].tolist() == df["id"].tolist()
    values = scored["top_value_1"].tolist() + scored["top_expected_2"].tolist()
    assert all(isinstance(v, str) for v in values)
    assert {"x", "y", "z"} & set(values)  # categories, and numbers written as text
    a_rows = scored["top_feature_1"] == "a"
    np.testing.assert_allclose(scored.loc[a_rows, "top_value_1"].astype(float),
                               df.loc[a_rows.to_numpy(), "a"])


def test_select_features_matches_non_string_column_names() -> None:
    from anovae.scoring import select_features

    rng = np.random.default_rng(0)
    X = pd.DataFrame({0: rng.normal(size=100), 1: rng.choice(list("xyz"), 100)})
    det = anovae.VAEDetector(epochs=1, random_state=0).fit(X)
    picked = select_features(det, X.assign(extra=1.0)[[1, "extra", 0]])
    assert list(picked.columns) == [0, 1]
    np.testing.assert_allclose(det.decision_function(picked), det.decision_function(X))
    with pytest.raises(anovae.DataError, match="lacks columns.*'1'"):
        select_features(det, X[[0]])
    num = pd.DataFrame({0: rng.normal(size=50), 1: rng.normal(size=50), 2: 0.0})
    assert list(select_features(anovae.AEDetector(epochs=1).fit(num[[0, 1]]), num).columns) \
        == [0, 1]


def test_evaluate_threshold_report_read_codes_as_score_does(tmp_path: Path) -> None:
    # codes with leading zeros: `score` reads them as text; `evaluate`, `threshold` and `report`
    # used pandas' guess (the integers 1, 2, 10: no category of the model) and flagged every row
    rng = np.random.default_rng(0)
    n = 400
    c = rng.integers(0, 3, n)
    df = pd.DataFrame({"id": [f"{i:06d}" for i in range(n)],
                       "code": np.array(["001", "002", "010"])[c],
                       "x": rng.normal(size=n) + 2 * c, "z": rng.normal(size=n)})
    df["label"] = (np.arange(n) < 20).astype(int)
    df.loc[:19, "x"] += 6
    data = tmp_path / "cat.csv"
    df.to_csv(data, index=False)
    model = tmp_path / "m.safetensors"
    runner = CliRunner()
    res = runner.invoke(app, ["fit", str(data), "-o", str(model), "--id-column", "id",
                              "--label-column", "label", "--categorical", "code", "--epochs", "5",
                              "--seed", "0"])
    assert res.exit_code == 0, res.output
    det = load(model)
    X = df.drop(columns=["id", "label"])
    expected = det.decision_function(X)
    res = runner.invoke(app, ["evaluate", str(model), str(data), "--label-column", "label",
                              "--id-column", "id", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output)
    flagged = int((expected > det.threshold_).sum())
    assert got["confusion_matrix"][0][1] + got["confusion_matrix"][1][1] == flagged < n
    out = tmp_path / "t.safetensors"
    res = runner.invoke(app, ["threshold", str(model), str(data), "--id-column", "id",
                              "--label-column", "label", "--method", "contamination",
                              "--param", "0.1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert load(out).threshold_ == pytest.approx(np.percentile(expected, 90), rel=1e-6)


def test_evaluate_json_is_valid_json_and_labels_may_be_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 3)), columns=list("abc"))
    df[:200].to_csv(tmp_path / "tr.csv", index=False)
    model = tmp_path / "m.safetensors"
    assert CliRunner().invoke(app, ["fit", str(tmp_path / "tr.csv"), "-o", str(model),
                                    "--epochs", "2", "--seed", "0"]).exit_code == 0
    df.assign(label=0).to_csv(tmp_path / "one.csv", index=False)  # one class: no AUROC
    res = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "one.csv"),
                                   "--label-column", "label", "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(c))  # warning: stderr
    assert got["auroc"] is None and got["recall"] is None and got["f1"] is None
    assert got["precision"] == 0.0  # flagged rows, none an anomaly: defined
    assert res.stderr == "warning: the labels hold no anomaly (1): auroc, auprc, recall and f1 " \
                         "are undefined (n/a)\n"
    res = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "one.csv"),
                                   "--label-column", "label"])
    assert res.exit_code == 0, res.output
    assert [line.split() for line in res.stdout.splitlines()
            if line.split()[0] in ("auroc", "recall", "f1")] == [["auroc", "n/a"],
                                                                  ["recall", "n/a"],
                                                                  ["f1", "n/a"]]
    df.assign(label=["1"] * 20 + ["0"] * 280).to_parquet(tmp_path / "s.parquet")
    res = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "s.parquet"),
                                   "--label-column", "label"])
    assert res.exit_code == 0, res.output
    df.assign(label=["yes"] * 300).to_parquet(tmp_path / "t.parquet")
    res = CliRunner().invoke(app, ["evaluate", str(model), str(tmp_path / "t.parquet"),
                                   "--label-column", "label"])
    assert res.exit_code == 2 and "holds text such as 'yes'" in res.output


def test_fit_and_score_option_edge_cases(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"cid": [f"c{i:04d}" for i in range(n)], "a": rng.normal(size=n),
                       "b": rng.normal(size=n), "y": (rng.random(n) < 0.05).astype(int)})
    mx = pd.DataFrame({"id": range(n), "amount": rng.gamma(2, 10, n),
                       "country": rng.choice(["FR", "DE", "US"], n)})
    df.to_csv(tmp_path / "t.csv", index=False)
    mx.to_csv(tmp_path / "mx.csv", index=False)
    mx.to_parquet(tmp_path / "mx.parquet", index=False)
    df.assign(region=np.where(np.arange(n) % 2, "east", "west")).to_parquet(
        tmp_path / "hive", partition_cols=["region"], index=False)
    np.savez(tmp_path / "t.npz", X=df[["a", "b"]].to_numpy(), y=df["y"].to_numpy())
    runner = CliRunner()

    def fit(*args: str) -> Any:
        return runner.invoke(app, ["fit", *args, "--epochs", "2", "--seed", "0"])

    def fit_then_score(data: str, fit_args: list[str], id_column: str) -> None:
        res = fit(str(tmp_path / data), "-o", str(tmp_path / "fs.st"), *fit_args)
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["score", str(tmp_path / "fs.st"), str(tmp_path / data), "-o",
                                  str(tmp_path / "fs.csv"), "--id-column", id_column])
        assert res.exit_code == 0, res.output

    # a hive-partitioned folder: fit and score read its key=value column alike
    fit_then_score("hive", ["--id-column", "cid", "--label-column", "y"], "cid")
    # options that a mixed table cannot honour are refused, not ignored
    res = fit(str(tmp_path / "mx.csv"), "-o", str(tmp_path / "b.st"), "--likelihood",
              "bernoulli", "--id-column", "id")
    assert res.exit_code == 2 and "apply to numeric tables" in res.output
    # one-line errors, not tracebacks
    for args, message in [
        (["--preset", "tutorial-mlp", "--detector", "ae"], "has no presets"),
        (["--set", "hidden_dims=16"], "hidden_dims must be a sequence"),
        (["--set", "categorical=5"], "categorical must be a list of column names"),
        (["--hidden-dims", "abc"], "expected integers separated by commas"),
    ]:
        res = fit(str(tmp_path / "t.csv"), "-o", str(tmp_path / "x.st"), "--exclude", "cid",
                  "--label-column", "y", *args)
        assert res.exit_code == 2 and message in res.output, res.output
    res = fit(str(tmp_path / "mx.csv"), "-o", str(tmp_path / "n.st"), "--numeric", "country",
              "--id-column", "id")
    assert res.exit_code == 2 and "listed in --numeric but holds text" in res.output
    res = fit(str(tmp_path / "mx.parquet"), "-o", str(tmp_path / "o.st"), "--out-of-core",
              "--id-column", "id")
    assert res.exit_code == 2 and "out-of-core training takes numeric" in res.output
    # --set verbose=true is honoured; a labelled .npz warns that y is a feature
    res = fit(str(tmp_path / "t.csv"), "-o", str(tmp_path / "v.st"), "--exclude", "cid",
              "--label-column", "y", "--set", "verbose=true")
    assert res.exit_code == 0 and load(tmp_path / "v.st").get_params()["verbose"] is True
    res = fit(str(tmp_path / "t.npz"), "-o", str(tmp_path / "z.st"))
    assert res.exit_code == 0 and "holds a 'y' array: it is fitted as a feature" in res.output
    # an id column that is also a feature is read as the model reads it
    fit_then_score("t.csv", ["--exclude", "cid", "--label-column", "y"], "a")


def test_fit_warns_of_a_forgotten_label_column(tmp_path: Path) -> None:
    # a 0/1 `label` column without --label-column was fitted as a feature, without a word
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "c"])
    df["Label"] = (rng.random(200) < 0.1).astype(int)
    df["class"] = rng.integers(0, 5, 200)  # several classes: a feature, nothing to say
    df.to_csv(tmp_path / "t.csv", index=False)

    def fit(*args: str) -> Any:
        return runner.invoke(app, ["fit", *args, "--epochs", "2", "--seed", "0"])

    res = fit(str(tmp_path / "t.csv"), "-o", str(tmp_path / "m.st"))
    assert res.exit_code == 0
    assert ("warning: 't.csv' holds a column 'Label' of 0/1 values: it is fitted as a feature; "
            "pass --label-column Label if it holds the labels (or --exclude Label)"
            ) in res.output.replace(str(tmp_path) + "/", "")
    assert "'class'" not in res.output
    for given in (["--label-column", "Label"], ["--exclude", "Label"]):
        res = fit(str(tmp_path / "t.csv"), "-o", str(tmp_path / "m.st"), *given)
        assert res.exit_code == 0 and "warning" not in res.output, res.output
    # an out-of-core fit never holds the table: its first row group is read for the check
    df.drop(columns="class").to_parquet(tmp_path / "t.parquet", row_group_size=50)
    res = fit(str(tmp_path / "t.parquet"), "-o", str(tmp_path / "o.st"), "--out-of-core")
    assert res.exit_code == 0, res.output
    assert "holds a column 'Label' of 0/1 values: it is fitted as a feature" in res.output
    res = fit(str(tmp_path / "t.parquet"), "-o", str(tmp_path / "o.st"), "--out-of-core",
              "--label-column", "Label")
    assert res.exit_code == 0 and "warning" not in res.output, res.output


def test_tables_with_idx_in_their_name_are_fitted_and_scored_as_tables(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    df.to_csv(tmp_path / "idx.csv", index=False)
    df.to_csv(tmp_path / "Train_IDX_2024.csv", index=False)
    df.to_parquet(tmp_path / "price_idx.parquet")
    out = tmp_path / "m.safetensors"
    for name, extra in [("idx.csv", []), ("Train_IDX_2024.csv", []),
                        ("price_idx.parquet", ["--exclude", "c"])]:
        res = runner.invoke(app, ["fit", str(tmp_path / name), "-o", str(out), *extra, *FAST])
        assert res.exit_code == 0, res.output
        assert "fitted VAEDetector" in res.output
    res = runner.invoke(app, ["score", str(out), str(tmp_path / "Train_IDX_2024.csv"), "-o",
                              str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "s.csv")) == 60


def test_misread_csv_files_are_one_line_errors_in_every_command(model: Path,
                                                                 tmp_path: Path) -> None:
    files = {"semi.csv": (b"f0;f1;label\n0.1;0.2;0\n0.3;Saint-Denis, 93;1\n",
                          "looks delimited by ';'"),
             "latin1.csv": ("f0,f1,label\n0.1,Orléans,0\n".encode("latin-1"),
                            "is not UTF-8 text"),
             "dup.csv": (b"f0,f0,label\n0.1,0.2,0\n", "has duplicate column names ['f0']")}
    for name, (content, message) in files.items():
        data = tmp_path / name
        data.write_bytes(content)
        for args in (["fit", str(data), "-o", str(tmp_path / "m.safetensors")],
                     ["score", str(model), str(data), "-o", str(tmp_path / "s.csv")],
                     ["evaluate", str(model), str(data), "--label-column", "label"],
                     ["threshold", str(model), str(data), "-o", str(tmp_path / "t.safetensors")],
                     ["report", str(model), str(data), "-o", str(tmp_path / "r.html")]):
            res = runner.invoke(app, args)
            assert res.exit_code == 2, (args, res.output)
            assert f"{name}' {message}" in res.output, (args, res.output)
            assert "Traceback" not in res.output and "tokenizing" not in res.output
            assert len(res.output.strip().splitlines()) == 1


def test_cli_hints_keep_names_with_parentheses_whole() -> None:
    from anovae.cli.app import cli_message

    gap = ("X contains NaN in 'amount (USD)' (1 rows); fill or drop them first (or let the model "
           "take gaps: a VAEDetector given the column kinds, e.g. numeric=['amount (USD)'] (CLI: "
           "--numeric amount (USD)), models missing values)")
    assert cli_message(gap).endswith("e.g. --numeric 'amount (USD)', models missing values)")
    assert cli_message(gap).startswith("the data contains NaN in 'amount (USD)'")
    assert cli_message("column 'a' of X holds text; fit(X, y) or X.reshape") == (
        "column 'a' of the data holds text; fit(X, y) or X.reshape")
    assert cli_message("X does not match; instead of X.shape[1]") == (
        "the data does not match; instead of X.shape[1]")
    assert cli_message("it looks like an id; exclude it (CLI: --exclude row id (n))") == (
        "it looks like an id; exclude it (--exclude 'row id (n)')")


def test_warnings_are_one_line_and_errors_name_the_cli_options(tmp_path: Path) -> None:
    import warnings

    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"rowid": np.arange(n), "amount": rng.normal(size=n),
                       "city": rng.choice(["Lyon", "Paris"], n)})
    df.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "m.safetensors"
    show = warnings.showwarning
    res = runner.invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(out), *FAST])
    assert res.exit_code == 0, res.output
    assert ("warning: column 'rowid' counts up by one row by row: it looks like an id; exclude "
            "it (--exclude rowid)") in res.output
    assert "UserWarning" not in res.output and ".py:" not in res.output
    assert warnings.showwarning is show  # the CLI's display is undone after the command
    bad = tmp_path / "bad.csv"
    df.head(3).assign(amount=["abc", "1", "2"]).to_csv(bad, index=False)
    res = runner.invoke(app, ["score", str(out), str(bad), "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 2, res.output
    assert "refit with --categorical amount" in res.output
    for extra, message in [
            (["--categorical", "nope"], "--categorical/--numeric name columns that are not in"),
            (["--exclude", "city", "--categorical", "city"],
             "--categorical 'city': that column is excluded (--exclude)"),
            (["--id-column", "rowid", "--numeric", "rowid"],
             "--numeric 'rowid': that column is the id column")]:
        res = runner.invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(out), *extra, *FAST])
        assert res.exit_code == 2, res.output
        assert message in res.output and "categorical=" not in res.output


def test_threshold_without_method_reuses_the_model_s_own_method(model: Path, table: Path,
                                                                tmp_path: Path) -> None:
    # the default was the `threshold` parameter (contamination=0.1), not the method the model's
    # threshold was last set with
    m = tmp_path / "m.safetensors"
    m.write_bytes(model.read_bytes())
    res = runner.invoke(app, ["threshold", str(m), str(table), "--id-column", "id",
                              "--label-column", "label", "--method", "fpr", "--param", "0.01"])
    assert res.exit_code == 0, res.output
    first = load(m).threshold_
    res = runner.invoke(app, ["threshold", str(m), str(table), "--id-column", "id",
                              "--label-column", "label"])
    assert res.exit_code == 0, res.output
    assert "(fpr=0.01, set on 380 rows)" in res.output
    assert load(m).threshold_method_ == "fpr=0.01" and load(m).threshold_ == first
    res = runner.invoke(app, ["threshold", str(m), str(table), "--id-column", "id",
                              "--label-column", "label", "--param", "0.05"])
    assert res.exit_code == 0, res.output
    assert load(m).threshold_method_ == "fpr=0.05" and load(m).threshold_ < first
    help_text = " ".join(runner.invoke(app, ["threshold", "--help"]).output.split())
    assert "default: the method the model's threshold was last set with" in help_text.replace(
        "│ ", "").replace(" │", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "{model}", "{table}", "-o", "{out}", "--top-features", "-5"],
         "Invalid value for '--top-features'"),
        (["--log-level", "LOUD", "score", "{model}", "{table}", "-o", "{out}"],
         "choose one of DEBUG, INFO, WARNING, ERROR (any case), got 'LOUD'"),
        (["fit", "{table}", "-o", "{out}", "--set", "epochs=2", "--epochs", "3"],
         "epochs is given twice, by --epochs and by --set epochs=2: give it once"),
        (["fit", "{table}", "-o", "{out}", "--set", "random-state=1", "--seed", "0"],
         "random_state is given twice, by --seed and by --set random-state=1"),
    ],
)
def test_option_values_out_of_range_and_given_twice_are_refused(
        args: list[str], message: str, model: Path, table: Path, tmp_path: Path) -> None:
    out = tmp_path / ("o.safetensors" if args[0] == "fit" else "s.csv")
    res = runner.invoke(app, [a.format(model=model, table=table, out=out) for a in args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.replace("│", " ").split()), res.output
    assert not out.exists()


def test_log_level_takes_any_case(model: Path, table: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["--log-level", "error", "score", str(model), str(table), "-o",
                              str(tmp_path / "s.csv"), "--id-column", "id"])
    assert res.exit_code == 0, res.output


def test_numpy_arrays_for_a_model_with_column_names_get_a_hint(model: Path, table: Path,
                                                               tmp_path: Path) -> None:
    np.save(tmp_path / "t.npy", pd.read_csv(table)[[f"f{i}" for i in range(5)]].to_numpy())
    res = runner.invoke(app, ["score", str(model), str(tmp_path / "t.npy"), "-o",
                              str(tmp_path / "s.csv")])
    assert res.exit_code == 2, res.output
    assert "lacks columns the model was fitted on: 'f0'" in res.output
    assert "arrays carry no column names (anovae calls them x0, x1, ...)" in res.output


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 1073741824 bytes. Error code 12"),
    MemoryError(),
    "torch",
])
def test_out_of_memory_is_one_line_and_exit_2(error: Any, table: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import anovae.detectors

    if error == "torch":
        error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    def fit(*a: object, **k: object) -> None:
        raise error

    monkeypatch.setattr(anovae.detectors.VAEDetector, "fit", fit)
    res = runner.invoke(app, ["fit", str(table), "-o", str(tmp_path / "m.safetensors"),
                              "--label-column", "label"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: out of memory") and "--batch-size" in res.output
    assert len(res.output.splitlines()) == 1 and "Traceback" not in res.output
    if isinstance(error, RuntimeError):
        assert ("(could not allocate 1 GiB)" if "bytes" in str(error) else
                "(could not allocate 20 MiB)") in res.output


def test_out_of_memory_sizes_read_alike() -> None:
    # NumPy writes "256. TiB", torch "256.00 TiB" or a byte count: one wording
    from anovae.cli.app import out_of_memory_message

    for text in ("CUDA out of memory. Tried to allocate 256.00 TiB (GPU 0)",
                 "Unable to allocate 256. TiB for an array with shape (1, 2)",
                 "DefaultCPUAllocator: you tried to allocate 281474976710656 bytes"):
        assert "(could not allocate 256 TiB)" in out_of_memory_message(MemoryError(text))
    assert "(could not allocate 3.5 MiB)" in out_of_memory_message(
        MemoryError("Unable to allocate 3.50 MiB"))
    assert "(could not allocate 1000 MiB)" in out_of_memory_message(  # not 1e+03
        MemoryError("Tried to allocate 1000.00 MiB"))


def test_other_runtime_errors_are_not_taken_for_out_of_memory(table: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    import anovae.detectors

    def fit(*a: object, **k: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(anovae.detectors.VAEDetector, "fit", fit)
    res = runner.invoke(app, ["fit", str(table), "-o", str(tmp_path / "m.safetensors")])
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)


# -- image models -------------------------------------------------------------------------------
def _pngs(folder: Path, images: np.ndarray) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def image_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 16x16 grey model fitted on a flat folder, and a test folder with class sub-folders."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("images")
    blobs = np.zeros((40, 16, 16), np.uint8)
    blobs[:, 4:12, 4:12] = rng.integers(150, 255, (40, 8, 8))
    noise = rng.integers(0, 255, (10, 16, 16)).astype(np.uint8)
    train = _pngs(root / "train", blobs[:30])
    test = root / "test"
    _pngs(test / "normal", blobs[30:])
    _pngs(test / "anomaly", noise)
    model = root / "m.safetensors"
    res = runner.invoke(app, ["fit", str(train), "-o", str(model), "--epochs", "1", "--seed", "0",
                              "--set", "channels=[4,8]", "--latent-dim", "2"])
    assert res.exit_code == 0, res.output
    np.save(root / "test.npy", np.concatenate([blobs[30:], noise]))
    return {"model": model, "train": train, "test": test, "npy": root / "test.npy",
            "fit_output": res.output}


def test_report_and_threshold_read_images_as_score_does(image_data: dict[str, Any],
                                                        tmp_path: Path) -> None:
    from anovae.images import read_images

    test = image_data["test"]
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(image_data["model"]), str(test), "-o", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "Most anomalous images" in page and "ROC curve" in page  # labels: the sub-folders
    assert re.search(r"<td>(anomaly|normal)/\d{3}\.png</td>", page)  # rows named by file
    res = runner.invoke(app, ["report", str(image_data["model"]), str(image_data["npy"]), "-o",
                              str(tmp_path / "n.html")])
    assert res.exit_code == 0, res.output
    m = tmp_path / "m.safetensors"
    m.write_bytes(image_data["model"].read_bytes())
    res = runner.invoke(app, ["threshold", str(m), str(test), "--method", "fpr", "--param",
                              "0.2"])
    assert res.exit_code == 0, res.output
    assert "(fpr=0.2, set on 10 images)" in res.output  # the images of normal/ only
    det = load(image_data["model"])
    data = read_images(test)
    det.refit_threshold(data.images, (data.labels == "anomaly").astype(int), method="fpr",
                        param=0.2)
    assert load(m).threshold_ == pytest.approx(det.threshold_)
    res = runner.invoke(app, ["threshold", str(m), str(image_data["npy"]), "-o",
                              str(tmp_path / "t.safetensors")])
    assert res.exit_code == 0 and "(fpr=0.2, set on 20 images)" in res.output, res.output
    res = runner.invoke(app, ["report", str(image_data["model"]), str(test), "--label-column",
                              "y", "-o", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "--label-column applies to tables" in res.output
    assert "their labels: the sub-folder names" in res.output
    res = runner.invoke(app, ["report", str(image_data["model"]), str(image_data["npy"]),
                              "--label-column", "y", "-o", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and "a .npy holds images only" in res.output  # not sub-folders


def test_image_labels_are_0_1_or_a_normal_class(capsys: pytest.CaptureFixture[str]) -> None:
    from anovae.cli.core import image_labels
    from anovae.images import ImageData

    def labels(values: list[Any]) -> Any:
        return image_labels(ImageData(np.zeros((len(values), 8, 8)), [], np.asarray(values)),
                            Path("d"))

    assert labels(["good", "crack", "hole"]).tolist() == [0, 1, 1]  # MVTec's layout
    assert labels([1, 0]).tolist() == [1, 0] and labels(["0", "1"]).tolist() == [0, 1]
    assert capsys.readouterr().err == ""
    assert labels([3, 7]) is None and labels(["cat", "dog"]) is None  # digits, two classes
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(e.startswith("warning: the labels of 'd'") for e in err)
    assert "(cat, dog) are neither 0/1 nor classes of which one is named 'normal'" in err[1]


def test_fit_on_images_says_images_and_notes_class_sub_folders(image_data: dict[str, Any],
                                                              tmp_path: Path) -> None:
    fitted = image_data["fit_output"]  # a flat folder: no note; images, not "rows x columns"
    assert "on 30 images of 16x16 pixels (width x height) with 1 channel in" in fitted
    assert "note:" not in fitted
    res = runner.invoke(app, ["fit", str(image_data["test"]), "-o", str(tmp_path / "m.st"),
                              "--epochs", "1", "--set", "channels=[4,8]"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ("note: 2 class sub-folders (anomaly, normal): fitting on all 20 images "
                          "as normal\n")


def test_image_models_refuse_table_options_and_dask(image_data: dict[str, Any],
                                                     tmp_path: Path) -> None:
    model, test = str(image_data["model"]), str(image_data["test"])
    for k in ("2", "0"):  # 0 too: it is given (it equals False)
        res = runner.invoke(app, ["score", model, test, "-o", str(tmp_path / "s.csv"),
                                  "--top-features", k])
        assert res.exit_code == 2 and "--top-features applies to tables" in res.output
    assert not (tmp_path / "s.csv").exists()
    (tmp_path / "x.csv").write_text("old\n")  # dask writes a folder: the model is the cause
    res = runner.invoke(app, ["score", model, test, "-o", str(tmp_path / "x.csv"), "--engine",
                              "dask"])
    assert res.exit_code == 2, res.output
    assert "Dask scoring (--engine dask) takes table models only" in res.output


def test_fit_on_a_folder_without_images_or_tables_names_both(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    res = runner.invoke(app, ["fit", str(tmp_path / "empty"), "-o", str(tmp_path / "e.st")])
    assert res.exit_code == 2, res.output
    assert "holds no .parquet files and no .png/.jpg/.jpeg images" in res.output


def test_a_table_model_given_images_says_so(model: Path, image_data: dict[str, Any],
                                            tmp_path: Path) -> None:
    for args in (["score", str(model), "{src}", "-o", str(tmp_path / "s.csv")],
                 ["evaluate", str(model), "{src}", "--label-column", "y"],
                 ["report", str(model), "{src}", "-o", str(tmp_path / "r.html")],
                 ["threshold", str(model), "{src}", "-o", str(tmp_path / "t.safetensors")]):
        for src in (image_data["test"], image_data["npy"]):
            res = runner.invoke(app, [a.format(src=src) for a in args])
            assert res.exit_code == 2, res.output
            assert "is a table model (fitted on 5 columns), but" in res.output
            assert f"{str(src)!r} holds images" in res.output


def test_a_warning_of_chunked_scoring_is_shown_once_per_file(tmp_path: Path) -> None:
    # a model fitted on an unnamed array, scored from a CSV in chunks: the "taken by position"
    # warning came once per chunk (a line per 500 rows)
    from anovae import VAEDetector

    rng = np.random.default_rng(0)
    det = VAEDetector(epochs=1, hidden_dims=(8,), latent_dim=2, random_state=0, device="cpu")
    model = det.fit(rng.normal(size=(200, 3))).save(tmp_path / "m.safetensors")
    table = tmp_path / "t.csv"
    pd.DataFrame(rng.normal(size=(3000, 3)), columns=list("abc")).to_csv(table, index=False)
    res = runner.invoke(app, ["score", str(model), str(table), "-o", str(tmp_path / "s.csv"),
                              "--chunk-rows", "500"])
    assert res.exit_code == 0, res.output
    assert res.output.count("taken by position") == 1


def test_numbers_in_a_text_category_column_of_a_csv_are_an_error(tmp_path: Path) -> None:
    # the CLI reads a CSV's category columns as text: codes 1, 2, 3 where the model saw FR, DE,
    # ES were unseen categories, every row flagged, exit 0 (a frame or --stream: an error)
    rng = np.random.default_rng(0)
    n = 300
    train = pd.DataFrame({"amount": rng.normal(50, 5, n).round(2),
                          "country": rng.choice(["FR", "DE", "ES"], n)})
    train.to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "m.safetensors"
    assert runner.invoke(app, ["fit", str(tmp_path / "train.csv"), "-o", str(model),
                               "--epochs", "2", "--seed", "0"]).exit_code == 0
    out = tmp_path / "s.csv"

    def score(values: list[Any], *extra: str) -> Any:
        table = tmp_path / "t.csv"
        pd.DataFrame({"amount": 50.0, "country": values}).to_csv(table, index=False)
        return runner.invoke(app, ["score", str(model), str(table), "-o", str(out), *extra])

    for values, kind in ((list(range(1, 31)), "numbers"), (["True", "False"] * 15, "booleans")):
        for chunks in ("7", "200000"):  # decided over the whole file, whatever its chunks
            res = score(values, "--chunk-rows", chunks)
            assert res.exit_code == 2, res.output
            assert f"column 'country' of 't.csv' holds {kind}" in res.output.replace(
                str(tmp_path) + "/", "")
            assert not out.exists()
    # a few rows (one new value, say): unseen categories, flagged, as before; and one known
    # category anywhere in the file (here in its last chunk) settles it
    assert score(["7", "12"]).exit_code == 0
    assert pd.read_csv(out)["unseen_category"].tolist() == ["country", "country"]
    assert score([str(k) for k in range(40)] + ["FR"], "--chunk-rows", "10").exit_code == 0


def test_given_twice_quotes_the_set_item_as_typed(table: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["fit", str(table), "-o", str(tmp_path / "m.safetensors"),
                              "--score", "iwae", "--set", "score=elbo"])
    assert res.exit_code == 2
    assert "score_type is given twice, by --score and by --set score=elbo" in res.output


def test_score_file_warnings_pass_the_caller_s_filters(tmp_path: Path) -> None:
    # shown once per file, but still through the caller's filters (module="anovae")
    import warnings

    from anovae import VAEDetector
    from anovae.scoring import score_file

    rng = np.random.default_rng(0)
    det = VAEDetector(epochs=1, hidden_dims=(8,), latent_dim=2, random_state=0,
                      device="cpu").fit(rng.normal(size=(100, 2)))
    table = tmp_path / "t.csv"
    pd.DataFrame(rng.normal(size=(50, 2)), columns=["a", "b"]).to_csv(table, index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score_file(det, table, tmp_path / "s.csv", chunk_rows=10)
    assert [str(w.message).count("taken by position") for w in caught] == [1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", module="anovae")
        score_file(det, table, tmp_path / "s.csv", chunk_rows=10)
    assert not caught


def test_sigterm_ends_a_command_as_ctrl_c_does(tmp_path: Path) -> None:
    # `kill` during `anovae score -o out.csv` left its temporary file (SIGTERM's default ends
    # the process without running cleanup); now it exits 143, out.csv as it was, nothing left
    import os
    import signal

    from anovae.cli import _exit_on_sigterm
    from anovae.io import atomic_output

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:  # (the kill would be that's)
        pytest.skip("SIGTERM has a handler in this process")
    (tmp_path / "out.csv").write_text("OLD")
    with pytest.raises(SystemExit) as info, _exit_on_sigterm(), \
            atomic_output(tmp_path / "out.csv") as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes of the main thread
            pass
    assert info.value.code == 143
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert (tmp_path / "out.csv").read_text() == "OLD"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_an_interrupted_command_says_what_it_left(capsys: pytest.CaptureFixture[str]) -> None:
    # Ctrl-C and SIGTERM ended commands with an empty stderr: operators could not tell whether
    # the output was whole
    import typer

    from anovae.cli.app import handle_errors

    def stopped(what: BaseException) -> Any:
        @handle_errors
        def command() -> None:
            raise what
        with pytest.raises((typer.Exit, SystemExit)) as info:
            command()
        return getattr(info.value, "exit_code", getattr(info.value, "code", None))

    assert stopped(KeyboardInterrupt()) == 130
    assert capsys.readouterr().err == ("interrupted (SIGINT): no partial output was left, and an "
                                       "output the command was to replace is as it was\n")
    assert stopped(SystemExit(143)) == 143
    assert capsys.readouterr().err.startswith("stopped (SIGTERM): no partial output was left")
    assert stopped(SystemExit(0)) == 0 and capsys.readouterr().err == ""
