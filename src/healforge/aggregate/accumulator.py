"""Streaming batch by batch at the cost of one call: :class:`Accumulator`.

``accumulate(batch, state=state)`` merges the whole state again for every batch, so adding B
batches one call at a time merges about B / 2 states' worth of centroids per batch. An
accumulator keeps the batch states in levels instead: eight states of one level merge into one
state of the next, which is the tree :func:`~healforge.aggregate.core.merge_tree` builds for
one call with every batch. The state it gives is that call's state, number for number.
"""

from __future__ import annotations

import os
from typing import Any

from healforge.aggregate import journal
from healforge.aggregate.core import MERGE_FAN_IN
from healforge.aggregate.state import State, merge_states
from healforge.errors import OptionError


class Accumulator:
    """Adds inputs batch by batch to a streaming state.

    Parameters
    ----------
    columns
        Value columns (or ``name=expression``), as for :func:`healforge.accumulate`.
    state
        A state (or state file) to add to; its order is used when ``order`` is not given.
    **options
        The other keywords of :func:`healforge.accumulate` (``order``, ``lon``, ``lat``,
        ``geometry``, ``mode``, ``weight``, ``filter``, ...), the same for every batch.

    Examples
    --------
    >>> acc = Accumulator(["mag"], order=6, lon="ra", lat="dec")  # doctest: +SKIP
    >>> for table in batches:  # doctest: +SKIP
    ...     acc.add(table)
    >>> acc.state.save("state.parquet")  # doctest: +SKIP
    """

    def __init__(self, columns, *, state: State | str | os.PathLike | None = None, **options: Any):
        for key in ("inputs", "output"):
            if key in options:
                raise OptionError(f"{key!r} is not an Accumulator option (give inputs to add())")
        if state is not None and not isinstance(state, State):
            state = State.load(state, options.get("storage_options"))
        if options.get("order") is None:
            if state is None:
                raise OptionError("give an order (or an existing state to add to)")
            options["order"] = state.order
        self.columns = columns
        self.options = options
        self._levels: list[list[State]] = [[state]] if state is not None else [[]]
        self._state: State | None = state

    def add(self, inputs) -> State:
        """Accumulate ``inputs`` (a table, a file, a list of them: anything
        :func:`healforge.accumulate` takes); returns their state alone."""
        from healforge.aggregate.api import accumulate

        part = accumulate(inputs, self.columns, **self.options)
        self._push(part, 0)
        self._state = None
        return part

    def _push(self, state: State, level: int) -> None:
        if level == len(self._levels):
            self._levels.append([])
        self._levels[level].append(state)
        if len(self._levels[level]) == MERGE_FAN_IN:
            merged = merge_states(self._levels[level])
            self._levels[level] = []
            self._push(merged, level + 1)

    @property
    def state(self) -> State:
        """Everything added so far, merged (kept until the next :meth:`add`)."""
        if self._state is None:
            carry = None
            for pending in self._levels:
                group = pending + ([carry] if carry is not None else [])
                if group:
                    carry = group[0] if len(group) == 1 else merge_states(group)
            if carry is None:
                raise OptionError("nothing accumulated yet: add() inputs first")
            absorbed = set().union(*(journal.absorbed(s) for level in self._levels for s in level))
            if absorbed:
                carry.annotate(**{journal.JOURNAL_KEY: sorted(absorbed)})
            self._state = carry
        return self._state

    def save(self, path: str | os.PathLike, storage_options: dict | None = None) -> str:
        """Write :attr:`state` to a state file (atomically)."""
        return self.state.save(path, storage_options or self.options.get("storage_options"))
