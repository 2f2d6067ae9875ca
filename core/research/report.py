"""One self-contained HTML research report of a run: metrics, curves, calibration, Grad-CAM, CV.

Figures are PNGs embedded as base64 data URIs and the style sheet is inline, so the
file can be mailed or archived alone. Every section is drawn from data that was
given; a section without data is left out, never filled with placeholders.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.research.calibration import softmax
from painmon.core.research.metrics import reliability_bins
from painmon.core.util.fileio import atomic_write_text
from painmon.core.util.labels import DEFAULT_CLASS_NAMES
from painmon.core.util.timeline import utc_now

log = logging.getLogger(__name__)

DEFAULT_TITLE = "painmon research report"
INTENDED_USE_FALLBACK = "Research on facial pain expression. Not a medical device."
EXAMPLES_PER_CLASS = 4

HEADLINE_METRICS = (
    ("n", "crops scored"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro-F1"),
    ("cohen_kappa", "Cohen's kappa"),
    ("quadratic_kappa", "quadratic-weighted kappa"),
    ("mcc", "Matthews correlation"),
    ("auc_macro", "ROC-AUC, macro (one-vs-rest)"),
    ("auc_micro", "ROC-AUC, micro"),
    ("ece", "ECE, 15 bins (calibrated)"),
    ("mce", "MCE (calibrated)"),
    ("brier", "Brier score"),
    ("nll", "negative log-likelihood"),
    ("mae_expected_level", "MAE of expected pain level (classes)"),
)


@dataclass(frozen=True)
class PartitionPredictions:
    """Per-crop inputs of the report's figures: crops, true classes, raw logits, temperature."""

    images: np.ndarray  # uint8 (N, H, W, 3) RGB crops
    labels: np.ndarray  # (N,) true classes
    logits: np.ndarray  # (N, C) before temperature scaling
    temperature: float = 1.0
    partition: str = ""

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels).astype(np.int64)
        logits = np.asarray(self.logits, dtype=np.float64)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"crops must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        n = images.shape[0]
        if labels.shape != (n,) or logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(
                f"need one label and one logit row per crop: {n} crops, labels {labels.shape}, "
                f"logits {logits.shape}"
            )
        if n == 0:
            raise ValueError("no crops: nothing to report on")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "logits", logits)
        object.__setattr__(self, "temperature", float(self.temperature))

    def probs(self, calibrated: bool = True) -> np.ndarray:
        """Class probabilities with the run's temperature, or with T = 1."""
        return softmax(self.logits, self.temperature if calibrated else 1.0)


def reliability_summary(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, Any]:
    """Reliability bins (ECE, MCE) of the same logits before (T = 1) and after scaling."""
    y = np.asarray(labels).astype(np.int64)
    out: dict[str, Any] = {"temperature": float(temperature)}
    for name, t in (("before", 1.0), ("after", float(temperature))):
        p = softmax(logits, t)
        out[name] = reliability_bins(p.max(axis=1), p.argmax(axis=1) == y)
    return out


# --- markdown tables -----------------------------------------------------------------------

_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def _inline(text: str) -> str:
    """Escape, then render `code` and **bold**."""
    out = html.escape(text.strip())
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line.removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [c.replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)]


def _table_html(header: list[str], align_row: str, body: list[list[str]]) -> str:
    aligns = []
    for spec in _cells(align_row):
        spec = spec.strip()
        if spec.startswith(":") and spec.endswith(":"):
            aligns.append("center")
        elif spec.endswith(":"):
            aligns.append("right")
        else:
            aligns.append("left")

    def cell(tag: str, i: int, text: str) -> str:
        align = aligns[i] if i < len(aligns) else "left"
        return f'<{tag} style="text-align:{align}">{_inline(text)}</{tag}>'

    head = "".join(cell("th", i, c) for i, c in enumerate(header))
    rows = []
    for row in body:
        padded = row + [""] * (len(header) - len(row))
        rows.append("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(padded)) + "</tr>")
    return (
        f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def markdown_to_html(text: str) -> str:
    """HTML of the markdown that ``painmon reproduce`` writes: headings, pipe tables, lists, text.

    Only that subset is understood; anything else is kept as escaped paragraph text.
    """
    lines = text.splitlines()
    parts: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if paragraph:
            parts.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        is_table = (
            "|" in stripped
            and i + 1 < len(lines)
            and _TABLE_SEPARATOR.match(lines[i + 1]) is not None
        )
        if is_table:
            flush()
            header, separator = _cells(stripped), lines[i + 1]
            body = []
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                body.append(_cells(lines[i]))
                i += 1
            parts.append(_table_html(header, separator, body))
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            flush()
            # The report's own sections are h2; headings from the markdown nest below them.
            level = min(6, len(heading.group(1)) + 2)
            parts.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif re.match(r"^[-*]\s+", stripped):
            if paragraph:
                flush()
            items.append(re.sub(r"^[-*]\s+", "", stripped))
        elif not stripped:
            flush()
        else:
            if items:
                flush()
            paragraph.append(stripped)
        i += 1
    flush()
    return "\n".join(parts)


# --- gathering the data ----------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("report: cannot read %s (%s); leaving it out", path, exc)
        return None


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of a run's ``history.csv`` as floats (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append({k: float(v) for k, v in row.items() if k and v not in (None, "")})
    return rows


def gradcam_examples(
    run_dir: str | Path,
    predictions: PartitionPredictions,
    per_class: int = EXAMPLES_PER_CLASS,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
) -> list[tuple[str, list[dict[str, Any]]]]:
    """For each true class, up to ``per_class`` crops with the Grad-CAM of the predicted class.

    Crops are picked from the most to the least confident in the true class (evenly
    spaced in that order), so a row shows clear hits and the worst misses side by side.
    """
    import torch
    import torch.nn.functional as F

    from painmon.core.research.train import load_checkpoint
    from painmon.models import gradcam

    probs = predictions.probs(calibrated=True)
    chosen: list[tuple[int, np.ndarray]] = []
    for k in range(probs.shape[1]):
        idx = np.flatnonzero(predictions.labels == k)
        if idx.size == 0:
            continue
        order = idx[np.argsort(-probs[idx, k], kind="stable")]
        picks = np.unique(np.linspace(0, order.size - 1, min(per_class, order.size)).round())
        chosen.append((k, order[picks.astype(int)]))
    if not chosen:
        return []
    model, _ = load_checkpoint(run_dir, "cpu")
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    rows = []
    for k, indices in chosen:
        crops = predictions.images[indices]
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255.0
        x = (x - mean) / std
        preds = probs[indices].argmax(axis=1)
        cams = gradcam(model, x, torch.from_numpy(preds))
        cams = F.interpolate(cams[:, None], size=crops.shape[1:3], mode="bilinear",
                             align_corners=False)[:, 0].clamp(0, 1).numpy()  # fmt: skip
        examples = []
        for crop, cam, j, pred in zip(crops, cams, indices, preds, strict=True):
            examples.append(
                {
                    "image": crop,
                    "heatmap": cam,
                    "pred_name": _class_name(class_names, int(pred)),
                    "confidence": float(probs[j, pred]),
                    "correct": int(pred) == k,
                }
            )
        rows.append((_class_name(class_names, k), examples))
    return rows


def _class_name(names: Sequence[str], k: int) -> str:
    return names[k] if k < len(names) else f"class {k}"


def _lookup(evaluation: Mapping[str, Any] | None, key: str) -> Any:
    """A metric from an evaluate_partition result (top level or ``details``) or a flat dict."""
    if not evaluation:
        return None
    if key in evaluation:
        return evaluation[key]
    details = evaluation.get("details")
    return details.get(key) if isinstance(details, Mapping) else None


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
 color:#1f2328;background:#f6f8fa;margin:0;line-height:1.5}
main{max-width:1180px;margin:0 auto;padding:24px 32px 48px;background:#fff;
 box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;margin:.2em 0 .1em}
h2{font-size:1.3em;border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:2em}
h3,h4,h5,h6{margin-top:1.4em}
.subtitle{color:#57606a;margin:0 0 1em}
.banner{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:10px 14px;
 margin:12px 0}
.banner strong{color:#7d4e00}
nav ol{columns:2;margin:.4em 0}
nav a{color:#0969da;text-decoration:none}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.93em}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
thead th{background:#eaeef2}
tbody tr:nth-child(even){background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.meta th{background:#f6f8fa;font-weight:600;width:14em}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;
 background:#eaeef2;padding:1px 4px;border-radius:4px;word-break:break-all}
figure{margin:.8em 0 1.6em}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.9em;margin-top:4px}
footer{color:#57606a;font-size:.85em;margin-top:3em;border-top:1px solid #d0d7de;
 padding-top:8px}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _figure_html(fig: Any, caption: str, alt: str) -> str:
    from painmon.core.research.plots import figure_to_png

    data = base64.b64encode(figure_to_png(fig)).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _meta_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in rows if v not in (None, "")
    )
    return f'<table class="meta">{body}</table>' if body else ""


def _code(value: Any) -> str | None:
    return f"<code>{_esc(value)}</code>" if value not in (None, "") else None


class _Sections:
    """Sections in order, each with an anchor, for the table of contents."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []

    def add(self, anchor: str, title: str, body: str) -> None:
        self.items.append((anchor, title, body))

    def nav(self) -> str:
        links = "".join(f'<li><a href="#{a}">{_esc(t)}</a></li>' for a, t, _ in self.items)
        return f"<nav><strong>Contents</strong><ol>{links}</ol></nav>" if self.items else ""

    def html(self) -> str:
        return "\n".join(
            f'<section id="{a}"><h2>{_esc(t)}</h2>\n{b}</section>' for a, t, b in self.items
        )


def _header(
    title: str,
    run_dir: Path | None,
    meta: Mapping[str, Any],
    env: Mapping[str, Any],
    config: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None,
    predictions: PartitionPredictions | None,
) -> str:
    calibration = meta.get("calibration") or {}
    temperature = meta.get("temperature")
    t_text = None
    if temperature is not None:
        t_text = f"T = {float(temperature):.3f}"
        if calibration.get("ece_before") is not None and calibration.get("ece_after") is not None:
            t_text += (
                f" (validation ECE {calibration['ece_before']:.3f} → "
                f"{calibration['ece_after']:.3f})"
            )
    partition = (evaluation or {}).get("partition") or (
        predictions.partition if predictions else ""
    )
    n = _lookup(evaluation, "n")
    scored = f"{_esc(partition)} subjects, {_fmt(n)} crops" if partition and n else None
    if evaluation and evaluation.get("other_dataset") and n:
        scored = f"{_esc(evaluation.get('scored_on', 'a different dataset'))}, {_fmt(n)} crops"
    best = meta.get("metrics") or {}
    best_text = None
    if meta.get("epoch") is not None:
        best_text = f"epoch {meta['epoch']}"
        if best.get("val_macro_f1") is not None:
            best_text += f" (validation macro-F1 {best['val_macro_f1']:.3f})"
    packages = env.get("packages") or {}
    software = ", ".join(f"{k} {v}" for k, v in packages.items() if v and k in ("painmon", "torch"))
    rows = [
        ("Model", _code(meta.get("architecture") or config.get("model"))),
        ("Run", _code(run_dir.name) if run_dir else None),
        ("Dataset", _esc(meta["dataset"]) if meta.get("dataset") else None),
        ("Data SHA-256", _code(meta.get("data_sha256"))),
        ("Manifest SHA-256", _code(meta.get("manifest_sha256"))),
        ("Scored on", scored),
        ("Best checkpoint", _esc(best_text) if best_text else None),
        ("Temperature scaling", _esc(t_text) if t_text else None),
        ("Class mapping", _esc(meta["pspi_mapping"]) if meta.get("pspi_mapping") else None),
        ("Trained on", _esc(config["resolved_device"]) if config.get("resolved_device") else None),
        ("Software", _esc(software) if software else None),
        ("Source commit", _code(env.get("git_commit"))),
    ]
    intended = meta.get("intended_use") or INTENDED_USE_FALLBACK
    caveat = "These numbers must not guide the care of any patient."
    if "not a medical device" not in intended.lower():
        caveat = "Not a medical device. " + caveat
    created = utc_now().strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<header><h1>{_esc(title)}</h1>"
        f'<p class="subtitle">generated {_esc(created)}</p>'
        f'<div class="banner"><strong>Intended use:</strong> {_esc(intended)} {_esc(caveat)}'
        "</div>"
        f"{_meta_table(rows)}</header>"
    )


def _metrics_section(evaluation: Mapping[str, Any], class_names: Sequence[str]) -> str:
    subject_ci = evaluation.get("subject_ci") or {}
    cis = subject_ci.get("metrics") or {}

    def ci_cell(key: str) -> str:
        ci = cis.get(key)
        if not ci or ci.get("ci_low") is None or ci.get("n_subjects", 0) < 2:
            return '<td class="num">—</td>'
        return f'<td class="num">[{ci["ci_low"]:.3f}, {ci["ci_high"]:.3f}]</td>'

    rows = [
        f'<tr><td>{_esc(label)}</td><td class="num">{_esc(_fmt(_lookup(evaluation, key)))}</td>'
        + (ci_cell(key) if cis else "")
        + "</tr>"
        for key, label in HEADLINE_METRICS
        if key in evaluation or _lookup(evaluation, key) is not None
    ]
    ci_head = "<th>95% CI</th>" if cis else ""
    out = (
        f'<table class="data"><thead><tr><th>metric</th><th>value</th>{ci_head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    if cis:
        out += f"<p>{_esc(subject_ci.get('interval', ''))}; other metrics: no interval.</p>"
    per_class = _lookup(evaluation, "per_class")
    if per_class:
        body = "".join(
            f"<tr><td>{_esc(_class_name(class_names, int(c['class'])))}</td>"
            + "".join(
                f'<td class="num">{_esc(_fmt(c.get(k)))}</td>'
                for k in ("precision", "recall", "f1", "support")
            )
            + "</tr>"
            for c in per_class
        )
        out += (
            "<h3>Per class</h3>"
            '<table class="data"><thead><tr><th>class</th><th>precision</th><th>recall</th>'
            f"<th>F1</th><th>support</th></tr></thead><tbody>{body}</tbody></table>"
        )
    return out


def _cv_tables(cv_summary: Mapping[str, Any]) -> str:
    intervals = cv_summary.get("intervals") or {}
    out = ""
    for part, title in (
        ("val", "Cross-validation estimate (each fold's validation subjects)"),
        ("test", "Held-out test subjects (every fold's model, on subjects no fold saw)"),
    ):
        rows = []
        for key, stats in (cv_summary.get(part) or {}).items():
            ci = stats.get("ci95")
            ci_text = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
            rows.append(
                f"<tr><td>{_esc(key)}</td>"
                f'<td class="num">{stats["mean"]:.3f} ± {stats["std"]:.3f}</td>'
                f'<td class="num">{_esc(ci_text)}</td>'
                f'<td class="num">{_esc(stats.get("n", ""))}</td></tr>'
            )
        if not rows:
            continue
        n_label = "folds" if part == "val" else "subjects"
        meaning = intervals.get(part) or "mean ± std over runs; 95% CI (t-distribution)"
        out += (
            f"<h3>{_esc(title)}</h3><p>{_esc(meaning)}.</p>"
            '<table class="data"><thead><tr><th>metric</th><th>mean ± std</th>'
            f"<th>95% CI</th><th>{n_label}</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )
    if out:
        out = f"<p>{_esc(cv_summary.get('n_runs', ''))} runs (folds × seeds).</p>" + out
    return out


def _cv_fold_table(folds: Sequence[Mapping[str, Any]]) -> str:
    if not folds:
        return ""
    keys = [k for k in folds[0] if k != "run"]
    head = "".join(f"<th>{_esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_esc(_fmt(f.get(k)))}</td>' for k in keys) + "</tr>"
        for f in folds
    )
    return (
        f'<h3>Per fold</h3><table class="data"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def build_report_html(
    *,
    run_dir: str | Path | None = None,
    evaluation: Mapping[str, Any] | None = None,
    predictions: PartitionPredictions | None = None,
    cv_summary: Mapping[str, Any] | None = None,
    tables_markdown: str | None = None,
    title: str = DEFAULT_TITLE,
    examples_per_class: int = EXAMPLES_PER_CLASS,
) -> str:
    """The report as one HTML string; see :func:`write_report`."""
    from painmon.core.research import plots

    run = Path(run_dir) if run_dir is not None else None
    meta = (_read_json(run / "best.json") or {}) if run else {}
    env = (_read_json(run / "env.json") or {}) if run else {}
    config = (_read_json(run / "config.json") or {}) if run else {}
    class_names = list(meta.get("class_names") or DEFAULT_CLASS_NAMES)
    sections = _Sections()

    if evaluation:
        partition = evaluation.get("partition")
        if evaluation.get("other_dataset"):
            lead = (
                f"<p><strong>{_esc(evaluation.get('scored_on', 'a different dataset'))}"
                "</strong>; scored with the temperature-scaled probabilities.</p>"
            )
        elif partition:
            lead = (
                f"<p>Scored on the run's own <strong>{_esc(partition)}</strong> subjects, with "
                "the temperature-scaled probabilities.</p>"
            )
        else:
            lead = ""
        sections.add("metrics", "Headline metrics",
                     lead + _metrics_section(evaluation, class_names))  # fmt: skip

    history = read_history(run / "history.csv") if run else []
    if history:
        fig = plots.training_curves_figure(history, meta.get("epoch"))
        sections.add(
            "training",
            "Training curves",
            _figure_html(
                fig,
                f"{len(history)} epochs; the dotted line marks the checkpoint kept (best "
                "validation macro-F1). Validation ECE is measured at T = 1, before scaling.",
                "training curves",
            ),
        )

    cm = _lookup(evaluation, "confusion_matrix")
    if cm:
        cm_norm = _lookup(evaluation, "confusion_matrix_normalized")
        if cm_norm is None:
            counts = np.asarray(cm, dtype=np.float64)
            totals = counts.sum(axis=1, keepdims=True)
            cm_norm = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        sections.add(
            "confusion",
            "Confusion matrices",
            _figure_html(
                plots.confusion_figure(cm, cm_norm, class_names),
                "Rows are true classes, columns predicted classes; the right panel divides "
                "each row by its number of crops.",
                "confusion matrices",
            ),
        )

    roc = _lookup(evaluation, "roc_curves")
    if roc and roc.get("per_class"):
        sections.add(
            "roc",
            "ROC curves",
            _figure_html(
                plots.roc_figure(roc, class_names, _lookup(evaluation, "auc_macro")),
                "One class against the rest, per class present in the labels; the micro "
                "average pools every (crop, class) pair, the macro average is the mean curve.",
                "ROC curves",
            ),
        )

    reliability = None
    if predictions is not None:
        reliability = reliability_summary(
            predictions.logits, predictions.labels, predictions.temperature
        )
    else:
        reliability = _lookup(evaluation, "reliability")
    if reliability and (reliability.get("before") or reliability.get("after")):
        sections.add(
            "calibration",
            "Calibration",
            _figure_html(
                plots.reliability_figure(
                    reliability.get("before"),
                    reliability.get("after"),
                    reliability.get("temperature"),
                ),
                "Top-class confidence in 15 equal-width bins; bars are the accuracy in each bin, "
                "hatching the gap to the mean confidence. The temperature was fitted on the "
                "validation subjects; it never changes the predicted class.",
                "reliability diagrams",
            ),
        )

    if predictions is not None and run is not None and (run / "best.safetensors").is_file():
        rows = gradcam_examples(run, predictions, examples_per_class, class_names)
        if rows:
            sections.add(
                "gradcam",
                "Grad-CAM by true class",
                _figure_html(
                    plots.gradcam_grid_figure(rows),
                    "Each row holds crops of one true class, from the most to the least "
                    "confident in that class; the heatmap explains the predicted class "
                    "(title: predicted class and its calibrated probability; ✓ correct, "
                    "✗ wrong).",
                    "Grad-CAM examples",
                ),
            )

    if cv_summary and cv_summary.get("folds"):
        body = _cv_tables(cv_summary)
        body += _figure_html(
            plots.cv_folds_figure(cv_summary),
            "Bars: each fold's validation score; diamond and whiskers: their mean and 95% CI "
            "(t-interval over seed-averaged folds, corrected for training-set overlap, Nadeau & "
            "Bengio 2003; dashed line: the mean); dots: the same fold's model on the held-out "
            "test subjects.",
            "cross-validation per fold",
        )
        body += _cv_fold_table(cv_summary["folds"])
        sections.add("cv", "Cross-validation", body)

    if tables_markdown and tables_markdown.strip():
        sections.add("comparisons", "Comparisons", markdown_to_html(tables_markdown))

    header = _header(title, run, meta, env, config, evaluation, predictions)
    footer = (
        "<footer>Numbers come from subject-wise evaluation on the data named above and say "
        "nothing about other populations, cameras or clinical settings. Written by painmon."
        "</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>"
        f"{header}\n{sections.nav()}\n{sections.html()}\n{footer}</main></body></html>\n"
    )


def write_report(
    path: str | Path,
    *,
    run_dir: str | Path | None = None,
    evaluation: Mapping[str, Any] | None = None,
    predictions: PartitionPredictions | None = None,
    cv_summary: Mapping[str, Any] | None = None,
    tables_markdown: str | None = None,
    title: str = DEFAULT_TITLE,
    examples_per_class: int = EXAMPLES_PER_CLASS,
) -> Path:
    """Write one self-contained HTML report and return its path.

    ``run_dir``: a run folder (header, training curves; with ``predictions`` also
    Grad-CAM). ``evaluation``: an ``evaluate_partition`` result or a flat
    ``classification_metrics`` dict (metrics, confusion, ROC, reliability bins).
    ``predictions``: the partition's crops, labels and logits (reliability before/after
    temperature scaling, Grad-CAM). ``cv_summary``: ``summarise_cv`` output (or
    ``cv_summary.json``). ``tables_markdown``: comparison tables as markdown.
    """
    if examples_per_class < 1:
        raise ValueError(f"examples_per_class must be >= 1, got {examples_per_class}")
    if run_dir is not None and not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist (made by `painmon train`)")
    text = build_report_html(
        run_dir=run_dir,
        evaluation=evaluation,
        predictions=predictions,
        cv_summary=cv_summary,
        tables_markdown=tables_markdown,
        title=title,
        examples_per_class=examples_per_class,
    )
    out = atomic_write_text(path, text)
    log.info("report written to %s (%d kB)", out, len(text) // 1024)
    return Path(out)
