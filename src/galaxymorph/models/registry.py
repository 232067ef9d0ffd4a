"""Registry of model architectures: `@register_model` entry functions and `create_model`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from galaxymorph.errors import ModelError

_ARCHITECTURES: dict[str, Callable] = {}


def register_model(entry: Callable) -> Callable:
    """Register a model entry function under its own name; a name already taken is refused."""
    if _ARCHITECTURES.get(entry.__name__, entry) is not entry:
        raise ModelError(f"an architecture named {entry.__name__!r} is already registered")
    _ARCHITECTURES[entry.__name__] = entry
    return entry


def list_architectures() -> list[str]:
    """Names of the registered architectures."""
    return sorted(_ARCHITECTURES)


def create_model(name: str, *, classes: Sequence[str] | None = None, **kwargs):
    """Build an untrained model of a registered architecture, for its default classes or the given ones."""
    if name not in _ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r}; registered: {', '.join(sorted(_ARCHITECTURES))}")
    if classes is not None:
        kwargs["classes"] = tuple(classes)
    return _ARCHITECTURES[name](**kwargs)

