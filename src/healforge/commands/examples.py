"""The examples at the end of every subcommand's ``--help`` (each one parses: tested)."""

from __future__ import annotations

import argparse
import textwrap

EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "import": [
        (
            "import three CSV files, 1 M rows at most per partition",
            "healforge import survey/*.csv -o survey_hats --ra ra --dec dec --id objid",
        ),
        (
            "what it will make and cost, before running it",
            "healforge import survey/*.csv -o survey_hats --plan",
        ),
        (
            "the same with a 10 arcsec margin, on an existing Dask cluster",
            "healforge import survey/*.csv -o survey_hats --margin 10 --scheduler tcp://head:8786",
        ),
    ],
    "append": [
        (
            "add tonight's batch to a catalog, under a label",
            "healforge append survey_hats night_2026-12-06.parquet --batch 2026-12-06",
        )
    ],
    "compact": [
        (
            "merge appended files, keep the latest row per id",
            "healforge compact survey_hats --dedupe-on objid --keep-latest-by mjd",
        )
    ],
    "info": [("what a catalog, collection, map or state holds", "healforge info survey_hats")],
    "validate": [
        ("hats' strict checks plus every row read", "healforge validate survey_hats"),
        ("and the id column unique", "healforge validate survey_hats --id objid"),
    ],
    "margin": [("a 10 arcsec margin cache beside the catalog", "healforge margin survey_hats --radius 10")],
    "index": [
        ("an index catalog on a column, for lsdb's id search", "healforge index survey_hats --column objid")
    ],
    "nest": [
        (
            "sources nested under their objects",
            "healforge nest objects_hats sources_hats -o nested_hats --on objid --as sources",
        )
    ],
    "collection": [
        (
            "a collection of a catalog with its margin",
            "healforge collection survey_hats --margin survey_hats_10arcs -o survey",
        )
    ],
    "increment": [
        (
            "tonight's objects and their new sources, by id",
            "healforge increment survey --objects new_objects.parquet --nested sources=new_sources.parquet --on objid",
        ),
    ],
    "delete": [("withdraw rows by id", "healforge delete survey_hats --ids withdrawn.csv --on objid")],
    "sidecar": [
        (
            "footprint to cell assignments with area weights",
            "healforge sidecar footprints.parquet -o sidecar.parquet --order 8 --geometry geometry --mode fuzzy",
        )
    ],
    "aggregate": [
        (
            "exact statistics of points at order 8",
            "healforge aggregate spots.parquet -o albedo.parquet --lon lon --lat lat --order 8 --columns albedo --stats count mean median mad",
        ),
        (
            "heights with their fill values skipped",
            "healforge aggregate atl06.h5 -o h.parquet --lon longitude --lat latitude --order 10 --columns h_li --sentinel-above 1e30",
        ),
    ],
    "accumulate": [
        (
            "add a batch to a streaming state file",
            "healforge accumulate batch_07.parquet --state state.parquet --order 6 --lon lon --lat lat --columns albedo",
        )
    ],
    "merge-states": [
        (
            "combine the states of two workers",
            "healforge merge-states worker1.parquet worker2.parquet -o state.parquet",
        )
    ],
    "finalize": [
        (
            "maps at orders 6 down to 3 from a state",
            "healforge finalize state.parquet -o albedo.zarr --stats mean median std --min-order 3",
        )
    ],
    "plot": [
        (
            "a Mollweide view of a map's variable",
            "healforge plot albedo.zarr --var albedo_mean --order 6 -o albedo.png",
        )
    ],
    "export": [
        (
            "a Zarr map as GeoParquet cell polygons",
            "healforge export albedo.zarr -o albedo.geoparquet --order 6",
        ),
        ("every order as Parquet files", "healforge export albedo.zarr -o albedo.parquet"),
        (
            "a 2 km polar stereographic raster of Antarctic heights",
            "healforge export h.zarr -o h.tif --order 12 --crs EPSG:3031 --resolution 2000 --resampling area",
        ),
    ],
    "report": [
        (
            "a catalog's page: coverage, partitions, columns, provenance",
            "healforge report survey_hats -o survey.html",
        ),
        ("a map product's page: levels, variables, plots", "healforge report albedo.zarr -o albedo.html"),
    ],
    "run": [
        ("check a pipeline file, then run it", "healforge run pipeline.yaml --check"),
        (
            "a zagg file over granules, store named here",
            "healforge run atl06.yaml --inputs granules/*.h5 --store out.zarr",
        ),
    ],
    "demo": [("the main jobs on built-in sample data", "healforge demo demo_out")],
}


def epilog(name: str) -> str:
    """The examples section of a subcommand's help."""
    lines = ["examples:"]
    for comment, command in EXAMPLES.get(name, []):
        lines += [f"  # {comment}", f"  {command}"]
    return "\n".join(lines)


def attach(subparsers: argparse._SubParsersAction) -> None:
    """Give every subcommand its examples (descriptions wrapped here, the examples kept as written)."""
    for name, parser in subparsers.choices.items():
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        if parser.description:
            parser.description = textwrap.fill(" ".join(parser.description.split()), 79)
        parser.epilog = epilog(name)
