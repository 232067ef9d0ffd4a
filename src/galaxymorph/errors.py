"""Exceptions raised by galaxymorph."""


class GalaxyMorphError(Exception):
    """Base class of every error galaxymorph raises on purpose."""


class ImageReadError(GalaxyMorphError, ValueError):
    """An image could not be read or is unusable; the message names the file."""

    def __init__(self, source: object, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class CatalogError(GalaxyMorphError, ValueError):
    """A catalog is missing, malformed or lacks a required column."""


class ModelError(GalaxyMorphError, ValueError):
    """A model name, architecture or checkpoint is unknown or invalid."""
