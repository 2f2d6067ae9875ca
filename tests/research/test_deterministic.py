"""--nondeterministic: cuDNN may autotune on a GPU; deterministic kernels stay the default."""

from __future__ import annotations

import json

import pytest

from painmon.core.research import seeding, train
from painmon.core.research.reproduce import build_experiments, config_identity, protocol_settings
from painmon.core.research.stacked import init_member_models
from painmon.core.research.train import TrainConfig


@pytest.fixture
def requested(monkeypatch):
    """Records the determinism each seeding asked for; seeds deterministically regardless,
    so the suite's global torch settings do not change."""
    calls: list[bool] = []
    real = seeding.seed_everything

    def recording(seed, deterministic=True):
        calls.append(deterministic)
        real(seed)

    monkeypatch.setattr(seeding, "seed_everything", recording)
    return calls


@pytest.mark.parametrize("deterministic", [True, False])
def test_fit_and_the_stacked_engine_seed_as_configured(toy_crops, tmp_path, requested,
                                                       deterministic):  # fmt: skip
    import torch

    cfg = TrainConfig(model="micropainnet", epochs=1, warmup_epochs=0, batch_size=8,
                      device="cpu", deterministic=deterministic)  # fmt: skip
    x, y = toy_crops(16, 0)
    train.fit(cfg, x, y, x[:8], y[:8], tmp_path / "run", progress=False)
    init_member_models(cfg, [1, 2], torch.device("cpu"))
    assert requested == [deterministic] * 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["deterministic"] is (
        deterministic
    )


def test_deterministic_is_the_default_and_the_cli_switch_turns_it_off():
    from painmon.core.tools.cli import _train_config, build_parser

    assert TrainConfig().deterministic is True
    parser = build_parser()
    for command in ("train", "cv"):
        base = [command, "--manifest", "m.npz", "--out", "o"]
        assert _train_config(parser.parse_args(base)).deterministic is True
        fast = parser.parse_args([*base, "--nondeterministic"])
        assert _train_config(fast).deterministic is False
    rep = parser.parse_args(["reproduce", "--manifest", "m", "--out", "o", "--nondeterministic"])
    assert rep.nondeterministic is True


def test_reproduce_identity_names_only_a_nondeterministic_recipe():
    settings = protocol_settings(False, 5, (42,), 100)
    default = build_experiments(settings)[0].cfg
    fast = build_experiments(settings, deterministic=False)[0].cfg
    assert default.deterministic is True and fast.deterministic is False
    # Cells finished before the setting existed (all deterministic) keep being reused...
    assert "deterministic" not in json.loads(config_identity(default))
    # ...and a nondeterministic cell is never mistaken for one of them.
    assert json.loads(config_identity(fast))["deterministic"] is False
    assert config_identity(default) != config_identity(fast)
