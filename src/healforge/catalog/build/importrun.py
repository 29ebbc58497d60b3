"""Where an import stands in its output: fresh, unfinished (resume), or finished.

A finished import leaves ``OUTPUT/.healforge/import.json`` (its arguments and results), written
after every catalog file and before the work directory is removed: a rerun with the same
arguments answers "already complete", one with other arguments is refused (``--overwrite``).
An unfinished run is resumed with the same arguments; with other arguments it is refused once
it has written data, and started again when it failed before writing any.
"""

from __future__ import annotations

import json
import os
import time

from healforge.errors import CatalogError
from healforge.hats import layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath, as_path
from healforge.options import RunOptions

RECORD = ".healforge/import.json"


def rejected_path_for(output: str | AnyPath) -> AnyPath:
    """Where quarantined rows of an import into ``output`` are written (beside the catalog)."""
    output = as_path(output)
    return output.with_name(output.name + ".rejected.parquet")


def record_fields(result) -> dict:
    """What the record keeps of an ``ImportResult``."""
    return {
        "rows": result.rows,
        "rejected": result.rejected,
        "rejected_path": result.rejected_path,
        "pixels": [list(p) for p in result.pixels],
    }


def build_members(
    result,
    output: AnyPath,
    margin_arcsec: float | None,
    margin_path: str | os.PathLike | None,
    indexes,
    args: dict,
    run: RunOptions,
) -> object:
    """The margin and indexes of a finished stand-alone import (rebuilt whole after a kill)."""
    timings = result.stage_seconds
    if not (margin_arcsec or indexes):
        return result
    # imported here: a plain import needs neither (margins bring pandas)
    from healforge.catalog.derived.index import index_catalog
    from healforge.catalog.derived.margin import margin

    if margin_arcsec:
        target = run.path(margin_path) if margin_path else output.with_name(output.name + "_margin")
        t0 = time.perf_counter()
        result.margin = margin(output, target, margin_arcsec, overwrite=True, run=run)
        timings["margin"] = time.perf_counter() - t0
    if indexes:
        t0 = time.perf_counter()
        result.members = [result.margin] if result.margin is not None else []
        for col in indexes:
            result.members.append(index_catalog(output, col, overwrite=True, run=run))
        timings["index"] = time.perf_counter() - t0
    write_record(output, args, record_fields(result), members_done=True)
    return result


def read_record(output: AnyPath) -> dict | None:
    """The record a finished import left in ``output`` (``None`` if there is none)."""
    path = output / RECORD
    if not path.exists() or not layout.properties_file(output).exists():
        return None
    return json.loads(path.read_text())


def _wrote_data(output: AnyPath) -> bool:
    """Whether an unfinished import already put data files in ``output``."""
    return bool(layout.list_data_files(output))


def _holds_only_leftovers(output: AnyPath, work: AnyPath) -> bool:
    """Whether ``output`` is absent, empty, or holds only what an import that wrote no data left
    (its work and staging directories, empty pixel directories)."""
    if not storage.is_local(output):
        return storage.is_empty_dir(output)
    if not output.exists():
        return True
    if not output.is_dir():
        return False
    ours = {storage.STAGING_DIR, ".healforge"} | ({work.name} if work.parent == output else set())
    for entry in output.iterdir():
        if entry.name in ours:
            continue
        if entry.name == layout.DATASET_DIR and entry.is_dir():
            if any(p.is_file() for p in entry.rglob("*")):
                return False
            continue
        return False
    return True


def prepare_output(output: AnyPath, work, args: dict, resume: bool | None, overwrite: bool) -> str:
    """Get ``output`` ready; returns ``"fresh"``, ``"resumed"`` (an unfinished run with these
    arguments continues), ``"complete"`` (it finished: nothing to do) or ``"members"`` (the
    catalog finished, its margin or indexes did not)."""
    plan = work / "plan.json"
    if overwrite:
        if output.exists():
            storage.rmtree(output)
        storage.rmtree(work)  # intermediate files kept apart from the output (--tmp-dir, URL output)
    workfiles.remove_trash(work)
    record = read_record(output) if resume is not False else None
    if record is not None:
        if record["args"] != args:
            diff = sorted(k for k in args if record["args"].get(k) != args[k])
            raise CatalogError(
                f"{output} holds a finished import with other arguments ({', '.join(diff)}); "
                "use --overwrite to replace it"
            )
        workfiles.remove_dir(work)  # a kill right after the record was written
        return "complete" if record.get("members_done", True) else "members"
    if plan.exists():
        previous = json.loads(plan.read_text())
        diff = sorted(k for k in args if previous.get(k) != args[k])
        if not diff and resume is not False:
            storage.clean_leftovers(output, layout.DATASET_DIR)
            return "resumed"
        if resume:
            raise CatalogError(
                f"cannot resume the unfinished import in {output}: arguments differ ({', '.join(diff)}); "
                "use --overwrite to start again"
            )
        if _wrote_data(output):
            raise CatalogError(
                f"{output} holds an unfinished import with other arguments ({', '.join(diff)}); rerun "
                "with the same arguments to resume it, or use --overwrite"
            )
        workfiles.remove_dir(work)  # the earlier run failed before writing any data: start again
    elif resume:
        raise CatalogError(f"nothing to resume: {output} has no unfinished import")
    if not _holds_only_leftovers(output, work):
        raise CatalogError(f"output {output} exists and is not empty; use --overwrite to replace it")
    storage.clean_leftovers(output, layout.DATASET_DIR)
    rejected = rejected_path_for(output)
    if rejected.exists():
        storage.rmtree(rejected)
    workfiles.make_dir(work)
    layout.atomic_write_text(plan, json.dumps(args, indent=1))
    return "fresh"


def write_record(output: AnyPath, args: dict, result: dict, members_done: bool) -> None:
    """Mark the import into ``output`` finished: its arguments and results (``rows``,
    ``rejected``, ``rejected_path``, ``pixels``), and whether its margin and indexes are built."""
    record = {"args": args, **result, "members_done": members_done}
    layout.atomic_write_text(output / RECORD, json.dumps(record, indent=1))
