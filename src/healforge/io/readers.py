"""Streaming table readers (CSV, Parquet, FITS, HDF5, ECSV) yielding pyarrow tables.

Every reader takes a path or URL (through fsspec), an optional column projection and a batch size,
and yields ``(first_row, table)`` pairs so that an input larger than memory is read in bounded
memory and any row can be named in an error message by its 0-based index in the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from healforge.errors import BadInputError
from healforge.io.columns import check_columns, to_arrow
from healforge.io.fills import annotated
from healforge.io.formats import detect_format, get_format

DEFAULT_BATCH_ROWS = 1_000_000
CSV_BLOCK_BYTES = 64 << 20  # pyarrow infers CSV column types from the first block


def _open(path: str, storage_options: dict | None = None):
    fs, fs_path = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return fs, fs_path


def _check_exists_and_nonempty(path: str, storage_options: dict | None = None) -> None:
    fs, fs_path = _open(path, storage_options)
    try:
        info = fs.info(fs_path)
    except FileNotFoundError:
        raise BadInputError("input file not found", path=path) from None
    if info.get("type") == "directory":
        raise BadInputError("input path is a directory, not a file", path=path)
    if info.get("size") == 0:
        raise BadInputError("input file is empty (0 bytes)", path=path)


def read_schema(
    path: str, fmt: str | None = None, storage_options: dict | None = None, **options
) -> pa.Schema:
    """Schema (all columns) of an input file, without reading its data."""
    fmt = detect_format(path, fmt)
    _check_exists_and_nonempty(path, storage_options)
    try:
        if fmt in ("parquet", "geoparquet"):
            fs, fs_path = _open(path, storage_options)
            with fs.open(fs_path, "rb") as f:
                return _strip_pandas(pq.read_schema(f))
        for _, table in iter_batches(
            path, fmt=fmt, batch_rows=1024, storage_options=storage_options, **options
        ):
            return table.schema
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"cannot read input file: {exc}", path=path) from exc
    raise BadInputError("input file has no rows", path=path)


def iter_batches(
    path: str,
    columns: Sequence[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    fmt: str | None = None,
    storage_options: dict | None = None,
    **options,
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(first_row, table)`` batches of an input file.

    Parameters
    ----------
    path
        Local path or fsspec URL.
    columns
        Columns to read (all when ``None``); a missing one is a :class:`BadInputError` listing
        the columns the file has.
    batch_rows
        Upper bound on rows per batch (CSV batches follow the parser's block size instead).
    fmt
        A format of the registry (:mod:`healforge.io.formats`: ``csv``, ``parquet``,
        ``geoparquet``, ``fits``, ``hdf5``, ``ecsv`` and any registered since); guessed from
        the file suffix when omitted.
    options
        Format options: ``hdu`` (FITS extension), ``group`` (HDF5 group holding 1-D column
        datasets), ``delimiter`` (CSV).
    storage_options
        fsspec options for a URL (credentials, ``client_kwargs={"endpoint_url": ...}``).

    Raises
    ------
    BadInputError
        For a missing, empty, unreadable or column-less file. A file with no rows is an error:
        importing nothing from a file is never silent.
    """
    fmt = detect_format(path, fmt)
    _check_exists_and_nonempty(path, storage_options)
    reader = get_format(fmt).load()
    total = 0
    gen = reader(
        path, list(columns) if columns else None, batch_rows, storage_options=storage_options, **options
    )
    while True:
        try:
            table = next(gen)
        except StopIteration:
            break
        except BadInputError:
            raise
        except Exception as exc:
            raise BadInputError(f"cannot read {fmt} input after row {total}: {exc}", path=path) from exc
        if table.num_rows:
            yield total, table
            total += table.num_rows
    if total == 0:
        raise BadInputError("input file has no rows", path=path)


def _strip_pandas(schema: pa.Schema) -> pa.Schema:
    meta = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    return schema.with_metadata(meta or None)


def iter_parquet(path, columns, batch_rows, storage_options=None, **_):
    fs, fs_path = _open(path, storage_options)
    with fs.open(fs_path, "rb") as f:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:
            raise BadInputError(f"not a readable parquet file: {exc}", path=path) from exc
        schema = _strip_pandas(pf.schema_arrow)
        check_columns(path, schema.names, columns)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, use_pandas_metadata=False):
            table = pa.Table.from_batches([batch])
            yield table.replace_schema_metadata(None)


def iter_csv(path, columns, batch_rows, delimiter=None, storage_options=None, **_):
    fs, fs_path = _open(path, storage_options)
    compression = "gzip" if str(path).endswith(".gz") else None
    delimiter = delimiter or ("\t" if str(path).endswith(".tsv") else ",")
    with fs.open(fs_path, "rb", compression=compression) as f:
        parse = pacsv.ParseOptions(delimiter=delimiter)
        read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
        # Read the header first so that a missing column is reported with the full list.
        try:
            reader = pacsv.open_csv(f, read_options=read, parse_options=parse)
        except pa.ArrowInvalid as exc:
            raise csv_error(path, exc, delimiter, storage_options) from exc
        names = reader.schema.names
        check_columns(path, names, columns)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                raise csv_error(path, exc, delimiter, storage_options, names) from exc
            table = pa.Table.from_batches([batch])
            if columns:
                table = table.select(columns)
            for start in range(0, table.num_rows, batch_rows):
                yield table.slice(start, batch_rows)


_CSV_CONVERSION = re.compile(
    r"In CSV column #(\d+): CSV conversion error to (\w+): invalid value '(.*)'$", re.S
)


def csv_error(
    path: str,
    exc: Exception,
    delimiter: str,
    storage_options: dict | None = None,
    names: Sequence[str] | None = None,
) -> BadInputError:
    """A pyarrow CSV error as a :class:`BadInputError` naming the line (1-based, header included)
    and the row (0-based data row) where it happened.

    pyarrow's streaming reader knows neither, so the file is scanned again with Python's ``csv``
    module (an error path only): for a parse error, the first record whose field count differs
    from the header's; for a conversion error, the first value equal to the one pyarrow rejects.
    """
    text = str(exc).strip()
    conversion = _CSV_CONVERSION.match(text)
    if conversion and names is not None:
        k, target, value = int(conversion.group(1)), conversion.group(2), conversion.group(3)
        column = names[k] if k < len(names) else f"#{k}"
        found = _scan_csv(path, delimiter, storage_options, lambda rec: k < len(rec) and rec[k] == value)
        where = f"line {found[0]}: " if found else ""
        return BadInputError(
            f"{where}value is not a {target} (the column's type was inferred from the first rows; "
            "fix the value or give the type with --dtype)",
            path=path,
            column=column,
            row=found[1] if found else None,
            value=value,
        )
    found = _scan_csv(path, delimiter, storage_options, None)
    if found is None:
        return BadInputError(f"cannot parse CSV: {text}", path=path)
    line, row, fields, expected = found
    return BadInputError(
        f"CSV parse error at line {line} (row {row}): expected {expected} fields, got {len(fields)}: "
        f"{delimiter.join(fields)[:200]}",
        path=path,
    )


def _scan_csv(path: str, delimiter: str, storage_options: dict | None, match) -> tuple | None:
    """``(line, row, fields, header_width)`` of the first data record that ``match`` accepts
    (``None``: whose field count differs from the header's), or ``None``. Each line is one record,
    as pyarrow reads it (no newlines inside quoted values); ``line`` is 1-based, ``row`` the
    0-based index among the data rows (blank lines skipped, as pyarrow does)."""
    import csv
    import io

    fs, fs_path = _open(path, storage_options)
    compression = "gzip" if str(path).endswith(".gz") else None
    with fs.open(fs_path, "rb", compression=compression) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        width, row = None, 0
        for line, raw_line in enumerate(text, start=1):
            stripped = raw_line.rstrip("\r\n")
            if not stripped:
                continue
            fields = next(csv.reader([stripped], delimiter=delimiter), [])
            if width is None:
                width = len(fields)
                continue
            if match(fields) if match else len(fields) != width:
                return line, row, fields, width
            row += 1
    return None


def iter_fits(path, columns, batch_rows, hdu=None, storage_options=None, **_):
    from astropy.io import fits

    fs, fs_path = _open(path, storage_options)
    local = fs.protocol in ("file", ("file", "local")) or "file" in np.atleast_1d(fs.protocol)
    target = fs_path if local else fs.open(fs_path, "rb")
    with fits.open(target, memmap=local, lazy_load_hdus=True) as hdul:
        ext = hdu
        if ext is None:
            ext = next(
                (i for i, h in enumerate(hdul) if isinstance(h, fits.BinTableHDU | fits.TableHDU)), None
            )
            if ext is None:
                raise BadInputError("FITS file has no table extension", path=path)
        data = hdul[ext].data
        names = list(hdul[ext].columns.names)
        check_columns(path, names, columns)
        wanted = columns or names
        n = 0 if data is None else len(data)
        cols = hdul[ext].columns
        fills = {c: [float(cols[c].null)] for c in wanted if isinstance(cols[c].null, int | np.integer)}
        for start in range(0, n, batch_rows):
            chunk = data[start : start + batch_rows]
            yield annotated({c: to_arrow(chunk.field(c)) for c in wanted}, fills)  # TNULL as fills


def _ecsv_column(col) -> pa.Array:
    """One astropy column as an arrow array of the same type; masked entries become nulls."""
    arr = np.asarray(col)
    mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else None
    mask = mask if mask is not None and mask.ndim == 1 and mask.any() else None
    if arr.ndim > 1:
        return pa.array(list(arr), mask=mask)
    if arr.dtype.kind in "US":
        text = np.char.decode(arr, "utf-8") if arr.dtype.kind == "S" else arr
        return pa.array(text.astype(object), type=pa.string(), mask=mask)
    return pa.array(arr.astype(arr.dtype.newbyteorder("="), copy=False), mask=mask)


def iter_ecsv(path, columns, batch_rows, storage_options=None, **_):
    """ECSV with astropy (column types from the ECSV header); read whole, yielded in batches."""
    from astropy.table import Table

    fs, fs_path = _open(path, storage_options)
    compression = "gzip" if str(path).endswith(".gz") else None
    with fs.open(fs_path, "rb", compression=compression) as f:
        table = Table.read(f, format="ascii.ecsv")
    check_columns(path, table.colnames, columns)
    wanted = columns or table.colnames
    arrays = {c: _ecsv_column(table[c]) for c in wanted}
    out = pa.table(arrays)
    for start in range(0, out.num_rows, batch_rows):
        yield out.slice(start, batch_rows)


def expand_inputs(paths: Sequence[str | os.PathLike], storage_options: dict | None = None) -> list[str]:
    """Expand directories and glob patterns (local or URLs) into a de-duplicated list of files,
    sorted within each pattern, in the order of ``paths``."""
    out: list[str] = []
    from healforge.io.storage import as_path

    for p in paths:
        p = str(p)
        as_path(p)  # an unknown protocol or a missing fsspec backend is a StorageError
        fs, fs_path = fsspec.core.url_to_fs(p, **(storage_options or {}))
        proto = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
        prefix = "" if proto in ("file", "local") else f"{proto}://"
        if any(ch in fs_path for ch in "*?["):
            matches = sorted(fs.glob(fs_path))
        elif fs.isdir(fs_path):
            matches = sorted(f for f in fs.find(fs_path) if not os.path.basename(f).startswith((".", "_")))
        elif fs.exists(fs_path):
            matches = [fs_path]
        else:
            raise BadInputError("input not found", path=p)
        if not matches:
            raise BadInputError("no input files match", path=p)
        out.extend(prefix + m for m in matches)
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]
