"""Pixels in: local files, folders and catalogs, and synthetic example galaxies."""

from galaxymorph.sources.files import count_inputs, file_id, iter_inputs

__all__ = ["count_inputs", "file_id", "iter_inputs"]
