"""The stacked engine's batched-GEMM path computes each member's own network, exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state
from torch.utils._python_dispatch import TorchDispatchMode

from painmon.core.research.member_batched import (
    UnsupportedModelError,
    batched_forward,
    check_supported,
)
from painmon.core.research.stacked import init_member_models, stacked_base, stacked_loss
from painmon.core.research.train import TrainConfig

# Every network and ablation variant `painmon reproduce` trains, without dropout (the
# stacked and the single forward then draw nothing at random).
VARIANTS = [
    ("dacnn", {}),
    ("dacnn", {"num_heads": 1}),
    ("dacnn", {"num_heads": 8}),
    ("dacnn", {"pooling": "avg"}),
    ("dacnn", {"pooling": "avg,max"}),
    ("dacnn", {"spatial_attention": False, "channel_attention": False}),
    ("dacnn", {"spatial_attention": True, "channel_attention": False}),
    ("dacnn", {"spatial_attention": False, "channel_attention": True}),
    ("simplecnn", {}),
    ("micropainnet", {}),
    ("painxception", {}),
]


def _setup(model: str, kwargs: dict, seeds=(1, 2), batch: int = 4, size: int = 64):
    cfg = TrainConfig(model=model, model_kwargs={**kwargs, "dropout": 0.0}, device="cpu")
    models = init_member_models(cfg, list(seeds), torch.device("cpu"))
    singles = init_member_models(cfg, list(seeds), torch.device("cpu"))
    params, buffers = stack_module_state(models)
    base = stacked_base(cfg)
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(len(seeds), batch, 3, size, size, generator=gen) * 2 - 1
    y = torch.randint(0, 5, (len(seeds), batch), generator=gen)
    return base, params, buffers, singles, x, y


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-12))


@pytest.fixture
def float64():
    """Exactness, not rounding: in float64 another summation order changes ~1e-15, while
    BatchNorm over 4 crops turns float32's order differences into 1e-3 gradient noise."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize(("model", "kwargs"), VARIANTS, ids=lambda v: str(v))
def test_batched_training_step_equals_each_members_own(model, kwargs, float64):
    base, params, buffers, singles, x, y = _setup(model, kwargs)
    check_supported(base)
    logits = batched_forward(base, params, buffers, x)
    assert logits.dtype == torch.float64
    per_member = torch.stack(
        [F.cross_entropy(logits[i], y[i], label_smoothing=0.1) for i in range(len(y))]
    )
    per_member.sum().backward()

    for i, single in enumerate(singles):
        single.train()
        own = single(x[i])
        loss = F.cross_entropy(own, y[i], label_smoothing=0.1)
        loss.backward()
        assert _relative(logits[i].detach(), own.detach()) < 1e-10
        assert per_member[i].item() == pytest.approx(loss.item(), rel=1e-10)
        for name, p in single.named_parameters():
            error = _relative(params[name].grad[i], p.grad)
            assert error < 1e-8, (name, error)
        # The running statistics moved exactly as the member's own BatchNorm moved them.
        for name, b in single.named_buffers():
            assert torch.allclose(buffers[name][i], b, rtol=1e-10, atol=1e-12), name


@pytest.mark.parametrize(("model", "kwargs"), [VARIANTS[0], VARIANTS[-1]], ids=str)
def test_batched_eval_equals_each_members_own_and_leaves_buffers(model, kwargs, float64):
    base, params, buffers, singles, x, _ = _setup(model, kwargs, batch=3)
    with torch.no_grad():
        # Move the running statistics off their initial values first.
        base.train()
        batched_forward(base, params, buffers, x)
        for i, single in enumerate(singles):
            single.train()
            single(x[i])
        before = {k: v.clone() for k, v in buffers.items()}
        base.eval()
        logits = batched_forward(base, params, buffers, x)
    for i, single in enumerate(singles):
        single.eval()
        with torch.no_grad():
            assert _relative(logits[i], single(x[i])) < 1e-10
    assert all(torch.equal(before[k], buffers[k]) for k in buffers)


def test_batched_rounds_like_the_members_own_under_bf16_autocast():
    base, params, buffers, singles, x, y = _setup("dacnn", {})

    def fresh() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in buffers.items()}

    with torch.no_grad():
        exact = batched_forward(base, params, fresh(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batched = batched_forward(base, params, fresh(), x)
        with torch.no_grad():
            own = torch.stack([m.train()(x[i]) for i, m in enumerate(singles)])
    assert batched.dtype == own.dtype == torch.bfloat16
    # Products in bf16 (8-bit mantissa) move the logits by a few per cent, as much as they
    # move each member's own network under the same autocast: not more.
    own_error = _relative(own.float(), exact)
    assert 0 < _relative(batched.detach().float(), exact) < 1.5 * own_error + 0.01
    stacked_loss(batched, y, 0.1)[0].backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params.values())
    assert all(torch.isfinite(p.grad).all() for p in params.values())


class _CountOps(TorchDispatchMode):
    """Every operator that computes (views and detach left out), and the activation copies."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.ops = 0
        self.activation_copies: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in ("detach", "empty", "new_empty"):
            self.ops += 1
            if name in ("copy_", "clone"):
                shape = tuple(args[0].shape)
                if len(shape) == 5 and shape[0] == self.batch:  # (B, H, W, M, C)
                    self.activation_copies.append((name, shape))
        return func(*args, **(kwargs or {}))


# What the batched step does copy: the input batch into the members-innermost layout, the
# head's input into each member's channel-major flattening, and (Xception) the stride-2 skip
# connections' subsampled inputs, a quarter of their block's input each.
EXPECTED_COPIES = {
    "dacnn": [(3, 64, 64, 2, 3), (3, 2, 512, 4, 4)],
    "painxception": [(3, 64, 64, 2, 3), (3, 32, 32, 2, 64), (3, 16, 16, 2, 128),
                     (3, 8, 8, 2, 256), (3, 2, 512, 4, 4)],
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(EXPECTED_COPIES))
def test_batched_step_copies_no_activations_and_runs_fewer_operators_than_vmap(model):
    # On a GPU each operator is at least one kernel launch and each activation copy a pass
    # over memory: the batched path exists to need fewer of both than vmap's.
    from painmon.core.research.stacked import stacked_forward

    counts = {}
    for name, forward in (("vmap", stacked_forward), ("bmm", batched_forward)):
        base, params, buffers, _, x, y = _setup(model, {}, seeds=(1, 2), batch=3)
        base.train()
        with _CountOps(batch=3) as counter:
            logits = forward(base, params, buffers, x)
            stacked_loss(logits, y, 0.1)[0].backward()
        counts[name] = counter
    # Forward only: neither the layers nor their gradients copy activations.
    assert counts["bmm"].activation_copies == [("clone", s) for s in EXPECTED_COPIES[model]]
    assert counts["bmm"].ops < counts["vmap"].ops


def test_im2col_gradient_is_the_nine_slices_gradient(float64):
    from painmon.core.research.member_batched import _Im2col

    x = torch.randn(2, 5, 4, 2, 3, requires_grad=True)  # (B, H, W, M, C)
    assert torch.autograd.gradcheck(lambda t: _Im2col.apply(t, 3, 3, 1, 1), (x,))
    cols = _Im2col.apply(x, 3, 3, 1, 1)
    assert cols.shape == (2, 5, 4, 2, 27)
    # Tap (0, 0) of pixel (1, 1) is pixel (0, 0), per member; the top-left pixel's tap (0, 0)
    # is padding; tap (1, 1) (the centre) is the pixel itself.
    assert torch.equal(cols[:, 1, 1, :, :3], x[:, 0, 0]) and not cols[:, 0, 0, :, :3].any()
    assert torch.equal(cols[:, 2, 3, :, 12:15], x[:, 2, 3])


def test_member_matmul_reads_and_writes_the_interleaved_layout(float64):
    from painmon.core.research.member_batched import _MemberMatmul

    gen = torch.Generator().manual_seed(3)
    a = torch.randn(6, 3, 4, generator=gen, requires_grad=True)  # (N rows, M members, K)
    w = torch.randn(3, 4, 5, generator=gen, requires_grad=True)  # (M, K, O)
    out = _MemberMatmul.apply(a, w)
    assert out.shape == (6, 3, 5) and out.is_contiguous()
    assert torch.allclose(out, torch.einsum("nmk,mko->nmo", a, w))
    assert torch.autograd.gradcheck(_MemberMatmul.apply, (a, w))
    # A transposed weight (as nn.Linear's) is read in place too.
    wt = torch.randn(3, 5, 4, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, u: _MemberMatmul.apply(t, u.transpose(1, 2)), (a, wt))


def test_a_network_without_a_batched_form_is_named():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(3, 4, 3)

    with pytest.raises(UnsupportedModelError, match="Odd"):
        check_supported(Odd())
    dacnn = stacked_base(TrainConfig(model="dacnn"))
    dacnn.block1.relu = nn.GELU()
    with pytest.raises(UnsupportedModelError, match=r"block1\.relu: .*GELU"):
        check_supported(dacnn)
