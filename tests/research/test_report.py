"""The HTML research report: self-contained, escaped, every section from real data or absent."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from painmon.core.research.crops import CropReport, CropSet
from painmon.core.research.experiment import PreparedData, evaluate_partition, summarise_cv
from painmon.core.research.metrics import classification_metrics
from painmon.core.research.report import (
    PartitionPredictions,
    markdown_to_html,
    reliability_summary,
    write_report,
)
from painmon.core.research.splits import SplitPlan
from painmon.core.research.train import TrainConfig, fit

MALICIOUS = '<script>alert("x")</script>'
SECTION_TITLES = (
    "Headline metrics",
    "Training curves",
    "Confusion matrices",
    "ROC curves",
    "Calibration",
    "Grad-CAM by true class",
    "Cross-validation",
    "Comparisons",
)
TABLES_MD = """# Table 2: baselines

| model | accuracy | macro-F1 |
|:------|---------:|:--------:|
| dacnn | 0.912 | 0.887 |
| simplecnn | 0.801 | 0.774 |
| `a \\| b` | **0.5** | <b>bold</b> |

- paired t-test: p = 0.003
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, toy_crops):
    """A 2-epoch micropainnet run, its test partition and an evaluation of it."""
    out = tmp_path_factory.mktemp("run")
    x_tr, y_tr = toy_crops(40, 0)
    x_va, y_va = toy_crops(20, 1)
    x_te, y_te = toy_crops(30, 2)
    cfg = TrainConfig(
        model="micropainnet", epochs=2, warmup_epochs=1, batch_size=16, lr=3e-3, device="cpu"
    )
    fit(cfg, x_tr, y_tr, x_va, y_va, out, progress=False,
        provenance={"data_sha256": "abc123", "dataset": f"toy {MALICIOUS}"})  # fmt: skip
    from painmon.core.research.train import load_checkpoint, predict_logits

    model, meta = load_checkpoint(out)
    import torch

    logits = predict_logits(model, torch.from_numpy(x_te).permute(0, 3, 1, 2).contiguous())
    predictions = PartitionPredictions(x_te, y_te, logits, meta["temperature"], "test")
    metrics = classification_metrics(y_te, predictions.probs())
    evaluation = {
        **metrics,
        "partition": "test",
        "reliability": reliability_summary(logits, y_te, meta["temperature"]),
    }
    return out, predictions, evaluation


def _cv_summary() -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for fold in range(1, 4):
        scores = {
            k: float(rng.uniform(0.5, 0.8))
            for k in ("accuracy", "balanced_accuracy", "macro_f1", "quadratic_kappa")
        }
        scores["ece"] = float(rng.uniform(0.02, 0.1))
        rows.append({"seed": 42, "fold": fold, "run": f"seed42/fold{fold}", "best_epoch": 7,
                     "val": scores, "test": {k: v - 0.05 for k, v in scores.items()}})  # fmt: skip
    return summarise_cv(rows)


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def _section_titles(text: str) -> list[str]:
    return re.findall(r"<section id=\"[a-z]+\"><h2>([^<]+)</h2>", text)


@pytest.mark.slow
def test_full_report_is_self_contained_and_has_every_section(run, tmp_path):
    run_dir, predictions, evaluation = run
    path = write_report(
        tmp_path / "report.html",
        run_dir=run_dir,
        evaluation=evaluation,
        predictions=predictions,
        cv_summary=_cv_summary(),
        tables_markdown=TABLES_MD,
        title=f"Report {MALICIOUS}",
    )
    text = path.read_text()
    assert _section_titles(text) == list(SECTION_TITLES)
    images = _images(text)
    assert len(images) == 6  # curves, confusion, ROC, reliability, Grad-CAM, CV
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") and len(img) > 5000 for img in images)
    # Nothing is fetched from anywhere: no external src/href, scripts or style sheets.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text, re.IGNORECASE)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    # Header: model, data hash, intended use.
    assert "micropainnet" in text and "abc123" in text and "Not a medical device" in text
    # Headline metrics are the evaluation's own numbers.
    assert f"{evaluation['macro_f1']:.3f}" in text and f"{evaluation['accuracy']:.3f}" in text


def test_comparison_tables_render_as_html():
    out = markdown_to_html(TABLES_MD)
    assert "<h3>Table 2: baselines</h3>" in out
    assert '<th style="text-align:right">accuracy</th>' in out
    assert '<td style="text-align:center">0.887</td>' in out
    assert out.count("<tr>") == 4
    assert "<code>a | b</code>" in out and "<strong>0.5</strong>" in out
    assert "&lt;b&gt;bold&lt;/b&gt;" in out and "<b>" not in out
    assert "<li>paired t-test: p = 0.003</li>" in out
    assert markdown_to_html("just | a pipe\nno table") == "<p>just | a pipe no table</p>"


def test_sections_without_data_are_left_out(run, tmp_path):
    run_dir, _, _ = run
    only_run = write_report(tmp_path / "a.html", run_dir=run_dir).read_text()
    assert _section_titles(only_run) == ["Training curves"]
    assert len(_images(only_run)) == 1 and "Not a medical device" in only_run

    only_cv = write_report(tmp_path / "b.html", cv_summary=_cv_summary()).read_text()
    assert _section_titles(only_cv) == ["Cross-validation"]
    assert "micropainnet" not in only_cv and "Data SHA-256" not in only_cv

    empty = write_report(tmp_path / "c.html", tables_markdown="  \n").read_text()
    assert _section_titles(empty) == [] and "<img" not in empty and "Contents" not in empty


def test_cv_section_says_what_its_intervals_mean(tmp_path):
    summary = _cv_summary()
    text = write_report(tmp_path / "cv.html", cv_summary=summary).read_text()
    assert "mean ± std over 3 folds (one seed)" in text
    assert "corrected for training-set overlap (Nadeau &amp; Bengio 2003" in text
    # These rows carry no per-crop test predictions: no test interval is invented.
    assert summary["test"]["accuracy"]["ci95"] is None
    assert "no interval: the per-crop test predictions were not kept" in text


def test_reliability_shows_the_temperature_effect(run):
    _, predictions, _ = run
    summary = reliability_summary(predictions.logits, predictions.labels, 2.0)
    assert summary["temperature"] == 2.0
    assert sum(summary["before"]["counts"]) == sum(summary["after"]["counts"]) == 30

    # T > 1 flattens the softmax: mean confidence must drop.
    def mean_conf(bins):
        return sum(c * n for c, n in zip(bins["confidence"], bins["counts"], strict=True) if n)

    assert mean_conf(summary["after"]) < mean_conf(summary["before"])
    with pytest.raises(ValueError, match="one label and one logit row"):
        PartitionPredictions(predictions.images, predictions.labels[:-1], predictions.logits)


@pytest.mark.slow
def test_evaluate_partition_writes_the_report(run, tmp_path):
    run_dir, predictions, _ = run
    subjects = np.asarray([f"p{i % 6}" for i in range(len(predictions.labels))])
    paths = tuple(f"img{i}.png" for i in range(len(subjects)))
    crops = CropSet(predictions.images, predictions.labels, subjects, paths, (None,) * len(paths))
    report = CropReport(len(crops), len(crops), 0, len(crops))
    data = PreparedData(tmp_path / "toy.csv", (), crops, report, "0" * 64)
    plan = SplitPlan("0" * 64, 1, ("p0", "p1"), ("p2",), ("p3", "p4", "p5"))
    run_copy = tmp_path / "run"
    run_copy.mkdir()
    for f in run_dir.iterdir():
        (run_copy / f.name).write_bytes(f.read_bytes())
    plan.to_json(run_copy / "splits.json")
    result = evaluate_partition(run_copy, data, "test", tmp_path / "m.json",
                                report_path=tmp_path / "r.html")  # fmt: skip
    stored = json.loads((tmp_path / "m.json").read_text())
    rel = stored["details"]["reliability"]
    assert rel["after"]["ece"] == pytest.approx(result["ece"])
    assert len(rel["before"]["counts"]) == 15
    text = (tmp_path / "r.html").read_text()
    assert "Calibration" in text and "Grad-CAM by true class" in text
    assert "test</strong> subjects" in text
    # Test-set headline metrics carry subject-bootstrap intervals, and say so.
    cis = result["subject_ci"]["metrics"]
    assert set(cis) == {"accuracy", "macro_f1", "quadratic_kappa", "ece"}
    assert all(ci["n_subjects"] == 3 for ci in cis.values())
    assert f"[{cis['accuracy']['ci_low']:.3f}, {cis['accuracy']['ci_high']:.3f}]" in text
    assert "subject bootstrap" in text and "3 subjects (not images)" in text
