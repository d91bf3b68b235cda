"""The CLI, in-process (Typer's CliRunner): fit, score, evaluate, demo, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import anovae
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
    assert scored["id"].tolist() == df["id"].tolist()
    np.testing.assert_allclose(scored["anomaly_score"].to_numpy(), expected, rtol=1e-6)
    assert scored["is_anomaly"].tolist() == (expected > det.threshold_).astype(int).tolist()
    assert set(scored["top_feature_1"]) <= {f"f{i}" for i in range(5)}
    assert (scored["top_contribution_1"] >= scored["top_contribution_2"]).all()


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
        (["fit", "{table}", "-o", "{out}", "--learning-rate", "-1"], "learning_rate"),
        (["score", "{not_model}", "{table}", "-o", "{tmp}/s.csv"], "not a readable anovae model"),
        (["score", "{model}", "{narrow}", "-o", "{tmp}/s.csv"], "lacks columns"),
        (["score", "{model}", "{table}", "-o", "{tmp}/x.xlsx"], "unsupported output type"),
        (["evaluate", "{model}", "{table}", "--label-column", "f0"], "must hold 0"),
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
