"""The tasks of a streaming run that keep states off the client: each input file's state is
saved by the task that made it, states merge on the workers in a tree of saved parts, and the
merged state is coarsened, finalized and written by one more task.

The client only hands out file names and collects row counts, so its memory does not grow with
the number of rows, cells or input files. The merge tree has the shape of
:func:`healforge.aggregate.core.merge_tree` (groups of ``MERGE_FAN_IN`` in input order), so the
outputs are those of one merge in this process, bit for bit.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable

import pyarrow as pa

from healforge.aggregate.core import MERGE_FAN_IN, accumulate_source
from healforge.aggregate.plan import Plan
from healforge.aggregate.sources import Source
from healforge.aggregate.state import State, merge_states
from healforge.engine import Engine
from healforge.io.storage import as_path, read_parquet_table, write_parquet_table


def rejected_path(part: str) -> str:
    """Where the rejected rows of the state part ``part`` (a ``.parquet`` path) go."""
    return part.removesuffix(".parquet") + ".rejected.parquet"


def accumulate_part(item: tuple[Source, str], plan: Plan, batch_rows: int, storage_options) -> dict:
    """Accumulate one input file (``item``: the source and where its state goes) and save its
    state (and its rejected rows beside it); returns the counts and whether rows were rejected."""
    source, part = item
    result = accumulate_source(source, plan=plan, batch_rows=batch_rows)
    result.state.save(part, storage_options)
    rejected = None
    if result.rejects.tables:
        rejected = pa.concat_tables(result.rejects.tables, promote_options="permissive")
        write_parquet_table(rejected, rejected_path(part), storage_options, compression="zstd")
    return {"counts": result.counts.as_dict(), "rejected": rejected is not None}


def merge_parts(eng: Engine, parts: list[str], work: str, storage_options) -> str:
    """Merge the saved states ``parts`` (in order) on the workers; returns the merged part."""
    level = 0
    while len(parts) > 1:
        groups = [parts[i : i + MERGE_FAN_IN] for i in range(0, len(parts), MERGE_FAN_IN)]
        outs = [posixpath.join(work, f"merge-{level}-{i}.parquet") for i in range(len(groups))]
        # a group of one is already merged: it moves up unchanged
        todo = [(g, o) for g, o in zip(groups, outs, strict=True) if len(g) > 1]
        eng.map(
            _merge_task,
            todo,
            "merge",
            labels=[o for _, o in todo],
            small=len(todo) == 1,
            storage_options=storage_options,
        )
        parts = [o if len(g) > 1 else g[0] for g, o in zip(groups, outs, strict=True)]
        level += 1
    return parts[0]


def _merge_task(item: tuple[list[str], str], storage_options) -> str:
    """Merge the saved states ``item[0]`` into one saved at ``item[1]``."""
    paths, out = item
    merge_states([State.load(p, storage_options) for p in paths]).save(out, storage_options)
    return out


def finish_on_worker(eng: Engine, finish: Callable, merged: str, storage_options, **kwargs):
    """``finish(state, **kwargs)`` on a worker, the merged state loaded there."""
    [out] = eng.map(_finish_task, [(finish, merged, storage_options, kwargs)], "finish", labels=["state"])
    return out


def _finish_task(item) -> object:
    finish, merged, storage_options, kwargs = item
    return finish(State.load(merged, storage_options), **kwargs)


def read_rejected(parts: list[str], storage_options) -> list[pa.Table]:
    """The rejected rows saved beside ``parts`` (those that have some)."""
    return [read_parquet_table(as_path(rejected_path(p), storage_options)) for p in parts]


__all__ = ["accumulate_part", "finish_on_worker", "merge_parts", "read_rejected", "rejected_path"]
