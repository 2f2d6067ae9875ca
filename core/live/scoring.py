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
without touching code or settings. With ``auto`` CUDA is requested only when the NVIDIA
driver library loads (:func:`cuda_driver_present`): onnxruntime-gpu on a CPU-only machine
is normal and gets one INFO line ("ONNX Runtime: CUDA not available, using CPU"), not a
warning at every start.

Integrity: the file is read once; those very bytes are hashed, checked against the sidecar
and handed to ONNX Runtime, so nothing can change between the check and the load. A model
that keeps its weights in external files (``onnx.save(..., save_as_external_data=True)``)
is refused: the sidecar's SHA-256 covers only the graph, not the weights beside it.
:func:`external_data_locations` finds such tensors by walking the protobuf wire format
(the ``onnx`` package is not a bedside dependency).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from painmon.core.live.domain import DomainGateSpec
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.model_cfg import PainModelCfg, check_distribution, is_number, show
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
PROVIDER_ENV = "PAINMON_ORT_PROVIDER"
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
# The ward's class prevalence, e.g. "0.56,0.2,0.12,0.08,0.04" (one share per class, summing to
# 1): the bedside corrects the model's probabilities to it. Unset: the training data's own.
PREVALENCE_ENV = "PAINMON_PREVALENCE"

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
        "class_prevalence",
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


def parse_prevalence(text: str, num_classes: int) -> tuple[float, ...]:
    """``"0.56,0.2,0.12,0.08,0.04"`` -> one share per class (must sum to 1 within 1e-6)."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise InvalidInputError(
            f"prevalence must be {num_classes} comma-separated shares summing to 1 "
            f"(e.g. 0.56,0.2,0.12,0.08,0.04), got {show(text)}"
        ) from None
    return check_distribution("prevalence", values, num_classes)


def prior_shift(probs: np.ndarray, target: Sequence[float], trained: Sequence[float]) -> np.ndarray:
    """Probabilities moved from the priors a model was fitted under to a target prevalence.

    Saerens, Latinne & Decaestecker (2002): p'(c|x) = p(c|x) * w(c) / sum_k p(k|x) * w(k)
    with w = target / trained. A class the target gives 0 gets 0; a row that would be all
    zeros (the model puts all its mass on classes the target excludes) is left as it was.
    """
    p = np.asarray(probs, dtype=np.float64)
    pi_target = np.asarray(target, dtype=np.float64)
    pi_trained = np.asarray(trained, dtype=np.float64)
    if p.shape[-1:] != pi_target.shape or pi_target.shape != pi_trained.shape:
        raise ValueError(
            f"probs {p.shape}, target {pi_target.shape} and trained {pi_trained.shape} must "
            "agree on the number of classes"
        )
    if np.any((pi_trained == 0) & (pi_target > 0)):
        raise InvalidInputError(
            "the target prevalence gives weight to a class the model was never trained on "
            f"(trained priors {show(pi_trained.tolist())}); give that class 0"
        )
    weights = np.divide(pi_target, pi_trained, out=np.zeros_like(pi_target), where=pi_trained > 0)
    shifted = p * weights
    total = shifted.sum(axis=-1, keepdims=True)
    return np.where(total > 0, shifted / np.where(total > 0, total, 1.0), p)


@dataclass(frozen=True)
class PrevalenceCorrection:
    """Prior shift for one model at one ward: the priors the model was fitted under and the
    prevalence its probabilities are moved to (the engine applies it to every crop scored;
    ``predict`` itself returns the graph's probabilities, as the torch backend does)."""

    trained_prior: tuple[float, ...]
    target: tuple[float, ...]
    source: str  # "training data" or where the ward's prevalence was set

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """``probs`` (..., C) at the trained priors -> at the target prevalence."""
        if self.is_identity:
            return np.asarray(probs, dtype=np.float64)
        return prior_shift(probs, self.target, self.trained_prior)

    @property
    def is_identity(self) -> bool:
        return self.target == self.trained_prior


def prevalence_correction(
    cfg: PainModelCfg, prevalence: Sequence[float] | str | None, source: str
) -> PrevalenceCorrection | None:
    """The correction a model needs at a ward: to ``prevalence`` when given, else to the
    training data's own class frequencies; None when the model records neither (older
    exports), which only a stated ``prevalence`` turns into an error."""
    if cfg.class_prevalence is None or cfg.trained_prior is None:
        if prevalence is not None:
            raise InvalidInputError(
                f"a ward prevalence was given ({source}) but the model records no training "
                "priors to correct from; re-export it with this painmon"
            )
        return None
    if prevalence is None:
        return PrevalenceCorrection(cfg.trained_prior, cfg.class_prevalence, "training data")
    if isinstance(prevalence, str):
        target = parse_prevalence(prevalence, cfg.num_classes)
    else:
        target = check_distribution("prevalence", prevalence, cfg.num_classes)
    return PrevalenceCorrection(cfg.trained_prior, target, source)


def model_prevalence_correction(
    cfg: PainModelCfg,
    path: Path,
    prevalence: Sequence[float] | str | None = None,
    env: Mapping[str, str] | None = None,
) -> PrevalenceCorrection | None:
    """The correction a loaded model applies at this ward, whatever runs it (ONNX Runtime or
    torch): ``prevalence`` when given, else ``$PAINMON_PREVALENCE``, else the training data's.

    A bad prevalence is a :class:`ModelLoadError` naming the model: refused at load, not on
    the first face.
    """
    env = os.environ if env is None else env
    source = "prevalence argument"
    if prevalence is None and env.get(PREVALENCE_ENV, "").strip():
        prevalence, source = env[PREVALENCE_ENV], f"${PREVALENCE_ENV}"
    try:
        correction = prevalence_correction(cfg, prevalence, source)
    except InvalidInputError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
    if correction is None:
        log.debug("%s records no training priors: probabilities are not prevalence-corrected",
                  path.name)  # fmt: skip
    elif correction.is_identity:
        # Nothing to say at the bedside: the shift is the identity (balanced data, say).
        log.debug("%s: the prevalence %s is the trained prior: probabilities unchanged",
                  path.name, _shares(correction.target))  # fmt: skip
    else:
        log.info("%s: probabilities corrected from the trained priors %s to the prevalence "
                 "%s (%s)", path.name, _shares(correction.trained_prior),
                 _shares(correction.target), correction.source)  # fmt: skip
    return correction


class OnnxPrediction(NamedTuple):
    """One batch of outputs: ``probs, gradcam, attention, domain_score``."""

    probs: np.ndarray  # (B, classes) calibrated probabilities
    gradcam: np.ndarray  # (B, h, w) Grad-CAM of the top class, 0..1
    attention: np.ndarray  # (B, K, h, w) spatial attention, 0..1 (ones when the model has none)
    domain_score: np.ndarray | None = None  # (B,) domain gate score; None: the model has no gate


@contextlib.contextmanager
def quiet_model_logs() -> Iterator[None]:
    """Hold back this module's info and warnings (errors still pass) for the duration: for a
    load that only checks a model, whose caller reports the outcome in one line."""
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def is_checkpoint(path: str | Path) -> bool:
    """A run folder with ``best.safetensors`` or a ``.safetensors`` file (else: ONNX)."""
    path = Path(path)
    return (path / "best.safetensors").is_file() if path.is_dir() else path.suffix == ".safetensors"


# The NVIDIA driver's user-space library: without it no CUDA provider can start.
_CUDA_DRIVER_LIBRARIES: dict[str, tuple[str, ...]] = {
    "linux": ("libcuda.so.1", "libcuda.so"),
    "win32": ("nvcuda.dll",),
}
CPU_FALLBACK_MESSAGE = "ONNX Runtime: CUDA not available, using CPU"


@functools.lru_cache(maxsize=1)
def cuda_driver_present() -> bool:
    """Whether the NVIDIA driver library loads (a cheap check; macOS has no CUDA)."""
    platform_key = "linux" if sys.platform.startswith("linux") else sys.platform
    for name in _CUDA_DRIVER_LIBRARIES.get(platform_key, ()):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return True
    return False


def choose_providers(
    available: Sequence[str],
    prefer: str = "auto",
    env: Mapping[str, str] | None = None,
    *,
    cuda_usable: bool = True,
) -> list[str]:
    """ONNX Runtime providers to request, best first, always ending with the CPU.

    ``env`` (e.g. ``os.environ``) may carry ``PAINMON_ORT_PROVIDER``, which overrides
    ``prefer``; ``None`` consults no environment, keeping the function pure.
    ``cuda_usable=False`` (no NVIDIA driver) keeps ``auto`` from requesting CUDA at all, so
    ONNX Runtime does not try and fail; ``cuda``/``tensorrt`` asked by name still request it.
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
    wants_cuda = choice in ("cuda", "tensorrt") or (choice == "auto" and cuda_usable)
    if wants_cuda and CUDA_PROVIDER in available:
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


def provider_outcome(
    available: Sequence[str], requested: Sequence[str], active: Sequence[str], choice: str
) -> tuple[int, str]:
    """The one log line (level, text) that says which provider runs the model.

    A CUDA build without a usable GPU under ``auto`` is an ordinary CPU machine: INFO, not a
    warning (the ward cannot act on it, and it would repeat at every start).
    """
    active = list(active)
    running = active[0] if active else "no provider"
    cuda_offered = CUDA_PROVIDER in available
    if running == CPU_PROVIDER and cuda_offered and choice == "auto":
        return logging.INFO, CPU_FALLBACK_MESSAGE
    if requested and requested[0] != running:
        return (
            logging.WARNING,
            f"ONNX Runtime: {requested[0]} failed to start (CUDA/cuDNN libraries missing?), "
            f"using {running}",
        )
    return logging.INFO, f"ONNX Runtime: using {running}"


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
            except (json.JSONDecodeError, RecursionError) as exc:
                reason = exc if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise ModelLoadError(
                    f"model metadata '{key}' is not valid JSON ({reason}); re-export the model"
                ) from exc
        else:
            parsed[key] = value
    return parsed


# --- external data: a minimal protobuf walk over the paths of onnx.proto that hold tensors ---

_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
# message -> {field number: message type of that field}, from onnx.proto (IR version 10).
_TENSOR_FIELDS: dict[int, dict[int, int]] = {
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},  # graph, training_info, functions
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _NODE: {5: _ATTRIBUTE},
    # t, g, tensors, graphs, sparse_tensor, sparse_tensors
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},  # node, attribute_proto
    _TRAINING: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _TENSOR: {},
}
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_DATA_LOCATION_EXTERNAL = 1
_MAX_NESTING = 64  # subgraphs inside subgraphs; a real model nests a few levels


class _MalformedError(Exception):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _MalformedError(f"bad varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value) of one message; value is (start, end) for bytes."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _MalformedError(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
            continue
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            value = (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            value = None
            pos += 8 if wire == 1 else 4
        else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
            raise _MalformedError(f"wire type {wire} at byte {pos}")
        if pos > end:
            raise _MalformedError(f"field {number} runs past the end of its message")
        yield number, wire, value


def _walk(buf: bytes, start: int, end: int, kind: int, depth: int, found: list) -> None:
    if depth > _MAX_NESTING:
        raise _MalformedError(f"messages nested deeper than {_MAX_NESTING} levels")
    nested = _TENSOR_FIELDS[kind]
    name = b""
    location = b""
    external = False
    for number, wire, value in _fields(buf, start, end):
        if kind == _TENSOR:
            if number == _TENSOR_DATA_LOCATION and wire == 0:
                external = external or value == _DATA_LOCATION_EXTERNAL
            elif number == _TENSOR_NAME and wire == 2:
                name = buf[value[0] : value[1]]
            elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
                external = True
                # A StringStringEntryProto: key (1), value (2); "location" names the file.
                entry = {n: buf[v[0] : v[1]] for n, w, v in _fields(buf, *value) if w == 2}
                if entry.get(1) == b"location":
                    location = entry.get(2, b"")
        elif number in nested and wire == 2:
            _walk(buf, value[0], value[1], nested[number], depth + 1, found)
    if external:
        found.append((name.decode("utf-8", "replace"), location.decode("utf-8", "replace") or "?"))


def external_data_locations(model_bytes: bytes) -> list[tuple[str, str]]:
    """``(tensor name, external file)`` of every tensor whose data lies outside the model file.

    Walks the serialized ``ModelProto`` without loading any weight (initializers, Constant
    node attributes, subgraphs, functions, sparse tensors, training graphs). Raises
    :class:`ModelLoadError` when the bytes are not a well-formed ONNX protobuf.
    """
    found: list[tuple[str, str]] = []
    try:
        _walk(model_bytes, 0, len(model_bytes), _MODEL, 0, found)
    except _MalformedError as exc:
        raise ModelLoadError(f"not a loadable ONNX model (malformed protobuf: {exc})") from None
    return found


def external_data_message(model: str | Path, found: Sequence[tuple[str, str]]) -> str:
    """The one-line refusal of a model whose weights live in external files."""
    files = sorted({location for _name, location in found})
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
    return (
        f"model {model} keeps the weights of {len(found)} tensor(s) in external files "
        f"({shown}); painmon loads only self-contained .onnx files, whose SHA-256 sidecar "
        "covers every weight: re-export it with `painmon export`, or re-save it with "
        "onnx.save(onnx.load(path), path) (without save_as_external_data); a model over "
        "2 GB cannot be one file and cannot run at the bedside"
    )


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
        prevalence: Sequence[float] | str | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file {self.path} not found; export it or fix the path")
        # One read: the bytes hashed are the bytes ONNX Runtime loads.
        try:
            model_bytes = self.path.read_bytes()
        except OSError as exc:
            raise ModelLoadError(f"model file {self.path} cannot be read ({exc})") from exc
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        self.verified = self._verify(expected_sha256, allow_unverified)
        try:
            external = external_data_locations(model_bytes)
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"model file {self.path} is {exc}; re-export or re-download it"
            ) from None
        if external:
            raise ModelIntegrityError(external_data_message(self.path, external))

        env = os.environ if env is None else env
        choice, source = resolve_provider_choice(prefer, env)
        available = list(ort.get_available_providers())
        # The driver check runs only where it can change the answer (auto with a CUDA build).
        cuda_usable = CUDA_PROVIDER not in available or choice != "auto" or cuda_driver_present()
        requested = choose_providers(available, prefer, env, cuda_usable=cuda_usable)
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
            self.session = ort.InferenceSession(model_bytes, options, providers=requested)
        except _ort_errors() as exc:
            raise ModelLoadError(
                f"model file {self.path} is not a loadable ONNX model ({_first_line(exc)}); "
                "re-export or re-download it"
            ) from exc
        finally:
            if quiet:
                ort.set_default_logger_severity(2)
        del model_bytes
        self.providers: list[str] = list(self.session.get_providers())
        if requested[0] != self.providers[0] and choice != "auto":
            raise ProviderError(
                f"{requested[0]} ({source}) is installed but failed to start (see ONNX "
                "Runtime's log: usually a missing CUDA/cuDNN library); choose 'auto' or 'cpu'"
            )

        props = dict(self.session.get_modelmeta().custom_metadata_map)
        missing = [k for k in REQUIRED_METADATA_KEYS if k not in props]
        if missing:
            raise ModelLoadError(
                f"{self.path} is not a painmon export (metadata lacks {', '.join(missing)}); "
                "export it with painmon.core.research.export.export_onnx"
            )
        self.metadata: dict[str, Any] = parse_metadata(props)
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        gated = [*OUTPUT_NAMES, GATE_OUTPUT]
        if [i.name for i in inputs] != [INPUT_NAME] or outputs not in (list(OUTPUT_NAMES), gated):
            raise ModelLoadError(
                f"{self.path} has inputs {[i.name for i in inputs]} and outputs {outputs}; a "
                f"painmon export has [{INPUT_NAME!r}] and {gated} ({GATE_OUTPUT!r} absent in "
                "exports before the domain gate)"
            )
        self._output_names = outputs
        try:
            self.cfg = PainModelCfg.from_onnx_metadata(self.metadata)
        except InvalidInputError as exc:
            raise ModelLoadError(f"{self.path}: {exc}; re-export the model") from exc
        preprocessing = self.metadata["preprocessing"]
        self.class_names: list[str] = list(self.cfg.class_names)
        self.input_size: tuple[int, int, int] = self.cfg.input_size
        self.temperature = self.cfg.temperature
        self.is_demo: bool = bool(self.metadata.get("demo")) or DEMO_NOTICE in str(
            self.metadata.get("intended_use", "")
        )
        if preprocessing.get("dtype") != "uint8" or preprocessing.get("layout") != "NHWC":
            raise ModelLoadError(
                f"{self.path} expects {show(preprocessing.get('dtype'))} "
                f"{show(preprocessing.get('layout'))} input; this runtime feeds uint8 NHWC "
                "crops, so re-export with this painmon"
            )
        self._check_graph_agrees(inputs[0], self.session.get_outputs()[0])
        self._check_crop()
        self.prevalence = model_prevalence_correction(self.cfg, self.path, prevalence, env)
        self.domain_gate: DomainGateSpec | None = self._domain_gate(outputs)
        # Logged only once the model is known to be usable: a refused model gives its one
        # error line, not provider chatter first.
        level, message = provider_outcome(available, requested, self.providers, choice)
        log.log(level, "%s (%s)", message, self.path.name)
        log.debug(
            "ONNX Runtime for %s: offered %s, requested %s, active %s",
            self.path.name,
            ", ".join(available),
            ", ".join(requested),
            ", ".join(self.providers),
        )

    def _check_graph_agrees(self, image_input: Any, probs_output: Any) -> None:
        """The graph's input and ``probs`` shapes must be the ones the metadata describes:
        otherwise every crop the engine makes fails in ``predict``."""
        _channels, height, width = self.input_size
        expected = ("batch", height, width, 3)
        shape = list(image_input.shape)
        if (
            image_input.type != "tensor(uint8)"
            or len(shape) != 4
            or any(
                isinstance(d, int) and d != e for d, e in zip(shape[1:], expected[1:], strict=True)
            )
        ):
            raise ModelLoadError(
                f"{self.path}: the graph's input {INPUT_NAME!r} is {image_input.type} {shape}, "
                f"but its metadata (preprocessing.input_size {list(self.cfg.input_size)}) "
                f"describes uint8 [batch, {height}, {width}, 3]; re-export the model"
            )
        probs_shape = list(probs_output.shape)
        classes = probs_shape[-1] if probs_shape else None
        if len(probs_shape) != 2 or (isinstance(classes, int) and classes != self.cfg.num_classes):
            raise ModelLoadError(
                f"{self.path}: the graph's {OUTPUT_NAMES[0]!r} output is {probs_shape}, but its "
                f"metadata names {self.cfg.num_classes} classes (class_names); re-export the model"
            )

    def _check_crop(self) -> None:
        """Live crops are framed by the ``crop`` metadata: refuse a framing this painmon
        cannot reproduce now, not on the first face."""
        from painmon.core.live.crop import CropSpec

        try:
            CropSpec.from_meta(self.cfg.crop)
        except ValueError as exc:
            raise ModelLoadError(f"{self.path}: model metadata 'crop': {exc}") from exc

    def _domain_gate(self, outputs: Sequence[str]) -> DomainGateSpec | None:
        entry = self.metadata.get("domain_gate")
        if entry is not None and not isinstance(entry, Mapping):
            raise ModelLoadError(
                f"{self.path}: model metadata 'domain_gate' must be a JSON object, got "
                f"{type(entry).__name__}: {show(entry)}; re-export the model"
            )
        if entry and entry.get("method") not in (None, "none"):
            threshold, quantile = entry.get("threshold"), entry.get("quantile")
            if not (is_number(threshold) and math.isfinite(threshold) and threshold > 0):
                raise ModelLoadError(
                    f"{self.path}: model metadata 'domain_gate.threshold' must be a finite "
                    f"number > 0, got {show(threshold)}; re-export the model"
                )
            if quantile is not None and not (is_number(quantile) and 0 < quantile <= 1):
                raise ModelLoadError(
                    f"{self.path}: model metadata 'domain_gate.quantile' must be a number in "
                    f"(0, 1], got {show(quantile)}; re-export the model"
                )
        try:
            gate = DomainGateSpec.from_metadata(entry)
        except (TypeError, ValueError) as exc:  # InvalidInputError is a ValueError
            raise ModelLoadError(
                f"{self.path}: model metadata 'domain_gate': {exc}; re-export the model"
            ) from exc
        if (gate is not None) != (GATE_OUTPUT in outputs):
            raise ModelLoadError(
                f"{self.path}: the domain_gate metadata and the {GATE_OUTPUT!r} output disagree "
                "(one without the other); re-export the model"
            )
        if gate is None:
            log.warning(
                "%s has no domain gate: it cannot tell when a face is unlike its training data",
                self.path.name,
            )
        return gate

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
                f"model file {self.path} cannot be verified: {sidecar_name} is missing (the "
                "file with its SHA-256 that `painmon export` writes beside every model); "
                "re-export it with `painmon export`, or copy the .sha256 along with the model"
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


def _shares(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
