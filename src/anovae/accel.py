"""Accelerator helpers: host-to-device copies, reduced-precision autocast and its check.

- :func:`to_device`: a NumPy batch to the model's device; on CUDA through pinned (page-locked)
  memory with ``non_blocking=True``, so the copy overlaps the GPU's work; on the CPU the plain
  zero-copy ``torch.from_numpy``.
- :func:`autocast`: run a detector's forward passes in bfloat16 or float16 (``torch.autocast``:
  matmuls in the low precision, reductions, ``exp``/``log`` and the likelihoods in float32). On
  the CPU it works too (bfloat16), which is how the tests check it without a GPU, though it is
  rarely faster there.
- :func:`precision_error` / :func:`pick_precision`: scores must stay within ``rtol`` (1e-3)
  relative of float32; :func:`pick_precision` measures this on sample rows and returns the
  cheapest precision that passes (``"fp32"`` when none does), so reduced precision is only used
  where it keeps the scores.

>>> import numpy as np
>>> from anovae import VAEDetector
>>> X = np.random.default_rng(0).normal(size=(300, 4))
>>> det = VAEDetector(epochs=2, device="cpu", random_state=0).fit(X)
>>> with autocast(det, "bf16"):
...     low = det.decision_function(X)
>>> bool(np.allclose(low, det.decision_function(X), rtol=0.05))
True
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["PRECISIONS", "autocast", "pick_precision", "precision_error", "to_device"]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``: pinned memory and a non-blocking copy on CUDA."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return t if device.type == "cpu" else t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _device(detector: Any) -> torch.device:
    """The fitted network's device, else (before the first fit) the one ``fit`` will use."""
    net = getattr(detector, "net_", None)
    if net is not None:
        return next(net.parameters()).device
    from anovae.detectors.base import resolve_device

    return resolve_device(getattr(detector, "device", "auto"))


@contextlib.contextmanager
def autocast(detector: Any, precision: str) -> Iterator[None]:
    """Run ``detector``'s forward passes (scoring, or ``fit``) in ``precision`` on its device.

    ``"fp32"`` changes nothing. ``"fp16"`` needs CUDA (float16 training would also need loss
    scaling: use ``"bf16"`` to train).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        yield
        return
    device = _device(detector)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on the CPU")
    # No weight-cast cache: inside one long region torch would keep reusing the low-precision
    # copies of the weights from before the optimiser's first step (a fit would not train).
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision], cache_enabled=False):
        yield


def precision_error(detector: Any, X: Any, precision: str) -> float:
    """The largest relative difference between ``detector``'s scores of ``X`` in ``precision``
    and in float32: ``max |s_p - s_32| / max(|s_32|, 1e-6)``."""
    with torch.autocast(device_type=_device(detector).type, enabled=False):  # even inside one
        ref = detector.decision_function(X)
    with autocast(detector, precision):
        low = detector.decision_function(X)
    return float(np.max(np.abs(low - ref) / np.maximum(np.abs(ref), 1e-6)))


def pick_precision(detector: Any, X: Any, *, rtol: float = 1e-3,
                   candidates: Sequence[str] | None = None) -> str:
    """The cheapest precision whose scores of the sample rows ``X`` stay within ``rtol`` of
    float32's, else ``"fp32"``.

    Default candidates: ``bf16`` then ``fp16`` on CUDA (where they are faster); none on the
    CPU (float32 is the fast path there), so the answer is ``"fp32"``.
    """
    if candidates is None:
        candidates = ("bf16", "fp16") if _device(detector).type == "cuda" else ()
    for p in candidates:
        err = precision_error(detector, X, p)
        logger.info("precision %s: scores within %.2g relative of fp32", p, err)
        if err <= rtol:
            return p
    return "fp32"
