"""anovae: anomaly detection with variational autoencoders."""

from anovae._version import __version__

__all__ = ["__version__"]
