"""How a command runs: one :class:`RunOptions` object instead of the same keywords everywhere.

Every writer entry point (``import_catalog``, ``append``, ``increment``, ``compact``, ``delete``,
``margin``, ``index_catalog``, ``nest``) takes ``run=RunOptions(...)`` and, as before, the
options as keywords (``workers=4, quiet=True``); :meth:`RunOptions.of` merges the two.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace

from healforge.engine import Engine, owned_engine
from healforge.errors import OptionError
from healforge.io.storage import AnyPath, as_path


@dataclass(frozen=True)
class RunOptions:
    """Where and how a command runs.

    Parameters
    ----------
    engine
        An :class:`~healforge.engine.Engine` the caller holds (used as it is, left open): a
        command that runs several stages or other commands keeps one engine for all of them.
    workers, scheduler, synchronous
        Options of the engine made when ``engine`` is ``None``: local worker processes, address
        of an existing Dask scheduler, or everything in-process one task after the other.
    quiet
        No progress bars.
    storage_options
        fsspec options for the URL paths (``s3://...``) of the command's catalogs.
    tmp_dir
        Local directory for intermediate files (default: see
        :func:`healforge.io.storage.scratch_dir`).
    """

    engine: Engine | None = None
    workers: int | None = None
    scheduler: str | None = None
    synchronous: bool = False
    quiet: bool = False
    storage_options: dict | None = None
    tmp_dir: str | os.PathLike | None = None

    @classmethod
    def of(cls, run: RunOptions | None = None, /, **options) -> RunOptions:
        """``run`` (default: all defaults) with the options given as keywords replacing its fields.

        Raises
        ------
        TypeError
            For a keyword that is no run option (as an unknown keyword argument would).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        if run is not None and not isinstance(run, RunOptions):
            raise OptionError(f"run must be a RunOptions, got {type(run).__name__}")
        return replace(run or cls(), **options)

    @contextmanager
    def engine_scope(self) -> Iterator[Engine]:
        """The engine to run on: :attr:`engine`, or a new one closed when the block ends."""
        with owned_engine(self.engine, self.workers, self.scheduler, self.synchronous, self.quiet) as eng:
            yield eng

    def using(self, engine: Engine) -> RunOptions:
        """These options running on ``engine`` (to hand to the commands a command runs)."""
        return replace(self, engine=engine, quiet=engine.quiet)

    def path(self, path: str | os.PathLike) -> AnyPath:
        """``path`` as a local path or a URL path carrying :attr:`storage_options`."""
        return as_path(path, self.storage_options)


__all__ = ["RunOptions"]
