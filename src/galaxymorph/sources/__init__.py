"""Pixels in: local files, folders and catalogs, and synthetic example galaxies."""

from galaxymorph.sources.files import iter_inputs

__all__ = ["iter_inputs"]
