"""Synthetic patients, one face: procedural faces with known FACS action units.

Faces are drawn with OpenCV primitives in a canonical face frame (x across the face, one unit =
half the face width; y down, eyes near -0.2, mouth near +0.75), then shaded as a lit ellipsoid
with darker eye sockets so that both MediaPipe's BlazeFace and OpenCV's Haar cascade find them.
Every pain action unit of the PSPI changes the face the way FACS describes it (AU4 brows lowered
and drawn together with vertical furrows, AU6 cheeks raised with crow's feet, AU7 narrowed lids,
AU9 nose wrinkles, AU10 raised upper lip, AU43 closed eyes), scaled linearly by intensity so that
every FACS step is an equally visible change even in a 64 px face crop: besides the thin lines,
each action unit also moves a soft relief over an area a small network can see (glabella knot,
cheek mound and infraorbital furrow, lower-lid roll, bunched nose root). Identities and per-image
nuisances (light, pose, background, noise) are drawn independently of the action units, so who
the patient is never encodes the label; light, pose and resting quirks are kept mild enough not
to swamp a single FACS step.

Real faces at rest are not neutral: :class:`Expression` draws what a patient without pain does
(smiles, AU12 with a trace of AU6 when broad; speech, AU25/26; yawns, AU27 with drooping lids;
half-blinks; gaze shifts; mouth corners pulled down, AU15) and :class:`Identity`/:class:`Scene`
carry what no label should depend on (glasses, beards and stubble, a hand near the face, coloured
and hard light, sensor noise). None of these touches the pain action units, so the PSPI label
keeps its meaning: the cheek raise of a broad smile and the lids of a blink or yawn stay below
FACS intensity A (they round to 0), everything else involves no PSPI action unit at all.

Everything is a pure function of the seed: the same seed gives byte-identical images. Datasets
live in :mod:`painmon.core.synth.dataset`, videos in :mod:`painmon.core.synth.stream`; this
module imports neither.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from painmon.core.util.labels import (
    NUM_CLASSES,
    PSPI_CLASS_RANGES,
    pspi_from_aus,
    pspi_to_class,
)

AU_NAMES: tuple[str, ...] = ("au4", "au6", "au7", "au9", "au10", "au43")

# Approximate Fitzpatrick I-VI skin colours (RGB), jittered per identity.
FITZPATRICK_RGB: tuple[tuple[int, int, int], ...] = (
    (244, 210, 182),
    (232, 184, 148),
    (212, 160, 118),
    (184, 122, 84),
    (140, 88, 58),
    (92, 58, 40),
)
HAIR_STYLES: tuple[str, ...] = ("short", "long", "fringe", "bald", "curly")
_HAIR_RGB = ((28, 22, 20), (58, 40, 30), (96, 66, 42), (186, 154, 104), (132, 62, 36))
_IRIS_RGB = ((62, 40, 28), (96, 62, 38), (118, 98, 58), (88, 110, 80), (86, 118, 158))
_GOWN_RGB = ((120, 160, 192), (118, 168, 148), (222, 222, 216), (70, 78, 110), (150, 60, 66))
GLASSES_STYLES: tuple[str, ...] = ("none", "thin", "thick")
BEARD_STYLES: tuple[str, ...] = ("none", "stubble", "beard")
HAND_POSES: tuple[str, ...] = ("none", "chin", "cheek", "temple")
_FRAME_RGB = ((24, 22, 22), (70, 44, 30), (168, 140, 86), (150, 152, 156))

# Per-identity and per-image nuisance rates, the same for every pain class.
GLASSES_RATE = 0.25
STUBBLE_RATE = 0.2
BEARD_RATE = 0.12
HAND_RATE = 0.12
HARD_LIGHT_RATE = 0.3
# Non-pain expressions. Smiles and yawns say "no pain" (class 0; some in class 1, where a
# single trace AU can sit on a content face); speech, half-blinks and gaze shifts happen at
# any pain level, so that an open mouth or a glance is never a shortcut to the label.
SMILE_RATE_BY_CLASS: tuple[float, ...] = (0.35, 0.12, 0.0, 0.0, 0.0)
YAWN_RATE_BY_CLASS: tuple[float, ...] = (0.08, 0.03, 0.0, 0.0, 0.0)
DUCHENNE_SHARE = 0.5  # of the broad smiles
SPEECH_RATE = 0.25
BLINK_RATE = 0.1
GAZE_SHIFT_RATE = 0.3
# AU15 (lip corner depressor, not a PSPI unit): a set, down-turned mouth in boredom, sadness,
# concentration, at rest, or held against a smile (a suppressed smile), at every pain level and
# whatever else the face does, so that the mouth corners' height never reads as pain on its own. At
# full strength the corners drop CORNER_DEPRESS_UNITS below the lips' middle, a little more than one
# AU10 step lifts the upper lip (0.036).
CORNER_DEPRESS_RATE = 0.3
CORNER_DEPRESS_UNITS = 0.05

# Canonical feature rows (face half-width units, y down).
_EYE_Y = -0.18
_BROW_Y = -0.50
_MOUTH_Y = 0.76


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class ActionUnits:
    """FACS intensities of the PSPI action units: 0-5 (A-E), AU43 0-1; floats while animating."""

    au4: float = 0.0
    au6: float = 0.0
    au7: float = 0.0
    au9: float = 0.0
    au10: float = 0.0
    au43: float = 0.0

    def __post_init__(self) -> None:
        for name in AU_NAMES:
            value = getattr(self, name)
            top = 1.0 if name == "au43" else 5.0
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= top):
                raise ValueError(f"{name} must lie in 0..{top:g}, got {value!r}")

    def rounded(self) -> tuple[int, int, int, int, int, int]:
        """Integer FACS intensities (half up); AU43 counts as closed from half-closed on."""
        return tuple(math.floor(getattr(self, n) + 0.5) for n in AU_NAMES)  # type: ignore[return-value]

    @property
    def pspi(self) -> int:
        return pspi_from_aus(*self.rounded())

    @property
    def label(self) -> int:
        return pspi_to_class(self.pspi)


@dataclass(frozen=True)
class Identity:
    """One synthetic person at rest: face geometry, colouring, hair, age cues and neutral quirks."""

    fitzpatrick: int
    skin_rgb: tuple[int, int, int]
    face_width: float  # horizontal stretch of the whole face
    face_length: float  # vertical stretch
    jaw_width: float  # 0.45 pointed .. 0.9 square
    hair_style: str
    hair_rgb: tuple[int, int, int]
    hairline_y: float
    brow_rgb: tuple[int, int, int]
    brow_thickness: float
    brow_arch: float
    brow_height: float  # resting brow offset (quirk), units
    brow_asymmetry: float
    eye_spacing: float
    eye_width: float
    eye_open: float  # resting aperture multiplier (quirk)
    eye_tilt: float
    iris_rgb: tuple[int, int, int]
    nose_length: float
    nose_width: float
    mouth_width: float
    upper_lip: float
    lower_lip: float
    lip_rgb: tuple[int, int, int]
    mouth_curve: float  # resting corners: + down, - up (quirk)
    age_years: int
    gown_rgb: tuple[int, int, int]
    texture_seed: int
    glasses: str = "none"
    glasses_rgb: tuple[int, int, int] = (24, 22, 22)
    beard: str = "none"

    def __post_init__(self) -> None:
        if not 1 <= self.fitzpatrick <= 6:
            raise ValueError(f"Fitzpatrick type must be 1-6, got {self.fitzpatrick}")
        if self.hair_style not in HAIR_STYLES:
            raise ValueError(f"hair style must be one of {HAIR_STYLES}, got {self.hair_style!r}")
        if self.glasses not in GLASSES_STYLES:
            raise ValueError(f"glasses must be one of {GLASSES_STYLES}, got {self.glasses!r}")
        if self.beard not in BEARD_STYLES:
            raise ValueError(f"beard must be one of {BEARD_STYLES}, got {self.beard!r}")
        if not 18 <= self.age_years <= 100:
            raise ValueError(f"age must lie in 18..100 years, got {self.age_years}")
        for name in (
            "skin_rgb",
            "hair_rgb",
            "brow_rgb",
            "iris_rgb",
            "lip_rgb",
            "gown_rgb",
            "glasses_rgb",
        ):
            rgb = getattr(self, name)
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise ValueError(f"{name} must be three values in 0..255, got {rgb!r}")
        if not (0.7 <= self.face_width <= 1.3 and 0.7 <= self.face_length <= 1.3):
            raise ValueError("face proportions out of range")

    @property
    def grey_fraction(self) -> float:
        return _clip01((self.age_years - 45) / 35.0)

    @property
    def wrinkle_depth(self) -> float:
        return _clip01((self.age_years - 35) / 45.0)


def _rgb_tuple(values: np.ndarray | tuple[float, ...]) -> tuple[int, int, int]:
    arr = np.clip(np.round(np.asarray(values, dtype=np.float64)), 0, 255).astype(int)
    return (int(arr[0]), int(arr[1]), int(arr[2]))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one person; every field comes from ``rng``."""
    fitz = int(rng.integers(1, 7))
    skin = (
        np.array(FITZPATRICK_RGB[fitz - 1], float)
        * rng.uniform(0.94, 1.05)
        * rng.uniform(0.96, 1.04, 3)
    )
    age = int(rng.integers(18, 91))
    style = HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))]
    hair_index = int(rng.integers(len(_HAIR_RGB))) if fitz <= 3 else int(rng.integers(2))
    hair = np.array(_HAIR_RGB[hair_index], float) * rng.uniform(0.85, 1.15)
    grey = _clip01((age - 45) / 35.0) * rng.uniform(0.3, 0.85)
    hair = hair * (1 - grey) + np.array([178, 176, 172]) * grey
    # Brows stay darker than the skin whatever the hair: real brows rarely vanish on camera.
    brow = np.minimum(hair * 0.7 + 8, skin * 0.45)
    iris_index = int(rng.integers(len(_IRIS_RGB))) if fitz <= 2 else int(rng.integers(3))
    lip = skin * np.array([0.80, 0.58, 0.58]) + np.array([28, 6, 10])
    lip = lip * rng.uniform(0.92, 1.05)
    person = Identity(
        fitzpatrick=fitz,
        skin_rgb=_rgb_tuple(skin),
        face_width=float(rng.uniform(0.9, 1.08)),
        face_length=float(rng.uniform(0.94, 1.06)),
        jaw_width=float(rng.uniform(0.5, 0.85)),
        hair_style=style,
        hair_rgb=_rgb_tuple(hair),
        hairline_y=float(rng.uniform(-1.0, -0.82)),
        brow_rgb=_rgb_tuple(brow),
        brow_thickness=float(rng.uniform(0.065, 0.095)),
        brow_arch=float(rng.uniform(0.04, 0.09)),
        # Resting quirks stay below one FACS step, so a neutral face never reads as pain.
        brow_height=float(rng.uniform(-0.02, 0.02)),
        brow_asymmetry=float(rng.uniform(-0.015, 0.015)),
        eye_spacing=float(rng.uniform(0.38, 0.44)),
        eye_width=float(rng.uniform(0.17, 0.20)),
        eye_open=float(rng.uniform(0.94, 1.08)),
        eye_tilt=float(rng.uniform(-0.01, 0.025)),
        iris_rgb=_rgb_tuple(np.array(_IRIS_RGB[iris_index], float) * rng.uniform(0.85, 1.1)),
        nose_length=float(rng.uniform(0.33, 0.41)),
        nose_width=float(rng.uniform(0.12, 0.17)),
        mouth_width=float(rng.uniform(0.31, 0.38)),
        upper_lip=float(rng.uniform(0.055, 0.075) * (1.0 - 0.2 * _clip01((age - 50) / 40))),
        lower_lip=float(rng.uniform(0.07, 0.1) * (1.0 - 0.2 * _clip01((age - 50) / 40))),
        lip_rgb=_rgb_tuple(lip),
        mouth_curve=float(rng.uniform(-0.02, 0.025)),
        age_years=age,
        gown_rgb=_rgb_tuple(np.array(_GOWN_RGB[int(rng.integers(len(_GOWN_RGB)))], float)),
        texture_seed=int(rng.integers(2**31)),
    )
    # Accessories are drawn last, so that every other trait of a seed's people stays as it was.
    glasses_u, beard_u, frame_u, thick_u = rng.random(4)
    glasses = "none"
    if glasses_u < GLASSES_RATE:
        glasses = "thick" if thick_u < 0.4 else "thin"
    beard = "none"
    if beard_u < BEARD_RATE:
        beard = "beard"
    elif beard_u < BEARD_RATE + STUBBLE_RATE:
        beard = "stubble"
    return replace(
        person,
        glasses=glasses,
        glasses_rgb=_FRAME_RGB[int(frame_u * len(_FRAME_RGB))],
        beard=beard,
    )


@dataclass(frozen=True)
class Scene:
    """Per-image nuisances: head pose, light, background, camera noise, focus, a hand nearby."""

    roll_deg: float = 0.0
    yaw_deg: float = 0.0
    light_azimuth_deg: float = 0.0
    light_elevation_deg: float = 20.0
    light_gain: float = 1.0
    ambient: float = 0.55
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    wall_top_rgb: tuple[int, int, int] = (200, 200, 196)
    wall_bottom_rgb: tuple[int, int, int] = (170, 172, 170)
    pillow: bool = True
    gaze_x: float = 0.0
    noise_sigma: float = 3.0
    blur_sigma: float = 0.7
    noise_seed: int = 0
    hand: str = "none"  # a hand resting near the face: chin, cheek or temple
    hand_side: float = 1.0  # +1 the image's right side of the face, -1 its left

    def __post_init__(self) -> None:
        if self.hand not in HAND_POSES:
            raise ValueError(f"hand must be one of {HAND_POSES}, got {self.hand!r}")
        if self.hand_side not in (-1.0, 1.0):
            raise ValueError(f"hand_side must be -1 or +1, got {self.hand_side!r}")
        if abs(self.roll_deg) > 30 or abs(self.yaw_deg) > 30:
            raise ValueError(
                f"head pose too large for a frontal face: roll {self.roll_deg}, yaw {self.yaw_deg}"
            )
        if not (0.2 <= self.light_gain <= 2.0 and 0.0 <= self.ambient <= 1.0):
            raise ValueError("light gain must lie in 0.2..2 and ambient in 0..1")
        if self.noise_sigma < 0 or self.blur_sigma < 0:
            raise ValueError("noise and blur must be non-negative")


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw the nuisances of one image (never from the label: pass a label-free ``rng``)."""
    wall = rng.uniform(90, 235) * rng.uniform(0.85, 1.15, 3)
    roll = float(rng.uniform(-8, 8))
    yaw = float(rng.uniform(-10, 10))
    hard_u, cast_u, hand_u, pose_u, side_u = rng.random(5)
    # Side light is kept moderate: at 64 px a hard half-face shadow hides a brow or a lid.
    # A share of images gets harder, lower-ambient side light (a bedside lamp, a window).
    azimuth = float(rng.uniform(-28, 28))
    ambient = float(rng.uniform(0.52, 0.7))
    if hard_u < HARD_LIGHT_RATE:
        azimuth = float(np.sign(azimuth) * rng.uniform(28, 40))
        ambient = float(rng.uniform(0.42, 0.52))
    # Colour of the light: daylight, warm tungsten or cool fluorescent.
    if cast_u < 0.5:
        tint = (float(rng.uniform(0.95, 1.05)), 1.0, float(rng.uniform(0.93, 1.05)))
    elif cast_u < 0.75:
        tint = (float(rng.uniform(1.04, 1.1)), 1.0, float(rng.uniform(0.8, 0.9)))
    else:
        tint = (float(rng.uniform(0.9, 0.96)), 1.0, float(rng.uniform(1.04, 1.12)))
    gain = float(rng.uniform(0.72, 1.22))
    pose = HAND_POSES[1 + int(pose_u * (len(HAND_POSES) - 1))] if hand_u < HAND_RATE else "none"
    return Scene(
        roll_deg=roll,
        yaw_deg=yaw,
        light_azimuth_deg=azimuth,
        light_elevation_deg=float(rng.uniform(5, 30)),
        light_gain=gain,
        ambient=ambient,
        tint=tint,
        wall_top_rgb=_rgb_tuple(wall),
        wall_bottom_rgb=_rgb_tuple(wall * rng.uniform(0.75, 1.0)),
        pillow=bool(rng.random() < 0.5),
        gaze_x=float(rng.uniform(-0.03, 0.03)),
        # Dim pictures are noisier: the camera turns its gain up.
        noise_sigma=float(rng.uniform(1.0, 5.0) / math.sqrt(gain)),
        blur_sigma=float(rng.uniform(0.4, 1.0)),
        noise_seed=int(rng.integers(2**31)),
        hand=pose,
        hand_side=1.0 if side_u < 0.5 else -1.0,
    )


@dataclass(frozen=True)
class Expression:
    """Non-pain facial behaviour on top of the pain action units (all 0 = the neutral face).

    ``smile`` is AU12 (lip corners pulled up and out, 0..1); ``cheek_raise`` the AU6 of a broad
    (Duchenne) smile as a FACS intensity below A (< 0.5, so PSPI is untouched); ``jaw_drop`` the
    lips parted and jaw lowered of speech (AU25/26, 0..1); ``yawn`` the wide jaw drop of AU27
    (0..1); ``lid_closure`` a half-blink or drowsy lids (< 0.5, so AU43 stays 0); ``gaze_x`` and
    ``gaze_y`` an eye movement (face half-width units); ``corner_depress`` AU15, the mouth corners
    pulled down (0..1, not a pain unit).
    """

    smile: float = 0.0
    cheek_raise: float = 0.0
    jaw_drop: float = 0.0
    yawn: float = 0.0
    lid_closure: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0
    corner_depress: float = 0.0

    def __post_init__(self) -> None:
        for name in ("smile", "jaw_drop", "yawn", "corner_depress"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must lie in 0..1, got {value!r}")
        for name in ("cheek_raise", "lid_closure"):
            value = getattr(self, name)
            # Half an intensity step would round up to a pain action unit and change the PSPI.
            if not (math.isfinite(value) and 0.0 <= value < 0.5):
                raise ValueError(f"{name} must lie in 0..0.5 (below FACS A), got {value!r}")
        if not (abs(self.gaze_x) <= 0.08 and abs(self.gaze_y) <= 0.04):
            raise ValueError(f"gaze shift too large: ({self.gaze_x}, {self.gaze_y})")

    @property
    def mouth_open_units(self) -> float:
        """How far the lower lip drops, in face half-width units (speech or yawn, the larger)."""
        return max(0.11 * self.jaw_drop, 0.34 * self.yawn)

    @property
    def speaking(self) -> bool:
        return self.jaw_drop > 0.0

    @property
    def smiling(self) -> bool:
        return self.smile > 0.0

    @property
    def yawning(self) -> bool:
        return self.yawn > 0.0


NEUTRAL = Expression()


def sample_expression(rng: np.random.Generator, label: int) -> Expression:
    """Draw the non-pain behaviour of one still showing pain class ``label``.

    Smiles and yawns follow ``SMILE_RATE_BY_CLASS`` / ``YAWN_RATE_BY_CLASS``; speech, half-blinks,
    gaze shifts and down-turned mouth corners (AU15) happen at the same rate in every class. The
    same number of draws is taken whatever the label, so ``rng`` leaves in the same state and the
    label-free parts of the expression are the same for every class.
    """
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"pain class must lie in 0..{NUM_CLASSES - 1}, got {label}")
    u = rng.random(12)
    yawn_rate, smile_rate = YAWN_RATE_BY_CLASS[label], SMILE_RATE_BY_CLASS[label]
    yawn = 0.6 + 0.4 * u[1] if u[0] < yawn_rate else 0.0
    smiling = yawn_rate <= u[0] < yawn_rate + smile_rate
    smile = 0.35 + 0.65 * u[2] if smiling else 0.0
    # A broad smile is a Duchenne smile about half the time: a trace of cheek raise with it.
    cheek = 0.25 + 0.2 * u[4] if smile > 0.6 and u[3] < DUCHENNE_SHARE else 0.0
    # A still catches speech anywhere in a syllable: sometimes nearly shut, sometimes wide.
    jaw = 0.15 + 0.85 * u[6] if u[5] < SPEECH_RATE else 0.0
    lid = 0.2 + 0.25 * u[8] if u[7] < BLINK_RATE else 0.0
    if yawn > 0.0:
        lid = max(lid, 0.3 + 0.15 * u[8])  # yawning eyes droop and water
    gaze_x = gaze_y = 0.0
    if u[9] < GAZE_SHIFT_RATE:
        gaze_x = float(np.sign(u[10] - 0.5) * (0.03 + 0.035 * abs(2 * u[10] - 1)))
        gaze_y = float(0.04 * u[11] - 0.02)
    # Drawn after the others, so that every other part of a seed's expressions stays as it was.
    v = rng.random(2)
    corners = 0.15 + 0.85 * v[1] if v[0] < CORNER_DEPRESS_RATE else 0.0
    return Expression(
        smile=float(smile),
        cheek_raise=float(cheek),
        jaw_drop=float(jaw),
        yawn=float(yawn),
        lid_closure=float(lid),
        gaze_x=gaze_x,
        gaze_y=gaze_y,
        corner_depress=float(corners),
    )


def _au_strength(intensity: float) -> float:
    """0..1 visual strength, linear in the FACS intensity: every step A..E looks as large.

    PSPI adds intensities, so a face whose cues grow by equal steps is one whose
    pain score can be read off it; a jump at trace followed by small steps made
    neighbouring pain classes look alike in 64 px crops.
    """
    return min(max(intensity, 0.0), 5.0) / 5.0


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return _rgb_tuple(np.asarray(rgb, float) * factor)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], w: float) -> tuple[int, int, int]:
    return _rgb_tuple(np.asarray(a, float) * (1 - w) + np.asarray(b, float) * w)


_SHIFT = 4  # sub-pixel bits for cv2 anti-aliased drawing
_ONE = 1 << _SHIFT


class _Painter:
    """Draws canonical-face geometry into an image through pose (roll, yaw, scale, position)."""

    def __init__(
        self,
        img: np.ndarray,
        center_px: tuple[float, float],
        unit_px: float,
        identity: Identity,
        scene: Scene,
    ) -> None:
        self.img = img
        self.cx, self.cy = center_px
        self.unit_px = unit_px
        self.sx = identity.face_width
        self.sy = identity.face_length
        roll = math.radians(scene.roll_deg)
        yaw = math.radians(scene.yaw_deg)
        self.cos_r, self.sin_r = math.cos(roll), math.sin(roll)
        self.cos_y, self.sin_y = math.cos(yaw), math.sin(yaw)

    @staticmethod
    def depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Depth proxy of the face surface toward the camera (0 on the silhouette)."""
        body = 0.75 * np.sqrt(np.clip(1.0 - x * x - ((y + 0.1) / 1.45) ** 2, 0.0, None))
        nose = 0.3 * np.exp(-((x / 0.12) ** 2)) * np.exp(-(((y - 0.2) / 0.25) ** 2))
        return body + nose

    def to_px(self, pts: np.ndarray, depth_bias: float = 0.0, fixed: bool = True) -> np.ndarray:
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        x, y = pts[:, 0], pts[:, 1]
        # Yaw: features slide across the face with their depth; the silhouette stays put.
        xs = x * self.cos_y + (self.depth(x, y) + depth_bias) * self.sin_y
        xs = xs * self.sx * self.unit_px
        ys = y * self.sy * self.unit_px
        px = self.cx + self.cos_r * xs - self.sin_r * ys
        py = self.cy + self.sin_r * xs + self.cos_r * ys
        out = np.stack([px, py], axis=1)
        if fixed:
            return np.round(out * _ONE).astype(np.int32)
        return out

    def thickness(self, units: float) -> int:
        return max(1, round(units * self.unit_px))

    def poly(self, pts: np.ndarray, color: tuple[int, int, int], depth_bias: float = 0.0) -> None:
        cv2.fillPoly(self.img, [self.to_px(pts, depth_bias)], color, cv2.LINE_AA, _SHIFT)

    def line(
        self,
        pts: np.ndarray,
        color: tuple[int, int, int],
        units: float,
        depth_bias: float = 0.0,
        closed: bool = False,
    ) -> None:
        cv2.polylines(
            self.img,
            [self.to_px(pts, depth_bias)],
            closed,
            color,
            self.thickness(units),
            cv2.LINE_AA,
            _SHIFT,
        )

    def blend_poly(
        self,
        pts: np.ndarray,
        color: tuple[int, int, int],
        alpha: float,
        depth_bias: float = 0.0,
    ) -> None:
        """Fill ``pts`` with ``color`` at opacity ``alpha`` (lens tint, glare, beard, stubble)."""
        px = self.to_px(pts, depth_bias)
        height, width = self.img.shape[:2]
        x0, y0 = (int(v) for v in np.maximum((px.min(axis=0) >> _SHIFT) - 2, 0))
        x1 = min(width, int(px[:, 0].max() >> _SHIFT) + 3)
        y1 = min(height, int(px[:, 1].max() >> _SHIFT) + 3)
        if x1 <= x0 or y1 <= y0:
            return
        roi = self.img[y0:y1, x0:x1]
        layer = roi.copy()
        offset = np.array([x0 << _SHIFT, y0 << _SHIFT], np.int32)
        cv2.fillPoly(layer, [px - offset], color, cv2.LINE_AA, _SHIFT)
        roi[...] = cv2.addWeighted(layer, alpha, roi, 1.0 - alpha, 0.0)

    def ellipse(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        color: tuple[int, int, int],
        n: int = 28,
        depth_bias: float = 0.0,
        angle_deg: float = 0.0,
    ) -> None:
        self.poly(_ellipse_pts(cx, cy, rx, ry, n, angle_deg), color, depth_bias)


def _ellipse_pts(
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    n: int = 28,
    angle_deg: float = 0.0,
    start: float = 0.0,
    stop: float = 2 * math.pi,
) -> np.ndarray:
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * math.pi - 1e-9)
    a = math.radians(angle_deg)
    ex, ey = rx * np.cos(t), ry * np.sin(t)
    return np.stack(
        [cx + ex * math.cos(a) - ey * math.sin(a), cy + ex * math.sin(a) + ey * math.cos(a)], 1
    )


def _face_outline(identity: Identity, n: int = 40, chin_drop: float = 0.0) -> np.ndarray:
    t_up = np.linspace(math.pi, 2 * math.pi, n)
    upper = np.stack([np.cos(t_up), 0.15 + 1.45 * np.sin(t_up)], 1)
    t_lo = np.linspace(0.0, math.pi, n)
    s = np.sin(t_lo)
    x = np.cos(t_lo) * (1.0 - (1.0 - identity.jaw_width) * s**2)
    # An open jaw lengthens the lower face, most at the chin.
    lower = np.stack([x, 0.15 + (1.2 + chin_drop * s**2) * s], 1)
    return np.concatenate([upper, lower[1:-1]])


def _wall(size_px: tuple[int, int], scene: Scene) -> np.ndarray:
    width, height = size_px
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    top = np.asarray(scene.wall_top_rgb, np.float32)
    bottom = np.asarray(scene.wall_bottom_rgb, np.float32)
    column = top[None, :] * (1 - ramp) + bottom[None, :] * ramp
    return np.ascontiguousarray(np.broadcast_to(column[:, None, :], (height, width, 3))).astype(
        np.uint8
    )


def _draw_head(
    p: _Painter, ident: Identity, aus: ActionUnits, scene: Scene, expr: Expression
) -> None:
    skin = ident.skin_rgb
    f4, f7 = _au_strength(aus.au4), _au_strength(aus.au7)
    # The trace of AU6 in a Duchenne smile combines with any pain AU6 as FACS does: the larger.
    f6 = max(_au_strength(aus.au6), _au_strength(expr.cheek_raise))
    f9, f10 = _au_strength(aus.au9), _au_strength(aus.au10)
    closure = max(_clip01(aus.au43), expr.lid_closure)
    chin_drop = 0.9 * expr.mouth_open_units
    tex = np.random.default_rng(ident.texture_seed)

    if scene.pillow:
        p.ellipse(0.0, 0.9, 2.9, 1.9, _mix(scene.wall_top_rgb, (236, 236, 232), 0.8), n=40)
    # Shoulders and gown.
    p.ellipse(0.0, 2.85, 2.3, 1.05, ident.gown_rgb, n=40)
    # Hair behind the head.
    hair = ident.hair_rgb
    if ident.hair_style == "long":
        top = _ellipse_pts(0.0, -0.2, 1.32, 1.3, 30, start=math.pi, stop=2 * math.pi)
        p.poly(np.concatenate([top, [[1.42, 1.0], [1.34, 1.9], [-1.34, 1.9], [-1.42, 1.0]]]), hair)
    elif ident.hair_style == "curly":
        t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
        r = 1.0 + 0.05 * np.sin(9 * t + tex.uniform(0, 6))
        pts = np.stack([1.3 * r * np.cos(t), -0.25 + 1.28 * r * np.sin(t)], 1)
        pts[:, 1] = np.minimum(pts[:, 1], 0.45)
        p.poly(pts, hair)
    elif ident.hair_style in ("short", "fringe"):
        pts = _ellipse_pts(0.0, -0.32, 1.12, 1.14, 36)
        pts[:, 1] = np.minimum(pts[:, 1], 0.0)
        p.poly(pts, hair)
    else:  # bald: a fringe of hair above the ears only
        for sgn in (-1.0, 1.0):
            p.ellipse(sgn * 0.98, -0.3, 0.12, 0.3, hair, n=16)
    # Neck, in the chin's shadow.
    p.poly(np.array([[-0.48, 0.7], [0.48, 0.7], [0.55, 2.2], [-0.55, 2.2]]), _shade(skin, 0.78))
    # Ears sit behind the face plane, so they slide against the yaw.
    for sgn in (-1.0, 1.0):
        p.ellipse(sgn * 0.99, -0.08, 0.13, 0.25, _shade(skin, 0.93), n=18, depth_bias=-0.5)
        start = -1.2 if sgn > 0 else math.pi - 1.2
        p.line(
            _ellipse_pts(sgn * 0.99, -0.08, 0.07, 0.16, 10, start=start, stop=start + 2.4),
            _shade(skin, 0.72),
            0.02,
            depth_bias=-0.5,
        )
    p.poly(_face_outline(ident, chin_drop=chin_drop), skin)

    # Age: forehead lines.
    wrinkle = ident.wrinkle_depth
    if wrinkle > 0.05:
        for k, y in enumerate((-0.75, -0.86, -0.97)):
            xs = np.linspace(-0.42 + 0.05 * k, 0.42 - 0.05 * k, 9)
            p.line(
                np.stack([xs, y + 0.04 * (xs / 0.42) ** 2], 1),
                _shade(skin, 1 - 0.16 * wrinkle),
                0.012,
            )

    if ident.beard != "none":
        _draw_beard(p, ident, chin_drop, tex)
    _draw_brows(p, ident, f4, f9)
    for sgn in (-1.0, 1.0):
        _draw_eye(p, ident, sgn, f4, f6, f7, closure, scene.gaze_x + expr.gaze_x, expr.gaze_y)
    _draw_nose(p, ident, f6, f9, f10, expr)
    _draw_mouth(p, ident, f9, f10, expr)
    if ident.glasses != "none":
        _draw_glasses(p, ident)

    # Front hair last: it frames the forehead and can cover it.
    if ident.hair_style in ("short", "long", "curly", "fringe"):
        hl = ident.hairline_y if ident.hair_style != "fringe" else -0.7
        t = np.linspace(math.pi * 1.04, math.pi * 1.96, 24)
        arc = np.stack([1.03 * np.cos(t), 0.15 + 1.47 * np.sin(t)], 1)
        xs = np.linspace(0.92, -0.92, 15)
        edge_y = hl + 0.25 * (np.abs(xs) / 0.92) ** 2.5
        if ident.hair_style == "fringe":
            edge_y = edge_y + 0.05 * (np.arange(xs.size) % 2)
        else:
            edge_y = edge_y - 0.06 * np.exp(-(((xs - 0.25) / 0.2) ** 2))  # side parting
        edge = np.stack([xs, edge_y], 1)
        p.poly(np.concatenate([arc, edge]), hair)
        # A few strands so the hair is not a flat patch.
        for _ in range(5):
            x0 = tex.uniform(-0.6, 0.6)
            strand = np.array([[x0, -1.25], [x0 + tex.uniform(-0.15, 0.15), hl - 0.05]])
            p.line(strand, _shade(hair, tex.uniform(0.75, 1.25)), 0.015)
    if scene.hand != "none":
        _draw_hand(p, ident, scene.hand, scene.hand_side, chin_drop)


def _draw_beard(p: _Painter, ident: Identity, chin_drop: float, tex: np.random.Generator) -> None:
    """Stubble (a dark shadow with specks) or a full beard over the jaw, chin and upper lip.

    Drawn before nose and mouth: the nasolabial folds and the lips, which carry AU9/AU10, stay
    on top of it.
    """
    outline = _face_outline(ident, chin_drop=chin_drop)
    jaw = outline[(outline[:, 1] > 0.42) & (np.abs(outline[:, 0]) < 0.97)]
    jaw = jaw[np.argsort(np.arctan2(jaw[:, 1] - 0.4, jaw[:, 0]))]  # right side round to left
    nose_y = ident.nose_length + 0.075
    mw = ident.mouth_width
    upper = np.array(
        [
            [-0.9, 0.42],
            [-0.55, 0.58],
            [-mw - 0.06, 0.58],
            [-ident.nose_width - 0.02, nose_y + 0.02],
            [0.0, nose_y],
            [ident.nose_width + 0.02, nose_y + 0.02],
            [mw + 0.06, 0.58],
            [0.55, 0.58],
            [0.9, 0.42],
        ]
    )
    region = np.concatenate([jaw, upper])
    dark = _shade(ident.hair_rgb, 0.8)
    if ident.beard == "beard":
        p.blend_poly(region, dark, 0.82)
        for _ in range(40):
            x0 = tex.uniform(-0.7, 0.7)
            y0 = tex.uniform(0.85, 1.25) + chin_drop * 0.7
            p.line(
                np.array([[x0, y0], [x0 + tex.uniform(-0.03, 0.03), y0 + 0.06]]),
                _shade(dark, 1.3),
                0.01,
            )
    else:
        p.blend_poly(region, _mix(ident.skin_rgb, (40, 44, 52), 0.6), 0.3)
        specks = np.stack([tex.uniform(-0.85, 0.85, 900), tex.uniform(0.4, 1.35, 900)], 1)
        inside = specks[:, 0] ** 2 / 0.72 + ((specks[:, 1] - 0.15) / 1.18) ** 2 < 1.0
        beside_mouth = (specks[:, 1] > 0.62) | (np.abs(specks[:, 0]) < 0.28)
        specks = specks[inside & beside_mouth & (specks[:, 1] > nose_y + 0.02)]
        specks[:, 1] += chin_drop * np.clip((specks[:, 1] - 0.8) / 0.5, 0.0, 1.0)
        speck_rgb = _mix(ident.hair_rgb, (30, 28, 28), 0.5)
        img = p.img
        height, width = img.shape[:2]
        pts = np.round(p.to_px(specks, fixed=False)).astype(int)
        pts = pts[(pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)]
        img[pts[:, 1], pts[:, 0]] = (
            0.5 * img[pts[:, 1], pts[:, 0]] + 0.5 * np.asarray(speck_rgb, float)
        ).astype(np.uint8)


def _superellipse(cx: float, cy: float, rx: float, ry: float, n: int = 32) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    return np.stack(
        [cx + rx * np.sign(c) * np.abs(c) ** 0.6, cy + ry * np.sign(s) * np.abs(s) ** 0.6], 1
    )


def _draw_glasses(p: _Painter, ident: Identity) -> None:
    """Glasses: lightly tinted lenses with a glare streak, a thin or thick frame, temple arms."""
    frame = ident.glasses_rgb
    width = 0.02 if ident.glasses == "thin" else 0.036
    ey = _EYE_Y - 0.01
    for sgn in (-1.0, 1.0):
        ex = sgn * ident.eye_spacing
        lens = _superellipse(ex, ey, 0.22, 0.135)
        p.blend_poly(lens, (200, 214, 226), 0.12, depth_bias=0.05)
        glare = np.array(
            [
                [ex - 0.12, ey - 0.02],
                [ex - 0.04, ey - 0.11],
                [ex + 0.0, ey - 0.11],
                [ex - 0.08, ey - 0.02],
            ]
        )
        p.blend_poly(glare, (250, 250, 250), 0.22, depth_bias=0.05)
        p.line(lens, frame, width, depth_bias=0.05, closed=True)
        # Temple arm from the outer rim back to the ear, which sits behind the face plane.
        p.line(
            np.array([[sgn * (ident.eye_spacing + 0.22), ey - 0.05], [sgn * 0.99, -0.1]]),
            frame,
            width,
            depth_bias=-0.3,
        )
    inner = ident.eye_spacing - 0.22
    bridge = np.array(
        [[-inner, ey - 0.04], [-0.05, ey - 0.07], [0.05, ey - 0.07], [inner, ey - 0.04]]
    )
    p.line(bridge, frame, width, depth_bias=0.1)


def _draw_hand(p: _Painter, ident: Identity, pose: str, side: float, chin_drop: float) -> None:
    """A hand resting on the chin, a cheek or a temple; it never covers both eyes and mouth."""
    skin = _shade(ident.skin_rgb, 0.96)
    edge = _shade(ident.skin_rgb, 0.68)
    sgn = side

    def finger(base: tuple[float, float], tip: tuple[float, float], width: float = 0.15) -> None:
        bone = np.array([base, tip])
        p.line(bone, edge, width + 0.025)
        p.line(bone, skin, width)

    if pose == "chin":
        # Chin resting on a loose fist: knuckles under the chin, the forearm down out of view.
        top = 1.33 + chin_drop
        p.poly(
            np.array(
                [
                    [sgn * 0.05, top + 0.2],
                    [sgn * 0.55, top + 0.2],
                    [sgn * 0.75, 3.0],
                    [sgn * 0.0, 3.0],
                ]
            ),
            _shade(skin, 0.92),
        )
        fist = _ellipse_pts(sgn * 0.28, top + 0.2, 0.4, 0.22, 24)
        p.poly(fist, skin)
        p.line(fist, edge, 0.016, closed=True)
        for k in range(4):
            x = sgn * (0.0 + 0.16 * k)
            p.line(np.array([[x, top + 0.03], [x + sgn * 0.02, top + 0.3]]), edge, 0.014)
        finger((sgn * -0.1, top + 0.3), (sgn * 0.2, top + 0.06), 0.12)  # thumb along the jaw
    elif pose == "cheek":
        # Open hand against the outer cheek, fingers up beside the eye, wrist down and out.
        p.poly(
            np.array([[sgn * 0.8, 0.8], [sgn * 1.2, 0.75], [sgn * 1.55, 2.6], [sgn * 1.0, 2.6]]),
            _shade(skin, 0.92),
        )
        palm = _ellipse_pts(sgn * 0.98, 0.55, 0.27, 0.36, 24, sgn * -10.0)
        p.poly(palm, skin)
        p.line(palm, edge, 0.016, closed=True)
        for k in range(4):
            x = sgn * (0.8 + 0.12 * k)
            finger((x, 0.35), (x - sgn * 0.04, -0.15 + 0.07 * abs(k - 1.2)))
    else:  # temple: fingertips on the side of the forehead, the arm raised out of view
        p.poly(
            np.array([[sgn * 1.2, -0.45], [sgn * 1.3, -0.05], [sgn * 2.3, 0.7], [sgn * 2.3, 0.0]]),
            _shade(skin, 0.92),
        )
        palm = _ellipse_pts(sgn * 1.22, -0.42, 0.26, 0.3, 24, sgn * 25.0)
        p.poly(palm, skin)
        p.line(palm, edge, 0.016, closed=True)
        for k in range(4):
            finger((sgn * 1.1, -0.72 + 0.12 * k), (sgn * 0.74, -0.95 + 0.1 * k))


def _draw_brows(p: _Painter, ident: Identity, f4: float, f9: float) -> None:
    skin = ident.skin_rgb
    u = np.linspace(0.0, 1.0, 12)
    for sgn in (-1.0, 1.0):
        base = _BROW_Y + ident.brow_height + sgn * ident.brow_asymmetry
        # AU4 pulls the inner brows down and toward each other; AU9 helps lower them a little
        # (kept small so that the brows stay AU4's cue). The bunched brow also thickens.
        inner = (sgn * (0.15 - 0.09 * f4), base + 0.26 * f4 + 0.03 * f9)
        outer = (sgn * 0.70, base + 0.10 * f4 - 0.02)
        arch = ident.brow_arch * (1.0 - 0.8 * f4)
        x = inner[0] + (outer[0] - inner[0]) * u
        y = inner[1] + (outer[1] - inner[1]) * u - arch * np.sin(math.pi * u**0.8)
        half = ident.brow_thickness * (1.0 - 0.5 * u) * 0.5 * (1 + 0.4 * f4 * (1.0 - 0.6 * u))
        pts = np.concatenate([np.stack([x, y - half], 1), np.stack([x, y + half], 1)[::-1]])
        p.poly(pts, ident.brow_rgb)
    if f4 > 0.01:
        # Vertical glabellar furrows between the drawn-together brows: depth (contrast), length
        # and width all grow linearly, so each step still shows once the crop is 64 px.
        dark = _shade(skin, 1 - 0.6 * f4)
        top_y = _BROW_Y + ident.brow_height - 0.08 + 0.16 * f4
        for x0 in (-0.055, 0.055):
            ys = np.linspace(top_y, top_y + 0.1 + 0.16 * f4, 5)
            p.line(
                np.stack([x0 + 0.02 * np.sign(x0) * ((ys - ys[0]) / 0.2) ** 2, ys], 1),
                dark,
                0.016 + 0.016 * f4,
            )


def _draw_eye(
    p: _Painter,
    ident: Identity,
    sgn: float,
    f4: float,
    f6: float,
    f7: float,
    closure: float,
    gaze_x: float,
    gaze_y: float = 0.0,
) -> None:
    skin = ident.skin_rgb
    ex, ew = sgn * ident.eye_spacing, ident.eye_width
    u = np.linspace(-1.0, 1.0, 15)  # inner -> outer corner
    x = ex + sgn * u * ew
    y0 = _EYE_Y - ident.eye_tilt * u + 0.03 * f6
    open_scale = ident.eye_open * (1.0 - closure)
    # AU6 (cheek pushing up) and AU7 (lids tightening) both narrow the eye; together they
    # narrow it only a little more than the stronger alone, as PSPI counts max(AU6, AU7).
    narrow6, narrow7 = 0.85 * f6, f7
    narrow = max(narrow6, narrow7) + 0.2 * min(narrow6, narrow7)
    up_open = 0.085 * open_scale * (1.0 - 0.4 * narrow - 0.12 * f4)
    lo_open = 0.05 * open_scale * (1.0 - 0.9 * narrow)
    sag = 0.022 * closure * (1 - u**2)
    lower_shape = (1 - u**2) ** (1.0 - 0.6 * f7)  # AU7 straightens the lower lid
    y_up = y0 - max(up_open, 0.0) * (1 - u**2) ** 0.7 + sag
    y_lo = y0 + max(lo_open, 0.0) * lower_shape + sag

    lid_rgb = _shade(skin, 0.84 + 0.1 * closure)
    if up_open + lo_open > 0.006:
        p.poly(
            np.concatenate([np.stack([x, y_up], 1), np.stack([x, y_lo], 1)[::-1]]), (232, 226, 220)
        )
        ix, iy = ex + gaze_x, _EYE_Y + 0.005 + 0.03 * f6 + gaze_y
        r_iris = 0.072 * ew / 0.19
        p.ellipse(ix, iy, r_iris, r_iris, ident.iris_rgb, n=20)
        p.ellipse(ix, iy, r_iris * 0.45, r_iris * 0.45, (18, 14, 14), n=14)
        p.ellipse(ix + 0.02, iy - 0.02, 0.012, 0.012, (245, 245, 245), n=8)
        # Lids cover whatever of the iris lies outside the aperture.
        v = np.linspace(1.0, -1.0, 15)
        xv = ex + sgn * v * ew * 1.12
        upper_cover = np.stack([xv, _EYE_Y - 0.17 * np.sqrt(1 - v**2) - ident.eye_tilt * v], 1)
        p.poly(np.concatenate([np.stack([x, y_up], 1), upper_cover]), lid_rgb)
        lower_cover = np.stack(
            [xv, _EYE_Y + 0.12 * np.sqrt(1 - v**2) - ident.eye_tilt * v + 0.03 * f6], 1
        )
        p.poly(np.concatenate([np.stack([x, y_lo], 1), lower_cover]), skin)
    else:
        # Closed: the upper lid lies over the eye and reads darker than the cheek.
        v = np.linspace(1.0, -1.0, 15)
        xv = ex + sgn * v * ew * 1.12
        cover = np.stack([xv, _EYE_Y - 0.17 * np.sqrt(1 - v**2) - ident.eye_tilt * v], 1)
        p.poly(np.concatenate([np.stack([x, y_up], 1), cover]), lid_rgb)

    lash = _mix((30, 22, 20), skin, 0.15)
    # A shut eye is one thick dark lash line curving down.
    p.line(np.stack([x, y_up], 1), lash, 0.038 + 0.02 * closure)
    # Lashes at the outer half; they point down when the eye is shut.
    for k in (0.2, 0.5, 0.8):
        i = round((k + 1) / 2 * (u.size - 1))
        direction = -1.0 if closure < 0.5 else 1.0
        p.line(
            np.array([[x[i], y_up[i]], [x[i] + sgn * 0.03, y_up[i] + direction * 0.04]]),
            lash,
            0.012,
        )
    lower_dark = 0.72 - 0.3 * f7
    p.line(np.stack([x, y_lo], 1)[2:-1], _shade(skin, lower_dark), 0.012 + 0.008 * f7)
    if f7 > 0.01:
        # Bulge of the tightened lower lid: a raised, lit roll with a shadow under it.
        p.line(np.stack([x, y_lo + 0.035], 1)[2:-2], _shade(skin, 1 + 0.1 * f7), 0.035 * f7)
        p.line(np.stack([x, y_lo + 0.065], 1)[2:-2], _shade(skin, 1 - 0.4 * f7), 0.012 + 0.01 * f7)
    # Lid crease.
    crease_y = y0 - max(up_open, 0.0) - 0.05 - 0.02 * (1 - f4)
    p.line(
        np.stack([x, crease_y * np.ones_like(u) + 0.03 * u**2], 1)[2:-2], _shade(skin, 0.78), 0.012
    )
    if f6 > 0.01:
        # AU6: raised cheek makes an infraorbital furrow and crow's feet at the outer corner.
        fy = y0 + 0.11 - 0.02 * f6
        arc = np.stack([x, fy + 0.03 * u**2 + 0.02 * (1 - u**2)], 1)[1:]
        p.line(arc, _shade(skin, 1 - 0.5 * f6), 0.014 + 0.014 * f6)
        ox, oy = ex + sgn * (ew + 0.03), y0[-1]
        length = 0.06 + 0.16 * f6
        for angle in (-35.0, -5.0, 25.0):
            a = math.radians(angle)
            end = (ox + sgn * length * math.cos(a), oy + length * math.sin(a))
            p.line(np.array([[ox, oy], end]), _shade(skin, 1 - 0.55 * f6), 0.012 + 0.012 * f6)


def _draw_nose(
    p: _Painter, ident: Identity, f6: float, f9: float, f10: float, expr: Expression = NEUTRAL
) -> None:
    skin = ident.skin_rgb
    tip_y, nw = ident.nose_length, ident.nose_width
    lift = 0.07 * f9 + 0.03 * f10
    for sgn in (-1.0, 1.0):
        # Bridge sides.
        p.line(
            np.array(
                [[sgn * 0.07, -0.12], [sgn * 0.08, 0.05], [sgn * nw * 0.75, tip_y - 0.06 - lift]]
            ),
            _shade(skin, 0.88),
            0.016,
            depth_bias=0.1,
        )
        # Alar wing and nostril.
        wing = _ellipse_pts(
            sgn * nw * 0.8, tip_y + 0.01 - lift, 0.06 + 0.015 * f9, 0.055, 12, start=-1.6, stop=1.6
        )
        if sgn < 0:
            wing[:, 0] = 2 * sgn * nw * 0.8 - wing[:, 0]
        p.line(wing, _shade(skin, 0.68 - 0.1 * f9), 0.02, depth_bias=0.1)
        p.ellipse(
            sgn * nw * 0.5,
            tip_y + 0.045 - lift,
            0.042 + 0.012 * f9,
            0.02 + 0.005 * f9,
            _shade(skin, 0.35),
            n=14,
            depth_bias=0.15,
            angle_deg=sgn * 15,
        )
    p.line(
        _ellipse_pts(0.0, tip_y - lift, 0.06, 0.03, 9, start=0.3, stop=math.pi - 0.3),
        _shade(skin, 0.8),
        0.014,
        depth_bias=0.25,
    )
    if f9 > 0.01:
        # AU9: horizontal wrinkles across the bridge, one more per intensity step (the newest
        # fades in while animating), all of them darker and wider as the nose wrinkles harder.
        count = 5.0 * f9
        for k in range(5):
            presence = _clip01(count - k)
            if presence <= 0.0:
                break
            y = -0.15 + 0.05 * k
            dark = 1 - (0.2 + 0.3 * f9) * presence
            half_w = 0.08 + 0.04 * f9
            xs = np.linspace(-half_w, half_w, 7)
            p.line(
                np.stack([xs, y - 0.03 * (1 - (xs / half_w) ** 2)], 1),
                _shade(skin, dark),
                0.014 + 0.006 * f9,
                0.15,
            )
    # Nasolabial folds: deepen with AU9/AU10 (and a little AU6), present faintly with age
    # (less than one AU step, so that age does not read as a raised upper lip).
    # A smile deepens them too, but curves them out around the lifted, widened corners.
    smile = expr.smile
    fold = 0.1 + 0.06 * ident.wrinkle_depth + 0.5 * max(f9, f10) + 0.1 * f6 + 0.3 * smile
    mw = _mouth_half_width(ident, expr)
    for sgn in (-1.0, 1.0):
        t = np.linspace(0.0, 1.0, 10)[:, None]
        a = np.array([sgn * (nw + 0.06), tip_y - 0.02 - lift])
        c = np.array([sgn * (nw + 0.2 + 0.06 * smile), _MOUTH_Y - 0.22])
        b = np.array([sgn * (mw + 0.07), _MOUTH_Y + 0.1 - 0.06 * smile])
        curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t**2 * b
        p.line(curve, _shade(skin, 1 - 0.45 * fold), 0.016 + 0.012 * fold)


def _mouth_half_width(ident: Identity, expr: Expression) -> float:
    # AU12 pulls the corners out; a yawn stretches the mouth tall and narrow.
    return ident.mouth_width * (1.0 + 0.2 * expr.smile - 0.2 * expr.yawn)


def _draw_mouth(
    p: _Painter, ident: Identity, f9: float, f10: float, expr: Expression = NEUTRAL
) -> None:
    u = np.linspace(-1.0, 1.0, 17)
    mw = _mouth_half_width(ident, expr)
    x = u * mw
    # AU12 lifts the corners, AU15 pulls them down.
    y_m = _MOUTH_Y + ident.mouth_curve * u**2 - 0.11 * expr.smile * u**2
    y_m = y_m + CORNER_DEPRESS_UNITS * expr.corner_depress * u**2
    # AU10 lifts the upper lip, most in its middle-lateral part (a squarish opening).
    raise_shape = (1 - u**4) ** 1.5
    lift = (0.18 * f10 + 0.05 * f9) * raise_shape
    # The lower lip drops when the jaw opens (speech, yawn) and parts a little in a broad smile.
    part = 0.045 * _clip01((expr.smile - 0.4) / 0.6) * (1 - u**2) ** 0.5
    drop = part + expr.mouth_open_units * (1 - u**2) ** 0.6
    y_ul_bottom = y_m - lift
    y_ll_top = y_m + drop
    bow = 0.012 * np.exp(-((u / 0.12) ** 2)) - 0.008 * np.exp(-(((np.abs(u) - 0.3) / 0.12) ** 2))
    upper_lip = ident.upper_lip * (1.0 - 0.3 * expr.smile)  # stretched thin over the teeth
    y_ul_top = y_ul_bottom - upper_lip * (0.25 + 0.75 * (1 - u**2) ** 0.6) + bow
    lower_lip = ident.lower_lip * (1.0 - 0.3 * expr.yawn)
    y_ll_bottom = y_ll_top + lower_lip * (0.2 + 0.8 * (1 - u**2) ** 0.7)
    lip = ident.lip_rgb
    gap = y_ll_top - y_ul_bottom
    if gap.max() > 0.01:
        mouth = np.concatenate([np.stack([x, y_ul_bottom], 1), np.stack([x, y_ll_top], 1)[::-1]])
        p.poly(mouth, (52, 22, 24))
        teeth_h = np.minimum(gap, 0.08 - 0.04 * expr.yawn) * (np.abs(u) < 0.8)
        teeth = np.concatenate(
            [np.stack([x, y_ul_bottom], 1), np.stack([x, y_ul_bottom + teeth_h], 1)[::-1]]
        )
        p.poly(teeth, (232, 228, 214))
        if drop.max() > 0.03:
            # Lower teeth show at the bottom of an open mouth, shaded by the upper lip.
            low_h = np.minimum(0.3 * drop, 0.035) * (np.abs(u) < 0.6)
            lower_teeth = np.concatenate(
                [np.stack([x, y_ll_top - low_h], 1), np.stack([x, y_ll_top], 1)[::-1]]
            )
            p.poly(lower_teeth, (196, 190, 178))
    p.poly(
        np.concatenate([np.stack([x, y_ul_top], 1), np.stack([x, y_ul_bottom], 1)[::-1]]),
        _shade(lip, 0.85),
    )
    p.poly(np.concatenate([np.stack([x, y_ll_top], 1), np.stack([x, y_ll_bottom], 1)[::-1]]), lip)
    p.line(
        np.stack([x, y_m], 1)[1:-1] if gap.max() <= 0.01 else np.stack([x, y_ul_bottom], 1),
        _shade(lip, 0.5),
        0.014,
    )
    # Shadow under the lower lip.
    p.line(np.stack([x[4:-4], y_ll_bottom[4:-4] + 0.04], 1), _shade(ident.skin_rgb, 0.85), 0.03)


def _shading(
    shape_hw: tuple[int, int],
    p: _Painter,
    ident: Identity,
    aus: ActionUnits,
    scene: Scene,
    expr: Expression = NEUTRAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Light maps for the head: a multiplier (Lambert on an ellipsoid, socket and nose shadows)
    and an additive sheen (forehead, nose bridge, cheekbones)."""
    height, width = shape_hw
    step = 2  # computed at half resolution, the map is smooth anyway
    gy, gx = np.mgrid[0:height:step, 0:width:step].astype(np.float32)
    gx = gx + step / 2.0 - p.cx
    gy = gy + step / 2.0 - p.cy
    # Undo roll and scale, then yaw with one fixed-point step on the depth.
    xs = (p.cos_r * gx + p.sin_r * gy) / (p.unit_px * p.sx)
    y = (-p.sin_r * gx + p.cos_r * gy) / (p.unit_px * p.sy)
    x = xs / p.cos_y
    x = (xs - p.depth(x, y) * p.sin_y) / p.cos_y

    nx = x
    ny = (y + 0.1) / 1.45
    r2 = nx * nx + ny * ny
    nz = np.sqrt(np.clip(1 - r2, 0.0, None))
    nxr = nx * p.cos_y + nz * p.sin_y
    nzr = -nx * p.sin_y + nz * p.cos_y
    az, el = math.radians(scene.light_azimuth_deg), math.radians(scene.light_elevation_deg)
    lx, ly, lz = math.sin(az) * math.cos(el), -math.sin(el), math.cos(az) * math.cos(el)
    ndotl = np.clip(nxr * lx + ny * ly + nzr * lz, 0.0, None)
    lambert = scene.ambient + (1 - scene.ambient) * 1.15 * ndotl
    head = np.clip((1.3 - r2) / 0.4, 0.0, 1.0)
    shade = 1.0 + head * (lambert - 1.0)

    def blob(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return np.exp(-(((x - cx) / rx) ** 2) - ((y - cy) / ry) ** 2)

    f4, f7 = _au_strength(aus.au4), _au_strength(aus.au7)
    f6 = max(_au_strength(aus.au6), _au_strength(expr.cheek_raise))
    f9 = _au_strength(aus.au9)
    socket = ident.eye_spacing
    sockets = blob(-socket, _EYE_Y - 0.05, 0.26, 0.17) + blob(socket, _EYE_Y - 0.05, 0.26, 0.17)
    shade = shade * (1 - 0.3 * sockets)
    side = 1.0 if scene.light_azimuth_deg < 0 else -1.0  # nose shadow falls away from the light
    shade = shade * (1 - 0.16 * blob(side * 0.13, 0.12, 0.07, 0.22))
    shade = shade * (1 + 0.08 * blob(0.0, -0.02, 0.06, 0.25))
    shade = shade * (1 - 0.2 * blob(0.0, ident.nose_length + 0.1, 0.14, 0.05))
    # AU6 lifts and rounds the cheeks: their lit mound rises toward the eyes and grows.
    # Lid lines are a pixel or two in a 64 px crop; these soft reliefs carry the same
    # action units over areas a small network can see.
    cheek_y = 0.3 - 0.16 * f6
    cheeks = blob(-0.46, cheek_y, 0.2, 0.13) + blob(0.46, cheek_y, 0.2, 0.13)
    shade = shade * (1 + (0.07 + 0.2 * f6) * cheeks)
    if expr.smile > 0.0:
        # AU12 bunches the lower cheeks into round "apples" beside the lifted corners: lower on
        # the face than AU6's mound, with no furrow under the eye.
        apples = blob(-0.44, 0.5, 0.17, 0.12) + blob(0.44, 0.5, 0.17, 0.12)
        shade = shade * (1 + 0.14 * expr.smile * apples)
    # AU6 also deepens the infraorbital furrow between the raised cheek and the eye.
    furrow = blob(-socket, _EYE_Y + 0.16, 0.22, 0.05) + blob(socket, _EYE_Y + 0.16, 0.22, 0.05)
    shade = shade * (1 - 0.25 * f6 * furrow)
    # AU7 tightens the lower lid into a lit roll right under the eye, shadowed below.
    roll = blob(-socket, _EYE_Y + 0.08, 0.22, 0.055) + blob(socket, _EYE_Y + 0.08, 0.22, 0.055)
    under = blob(-socket, _EYE_Y + 0.15, 0.22, 0.045) + blob(socket, _EYE_Y + 0.15, 0.22, 0.045)
    shade = shade * (1 + 0.4 * f7 * roll) * (1 - 0.35 * f7 * under)
    # AU4 bunches the skin between the brows into a shadowed knot; AU9 bunches the nose root.
    shade = shade * (1 - 0.22 * f4 * blob(0.0, _BROW_Y + ident.brow_height + 0.2, 0.09, 0.1))
    shade = shade * (1 - 0.22 * f9 * blob(0.0, -0.06, 0.13, 0.12))
    shade = shade * (1 - 0.25 * blob(0.0, 1.5, 0.5, 0.25))  # under the chin
    # Skin sheen is what keeps the T-zone brighter than the eyes on darker skin, as on camera.
    luma = 0.3 * ident.skin_rgb[0] + 0.59 * ident.skin_rgb[1] + 0.11 * ident.skin_rgb[2]
    sheen_px = (8.0 + 40.0 * (1.0 - luma / 255.0)) * scene.light_gain
    sheen = (
        blob(0.0, -0.02, 0.07, 0.28)
        + 0.6 * blob(0.0, -0.85, 0.35, 0.18)
        + 0.45 * (blob(-0.48, cheek_y - 0.05, 0.16, 0.1) + blob(0.48, cheek_y - 0.05, 0.16, 0.1))
    )
    sheen = sheen_px * sheen * (0.6 + 0.4 * lambert)
    size = (width, height)
    return (
        cv2.resize(shade.astype(np.float32), size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(sheen.astype(np.float32), size, interpolation=cv2.INTER_LINEAR),
    )


def render_face(
    identity: Identity,
    aus: ActionUnits,
    scene: Scene,
    size_px: tuple[int, int] = (256, 256),
    face_width_px: float | None = None,
    center_px: tuple[float, float] | None = None,
    background: np.ndarray | None = None,
    add_noise: bool = True,
    expression: Expression = NEUTRAL,
) -> np.ndarray:
    """Draw one RGB uint8 image (H, W, 3) of ``identity`` showing ``aus`` under ``scene``.

    ``expression`` adds non-pain behaviour (smile, speech, yawn, half-blink, gaze, AU15) on top.

    ``face_width_px`` is the cheek-to-cheek width (default half the image width);
    ``center_px`` the face centre (default the image centre). ``background`` is an
    optional pre-drawn RGB wall of the same size (reused by the video stream).
    """
    width, height = size_px
    if width < 32 or height < 32:
        raise ValueError(f"image must be at least 32x32 px, got {width}x{height}")
    face_w = float(face_width_px if face_width_px is not None else 0.5 * width)
    if not 16 <= face_w <= 2 * max(width, height):
        raise ValueError(f"face width {face_w:g} px does not fit a {width}x{height} image")
    center = center_px if center_px is not None else (width / 2.0, height / 2.0 - 0.02 * height)
    img = background.copy() if background is not None else _wall(size_px, scene)
    if img.shape != (height, width, 3):
        raise ValueError(f"background must be {height}x{width}x3, got {img.shape}")

    painter = _Painter(img, center, face_w / 2.0, identity, scene)
    # Work only on the head's neighbourhood: shading and blur there are the expensive part.
    reach = 3.2 * face_w
    x0, x1 = max(0, int(center[0] - reach)), min(width, int(center[0] + reach))
    y0, y1 = max(0, int(center[1] - reach)), min(height, int(center[1] + reach))
    _draw_head(painter, identity, aus, scene, expression)

    roi = img[y0:y1, x0:x1]
    sub = _Painter(roi, (center[0] - x0, center[1] - y0), face_w / 2.0, identity, scene)
    shade, sheen = _shading(roi.shape[:2], sub, identity, aus, scene, expression)
    gain = scene.light_gain * np.asarray(scene.tint, np.float32)
    out = img.astype(np.float32)
    out *= gain
    out[y0:y1, x0:x1] *= shade[:, :, None]
    out[y0:y1, x0:x1] += sheen[:, :, None]
    if scene.blur_sigma > 0.05:
        out[y0:y1, x0:x1] = cv2.GaussianBlur(out[y0:y1, x0:x1], (0, 0), scene.blur_sigma)
    if add_noise and scene.noise_sigma > 0:
        noise_rng = np.random.default_rng(scene.noise_seed)
        out += noise_rng.normal(0.0, scene.noise_sigma, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- labels / sampling


def _au_table() -> dict[int, np.ndarray]:
    grid = np.stack(np.meshgrid(*[np.arange(6)] * 5, np.arange(2), indexing="ij"), -1).reshape(
        -1, 6
    )
    pspi = (
        grid[:, 0]
        + np.maximum(grid[:, 1], grid[:, 2])
        + np.maximum(grid[:, 3], grid[:, 4])
        + grid[:, 5]
    )
    return {int(v): grid[pspi == v] for v in np.unique(pspi)}


_AU_BY_PSPI = _au_table()


def sample_aus_for_class(rng: np.random.Generator, label: int) -> ActionUnits:
    """Integer AUs with a PSPI in ``label``'s range: PSPI uniform in it, then any combination."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"pain class must lie in 0..{NUM_CLASSES - 1}, got {label}")
    low, high = PSPI_CLASS_RANGES[label]
    pspi = int(rng.integers(low, high + 1))
    options = _AU_BY_PSPI[pspi]
    row = options[int(rng.integers(len(options)))]
    return ActionUnits(*(int(v) for v in row))
