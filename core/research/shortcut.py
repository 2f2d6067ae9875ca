"""Framing shortcuts: how much of the pain class a crop's border alone gives away.

A crop's outer ring should show background, hair and ears, never the expression. If the
framing zooms or shifts with the expression (the landmark box shrinks as brows lower and eyes
close), the ring changes with the class and a classifier can read pain off the border. The
probe fits a multinomial logistic regression on only the outer ``ring_px`` pixels (their
first principal components) and scores every subject with a model that never saw it (the
project's subject-wise split plan: its K folds over train+val, then train+val -> test).
Near chance (0.20 for five balanced classes) means the framing carries no label.

    python -m painmon.core.research.shortcut --crops crops.npz
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from painmon.core.research.crops import CropSet
from painmon.core.research.splits import DEFAULT_FOLDS, DEFAULT_SEED, make_splits
from painmon.core.util.labels import NUM_CLASSES

log = logging.getLogger(__name__)

DEFAULT_RING_PX = 4
# A 64 px crop's ring is 2880 numbers; 64 principal components keep the fit to seconds and
# still see zoom and shift (they change the whole ring at once). Not whitened: whitening
# lifts noise components to the label's scale and the fit then chases them.
PROBE_COMPONENTS = 64


@dataclass(frozen=True)
class RingProbeResult:
    """Subject-wise accuracy of the outer-ring classifier, and what chance would give."""

    accuracy: float
    chance: float  # share of the most frequent class among the scored crops
    n_scored: int
    ring_px: int
    per_class_recall: tuple[float, ...]

    def to_text(self) -> str:
        recalls = ", ".join(f"{r:.2f}" for r in self.per_class_recall)
        return (
            f"outer-ring probe ({self.ring_px} px): subject-wise accuracy {self.accuracy:.3f} "
            f"(chance {self.chance:.3f}, {self.n_scored} crops; recall per class {recalls})"
        )


def ring_mask(size_px: int, ring_px: int = DEFAULT_RING_PX) -> np.ndarray:
    """Boolean (size_px, size_px) mask of the pixels within ``ring_px`` of the crop's edge."""
    if ring_px < 1 or 2 * ring_px >= size_px:
        raise ValueError(f"ring_px must lie in 1..{(size_px - 1) // 2}, got {ring_px}")
    mask = np.ones((size_px, size_px), dtype=bool)
    mask[ring_px:-ring_px, ring_px:-ring_px] = False
    return mask


def ring_features(images: np.ndarray, ring_px: int = DEFAULT_RING_PX) -> np.ndarray:
    """(N, ring pixels * channels) float32 features in 0..1 from uint8 (N, S, S, C) crops."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"crops must be (N, S, S, C), got {images.shape}")
    mask = ring_mask(images.shape[1], ring_px)
    return images[:, mask, :].reshape(len(images), -1).astype(np.float32) / 255.0


def ring_probe(
    images: np.ndarray,
    labels: np.ndarray,
    subjects: np.ndarray,
    ring_px: int = DEFAULT_RING_PX,
    folds: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
    data_sha256: str = "0" * 64,
) -> RingProbeResult:
    """Subject-wise accuracy of a logistic regression that sees only each crop's outer ring.

    Needs as many subjects as :func:`make_splits` does for ``folds`` folds.
    """
    from painmon.core.research.datasets import Sample

    labels = np.asarray(labels, dtype=np.int64)
    subjects = np.asarray(subjects, dtype=str)
    features = ring_features(images, ring_px)
    if not (len(features) == len(labels) == len(subjects)):
        raise ValueError("images, labels and subjects need one entry per crop")
    samples = [
        Sample(Path(f"crop{i}"), str(s), int(y))
        for i, (s, y) in enumerate(zip(subjects, labels, strict=True))
    ]
    plan = make_splits(samples, data_sha256, seed=seed, folds=folds)
    # Every subject scored once: train+val subjects by their fold, test by all of train+val.
    rounds = [(fold.train, fold.val) for fold in plan.folds]
    rounds.append((plan.train + plan.val, plan.test))
    predicted = np.full(len(labels), -1, dtype=np.int64)
    for train_subjects, scored_subjects in rounds:
        fit = np.isin(subjects, train_subjects)
        scored = np.isin(subjects, scored_subjects)
        if len(np.unique(labels[fit])) < 2:
            predicted[scored] = labels[fit][0]
            continue
        components = min(PROBE_COMPONENTS, int(fit.sum()) - 1, features.shape[1])
        model = make_pipeline(
            StandardScaler(),
            PCA(n_components=components, random_state=seed),
            LogisticRegression(C=1.0, max_iter=3000),
        )
        model.fit(features[fit], labels[fit])
        predicted[scored] = model.predict(features[scored])
    done = predicted >= 0
    truth, guess = labels[done], predicted[done]
    counts = np.bincount(truth, minlength=NUM_CLASSES)
    recall = tuple(
        float((guess[truth == c] == c).mean()) if counts[c] else float("nan")
        for c in range(NUM_CLASSES)
    )
    return RingProbeResult(
        accuracy=float((guess == truth).mean()),
        chance=float(counts.max() / counts.sum()),
        n_scored=int(done.sum()),
        ring_px=int(ring_px),
        per_class_recall=recall,
    )


def ring_probe_crops(crops: CropSet, ring_px: int = DEFAULT_RING_PX, **kwargs) -> RingProbeResult:
    """:func:`ring_probe` of a :class:`CropSet` (e.g. ``painmon crops`` output)."""
    return ring_probe(
        crops.images, crops.labels, crops.subjects, ring_px, data_sha256=crops.data_sha256, **kwargs
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m painmon.core.research.shortcut",
        description="Outer-ring probe: can the crop's border alone predict the pain class?",
    )
    parser.add_argument("--crops", required=True, help="crops.npz written by `painmon crops`")
    parser.add_argument("--ring-px", type=int, default=DEFAULT_RING_PX)
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    crops, _ = CropSet.load_npz(args.crops)
    result = ring_probe_crops(crops, args.ring_px, folds=args.folds, seed=args.seed)
    framing = crops.preprocessing.get("framing", "box")
    print(f"{result.accuracy:.3f}")
    print(f"{result.to_text()}; framing {framing}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
