"""The shared validators: what they accept, what they refuse, and how they say so."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from painmon.core.util.validate import (
    PROB_SUM_ATOL,
    SHA256_HEX_RE,
    check_finite,
    check_probability_rows,
    check_rgb_uint8,
    is_sha256_hex,
)

# --- check_rgb_uint8 ------------------------------------------------------------------------


def test_rgb_uint8_is_returned_without_a_copy():
    image = np.zeros((4, 6, 3), np.uint8)
    assert check_rgb_uint8(image) is image


def test_rgb_view_comes_back_c_contiguous_with_the_same_pixels():
    image = np.arange(8 * 6 * 3, dtype=np.uint8).reshape(8, 6, 3)[:, ::2]
    assert not image.flags.c_contiguous
    out = check_rgb_uint8(image)
    assert out.flags.c_contiguous and np.array_equal(out, image)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 6), np.uint8),  # grey
        np.zeros((4, 6, 4), np.uint8),  # RGBA
        np.zeros((4, 6, 1), np.uint8),
        np.zeros((2, 4, 6, 3), np.uint8),  # a batch
        np.zeros((4, 6, 3), np.float32),
        np.zeros((4, 6, 3), np.uint16),
        np.zeros((4, 6, 3), bool),
        [[[0, 0, 0]]],  # not an array
        None,
    ],
)
def test_rgb_refuses_other_shapes_and_dtypes(image):
    with pytest.raises(ValueError, match=r"RGB uint8 image of shape \(H, W, 3\)"):
        check_rgb_uint8(image)


def test_rgb_message_names_the_value_and_what_it_got():
    with pytest.raises(ValueError, match=r"^crop_face: .*got float32 array of shape \(2, 2, 3\)"):
        check_rgb_uint8(np.zeros((2, 2, 3), np.float32), what="crop_face")


# --- check_finite ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, 2.5, 1e308, np.float32(1.5), np.int64(7)])
def test_finite_numbers_come_back_as_float(value):
    out = check_finite(value)
    assert isinstance(out, float) and out == float(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match="t_s must be finite, got"):
        check_finite(value, "t_s")


def test_non_numbers_raise_type_error_as_math_isfinite_does():
    with pytest.raises(TypeError):
        check_finite("1.0")


def test_finite_arrays_come_back_as_is_and_nan_is_located():
    array = np.zeros((2, 3))
    assert check_finite(array, "landmarks") is array
    array[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"landmarks must be finite.*index \(1, 2\)"):
        check_finite(array, "landmarks")
    with pytest.raises(ValueError, match=r"index 1$"):
        check_finite(np.array([0.0, np.nan]))


# --- SHA-256 --------------------------------------------------------------------------------


def test_a_real_digest_is_sha256_hex():
    digest = hashlib.sha256(b"painmon").hexdigest()
    assert is_sha256_hex(digest)
    assert SHA256_HEX_RE.match(digest)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "ab" * 31,  # 62 digits
        "ab" * 33,  # 66 digits
        "AB" * 32,  # uppercase: hexdigest() never writes it
        "g" + "0" * 63,
        "0" * 64 + "\n",  # `$` alone would let a trailing newline through
        " " + "0" * 63,
        None,
        b"0" * 64,
        64,
    ],
)
def test_anything_else_is_not_sha256_hex(value):
    assert not is_sha256_hex(value)


# --- check_probability_rows -----------------------------------------------------------------


def test_probability_rows_within_the_tolerance_pass():
    rows = np.full((3, 5), 0.2)
    rows[:, 0] += 0.9 * PROB_SUM_ATOL
    out = check_probability_rows(rows)
    assert out.dtype == np.float64 and out.shape == (3, 5)
    assert check_probability_rows((0.1, 0.2, 0.7)).shape == (3,)
    assert check_probability_rows(np.zeros((0, 5))).shape == (0, 5)


def test_float32_softmax_rows_pass():
    logits = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32) * 10
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    check_probability_rows((e / e.sum(axis=1, keepdims=True)).astype(np.float32))


@pytest.mark.parametrize("off", [1.5 * PROB_SUM_ATOL, -1.5 * PROB_SUM_ATOL, 0.5])
def test_a_row_off_by_more_than_the_tolerance_is_refused(off):
    rows = np.full((3, 5), 0.2)
    rows[1, 0] += off
    with pytest.raises(ValueError, match=r"each row of probs must sum to 1 .*row 1 sums to"):
        check_probability_rows(rows)
    with pytest.raises(ValueError, match=r"^probs must sum to 1 \(within 0\.001\), got"):
        check_probability_rows(rows[1])


def test_a_tighter_tolerance_can_be_asked_for():
    row = np.full(5, 0.2)
    row[0] += 5e-4
    check_probability_rows(row)
    with pytest.raises(ValueError, match=r"within 0\.0001"):
        check_probability_rows(row, atol=1e-4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_probabilities_are_refused(bad):
    rows = np.full((3, 5), 0.2)
    rows[2, 3] = bad
    with pytest.raises(ValueError, match=r"probs contain NaN or infinity \(first at row 2\)"):
        check_probability_rows(rows)


def test_values_outside_0_1_are_refused_even_when_rows_sum_to_1():
    row = [1.5, -0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]") as caught:
        check_probability_rows(row, what="probabilities")
    assert "0..1" in str(caught.value) and str(caught.value).startswith("probabilities ")
    slightly = [1.0 + 1e-7, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_probability_rows(slightly)
    check_probability_rows(slightly, range_slack=1e-6)


def test_hint_is_appended_to_range_and_sum_messages():
    hint = " (are these logits? apply softmax first)"
    with pytest.raises(ValueError, match=r"logits\? apply softmax first\)$"):
        check_probability_rows([[3.0, -1.0]], hint=hint)
    with pytest.raises(ValueError, match=r"logits\? apply softmax first\)$"):
        check_probability_rows([[0.3, 0.3]], hint=hint)


@pytest.mark.parametrize("shape", [(), (2, 3, 5), (4, 0), (0,)])
def test_probability_rows_need_one_or_two_dimensions(shape):
    with pytest.raises(ValueError, match="one row"):
        check_probability_rows(np.zeros(shape))
