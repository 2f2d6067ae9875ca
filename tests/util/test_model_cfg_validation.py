"""PainModelCfg refuses malformed crop framing, sizes and numbers in one short line (#12.8)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from painmon.core.util.errors import InvalidInputError
from painmon.core.util.model_cfg import MAX_INPUT_PX, PainModelCfg, show

CROP = {
    "size_px": 64,
    "margin": 0.25,
    "detector": "mediapipe-landmarker",
    "eye_alignment": True,
    "framing": "stable-landmarks",
    "framing_params": {"landmarks": "mediapipe-face-mesh", "center_down": 0.19, "side_scale": 1.8},
}


def _cfg(**changes) -> PainModelCfg:
    values = {
        "architecture": "dacnn",
        "model_kwargs": {},
        "input_size": (3, 64, 64),
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "class_names": ("a", "b", "c"),
        "crop": CROP,
    }
    values.update(changes)
    return PainModelCfg(**values)


def _crop(**changes) -> dict:
    return {**CROP, **changes}


def _params(**changes) -> dict:
    return {**CROP, "framing_params": {**CROP["framing_params"], **changes}}


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        (_crop(margin=-0.1), r"crop\.margin .* must be a number in \[0, 3\], got -0\.1"),
        (_crop(margin=50.0), r"crop\.margin"),
        (_crop(margin="0.25"), r"crop\.margin .* got '0\.25'"),
        (_crop(margin=True), r"crop\.margin"),
        (_crop(margin=None), r"crop\.margin"),
        (_crop(margin=math.nan), r"crop\.margin"),
        (_crop(eye_alignment="false"), r"crop\.eye_alignment must be true or false"),
        (_crop(eye_alignment=1), r"crop\.eye_alignment"),
        (_crop(framing=""), r"crop\.framing must be the name of a framing"),
        (_crop(framing=["box"]), r"crop\.framing"),
        (_crop(size_px=0), r"crop\.size_px must be a whole number of pixels"),
        (_crop(size_px=64.5), r"crop\.size_px"),
        (_crop(size_px=MAX_INPUT_PX + 1), r"crop\.size_px"),
        (_crop(detector=["haar"]), r"crop\.detector must be text"),
        (_crop(framing_params="temples"), r"crop\.framing_params must be a mapping"),
        (_params(side_scale=0.0), r"side_scale must be a number in \(0, 10\]"),
        (_params(side_scale=-1.8), r"side_scale"),
        (_params(side_scale=math.inf), r"side_scale"),
        (_params(center_down="low"), r"center_down must be a number in \[-3, 3\]"),
        (_params(center_down=99.0), r"center_down"),
    ],
)
def test_malformed_crop_framing_is_refused(crop, message):
    with pytest.raises(InvalidInputError, match=message):
        _cfg(crop=crop)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"input_size": (3, 4096, 4096)}, rf"at most {MAX_INPUT_PX} px"),
        ({"input_size": (3, math.inf, 64)}, "input_size must be 3 positive integers"),
        ({"input_size": "364"}, "input_size must be 3 positive integers"),
        ({"input_size": {3: 1, 64: 1, 65: 1}}, "input_size must be 3 positive integers"),
        ({"mean": "000"}, r"mean must be 3 numbers \(R, G, B\), got '000'"),
        ({"mean": ("0.5", "0.5", "0.5")}, "mean must be 3 numbers"),
        ({"mean": {0.5, 0.4, 0.3}}, "mean must be 3 numbers"),
        ({"std": (0.2, True, 0.2)}, "std must be 3 numbers"),
        ({"temperature": "1.0"}, "temperature must be a finite number > 0, got '1.0'"),
        ({"temperature": True}, "temperature must be a finite number > 0"),
        ({"temperature": None}, "temperature must be a finite number > 0"),
    ],
)
def test_malformed_sizes_and_numbers_are_refused(changes, message):
    with pytest.raises(InvalidInputError, match=message):
        _cfg(**changes)


def test_numpy_values_and_unknown_crop_keys_are_accepted():
    cfg = _cfg(
        input_size=np.array([3, 64, 64]),
        mean=np.array([0.5, 0.5, 0.5], np.float32),
        temperature=np.float32(1.5),
        crop=_crop(margin=np.float64(0.3), future_key={"x": [1]}),
    )
    assert cfg.input_size == (3, 64, 64) and cfg.mean == (0.5, 0.5, 0.5)
    assert cfg.temperature == 1.5 and cfg.crop["future_key"]["x"] == (1,)
    assert _cfg(crop={}).crop == {} and _cfg(crop=_crop(detector=None)).crop["detector"] is None


def test_messages_stay_short_for_huge_values():
    with pytest.raises(InvalidInputError) as caught:
        _cfg(input_size=list(range(1_000_000)))
    assert len(str(caught.value)) < 300 and "\n" not in str(caught.value)
    assert len(show("x" * 10_000)) < 80


@pytest.mark.parametrize(
    ("entry", "value", "message"),
    [
        ("preprocessing", "box", "checkpoint metadata 'preprocessing' must be a JSON object"),
        ("preprocessing", [0.25], "'preprocessing' must be a JSON object"),
        ("model_kwargs", ["dropout"], "'model_kwargs' must be a JSON object"),
        ("model_kwargs", "dacnn", "'model_kwargs' must be a JSON object"),
    ],
)
def test_checkpoint_meta_with_wrong_kinds_of_entries_is_refused(entry, value, message):
    meta = _cfg().to_checkpoint_meta()
    meta[entry] = value
    with pytest.raises(InvalidInputError, match=message):
        PainModelCfg.from_checkpoint_meta(meta)


def test_null_optional_entries_count_as_absent():
    meta = _cfg().to_checkpoint_meta()
    meta["preprocessing"] = meta["model_kwargs"] = None
    cfg = PainModelCfg.from_checkpoint_meta(meta)
    assert cfg.crop == {} and cfg.model_kwargs == {}
    parsed = _cfg().to_onnx_metadata()
    parsed["crop"] = parsed["model_kwargs"] = None
    assert PainModelCfg.from_onnx_metadata(parsed).crop == {}
    for falsy in ("", 0, False, []):
        parsed["crop"] = falsy  # once silently "no crop framing"; now refused
        with pytest.raises(InvalidInputError, match="'crop' must be a JSON object"):
            PainModelCfg.from_onnx_metadata(parsed)
