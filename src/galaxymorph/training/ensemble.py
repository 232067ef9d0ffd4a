"""Combine trained checkpoints into one ensemble checkpoint (`galaxymorph ensemble`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from galaxymorph.errors import ModelError
from galaxymorph.models import GalaxyEnsemble, load_checkpoint, save_checkpoint

SHARED_SETTINGS = ("architecture", "classes", "preprocessing", "split")
"""What members must share: one architecture and class list, one preprocessing, one split (so that
no member has trained on another's validation or test galaxies)."""


def combine_checkpoints(members: Sequence[str | os.PathLike], output: str | os.PathLike) -> Path:
    """Write an ensemble of the member checkpoints to `output`; returns its weights path.

    The members' temperatures do not carry over: calibrate the ensemble on the validation split."""
    if len(members) < 2:
        raise ModelError(f"an ensemble needs at least two member checkpoints, got {len(members)}")
    loaded = [load_checkpoint(path) for path in members]
    first = loaded[0]
    for path, member in zip(members, loaded):
        member.require_trained_head()
        if member.metadata.get("members"):
            raise ModelError(f"checkpoint {path} is already an ensemble; combine its members instead")
        for setting in SHARED_SETTINGS:
            if member.metadata.get(setting) != first.metadata.get(setting):
                raise ModelError(f"checkpoint {path}: its {setting} differs from {members[0]}'s; "
                                 f"ensemble members must share {', '.join(SHARED_SETTINGS)}")
    return save_checkpoint(
        GalaxyEnsemble([member.model for member in loaded]), output,
        architecture=first.metadata["architecture"], preprocessing=first.preprocessing,
        training={"members": [{"checkpoint": str(path), **{k: v for k, v in member.metadata.get("training", {}).items() if k != "history"}}
                              for path, member in zip(members, loaded)]},
        split=first.metadata["split"],
        metrics={"members": [member.metadata.get("metrics", {}) for member in loaded]},
    )
