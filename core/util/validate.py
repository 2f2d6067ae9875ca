"""Input checks shared by every layer: images, finite numbers, SHA-256 digests, probabilities.

Each check raises ``ValueError`` with a message that names the value (``what``) and what
was wrong with it, and returns the checked value so a caller can write
``image = check_rgb_uint8(image)``.
"""

from __future__ import annotations

import math
import re
from typing import Any, overload

import numpy as np

# The one tolerance for "a row of class probabilities sums to 1", live and research alike.
# Round-off stays far below it: float32 softmax outputs (ONNX Runtime, torch) miss 1 by about
# 1e-7 per class, and values written to CSV/JSON with 6 significant digits by about 1e-6.
# Logits, unnormalised scores or a dropped class miss by far more than 1e-3.
PROB_SUM_ATOL = 1e-3

# Lowercase hex only, as hashlib's hexdigest() writes it; \A...\Z so that a trailing newline
# (which ``$`` would let through) is refused too.
SHA256_HEX_RE = re.compile(r"\A[0-9a-f]{64}\Z")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def check_rgb_uint8(image: Any, what: str = "image") -> np.ndarray:
    """``image`` as a C-contiguous RGB uint8 array of shape (H, W, 3).

    Anything else (another dtype, a grey or RGBA image, not an array) raises ``ValueError``.
    A contiguous input is returned as is, without a copy.
    """
    if (
        not isinstance(image, np.ndarray)
        or image.ndim != 3
        or image.shape[2] != 3
        or image.dtype != np.uint8
    ):
        raise ValueError(
            f"{what}: expected an RGB uint8 image of shape (H, W, 3), got {_describe(image)}"
        )
    return np.ascontiguousarray(image)


@overload
def check_finite(value: float, what: str = ...) -> float: ...


@overload
def check_finite(value: np.ndarray, what: str = ...) -> np.ndarray: ...


def check_finite(value: Any, what: str = "value") -> Any:
    """A number (returned as float) or an array (returned as is) with no NaN or infinity.

    A non-number scalar raises ``TypeError`` as :func:`math.isfinite` does.
    """
    if isinstance(value, np.ndarray):
        finite = np.isfinite(value)
        if not finite.all():
            index = tuple(int(i) for i in np.argwhere(~finite)[0])
            where = index[0] if len(index) == 1 else index
            raise ValueError(f"{what} must be finite, got NaN or infinity at index {where}")
        return value
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


def is_sha256_hex(value: object) -> bool:
    """Whether ``value`` is a SHA-256 digest as hexdigest() writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and SHA256_HEX_RE.match(value) is not None


def check_probability_rows(
    probs: Any,
    atol: float = PROB_SUM_ATOL,
    *,
    what: str = "probs",
    hint: str = "",
    range_slack: float = 0.0,
) -> np.ndarray:
    """``probs`` (one row (C,) or rows (N, C)) as float64, each row a probability vector.

    Every value must be finite and lie in [0, 1] (``range_slack`` widens that interval for
    round-off), and every row must sum to 1 within ``atol``. ``hint`` is appended to the
    range and sum messages (e.g. "are these logits?"). The caller checks the class count.
    """
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise ValueError(
            f"{what} must be one row (C,) or rows (N, C) of class probabilities, "
            f"got shape {array.shape}"
        )
    one_row = array.ndim == 1
    rows = array.reshape(-1, array.shape[-1])
    if rows.size == 0:
        return array
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        where = "" if one_row else f" (first at row {int(np.flatnonzero(~finite)[0])})"
        raise ValueError(f"{what} contain NaN or infinity{where}")
    low, high = float(rows.min()), float(rows.max())
    if low < -range_slack or high > 1.0 + range_slack:
        raise ValueError(
            f"{what} must lie in [0, 1] (0..1); got values in [{low:.6g}, {high:.6g}]{hint}"
        )
    sums = rows.sum(axis=1)
    off = np.abs(sums - 1.0) > atol
    if off.any():
        if one_row:
            raise ValueError(f"{what} must sum to 1 (within {atol:g}), got {sums[0]:.6f}{hint}")
        index = int(np.flatnonzero(off)[0])
        raise ValueError(
            f"each row of {what} must sum to 1 (within {atol:g}); row {index} sums to "
            f"{sums[index]:.6g}{hint}"
        )
    return array
