"""Model zoo: every registered network honours the shared interface; Grad-CAM needs no autograd."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from painmon.core.util.model_cfg import PainModelCfg, thaw
from painmon.models import (
    ClassifierHead,
    create_model,
    describe_models,
    format_model_table,
    format_params,
    gradcam,
    gradcam_from_gradient,
    list_models,
)
from painmon.models.layers import MultiHeadSpatialAttention, parse_pooling

MODELS = list_models()
BATCH = 2


def _input(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, 3, 64, 64, generator=generator)


def _randomise_batchnorm(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN statistics so the explicit gradient's BN-as-affine is actually exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))


@pytest.fixture(scope="module")
def eval_models() -> dict[str, nn.Module]:
    models = {}
    for name in MODELS:
        torch.manual_seed(0)
        model = create_model(name)
        _randomise_batchnorm(model)
        models[name] = model.eval()
    return models


def test_registry_holds_the_paper_models():
    assert {"dacnn", "simplecnn", "micropainnet", "painxception"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_finite(name, eval_models):
    with torch.no_grad():
        logits = eval_models[name](_input())
    assert logits.shape == (BATCH, 5)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    loss = nn.functional.cross_entropy(model(_input()), torch.tensor([1, 4]))
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{name}.{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}.{param_name} gradient not finite"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_output(name):
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model(name).eval()
        with torch.no_grad():
            outputs.append(model(_input()))
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(124)
    with torch.no_grad():
        other = create_model(name).eval()(_input())
    assert not torch.equal(outputs[0], other)


@pytest.mark.parametrize("name", MODELS)
def test_features_and_head_compose_to_forward(name, eval_models):
    model = eval_models[name]
    x = _input()
    captured = []
    hook = model.get_submodule(model.gradcam_layer).register_forward_hook(
        lambda _m, _i, out: captured.append(out)
    )
    try:
        with torch.no_grad():
            features = model.forward_features(x)
            logits = model.forward_head(features)
            direct = model(x)
    finally:
        hook.remove()
    assert features.shape == (BATCH, 512 if name != "micropainnet" else 256, 8, 8)
    torch.testing.assert_close(logits, direct, rtol=0, atol=0)
    # gradcam_layer names the module whose output *is* the Grad-CAM feature map.
    torch.testing.assert_close(captured[0], features, rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_attention_maps_shape_and_range(name, eval_models):
    model = eval_models[name]
    with torch.no_grad():
        maps = model.attention_maps(_input())
    attention = [m for m in model.modules() if isinstance(m, MultiHeadSpatialAttention)]
    if not attention:
        assert maps is None
        return
    assert maps.shape == (BATCH, attention[0].num_heads, 8, 8)
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0


@pytest.mark.parametrize("name", MODELS)
def test_explicit_input_gradient_equals_autograd(name, eval_models):
    model = eval_models[name]
    with torch.no_grad():
        features = model.forward_features(_input())
    features = features.detach().requires_grad_(True)
    logits = model.forward_head(features)
    for class_index in (None, 3, torch.tensor([0, 4])):
        if class_index is None:
            index = logits.argmax(dim=1)
        elif isinstance(class_index, int):
            index = torch.full((BATCH,), class_index)
        else:
            index = class_index
        (expected,) = torch.autograd.grad(
            logits.gather(1, index[:, None]).sum(), features, retain_graph=True
        )
        explicit_logits, explicit = model.head.logits_and_input_gradient(
            features.detach(), class_index
        )
        torch.testing.assert_close(explicit_logits, logits.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(explicit, expected, rtol=1e-4, atol=1e-7)
        assert explicit.abs().sum() > 0


def _autograd_gradcam(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    captured = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["features"] = output

    hook = model.get_submodule(model.gradcam_layer).register_forward_hook(keep)
    try:
        logits = model(x)
    finally:
        hook.remove()
    logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum().backward()
    features = captured["features"]
    return gradcam_from_gradient(features.detach(), features.grad)


@pytest.mark.parametrize("name", MODELS)
def test_gradcam_matches_autograd_gradcam(name, eval_models):
    model = eval_models[name]
    x = _input(seed=5)
    heatmap = gradcam(model, x)
    reference = _autograd_gradcam(model, x)
    model.zero_grad(set_to_none=True)
    assert heatmap.shape == (BATCH, 8, 8)
    torch.testing.assert_close(heatmap, reference, rtol=0, atol=1e-5)
    assert heatmap.min() >= 0.0
    assert heatmap.max() <= 1.0
    assert heatmap.flatten(1).amax(dim=1).gt(0.99).any(), "every heatmap came out empty"


def test_head_gradient_routes_pool_ties_like_autograd():
    torch.manual_seed(0)
    head = ClassifierHead(4, (4, 4), num_classes=5, dropout=0.5)
    _randomise_batchnorm(head)
    head.eval()
    # Integers with many repeats: most 2x2 windows hold tied maxima (incl. all-zero windows).
    features = torch.randint(0, 2, (BATCH, 4, 4, 4)).float().requires_grad_(True)
    logits = head(features)
    (expected,) = torch.autograd.grad(logits[:, 2].sum(), features)
    explicit = head.input_gradient(features.detach(), 2)
    torch.testing.assert_close(explicit, expected, rtol=1e-5, atol=1e-7)


def test_head_without_pool_gradient_equals_autograd():
    torch.manual_seed(0)
    head = ClassifierHead(3, (5, 5), num_classes=4, dropout=0.2, pool=False)
    _randomise_batchnorm(head)
    head.eval()
    features = torch.randn(BATCH, 3, 5, 5, requires_grad=True)
    (expected,) = torch.autograd.grad(head(features)[:, 1].sum(), features)
    torch.testing.assert_close(head.input_gradient(features.detach(), 1), expected)


def test_explicit_gradient_refuses_train_mode():
    head = ClassifierHead(4, (4, 4)).train()
    with pytest.raises(RuntimeError, match="eval"):
        head.input_gradient(torch.zeros(BATCH, 4, 4, 4), 0)
    with pytest.raises(RuntimeError, match="eval"):
        gradcam(create_model("simplecnn").train(), _input())


def _ablation_id(options: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


ABLATIONS = [
    {"spatial_attention": False},
    {"channel_attention": False},
    {"spatial_attention": False, "channel_attention": False},
    {"pooling": "avg"},
    {"pooling": "avg,max"},
    {"pooling": ("max", "std")},
    {"num_heads": 1},
    {"num_heads": 8},
    {"dropout": 0.0},
    {"num_classes": 3},
]


@pytest.mark.parametrize(
    "options", ABLATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items())
)
def test_dacnn_ablation_variants_build_and_run(options):
    torch.manual_seed(0)
    model = create_model("dacnn", **options).eval()
    x = _input()
    with torch.no_grad():
        logits = model(x)
        maps = model.attention_maps(x)
    assert logits.shape == (BATCH, options.get("num_classes", 5))
    assert torch.isfinite(logits).all()
    spatial = options.get("spatial_attention", True)
    channel = options.get("channel_attention", True)
    assert (model.spatial_attention is not None) == spatial
    assert (model.channel_attention is not None) == channel
    if spatial:
        assert maps.shape == (BATCH, options.get("num_heads", 4), 8, 8)
    else:
        assert maps is None
    expected_layer = (
        "channel_attention" if channel else "spatial_attention" if spatial else "block4"
    )
    assert model.gradcam_layer == expected_layer
    if channel and "pooling" in options:
        assert model.channel_attention.pooling == parse_pooling(options["pooling"])
    assert gradcam(model, x).shape == (BATCH, 8, 8)


def test_dacnn_pooling_sets_widen_only_the_first_channel_fc():
    counts = {
        pooling: sum(p.numel() for p in create_model("dacnn", pooling=pooling).parameters())
        for pooling in ("avg", "avg,max", "avg,max,std")
    }
    # Each extra statistic adds C inputs to FC1 (C=512, hidden C/8=64): 512*64 weights.
    assert counts["avg,max"] - counts["avg"] == 512 * 64
    assert counts["avg,max,std"] - counts["avg,max"] == 512 * 64


def test_dacnn_without_attention_is_simplecnn():
    torch.manual_seed(0)
    plain = create_model("dacnn", spatial_attention=False, channel_attention=False)
    torch.manual_seed(0)
    baseline = create_model("simplecnn")
    assert plain.state_dict().keys() == baseline.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(_input()), baseline.eval()(_input()))


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_rebuilds_the_model(name, eval_models):
    model = eval_models[name]
    cfg = model.pretrained_cfg
    assert isinstance(cfg, PainModelCfg)
    assert cfg.architecture == name
    assert cfg.input_size == (3, 64, 64)
    assert cfg.mean == pytest.approx((0.485, 0.456, 0.406))
    assert cfg.std == pytest.approx((0.229, 0.224, 0.225))
    assert cfg.num_classes == 5
    assert len(cfg.class_names) == 5
    assert cfg.pspi_mapping == "0->0, 1->1, 2-3->2, 4-6->3, 7-16->4"
    assert cfg.temperature == 1.0 and not cfg.crop
    # The checkpoint sidecar must survive a JSON round trip unchanged.
    meta = json.loads(json.dumps(cfg.to_checkpoint_meta()))
    assert PainModelCfg.from_checkpoint_meta(meta) == cfg
    rebuilt = create_model(meta["architecture"], **meta["model_kwargs"])
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(_input()), model(_input()), rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_survives_the_strict_onnx_metadata_check(name, eval_models):
    # What export writes into metadata_props must pass the load-time validation, with and
    # without the crop framing a training run adds.
    cfg = eval_models[name].pretrained_cfg
    crop = {"size_px": 64, "margin": 0.25, "eye_alignment": True, "framing": "stable-landmarks",
            "framing_params": {"center_down": 0.19, "side_scale": 1.8}}  # fmt: skip
    for variant in (cfg, dataclasses.replace(cfg, crop=crop, temperature=0.74)):
        parsed = json.loads(json.dumps(variant.to_onnx_metadata()))
        assert PainModelCfg.from_onnx_metadata(parsed) == variant


def test_ablation_options_are_recorded_for_rebuild():
    model = create_model("dacnn", spatial_attention=False, pooling=("max", "avg"), num_heads=2)
    kwargs = model.pretrained_cfg.model_kwargs
    assert kwargs["spatial_attention"] is False
    assert kwargs["num_heads"] == 2
    assert kwargs["pooling"] == ("max", "avg")
    rebuilt = create_model("dacnn", **json.loads(json.dumps(thaw(kwargs))))
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_model_table_lists_every_model_with_its_parameter_count():
    table = format_model_table()
    rows = {row["name"]: row for row in describe_models()}
    assert set(rows) == set(MODELS)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["name", "params", "input"]
    for name in MODELS:
        true_count = sum(p.numel() for p in create_model(name).parameters())
        assert rows[name]["params"] == true_count
        line = next(line for line in lines if line.split()[0] == name)
        assert format_params(true_count) in line
        assert "3x64x64" in line
        assert rows[name]["gradcam_layer"] in line
        assert rows[name]["description"]
    assert format_params(7_123_456) == "7.12M"


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'") as info:
        create_model("resnet9000")
    for name in MODELS:
        assert name in str(info.value)


def test_unknown_option_and_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match=r"does not accept option.*heads"):
        create_model("dacnn", heads=4)
    with pytest.raises(ValueError, match="unknown channel-attention pooling median"):
        create_model("dacnn", pooling="avg,median")
    with pytest.raises(ValueError, match="num_heads"):
        create_model("dacnn", num_heads=0)
    with pytest.raises(ValueError, match="dropout"):
        create_model("simplecnn", dropout=1.5)


def test_dacnn_card_states_the_true_parameter_count():
    card = Path(__file__).resolve().parents[2] / "models" / "cards" / "dacnn.md"
    text = card.read_text(encoding="utf-8")
    count = sum(p.numel() for p in create_model("dacnn").parameters())
    assert f"{count:,}" in text
    assert "not for clinical use" in text
    assert "0->0, 1->1, 2-3->2, 4-6->3, 7-16->4" in text
