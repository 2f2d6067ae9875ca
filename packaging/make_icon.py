"""Draws the painmon icon: a face outline crossed by a heart-rate trace.

    python packaging/make_icon.py          # writes assets/icon.png and assets/icon.ico

Drawn at 1024 px and shrunk with area averaging, so every size stays smooth; the
face and the trace are thick enough to read at 16 px in a task bar.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CANVAS_PX = 1024
PNG_PX = 256
ICO_SIZES_PX = (16, 24, 32, 48, 64, 128, 256)
BACKGROUND_BGR = (92, 64, 18)  # deep teal-blue, calm and not alarm-coloured
FACE_BGR = (245, 245, 245)
TRACE_BGR = (64, 186, 255)  # amber: reads on the dark tile and is not the red of an alarm
REPO = Path(__file__).resolve().parents[1]


def _rounded_tile(size_px: int, radius_px: int) -> np.ndarray:
    """An opaque rounded square on a transparent BGRA canvas."""
    tile = np.zeros((size_px, size_px, 4), np.uint8)
    mask = np.zeros((size_px, size_px), np.uint8)
    r = radius_px
    cv2.rectangle(mask, (r, 0), (size_px - 1 - r, size_px - 1), 255, -1)
    cv2.rectangle(mask, (0, r), (size_px - 1, size_px - 1 - r), 255, -1)
    for cx in (r, size_px - 1 - r):
        for cy in (r, size_px - 1 - r):
            cv2.circle(mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
    tile[..., :3] = BACKGROUND_BGR
    tile[..., 3] = mask
    return tile


def _trace_points(size_px: int) -> np.ndarray:
    """A flat line with one QRS-like spike, across the lower half of the face."""
    s = size_px / 1024
    xs_ys = [
        (110, 650),
        (330, 650),
        (380, 610),
        (420, 650),
        (470, 650),
        (515, 420),
        (570, 830),
        (615, 650),
        (680, 650),
        (725, 605),
        (770, 650),
        (914, 650),
    ]
    return (np.array(xs_ys, np.float64) * s).round().astype(np.int32)


def _px(x: float, y: float, scale: float) -> tuple[int, int]:
    """A point given on the 1024 px design grid, scaled to the canvas."""
    return round(x * scale), round(y * scale)


def draw_icon(size_px: int = CANVAS_PX) -> np.ndarray:
    """The icon as a BGRA image of ``size_px`` square."""
    s = size_px / 1024
    img = _rounded_tile(size_px, round(200 * s))
    bgr = np.ascontiguousarray(img[..., :3])
    line_px = max(1, round(44 * s))
    axes = _px(300, 360, s)
    cv2.ellipse(bgr, _px(512, 500, s), axes, 0, 0, 360, FACE_BGR, line_px, cv2.LINE_AA)
    # Lowered, drawn-together brows and squeezed eyes: the pain-expression action units.
    for sign in (-1, 1):
        brow = (_px(512 + sign * 60, 380, s), _px(512 + sign * 200, 330, s))
        eye = (_px(512 + sign * 85, 450, s), _px(512 + sign * 175, 440, s))
        for start, end in (brow, eye):
            cv2.line(bgr, start, end, FACE_BGR, line_px, cv2.LINE_AA)
    # A dark halo under the trace keeps it separate from the face outline it crosses.
    points = _trace_points(size_px)
    cv2.polylines(bgr, [points], False, BACKGROUND_BGR, round(110 * s), cv2.LINE_AA)
    cv2.polylines(bgr, [points], False, TRACE_BGR, round(54 * s), cv2.LINE_AA)
    img[..., :3] = bgr
    return img


def icon_rgba(size_px: int) -> np.ndarray:
    """The icon as RGBA, drawn on the full canvas and area-averaged down to ``size_px``."""
    rgba = cv2.cvtColor(draw_icon(CANVAS_PX), cv2.COLOR_BGRA2RGBA)
    return cv2.resize(rgba, (size_px, size_px), interpolation=cv2.INTER_AREA)


def write_icons(out_dir: Path) -> tuple[Path, Path]:
    """Write ``icon.png`` (256 px) and a multi-size ``icon.ico`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png_path = out_dir / "icon.png"
    ico_path = out_dir / "icon.ico"
    sized = {px: Image.fromarray(icon_rgba(px)) for px in ICO_SIZES_PX}
    sized[PNG_PX].save(png_path, optimize=True)
    sized[256].save(
        ico_path,
        sizes=[(px, px) for px in ICO_SIZES_PX],
        append_images=[sized[px] for px in ICO_SIZES_PX[:-1]],
    )
    return png_path, ico_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "assets")
    args = parser.parse_args()
    for path in write_icons(args.out):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
