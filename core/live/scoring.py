"""Run an exported pain model with ONNX Runtime at the bedside (no torch needed).

:func:`choose_providers` is the pure provider policy; :class:`OnnxPainModel` checks the
file's SHA-256 against the ``<model>.onnx.sha256`` sidecar written by
:func:`painmon.core.research.export.export_onnx`, opens a session and runs uint8 RGB crops.

Provider policy: ``auto`` uses CUDA when ONNX Runtime offers it, else the CPU; ``cpu`` and
``cuda`` force one; CPU always closes the list as the fallback. TensorRT is used only when
asked for by name (``tensorrt``): its first start builds engines for minutes, which a
monitor that must show a score soon after launch cannot afford by default. The
``PAINMON_ORT_PROVIDER`` environment variable (``auto|cpu|cuda|tensorrt``) overrides the
caller's choice, so a ward can switch a machine with a broken GPU driver to the CPU
without touching code or settings.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from painmon.core.live.domain import DomainGateSpec
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import sha256_file
from painmon.core.util.model_cfg import PainModelCfg
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
PROVIDER_ENV = "PAINMON_ORT_PROVIDER"
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")

# The contract between export and runtime; export.py imports these.
INPUT_NAME = "image"
OUTPUT_NAMES: tuple[str, str, str] = ("probs", "gradcam", "attention")
# The domain gate's output (every export since the gate exists; older files lack it).
GATE_OUTPUT = "domain_score"
SIDECAR_SUFFIX = ".sha256"
DEMO_NOTICE = "synthetic-data demo model — not for clinical use"
# metadata_props values are strings; these keys hold JSON, every other key plain text.
JSON_METADATA_KEYS: frozenset[str] = frozenset(
    {
        "model_kwargs",
        "class_names",
        "preprocessing",
        "crop",
        "outputs",
        "attention",
        "temperature",
        "metrics",
        "demo",
        "opset",
        "source_checkpoint",
        "domain_gate",
    }
)
REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    "painmon_version",
    "architecture",
    "class_names",
    "preprocessing",
    "temperature",
)


class ProviderError(PainmonError, RuntimeError):
    """The requested ONNX Runtime execution provider is not available on this machine."""


class ModelLoadError(PainmonError, RuntimeError):
    """The ONNX model file is missing, unreadable, or not a painmon export."""


class ModelIntegrityError(ModelLoadError):
    """The model file's SHA-256 cannot be verified or does not match."""


class OnnxPrediction(NamedTuple):
    """One batch of outputs: ``probs, gradcam, attention, domain_score``."""

    probs: np.ndarray  # (B, classes) calibrated probabilities
    gradcam: np.ndarray  # (B, h, w) Grad-CAM of the top class, 0..1
    attention: np.ndarray  # (B, K, h, w) spatial attention, 0..1 (ones when the model has none)
    domain_score: np.ndarray | None = None  # (B,) domain gate score; None: the model has no gate


def is_checkpoint(path: str | Path) -> bool:
    """A run folder with ``best.safetensors`` or a ``.safetensors`` file (else: ONNX)."""
    path = Path(path)
    return (path / "best.safetensors").is_file() if path.is_dir() else path.suffix == ".safetensors"


def choose_providers(
    available: Sequence[str], prefer: str = "auto", env: Mapping[str, str] | None = None
) -> list[str]:
    """ONNX Runtime providers to request, best first, always ending with the CPU.

    ``env`` (e.g. ``os.environ``) may carry ``PAINMON_ORT_PROVIDER``, which overrides
    ``prefer``; ``None`` consults no environment, keeping the function pure.
    """
    choice, source = resolve_provider_choice(prefer, env)
    available = list(available)
    chosen: list[str] = []
    if choice == "tensorrt":
        if TENSORRT_PROVIDER not in available:
            raise ProviderError(_unavailable_message("TensorRT", source, available))
        chosen.append(TENSORRT_PROVIDER)
    if choice == "cuda" and CUDA_PROVIDER not in available:
        raise ProviderError(_unavailable_message("CUDA", source, available))
    if choice in ("auto", "cuda", "tensorrt") and CUDA_PROVIDER in available:
        chosen.append(CUDA_PROVIDER)
    chosen.append(CPU_PROVIDER)
    return chosen


def resolve_provider_choice(
    prefer: str = "auto", env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """The effective choice (one of PROVIDER_CHOICES) and where it came from, for messages."""
    choice, source = prefer, f"prefer={prefer!r}"
    override = (env or {}).get(PROVIDER_ENV, "").strip()
    if override:
        choice, source = override, f"{PROVIDER_ENV}={override}"
    choice = choice.strip().lower()
    if choice not in PROVIDER_CHOICES:
        raise InvalidInputError(
            f"unknown ONNX Runtime provider choice {source}; "
            f"use one of {', '.join(PROVIDER_CHOICES)}"
        )
    return choice, source


def _unavailable_message(name: str, source: str, available: Sequence[str]) -> str:
    offered = ", ".join(available) or "none"
    return (
        f"{name} was requested ({source}) but this ONNX Runtime offers only {offered}; "
        "install onnxruntime-gpu with matching CUDA/cuDNN, or choose 'auto' or 'cpu'"
    )


def read_sidecar_sha256(model_path: Path) -> str | None:
    """The SHA-256 recorded in ``<model>.sha256`` (sha256sum format), or None when absent."""
    sidecar = model_path.with_name(model_path.name + SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text(encoding="utf-8", errors="replace").split()
    digest = fields[0].lower() if fields else ""
    if not is_sha256_hex(digest):
        raise ModelIntegrityError(
            f"{sidecar} is not a SHA-256 checksum file; re-export the model to rewrite it"
        )
    return digest


def parse_metadata(props: Mapping[str, str]) -> dict[str, Any]:
    """ONNX ``metadata_props`` (all strings) -> Python values, decoding the JSON keys."""
    parsed: dict[str, Any] = {}
    for key, value in props.items():
        if key in JSON_METADATA_KEYS:
            try:
                parsed[key] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"model metadata '{key}' is not valid JSON ({exc})") from exc
        else:
            parsed[key] = value
    return parsed


def _ort_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile")
    return (*(getattr(state, n) for n in names if hasattr(state, n)), RuntimeError)


@runtime_checkable
class PainScorer(Protocol):
    """What the engine needs of a pain model: ONNX Runtime at the bedside, torch for research.

    ``predict`` takes uint8 crops (N, H, W, 3) and returns calibrated probabilities with
    Grad-CAM and attention maps (and the domain score when the model has a gate);
    ``cfg`` is the preprocessing the model was trained with (input size, class names,
    temperature, crop framing), ``domain_gate`` its domain gate (None: the model cannot
    tell a face unlike its training data) and ``metadata`` everything its file records.
    """

    path: Path
    sha256: str
    verified: bool
    cfg: PainModelCfg
    metadata: dict[str, Any]
    class_names: list[str]
    input_size: tuple[int, int, int]
    temperature: float
    is_demo: bool
    providers: list[str]
    domain_gate: DomainGateSpec | None

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction: ...


class OnnxPainModel:
    """An exported pain model, verified and opened with ONNX Runtime.

    ``predict`` takes uint8 RGB crops ``(B, H, W, 3)`` at the exported input size; the
    graph normalises them itself (see the ``preprocessing`` metadata).
    """

    def __init__(
        self,
        path: str | Path,
        prefer: str = "auto",
        expected_sha256: str | None = None,
        *,
        allow_unverified: bool = False,
        intra_op_num_threads: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file {self.path} not found; export it or fix the path")
        self.sha256 = sha256_file(self.path)
        self.verified = self._verify(expected_sha256, allow_unverified)

        env = os.environ if env is None else env
        choice, source = resolve_provider_choice(prefer, env)
        requested = choose_providers(ort.get_available_providers(), prefer, env)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_num_threads is not None:
            if intra_op_num_threads < 0:
                raise ValueError(f"intra_op_num_threads must be >= 0, got {intra_op_num_threads}")
            options.intra_op_num_threads = int(intra_op_num_threads)
        # With 'auto', a CUDA build on a machine without CUDA libraries is normal: keep ONNX
        # Runtime's own multi-line error off the console; our warning below says what happened.
        quiet = choice == "auto" and requested[0] != "CPUExecutionProvider"
        if quiet:
            ort.set_default_logger_severity(4)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=requested)
        except _ort_errors() as exc:
            raise ModelLoadError(
                f"model file {self.path} is not a loadable ONNX model ({_first_line(exc)}); "
                "re-export or re-download it"
            ) from exc
        finally:
            if quiet:
                ort.set_default_logger_severity(2)
        self.providers: list[str] = list(self.session.get_providers())
        if requested[0] != self.providers[0]:
            if choice != "auto":
                raise ProviderError(
                    f"{requested[0]} ({source}) is installed but failed to start (see ONNX "
                    "Runtime's log: usually a missing CUDA/cuDNN library); choose 'auto' or 'cpu'"
                )
            log.warning(
                "%s is installed but failed to start (CUDA/cuDNN libraries missing?); "
                "running %s on %s",
                requested[0],
                self.path.name,
                ", ".join(self.providers),
            )
        log.info(
            "ONNX Runtime for %s: requested %s, active %s",
            self.path.name,
            ", ".join(requested),
            ", ".join(self.providers),
        )

        props = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_METADATA_KEYS if k not in props]
        if missing:
            raise ModelLoadError(
                f"{self.path} is not a painmon export (metadata lacks {', '.join(missing)}); "
                "export it with painmon.core.research.export.export_onnx"
            )
        self.metadata: dict[str, Any] = parse_metadata(props)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        gated = [*OUTPUT_NAMES, GATE_OUTPUT]
        if inputs != [INPUT_NAME] or outputs not in (list(OUTPUT_NAMES), gated):
            raise ModelLoadError(
                f"{self.path} has inputs {inputs} and outputs {outputs}; a painmon export has "
                f"[{INPUT_NAME!r}] and {gated} ({GATE_OUTPUT!r} absent in exports before the "
                "domain gate)"
            )
        self._output_names = outputs
        try:
            self.domain_gate: DomainGateSpec | None = DomainGateSpec.from_metadata(
                self.metadata.get("domain_gate")
            )
        except InvalidInputError as exc:
            raise ModelLoadError(f"{self.path}: {exc}; re-export the model") from exc
        if (self.domain_gate is not None) != (GATE_OUTPUT in outputs):
            raise ModelLoadError(
                f"{self.path}: the domain_gate metadata and the {GATE_OUTPUT!r} output disagree "
                "(one without the other); re-export the model"
            )
        if self.domain_gate is None:
            log.warning(
                "%s has no domain gate: it cannot tell when a face is unlike its training data",
                self.path.name,
            )
        try:
            self.cfg = PainModelCfg.from_onnx_metadata(self.metadata)
        except InvalidInputError as exc:
            raise ModelLoadError(f"{self.path}: {exc}") from exc
        preprocessing = self.metadata["preprocessing"]
        self.class_names: list[str] = list(self.cfg.class_names)
        self.input_size: tuple[int, int, int] = self.cfg.input_size
        self.temperature = self.cfg.temperature
        self.is_demo: bool = bool(self.metadata.get("demo")) or DEMO_NOTICE in str(
            self.metadata.get("intended_use", "")
        )
        if preprocessing.get("dtype") != "uint8" or preprocessing.get("layout") != "NHWC":
            raise ModelLoadError(
                f"{self.path} expects {preprocessing.get('dtype')} {preprocessing.get('layout')} "
                "input; this runtime feeds uint8 NHWC crops, so re-export with this painmon"
            )

    def _verify(self, expected_sha256: str | None, allow_unverified: bool) -> bool:
        sidecar_name = self.path.name + SIDECAR_SUFFIX
        recorded = read_sidecar_sha256(self.path)
        checks = []
        if recorded is not None:
            checks.append((recorded, sidecar_name))
        if expected_sha256 is not None:
            checks.append((expected_sha256.strip().lower(), "the expected_sha256 argument"))
        for expected, source in checks:
            if self.sha256 != expected:
                raise ModelIntegrityError(
                    f"model file {self.path} has SHA-256 {self.sha256}, expected {expected} "
                    f"from {source}: corrupt or replaced; re-export or re-download it"
                )
        if checks:
            return True
        if not allow_unverified:
            raise ModelIntegrityError(
                f"model file {self.path} cannot be verified: {sidecar_name} is missing; "
                "re-export the model (which writes it), or pass allow_unverified=True to run an "
                "unverified model for research"
            )
        log.warning("running unverified model %s (sha256 %s)", self.path, self.sha256)
        return False

    def predict(self, crops_uint8: np.ndarray) -> OnnxPrediction:
        """Probabilities, Grad-CAM and attention for uint8 RGB crops ``(B, H, W, 3)``."""
        crops = np.asarray(crops_uint8)
        _channels, height, width = self.input_size
        if crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 RGB (0..255), got dtype {crops.dtype}")
        if crops.ndim != 4 or crops.shape[1:] != (height, width, 3) or crops.shape[0] < 1:
            raise ValueError(
                f"crops must have shape (B, {height}, {width}, 3) with B >= 1 "
                f"(RGB face crops at the model's input size), got {crops.shape}"
            )
        outputs = self.session.run(self._output_names, {INPUT_NAME: np.ascontiguousarray(crops)})
        return OnnxPrediction(*outputs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
