"""The local weight store: content-addressed blobs, named versions pointing at them.

    $LOWRANK_HOME (default ~/.cache/lowrank_batch)
      blobs/sha256/<hex>      immutable files, named by their SHA-256
      tmp/                    downloads in progress (same filesystem, so publishing is a rename)
      refs/models.json        [{name, version, sha256, size, architecture, installed_at, source}]
      refs/adapters.json      the same + base_sha256, base_name, source_sha256
      refs/.lock              serialises ref updates between processes

A blob becomes visible only after its digest is verified (os.replace is atomic); two processes
installing the same file both write complete temporaries and the last rename wins with the
same bytes. Refs are rewritten whole under a file lock, then renamed into place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ..errors import WeightsError
from ..hashing import file_sha256

KINDS = ("models", "adapters")
COMMANDS = {"models": "weights", "adapters": "adapters"}  # the CLI command that manages each kind
CHUNK = 1 << 20


@dataclass(frozen=True)
class StoreEntry:
    kind: str
    name: str
    version: int
    sha256: str
    size: int
    architecture: str
    installed_at: str
    source: str
    base_sha256: str | None = None
    base_name: str | None = None
    source_sha256: str | None = None  # digest of what was downloaded (adapters are converted)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def default_root() -> Path:
    return Path(os.environ.get("LOWRANK_HOME") or Path.home() / ".cache" / "lowrank_batch")


class WeightStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_root()
        for sub in ("blobs/sha256", "tmp", "refs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ blobs
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256

    @contextlib.contextmanager
    def download(self, open_source, label: str) -> Iterator[tuple[Path, str, int]]:
        """Stream `open_source()` (a binary file object) into a temporary file in the store,
        hashing as it goes; yields (path, sha256, size) and removes the temporary after."""
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="partial-")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open_source() as src:
                for chunk in iter(lambda: src.read(CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            yield Path(tmp), digest.hexdigest(), size
        except OSError as exc:
            raise WeightsError(f"cannot read {label}: {exc}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def publish(self, tmp: Path, sha256: str) -> Path:
        """Rename a verified temporary into blobs/ (atomic); an existing blob is kept."""
        target = self.blob_path(sha256)
        if not target.exists():
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        return target

    # ------------------------------------------------------------------ refs
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "refs" / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_refs(self, kind: str) -> list[dict]:
        path = self.root / "refs" / f"{kind}.json"
        if not path.exists():
            return []
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise WeightsError(f"weight store index {path} is corrupt ({exc}); fix or remove it") from None

    def _write_refs(self, kind: str, refs: list[dict]) -> None:
        path = self.root / "refs" / f"{kind}.json"
        fd, tmp = tempfile.mkstemp(dir=self.root / "refs", prefix=".refs-")
        with os.fdopen(fd, "w") as f:
            json.dump(refs, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def add_ref(self, kind: str, name: str, sha256: str, size: int, architecture: str, source: str,
                base_sha256: str | None = None, base_name: str | None = None,
                source_sha256: str | None = None) -> StoreEntry:
        """Point `name` at a blob: a new version unless its latest version is that blob already."""
        _check_kind(kind)
        with self._locked():
            refs = self._read_refs(kind)
            mine = [r for r in refs if r["name"] == name]
            if mine and max(mine, key=lambda r: r["version"])["sha256"] == sha256:
                return StoreEntry(kind=kind, **max(mine, key=lambda r: r["version"]))
            entry = StoreEntry(kind, name, 1 + max((r["version"] for r in mine), default=0), sha256, size,
                               architecture, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), source,
                               base_sha256, base_name, source_sha256 or sha256)
            refs.append({k: v for k, v in asdict(entry).items() if k != "kind"})
            self._write_refs(kind, refs)
            return entry

    def entries(self, kind: str) -> list[StoreEntry]:
        _check_kind(kind)
        refs = sorted(self._read_refs(kind), key=lambda r: (r["name"], r["version"]))
        return [StoreEntry(kind=kind, **r) for r in refs]

    def resolve(self, kind: str, ref: str) -> StoreEntry:
        """NAME (latest version), NAME@VERSION, or a SHA-256 (or a prefix of 12+ hex digits)."""
        entries = self.entries(kind)
        name, _, version = ref.partition("@")
        matches = [e for e in entries if e.name == name and (not version or str(e.version) == version)]
        if not matches and len(ref) >= 12:
            matches = [e for e in entries if e.sha256.startswith(ref.lower())]
        if not matches:
            known = ", ".join(sorted({e.ref for e in entries})) or "none"
            raise WeightsError(f"no {kind[:-1]} {ref!r} in the weight store at {self.root} (installed: {known}); "
                               f"install it with: lowrank-batch {COMMANDS[kind]} install SRC --name {name}"
                               + (" --base MODEL" if kind == "adapters" else ""))
        entry = max(matches, key=lambda e: e.version)
        if not self.blob_path(entry.sha256).exists():
            raise WeightsError(f"{kind[:-1]} {entry.ref} ({entry.sha256}) is listed but its blob is missing; "
                               "reinstall it")
        return entry

    def remove(self, kind: str, name: str) -> list[StoreEntry]:
        """Remove every version of `name`; blobs no other ref uses are deleted."""
        _check_kind(kind)
        with self._locked():
            refs = self._read_refs(kind)
            gone = [r for r in refs if r["name"] == name]
            if not gone:
                raise WeightsError(f"no {kind[:-1]} named {name!r} in the weight store at {self.root}")
            self._write_refs(kind, [r for r in refs if r["name"] != name])
            used = {r["sha256"] for k in KINDS for r in self._read_refs(k)}
            for r in gone:
                if r["sha256"] not in used:
                    with contextlib.suppress(FileNotFoundError):
                        self.blob_path(r["sha256"]).unlink()
        return [StoreEntry(kind=kind, **r) for r in gone]

    def verify(self, kind: str, name: str | None = None) -> list[tuple[StoreEntry, str | None]]:
        """Re-hash blobs; (entry, problem or None) for each version checked."""
        results = []
        for entry in self.entries(kind):
            if name and entry.name != name:
                continue
            path = self.blob_path(entry.sha256)
            if not path.exists():
                results.append((entry, "blob missing"))
                continue
            actual = file_sha256(path)
            results.append((entry, None if actual == entry.sha256 else f"blob hashes to {actual}"))
        if name and not results:
            raise WeightsError(f"no {kind[:-1]} named {name!r} in the weight store at {self.root}")
        return results


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
