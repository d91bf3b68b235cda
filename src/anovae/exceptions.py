"""The errors anovae raises on purpose, and how it warns.

Every error a user can cause (bad data, a wrong file, an unfitted model) is one of these, with a
message that names what is wrong. They subclass the built-in types callers already catch
(``ValueError``, ``FileNotFoundError``...), so ``except ValueError`` keeps working.

What the user should act on but need not stop for (a column that looks like an id, a setting
that cannot be honoured) is a warning from :func:`warn`, which names the caller's line, as
scikit-learn's do; diagnostics (what a fit found) go to the ``anovae`` loggers.
"""

from __future__ import annotations

import os
import sys
import warnings

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = [
    "AnovaeError",
    "DataError",
    "ModelFileError",
    "NotFittedError",
    "TrainingError",
    "warn",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


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


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside anovae: the user's line that
    called into the library (or the tool, e.g. scikit-learn's ``cross_val_score``, that did),
    however deep inside the library the warning arises. ``warnings.catch_warnings`` and
    ``filterwarnings`` by category and message work as for any library's warning."""
    frame = sys._getframe(1)
    level = 2  # 2: warn's caller
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
