"""anovae: anomaly detection with variational autoencoders.

>>> import anovae
>>> sorted(n for n in anovae.__all__ if n.endswith("Detector"))
['AEDetector', 'ImageAEDetector', 'ImageVAEDetector', 'VAEDetector']
"""

from anovae._version import __version__
from anovae.detectors import AEDetector, ImageAEDetector, ImageVAEDetector, VAEDetector
from anovae.exceptions import AnovaeError, DataError, ModelFileError, NotFittedError, TrainingError
from anovae.persistence import load

__all__ = [
    "AEDetector",
    "AnovaeError",
    "DataError",
    "ImageAEDetector",
    "ImageVAEDetector",
    "ModelFileError",
    "NotFittedError",
    "TrainingError",
    "VAEDetector",
    "__version__",
    "load",
]
