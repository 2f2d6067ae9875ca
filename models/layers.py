"""Building blocks shared by the model zoo: conv blocks, attention modules, the classifier head.

The classifier head carries an explicit (autograd-free) gradient of one logit with
respect to its input feature map. Grad-CAM is built on it so that an exported ONNX
graph can produce heatmaps at the bedside without a training framework.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOLING_CHOICES: tuple[str, ...] = ("avg", "max", "std")
# Keeps the std pooling differentiable when a channel is constant (all-zero after ReLU).
STD_POOL_EPS = 1e-5


def parse_pooling(pooling: str | Sequence[str]) -> tuple[str, ...]:
    """Normalise a pooling set ("avg,max,std" or a sequence) to canonical order."""
    if isinstance(pooling, str):
        items = [p.strip().lower() for p in pooling.split(",") if p.strip()]
    else:
        items = [str(p).strip().lower() for p in pooling]
    if not items:
        raise ValueError(f"pooling set is empty; choose from {', '.join(POOLING_CHOICES)}")
    unknown = sorted(set(items) - set(POOLING_CHOICES))
    if unknown:
        raise ValueError(
            f"unknown channel-attention pooling {', '.join(unknown)}; "
            f"choose from {', '.join(POOLING_CHOICES)} (e.g. 'avg,max,std')"
        )
    if len(set(items)) != len(items):
        raise ValueError(f"pooling set repeats an entry: {pooling!r}")
    # Canonical order so "max,avg" and "avg,max" build identical, interchangeable weights.
    return tuple(p for p in POOLING_CHOICES if p in items)


class ConvBlock(nn.Module):
    """3x3 conv -> BatchNorm -> ReLU -> optional channel attention -> optional 2x2 max-pool."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool: bool = True,
        se_reduction: int | None = None,
    ) -> None:
        super().__init__()
        # No conv bias: the BatchNorm that follows has its own shift.
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.se = (
            ChannelAttention(out_channels, pooling=("avg",), reduction=se_reduction)
            if se_reduction
            else nn.Identity()
        )
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.se(self.relu(self.bn(self.conv(x)))))


class MultiHeadSpatialAttention(nn.Module):
    """K heads, each 1x1 conv C->C/r -> ReLU -> 1x1 conv -> 1 -> sigmoid; F' = mean_i(A_i) ⊙ F.

    The K head convolutions are fused: one 1x1 conv C -> K*(C/r) (the heads' first
    layers side by side) and one grouped 1x1 conv with K groups (each head's second
    layer sees only its own hidden channels). This is the same function and the same
    parameter count as K separate heads, in two kernels instead of 2K.
    """

    def __init__(self, channels: int, num_heads: int = 4, reduction: int = 8) -> None:
        super().__init__()
        if int(num_heads) != num_heads or num_heads < 1:
            raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
        if reduction < 1:
            raise ValueError(f"attention reduction must be >= 1, got {reduction!r}")
        self.num_heads = int(num_heads)
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden * self.num_heads, 1)
        self.relu = nn.ReLU()
        self.score = nn.Conv2d(hidden * self.num_heads, self.num_heads, 1, groups=self.num_heads)

    def maps(self, x: Tensor) -> Tensor:
        """Per-head attention maps A_i in 0..1, shape (B, K, h, w)."""
        return torch.sigmoid(self.score(self.relu(self.reduce(x))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.maps(x).mean(dim=1, keepdim=True)


def pool_statistics(flat: Tensor, pooling: Sequence[str], dim: int) -> list[Tensor]:
    """Each pooling kind's statistic of ``flat`` over the spatial dimension ``dim``."""
    stats = []
    for kind in pooling:
        if kind == "avg":
            stats.append(flat.mean(dim=dim))
        elif kind == "max":
            stats.append(flat.amax(dim=dim))
        else:
            stats.append(torch.sqrt(flat.var(dim=dim, unbiased=False) + STD_POOL_EPS))
    return stats


class ChannelAttention(nn.Module):
    """Pool each channel (avg/max/std), concat -> FC C/r -> ReLU -> FC C -> sigmoid -> scale.

    With pooling ("avg",) this is exactly a squeeze-and-excitation block. The bottleneck
    is C/r whatever the pooling set, so pooling ablations differ only in the statistics.
    """

    def __init__(
        self,
        channels: int,
        pooling: str | Sequence[str] = POOLING_CHOICES,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"attention reduction must be >= 1, got {reduction!r}")
        self.pooling = parse_pooling(pooling)
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(len(self.pooling) * channels, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, channels)

    def _pooled(self, x: Tensor) -> Tensor:
        return torch.cat(pool_statistics(x.flatten(2), self.pooling, dim=2), dim=1)

    def scale(self, x: Tensor) -> Tensor:
        """Per-channel weights in 0..1, shape (B, C)."""
        return torch.sigmoid(self.fc2(self.relu(self.fc1(self._pooled(x)))))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale(x)[:, :, None, None]


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 conv followed by a pointwise 1x1 conv (Xception), no bias (BN follows)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """[ReLU] SepConv BN ReLU SepConv BN MaxPool3x3/2, plus a strided 1x1-conv residual."""

    def __init__(self, in_channels: int, out_channels: int, pre_activation: bool = True) -> None:
        super().__init__()
        self.pre_relu = nn.ReLU() if pre_activation else nn.Identity()
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.skip = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn1(self.sep1(self.pre_relu(x)))
        y = self.pool(self.bn2(self.sep2(self.relu(y))))
        return y + self.skip(x)


class ClassifierHead(nn.Module):
    """Optional 2x2 max-pool -> flatten -> FC -> BN -> ReLU -> Dropout (x2) -> FC logits.

    Shared by every model so that :meth:`input_gradient` (Grad-CAM without autograd)
    is written, tested and exported once.
    """

    def __init__(
        self,
        in_channels: int,
        feature_hw: tuple[int, int],
        num_classes: int = 5,
        hidden: tuple[int, int] = (256, 128),
        dropout: float = 0.5,
        pool: bool = True,
    ) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        height, width = feature_hw
        if pool and (height % 2 or width % 2):
            raise ValueError(f"the head's 2x2 max-pool needs an even feature map, got {feature_hw}")
        self.feature_shape = (in_channels, height, width)
        self.pool = nn.MaxPool2d(2) if pool else None
        if pool:
            height, width = height // 2, width // 2
        self.in_features = in_channels * height * width
        # No bias before BatchNorm: BN's shift makes it redundant.
        self.fc1 = nn.Linear(self.in_features, hidden[0], bias=False)
        self.bn1 = nn.BatchNorm1d(hidden[0])
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden[0], hidden[1], bias=False)
        self.bn2 = nn.BatchNorm1d(hidden[1])
        self.drop2 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(hidden[1], int(num_classes))
        self.relu = nn.ReLU()

    def forward(self, features: Tensor) -> Tensor:
        x = self.pool(features) if self.pool is not None else features
        x = self.drop1(self.relu(self.bn1(self.fc1(x.flatten(1)))))
        x = self.drop2(self.relu(self.bn2(self.fc2(x))))
        return self.fc3(x)

    @staticmethod
    def _bn_scale_shift(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return scale, bn.bias - bn.running_mean * scale

    def logits_and_input_gradient(
        self, features: Tensor, class_index: int | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits (B, classes) and d logit[class] / d features (B, C, h, w), without autograd.

        Valid in eval mode only (BatchNorm as a fixed affine map, dropout the identity).
        ``class_index`` is an int, a (B,) integer tensor, or None for each image's top class.
        Max-pool gradient goes to the first maximum of each 2x2 window in row-major order,
        the same tie rule as PyTorch's max-pool backward and ONNX ArgMax.
        """
        if self.training:
            raise RuntimeError(
                "ClassifierHead.input_gradient treats BatchNorm as fixed and dropout as off; "
                "call model.eval() first"
            )
        batch = features.shape[0]
        channels, height, width = features.shape[1:]
        if self.pool is not None:
            # Windows as a trailing axis of 4: (B, C, h/2, w/2, 4).
            windows = features.reshape(batch, channels, height // 2, 2, width // 2, 2)
            windows = windows.permute(0, 1, 2, 4, 3, 5).reshape(
                batch, channels, height // 2, width // 2, 4
            )
            winner = windows.argmax(dim=-1, keepdim=True)
            route = (torch.arange(4, device=features.device) == winner).to(features.dtype)
            pooled = windows.amax(dim=-1)
        else:
            pooled = features
        z0 = pooled.flatten(1)
        scale1, shift1 = self._bn_scale_shift(self.bn1)
        a1 = F.linear(z0, self.fc1.weight) * scale1 + shift1
        r1 = torch.relu(a1)
        scale2, shift2 = self._bn_scale_shift(self.bn2)
        a2 = F.linear(r1, self.fc2.weight) * scale2 + shift2
        r2 = torch.relu(a2)
        logits = F.linear(r2, self.fc3.weight, self.fc3.bias)

        if class_index is None:
            index = logits.argmax(dim=1)
        elif isinstance(class_index, Tensor):
            index = class_index.to(device=features.device, dtype=torch.long).reshape(-1)
            if index.numel() == 1:
                index = index.expand(batch)
        else:
            index = torch.full((batch,), int(class_index), dtype=torch.long, device=logits.device)
        # Backward pass written out: ReLU passes where its input was > 0 (autograd's rule at 0).
        grad = self.fc3.weight[index]
        grad = grad * (a2 > 0).to(grad.dtype) * scale2
        grad = grad @ self.fc2.weight
        grad = grad * (a1 > 0).to(grad.dtype) * scale1
        grad = grad @ self.fc1.weight
        grad = grad.reshape(pooled.shape)
        if self.pool is not None:
            grad = (grad.unsqueeze(-1) * route).reshape(
                batch, channels, height // 2, width // 2, 2, 2
            )
            grad = grad.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, height, width)
        return logits, grad

    def input_gradient(self, features: Tensor, class_index: int | Tensor | None = None) -> Tensor:
        """d logit[class_index] / d features, computed with explicit tensor ops (eval mode)."""
        return self.logits_and_input_gradient(features, class_index)[1]
