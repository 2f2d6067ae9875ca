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


def _flat_batch(n=6, side=32):
    # image i is a flat grey of value i/10: a pixel's value names the image it came from
    return torch.stack([torch.full((3, side, side), i / 10.0) for i in range(n)])


def test_swap_periphery_replaces_only_the_side_and_top_ring_with_another_persons():
    from painmon.core.research.augment import swap_periphery

    x = _flat_batch()
    cfg = AugmentConfig(mode="periphery", periphery_p=1.0, periphery_frac=(0.25, 0.25))
    out = swap_periphery(x, cfg, torch.Generator().manual_seed(3))
    for i in range(len(x)):
        own = x[i, 0, 0, 0]
        # centre and bottom edge (mouth, chin) keep the image's own pixels
        assert torch.equal(out[i, :, 8:, 8:24], x[i, :, 8:, 8:24])
        # the ring (8 px = 25 % of 32 on the left, right and top) is another image's, one donor
        ring = torch.cat([out[i, :, :8, :].flatten(), out[i, :, :, :8].flatten()])
        ring = torch.cat([ring, out[i, :, :, 24:].flatten()])
        assert torch.unique(ring).numel() == 1
        assert ring[0] != own


def test_swap_periphery_share_and_trivial_cases():
    from painmon.core.research.augment import swap_periphery

    x = _flat_batch(n=400, side=16)
    gen = torch.Generator().manual_seed(0)
    out = swap_periphery(x, AugmentConfig(mode="periphery", periphery_p=0.5), gen)
    changed = (out != x).flatten(1).any(1).float().mean().item()
    assert 0.4 < changed < 0.6
    assert torch.equal(swap_periphery(x, AugmentConfig(periphery_p=0.0)), x)
    one = x[:1]
    assert torch.equal(swap_periphery(one, AugmentConfig(periphery_p=1.0)), one)
    with pytest.raises(ValueError, match="periphery_frac"):
        AugmentConfig(periphery_frac=(0.3, 0.1))
    with pytest.raises(ValueError, match="periphery_p"):
        AugmentConfig(periphery_p=1.5)


def test_periphery_mode_is_full_augmentation_plus_the_swap():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = augment_batch(x, AugmentConfig(mode="periphery"), torch.Generator().manual_seed(2))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_the_app_offers_the_same_augment_modes_as_training():
    from painmon.core.research import augment, retrain_job

    assert retrain_job.AUGMENT_MODES == augment.AUGMENT_MODES
