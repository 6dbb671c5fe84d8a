"""Where everything lives under an archive prefix, and the housekeeping that follows from it.

    <archive>/data/<unit>-<token>.parquet      image rows (schema.SCHEMA)
    <archive>/_commits/<unit>-<token>.json     commit records (records.CommitRecord): the commit point
    <archive>/failures/<unit>-<token>.parquet  failure records of that unit
    <archive>/runs/<run-id>.json               run summaries (records.RunSummary)

This module owns those paths: run records (write, list), tombstones (unlisting ids), removing
a crashed writer's orphans, and the plan of a rerun (which sources are archived already, which
archived images lost their source). It stores and reads; it never decodes.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from .checkpoint import record_name
from .reader import Archive, ArchiveError
from .records import CommitRecord, RunSummary
from .schema import COMMITS_DIR, DATA_DIR, FAILURES_DIR, RUNS_DIR
from .writer import put_atomic


def commit_path(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{COMMITS_DIR}/{name}.json"


def run_record_path(root: str, run_id: str) -> str:
    return f"{root.rstrip('/')}/{RUNS_DIR}/{run_id}.json"


def open_existing(uri: str) -> Archive | None:
    """The archive at `uri`, or None when there is none yet (a first run)."""
    try:
        return Archive.open(uri)
    except ArchiveError:
        return None


# ------------------------------------------------------------------ run records
def write_run_record(uri: str, summary: RunSummary) -> str:
    """Publish a run's summary whole (one PUT / an atomic rename); returns its path."""
    fs, root = fsspec.core.url_to_fs(uri)
    path = run_record_path(root, summary.run_id)
    put_atomic(fs, path, summary.to_json())
    return path


def read_run_records(uri: str) -> list[dict]:
    """Every run record of an archive, oldest first (run ids start with their UTC time)."""
    fs, root = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    paths = sorted(fs.glob(f"{root.rstrip('/')}/{RUNS_DIR}/*.json"))
    raws = fs.cat(paths) if paths else {}
    return [json.loads(raws[p]) for p in paths]


# ------------------------------------------------------------------ tombstones
def write_tombstones(fs, root: str, run_id: str, image_ids: list[str]) -> CommitRecord:
    """Commit the removal of images (sources gone, --prune, verify --repair): readers stop listing them."""
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    record = CommitRecord(None, "prune", run_id, now, removed=sorted(image_ids))
    # a retried write may add a second, identical tombstone: removing twice is removing once
    put_atomic(fs, f"{root.rstrip('/')}/{COMMITS_DIR}/{record_name(f'prune-{run_id}')}", record.to_json())
    return record


# ------------------------------------------------------------------ orphans
def remove_orphans(archive: Archive | None, max_age: float) -> int:
    """Delete data and failure files no commit record names (a crashed writer's) once older than
    max_age (younger ones may belong to a run still writing)."""
    if archive is None:
        return 0
    fs, root = archive.fs, archive.root
    fs.invalidate_cache()
    removed = 0
    now = time.time()
    for path in fs.glob(f"{root}/{DATA_DIR}/*.parquet") + fs.glob(f"{root}/{FAILURES_DIR}/*.parquet"):
        rel = path[len(root) + 1 :]
        if rel in archive.committed_files:
            continue
        info = fs.info(path)
        modified = info.get("mtime") or info.get("LastModified") or info.get("created")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or now)
        if now - stamp >= max_age:
            fs.rm(path)
            removed += 1
    return removed


# ------------------------------------------------------------------ the plan of a rerun
@dataclass(frozen=True)
class SourcePlan:
    done: set[str]  # source ids (relative paths) whose every image is archived from this version
    gone: list[str]  # archived image ids whose source file is no longer listed


def plan_sources(archive: Archive | None, files) -> SourcePlan:
    """Compare a listing (items with .uri, .rel, .etag, .size) with what the archive holds.

    A file is done when every image of it is committed from the same source version (etag and
    size); a changed file is encoded again and its new rows supersede the old ones; an image
    whose data file was deleted after its commit is encoded again too. Arrow joins, not a
    Python loop over the archive's images (a nightly rerun against a million of them)."""
    if archive is None:
        return SourcePlan(set(), [])
    live = archive.state.live(["file", "source_uri", "source_etag", "source_size"])
    listing = pa.table({"uri": pa.array([f.uri for f in files], pa.string()),
                        "rel": pa.array([f.rel for f in files], pa.string()),
                        "etag": pa.array([f.etag for f in files], pa.string()),
                        "size": pa.array([f.size for f in files], pa.int64())})
    listed = pc.is_in(live.column("source_uri"), value_set=listing.column("uri"))
    gone = live.column("image_id").filter(pc.invert(listed)).to_pylist()  # sorted: `live` is
    lost = pc.is_in(live.column("file"), value_set=pa.array(sorted(archive.missing_files()), pa.string()))
    # each archived image of a listed file beside that file's listing: it is current when both agree
    images = live.append_column("lost", lost).filter(listed)
    joined = images.join(listing, keys="source_uri", right_keys="uri")
    current = pc.and_(pc.and_(_same(joined.column("source_etag"), joined.column("etag")),
                              _same(joined.column("source_size"), joined.column("size"))),
                      pc.invert(joined.column("lost")))
    per_file = pa.table({"uri": joined.column("source_uri"), "current": current}) \
        .group_by("uri").aggregate([("current", "min")])
    done_uris = per_file.filter(per_file.column("current_min")).column("uri")
    done = set(listing.column("rel").filter(pc.is_in(listing.column("uri"), value_set=done_uris)).to_pylist())
    return SourcePlan(done, gone)


def _same(a, b):
    """Equal, with null equal to null (as None == None): never null itself."""
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return pc.or_(both_null, pc.fill_null(pc.equal(a, b), False))
