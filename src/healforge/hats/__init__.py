"""The HATS on-disk format as healforge writes and reads it: property keys (:mod:`.keys`) and
the layout of a catalog directory (:mod:`.layout`: paths, properties, partition info, metadata)."""

from healforge.hats.keys import Key

__all__ = ["Key"]
