"""Training: the paper's recipe as one config dataclass, an explicit device, and a run folder.

AdamW, label smoothing 0.1, a 5-epoch linear warm-up then cosine annealing to
1e-6, early stopping on validation macro-F1 (patience 15), class-weighted
sampling, ImageNet normalisation, augmentation on the device that holds the
data. The whole crop set lives on the training device as uint8, so a GPU run
has no CPU data-loader in its way.

A run folder holds ``config.json``, ``env.json``, ``splits.json``,
``history.csv``, ``best.safetensors`` + ``best.json`` and ``card.md``;
``last.safetensors`` + ``last.json`` let ``--resume`` continue.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from painmon.core.research.augment import AugmentConfig, augment_batch
from painmon.core.research.calibration import CalibrationResult, calibrate, softmax
from painmon.core.research.metrics import classification_metrics
from painmon.core.research.options import COMPILE_MODES
from painmon.core.research.seeding import check_device_name
from painmon.core.research.splits import check_partitions_disjoint
from painmon.core.util import labels as pain_labels
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_path, atomic_write_bytes, atomic_write_json
from painmon.core.util.model_cfg import PainModelCfg
from painmon.core.util.validate import is_sha256_hex

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
    "val_ece", "seconds",
)  # fmt: skip


DEFAULT_INTENDED_USE = "Research on facial pain expression. Not a medical device."


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; written resolved to ``config.json``."""

    model: str = "dacnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    warmup_epochs: int = 5
    min_lr: float = 1e-6
    patience: int = 15
    seed: int = 42
    device: str = "auto"
    augment: str = "full"
    class_weighted_sampling: bool = True
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    # torch.compile mode: "none", "default" or "reduce-overhead" (CUDA graphs; CUDA only).
    compile: str = "none"
    eval_batch_size: int = 512
    # Deterministic kernels (cuDNN without autotuning, deterministic cuBLAS): a rerun gives the
    # same bits. False lets cuDNN autotune and pick faster non-deterministic kernels on a GPU:
    # the same recipe, results equal in distribution, not bit for bit.
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InvalidInputError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise InvalidInputError(f"batch size must be >= 2 (BatchNorm), got {self.batch_size}")
        if not self.lr > 0:
            raise InvalidInputError(f"learning rate must be > 0, got {self.lr}")
        if not self.weight_decay >= 0:
            raise InvalidInputError(f"weight decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidInputError(
                f"label smoothing must lie in [0, 1), got {self.label_smoothing}"
            )
        if self.warmup_epochs < 0 or self.patience < 1:
            raise InvalidInputError("warmup_epochs must be >= 0 and patience >= 1")
        if not 0 <= self.min_lr <= self.lr:
            raise InvalidInputError(f"min_lr must lie in 0..lr, got {self.min_lr}")
        AugmentConfig(mode=self.augment)  # validates the mode
        # The spelling only: whether this machine has the device is fit()'s question, so a
        # config.json written on a GPU machine still reads on a laptop.
        check_device_name(self.device)
        if self.compile not in COMPILE_MODES:
            raise InvalidInputError(
                f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InvalidInputError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class DeviceData:
    """Crops as uint8 (N,3,H,W) and labels on the training device."""

    images: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_numpy(
        cls, images_nhwc: np.ndarray, labels: np.ndarray, device: torch.device
    ) -> DeviceData:
        if images_nhwc.ndim != 4 or images_nhwc.shape[-1] != 3 or images_nhwc.dtype != np.uint8:
            raise ValueError("crops must be uint8 of shape (N, H, W, 3)")
        if len(images_nhwc) != len(labels):
            raise ValueError("crops and labels differ in length")
        images = (
            torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous()
        )
        return cls(
            images.to(device), torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def lr_factor(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """LR factor: linear warm-up over ``warmup_epochs``, then cosine annealing to ``min_lr``."""
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_epochs * steps_per_epoch
    floor = cfg.min_lr / cfg.lr
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, max(0.0, progress))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def normalise(batch_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (batch_u8.float() / 255.0 - mean) / std


def _mean_std(model: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    return mean, std


def sample_epoch_indices(
    labels: torch.Tensor, weighted: bool, gen: torch.Generator
) -> torch.Tensor:
    """One epoch's sample order: class-balanced draws with replacement, or a permutation."""
    n = labels.shape[0]
    if not weighted:
        return torch.randperm(n, generator=gen, device=labels.device)
    counts = torch.bincount(labels, minlength=pain_labels.NUM_CLASSES).float()
    weights = (1.0 / counts.clamp_min(1.0))[labels]
    return torch.multinomial(weights, n, replacement=True, generator=gen)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast(device_type="cpu", enabled=False)


def train_one_epoch(
    model: nn.Module,
    data: DeviceData,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    gen: torch.Generator,
    progress: Any = None,
) -> dict[str, float]:
    """One pass over a class-weighted draw of the training crops; returns loss/accuracy/lr."""
    device = data.images.device
    model.train()
    mean, std = _mean_std(model, device)
    aug_cfg = AugmentConfig(mode=cfg.augment)
    order = sample_epoch_indices(data.labels, cfg.class_weighted_sampling, gen)
    # Drop a last batch of one: BatchNorm cannot train on a single image.
    n_batches = max(1, len(order) // cfg.batch_size)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for b in range(n_batches):
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = augment_batch(data.images[idx].float() / 255.0, aug_cfg, gen)
        x = (x - mean) / std
        if cfg.channels_last and device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = data.labels[idx]
        with _autocast(device, cfg.amp):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(idx)
        if progress is not None:
            progress.update(1)
            if b % 20 == 0 or b == n_batches - 1:
                # .item() syncs the GPU; do it rarely.
                progress.set_postfix(
                    loss=f"{(loss_sum / seen).item():.3f}", acc=f"{correct.item() / seen:.3f}"
                )
    return {
        "train_loss": float((loss_sum / seen).item()),
        "train_accuracy": float(correct.item() / seen),
        "lr": float(optimizer.param_groups[0]["lr"]),
    }


def exact_fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Full float32 on a GPU (no TF32 convolutions), so scores there match a CPU's to
    float32 rounding; nothing to change on a CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       deterministic=cudnn.deterministic, allow_tf32=False)  # fmt: skip


@torch.no_grad()
def predict_logits(
    model: nn.Module, images_u8: torch.Tensor, batch_size: int = 512, amp: bool = False
) -> np.ndarray:
    """Logits for uint8 (N,3,H,W) crops on the model's device, in eval mode."""
    model.eval()
    device = images_u8.device
    mean, std = _mean_std(model, device)
    out = []
    for start in range(0, images_u8.shape[0], batch_size):
        x = normalise(images_u8[start : start + batch_size], mean, std)
        with _autocast(device, amp):
            out.append(model(x).float().cpu())
    if not out:
        return np.zeros((0, pain_labels.NUM_CLASSES), np.float32)
    return torch.cat(out).numpy()


def evaluate(
    model: nn.Module, data: DeviceData, cfg: TrainConfig | None = None, temperature: float = 1.0
) -> dict[str, Any]:
    """Loss, accuracy, macro-F1 and ECE on a partition; also returns its logits."""
    cfg = cfg or TrainConfig()
    logits = predict_logits(model, data.images, cfg.eval_batch_size, amp=cfg.amp)
    labels = data.labels.cpu().numpy()
    loss = float(
        F.cross_entropy(
            torch.from_numpy(logits), torch.from_numpy(labels), label_smoothing=cfg.label_smoothing
        ).item()
    )
    metrics = classification_metrics(labels, softmax(logits, temperature))
    return {
        "loss": loss,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "ece": metrics["ece"],
        "metrics": metrics,
        "logits": logits,
    }


# --- checkpoints (safetensors only: no pickle anywhere) -------------------------------------


def _state_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    base = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return {k: v.detach().to("cpu").contiguous() for k, v in base.state_dict().items()}


def record_training_priors(model: nn.Module, labels: Any, class_weighted_sampling: bool) -> None:
    """Put the training crops' class frequencies and the priors the model is fitted under
    on ``model``'s config, so its checkpoint records them (the torch backend and the ONNX
    export correct probabilities to a ward's prevalence from them)."""
    from painmon.core.research.calibration import training_priors

    base = getattr(model, "_orig_mod", model)
    natural, trained = training_priors(labels, base.pretrained_cfg.num_classes,
                                       class_weighted_sampling)  # fmt: skip
    base.pretrained_cfg = dataclasses.replace(
        base.pretrained_cfg, class_prevalence=natural, trained_prior=trained
    )


def checkpoint_meta(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """What a checkpoint's JSON sidecar needs to rebuild ``model`` and preprocess its input.

    ``extra`` adds provenance (data hash, subjects, epoch...); its ``temperature`` and
    ``preprocessing`` (the crop framing) are part of the model config and are validated.
    """
    cfg = getattr(model, "_orig_mod", model).pretrained_cfg
    cfg = dataclasses.replace(
        cfg,
        temperature=extra.pop("temperature", cfg.temperature),
        crop=extra.pop("preprocessing", None) or cfg.crop,
    )
    return {**cfg.to_checkpoint_meta(), **extra}


def save_checkpoint(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """Write ``path`` (.safetensors) and its ``.json`` sidecar atomically."""
    from safetensors.torch import save_file

    from painmon.core.util.fileio import sha256_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(_state_for_save(model), str(tmp))
    meta = dict(meta, weights_file=path.name, weights_sha256=sha256_file(path))
    atomic_write_json(path.with_suffix(".json"), meta)


def _read_verified(path: Path, expected: Any, recorded_in: str, remedy: str) -> bytes:
    """The bytes of ``path``, refused unless their SHA-256 is ``expected`` (one read: the
    bytes checked are the bytes loaded)."""
    if not is_sha256_hex(expected):
        raise InvalidInputError(
            f"{path} cannot be verified: {recorded_in} records no valid weights_sha256 "
            f"(got {expected!r}); {remedy}"
        )
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise InvalidInputError(
            f"{path} does not match the SHA-256 recorded in {recorded_in}: the file is "
            f"corrupt or was replaced; {remedy}"
        )
    return data


def _read_json(path: Path, remedy: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path} is not valid JSON ({exc}); {remedy}") from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a JSON object; {remedy}")
    return data


def _load_tensors(data: bytes, path: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state = load(data)
    except SafetensorError as exc:
        raise InvalidInputError(f"checkpoint {path} is unreadable ({exc})") from exc
    return {k: v.to(device) for k, v in state.items()}


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model from ``best.safetensors`` + ``best.json`` (or a run folder).

    The weights must match the ``weights_sha256`` recorded in the JSON sidecar; a sidecar
    without one is refused (an unverifiable checkpoint must not reach an export).
    """
    from painmon.models import create_model

    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (a run folder holds best.safetensors and best.json; "
            "train one with `painmon train`)"
        )
    remedy = "retrain or restore the run folder"
    meta = _read_json(meta_path, remedy)
    data = _read_verified(path, meta.get("weights_sha256"), meta_path.name, remedy)
    try:
        cfg = PainModelCfg.from_checkpoint_meta(meta)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{meta_path}: {exc}") from exc
    model = create_model(cfg.architecture, **cfg.model_kwargs)
    # The checkpoint's config, not the code's defaults: preprocessing travels with the weights.
    model.pretrained_cfg = cfg
    try:
        model.load_state_dict(_load_tensors(data, path, device))
    except RuntimeError as exc:  # weights of another model or options than best.json says
        raise InvalidInputError(
            f"checkpoint {path} does not fit the {cfg.architecture!r} model its "
            f"{meta_path.name} describes ({str(exc).splitlines()[0]}); {remedy}"
        ) from exc
    model.to(device).eval()
    return model, meta


RESUME_WEIGHTS = "last.safetensors"
RESUME_STATE = "last.json"
_RESUME_KEYS = ("epoch", "history", "best", "since_best")
# Settings --resume may change: how long and where to train, not what is trained.
RESUMABLE_SETTINGS = frozenset(
    {"epochs", "patience", "device", "compile", "eval_batch_size", "deterministic", "amp",
     "channels_last"}
)  # fmt: skip


def resolved_model_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The model's options with defaults filled in (builds it on the meta device: no weights)."""
    from painmon.core.util.model_cfg import thaw
    from painmon.models import create_model

    with torch.device("meta"):
        model = create_model(cfg.model, **cfg.model_kwargs)
    return thaw(model.pretrained_cfg.model_kwargs)


def resume_identity(
    cfg: TrainConfig,
    data_sha256: Any = None,
    train_subjects: Sequence[str] | None = None,
    val_subjects: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What a run must keep to be resumed: its recipe (the model with its options, the
    training seed, the optimiser and augmentation settings), its crops and its subjects.

    Recorded in ``last.json``; ``--resume`` refuses a run whose identity differs, since the
    saved weights would continue on other data, other people or another network."""
    config = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_SETTINGS}
    config["model_kwargs"] = resolved_model_kwargs(cfg)

    def people(subjects: Sequence[str] | None) -> list[str] | None:
        return None if subjects is None else sorted({str(s) for s in subjects})

    identity = {
        "config": config,
        "data_sha256": data_sha256 if isinstance(data_sha256, str) else None,
        "train_subjects": people(train_subjects),
        "val_subjects": people(val_subjects),
    }
    return json.loads(json.dumps(identity, default=str))


def _legacy_identity(out: Path) -> dict[str, Any]:
    """The identity of a run whose ``last.json`` predates the record: from its
    ``config.json`` and ``best.json`` (what is missing there is not compared)."""
    recorded: dict[str, Any] = {}
    config_path = out / "config.json"
    if config_path.is_file():
        config = _read_json(config_path, "restore it or train into a new folder")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        try:
            cfg = TrainConfig.from_dict({k: v for k, v in config.items() if k in known})
            recorded["config"] = resume_identity(cfg)["config"]
        except (InvalidInputError, TypeError, ValueError):
            log.warning("%s cannot be read as a training config; not compared", config_path)
    best = out / "best.json"
    if best.is_file():
        meta = _read_json(best, "restore it or train into a new folder")
        for key in ("data_sha256", "train_subjects", "val_subjects"):
            if meta.get(key) is not None:
                value = meta[key]
                recorded[key] = sorted(value) if isinstance(value, list) else value
    return recorded


def _identity_changes(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """What differs between a run's recorded identity and a resume's, in words."""
    changes = []
    old_cfg, new_cfg = recorded.get("config"), wanted.get("config") or {}
    if isinstance(old_cfg, Mapping):
        for key in sorted(set(old_cfg) | set(new_cfg)):
            if old_cfg.get(key) != new_cfg.get(key):
                changes.append(f"{key} {old_cfg.get(key)!r} -> {new_cfg.get(key)!r}")
    old_sha, new_sha = recorded.get("data_sha256"), wanted.get("data_sha256")
    if old_sha and new_sha and old_sha != new_sha:
        changes.append(f"crops data_sha256 {str(old_sha)[:12]}… -> {str(new_sha)[:12]}…")
    for key, name in (("train_subjects", "training"), ("val_subjects", "validation")):
        old, new = recorded.get(key), wanted.get(key)
        if isinstance(old, list) and isinstance(new, list) and set(old) != set(new):
            added, dropped = sorted(set(new) - set(old)), sorted(set(old) - set(new))
            changes.append(
                f"{name} subjects differ ({len(added)} added, e.g. {added[:3]}; "
                f"{len(dropped)} dropped, e.g. {dropped[:3]})"
            )
    return changes


def check_resume(out_dir: str | Path, identity: Mapping[str, Any]) -> dict[str, Any]:
    """The ``last.json`` state of the run in ``out_dir``, refused (before anything is
    written) when there is none or when the run was trained with another recipe, other
    crops or other subjects than ``identity`` (see :func:`resume_identity`)."""
    out = Path(out_dir)
    state_path = out / RESUME_STATE
    if not state_path.is_file():
        raise FileNotFoundError(f"nothing to resume in {out}: {RESUME_STATE} is missing")
    remedy = (
        "start again without --resume (or into a new folder), or restore "
        f"{RESUME_WEIGHTS} and {RESUME_STATE} from a backup"
    )
    state = _read_json(state_path, remedy)
    recorded = state.get("identity")
    if not isinstance(recorded, Mapping):
        recorded = _legacy_identity(out)
    changes = _identity_changes(recorded, identity)
    if changes:
        shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4
                                           else "")  # fmt: skip
        raise InvalidInputError(
            f"cannot resume {out}: it was trained with other settings, data or subjects "
            f"({shown}); resume with the run's own settings, data and split (its config.json "
            "and splits.json), or train into a new folder"
        )
    return state


def _save_resume_state(model, optimizer, out_dir: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from painmon.core.util.fileio import sha256_file

    tensors = {f"model.{k}": v for k, v in _state_for_save(model).items()}
    opt_state = optimizer.state_dict()
    for pid, pstate in opt_state["state"].items():
        for key, value in pstate.items():
            tensors[f"opt.{pid}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    weights = out_dir / RESUME_WEIGHTS
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp))
    # --resume checks the weights against this hash before loading them.
    state = dict(state, weights_file=weights.name, weights_sha256=sha256_file(weights))
    atomic_write_json(out_dir / RESUME_STATE, state)


def _load_resume_state(model, optimizer, out_dir: Path, device: torch.device) -> dict[str, Any]:
    weights = out_dir / RESUME_WEIGHTS
    state_path = out_dir / RESUME_STATE
    remedy = (
        "start again without --resume (or into a new folder), or restore "
        f"{RESUME_WEIGHTS} and {RESUME_STATE} from a backup"
    )
    state = _read_json(state_path, remedy)
    missing = [k for k in _RESUME_KEYS if k not in state]
    if missing:
        raise InvalidInputError(f"{state_path} lacks {', '.join(missing)}; {remedy}")
    if not weights.is_file():
        raise InvalidInputError(f"{weights} is missing, so training cannot resume; {remedy}")
    data = _read_verified(weights, state.get("weights_sha256"), state_path.name, remedy)
    tensors = _load_tensors(data, weights, device)
    base = getattr(model, "_orig_mod", model)
    try:
        base.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as exc:
        raise InvalidInputError(
            f"{weights} does not fit model {base.pretrained_cfg.architecture!r} "
            f"({str(exc).splitlines()[0]}); {remedy}"
        ) from exc
    opt_state = optimizer.state_dict()
    new_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            new_state.setdefault(int(pid), {})[name] = value
    opt_state["state"] = new_state
    optimizer.load_state_dict(opt_state)
    return state


# --- the loop -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    best_epoch: int
    best_val_macro_f1: float
    temperature: float
    ece_before: float
    ece_after: float
    epochs_run: int
    stopped: str  # "completed", "early_stopping" or "interrupted"
    seconds: float
    # The calibrated probabilities (N,5) of the best checkpoint on the validation crops, in
    # their order: what calibration computed, so CV need not score them again.
    val_probs: np.ndarray | None = field(default=None, repr=False, compare=False)


def fit(
    cfg: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    out_dir: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
    train_subjects: Sequence[str] | None = None,
    val_subjects: Sequence[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    init_weights: Mapping[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on uint8 NHWC crops, keep the best validation macro-F1 checkpoint,
    fit temperature scaling on the validation crops, and write the run folder.

    ``provenance`` (data hash, preprocessing, subjects, splits) goes into ``best.json``.
    With ``train_subjects``/``val_subjects`` (one per crop) a person in both is refused.
    ``init_weights`` (a state dict of ``cfg.model``) replace the fresh initial weights:
    fine-tuning. Which run they came from belongs in ``provenance`` (``init_from``).
    Ctrl-C stops cleanly after writing what the best epoch so far earned.
    """
    from painmon.core.research.seeding import (
        resolve_device,
        seed_everything,
        write_environment_manifest,
    )
    from painmon.core.util.progress import progress_bar
    from painmon.models import create_model

    if train_subjects is not None and val_subjects is not None:
        check_partitions_disjoint({"train": train_subjects, "val": val_subjects})
    out = Path(out_dir)
    provenance = dict(provenance or {})
    if len(val_labels) == 0 or len(train_labels) == 0:
        raise InvalidInputError(
            "training needs crops in both the training and the validation partition"
        )
    device = resolve_device(cfg.device)
    identity = resume_identity(cfg, provenance.get("data_sha256"), train_subjects, val_subjects)
    if resume:  # before anything is written: another run's weights must not continue here
        check_resume(out, identity)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed, cfg.deterministic)
    atomic_write_json(out / "config.json", dict(cfg.to_dict(), resolved_device=str(device)))
    write_environment_manifest(out / "env.json")

    model = create_model(cfg.model, **cfg.model_kwargs).to(device)
    if init_weights is not None:
        try:
            model.load_state_dict({k: v.to(device) for k, v in init_weights.items()})
        except RuntimeError as exc:
            raise InvalidInputError(
                f"the initial weights do not fit model {cfg.model!r} ({str(exc).splitlines()[0]})"
            ) from exc
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train = DeviceData.from_numpy(train_images, train_labels, device)
    val = DeviceData.from_numpy(val_images, val_labels, device)
    steps_per_epoch = max(1, len(train) // cfg.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg)
    )
    run_model = _maybe_compile(model, cfg, device)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)

    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_macro_f1": -1.0}
    since_best = 0
    start_epoch = 1
    if resume:
        state = _load_resume_state(model, optimizer, out, device)
        history, best, since_best = state["history"], state["best"], state["since_best"]
        start_epoch = state["epoch"] + 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_factor(step, steps_per_epoch, cfg),
            last_epoch=state["epoch"] * steps_per_epoch - 1,
        )
        gen.manual_seed(cfg.seed + state["epoch"])
        log.info("resuming %s at epoch %d", out, start_epoch)

    record_training_priors(model, train_labels, cfg.class_weighted_sampling)
    meta_base = checkpoint_meta(model, **provenance)
    stopped = "completed"
    t_start = time.perf_counter()
    epoch = start_epoch - 1
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            bar = progress_bar(
                total=steps_per_epoch,
                desc=f"epoch {epoch}/{cfg.epochs}",
                leave=False,
                enabled=progress,
                unit="batch",
            )
            try:
                row = train_one_epoch(run_model, train, optimizer, scheduler, cfg, gen, bar)
            finally:
                bar.close()
            val_result = evaluate(model, val, cfg)
            row = {
                "epoch": epoch,
                **row,
                "val_loss": val_result["loss"],
                "val_accuracy": val_result["accuracy"],
                "val_macro_f1": val_result["macro_f1"],
                "val_ece": val_result["ece"],
                "seconds": time.perf_counter() - t0,
            }
            # Checkpoint first, then `best`, then the history row: an interrupt at any point
            # leaves a best.safetensors for every epoch the history (what a watcher sees) shows.
            if row["val_macro_f1"] > best["val_macro_f1"]:
                save_checkpoint(
                    model,
                    out / "best.safetensors",
                    dict(
                        meta_base,
                        epoch=epoch,
                        temperature=1.0,
                        metrics={
                            "val_accuracy": row["val_accuracy"],
                            "val_macro_f1": row["val_macro_f1"],
                        },
                    ),
                )
                best = {"epoch": epoch, "val_macro_f1": row["val_macro_f1"]}
                since_best = 0
            else:
                since_best += 1
            history.append(row)
            _write_history(out / "history.csv", history)
            if progress:
                log.info(
                    "epoch %d: loss %.3f val acc %.3f macro-F1 %.3f (%.1fs)",
                    epoch,
                    row["train_loss"],
                    row["val_accuracy"],
                    row["val_macro_f1"],
                    row["seconds"],
                )
            _save_resume_state(
                model,
                optimizer,
                out,
                {
                    "epoch": epoch,
                    "history": history,
                    "best": best,
                    "since_best": since_best,
                    "identity": identity,
                },
            )
            if since_best >= cfg.patience:
                stopped = "early_stopping"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        log.warning("training interrupted at epoch %d; keeping the best checkpoint", epoch)
    if best["epoch"] == 0:
        if stopped == "interrupted":  # Ctrl-C before anything was kept: the command stops
            raise KeyboardInterrupt(f"{out}: interrupted before the first epoch finished")
        raise RuntimeError(
            "training stopped before the first epoch finished: no checkpoint written"
        )

    calib, val_probs = finish_run(out, cfg, val, stopped, len(train), device)
    return TrainResult(
        out_dir=out,
        best_epoch=int(best["epoch"]),
        best_val_macro_f1=float(best["val_macro_f1"]),
        temperature=float(calib.temperature),
        ece_before=float(calib.ece_before),
        ece_after=float(calib.ece_after),
        epochs_run=len(history),
        stopped=stopped,
        seconds=time.perf_counter() - t_start,
        val_probs=val_probs,
    )


def finish_run(
    out: Path, cfg: TrainConfig, val: DeviceData, stopped: str, n_train: int, device: torch.device
) -> tuple[CalibrationResult, np.ndarray]:
    """Temperature-scale ``out/best.safetensors`` on the validation crops and write ``card.md``.

    Shared by :func:`fit` and the stacked engine, so both leave the same run folder. Returns
    the calibration and the calibrated validation probabilities (in float32, as
    :func:`~painmon.core.research.experiment.predict_run` scores).
    """
    best_model, meta = load_checkpoint(out / "best.safetensors", device)
    with exact_fp32(device):
        val_logits = predict_logits(best_model, val.images, cfg.eval_batch_size)
    calib = calibrate(val_logits, val.labels.cpu().numpy())
    meta.update(
        checkpoint_meta(best_model, temperature=calib.temperature),
        calibration=dataclasses.asdict(calib),
    )
    meta.pop("weights_file", None)
    meta.pop("weights_sha256", None)
    save_checkpoint(best_model, out / "best.safetensors", meta)
    _write_card(out, cfg, meta, calib, stopped, n_train, len(val))
    return calib, softmax(val_logits, calib.temperature)


def _maybe_compile(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    if cfg.compile == "none":
        return model
    if cfg.compile == "reduce-overhead" and device.type != "cuda":
        raise InvalidInputError(
            "compile mode 'reduce-overhead' uses CUDA graphs and needs a CUDA device"
        )
    return torch.compile(model, mode=cfg.compile)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    # Bytes, so the csv module's \r\n line ends reach the file untranslated on every OS.
    atomic_write_bytes(path, text.getvalue().encode())


def _write_card(
    out: Path, cfg: TrainConfig, meta: dict, calib, stopped: str, n_train: int, n_val: int
) -> None:
    lines = [
        f"# Model card — {cfg.model} (run `{out.name}`)",
        "",
        f"- Intended use: {meta.get('intended_use', DEFAULT_INTENDED_USE)}",
        f"- Training data: {meta.get('dataset', 'unspecified')} "
        f"(data SHA-256 `{meta.get('data_sha256', '?')}`)",
        f"- Crops: {n_train} training, {n_val} validation; "
        "subject-wise split (no person in two partitions)",
        f"- Labels: PSPI → class {meta['pspi_mapping']}; names {', '.join(meta['class_names'])}",
        f"- Recipe: AdamW lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}, label smoothing "
        f"{cfg.label_smoothing:g}, {cfg.warmup_epochs}-epoch warm-up + cosine to {cfg.min_lr:g}, "
        f"batch {cfg.batch_size}, augment `{cfg.augment}`, seed {cfg.seed}",
        *(
            [
                f"- Initialised from: run `{init['run']}` (best epoch {init['epoch']}, weights "
                f"SHA-256 `{init['weights_sha256'][:16]}…`), then trained as below"
            ]
            if (init := meta.get("init_from"))
            else []
        ),
        f"- Stopped: {stopped} after best epoch {meta['epoch']}",
        f"- Validation: accuracy {meta['metrics']['val_accuracy']:.3f}, macro-F1 "
        f"{meta['metrics']['val_macro_f1']:.3f}",
        f"- Temperature {calib.temperature:.3f}: ECE {calib.ece_before:.3f} → "
        f"{calib.ece_after:.3f} on the validation subjects",
        "",
        "Numbers come from subject-wise evaluation on the data named above and say nothing about",
        "other populations, cameras or clinical settings.",
    ]
    (out / "card.md").write_text("\n".join(lines) + "\n")
