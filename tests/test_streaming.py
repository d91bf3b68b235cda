"""Streaming mode: JSON lines in, one scored JSON line out per line, errors in-line; library
(:func:`anovae.streaming.score_stream`) and CLI (``anovae score MODEL - --stream``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from anovae import VAEDetector
from anovae.cli import app
from anovae.streaming import RecordScorer, score_stream

COLS = [f"f{i}" for i in range(5)]


def lines_for(X: np.ndarray) -> list[str]:
    return [json.dumps(dict(zip(COLS, map(float, row), strict=True))) for row in X]


def test_each_line_scored_like_the_detector(fitted_vae_frame: VAEDetector, data: Any) -> None:
    X = data.X_test[:15]
    out = io.StringIO()
    summary = score_stream(fitted_vae_frame, io.StringIO("\n".join(lines_for(X)) + "\n"), out)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [g["line"] for g in got] == list(range(1, 16))
    # one row per forward pass here, the whole batch there: equal up to BLAS blocking
    np.testing.assert_allclose([g["anomaly_score"] for g in got],
                               fitted_vae_frame.decision_function(data.frame(X)), rtol=1e-6)
    assert [g["is_anomaly"] for g in got] == fitted_vae_frame.predict(
        data.frame(X)).astype(bool).tolist()
    assert all(len(g["top_features"]) == 3 for g in got)
    assert (summary.scored, summary.errors) == (15, 0)
    assert summary.anomalies == sum(g["is_anomaly"] for g in got)


def test_bad_lines_get_an_error_and_the_stream_goes_on(fitted_vae_frame: VAEDetector,
                                                       data: Any) -> None:
    good = lines_for(data.X_test[:2])
    bad = ['{"f0": 1', '{"f0": 1.0}', '{"f0": NaN, "f1": 0, "f2": 0, "f3": 0, "f4": 0}',
           "42", '"text"', "[1, 2]", '{"f0": null, "f1": 0, "f2": 0, "f3": 0, "f4": 0}',
           '{"f0": "x", "f1": 0, "f2": 0, "f3": 0, "f4": 0}', "[" * 50_000]
    text = "\n".join([good[0], *bad, "", "   ", good[1]]) + "\n"
    out = io.StringIO()
    summary = score_stream(fitted_vae_frame, io.StringIO(text), out)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(got) == 2 + len(bad)  # blank lines are skipped
    assert "anomaly_score" in got[0] and "anomaly_score" in got[-1]
    assert got[-1]["line"] == len(bad) + 4
    errors = got[1:-1]
    assert all(set(e) == {"line", "error"} for e in errors)
    messages = [e["error"] for e in errors]
    assert "malformed JSON" in messages[0]
    assert messages[1].startswith("this line lacks columns") and "'f1'" in messages[1]
    assert "NaN" in messages[2]
    assert "JSON object" in messages[3] and "JSON object" in messages[4]
    assert "shape" in messages[5]
    assert messages[6] == "this line, column 'f0': null (missing values are not allowed)"
    assert "not a number" in messages[7]
    assert (summary.scored, summary.errors) == (2, len(bad))


@pytest.mark.parametrize("as_file", [True, False])
def test_overlong_lines_get_an_error_and_are_skipped(fitted_vae_frame: VAEDetector, data: Any,
                                                     as_file: bool) -> None:
    good = lines_for(data.X_test[:2])
    long_line = json.dumps({"pad": "x" * 500})
    text = "\n".join([good[0], long_line, good[1]]) + "\n"
    out = io.StringIO()
    src = io.StringIO(text) if as_file else text.splitlines(keepends=True)
    summary = score_stream(fitted_vae_frame, src, out, max_line_chars=200)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [g["line"] for g in got] == [1, 2, 3]
    assert got[1] == {"line": 2, "error": "the line is longer than 200 characters"}
    assert "anomaly_score" in got[0] and "anomaly_score" in got[2]
    assert (summary.scored, summary.errors) == (2, 1)


def test_undecodable_bytes_spoil_their_line_only(fitted_vae_frame: VAEDetector,
                                                 data: Any) -> None:
    good = [line.encode() for line in lines_for(data.X_test[:2])]
    bad = json.dumps({c: 0.0 for c in COLS}).encode().replace(b"0.0}", b'"\xff"}')
    raw = b"\n".join([good[0], bad, good[1]]) + b"\n"
    src = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")  # what open() and stdin give
    out = io.StringIO()
    summary = score_stream(fitted_vae_frame, src, out)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [g["line"] for g in got] == [1, 2, 3]
    pos = bad.index(b"\xff") + 1
    assert got[1] == {"line": 2, "error": "the line is not valid utf-8 text: byte 0xff at "
                                          f"character {pos} cannot be decoded"}
    np.testing.assert_allclose([got[0]["anomaly_score"], got[2]["anomaly_score"]],
                               fitted_vae_frame.decision_function(data.frame(data.X_test[:2])),
                               rtol=1e-6)
    assert (summary.scored, summary.errors) == (2, 1)


@pytest.mark.parametrize("from_stdin", [True, False])
def test_cli_stream_goes_on_after_undecodable_bytes(tmp_path: Path,
                                                    fitted_vae_frame: VAEDetector, data: Any,
                                                    from_stdin: bool) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    raw = b"\n".join([lines_for(data.X_test[:1])[0].encode(), b'{"f0": "\xff\xfe"}',
                      lines_for(data.X_test[1:2])[0].encode()]) + b"\n"
    src = tmp_path / "in.jsonl"
    src.write_bytes(raw)
    args = ["score", str(model), "-" if from_stdin else str(src), "--stream"]
    res = CliRunner().invoke(app, args, input=raw if from_stdin else None)
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["line"] for g in got] == [1, 2, 3]
    assert "anomaly_score" in got[0] and "anomaly_score" in got[2]
    assert got[1]["error"].startswith("the line is not valid utf-8 text: byte 0xff at character 9")
    assert "2 scored" in res.stderr


def test_ids_explain_and_arrays(fitted_vae_frame: VAEDetector, data: Any) -> None:
    rec = dict(zip(COLS, data.X_test[0].tolist(), strict=True))
    lines = [json.dumps({**rec, "id": "a-1"}), json.dumps(data.X_test[0].tolist())]
    out = io.StringIO()
    score_stream(fitted_vae_frame, lines, out, top_k=2, explain=True, id_field="id")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["id"] == "a-1" and "id" not in second
    assert first["anomaly_score"] == second["anomaly_score"]
    assert set(first["top_features"][0]) == {"feature", "contribution", "excess", "value",
                                             "expected"}
    assert len(first["top_features"]) == 2
    # an id of NaN (a JSON extension the input may use) was written back as NaN: not JSON
    out = io.StringIO()
    line = json.dumps({**rec, "id": float("nan")})
    score_stream(fitted_vae_frame, [line, line.replace("NaN", "[1, Infinity]")], out,
                 id_field="id")
    ids = [json.loads(o, parse_constant=lambda c: pytest.fail(c))["id"]
           for o in out.getvalue().splitlines()]
    assert ids == [None, [1, None]]


def test_a_model_without_typical_contributions_reports_null_excess(
        fitted_vae_frame: VAEDetector, data: Any) -> None:
    import copy

    det = copy.deepcopy(fitted_vae_frame)
    del det.feature_baselines_  # as a file saved by anovae < 0.4
    out = io.StringIO()
    score_stream(det, [json.dumps(data.X_test[0].tolist())], out, top_k=5)
    top = json.loads(out.getvalue())["top_features"]
    assert [t["excess"] for t in top] == [None] * 5
    assert [t["contribution"] for t in top] == sorted((t["contribution"] for t in top),
                                                      reverse=True)


class _Pipe(io.StringIO):
    """An output stream that records the input position at each flush."""

    def __init__(self, source: io.StringIO) -> None:
        super().__init__()
        self.source = source
        self.flushed_at: list[int] = []

    def flush(self) -> None:
        self.flushed_at.append(self.source.tell())


def test_each_line_is_flushed_before_the_next_is_read(fitted_vae_frame: VAEDetector,
                                                      data: Any) -> None:
    src = io.StringIO("\n".join(lines_for(data.X_test[:3])) + "\n")
    out = _Pipe(src)
    score_stream(fitted_vae_frame, src, out)
    ends = [i for i, ch in enumerate(src.getvalue()) if ch == "\n"]
    assert out.flushed_at == [e + 1 for e in ends]


def test_record_scorer_forms_agree(fitted_vae_frame: VAEDetector, data: Any) -> None:
    scorer = RecordScorer(fitted_vae_frame)
    X = data.X_test[:4]
    recs = [json.loads(line) for line in lines_for(X)]
    a = scorer.rows_from_records(recs)
    b = scorer.rows_from_columns({c: X[:, j].tolist() for j, c in enumerate(COLS)})
    c = scorer.rows_from_instances(X.tolist())
    np.testing.assert_array_equal(a, X)
    np.testing.assert_array_equal(b, X)
    np.testing.assert_array_equal(c, X)


@pytest.fixture(scope="module")
def fitted_mixed(make_detector: Callable[..., Any]) -> VAEDetector:
    """A tiny VAE on a table with a number, a category and a boolean."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame({"amount": rng.normal(50, 10, n), "country": rng.choice(["FR", "DE"], n),
                          "weekend": rng.random(n) < 0.3})
    return make_detector(VAEDetector).fit(frame)


MIXED_LINES = ['{"amount": 52.0, "country": "FR", "weekend": false}',
               '{"amount": null, "country": "XX", "weekend": true}',  # an unseen category
               '["49.0", "YY", 2]',  # 2 in a boolean column: unseen too
               '{"amount": 1.0, "country": "FR"}']  # an error line: no field


def test_mixed_lines_name_their_unseen_categories(fitted_mixed: VAEDetector,
                                                  fitted_vae_frame: VAEDetector,
                                                  data: Any) -> None:
    out = io.StringIO()
    score_stream(fitted_mixed, MIXED_LINES, out, top_k=1)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [g.get("unseen_category") for g in got] == [[], ["country"],
                                                       ["country", "weekend"], None]
    assert "error" in got[3]
    out = io.StringIO()
    score_stream(fitted_vae_frame, lines_for(data.X_test[:1]), out)
    assert "unseen_category" not in json.loads(out.getvalue())  # a numeric table: no field


def test_cli_stream_names_unseen_categories(tmp_path: Path, fitted_mixed: VAEDetector) -> None:
    model = fitted_mixed.save(tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["score", str(model), "-", "--stream"],
                             input="\n".join(MIXED_LINES[:3]) + "\n")
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [g["unseen_category"] for g in got] == [[], ["country"], ["country", "weekend"]]
    # error lines speak of the CLI's options, as the CLI's other errors do
    res = CliRunner().invoke(app, ["score", str(model), "-", "--stream"],
                             input='{"amount": "lots", "country": "FR", "weekend": false}\n')
    error = json.loads(res.stdout)["error"]
    assert "refit with --categorical amount" in error and "categorical=" not in error


def test_cli_stream_from_stdin(tmp_path: Path, fitted_vae_frame: VAEDetector, data: Any) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    text = "\n".join([*lines_for(data.X_test[:3]), "not json"]) + "\n"
    res = CliRunner().invoke(app, ["score", str(model), "-", "--stream", "--top-features", "1"],
                             input=text)
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(got) == 4 and "error" in got[3]
    assert all(len(g["top_features"]) == 1 for g in got[:3])
    assert "3 scored" in res.stderr


def test_cli_stream_file_to_file(tmp_path: Path, fitted_vae_frame: VAEDetector,
                                 data: Any) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"tx": f"t{i}", **json.loads(line)})
             for i, line in enumerate(lines_for(data.X_test[:3]))]
    src.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(app, ["score", str(model), str(src), "--stream", "-o",
                                   str(tmp_path / "out.jsonl"), "--explain", "2",
                                   "--id-column", "tx"])
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(got) == 3 and "expected" in got[0]["top_features"][0]
    assert [g["id"] for g in got] == ["t0", "t1", "t2"]


def test_cli_score_still_needs_an_output_without_stream(tmp_path: Path,
                                                        fitted_vae_frame: VAEDetector) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["score", str(model), str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "--output" in res.output


@pytest.mark.slow
def test_stream_answers_each_line_before_stdin_closes(tmp_path: Path,
                                                      fitted_vae_frame: VAEDetector,
                                                      data: Any) -> None:
    """A real pipe: the answer to line 1 arrives while stdin is still open."""
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "anovae", "score", str(model), "-",
                             "--stream"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(lines_for(data.X_test[:1])[0] + "\n")
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())  # blocks until that line is answered
        assert first["line"] == 1 and "anomaly_score" in first
        proc.stdin.write("oops\n")
        proc.stdin.flush()
        assert "error" in json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=60)
    assert proc.returncode == 0


# -- JSON integers in images, odd lines, messages ----------------------------------------------
@pytest.fixture(scope="module")
def fitted_image_ae() -> Any:
    """A tiny convolutional autoencoder on 8x8 grey images (binarised and 8-bit alike)."""
    from anovae import ImageAEDetector

    rng = np.random.default_rng(0)
    images = (rng.random((32, 8, 8)) < 0.5).astype(np.float32)
    return ImageAEDetector(channels=(4, 8), latent_dim=4, epochs=1, random_state=0,
                           device="cpu").fit(images)


def test_json_integer_images_are_read_by_their_range(fitted_image_ae: Any) -> None:
    """JSON has no int/float distinction: a binarised image sent as 0/1 integers is the same
    image as 0.0/1.0 floats (it was read as 8-bit pixels, i.e. divided by 255)."""
    rng = np.random.default_rng(1)
    binary = (rng.random((8, 8)) < 0.5).astype(int)
    pixels = rng.integers(0, 256, (8, 8))
    lines = [json.dumps(binary.tolist()), json.dumps(binary.astype(float).tolist()),
             json.dumps(pixels.tolist())]
    out = io.StringIO()
    score_stream(fitted_image_ae, lines, out, top_k=0)
    ints, floats, eight_bit = (json.loads(line)["anomaly_score"]
                               for line in out.getvalue().splitlines())
    assert ints == floats
    want = [fitted_image_ae.decision_function(binary[None].astype(np.float32))[0],
            fitted_image_ae.decision_function(pixels[None].astype(np.uint8))[0]]
    np.testing.assert_allclose([floats, eight_bit], want, rtol=1e-6)
    # image by image: an 8-bit image beside a binarised one keeps its divisor, and the other way
    scorer = RecordScorer(fitted_image_ae)
    both = scorer.rows_from_instances([binary.tolist(), pixels.tolist()])
    np.testing.assert_array_equal(both[0, 0], binary.astype(np.float32))
    np.testing.assert_array_equal(both[1:], scorer.rows_from_instances([pixels.tolist()]))
    np.testing.assert_array_equal(both[1:], fitted_image_ae._validate(
        pixels[None].astype(np.uint8), fitted_image_ae.schema_)[0])
    # a typed array is read by its dtype: int64 pixels are 8-bit, whatever their values
    typed = scorer.rows_from_instances(np.asarray([binary], dtype=np.int64))
    np.testing.assert_allclose(typed[0, 0], binary / 255, rtol=1e-6)


def test_a_byte_order_mark_before_the_first_line_is_skipped(fitted_vae_frame: VAEDetector,
                                                             data: Any) -> None:
    out = io.StringIO()
    summary = score_stream(fitted_vae_frame, io.StringIO(
        "\ufeff" + "\n".join(lines_for(data.X_test[:2])) + "\n"), out)
    assert (summary.scored, summary.errors) == (2, 0), out.getvalue()


def test_overlong_integers_are_malformed_json_lines(fitted_vae_frame: VAEDetector) -> None:
    out = io.StringIO()
    summary = score_stream(fitted_vae_frame, ['{"f0": 1' + "0" * 5000 + "}"], out)
    got = json.loads(out.getvalue())
    assert got == {"line": 1, "error": "malformed JSON: an integer of more than 4300 digits "
                                       "(too long to read as a number)"}
    assert summary.errors == 1


def test_mixed_model_messages_name_this_line(fitted_mixed: VAEDetector) -> None:
    """The detector's own messages speak of its input, "X" ("X contains infinite values in
    'amount' (1 rows)"): in a stream that is the line."""
    lines = ['{"amount": Infinity, "country": "FR", "weekend": false}',
             '{"amount": "lots", "country": "FR", "weekend": false}']
    out = io.StringIO()
    score_stream(fitted_mixed, lines, out)
    inf, text = (json.loads(line)["error"] for line in out.getvalue().splitlines())
    assert inf == ("this line contains infinite values in 'amount'; replace them with missing "
                   "values (NaN or None; null in JSON)")
    assert text.startswith("column 'amount' of this line holds text (e.g. 'lots')")


def test_cli_stream_summary_counts_errors_and_exits_0(tmp_path: Path,
                                                      fitted_vae_frame: VAEDetector) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["score", str(model), "-", "--stream"],
                             input="oops\n[1]\n")
    assert res.exit_code == 0, res.output
    assert res.stderr.strip().startswith("streamed 2 lines: 0 scored (0 anomalies), 2 errors")
    # --fail-on-errors: status 1 when a line failed (a batch job could not tell from $?), after
    # the summary and with the good lines written; 0 when none failed
    good = json.dumps(dict.fromkeys(fitted_vae_frame.feature_names_in_, 0.0))
    out = tmp_path / "s.jsonl"
    res = CliRunner().invoke(app, ["score", str(model), "-", "--stream", "--fail-on-errors",
                                   "-o", str(out)], input=f"{good}\noops\n")
    assert res.exit_code == 1, res.output
    assert "1 scored (0 anomalies), 1 error" in res.stderr
    assert len(out.read_text().splitlines()) == 2 and "anomaly_score" in out.read_text()
    res = CliRunner().invoke(app, ["score", str(model), "-", "--stream", "--fail-on-errors"],
                             input=f"{good}\n")
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["score", str(model), "x.csv", "-o", "y.csv",
                                   "--fail-on-errors"])
    assert res.exit_code == 2 and "--fail-on-errors applies to --stream" in res.output
