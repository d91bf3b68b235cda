"""Detectors: one estimator per file, sharing :mod:`anovae.detectors.base`."""

from anovae.detectors.ae import AEDetector
from anovae.detectors.base import BaseDetector
from anovae.detectors.image import ImageAEDetector, ImageVAEDetector
from anovae.detectors.vae import VAEDetector

#: Estimator class by name (used by :func:`anovae.load` to rebuild saved models).
REGISTRY: dict[str, type[BaseDetector]] = {
    "VAEDetector": VAEDetector,
    "AEDetector": AEDetector,
    "ImageVAEDetector": ImageVAEDetector,
    "ImageAEDetector": ImageAEDetector,
}

__all__ = ["REGISTRY", "AEDetector", "BaseDetector", "ImageAEDetector", "ImageVAEDetector",
           "VAEDetector"]
