"""Write one work unit's rows: the Parquet file first, then its commit record."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import posixpath
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from .checkpoint import record_name
from .records import ArchiveRow, CommitRecord, FailureRecord
from .schema import BLOB_COLUMNS, COMMITS_DIR, DATA_DIR, FAILURE_SCHEMA, FAILURES_DIR, ROWS_PER_GROUP, SCHEMA


def _is_local(fs) -> bool:
    protocol = getattr(fs, "protocol", ())
    return "file" in ((protocol,) if isinstance(protocol, str) else protocol)


def put_atomic(fs, path: str, data: bytes) -> None:
    """Publish small bytes all at once: rename on local disks, one PUT on object stores."""
    if _is_local(fs):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        try:
            with fs.open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:  # e.g. the disk is full: leave no half-written file behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    else:
        fs.pipe_file(path, data)


def _write_file(fs, path: str, write) -> None:
    """write(f) into a new file at path. On an error an object store's upload is abandoned
    (an unfinished multipart upload would otherwise linger, invisible and billed), not
    completed with what was buffered."""
    f = fs.open(path, "wb")
    try:
        write(f)
    except BaseException:
        with contextlib.suppress(Exception):
            if _is_local(fs):
                f.close()  # a local partial file is removed with the unit's others
            else:
                f.discard()  # aborts the multipart upload
                f.closed = True  # so that garbage collection does not complete it either
        raise
    f.close()


class UnitWriter:
    """Writes the rows of one unit under `root` on filesystem `fs` and commits them."""

    def __init__(self, fs, root: str, unit_id: str, run_id: str):
        self.fs, self.root, self.unit_id, self.run_id = fs, root.rstrip("/"), unit_id, run_id
        self.token = uuid.uuid4().hex[:12]
        self.name = f"{unit_id}-{self.token}"  # of its data, failures and commit files; kept across retries
        # named when the unit starts writing, so that lists after a checkpoint's marker find it
        self.record = record_name(self.name)

    def write(self, rows: list, stats: dict | None = None, failures: list | None = None) -> CommitRecord:
        """Write rows (ArchiveRow, or dicts keyed by schema column) and return the commit record (which also
        carries the unit's statistics and failure records). A unit whose every input failed
        still commits a record, without a data file, so its failures are on record.

        Calling it again after an error rewrites the same keys, so a retry commits once."""
        try:
            return self._write(rows, stats, failures)
        except Exception:
            self._remove_uncommitted()
            raise

    def committed(self) -> bool:
        """Whether this unit's commit record is there (after a write whose reply was lost)."""
        try:
            return self.fs.exists(self._commit_path())
        except Exception:  # the store still unreachable: not known to be committed
            return False

    def _commit_path(self) -> str:
        return f"{self.root}/{COMMITS_DIR}/{self.record}"

    def _remove_uncommitted(self) -> None:
        """After a failed write on a local disk (full, say), free the space its files took:
        its commit cannot have landed (the rename is atomic). On object stores a commit PUT may
        land while its reply is lost, so files stay; the next run removes them if orphaned."""
        if not _is_local(self.fs):
            return
        if os.path.exists(self._commit_path()):
            return
        for folder in (DATA_DIR, FAILURES_DIR):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.root}/{folder}/{self.name}.parquet")

    def _write(self, rows: list, stats: dict | None, failures: list | None) -> CommitRecord:
        rows = sorted((r.to_dict() if isinstance(r, ArchiveRow) else r for r in rows), key=lambda r: r["image_id"])
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        failures = [_failure_dict(f, self.run_id, now) for f in failures or []]
        name = self.name
        failures_file = self._write_failures(name, failures)
        data_file = None
        if rows:
            table = pa.Table.from_pylist(rows, schema=SCHEMA)
            data_file = f"{DATA_DIR}/{name}.parquet"
            self.fs.makedirs(f"{self.root}/{DATA_DIR}", exist_ok=True)
            # statistics only for small columns: min/max of every blob would bloat the footer that
            # each decode-by-id reads
            _write_file(self.fs, f"{self.root}/{data_file}", lambda f: pq.write_table(
                table, f, row_group_size=ROWS_PER_GROUP, compression="none",
                write_statistics=[c for c in SCHEMA.names if c not in BLOB_COLUMNS]))
        record = CommitRecord(
            data_file, self.unit_id, self.run_id, now,
            index={r["image_id"]: [i // ROWS_PER_GROUP, i % ROWS_PER_GROUP] for i, r in enumerate(rows)},
            sources={r["image_id"]: [r["source_uri"], r["source_etag"], r["source_size"]] for r in rows},
            stats=stats or {}, failures=failures, failures_file=failures_file)
        put_atomic(self.fs, self._commit_path(), record.to_json())
        return record

    def _write_failures(self, name: str, failures: list[dict]) -> str | None:
        """The unit's failure records as a Parquet table (committed by the unit's record)."""
        if not failures:
            return None
        path = f"{FAILURES_DIR}/{name}.parquet"
        self.fs.makedirs(f"{self.root}/{FAILURES_DIR}", exist_ok=True)
        table = pa.Table.from_pylist([{k: f.get(k) for k in FAILURE_SCHEMA.names} for f in failures],
                                     schema=FAILURE_SCHEMA)
        _write_file(self.fs, f"{self.root}/{path}", lambda f: pq.write_table(table, f))
        return path


def _failure_dict(failure: FailureRecord | dict, run_id: str, time: str) -> dict:
    """A failure as its commit record stores it, stamped with the run and the commit time."""
    if isinstance(failure, dict):
        failure = FailureRecord(**{k: failure[k] for k in ("image_id", "source_uri", "stage", "error", "message")})
    return failure.stamped(run_id, time).to_dict()
