"""The live rows of an archive as one table: one row per live image, today's columns.

`data/*.parquet` holds superseded versions, pruned images and uncommitted files too, so a
plain Parquet reader pointed at it sees them all. What is live is (file, image id) pairs of
the archive's state: `live_index` gives them, `to_arrow` reads exactly those rows, and
`duckdb_view` joins them in DuckDB. Without this package, the newest `_checkpoints/*.parquet`
lists them too (`kind = 'live'`: image_id, file), up to the commits made after it.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import SCHEMA

_DICOM_TAGS = {"modality": "00080060", "study_instance_uid": "0020000D", "series_instance_uid": "0020000E",
               "sop_instance_uid": "00080018"}


def dicom_columns(metadata: dict) -> dict:
    """Modality and the Study/Series/SOP Instance UIDs of an image's metadata (None when absent)."""
    if metadata.get("format") != "DICOM":
        return dict.fromkeys(_DICOM_TAGS)
    header = metadata.get("dicom_json") or {}
    out = {}
    for column, tag in _DICOM_TAGS.items():
        value = (header.get(tag) or {}).get("Value") or [None]
        out[column] = str(value[0]) if value[0] not in (None, "") else None
    if out["modality"] is None and metadata.get("Modality"):
        out["modality"] = str(metadata["Modality"])
    return out


def dicom_columns_of_json(metadata_json: str | None) -> dict:
    try:
        return dicom_columns(json.loads(metadata_json or "{}"))
    except ValueError:
        return dict.fromkeys(_DICOM_TAGS)


def live_by_file(archive) -> dict[str, list[str]]:
    return archive.by_file()


def live_index(archive) -> pa.Table:
    """(image_id, path, row_group, row) of every live image; path as a Parquet reader names it."""
    live = archive._index.table(["file", "row_group", "row"])
    return pa.table({"image_id": live.column("image_id"),
                     "path": pc.binary_join_element_wise(archive.root, live.column("file").cast(pa.string()), "/"),
                     "row_group": live.column("row_group").cast(pa.int32()),
                     "row": live.column("row").cast(pa.int32())})


def read_live(archive, file: str, ids: list[str], columns: list[str] | None) -> pa.Table:
    """The rows of `ids` in one data file, with the archive's columns (missing ones as nulls:
    files written before a column existed). DICOM columns are filled from metadata_json there."""
    names = SCHEMA.names if columns is None else list(dict.fromkeys(["image_id", *columns]))
    with archive.fs.open(f"{archive.root}/{file}", "rb") as f:
        parquet = pq.ParquetFile(f)
        present = set(parquet.schema_arrow.names)
        wanted = [c for c in names if c in present]
        derive = [c for c in names if c in _DICOM_TAGS and c not in present]
        if derive and "metadata_json" not in wanted:
            wanted.append("metadata_json")
        table = parquet.read(columns=wanted)
    table = table.filter(pc.is_in(table.column("image_id"), pa.array(ids, pa.string())))
    derived = [dicom_columns_of_json(m) for m in table.column("metadata_json").to_pylist()] if derive else []
    out = {}
    for name in names:
        field = SCHEMA.field(name)
        if name in present:
            out[name] = table.column(name).cast(field.type)
        elif name in derive:
            out[name] = pa.array([d[name] for d in derived], field.type)
        else:
            out[name] = pa.nulls(len(table), field.type)
    return pa.table(out, schema=pa.schema([SCHEMA.field(n) for n in names]))


def to_arrow(archive, columns: list[str] | None = None) -> pa.Table:
    """One row per live image (sorted by id), `columns` (default: all of today's)."""
    unknown = [c for c in columns or [] if c not in SCHEMA.names]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; the archive's columns are {SCHEMA.names}")
    parts = [read_live(archive, file, ids, columns) for file, ids in live_by_file(archive).items()]
    if not parts:
        names = SCHEMA.names if columns is None else list(dict.fromkeys(["image_id", *columns]))
        return pa.schema([SCHEMA.field(n) for n in names]).empty_table()
    table = pa.concat_tables(parts)
    return table.sort_by("image_id")


def duckdb_view(archive, con, name: str = "images") -> None:
    """Create view `name` in DuckDB connection `con` over exactly the live rows (local archives,
    or S3 with DuckDB's httpfs configured)."""
    con.register(f"{name}_live", live_index(archive).select(["image_id", "path"]))
    files = sorted({f"{archive.root}/{f}" for f in live_by_file(archive)})
    prefix = "" if archive.root.startswith("/") else "s3://"
    listing = ", ".join("'" + (prefix + f).replace("'", "''") + "'" for f in files)
    con.execute(f"""create or replace view {name} as
        select p.* exclude (filename) from read_parquet([{listing}], filename = true, union_by_name = true) p
        join {name}_live l on p.filename = '{prefix}' || l.path and p.image_id = l.image_id""")
