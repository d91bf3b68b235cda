"""Benchmarks of detection quality: data sets, protocols, the runner and its reports."""

from anovae.bench.tabular import (
    BUILTIN_DETECTORS,
    PROTOCOLS,
    BenchResult,
    Dataset,
    DetectorSpec,
    builtin_detector,
    load_datasets,
    resolve_data_dir,
    run_tabular_benchmark,
)

__all__ = [
    "BUILTIN_DETECTORS",
    "PROTOCOLS",
    "BenchResult",
    "Dataset",
    "DetectorSpec",
    "builtin_detector",
    "load_datasets",
    "resolve_data_dir",
    "run_tabular_benchmark",
]
