"""Figures of the research report, drawn with matplotlib's object API (no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`figure_to_png` turns
it into PNG bytes. Nothing here reads files: :mod:`painmon.core.research.report` gathers the data.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

# Colour-blind-safe (Okabe-Ito) colours, one per pain class.
CLASS_COLOURS = ("#0072B2", "#009E73", "#E69F00", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
TRAIN_COLOUR = "#0072B2"
VAL_COLOUR = "#D55E00"
GOOD_COLOUR = "#1a7f37"
BAD_COLOUR = "#c0392b"
PNG_DPI = 100


def figure_to_png(fig: Figure, dpi: int = PNG_DPI) -> bytes:
    """PNG bytes of a figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", bbox_inches="tight")
    return buffer.getvalue()


def _class_colour(k: int) -> str:
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def _series(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    values = []
    for row in history:
        value = row.get(key)
        values.append(float(value) if value not in (None, "") else math.nan)
    return np.asarray(values, dtype=np.float64)


def training_curves_figure(
    history: Sequence[Mapping[str, Any]], best_epoch: int | None = None
) -> Figure:
    """Loss, accuracy, validation macro-F1 and ECE, learning rate and epoch time per epoch."""
    epochs = _series(history, "epoch")
    fig = Figure(figsize=(12, 6.4), layout="constrained")
    axes = fig.subplots(2, 3)
    marker = "o" if len(epochs) <= 30 else None
    panels = (
        ("Loss (label-smoothed cross-entropy)", (("train_loss", "train"), ("val_loss", "val"))),
        ("Accuracy", (("train_accuracy", "train"), ("val_accuracy", "val"))),
        ("Validation macro-F1", (("val_macro_f1", "val"),)),
        ("Validation ECE (before temperature scaling)", (("val_ece", "val"),)),
        ("Learning rate", (("lr", "lr"),)),
        ("Seconds per epoch", (("seconds", "time"),)),
    )
    for ax, (title, lines) in zip(axes.flat, panels, strict=True):
        for key, label in lines:
            colour = TRAIN_COLOUR if label in ("train", "lr", "time") else VAL_COLOUR
            ax.plot(epochs, _series(history, key), marker=marker, ms=3, color=colour, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best epoch {best_epoch}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if lines[0][0] == "lr" and np.nanmin(_series(history, "lr")) > 0:
            ax.set_yscale("log")
        if len(lines) > 1 or best_epoch is not None:
            ax.legend(fontsize=8)
    return fig


def confusion_figure(
    counts: Sequence[Sequence[int]],
    normalised: Sequence[Sequence[float]],
    class_names: Sequence[str],
) -> Figure:
    """Confusion matrix as counts and row-normalised (rows: true class), side by side."""
    cm = np.asarray(counts, dtype=np.int64)
    cm_norm = np.asarray(normalised, dtype=np.float64)
    n = cm.shape[0]
    names = list(class_names)[:n] + [f"class {k}" for k in range(len(class_names), n)]
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, matrix, title, fmt in (
        (axes[0], cm, "Counts", "{:d}"),
        (axes[1], cm_norm, "Row-normalised (recall on the diagonal)", "{:.2f}"),
    ):
        vmax = max(float(matrix.max()), 1e-12) if matrix is cm else 1.0
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                dark = value > 0.55 * vmax
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=10,
                        color="white" if dark else "black")  # fmt: skip
        ax.set_xticks(range(n), names, rotation=30, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=11)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def roc_figure(
    roc_curves: Mapping[str, Any], class_names: Sequence[str], auc_macro: float | None = None
) -> Figure:
    """One-vs-rest ROC per class, the micro-average and the macro-average curve."""
    fig = Figure(figsize=(7, 6), layout="constrained")
    ax = fig.subplots()
    per_class = list(roc_curves.get("per_class") or [])
    grid = np.linspace(0.0, 1.0, 201)
    tprs = []
    for curve in per_class:
        k = int(curve["class"])
        name = class_names[k] if k < len(class_names) else f"class {k}"
        ax.plot(curve["fpr"], curve["tpr"], color=_class_colour(k), lw=1.6,
                label=f"{name} (AUC {curve['auc']:.3f})")  # fmt: skip
        tprs.append(np.interp(grid, curve["fpr"], curve["tpr"]))
    micro = roc_curves.get("micro")
    if micro:
        ax.plot(micro["fpr"], micro["tpr"], color="black", ls="--", lw=2,
                label=f"micro-average (AUC {micro['auc']:.3f})")  # fmt: skip
    if tprs:
        macro_tpr = np.mean(tprs, axis=0)
        macro_tpr[0] = 0.0
        label = "macro-average"
        if auc_macro is not None:
            label += f" (mean AUC {auc_macro:.3f})"
        ax.plot(grid, macro_tpr, color="black", ls=":", lw=2.4, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one class against the rest", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return fig


def _reliability_panel(ax, count_ax, bins: Mapping[str, Any], title: str, colour: str) -> None:
    edges = np.asarray(bins["edges"], dtype=np.float64)
    width = np.diff(edges)
    centres = edges[:-1] + width / 2
    filled = np.asarray([a is not None for a in bins["accuracy"]])
    accuracy = np.asarray([a if a is not None else 0.0 for a in bins["accuracy"]])
    confidence = np.asarray([c if c is not None else 0.0 for c in bins["confidence"]])
    ax.bar(centres[filled], accuracy[filled], width=width[filled], color=colour, alpha=0.85,
           edgecolor="white", label=f"accuracy per bin (ECE {bins['ece']:.3f})")  # fmt: skip
    gap_low = np.minimum(accuracy, confidence)[filled]
    gap = np.abs(confidence - accuracy)[filled]
    ax.bar(centres[filled], gap, bottom=gap_low, width=width[filled], color="none",
           edgecolor=BAD_COLOUR, hatch="///", lw=0.8, label="gap to confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    count_ax.bar(centres, bins["counts"], width=width, color="grey", edgecolor="white")
    count_ax.set_xlim(0, 1)
    count_ax.set_xlabel("confidence (top-class probability)")
    count_ax.set_ylabel("crops")


def reliability_figure(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, temperature: float | None
) -> Figure:
    """Reliability diagrams before (T = 1) and after temperature scaling, with crop counts."""
    panels = []
    if before is not None:
        panels.append((before, "Before temperature scaling (T = 1)", "#999999"))
    if after is not None:
        t_text = f"T = {temperature:.3f}" if temperature is not None else "calibrated"
        panels.append((after, f"After temperature scaling ({t_text})", TRAIN_COLOUR))
    if not panels:
        raise ValueError("a reliability diagram needs the bins before or after scaling")
    fig = Figure(figsize=(5.6 * len(panels), 6), layout="constrained")
    axes = fig.subplots(2, len(panels), height_ratios=(3, 1), squeeze=False, sharex="col")
    for col, (bins, title, colour) in enumerate(panels):
        _reliability_panel(axes[0, col], axes[1, col], bins, title, colour)
    return fig


CV_PLOT_METRICS = (
    ("accuracy", "accuracy"),
    ("macro_f1", "macro-F1"),
    ("quadratic_kappa", "quadratic kappa"),
    ("ece", "ECE (lower is better)"),
)


def cv_folds_figure(cv_summary: Mapping[str, Any]) -> Figure:
    """Per-fold validation bars, then their mean with its 95 % CI; test subjects as dots."""
    folds = list(cv_summary["folds"])
    labels = [f"s{f['seed']}/f{f['fold']}" for f in folds]
    metrics = [(k, t) for k, t in CV_PLOT_METRICS if any(f.get(f"val_{k}") is not None
                                                         for f in folds)]  # fmt: skip
    if not folds or not metrics:
        raise ValueError("the CV summary has no per-fold metrics to plot")
    fig = Figure(figsize=(max(9.0, (0.45 * len(folds) + 1.6) * len(metrics)), 4.2),
                 layout="constrained")  # fmt: skip
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    x = np.arange(len(folds))
    mean_x = len(folds) + 0.6  # a gap between the folds and their summary
    for ax, (key, title) in zip(axes, metrics, strict=True):

        def column(prefix: str, key: str = key) -> np.ndarray:
            return np.asarray(
                [math.nan if f.get(f"{prefix}_{key}") is None else f[f"{prefix}_{key}"]
                 for f in folds],
                dtype=np.float64,
            )  # fmt: skip

        values, test = column("val"), column("test")
        ax.bar(x, values, color="#4C78A8", width=0.7, label="validation, per fold")
        if np.isfinite(test).any():
            ax.plot(x, test, "o", color=VAL_COLOUR, ms=5, label="test subjects, same model")
        stats = (cv_summary.get("val") or {}).get(key)
        extremes = [0.0, *values[np.isfinite(values)], *test[np.isfinite(test)]]
        if stats:
            low, high = stats["ci95"]
            ax.axhline(stats["mean"], color="black", lw=1, ls="--", zorder=1)
            ax.errorbar([mean_x], [stats["mean"]],
                        yerr=[[stats["mean"] - low], [high - stats["mean"]]],
                        fmt="D", color="black", capsize=6, ms=6, lw=1.6,
                        label="validation mean, 95% CI")  # fmt: skip
            ax.annotate(f"{stats['mean']:.3f}\n[{low:.3f}, {high:.3f}]", (mean_x, high),
                        xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize=8)  # fmt: skip
            extremes += [low, high]
        top = 1.0 if key != "ece" else max(extremes) * 1.35
        ax.set_ylim(min(0.0, min(extremes) * 1.2), max(top, max(extremes) * 1.2))
        ax.set_xlim(-0.6, mean_x + 0.8)
        ax.set_xticks([*x, mean_x], [*labels, "mean"], rotation=45, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=len(names), fontsize=9)
    return fig


def gradcam_grid_figure(
    rows: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], alpha: float = 0.6
) -> Figure:
    """Crops with their Grad-CAM overlaid; one row per true class.

    ``rows`` holds (true class name, examples); each example has ``image`` (H,W,3 uint8),
    ``heatmap`` (H,W in 0..1), ``pred_name``, ``confidence`` and ``correct``.
    """
    if not rows:
        raise ValueError("a Grad-CAM grid needs at least one row of examples")
    n_cols = max(len(examples) for _, examples in rows)
    fig = Figure(figsize=(1.9 * n_cols + 0.8, 2.15 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    jet = colormaps["jet"]
    for r, (true_name, examples) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(examples):
                ax.set_axis_off()
                continue
            example = examples[c]
            image = np.asarray(example["image"], dtype=np.float64) / 255.0
            cam = np.clip(np.asarray(example["heatmap"], dtype=np.float64), 0.0, 1.0)
            # Blend in proportion to the heat so cold regions show the face untinted.
            weight = (alpha * (0.2 + 0.8 * cam))[..., None]
            ax.imshow((1 - weight) * image + weight * jet(cam)[..., :3])
            ok = bool(example["correct"])
            ax.set_title(f"{'✓' if ok else '✗'} {example['pred_name']} {example['confidence']:.2f}",
                         fontsize=9, color=GOOD_COLOUR if ok else BAD_COLOUR)  # fmt: skip
            for spine in ax.spines.values():
                spine.set_edgecolor(GOOD_COLOUR if ok else BAD_COLOUR)
                spine.set_linewidth(2)
            if c == 0:
                ax.set_ylabel(f"true: {true_name}", fontsize=10)
    return fig
