"""Dask client handling and per-stage progress reporting.

An :class:`Engine` runs the units of work of a pipeline stage: on a local Dask cluster (default),
on an existing scheduler given by address, or in-process one after the other (``synchronous``,
for tests and debugging). Results come back in submission order; the first failure stops the
stage and is re-raised with the task's label.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from tqdm.auto import tqdm


class Progress:
    """One progress bar per stage: tqdm on a terminal, a few plain lines otherwise, nothing when quiet."""

    def __init__(self, total: int, desc: str, quiet: bool = False, unit: str = "task"):
        self.total, self.desc, self.quiet, self.done = total, desc, quiet, 0
        self._bar = None
        self._t0 = time.perf_counter()
        self._next_line = 0.0
        if not quiet and sys.stderr.isatty():
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=True, file=sys.stderr)
        elif not quiet:
            self._line()

    def _line(self) -> None:
        pct = 100 * self.done / self.total if self.total else 100
        elapsed = time.perf_counter() - self._t0
        print(
            f"{self.desc}: {self.done}/{self.total} ({pct:.0f}%) {elapsed:.1f}s", file=sys.stderr, flush=True
        )

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self.quiet:
            pct = self.done / self.total if self.total else 1
            if pct >= self._next_line or self.done == self.total:
                self._line()
                self._next_line = pct + 0.25

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def failpoint(desc: str, done: int) -> None:
    """Crash testing: ``HEALFORGE_KILL_AFTER=Stage:N`` SIGKILLs this process once N tasks of
    that stage have finished (used by the resume tests to kill a run at a chosen point)."""
    spec = os.environ.get("HEALFORGE_KILL_AFTER")
    if spec and spec == f"{desc}:{done}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


class TaskError(RuntimeError):
    """A unit of work failed; the message names the task."""


class NoWorkersError(RuntimeError):
    """The scheduler has had no workers for longer than the engine waits (``wait_workers``)."""


#: Seconds a command waits for a scheduler to have a worker (at start, or after losing them all)
#: before it stops with :class:`NoWorkersError`; the CLI's ``--wait-workers`` sets it.
WAIT_WORKERS_S = 60.0


class Engine:
    """Runs pipeline tasks through Dask.

    Parameters
    ----------
    workers
        Number of workers of a local cluster (default: CPU count, at most 4).
    scheduler
        Address of an existing Dask scheduler (``tcp://host:port``) or a ``distributed.Client``;
        when given, no local cluster is started.
    synchronous
        Run tasks in this process, one after the other (tests, debugging).
    threads_per_worker
        Threads per local worker.
    processes
        Local workers as separate processes (memory isolation, a nanny that restarts a worker
        that dies) instead of threads of this process. The stages spend their time in pyarrow,
        numpy and numba code that releases the GIL, so threads are the default: they start in
        milliseconds and pass data without copies (an import of 5 M rows on 2 workers took 4.2 s
        on threads, 6.1 s on processes).
    memory_limit
        Per-worker memory limit of local worker processes (dask syntax, e.g. ``"4GB"``; ``"auto"``
        default). Threads have none: dask would compare the whole process's memory with each
        thread's share and pause every worker of a large run.
    quiet
        Silence progress bars.
    wait_workers
        Seconds to wait for an external scheduler to have a worker, at start and whenever it has
        lost them all, before :class:`NoWorkersError` (default :data:`WAIT_WORKERS_S`).
    """

    def __init__(
        self,
        workers: int | None = None,
        scheduler: Any = None,
        synchronous: bool = False,
        threads_per_worker: int = 1,
        memory_limit: str | None = "auto",
        quiet: bool = False,
        wait_workers: float | None = None,
        processes: bool = False,
    ):
        self.processes = processes
        self.workers = workers or min(os.cpu_count() or 1, 4)
        self.wait_workers = WAIT_WORKERS_S if wait_workers is None else float(wait_workers)
        self.scheduler = scheduler
        self.synchronous = synchronous
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.quiet = quiet
        self.client = None
        self._own_cluster = None
        self._own_client = False

    def __enter__(self) -> Engine:
        self.start()
        return self

    @property
    def parallelism(self) -> int:
        """How many tasks can run at once: 1 when synchronous, the connected cluster's worker
        count, else the local worker count."""
        if self.synchronous:
            return 1
        if self.client is not None:
            return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        return self.workers

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if self.synchronous or self.client is not None:
            return
        from distributed import Client, LocalCluster

        if isinstance(self.scheduler, Client):
            self.client = self.scheduler
            return
        if self.scheduler:
            self.client = Client(self.scheduler, timeout=f"{max(self.wait_workers, 1):g}s")
            self._own_client = True
            self._await_workers()
            return
        with warnings.catch_warnings():
            # another cluster on the machine holds the dashboard port: not the user's concern
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            self._own_cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=self.threads_per_worker,
                processes=self.processes,
                memory_limit=self.memory_limit if self.processes else 0,
                dashboard_address=None,
                silence_logs=50,
            )
        self.client = Client(self._own_cluster)
        self._own_client = True

    def _await_workers(self) -> None:
        """Return once the scheduler has a worker; :class:`NoWorkersError` after ``wait_workers`` s."""
        if self.client.scheduler_info(n_workers=1)["workers"]:
            return
        try:
            self.client.wait_for_workers(1, timeout=self.wait_workers)
        except TimeoutError:
            raise NoWorkersError(
                f"the Dask scheduler {self.scheduler} has had no workers for {self.wait_workers:g} s; "
                "start workers (dask worker ADDRESS) or give a longer --wait-workers"
            ) from None

    def close(self) -> None:
        if self._own_client and self.client is not None:
            self.client.close()
        if self._own_cluster is not None:
            self._own_cluster.close()
        self.client = self._own_cluster = None
        self._own_client = False

    def map(
        self,
        func: Callable,
        items: Sequence[Any],
        desc: str,
        labels: Sequence[str] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
        small: bool = False,
        **kwargs,
    ) -> list[Any]:
        """Run ``func(item, **kwargs)`` for every item; results in item order.

        ``on_result(i, result)`` is called in this process as each task finishes (in completion
        order), e.g. to record progress for resuming. ``small``: the tasks together are less work
        than starting a local cluster, so they run in this process unless a cluster is already up
        (a lone task always is treated so; an external scheduler always gets the tasks).
        """
        items = list(items)
        labels = list(labels) if labels is not None else [str(i) for i in items]
        results: list[Any] = [None] * len(items)
        with Progress(len(items), desc, quiet=self.quiet) as bar:

            def finished(i: int, result: Callable[[], Any]) -> None:
                # task i is done: ``result()`` gives its value or raises its error
                try:
                    results[i] = result()
                except Exception as exc:
                    raise _task_error(desc, labels[i], exc) from exc
                if on_result:
                    on_result(i, results[i])
                bar.update()
                failpoint(desc, bar.done)

            if not items:
                return results
            # A lone task, or a stage its caller knows to be small, runs here when no cluster is
            # up yet: starting one would cost more than the work.
            inline = self.client is None and not self.scheduler and (len(items) == 1 or small)
            if self.synchronous or inline:
                for i, item in enumerate(items):
                    finished(i, partial(func, item, **kwargs))
                return results
            from distributed import as_completed

            self.start()
            futures = [
                self.client.submit(func, item, key=f"{desc}-{i}-{time.time_ns()}", pure=False, **kwargs)
                for i, item in enumerate(items)
            ]
            index = {f.key: i for i, f in enumerate(futures)}
            pending = as_completed(futures)
            checked = time.monotonic()
            try:
                while not pending.is_empty():
                    if not pending.has_ready():
                        time.sleep(0.01)
                        if self.scheduler and time.monotonic() - checked > 1:
                            self._await_workers()  # a cluster that lost every worker stops here
                            checked = time.monotonic()
                        continue
                    for fut in pending.next_batch(block=False):
                        finished(index[fut.key], fut.result)
                        fut.release()
            finally:
                for f in futures:
                    if not f.done():
                        f.cancel()
        return results


#: Rows below which a catalog stage runs in this process (``Engine.map(..., small=True)``) when no
#: cluster is up yet: starting and stopping a local cluster costs 1-4 s, more than the work.
SMALL_STAGE_ROWS = 500_000


def _task_error(desc: str, label: str, exc: Exception) -> Exception:
    from healforge.errors import HealforgeError

    if isinstance(exc, HealforgeError):
        return exc
    return TaskError(f"{desc} failed for {label}: {type(exc).__name__}: {exc}")


def engine_from_args(
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
    engine: Engine | None = None,
    wait_workers: float | None = None,
    processes: bool = False,
) -> Engine:
    """The engine to use: the one given, or a new one from the usual options."""
    if engine is not None:
        return engine
    return Engine(
        workers=workers,
        scheduler=scheduler,
        synchronous=synchronous,
        quiet=quiet,
        wait_workers=wait_workers,
        processes=processes,
    )


@contextmanager
def owned_engine(
    engine: Engine | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
    wait_workers: float | None = None,
    processes: bool = False,
) -> Iterator[Engine]:
    """The engine to run a pipeline on, closed on exit only when this made it.

    Parameters
    ----------
    engine
        An engine the caller owns: used as it is and left open.
    workers, scheduler, synchronous, quiet, wait_workers, processes
        Options of the new :class:`Engine` made when ``engine`` is ``None``.

    Yields
    ------
    Engine
        ``engine``, or the new one (closed when the ``with`` block ends, also on an error).
    """
    eng = engine_from_args(workers, scheduler, synchronous, quiet, engine, wait_workers, processes)
    try:
        yield eng
    finally:
        if engine is None:
            eng.close()


def iter_chunks(seq: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    chunk: list[Any] = []
    for x in seq:
        chunk.append(x)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
