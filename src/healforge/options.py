"""How a command runs: one :class:`RunOptions` object instead of the same keywords everywhere.

Every writer entry point (``import_catalog``, ``append``, ``increment``, ``compact``, ``delete``,
``margin``, ``index_catalog``, ``nest``) takes ``run=RunOptions(...)`` and, as before, the
options as keywords (``workers=4, quiet=True``); :meth:`RunOptions.of` merges the two.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from healforge.engine import Engine, owned_engine
from healforge.errors import OptionError
from healforge.io.storage import AnyPath, as_path
from healforge.io.workfiles import scratch_base


class KeywordOptions:
    """An options dataclass that is given as one object and/or as its fields as keywords."""

    @classmethod
    def of(cls, given=None, /, **options):
        """``given`` (default: all defaults) with the options given as keywords replacing its fields.

        Raises
        ------
        TypeError
            For a keyword that is no field (as an unknown keyword argument would).
        OptionError
            When ``given`` is not an instance of this class.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        if given is not None and not isinstance(given, cls):
            raise OptionError(f"expected a {cls.__name__}, got {type(given).__name__}")
        return replace(given or cls(), **options)


@dataclass(frozen=True)
class RunOptions(KeywordOptions):
    """Where and how a command runs.

    Parameters
    ----------
    engine
        An :class:`~healforge.engine.Engine` the caller holds (used as it is, left open): a
        command that runs several stages or other commands keeps one engine for all of them.
    workers, scheduler, synchronous
        Options of the engine made when ``engine`` is ``None``: local workers, address of an
        existing Dask scheduler, or everything in-process one task after the other.
    processes
        Local workers as separate processes rather than threads (see
        :class:`~healforge.engine.Engine`).
    quiet
        No progress bars.
    wait_workers
        Seconds to wait for the ``scheduler`` to have a worker before a one-line error
        (default :data:`healforge.engine.WAIT_WORKERS_S`, 60).
    storage_options
        fsspec options for the URL paths (``s3://...``) of the command's catalogs.
    tmp_dir
        Directory for intermediate files, local or any fsspec URL that every worker reaches
        (default: see :meth:`scratch`).
    """

    engine: Engine | None = None
    workers: int | None = None
    scheduler: str | None = None
    synchronous: bool = False
    quiet: bool = False
    wait_workers: float | None = None
    processes: bool = False
    storage_options: dict | None = None
    tmp_dir: str | os.PathLike | None = None

    @contextmanager
    def engine_scope(self) -> Iterator[Engine]:
        """The engine to run on: :attr:`engine`, or a new one closed when the block ends."""
        options = (
            self.workers,
            self.scheduler,
            self.synchronous,
            self.quiet,
            self.wait_workers,
            self.processes,
        )
        with owned_engine(self.engine, *options) as eng:
            yield eng

    def using(self, engine: Engine) -> RunOptions:
        """These options running on ``engine`` (to hand to the commands a command runs)."""
        return replace(self, engine=engine, quiet=engine.quiet)

    def scratch(self, output: str | os.PathLike) -> AnyPath | None:
        """Where the scratch directories of a run writing ``output`` go: :attr:`tmp_dir`; else,
        on an existing scheduler with a remote ``output``, beside the output (workers on other
        hosts reach it); else ``None``, the default of
        :func:`healforge.io.workfiles.scratch_dir` (local)."""
        engine_scheduler = self.engine.scheduler if self.engine is not None else None
        distributed = bool(self.scheduler or engine_scheduler)
        return scratch_base(output, self.tmp_dir, distributed, self.storage_options)

    def path(self, path: str | os.PathLike) -> AnyPath:
        """``path`` as a local path or a URL path carrying :attr:`storage_options`."""
        return as_path(path, self.storage_options)


@dataclass(frozen=True)
class ChangeOptions(KeywordOptions):
    """What every change of a catalog (append, increment, compact, delete) shares besides how it
    runs.

    Parameters
    ----------
    compression
        Parquet codec of the files it writes, ``codec[:level]`` (``"zstd:3"``, ``"snappy"``,
        ``"none"``; ``None``: the default ``"zstd:3"``).
    margin
        A margin of the catalog to rebuild besides its recorded members. Every member (the
        collection's margins and indexes, or those recorded by :func:`healforge.margin` and
        :func:`healforge.index_catalog`) is rebuilt from the changed rows before the commit and
        swapped in by it: readers see the old catalog and members or the new ones.
    """

    compression: str | None = "zstd:3"
    margin: str | os.PathLike | None = None


def options_as_keywords(**groups: type[KeywordOptions]) -> Callable[[Callable], Callable]:
    """Decorator: each keyword-only parameter of the function named in ``groups``
    (``run=RunOptions``) takes its options object and/or the object's fields as keywords; the
    function itself always gets one object per group. The signature shown (and read by the CLI)
    lists each group and its fields after the function's own parameters."""

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)
        params = [p for p in signature.parameters.values() if p.name not in groups]
        owner: dict[str, str] = {}
        for group, cls in groups.items():
            kind = inspect.Parameter.KEYWORD_ONLY
            params.append(inspect.Parameter(group, kind, default=None, annotation=f"{cls.__name__} | None"))
            for f in fields(cls):
                params.append(inspect.Parameter(f.name, kind, default=f.default, annotation=f.type))
                owner[f.name] = group

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            given: dict[str, dict] = {group: {} for group in groups}
            for name in [k for k in kwargs if k in owner]:
                given[owner[name]][name] = kwargs.pop(name)
            for group, cls in groups.items():
                kwargs[group] = cls.of(kwargs.pop(group, None), **given[group])
            return func(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        return wrapper

    return decorate


__all__ = ["ChangeOptions", "KeywordOptions", "RunOptions", "options_as_keywords"]
