"""GalaxyNet: a compact all-convolutional network for 64 px galaxy cutouts.

A VGG-style stack of 3x3 convolutions with batch normalisation (Simonyan & Zisserman 2015; Ioffe &
Szegedy 2015), two early stride-2 stages to keep the cost near 15 M multiply-adds per image (so that
inference keeps up with JPEG decoding on a CPU), and global average pooling before the head, which
makes the prediction depend less on where the galaxy sits than a flatten-and-dense head does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from galaxymorph.config import CHANNELS
from galaxymorph.labels import GZ1_CLASSES
from galaxymorph.models._base import GalaxyClassifier
from galaxymorph.models.registry import register_model


def conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class GalaxyNet(GalaxyClassifier):
    """Stem (2x stride 2), three conv stages with max-pooling, global pooling, dropout, linear head.

    With `heads` > 1 the head holds that many sets of logits on the one trunk, each distilled from one
    member of an ensemble (`TrainConfig.teacher`; Tran et al. 2020, "Hydra"): the output is their
    mean, and `member_outputs` gives each, so their spread stands in for the members' at the cost of
    one network."""

    def __init__(self, classes: Sequence[str], width: int = 32, dropout: float = 0.2, heads: int = 1) -> None:
        super().__init__(classes)
        if heads < 1:
            raise ValueError(f"heads must be at least 1, got {heads}")
        self.heads = heads
        self.stem = nn.Sequential(conv_block(CHANNELS, width, stride=2), conv_block(width, width, stride=2))
        self.stage1 = conv_block(width, 2 * width)
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), conv_block(2 * width, 4 * width))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), conv_block(4 * width, 4 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * width, heads * self.num_outputs)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.stage3(self.stage2(self.stage1(self.stem(images))))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head_logits(features).mean(dim=1)

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Each head's logits (N, heads, K) from last-block activations."""
        logits = self.classifier(self.dropout(torch.flatten(self.pool(features), 1)))
        return logits.reshape(-1, self.heads, self.num_outputs)  # a constant shape, which ONNX's quantiser can follow

    def member_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each head's logits (N, heads, K) and the pooled features (N, 1, D) they share."""
        features = self.forward_features(images)
        return self.head_logits(features), features.mean(dim=(2, 3))[:, None]

    def output_layer(self) -> nn.Linear:
        return self.classifier

    def class_activation_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Class-activation maps (N, K, h, w) of last-block activations, one per output (Zhou et al.
        2016): the head applied at every position, so each logit is its map's mean plus the bias.
        With global average pooling this is Grad-CAM before its positive part (times h w)."""
        weight = self.classifier.weight.unflatten(0, (self.heads, self.num_outputs)).mean(dim=0)  # the heads' mean
        return torch.einsum("kc,nchw->nkhw", weight, features)

    def feature_blocks(self) -> list[nn.Module]:
        return [self.stem, self.stage1, self.stage2, self.stage3]

    def last_conv_block(self) -> nn.Module:
        return self.stage3


@register_model
def galaxynet(*, classes: Sequence[str] = GZ1_CLASSES, **kwargs) -> GalaxyNet:
    """GalaxyNet, width 32 (about 0.3 M parameters)."""
    return GalaxyNet(classes, **kwargs)


@register_model
def galaxynet_wide(*, classes: Sequence[str] = GZ1_CLASSES, **kwargs) -> GalaxyNet:
    """GalaxyNet, width 48: more capacity at about twice the cost."""
    return GalaxyNet(classes, width=48, **kwargs)


@register_model
def galaxynet_xl(*, classes: Sequence[str] = GZ1_CLASSES, **kwargs) -> GalaxyNet:
    """GalaxyNet, width 64: about 1.8x the cost of galaxynet_wide."""
    return GalaxyNet(classes, width=64, **kwargs)
