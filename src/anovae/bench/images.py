"""Detection-quality benchmark on MNIST-style image sets (issue 4): ``anovae bench images``.

A data set is a folder holding the four IDX files of the MNIST layout
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``; ``.gz`` or raw), with class labels. Protocols, for each class c:

``one-class``
    train on the training images of class c only; test on the whole test set, class c normal
    and every other class anomalous.
``multi-class``
    train on the training images of every other class; test on the whole test set, class c
    anomalous.

Metrics: AUROC and AUPRC (anomaly = positive) per class, their mean over classes, and the fit and
score times: wall-clock seconds and CPU seconds of the process (``*_cpu_s``; on a shared machine
the CPU time is the fairer measure of the work). Detectors: ``vae``
(:class:`anovae.ImageVAEDetector` with its defaults), ``ae`` (:class:`anovae.ImageAEDetector`,
the plain convolutional autoencoder of the same size) and ``tutorial-conv`` (the preset).
Results are written after every class, so a cut-short run keeps what it finished.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from anovae.bench.images import write_idx, run_image_benchmark
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "toy"
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 40).astype(np.uint8)
    >>> X = np.zeros((80, 28, 28), np.uint8)
    >>> X[y == 0, 8:20, 12:16] = 255; X[y == 1, 12:16, 4:24] = 255
    >>> for split in ("train", "t10k"):
    ...     _ = write_idx(d / f"{split}-images-idx3-ubyte.gz", X)
    ...     _ = write_idx(d / f"{split}-labels-idx1-ubyte.gz", y)
    >>> res = run_image_benchmark(d.parent, datasets=["toy"], detectors=["ae"], classes=[0],
    ...                           params={"epochs": 3, "channels": (4, 8)}, progress=False)
    >>> bool(res.results["auroc"].iloc[0] > 0.9)
    True
"""

from __future__ import annotations

import gzip
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anovae.bench.tabular import data_folder
from anovae.images import read_idx

__all__ = ["IMAGE_DETECTORS", "IMAGE_PROTOCOLS", "ImageBenchResult", "load_image_dataset",
           "make_figure", "resolve_image_data_dir", "run_image_benchmark", "write_idx"]

logger = logging.getLogger(__name__)

IMAGE_PROTOCOLS = ("one-class", "multi-class")
IMAGE_DETECTORS = ("vae", "ae", "tutorial-conv")
DEFAULT_IMAGE_DATA_DIR = Path("../shared/data")
IMAGE_DATA_DIR_ENV = "ANOVAE_IMAGE_DATA"
DEFAULT_DATASETS = ("mnist", "fashion-mnist")
_FILES = {("train", "images"): "train-images-idx3-ubyte", ("train", "labels"):
          "train-labels-idx1-ubyte", ("test", "images"): "t10k-images-idx3-ubyte",
          ("test", "labels"): "t10k-labels-idx1-ubyte"}


def resolve_image_data_dir(data_dir: str | Path | None = None) -> Path:
    """``data_dir``, else ``$ANOVAE_IMAGE_DATA``, else ``../shared/data`` (must exist)."""
    return data_folder(data_dir, IMAGE_DATA_DIR_ENV, DEFAULT_IMAGE_DATA_DIR, "image data folder",
                       "a folder with one sub-folder per data set (mnist/, fashion-mnist/) "
                       "holding the four MNIST-layout IDX files")


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big")
                                                      for s in arr.shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:  # type: ignore[operator]
        fh.write(header + arr.tobytes())
    return path


def image_dataset_files(folder: str | Path) -> list[Path]:
    """The four IDX files of an MNIST-layout folder (``.gz`` or not), in
    :func:`load_image_dataset`'s order; ``FileNotFoundError`` naming the first one absent."""
    folder = Path(folder)
    out = []
    for key, stem in _FILES.items():
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                out.append(folder / name)
                break
        else:
            raise FileNotFoundError(f"{str(folder)!r} lacks {stem}.gz ({key[0]} {key[1]})")
    return out


def load_image_dataset(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                     np.ndarray]:
    """``(X_train, y_train, X_test, y_test)`` of an MNIST-layout folder (images uint8 (N, H, W))."""
    out = [read_idx(path) for path in image_dataset_files(folder)]
    return out[0], out[1].astype(np.int64), out[2], out[3].astype(np.int64)


def _detector(name: str, seed: int, params: dict[str, Any]) -> Any:
    from anovae.detectors.image import ImageAEDetector, ImageVAEDetector

    if name == "vae":
        return ImageVAEDetector(random_state=seed, **params)
    if name == "ae":
        keep = set(ImageAEDetector().get_params())
        return ImageAEDetector(random_state=seed, **{k: v for k, v in params.items()
                                                     if k in keep})
    if name == "tutorial-conv":
        return ImageVAEDetector.from_preset("tutorial-conv", random_state=seed, **params)
    raise ValueError(f"unknown detector {name!r}; choose from {list(IMAGE_DETECTORS)}")


@dataclass
class ImageBenchResult:
    """One line per (data set, protocol, detector, class) in ``results``."""

    results: pd.DataFrame
    environment: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean AUROC/AUPRC over classes and total time per data set, protocol, detector."""
        g = self.results.groupby(["dataset", "protocol", "detector"], sort=False)
        return g.agg(classes=("class", "count"), auroc=("auroc", "mean"),
                     auprc=("auprc", "mean"), fit_s=("fit_s", "sum"),
                     score_s=("score_s", "sum")).reset_index()

    def to_markdown(self) -> str:
        """Per-class AUROC tables (one per data set and protocol) and the summary."""
        lines: list[str] = []
        for (ds, proto), part in self.results.groupby(["dataset", "protocol"], sort=False):
            wide = part.pivot_table(index="class", columns="detector", values="auroc",
                                    sort=False)
            secs = part.assign(s=part["fit_s"] + part["score_s"]).pivot_table(
                index="class", columns="detector", values="s", sort=False)
            cols = list(wide.columns)
            lines += [f"**{ds}, {proto}** (AUROC; seconds per class = fit + score)", "",
                      "| class | " + " | ".join(f"{c} AUROC | {c} s" for c in cols) + " |",
                      "|---|" + "---|---|" * len(cols)]
            for cls in wide.index:
                cells = [f"{wide.loc[cls, c]:.4f} | {secs.loc[cls, c]:.0f}" for c in cols]
                lines.append(f"| {cls} | " + " | ".join(cells) + " |")
            means = [f"**{wide[c].mean():.4f}** | {secs[c].sum():.0f}" for c in cols]
            lines += ["| mean / total | " + " | ".join(means) + " |", ""]
        return "\n".join(lines)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        from anovae.io import atomic_output

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"results": out / "results.csv", "summary": out / "summary.csv",
                 "markdown": out / "results.md"}
        with atomic_output(paths["results"]) as tmp:
            self.results.to_csv(tmp, index=False)
        with atomic_output(paths["summary"]) as tmp:
            self.summary().to_csv(tmp, index=False)
        with atomic_output(paths["markdown"]) as tmp:
            env = ", ".join(f"{k} {v}" for k, v in self.environment.items())
            tmp.write_text(self.to_markdown() + f"\n{env}\n")
        return paths


def run_image_benchmark(
    data_dir: str | Path | None = None,
    *,
    datasets: Sequence[str] = DEFAULT_DATASETS,
    protocols: Sequence[str] = ("one-class",),
    detectors: Sequence[str] = ("vae", "ae"),
    classes: Sequence[int] | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
    extra_scores: Sequence[str] = (),
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> ImageBenchResult:
    """Run the protocols on each data set, class by class (see the module docstring).

    Args:
        data_dir: folder with one sub-folder per data set (default: see
            :func:`resolve_image_data_dir`).
        datasets: sub-folder names.
        protocols: from :data:`IMAGE_PROTOCOLS`.
        detectors: from :data:`IMAGE_DETECTORS`.
        classes: the classes to run (default: all in the training labels).
        seed: ``random_state`` of every detector and of the subsampling.
        params: extra detector parameters (e.g. ``{"epochs": 5}``), for every detector.
        max_train, max_test: subsample the training images of a run / the test set (quick runs;
            the default uses them all, the official protocol).
        extra_scores: more scores (:data:`anovae.scores.SCORES`) to compute from each fitted
            VAE (same model, so they cost only the scoring), reported as detector
            ``"<name>:<score>"`` with the fit time of the shared fit.
        out_dir: write ``results.csv``, ``summary.csv`` and ``results.md`` there after every class.
        progress: log one line per finished class at INFO level and show a tqdm bar.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score
    from tqdm.auto import tqdm

    for p in protocols:
        if p not in IMAGE_PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; choose from {list(IMAGE_PROTOCOLS)}")
    for d in detectors:
        if d not in IMAGE_DETECTORS:
            raise ValueError(f"unknown detector {d!r}; choose from {list(IMAGE_DETECTORS)}")
    from anovae.scores import SCORES

    for sc in extra_scores:
        if sc not in SCORES:
            raise ValueError(f"unknown score {sc!r}; choose from {list(SCORES)}")
    root = resolve_image_data_dir(data_dir)
    env = {"machine": platform.machine(), "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    rows: list[dict[str, Any]] = []
    result = ImageBenchResult(pd.DataFrame(rows), env)
    rng = np.random.default_rng(seed)
    for ds in datasets:  # every data set's files, before hours of training on the first
        image_dataset_files(root / ds)
    for ds in datasets:
        Xtr, ytr, Xte, yte = load_image_dataset(root / ds)
        absent = sorted(set(classes or ()) - set(np.unique(ytr).tolist()))
        if absent:
            raise ValueError(f"{ds} has no training images of class(es) {absent}; its classes "
                             f"are {np.unique(ytr).tolist()}")
        if max_test is not None and max_test < len(Xte):
            keep = np.sort(rng.permutation(len(Xte))[:max_test])
            Xte, yte = Xte[keep], yte[keep]
        todo = [int(c) for c in (classes if classes is not None else np.unique(ytr))]
        runs = [(p, c, d) for p in protocols for c in todo for d in detectors]
        bar = tqdm(runs, desc=ds, unit="run", disable=not progress, leave=False)
        for proto, cls, det_name in bar:
            train_mask = ytr == cls if proto == "one-class" else ytr != cls
            X_fit = Xtr[train_mask]
            if max_train is not None and max_train < len(X_fit):
                X_fit = X_fit[np.sort(np.random.default_rng(seed + cls).permutation(
                    len(X_fit))[:max_train])]
            y_anom = (yte != cls) if proto == "one-class" else (yte == cls)
            det = _detector(det_name, seed, dict(params or {}))
            c0, t0 = time.process_time(), time.perf_counter()
            det.fit(X_fit)
            c1, t1 = time.process_time(), time.perf_counter()
            scores = det.decision_function(Xte)
            c2, t2 = time.process_time(), time.perf_counter()
            common = {"dataset": ds, "protocol": proto, "class": cls, "fit_s": t1 - t0,
                      "fit_cpu_s": c1 - c0, "epochs": det.n_epochs_, "n_train": len(X_fit),
                      "n_test": len(Xte)}
            rows.append({**common, "detector": det_name,
                         "auroc": float(roc_auc_score(y_anom, scores)),
                         "auprc": float(average_precision_score(y_anom, scores)),
                         "score_s": t2 - t1, "score_cpu_s": c2 - c1})
            logger.info("%s %s %s class %d: AUROC %.4f (fit %.0fs, score %.0fs)", ds, proto,
                        det_name, cls, rows[-1]["auroc"], t1 - t0, t2 - t1)
            own = det.get_params().get("score_type")  # None for the AE: it has one score
            for sc in extra_scores if own is not None else ():
                if sc == own:
                    continue
                det.set_params(score_type=sc)  # scoring reads it; the fitted network is shared
                c2, t2 = time.process_time(), time.perf_counter()
                extra = det.decision_function(Xte)
                rows.append({**common, "detector": f"{det_name}:{sc}",
                             "auroc": float(roc_auc_score(y_anom, extra)),
                             "auprc": float(average_precision_score(y_anom, extra)),
                             "score_s": time.perf_counter() - t2,
                             "score_cpu_s": time.process_time() - c2})
                det.set_params(score_type=own)
            result = ImageBenchResult(pd.DataFrame(rows), env)
            if out_dir is not None:
                result.write(out_dir)
    return result


def make_figure(detector: Any, images: np.ndarray, path: str | Path, *, n: int = 8) -> Path:
    """A PNG of ``n`` images (row 1), their reconstructions (row 2) and anomaly maps (row 3,
    one colour scale for all, brighter = more anomalous)."""
    from anovae.images import check_images, map_colours, save_grid

    x, _ = check_images(images[:n])  # (n, C, H, W) in [0, 1]
    recon = np.clip(detector.reconstruct(x), 0, 1)  # (n, C, H, W)
    rgb = (lambda a: np.repeat(a, 3, axis=1)) if x.shape[1] == 1 else (lambda a: a)
    rows = [rgb(x), rgb(recon), map_colours(detector.anomaly_maps(x))]
    return save_grid(np.concatenate(rows), path, ncol=x.shape[0], scale=2)
