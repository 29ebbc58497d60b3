"""The writer spine: what every change of a catalog (append, increment, compact, delete) shares.

A change takes the writer lock, starts a transaction (:func:`changing`), stages its new files,
rebuilds the catalog's members (margins, indexes) from the catalog-to-be and commits both in one
step (:func:`commit_change`). The protocol itself (lock, staging area, versions, commit) is in
:mod:`healforge.catalog.change.transaction`; this module sits above the margin and index builders,
which it calls, and below the commands, which call it.

Layers, lowest first: ``derived.members`` (the member registry) < ``change.versions`` <
``change.transaction`` < ``derived.margin`` / ``derived.index`` < ``change.writer`` < the commands.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq

from healforge.catalog.change import transaction as txn
from healforge.catalog.change import versions
from healforge.catalog.change.snapshot import CatalogSnapshot
from healforge.catalog.derived.index import build_index
from healforge.catalog.derived.margin import build_margin
from healforge.catalog.derived.members import Member, members_of
from healforge.engine import Engine
from healforge.hats import Key, layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path
from healforge.options import RunOptions
from healforge.pixel import SPATIAL_INDEX_COLUMN


@contextmanager
def changing(root: AnyPath, kind: str, run: RunOptions) -> Iterator[AnyPath]:
    """Hold the writer lock on ``root`` and start a change (recovering any earlier one); yields
    the change's work directory (see :meth:`RunOptions.scratch`), removed when the block ends
    without an error."""
    with txn.CatalogLock(root, kind):
        work = txn.begin(root, run.scratch(root))
        yield work
        storage.rmtree(work)


def commit_change(
    root: AnyPath,
    manifest: dict,
    engine: Engine,
    margin: str | os.PathLike | None = None,
    run: RunOptions | None = None,
) -> AnyPath:
    """Rebuild every member of ``root`` (and ``margin``) for the staged change in ``manifest``
    and commit them together; returns the new version of the catalog. ``run`` gives the
    storage options of ``margin`` and the members' scratch directory."""
    run = run or RunOptions()
    extra = given_margin(margin, run.storage_options)
    stage_members(root, manifest, engine, extra=extra, tmp_dir=run.scratch(root))
    return txn.commit(root, manifest)


def build_member(
    member: Member,
    source: CatalogSnapshot,
    output: AnyPath,
    engine: Engine,
    tmp_dir: str | os.PathLike | None = None,
) -> object:
    """Build ``member`` from ``source`` at ``output`` (which must not exist yet); intermediate
    files in ``tmp_dir`` (see :func:`healforge.io.workfiles.scratch_dir`)."""
    name = layout.read_properties(member.path).get("obs_collection") if member.path.exists() else None
    name = name or member.path.name
    if member.kind == "margin":
        return build_margin(
            source.root,
            output,
            member.radius_arcsec,
            name=name,
            tmp_dir=tmp_dir,
            engine=engine,
            source=source,
        )
    return build_index(
        source, output, member.column, member.include_columns, name=name, tmp_dir=tmp_dir, engine=engine
    )


def stage_members(
    root: str | os.PathLike,
    manifest: dict,
    engine: Engine,
    extra: list[Member] = (),
    tmp_dir: str | os.PathLike | None = None,
) -> list[Member]:
    """Rebuild every member of ``root`` (and ``extra``) for the change in ``manifest`` as its
    next version in the catalog's home, and list them in ``manifest["members"]`` for the commit
    (``[old path, new name, kind, column]``). A crash before the commit leaves the old catalog
    and members (the next writer removes the unreferenced new versions)."""
    root = as_path(root)
    members = members_of(root)
    known = {str(m.path) for m in members}
    members += [m for m in extra if str(m.path) not in known]
    home = versions.home_of(root)
    version = manifest.setdefault("version", versions.next_version(home))
    if not members:
        return []
    source = CatalogSnapshot.after(root, manifest, txn.staging_dir(root))
    swaps, names = [], set()
    for member in members:
        base = versions.split_version(member.path.name)[0]
        name, k = versions.versioned(base, version), 1
        while name in names:  # two members of one name (from different places)
            k += 1
            name = versions.versioned(f"{base}-{k}", version)
        names.add(name)
        place = versions.build_dir(root)
        storage.rmtree(place / name)  # never committed (the version is new)
        build_member(member, source, place / name, engine, tmp_dir)
        swaps.append([str(member.path), name, member.kind, member.column])
    manifest["members"] = swaps
    return members


def given_margin(margin: str | os.PathLike | None, storage_options: dict | None = None) -> list[Member]:
    """An explicitly named margin to keep current besides the recorded members."""
    if margin is None:
        return []
    path = as_path(margin, storage_options)
    props = layout.read_properties(path)
    return [Member("margin", path, radius_arcsec=float(props[Key.MARGIN_THRESHOLD]))]


def carry_properties(props: dict[str, str]) -> dict:
    """Properties kept across a change (the writer fills dates, builder and size again)."""
    skip = {Key.ESTSIZE, Key.CREATION_DATE, Key.BUILDER, Key.VERSION}
    return {k: v for k, v in props.items() if k not in skip}


def catalog_schema(root: AnyPath) -> pa.Schema:
    """Data schema of a catalog (``_common_metadata`` without ``_healpix_29``)."""
    schema = storage.read_parquet_schema(layout.common_metadata_file(root))
    schema = schema.remove_metadata()
    return (
        schema.remove(schema.get_field_index(SPATIAL_INDEX_COLUMN))
        if SPATIAL_INDEX_COLUMN in schema.names
        else schema
    )


def write_beside(root: AnyPath, suffix: str, tables: list[pa.Table]) -> AnyPath:
    """Write ``tables`` to ``HOME.<suffix>`` beside the catalog's home (its collection, or the
    catalog itself), whatever its version: where a change puts the rows it rejected."""
    home = versions.home_of(root)
    target = home.with_name(f"{home.name}.{suffix}")
    with storage.atomic_output(target) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp)
    return target


def batch_order(root: AnyPath) -> dict[str, int]:
    """Rank of each batch label, in the order the batches were applied (1 = oldest).

    ``.healforge/batches.json`` lists applied batches in application order; a label used again
    (after a compaction removed the first batch's files) ranks at its last use. Files whose name is
    no recorded label (an import's ``Npix=P.parquet``, a compaction's ``compacted.parquet``) rank
    0: they hold the rows that were there before any batch still in the catalog."""
    batches = txn.applied_batches(root)
    return {
        info.get("label"): rank for rank, info in enumerate(batches.values(), start=1) if info.get("label")
    }


def file_rank(path: AnyPath, ranks: dict[str, int]) -> int:
    """Batch rank of a data file (see :func:`batch_order`)."""
    return ranks.get(path.name[: -len(".parquet")], 0) if path.name.endswith(".parquet") else 0


def pixel_files(root: AnyPath, order: int, pixel: int, ranks: dict[str, int] | None = None) -> list[AnyPath]:
    """Data files of a pixel, oldest first: by batch rank (:func:`batch_order`), then modification
    time, then name (object stores keep modification times to the second)."""
    single = layout.pixel_file(root, order, pixel, ".parquet")
    if single.is_file():
        return [single]
    if ranks is None:
        ranks = batch_order(root)
    folder = layout.pixel_file(root, order, pixel, "/")
    files = [p for p in folder.glob("*.parquet") if p.is_file()]
    return sorted(files, key=lambda p: (file_rank(p, ranks), p.stat().st_mtime_ns, p.name))


__all__ = [
    "batch_order",
    "build_member",
    "carry_properties",
    "catalog_schema",
    "changing",
    "commit_change",
    "file_rank",
    "given_margin",
    "pixel_files",
    "stage_members",
    "write_beside",
]
