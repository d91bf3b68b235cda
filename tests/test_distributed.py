"""Data-parallel training (DDP) on 2 CPU processes with gloo, as torchrun runs it.

- ``torchrun -m anovae fit`` trains, rank 0 alone writes the model, and a plain autoencoder's
  scores equal those of a single-process model with the same seed to 1e-5 relative: the ranks
  split every global batch and DDP averages share-weighted gradients, so only the order of
  floating-point sums differs (measured: ~1e-7).
- A VAE's ranks draw their own reparameterisation noise, so its DDP model is another draw of the
  same training, not the same numbers: the stated tolerance is on what the model does (the
  planted anomalies rank the same: AUROC within 0.05, Spearman correlation of scores >= 0.9).
- Out of core, each rank streams its own row groups of a Parquet folder (the model trains).
- A rank that crashes mid-training ends the other with a clear TrainingError, within a bound.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from anovae import AEDetector, VAEDetector, load
from anovae.distributed import current, is_main_process, launched_by_torchrun, shared_seed
from conftest import make_data

pytestmark = pytest.mark.skipif(
    not __import__("torch").distributed.is_available(), reason="torch.distributed unavailable")

SMALL = {"hidden_dims": (16, 8), "latent_dim": 2, "epochs": 5, "batch_size": 64,
         "device": "cpu", "random_state": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"),
               **extra)
    return env


def _start_ranks(script: Path, world: int = 2) -> list[subprocess.Popen[str]]:
    """``world`` processes of ``script`` with torchrun's variables (what `torchrun
    --nproc-per-node 2` starts, without its agent), output captured."""
    port = str(_free_port())
    return [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                                      ANOVAE_DIST_TIMEOUT="30"))
            for r in range(world)]


def test_not_distributed_outside_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert current() is None and is_main_process() and not launched_by_torchrun()
    assert shared_seed(123) == 123
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert launched_by_torchrun()


def test_fit_distributed_without_torchrun_is_a_clear_error(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from anovae.cli import app

    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    data = make_data(n_train=50, d=3)
    path = tmp_path / "train.csv"
    data.frame(data.X_train).to_csv(path, index=False)
    res = CliRunner().invoke(app, ["fit", str(path), "-o", str(tmp_path / "m.safetensors"),
                                   "--distributed"])
    assert res.exit_code == 2
    assert "torchrun" in res.output
    assert not (tmp_path / "m.safetensors").exists()


_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from conftest import make_data
    from anovae import VAEDetector
    from anovae.cli import app
    from anovae.distributed import process_group, save_on_main
    from anovae.outofcore import fit_table

    rank = int(os.environ["RANK"])
    data = make_data(n_train=600, d=6)
    params = dict(hidden_dims=(16, 8), latent_dim=2, epochs=5, batch_size=64, device="cpu",
                  random_state=0, n_samples=4)

    class Crashing(VAEDetector):
        def _loss(self, net, xb, beta, g):
            self.calls_ = getattr(self, "calls_", 0) + 1
            if rank == 1 and self.calls_ == 15:
                os._exit(3)  # a hard crash in the middle of an epoch
            return super()._loss(net, xb, beta, g)

    with process_group() as ctx:
        # `anovae fit` sees torchrun's variables and trains with DDP (the group is joined here
        # only so that one job of two processes runs every check: start-up costs seconds)
        code = app(["fit", {train!r}, "-o", {model!r} + ".ae", "--detector", "ae", "--seed", "0",
                    "--epochs", "5", "--device", "cpu", "--hidden-dims", "16,8",
                    "--latent-dim", "2", "--batch-size", "64"], standalone_mode=False)
        assert code is None, code
        det = VAEDetector(**params).fit(data.X_train)
        save_on_main(det, {model!r})
        with open({out!r} + f".{{rank}}.json", "w") as f:
            json.dump({{"epochs": det.n_epochs_, "val": det.history_["val_loss"]}}, f)
        # out of core: each rank streams its own row groups of the Parquet folder
        streamed = fit_table(VAEDetector(**params), {folder!r}, chunk_rows=100)
        save_on_main(streamed, {model!r} + ".ooc")
        # one file of one row group (what pandas writes): the ranks stripe its rows
        one = fit_table(VAEDetector(**params), {single!r}, chunk_rows=100)
        save_on_main(one, {model!r} + ".one")
        Crashing(**params).fit(data.X_train)
""")


def test_ddp_on_two_processes(tmp_path: Path) -> None:
    """One job of 2 processes with torchrun's variables (what `torchrun --nproc-per-node 2`
    starts, without its agent): the CLI fit, a VAE, an out-of-core fit, then a crash."""
    model, out = tmp_path / "vae.safetensors", tmp_path / "history"
    script = tmp_path / "job.py"
    data = make_data(n_train=600, d=6)
    train = tmp_path / "train.csv"
    data.frame(data.X_train).to_csv(train, index=False)
    folder = tmp_path / "parquet"
    folder.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(600), 2)):
        data.frame(data.X_train[idx]).to_parquet(folder / f"{i}.parquet", row_group_size=60)
    single = tmp_path / "one.parquet"
    data.frame(data.X_train).to_parquet(single)
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).parent), model=str(model),
                                     out=str(out), folder=str(folder), train=str(train),
                                     single=str(single)))
    procs = _start_ranks(script)
    t0 = time.monotonic()
    outputs = [p.communicate(timeout=150) for p in procs]
    elapsed = time.monotonic() - t0
    assert procs[1].returncode == 3  # the crash
    assert procs[0].returncode == 1, outputs[0][1][-3000:]
    err = outputs[0][1]
    assert "TrainingError: rank 0 of 2: training failed because another rank stopped" in err
    assert elapsed < 120  # no hang: gloo sees the closed connection (timeout: 30 s at most)

    # the CLI: rank 0 alone reported and wrote the model; a plain autoencoder trained with DDP
    # equals the single-process one up to the order of floating-point sums
    assert "model written to" in outputs[0][0] and "model written to" not in outputs[1][0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    ae = load(f"{model}.ae")
    single_ae = AEDetector(**SMALL).fit(data.frame(data.X_train))
    X = data.frame(data.X_test)
    np.testing.assert_allclose(ae.decision_function(X), single_ae.decision_function(X),
                               rtol=1e-5)
    assert ae.n_epochs_ == single_ae.n_epochs_
    np.testing.assert_allclose(ae.history_["val_loss"], single_ae.history_["val_loss"],
                               rtol=1e-5)

    # the first fit worked: both ranks stopped together on the same all-reduced losses
    h0, h1 = (json.loads(Path(f"{out}.{r}.json").read_text()) for r in range(2))
    assert h0 == h1
    ddp = load(model)
    single = VAEDetector(**SMALL, n_samples=4).fit(data.X_train)
    s_ddp, s_single = ddp.decision_function(data.X_test), single.decision_function(data.X_test)
    auc_ddp, auc_single = (roc_auc_score(data.y_test, s) for s in (s_ddp, s_single))
    assert auc_ddp > 0.9 and abs(auc_ddp - auc_single) <= 0.05
    assert spearmanr(s_ddp, s_single).statistic >= 0.9
    streamed = load(f"{model}.ooc")  # the out-of-core DDP model
    assert roc_auc_score(data.y_test, streamed.decision_function(data.X_test)) > 0.9
    one = load(f"{model}.one")  # one row group: failed with "too few training rows" before
    assert roc_auc_score(data.y_test, one.decision_function(data.X_test)) > 0.9


def test_ranks_that_read_different_data_stop_with_one_line(tmp_path: Path) -> None:
    # fewer rows on one rank ended in a C++ abort of gloo ("collective mismatch"), other
    # values trained with another scaler on that rank; now each rank says the same line
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        import numpy as np
        from anovae import TrainingError, VAEDetector
        from anovae.distributed import process_group
        rank = int(os.environ["RANK"])
        X = np.random.default_rng(0).normal(size=(200 - 10 * rank, 3))
        with process_group():
            try:
                VAEDetector(**{SMALL!r}).fit(X)
            except TrainingError as exc:
                print(exc)
                sys.exit(4)
    """))
    procs = _start_ranks(script)
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 4, err[-2000:]
        assert "the ranks read different training data (rank 0: 200 rows" in out
        assert "rank 1: 190 rows" in out and "give every rank the same file" in out
