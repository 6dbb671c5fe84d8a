"""The archive's state without reading its whole history: commit records folded into a checkpoint.

An archive's state (which version of each image is live, older versions still kept, tombstones,
the latest failure of each input, the files commit records name) is a fold of its commit
records. The fold is order-independent (each image's live version is its newest, a tombstone
wins over versions no newer than it), so it can be cut anywhere:

    _checkpoints/<stamp>-<token>.parquet   the fold of every record it covers, one row per version

New commit records are named `v2-<stamp>-<unit>-<token>.json`, with the UTC time their writer
started, so a listing that starts after a marker finds the new ones (S3 ListObjectsV2
StartAfter; SeaweedFS honours it). A checkpoint built from a listing taken at time T covers
every record it read and sets its marker at T - GRACE: a record whose name sorts at or below
the marker was started before T - GRACE, so it had landed before T (a writer commits within
GRACE of starting, the same assumption the orphan clean-up makes, clock skew included) and is
in the checkpoint. Records named above the marker are listed on every open and read unless the
checkpoint names them as covered. So a stale checkpoint never hides a newer commit, any writer
may write a checkpoint at any time (each is correct; readers take the newest), and opening an
archive reads one checkpoint plus the records committed since it.

Opening keeps the checkpoint's rows as Arrow columns sorted by image id (overlay.py): no
Python object per image, so a million-image archive opens in a fraction of a second.

Records named before this scheme (`<unit>-<token>.json`, sorting below `v2-`) are folded into
the first checkpoint; writers of older versions must not commit after it (they would be hidden).
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import json
import os
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .overlay import Overlay, Rows
from .schema import COMMITS_DIR

CHECKPOINTS_DIR = "_checkpoints"
LOG_PREFIX = "v2-"
GRACE = dt.timedelta(hours=1)  # longest a writer takes from naming its record to committing it
CHECKPOINT_EVERY = 8  # the job writes a checkpoint once opening would read this many records


class Location(NamedTuple):
    file: str
    row_group: int
    row: int
    committed_at: str


def stamp(when: dt.datetime | None = None) -> str:
    """A fixed-width UTC time that sorts as it reads: 20261204T144500123456Z."""
    when = when or dt.datetime.now(dt.timezone.utc)
    return when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def record_name(unit_name: str, when: dt.datetime | None = None) -> str:
    """The commit record's file name (in _commits/) for a unit's files named `unit_name`."""
    return f"{LOG_PREFIX}{stamp(when)}-{unit_name}.json"


def unit_name(record: str) -> str:
    """The stem of a unit's data file from its commit record's file name (either scheme)."""
    stem = record.removesuffix(".json")
    if stem.startswith(LOG_PREFIX):
        return stem[len(LOG_PREFIX):].split("-", 1)[1]
    return stem


def _is_local(fs) -> bool:
    protocol = getattr(fs, "protocol", ())
    return "file" in ((protocol,) if isinstance(protocol, str) else protocol)


def list_names(fs, folder: str, after: str = "") -> list[str]:
    """File names in `folder` that sort after `after`, sorted. On S3 only those are listed
    (StartAfter), so the cost follows what is new, not the folder's history."""
    if _is_local(fs):
        try:
            return sorted(n for n in os.listdir(folder) if n > after and not n.startswith("."))
        except FileNotFoundError:
            return []
    if hasattr(fs, "call_s3") and hasattr(fs, "split_path"):
        bucket, key, _ = fs.split_path(folder)
        prefix = key.rstrip("/") + "/"
        names, token = [], None
        while True:
            kw = {"Bucket": bucket, "Prefix": prefix, "StartAfter": prefix + after}
            if token:
                kw["ContinuationToken"] = token
            reply = fs.call_s3("list_objects_v2", **kw)
            names += [o["Key"][len(prefix):] for o in reply.get("Contents", [])]
            token = reply.get("NextContinuationToken")
            if not reply.get("IsTruncated") or not token:
                return sorted(n for n in names if "/" not in n)
    try:
        return sorted(n for n in (posixpath.basename(p) for p in fs.ls(folder, detail=False)) if n > after)
    except FileNotFoundError:
        return []


CHECKPOINT_SCHEMA = pa.schema([
    ("kind", pa.string()),  # live, old, removed
    ("image_id", pa.string()),
    ("file", pa.string()),
    ("row_group", pa.int32()),
    ("row", pa.int32()),
    ("committed_at", pa.string()),  # for removed: the tombstone's time
    ("superseded_at", pa.string()),
    ("source_uri", pa.string()),
    ("source_etag", pa.string()),
    ("source_size", pa.int64()),
])


TYPES = {f.name: f.type for f in CHECKPOINT_SCHEMA}


# the state's mappings over a checkpoint's rows (overlay.py): which columns, and value <-> rows
LOC = ["file", "row_group", "row", "committed_at"]
SRC = ["source_uri", "source_etag", "source_size"]
OLD = LOC + SRC + ["superseded_at"]


def _location(rows, k: int) -> Location:
    return Location(rows.value("file", k), rows.value("row_group", k), rows.value("row", k),
                    rows.value("committed_at", k))


# module-level (not lambdas): an opened Archive pickles, to Ray tasks and spawned workers
def _make_location(rows, lo: int, hi: int) -> Location:
    return _location(rows, lo)


def _make_source(rows, lo: int, hi: int) -> list:
    return [rows.value(c, lo) for c in SRC]


def _make_older(rows, lo: int, hi: int) -> list:
    versions = [(_location(rows, k), [rows.value(c, k) for c in SRC], rows.value("superseded_at", k))
                for k in range(lo, hi)]
    return sorted(versions, key=lambda v: v[0].committed_at)


def _make_time(rows, lo: int, hi: int) -> str:
    return rows.value("committed_at", lo)


def _one_row(value) -> list[tuple]:
    return [tuple(value)]


def _older_rows(versions) -> list[tuple]:
    return [(*v[0], *v[1], v[2]) for v in versions]


def _time_row(t: str) -> list[tuple]:
    return [(t,)]


def _index(base: Rows | None = None) -> Overlay:
    return Overlay(LOC, _make_location, _one_row, base, types=TYPES)


def _sources(base: Rows | None = None) -> Overlay:
    return Overlay(SRC, _make_source, _one_row, base, types=TYPES)


def _older(base: Rows | None = None) -> Overlay:
    return Overlay(OLD, _make_older, _older_rows, base, grouped=True, types=TYPES)


def _removed(base: Rows | None = None) -> Overlay:
    return Overlay(["committed_at"], _make_time, _time_row, base, types=TYPES)


@dataclass
class State:
    """The fold of commit records; see the module's docstring. The image mappings hold a
    checkpoint's rows as Arrow columns and the changes since as dicts (overlay.py)."""

    index: Overlay = field(default_factory=_index)  # live version of each image: Location
    sources: Overlay = field(default_factory=_sources)  # image -> [uri, etag, size] of its live version
    older: Overlay = field(default_factory=_older)  # image -> [(Location, source, superseded_at)]
    removed: Overlay = field(default_factory=_removed)  # tombstone time of images not live
    failures: dict[str, dict] = field(default_factory=dict)  # latest failure of each input
    files: set[str] = field(default_factory=set)  # data and failure files records name
    touched: dict[str, str] = field(default_factory=dict)  # data file -> last record that named it
    damaged: list[str] = field(default_factory=list)  # unreadable record names

    def apply(self, record: dict) -> None:
        t = record["committed_at"]
        for image_id in record.get("removed", []):
            self._remove(image_id, t)
        if record.get("file"):
            self.files.add(record["file"])
            self._touch(record["file"], t)
        if record.get("failures_file"):
            self.files.add(record["failures_file"])
        for image_id, (group, row) in record["index"].items():
            self._add(image_id, Location(record["file"], group, row, t), list(record["sources"][image_id]))
        for image_id, move in record.get("relocated", {}).items():
            self._relocate(image_id, move, record["file"], t)
        for image_id, committed_at in record.get("expired", []):
            self.older[image_id] = [v for v in self.older.get(image_id, []) if v[0].committed_at != committed_at]
            if not self.older[image_id]:
                del self.older[image_id]
        for f in record.get("failures", []):
            if f["time"] >= self.failures.get(f["image_id"], {}).get("time", ""):
                self.failures[f["image_id"]] = f

    def _touch(self, file: str, t: str) -> None:
        self.touched[file] = max(self.touched.get(file, ""), t)

    def _remove(self, image_id: str, t: str) -> None:
        live = self.index.get(image_id)
        if live is not None and live.committed_at <= t:
            self._retire(image_id, live, self.sources.pop(image_id), t)
            del self.index[image_id]
        if live is None or live.committed_at <= t:
            self.removed[image_id] = max(self.removed.get(image_id, ""), t)

    def _add(self, image_id: str, loc: Location, source: list) -> None:
        live = self.index.get(image_id)
        if loc.committed_at < self.removed.get(image_id, ""):  # older than a tombstone: kept as old
            self._retire(image_id, loc, source, self.removed[image_id])
        elif live is None:
            self.index[image_id], self.sources[image_id] = loc, source
            self.removed.pop(image_id, None)
        elif live.committed_at <= loc.committed_at:
            self._retire(image_id, live, self.sources[image_id], loc.committed_at)
            self.index[image_id], self.sources[image_id] = loc, source
        else:
            self._retire(image_id, loc, source, live.committed_at)

    def _retire(self, image_id: str, loc: Location, source: list, superseded_at: str) -> None:
        versions = self.older.setdefault(image_id, [])
        versions.append((loc, source, superseded_at))
        versions.sort(key=lambda v: v[0].committed_at)

    def _relocate(self, image_id: str, move: list, new_file: str, t: str) -> None:
        """Compaction copied the version committed at move[0] from (file, group, row) to its
        new file: point at the copy, if that version still sits where the copy came from."""
        committed_at, old_file, old_group, old_row, group, row = move
        old = Location(old_file, old_group, old_row, committed_at)
        new = Location(new_file, group, row, committed_at)
        if self.index.get(image_id) == old:
            self.index[image_id] = new
        else:
            versions = self.older.get(image_id, [])
            hit = [k for k, v in enumerate(versions) if v[0] == old]
            if not hit:
                return
            loc, source, superseded_at = versions[hit[0]]
            versions[hit[0]] = (new, source, superseded_at)
        self._touch(old_file, t)  # its readers may still read it: kept for the retention period

    def versions(self, image_id: str) -> list[Location]:
        out = [v[0] for v in self.older.get(image_id, [])]
        if image_id in self.index:
            out.append(self.index[image_id])
        return sorted(out, key=lambda loc: loc.committed_at)

    def open_failures(self) -> list[dict]:
        """A failure counts until a later run archives that input."""
        return [f for f in self.failures.values()
                if f["image_id"] not in self.index or self.index[f["image_id"]].committed_at < f["time"]]

    def referenced_files(self) -> set[str]:
        files = [pc.unique(m.table(["file"]).column("file")) for m in (self.index, self.older)]
        return {f for column in files for f in column.to_pylist() if f is not None}

    def live(self, columns: list[str] | None = None) -> pa.Table:
        """The live images as a table: image_id and `columns` (default: file, row_group, row,
        committed_at, source_uri, source_etag, source_size), sorted by id. Vectorised, for bulk
        questions and checkpoints."""
        columns = LOC + SRC if columns is None else columns
        index = self.index.table([c for c in LOC if c in columns], TYPES)
        sources = self.sources.table([c for c in SRC if c in columns], TYPES)
        if not index.column("image_id").equals(sources.column("image_id")):  # never expected: join, not guess
            index = index.join(sources, "image_id").sort_by("image_id")
        else:
            for name in sources.column_names[1:]:
                index = index.append_column(name, sources.column(name))
        return index.select(["image_id", *columns])


def _no_gc(build):
    """Millions of small tuples and lists make Python's cycle collector run again and again
    (none of them can form a cycle): build without it, 5-10x faster."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return build(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()
    return wrapper


def _table(state: State) -> pa.Table:
    """The checkpoint's rows: live, then old, then removed, each sorted by image id (vectorised)."""
    return pa.concat_tables([_part("live", state.live()), _part("old", state.older.table(OLD, TYPES)),
                             _part("removed", state.removed.table(["committed_at"], TYPES))])


def _part(kind: str, table: pa.Table) -> pa.Table:
    n = len(table)
    return pa.table({name: pa.repeat(pa.scalar(kind), n) if name == "kind" else
                     table.column(name).cast(TYPES[name]) if name in table.column_names else pa.nulls(n, TYPES[name])
                     for name in CHECKPOINT_SCHEMA.names}, schema=CHECKPOINT_SCHEMA)


def _state(source: pa.Table | bytes, meta: dict) -> State:
    """The state of a checkpoint's rows without a Python object per row: the image ids of each
    kind and, on first use, their other columns (decoded from `source`: a table, or the file's bytes)."""
    fetch = _Columns(source)
    live = Rows.of_kind(fetch, "live", ["image_id"])
    for name in LOC:  # every decode by id needs them: decoded now, not on the first one (sources wait for a rerun)
        live.column(name)
    return State(index=_index(live), sources=_sources(live),
                 older=_older(Rows.of_kind(fetch, "old", ["image_id", "committed_at"])),
                 removed=_removed(Rows.of_kind(fetch, "removed", ["image_id"])),
                 failures={f["image_id"]: f for f in meta["failures"]}, files=set(meta["files"]),
                 touched=dict(meta["touched"]), damaged=list(meta["damaged"]))


class _Columns:
    """name -> that whole column of a checkpoint as one Arrow array, decoded once. Keeps the
    file's bytes (a few MB at a million images), so it pickles without the open reader."""

    def __init__(self, source: pa.Table | bytes):
        self._source, self._cache, self._file = source, {}, None

    def __call__(self, name: str) -> pa.Array:
        if name not in self._cache:
            if isinstance(self._source, pa.Table):
                column = self._source.column(name)
            else:
                if self._file is None:
                    self._file = pq.ParquetFile(pa.BufferReader(self._source))
                column = self._file.read(columns=[name]).column(0)
            self._cache[name] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        return self._cache[name]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None}


@dataclass
class Checkpoint:
    name: str  # file name in _checkpoints/
    marker: str  # every record named at or below it is covered
    covered: set[str]  # records named above the marker that are covered
    state: State


def write_checkpoint(fs, root: str, state: State, listed_at: dt.datetime, covered: set[str]) -> str:
    """Publish `state` (the fold of `covered` and every record at or below the marker) as a
    new checkpoint; `listed_at`: when the listing of _commits/ it was built from began."""
    marker = LOG_PREFIX + stamp(listed_at - GRACE)
    meta = {"marker": marker, "covered": sorted(n for n in covered if n > marker),
            "failures": sorted(state.failures.values(), key=lambda f: f["image_id"]),
            "files": sorted(state.files), "touched": state.touched, "damaged": sorted(state.damaged),
            "format": 1}
    table = _table(state).replace_schema_metadata({"lowrank_batch.checkpoint": json.dumps(meta)})
    name = f"{stamp(listed_at)}-{uuid.uuid4().hex[:8]}.parquet"
    path = f"{root}/{CHECKPOINTS_DIR}/{name}"
    from .writer import _write_file  # a partial upload is abandoned, never published

    fs.makedirs(f"{root}/{CHECKPOINTS_DIR}", exist_ok=True)
    if _is_local(fs):  # a reader must never see half a checkpoint: write aside, then rename
        tmp = f"{root}/{CHECKPOINTS_DIR}/.{name}.tmp"
        _write_file(fs, tmp, lambda f: pq.write_table(table, f, compression="zstd"))
        os.replace(tmp, path)
    else:  # one object PUT (multipart completes atomically)
        _write_file(fs, path, lambda f: pq.write_table(table, f, compression="zstd"))
    return name


def read_newest(fs, root: str) -> Checkpoint | None:
    """The newest readable checkpoint (an unreadable one is skipped: older ones stay correct)."""
    for name in reversed(list_names(fs, f"{root}/{CHECKPOINTS_DIR}")):
        if not name.endswith(".parquet"):
            continue
        try:
            # one GET; columns are decoded from memory when first needed (opening needs the ids)
            raw = fs.cat_file(f"{root}/{CHECKPOINTS_DIR}/{name}")
            schema = pq.read_schema(pa.BufferReader(raw))
            meta = json.loads(schema.metadata[b"lowrank_batch.checkpoint"])
            if not set(CHECKPOINT_SCHEMA.names) <= set(schema.names):
                raise ValueError(f"checkpoint {name} lacks columns")
            return Checkpoint(name, meta["marker"], set(meta["covered"]), _state(raw, meta))
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            continue
    return None


@_no_gc
def load(fs, root: str, parse) -> tuple[State, set[str], dt.datetime, Checkpoint | None, int]:
    """(state, records it covers beyond the checkpoint's marker, when listing began, the
    checkpoint used, records read). `parse(path, raw)` returns a valid record or None."""
    listed_at = dt.datetime.now(dt.timezone.utc)
    checkpoint = read_newest(fs, root)
    state = checkpoint.state if checkpoint else State()
    covered = set(checkpoint.covered) if checkpoint else set()
    marker = checkpoint.marker if checkpoint else ""
    names = [n for n in list_names(fs, f"{root}/{COMMITS_DIR}", marker)
             if n.endswith(".json") and n not in covered]
    paths = [f"{root}/{COMMITS_DIR}/{n}" for n in names]
    records = []
    for path, raw in (fs.cat(paths) if paths else {}).items():
        record = parse(path, raw)
        if record is None:
            state.damaged.append(posixpath.basename(path))
        else:
            records.append(record)
    for record in sorted(records, key=lambda r: r["committed_at"]):
        state.apply(record)
    state.damaged = sorted(set(state.damaged))
    return state, covered | set(names), listed_at, checkpoint, len(names)


def _newest_position(fs, root: str) -> tuple[str, set[str]]:
    """(marker, covered) of the newest readable checkpoint, from its footer alone; ("", {}) if none."""
    for name in reversed(list_names(fs, f"{root}/{CHECKPOINTS_DIR}")):
        if not name.endswith(".parquet"):
            continue
        try:
            with fs.open(f"{root}/{CHECKPOINTS_DIR}/{name}", "rb") as f:
                meta = json.loads(pq.read_schema(f).metadata[b"lowrank_batch.checkpoint"])
            return meta["marker"], set(meta["covered"])
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            continue
    return "", set()


def pending(fs, root: str) -> int:
    """How many commit records an open would read on top of the newest checkpoint (two listings
    and a footer: a run that committed nothing learns it needs no checkpoint without reading one)."""
    marker, covered = _newest_position(fs, root)
    return sum(1 for n in list_names(fs, f"{root}/{COMMITS_DIR}", marker) if n.endswith(".json") and n not in covered)


def checkpoint(fs, root: str, parse, force: bool = False) -> str | None:
    """Write a checkpoint when opening reads CHECKPOINT_EVERY records or more (or `force`);
    its name, else None."""
    if not force and pending(fs, root) < CHECKPOINT_EVERY:
        return None
    state, covered, listed_at, _, read = load(fs, root, parse)
    if read < CHECKPOINT_EVERY and not force:
        return None
    return write_checkpoint(fs, root, state, listed_at, covered)
