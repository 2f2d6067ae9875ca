"""The founding paper's comparison networks: SimpleCNN, MicroPainNet and PainXception."""

from __future__ import annotations

from torch import Tensor, nn

from painmon.models.base import PainModel, make_pretrained_cfg
from painmon.models.layers import (
    ClassifierHead,
    ConvBlock,
    MultiHeadSpatialAttention,
    SeparableConv2d,
    XceptionBlock,
)
from painmon.models.registry import register_model

FEATURE_HW: tuple[int, int] = (8, 8)


class PlainCNN(PainModel):
    """DA-CNN's four-block backbone without the attention pair, optionally with SE per block."""

    def __init__(
        self,
        architecture: str,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        se_reduction: int | None = None,
        num_classes: int = 5,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.block1 = ConvBlock(3, widths[0], se_reduction=se_reduction)
        self.block2 = ConvBlock(widths[0], widths[1], se_reduction=se_reduction)
        self.block3 = ConvBlock(widths[1], widths[2], se_reduction=se_reduction)
        # As in DA-CNN, block 4's pool lives in the head so Grad-CAM sees 8x8.
        self.block4 = ConvBlock(widths[2], widths[3], pool=False, se_reduction=se_reduction)
        self.head = ClassifierHead(
            widths[3], FEATURE_HW, num_classes=num_classes, dropout=dropout, pool=True
        )
        self.gradcam_layer = "block4"
        self.pretrained_cfg = make_pretrained_cfg(
            architecture, {"num_classes": num_classes, "dropout": dropout}, num_classes
        )
        self._init_weights()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.block4(self.block3(self.block2(self.block1(x))))


class PainXception(PainModel):
    """Xception-style: conv stem, 3 residual separable blocks, exit conv, multi-head attention."""

    def __init__(self, num_classes: int = 5, dropout: float = 0.5, num_heads: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        # The stem already ends in ReLU, so the first block skips its pre-activation.
        self.block1 = XceptionBlock(64, 128, pre_activation=False)  # 64 -> 32 px
        self.block2 = XceptionBlock(128, 256)  # 32 -> 16 px
        self.block3 = XceptionBlock(256, 512)  # 16 -> 8 px
        # Xception's exit flow ends in SepConv-BN-ReLU: non-negative features like the other nets.
        self.exit = nn.Sequential(SeparableConv2d(512, 512), nn.BatchNorm2d(512), nn.ReLU())
        self.spatial_attention = MultiHeadSpatialAttention(512, num_heads=num_heads, reduction=8)
        self.head = ClassifierHead(512, FEATURE_HW, num_classes=num_classes, dropout=dropout)
        self.gradcam_layer = "spatial_attention"
        self.pretrained_cfg = make_pretrained_cfg(
            "painxception",
            {"num_classes": num_classes, "dropout": dropout, "num_heads": num_heads},
            num_classes,
        )
        self._init_weights()

    def _backbone(self, x: Tensor) -> Tensor:
        return self.exit(self.block3(self.block2(self.block1(self.stem(x)))))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.spatial_attention(self._backbone(x))

    def attention_maps(self, x: Tensor) -> Tensor:
        return self.spatial_attention.maps(self._backbone(x))


@register_model
def simplecnn(num_classes: int = 5, dropout: float = 0.5) -> PlainCNN:
    """Baseline: DA-CNN's 64-128-256-512 conv backbone and head with no attention."""
    return PlainCNN("simplecnn", num_classes=num_classes, dropout=dropout)


@register_model
def micropainnet(num_classes: int = 5, dropout: float = 0.5) -> PlainCNN:
    """Baseline: half-width 32-64-128-256 backbone with squeeze-and-excitation in every block."""
    return PlainCNN(
        "micropainnet",
        widths=(32, 64, 128, 256),
        se_reduction=8,
        num_classes=num_classes,
        dropout=dropout,
    )


@register_model
def painxception(num_classes: int = 5, dropout: float = 0.5, num_heads: int = 4) -> PainXception:
    """Baseline: Xception-style residual depthwise-separable blocks, 4-head spatial attention."""
    return PainXception(num_classes=num_classes, dropout=dropout, num_heads=num_heads)
