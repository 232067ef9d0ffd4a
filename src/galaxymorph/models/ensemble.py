"""Deep ensembles (Lakshminarayanan et al. 2017): members of one architecture, trained on the same
split from different seeds, whose logits are averaged.

The average is usually more accurate and better calibrated than any member, and the members'
disagreement measures the model's own uncertainty at no cost beyond running them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from galaxymorph.models._base import GalaxyClassifier


class GalaxyEnsemble(GalaxyClassifier):
    """Members with the same classes; the output is the mean of their logits."""

    def __init__(self, members: Sequence[GalaxyClassifier]) -> None:
        if not members or len({member.classes for member in members}) != 1:
            raise ValueError("an ensemble needs at least one member, all with the same classes")
        super().__init__(members[0].classes)
        self.members = nn.ModuleList(members)

    def member_logits(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(images) for member in self.members], dim=1)

    def member_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = zip(*(member.member_outputs(images) for member in self.members))
        return torch.cat(logits, dim=1), torch.cat(features, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.member_logits(images).mean(dim=1)

    def last_conv_blocks(self) -> list[nn.Module]:
        return [block for member in self.members for block in member.last_conv_blocks()]
