"""The stacked engine's second kernel path: every member's layers as batched matrix products.

:func:`~painmon.core.research.stacked.stacked_forward` runs M stacked members through
``torch.func.vmap``; vmap turns each convolution over M members into one *grouped*
convolution, which cuDNN serves slowly, and its batch norm keeps the tensors NCHW (see
``stacked.batch_layout``). :func:`batched_forward` computes the same function without
vmap. Activations live as (B, H, W, M, C): one channels-last image batch whose channels are
the M members' C channels side by side. In that layout

* a 3x3 convolution is an im2col of nine shifted views and one ``torch.bmm`` over members
  (cuBLAS strided-batched GEMM, bf16 tensor cores under autocast) that reads and writes the
  interleaved layout in place (:class:`_MemberMatmul`), so no layer copies activations;
* batch norm, max-pool and depthwise convolution are PyTorch's own kernels on the
  channels-last (B, M*C, H, W) view: each member's channels are ordinary channels there,
  so one kernel serves all members (and BatchNorm updates the stacked running statistics
  in place, with PyTorch's own unbiased-variance rule);
* the small attention layers are batched products or grouped 1x1 convolutions.

It is an interpreter over the model zoo's own layer types (``models/layers.py``), reading
the members' weights in their ordinary layout from the stacked dictionaries, so the
optimizer, checkpoints and best-epoch copies stay exactly the vmap path's. A network it
does not know raises :class:`UnsupportedModelError`; the engine then stays on vmap.
Which path is faster on a given GPU is measured, not assumed (``painmon bench train
--engine stacked|stacked-bmm``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from painmon.models.baselines import PainXception, PlainCNN
from painmon.models.dacnn import DACNN
from painmon.models.layers import (
    ChannelAttention,
    ClassifierHead,
    ConvBlock,
    MultiHeadSpatialAttention,
    SeparableConv2d,
    XceptionBlock,
    pool_statistics,
)

STACKED_OPS = ("vmap", "bmm")


class UnsupportedModelError(NotImplementedError):
    """A layer or network the batched interpreter cannot compute exactly."""


class _Members:
    """The stacked weights and buffers of M members, and whether they train."""

    def __init__(
        self, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], training: bool
    ) -> None:
        self.params = params
        self.buffers = buffers
        self.training = training

    def p(self, name: str) -> Tensor:
        return self.params[name]

    def maybe(self, name: str) -> Tensor | None:
        return self.params.get(name)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype autocast would run a matrix product in (the input's when autocast is off)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _nchw(x: Tensor) -> Tensor:
    """(B, H, W, M, C) as the channels-last NCHW view (B, M*C, H, W): no copy."""
    b, h, w, m, c = x.shape
    return x.view(b, h, w, m * c).permute(0, 3, 1, 2)


def _from_nchw(y: Tensor, m: int) -> Tensor:
    """A (B, M*C, H, W) result back as (B, H, W, M, C) (a view when it is channels-last)."""
    b, mc, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(b, h, w, m, mc // m)


class _MemberMatmul(torch.autograd.Function):
    """(N, M, K) x (M, K, O) -> (N, M, O): each member's rows times its own matrix.

    Rows stay interleaved by member (the activation layout): cuBLAS reads and writes them
    through a batch stride of K (O) and a row stride of M*K (M*O), so neither the product
    nor its gradient copies a (M, N, .) version of the activations."""

    @staticmethod
    def forward(ctx, a: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(a, w)
        out = a.new_empty((a.shape[0], a.shape[1], w.shape[2]))
        torch.bmm(a.transpose(0, 1), w, out=out.transpose(0, 1))
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, w = ctx.saved_tensors
        grad = grad.contiguous()
        grad_a = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_a = grad.new_empty(a.shape)
            torch.bmm(grad.transpose(0, 1), w.transpose(1, 2), out=grad_a.transpose(0, 1))
        if ctx.needs_input_grad[1]:
            if w.stride(1) == 1 and w.transpose(1, 2).is_contiguous():
                # A transposed view (nn.Linear's weight): its gradient in the weight's own
                # layout, so no copy follows.
                grad_w = torch.bmm(grad.transpose(0, 1).transpose(1, 2), a.transpose(0, 1))
                grad_w = grad_w.transpose(1, 2)
            else:
                grad_w = torch.bmm(a.transpose(0, 1).transpose(1, 2), grad.transpose(0, 1))
        return grad_a, grad_w


def _matmul(x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """(N, M, K) @ (M, K, O) + bias (M, O): one batched GEMM over members."""
    dtype = _compute_dtype(x)
    out = _MemberMatmul.apply(x.to(dtype), w.to(dtype))
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out


class _Im2col(torch.autograd.Function):
    """(B, H, W, M, C) -> (B, H, W, M, kh*kw*C): the zero-padded kh x kw neighbourhood of
    each pixel, per member and tap-major. Autograd's own backward of nine slices would
    allocate nine padded zero tensors and add them; this one adds the nine taps into one
    buffer."""

    @staticmethod
    def forward(ctx, x: Tensor, kh: int, kw: int, ph: int, pw: int) -> Tensor:
        b, h, w, m, c = x.shape
        padded = F.pad(x, (0, 0, 0, 0, pw, pw, ph, ph))
        ctx.geometry = (kh, kw, ph, pw)
        taps = [padded[:, i : i + h, j : j + w] for i in range(kh) for j in range(kw)]
        return torch.stack(taps, dim=4).view(b, h, w, m, kh * kw * c)

    @staticmethod
    def backward(ctx, grad: Tensor):
        kh, kw, ph, pw = ctx.geometry
        b, h, w, m, kc = grad.shape
        c = kc // (kh * kw)
        taps = grad.view(b, h, w, m, kh * kw, c)
        padded = grad.new_zeros((b, h + 2 * ph, w + 2 * pw, m, c))
        for i in range(kh):
            for j in range(kw):
                # add_, not +=: Python's += on a slice would copy the slice onto itself.
                padded[:, i : i + h, j : j + w].add_(taps[:, :, :, :, i * kw + j])
        return padded[:, ph : ph + h, pw : pw + w], None, None, None, None


def _conv(ms: _Members, name: str, conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A Conv2d of every member on (B, H, W, M, C)."""
    if conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        raise UnsupportedModelError(f"{name}: padding mode {conv.padding_mode}, dilation")
    weight = ms.p(f"{name}.weight")  # (M, O, C/g, kh, kw)
    bias = ms.maybe(f"{name}.bias")
    b, h, w, m, c = x.shape
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = conv.padding if isinstance(conv.padding, tuple) else (None, None)
    if ph is None:
        raise UnsupportedModelError(f"{name}: padding {conv.padding!r}")
    groups = conv.groups
    out_ch = weight.shape[1]
    if groups == 1 and (kh, kw) == (1, 1) and (ph, pw) == (0, 0):
        if (sh, sw) != (1, 1):
            x = x[:, ::sh, ::sw]
        b, h, w = x.shape[:3]
        wt = weight.reshape(m, out_ch, c).transpose(1, 2)
        return _matmul(x.reshape(b * h * w, m, c), wt, bias).view(b, h, w, m, out_ch)
    if (sh, sw) != (1, 1) or (kh - 1 != 2 * ph) or (kw - 1 != 2 * pw):
        raise UnsupportedModelError(f"{name}: stride {conv.stride} with a {kh}x{kw} kernel")
    if groups == 1:
        # im2col: the kh*kw shifted views side by side, channels innermost, then one GEMM.
        dtype = _compute_dtype(x)
        cols = _Im2col.apply(x.to(dtype), kh, kw, ph, pw)
        # Cast and reorder tap-major in one copy.
        wt = weight.permute(0, 3, 4, 2, 1).to(dtype, memory_format=torch.contiguous_format)
        wt = wt.reshape(m, kh * kw * c, out_ch)  # a view after a cast; a copy without one
        out = _matmul(cols.view(b * h * w, m, kh * kw * c), wt, bias)
        return out.view(b, h, w, m, out_ch)
    if groups == c == out_ch or (kh, kw) == (1, 1):
        # Depthwise, or the attention heads' grouped 1x1 scores: every member's groups are
        # groups of one convolution on the channels-last view (members never mix).
        flat_bias = bias.reshape(m * out_ch) if bias is not None else None
        y = F.conv2d(
            _nchw(x),
            weight.reshape(m * out_ch, c // groups, kh, kw),
            flat_bias,
            padding=(ph, pw),
            groups=m * groups,
        )
        return _from_nchw(y, m)
    raise UnsupportedModelError(f"{name}: {groups} groups with a {kh}x{kw} kernel")


def _batch_norm(ms: _Members, name: str, bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """PyTorch's BatchNorm on (B, H, W, M, C) or (B, M, F): the members' channels are the
    channels of one batch norm, whose running statistics are views of the stacked buffers
    (updated in place in training, by PyTorch's own rule)."""
    if not bn.affine or not bn.track_running_stats or bn.momentum is None:
        raise UnsupportedModelError(f"{name}: batch norm without affine/running statistics")
    m = x.shape[-2]
    inp = _nchw(x) if x.dim() == 5 else x.reshape(x.shape[0], -1)
    out = F.batch_norm(
        inp,
        ms.buffers[f"{name}.running_mean"].view(-1),
        ms.buffers[f"{name}.running_var"].view(-1),
        ms.p(f"{name}.weight").reshape(-1),
        ms.p(f"{name}.bias").reshape(-1),
        ms.training,
        float(bn.momentum),
        bn.eps,
    )
    if ms.training:
        tracked = ms.buffers.get(f"{name}.num_batches_tracked")
        if tracked is not None:
            with torch.no_grad():
                tracked.add_(1)
    return _from_nchw(out, m) if x.dim() == 5 else out.view(x.shape)


def _max_pool(pool: nn.MaxPool2d, x: Tensor) -> Tensor:
    """MaxPool2d on the channels-last view (the same op, so the same ties)."""
    y = F.max_pool2d(
        _nchw(x), pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode
    )
    return _from_nchw(y, x.shape[3])


def _linear(ms: _Members, name: str, x: Tensor) -> Tensor:
    """nn.Linear of every member on (B, M, F)."""
    weight = ms.p(f"{name}.weight")
    return _matmul(x, weight.transpose(1, 2), ms.maybe(f"{name}.bias"))


def _module(ms: _Members, name: str, module: nn.Module, x: Tensor) -> Tensor:
    """One of the zoo's layers on (B, H, W, M, C) activations."""
    fn = _LAYERS.get(type(module))
    if fn is None:
        kind = type(module).__name__
        raise UnsupportedModelError(f"{name or 'model'}: no batched form of {kind}")
    return fn(ms, name, module, x)


def _child(name: str, child: str) -> str:
    return f"{name}.{child}" if name else child


def _sequential(ms: _Members, name: str, seq: nn.Sequential, x: Tensor) -> Tensor:
    for child_name, child in seq.named_children():
        x = _module(ms, _child(name, child_name), child, x)
    return x


def _conv_block(ms: _Members, name: str, block: ConvBlock, x: Tensor) -> Tensor:
    x = _conv(ms, _child(name, "conv"), block.conv, x)
    x = F.relu(_batch_norm(ms, _child(name, "bn"), block.bn, x))
    x = _module(ms, _child(name, "se"), block.se, x)
    return _module(ms, _child(name, "pool"), block.pool, x)


def _separable(ms: _Members, name: str, sep: SeparableConv2d, x: Tensor) -> Tensor:
    x = _conv(ms, _child(name, "depthwise"), sep.depthwise, x)
    return _conv(ms, _child(name, "pointwise"), sep.pointwise, x)


def _xception(ms: _Members, name: str, block: XceptionBlock, x: Tensor) -> Tensor:
    y = _module(ms, _child(name, "pre_relu"), block.pre_relu, x)
    y = _batch_norm(ms, _child(name, "bn1"), block.bn1, _separable(ms, _child(name, "sep1"),
                                                                  block.sep1, y))  # fmt: skip
    y = _separable(ms, _child(name, "sep2"), block.sep2, F.relu(y))
    y = _max_pool(block.pool, _batch_norm(ms, _child(name, "bn2"), block.bn2, y))
    return y + _sequential(ms, _child(name, "skip"), block.skip, x)


def _spatial_attention(
    ms: _Members, name: str, att: MultiHeadSpatialAttention, x: Tensor
) -> Tensor:
    hidden = F.relu(_conv(ms, _child(name, "reduce"), att.reduce, x))
    maps = torch.sigmoid(_conv(ms, _child(name, "score"), att.score, hidden))
    return x * maps.mean(dim=-1, keepdim=True).to(x.dtype)


def _channel_attention(ms: _Members, name: str, att: ChannelAttention, x: Tensor) -> Tensor:
    b, h, w, m, c = x.shape
    pooled = torch.cat(pool_statistics(x.view(b, h * w, m, c), att.pooling, dim=1), dim=-1)
    hidden = F.relu(_linear(ms, _child(name, "fc1"), pooled))
    scale = torch.sigmoid(_linear(ms, _child(name, "fc2"), hidden))
    return x * scale[:, None, None].to(x.dtype)


def _head(ms: _Members, name: str, head: ClassifierHead, x: Tensor) -> Tensor:
    if head.pool is not None:
        x = _max_pool(head.pool, x)
    b, m = x.shape[0], x.shape[3]
    # The reference flattens NCHW (channel-major): the same order, so fc1 keeps its weights.
    x = x.permute(0, 3, 4, 1, 2).reshape(b, m, -1)
    x = _linear(ms, _child(name, "fc1"), x)
    x = F.dropout(F.relu(_batch_norm(ms, _child(name, "bn1"), head.bn1, x)), head.drop1.p,
                  ms.training)  # fmt: skip
    x = _linear(ms, _child(name, "fc2"), x)
    x = F.dropout(F.relu(_batch_norm(ms, _child(name, "bn2"), head.bn2, x)), head.drop2.p,
                  ms.training)  # fmt: skip
    return _linear(ms, _child(name, "fc3"), x)


def _identity(ms: _Members, name: str, module: nn.Module, x: Tensor) -> Tensor:
    return x


def _relu(ms: _Members, name: str, module: nn.Module, x: Tensor) -> Tensor:
    return F.relu(x)


def _pool_layer(ms: _Members, name: str, module: nn.MaxPool2d, x: Tensor) -> Tensor:
    return _max_pool(module, x)


def _conv_layer(ms: _Members, name: str, module: nn.Conv2d, x: Tensor) -> Tensor:
    return _conv(ms, name, module, x)


def _bn_layer(ms: _Members, name: str, module: nn.BatchNorm2d, x: Tensor) -> Tensor:
    return _batch_norm(ms, name, module, x)


_LAYERS: dict[type, Callable[..., Tensor]] = {
    nn.Sequential: _sequential,
    nn.Identity: _identity,
    nn.ReLU: _relu,
    nn.MaxPool2d: _pool_layer,
    nn.Conv2d: _conv_layer,
    nn.BatchNorm2d: _bn_layer,
    ConvBlock: _conv_block,
    SeparableConv2d: _separable,
    XceptionBlock: _xception,
    MultiHeadSpatialAttention: _spatial_attention,
    ChannelAttention: _channel_attention,
}


def _features(ms: _Members, model: nn.Module, x: Tensor) -> Tensor:
    """The network's ``forward_features``, layer by layer, for the networks of the zoo."""
    if isinstance(model, (DACNN, PlainCNN)):
        for block in ("block1", "block2", "block3", "block4"):
            x = _module(ms, block, getattr(model, block), x)
        for attention in ("spatial_attention", "channel_attention"):
            layer = getattr(model, attention, None)
            if layer is not None:
                x = _module(ms, attention, layer, x)
        return x
    if isinstance(model, PainXception):
        for part in ("stem", "block1", "block2", "block3", "exit", "spatial_attention"):
            x = _module(ms, part, getattr(model, part), x)
        return x
    raise UnsupportedModelError(f"no batched form of the network {type(model).__name__}")


def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` unless every layer has a batched form."""
    if type(model) not in (DACNN, PlainCNN, PainXception):
        raise UnsupportedModelError(f"no batched form of the network {type(model).__name__}")
    if not isinstance(getattr(model, "head", None), ClassifierHead):
        raise UnsupportedModelError("the network's head is not the zoo's ClassifierHead")
    known = (*_LAYERS, ClassifierHead, DACNN, PlainCNN, PainXception, nn.Linear,
             nn.BatchNorm1d, nn.Dropout)  # fmt: skip
    for name, module in model.named_modules():
        if type(module) not in known:
            raise UnsupportedModelError(f"{name}: no batched form of {type(module).__name__}")


def batched_forward(
    base: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor
) -> Tensor:
    """Logits (M, B, C) of M stacked members on their own batches ``x`` (M, B, 3, H, W).

    The same contract as ``stacked_forward``: ``params``/``buffers`` are
    ``stack_module_state`` dictionaries, ``base`` gives the structure and the train/eval
    mode, and a training call updates the members' BatchNorm running statistics in place.
    """
    ms = _Members(params, buffers, base.training)
    x = x.permute(1, 3, 4, 0, 2).contiguous()  # (B, H, W, M, C): members' channels innermost
    features = _features(ms, base, x)
    return _head(ms, "head", base.head, features).transpose(0, 1)
