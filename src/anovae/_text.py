"""Wording shared by the messages of the library and the CLI."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "row")`` -> ``"1 row"``, ``plural(3, "row")`` -> ``"3 rows"``,
    ``plural(2, "matrix", "matrices")`` -> ``"2 matrices"``."""
    return f"{n} {word if n == 1 else many or word + 's'}"
