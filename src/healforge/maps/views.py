"""The names of the map views (no imports: the CLI's ``--help`` reads them)."""

#: Whole-sphere and polar views, then regional ones (a centre and a width).
PROJECTIONS = ("mollweide", "polar-north", "polar-south", "orthographic", "gnomonic", "cartesian")
#: Regional views: ``center`` and ``extent`` (degrees across) choose the region.
REGIONAL = ("gnomonic", "cartesian")
#: Colour scalings: linear between two values, logarithmic, or by percentile rank.
SCALES = ("linear", "log", "percentile")
#: ``sky``: seen from inside, longitude (RA) increasing to the left; ``body``: a planet or the
#: Earth seen from outside, east to the right.
FRAMES = ("sky", "body")
