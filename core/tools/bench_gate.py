"""``painmon gate-report``: how well a model's domain gate separates its domain from real faces.

For an exported model, measures the domain gate the way the bedside uses it:

* **in-domain stills**: crops of held-out subjects from a ``painmon crops`` file (the
  ``test`` partition of a ``splits.json``, people neither the network nor the gate saw):
  the fraction flagged (score > threshold) — a false alarm rate of the gate;
* **videos and images through the whole engine** (``painmon monitor``'s path: face
  tracker, framing, quality gates): per file, the face frames, the fraction of them
  flagged, how many frames showed a pain class and which, the frames under the
  OUT_OF_DOMAIN condition and the pain alarms raised;
* the **AUROC** of the domain score for "out-of-domain files" (``--real``) against
  in-domain stills and ``--in-domain`` videos.

Numbers are printed and written as JSON (``--json``) for a model card.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from painmon.core.live.engine import EngineResult
from painmon.core.util.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileGateReport:
    """One video or image through the engine with the gate."""

    path: str
    group: str  # "real" or "in-domain"
    frames: int
    face_frames: int
    flagged: int  # face frames whose crop lay beyond the threshold
    out_of_domain_condition: int  # frames under the OUT_OF_DOMAIN technical condition
    scored_by_class: dict[int, int]
    pain_alarms: int
    scores: list[float] = field(repr=False)
    # Synthetic videos with a <stem>.truth.csv: the shown class against the truth, and
    # whether every pain alarm started inside the scripted episode.
    truth: dict[str, Any] | None = None

    @property
    def flagged_fraction(self) -> float | None:
        scored = len(self.scores)
        return self.flagged / scored if scored else None


def _monitor_file(path: Path, model: Path, group: str, face_model: str | None) -> FileGateReport:
    from painmon.core.live.monitor import run_monitor

    results: list[EngineResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_monitor(
            str(path),
            model,
            tmp,
            face_model=face_model,
            progress=False,
            on_result=results.append,
        )
    scores = [r.domain_score for r in results if r.domain_score is not None]
    by_class: dict[int, int] = {}
    for r in results:
        if r.pain_class is not None:
            by_class[r.pain_class] = by_class.get(r.pain_class, 0) + 1
    return FileGateReport(
        truth=_against_truth(path, results),
        path=str(path),
        group=group,
        frames=len(results),
        face_frames=sum(r.observation.face_found for r in results),
        flagged=sum(r.out_of_domain for r in results),
        out_of_domain_condition=sum(r.technical_condition == "OUT_OF_DOMAIN" for r in results),
        scored_by_class=dict(sorted(by_class.items())),
        pain_alarms=summary.pain_alarm_episodes,
        scores=[float(s) for s in scores],
    )


def _against_truth(path: Path, results: Sequence[EngineResult]) -> dict[str, Any] | None:
    """Frame accuracy and alarm timing of a synthetic video against its truth CSV."""
    import csv

    from painmon.core.live.alarms import AlarmEventKind
    from painmon.core.synth.stream import episode_window, truth_csv_path

    truth_path = truth_csv_path(path)
    if not truth_path.is_file():
        return None
    with truth_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = {int(row["frame"]): int(row["label"]) for row in rows}
    seconds = float(rows[-1]["t_s"]) + (float(rows[1]["t_s"]) if len(rows) > 1 else 0.0)
    start_s, end_s = episode_window(seconds)
    pairs = [(r.pain_class, labels[r.frame.index]) for r in results if r.frame.index in labels]
    scored = [(p, t) for p, t in pairs if p is not None]
    onsets = [
        e.t_s
        for r in results
        for e in r.alarm_state.new_events
        if e.kind in (AlarmEventKind.ONSET.value, AlarmEventKind.ESCALATION.value)
    ]
    return {
        "frames": len(pairs),
        "scored": len(scored),
        "accuracy_all_frames": sum(p == t for p, t in pairs) / len(pairs) if pairs else None,
        "accuracy_scored": sum(p == t for p, t in scored) / len(scored) if scored else None,
        "within_one_scored": (
            sum(abs(p - t) <= 1 for p, t in scored) / len(scored) if scored else None
        ),
        "episode_s": [start_s, end_s],
        "pain_alarm_onsets_s": onsets,
        "alarms_only_in_episode": all(start_s <= t <= end_s for t in onsets),
    }


def _still_scores(
    model: Any, crops: Path, splits: Path | None, partition: str
) -> tuple[np.ndarray, np.ndarray]:
    """Domain scores of the crops (of ``partition``'s subjects with ``splits``) through the
    loaded ``model`` (an OnnxPainModel), and each crop's subject."""
    from painmon.core.research.crops import CropSet
    from painmon.core.research.splits import SplitPlan

    crop_set, _ = CropSet.load_npz(crops)
    images, subjects = crop_set.images, np.asarray(crop_set.subjects).astype(str)
    if splits is not None:
        plan = SplitPlan.from_json(splits)
        keep = np.isin(crop_set.subjects, list(plan.subjects(partition)))
        if not keep.any():
            raise InvalidInputError(f"{crops} holds no crops of the {partition} subjects")
        images, subjects = images[keep], subjects[keep]
    out = []
    for start in range(0, len(images), 256):
        prediction = model.predict(images[start : start + 256])
        if prediction.domain_score is None:
            raise InvalidInputError(f"{model.path} has no domain gate to report on")
        out.append(prediction.domain_score)
    return np.concatenate(out), subjects


def _per_subject(scores: np.ndarray, subjects: np.ndarray, threshold: float) -> dict[str, Any]:
    """Each person's flagged share: an average over crops hides one person the gate refuses
    most of the time, which at the bedside is a patient who is never scored."""
    shares = {
        str(s): float((scores[subjects == s] > threshold).mean()) for s in np.unique(subjects)
    }
    worst = max(shares, key=lambda s: (shares[s], s))
    return {
        "subjects": len(shares),
        "flagged_fraction_by_subject": shares,
        "subject_median_flagged_fraction": float(np.median(list(shares.values()))),
        "worst_subject": worst,
        "worst_subject_flagged_fraction": shares[worst],
        "subjects_over_10_percent": sum(v > 0.10 for v in shares.values()),
    }


def gate_report(
    model: str | Path,
    *,
    real: Sequence[str | Path] = (),
    in_domain_videos: Sequence[str | Path] = (),
    crops: str | Path | None = None,
    splits: str | Path | None = None,
    partition: str = "test",
    face_model: str | None = None,
) -> dict[str, Any]:
    """Measure the gate; see the module docstring. Returns a JSON-ready dict."""
    from sklearn.metrics import roc_auc_score

    from painmon.core.live.scoring import OnnxPainModel, quiet_model_logs

    model = Path(model)
    # Quiet while loading: a model without a gate is refused here in one line, so the
    # loader's own "has no domain gate" warning would only say it twice.
    with quiet_model_logs():
        runtime = OnnxPainModel(model, prefer="cpu")
    spec = runtime.domain_gate
    if spec is None:
        raise InvalidInputError(f"{model} has no domain gate (exported with --no-domain-gate?)")
    report: dict[str, Any] = {"model": str(model), "threshold": spec.threshold, "files": []}
    inside: list[float] = []
    if crops is not None:
        stills, subjects = _still_scores(
            runtime, Path(crops), Path(splits) if splits else None, partition
        )
        inside.extend(stills.tolist())
        report["in_domain_stills"] = {
            "crops": len(stills),
            "partition": partition if splits else "all",
            "flagged_fraction": float((stills > spec.threshold).mean()),
            "score_median": float(np.median(stills)),
            **_per_subject(stills, subjects, spec.threshold),
        }
    outside: list[float] = []
    for group, paths in (("real", real), ("in-domain", in_domain_videos)):
        for path in paths:
            file_report = _monitor_file(Path(path), model, group, face_model)
            (outside if group == "real" else inside).extend(file_report.scores)
            entry = asdict(file_report)
            entry.pop("scores")
            entry["flagged_fraction"] = file_report.flagged_fraction
            entry["score_median"] = (
                float(np.median(file_report.scores)) if file_report.scores else None
            )
            report["files"].append(entry)
    for group, scores in (("real", outside), ("in-domain", inside)):
        if scores:
            report[f"{group}_flagged_fraction"] = float(
                (np.asarray(scores) > spec.threshold).mean()
            )
            report[f"{group}_crops"] = len(scores)
    if inside and outside:
        labels = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
        report["auroc_real_vs_in_domain"] = float(roc_auc_score(labels, np.r_[inside, outside]))
    return report


def format_gate_report(report: dict[str, Any]) -> str:
    """The report as the lines ``painmon gate-report`` prints."""
    lines = [f"domain gate of {report['model']}: threshold {report['threshold']:.1f}"]
    stills = report.get("in_domain_stills")
    if stills:
        lines.append(
            f"in-domain stills ({stills['partition']} subjects, {stills['crops']} crops): "
            f"{100 * stills['flagged_fraction']:.1f} % flagged, median score "
            f"{stills['score_median']:.1f}"
        )
        if "worst_subject" in stills:
            lines.append(
                f"  per subject ({stills['subjects']}): median "
                f"{100 * stills['subject_median_flagged_fraction']:.1f} % flagged, worst "
                f"{stills['worst_subject']} {100 * stills['worst_subject_flagged_fraction']:.1f} %"
                f", {stills['subjects_over_10_percent']} over 10 %"
            )
    for f in report["files"]:
        flagged = f["flagged_fraction"]
        lines.append(
            f"{f['group']:9s} {Path(f['path']).name}: {f['frames']} frames, "
            f"face {f['face_frames']}, "
            f"flagged {'-' if flagged is None else f'{100 * flagged:.1f} %'}, OUT_OF_DOMAIN "
            f"{f['out_of_domain_condition']}, scored by class {f['scored_by_class'] or '{}'}, "
            f"pain alarms {f['pain_alarms']}"
        )
        truth = f.get("truth")
        if truth:
            onsets = ", ".join(f"{t:.1f} s" for t in truth["pain_alarm_onsets_s"]) or "none"
            lines.append(
                f"          against the truth: accuracy {_num(truth['accuracy_all_frames'])} of "
                f"all {truth['frames']} frames (unknown = wrong), "
                f"{_num(truth['accuracy_scored'])} of {truth['scored']} scored (within one "
                f"{_num(truth['within_one_scored'])}); pain alarms at {onsets} (episode "
                f"{truth['episode_s'][0]:.0f}-{truth['episode_s'][1]:.0f} s)"
            )
    for group in ("real", "in-domain"):
        if f"{group}_crops" in report:
            lines.append(
                f"all {group} crops: {report[f'{group}_crops']}, "
                f"{100 * report[f'{group}_flagged_fraction']:.1f} % flagged"
            )
    if "auroc_real_vs_in_domain" in report:
        lines.append(f"AUROC real vs in-domain: {report['auroc_real_vs_in_domain']:.4f}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_gate_report(report: dict[str, Any], path: str | Path) -> Path:
    from painmon.core.util.fileio import atomic_write_text

    return atomic_write_text(path, json.dumps(report, indent=2) + "\n")
