"""HATS property keys (``hats.properties``) that healforge reads or writes, spelled once.

The values are the exact keys of hats' ``TableProperties`` (and of the IVOA HiPS-style
properties file), so ``{Key.NROWS: n}`` writes ``hats_nrows=n`` as before.
"""

from __future__ import annotations


class Key:
    """Names of the ``hats_*`` properties (plain ``str`` constants, usable as dict keys)."""

    NROWS = "hats_nrows"
    COL_RA = "hats_col_ra"
    COL_DEC = "hats_col_dec"
    COL_ID = "hats_col_id"
    COL_HEALPIX = "hats_col_healpix"
    COL_HEALPIX_ORDER = "hats_col_healpix_order"
    COLS_SORT = "hats_cols_sort"
    COLS_DEFAULT = "hats_cols_default"
    NPIX_SUFFIX = "hats_npix_suffix"
    ORDER = "hats_order"
    MAX_ROWS = "hats_max_rows"
    MAX_BYTES = "hats_max_bytes"
    ESTSIZE = "hats_estsize"
    SKYMAP_ORDER = "hats_skymap_order"
    SKYMAP_ALT_ORDERS = "hats_skymap_alt_orders"
    VERSION = "hats_version"
    BUILDER = "hats_builder"
    CREATION_DATE = "hats_creation_date"
    MARGIN_THRESHOLD = "hats_margin_threshold"
    INDEX_COLUMN = "hats_index_column"
    INDEX_EXTRA_COLUMN = "hats_index_extra_column"
    PRIMARY_TABLE_URL = "hats_primary_table_url"
