"""Pain labels: PSPI → 5 classes (the founding paper's Table 1) and BioVid stimulus levels.

The paper names its classes "No pain, Mild, Mid, Strong, Very strong"; "Mid" and
"Very" are ambiguous, so the display names are configurable and default to the
wording below. Everything that shows a class name reads it from here (or from a
model's metadata, which was written from here at training time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NUM_CLASSES = 5
DEFAULT_CLASS_NAMES: tuple[str, ...] = ("No pain", "Mild", "Moderate", "Strong", "Severe")

# Inclusive PSPI ranges of each class (Table 1). UNBC's PSPI reaches 16: 7-16 -> 4.
PSPI_CLASS_RANGES: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 3), (4, 6), (7, 16))
PSPI_MAX = 16

# BioVid Heat Pain has stimulus levels, not PSPI: baseline and four heat levels.
BIOVID_LEVELS: tuple[str, ...] = ("BL1", "PA1", "PA2", "PA3", "PA4")
BIOVID_LABEL_NOTE = (
    "BioVid labels are stimulus temperatures (BL1, PA1..PA4 -> 0..4), not observed PSPI: "
    "a PA4 clip may show a neutral face."
)


def pspi_to_class(pspi: float) -> int:
    """Map a PSPI score (0-16) to the paper's pain class 0-4."""
    if pspi is None or not math.isfinite(float(pspi)):
        raise ValueError(f"PSPI must be a finite number, got {pspi!r}")
    value = float(pspi)
    if value < 0 or value > PSPI_MAX:
        raise ValueError(f"PSPI must lie in 0..{PSPI_MAX}, got {value:g}")
    # PSPI is an integer sum of FACS intensities; round guards against '2.0' style files.
    score = round(value)
    for cls, (low, high) in enumerate(PSPI_CLASS_RANGES):
        if low <= score <= high:
            return cls
    raise AssertionError("unreachable: PSPI ranges cover 0..16")


def biovid_level_to_class(level: str) -> int:
    """Map a BioVid stimulus level (BL1, PA1..PA4) to class 0-4."""
    key = level.strip().upper()
    if key not in BIOVID_LEVELS:
        raise ValueError(
            f"unknown BioVid level {level!r}; expected one of {', '.join(BIOVID_LEVELS)}"
        )
    return BIOVID_LEVELS.index(key)


def pspi_from_aus(au4: int, au6: int, au7: int, au9: int, au10: int, au43: int) -> int:
    """Prkachin-Solomon Pain Intensity: AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43."""
    for name, value, top in (
        ("au4", au4, 5),
        ("au6", au6, 5),
        ("au7", au7, 5),
        ("au9", au9, 5),
        ("au10", au10, 5),
        ("au43", au43, 1),
    ):
        if not 0 <= value <= top:
            raise ValueError(f"{name} must lie in 0..{top}, got {value}")
    return int(au4 + max(au6, au7) + max(au9, au10) + au43)


def class_names(names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The display names to use, validated: exactly one per class."""
    if names is None:
        return DEFAULT_CLASS_NAMES
    result = tuple(str(n).strip() for n in names)
    if len(result) != NUM_CLASSES or not all(result):
        raise ValueError(f"need {NUM_CLASSES} non-empty class names, got {list(names)!r}")
    return result


def pspi_mapping_text() -> str:
    """Human-readable PSPI → class table, stored in model metadata and cards."""
    parts = []
    for cls, (low, high) in enumerate(PSPI_CLASS_RANGES):
        span = str(low) if low == high else f"{low}-{high}"
        parts.append(f"{span}->{cls}")
    return ", ".join(parts)
