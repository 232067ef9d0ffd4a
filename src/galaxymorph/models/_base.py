"""What every galaxymorph model offers: classes, features and a head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class GalaxyClassifier(nn.Module):
    """A model that maps (N, 3, S, S) images in [0, 1] to class logits.

    Two classes use one logit (sigmoid), more use one logit per class (softmax), so that the seed
    design keeps its single sigmoid output. Subclasses implement `forward_features` (the last
    convolutional block, for explanations) and `forward_head` (for fine-tuning).
    """

    input_size: int | None = None
    """The one input side in px the architecture takes, or None where any size works."""

    def __init__(self, classes: Sequence[str]) -> None:
        super().__init__()
        if len(classes) < 2:
            raise ValueError(f"classes must name at least two classes, got {list(classes)}")
        self.classes = tuple(classes)

    @property
    def num_outputs(self) -> int:
        return 1 if len(self.classes) == 2 else len(self.classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def output_layer(self) -> nn.Linear:
        """The final linear layer, whose outputs are the logits."""
        raise NotImplementedError

    def feature_blocks(self) -> list[nn.Module]:
        """The blocks before the output layer, from the input on; fine-tuning unfreezes the last ones."""
        raise NotImplementedError

    def last_conv_block(self) -> nn.Module:
        """The last convolutional block, whose activations class-activation maps weigh."""
        raise NotImplementedError

    def last_conv_blocks(self) -> list[nn.Module]:
        """Every last convolutional block whose activations feed the logits (one per ensemble member)."""
        return [self.last_conv_block()]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def member_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, M, K) of each of the M members of an ensemble (M = 1 for a single model) and
        their features (N, M, D): the last block's activations averaged over positions, where
        `ood_score` measures how typical an input is."""
        features = self.forward_features(images)
        return self.forward_head(features)[:, None], features.mean(dim=(2, 3))[:, None]


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, 1) sigmoid logits or (N, K) softmax logits -> (N, K) class probabilities."""
    if logits.shape[1] == 1:
        positive = torch.sigmoid(logits)
        return torch.cat([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)
