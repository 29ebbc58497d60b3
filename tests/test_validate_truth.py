"""A truthful ``validate`` (issue 14, item 5): damaged catalogs made by hand fail, each with its
one-line reason; an intact catalog passes."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.catalog.derived.collection import resolve_catalog
from healforge.hats import layout


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A catalog with single-file pixels and one with directory pixels (after an append)."""
    tmp = tmp_path_factory.mktemp("validate")
    ra, dec = make_points("clustered", 2_000, seed=11)
    pq.write_table(survey_table(ra, dec, 0, 11), tmp / "a.parquet")
    ra, dec = make_points("clustered", 400, seed=12)
    pq.write_table(survey_table(ra, dec, 10_000, 12), tmp / "b.parquet")
    healforge.import_catalog(
        [tmp / "a.parquet"], tmp / "single", threshold=500, highest_order=7, synchronous=True, quiet=True
    )
    shutil.copytree(tmp / "single", tmp / "dirs")
    healforge.append(tmp / "dirs", [tmp / "b.parquet"], "b1", synchronous=True, quiet=True)
    return tmp


def _copy(pristine, which, tmp_path):
    target = tmp_path / which
    shutil.copytree(pristine / which, target)
    return target


def _validate(cat) -> list[str]:
    """The problems ``healforge validate`` prints (and checks its exit status)."""
    proc = run_cli("validate", cat, check=False)
    if proc.returncode == 0:
        assert ": valid " in proc.stdout
        return []
    assert proc.returncode == 1, proc.stderr
    problems = [line.strip()[2:] for line in proc.stderr.splitlines() if line.strip().startswith("- ")]
    # a collection's problems are prefixed with the member's name
    prefix = f"{resolve_catalog(cat).name}: "
    return [p.removeprefix(prefix) for p in problems]


def _dir_pixel(cat):
    """A directory pixel of the catalog's current version (the append made it a collection)."""
    return next(p for p in sorted((_dataset(cat)).glob("Norder=*/Dir=*/Npix=*")) if p.is_dir())


def _dataset(cat):
    return resolve_catalog(cat) / "dataset"


def test_intact_catalogs_pass(pristine):
    assert _validate(pristine / "single") == []
    report = healforge.validate_catalog(pristine / "dirs", id_column="id")
    assert report.ok and report.rows == 2_400


def test_unknown_id_column_is_one_line_naming_the_columns(pristine):
    for cat in ("single", "dirs"):
        proc = run_cli("validate", pristine / cat, "--id", "WRONG", check=False)
        assert proc.returncode == 1
        lines = [line for line in proc.stderr.splitlines() if line.strip().startswith("- ")]
        assert len(lines) == 1, proc.stderr
        assert "'WRONG' is not in the catalog; its columns: id, ra, dec, mag, flag, name" in lines[0]


def test_legacy_properties_with_rows_outside_their_pixel(pristine, tmp_path):
    cat = _copy(pristine, "single", tmp_path)
    (cat / "hats.properties").unlink()
    assert (cat / "properties").is_file()
    files = layout.list_data_files(cat)
    a, b = files[0], files[-1]
    ta, tb = pq.read_table(a), pq.read_table(b)
    moved = pa.concat_tables([ta, tb.slice(0, 1)])
    moved = moved.take(pa.compute.sort_indices(moved, sort_keys=[("_healpix_29", "ascending")]))
    pq.write_table(moved.replace_schema_metadata(ta.schema.metadata), a)
    pq.write_table(tb.slice(1), b)
    problems = _validate(cat)
    rel = "/".join(a.parts[len(_dataset(cat).parts) :])
    assert any(p.startswith(f"{rel}: 1 row(s) outside pixel") for p in problems), problems


@pytest.mark.slow
def test_truncated_parquet_file(pristine, tmp_path):
    cat = _copy(pristine, "single", tmp_path)
    f = layout.list_data_files(cat)[3]
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    problems = _validate(cat)
    rel = "/".join(f.parts[len(_dataset(cat).parts) :])
    assert any(p.startswith(f"{rel}: unreadable parquet file") for p in problems), problems


@pytest.mark.slow
def test_damaged_page_found_by_reading_every_column(pristine, tmp_path):
    cat = _copy(pristine, "single", tmp_path)
    f = layout.list_data_files(cat)[2]
    table = pq.read_table(f)
    # the 'name' column chunk overwritten with garbage; the footer stays valid
    meta = pq.ParquetFile(f).metadata
    col = meta.row_group(0).column(table.schema.get_field_index("name"))
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(f.read_bytes())
    data[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    f.write_bytes(bytes(data))
    problems = _validate(cat)
    rel = "/".join(f.parts[len(_dataset(cat).parts) :])
    assert any(p.startswith(f"{rel}: unreadable parquet file") for p in problems), problems


def test_hidden_file_in_a_pixel_directory(pristine, tmp_path):
    cat = _copy(pristine, "dirs", tmp_path)
    pixel = _dir_pixel(cat)
    src = next(pixel.glob("*.parquet"))
    shutil.move(src, pixel / f".{src.name}")  # rows counted in hats_nrows, invisible to readers
    problems = _validate(cat)
    rel = "/".join((pixel / f".{src.name}").parts[len(_dataset(cat).parts) :])
    assert f"dataset/{rel}: readers skip it (the name '.{src.name}' starts with '.')" in problems, problems
    assert any(p.startswith("hats_nrows is 2400 but the data files hold") for p in problems), problems


def test_leftover_temporary_file_beside_pixels(pristine, tmp_path):
    cat = _copy(pristine, "single", tmp_path)
    f = layout.list_data_files(cat)[0]
    shutil.copy(f, f.with_name(f".{f.name}.0123.tmp"))
    problems = _validate(cat)
    assert len(problems) == 1 and problems[0].endswith(
        f".{f.name}.0123.tmp: readers skip it (the name '.{f.name}.0123.tmp' starts with '.')"
    ), problems


@pytest.mark.parametrize("where", ["extra.parquet", "sub/extra.parquet", "notes.txt"])
@pytest.mark.slow
def test_extra_file_in_a_pixel_directory(pristine, tmp_path, where):
    cat = _copy(pristine, "dirs", tmp_path)
    pixel = _dir_pixel(cat)
    extra = pixel / where
    extra.parent.mkdir(exist_ok=True)
    shutil.copy(next(pixel.glob("*.parquet")), extra)
    problems = _validate(cat)
    assert problems, "an extra file must fail validation"
    if where == "extra.parquet":  # lsdb reads these rows too: more rows than hats_nrows
        assert any(p.startswith("hats_nrows is 2400 but the data files hold") for p in problems), problems
    else:
        rel = "/".join(extra.parts[len(_dataset(cat).parts) :])
        assert any(p.startswith(f"dataset/{rel}: ") for p in problems), problems


def test_wrong_hats_nrows(pristine, tmp_path):
    cat = _copy(pristine, "single", tmp_path)
    for name in ("hats.properties", "properties"):
        path = cat / name
        path.write_text(path.read_text().replace("hats_nrows=2000", "hats_nrows=1999"))
    problems = _validate(cat)
    assert "hats_nrows is 1999 but the data files hold 2000 rows" in problems, problems
    assert np.all([p.count("\n") == 0 for p in problems])


@pytest.mark.slow
def test_hidden_file_in_a_margin(pristine, tmp_path):
    cat = _copy(pristine, "single", tmp_path)
    margin = tmp_path / "single_margin"
    healforge.margin(cat, margin, 600, synchronous=True, quiet=True)
    assert _validate(margin) == []
    f = layout.list_data_files(margin)[0]
    shutil.copy(f, f.with_name(f"_{f.name}"))
    problems = _validate(margin)
    rel = "/".join(f.with_name(f"_{f.name}").parts[len((margin / "dataset").parts) :])
    assert problems == [f"dataset/{rel}: readers skip it (the name '_{f.name}' starts with '_')"], problems
