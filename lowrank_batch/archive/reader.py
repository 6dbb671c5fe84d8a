"""Read an archive: committed files only, one image's row by id with a ranged row-group read.

Rows come back as stored (latent and residual bytes); turning them into pixels is decode.py's job,
so reading an archive needs neither the codec nor torch."""

from __future__ import annotations

import json
import posixpath
from typing import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import LowrankError
from . import checkpoint as ckpt
from .checkpoint import Location, State
from .records import valid_commit_record
from .schema import DATA_DIR, LATER_COLUMNS

ROW_COLUMNS = ["image_id", "latent", "residual"]
FOOTER_CACHE = 256  # footers kept per open archive (~10 KB for a unit's file, ~120 KB for a compacted one)


class ArchiveError(LowrankError):
    """An archive is missing, damaged, or lacks the requested image."""



def parse_record(path: str, raw: bytes) -> dict | None:
    """A commit record's JSON, or None when it is damaged (verify names it; a rerun encodes
    its sources again, as they are no longer archived)."""
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if valid_commit_record(record) else None


class Archive:
    def __init__(self, fs, root: str, state: State | None = None):
        state = state if state is not None else State()
        self.fs, self.root, self.state = fs, root.rstrip("/"), state
        self._index, self.sources = state.index, state.sources  # id -> Location / [uri, etag, size]
        self._failures = state.open_failures()
        self.committed_files = state.files
        self._footers: dict = {}  # data file -> its Parquet footer (FileMetaData), oldest first
        self.damaged_records: list[str] = list(state.damaged)  # one damaged record hides its unit's images only
        self.log_position: tuple[str, frozenset[str]] = ("", frozenset())  # see changed_since

    @classmethod
    def open(cls, uri: str) -> "Archive":
        """The archive's committed state: its newest checkpoint plus the commit records since
        (checkpoint.py), so opening costs the same whatever the archive's history, and no
        Python work per image (the checkpoint's rows stay Arrow columns: overlay.py)."""
        fs, root = fsspec.core.url_to_fs(uri)
        root = root.rstrip("/")
        fs.invalidate_cache()  # s3fs caches listings (children too); workers in other processes commit
        state, covered, _, checkpoint, read = ckpt.load(fs, root, parse_record)
        if checkpoint is None and not read and not fs.exists(root):
            raise ArchiveError(f"no archive at {uri}")
        archive = cls.from_state(fs, root, state)
        archive.uri = uri
        archive.log_position = (checkpoint.marker if checkpoint else "", frozenset(covered))
        return archive

    @classmethod
    def from_state(cls, fs, root: str, state: State) -> "Archive":
        return cls(fs, root, state)

    def changed_since_open(self) -> bool:
        """Whether a commit landed since this archive was opened: one listing of the records
        named after the checkpoint's marker it opened with (what open would read on top)."""
        marker, covered = self.log_position
        self.fs.invalidate_cache()
        names = ckpt.list_names(self.fs, f"{self.root}/{ckpt.COMMITS_DIR}", marker)
        return any(n.endswith(".json") and n not in covered for n in names)

    def compact(self, **options):
        """Merge small data files (maintenance.compact); this object keeps its state, reopen to see it."""
        from .maintenance import compact

        return compact(self.uri, **options)

    def vacuum(self, **options):
        """Expire old versions past the retention and delete unreferenced files (maintenance.vacuum)."""
        from .maintenance import vacuum

        return vacuum(self.uri, **options)

    def to_arrow(self, columns: list[str] | None = None):
        """The live rows as a pyarrow Table: one per live image, sorted by id (table.py)."""
        from .table import to_arrow

        return to_arrow(self, columns)

    def to_pandas(self, columns: list[str] | None = None):
        return self.to_arrow(columns).to_pandas()

    def to_ray_dataset(self, columns: list[str] | None = None, decode: str | None = None, **options):
        """Live images as a Ray Dataset: latents (+ preview or full pixels), decoded on the cluster."""
        from ..pipeline.dataset import to_ray_dataset  # decodes: lives above archive/ (see tests/test_layers.py)

        return to_ray_dataset(self, columns, decode, **options)

    def torch_dataset(self, columns: list[str] | None = None, decode: str | None = None, **options):
        """Live images as a torch IterableDataset, sharded over DataLoader workers and ranks."""
        from ..pipeline.dataset import torch_dataset

        return torch_dataset(self, columns, decode, **options)

    def live_files(self) -> set[str]:
        """Data files that hold a live version of some image."""
        return set(pc.unique(self._index.table(["file"]).column("file")).to_pylist())

    def missing_files(self) -> set[str]:
        """Committed data files that are no longer there (one listing)."""
        present = {posixpath.relpath(p, self.root) for p in self.fs.glob(f"{self.root}/{DATA_DIR}/*.parquet")}
        return self.live_files() - present

    def ids_in_files(self, files: set[str]) -> list[str]:
        if not files:
            return []
        live = self._index.table(["file"])
        mask = pc.is_in(live.column("file"), value_set=pa.array(sorted(files), pa.string()))
        return live.column("image_id").filter(mask).to_pylist()

    def by_file(self) -> dict[str, list[str]]:
        """Live image ids grouped by data file, both sorted (vectorised)."""
        grouped = self._index.table(["file"]).group_by("file").aggregate([("image_id", "list")])
        ids = grouped.column("image_id_list").to_pylist()
        return {f: sorted(i) for f, i in sorted(zip(grouped.column("file").to_pylist(), ids))}

    def damaged_record_ids(self) -> dict[str, list[str]]:
        """For each unreadable commit record, the ids in its data file (same name stem), if readable."""
        out = {}
        for name in self.damaged_records:
            path = f"{self.root}/{DATA_DIR}/{ckpt.unit_name(name)}.parquet"
            try:
                with self.fs.open(path, "rb") as f:
                    out[name] = sorted(pq.read_table(f, columns=["image_id"]).column("image_id").to_pylist())
            except Exception:  # its data file is damaged or gone too
                out[name] = []
        return out

    def versions(self, image_id: str) -> list[str]:
        """Commit times of every stored version of an image, oldest first (until compaction)."""
        return [loc.committed_at for loc in self._all_versions(image_id)]

    def _all_versions(self, image_id: str) -> list[Location]:
        return self.state.versions(image_id)

    def failures(self) -> list[dict]:
        """Inputs that failed and have not been archived since: id, source, stage, error, run, time."""
        return sorted(self._failures, key=lambda f: (f["time"], f["image_id"]))

    def ids(self) -> list[str]:
        return self._index.keys_sorted()

    def __len__(self) -> int:
        return len(self._index)

    def row(self, image_id: str, columns: list[str] | None = None, version: int | None = None) -> dict:
        """One image's row, reading only its row group (footer + one range). `version` picks an
        older version (0 = oldest, -1 = latest, as `versions()` lists them)."""
        loc = self._index.get(image_id)
        if loc is None:
            raise ArchiveError(f"no image {image_id!r} in archive {self.root} ({len(self)} images)")
        if version is not None:
            versions = self._all_versions(image_id)
            try:
                loc = versions[version]
            except IndexError:
                raise ArchiveError(f"image {image_id!r} has {len(versions)} versions, not {version}") from None
        path = f"{self.root}/{loc.file}"
        if columns is not None:  # the id is always read: it proves the index points at the right row
            columns = list(dict.fromkeys(["image_id", *columns]))
        try:
            # no readahead: fetch exactly the footer and the row group's column chunks
            with self.fs.open(path, "rb", cache_type="none") as f:
                footer = self._footers.get(loc.file)  # data files never change: a footer read once serves on
                parquet = pq.ParquetFile(f, metadata=footer)
                table = parquet.read_row_group(loc.row_group, columns=_present(columns, parquet.schema_arrow.names))
            if footer is None:
                if len(self._footers) >= FOOTER_CACHE:
                    self._footers.pop(next(iter(self._footers)))
                self._footers[loc.file] = parquet.metadata
        except Exception as exc:  # pyarrow on a damaged file: OSError, ArrowInvalid, and others
            raise ArchiveError(f"image {image_id!r}: cannot read {loc.file} ({type(exc).__name__}: {exc})") from None
        row = _with_later_columns(table.slice(loc.row, 1).to_pylist()[0], columns)
        if row["image_id"] != image_id:
            raise ArchiveError(f"image {image_id!r}: index points at {row['image_id']!r} in {loc.file}")
        return row

    def rows(self, columns: list[str]) -> Iterator[dict]:
        """Committed rows (latest version of each id), for listings."""
        for file, wanted in self.by_file().items():
            wanted_columns = sorted(set(columns) | {"image_id"})
            with self.fs.open(f"{self.root}/{file}", "rb") as f:
                parquet = pq.ParquetFile(f)
                table = parquet.read(columns=_present(wanted_columns, parquet.schema_arrow.names))
            keep = set(wanted)
            for row in table.to_pylist():
                if row["image_id"] in keep:
                    yield _with_later_columns(row, wanted_columns)


def _present(columns: list[str] | None, names: list[str]) -> list[str] | None:
    """The requested columns this data file has: files written before a LATER_COLUMNS column
    existed lack it (and read as None there)."""
    if columns is None:
        return None
    return [c for c in columns if c in names or c not in LATER_COLUMNS]


def _with_later_columns(row: dict, columns: list[str] | None) -> dict:
    for column in LATER_COLUMNS:
        if columns is None or column in columns:
            row.setdefault(column, None)
    return row
