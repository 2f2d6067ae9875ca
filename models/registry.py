"""Model registry (timm style): ``@register_model`` variant functions and ``create_model``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from painmon.core.util.errors import InvalidInputError
from painmon.models.base import PainModel

_MODEL_FNS: dict[str, Callable[..., PainModel]] = {}

ModelFn = TypeVar("ModelFn", bound=Callable[..., PainModel])


def register_model(fn: ModelFn) -> ModelFn:
    """Register a variant function under its own name; its docstring's first line describes it."""
    name = fn.__name__
    if name in _MODEL_FNS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODEL_FNS[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODEL_FNS)


def _model_fn(name: str) -> Callable[..., PainModel]:
    try:
        return _MODEL_FNS[name]
    except KeyError:
        known = ", ".join(list_models()) or "(none registered)"
        raise InvalidInputError(f"unknown model {name!r}; known models: {known}") from None


def create_model(name: str, **cfg: Any) -> PainModel:
    """Build the registered model ``name`` with options ``cfg`` (e.g. dropout=0.3).

    The resolved options are recorded in ``model.pretrained_cfg`` so that
    ``create_model(cfg.architecture, **cfg.model_kwargs)`` rebuilds the same network.
    """
    fn = _model_fn(name)
    signature = inspect.signature(fn)
    unknown = sorted(set(cfg) - set(signature.parameters))
    if unknown:
        accepted = ", ".join(signature.parameters) or "no options"
        raise InvalidInputError(
            f"model {name!r} does not accept option(s) {', '.join(unknown)}; it accepts: {accepted}"
        )
    bound = signature.bind(**cfg)
    bound.apply_defaults()
    model = fn(**bound.arguments)
    # PainModelCfg keeps a read-only copy (sequences as tuples) and writes lists to JSON.
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg, architecture=name, model_kwargs=bound.arguments
    )
    return model


def _description(name: str) -> str:
    doc = inspect.getdoc(_MODEL_FNS[name]) or ""
    return doc.splitlines()[0] if doc else ""


def describe_models() -> list[dict[str, Any]]:
    """One dict per model: name, params, input_size, gradcam_layer, feature_shape, description."""
    rows = []
    for name in list_models():
        # Meta tensors: shapes and parameter counts without allocating or initialising weights.
        with torch.device("meta"):
            model = create_model(name)
            model.eval()
            features = model.forward_features(torch.empty(1, *model.pretrained_cfg.input_size))
        rows.append(
            {
                "name": name,
                "params": sum(p.numel() for p in model.parameters()),
                "input_size": model.pretrained_cfg.input_size,
                "gradcam_layer": model.gradcam_layer,
                "feature_shape": tuple(features.shape[1:]),
                "description": _description(name),
            }
        )
    return rows


def format_params(count: int) -> str:
    """Parameter count as millions with two decimals, e.g. 3.71M."""
    return f"{count / 1e6:.2f}M"


def format_model_table() -> str:
    """The table printed by ``painmon models list``."""
    header = ("name", "params", "input", "Grad-CAM layer", "description")
    lines = [header]
    for row in describe_models():
        _channels, height, width = row["feature_shape"]
        lines.append(
            (
                row["name"],
                format_params(row["params"]),
                "x".join(str(d) for d in row["input_size"]),
                f"{row['gradcam_layer']} ({height}x{width})",
                row["description"],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line[:-1], widths, strict=True))
        + "  "
        + line[-1]
        for line in lines
    )
