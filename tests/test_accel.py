"""GPU paths, checked on the CPU: device choice, zero-copy/pinned transfers, reduced precision
kept within 1e-3 relative of float32 (autocast in bfloat16 works on the CPU too)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from anovae.accel import autocast, pick_precision, precision_error, to_device
from anovae.detectors.base import resolve_device


def test_auto_device_picks_cuda_only_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_to_device_on_the_cpu_is_zero_copy() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = to_device(a, torch.device("cpu"))
    assert t.data_ptr() == a.ctypes.data and t.dtype == torch.float32


def test_bf16_autocast_is_used_only_within_tolerance(fitted_vae: Any, data: Any) -> None:
    X = data.X_test
    ref = fitted_vae.decision_function(X)
    with autocast(fitted_vae, "bf16"):
        low = fitted_vae.decision_function(X)
    err = float(np.max(np.abs(low - ref) / np.abs(ref)))
    assert err > 0  # the forward passes really ran in bfloat16
    assert precision_error(fitted_vae, X, "bf16") == pytest.approx(err)
    chosen = pick_precision(fitted_vae, X, candidates=("bf16",), rtol=1e-3)
    assert chosen == ("bf16" if err <= 1e-3 else "fp32")
    with autocast(fitted_vae, chosen):  # whatever was chosen keeps the scores within 1e-3
        np.testing.assert_allclose(fitted_vae.decision_function(X), ref, rtol=1e-3)
    assert pick_precision(fitted_vae, X, candidates=("bf16",), rtol=err / 2) == "fp32"
    assert pick_precision(fitted_vae, X) == "fp32"  # on a CPU float32 is the fast path
    np.testing.assert_array_equal(fitted_vae.decision_function(X), ref)  # nothing left behind


def test_bad_precisions_are_clear(fitted_vae: Any) -> None:
    with pytest.raises(ValueError, match="precision must be one of"):
        with autocast(fitted_vae, "fp8"):
            pass
    with pytest.raises(ValueError, match="needs a CUDA device"):
        with autocast(fitted_vae, "fp16"):
            pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_scoring_matches_cpu(fitted_vae: Any, data: Any, tmp_path: Any) -> None:
    from anovae import load

    path = fitted_vae.save(tmp_path / "m.safetensors")
    gpu = load(path, device="cuda")
    np.testing.assert_allclose(gpu.decision_function(data.X_test),
                               fitted_vae.decision_function(data.X_test), rtol=1e-4)
    p = pick_precision(gpu, data.X_test)
    with autocast(gpu, p):
        np.testing.assert_allclose(gpu.decision_function(data.X_test),
                                   fitted_vae.decision_function(data.X_test), rtol=1.1e-3)
