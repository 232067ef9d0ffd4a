"""The starting design of galaxymorph, exactly as specified; the baseline every model must beat.

64x64x3 -> Conv(32, 3x3, ReLU) "Conv1_Edges" -> MaxPool(2) -> Conv(64, 3x3, ReLU) "Conv2_Shapes"
-> MaxPool(2) -> Flatten -> Dense(64, ReLU) -> Dense(1, sigmoid): the probability of a spiral.
Trained with Adam and binary cross-entropy; the sigmoid of `Output_Probability` is applied with the
loss (BCE-with-logits, the numerically stable form of sigmoid + BCE) and at prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from galaxymorph.config import CHANNELS, IMAGE_SIZE
from galaxymorph.labels import BINARY_CLASSES
from galaxymorph.models._base import GalaxyClassifier
from galaxymorph.models.registry import register_model


class SeedCNN(GalaxyClassifier):
    """Two convolution blocks and a dense decision layer, with the design's layer names."""

    input_size = IMAGE_SIZE

    def __init__(self, classes: Sequence[str] = BINARY_CLASSES) -> None:
        super().__init__(classes)
        self.Conv1_Edges = nn.Conv2d(CHANNELS, 32, kernel_size=3)
        self.Pool1 = nn.MaxPool2d(2)
        self.Conv2_Shapes = nn.Conv2d(32, 64, kernel_size=3)
        self.Pool2 = nn.MaxPool2d(2)
        self.Flatten = nn.Flatten()
        side = ((self.input_size - 2) // 2 - 2) // 2
        self.Dense_Decision = nn.Linear(64 * side * side, 64)
        self.Output_Probability = nn.Linear(64, self.num_outputs)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        edges = self.Pool1(F.relu(self.Conv1_Edges(images)))
        return F.relu(self.Conv2_Shapes(edges))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        decision = F.relu(self.Dense_Decision(self.Flatten(self.Pool2(features))))
        return self.Output_Probability(decision)

    def output_layer(self) -> nn.Linear:
        return self.Output_Probability

    def feature_blocks(self) -> list[nn.Module]:
        return [self.Conv1_Edges, self.Conv2_Shapes, self.Dense_Decision]

    def last_conv_block(self) -> nn.Module:
        return self.Conv2_Shapes


@register_model
def seed(*, classes: Sequence[str] = BINARY_CLASSES, **kwargs) -> SeedCNN:
    """The starting design (about 0.8 M parameters)."""
    return SeedCNN(classes, **kwargs)
