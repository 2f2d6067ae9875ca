import math

import pytest
import torch

from painmon.core.research.augment import (
    AugmentConfig,
    _hsv_to_rgb,
    _rgb_to_hsv,
    augment_batch,
    color_jitter,
    flip_and_rotate,
)


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g)


def test_none_is_identity_and_modes_validated():
    x = _batch()
    assert torch.equal(augment_batch(x, AugmentConfig(mode="none")), x)
    with pytest.raises(ValueError, match="augment"):
        AugmentConfig(mode="heavy")


def test_hsv_round_trip():
    x = _batch(16)
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(x)), x, atol=1e-5)


def test_flip_only_mirrors_exactly():
    x = _batch(4)
    cfg = AugmentConfig(flip_p=1.0, rotation_deg=0.0)
    out = flip_and_rotate(x, cfg, torch.Generator().manual_seed(1))
    assert torch.allclose(out, torch.flip(x, dims=[3]), atol=1e-5)
    cfg = AugmentConfig(flip_p=0.0, rotation_deg=0.0)
    assert torch.allclose(flip_and_rotate(x, cfg, torch.Generator().manual_seed(1)), x, atol=1e-5)


def test_rotation_moves_pixels_but_keeps_range_and_shape():
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, 14:18, 2:30] = 1.0  # a horizontal bar
    cfg = AugmentConfig(flip_p=0.0, rotation_deg=15.0)
    out = flip_and_rotate(x, cfg, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    assert not torch.allclose(out, x)
    assert out.min() >= 0 and out.max() <= 1


def test_color_jitter_bounded_and_deterministic():
    x = _batch(8)
    cfg = AugmentConfig(mode="color")
    a = color_jitter(x, cfg, torch.Generator().manual_seed(5))
    b = color_jitter(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    # brightness 0.2 bounds the mean change of a mid-grey image
    grey = torch.full((64, 3, 8, 8), 0.5)
    out = color_jitter(
        grey,
        AugmentConfig(mode="color", hue=0.0, saturation=0.0, contrast=0.0),
        torch.Generator().manual_seed(0),
    )
    means = out.mean(dim=(1, 2, 3))
    assert means.min() >= 0.4 - 1e-6 and means.max() <= 0.6 + 1e-6
    assert means.std() > 0.01  # each image gets its own factor


def test_color_mode_never_moves_pixels_geometrically():
    x = torch.zeros(4, 3, 16, 16)
    x[:, :, :, :4] = 1.0
    out = augment_batch(x, AugmentConfig(mode="color", hue=0.0), torch.Generator().manual_seed(2))
    # the bright stripe stays on the left
    assert bool(out[:, :, :, :4].mean() > out[:, :, :, 8:].mean())
    assert math.isfinite(float(out.sum()))
