"""The training defaults that set speed: batch size, step size, CPU threads, the optimiser."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from anovae import AEDetector, ImageAEDetector, ImageVAEDetector, VAEDetector, load
from anovae.detectors.base import (
    TARGET_UPDATES,
    auto_batch_size,
    auto_epochs,
    auto_learning_rate,
)
from anovae.detectors.image import IMAGE_LEARNING_RATE
from anovae.nets.conv import ConvAutoencoder, ConvConfig
from anovae.nets.mlp import MLPAutoencoder, MLPConfig
from anovae.training import (
    SMALL_STEP_MACS,
    TrainConfig,
    macs_per_row,
    make_optimizer,
    small_net_threads,
)


@pytest.mark.parametrize(("n", "batch"), [(2, 256), (300, 256), (8_191, 256), (8_192, 512),
                                          (16_383, 512), (16_384, 1024), (32_767, 1024),
                                          (32_768, 2048), (10_000_000, 2048)])
def test_auto_batch_size_keeps_16_updates_per_epoch(n: int, batch: int) -> None:
    assert auto_batch_size(n) == batch
    assert batch == 256 or n / batch >= 16


def test_auto_learning_rate_scales_with_the_square_root_of_the_batch() -> None:
    assert auto_learning_rate(256) == pytest.approx(1e-3)
    assert auto_learning_rate(1024) == pytest.approx(2e-3)
    assert auto_learning_rate(64) == pytest.approx(1e-3)  # small batches keep the tuned step


@pytest.mark.parametrize("cls", [VAEDetector, AEDetector])
def test_defaults_resolve_batch_rate_and_updates_from_the_rows(cls: type) -> None:
    det = cls()
    big = det._train_config(50_000)
    assert (big.batch_size, big.learning_rate) == (2048, pytest.approx(1e-3 * math.sqrt(8)))
    assert big.epochs == auto_epochs(50_000, 2048)
    assert big.epochs * math.ceil(50_000 / 2048) >= TARGET_UPDATES
    small = det._train_config(1_000)
    assert (small.batch_size, small.learning_rate) == (256, pytest.approx(1e-3))
    mine = cls(batch_size=100, learning_rate=0.01)._train_config(50_000)
    assert (mine.batch_size, mine.learning_rate) == (100, 0.01)  # explicit values win
    capped = cls(batch_size=100_000)._train_config(1_000)  # the loop takes 1,000-row batches
    assert capped.learning_rate == pytest.approx(auto_learning_rate(1_000))


def test_image_detectors_keep_their_explicit_defaults() -> None:
    for det in (ImageVAEDetector(), ImageAEDetector()):  # the same training for the baseline
        cfg = det._train_config(6_000)
        assert (cfg.batch_size, cfg.learning_rate) == (64, IMAGE_LEARNING_RATE) == (64, 2e-3)


def test_macs_per_row_counts_linear_weights_and_conv_positions() -> None:
    mlp = MLPAutoencoder(MLPConfig(n_features=10, hidden_dims=(8,), latent_dim=2))
    assert macs_per_row(mlp) == 10 * 8 + 8 * 4 + 2 * 8 + 8 * 20
    conv = ConvAutoencoder(ConvConfig(in_channels=1, height=28, width=28, channels=(4, 8),
                                      latent_dim=4))
    traced = macs_per_row(conv, torch.zeros(1, 1, 28, 28))
    assert traced > 10 * macs_per_row(conv)  # each kernel is applied at many positions


def test_small_steps_run_on_one_thread_large_ones_keep_torch_s_setting() -> None:
    cpu = torch.device("cpu")
    net = MLPAutoencoder(MLPConfig(n_features=29, hidden_dims=(64, 32), latent_dim=4))
    per_row = macs_per_row(net)
    small = SMALL_STEP_MACS // per_row // 2
    assert small_net_threads(net, cpu, small) == 1
    assert small_net_threads(net, cpu, 4 * SMALL_STEP_MACS // per_row) is None


def test_the_optimiser_is_fused_adam_on_the_cpu() -> None:
    net = MLPAutoencoder(MLPConfig(n_features=5, hidden_dims=(8,), latent_dim=2))
    opt = make_optimizer(net, TrainConfig(learning_rate=0.01, weight_decay=0.1))
    assert isinstance(opt, torch.optim.Adam)
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4):
        assert opt.defaults["fused"]  # (older torch: the plain kernel, without an error)
    assert opt.defaults["lr"] == 0.01 and opt.defaults["weight_decay"] == 0.1


def test_history_records_the_seconds_of_each_epoch() -> None:
    X = np.random.default_rng(0).normal(size=(200, 4))
    det = VAEDetector(epochs=3, patience=0, random_state=0).fit(X)
    seconds = det.history_["seconds"]
    assert len(seconds) == det.n_epochs_ == 3
    assert all(s > 0 for s in seconds)


def test_the_resolved_batch_and_rate_are_kept_and_saved(tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(300, 4))
    det = VAEDetector(epochs=2, validation_fraction=0.0, random_state=0).fit(X)
    assert (det.batch_size_, det.learning_rate_) == (256, pytest.approx(1e-3))
    big = AEDetector(epochs=1, batch_size=4096, validation_fraction=0.0, random_state=0).fit(X)
    assert big.batch_size_ == 300  # capped at the rows, and the step follows the real batch
    assert big.learning_rate_ == pytest.approx(auto_learning_rate(300))
    again = load(det.save(tmp_path / "m.safetensors"))
    assert (again.batch_size_, again.learning_rate_) == (det.batch_size_, det.learning_rate_)


def test_batch_size_one_makes_an_update_per_row() -> None:
    # every batch after the first used to count as a "tiny trailing batch" and be skipped
    from anovae.training import _tensor_batches

    x = torch.arange(10.0)[:, None]
    batches = list(_tensor_batches(x, 1, torch.Generator().manual_seed(0), None))
    assert len(batches) == 10
    batches = list(_tensor_batches(x, 4, torch.Generator().manual_seed(0), None))
    assert [b.shape[0] for b, _ in batches] == [4, 4, 2]
    batches = list(_tensor_batches(x, 3, torch.Generator().manual_seed(0), None))
    assert [b.shape[0] for b, _ in batches] == [3, 3, 3]  # a trailing single row: skipped


def test_a_batch_smaller_than_the_processes_is_a_clear_error() -> None:
    from anovae.exceptions import TrainingError
    from anovae.training import _tensor_batches

    dist = type("Dist", (), {"world_size": 4, "rank": 0})()
    with pytest.raises(TrainingError, match="batch_size 2 is smaller than the 4 processes"):
        next(_tensor_batches(torch.zeros(10, 1), 2, torch.Generator(), dist))


def test_warmup_longer_than_training_is_capped() -> None:
    X = np.random.default_rng(0).normal(size=(200, 4))
    with pytest.warns(UserWarning, match="warmup_epochs=10 is more than the 3 epochs") as rec:
        det = VAEDetector(epochs=3, warmup_epochs=10, random_state=0, device="cpu").fit(X)
    assert det.history_["beta"][-1] == 1.0 and det.best_epoch_ == 3
    assert [w.filename for w in rec] == [__file__]  # a warning, at the caller's line


def test_fit_and_every_method_work_under_bf16_autocast() -> None:
    # one long autocast region used to reuse the bf16 copies of the initial weights: the fit
    # did not train; several methods called .numpy() on bf16 tensors
    from anovae.accel import autocast, pick_precision

    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 2))
    X = np.tanh(z @ rng.normal(size=(2, 8))) * 3 + 0.05 * rng.normal(size=(2000, 8))
    kw = {"epochs": 20, "random_state": 0, "device": "cpu", "validation_fraction": 0,
          "patience": 0}
    fp32 = VAEDetector(**kw).fit(X)
    bf16 = VAEDetector(**kw)
    with autocast(bf16, "bf16"):  # before the first fit, too
        bf16.fit(X)
    assert bf16.history_["loss"][-1] < 0.7 * bf16.history_["loss"][0]
    assert bf16.history_["loss"][-1] == pytest.approx(fp32.history_["loss"][-1], rel=0.1)
    for det in (AEDetector(epochs=2, random_state=0, device="cpu").fit(X[:300]), fp32):
        with autocast(det, "bf16"):
            assert np.isfinite(det.reconstruct(X[:5])).all()
            assert len(det.explain(X[:2], k=2)) == 4
            assert det.sample(3, random_state=0).shape == (3, 8)
            # the fp32 reference is measured outside the bf16 region, even from inside one
            assert pick_precision(det, X[:200], rtol=1e-9, candidates=("bf16",)) == "fp32"
