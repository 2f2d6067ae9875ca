"""AU-estimate benchmark: does the blendshape PSPI stay low on happy faces and follow pain?

Two numbers, printed by ``python -m painmon.core.tools.bench_au``:

(a) On the shared real videos (people not in pain), the median AU PSPI over laughing,
    smiling and talking stretches (``MEDIA_STRETCHES``; target <= 1.0), with one crying
    stretch as the contrast that should read higher. Each stretch is read
    twice: ``stream`` runs one estimator over the whole video from its first frame, as the
    bedside engine does (so the baseline is whatever the video showed before), and ``clip``
    runs a fresh estimator over the stretch alone, as a short clip would. The shared stills
    are read too (a still must get a provisional value).
(b) On synthetic patient videos (``painmon synth --video``, seeds 1-4, 60 s at 30 fps), the
    Pearson r between the AU PSPI and the truth PSPI of ``<stem>.truth.csv`` over the frames
    that have an estimate (target >= 0.8), and the share of frames with one.

Both use the Face Landmarker bundle painmon ships (``find_face_model``). Media live in
``../shared/media`` beside the repository (or ``$PAINMON_SHARED/media``, or ``--media``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from painmon.core.live.au import AUEstimate, AUEstimator
from painmon.core.live.face import FaceLandmarkerTracker, FaceObservation
from painmon.core.util.errors import InvalidInputError
from painmon.core.util.paths import find_face_model

log = logging.getLogger(__name__)

PSPI_TARGET_HAPPY = 1.0
R_TARGET_SYNTH = 0.8
SYNTH_SEEDS: tuple[int, ...] = (1, 2, 3, 4)
STILLS: tuple[str, ...] = ("single_face.jpg", "multi_face.jpg")


@dataclass(frozen=True)
class Stretch:
    """A time range of a shared video showing one not-in-pain behaviour, and why it was chosen."""

    video: str
    start_s: float
    end_s: float
    kind: str
    reason: str


# Chosen by looking at frames (every 3rd-24th, saved as contact sheets). WolfgangLanger_Pexels
# (23.976 fps, 19.7 s) shows crying 0-5.5 s, a calm face with a hand over the mouth 6-9.5 s,
# then smiling and laughing; single_face.mp4 and the face part of face_noface.mov (same man)
# show a neutral face for 0.6 s, then a broad toothy smile.
MEDIA_STRETCHES: tuple[Stretch, ...] = (
    Stretch(
        "WolfgangLanger_Pexels.mp4", 10.4, 11.3, "smiling",
        "hand gone, closed broad smile with teeth, eyes open",
    ),
    Stretch(
        "WolfgangLanger_Pexels.mp4", 11.4, 12.3, "talking",
        "mouth opens and changes shape frame to frame (speech-like) while smiling",
    ),
    Stretch(
        "WolfgangLanger_Pexels.mp4", 12.4, 16.5, "laughing",
        "open-mouth laugh, teeth bared, cheeks raised, eyes narrowed",
    ),
    Stretch(
        "WolfgangLanger_Pexels.mp4", 16.5, 19.7, "laughing",
        "laugh with the head tilted down, eyes narrowing then shut from ~18.3 s",
    ),
    Stretch(
        "WolfgangLanger_Pexels.mp4", 1.0, 5.5, "crying",
        "contrast, not a target: distress, brows knit, eyes squeezed shut; should read higher",
    ),
    Stretch(
        "single_face.mp4", 0.7, 2.4, "smiling",
        "posed toothy smile after 0.6 s of neutral face (one blink at 0.9 s)",
    ),
    Stretch(
        "face_noface.mov", 0.7, 2.9, "smiling",
        "same man, same toothy smile, before the cut to the cartoon",
    ),
)  # fmt: skip


def default_media_dir() -> Path:
    """``$PAINMON_SHARED/media``, else ``shared/media`` beside the repository."""
    shared = os.environ.get("PAINMON_SHARED")
    if shared:
        return Path(shared) / "media"
    import painmon

    return Path(painmon.__file__).resolve().parent.parent / "shared" / "media"


def observe_video(path: str | Path, face_model: str | Path) -> list[FaceObservation]:
    """Face Landmarker observations of every frame of a video, stamped index / fps."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise InvalidInputError(f"could not open video {path}")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    observations = []
    try:
        with FaceLandmarkerTracker(face_model) as tracker:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                observations.append(tracker.observe(rgb, len(observations) / fps))
    finally:
        capture.release()
    return observations


def observe_still(path: str | Path, face_model: str | Path) -> FaceObservation:
    """The Face Landmarker observation of one image (IMAGE mode)."""
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise InvalidInputError(f"could not read image {path}")
    with FaceLandmarkerTracker(face_model, video=False) as tracker:
        return tracker.observe(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 0.0)


def run_estimator(
    observations: Sequence[FaceObservation], estimator: AUEstimator | None = None
) -> list[AUEstimate]:
    """One estimate per observation, in order, from one (by default fresh) estimator."""
    estimator = estimator if estimator is not None else AUEstimator()
    return [estimator.update(o, o.t_s) for o in observations]


def _median_or_nan(values: Sequence[float | None]) -> tuple[float, float]:
    """Median of the known values and the share of values known."""
    known = [v for v in values if v is not None]
    if not values:
        return math.nan, 0.0
    return (statistics.median(known) if known else math.nan), len(known) / len(values)


def media_report(
    media_dir: Path,
    face_model: Path,
    make_estimator: Callable[[], AUEstimator] = AUEstimator,
    stretches: Sequence[Stretch] = MEDIA_STRETCHES,
) -> list[dict[str, object]]:
    """Median AU PSPI per stretch, whole-stream and clip-alone, and the stills' PSPI."""
    rows: list[dict[str, object]] = []
    cache: dict[str, list[FaceObservation]] = {}
    for stretch in stretches:
        if stretch.video not in cache:
            cache[stretch.video] = observe_video(media_dir / stretch.video, face_model)
        observations = cache[stretch.video]
        stream = run_estimator(observations, make_estimator())
        inside = [i for i, o in enumerate(observations) if stretch.start_s <= o.t_s < stretch.end_s]
        stream_median, stream_known = _median_or_nan([stream[i].pspi for i in inside])
        clip = run_estimator([observations[i] for i in inside], make_estimator())
        clip_median, clip_known = _median_or_nan([e.pspi for e in clip])
        rows.append(
            {
                "item": f"{stretch.video} {stretch.start_s:g}-{stretch.end_s:g} s",
                "kind": stretch.kind,
                "frames": len(inside),
                "stream_median": stream_median,
                "stream_known": stream_known,
                "clip_median": clip_median,
                "clip_known": clip_known,
            }
        )
    for name in STILLS:
        observation = observe_still(media_dir / name, face_model)
        estimate = make_estimator().update(observation, 0.0)
        rows.append(
            {
                "item": name,
                "kind": "still",
                "frames": 1,
                "stream_median": math.nan if estimate.pspi is None else estimate.pspi,
                "stream_known": float(estimate.pspi is not None),
                "clip_median": math.nan,
                "clip_known": math.nan,
            }
        )
    return rows


def read_truth_pspi(truth_csv: Path) -> dict[int, float]:
    """Frame index -> truth PSPI from a synthetic video's ``<stem>.truth.csv``."""
    with truth_csv.open(newline="") as handle:
        return {int(row["frame"]): float(row["pspi"]) for row in csv.DictReader(handle)}


def synth_report(
    workdir: Path,
    face_model: Path,
    make_estimator: Callable[[], AUEstimator] = AUEstimator,
    seeds: Sequence[int] = SYNTH_SEEDS,
    seconds: float = 60.0,
    fps: float = 30.0,
    reuse: bool = False,
) -> list[dict[str, object]]:
    """Pearson r of AU PSPI against truth PSPI on one synthetic video per seed."""
    from painmon.core.synth.stream import truth_csv_path, write_video

    rows: list[dict[str, object]] = []
    for seed in seeds:
        video = workdir / f"seed{seed}.mp4"
        if not (reuse and video.is_file() and truth_csv_path(video).is_file()):
            write_video(video, seconds, fps, seed)
        truth = read_truth_pspi(truth_csv_path(video))
        estimates = run_estimator(observe_video(video, face_model), make_estimator())
        pairs = [
            (e.pspi, truth[i]) for i, e in enumerate(estimates) if e.pspi is not None and i in truth
        ]
        r = math.nan
        if len(pairs) > 2:
            got, want = np.array(pairs).T
            if got.std() > 0 and want.std() > 0:
                r = float(np.corrcoef(got, want)[0, 1])
        rows.append(
            {
                "seed": seed,
                "frames": len(estimates),
                "known": len(pairs) / max(1, len(estimates)),
                "pearson_r": r,
                "truth_max": max(truth.values(), default=math.nan),
                "au_max": max((p for p, _ in pairs), default=math.nan),
            }
        )
    return rows


def format_media(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        f"(a) real faces not in pain: median AU PSPI (target <= {PSPI_TARGET_HAPPY:g}; "
        "crying is the contrast)",
        f"{'stretch':<42} {'kind':<9} {'n':>4} {'stream':>7} {'known':>6} {'clip':>7} {'known':>6}",
    ]
    for row in rows:
        clip = "-" if row["kind"] == "still" else f"{row['clip_median']:.2f}"
        clip_known = "-" if row["kind"] == "still" else f"{row['clip_known']:.0%}"
        lines.append(
            f"{row['item']:<42} {row['kind']:<9} {row['frames']:>4} "
            f"{row['stream_median']:>7.2f} {row['stream_known']:>6.0%} {clip:>7} {clip_known:>6}"
        )
    return "\n".join(lines)


def format_synth(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        f"(b) synthetic patients: Pearson r, AU PSPI vs truth PSPI (target >= {R_TARGET_SYNTH:g})",
        f"{'seed':>4} {'frames':>6} {'known':>6} {'r':>6} {'truth max':>9} {'AU max':>7}",
    ]
    for row in rows:
        lines.append(
            f"{row['seed']:>4} {row['frames']:>6} {row['known']:>6.0%} {row['pearson_r']:>6.3f} "
            f"{row['truth_max']:>9.1f} {row['au_max']:>7.1f}"
        )
    rs = [float(row["pearson_r"]) for row in rows]
    if rs:
        lines.append(f"mean r {np.nanmean(rs):.3f}, min r {np.nanmin(rs):.3f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (``painmon bench au`` and ``python -m`` share them)."""
    parser.add_argument("--media", type=Path, default=None, help="folder of the shared media")
    parser.add_argument("--face-model", type=Path, default=None)
    parser.add_argument("--synth-dir", type=Path, default=None, help="keep synthetic videos here")
    parser.add_argument("--reuse", action="store_true", help="reuse videos already in --synth-dir")
    parser.add_argument("--seeds", default=",".join(map(str, SYNTH_SEEDS)))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--skip-media", action="store_true")
    parser.add_argument("--skip-synth", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m painmon.core.tools.bench_au", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed options; prints both tables."""
    logging.basicConfig(level=logging.WARNING)
    face_model = find_face_model(args.face_model)
    if face_model is None:
        raise InvalidInputError("the AU benchmark needs the Face Landmarker, not Haar")
    if not args.skip_media:
        media = args.media or default_media_dir()
        if not media.is_dir():
            raise InvalidInputError(f"shared media not found at {media}: pass --media DIR")
        print(format_media(media_report(media, face_model)), flush=True)
    if not args.skip_synth:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if args.synth_dir is not None:
            args.synth_dir.mkdir(parents=True, exist_ok=True)
            rows = synth_report(
                args.synth_dir, face_model, seeds=seeds, seconds=args.seconds, fps=args.fps,
                reuse=args.reuse,
            )  # fmt: skip
        else:
            with tempfile.TemporaryDirectory(prefix="painmon-bench-au-") as tmp:
                rows = synth_report(
                    Path(tmp), face_model, seeds=seeds, seconds=args.seconds, fps=args.fps
                )
        print(format_synth(rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
