"""Benchmarks: commands that print numbers (never timed unit tests).

``bench_train`` times the paper's protocol size: 4,212 training crops of 64×64,
batch 32, plus the validation pass each epoch, and projects 5 folds × 100 epochs.
With ``jobs > 1`` that many folds train at once in separate processes (the way
``painmon cv --jobs`` runs them), and the projection uses the concurrent wall time.
With a stacked engine (``stacked``, ``stacked-bmm``) ``members`` models train together in
one process, as ``painmon cv --engine ...`` trains every (seed, fold) model, and the
numbers are per epoch of all of them (``ms_per_member_step`` divides by the members).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.util.errors import InvalidInputError

log = logging.getLogger(__name__)

_IMPORTED_AT = time.perf_counter()
PAPER_TRAIN_CROPS = 4212
PAPER_VAL_FRACTION = 0.25  # one validation crop per four training crops, as a 5-fold CV leaves


def _train_epochs(
    device_name: str,
    n_crops: int,
    batch_size: int,
    epochs: int,
    compile_mode: str,
    augment: str,
    model_name: str,
    seed: int,
    deterministic: bool = True,
) -> dict[str, Any]:
    import torch

    from painmon.core.research.seeding import resolve_device, seed_everything
    from painmon.core.research.train import (
        DeviceData,
        TrainConfig,
        _maybe_compile,
        evaluate,
        lr_factor,
        train_one_epoch,
    )
    from painmon.models import create_model

    device = resolve_device(device_name)
    seed_everything(seed, deterministic)
    cfg = TrainConfig(
        deterministic=deterministic,
        model=model_name,
        epochs=max(epochs, 2),
        batch_size=batch_size,
        device=str(device),
        augment=augment,
        compile=compile_mode,
    )
    rng = np.random.default_rng(seed)
    n_val = max(batch_size, int(n_crops * PAPER_VAL_FRACTION))
    train = DeviceData.from_numpy(
        rng.integers(0, 256, (n_crops, 64, 64, 3), dtype=np.uint8),
        rng.integers(0, 5, n_crops),
        device,
    )
    val = DeviceData.from_numpy(
        rng.integers(0, 256, (n_val, 64, 64, 3), dtype=np.uint8), rng.integers(0, 5, n_val), device
    )
    model = create_model(model_name).to(device)
    if cfg.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    steps = max(1, n_crops // batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, cfg))
    run_model = _maybe_compile(model, cfg, device)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    t0 = time.perf_counter()
    train_one_epoch(run_model, train, optimizer, scheduler, cfg, gen)  # warm-up (and compile)
    evaluate(model, val, cfg)
    _sync(device)
    warmup_s = time.perf_counter() - t0
    return _timed_epochs(
        device,
        warmup_s,
        steps,
        epochs,
        lambda _: train_one_epoch(run_model, train, optimizer, scheduler, cfg, gen),
        lambda: evaluate(model, val, cfg),
    )


def _timed_epochs(
    device: Any,
    warmup_s: float,
    steps: int,
    epochs: int,
    train: Callable[[int], object],
    evaluate: Callable[[], object],
) -> dict[str, Any]:
    """Time ``epochs`` epochs of ``train(epoch)`` then ``evaluate()``, each synchronised."""
    import torch

    train_s, eval_s = [], []
    for epoch in range(2, epochs + 2):  # epoch 1 was the warm-up
        t0 = time.perf_counter()
        train(epoch)
        _sync(device)
        t1 = time.perf_counter()
        evaluate()
        _sync(device)
        train_s.append(t1 - t0)
        eval_s.append(time.perf_counter() - t1)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "warmup_s": warmup_s,
        "train_s_per_epoch": train_s,
        "eval_s_per_epoch": eval_s,
        "steps_per_epoch": steps,
    }


def _stacked_epochs(
    device_name: str,
    n_crops: int,
    batch_size: int,
    epochs: int,
    augment: str,
    model_name: str,
    seed: int,
    members: int,
    ops: str,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Epoch times of ``members`` models trained by the stacked engine's trainer."""

    from painmon.core.research.seeding import resolve_device, seed_everything
    from painmon.core.research.stacked import (
        StackedMember,
        StackedTrainer,
        init_member_models,
        stacked_base,
    )
    from painmon.core.research.train import TrainConfig

    device = resolve_device(device_name)
    seed_everything(seed, deterministic)
    cfg = TrainConfig(model=model_name, epochs=epochs + 1, batch_size=batch_size,
                      device=str(device), augment=augment, deterministic=deterministic)  # fmt: skip
    rng = np.random.default_rng(seed)
    n_val = max(batch_size, int(n_crops * PAPER_VAL_FRACTION))
    stack = [
        StackedMember(
            seed=seed + i,
            train_images=rng.integers(0, 256, (n_crops, 64, 64, 3), dtype=np.uint8),
            train_labels=rng.integers(0, 5, n_crops),
            val_images=rng.integers(0, 256, (n_val, 64, 64, 3), dtype=np.uint8),
            val_labels=rng.integers(0, 5, n_val),
            out_dir=Path(f"bench-member-{i}"),  # never written: no run folders here
        )
        for i in range(members)
    ]
    base = stacked_base(cfg, ops)
    models = init_member_models(cfg, [m.seed for m in stack], device)
    steps = max(1, n_crops // batch_size)
    trainer = StackedTrainer(cfg, models, base, stack, device, steps, True, ops)
    del models

    t0 = time.perf_counter()
    trainer.train_epoch(1)  # warm-up, and the CUDA graph capture
    trainer.val_logits()
    _sync(device)
    warmup_s = time.perf_counter() - t0
    result = _timed_epochs(device, warmup_s, steps, epochs, trainer.train_epoch, trainer.val_logits)
    return {**result, "cuda_graph": trainer.graph is not None}


def _sync(device: Any) -> None:
    """Wait for the GPU's queued work, so a timer stops when the work is done."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def _worker(args: tuple, queue: Any) -> None:
    try:
        queue.put(_train_epochs(*args))
    except Exception as exc:  # reported to the parent, which raises
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def bench_train(
    device: str = "auto",
    n_crops: int = PAPER_TRAIN_CROPS,
    batch_size: int = 32,
    epochs: int = 3,
    compile_mode: str = "none",
    augment: str = "full",
    model: str = "dacnn",
    jobs: int = 1,
    seed: int = 0,
    engine: str = "processes",
    members: int = 5,
    deterministic: bool = True,
) -> dict[str, Any]:
    """Seconds per epoch at the paper's protocol size and the projected 5 × 100-epoch time."""
    from painmon.core.research.options import CV_ENGINES, STACKED_ENGINE_OPS

    if epochs < 1 or jobs < 1 or members < 1 or n_crops < batch_size:
        raise InvalidInputError(
            "need epochs >= 1, jobs >= 1, members >= 1 and at least one batch of crops"
        )
    if engine not in CV_ENGINES:
        raise InvalidInputError(f"engine must be one of {', '.join(CV_ENGINES)}, got {engine!r}")
    stacked = engine in STACKED_ENGINE_OPS
    if stacked and jobs > 1:
        raise InvalidInputError(f"the {engine} engine trains its members in one process: jobs 1")
    args = (device, n_crops, batch_size, epochs, compile_mode, augment, model, seed, deterministic)
    t0 = time.perf_counter()
    if stacked:
        runs = [_stacked_epochs(device, n_crops, batch_size, epochs, augment, model, seed,
                                members, STACKED_ENGINE_OPS[engine], deterministic)]  # fmt: skip
    elif jobs == 1:
        runs = [_train_epochs(*args)]
    else:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_worker, args=((*args[:-2], seed + i, deterministic), queue))
            for i in range(jobs)
        ]
        for proc in procs:
            proc.start()
        runs = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        errors = [r["error"] for r in runs if "error" in r]
        if errors:
            raise RuntimeError(f"benchmark worker failed: {errors[0]}")
    wall_s = time.perf_counter() - t0
    # The slowest concurrent job's epoch = the time for `jobs` folds to advance one epoch.
    epoch_s = max(
        statistics.median(
            a + b for a, b in zip(r["train_s_per_epoch"], r["eval_s_per_epoch"], strict=True)
        )
        for r in runs
    )
    train_epoch_s = max(statistics.median(r["train_s_per_epoch"]) for r in runs)
    steps = runs[0]["steps_per_epoch"]
    folds, protocol_epochs = 5, 100
    together = members if stacked else jobs  # models that advance one epoch together
    rounds = -(-folds // together)  # folds run `together` at a time
    extra: dict[str, Any] = {}
    if stacked:
        extra = {
            "members": members,
            "cuda_graph": runs[0]["cuda_graph"],
            "ms_per_member_step": 1000.0 * train_epoch_s / steps / members,
        }
    return {
        "benchmark": "train",
        "engine": engine,
        **extra,
        # As the training commands run (--nondeterministic lets cuDNN autotune).
        "deterministic": deterministic,
        "model": model,
        "device": runs[0]["device"],
        "device_name": runs[0]["device_name"],
        "n_train_crops": n_crops,
        "batch_size": batch_size,
        "augment": augment,
        "compile": compile_mode,
        "jobs": jobs,
        "epochs_timed": epochs,
        "warmup_s": max(r["warmup_s"] for r in runs),
        "train_s_per_epoch_median": train_epoch_s,
        "epoch_s_median_with_validation": epoch_s,
        "images_per_s": together * n_crops / train_epoch_s,
        "ms_per_step": 1000.0 * train_epoch_s / steps,
        # A projection (median epoch x 5 folds x 100 epochs): it leaves out process start-up,
        # compilation and data loading. The number to quote is a command's wall time.
        "projected_5x100_s": rounds * protocol_epochs * epoch_s,
        "projection_note": "projected_5x100_s is a projection, not a measured time: "
        "time `painmon cv --epochs 100` for the wall time a user sees",
        "wall_s": wall_s,
        "command_wall_s": command_wall_s(),
    }


def command_wall_s() -> float:
    """Seconds since this process started (the whole command so far, start-up included).

    Read from /proc on Linux; elsewhere the time since painmon's CLI module was imported.
    """
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime_s - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED_AT
