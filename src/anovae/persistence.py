"""Saving and loading fitted detectors: one safetensors file, JSON metadata, no pickle.

Layout of a model file (any name; ``.safetensors`` is conventional):

- tensors ``net.*``: the network's weights (float32, bit-exact);
- tensors ``scaler.center``, ``scaler.scale``, ``decision_scores`` (float64), and any extra
  fitted arrays of the estimator (``calibration_scores``..., and ``fitted.*``: e.g. the latent
  mixture of an image VAE);
- the safetensors header's metadata key ``"anovae"``: a JSON document with the format name and
  version, the library version, the estimator class and parameters, the network config, the
  scaler, the column schema, the threshold and the training history.

One file keeps the write atomic (temporary file + ``os.replace``) and the model easy to move.
Loading reads the JSON header first and refuses anything that is not an anovae model, was cut
short, or comes from a newer format, with a clear :class:`anovae.ModelFileError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anovae._version import __version__
from anovae.exceptions import ModelFileError, NotFittedError
from anovae.nets.blocks import LOGVAR_MIN

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "file_version", "load", "read_metadata",
           "save_model"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "anovae-model"
#: The newest model-file version this anovae reads (loaders refuse newer ones with a message
#: to upgrade). Bump when the layout changes so that an older reader would misread a file.
#: 1: the original layout. 2: adds the ``"fitted"`` section (e.g. the complexity correction of
#: :class:`~anovae.ImageVAEDetector`, without which its scores and threshold disagree). Files are
#: written with the lowest version that holds them (:func:`file_version`), so models an older
#: anovae reads correctly stay readable by it. 3: adds the fitted tensors ``fitted.*`` and the
#: latent term of :class:`~anovae.ImageVAEDetector` (``"latent_weights"``, the
#: ``latent_density`` parameter), which a version-2 reader cannot construct. 4: a variance
#: floor other than the default (the ``logvar_floor`` parameter and network field), which a
#: version-3 reader cannot construct.
FORMAT_VERSION = 4

#: Parameters added after format 1, written only when they differ from these defaults, so the
#: models that do not use them stay readable by the anovae versions before them (a missing one
#: loads as its default).
_NEWER_PARAMS: dict[str, Any] = {"logvar_floor": LOGVAR_MIN}

#: Fitted numpy attributes stored as tensors when the estimator has them.
_ARRAY_ATTRS = ("decision_scores_", "code_mean_", "code_std_", "calibration_scores_")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (tuple, list)):  # lists too: e.g. hidden_dims=[np.int64(32), 16]
        return [_jsonable(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def file_version(doc: dict[str, Any]) -> int:
    """The lowest format version that holds the model document ``doc``: 4 with a variance
    floor other than the default (a version-3 reader would fail on the unknown ``logvar_floor``
    field), 3 for an image VAE that has the ``latent_density`` parameter (with the term, a
    version-2 reader would score without it; without the term, it would fail on the unknown
    parameter instead of saying to upgrade), 2 when its ``"fitted"`` section is otherwise
    non-empty, else 1."""
    fitted = doc.get("fitted") or {}
    if "logvar_floor" in (doc.get("params") or {}) or "logvar_floor" in (doc.get("net") or {}):
        return 4
    if fitted.get("latent_weights") or "latent_density" in (doc.get("params") or {}):
        return 3
    return 2 if fitted else 1


def save_model(detector: Any, path: str | Path) -> Path:
    """Write a fitted detector to ``path`` atomically. Returns the path."""
    from anovae.detectors import REGISTRY

    if not hasattr(detector, "net_"):
        raise NotFittedError("only a fitted detector can be saved; call fit first")
    name = type(detector).__name__
    if name not in REGISTRY:
        raise TypeError(f"{name} is not a registered anovae detector")
    path = Path(path)
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": None,  # set below, from the document (file_version)
        "library_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "estimator": name,
        "params": {k: _jsonable(v) for k, v in detector.get_params(deep=False).items()
                   if not (k in _NEWER_PARAMS and v == _NEWER_PARAMS[k])},
        "net": detector.net_config_.to_dict(),
        "scaler": {"method": detector.scaler_.method},
        "schema": detector.schema_.to_dict(),
        "threshold": float(detector.threshold_),
        "threshold_method": getattr(detector, "threshold_method_", None),
        "score": detector.score_name,
        "noise_seed": int(detector.noise_seed_),
        "training": {
            "history": detector.history_,
            "n_epochs": int(detector.n_epochs_),
            "best_epoch": int(detector.best_epoch_),
            "batch_size": getattr(detector, "batch_size_", None),
            "learning_rate": getattr(detector, "learning_rate_", None),
            "n_train_scores": int(len(detector.decision_scores_)),
        },
        "fitted": detector._fitted_json(),
    }
    doc["format_version"] = file_version(doc)
    if not isinstance(doc["params"].get("threshold", ""), str):  # a PyThresh object: its name
        from anovae.thresholds import parse_threshold

        doc["params"]["threshold"] = parse_threshold(doc["params"]["threshold"]).describe()
    tensors: dict[str, torch.Tensor] = {
        f"net.{k}": v.detach().cpu().contiguous() for k, v in detector.net_.state_dict().items()
    }
    tensors["scaler.center"] = torch.from_numpy(np.ascontiguousarray(detector.scaler_.center))
    tensors["scaler.scale"] = torch.from_numpy(np.ascontiguousarray(detector.scaler_.scale))
    for attr in _ARRAY_ATTRS:
        if hasattr(detector, attr):
            tensors[attr.rstrip("_")] = torch.from_numpy(
                np.ascontiguousarray(getattr(detector, attr)))
    for key, value in detector._fitted_arrays().items():
        tensors[f"fitted.{key}"] = torch.from_numpy(np.ascontiguousarray(value))
    from safetensors.torch import save_file

    from anovae.io import atomic_output

    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata={"anovae": json.dumps(doc)})
    logger.info("saved %s to %s", name, path)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON document of a model file, validated (format name and version)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise ModelFileError(f"{str(path)!r} is not a file (expected an anovae model file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ModelFileError(
            f"{str(path)!r} is not a readable anovae model: it is truncated, corrupt or not a "
            f"safetensors file ({exc})"
        ) from exc
    if "anovae" not in meta:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not an anovae model")
    try:
        doc = json.loads(meta["anovae"])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{str(path)!r} has a corrupt anovae header: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{str(path)!r} has a corrupt anovae header (not a JSON object)")
    if doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r} is not an anovae model (format {doc.get('format')!r})")
    version = doc.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{str(path)!r} has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by anovae {doc.get('library_version', '?')} in model "
            f"format version {version}; this anovae ({__version__}) reads versions up to "
            f"{FORMAT_VERSION}: upgrade anovae to load it"
        )
    return doc


def load(path: str | Path, *, device: str | None = None) -> Any:
    """Load a detector saved with ``detector.save(path)``.

    Args:
        path: the model file.
        device: override the saved ``device`` parameter (e.g. ``"cpu"``).

    Returns:
        The fitted detector; it scores bit-identically to the one that was saved.

    Raises:
        ModelFileError: missing, truncated, corrupt, foreign or newer-format file.
    """
    from safetensors.torch import load_file

    from anovae.detectors import REGISTRY
    from anovae.detectors.base import resolve_device
    from anovae.nets import build_net, config_from_dict
    from anovae.tabular import Scaler

    doc = read_metadata(path)
    name = doc.get("estimator")
    if name not in REGISTRY:
        raise ModelFileError(f"{str(path)!r} holds an unknown estimator {name!r}")
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise ModelFileError(f"{str(path)!r} is truncated or corrupt: {exc}") from exc
    try:
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["params"].items()}
        if device is not None:
            params["device"] = device
        det = REGISTRY[name](**params)
        try:
            dev = resolve_device(det.device)
        except ValueError:
            logger.warning("model was saved for device %r, not available here: using the CPU",
                           det.device)
            dev = torch.device("cpu")
        cfg = config_from_dict(doc["net"])
        net = build_net(cfg)
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        net.load_state_dict(state, strict=True)
        det.net_ = net.to(dev).eval()
        det.net_config_ = cfg
        det.scaler_ = Scaler(doc["scaler"]["method"], tensors["scaler.center"].numpy(),
                             tensors["scaler.scale"].numpy())
        det.schema_ = det._schema_from_dict(doc["schema"])
        det.n_features_in_ = det.schema_.n_features
        if det.schema_.names is not None:
            det.feature_names_in_ = np.asarray(det.schema_.names, dtype=object)
        det.noise_seed_ = int(doc["noise_seed"])
        training = doc.get("training", {})
        det.history_ = training.get("history", {})
        det.n_epochs_ = int(training.get("n_epochs", 0))
        det.best_epoch_ = int(training.get("best_epoch", 0))
        det.batch_size_ = training.get("batch_size")  # None in files written before they were kept
        det.learning_rate_ = training.get("learning_rate")
        for attr in _ARRAY_ATTRS:
            key = attr.rstrip("_")
            if key in tensors:
                setattr(det, attr, tensors[key].numpy())
        det._load_fitted_json(doc.get("fitted", {}), {
            k[len("fitted."):]: v.numpy() for k, v in tensors.items() if k.startswith("fitted.")})
        det._set_threshold(float(doc["threshold"]))
        if doc.get("threshold_method"):
            det.threshold_method_ = str(doc["threshold_method"])
    except ModelFileError:
        raise
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        # e.g. a missing tensor (no decision_scores_ to threshold) or a non-dict "params"
        raise ModelFileError(f"{str(path)!r} is an inconsistent anovae model: {exc}") from exc
    det.metadata_ = {k: doc[k] for k in ("library_version", "created_utc", "format_version")
                     if k in doc}
    return det
