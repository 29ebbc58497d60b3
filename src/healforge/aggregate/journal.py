"""Which input files a streaming state already holds, so that ``accumulate`` can be rerun.

``accumulate --state S`` updates ``S`` in place: after a kill right after the new state was
saved, a rerun with the same inputs would count them twice. The state therefore records a
fingerprint of every input file it absorbed (local files: resolved path, size and modification
time; a rewritten file is a new input); a rerun skips the inputs the state already holds and
answers "already complete" when there are none left. Inputs without a fingerprint (tables,
URLs) are always accumulated, as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from healforge.io.storage import is_local

JOURNAL_KEY = "absorbed_inputs"


def fingerprint(source) -> str | None:
    """A short digest naming one version of a source's local file, or ``None``."""
    path = getattr(source, "path", None)
    if not path or not isinstance(path, str | os.PathLike) or not is_local(path):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def absorbed(state) -> set[str]:
    """Fingerprints of the inputs a state holds (empty for a state without a journal)."""
    return set(state.extra.get(JOURNAL_KEY, ())) if state is not None else set()


def split_new(sources: Sequence, held: set[str]) -> tuple[list, list, list[str]]:
    """``(new sources, skipped sources, fingerprints of the new ones)``."""
    new, skipped, prints = [], [], []
    for s in sources:
        f = fingerprint(s)
        if f is not None and f in held:
            skipped.append(s)
        else:
            new.append(s)
            if f is not None:
                prints.append(f)
    return new, skipped, prints
