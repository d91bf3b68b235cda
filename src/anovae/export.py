"""Export a fitted detector's scoring graph to ONNX: raw rows in, anomaly scores out.

The graph holds everything :meth:`decision_function` does after validation: the scaling fitted
with the model, the encoder, the decoder at ``z = mu`` (or at the fixed Monte-Carlo draws, a
constant ``(S, L)`` tensor in the graph, see :func:`anovae.scores.common_noise`) and the score
(:func:`anovae.scores.row_scores`), for every score type: ``reconstruction``, ``elbo``,
``reconstruction_probability`` and ``iwae``. Outputs are ``anomaly_score`` (higher = more
anomalous) and ``is_anomaly`` (``anomaly_score > threshold``); the model's threshold, score type
and column names are in the ONNX file's metadata.

Input validation (missing columns, NaN) is not in the graph: check rows before feeding them.
A row holding NaN scores NaN and is flagged (``is_anomaly`` true), so it never passes as normal.
Image models export too (input ``(batch, C, H, W)`` float32 in [0, 1]); mixed-table models
(categories, missing cells) do not: their encoding runs before the network.

Example:
    >>> import numpy as np, onnxruntime, tempfile, os
    >>> from anovae import VAEDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> det = VAEDetector(epochs=2, random_state=0).fit(X)
    >>> path = export_onnx(det, os.path.join(tempfile.mkdtemp(), "model.onnx"))
    >>> session = onnxruntime.InferenceSession(str(path))
    >>> onnx_scores = session.run(["anomaly_score"], {"x": X[:5].astype(np.float32)})[0]
    >>> bool(np.allclose(onnx_scores, det.decision_function(X[:5].astype(np.float32)),
    ...                  rtol=1e-5))
    True
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anovae._version import __version__
from anovae.scores import MONTE_CARLO_SCORES, common_noise, row_scores
from anovae.tabular import SCALED_MAX, Scaler

__all__ = ["ONNX_OPSET", "ScoringModule", "export_onnx"]

logger = logging.getLogger(__name__)

#: The ONNX opset the graph is written in.
ONNX_OPSET = 17


class ScoringModule(nn.Module):
    """A detector's scoring as one ``nn.Module``: raw float32 rows ``(B, *F)`` -> scores ``(B,)``.

    Scaling mirrors :class:`anovae.tabular.Scaler` exactly: the centring in float64, then the
    float32 scaling; the network and the score run in float32 as in ``decision_function``.

    Args:
        detector: a fitted anovae detector whose scaler is a :class:`anovae.tabular.Scaler`.
    """

    def __init__(self, detector: Any) -> None:
        super().__init__()
        detector._check_fitted()
        detector._check_threshold_score()  # the graph's is_anomaly uses threshold_
        if getattr(detector.schema_, "kinds", None) is not None:
            raise ValueError("ONNX export of mixed-table models (categories, booleans, missing "
                             "cells) is not supported: their category encoding and missing-cell "
                             "masks run before the network. Export a model fitted on numeric "
                             "columns.")
        terms = [name for name, attr in (("complexity_correction", "complexity_slopes_"),
                                         ("latent_density", "latent_weights_"))
                 if getattr(detector, attr, None)]  # the score terms it was fitted with
        if terms:
            fitted_with = " and ".join(t + "=True" for t in terms)
            raise ValueError(
                f"ONNX export of an image VAE fitted with {fitted_with} is not supported: "
                "the PNG size of each image (anovae.images.png_nats) and the "
                "latent mixture's density (anovae.latent) are computed outside the network. Fit "
                "it with complexity_correction=False, latent_density=False to export.")
        scaler = detector.scaler_
        if not isinstance(scaler, Scaler):
            raise ValueError(f"ONNX export needs a Scaler-scaled model; "
                             f"{type(detector).__name__} uses {type(scaler).__name__}")
        self.net = detector.net_
        self.score_name = detector.score_name
        device = next(self.net.parameters()).device
        self.register_buffer("center", torch.from_numpy(np.asarray(scaler.center,
                                                                   dtype=np.float64)).to(device))
        inv = 1.0 / np.asarray(scaler.scale, dtype=np.float64)
        self.float32_scaling = scaler._float32_safe()  # as Scaler.transform scales
        if self.float32_scaling:
            inv = inv.astype(np.float32)
        self.register_buffer("inv_scale", torch.from_numpy(inv).to(device))
        eps = None
        if self.score_name in MONTE_CARLO_SCORES:
            eps = common_noise(detector._n_noise_samples(), detector.net_config_.latent_dim,
                               detector.noise_seed_).to(device)
        self.register_buffer("eps", eps)
        self.register_buffer("threshold", torch.tensor(float(detector.threshold_),
                                                       dtype=torch.float32, device=device))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, *F) float32 raw rows -> ``anomaly_score`` (B,) and ``is_anomaly`` (B,)."""
        if self.float32_scaling:  # (B, *F), as Scaler.transform does
            xt = (x.double() - self.center).float() * self.inv_scale
        else:
            xt = ((x.double() - self.center) * self.inv_scale).float()
        xt = xt.clamp(-SCALED_MAX, SCALED_MAX)
        scores = row_scores(self.net, xt, self.score_name, self.eps)  # (B,)
        # not (score <= threshold): a NaN score (a NaN in the row) is flagged, never normal
        return scores, torch.logical_not(scores <= self.threshold)


def export_onnx(detector: Any, path: str | os.PathLike, *, opset: int = ONNX_OPSET) -> Path:
    """Write the detector's scoring graph to ``path`` as ONNX (dynamic batch size).

    The input is ``x``: float32 raw rows ``(batch, *input shape)`` in the model's column order
    (``detector.schema_.names``). The outputs are ``anomaly_score`` (float32, higher = more
    anomalous) and ``is_anomaly`` (bool). The file's metadata holds ``anovae`` (JSON: score type,
    threshold, column names, library version).

    Returns:
        The path written.
    """
    import onnx

    from anovae.io import atomic_output

    module = ScoringModule(detector).eval()
    shape = tuple(int(s) for s in getattr(detector.schema_, "shape", None)
                  or (detector.schema_.n_features,))
    device = next(module.parameters()).device
    example = torch.zeros((2, *shape), dtype=torch.float32, device=device)
    path = Path(path)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # The legacy (TorchScript) exporter: it needs no onnxscript, handles every score, and
        # warns about constants (the Monte-Carlo sample count, the feature count) it folds in.
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module, (example,), str(tmp), input_names=["x"],
                output_names=["anomaly_score", "is_anomaly"],
                dynamic_axes={"x": {0: "batch"}, "anomaly_score": {0: "batch"},
                              "is_anomaly": {0: "batch"}},
                opset_version=opset, dynamo=False)
        proto = onnx.load(str(tmp))
        names = getattr(detector.schema_, "names", None)
        meta = {"format": "anovae-onnx", "library_version": __version__,
                "estimator": type(detector).__name__, "score_type": detector.score_name,
                "threshold": float(detector.threshold_), "input_shape": list(shape),
                "columns": None if names is None else [str(n) for n in names]}
        entry = proto.metadata_props.add()
        entry.key, entry.value = "anovae", json.dumps(meta)
        proto.producer_name, proto.producer_version = "anovae", __version__
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    logger.info("exported %s (%s score) to %s", type(detector).__name__, detector.score_name,
                path)
    return path
