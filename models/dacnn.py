"""DA-CNN: the founding paper's Dual-Attention CNN (see models/cards/dacnn.md for every choice)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from painmon.models.base import PainModel, make_pretrained_cfg
from painmon.models.layers import (
    POOLING_CHOICES,
    ChannelAttention,
    ClassifierHead,
    ConvBlock,
    MultiHeadSpatialAttention,
    parse_pooling,
)
from painmon.models.registry import register_model

WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
# Blocks 1-3 halve 64 -> 8; block 4 keeps 8x8 so attention and Grad-CAM see an 8x8 map.
FEATURE_HW: tuple[int, int] = (8, 8)


class DACNN(PainModel):
    """Four conv blocks -> multi-head spatial attention -> pooled channel attention -> head.

    The switches exist for the paper's ablations; with both attentions off this is the
    plain backbone (``simplecnn`` builds exactly that).
    """

    def __init__(
        self,
        num_classes: int = 5,
        dropout: float = 0.5,
        spatial_attention: bool = True,
        channel_attention: bool = True,
        pooling: str | Sequence[str] = POOLING_CHOICES,
        num_heads: int = 4,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        pooling_set = parse_pooling(pooling)
        self.block1 = ConvBlock(3, WIDTHS[0])
        self.block2 = ConvBlock(WIDTHS[0], WIDTHS[1])
        self.block3 = ConvBlock(WIDTHS[1], WIDTHS[2])
        # Block 4's 2x2 pool is applied by the head, after attention.
        self.block4 = ConvBlock(WIDTHS[2], WIDTHS[3], pool=False)
        self.spatial_attention = (
            MultiHeadSpatialAttention(WIDTHS[3], num_heads=num_heads, reduction=reduction)
            if spatial_attention
            else None
        )
        self.channel_attention = (
            ChannelAttention(WIDTHS[3], pooling=pooling_set, reduction=reduction)
            if channel_attention
            else None
        )
        self.head = ClassifierHead(
            WIDTHS[3], FEATURE_HW, num_classes=num_classes, dropout=dropout, pool=True
        )
        if self.channel_attention is not None:
            self.gradcam_layer = "channel_attention"
        elif self.spatial_attention is not None:
            self.gradcam_layer = "spatial_attention"
        else:
            self.gradcam_layer = "block4"
        self.pretrained_cfg = make_pretrained_cfg(
            "dacnn",
            {
                "num_classes": num_classes,
                "dropout": dropout,
                "spatial_attention": spatial_attention,
                "channel_attention": channel_attention,
                "pooling": ",".join(pooling_set),
                "num_heads": num_heads,
                "reduction": reduction,
            },
            num_classes,
        )
        self._init_weights()

    def _backbone(self, x: Tensor) -> Tensor:
        return self.block4(self.block3(self.block2(self.block1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        features = self._backbone(x)
        if self.spatial_attention is not None:
            features = self.spatial_attention(features)
        if self.channel_attention is not None:
            features = self.channel_attention(features)
        return features

    def attention_maps(self, x: Tensor) -> Tensor | None:
        if self.spatial_attention is None:
            return None
        return self.spatial_attention.maps(self._backbone(x))


@register_model
def dacnn(
    num_classes: int = 5,
    dropout: float = 0.5,
    spatial_attention: bool = True,
    channel_attention: bool = True,
    pooling: str | Sequence[str] = "avg,max,std",
    num_heads: int = 4,
) -> DACNN:
    """Paper's Dual-Attention CNN: 4 conv blocks, 4-head spatial + avg/max/std channel attention."""
    return DACNN(
        num_classes=num_classes,
        dropout=dropout,
        spatial_attention=spatial_attention,
        channel_attention=channel_attention,
        pooling=pooling,
        num_heads=num_heads,
    )
