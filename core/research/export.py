"""Export a trained pain model to ONNX for the bedside monitor, with a parity check.

One function, :func:`export_onnx` (timm ``utils/onnx.py`` style): wrap the model, export,
``onnx.checker``, compare ONNX Runtime to torch, stamp the metadata, write atomically.

The exported graph (what :class:`painmon.core.live.scoring.OnnxPainModel` runs):

- input ``image``: uint8 RGB crops, layout NHWC ``(B, H, W, 3)``, values 0..255, exactly
  the crops :mod:`painmon.core.research.crops` produces. Normalisation ``(x / 255 - mean) / std``
  and the NHWC -> NCHW transpose happen *inside* the graph, so the preprocessing cannot
  drift from the weights and the runtime only stacks crops. The ``preprocessing``
  metadata entry records all of it.
- output ``probs`` ``(B, classes)``: calibrated ``softmax(logits / temperature)``.
- output ``gradcam`` ``(B, h, w)``: Grad-CAM of each image's top class, 0..1, from the
  classifier head's explicit (autograd-free) gradient.
- output ``attention`` ``(B, K, h, w)``: the K spatial-attention maps, 0..1; a model without
  spatial attention outputs ones ``(B, 1, h, w)`` and says so in the ``attention`` metadata.
- output ``domain_score`` ``(B,)``: the domain gate's Mahalanobis score of each crop against
  the training crops (:mod:`painmon.core.research.domain_gate`); the ``domain_gate``
  metadata entry holds its threshold (flag when the score exceeds it) and how it was fitted.
  Every export has one unless ``domain_gate=False`` is asked for explicitly (research only:
  the bedside then warns that the model cannot tell a face unlike its training data).

Integrity sidecar: ``<out>.sha256`` in ``sha256sum`` format (``<hex>  <file name>``), so
``sha256sum -c model.onnx.sha256`` checks it too; every other fact lives in the ONNX
``metadata_props`` and travels inside the model file. The model is always one
self-contained file: weights in external data files would escape that hash, so a model too
big for one protobuf (2 GB) is refused rather than split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from painmon.core.live.scoring import (
    DEMO_NOTICE,
    GATE_OUTPUT,
    INPUT_NAME,
    JSON_METADATA_KEYS,
    OUTPUT_NAMES,
    SIDECAR_SUFFIX,
    ModelLoadError,
    external_data_locations,
)
from painmon.core.research.calibration import run_class_weighted_sampling, training_priors
from painmon.core.research.domain_gate import (
    CROSS_FIT_BELOW_VAL_SUBJECTS,
    CROSS_FIT_MIN_SUBJECTS,
    DEFAULT_QUANTILE,
    THRESHOLD_AUTO,
    THRESHOLD_CROSS_FIT,
    THRESHOLD_MODES,
    THRESHOLD_VALIDATION,
    DomainGateFit,
    LayerTap,
    cross_fit_scores,
    extract_gate_features,
    fit_domain_gate,
    gate_features,
    ring_swapped,
)
from painmon.core.util.errors import InvalidInputError, PainmonError
from painmon.core.util.fileio import atomic_path, atomic_write_bytes, sha256_file
from painmon.core.util.model_cfg import PainModelCfg
from painmon.core.util.timeline import utc_now
from painmon.core.util.validate import is_sha256_hex
from painmon.models.base import gradcam_from_gradient

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
# Agreement demanded between ONNX Runtime and torch on probabilities and 0..1 heatmaps.
PARITY_ATOL = 1e-4
# Below this logit gap the top class is a coin toss between two float kernels, so the
# Grad-CAM of that image (which class it explains) is not compared.
TOP_CLASS_TIE_MARGIN = 1e-4
# Grad-CAM peak / largest sum of |w_c F_c| at a pixel: below this the map is the residue of
# cancelling terms, and normalising it to 0..1 magnifies float32 rounding past PARITY_ATOL
# (measured: condition 8.5e-4 gave a 5.6e-5 difference, 1e-1 gave 1.7e-6).
GRADCAM_MIN_CONDITION = 1e-2
DEFAULT_INTENDED_USE = "Research on facial pain expression. Not a medical device."
# protobuf serializes at most 2 GiB in one message; a bigger model needs external data files,
# which painmon never writes (the sidecar's SHA-256 would not cover them). The headroom is
# for the graph and the metadata beside the weights.
ONNX_FILE_LIMIT_BYTES = 2**31 - 1
GRAPH_HEADROOM_BYTES = 64 * 2**20


class ExportError(PainmonError, RuntimeError):
    """The model could not be exported faithfully; nothing was written."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime matched torch."""

    onnx_path: Path
    sidecar_path: Path
    sha256: str
    architecture: str
    opset: int
    parity_max_abs_diff: dict[str, float]
    parity_samples: int
    gradcams_compared: int
    metadata: dict[str, str] = field(repr=False)
    domain_gate: DomainGateFit | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.sha256):
            raise ValueError(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not set(OUTPUT_NAMES) <= set(self.parity_max_abs_diff) <= {*OUTPUT_NAMES, GATE_OUTPUT}:
            raise ValueError(f"parity_max_abs_diff needs keys {OUTPUT_NAMES} (+ {GATE_OUTPUT})")
        if self.parity_samples < 1:
            raise ValueError(f"parity_samples must be >= 1, got {self.parity_samples}")
        if not 0 <= self.gradcams_compared <= self.parity_samples:
            raise ValueError(f"gradcams_compared must lie in 0..{self.parity_samples}")


class PainExportWrapper(nn.Module):
    """uint8 NHWC RGB crops -> (probs, gradcam, attention[, domain_score]); the exported graph."""

    def __init__(
        self,
        model: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        temperature: float,
        gate: DomainGateFit | None = None,
    ) -> None:
        super().__init__()
        temperature = float(temperature)
        if not math.isfinite(temperature) or temperature <= 0:
            raise ExportError(f"temperature must be a finite number > 0, got {temperature!r}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ExportError(f"mean/std must be 3 RGB values with std > 0, got {mean}, {std}")
        self.model = model
        self.temperature = temperature
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        # (x/255 - mean)/std folded into one multiply-add.
        self.register_buffer("input_scale", 1.0 / (255.0 * std_t))
        self.register_buffer("input_shift", -mean_t / std_t)
        self.gate = gate.module() if gate is not None else None
        self._tap = LayerTap(model) if gate is not None else None
        self.eval()

    @property
    def output_names(self) -> tuple[str, ...]:
        return (*OUTPUT_NAMES, GATE_OUTPUT) if self.gate is not None else OUTPUT_NAMES

    def normalise(self, image_u8: Tensor) -> Tensor:
        """uint8 (B, H, W, 3) -> normalised float (B, 3, H, W), as training does."""
        return image_u8.permute(0, 3, 1, 2).float().contiguous() * self.input_scale + (
            self.input_shift
        )

    def forward(self, image_u8: Tensor) -> tuple[Tensor, ...]:
        x = self.normalise(image_u8)
        if self._tap is not None:
            self._tap.arm()
        features = self.model.forward_features(x)
        taps = self._tap.take() if self._tap is not None else []
        logits, grad = self.model.head.logits_and_input_gradient(features, None)
        probs = torch.softmax(logits / self.temperature, dim=1)
        cam = gradcam_from_gradient(features, grad)
        # attention_maps re-runs the backbone; ONNX Runtime's common-subexpression pass
        # merges the copy back at load, so the bedside pays for one backbone.
        attention = self.model.attention_maps(x)
        if attention is None:
            attention = torch.ones_like(cam).unsqueeze(1)
        if self.gate is None:
            return probs, cam, attention
        return probs, cam, attention, self.gate(gate_features(taps))


def _intended_use(intended_use: str | None, demo: bool) -> str:
    text = (intended_use or DEFAULT_INTENDED_USE).strip()
    if demo and DEMO_NOTICE not in text:
        text = f"{DEMO_NOTICE}. {text}"
    return text


def _build_metadata(
    cfg: PainModelCfg,
    meta: Mapping[str, Any],
    checkpoint: Path,
    *,
    opset: int,
    intended_use: str,
    demo: bool,
    feature_hw: tuple[int, int],
    attention_heads: int | None,
    gate: DomainGateFit | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` strings: the model config ``cfg`` plus the checkpoint's provenance."""
    import painmon

    owned = cfg.to_onnx_metadata()
    channels, height, width = cfg.input_size
    h, w = feature_hw
    preprocessing = {
        "input_name": INPUT_NAME,
        "dtype": "uint8",
        "layout": "NHWC",
        "shape": ["batch", height, width, channels],
        "input_size": owned["preprocessing"]["input_size"],
        "colour_order": "RGB",
        "value_range": [0, 255],
        "mean": owned["preprocessing"]["mean"],
        "std": owned["preprocessing"]["std"],
        "normalisation": "in_graph",
        "formula": "x_nchw = (x / 255 - mean) / std, per RGB channel, inside the graph",
    }
    if attention_heads is None:
        attention = {
            "kind": "none",
            "heads": 1,
            "note": "model has no spatial attention; the attention output is ones (B, 1, h, w)",
        }
    else:
        attention = {"kind": "spatial", "heads": attention_heads}
    outputs = {
        "probs": {"shape": ["batch", cfg.num_classes], "meaning": "softmax(logits / temperature)"},
        "gradcam": {"shape": ["batch", h, w], "meaning": "Grad-CAM of the top class, 0..1"},
        "attention": {
            "shape": ["batch", attention["heads"], h, w],
            "meaning": "spatial attention maps, 0..1",
        },
    }
    if gate is not None:
        outputs[GATE_OUTPUT] = {
            "shape": ["batch"],
            "meaning": "domain gate score; above domain_gate.threshold the crop is unlike "
            "the training crops",
        }
        domain_gate: dict[str, Any] = gate.metadata()
    else:
        domain_gate = {
            "method": "none",
            "note": "exported without a domain gate: the model cannot tell a face unlike its "
            "training data",
        }
    values: dict[str, Any] = {
        "painmon_version": painmon.__version__,
        "architecture": owned["architecture"],
        "model_kwargs": owned["model_kwargs"],
        "class_names": owned["class_names"],
        "pspi_mapping": owned["pspi_mapping"],
        "preprocessing": preprocessing,
        # How the training crops were framed (detector box, margin, size): the engine
        # frames live crops the same way and warns when its face tracker differs.
        "crop": owned["crop"],
        "outputs": outputs,
        "attention": attention,
        "temperature": owned["temperature"],
        "domain_gate": domain_gate,
        **_prevalence_metadata(owned, meta),
        "training_data_sha256": str(meta.get("data_sha256") or "unknown"),
        "metrics": dict(meta.get("metrics") or {}),
        "intended_use": intended_use,
        "demo": bool(demo),
        "opset": int(opset),
        # load_checkpoint refused a checkpoint without a verified weights_sha256.
        "source_checkpoint": {"file": checkpoint.name, "sha256": meta["weights_sha256"]},
        "created_utc": utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return {
        key: json.dumps(value, default=_json_default) if key in JSON_METADATA_KEYS else value
        for key, value in values.items()
    }


def _prevalence_metadata(owned: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``class_prevalence`` entry (absent when unknown): the training crops' class
    frequencies, the priors the model was fitted under, and how they were counted."""
    entry = owned.get("class_prevalence")
    if entry is None:
        return {}
    recorded = meta.get("class_prevalence") or {}
    return {
        "class_prevalence": dict(
            entry,
            sampling=recorded.get("sampling", "unknown"),
            train_crops=recorded.get("train_crops"),
            meaning="natural: class frequencies of the training crops; trained_prior: the "
            "class priors the model was fitted under; the bedside moves probabilities from "
            "trained_prior to the ward's prevalence (default: natural) by prior shift",
        )
    }


def _with_prevalence(
    cfg: PainModelCfg, meta: dict[str, Any], checkpoint: Path, labels: Any | None
) -> PainModelCfg:
    """``cfg`` with the training priors: as the training run recorded them in the
    checkpoint (the torch backend reads the same), else counted from ``labels`` (the run's
    training crops); unchanged, with a warning, when neither knows them."""
    if cfg.class_prevalence is not None and cfg.trained_prior is not None:
        weighted = run_class_weighted_sampling(checkpoint.parent)
        same = False
        if labels is not None:
            try:
                counted = training_priors(labels, cfg.num_classes, weighted)
            except ValueError:
                counted = None
            recorded = (cfg.class_prevalence, cfg.trained_prior)
            same = counted is not None and bool(np.allclose(counted, recorded, atol=1e-9))
            if not same:
                log.warning(
                    "%s: the gate's training crops hold other class frequencies than the "
                    "run recorded for its own; the export keeps the run's",
                    checkpoint,
                )
        meta["class_prevalence"] = {
            "sampling": "class_balanced" if weighted else "natural",
            "train_crops": int(np.asarray(labels).size) if same else None,
        }
        return cfg
    if labels is None:
        if cfg.class_prevalence is None:
            log.warning(
                "%s: the training class frequencies are unknown (no training crops given): "
                "the bedside cannot correct this model to a ward's prevalence",
                checkpoint,
            )
        return cfg
    weighted = run_class_weighted_sampling(checkpoint.parent)
    try:
        natural, trained = training_priors(labels, cfg.num_classes, weighted)
    except ValueError as exc:
        raise ExportError(f"{checkpoint}: {exc}") from exc
    meta["class_prevalence"] = {
        "sampling": "class_balanced" if weighted else "natural",
        "train_crops": int(np.asarray(labels).size),
    }
    return dataclasses.replace(cfg, class_prevalence=natural, trained_prior=trained)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | np.ndarray):
        return list(value)
    raise TypeError(f"metadata value is not JSON-serialisable: {type(value).__name__}")


def _weights_nbytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer: what the graph stores as initializers."""
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _check_fits_one_file(wrapper: nn.Module, checkpoint: Path) -> None:
    nbytes = _weights_nbytes(wrapper)
    if nbytes + GRAPH_HEADROOM_BYTES > ONNX_FILE_LIMIT_BYTES:
        raise ExportError(
            f"{checkpoint}: the model's weights take {nbytes / 1e9:.2f} GB, more than one "
            f"self-contained .onnx file can hold ({ONNX_FILE_LIMIT_BYTES / 1e9:.2f} GB, "
            "protobuf's limit); painmon does not export weights to external data files (the "
            "SHA-256 sidecar would not cover them and the bedside refuses them): use a "
            "smaller model"
        )


def _refuse_external_data(model_bytes: bytes, what: str) -> None:
    """Raise :class:`ExportError` unless ``model_bytes`` is a self-contained ONNX model."""
    try:
        external = external_data_locations(model_bytes)
    except ModelLoadError as exc:
        raise ExportError(f"{what} is {exc}") from exc
    if external:
        files = sorted({location for _name, location in external})
        raise ExportError(
            f"{what} keeps the weights of {len(external)} tensor(s) in external files "
            f"({', '.join(files[:3])}{' ...' if len(files) > 3 else ''}); painmon exports only "
            "self-contained .onnx files, whose SHA-256 covers every weight (a model over 2 GB "
            "cannot be one file: use a smaller model); nothing was written"
        )


def _save_self_contained(proto: Any, path: Path) -> None:
    """``onnx.save`` into one file, never external data; checked on the bytes written."""
    import onnx

    try:
        onnx.save(proto, str(path), save_as_external_data=False)
    except ValueError as exc:  # onnx refuses a proto over protobuf's 2 GB limit
        raise ExportError(
            f"the exported model does not fit in one .onnx file ({_first_line(exc)}); painmon "
            "does not split weights into external data files: use a smaller model"
        ) from exc
    _refuse_external_data(path.read_bytes(), "the saved model")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parity_images(height: int, width: int, samples: int, seed: int = 0) -> np.ndarray:
    """uint8 (N, H, W, 3) test crops: flat black/grey/white, ramps, a checkerboard, then noise."""
    rng = np.random.default_rng(seed)
    ramp_x = np.broadcast_to(np.linspace(0, 255, width)[None, :, None], (height, width, 3))
    ramp_y = np.broadcast_to(np.linspace(0, 255, height)[:, None, None], (height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width]
    checker = np.repeat((((yy // 8) + (xx // 8)) % 2 * 255)[..., None], 3, axis=2)
    structured = [
        np.zeros((height, width, 3)),
        np.full((height, width, 3), 128),
        np.full((height, width, 3), 255),
        ramp_x,
        ramp_y,
        checker,
    ]
    images = [img.astype(np.uint8) for img in structured][:samples]
    while len(images) < samples:
        images.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return np.stack(images)


def _comparable_gradcams(wrapper: PainExportWrapper, images: np.ndarray) -> np.ndarray:
    """Which images have a Grad-CAM that two float32 kernels must agree on (bool (N,))."""
    model = wrapper.model
    with torch.no_grad():
        features = model.forward_features(wrapper.normalise(torch.from_numpy(images)))
        logits, grad = model.head.logits_and_input_gradient(features, None)
        terms = grad.mean(dim=(2, 3), keepdim=True) * features
        peak = torch.relu(terms.sum(dim=1)).flatten(1).amax(dim=1)
        scale = terms.abs().sum(dim=1).flatten(1).amax(dim=1)
        top2 = logits.topk(2, dim=1).values
    decided = (top2[:, 0] - top2[:, 1]) > TOP_CLASS_TIE_MARGIN
    conditioned = peak >= GRADCAM_MIN_CONDITION * scale.clamp_min(1e-30)
    return (decided & conditioned).numpy()


def _parity_check(
    wrapper: PainExportWrapper, onnx_path: Path, images: np.ndarray
) -> tuple[dict[str, float], int]:
    """Max |ORT - torch| per output over the whole batch and single images (dynamic batch),
    and how many Grad-CAMs were compared."""
    import onnxruntime as ort

    names = list(wrapper.output_names)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(torch.from_numpy(images))]
    whole = session.run(names, {INPUT_NAME: images})
    singles = [
        session.run(names, {INPUT_NAME: images[i : i + 1]}) for i in range(min(2, len(images)))
    ]
    comparable = _comparable_gradcams(wrapper, images)
    diffs: dict[str, float] = {}
    for k, name in enumerate(names):
        if whole[k].shape != ref[k].shape:
            raise ExportError(
                f"ONNX output {name} has shape {whole[k].shape}, torch gives {ref[k].shape}"
            )
        keep = comparable if name == "gradcam" else np.ones(len(images), bool)
        # The domain score is a squared distance (hundreds to millions): compare it relative
        # to its size; every other output lies in 0..1.
        scale = np.maximum(np.abs(ref[k]), 1.0) if name == GATE_OUTPUT else np.ones_like(ref[k])
        diff = float((np.abs(whole[k] - ref[k]) / scale)[keep].max(initial=0.0))
        for i, single in enumerate(singles):
            if keep[i]:
                diff = max(diff, float((np.abs(single[k][0] - ref[k][i]) / scale[i]).max()))
        diffs[name] = diff
    return diffs, int(comparable.sum())


@dataclass(frozen=True)
class GateData:
    """The crops a domain gate is fitted on (training subjects) and thresholded on (validation,
    or every subject cross-fitted when the crops' subjects are given)."""

    train_images: np.ndarray  # uint8 (N, H, W, 3)
    train_labels: np.ndarray  # (N,) classes 0..4
    val_images: np.ndarray  # uint8 (M, H, W, 3), people not in train_images
    train_subjects: int = 0
    val_subjects: int = 0
    #: each crop's subject (None: not known, and the threshold cannot be cross-fitted)
    train_ids: np.ndarray | None = None
    val_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("train_images", "val_images"):
            images = getattr(self, name)
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise InvalidInputError(f"{name} must be uint8 (N, H, W, 3), got {images.shape}")
        if len(self.train_labels) != len(self.train_images):
            raise InvalidInputError("train_labels must match train_images")
        for ids, images in ((self.train_ids, self.train_images), (self.val_ids, self.val_images)):
            if ids is not None and len(ids) != len(images):
                raise InvalidInputError("train_ids/val_ids must give one subject per crop")
        if (self.train_ids is None) != (self.val_ids is None):
            raise InvalidInputError("give the subjects of both train and val crops, or neither")
        if self.train_ids is not None and set(map(str, self.train_ids)) & set(
            map(str, self.val_ids)
        ):
            raise InvalidInputError("a subject is in both the gate's train and val crops")

    @property
    def has_ids(self) -> bool:
        return self.train_ids is not None

    @property
    def people(self) -> int:
        """How many people the crops show (the recorded counts when their ids are unknown)."""
        if self.train_ids is None or self.val_ids is None:
            return self.train_subjects + self.val_subjects
        return len({str(s) for s in self.train_ids} | {str(s) for s in self.val_ids})


def gate_data_for_run(meta: Mapping[str, Any], dataset: str | Path) -> GateData:
    """The run's own training and validation subjects' crops from ``dataset``."""
    from painmon.core.research.experiment import prepare_data

    train_subjects = [str(s) for s in meta.get("train_subjects") or ()]
    val_subjects = [str(s) for s in meta.get("val_subjects") or ()]
    if not train_subjects or not val_subjects:
        raise ExportError(
            "the checkpoint records no training/validation subjects (best.json lacks "
            "train_subjects/val_subjects), so the domain gate cannot be fitted on them; retrain "
            "with this painmon, or export with --no-domain-gate (research only)"
        )
    data = prepare_data(dataset, progress=False)
    expected = meta.get("data_sha256")
    if expected and data.crops.data_sha256 != expected:
        log.warning(
            "%s holds different crops (sha256 %s…) from the ones the model was trained on "
            "(%s…); the domain gate is fitted on these",
            dataset,
            data.crops.data_sha256[:12],
            str(expected)[:12],
        )
    train_images, train_labels, train_ids = data.partition(train_subjects)
    val_images, _, val_ids = data.partition(val_subjects)
    if len(train_images) == 0 or len(val_images) == 0:
        raise ExportError(
            f"{dataset} holds no crops of the run's training or validation subjects: give the "
            "dataset the run was trained on (--manifest)"
        )
    return GateData(
        train_images, train_labels, val_images, len(train_subjects), len(val_subjects),
        train_ids=np.asarray(train_ids).astype(str), val_ids=np.asarray(val_ids).astype(str),
    )  # fmt: skip


def _resolve_gate_data(
    gate_data: GateData | str | Path | None, meta: Mapping[str, Any], checkpoint: Path
) -> GateData:
    if isinstance(gate_data, GateData):
        return gate_data
    if gate_data is None:
        recorded = meta.get("dataset")
        candidates = [Path(recorded), checkpoint.parent / recorded] if recorded else []
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise ExportError(
                "the domain gate is fitted on the model's training crops, and the dataset "
                f"recorded in the checkpoint ({recorded or 'none'}) is not here: give it "
                "(--manifest crops.npz or the dataset root), or export with --no-domain-gate "
                "(research only: the bedside then cannot tell a face unlike the training data)"
            )
        gate_data = found
    return gate_data_for_run(meta, gate_data)


def resolve_threshold_mode(mode: str, data: GateData) -> str:
    """``auto`` -> cross-fit below CROSS_FIT_BELOW_VAL_SUBJECTS validation subjects when the
    crops' subjects are known and number CROSS_FIT_MIN_SUBJECTS in all, else validation; an
    explicit mode is checked against the data."""
    if mode not in THRESHOLD_MODES:
        raise InvalidInputError(
            f"gate threshold must be one of {', '.join(THRESHOLD_MODES)}, got {mode!r}"
        )
    if mode == THRESHOLD_CROSS_FIT and not data.has_ids:
        raise ExportError(
            "a cross-fitted gate threshold needs each crop's subject; these gate crops have "
            "none (give the dataset or crops file, not bare arrays)"
        )
    if mode != THRESHOLD_AUTO:
        return mode
    if data.val_subjects >= CROSS_FIT_BELOW_VAL_SUBJECTS:
        return THRESHOLD_VALIDATION
    if not data.has_ids:
        log.info(
            "gate threshold from %d validation subjects: the crops' subjects are not known, "
            "so it cannot be cross-fitted",
            data.val_subjects,
        )
        return THRESHOLD_VALIDATION
    people = data.people
    if people < CROSS_FIT_MIN_SUBJECTS:
        log.warning(
            "gate threshold from %d validation subjects: %d people in all are too few to "
            "cross-fit it (at least %d); a face unlike them will often read out of domain",
            data.val_subjects,
            people,
            CROSS_FIT_MIN_SUBJECTS,
        )
        return THRESHOLD_VALIDATION
    return THRESHOLD_CROSS_FIT


def fit_gate_for_model(
    wrapper_normalise: Any,
    model: nn.Module,
    data: GateData,
    quantile: float,
    ring_swap: bool = False,
    threshold: str = THRESHOLD_AUTO,
) -> DomainGateFit:
    """Gate features of ``data`` through ``model``, then :func:`fit_domain_gate`.

    ``ring_swap``: fit on the training crops and on a ring-swapped copy of each (the crops
    as ``--augment periphery`` showed them); the threshold still comes from crops as they
    are. ``threshold``: see :func:`resolve_threshold_mode` and the domain_gate module."""
    mode = resolve_threshold_mode(threshold, data)
    train = extract_gate_features(model, wrapper_normalise, data.train_images)
    labels = np.asarray(data.train_labels)
    val = extract_gate_features(model, wrapper_normalise, data.val_images)
    fit_train, fit_labels = train, labels
    if ring_swap:
        swapped = extract_gate_features(model, wrapper_normalise, ring_swapped(data.train_images))
        fit_train = np.concatenate([train, swapped])
        fit_labels = np.concatenate([labels, labels])
    cross: dict[str, Any] = {}
    if mode == THRESHOLD_CROSS_FIT:
        assert data.train_ids is not None and data.val_ids is not None
        # Each fold's fit sees what the final fit sees (training subjects' crops, their
        # ring-swapped copies too) less the fold's subjects; the fold's training and
        # validation subjects' crops are scored as they are. Validation crops enter no fit.
        ids = np.concatenate([data.train_ids, data.train_ids]) if ring_swap else data.train_ids
        scores, folds = cross_fit_scores(
            fit_train,
            fit_labels,
            ids,
            np.concatenate([train, val]),
            np.concatenate([data.train_ids, data.val_ids]),
        )
        cross = {
            "threshold_scores": scores,
            "threshold_subjects": data.people,
            "threshold_folds": folds,
        }
    return fit_domain_gate(
        fit_train,
        fit_labels,
        val,
        quantile=quantile,
        train_subjects=data.train_subjects,
        val_subjects=data.val_subjects,
        ring_swap=ring_swap,
        **cross,
    )


def export_onnx(
    run_or_checkpoint: str | Path,
    out_path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    intended_use: str | None = None,
    demo: bool = False,
    parity_samples: int = 16,
    gate_data: GateData | str | Path | None = None,
    domain_gate: bool = True,
    gate_quantile: float = DEFAULT_QUANTILE,
    gate_ring_swap: bool = False,
    gate_threshold: str = THRESHOLD_AUTO,
) -> ExportResult:
    """Export a checkpoint (run folder or ``.safetensors``) to ONNX at ``out_path``.

    The domain gate is fitted on ``gate_data``: explicit :class:`GateData`, a dataset or
    ``.npz`` crops file (its crops of the run's training and validation subjects are used),
    or None for the dataset recorded in the checkpoint. ``domain_gate=False`` exports
    without a gate (research only; the metadata says so). ``gate_threshold``: what the
    threshold is the quantile of (:func:`resolve_threshold_mode`; "auto" cross-fits it over
    the training and validation subjects when the validation subjects are few).

    Writes ``out_path`` and ``out_path.sha256`` only after ``onnx.checker`` and the ONNX
    Runtime vs torch parity check (``PARITY_ATOL``) pass; otherwise raises
    :class:`ExportError` and leaves no new file behind.
    """
    import onnx

    from painmon.core.research.train import load_checkpoint

    if parity_samples < 1:
        raise ValueError(f"parity_samples must be >= 1, got {parity_samples}")
    source = Path(run_or_checkpoint)
    checkpoint = source / "best.safetensors" if source.is_dir() else source
    out = Path(out_path)
    if out.suffix != ".onnx":
        raise InvalidInputError(f"ONNX output path must end in .onnx, got {out}")

    model, meta = load_checkpoint(checkpoint, "cpu")
    model.eval()
    # load_checkpoint put the checkpoint's own config (best.json) on the model; it holds
    # 3 input channels, so the graph takes the RGB crops the bedside feeds.
    cfg: PainModelCfg = model.pretrained_cfg
    _channels, height, width = cfg.input_size
    wrapper = PainExportWrapper(model, cfg.mean, cfg.std, cfg.temperature)
    gate: DomainGateFit | None = None
    train_labels = None
    if domain_gate:
        data = _resolve_gate_data(gate_data, meta, checkpoint)
        train_labels = data.train_labels
        gate = fit_gate_for_model(
            wrapper.normalise, model, data, gate_quantile, ring_swap=gate_ring_swap,
            threshold=gate_threshold,
        )  # fmt: skip
        wrapper = PainExportWrapper(model, cfg.mean, cfg.std, cfg.temperature, gate)
    else:
        log.warning("exporting %s without a domain gate (research only)", checkpoint)
        if isinstance(gate_data, GateData):
            train_labels = gate_data.train_labels
    meta = dict(meta)
    cfg = _with_prevalence(cfg, meta, checkpoint, train_labels)

    probe = torch.zeros(2, height, width, 3, dtype=torch.uint8)
    with torch.no_grad():
        _probs, probe_cam, probe_attention, *_gate = wrapper(probe)
    has_attention = model.attention_maps(wrapper.normalise(probe)) is not None
    feature_hw = (int(probe_cam.shape[1]), int(probe_cam.shape[2]))
    metadata = _build_metadata(
        cfg,
        meta,
        checkpoint,
        opset=opset,
        intended_use=_intended_use(intended_use, demo),
        demo=demo,
        feature_hw=feature_hw,
        attention_heads=int(probe_attention.shape[1]) if has_attention else None,
        gate=gate,
    )

    _check_fits_one_file(wrapper, checkpoint)
    # torch writes the graph into a private folder beside ``out`` (any side files a large
    # model would produce stay there and vanish with it); the final model is written to a
    # temporary file beside ``out`` and only becomes ``out`` once onnx.checker and the parity
    # check passed; any failure deletes it.
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}-export-") as work,
        atomic_path(out) as tmp,
    ):
        raw = Path(work) / out.name
        try:
            with warnings.catch_warnings():
                # The TorchScript exporter announces its deprecation; it is the one that
                # handles this graph (dynamo=False), so the warning is noise here.
                warnings.filterwarnings(
                    "ignore",
                    message=".*legacy TorchScript-based ONNX export",
                    category=DeprecationWarning,
                )
                warnings.filterwarnings(
                    "ignore", category=DeprecationWarning, module=r"torch\.onnx\."
                )
                torch.onnx.export(
                    wrapper,
                    (probe,),
                    str(raw),
                    input_names=[INPUT_NAME],
                    output_names=list(wrapper.output_names),
                    dynamic_axes={
                        name: {0: "batch"} for name in (INPUT_NAME, *wrapper.output_names)
                    },
                    opset_version=opset,
                    # Folding would store transposed copies of the head weights (the Grad-CAM
                    # gradient uses W, the forward W^T): +8 MB on disk. ONNX Runtime folds at load.
                    do_constant_folding=False,
                    dynamo=False,
                )
        except Exception as exc:  # torch raises many types; all mean "could not export"
            raise ExportError(f"torch.onnx.export failed for {checkpoint}: {exc}") from exc
        _refuse_external_data(raw.read_bytes(), f"the graph torch exported for {checkpoint}")
        proto = onnx.load(str(raw), load_external_data=False)
        proto.doc_string = metadata["intended_use"]
        del proto.metadata_props[:]
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc
        _save_self_contained(proto, tmp)

        images = parity_images(height, width, parity_samples)
        diffs, gradcams_compared = _parity_check(wrapper, tmp, images)
        if gradcams_compared == 0:
            log.warning(
                "no parity image gave a well-conditioned Grad-CAM for %s; only probabilities "
                "and attention were compared",
                checkpoint,
            )
        worst = max(diffs, key=diffs.__getitem__)
        if diffs[worst] > PARITY_ATOL:
            raise ExportError(
                f"ONNX Runtime disagrees with torch on '{worst}' by {diffs[worst]:.2e} "
                f"(tolerance {PARITY_ATOL:.0e}); the export is not faithful and was deleted"
            )
        digest = sha256_file(tmp)
    # Model first, then its checksum: a crash in between leaves a mismatch that the
    # runtime refuses, never a silently wrong model.
    sidecar = atomic_write_bytes(
        out.with_name(out.name + SIDECAR_SUFFIX), f"{digest}  {out.name}\n".encode()
    )

    log.info(
        "exported %s to %s (sha256 %s…, parity max diff %s; %d/%d Grad-CAMs compared)",
        metadata["architecture"],
        out,
        digest[:12],
        ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()),
        gradcams_compared,
        parity_samples,
    )
    return ExportResult(
        onnx_path=out,
        sidecar_path=sidecar,
        sha256=digest,
        architecture=metadata["architecture"],
        opset=opset,
        parity_max_abs_diff=diffs,
        parity_samples=parity_samples,
        gradcams_compared=gradcams_compared,
        metadata=metadata,
        domain_gate=gate,
    )
