"""The errors anovae raises on purpose.

Every error a user can cause (bad data, a wrong file, an unfitted model) is one of these, with a
message that names what is wrong. They subclass the built-in types callers already catch
(``ValueError``, ``FileNotFoundError``...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "AnovaeError",
    "DataError",
    "ModelFileError",
    "NotFittedError",
    "TrainingError",
]


class AnovaeError(Exception):
    """Base class of every error raised on purpose by anovae."""


class DataError(AnovaeError, ValueError):
    """The input data cannot be used: wrong columns, NaN/inf, empty, wrong shape or file type."""


class ModelFileError(AnovaeError, ValueError):
    """A model file is missing, truncated, not an anovae model, or from a newer format."""


class TrainingError(AnovaeError, RuntimeError):
    """Training failed in a way the user can act on (for example the loss became NaN)."""


class NotFittedError(AnovaeError, _SklearnNotFittedError):
    """The estimator is used before ``fit`` (also a scikit-learn ``NotFittedError``)."""
