"""Compaction and vacuum: fewer, bigger data files, and space back from what nothing reads.

Both only ever add commit records (checkpoint.py folds them) and delete files no version in
the archive's state refers to, so they are safe beside a nightly encode and can be killed at
any point:
- compact copies the live rows of small data files into bigger ones; each new file is
  committed by a record of `relocated` rows (image -> the version's time, its old file, row
  group and row, its new row group and row). A move applies only while that version still
  sits where it was copied from, so a row a concurrent run superseded stays superseded.
  Killed before the record: the new file is an orphan (deleted once old); after: done.
- vacuum expires older versions superseded more than `retention` ago (an `expired` record),
  then deletes data files that no version refers to: committed ones once the last record
  naming them (their commit, or compaction moving their rows away) is older than
  `retention` (readers that opened before may still read them), uncommitted ones (a crashed
  writer's, or one still writing) once older than `orphan_age`. It never touches anything
  outside data/ and _checkpoints/ (weights under DST/weights/ stay), nor failure files.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from . import checkpoint as ckpt
from .reader import ArchiveError, parse_record
from .schema import BLOB_COLUMNS, COMMITS_DIR, DATA_DIR, ROWS_PER_GROUP, SCHEMA
from .writer import _write_file, put_atomic

DEFAULT_RETENTION = dt.timedelta(days=7)


@dataclass(frozen=True)
class CompactResult:
    files_before: int
    files_written: int
    rows_moved: int


@dataclass(frozen=True)
class VacuumResult:
    versions_expired: int
    files_deleted: int
    bytes_deleted: int
    checkpoints_deleted: int


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _open(uri: str):
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    fs.invalidate_cache()
    if not fs.exists(f"{root}/{COMMITS_DIR}") and not fs.exists(f"{root}/{ckpt.CHECKPOINTS_DIR}"):
        raise ArchiveError(f"no archive at {uri}")
    return fs, root


def compact(uri: str, target_rows: int = 256, small_rows: int | None = None) -> CompactResult:
    """Copy the live rows of data files holding fewer than `small_rows` (default target_rows / 2)
    live rows into new files of up to `target_rows` rows, in image-id order. Not bigger by
    default: every decode by id reads its file's footer (~1.8 KB per row group of 4 rows), so a
    256-row file costs ~120 KB once per file (the reader caches footers), a 4096-row one 1.9 MB."""
    if target_rows < 1:
        raise ValueError(f"target_rows must be >= 1, got {target_rows}")
    small_rows = target_rows // 2 if small_rows is None else small_rows
    fs, root = _open(uri)
    state, _, _, _, _ = ckpt.load(fs, root, parse_record)
    by_file: dict[str, list[str]] = {}
    for image_id, loc in state.index.items():
        by_file.setdefault(loc.file, []).append(image_id)
    small = sorted(f for f, ids in by_file.items() if len(ids) < small_rows)
    if len(small) < 2:
        return CompactResult(len(by_file), 0, 0)
    moving = sorted(i for f in small for i in by_file[f])
    written = moved = 0
    for start in range(0, len(moving), target_rows):
        batch = moving[start:start + target_rows]
        moved += _move(fs, root, state, batch)
        written += 1
    ckpt.checkpoint(fs, root, parse_record, force=True)
    return CompactResult(len(by_file), written, moved)


def _read_rows(fs, root: str, state: ckpt.State, ids: list[str]) -> list[dict]:
    """The live rows of `ids`, each checked to be the row its location names."""
    by_file: dict[str, list[str]] = {}
    for image_id in ids:
        by_file.setdefault(state.index[image_id].file, []).append(image_id)
    rows = {}
    for file, wanted in by_file.items():
        with fs.open(f"{root}/{file}", "rb") as f:
            table = pq.read_table(f)
        for image_id in wanted:
            loc = state.index[image_id]
            row = table.slice(loc.row_group * ROWS_PER_GROUP + loc.row, 1).to_pylist()[0]
            if row["image_id"] != image_id:  # row groups of another size: never copy the wrong row
                raise ArchiveError(f"compact: {file} row group {loc.row_group} row {loc.row} is "
                                   f"{row['image_id']!r}, not {image_id!r}; nothing was changed")
            rows[image_id] = row
    return [rows[i] for i in ids]


def _move(fs, root: str, state: ckpt.State, ids: list[str]) -> int:
    name = f"compact-{uuid.uuid4().hex[:12]}"
    record_path = f"{root}/{COMMITS_DIR}/{ckpt.record_name(name)}"  # named as writing starts
    rows = _read_rows(fs, root, state, ids)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    data = f"{DATA_DIR}/{name}.parquet"
    _write_file(fs, f"{root}/{data}", lambda f: pq.write_table(
        table, f, row_group_size=ROWS_PER_GROUP, compression="none",
        write_statistics=[c for c in SCHEMA.names if c not in BLOB_COLUMNS]))
    relocated = {}
    for k, image_id in enumerate(ids):
        loc = state.index[image_id]
        relocated[image_id] = [loc.committed_at, loc.file, loc.row_group, loc.row,
                               k // ROWS_PER_GROUP, k % ROWS_PER_GROUP]
    record = {"file": data, "unit_id": "compact", "run_id": name, "rows": len(ids), "index": {},
              "sources": {}, "relocated": relocated, "committed_at": _now(), "stats": {}, "failures": []}
    put_atomic(fs, record_path, json.dumps(record, sort_keys=True).encode())
    return len(ids)


def _expire(fs, root: str, state: ckpt.State, before: str) -> int:
    """Commit the expiry of older versions superseded before `before`; apply it to `state`."""
    expired = [[image_id, v[0].committed_at] for image_id, versions in sorted(state.older.items())
               for v in versions if v[2] < before]
    if not expired:
        return 0
    name = f"vacuum-{uuid.uuid4().hex[:12]}"
    record = {"file": None, "unit_id": "vacuum", "run_id": name, "rows": 0, "index": {}, "sources": {},
              "expired": expired, "committed_at": _now(), "stats": {}, "failures": []}
    put_atomic(fs, f"{root}/{COMMITS_DIR}/{ckpt.record_name(name)}", json.dumps(record, sort_keys=True).encode())
    state.apply(record)
    return len(expired)


def _mtime(fs, path: str) -> float:
    info = fs.info(path)
    modified = info.get("mtime") or info.get("LastModified") or info.get("created")
    return modified.timestamp() if hasattr(modified, "timestamp") else float(modified or time.time())


def vacuum(uri: str, retention: dt.timedelta = DEFAULT_RETENTION,
           orphan_age: dt.timedelta = dt.timedelta(hours=1)) -> VacuumResult:
    """Expire versions superseded more than `retention` ago and delete the data files nothing
    refers to any more (see the module's docstring for which, and when)."""
    if retention < dt.timedelta(0) or orphan_age < dt.timedelta(0):
        raise ValueError(f"retention and orphan age must be >= 0, got {retention}, {orphan_age}")
    fs, root = _open(uri)
    state, _, _, _, _ = ckpt.load(fs, root, parse_record)
    now = dt.datetime.now(dt.timezone.utc)
    before = (now - retention).isoformat(timespec="milliseconds")
    expired = _expire(fs, root, state, before)
    ckpt.checkpoint(fs, root, parse_record, force=True)  # readers stop naming what goes next
    referenced = state.referenced_files()
    deleted = freed = 0
    for path in sorted(fs.glob(f"{root}/{DATA_DIR}/*.parquet")):
        rel = path[len(root) + 1:]
        if rel in referenced:
            continue
        if rel in state.files:  # committed: kept while readers that opened earlier may read it
            if state.touched.get(rel, "") >= before:
                continue
        elif time.time() - _mtime(fs, path) < orphan_age.total_seconds():  # may still be being written
            continue
        freed += fs.info(path).get("size", 0) or 0
        fs.rm(path)
        deleted += 1
    return VacuumResult(expired, deleted, freed, _drop_old_checkpoints(fs, root, now))


def _drop_old_checkpoints(fs, root: str, now: dt.datetime, keep: int = 2) -> int:
    """Checkpoints older than the newest `keep` and than GRACE (a reader may be reading one)."""
    names = [n for n in ckpt.list_names(fs, f"{root}/{ckpt.CHECKPOINTS_DIR}") if n.endswith(".parquet")]
    young = ckpt.stamp(now - ckpt.GRACE)
    old = [n for n in names[:-keep] if n < young] if len(names) > keep else []
    for name in old:
        fs.rm(f"{root}/{ckpt.CHECKPOINTS_DIR}/{name}")
    return len(old)


def parse_duration(text: str) -> dt.timedelta:
    """'7d', '12h', '30m', '45s' or plain seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    value = text.strip().lower()
    try:
        if value and value[-1] in units:
            seconds = float(value[:-1]) * units[value[-1]]
        else:
            seconds = float(value)
    except ValueError:
        raise ValueError(f"retention {text!r}: use a number of seconds or e.g. 7d, 12h, 30m") from None
    if seconds < 0:
        raise ValueError(f"retention {text!r} must be >= 0")
    return dt.timedelta(seconds=seconds)
