"""Wording shared by the messages of the library and the CLI."""

from __future__ import annotations

import reprlib
from typing import Any


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "row")`` -> ``"1 row"``, ``plural(3, "row")`` -> ``"3 rows"``,
    ``plural(2, "matrix", "matrices")`` -> ``"2 matrices"``."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def quoted(value: Any) -> str:
    """A data value quoted in a message, as ``repr`` of its text cut to about 30 characters
    (``'xxxxxxxxxxxx...xxxxxxxxxxxxx'``): a megabyte of text in a number's column was repeated
    whole in the error, and in the service's response."""
    return reprlib.repr(str(value))
