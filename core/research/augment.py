"""Batch augmentation as tensor ops, so it runs where the data lives (GPU when training on CUDA).

The paper's recipe: horizontal flip p=0.5, rotation ±15°, colour jitter
(brightness, contrast, saturation 0.2; hue 0.1). ``color`` keeps only the
jitter (the paper's best "colour-only" variant); ``none`` does nothing.
``periphery`` is ``full`` plus a swap of the crop's outer ring between people
(see :func:`swap_periphery`): hair, pillow and collar stop telling the model
who it sees, so a rare look (long dark hair framing light skin) is not a new
domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from painmon.core.research.options import AUGMENT_MODES
from painmon.core.util.errors import InvalidInputError


@dataclass(frozen=True)
class AugmentConfig:
    mode: str = "full"
    flip_p: float = 0.5
    rotation_deg: float = 15.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1
    # ``periphery`` mode: share of images given another image's ring, and the ring's width
    # as a fraction of the crop side (left, right and top edges; the bottom holds the mouth).
    periphery_p: float = 0.5
    periphery_frac: tuple[float, float] = (0.06, 0.2)

    def __post_init__(self) -> None:
        if self.mode not in AUGMENT_MODES:
            raise InvalidInputError(
                f"augment must be one of {', '.join(AUGMENT_MODES)}, got {self.mode!r}"
            )
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError("flip_p must lie in 0..1")
        if self.hue < 0 or self.hue > 0.5:
            raise ValueError("hue jitter must lie in 0..0.5")
        if not 0.0 <= self.periphery_p <= 1.0:
            raise ValueError("periphery_p must lie in 0..1")
        low, high = self.periphery_frac
        if not 0.0 <= low <= high <= 0.5:
            raise ValueError("periphery_frac must be (low, high) with 0 <= low <= high <= 0.5")


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    v = maxc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-8), torch.zeros_like(maxc))
    safe = delta.clamp_min(1e-8)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, v), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = (
        torch.stack((v, t, p), 1),
        torch.stack((q, v, p), 1),
        torch.stack((p, v, t), 1),
        torch.stack((p, q, v), 1),
        torch.stack((t, p, v), 1),
        torch.stack((v, p, q), 1),
    )
    out = torch.zeros_like(x)
    for k, rgb in enumerate(choices):
        out = torch.where((i == k).unsqueeze(1), rgb, out)
    return out


def color_jitter(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue jitter on RGB in 0..1 (B,3,H,W)."""
    n, device = x.shape[0], x.device
    view = (n, 1, 1, 1)
    if cfg.brightness > 0:
        x = x * _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, gen, device).view(view)
    if cfg.contrast > 0:
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        factor = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen, device).view(view)
        x = (x - mean) * factor + mean
    if cfg.saturation > 0:
        gray = _grayscale(x)
        factor = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, gen, device).view(view)
        x = (x - gray) * factor + gray
    x = x.clamp(0.0, 1.0)
    if cfg.hue > 0:
        hsv = _rgb_to_hsv(x)
        shift = _uniform(n, -cfg.hue, cfg.hue, gen, device).view(n, 1, 1)
        hsv = torch.stack(((hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]), 1)
        x = _hsv_to_rgb(hsv)
    return x.clamp(0.0, 1.0)


def flip_and_rotate(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Random horizontal flip and rotation (reflection padding keeps the face edges natural)."""
    n, device = x.shape[0], x.device
    angle = _uniform(n, -cfg.rotation_deg, cfg.rotation_deg, gen, device) * (math.pi / 180.0)
    flip = torch.rand(n, generator=gen, device=device) < cfg.flip_p
    sign = torch.where(flip, -1.0, 1.0).to(x.dtype)
    cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
    theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
    theta[:, 0, 0] = cos * sign
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * sign
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def swap_periphery(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Give a share of the images the outer ring (left, right, top) of another image in the batch.

    Pain shows in the face's centre; hair, pillow and clothes fill the ring. Swapping the ring
    between the people of a batch decouples them from the label and from identity. The bottom
    edge is kept: at the crop's framing it holds the lower lip and chin. Every choice is drawn
    on the batch's device with no host sync, so the step still captures in a CUDA graph.
    """
    n, _, h, w = x.shape
    if n < 2 or cfg.periphery_p <= 0:
        return x
    device = x.device
    shift = torch.randint(1, n, (1,), generator=gen, device=device)
    donor = (torch.arange(n, device=device) + shift) % n
    low, high = cfg.periphery_frac
    width = _uniform(n, low, high, gen, device).view(n, 1, 1) * min(h, w)
    chosen = (torch.rand(n, generator=gen, device=device) < cfg.periphery_p).view(n, 1, 1)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    edge = torch.minimum(rows, torch.minimum(cols, w - 1 - cols))
    ring = (edge < width) & chosen
    return torch.where(ring.unsqueeze(1), x[donor], x)


def augment_batch(
    x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a float RGB batch in 0..1, shape (B,3,H,W), on its own device."""
    if cfg.mode == "none":
        return x
    if cfg.mode == "periphery":
        x = swap_periphery(x, cfg, gen)
    if cfg.mode in ("full", "periphery"):
        x = flip_and_rotate(x, cfg, gen)
    return color_jitter(x, cfg, gen)
