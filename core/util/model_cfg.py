"""One model config that travels with the weights (timm ``PretrainedCfg``): :class:`PainModelCfg`.

The same facts live in three places, each with its own on-disk shape:

- ``model.pretrained_cfg`` of a freshly built network (:mod:`painmon.models`);
- a checkpoint's JSON sidecar ``best.json`` (:meth:`PainModelCfg.to_checkpoint_meta` /
  :meth:`PainModelCfg.from_checkpoint_meta`), where the crop framing sits under
  ``"preprocessing"``;
- an exported ONNX model's ``metadata_props`` (:meth:`PainModelCfg.to_onnx_metadata` /
  :meth:`PainModelCfg.from_onnx_metadata`), where input size, mean and std sit inside the
  ``"preprocessing"`` entry and the crop framing under ``"crop"``.

The converters write exactly the keys and values those files always held, so checkpoints
and models exported before this class existed keep loading.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from painmon.core.util.errors import InvalidInputError

# The bedside graph and the training loop both feed RGB crops.
CHANNELS = 3
# A face crop wider than this is no face crop: a typo or a corrupt file that would make the
# bedside allocate (and score) images of any size.
MAX_INPUT_PX = 1024
# Bounds of the crop framing (core.live.crop): the share of the face box added on each side,
# and the stable framing's offset and side in temple distances. The values shipped are 0.25,
# 0.19 and 1.8; far outside these bounds every crop misses the face.
MAX_CROP_MARGIN = 3.0
MAX_CENTER_DOWN = 3.0
MAX_SIDE_SCALE = 10.0

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = 6
_short.maxlevel = 3


def show(value: Any) -> str:
    """A short one-line repr for messages (a corrupt file may hold megabytes in one field)."""
    if isinstance(value, MappingProxyType):
        value = dict(value)
    return _short.repr(value)


def is_number(value: Any) -> bool:
    """A real number that is not a bool (JSON ``true`` is no temperature) nor text."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become read-only mappings, lists and tuples tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, JSON-ready copy of a :func:`freeze` result: dicts and lists."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def _items(values: Any) -> tuple[Any, ...] | None:
    """The entries of a list-like value; None for text, mappings, sets and scalars (text is
    never iterated: ``"000"`` must not pass as three zeros)."""
    if isinstance(values, str | bytes | Mapping | set | frozenset):
        return None
    try:
        return tuple(values)  # lists, tuples, numpy arrays
    except TypeError:
        return None


def _rgb_triple(name: str, values: Any) -> tuple[float, float, float]:
    items = _items(values)
    if items is None or not all(is_number(v) for v in items):
        raise InvalidInputError(f"{name} must be 3 numbers (R, G, B), got {show(values)}")
    result = tuple(float(v) for v in items)
    if len(result) != CHANNELS or not all(math.isfinite(v) for v in result):
        raise InvalidInputError(f"{name} must be 3 finite numbers (R, G, B), got {show(values)}")
    return result  # type: ignore[return-value]


def _input_size(values: Any) -> tuple[int, int, int]:
    items = _items(values) or ()
    # bool is an int, and 64.5 is not a pixel count: both are refused.
    if len(items) != 3 or not all(
        is_number(v) and math.isfinite(v) and float(v).is_integer() and v > 0 for v in items
    ):
        raise InvalidInputError(
            f"input_size must be 3 positive integers (channels, height, width), got {show(values)}"
        )
    size = tuple(int(v) for v in items)
    if size[0] != CHANNELS:
        raise InvalidInputError(
            f"input_size must have {CHANNELS} channels (RGB crops), got {size[0]} in {size}"
        )
    if max(size[1:]) > MAX_INPUT_PX:
        raise InvalidInputError(
            f"input_size {size}: height and width must be at most {MAX_INPUT_PX} px "
            f"(a face crop), got {size[1]}x{size[2]}"
        )
    return size  # type: ignore[return-value]


def _bounded(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    inside = is_number(value) and math.isfinite(value) and value <= high
    inside = inside and (value > low if low_open else value >= low)
    if not inside:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise InvalidInputError(f"{name} must be a number in {span}, got {show(value)}")


def check_crop(crop: Any) -> Mapping[str, Any]:
    """The crop framing entries, checked where a value of the wrong kind would frame every
    live crop wrongly (or not at all). Keys this painmon does not use pass unchecked."""
    if not isinstance(crop, Mapping):
        raise InvalidInputError(f"crop must be a mapping, got {type(crop).__name__}: {show(crop)}")
    framing = crop.get("framing")
    if "framing" in crop and not (isinstance(framing, str) and framing.strip()):
        raise InvalidInputError(f"crop.framing must be the name of a framing, got {show(framing)}")
    if "margin" in crop:
        _bounded("crop.margin (share of the face box added on each side)", crop["margin"],
                 0.0, MAX_CROP_MARGIN)  # fmt: skip
    if "eye_alignment" in crop and not isinstance(crop["eye_alignment"], bool):
        raise InvalidInputError(
            f"crop.eye_alignment must be true or false, got {show(crop['eye_alignment'])}"
        )
    if "size_px" in crop:
        size_px = crop["size_px"]
        if not (
            is_number(size_px)
            and math.isfinite(size_px)
            and float(size_px).is_integer()
            and 0 < size_px <= MAX_INPUT_PX
        ):
            raise InvalidInputError(
                f"crop.size_px must be a whole number of pixels in 1..{MAX_INPUT_PX}, "
                f"got {show(size_px)}"
            )
    detector = crop.get("detector")
    if detector is not None and not isinstance(detector, str):
        raise InvalidInputError(f"crop.detector must be text, got {show(detector)}")
    params = crop.get("framing_params")
    if params is not None:
        if not isinstance(params, Mapping):
            raise InvalidInputError(
                f"crop.framing_params must be a mapping, got {type(params).__name__}: "
                f"{show(params)}"
            )
        if "center_down" in params:
            _bounded("crop.framing_params.center_down", params["center_down"],
                     -MAX_CENTER_DOWN, MAX_CENTER_DOWN)  # fmt: skip
        if "side_scale" in params:
            _bounded("crop.framing_params.side_scale", params["side_scale"], 0.0,
                     MAX_SIDE_SCALE, low_open=True)  # fmt: skip
    return crop


# A class distribution may sum to 1 within this (float rounding in JSON round trips).
DISTRIBUTION_TOLERANCE = 1e-6


def check_distribution(name: str, values: Any, num_classes: int) -> tuple[float, ...]:
    """One probability per class, finite, >= 0, summing to 1 (renormalised within 1e-6)."""
    items = _items(values)
    if items is None or not all(is_number(v) for v in items):
        raise InvalidInputError(
            f"{name} must be a list of {num_classes} numbers (one per class), got {show(values)}"
        )
    result = tuple(float(v) for v in items)
    if len(result) != num_classes:
        raise InvalidInputError(
            f"{name} must have one value per class ({num_classes}), got {len(result)}: "
            f"{show(values)}"
        )
    if not all(math.isfinite(v) and v >= 0 for v in result):
        raise InvalidInputError(f"{name} must hold finite numbers >= 0, got {show(values)}")
    total = math.fsum(result)
    if abs(total - 1.0) > DISTRIBUTION_TOLERANCE:
        raise InvalidInputError(f"{name} must sum to 1, got {total:.6g} from {show(values)}")
    return tuple(v / total for v in result)


def _prevalence_pair(
    natural: Any, trained: Any, num_classes: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The training data's class frequencies and the priors the model was fitted under:
    both or neither (one without the other cannot correct a probability)."""
    if natural is None and trained is None:
        return None, None
    if natural is None or trained is None:
        raise InvalidInputError(
            "class_prevalence and trained_prior come together: the training data's class "
            "frequencies and the class priors the model was fitted under"
        )
    natural = check_distribution("class_prevalence", natural, num_classes)
    trained = check_distribution("trained_prior", trained, num_classes)
    unseen = [i for i, (n, t) in enumerate(zip(natural, trained, strict=True)) if n > 0 and t == 0]
    if unseen:
        raise InvalidInputError(
            f"trained_prior is 0 for class(es) {unseen} that occur in the training data "
            f"(class_prevalence {show(list(natural))}): the model was fitted under them"
        )
    return natural, trained


def _optional_prevalence(source: str, value: Any) -> tuple[Any, Any]:
    """``class_prevalence`` entry of a checkpoint or model: absent (old models) or a mapping
    with ``natural`` and ``trained_prior``."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{source} 'class_prevalence' must be a JSON object with 'natural' and "
            f"'trained_prior', got {show(value)}"
        )
    return value.get("natural"), value.get("trained_prior")


def _optional_mapping(source: str, key: str, value: Any) -> Mapping[str, Any]:
    """An optional entry that must be a mapping when present (``null`` counts as absent)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{source} '{key}' must be a JSON object, got {type(value).__name__}: {show(value)}"
        )
    return value


@dataclass(frozen=True)
class PainModelCfg:
    """Rebuild and preprocessing facts of a pain model; validated, read-only."""

    architecture: str  # registry name: create_model(architecture, **model_kwargs) rebuilds it
    model_kwargs: Mapping[str, Any]  # resolved options of the registry function
    input_size: tuple[int, int, int]  # (C, H, W) of the network input
    mean: tuple[float, float, float]  # RGB, applied to x / 255
    std: tuple[float, float, float]
    class_names: tuple[str, ...]  # one per output, index order
    pspi_mapping: str | None = None  # PSPI -> class table, None when the classes are not PSPI's
    temperature: float = 1.0  # calibrated softmax(logits / temperature)
    crop: Mapping[str, Any] = field(default_factory=dict)  # how the training crops were framed
    # The training crops' class frequencies (before any balanced sampling) and the class
    # priors the model was fitted under (the balanced sampler's: uniform over the classes
    # present). The bedside corrects probabilities to a ward's prevalence with them
    # (prior shift); None in models exported before they were recorded.
    class_prevalence: tuple[float, ...] | None = None
    trained_prior: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture.strip():
            raise InvalidInputError(
                f"architecture must be a registered model name, got {show(self.architecture)}"
            )
        if not isinstance(self.model_kwargs, Mapping):
            raise InvalidInputError(
                f"model_kwargs must be a mapping, got {type(self.model_kwargs).__name__}: "
                f"{show(self.model_kwargs)}"
            )
        object.__setattr__(self, "model_kwargs", freeze(self.model_kwargs))
        object.__setattr__(self, "crop", freeze(check_crop(self.crop)))
        object.__setattr__(self, "input_size", _input_size(self.input_size))
        object.__setattr__(self, "mean", _rgb_triple("mean", self.mean))
        std = _rgb_triple("std", self.std)
        if min(std) <= 0:
            raise InvalidInputError(f"std must be > 0 for every channel, got {std}")
        object.__setattr__(self, "std", std)

        names = self.class_names
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise InvalidInputError(f"class_names must be a list of names, got {show(names)}")
        names = tuple(names)
        if not names:
            raise InvalidInputError("class_names must name at least one class, got none")
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise InvalidInputError(f"class names must be non-empty text, got {show(list(names))}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"class names must be unique; {', '.join(map(repr, duplicates))} repeats "
                f"in {list(names)!r}"
            )
        object.__setattr__(self, "class_names", names)

        # ONNX metadata stores "no mapping" as an empty string.
        if self.pspi_mapping is not None and not isinstance(self.pspi_mapping, str):
            raise InvalidInputError(
                f"pspi_mapping must be text or None, got {show(self.pspi_mapping)}"
            )
        object.__setattr__(self, "pspi_mapping", self.pspi_mapping or None)

        temperature = float(self.temperature) if is_number(self.temperature) else math.nan
        if not (math.isfinite(temperature) and temperature > 0):
            raise InvalidInputError(
                f"temperature must be a finite number > 0, got {show(self.temperature)}"
            )
        object.__setattr__(self, "temperature", temperature)
        natural, trained = _prevalence_pair(self.class_prevalence, self.trained_prior, len(names))
        object.__setattr__(self, "class_prevalence", natural)
        object.__setattr__(self, "trained_prior", trained)

    def __hash__(self) -> int:
        # The read-only mappings are not hashable; equal configs still hash equal.
        return hash((self.architecture, self.input_size, self.mean, self.std, self.class_names))

    @property
    def num_classes(self) -> int:
        """Number of classes (one probability each)."""
        return len(self.class_names)

    # --- best.json -------------------------------------------------------------------------

    def to_checkpoint_meta(self) -> dict[str, Any]:
        """The ``best.json`` entries this config owns, JSON-ready.

        The crop framing goes under ``"preprocessing"`` and only when known, as always.
        """
        meta: dict[str, Any] = {
            "architecture": self.architecture,
            "model_kwargs": thaw(self.model_kwargs),
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "pspi_mapping": self.pspi_mapping,
            "temperature": self.temperature,
        }
        if self.crop:
            meta["preprocessing"] = thaw(self.crop)
        if self.class_prevalence is not None:
            meta["class_prevalence"] = self._prevalence_entry()
        return meta

    def _prevalence_entry(self) -> dict[str, list[float]]:
        assert self.class_prevalence is not None and self.trained_prior is not None
        return {"natural": list(self.class_prevalence), "trained_prior": list(self.trained_prior)}

    @classmethod
    def from_checkpoint_meta(cls, meta: Mapping[str, Any]) -> PainModelCfg:
        """The config in a checkpoint's ``best.json`` (other entries are ignored)."""
        missing = [
            k
            for k in ("architecture", "input_size", "mean", "std", "class_names")
            if meta.get(k) is None
        ]
        if missing:
            raise InvalidInputError(
                f"checkpoint metadata lacks {', '.join(missing)}; it was not written by "
                "painmon train: retrain or restore the run folder"
            )
        source = "checkpoint metadata"
        return cls(
            architecture=meta["architecture"],
            model_kwargs=_optional_mapping(source, "model_kwargs", meta.get("model_kwargs")),
            input_size=meta["input_size"],
            mean=meta["mean"],
            std=meta["std"],
            class_names=meta["class_names"],
            pspi_mapping=meta.get("pspi_mapping"),
            temperature=meta.get("temperature", 1.0),
            crop=_optional_mapping(source, "preprocessing", meta.get("preprocessing")),
            **_prevalence_kwargs(source, meta.get("class_prevalence")),
        )

    # --- ONNX metadata_props ---------------------------------------------------------------

    def to_onnx_metadata(self) -> dict[str, Any]:
        """The ONNX metadata entries this config owns, as Python values before JSON encoding.

        ``"preprocessing"`` holds only ``input_size``, ``mean`` and ``std``; the exporter adds
        the graph's input contract (dtype, layout...) around them.
        """
        owned: dict[str, Any] = {
            "architecture": self.architecture,
            "model_kwargs": thaw(self.model_kwargs),
            "class_names": list(self.class_names),
            "pspi_mapping": self.pspi_mapping or "",
            "preprocessing": {
                "input_size": list(self.input_size),
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "crop": thaw(self.crop),
            "temperature": self.temperature,
        }
        if self.class_prevalence is not None:
            owned["class_prevalence"] = self._prevalence_entry()
        return owned

    @classmethod
    def from_onnx_metadata(cls, parsed: Mapping[str, Any]) -> PainModelCfg:
        """The config in an exported model's metadata, already JSON-decoded (``parse_metadata``)."""
        preprocessing = parsed.get("preprocessing")
        if not isinstance(preprocessing, Mapping):
            raise InvalidInputError(
                f"model metadata 'preprocessing' must be a JSON object, got {show(preprocessing)}"
            )
        missing = [k for k in ("architecture", "class_names", "temperature") if k not in parsed]
        missing += [
            f"preprocessing.{k}" for k in ("input_size", "mean", "std") if k not in preprocessing
        ]
        if missing:
            raise InvalidInputError(
                f"model metadata lacks {', '.join(missing)}; re-export the model with painmon"
            )
        source = "model metadata"
        return cls(
            architecture=parsed["architecture"],
            model_kwargs=_optional_mapping(source, "model_kwargs", parsed.get("model_kwargs")),
            input_size=preprocessing["input_size"],
            mean=preprocessing["mean"],
            std=preprocessing["std"],
            class_names=parsed["class_names"],
            # "" (ONNX has no null text) becomes None in __post_init__.
            pspi_mapping=parsed.get("pspi_mapping"),
            temperature=parsed["temperature"],
            crop=_optional_mapping(source, "crop", parsed.get("crop")),
            **_prevalence_kwargs(source, parsed.get("class_prevalence")),
        )


def _prevalence_kwargs(source: str, value: Any) -> dict[str, Any]:
    natural, trained = _optional_prevalence(source, value)
    return {"class_prevalence": natural, "trained_prior": trained}
