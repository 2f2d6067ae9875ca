"""Face stage of the live engine: landmarks, blendshapes and a patient that stays selected.

``FaceLandmarkerTracker`` runs the MediaPipe Face Landmarker (478 landmarks, 52
blendshapes, head pose) in VIDEO mode; ``HaarFaceTracker`` is the always-available
fallback (a box only, so no AU cross-check and no pose gate). Both hand every
face they see to a ``PatientSelector`` so that a nurse leaning into the picture
does not take over from the patient, and both return one ``FaceObservation``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import cv2
import numpy as np

from painmon.core.live.face_detect import FaceBox, FaceDetector, FaceModelError, HaarFaceDetector
from painmon.core.util.fileio import sha256_file
from painmon.core.util.paths import FACE_LANDMARKER_SHA256, find_face_model, haar_requested
from painmon.core.util.timeline import next_time
from painmon.core.util.validate import check_rgb_uint8

log = logging.getLogger(__name__)

Point = tuple[float, float]

NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 52

# Eye corners in MediaPipe's face mesh (subject's right eye: 33 outer, 133 inner;
# left eye: 362 inner, 263 outer). Corners move less than the iris, which follows gaze.
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (362, 263)


@dataclass(frozen=True, eq=False)
class FaceObservation:
    """The tracked patient's face in one frame (or why there is none).

    ``landmarks`` are (N, 2) float32 image pixels; ``blendshapes`` map MediaPipe's
    names to scores 0..1; ``eye_line`` is (subject's right eye, left eye) centres;
    ``head_pose_deg`` is (yaw, pitch, roll) from the landmarker's transformation
    matrix. ``n_faces`` counts every face in view, so a frame can hold faces but no
    patient (``face_found`` False) while the patient is hidden behind a visitor.
    ``track_id`` changes whenever the selector (re)acquires a patient.
    """

    t_s: float
    face_found: bool
    box: FaceBox | None
    n_faces: int
    detector: str
    landmarks: np.ndarray | None = None
    blendshapes: Mapping[str, float] | None = None
    eye_line: tuple[Point, Point] | None = None
    head_pose_deg: tuple[float, float, float] | None = None
    track_id: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.t_s):
            raise ValueError(f"t_s must be finite, got {self.t_s!r}")
        if not self.detector:
            raise ValueError("a FaceObservation must name the detector that made it")
        if isinstance(self.n_faces, bool) or not isinstance(self.n_faces, int) or self.n_faces < 0:
            raise ValueError(f"n_faces must be a non-negative int, got {self.n_faces!r}")
        if not self.face_found:
            extras = (
                self.box,
                self.landmarks,
                self.blendshapes,
                self.eye_line,
                self.head_pose_deg,
                self.track_id,
            )
            if any(v is not None for v in extras):
                raise ValueError("an observation without a face must not carry face data")
            return
        if self.box is None:
            raise ValueError("an observation with a face needs its box")
        if self.n_faces < 1:
            raise ValueError("an observation with a face must count at least one face in view")
        if self.landmarks is not None:
            points = np.asarray(self.landmarks, dtype=np.float32)
            if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
                raise ValueError(f"landmarks must have shape (N, 2), got {points.shape}")
            if not np.isfinite(points).all():
                raise ValueError("landmarks must be finite")
            points = points.copy()
            points.setflags(write=False)  # the dataclass is frozen; so is its array
            object.__setattr__(self, "landmarks", points)
        if self.blendshapes is not None:
            scores = {str(k): float(v) for k, v in self.blendshapes.items()}
            bad = [k for k, v in scores.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
            if bad:
                raise ValueError(f"blendshape scores must lie in 0..1: {', '.join(sorted(bad))}")
            object.__setattr__(self, "blendshapes", MappingProxyType(scores))
        if self.eye_line is not None:
            (ax, ay), (bx, by) = self.eye_line
            coords = (float(ax), float(ay), float(bx), float(by))
            if not all(math.isfinite(c) for c in coords):
                raise ValueError("eye_line must be finite")
            object.__setattr__(self, "eye_line", (coords[:2], coords[2:]))
        if self.head_pose_deg is not None:
            pose = tuple(float(a) for a in self.head_pose_deg)
            if len(pose) != 3 or not all(math.isfinite(a) for a in pose):
                raise ValueError("head_pose_deg must be three finite angles (yaw, pitch, roll)")
            object.__setattr__(self, "head_pose_deg", pose)


def box_iou(a: FaceBox, b: FaceBox) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    inter = ix * iy
    return inter / (a.area + b.area - inter)


# Slack for float media times: 9 frames at 30 fps must span 0.3 s.
_TIME_EPS_S = 1e-9


@dataclass(eq=False)
class _Track:
    """One face followed from frame to frame (the selector's private, mutable state)."""

    box: FaceBox
    last_seen_s: float
    streak_start_s: float
    streak_frames: int = 1  # consecutive frames with a detection, ending now (0 after a miss)
    confirmed: bool = False
    track_id: int | None = None  # given when the track is first reported


class PatientSelector:
    """Decides which detected face is the patient; faces are followed as tracks.

    Each face is followed frame to frame by overlap with its last box (or, failing
    overlap, a centre within ``max_jump`` box sides). A track is *confirmed* after
    ``confirm_s`` of media time and at least ``confirm_min_frames`` consecutive frames
    with a detection; one missed frame restarts the count. Only confirmed tracks carry
    weight, so a spurious one-frame detection (a blurred logo) never locks the patient
    and never keeps the real face from being taken.

    * No patient yet (start, or the patient was out of view for more than
      ``lost_after_s``): the largest face is reported at once, provisionally; the
      provisional face is kept while it is seen but holds nothing, and the first
      confirmed face (that one, else the largest confirmed face in view) becomes the
      patient.
    * Patient seen: reported, whatever other faces do; a visitor, even a larger one,
      never replaces a visible patient.
    * Patient not seen: no face is reported rather than scoring someone else, until
      the patient has been missing for ``handover_after_s`` while exactly one confirmed
      face is in view; that face becomes the patient (within 0.5 s of the first frame
      without the patient, its confirmation included, at 4 frames/s or more). With
      several confirmed faces in view the patient is waited for up to ``lost_after_s``;
      then the largest face is taken.

    ``track_id`` changes whenever another track is reported. Time is the frame's
    media time; it must never go backwards.
    """

    def __init__(
        self,
        lost_after_s: float = 2.0,
        min_iou: float = 0.2,
        max_jump: float = 0.5,
        confirm_s: float = 0.3,
        confirm_min_frames: int = 3,
        handover_after_s: float = 0.3,
    ) -> None:
        # Finite: faces that left are kept for these times (handover_after_s=inf: never).
        for name, value in (("lost_after_s", lost_after_s), ("confirm_s", confirm_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name, value in (("max_jump", max_jump), ("handover_after_s", handover_after_s)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must lie in (0, 1], got {min_iou!r}")
        if isinstance(confirm_min_frames, bool) or not isinstance(confirm_min_frames, int):
            raise ValueError(f"confirm_min_frames must be an int, got {confirm_min_frames!r}")
        if confirm_min_frames < 1:
            raise ValueError(f"confirm_min_frames must be >= 1, got {confirm_min_frames}")
        self.lost_after_s = float(lost_after_s)
        self.min_iou = float(min_iou)
        self.max_jump = float(max_jump)
        self.confirm_s = float(confirm_s)
        self.confirm_min_frames = confirm_min_frames
        self.handover_after_s = float(handover_after_s)
        self.reset()

    def reset(self) -> None:
        """Forget every face: the next face seen is chosen as at start."""
        self._tracks: list[_Track] = []
        self._patient: _Track | None = None  # confirmed
        self._provisional: _Track | None = None  # reported while there is no patient
        self._last_t_s: float | None = None
        self._ids_given = 0
        self._patients_confirmed = 0

    @property
    def _reported(self) -> _Track | None:
        return self._patient if self._patient is not None else self._provisional

    @property
    def track_id(self) -> int | None:
        """Id of the patient's track (or of the provisional face while there is no patient)."""
        track = self._reported
        return None if track is None else track.track_id

    @property
    def patient_box(self) -> FaceBox | None:
        """The last box the patient (or the provisional face) was seen in."""
        track = self._reported
        return None if track is None else track.box

    @property
    def confirmed(self) -> bool:
        """Whether a confirmed patient is held (False: none, or a provisional face only)."""
        return self._patient is not None

    def update(self, boxes: Sequence[FaceBox], t_s: float) -> int | None:
        """Index into ``boxes`` of the patient's face, or None when the patient is not in view."""
        t_s = next_time(t_s, self._last_t_s)
        self._last_t_s = t_s
        seen = self._follow(boxes, t_s)
        index = self._select(seen, t_s)
        self._prune(t_s)
        return index

    def _follow(self, boxes: Sequence[FaceBox], t_s: float) -> dict[_Track, int]:
        """Match boxes to tracks (patient first), start tracks for the rest; track -> index."""
        free = set(range(len(boxes)))
        seen: dict[_Track, int] = {}
        # The patient picks first: a face overlapping it (a nurse leaning in) cannot take its box.
        first = [t for t in (self._patient, self._provisional) if t is not None]
        rest = sorted(
            (t for t in self._tracks if t not in first),
            key=lambda t: (not t.confirmed, -t.streak_frames),
        )
        for track in first + rest:
            index = self._nearest(boxes, track.box, free)
            if index is not None:
                free.discard(index)
                seen[track] = index
        for track in self._tracks:
            index = seen.get(track)
            if index is None:
                track.streak_frames = 0
                continue
            track.box = boxes[index]
            track.last_seen_s = t_s
            if track.streak_frames == 0:
                track.streak_start_s = t_s
            track.streak_frames += 1
            self._check_confirmed(track, t_s)
        for index in sorted(free):
            track = _Track(boxes[index], t_s, t_s)
            self._check_confirmed(track, t_s)
            self._tracks.append(track)
            seen[track] = index
        return seen

    def _check_confirmed(self, track: _Track, t_s: float) -> None:
        if (
            not track.confirmed
            and track.streak_frames >= self.confirm_min_frames
            and t_s - track.streak_start_s >= self.confirm_s - _TIME_EPS_S
        ):
            track.confirmed = True

    def _select(self, seen: dict[_Track, int], t_s: float) -> int | None:
        confirmed = [t for t in seen if t.confirmed]
        patient = self._patient
        if patient is not None:
            if patient in seen:
                return seen[patient]
            missing_s = t_s - patient.last_seen_s
            if missing_s <= self.lost_after_s:
                if missing_s >= self.handover_after_s - _TIME_EPS_S and len(confirmed) == 1:
                    return self._take(confirmed[0], seen, "the only face in view")
                return None  # briefly hidden: score nobody rather than someone else
            self._tracks.remove(patient)
            self._patient = None
        if confirmed:
            chosen = self._provisional if self._provisional in confirmed else None
            if chosen is None:
                chosen = max(confirmed, key=lambda t: t.box.area)
            return self._take(chosen, seen, "the largest face")
        if self._provisional not in seen:
            if not seen:
                return None
            self._provisional = max(seen, key=lambda t: t.box.area)
            self._give_id(self._provisional)
        return seen[self._provisional]

    def _take(self, track: _Track, seen: dict[_Track, int], reason: str) -> int:
        """Make a confirmed track the patient."""
        old = self._patient
        if old is not None:
            self._tracks.remove(old)
        self._patient, self._provisional = track, None
        self._give_id(track)
        self._patients_confirmed += 1
        if self._patients_confirmed > 1:
            log.info("patient face re-acquired (track %d): %s", track.track_id, reason)
        else:
            log.debug("patient face confirmed (track %d)", track.track_id)
        return seen[track]

    def _give_id(self, track: _Track) -> None:
        if track.track_id is None:
            self._ids_given += 1
            track.track_id = self._ids_given

    def _prune(self, t_s: float) -> None:
        # A confirmed face may vanish as long as the patient may; an unconfirmed one
        # keeps its identity (not its streak) through a miss shorter than confirm_s.
        def alive(track: _Track) -> bool:
            keep_s = self.lost_after_s if track.confirmed else self.confirm_s
            return track is self._patient or t_s - track.last_seen_s <= keep_s

        self._tracks = [t for t in self._tracks if alive(t)]
        if self._provisional is not None and self._provisional not in self._tracks:
            self._provisional = None

    def _nearest(self, boxes: Sequence[FaceBox], previous: FaceBox, free: set[int]) -> int | None:
        best, best_key = None, None
        side = max(previous.width, previous.height)
        px, py = previous.center
        for i in sorted(free):
            box = boxes[i]
            iou = box_iou(box, previous)
            cx, cy = box.center
            jump = math.hypot(cx - px, cy - py) / side
            if iou < self.min_iou and jump > self.max_jump:
                continue
            key = (iou, -jump)
            if best_key is None or key > best_key:
                best, best_key = i, key
        return best


class FaceTracker(Protocol):
    name: str

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation: ...

    def close(self) -> None: ...


def eye_line_from_landmarks(landmarks: np.ndarray) -> tuple[Point, Point] | None:
    """Centres of the subject's right and left eye from MediaPipe face-mesh landmarks."""
    if landmarks is None or len(landmarks) < NUM_LANDMARKS - 10:  # 468 without irises
        return None
    right = landmarks[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    left = landmarks[list(LEFT_EYE_CORNERS)].mean(axis=0)
    return (float(right[0]), float(right[1])), (float(left[0]), float(left[1]))


def head_pose_from_matrix(matrix: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from MediaPipe's 4x4 facial transformation matrix."""
    rot = np.asarray(matrix, dtype=np.float64)[:3, :3]
    # Remove any scale so the angles come from a pure rotation.
    rot = rot / np.linalg.norm(rot, axis=0, keepdims=True)
    yaw = math.degrees(math.atan2(rot[0, 2], rot[2, 2]))
    pitch = math.degrees(math.asin(max(-1.0, min(1.0, -rot[1, 2]))))
    roll = math.degrees(math.atan2(rot[1, 0], rot[1, 1]))
    return yaw, pitch, roll


def _box_from_points(points: np.ndarray, width: int, height: int, score: float) -> FaceBox | None:
    x0, y0 = max(0.0, float(points[:, 0].min())), max(0.0, float(points[:, 1].min()))
    x1 = min(float(width), float(points[:, 0].max()))
    y1 = min(float(height), float(points[:, 1].max()))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return FaceBox(x0, y0, x1 - x0, y1 - y0, score)


class FaceLandmarkerTracker:
    """MediaPipe Face Landmarker in VIDEO mode plus patient selection."""

    name = "mediapipe-landmarker"

    def __init__(
        self,
        bundle: str | Path,
        num_faces: int = 4,
        min_confidence: float = 0.5,
        selector: PatientSelector | None = None,
        expected_sha256: str | None = FACE_LANDMARKER_SHA256,
        video: bool = True,
    ) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        path = Path(bundle)
        if not path.is_file():
            raise FaceModelError(f"face model not found: {path}. Run `painmon models download`.")
        buffer = path.read_bytes()
        if expected_sha256 is not None:
            actual = sha256_file(path)
            if actual != expected_sha256:
                raise FaceModelError(
                    f"face model {path} has SHA-256 {actual[:12]}…, expected "
                    f"{expected_sha256[:12]}… (corrupt or a different release). "
                    "Delete it and run `painmon models download`."
                )
        if not 1 <= num_faces <= 16:
            raise ValueError(f"num_faces must lie in 1..16, got {num_faces}")
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=buffer),
            # VIDEO tracks a stream; IMAGE treats every call alone (dataset crops).
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=num_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        try:
            self._landmarker = vision.FaceLandmarker.create_from_options(options)
        except (RuntimeError, ValueError) as exc:
            raise FaceModelError(f"face model {path} could not be loaded: {exc}") from exc
        self.bundle = path
        # The landmarker reports no per-face score; every face it returns passed this threshold.
        self._score = float(min_confidence)
        self.selector = selector if selector is not None else PatientSelector()
        self._last_ms: int | None = None
        self._last_stamp_s: float | None = None
        self._video = video

    def _timestamp_ms(self, t_s: float) -> int:
        t_s = next_time(t_s, self._last_stamp_s)
        self._last_stamp_s = t_s
        ms = round(t_s * 1000.0)
        if self._last_ms is not None:
            # MediaPipe's VIDEO mode needs strictly increasing stamps; frames < 1 ms apart happen.
            ms = max(ms, self._last_ms + 1)
        self._last_ms = ms
        return ms

    def _faces(self, rgb: np.ndarray, t_s: float | None) -> tuple[Any, list]:
        """The landmarker's raw result and (index, landmark box, points) per face."""
        import mediapipe as mp

        if self._landmarker is None:
            raise RuntimeError("the face tracker was closed")
        image = check_rgb_uint8(rgb)
        height, width = image.shape[:2]
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=image)
        if self._video:
            result = self._landmarker.detect_for_video(mp_image, self._timestamp_ms(float(t_s)))
        else:
            result = self._landmarker.detect(mp_image)
        faces = []
        for i, normalized in enumerate(result.face_landmarks):
            points = np.array([(p.x * width, p.y * height) for p in normalized], np.float32)
            box = _box_from_points(points, width, height, self._score)
            if box is not None:
                faces.append((i, box, points))
        return result, faces

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        """Landmarks, blendshapes and pose of the patient's face in one RGB frame."""
        result, faces = self._faces(rgb, t_s)
        index = self.selector.update([f[1] for f in faces], t_s)
        if index is None:
            return FaceObservation(t_s, False, None, len(faces), self.name)
        source, box, points = faces[index]
        blendshapes = None
        if source < len(result.face_blendshapes):
            blendshapes = {
                c.category_name: min(1.0, max(0.0, float(c.score)))
                for c in result.face_blendshapes[source]
            }
        pose = None
        if source < len(result.facial_transformation_matrixes):
            pose = head_pose_from_matrix(result.facial_transformation_matrixes[source])
        return FaceObservation(
            t_s=t_s,
            face_found=True,
            box=box,
            n_faces=len(faces),
            detector=self.name,
            landmarks=points,
            blendshapes=blendshapes,
            eye_line=eye_line_from_landmarks(points),
            head_pose_deg=pose,
            track_id=self.selector.track_id,
        )

    def close(self) -> None:
        landmarker, self._landmarker = getattr(self, "_landmarker", None), None
        if landmarker is not None:
            landmarker.close()

    def __enter__(self) -> FaceLandmarkerTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HaarFaceTracker:
    """OpenCV Haar boxes plus patient selection: no landmarks, blendshapes or pose."""

    name = "haar"

    def __init__(
        self, selector: PatientSelector | None = None, detect_max_side_px: int = 320
    ) -> None:
        if detect_max_side_px < 64:
            raise ValueError(f"detect_max_side_px must be >= 64, got {detect_max_side_px}")
        self._detector = HaarFaceDetector()
        self.selector = selector if selector is not None else PatientSelector()
        # Haar costs ~130 ms on a 640x360 frame here; half size keeps the fallback near real time.
        self.detect_max_side_px = int(detect_max_side_px)

    def observe(self, rgb: np.ndarray, t_s: float) -> FaceObservation:
        """The patient's face box in one RGB frame."""
        image = check_rgb_uint8(rgb)
        height, width = image.shape[:2]
        scale = min(1.0, self.detect_max_side_px / max(height, width))
        if scale < 1.0:
            small = cv2.resize(
                image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
            )
        else:
            small = image
        boxes = [
            FaceBox(b.x / scale, b.y / scale, b.width / scale, b.height / scale, b.score)
            for b in self._detector.detect(small)
        ]
        index = self.selector.update(boxes, t_s)
        if index is None:
            return FaceObservation(float(t_s), False, None, len(boxes), self.name)
        return FaceObservation(
            t_s=float(t_s),
            face_found=True,
            box=boxes[index],
            n_faces=len(boxes),
            detector=self.name,
            track_id=self.selector.track_id,
        )

    def close(self) -> None:
        self._detector.close()

    def __enter__(self) -> HaarFaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LandmarkerFaceDetector:
    """Face boxes framed exactly as the live tracker frames them (the landmark extent).

    Dataset crops for training use this, so a model sees the same framing at the
    bedside as in training; BlazeFace boxes are tighter and sit higher.
    """

    name = "mediapipe-landmarker"

    def __init__(self, bundle: str | Path, num_faces: int = 4) -> None:
        self._tracker = FaceLandmarkerTracker(bundle, num_faces=num_faces, video=False)

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        return [box for box, _ in self.detect_with_eyes(rgb)]

    def detect_with_eyes(self, rgb: np.ndarray) -> list[tuple[FaceBox, tuple[Point, Point] | None]]:
        """Boxes, largest first, each with its eye line (as the live tracker aligns crops)."""
        return [(box, eye_line) for box, eye_line, _ in self.detect_with_landmarks(rgb)]

    def detect_with_landmarks(
        self, rgb: np.ndarray
    ) -> list[tuple[FaceBox, tuple[Point, Point] | None, np.ndarray]]:
        """Boxes, largest first, each with its eye line and (478, 2) landmarks in pixels."""
        _, faces = self._tracker._faces(rgb, None)
        found = [(box, eye_line_from_landmarks(points), points) for _, box, points in faces]
        return sorted(found, key=lambda item: item[0].area, reverse=True)

    def close(self) -> None:
        self._tracker.close()

    def __enter__(self) -> LandmarkerFaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_crop_detector(face_model: str | Path | None = None) -> FaceDetector:
    """The detector for dataset crops: the live tracker's framing (landmarker), else Haar."""
    bundle = find_face_model(face_model)
    if bundle is None:
        if haar_requested(face_model):
            log.info("dataset crops: OpenCV Haar cascade (chosen with --face-model haar)")
        else:
            log.warning("dataset crops: OpenCV Haar cascade (no Face Landmarker bundle found)")
        return HaarFaceDetector()
    return LandmarkerFaceDetector(bundle)


def create_face_tracker(face_model: str | Path | None = None, num_faces: int = 4) -> FaceTracker:
    """The Face Landmarker (shipped with painmon), or Haar when asked for or when it is missing."""
    bundle = find_face_model(face_model)
    if bundle is None:
        if haar_requested(face_model):
            log.warning(
                "face tracker: OpenCV Haar cascade, as chosen (--face-model haar): no AU "
                "cross-check or pose gate, and crops framed unlike the Face Landmarker's."
            )
        else:
            log.warning(
                "face tracker: OpenCV Haar cascade (no Face Landmarker bundle found; no AU "
                "cross-check or pose gate). Reinstall painmon or run `painmon models download`."
            )
        return HaarFaceTracker()
    log.info("face tracker: MediaPipe Face Landmarker from %s", bundle)
    return FaceLandmarkerTracker(bundle, num_faces=num_faces)
