"""Stopping a stream: SIGINT and SIGTERM end it as the end of its input does (the lines scored
are kept, an output file committed, the summary printed; exit 130 / 143), and a reader that
closes the output (``| head -1``) ends it quietly (exit 141)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anovae import VAEDetector
from anovae.streaming import score_stream, stop_on_signals

COLS = [f"f{i}" for i in range(5)]


@pytest.fixture(autouse=True)
def _interruptible() -> Iterator[None]:
    """SIGINT as Python sets it up (a test run in the background may have it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _lines(n: int) -> list[str]:
    return [json.dumps(dict.fromkeys(COLS, 0.1 * i)) + "\n" for i in range(n)]


class _SignalOnWrite(io.StringIO):
    """An output that gets ``signum`` while its first line is being written."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum

    def write(self, text: str) -> int:
        if not self.getvalue():
            os.kill(os.getpid(), self.signum)
        return super().write(text)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_scoring_finishes_the_line_then_ends_the_stream(
        fitted_vae_frame: VAEDetector, signum: int) -> None:
    out = _SignalOnWrite(signum)
    with stop_on_signals() as stop:
        summary = score_stream(fitted_vae_frame, _lines(5), out)
    assert stop.signum == signum and summary.signal == signum
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(got) == 1 and "anomaly_score" in got[0]  # written whole; no other line read
    assert (summary.scored, summary.errors) == (1, 0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_signal_while_waiting_for_input_ends_the_stream_at_once(
        fitted_vae_frame: VAEDetector) -> None:
    def slow_input() -> Iterator[str]:
        yield from _lines(2)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a pipe with nothing more to read: the signal interrupts the wait
        yield from _lines(1)

    out = io.StringIO()
    t0 = time.perf_counter()
    with stop_on_signals():
        summary = score_stream(fitted_vae_frame, slow_input(), out)
    assert time.perf_counter() - t0 < 20
    assert (summary.scored, summary.signal) == (2, signal.SIGTERM)
    assert len(out.getvalue().splitlines()) == 2


def test_without_the_block_a_stream_knows_no_signals(fitted_vae_frame: VAEDetector) -> None:
    summary = score_stream(fitted_vae_frame, _lines(2), io.StringIO())
    assert (summary.scored, summary.signal) == (2, None)


def _stream(model: Path, *extra: str, stdout: Any = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "anovae", "score", str(model), "-",
                             "--stream", "--top-features", "0", *extra],
                            stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            # SIGINT as a terminal's Ctrl-C finds it (not ignored, as in a
                            # background job)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(check: Any, timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_stream_to_a_file_commits_what_was_scored_on_a_signal(
        tmp_path: Path, fitted_vae_frame: VAEDetector, signum: int, status: int) -> None:
    """Stopping a stream is its normal end: the output file was lost (SIGINT) or left as a
    hidden temporary file (SIGTERM)."""
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    out = tmp_path / "out.jsonl"
    proc = _stream(model, "-o", str(out))
    assert proc.stdin is not None
    proc.stdin.writelines(_lines(3))
    proc.stdin.flush()

    def scored_three() -> bool:  # each line is flushed into the temporary file as scored
        tmp = list(tmp_path.glob(".out.*.tmp.jsonl"))
        return bool(tmp) and len(tmp[0].read_text().splitlines()) == 3

    _wait_for(scored_three)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert len(out.read_text().splitlines()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "out.jsonl"]
    assert err.strip().splitlines()[-1].startswith("streamed 3 lines: 3 scored")


@pytest.mark.slow
def test_cli_stream_ends_quietly_when_its_reader_closes_the_pipe(
        tmp_path: Path, fitted_vae_frame: VAEDetector) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    proc = _stream(model)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.writelines(_lines(1))
    proc.stdin.flush()
    assert "anomaly_score" in json.loads(proc.stdout.readline())  # as `head -1` reads it
    proc.stdout.close()
    try:
        proc.stdin.writelines(_lines(50))
        proc.stdin.close()
    except BrokenPipeError:  # it has ended already
        pass
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode == 141
    assert err == ""
