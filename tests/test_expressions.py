"""The expression language: semantics against numpy, errors with positions, cell expressions, and
known Python-sandbox escapes refused through every place that takes an expression."""

import os
import pickle
import time

import numpy as np
import pandas as pd
import pytest
import yaml

import healforge
from conftest import run_cli
from healforge.cli import main
from healforge.expressions import (
    FUNCTIONS,
    ExpressionError,
    parse_cell,
    parse_column_spec,
    parse_filter,
    parse_row,
)
from healforge.run import ConfigError
from healforge.run.runner import run_pipeline

RNG = np.random.default_rng(5)
COLS = {
    "a": RNG.uniform(0.1, 3.0, 50),
    "b": RNG.normal(0, 2, 50),
    "k": RNG.integers(0, 4, 50),
    "f": RNG.uniform(-1, 1, 50).astype(np.float32),
}
A, B, K = COLS["a"], COLS["b"], COLS["k"]


@pytest.mark.parametrize(
    ("src", "expected"),
    [
        ("a + b * 2 - a / b", A + B * 2 - A / B),
        ("a ** 2 // 1.5 % 0.7", A**2 // 1.5 % 0.7),
        ("-a ** -2", -(A**-2.0)),
        ("k ** 2", K.astype(float) ** 2),  # integer powers are computed in float64
        ("1 / sqrt(a) + np.log10(a) - numpy.exp(-b)", 1 / np.sqrt(A) + np.log10(A) - np.exp(-B)),
        ("arctan2(b, a) + hypot(a, b) * pi - e", np.arctan2(B, A) + np.hypot(A, B) * np.pi - np.e),
        (
            "np.clip(b, -1, 1) + np.round(a, 1) + round(b, decimals=2)",
            np.clip(B, -1, 1) + np.round(A, 1) + np.round(B, 2),
        ),
        ("where(b > 0, a, nan)", np.where(B > 0, A, np.nan)),
        ("a if b > 0 else -a", np.where(B > 0, A, -A)),
        (
            "minimum(a, b) + fmax(a, b) + mod(k, 3) + sign(b) + floor(b) + abs(b)",
            np.minimum(A, B) + np.fmax(A, B) + np.mod(K, 3) + np.sign(B) + np.floor(B) + np.abs(B),
        ),
        (
            "nan_to_num(log(b), nan=-1.0, neginf=-9)",
            np.nan_to_num(np.log(np.where(B > 0, B, np.nan)), nan=-1, neginf=-9),
        ),
        ("radians(degrees(a)) + deg2rad(rad2deg(b))", A + B),
        ("f * 2", COLS["f"].astype(np.float64) * 2),  # float32 columns are computed in float64
        ("k & 1", K & 1),
        ("-1 < b <= a", (-1 < B) & (B <= A)),
        ("0 < k < 3 != k", (0 < K) & (K < 3) & (K != 3)),
        ("b > 0 and not a > 2 or k == 3", ((B > 0) & ~(A > 2)) | (K == 3)),
        ("(b > 0) & ~(a > 2) | (k == 3)", ((B > 0) & ~(A > 2)) | (K == 3)),
        ("isnan(log(b)) | isfinite(a)", np.isnan(np.log(np.where(B > 0, B, np.nan))) | np.isfinite(A)),
    ],
)
def test_row_expressions_equal_numpy(src, expected):
    with np.errstate(all="ignore"):
        got = parse_row(src).evaluate(COLS)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    assert got.shape == (50,)


def test_row_expression_names_constants_and_inputs():
    e = parse_row("np.sqrt(a) * pi + where(b > 0, b, nan) + k")
    assert (
        e == parse_row(" np.sqrt(a) * pi + where(b > 0, b, nan) + k") and len({e, parse_row(e.source)}) == 1
    )
    assert parse_filter("k > 0") != parse_row("k > 0")
    assert e.names == frozenset({"a", "b", "k"}) and e.source.startswith("np.sqrt")
    # a constant broadcasts to n_rows, or to the length of the columns
    np.testing.assert_array_equal(parse_row("2 * pi").evaluate({}, n_rows=3), [2 * np.pi] * 3)
    assert parse_row("1").evaluate(COLS).shape == (50,)
    # 1/0 gives inf like numpy; no Python ZeroDivisionError
    assert parse_row("1 / 0").evaluate({}, n_rows=1)[0] == np.inf
    # a function name is a column where it is not called
    np.testing.assert_array_equal(parse_row("sign + 1").evaluate({"sign": np.array([1, 2])}), [2, 3])
    # pyarrow and pandas columns
    import pyarrow as pa

    cols = {"a": pa.chunked_array([[1.0, 2.0], [None]]), "b": pd.Series([1, 2, 3])}
    np.testing.assert_array_equal(parse_row("a + b").evaluate(cols), [2.0, 4.0, np.nan])
    # multi-line (YAML block) expressions
    assert parse_row("a +\n  b").evaluate(COLS).shape == (50,)
    name, expr = parse_column_spec("ratio = a / b")
    assert name == "ratio" and expr.names == {"a", "b"}
    assert parse_column_spec("a") == ("a", None)
    assert parse_column_spec("flag=k == 1")[1].evaluate(COLS).dtype == bool


def test_filters_must_be_boolean():
    f = parse_filter("k == 0 and isfinite(a)")
    np.testing.assert_array_equal(f.evaluate(COLS), (K == 0) & np.isfinite(A))
    for src in ("a + 1", "sqrt(a)", "3", "-a"):
        with pytest.raises(ExpressionError, match="a filter must give true/false"):
            parse_filter(src)
    with pytest.raises(ExpressionError, match="gives int64 values"):
        parse_filter("k").evaluate(COLS)


@pytest.mark.parametrize(
    ("src", "message", "column", "caret"),
    [
        ("a + open('x')", "function 'open' is not allowed", 5, "^^^^"),
        ("a +* b", "not a valid expression (invalid syntax)", 4, "^"),
        ("a +", "not a valid expression", 4, "^"),
        ("sqrt(a, b)", "sqrt() takes 1 positional argument(s), got 2", 1, "^"),
        ("a.real", "attribute access 'a.real' is not allowed", 1, "^^^^^^"),
        ("a + 'x'", "string literals are not allowed", 5, "^^^"),
        ("a[0]", "subscripting", 1, "^^^^"),
        ("a in b", "comparison In is not allowed", 1, "^"),
        ("a @ b", "operator MatMult is not allowed", 1, "^"),
        ("sqrt(a, out=a)", "keyword 'out' is not allowed for sqrt() (allowed: none)", 13, "^"),
        ("round(a, decimals=b)", "keyword arguments of round() must be numbers", 19, "^"),
        ("clip(a, 0, 1, out=a)", "keyword 'out' is not allowed for clip()", 19, "^"),
        ("where(a > 0)", "where() takes 3 positional argument(s), got 1", 1, "^^^^^^^^^^^^"),
        ("nan_to_num(a, copy=False)", "keyword 'copy' is not allowed for nan_to_num()", 20, "^"),
        ("max(a, b)", "use maximum(a, b)", 1, "^^^"),
        ("a + np", "'np' can only be used as np.NAME", 5, "^^"),
        ("a # comment", "comments (#) are not allowed", 3, "^"),
        ("", "is empty", None, None),
    ],
)
def test_errors_name_expression_position_and_what_is_allowed(src, message, column, caret):
    with pytest.raises(ExpressionError) as info:
        parse_row(src)
    err = info.value
    text = str(err)
    assert message in text, text
    assert repr(src.strip()) in text
    if column is not None:
        assert err.column == column, text
        assert f"(at column {column})" in text
        lines = text.split("\n")
        assert lines[1] == f"    {src}" and lines[2].startswith(" " * (4 + column - 1) + caret), text
    assert isinstance(err, healforge.errors.HealforgeError) and isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == text  # errors cross worker processes


def test_error_positions_on_later_lines_and_unknown_columns():
    with pytest.raises(ExpressionError) as info:
        parse_row("a +\n  b * fopen(a)")
    assert info.value.line == 2 and info.value.column == 7
    assert "(at line 2, column 7)" in str(info.value) and "\n      b * fopen(a)\n          ^^^^^" in str(
        info.value
    )
    with pytest.raises(ExpressionError) as info:
        parse_row("a + bb").evaluate(COLS)
    text = str(info.value)
    assert "unknown column 'bb'" in text and "did you mean 'b'?" in text
    assert "available columns: a, b, k, f" in text and info.value.column == 5
    with pytest.raises(ExpressionError, match="cannot be evaluated"):
        parse_row("a & 1").evaluate(COLS)  # & on floats
    with pytest.raises(ExpressionError, match="gives 50 values for 7 rows"):
        parse_row("a").evaluate(COLS, n_rows=7)


# ---------------------------------------------------------------------------------------------
# cell expressions


def test_cell_expressions_parse_and_share_aggregates():
    c = parse_cell("1 / sqrt(sum(1 / s_li**2)) + np.sum(1 / s_li ** 2) + np.nansum(1/s_li**2)")
    assert [a.key for a in c.aggregates] == ["sum(1 / s_li ** 2)"] and not c.uses_area
    z = parse_cell("1.0 / np.sqrt(np.sum(1.0 / s_li**2))")
    assert [a.key for a in z.aggregates] == ["sum(1.0 / s_li ** 2)"]
    assert z.aggregates[0].row.names == {"s_li"} and z.aggregates[0].func == "sum"
    c = parse_cell("count(h) / area + len(h) + np.max(h) - min(h) + np.var(h) + std(h, ddof=1) + mean(w * h)")
    assert [(a.func, a.key, a.ddof) for a in c.aggregates] == [
        ("count", "count(h)", 0),
        ("max", "max(h)", 0),
        ("min", "min(h)", 0),
        ("var", "var(h)", 0),
        ("std", "std(h, ddof=1)", 1),
        ("mean", "mean(w * h)", 0),
    ]
    assert c.uses_area and c.source.startswith("count(h)")


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("h + 1", "column 'h' is used outside an aggregate; wrap it, e.g. mean(h)"),
        ("sum(max(h))", "aggregates cannot be nested"),
        ("sum(h, w)", "takes one row expression"),
        ("mean(h, ddof=1)", "keyword 'ddof' is not allowed for mean()"),
        ("var(h, ddof=-1)", "ddof must be >= 0"),
        ("var(h, ddof=b)", "must be numbers"),
        ("np.count(h)", "function 'np.count' is not allowed"),
        ("sqrt(2) * area", "needs at least one aggregate"),
        ("sum(h.__class__)", "attribute access"),
        ("sum(np.save('x', h))", "function 'np.save' is not allowed"),
    ],
)
def test_cell_expression_errors(src, message):
    with pytest.raises(ExpressionError) as info:
        parse_cell(src)
    assert message in str(info.value), str(info.value)


def test_cell_expressions_on_numpy_ground_truth():
    rng = np.random.default_rng(11)
    n = 2000
    df = pd.DataFrame(
        {
            "cell": rng.integers(0, 40, n),
            "h": rng.normal(100, 5, n),
            "s": rng.uniform(0.5, 2, n),
            "w": rng.uniform(0, 1, n),
        }
    )
    df.loc[rng.choice(n, 100, replace=False), "h"] = np.nan
    area = rng.uniform(1, 2, 40)
    exprs = {
        "1 / sqrt(sum(1 / s**2))": lambda g: 1 / np.sqrt(np.sum(1 / g.s**2)),
        "sum(w * h) / sum(w * isfinite(h))": lambda g: np.nansum(g.w * g.h) / np.sum(g.w[np.isfinite(g.h)]),
        "max(h) - min(h)": lambda g: np.nanmax(g.h) - np.nanmin(g.h),
        "count(h) / area": None,
        "np.std(h) ** 2 - np.var(h) + var(h, ddof=1)": lambda g: np.nanvar(g.h, ddof=1),
        "mean(h - 100) if count(h) > 40 else nan": lambda g: (
            np.nanmean(g.h - 100) if g.h.notna().sum() > 40 else np.nan
        ),
    }
    groups = df.groupby("cell")
    cells = np.array(sorted(groups.groups))
    for src, truth in exprs.items():
        cell = parse_cell(src)
        values = {}
        for agg in cell.aggregates:
            per = []
            for _, g in groups:
                v = agg.row.evaluate(dict(g.items()))
                v = v[~np.isnan(v)]  # aggregates use the valid (non-NaN) row values
                f = {"sum": np.sum, "count": len, "mean": np.mean, "min": np.min, "max": np.max}.get(agg.func)
                per.append(f(v) if f else getattr(np, agg.func)(v, ddof=agg.ddof))
            values[agg.key] = np.array(per, dtype=np.float64)
        got = cell.evaluate(values, area=area[cells])
        if truth is None:
            expected = groups.h.count().to_numpy() / area[cells]
        else:
            expected = np.array([truth(g) for _, g in groups])
        np.testing.assert_allclose(got, expected, rtol=1e-10, equal_nan=True, err_msg=src)
    with pytest.raises(ExpressionError, match="no values given for aggregate"):
        parse_cell("mean(h)").evaluate({})
    with pytest.raises(ExpressionError, match="no area was given"):
        parse_cell("count(h) / area").evaluate({"count(h)": np.ones(3)})
    np.testing.assert_array_equal(parse_cell("pi + 0 * sum(h)").evaluate({"sum(h)": np.ones(2)}), [np.pi] * 2)


# ---------------------------------------------------------------------------------------------
# sandbox escapes, refused everywhere an expression is accepted

ESCAPES = [
    "v.__class__",
    "v.__class__.__mro__[1].__subclasses__()",
    "(1).__class__.__base__.__subclasses__()",
    "().__class__.__bases__[0]",
    "().__class__.__bases__[0].__subclasses__()",
    "sqrt.__globals__",
    "np.sqrt.__globals__['__builtins__']",
    "__builtins__",
    "__import__('os').system('touch pwned')",
    "np.save('pwned', v)",
    "numpy.savetxt('pwned.txt', v)",
    "np.load('pwned.npy')",
    "np.fromfile('pwned')",
    "np.lib.npyio.save('pwned', v)",
    "np.ctypeslib.load_library('libc', '.')",
    "np.core.multiarray.frombuffer(b'x')",
    "open('pwned', 'w')",
    "v if 1 else open('pwned', 'w')",
    "eval('1')",
    "exec('import os')",
    "getattr(np, 'save')('pwned', v)",
    "globals()",
    "breakpoint()",
    "lambda: 0",
    "(lambda: 0)()",
    "[c for c in (1, 2)]",
    "{k: 1 for k in (1, 2)}",
    "{k for k in (1, 2)}",
    "sqrt(x for x in (1, 2))",
    "(y := 1)",
    "f'{v}'",
    "10**10**10",
    "'pwned'",
    "b'pwned'",
    "sqrt(*v)",
    "sqrt(v, out=v)",
    "where(v > 0, v, 1)[0]",
]


def _refused(text: str) -> bool:
    return ("not allowed" in text or "overflows" in text) and "expression" in text


def _snapshot(*dirs) -> set[str]:
    return {os.path.join(r, f) for d in dirs for r, _, fs in os.walk(d) for f in [*fs, "."]}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An input file, a cwd inside tmp_path, and a check that nothing new appeared."""
    rng = np.random.default_rng(3)
    pd.DataFrame(
        {"ra": rng.uniform(0, 360, 20), "dec": rng.uniform(-80, 80, 20), "v": rng.normal(size=20)}
    ).to_parquet(tmp_path / "in.parquet")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = _snapshot(tmp_path)
    yield tmp_path
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("escape", ESCAPES)
def test_escapes_refused_by_the_language(escape):
    t0 = time.perf_counter()
    for parse in (parse_row, parse_filter, parse_cell, lambda s: parse_cell(f"sum({s})")):
        with pytest.raises(ExpressionError) as info:
            parse(escape)
        assert _refused(str(info.value)) or "outside an aggregate" in str(info.value), str(info.value)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("escape", ESCAPES)
def test_escapes_refused_by_python_api(escape, sandbox):
    src = str(sandbox / "in.parquet")
    pos = {"order": 2, "lon": "ra", "lat": "dec"}
    calls = [
        lambda: healforge.aggregate(src, [f"x={escape}"], ["count"], **pos),
        lambda: healforge.aggregate(src, ["v"], ["wmean"], weight=escape, **pos),
        lambda: healforge.accumulate(src, [f"x={escape}"], **pos),
        lambda: healforge.accumulate(src, ["v"], weight=escape, **pos),
    ]
    for call in calls:
        with pytest.raises(ExpressionError) as info:
            call()
        assert _refused(str(info.value)), str(info.value)


@pytest.mark.parametrize("escape", ESCAPES)
def test_escapes_refused_by_cli(escape, sandbox, capsys):
    src, out, st = sandbox / "in.parquet", sandbox / "m.parquet", sandbox / "s.parquet"
    pos = ["--order", "2", "--lon", "ra", "--lat", "dec", "--synchronous", "-q"]
    commands = [
        ["aggregate", src, "-o", out, *pos, "--columns", f"x={escape}"],
        ["aggregate", src, "-o", out, *pos, "--columns", "v", "--stats", "wmean", "--weight", escape],
        ["accumulate", src, "--state", st, *pos, "--columns", f"x={escape}"],
        ["accumulate", src, "--state", st, *pos, "--columns", "v", "--weight", escape],
    ]
    for cmd in commands:
        assert main([str(c) for c in cmd]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"healforge {cmd[0]}: error: expression") and _refused(err), err


def _pipeline(tmp_path, **change) -> dict:
    cfg = {
        "inputs": [{"paths": [str(tmp_path / "in.parquet")], "columns": ["ra", "dec", "v"]}],
        "filter": "v > -10",
        "coordinates": {"lon": "ra", "lat": "dec"},
        "assignment": {"order": 2},
        "statistics": {
            "x_mean": {"function": "mean", "expression": "v * 2"},
            "v_wmean": {"function": "weighted_mean", "column": "v", "parameters": {"weight": "1 + v**2"}},
        },
        "outputs": {"parquet": {"path": str(tmp_path / "out.parquet"), "orders": [2]}},
    }
    for key, value in change.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


@pytest.mark.parametrize("escape", ESCAPES)
def test_escapes_refused_by_yaml_pipeline(escape, sandbox, capsys):
    places = {
        "filter": "filter",
        "statistics.x_mean.expression": "statistics.x_mean.expression",
        "statistics.v_wmean.parameters.weight": "statistics.v_wmean.parameters.weight",
    }
    for key, where in places.items():
        path = sandbox / "cwd" / "p.yaml"
        path.write_text(yaml.safe_dump(_pipeline(sandbox, **{key: escape})))
        for extra in (["--check"], ["--synchronous", "-q"]):
            assert main(["run", str(path), *extra]) == 2
            err = capsys.readouterr().err
            assert f"p.yaml: {where}: expression" in err and _refused(err), err
        with pytest.raises(ConfigError) as info:
            run_pipeline(str(path), synchronous=True, quiet=True)
        assert _refused(str(info.value))
        path.unlink()


def test_escapes_refused_by_cli_subprocess(sandbox):
    """The installed entry point too (one representative escape per command)."""
    src = sandbox / "in.parquet"
    pos = ["--order", "2", "--lon", "ra", "--lat", "dec", "--synchronous", "-q"]
    proc = run_cli(
        "aggregate", src, "-o", sandbox / "m.parquet", *pos, "--columns", "x=np.save('pwned', v)", check=False
    )
    assert proc.returncode == 2 and "function 'np.save' is not allowed" in proc.stderr
    proc = run_cli(
        "accumulate",
        src,
        "--state",
        sandbox / "s.parquet",
        *pos,
        "--columns",
        "v",
        "--weight",
        "().__class__.__bases__[0]",
        check=False,
    )
    assert proc.returncode == 2 and "subscripting" in proc.stderr


# ---------------------------------------------------------------------------------------------
# the language at work in every front end


def test_expressions_in_api_and_pipeline_match_pandas(tmp_path):
    rng = np.random.default_rng(8)
    n = 3000
    df = pd.DataFrame(
        {
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "v": rng.normal(0, 3, n),
            "s": rng.uniform(0.5, 2, n),
        }
    )
    df.to_parquet(tmp_path / "in.parquet")
    import healpy as hp

    cells = hp.ang2pix(4, df.ra.to_numpy(), df.dec.to_numpy(), nest=True, lonlat=True)
    m = healforge.aggregate(
        df, ["x=np.hypot(v, s) if v > 0 else -v"], ["mean"], order=2, lon="ra", lat="dec", weight="1 / s**2"
    )
    x = np.where(df.v > 0, np.hypot(df.v, df.s), -df.v)
    exp = pd.Series(x).groupby(cells).mean()
    np.testing.assert_array_equal(m.column("cell_ids").to_numpy(), exp.index.to_numpy())
    np.testing.assert_allclose(m.column("x_mean").to_numpy(), exp.to_numpy(), rtol=1e-12)
    cfg = _pipeline(tmp_path)
    cfg["filter"] = "abs(v) < 4 and s >= 0.6"
    cfg["inputs"][0]["columns"] = ["ra", "dec", "v", "s"]
    cfg["statistics"] = {
        "x_mean": {"function": "mean", "expression": "v * 2 + sqrt(s)"},
        "v_wmean": {"function": "weighted_mean", "column": "v", "parameters": {"weight": "1 / s**2"}},
    }
    run_pipeline(cfg, synchronous=True, quiet=True)
    keep = (np.abs(df.v) < 4) & (df.s >= 0.6)
    d = df[keep].assign(c=cells[keep], x=lambda t: t.v * 2 + np.sqrt(t.s), w=lambda t: 1 / t.s**2)
    exp_x = d.groupby("c").x.mean()
    exp_w = d.assign(wv=d.w * d.v).groupby("c").wv.sum() / d.groupby("c").w.sum()
    from healforge.maps.parquet import read_map

    got = read_map(tmp_path / "out.parquet", 2)
    np.testing.assert_array_equal(got.column("cell_ids").to_numpy(), exp_x.index.to_numpy())
    np.testing.assert_allclose(got.column("x_mean").to_numpy(), exp_x.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(got.column("v_wmean").to_numpy(), exp_w.to_numpy(), rtol=1e-12)


def test_function_table_is_elementwise_numpy():
    assert {"sqrt", "arctan2", "where", "clip", "nan_to_num", "isnan", "mod"} <= set(FUNCTIONS)
    assert not {"save", "load", "fromfile", "frombuffer", "loadtxt", "memmap", "vectorize"} & set(FUNCTIONS)


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("-" * 5000 + "a", "nested too deeply"),
        ("+".join(["a"] * 6000), "longer than"),
        ("sqrt(" * 120 + "a" + ")" * 120, ""),
        ("9" * 400, "number is too large"),
        ("2 ** 1024", "overflows"),
    ],
)
def test_resource_limits(src, message):
    t0 = time.perf_counter()
    with pytest.raises(ExpressionError) as info:
        parse_row(src)
    assert message in str(info.value)
    assert time.perf_counter() - t0 < 1.0
    assert len(str(info.value)) < 2000
    assert parse_row("2 ** 1000 + a").evaluate(COLS).shape == (50,)  # large but finite is fine
    assert parse_row("(" * 150 + "a" + ")" * 150).names == {"a"}
