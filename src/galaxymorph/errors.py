"""Exceptions raised by galaxymorph."""

from __future__ import annotations


class GalaxyMorphError(Exception):
    """Base class of every error galaxymorph raises on purpose."""


class ImageReadError(GalaxyMorphError, ValueError):
    """An image could not be read or is unusable; the message names the file."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    @classmethod
    def unexpected(cls, source: object, error: Exception) -> ImageReadError:
        """A reader's own failure on a hostile file (no check caught it), as this file's error."""
        return cls(source, f"cannot be read ({type(error).__name__}: {error})")


class CatalogError(GalaxyMorphError, ValueError):
    """A catalog is missing, malformed or lacks a required column."""


class ModelError(GalaxyMorphError, ValueError):
    """A model name, architecture or checkpoint is unknown or invalid."""
