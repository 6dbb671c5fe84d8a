"""The latent Parquet archive: schema, writer (with commit records), reader (with an id index)."""

from .reader import Archive
from .writer import UnitWriter

__all__ = ["Archive", "UnitWriter"]
