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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from painmon.core.util.errors import InvalidInputError

# The bedside graph and the training loop both feed RGB crops.
CHANNELS = 3


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


def _rgb_triple(name: str, values: Any) -> tuple[float, float, float]:
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be 3 numbers (R, G, B), got {values!r}") from None
    if len(result) != CHANNELS or not all(math.isfinite(v) for v in result):
        raise InvalidInputError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
    return result  # type: ignore[return-value]


def _input_size(values: Any) -> tuple[int, int, int]:
    try:
        items = tuple(values)
    except TypeError:
        items = ()
    # bool is an int, and 64.5 is not a pixel count: both are refused.
    if len(items) != 3 or not all(
        not isinstance(v, bool) and isinstance(v, int | float) and float(v).is_integer() and v > 0
        for v in items
    ):
        raise InvalidInputError(
            f"input_size must be 3 positive integers (channels, height, width), got {values!r}"
        )
    size = tuple(int(v) for v in items)
    if size[0] != CHANNELS:
        raise InvalidInputError(
            f"input_size must have {CHANNELS} channels (RGB crops), got {size[0]} in {size}"
        )
    return size  # type: ignore[return-value]


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

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture.strip():
            raise InvalidInputError(
                f"architecture must be a registered model name, got {self.architecture!r}"
            )
        for name in ("model_kwargs", "crop"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise InvalidInputError(
                    f"{name} must be a mapping, got {type(value).__name__}: {value!r}"
                )
            object.__setattr__(self, name, freeze(value))
        object.__setattr__(self, "input_size", _input_size(self.input_size))
        object.__setattr__(self, "mean", _rgb_triple("mean", self.mean))
        std = _rgb_triple("std", self.std)
        if min(std) <= 0:
            raise InvalidInputError(f"std must be > 0 for every channel, got {std}")
        object.__setattr__(self, "std", std)

        names = self.class_names
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise InvalidInputError(f"class_names must be a list of names, got {names!r}")
        names = tuple(names)
        if not names:
            raise InvalidInputError("class_names must name at least one class, got none")
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise InvalidInputError(f"class names must be non-empty text, got {list(names)!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInputError(
                f"class names must be unique; {', '.join(map(repr, duplicates))} repeats "
                f"in {list(names)!r}"
            )
        object.__setattr__(self, "class_names", names)

        # ONNX metadata stores "no mapping" as an empty string.
        if self.pspi_mapping is not None and not isinstance(self.pspi_mapping, str):
            raise InvalidInputError(f"pspi_mapping must be text or None, got {self.pspi_mapping!r}")
        object.__setattr__(self, "pspi_mapping", self.pspi_mapping or None)

        try:
            temperature = float(self.temperature)
        except (TypeError, ValueError):
            temperature = math.nan
        if isinstance(self.temperature, bool) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise InvalidInputError(
                f"temperature must be a finite number > 0, got {self.temperature!r}"
            )
        object.__setattr__(self, "temperature", temperature)

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
        return meta

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
        return cls(
            architecture=meta["architecture"],
            model_kwargs=meta.get("model_kwargs") or {},
            input_size=meta["input_size"],
            mean=meta["mean"],
            std=meta["std"],
            class_names=meta["class_names"],
            pspi_mapping=meta.get("pspi_mapping"),
            temperature=meta.get("temperature", 1.0),
            crop=meta.get("preprocessing") or {},
        )

    # --- ONNX metadata_props ---------------------------------------------------------------

    def to_onnx_metadata(self) -> dict[str, Any]:
        """The ONNX metadata entries this config owns, as Python values before JSON encoding.

        ``"preprocessing"`` holds only ``input_size``, ``mean`` and ``std``; the exporter adds
        the graph's input contract (dtype, layout...) around them.
        """
        return {
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

    @classmethod
    def from_onnx_metadata(cls, parsed: Mapping[str, Any]) -> PainModelCfg:
        """The config in an exported model's metadata, already JSON-decoded (``parse_metadata``)."""
        preprocessing = parsed.get("preprocessing")
        if not isinstance(preprocessing, Mapping):
            raise InvalidInputError(
                f"model metadata 'preprocessing' must be a JSON object, got {preprocessing!r}"
            )
        missing = [k for k in ("architecture", "class_names", "temperature") if k not in parsed]
        missing += [
            f"preprocessing.{k}" for k in ("input_size", "mean", "std") if k not in preprocessing
        ]
        if missing:
            raise InvalidInputError(
                f"model metadata lacks {', '.join(missing)}; re-export the model with painmon"
            )
        return cls(
            architecture=parsed["architecture"],
            model_kwargs=parsed.get("model_kwargs") or {},
            input_size=preprocessing["input_size"],
            mean=preprocessing["mean"],
            std=preprocessing["std"],
            class_names=parsed["class_names"],
            pspi_mapping=parsed.get("pspi_mapping") or None,
            temperature=parsed["temperature"],
            crop=parsed.get("crop") or {},
        )
