"""User-acceptance findings on the CLI: outputs that name an input, folders given as files,
Dask output names, .npy outputs, option names in errors, plurals and help texts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from anovae.cli import app

runner = CliRunner()
FAST = ["--epochs", "1", "--seed", "0", "--hidden-dims", "8", "--latent-dim", "2"]


def _one_line_error(res: Any, *pieces: str) -> str:
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert res.output.startswith("error: ") and len(res.output.strip().splitlines()) == 1, \
        res.output
    assert "Traceback" not in res.output
    for piece in pieces:
        assert piece in text, res.output
    return text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("usability")
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    df["Y"] = (np.arange(n) < 10).astype(int)
    for i in range(25):  # a wide table: more columns than an error lists
        df[f"extra{i}"] = rng.normal(size=n)
    df.to_csv(root / "data.csv", index=False)
    df.to_parquet(root / "data.parquet", index=False)
    (root / "in.jsonl").write_text('{"a": 1.0}\n')
    model = root / "model.safetensors"
    res = runner.invoke(app, ["fit", str(root / "data.csv"), "-o", str(model), "--label-column",
                              "Y", *FAST])
    assert res.exit_code == 0, res.output
    np.save(root / "X.npy", rng.normal(size=(100, 3)))
    npy_model = root / "npy.safetensors"
    res = runner.invoke(app, ["fit", str(root / "X.npy"), "-o", str(npy_model), *FAST])
    assert res.exit_code == 0, res.output
    return {"root": root, "csv": root / "data.csv", "parquet": root / "data.parquet",
            "model": model, "jsonl": root / "in.jsonl", "npy": root / "X.npy",
            "npy_model": npy_model, "fit_output": res.output}  # type: ignore[dict-item]


@pytest.mark.parametrize(("args", "what"), [
    (["report", "{model}", "{csv}", "-o", "{model}"], "the model (MODEL)"),
    (["report", "{model}", "{csv}", "-o", "{csv}"], "the data (DATA)"),
    (["score", "{model}", "{csv}", "-o", "{csv}"], "the data to score (DATA)"),
    (["score", "{model}", "{csv}", "-o", "{model}"], "the model (MODEL)"),
    (["score", "{model}", "{jsonl}", "--stream", "-o", "{jsonl}"], "the JSON lines to score"),
    (["threshold", "{model}", "{csv}", "-o", "{csv}"], "the calibration data (DATA)"),
    (["fit", "{csv}", "-o", "{csv}", *FAST], "the training data (DATA)"),
    (["export", "{model}", "-o", "{model}"], "the model (MODEL)"),
    (["score", "{model}", "{csv}", "-o", "{root}/sub/../data.csv"], "the data to score"),
    (["score", "{model}", "{csv}", "-o", "{root}/link.csv"], "the data to score"),
])
def test_an_output_that_is_an_input_is_refused(args: list[str], what: str,
                                               files: dict[str, Path]) -> None:
    root = files["root"]
    (root / "sub").mkdir(exist_ok=True)
    link = root / "link.csv"
    if not link.exists():
        os.symlink(files["csv"], link)
    before = {k: files[k].read_bytes() for k in ("csv", "model", "jsonl")}
    res = runner.invoke(app, [a.format(**files) for a in args])
    _one_line_error(res, "error: cannot write", f"it is {what}", "give another output name")
    assert {k: files[k].read_bytes() for k in before} == before


def test_report_takes_an_html_name_only(files: dict[str, Path]) -> None:
    out = files["root"] / "r.txt"
    res = runner.invoke(app, ["report", str(files["model"]), str(files["csv"]), "-o", str(out)])
    _one_line_error(res, "a report is an HTML page", "ending in .html")
    assert not out.exists()
    for name in ("r.HTML", "r.htm"):
        res = runner.invoke(app, ["report", str(files["model"]), str(files["csv"]), "-o",
                                  str(files["root"] / name), "--top-k", "2"])
        assert res.exit_code == 0, res.output


@pytest.mark.parametrize(("args", "example"), [
    (["fit", "{csv}", "-o", "{root}/new/", *FAST], "model.safetensors"),
    (["score", "{model}", "{csv}", "-o", "{root}/new/"], "scores.csv"),
    (["score", "{model}", "{jsonl}", "--stream", "-o", "{root}/new/"], "scores.jsonl"),
    (["threshold", "{model}", "{csv}", "-o", "{root}/new/"], "model.safetensors"),
    (["report", "{model}", "{csv}", "-o", "{root}/new/"], "report.html"),
    (["export", "{model}", "-o", "{root}/new/"], "model.onnx"),
])
def test_an_output_ending_with_a_slash_writes_no_file_of_that_name(
        args: list[str], example: str, files: dict[str, Path]) -> None:
    res = runner.invoke(app, [a.format(**files) for a in args])
    _one_line_error(res, "ends with '/', so it names a folder", f"new/{example}'")
    assert not (files["root"] / "new").exists()


def test_figures_and_maps_are_not_written_among_the_images(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8)).save(images / f"{i}.png")
    model = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["fit", str(images), "-o", str(model), "--epochs", "1", "--set",
                              "channels=[4]", "--latent-dim", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(model), str(images), "-o", str(images / "r.html")])
    _one_line_error(res, "inside the folder DATA", "read as images")
    res = runner.invoke(app, ["score", str(model), str(images), "-o", str(tmp_path / "s.csv"),
                              "--maps", str(images / "maps")])
    _one_line_error(res, "cannot write the anomaly maps", "give --maps a folder outside it")
    assert sorted(p.name for p in images.iterdir()) == sorted(f"{i}.png" for i in range(12))
    # threshold methods that need labels say how images get them (--label-column is refused)
    res = runner.invoke(app, ["threshold", str(model), str(images), "-o",
                              str(tmp_path / "t.safetensors"), "--method", "best_f1"])
    text = _one_line_error(res, "threshold method 'best_f1' needs labels",
                           "class sub-folders of DATA", "normal, good or ok",
                           "0/1 array 'y'", ".npz")
    assert "--label-column" not in text
    res = runner.invoke(app, ["fit", str(images), "-o", str(tmp_path / "f.safetensors"), "--set",
                              "threshold=best_f1", "--epochs", "1"])  # fit uses no labels
    text = _one_line_error(res, "threshold='best_f1' needs labels",
                           "`anovae fit` trains on every image as normal", "anovae threshold")
    assert "--label-column" not in text


@pytest.mark.parametrize(("output", "pieces"), [
    ("{root}/s.csv", ["--engine dask writes a folder of Parquet parts", "not a .csv file"]),
    ("{root}/s.parquet", ["--engine dask writes a folder of Parquet parts"]),
    ("{root}", ["it holds the model (MODEL)", "replaces the whole folder"]),
    ("{root}/pq", ["it holds the data to score (DATA)", "replaces the whole folder"]),
    ("{root}/pq/out", ["inside the data to score"]),
])
def test_dask_output_names_a_new_folder(output: str, pieces: list[str],
                                        files: dict[str, Path]) -> None:
    folder = files["root"] / "pq"
    folder.mkdir(exist_ok=True)
    (folder / "part.parquet").write_bytes(files["parquet"].read_bytes())
    before = sorted(p.name for p in files["root"].iterdir())
    res = runner.invoke(app, ["score", str(files["model"]), str(folder), "--engine", "dask",
                              "-o", output.format(**files)])
    _one_line_error(res, *pieces)
    assert sorted(p.name for p in files["root"].iterdir()) == before
    assert [p.name for p in folder.iterdir()] == ["part.parquet"]


def test_dask_and_out_of_core_name_their_option_for_a_csv(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["score", str(files["model"]), str(files["csv"]), "--engine",
                              "dask", "-o", str(files["root"] / "scores")])
    _one_line_error(res, "--engine dask reads Parquet", "or score it with --engine local")
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", str(files["root"] / "o.st"),
                              "--out-of-core"])
    _one_line_error(res, "--out-of-core reads Parquet", "or fit without --out-of-core")


def test_npy_output_holds_scores_and_flags_without_top_features(files: dict[str, Path]) -> None:
    out = files["root"] / "s.npy"
    res = runner.invoke(app, ["score", str(files["npy_model"]), str(files["npy"]), "-o",
                              str(out)])
    assert res.exit_code == 0, res.output
    arr = np.load(out)
    assert arr.shape == (100, 3)  # row, anomaly_score, is_anomaly
    np.testing.assert_array_equal(arr[:, 0], np.arange(100))
    assert set(np.unique(arr[:, 2])) <= {0.0, 1.0}
    res = runner.invoke(app, ["score", str(files["npy_model"]), str(files["npy"]), "-o",
                              str(out), "--top-features", "2"])  # asked for: the clear error
    _one_line_error(res, ".npy output holds numbers only")
    help_text = " ".join(runner.invoke(app, ["score", "--help"]).output.split())
    assert "or 0 for a .npy output" in help_text


def test_a_missing_label_column_suggests_close_names_and_counts_the_rest(
        files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", str(files["root"] / "m2.st"),
                              "--label-column", "y"])
    text = _one_line_error(res, "label column 'y' is not in", "did you mean 'Y'?",
                           "... and 9 more")
    assert text.count("'extra") == 16  # 20 names shown: a, b, c, Y and 16 of 25 extras


def test_option_names_in_parameter_errors(files: dict[str, Path]) -> None:
    out = str(files["root"] / "x.st")
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", out, "--score", "bogus"])
    text = _one_line_error(res, "--score must be one of", "got 'bogus'")
    assert "score_type" not in text
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", out, "--detector", "ae",
                              "--score", "iwae"])
    text = _one_line_error(res, "--score applies to --detector vae only",
                           "the plain autoencoder (--detector ae) has one score, the "
                           "reconstruction error")
    assert "AEDetector has no parameter" not in text
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", out, "--detector", "ae",
                              "--beta", "2", "--likelihood", "bernoulli"])
    _one_line_error(res, "--likelihood, --beta apply to --detector vae only")
    res = runner.invoke(app, ["report", str(files["model"]), str(files["csv"]), "-o",
                              str(files["root"] / "r.html"), "--explain-k", "0"])
    assert res.exit_code == 2 and "'--explain-k'" in res.output


def test_counts_of_one_are_singular(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", str(files["root"] / "e.st"),
                              "--label-column", "Y", *FAST])
    assert res.exit_code == 0 and "(1 epoch, best 1)" in res.output, res.output
    one = files["root"] / "one.csv"
    pd.read_csv(files["csv"]).head(1).to_csv(one, index=False)
    res = runner.invoke(app, ["threshold", str(files["model"]), str(one), "-o",
                              str(files["root"] / "t.st"), "--method", "contamination",
                              "--param", "0.1", "--label-column", "Y"])
    assert res.exit_code == 0, res.output
    assert "set on 1 row);" in res.output and "of 1 row of DATA" in res.output
    bad = files["root"] / "bad.jsonl"
    bad.write_text('{"a":\n')
    res = runner.invoke(app, ["score", str(files["model"]), str(bad), "--stream"])
    assert res.exit_code == 0
    assert "streamed 1 line: 0 scored (0 anomalies), 1 error in" in res.stderr
    from anovae._text import plural

    assert (plural(1, "row"), plural(2, "row"), plural(0, "anomaly", "anomalies")) == (
        "1 row", "2 rows", "0 anomalies")


def test_out_of_core_says_anomalous_only_with_labels(files: dict[str, Path]) -> None:
    res = runner.invoke(app, ["fit", str(files["parquet"]), "-o", str(files["root"] / "o.st"),
                              "--out-of-core", "--exclude", "Y", *FAST])
    assert res.exit_code == 0, res.output
    assert "training rows (held-out rows not counted)" in res.output
    res = runner.invoke(app, ["fit", str(files["parquet"]), "-o", str(files["root"] / "o.st"),
                              "--out-of-core", "--label-column", "Y", *FAST])
    assert res.exit_code == 0, res.output
    assert "(held-out and anomalous rows not counted)" in res.output


_COMMANDS = ["fit", "score", "evaluate", "threshold", "report", "serve", "export", "demo"]


def test_help_lists_every_command_and_shows_no_value_for_flags() -> None:
    top = runner.invoke(app, ["--help"], terminal_width=100).output
    assert "fit, score, evaluate, demo" not in top
    listed = [line.split()[0] for line in top.split("Commands:")[1].splitlines() if line.strip()]
    assert set(listed) == {*_COMMANDS, "bench"}
    demo_line = next(line for line in top.splitlines() if line.strip().startswith("demo"))
    assert demo_line.rstrip().endswith("flag the malignant ones.")  # not cut by a line break
    for command in _COMMANDS:
        text = runner.invoke(app, [command, "--help"], terminal_width=100).output
        assert "<bool>" not in text and "(issue" not in text, (command, text)
    score_help = " ".join(runner.invoke(app, ["score", "--help"]).output.split())
    assert "required unless --stream (default: stdout)" not in score_help
    assert "With --stream: a JSON-lines file, by default standard output" in score_help


def test_npy_output_of_a_mixed_model_and_of_integer_ids(tmp_path: Path) -> None:
    # both failed with "non-numeric columns": the mixed model's unseen_category (text), and
    # an integer id column, which is read as text (an id of 007 stays 007 in a CSV output)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"rid": np.arange(1000, 1200), "amount": rng.normal(size=200),
                       "city": rng.choice(["a", "b"], 200)})
    df.to_csv(tmp_path / "t.csv", index=False)
    model = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(model), "--epochs", "1",
                              "--id-column", "rid", "--seed", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "s.npy"
    res = runner.invoke(app, ["score", str(model), str(tmp_path / "t.csv"), "-o", str(out),
                              "--id-column", "rid"])
    assert res.exit_code == 0, res.output
    arr = np.load(out)
    assert arr.shape == (200, 3)  # rid, anomaly_score, is_anomaly
    np.testing.assert_array_equal(arr[:, 0], np.arange(1000, 1200))


def test_fit_counts_the_rows_held_out_for_calibration(tmp_path: Path) -> None:
    # "445 labelled normal train the model" while 89 of them were held out for the fpr threshold
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(500, 3)), columns=list("abc"))
    df["y"] = (rng.random(500) < 0.1).astype(int)
    df.to_csv(tmp_path / "t.csv", index=False)
    res = runner.invoke(app, ["fit", str(tmp_path / "t.csv"), "-o", str(tmp_path / "m.st"),
                              "--label-column", "y", "--epochs", "1", "--set", "threshold=fpr",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    normal = int((df["y"] == 0).sum())
    held = round(0.2 * normal)
    assert (f"{normal} labelled normal, {held} of them held out to calibrate the threshold; "
            f"{normal - held} train the model") in res.output


@pytest.mark.parametrize(("args", "pieces"), [
    (["--workers", "2"], ("--workers applies to --engine dask only", "add --engine dask")),
    (["--scheduler", "tcp://127.0.0.1:1"], ("--scheduler applies to --engine dask only",)),
    (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
     ("--scheduler and --workers apply to --engine dask only", "leave them out")),
    (["--engine", "dask", "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"],
     ("--workers sizes the local cluster", "give one of the two")),
])
def test_cluster_options_are_refused_where_they_would_be_ignored(
        args: list[str], pieces: tuple[str, ...], files: dict[str, Path]) -> None:
    out = files["root"] / "cluster-out"
    res = runner.invoke(app, ["score", str(files["model"]), str(files["parquet"]), "-o",
                              str(out), *args])
    _one_line_error(res, *pieces)
    assert not out.exists()  # refused before any scoring (no cluster was contacted)


def test_stream_refuses_the_options_it_would_ignore(files: dict[str, Path]) -> None:
    score = ["score", str(files["model"]), str(files["jsonl"]), "--stream"]
    _one_line_error(runner.invoke(app, [*score, "--engine", "dask"]),
                    "--stream scores JSON lines", "give one of the two")
    _one_line_error(runner.invoke(app, [*score, "--workers", "2"]),
                    "--workers applies to --engine dask only")
    _one_line_error(runner.invoke(app, [*score, "--maps", str(files["root"] / "maps")]),
                    "--maps is not available with --stream")


def test_out_of_core_sizes_are_refused_without_out_of_core(files: dict[str, Path]) -> None:
    out = files["root"] / "in-memory.st"
    for args, piece in ((["--chunk-rows", "50"], "--chunk-rows applies"),
                        (["--sample-rows", "50"], "--sample-rows applies"),
                        (["--chunk-rows", "50", "--sample-rows", "50"],
                         "--chunk-rows and --sample-rows apply")):
        res = runner.invoke(app, ["fit", str(files["parquet"]), "-o", str(out), "--exclude",
                                  "Y", *args, *FAST])
        _one_line_error(res, piece, "to --out-of-core fits only", "add --out-of-core")
    assert not out.exists()


def test_out_of_core_sample_rows_sets_the_sample(files: dict[str, Path]) -> None:
    from anovae.persistence import load

    out = files["root"] / "sampled.st"
    res = runner.invoke(app, ["fit", str(files["parquet"]), "-o", str(out), "--out-of-core",
                              "--exclude", "Y", "--sample-rows", "40", "--chunk-rows", "64",
                              *FAST])
    assert res.exit_code == 0, res.output
    n = len(load(out).decision_scores_)  # the scores of the uniform sample (about 40 of 200)
    assert 15 <= n <= 70, n
    res = runner.invoke(app, ["fit", str(files["parquet"]), "-o", str(out), "--out-of-core",
                              "--exclude", "Y", *FAST])
    assert res.exit_code == 0, res.output
    assert len(load(out).decision_scores_) == 200  # the default sample holds every row


def test_fit_says_when_the_validation_loss_was_still_falling(files: dict[str, Path]) -> None:
    from anovae.training import still_improving

    assert still_improving(5, 5) and not still_improving(5, 3) and not still_improving(1, 1)
    out = str(files["root"] / "budget.st")
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", out, "--label-column", "Y",
                              "--epochs", "3", "--seed", "0", "--hidden-dims", "8"])
    assert res.exit_code == 0 and "(3 epochs, best 3)" in res.stdout, res.output
    assert "note: the validation loss was still falling at the last epoch: --epochs 6" in \
        res.stderr
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", out, "--label-column", "Y", *FAST])
    assert res.exit_code == 0 and "still falling" not in res.output  # one epoch: nothing to say
    res = runner.invoke(app, ["fit", str(files["csv"]), "-o", out, "--label-column", "Y",
                              "--epochs", "3", "--seed", "0", "--hidden-dims", "8",
                              "--set", "validation_fraction=0"])
    assert res.exit_code == 0 and "still falling" not in res.output  # the training loss: no


def test_patterns_in_the_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(2):
        pd.DataFrame(rng.normal(size=(30, 2)), columns=["a", "b"]).to_csv(
            logs / f"day-{i}.csv", index=False)
    (logs / "day-2.csv").write_text("a,b\n")  # a header alone: left out with a warning
    pattern, model = str(logs / "day-*.csv"), str(tmp_path / "m.st")
    res = runner.invoke(app, ["fit", pattern, "-o", model, *FAST])
    assert res.exit_code == 0 and "on 60 rows" in res.stdout, res.output
    assert "note: 3 tables match" in res.stderr
    assert "1 of the files matched by" in res.stderr and "day-2.csv" in res.stderr
    # an output the pattern would match: read as data the next time
    _one_line_error(runner.invoke(app, ["score", model, pattern, "-o", str(logs / "day-9.csv")]),
                    "it matches the pattern of the data to score (DATA)")
    _one_line_error(runner.invoke(app, ["score", model, str(logs / "*.csv"), "-o",
                                        str(tmp_path / "out"), "--engine", "dask"]),
                    "--engine dask reads Parquet: the pattern", "matches csv files")
    _one_line_error(runner.invoke(app, ["fit", pattern, "-o", model, "--out-of-core", *FAST]),
                    "--out-of-core reads Parquet: the pattern")
    _one_line_error(runner.invoke(app, ["score", model, pattern, "--stream"]),
                    "--stream reads one JSON-lines file")
    _one_line_error(runner.invoke(app, ["score", model, str(logs), "--stream"]),
                    "--stream reads one JSON-lines file", "is a folder")
    (logs / "x.png").write_bytes(b"\x89PNG")
    _one_line_error(runner.invoke(app, ["score", model, str(logs / "*.png"), "-o",
                                        str(tmp_path / "p.csv")]),
                    "matches images", "images are read from their folder")
    res = runner.invoke(app, ["score", model, pattern, "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 0 and "scored 60 rows" in res.stdout, res.output
