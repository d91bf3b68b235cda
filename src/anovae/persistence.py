"""Saving and loading fitted detectors: one safetensors file, JSON metadata, no pickle.

Layout of a model file (any name; ``.safetensors`` is conventional):

- tensors ``net.*``: the network's weights (float32, bit-exact);
- tensors ``scaler.center``, ``scaler.scale``, ``decision_scores`` (float64), and any extra
  fitted arrays of the estimator (``calibration_scores``..., and ``fitted.*``: e.g. the latent
  mixture of an image VAE; ``feature_baseline.SCORE``: a table model's typical contribution of
  each column for each score, which explanations rank against; readers before anovae 0.4 ignore
  them);
- the safetensors header's metadata key ``"anovae"``: a JSON document with the format name and
  version, the library version, the estimator class and parameters, the network config, the
  scaler, the column schema, the threshold and the training history.

One file keeps the write atomic (temporary file + ``os.replace``) and the model easy to move.
Loading reads the JSON header first and refuses anything that is not an anovae model, was cut
short, or comes from a newer format, with a clear :class:`anovae.ModelFileError`; so is a file
whose fields, schema, network config and tensors disagree (checked before the network is
allocated, so a small hostile file cannot make the loader allocate gigabytes).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import reprlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anovae._version import __version__
from anovae.exceptions import ModelFileError, NotFittedError, warn
from anovae.images import MAX_PIXELS
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
#: version-3 reader cannot construct. 5: ``use_labels=False`` (anovae 0.6), a parameter a
#: version-4 reader does not know. 6: a mixed-table network with ``input_bounds`` (anovae 0.6:
#: the encoder's input clipped to the training range), a field a version-5 reader refuses.
FORMAT_VERSION = 6

#: Parameters added after format 1, written only when they differ from these defaults, so the
#: models that do not use them stay readable by the anovae versions before them (a missing one
#: loads as its default).
_NEWER_PARAMS: dict[str, Any] = {"logvar_floor": LOGVAR_MIN, "use_labels": True}

#: Tensor-name prefix of ``feature_baselines_`` (one float64 vector per score name).
BASELINE_PREFIX = "feature_baseline."

#: Parameters renamed since an earlier release, old name -> new: ``score_type`` was ``score``
#: before anovae 0.5 (a ``score`` attribute hid scikit-learn's ``score()`` method, and
#: ``cross_val_score`` gave NaN). Files keep the old name, so older readers read newer files;
#: the CLI's ``--set OLD=...`` still works (:func:`anovae.cli.app.renamed_param`).
RENAMED_PARAMS = {"score": "score_type"}
_FILE_PARAM_NAMES = {new: old for old, new in RENAMED_PARAMS.items()}

#: Metadata key (beside ``anovae``) of the SHA-256 of the file's JSON document and tensors (see
#: :func:`file_digest`): a file damaged after it was written - flipped bytes that still read as
#: finite weights, or as another threshold - is refused instead of, say, scoring every row as an
#: anomaly. Written since anovae 0.5; readers before it ignore the key, and files without it
#: load unchecked.
CHECKSUM_KEY = "anovae.sha256"


def file_digest(doc_text: str, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a model file's ``anovae`` JSON text and its tensors (each name, dtype,
    shape and raw bytes, in name order)."""
    h = hashlib.sha256()
    h.update(doc_text.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

#: Fitted numpy attributes stored as tensors when the estimator has them.
_ARRAY_ATTRS = ("decision_scores_", "code_mean_", "code_std_", "calibration_scores_")
#: Where ``threshold_reference_scores_`` (the scores a threshold was set on) usually comes from:
#: a file holds it as the tensor ``threshold_reference`` only when it is neither (a threshold
#: refitted on other rows); :func:`load` takes the one the threshold method implies.
_REFERENCE_SOURCES = ("decision_scores_", "calibration_scores_")


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.random.RandomState, np.random.Generator)):
        return None  # a random_state object: the file cannot hold it (the fit drew its seed)
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


def _show(value: Any) -> str:
    """A short ``repr`` of a value read from a file, for error messages (a hostile file's value
    may be a megabyte of text or a deeply nested list)."""
    return reprlib.repr(value)


def file_version(doc: dict[str, Any]) -> int:
    """The lowest format version that holds the model document ``doc``: 4 with a variance
    floor other than the default (a version-3 reader would fail on the unknown ``logvar_floor``
    field), 3 for an image VAE that has the ``latent_density`` parameter (with the term, a
    version-2 reader would score without it; without the term, it would fail on the unknown
    parameter instead of saying to upgrade), 2 when its ``"fitted"`` section is otherwise
    non-empty, else 1; 5 with ``use_labels=False``; 6 with a mixed network's
    ``input_bounds``."""
    fitted = doc.get("fitted") or {}
    if "input_bounds" in (doc.get("net") or {}):
        return 6
    if "use_labels" in (doc.get("params") or {}):
        return 5
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
    path = _file_path(path)
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": None,  # set below, from the document (file_version)
        "library_version": __version__,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "estimator": name,
        "params": {_FILE_PARAM_NAMES.get(k, k): _jsonable(v)
                   for k, v in detector.get_params(deep=False).items()
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
    reference = getattr(detector, "threshold_reference_scores_", None)
    if reference is not None and not any(  # written only when load cannot tell which it is
            np.array_equal(reference, getattr(detector, a)) for a in _REFERENCE_SOURCES
            if hasattr(detector, a)):
        tensors["threshold_reference"] = torch.from_numpy(np.ascontiguousarray(reference))
    # top-level tensors, which readers before anovae 0.4 ignore (they rank the raw contributions)
    for score, value in getattr(detector, "feature_baselines_", {}).items():
        tensors[f"{BASELINE_PREFIX}{score}"] = torch.from_numpy(np.ascontiguousarray(value))
    from safetensors.torch import save_file

    from anovae.io import atomic_output

    text = json.dumps(doc)
    # what load refuses is not written: the header holds the text escaped as a JSON string,
    # and an entry of about 100 bytes per tensor
    _check_containers(text, "the model's metadata")
    size = len(json.dumps(text).encode()) + 200 * len(tensors)
    if size > MAX_HEADER_BYTES:
        raise ValueError(f"the model's metadata is {size:,} bytes, more than a "
                         f"model file's header may hold ({MAX_HEADER_BYTES:,}): fewer or shorter "
                         "category values (max_categories) or column names")
    with atomic_output(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"anovae": text,
                                                   CHECKSUM_KEY: file_digest(text, tensors)})
        except OSError:
            raise
        except Exception as exc:  # safetensors' own error type for a failed write (disk full)
            raise OSError(f"could not write {str(path)!r}: {exc}") from exc
    logger.info("saved %s to %s", name, path)
    return path


def _file_path(path: Any) -> Path:
    """``path`` as a :class:`~pathlib.Path`; a file object (``io.BytesIO``, an open file) is
    refused by name: the format is written atomically, by renaming a finished file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got "
                        f"{type(path).__name__}: models are written to and read from files")
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON document of a model file, validated (format name and version)."""
    from safetensors import safe_open

    path = _model_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise _unreadable(path, exc) from exc
    return _document(meta, path)


def _model_file(path: str | Path) -> Path:
    """``path`` as a Path, or :class:`ModelFileError` when it names no file."""
    path = _file_path(path)
    if not path.exists():
        raise ModelFileError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise ModelFileError(f"{str(path)!r} is not a file (expected an anovae model file)")
    return path


def _unreadable(path: Path, exc: Any) -> ModelFileError:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        head = b""
    if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocols 2-5
        return ModelFileError(
            f"{str(path)!r} is a pickle (or joblib) file, not an anovae model: anovae never "
            "unpickles (a pickle runs code when loaded). If you trust it, unpickle it yourself "
            "and call .save('model.safetensors') on the detector")
    return ModelFileError(f"{str(path)!r} is not a readable anovae model: it is truncated, "
                          f"corrupt or not a safetensors file ({exc})")


#: The largest safetensors header read (its JSON: tensor names, shapes, the metadata). A model
#: of a 1,000-column table with 100 categories per column writes about 3 MB. (What parsing
#: costs is bounded by :data:`MAX_JSON_CONTAINERS`: text costs about its own size.)
MAX_HEADER_BYTES = 100 * 2**20
#: The most JSON arrays and objects a header (and the anovae document in it) may hold: a
#: legitimate one holds one per tensor, category vocabulary and parameter list; parsed, each
#: costs about 60 bytes, so 21 MB of ``[],[],...`` took 564 MB before it was ignored.
MAX_JSON_CONTAINERS = 1_000_000


def _check_containers(text: bytes | str, what: str) -> None:
    """``ValueError`` when the JSON ``text`` holds more than :data:`MAX_JSON_CONTAINERS`
    brackets or braces (an over-count for brackets inside strings: harmless at this bound)."""
    opening = (b"[", b"{") if isinstance(text, bytes) else ("[", "{")
    count = text.count(opening[0]) + text.count(opening[1])  # type: ignore[arg-type]
    if count > MAX_JSON_CONTAINERS:
        raise ValueError(f"{what} holds {count:,} JSON arrays and objects, more than the "
                         f"{MAX_JSON_CONTAINERS:,} a model file may have")


def _read_model_file(path: str | Path) -> tuple[bytes, dict[str, str],
                                                 dict[str, tuple[int, ...]]]:
    """The bytes of a model file, read once, with its header's metadata and tensor shapes
    (parsed from those bytes: everything :func:`load` uses comes from one read, so a file
    replaced meanwhile cannot mix two models, and nothing stays mapped to the file)."""
    path = _model_file(path)
    data = path.read_bytes()
    try:
        if len(data) < 8:
            raise ValueError("shorter than a safetensors header")
        n = int.from_bytes(data[:8], "little")
        if n > len(data) - 8:
            raise ValueError(f"its header declares {n} bytes")
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"its header declares {n:,} bytes, more than the "
                             f"{MAX_HEADER_BYTES:,} a model file's header may hold")
        _check_containers(data[8:8 + n], "its header")
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("its metadata is not a map of strings")
        shapes = {str(k): tuple(int(d) for d in v["shape"]) for k, v in header.items()}
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise _unreadable(path, exc) from exc
    return data, meta, shapes


def _document(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """The anovae document in a model file's metadata, validated (format name, version)."""
    if "anovae" not in meta:
        raise ModelFileError(f"{str(path)!r} is a safetensors file but not an anovae model")
    try:
        _check_containers(meta["anovae"], "it")
        doc = json.loads(meta["anovae"])
    except RecursionError as exc:  # json recurses once per nesting level
        raise ModelFileError(f"{str(path)!r} has a corrupt anovae header: its JSON is nested "
                             f"too deeply") from exc
    except ValueError as exc:  # a JSONDecodeError, or an integer too long to convert
        raise ModelFileError(f"{str(path)!r} has a corrupt anovae header: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelFileError(f"{str(path)!r} has a corrupt anovae header (not a JSON object)")
    if doc.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{str(path)!r} is not an anovae model (format {doc.get('format')!r})")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{str(path)!r} has no valid format version (got "
                             f"{_show(version)})")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} was written by anovae {doc.get('library_version', '?')} in model "
            f"format version {version}; this anovae ({__version__}) reads versions up to "
            f"{FORMAT_VERSION}: upgrade anovae to load it"
        )
    return doc


def _int_field(value: Any, what: str, low: int = 0) -> int:
    """``value`` if it is an integer ``>= low``; else a ``ValueError`` naming ``what`` (JSON
    gives floats, ``Infinity`` and ``NaN`` too, and bools pass ``isinstance(v, int)``)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {_show(value)}")
    if value < low:
        raise ValueError(f"{what} must be >= {low}, got {value}")
    return value


def _float_field(value: Any, what: str, *, allow_inf: bool = False) -> float:
    """``value`` as a float if it is a finite number (or ``+inf`` with ``allow_inf``); else a
    ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (anovae writes inf as Infinity)
        raise ValueError(f"{what} must be a finite number, got an integer of "
                         f"{value.bit_length()} bits") from None
    if not (math.isfinite(number) or (allow_inf and number == math.inf)):
        raise ValueError(f"{what} must be a finite number, got {_show(value)}")
    return number


def _dict_field(value: Any, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object; else a ``ValueError`` naming ``what``."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {_show(value)}")
    return value


#: The estimator parameters that size the network, checked against a file's network config.
_ARCHITECTURE_PARAMS = ("hidden_dims", "latent_dim", "activation", "channels")


def _params_from_net(det: Any, cfg: Any, path: Path) -> None:
    """Set the architecture parameters a file states (``None``: sized from the data) that
    disagree with its network to the network's, with a warning: the model scores with the
    network, while ``get_params``, a ``clone`` and a refit read the parameters
    (``hidden_dims=[1e9, 1e9]`` beside a (16, 8) network loaded, and a refit would try to
    allocate it). anovae before 0.5 saved such files after a ``set_params`` on a fitted model;
    they load as before, scored by their network."""
    params = det.get_params(deep=False)
    fixed: dict[str, Any] = {}
    for name in _ARCHITECTURE_PARAMS:
        value, built = params.get(name), getattr(cfg, name, None)
        if value is None or built is None:
            continue
        if isinstance(value, (list, tuple)) and isinstance(built, (list, tuple)):
            if list(value) != list(built):
                fixed[name] = tuple(built)
        elif value != built:
            fixed[name] = built
    if fixed:
        said = ", ".join(f"{k}={_show(params[k])}" for k in fixed)
        warn(f"{str(path)!r} states {said} but holds a network of "
             f"{', '.join(f'{k}={_show(v)}' for k, v in fixed.items())}: the network's are "
             "its parameters now (a file saved after set_params, by anovae before 0.5?)")
        det.set_params(**fixed)


def _check_net_config(cfg: Any, variational: bool) -> None:
    """Refuse a network config that builds but would score wrongly or not at all: sizes below
    one, unknown likelihood, variance or column kinds, a non-finite variance floor, or a
    variational flag other than the estimator's (``ValueError`` naming the field)."""
    from anovae.likelihoods import LIKELIHOODS
    from anovae.mixed import KINDS
    from anovae.nets.mlp import VARIANCES

    if not isinstance(cfg.variational, bool) or cfg.variational is not variational:
        raise ValueError(f"the network's variational flag is {_show(cfg.variational)}, this "
                         f"estimator needs {variational}")
    sizes: dict[str, Any] = {"latent_dim": cfg.latent_dim}
    if cfg.kind == "conv":
        sizes.update(in_channels=cfg.in_channels, height=cfg.height, width=cfg.width,
                     seed_channels=cfg.seed_channels or 1)
        sizes.update({f"channels[{i}]": c for i, c in enumerate(cfg.channels)})
        sizes.update({f"decoder_channels[{i}]": c
                      for i, c in enumerate(cfg.decoder_channels or ())})
    else:
        sizes.update({f"hidden_dims[{i}]": h for i, h in enumerate(cfg.hidden_dims)})
        if cfg.kind == "mlp":
            sizes["n_features"] = cfg.n_features
    for what, size in sizes.items():
        _int_field(size, f"the network's {what}", 1)
    if cfg.kind == "conv" and cfg.height * cfg.width > MAX_PIXELS:
        raise ValueError(f"the network takes images of {cfg.width}x{cfg.height} pixels, more "
                         f"than the {MAX_PIXELS:,} an image model may have")
    if cfg.kind == "mixed":
        n = len(cfg.kinds)
        if n < 1 or len(cfg.cardinalities) != n or len(cfg.n_observed) != n:
            raise ValueError(f"the network has {n} column kinds, {len(cfg.cardinalities)} "
                             f"cardinalities and {len(cfg.n_observed)} observed counts")
        bad = sorted({k for k in cfg.kinds if k not in KINDS})
        if bad:
            raise ValueError(f"the network has unknown column kinds {_show(bad)}; known: "
                             f"{list(KINDS)}")
        for j, (k, n_obs) in enumerate(zip(cfg.cardinalities, cfg.n_observed, strict=True)):
            _int_field(k, f"the network's cardinalities[{j}]")
            _int_field(n_obs, f"the network's n_observed[{j}]")
        mask_rate = _float_field(cfg.mask_rate, "the network's mask_rate")
        if not 0.0 <= mask_rate < 1.0:
            raise ValueError(f"the network's mask_rate must be in [0, 1), got {mask_rate}")
        if cfg.input_bounds is not None:
            n_num = sum(k == "numeric" for k in cfg.kinds)
            bounds = cfg.input_bounds
            if len(bounds) != n_num or not all(
                    math.isfinite(lo) and math.isfinite(hi) and lo <= hi for lo, hi in bounds):
                raise ValueError(f"the network's input_bounds must be {n_num} finite (lo, hi) "
                                 f"ranges with lo <= hi, got {_show(list(bounds))}")
    else:
        if cfg.likelihood not in LIKELIHOODS:
            raise ValueError(f"the network's likelihood {_show(cfg.likelihood)} is unknown; "
                             f"known: {list(LIKELIHOODS)}")
        if cfg.variance not in VARIANCES:
            raise ValueError(f"the network's variance {_show(cfg.variance)} is unknown; known: "
                             f"{list(VARIANCES)}")
    if cfg.kind != "conv":
        dropout = _float_field(cfg.dropout, "the network's dropout")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"the network's dropout must be in [0, 1), got {dropout}")
    floor = _float_field(getattr(cfg, "logvar_floor", 0.0), "the network's logvar_floor")
    if not -20.0 <= floor <= 10.0:  # the logvar_floor parameter's range
        raise ValueError(f"the network's logvar_floor must be in [-20, 10], got {floor}")


def _check_file_params(det: Any) -> None:
    """Every parameter of a file as ``fit`` checks it (``ValueError``), on a copy: CUDA need
    not be here (the loader falls back to the CPU), and a thresholder object of your own,
    which a file only names, is not rebuilt."""
    from sklearn.base import clone

    if not isinstance(det.device, str):
        raise ValueError(f"its parameters are invalid: device must be a string, got "
                         f"{_show(det.device)}")
    probe = clone(det).set_params(device="cpu")
    threshold = getattr(probe, "threshold", None)
    if isinstance(threshold, str) and threshold.startswith(("object:", "pythresh:")):
        # named only: built when a refit needs it (PyThresh need not be installed to score)
        probe.set_params(threshold="contamination", threshold_param=None)
    elif isinstance(threshold, str) and "=" in threshold and probe.threshold_param is not None:
        # written before anovae 0.6 refused a number given twice: the parameter won
        probe.set_params(threshold=threshold.partition("=")[0])
    try:
        probe._check_params()
    except ValueError as exc:
        raise ValueError(f"its parameters are invalid: {exc}") from None


def _check_fitted_terms(det: Any, doc: dict[str, Any]) -> None:
    """An image VAE's score terms must be in the file when its parameters say it was fitted
    with them (and only then): without them it would score without the term, against a
    threshold set with it. Files written before a term existed lack its parameter."""
    params = doc.get("params") or {}
    for param, attr in (("latent_density", "latent_weights_"),
                        ("complexity_correction", "complexity_slopes_")):
        if param in params and doc.get("format_version", 1) >= 2:
            if bool(params[param]) != bool(getattr(det, attr, None)):
                raise ValueError(f"its parameters say {param}={_show(params[param])}, but the "
                                 f"file {'lacks' if params[param] else 'holds'} that fitted term")


def _threshold_reference(det: Any, tensors: dict[str, torch.Tensor]) -> np.ndarray:
    """The scores ``det``'s threshold was set on: the file's ``threshold_reference`` tensor,
    else the held-out normal rows' for ``fpr`` / ``pot`` (when the model has them), else the
    training rows'."""
    if "threshold_reference" in tensors:
        ref = tensors["threshold_reference"]
        if ref.dim() != 1 or ref.numel() < 1 or not bool(torch.isfinite(ref).all()):
            raise ValueError("the tensor 'threshold_reference' must be a non-empty vector of "
                             "finite floats")
        return ref.double().numpy()
    method = str(getattr(det, "threshold_method_", "")).partition("=")[0]
    cal = getattr(det, "calibration_scores_", None)
    if method in ("fpr", "pot") and cal is not None and len(cal):
        return np.asarray(cal, dtype=np.float64)
    return np.asarray(det.decision_scores_, dtype=np.float64)


def _probe_score(det: Any) -> float:
    """The larger score of two typical rows - the scaler's centre (the median row of a table, a
    blank image) and one spread above it in every numeric column (a mid-grey image) - which
    is finite for any intact model, whatever its data (an input of zeros would hide a broken
    first layer)."""
    from anovae.images import ImageSchema
    from anovae.mixed import MixedSchema

    center = np.asarray(det.scaler_.center, dtype=np.float64)
    scale = np.asarray(det.scaler_.scale, dtype=np.float64)
    if isinstance(det.schema_, ImageSchema):
        s = det.schema_
        shape = (s.channels, s.height, s.width)
        rows = np.stack([np.broadcast_to(center.reshape(-1, 1, 1), shape),
                         np.broadcast_to((center + 0.5 * scale).reshape(-1, 1, 1), shape)])
    else:
        step = scale.copy()
        if isinstance(det.schema_, MixedSchema):  # codes of categories and booleans stay
            step[[k != "numeric" for k in det.schema_.kinds]] = 0.0
        rows = np.stack([center, center + step])
    scores = det._score_rows(np.ascontiguousarray(rows))[0]
    return float(scores.max()) if np.isfinite(scores).all() else float("nan")


def _check_schema_doc(d: dict[str, Any]) -> None:
    """Refuse a mixed schema's vocabularies that are not lists of distinct strings, before they
    are read (a string ``"FRI"`` would be three categories, a repeated one breaks every score)."""
    if d.get("kind") != "mixed":
        return
    for field in ("vocabularies", "other_members"):
        lists = d.get(field)
        if lists is None and field == "other_members":
            continue
        if not isinstance(lists, list):
            raise ValueError(f"the schema's {field} must be a list, got {_show(lists)}")
        for j, vocab in enumerate(lists):
            if vocab is None:
                continue
            if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
                raise ValueError(f"the schema's {field}[{j}] must be a list of strings, got "
                                 f"{_show(vocab)}")
            if len(set(vocab)) != len(vocab):
                raise ValueError(f"the schema's {field}[{j}] repeats a category")


def _check_schema(schema: Any, cfg: Any) -> None:
    """Refuse a column schema that disagrees with the network config (``ValueError``): the
    number of columns, an image's size and channels, a mixed table's kinds and vocabularies."""
    from anovae.images import ImageSchema
    from anovae.mixed import KINDS, MixedSchema

    family = {ImageSchema: "conv", MixedSchema: "mixed"}.get(type(schema), "mlp")
    if cfg.kind != family:
        raise ValueError(f"the schema is for a {family!r} network, the network config is "
                         f"{cfg.kind!r}")
    if isinstance(schema, ImageSchema):
        stored = (schema.channels, schema.height, schema.width)
        implied = (cfg.in_channels, cfg.height, cfg.width)
        if stored != implied:
            raise ValueError(f"the schema's images (channels, height, width) {stored} disagree "
                             f"with the network's {implied}")
        return
    if isinstance(schema, MixedSchema):
        n = len(schema.columns)
        if not len(schema.kinds) == len(schema.vocabularies) == len(schema.n_observed) == n:
            raise ValueError(f"the schema has {n} columns, {len(schema.kinds)} kinds, "
                             f"{len(schema.vocabularies)} vocabularies and "
                             f"{len(schema.n_observed)} observed counts")
        for j, (kind, vocab) in enumerate(zip(schema.kinds, schema.vocabularies, strict=True)):
            if kind not in KINDS:
                raise ValueError(f"the schema's kinds[{j}] {_show(kind)} is not one of "
                                 f"{list(KINDS)}")
            if (vocab is None) != (kind != "categorical"):
                raise ValueError(f"the schema's column {j} is {kind} but has "
                                 f"{'no' if vocab is None else 'a'} category vocabulary")
        if schema.kinds != cfg.kinds:
            raise ValueError(f"the schema's column kinds {_show(list(schema.kinds))} disagree "
                             f"with the network's {_show(list(cfg.kinds))}")
        if schema.cardinalities != cfg.cardinalities:
            raise ValueError(f"the schema's category vocabularies (sizes "
                             f"{_show(list(schema.cardinalities))}) disagree with the "
                             f"network's cardinalities {_show(list(cfg.cardinalities))}")
        names = schema.columns
    else:
        if schema.n_features != cfg.n_features:
            raise ValueError(f"the schema has {_show(schema.n_features)} features, the network "
                             f"{cfg.n_features}")
        names = schema.names or ()
        if schema.names is not None and len(names) != schema.n_features:
            raise ValueError(f"the schema names {len(names)} columns for "
                             f"{schema.n_features} features")
    if not all(isinstance(c, str) for c in names):
        raise ValueError("the schema's column names must be strings")
    if len(set(names)) != len(names):  # (Counter: a wide table's names, counted in one pass)
        dup = sorted(c for c, k in Counter(names).items() if k > 1)
        raise ValueError(f"the schema names the columns {_show(dup)} more than once")


def _check_net_shapes(cfg: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse network tensors that are missing, unexpected or of another shape than the config
    implies (``ValueError``), before any memory is allocated for the network: the expected
    shapes come from the network built on the ``meta`` device (no storage), the stored ones from
    the safetensors header."""
    from anovae.nets import build_net

    stored = {k: v for k, v in shapes.items() if k.startswith("net.")}
    # every layer holds at least a weight and a bias: a config of more layers than that is not
    # this file's, and would only cost time to build on the meta device
    depth = len(cfg.channels) if cfg.kind == "conv" else len(cfg.hidden_dims)
    if 2 * depth > len(stored):
        raise ValueError(f"the network config has {depth} hidden layers, the file only "
                         f"{len(stored)} network tensors")
    with torch.device("meta"):
        expected = {f"net.{k}": tuple(v.shape)
                    for k, v in build_net(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise ValueError(f"the network tensors {_show(missing)} are missing")
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        raise ValueError(f"the file has network tensors {_show(unexpected)} that the network "
                         f"config does not have")
    for key, shape in expected.items():
        if stored[key] != shape:
            raise ValueError(f"the tensor {key!r} has shape {list(stored[key])}, the network "
                             f"config implies {list(shape)}")


def _check_scaler(method: Any, center: torch.Tensor, scale: torch.Tensor,
                  shape: tuple[int, ...]) -> None:
    """Refuse a scaler that cannot scale the model's inputs (``ValueError``): unknown method,
    ``center``/``scale`` of another shape than ``shape`` or not floating point, non-finite
    values, a scale ``<= 0``."""
    from anovae.tabular import SCALERS

    if method not in SCALERS:
        raise ValueError(f"the scaler method {_show(method)} is unknown; known: {list(SCALERS)}")
    for name, t in (("center", center), ("scale", scale)):
        if tuple(t.shape) != shape:
            raise ValueError(f"the scaler's {name} has shape {list(t.shape)}, the model's "
                             f"inputs need {list(shape)}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"the scaler's {name} has dtype {t.dtype}, not floating point")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"the scaler's {name} has values that are not finite")
    if not bool((scale > 0).all()):
        raise ValueError("the scaler's scale has values <= 0")


def _check_arrays(tensors: dict[str, torch.Tensor], latent_dim: int) -> None:
    """Refuse fitted arrays that would score wrongly (``ValueError``): non-finite network
    weights; training and calibration scores that are not float vectors without NaN (the
    training scores not empty); code statistics other than one finite value per latent unit."""
    for key, t in tensors.items():
        if key.startswith("net.") and t.dtype.is_floating_point and not bool(
                torch.isfinite(t).all()):
            raise ValueError(f"the network tensor {key!r} has values that are not finite")
    for key, min_size in (("decision_scores", 1), ("calibration_scores", 0)):
        t = tensors.get(key)
        if t is not None and (t.dim() != 1 or t.numel() < min_size
                              or not t.dtype.is_floating_point or bool(torch.isnan(t).any())):
            raise ValueError(f"the tensor {key!r} must be a float vector without NaN"
                             f"{' (not empty)' if min_size else ''}, got shape {list(t.shape)} "
                             f"of {t.dtype}")
    for key in ("code_mean", "code_std"):
        t = tensors.get(key)
        if t is not None and (tuple(t.shape) != (latent_dim,) or not t.dtype.is_floating_point
                              or not bool(torch.isfinite(t).all())):
            raise ValueError(f"the tensor {key!r} must hold {latent_dim} finite floats (one per "
                             f"latent unit), got shape {list(t.shape)} of {t.dtype}")


def _check_baselines(tensors: dict[str, torch.Tensor], n_features: int, image: bool) -> None:
    """Refuse feature baselines (``ValueError``) on an image model (images have none: they
    explain with anomaly maps), of an unknown score, or other than one finite float per
    feature."""
    from anovae.scores import SCORES

    for key, t in tensors.items():
        if not key.startswith(BASELINE_PREFIX):
            continue
        if image:
            raise ValueError(f"the tensor {key!r} is a table model's feature baseline; image "
                             "models have none")
        if key[len(BASELINE_PREFIX):] not in SCORES:
            raise ValueError(f"the tensor {key!r} is the baseline of an unknown score (known: "
                             f"{', '.join(SCORES)})")
        if (tuple(t.shape) != (n_features,) or not t.dtype.is_floating_point
                or not bool(torch.isfinite(t).all())):
            raise ValueError(f"the tensor {key!r} must hold {n_features} finite floats (one per "
                             f"feature), got shape {list(t.shape)} of {t.dtype}")


def _check_history(history: Any) -> dict[str, Any]:
    """The training history if it is an object of number lists; else a ``ValueError``."""
    history = _dict_field(history, "training.history")
    for key, values in history.items():
        if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"training.history[{key!r}] must be a list of numbers")
    return history


def load(path: str | Path, *, device: str | None = None) -> Any:
    """Load a detector saved with ``detector.save(path)``.

    Everything in the file is checked before it is used: the JSON fields' types and ranges, the
    schema against the network config, every tensor's shape against the shapes the config
    implies (read from the header, before the network or any tensor is allocated, so a small
    hostile file cannot make it allocate gigabytes), and the scaler's values.

    Args:
        path: the model file.
        device: override the saved ``device`` parameter (e.g. ``"cpu"``).

    Returns:
        The fitted detector; it scores bit-identically to the one that was saved.

    Raises:
        ModelFileError: missing, truncated, corrupt, foreign, inconsistent or newer-format file.
    """
    from safetensors.torch import load as load_tensors

    from anovae.detectors import REGISTRY, AEDetector
    from anovae.detectors.base import resolve_device
    from anovae.images import ImageSchema
    from anovae.nets import build_net, config_from_dict
    from anovae.tabular import Scaler

    data, meta, shapes = _read_model_file(path)  # one read: nothing mapped, nothing mixed
    path = _file_path(path)
    doc = _document(meta, path)
    checksum, doc_text = meta.get(CHECKSUM_KEY), meta.get("anovae", "")
    name = doc.get("estimator")
    if not isinstance(name, str) or name not in REGISTRY:
        raise ModelFileError(f"{str(path)!r} holds an unknown estimator {_show(name)}")
    try:
        params = {RENAMED_PARAMS.get(k, k): tuple(v) if isinstance(v, list) else v
                  for k, v in _dict_field(doc["params"], "params").items()}
        if device is not None:
            params["device"] = device
        try:
            det = REGISTRY[name](**params)
        except TypeError as exc:  # a parameter this estimator does not have
            raise ValueError(f"its parameters do not fit {name}: {exc}") from None
        _check_file_params(det)
        if doc.get("score", det.score_name) != det.score_name:
            raise ValueError(f"its threshold was set on the {_show(doc.get('score'))} score, but "
                             f"its parameters give the {det.score_name!r} score")
        cfg = config_from_dict(_dict_field(doc["net"], "net"))
        _check_net_config(cfg, variational=not isinstance(det, AEDetector))
        schema_doc = _dict_field(doc["schema"], "schema")
        _check_schema_doc(schema_doc)
        schema = det._schema_from_dict(schema_doc)
        _check_schema(schema, cfg)
        _check_net_shapes(cfg, shapes)  # before anything is allocated for the network
        _params_from_net(det, cfg, path)
        noise_seed = _int_field(doc["noise_seed"], "noise_seed")
        threshold = _float_field(doc["threshold"], "threshold", allow_inf=True)  # inf: "fpr"
        training = _dict_field(doc.get("training", {}), "training")
        history = _check_history(training.get("history", {}))
        n_epochs = _int_field(training.get("n_epochs", 0), "training.n_epochs")
        best_epoch = _int_field(training.get("best_epoch", 0), "training.best_epoch")
        batch_size, learning_rate = training.get("batch_size"), training.get("learning_rate")
        if batch_size is not None:  # None in files written before they were kept
            _int_field(batch_size, "training.batch_size", 1)
        if learning_rate is not None:
            _float_field(learning_rate, "training.learning_rate")
        scaler_doc = _dict_field(doc["scaler"], "scaler")
        try:  # from the bytes read above: memory-mapped tensors (load_file) would change,
            # or fault (SIGBUS), when the file is overwritten in place while in use
            tensors = load_tensors(data)
        except Exception as exc:
            raise ModelFileError(f"{str(path)!r} is truncated or corrupt: {exc}") from exc
        # checked after every other check: those name what is wrong in a file built by hand
        intact = checksum is None or file_digest(doc_text, tensors) == checksum
        inputs = ((schema.channels, 1, 1) if isinstance(schema, ImageSchema)
                  else (schema.n_features,))
        _check_scaler(scaler_doc.get("method"), tensors["scaler.center"],
                      tensors["scaler.scale"], inputs)
        _check_arrays(tensors, cfg.latent_dim)
        _check_baselines(tensors, schema.n_features, isinstance(schema, ImageSchema))
        try:
            dev = resolve_device(det.device)
        except ValueError:
            warn(f"model was saved for device {det.device!r}, not available here: using the "
                 "CPU")
            dev = torch.device("cpu")
        net = build_net(cfg)
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
        ints = sorted(f"net.{k}" for k, v in state.items() if not v.is_floating_point())
        if ints:  # load_state_dict would cast them: every score off by orders of magnitude
            raise ValueError(f"the network tensors {_show(ints[:3])} are not floating point")
        net.load_state_dict(state, strict=True)
        det.net_ = net.to(dev).eval()
        det.net_config_ = cfg
        det.scaler_ = Scaler(scaler_doc["method"], tensors["scaler.center"].numpy(),
                             tensors["scaler.scale"].numpy())
        det.schema_ = schema
        det.n_features_in_ = det.schema_.n_features
        if det.schema_.names is not None:
            det.feature_names_in_ = np.asarray(det.schema_.names, dtype=object)
        det.noise_seed_ = noise_seed
        det.history_ = history
        det.n_epochs_ = n_epochs
        det.best_epoch_ = best_epoch
        det.batch_size_ = batch_size
        det.learning_rate_ = learning_rate
        for attr in _ARRAY_ATTRS:
            key = attr.rstrip("_")
            if key in tensors:
                setattr(det, attr, tensors[key].numpy())
        baselines = {k[len(BASELINE_PREFIX):]: v.numpy() for k, v in tensors.items()
                     if k.startswith(BASELINE_PREFIX)}
        if baselines:
            det.feature_baselines_ = baselines
        det._load_fitted_json(doc.get("fitted", {}), {
            k[len("fitted."):]: v.numpy() for k, v in tensors.items() if k.startswith("fitted.")})
        _check_fitted_terms(det, doc)
        # what the model was fitted with: the file's parameters, as read (older image files
        # have just had their score terms set off, as they were fitted)
        det._fit_params_ = det.get_params(deep=False)
        if "decision_scores" not in tensors:
            raise ValueError("it lacks the tensor 'decision_scores' (the training scores)")
        det._set_threshold(threshold)
        if doc.get("threshold_method"):
            det.threshold_method_ = str(doc["threshold_method"])
        det.threshold_reference_scores_ = _threshold_reference(det, tensors)
        if not intact:
            raise ModelFileError(f"{str(path)!r} is corrupt: its contents do not match the "
                                 "checksum written with them (the file changed after it was "
                                 "saved); use an intact copy or refit")
    except ModelFileError:
        raise
    except KeyError as exc:  # a field or tensor the format requires
        raise ModelFileError(f"{str(path)!r} is an inconsistent anovae model: it lacks "
                             f"{_show(exc.args[0] if exc.args else exc)}") from exc
    except (AttributeError, TypeError) as exc:  # e.g. a list where a dict belongs
        raise ModelFileError(f"{str(path)!r} is an inconsistent anovae model: a field has the "
                             f"wrong type ({exc})") from exc
    except (OverflowError, RuntimeError, ValueError) as exc:
        # e.g. a schema that disagrees with the network, Infinity where an integer belongs
        raise ModelFileError(f"{str(path)!r} is an inconsistent anovae model: {exc}") from exc
    try:
        probe = _probe_score(det)
    except (RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{str(path)!r} is an inconsistent anovae model: it cannot score "
                             f"({exc})") from exc
    if not np.isfinite(probe):
        raise ModelFileError(f"{str(path)!r} is corrupt: it scores a typical row {probe} (its "
                             "weights or fitted terms are out of range); use an intact copy or "
                             "refit")
    det.metadata_ = {k: doc[k] for k in ("library_version", "created_utc", "format_version")
                     if k in doc}
    if checksum is not None:  # verified above: what the service reports as the model version
        det.metadata_["sha256"] = checksum
    return det
