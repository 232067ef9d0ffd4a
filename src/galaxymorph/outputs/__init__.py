"""Outputs: catalog writers and figures."""

from galaxymorph.outputs.catalog_writer import CatalogWriter

__all__ = ["CatalogWriter"]
