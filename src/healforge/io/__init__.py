"""Input readers and filesystem helpers."""

from healforge.io.readers import detect_format, iter_batches, read_schema

__all__ = ["detect_format", "iter_batches", "read_schema"]
