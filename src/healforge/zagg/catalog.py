"""zagg granule catalogs (shard maps): ``{grid_signature, shard_keys, granules, metadata}`` JSON.

``granules[i]`` lists the granules (``{"id", "s3", "https"}``) of shard ``shard_keys[i]`` (a
mortie morton index at ``parent_order``). healforge reads every listed granule once; the href is
chosen by ``data_source.driver`` as zagg does. Relative hrefs are resolved against the catalog.
"""

from __future__ import annotations

import json
import os

import fsspec
import numpy as np

from healforge.run import ConfigError

REQUIRED = ("grid_signature", "shard_keys", "granules")


def shard_cells(keys: list[int]) -> tuple[int, list[int]]:
    """Order and nested cells of zagg shard keys (mortie morton words)."""
    import mortie

    if not keys:
        return 0, []
    cells, order = mortie.mort2healpix(np.asarray(keys, dtype=np.uint64))
    return int(order), sorted(int(c) for c in np.atleast_1d(cells))


def read_catalog(
    path: str, driver: str = "s3", grid_orders: tuple[int | None, int | None] = (None, None)
) -> tuple[list[str], list[int]]:
    """Unique granule hrefs of a catalog (in catalog order) and its shard keys.

    Raises
    ------
    ConfigError
        For a catalog that is unreadable, lacks a key, or was built for another grid.
    """
    try:
        with fsspec.open(path, "rt") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ConfigError([("", "granule catalog not found")], path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([("", f"not valid JSON: {exc}")], path) from None
    errors = [(k, "is required in a zagg granule catalog") for k in REQUIRED if k not in doc]
    if errors:
        raise ConfigError(errors, path)
    sig = doc["grid_signature"] or {}
    parent, child = grid_orders
    for key, want in (("parent_order", parent), ("child_order", child)):
        have = sig.get(key)
        if want is not None and have is not None and int(have) != int(want):
            errors.append(
                (f"grid_signature.{key}", f"the catalog was built for {key} {have}, the config has {want}")
            )
    if len(doc["shard_keys"]) != len(doc["granules"]):
        errors.append(("granules", "must have one list of granules per shard key"))
    if errors:
        raise ConfigError(errors, path)
    href_key = "https" if driver == "https" else "s3"
    base = os.path.dirname(os.path.abspath(path)) if "://" not in path else None
    out: list[str] = []
    seen = set()
    for i, shard in enumerate(doc["granules"]):
        for j, g in enumerate(shard):
            href = g.get(href_key) if isinstance(g, dict) else None
            if not href:
                raise ConfigError([(f"granules[{i}][{j}]", f"has no {href_key!r} href")], path)
            if "://" not in href and base is not None and not os.path.isabs(href):
                href = os.path.normpath(os.path.join(base, href))
            if href not in seen:
                seen.add(href)
                out.append(href)
    return out, [int(k) for k in doc["shard_keys"]]
