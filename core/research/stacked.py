"""Many models trained at once in one process: stacked parameters, one vmapped step.

``painmon cv --engine stacked`` trains every (seed, fold) model of a cross-validation
together: each member's weights are one slice of stacked tensors
(``torch.func.stack_module_state``), one ``torch.func.vmap`` forward runs all members on
their own batches, one AdamW updates every slice. On a GPU the members share kernels (a
convolution over M members is one grouped convolution) instead of queueing M processes'
small kernels, and the whole training step is captured once as a CUDA graph and replayed.
``ops="bmm"`` (``--engine stacked-bmm``) computes the same step without vmap: the members'
activations as one channels-last batch with their channels side by side, each convolution one
batched GEMM over the members, batch norm and pooling one kernel for all of them
(:mod:`~painmon.core.research.member_batched`).

Same recipe as :func:`~painmon.core.research.train.fit`: the same initial weights for a
seed, AdamW settings, label smoothing, warm-up + cosine schedule, class-balanced sampling
per member, augmentation, bf16 autocast, per-member early stopping on validation macro-F1,
temperature scaling and run folder. What differs:

- every member runs the same number of steps per epoch, the largest member's
  ``len(train) // batch_size`` (folds differ by a few per cent); a smaller member draws
  more than one epoch's worth of its own samples. ``config.json`` records it as
  ``stacked_steps_per_epoch``;
- augmentation and dropout draw from the global generator, not the member's own sampling
  generator (a CUDA graph replays only the global generator's draws);
- an early-stopped member keeps being updated in the stack (it shares the kernels), but its
  best weights are kept and its later epochs are neither scored nor written;
- no ``--resume``: the run folders hold no ``last.safetensors``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from painmon.core.research.augment import AugmentConfig, augment_batch
from painmon.core.research.calibration import softmax
from painmon.core.research.member_batched import (
    STACKED_OPS,
    UnsupportedModelError,
    batched_forward,
    check_supported,
)
from painmon.core.research.metrics import classification_metrics
from painmon.core.research.splits import check_partitions_disjoint
from painmon.core.research.train import (
    DeviceData,
    TrainConfig,
    TrainResult,
    _write_history,
    checkpoint_meta,
    finish_run,
    lr_factor,
    record_training_priors,
    sample_epoch_indices,
    save_checkpoint,
)
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.fileio import atomic_write_json

log = logging.getLogger(__name__)

# Eager steps before a CUDA graph is captured (lazy cuDNN/cuBLAS set-up, optimizer state).
GRAPH_WARMUP_STEPS = 3


@dataclass(frozen=True, eq=False)
class StackedMember:
    """One model of a stacked run: its seed, its crops and its run folder (as ``fit()``'s)."""

    seed: int
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    out_dir: Path
    provenance: Mapping[str, Any] | None = None
    train_subjects: Sequence[str] | None = None
    val_subjects: Sequence[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if len(self.train_labels) == 0 or len(self.val_labels) == 0:
            raise InvalidInputError(
                f"{self.out_dir}: training needs crops in both the training and the "
                "validation partition"
            )
        if len(self.train_images) != len(self.train_labels) or len(self.val_images) != len(
            self.val_labels
        ):
            raise InvalidInputError(f"{self.out_dir}: crops and labels differ in length")


def stacked_base(cfg: TrainConfig, ops: str = "vmap") -> torch.nn.Module:
    """The members' shared structure on the meta device (the weights live in stacked tensors).

    Its BatchNorm layers normalise in float32: under bf16 autocast a vmapped batch norm
    refuses a bf16 input with float32 stacked statistics (an unbatched one accepts them).
    With ``ops="bmm"`` a network the batched GEMMs cannot compute is refused here, before
    anything is written.
    """
    from painmon.models import create_model

    with torch.device("meta"):
        base = create_model(cfg.model, **cfg.model_kwargs)
    if ops == "bmm":
        try:
            check_supported(base)
        except UnsupportedModelError as exc:
            raise InvalidInputError(
                f"{cfg.model} cannot train with batched GEMMs ({exc}); use --engine stacked"
            ) from exc
    for module in base.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(_float_input)
    return base


def _float_input(module: torch.nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def stacked_forward(base: torch.nn.Module, params, buffers, x: torch.Tensor) -> torch.Tensor:
    """Logits (M, B, C) of M stacked members on their own batches ``x`` (M, B, 3, H, W)."""

    def one(p, b, xi):
        return functional_call(base, (p, b), (xi,))

    return vmap(one, randomness="different")(params, buffers, x)


def stacked_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over members of each member's mean cross-entropy, and the per-member means.

    A sum, not a mean: each member's gradient is then exactly its own, unscaled.
    """
    m, b = labels.shape
    per_crop = F.cross_entropy(
        logits.float().flatten(0, 1),
        labels.flatten(),
        reduction="none",
        label_smoothing=label_smoothing,
    )
    per_member = per_crop.view(m, b).mean(1)
    return per_member.sum(), per_member


def batch_layout(x: torch.Tensor, members: int) -> torch.Tensor:
    """(M*B, 3, H, W) -> (M, B, 3, H, W), NCHW.

    Not channels-last: under vmap, CUDA batch norm cannot query a channels-last input's
    layout ("NYI: querying is_contiguous inside of vmap for memory_format other than
    torch.contiguous_format", torch 2.11 on an H200), so the stacked engine stays NCHW.
    """
    n, c, h, w = x.shape
    return x.view(members, n // members, c, h, w)


def _autocast(device: torch.device, enabled: bool):
    # No weight-cast cache: a cached cast would be captured once and go stale in a CUDA graph.
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False)
    return torch.autocast(device_type="cpu", enabled=False)


def _epoch_order(
    labels: torch.Tensor, need: int, weighted: bool, gen: torch.Generator
) -> torch.Tensor:
    """``need`` sample indices: successive epoch draws of ``sample_epoch_indices``, cut."""
    parts, have = [], 0
    while have < need:
        order = sample_epoch_indices(labels, weighted, gen)
        parts.append(order)
        have += len(order)
    return torch.cat(parts)[:need]


def _val_row(logits: np.ndarray, labels: np.ndarray, cfg: TrainConfig) -> dict[str, float]:
    """What ``train.evaluate()`` reports for a partition, from its logits."""
    loss = F.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(labels), label_smoothing=cfg.label_smoothing
    )
    metrics = classification_metrics(labels, softmax(logits, 1.0))
    return {
        "val_loss": float(loss.item()),
        "val_accuracy": metrics["accuracy"],
        "val_macro_f1": metrics["macro_f1"],
        "val_ece": metrics["ece"],
    }


class StackedTrainer:
    """Stacked weights, one AdamW, device-resident crops and one training step.

    The step reads its batch indices and its learning rate through device counters, so the
    eager step and its CUDA-graph capture are the same code.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        models: Sequence[torch.nn.Module],
        base: torch.nn.Module,
        members: Sequence[StackedMember],
        device: torch.device,
        steps_per_epoch: int,
        graphs: bool,
        ops: str = "vmap",
    ) -> None:
        self.cfg = cfg
        self.forward = batched_forward if ops == "bmm" else stacked_forward
        self.device = device
        self.members = members
        self.m = len(members)
        self.b = cfg.batch_size
        self.steps_per_epoch = steps_per_epoch
        self.base = base
        self.params, self.buffers = stack_module_state(list(models))
        self.aug_cfg = AugmentConfig(mode=cfg.augment)
        pcfg = models[0].pretrained_cfg
        self.mean = torch.tensor(pcfg.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(pcfg.std, device=device).view(1, 3, 1, 1)

        # Every member's crops in one device tensor; member i's start at offsets[i].
        train = [DeviceData.from_numpy(m.train_images, m.train_labels, device) for m in members]
        self.train_images = torch.cat([d.images for d in train])
        self.train_labels = torch.cat([d.labels for d in train])
        sizes = [len(d) for d in train]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
        self.member_labels = [
            self.train_labels[o : o + n] for o, n in zip(self.offsets, sizes, strict=True)
        ]
        self.val = [DeviceData.from_numpy(m.val_images, m.val_labels, device) for m in members]
        self.val_images = torch.cat([d.images for d in self.val])
        val_sizes = [len(d) for d in self.val]
        val_offsets = np.concatenate([[0], np.cumsum(val_sizes)[:-1]])
        longest = max(val_sizes)
        # Shorter validation sets wrap round to their own first crops; the pad is cut off.
        self.val_sizes = val_sizes
        self.val_index = torch.as_tensor(
            np.stack(
                [o + np.arange(longest) % n for o, n in zip(val_offsets, val_sizes, strict=True)]
            ),
            dtype=torch.int64,
            device=device,
        )
        self.gens = []
        for member in members:
            gen = torch.Generator(device=device)
            gen.manual_seed(member.seed)
            self.gens.append(gen)

        # Static state the step reads and writes (fixed addresses for a CUDA graph).
        self.index = torch.zeros(
            (steps_per_epoch, self.m, self.b), dtype=torch.int64, device=device
        )
        self.epoch_step = torch.zeros(1, dtype=torch.int64, device=device)
        self.global_step = torch.zeros(1, dtype=torch.int64, device=device)
        total_steps = cfg.epochs * steps_per_epoch
        self.lr_table = torch.tensor(
            [cfg.lr * lr_factor(s, steps_per_epoch, cfg) for s in range(total_steps)],
            dtype=torch.float32,
            device=device,
        )
        self.lr = torch.tensor(cfg.lr, dtype=torch.float32, device=device)
        cuda = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()),
            lr=self.lr,
            weight_decay=cfg.weight_decay,
            fused=True if cuda else None,
            foreach=None if cuda else False,
            capturable=cuda,
        )
        self.loss_sum = torch.zeros(self.m, dtype=torch.float32, device=device)
        self.correct = torch.zeros(self.m, dtype=torch.int64, device=device)

        self.graph: torch.cuda.CUDAGraph | None = None
        self.want_graph = graphs and cuda
        self.side_stream = torch.cuda.Stream(device) if self.want_graph else None
        self.eager_steps = 0

    # --- one training step: the same code eager and captured --------------------------

    def train_step(self) -> None:
        m, b = self.m, self.b
        idx = self.index.index_select(0, self.epoch_step).view(m * b)
        self.lr.copy_(self.lr_table.index_select(0, self.global_step).view(()))
        x = self.train_images.index_select(0, idx).float() / 255.0
        y = self.train_labels.index_select(0, idx).view(m, b)
        x = augment_batch(x, self.aug_cfg, None)
        x = batch_layout((x - self.mean) / self.std, m)
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, self.cfg.amp):
            logits = self.forward(self.base, self.params, self.buffers, x)
        total, per_member = stacked_loss(logits, y, self.cfg.label_smoothing)
        total.backward()
        self.optimizer.step()
        self.loss_sum.add_(per_member.detach() * b)
        self.correct.add_((logits.detach().argmax(-1) == y).sum(1))
        self.epoch_step.add_(1)
        self.global_step.add_(1)

    def _capture(self) -> bool:
        """Capture :meth:`train_step` as a CUDA graph; on failure warn and stay eager."""
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize(self.device)
            # Gradients set to None: the captured backward allocates them in the graph's pool.
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self.train_step()
        except RuntimeError as exc:
            log.warning(
                "CUDA graph capture of the stacked training step failed (%s: %s); "
                "training on without graphs",
                type(exc).__name__,
                exc,
            )
            self.want_graph = False
            self.side_stream = None
            self.optimizer.zero_grad(set_to_none=True)
            return False
        self.graph = graph
        log.info("captured the stacked training step as a CUDA graph")
        return True

    def run_step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        if self.want_graph and self.eager_steps >= GRAPH_WARMUP_STEPS and self._capture():
            # Capturing records the step without running it.
            self.graph.replay()
            return
        if self.side_stream is not None:
            # Warm-up before a capture runs on a side stream (torch.cuda.graph's recipe).
            self.side_stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.side_stream):
                self.train_step()
            torch.cuda.current_stream(self.device).wait_stream(self.side_stream)
        else:
            self.train_step()
        self.eager_steps += 1

    # --- epochs -------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> list[dict[str, float]]:
        """One epoch of ``steps_per_epoch`` steps for every member; per-member loss/accuracy."""
        s, b = self.steps_per_epoch, self.b
        orders = [
            _epoch_order(labels, s * b, self.cfg.class_weighted_sampling, gen).view(s, b) + off
            for labels, gen, off in zip(self.member_labels, self.gens, self.offsets, strict=True)
        ]
        self.index.copy_(torch.stack(orders, 1))
        self.epoch_step.zero_()
        self.global_step.fill_((epoch - 1) * s)
        self.loss_sum.zero_()
        self.correct.zero_()
        self.base.train()
        for _ in range(s):
            self.run_step()
        seen = s * b
        loss = (self.loss_sum / seen).cpu().tolist()
        correct = self.correct.cpu().tolist()
        # fit() reports the LR after the epoch's last scheduler step.
        lr = self.cfg.lr * lr_factor(epoch * s, s, self.cfg)
        return [
            {"lr": lr, "train_loss": float(loss[i]), "train_accuracy": correct[i] / seen}
            for i in range(self.m)
        ]

    @torch.no_grad()
    def val_logits(self) -> list[np.ndarray]:
        """Every member's logits on its own validation crops (eval mode, vmapped)."""
        self.base.eval()
        chunks = []
        longest = self.val_index.shape[1]
        for start in range(0, longest, self.cfg.eval_batch_size):
            idx = self.val_index[:, start : start + self.cfg.eval_batch_size]
            x = self.val_images.index_select(0, idx.flatten()).float() / 255.0
            x = batch_layout((x - self.mean) / self.std, self.m)
            with _autocast(self.device, self.cfg.amp):
                logits = self.forward(self.base, self.params, self.buffers, x)
            chunks.append(logits.float().cpu())
        self.base.train()
        logits = torch.cat(chunks, 1).numpy()
        return [logits[i, :n] for i, n in enumerate(self.val_sizes)]

    def member_state(self, i: int, source: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in source.items()}


def init_member_models(
    cfg: TrainConfig, seeds: Sequence[int], device: torch.device
) -> list[torch.nn.Module]:
    """One fresh model per seed, seeded exactly as ``fit()`` seeds: the same initial weights."""
    from painmon.core.research.seeding import seed_everything
    from painmon.models import create_model

    models = []
    for seed in seeds:
        seed_everything(seed, cfg.deterministic)
        models.append(create_model(cfg.model, **cfg.model_kwargs).to(device))
    return models


def fit_stacked(
    cfg: TrainConfig,
    members: Sequence[StackedMember],
    *,
    progress: bool = True,
    graphs: bool | None = None,
    resume: bool = False,
    ops: str = "vmap",
) -> list[TrainResult]:
    """Train every member together (one process, stacked weights) and write each run folder.

    Each member's folder is what :func:`~painmon.core.research.train.fit` writes for its
    seed and crops (no ``last.*``). ``graphs`` (default: on for CUDA) captures the training
    step as a CUDA graph; a capture that fails is logged and training goes on eagerly.
    ``ops`` is how the members' layers run: ``"vmap"`` (``torch.func.vmap``, grouped
    convolutions) or ``"bmm"`` (batched GEMMs, channels-last; the zoo's networks only).
    """
    from painmon.core.research.seeding import resolve_device, write_environment_manifest
    from painmon.core.util.progress import progress_bar
    from painmon.models import create_model

    t_called = time.perf_counter()
    if resume:
        raise InvalidInputError(
            "the stacked engine cannot resume; train again, or use --engine processes to resume"
        )
    if ops not in STACKED_OPS:
        raise InvalidInputError(f"stacked ops must be one of {', '.join(STACKED_OPS)}, got {ops!r}")
    members = list(members)
    if not members:
        raise InvalidInputError("stacked training needs at least one member")
    outs = [m.out_dir.resolve() for m in members]
    if len(set(outs)) != len(outs):
        raise InvalidInputError("every stacked member needs its own run folder")
    for m in members:
        if m.train_subjects is not None and m.val_subjects is not None:
            check_partitions_disjoint({"train": m.train_subjects, "val": m.val_subjects})
    if cfg.compile != "none":
        log.info("the stacked engine captures CUDA graphs itself: compile=%s ignored", cfg.compile)

    base = stacked_base(cfg, ops)
    device = resolve_device(cfg.device)
    steps_per_epoch = max(1, max(len(m.train_labels) // cfg.batch_size for m in members))
    configs = [dataclasses.replace(cfg, seed=m.seed) for m in members]
    for m, member_cfg in zip(members, configs, strict=True):
        m.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            m.out_dir / "config.json",
            dict(
                member_cfg.to_dict(),
                resolved_device=str(device),
                # vmap runs NCHW (see batch_layout); the batched GEMMs run channels-last.
                channels_last=ops == "bmm",
                engine="stacked",
                stacked_ops=ops,
                stacked_members=len(members),
                stacked_steps_per_epoch=steps_per_epoch,
            ),
        )
        write_environment_manifest(m.out_dir / "env.json")
    models = init_member_models(cfg, [m.seed for m in members], device)
    trainer = StackedTrainer(
        cfg, models, base, members, device, steps_per_epoch, graphs is not False, ops
    )
    del models
    best_params = {k: v.detach().clone() for k, v in trainer.params.items()}
    best_buffers = {k: v.detach().clone() for k, v in trainer.buffers.items()}
    histories: list[list[dict[str, Any]]] = [[] for _ in members]
    best = [{"epoch": 0, "val_macro_f1": -1.0, "val_accuracy": 0.0} for _ in members]
    since_best = [0] * len(members)
    stopped = ["completed"] * len(members)
    active = [True] * len(members)
    val_labels = [np.asarray(m.val_labels, dtype=np.int64) for m in members]

    t_start = time.perf_counter()
    epoch = 0
    bar = progress_bar(total=cfg.epochs, desc="stacked", enabled=progress, unit="epoch")
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_rows = trainer.train_epoch(epoch)
            logits = trainer.val_logits()
            seconds = time.perf_counter() - t0
            for i in range(len(members)):
                if not active[i]:
                    continue
                row = {
                    "epoch": epoch,
                    **train_rows[i],
                    **_val_row(logits[i], val_labels[i], cfg),
                    "seconds": seconds,
                }
                if row["val_macro_f1"] > best[i]["val_macro_f1"]:
                    for k, v in trainer.params.items():
                        best_params[k][i].copy_(v[i].detach())
                    for k, v in trainer.buffers.items():
                        best_buffers[k][i].copy_(v[i])
                    best[i] = {"epoch": epoch, "val_macro_f1": row["val_macro_f1"],
                               "val_accuracy": row["val_accuracy"]}  # fmt: skip
                    since_best[i] = 0
                else:
                    since_best[i] += 1
                histories[i].append(row)
                # As fit() does: every scored epoch is on disk at once, so a crash or a kill
                # mid-run leaves each member's epochs so far (rewritten whole, atomically).
                _write_history(members[i].out_dir / "history.csv", histories[i])
                if since_best[i] >= cfg.patience:
                    active[i] = False
                    stopped[i] = "early_stopping"
            bar.update(1)
            if progress:
                log.info(
                    "epoch %d: val macro-F1 %s, %d of %d training (%.1fs)",
                    epoch,
                    " ".join(f"{h[-1]['val_macro_f1']:.3f}" for h in histories if h),
                    sum(active),
                    len(members),
                    seconds,
                )
            if not any(active):
                break
    except KeyboardInterrupt:
        stopped = ["interrupted" if a else s for a, s in zip(active, stopped, strict=True)]
        log.warning("stacked training interrupted at epoch %d; keeping the best checkpoints", epoch)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    t_finish = time.perf_counter()

    results = []
    for i, (m, member_cfg) in enumerate(zip(members, configs, strict=True)):
        if best[i]["epoch"] == 0:
            if stopped[i] == "interrupted":  # Ctrl-C before anything was kept
                raise KeyboardInterrupt(f"{m.out_dir}: interrupted before the first epoch finished")
            raise RuntimeError(
                f"{m.out_dir}: training stopped before the first epoch finished: "
                "no checkpoint written"
            )
        model = create_model(cfg.model, **cfg.model_kwargs).to(device)
        wanted = model.state_dict()
        state = {**trainer.member_state(i, best_params), **trainer.member_state(i, best_buffers)}
        model.load_state_dict({k: v for k, v in state.items() if k in wanted})
        record_training_priors(model, m.train_labels, cfg.class_weighted_sampling)
        meta = checkpoint_meta(model, **dict(m.provenance or {}))
        save_checkpoint(
            model,
            m.out_dir / "best.safetensors",
            dict(
                meta,
                epoch=best[i]["epoch"],
                temperature=1.0,
                metrics={
                    "val_accuracy": best[i]["val_accuracy"],
                    "val_macro_f1": best[i]["val_macro_f1"],
                },
            ),
        )
        calib, val_probs = finish_run(
            m.out_dir, member_cfg, trainer.val[i], stopped[i], len(m.train_labels), device
        )
        results.append(
            TrainResult(
                out_dir=m.out_dir,
                best_epoch=int(best[i]["epoch"]),
                best_val_macro_f1=float(best[i]["val_macro_f1"]),
                temperature=float(calib.temperature),
                ece_before=float(calib.ece_before),
                ece_after=float(calib.ece_after),
                epochs_run=len(histories[i]),
                stopped=stopped[i],
                seconds=seconds,
                val_probs=val_probs,
            )
        )
    # Where a stacked run's wall time goes (the numbers a speed-up starts from).
    captured = ", the first with the CUDA graph capture" if trainer.graph is not None else ""
    log.info(
        "stacked %s, %d models on %s: set-up %.1f s, training loop %.1f s (%d epoch%s%s), "
        "checkpoints and calibration %.1f s",
        ops, len(members), device, t_start - t_called, seconds, epoch, "s" if epoch != 1 else "",
        captured,
        time.perf_counter() - t_finish,
    )  # fmt: skip
    return results
