"""Pixels in: local files, folders and catalogs, and synthetic example galaxies."""

from galaxymorph.sources.files import file_id, iter_inputs

__all__ = ["file_id", "iter_inputs"]
