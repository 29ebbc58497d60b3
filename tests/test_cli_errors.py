"""User errors on the command line: one line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from healforge import cli

MISSING = "/nonexistent/healforge-missing"

# every subcommand with a path that does not exist where it reads (demo: an output it cannot create)
MISSING_PATH_ARGS = {
    "import": ["import", MISSING, "-o", "{tmp}/out", "-q"],
    "append": ["append", MISSING, "{tmp}/in.parquet", "-q"],
    "compact": ["compact", MISSING, "-q"],
    "increment": ["increment", MISSING, "--objects", "{tmp}/in.parquet", "--on", "id", "-q"],
    "delete": ["delete", MISSING, "--ids", "{tmp}/ids.txt", "--on", "id", "-q"],
    "info": ["info", MISSING],
    "collection": ["collection", MISSING],
    "validate": ["validate", MISSING],
    "margin": ["margin", MISSING, "-o", "{tmp}/m", "--radius", "5", "-q"],
    "index": ["index", MISSING, "--column", "id", "-o", "{tmp}/ix", "-q"],
    "nest": ["nest", MISSING, MISSING + "2", "-o", "{tmp}/n", "--on", "id", "--as", "src", "-q"],
    "sidecar": ["sidecar", MISSING, "-o", "{tmp}/s.parquet", "--order", "5", "--lon", "ra", "--lat", "dec", "-q"],
    "aggregate": ["aggregate", MISSING, "-o", "{tmp}/m.parquet", "--order", "5", "--lon", "ra", "--lat", "dec",
                  "--columns", "mag", "-q"],
    "accumulate": ["accumulate", MISSING, "--state", "{tmp}/st.parquet", "--order", "5", "--lon", "ra",
                   "--lat", "dec", "--columns", "mag", "-q"],
    "merge-states": ["merge-states", MISSING, "-o", "{tmp}/x.parquet"],
    "finalize": ["finalize", MISSING + ".parquet", "-o", "{tmp}/x.zarr"],
    "plot": ["plot", MISSING + ".zarr", "--var", "x", "-o", "{tmp}/p.png"],
    "export": ["export", MISSING + ".zarr", "-o", "{tmp}/x.parquet"],
    "report": ["report", MISSING, "-o", "{tmp}/r.html"],
    "run": ["run", MISSING + ".yaml"],
    "demo": ["demo", MISSING, "-q"],
}  # fmt: skip


def subcommands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_every_subcommand_is_covered():
    assert sorted(MISSING_PATH_ARGS) == subcommands()


class Result:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def cli_run(capfd):
    """``healforge ARGS`` in this process (fast); returns the exit code and everything on stderr."""

    def run(*args):
        capfd.readouterr()
        code = cli.main([str(a) for a in args])
        return Result(code, capfd.readouterr().err)

    return run


def assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def small_input(tmp_path):
    pq.write_table(pa.table({"ra": np.arange(10.0), "dec": np.zeros(10), "mag": np.ones(10)}),
                   tmp_path / "in.parquet")  # fmt: skip
    return tmp_path / "in.parquet"


@pytest.mark.parametrize("command", sorted(MISSING_PATH_ARGS))
def test_missing_path(tmp_path, small_input, command, cli_run):
    if command == "demo":
        # demo creates its folder: a path under an existing file cannot be created
        (tmp_path / "afile").write_text("x")
        args = ["demo", str(tmp_path / "afile" / "out"), "-q"]
        needle = str(tmp_path / "afile")
    else:
        args = [a.format(tmp=tmp_path) for a in MISSING_PATH_ARGS[command]]
        needle = MISSING
    line = assert_one_line_error(cli_run(*args), needle)
    assert line.startswith(f"healforge {command}: error: ")


@pytest.mark.parametrize(
    "command",
    ["info", "validate", "margin", "index", "append", "compact", "nest", "increment", "delete", "collection"],
)
def test_directory_that_is_not_a_catalog(tmp_path, small_input, command, cli_run):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a catalog")
    args = {
        "info": ["info", folder],
        "validate": ["validate", folder],
        "margin": ["margin", folder, "-o", tmp_path / "m", "--radius", "5", "-q"],
        "index": ["index", folder, "--column", "id", "-o", tmp_path / "ix", "-q"],
        "append": ["append", folder, small_input, "-q"],
        "compact": ["compact", folder, "-q"],
        "increment": ["increment", folder, "--objects", small_input, "--on", "id", "-q"],
        "delete": ["delete", folder, "--ids", small_input, "--on", "id", "-q"],
        "nest": ["nest", folder, folder, "-o", tmp_path / "n", "--on", "id", "--as", "s", "-q"],
        "collection": ["collection", folder],
    }[command]
    assert_one_line_error(cli_run(*args), str(folder), "not a HATS catalog")


def test_subprocess_missing_input(tmp_path):
    proc = run_cli("import", MISSING, "-o", tmp_path / "out", check=False)
    assert_one_line_error(proc, MISSING, "input not found")
    assert not (tmp_path / "out").exists()


def test_bad_order_and_bad_options(tmp_path, small_input, cli_run):
    proc = cli_run("import", small_input, "-o", tmp_path / "c", "--highest-order", "40", "-q")
    assert_one_line_error(proc, "order", "40")
    proc = cli_run("sidecar", small_input, "-o", tmp_path / "s.parquet", "--order", "30", "--lon", "ra",
                   "--lat", "dec", "-q")  # fmt: skip
    assert_one_line_error(proc, "order", "30")
    proc = cli_run("import", small_input, "-o", tmp_path / "c", "--max-bytes", "lots", "-q")
    assert_one_line_error(proc, "'lots'")
    proc = cli_run("import", small_input, "-o", tmp_path / "c", "--dtype", "mag", "-q")
    assert_one_line_error(proc, "COLUMN=TYPE")
    proc = cli_run("margin", tmp_path, "-o", tmp_path / "m", "--radius", "-1", "-q")
    assert_one_line_error(proc)
    assert not (tmp_path / "c").exists()


@pytest.mark.slow
def test_corrupt_file_in_a_dask_worker(tmp_path, small_input):
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1" + bytes(200))
    proc = run_cli("import", small_input, corrupt, "-o", tmp_path / "c", "--workers", "1", "-q", check=False)
    assert_one_line_error(proc, str(corrupt), "parquet")
    text = tmp_path / "notes.csv"
    text.write_text("ra,dec\n1,2\n3\n")
    proc = run_cli(
        "import", text, "-o", tmp_path / "c2", "-q", "--synchronous", check=False
    )  # in a subprocess too
    assert_one_line_error(proc, str(text), "CSV parse error")


def test_last_line_of_defence(monkeypatch, capsys):
    import json

    from healforge.engine import TaskError

    assert cli.user_error_message(FileNotFoundError(2, "No such file or directory", "/x/y")) == (
        "No such file or directory: /x/y"
    )
    try:
        json.loads("{bad")
    except json.JSONDecodeError as exc:
        assert cli.user_error_message(exc).startswith("invalid JSON")
    try:
        raise TaskError("Mapping failed for /a.parquet: PermissionError: denied") from PermissionError(
            13, "Permission denied", "/a.parquet"
        )
    except TaskError as exc:
        assert cli.user_error_message(exc) == "Mapping failed for /a.parquet: Permission denied: /a.parquet"
    assert cli.user_error_message(RuntimeError("internal")) is None
    assert cli.user_error_message(KeyError("k")) is None

    # a bug keeps its traceback and says it is one
    def broken(args):
        raise KeyError("oops")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    info = next(a for a in parser._actions if a.dest == "command").choices["info"]
    info.set_defaults(func=broken)
    assert cli.main(["info", "x"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and "a bug in healforge" in err


CORRUPT_ARGS = {
    "import": ["import", "{bad}", "-o", "{tmp}/out", "-q", "--synchronous"],
    "sidecar": ["sidecar", "{bad}", "-o", "{tmp}/s.parquet", "--order", "5", "--lon", "ra", "--lat", "dec", "-q",
                "--synchronous"],
    "aggregate": ["aggregate", "{good}", "-o", "{tmp}/m.parquet", "--sidecar", "{bad}", "--columns", "mag", "-q"],
    "accumulate": ["accumulate", "{good}", "--state", "{bad}", "--order", "3", "--lon", "ra", "--lat", "dec",
                   "--columns", "mag", "-q"],
    "merge-states": ["merge-states", "{bad}", "-o", "{tmp}/x.parquet"],
    "finalize": ["finalize", "{bad}", "-o", "{tmp}/x.zarr"],
    "plot": ["plot", "{bad}", "--var", "x", "-o", "{tmp}/p.png"],
    "export": ["export", "{bad}", "-o", "{tmp}/x.zarr"],
    "run": ["run", "{bad}"],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(CORRUPT_ARGS))
def test_corrupt_file(tmp_path, small_input, command, cli_run):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + bytes(range(200)))
    args = [a.format(tmp=tmp_path, bad=bad, good=small_input) for a in CORRUPT_ARGS[command]]
    assert_one_line_error(cli_run(*args), "bad.parquet")


def test_incomplete_catalog(tmp_path, small_input, cli_run):
    assert cli_run("import", small_input, "-o", tmp_path / "cat", "-q", "--synchronous").returncode == 0
    (tmp_path / "cat" / "dataset" / "_common_metadata").unlink()
    assert_one_line_error(cli_run("info", tmp_path / "cat"), str(tmp_path / "cat"), "_common_metadata")


def test_every_subcommand_help_ends_with_examples_that_parse():
    import argparse
    import shlex

    from healforge.cli import build_parser
    from healforge.commands.examples import EXAMPLES

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(EXAMPLES) == set(sub.choices)  # every subcommand has examples
    for name, p in sub.choices.items():
        text = p.format_help()
        assert text.rstrip().splitlines()[-1].strip().startswith(f"healforge {name}"), name
        assert "examples:" in text
        for _, command in EXAMPLES[name]:
            argv = shlex.split(command)
            assert argv[:2] == ["healforge", name]
            args = parser.parse_args(argv[1:])  # runnable as written: every option exists
            assert args.command == name
