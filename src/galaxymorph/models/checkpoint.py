"""Checkpoints that describe themselves: a weights file plus a JSON metadata file beside it.

`NAME.pt` holds the state dict only and is loaded with `torch.load(weights_only=True)`, so that
loading a checkpoint never executes code. `NAME.json` holds the architecture (and, for an
ensemble, its number of `members`), classes, preprocessing, training data and split, seed and metrics.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from galaxymorph.config import Preprocessing
from galaxymorph.errors import ModelError
from galaxymorph.models._base import GalaxyClassifier
from galaxymorph.models.ensemble import GalaxyEnsemble
from galaxymorph.models.registry import create_model

FORMAT_VERSION = 1
BUNDLED_WEIGHTS = "weights"


@dataclass
class LoadedModel:
    """A model ready for inference, with the preprocessing it was trained with."""

    name: str
    model: GalaxyClassifier
    preprocessing: Preprocessing
    metadata: dict = field(default_factory=dict)
    int8_graph: Path | None = None
    """Its int8 ONNX graph (`galaxymorph quantize`), when one was made."""
    weights_sha256: str | None = None
    """The SHA-256 of its weights file, recorded in every catalog it makes; None for a model never saved."""

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    def require_trained_head(self) -> None:
        """Raise `ModelError` for an encoder from `galaxymorph pretrain`, whose output layer was never
        trained: it gives embeddings and a start for `train --from`, not classes."""
        if self.metadata.get("encoder_only"):
            raise ModelError(f"model {self.name} is an encoder from `galaxymorph pretrain`: its output layer was "
                             f"never trained, so it gives embeddings (`embed`) and a start for `train --from`, not classes")


def save_checkpoint(model: GalaxyClassifier, path: str | os.PathLike, *, architecture: str,
                    preprocessing: Preprocessing, **metadata) -> Path:
    """Write `path` (.pt weights) and its .json metadata; returns the weights path."""
    weights = Path(path).with_suffix(".pt")
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    int8_graph_path(weights).unlink(missing_ok=True)  # quantised from the weights this call replaces
    description = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        **({"members": len(model.members)} if isinstance(model, GalaxyEnsemble) else {}),
        **({"heads": model.heads} if getattr(model, "heads", 1) > 1 else {}),
        "classes": list(model.classes),
        "preprocessing": preprocessing.to_dict(),
        **metadata,
    }
    weights.with_suffix(".json").write_text(json.dumps(description, indent=1))
    return weights


def load_checkpoint(path: str | os.PathLike) -> LoadedModel:
    """Load a checkpoint written by `save_checkpoint` (the .pt or the .json path)."""
    weights = Path(path).with_suffix(".pt")
    description_path = weights.with_suffix(".json")
    if not weights.is_file() or not description_path.is_file():
        raise ModelError(f"checkpoint {path}: expected {weights.name} and {description_path.name} side by side")
    try:
        description = _checked_description(json.loads(description_path.read_text()))
        preprocessing = Preprocessing.from_dict(description.get("preprocessing") or {})
        model = build_model(description)
        weights_bytes = weights.read_bytes()
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ModelError(f"checkpoint {path}: invalid metadata in {description_path.name} ({exc})") from exc
    try:
        state = torch.load(io.BytesIO(weights_bytes), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; none of them may run the file's code
        raise ModelError(f"checkpoint {path}: {weights.name} is not a plain state dict of tensors, and is never "
                         f"unpickled beyond that ({type(exc).__name__})") from exc
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"checkpoint {path}: the weights do not fit the architecture its metadata names "
                         f"({str(exc).splitlines()[0]})") from exc
    model.eval()
    int8_graph = int8_graph_path(weights)
    return LoadedModel(weights.stem, model, preprocessing, description, int8_graph if int8_graph.is_file() else None,
                       hashlib.sha256(weights_bytes).hexdigest())


MAX_MEMBERS = 16
MAX_CLASSES = 1000


def _checked_description(description: object) -> dict:
    """A checkpoint's metadata after checking what `build_model` reads from it, so that a hostile or
    damaged .json gives one clear error, never a huge allocation or a traceback."""
    if not isinstance(description, dict):
        raise TypeError(f"expected a JSON object, got {type(description).__name__}")
    if not isinstance(description.get("architecture"), str):
        raise ValueError("'architecture' must be a name")
    classes = description.get("classes")
    if not (isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)):
        raise ValueError(f"'classes' must be a list of 2 to {MAX_CLASSES} names")
    for key in ("members", "heads"):
        count = description.get(key)
        if count is not None and not (isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_MEMBERS):
            raise ValueError(f"{key!r} must be a whole number from 1 to {MAX_MEMBERS}, got {count!r}")
    if not isinstance(description.get("preprocessing", {}), dict):
        raise ValueError("'preprocessing' must be an object")
    return description


def record_in_metadata(checkpoint: str | os.PathLike, key: str, value: dict) -> None:
    """Set one entry of a checkpoint's .json metadata (what `calibrate` or `quantize` found),
    leaving its weights and the rest of the metadata as they are."""
    path = Path(checkpoint).with_suffix(".json")
    description = json.loads(path.read_text())
    description[key] = value
    path.write_text(json.dumps(description, indent=1))


def int8_graph_path(checkpoint: str | os.PathLike) -> Path:
    """Where a checkpoint's int8 ONNX graph lies: NAME.int8.onnx beside NAME.pt."""
    return Path(checkpoint).with_suffix(".int8.onnx")


def build_model(description: dict) -> GalaxyClassifier:
    """An untrained model as a checkpoint's metadata describes it."""
    def single() -> GalaxyClassifier:
        heads = {"heads": description["heads"]} if "heads" in description else {}
        return create_model(description["architecture"], classes=description["classes"], **heads)

    members = description.get("members")
    return GalaxyEnsemble([single() for _ in range(members)]) if members else single()


def bundled_models() -> list[str]:
    """Names of the pretrained models shipped in the package."""
    folder = resources.files("galaxymorph.models") / BUNDLED_WEIGHTS
    return sorted(Path(entry.name).stem for entry in folder.iterdir() if entry.name.endswith(".pt"))


def bundled_checkpoint(name: str) -> Path:
    return Path(str(resources.files("galaxymorph.models") / BUNDLED_WEIGHTS / f"{name}.pt"))


def load_model(name_or_path: str | os.PathLike | LoadedModel) -> LoadedModel:
    """A bundled pretrained model by name (`galaxynet`, `seed`) or a checkpoint by path; a model
    already loaded is returned as it is, so every API takes either."""
    if isinstance(name_or_path, LoadedModel):
        return name_or_path
    name = str(name_or_path)
    if name in bundled_models():
        return load_checkpoint(bundled_checkpoint(name))
    if Path(name).with_suffix(".pt").exists():
        return load_checkpoint(name)
    raise ModelError(f"no bundled model or checkpoint named {name!r}; bundled: {', '.join(bundled_models()) or 'none'}")
