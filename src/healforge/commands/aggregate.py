"""``healforge sidecar | aggregate | accumulate | merge-states | finalize``."""

from __future__ import annotations

import argparse
import sys

from healforge.commands import add_command, call_api, engine_kwargs, storage_kwargs


def _orders(args, many: bool):
    if args.nside:
        from healforge.pixel import nside_to_order

        orders = [nside_to_order(n) for n in args.nside]
    else:
        orders = args.order
    if orders is None:
        return None
    if not many:
        if len(orders) != 1:
            raise SystemExit(f"healforge {args.command}: error: give one order (or nside)")
        return orders[0]
    return orders


def _add_order(p: argparse.ArgumentParser, many: bool, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    nargs = "+" if many else 1
    g.add_argument("--order", type=int, nargs=nargs, help="HEALPix order(s) (nside = 2**order)")
    g.add_argument("--nside", type=int, nargs=nargs, help="HEALPix nside(s), powers of two")


def _add_position(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lon", help="longitude column (degrees)")
    p.add_argument("--lat", help="latitude column (degrees)")
    p.add_argument("--geometry", help="footprint column (WKB/WKT polygons, e.g. GeoParquet geometry)")
    p.add_argument(
        "--mode",
        default="strict",
        choices=["strict", "center", "fuzzy", "overlap"],
        help="footprints: centroid cell (strict) or every overlapped cell with area weights (fuzzy)",
    )
    p.add_argument("--lon-convention", default="0_360", choices=["0_360", "-180_180"])
    p.add_argument("--latitude", default="spherical", choices=["spherical", "authalic"])
    p.add_argument("--on-bad-rows", default="error", choices=["error", "quarantine"])
    p.add_argument("--quarantine", help="file for rejected rows (default: beside the output)")
    p.add_argument("--batch-rows", type=int, default=1_000_000)


CELL_HELP = (
    "per-cell expression over aggregates (sum count mean min max var std) of row expressions, "
    "e.g. 'err=1 / sqrt(sum(1 / s**2))' or 'density=count(h) / area' (repeatable)"
)


def _split(values):
    out = []
    for v in values or []:
        if "=" in v:
            out.append(v)
        else:
            out.extend(x for x in v.split(",") if x)
    return out


def register(sub) -> None:
    p = add_command(sub, _sidecar, "sidecar")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="sidecar parquet (several orders: a directory)")
    _add_order(p, many=True, required=True)
    _add_position(p)
    p.add_argument("--id-column", help="integer id column used as source_id (default: row position)")

    p = add_command(sub, _aggregate, "aggregate")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="map parquet file")
    p.add_argument("--sidecar", help="sidecar file (else give --order and --lon/--lat or --geometry)")
    _add_order(p, many=False, required=False)
    _add_position(p)
    p.add_argument("--columns", nargs="+", required=True, help="value columns; NAME=EXPR derives one")
    p.add_argument("--stats", nargs="+", default=["count", "mean", "std", "min", "max", "median"])
    p.add_argument("--weight", help="per-row weight expression, e.g. '1 / sigma**2'")
    p.add_argument("--id-column", help="input id column matching the sidecar's source_id")
    p.add_argument("--ddof", type=int, default=1)
    p.add_argument("--min-count", type=int, default=1)
    _add_cell_args(p)
    p.add_argument("--filter", help="row expression; only rows where it holds are aggregated")
    p.add_argument(
        "--frame",
        choices=["sky", "body"],
        help="recorded in the map: sky (plots draw RA increasing to the left) or body (east right)",
    )
    _add_fill_args(p)
    _add_shuffle_args(p)
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the cells, output size, peak memory and wall time (one pass over the "
        "coordinates, nothing written) and stop",
    )

    p = add_command(sub, _accumulate, "accumulate")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--state", required=True, help="state parquet file, updated in place")
    p.add_argument("-o", "--output", help="write the new state here instead of over --state")
    _add_order(p, many=False, required=False)
    _add_position(p)
    p.add_argument("--columns", nargs="+", required=True)
    p.add_argument("--weight", help="per-row weight expression")
    p.add_argument("--delta", type=float, default=200.0, help="sketch compression (centroids ~ 1.6 delta)")
    p.add_argument(
        "--cell-expr",
        action="append",
        metavar="NAME=EXPR",
        help="keep the aggregates of a per-cell expression in the state (finalize computes it at every order)",
    )
    p.add_argument("--filter", help="row expression; only rows where it holds are accumulated")
    _add_fill_args(p)

    p = add_command(sub, _merge, "merge-states", run={"engine": False})
    p.add_argument("states", nargs="+", metavar="STATE")
    p.add_argument("-o", "--output", required=True)

    p = add_command(sub, _finalize, "finalize", run={"engine": False})
    p.add_argument("state", metavar="STATE")
    p.add_argument("-o", "--output", required=True, help="MAP.zarr or MAP.parquet")
    p.add_argument(
        "--min-order", type=int, default=None, help="also write every coarser order down to this one"
    )
    p.add_argument("--stats", nargs="+", default=["count", "mean", "std", "min", "max", "median"])
    p.add_argument("--ddof", type=int, default=1)
    p.add_argument("--min-count", type=int, default=1)
    _add_cell_args(p)
    _add_order(p, many=False, required=False)


def _add_fill_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "fill values (the fills a file declares, HDF5/netCDF _FillValue or missing_value and FITS "
        "TNULL, are always honoured)"
    )
    g.add_argument(
        "--fill-value",
        dest="fill_values",
        action="append",
        metavar="COL=V",
        help="a value of COL that means 'no value' (repeatable), e.g. h_li=3.4028235e38",
    )
    g.add_argument(
        "--sentinel-above",
        type=float,
        metavar="X",
        help="any value whose magnitude is above X means 'no value' (healpyxel's sentinel_threshold)",
    )


def _add_shuffle_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("exact statistics at scale (data larger than memory)")
    how = g.add_mutually_exclusive_group()
    how.add_argument(
        "--shuffle",
        action="store_const",
        const=True,
        help="shuffle rows by shard through a work directory and aggregate one shard at a time "
        "(the same numbers as in memory; the default with --scheduler, so that no row reaches "
        "this process)",
    )
    how.add_argument(
        "--no-shuffle",
        dest="shuffle",
        action="store_const",
        const=False,
        help="gather the rows in this process even with --scheduler",
    )
    g.add_argument("--work-dir", help="scratch directory or URL for --shuffle (default: OUTPUT.work)")
    g.add_argument(
        "--shard-order", type=int, help="HEALPix order of the shards (default: 3, at most --order)"
    )


def _work_dir(args) -> str | None:
    """The work directory of ``--shuffle`` (``None`` without it)."""
    if not args.shuffle:
        for flag in ("work_dir", "shard_order"):
            if getattr(args, flag) is not None:
                raise SystemExit(
                    f"healforge {args.command}: error: --{flag.replace('_', '-')} needs --shuffle"
                )
        return None
    return args.work_dir or f"{args.output.rstrip('/')}.work"


def _add_cell_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cell-expr", action="append", metavar="NAME=EXPR", help=CELL_HELP)
    p.add_argument(
        "--radius-km", type=float, help="sphere radius: 'area' in cell expressions in km2 (default sr)"
    )


def _engine(args):
    """The engine as a context manager; its cluster starts at the first parallel stage (so that
    bad arguments fail before any cluster starts) and is closed on exit."""
    from healforge.engine import owned_engine

    return owned_engine(**engine_kwargs(args))


def _sidecar(args) -> int:
    """assign rows (points or footprints) to HEALPix cells"""
    orders = _orders(args, many=True)
    with _engine(args) as engine:
        out = call_api(args, "healforge.aggregate.sidecar:sidecar", order=orders, engine=engine)
    tables = out if isinstance(out, dict) else {orders[0]: out}
    if not args.quiet:
        for o, t in tables.items():
            print(f"sidecar order {o}: {t.num_rows} assignments -> {args.output}", file=sys.stderr)
    return 0


def _aggregate(args) -> int:
    """exact per-cell statistics into a map (parquet)"""
    if args.plan:
        from healforge.aggregate.estimate import aggregate_plan

        plan = aggregate_plan(args, _split(args.columns), _split(args.stats), _orders(args, many=False))
        print("\n".join(plan.lines()))
        return 0
    with _engine(args) as engine:
        table = call_api(
            args,
            "healforge.aggregate.api:aggregate",
            columns=_split(args.columns),
            stats=_split(args.stats),
            order=_orders(args, many=False),
            engine=engine,
            cell_expressions=args.cell_expr,
            work_dir=_work_dir(args),
            shuffle=args.shuffle,
        )
    if not args.quiet:
        from healforge.aggregate.maptable import map_metadata

        fills = map_metadata(table).get("fills_skipped")
        skipped = f" ({fills} fill value(s) skipped)" if fills else ""
        print(
            f"map: {table.num_rows} cells x {table.num_columns - 1} variables -> {args.output}{skipped}",
            file=sys.stderr,
        )
    return 0


def _accumulate(args) -> int:
    """add inputs to a streaming state (created if missing)"""
    quarantine = args.quarantine
    if args.on_bad_rows == "quarantine" and not quarantine:
        from healforge.aggregate.coords import quarantine_path

        quarantine = quarantine_path(args.output or args.state)
    with _engine(args) as engine:
        state = call_api(
            args,
            "healforge.aggregate.api:accumulate",
            columns=_split(args.columns),
            order=_orders(args, many=False),
            output=args.output or args.state,
            engine=engine,
            cell_expressions=args.cell_expr,
            quarantine=quarantine,
        )
    skipped = getattr(state, "skipped_inputs", [])
    if getattr(state, "already_complete", False):
        print(
            f"already complete: {args.state} holds all {len(skipped)} input file(s) "
            f"({state.rows_in} rows) -> {args.output or args.state}"
        )
        return 0
    if skipped:
        print(f"skipped {len(skipped)} input file(s) the state already holds", file=sys.stderr)
    if not args.quiet:
        print(
            f"state: order {state.order}, {state.cell_ids.size} cells, {state.rows_in} rows "
            f"-> {args.output or args.state}",
            file=sys.stderr,
        )
    return 0


def _merge(args) -> int:
    """merge states made by separate runs or workers"""
    from healforge.aggregate.api import merge_states

    state = merge_states(args.states, output=args.output, **storage_kwargs(args))
    if not args.quiet:
        print(
            f"merged {len(args.states)} states: {state.cell_ids.size} cells -> {args.output}", file=sys.stderr
        )
    return 0


def _finalize(args) -> int:
    """turn a state into a map or a pyramid of maps (.zarr or .parquet)

    Finalize a streaming state into a map. The output format follows the suffix: MAP.zarr is a
    Zarr DGGS store (one group per order), anything else Parquet (a pyramid: a directory of
    order_KK.parquet). With --min-order every coarser order down to K is made by merging states,
    so all statistics (quantiles too) exist at every level.
    """
    from healforge.aggregate.api import finalize

    table = finalize(
        args.state,
        _split(args.stats),
        ddof=args.ddof,
        min_count=args.min_count,
        order=_orders(args, many=False),
        min_order=args.min_order,
        output=args.output,
        metadata={"inputs": [args.state]} if args.output.rstrip("/").endswith(".zarr") else None,
        cell_expressions=args.cell_expr,
        radius_km=args.radius_km,
        **storage_kwargs(args),
    )
    if args.quiet:
        return 0
    if isinstance(table, dict):
        for k, t in table.items():
            print(f"map order {k}: {t.num_rows} cells -> {args.output}", file=sys.stderr)
    else:
        print(f"map: {table.num_rows} cells -> {args.output}", file=sys.stderr)
    return 0
