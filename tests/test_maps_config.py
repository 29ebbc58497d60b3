import copy
import textwrap

import h5py
import numpy as np
import pytest
import yaml

from healforge.aggregate.statistics import resolve
from healforge.errors import BadInputError
from healforge.expressions import ExpressionError, parse_filter, parse_row
from healforge.io.hdf5 import iter_hdf5_template
from healforge.run import ConfigError, load_pipeline, validate_pipeline

BEAMS = ["gt1l", "gt1r", "gt2l", "gt2r"]  # gt3l/gt3r absent, as in files with weak beams off
FILL = np.float32(3.4028235e38)
FIELDS = ["latitude", "longitude", "h_li", "h_li_sigma", "atl06_quality_summary"]


def make_atl06(path, n=500, seed=0):
    """A small file in the ICESat-2 ATL06 layout; returns the arrays written per beam."""
    rng = np.random.default_rng(seed)
    written = {}
    with h5py.File(path, "w") as f:
        f.create_group("ancillary_data").create_dataset("atlas_sdp_gps_epoch", data=[1.2e9])
        for b in BEAMS:
            g = f.create_group(f"{b}/land_ice_segments")
            lat = rng.uniform(-89, -60, n)
            lon = rng.uniform(-180, 180, n)
            h = rng.normal(2000, 300, n).astype(np.float32)
            h[::50] = FILL
            sigma = rng.uniform(0.05, 2.0, n).astype(np.float32)
            q = rng.integers(0, 2, n).astype(np.int8)
            g.create_dataset("latitude", data=lat)
            g.create_dataset("longitude", data=lon)
            ds = g.create_dataset("h_li", data=h)
            ds.attrs["_FillValue"] = FILL
            g.create_dataset("h_li_sigma", data=sigma)
            g.create_dataset("atl06_quality_summary", data=q)
            written[b] = dict(zip(FIELDS, (lat, lon, h, sigma, q), strict=True))
    return written


TEMPLATES = {name: f"/{{group}}/land_ice_segments/{name}" for name in FIELDS}


def test_hdf5_template_reader(tmp_path):
    path = tmp_path / "ATL06_test.h5"
    written = make_atl06(path)
    batches = list(iter_hdf5_template(str(path), TEMPLATES, "gt*", batch_rows=300))
    table = __import__("pyarrow").concat_tables([t for _, t in batches])
    assert [first for first, _ in batches] == [0, 300, 500, 800, 1000, 1300, 1500, 1800]
    assert table.schema.names == [*FIELDS, "group"]
    assert table.num_rows == 4 * 500
    groups = table.column("group").to_numpy(zero_copy_only=False)
    assert list(dict.fromkeys(groups)) == BEAMS
    for b in BEAMS:
        sel = groups == b
        np.testing.assert_array_equal(table.column("latitude").to_numpy()[sel], written[b]["latitude"])
        h = written[b]["h_li"].copy().astype(np.float32)
        got = table.column("h_li").to_numpy()[sel]
        assert np.isnan(got[::50]).all()  # fill values became NaN
        np.testing.assert_array_equal(got[h != FILL], h[h != FILL])
        np.testing.assert_array_equal(
            table.column("atl06_quality_summary").to_numpy()[sel], written[b]["atl06_quality_summary"]
        )
    # absent beams are skipped by default, refused on request
    rows = sum(t.num_rows for _, t in iter_hdf5_template(str(path), TEMPLATES, ["gt1l", "gt3l"]))
    assert rows == 500
    with pytest.raises(BadInputError, match="gt3l"):
        list(iter_hdf5_template(str(path), TEMPLATES, ["gt1l", "gt3l"], on_missing_group="error"))
    # a group missing one dataset is always an error naming it and listing what exists
    bad = dict(TEMPLATES, h_li="/{group}/land_ice_segments/h_li_typo")
    with pytest.raises(BadInputError, match=r"h_li_typo.*h_li_sigma"):
        list(iter_hdf5_template(str(path), bad, ["gt1l"]))
    with pytest.raises(BadInputError, match="no HDF5 group matches"):
        list(iter_hdf5_template(str(path), TEMPLATES, "gx*"))


GOOD = yaml.safe_load(
    textwrap.dedent(
        """
        name: atl06-test
        inputs:
          - paths: ["granules/*.h5"]
            groups: ["gt*"]
            columns:
              latitude: /{group}/land_ice_segments/latitude
              longitude: /{group}/land_ice_segments/longitude
              h_li: /{group}/land_ice_segments/h_li
              h_li_sigma: /{group}/land_ice_segments/h_li_sigma
              quality: /{group}/land_ice_segments/atl06_quality_summary
        filter: "quality == 0 and isfinite(h_li)"
        coordinates: {lon: longitude, lat: latitude}
        assignment: {order: 6, mode: points, lon_convention: "-180_180", latitude: spherical}
        statistics:
          h_mean: {function: mean, column: h_li}
          h_wmean: {function: weighted_mean, column: h_li, parameters: {weight: "1 / h_li_sigma**2"}}
          h_q: {function: quantile, column: h_li, parameters: {q: [0.1, 0.5, 0.9]}}
          h_span: {function: numpy.ptp, column: h_li, dtype: float32}
          h_km: {function: mean, expression: "h_li / 1000"}
          n: {function: count}
        outputs:
          state: out/state
          zarr: {path: out/map.zarr, orders: [6, 4, 2]}
          parquet: {path: out/map.parquet}
          geoparquet: {path: out/map.geoparquet, order: 4}
          plots:
            - {path: out/h.png, variable: h_q_p50, order: 4, projection: polar-south, range: [1000, 3000]}
        """
    )
)


def test_good_config_loads_and_drives_a_map(tmp_path):
    (tmp_path / "granules").mkdir()
    written = make_atl06(tmp_path / "granules" / "a.h5", seed=1)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(GOOD, sort_keys=False))
    cfg = load_pipeline(tmp_path / "p.yaml")
    assert cfg.assignment.order == 6 and cfg.min_order == 2
    assert cfg.outputs.zarr.orders == (6, 4, 2) and cfg.outputs.parquet.orders == (6,)
    assert cfg.outputs.zarr.path == str(tmp_path / "out" / "map.zarr")
    assert cfg.variables == ["h_mean", "h_wmean", "h_q_p10", "h_q_p50", "h_q_p90", "h_span", "h_km", "n"]
    assert resolve(cfg.statistics[3].function).function == "ptp"  # numpy.ptp is the statistic ptp
    assert cfg.needed_columns == {"longitude", "latitude", "quality", "h_li", "h_li_sigma"}
    # the config objects are enough to read, filter and weight the inputs
    spec = cfg.inputs[0]
    assert spec.files() == [str(tmp_path / "granules" / "a.h5")]
    num = den = 0.0
    for _, _, table in spec.iter_tables():
        cols = {n: table.column(n) for n in table.schema.names}
        keep = cfg.filter_mask(cols)
        w = cfg.statistics[1].weight.evaluate(cols)[keep]
        h = cfg.statistics[1].values(cols)[keep]
        num += (w * h).sum()
        den += w.sum()
    h_all = np.concatenate([written[b]["h_li"] for b in BEAMS]).astype(np.float64)
    s_all = np.concatenate([written[b]["h_li_sigma"] for b in BEAMS]).astype(np.float64)
    q_all = np.concatenate([written[b]["atl06_quality_summary"] for b in BEAMS])
    ok = (q_all == 0) & (h_all != float(FILL))
    w_all = 1 / s_all[ok] ** 2
    assert num / den == pytest.approx((w_all * h_all[ok]).sum() / w_all.sum(), rel=1e-12)


def _set(cfg, dotted, value):
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node[p]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


_DELETE = object()

BAD = [
    ("outputs.zarr.orders", [6, 9], "outputs.zarr.orders[1]", "at most the assignment order"),
    ("inputs.0.colums", {"x": "/a"}, "inputs[0].colums", "did you mean 'columns'"),
    ("statistics.h_mean.function", "meen", "statistics.h_mean.function", "did you mean 'mean'"),
    ("filter", "quality === 0", "filter", "not a valid expression"),
    ("filter", "qualty == 0", "filter", "did you mean 'quality'"),
    ("filter", "__import__('os').system('x')", "filter", "not allowed"),
    ("statistics.h_q.parameters.q", [0.1, 1.5], "statistics.h_q.parameters.q[1]", "in [0, 1]"),
    ("statistics.h_q.parameters", {}, "statistics.h_q.parameters.q", "is required for quantile"),
    ("statistics.h_mean.expression", "h_li * 2", "statistics.h_mean", "not both"),
    ("statistics.h_mean.column", "h_lii", "statistics.h_mean.column", "not an input column"),
    ("statistics.h_mean.dtype", "float16", "statistics.h_mean.dtype", "must be one of"),
    ("assignment.latitude", "geodetic", "assignment.latitude", "spherical, authalic"),
    ("assignment.order", _DELETE, "assignment.order", "is required"),
    ("assignment.order", 30, "assignment.order", "[0, 29]"),
    ("assignment.mode", "fuzzy", "assignment.mode", "coordinates.geometry"),
    ("outputs.plots.0.variable", "h_men", "outputs.plots[0].variable", "did you mean 'h_mean'"),
    ("outputs.plots.0.projection", "robinson", "outputs.plots[0].projection", "mollweide"),
    ("outputs.plots.0.range", [3, 1], "outputs.plots[0].range", "low must be below high"),
    ("outputs.geoparquet.order", 7, "outputs.geoparquet.order", "[0, 6]"),
    ("outputs.zarr.path", "out/map.zip", "outputs.zarr.path", ".zarr"),
    ("inputs.0.groups", _DELETE, "inputs[0].groups", "use {group}"),
    ("inputs.0.columns.h_li", "/{beam}/h_li", "inputs[0].columns.h_li", "only {group}"),
    ("coordinates.lat", "lat_deg", "coordinates.lat", "not an input column"),
    ("outputs", {}, "outputs", "at least one of"),
]


@pytest.mark.parametrize("key,value,where,what", BAD, ids=[b[2] + ":" + b[3][:12] for b in BAD])
def test_bad_config_names_the_key(tmp_path, key, value, where, what):
    cfg = copy.deepcopy(GOOD)
    _set(cfg, key, value)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_pipeline(tmp_path / "p.yaml")
    msg = str(info.value)
    assert f"{tmp_path / 'p.yaml'}: {where}: " in msg, msg
    assert what in msg, msg
    assert any(k == where for k, _ in info.value.errors)


def test_all_errors_reported_and_no_data_read(tmp_path):
    cfg = copy.deepcopy(GOOD)
    cfg["inputs"][0]["paths"] = ["s3://no-such-bucket-healforge/*.h5"]  # never touched
    cfg["assignment"]["order"] = "twelve"
    cfg["outputs"]["plots"][0]["cmap"] = "viridiss"
    with pytest.raises(ConfigError) as info:
        validate_pipeline(cfg, source="p.yaml")
    keys = [k for k, _ in info.value.errors]
    assert "assignment.order" in keys and "outputs.plots[0].cmap" in keys
    assert "did you mean 'viridis'" in str(info.value)


def test_yaml_syntax_error_has_line(tmp_path):
    (tmp_path / "p.yaml").write_text("inputs:\n  - paths: [a.h5\noutputs: {}\n")
    with pytest.raises(ConfigError, match=r"p.yaml: line \d+, column \d+: not valid YAML"):
        load_pipeline(tmp_path / "p.yaml")


def test_expression_semantics():
    cols = {"a": np.array([1.0, 2.0, 3.0, np.nan]), "b": np.array([0, 1, 0, 0])}
    e = parse_filter("b == 0 and not (a > 2.5) or isnan(a)")
    np.testing.assert_array_equal(e.evaluate(cols), [True, False, False, True])
    np.testing.assert_allclose(parse_row("1 / a**2").evaluate(cols)[:3], [1, 0.25, 1 / 9])
    np.testing.assert_array_equal(parse_row("0 < a <= 2").evaluate(cols), [True, True, False, False])
    for bad in ("a.__class__", "[a]", "'x'", "lambda: 1", "open('f')"):
        with pytest.raises(ExpressionError):
            parse_row(bad)
