"""CSV cells that a spreadsheet opens as text, never runs (OWASP "CSV injection").

Subject names, pseudonyms and model ids come from users and datasets; a cell starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return would run as a formula in Excel or
LibreOffice when a clinician or researcher opens the file.
"""

from __future__ import annotations

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def guard_formula(text: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with ``'`` (leading spaces,
    which an import may trim, do not hide the formula)."""
    return "'" + text if text.lstrip(" ").startswith(FORMULA_PREFIXES) else text


def text_cell(text: object | None) -> str:
    """A free-text CSV cell: formula-guarded and on one physical line (``None`` -> empty)."""
    if text is None:
        return ""
    # One physical line per record keeps a torn last line detectable; guarded after the
    # line breaks become spaces, so "\n=cmd" cannot turn into an unguarded " =cmd".
    return guard_formula(str(text).replace("\r\n", " ").replace("\r", " ").replace("\n", " "))
