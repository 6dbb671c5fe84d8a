"""A mapping over a checkpoint's rows without a Python object per row.

An archive of a million images has a million live rows in its checkpoint. Building a dict of
them on every open costs seconds; an `Overlay` keeps them as Arrow columns sorted by image id
(the base) and records what changed since (commit records read on top of the checkpoint) in
a dict. A lookup binary-searches the id column (about 20 steps of half a microsecond for a
million ids) and builds the value from that one row; bulk questions (every id, ids per file,
the sources of a rerun) are answered by Arrow compute over whole columns (`table`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc


class Rows:
    """Rows of one kind of a checkpoint: their image ids (sorted) and their other columns, each
    decoded on first use. `fetch(name)` gives a column of the whole checkpoint; `take` (a slice,
    or row numbers) picks this kind's rows in id order."""

    def __init__(self, fetch: Callable[[str], pa.Array], take: pa.Array | slice):
        self._fetch, self._take = fetch, take
        self._columns: dict[str, pa.Array] = {}
        self.keys = self.column("image_id")

    def column(self, name: str) -> pa.Array:
        if name not in self._columns:
            whole = self._fetch(name)
            self._columns[name] = whole[self._take] if isinstance(self._take, slice) else whole.take(self._take)
        return self._columns[name]

    def value(self, name: str, k: int):
        return self.column(name)[k].as_py()

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of_kind(cls, fetch: Callable[[str], pa.Array], kind: str, order: list[str]) -> "Rows":
        """The rows whose `kind` column is `kind`, sorted by `order` (image_id first). Checkpoints
        are written in that order already: checked with one vectorised pass, sorted otherwise."""
        where = pc.indices_nonzero(pc.equal(fetch("kind"), kind))
        keys = fetch("image_id").take(where)
        if len(where) > 1 and not pc.all(pc.less_equal(keys[:-1], keys[1:])).as_py():
            part = pa.table({name: fetch(name).take(where) for name in order})
            where = where.take(pc.sort_indices(part, sort_keys=[(name, "ascending") for name in order]))
        n = len(where)
        if n and where[n - 1].as_py() - where[0].as_py() == n - 1 and (
                n == 1 or pc.all(pc.less(where[:-1], where[1:])).as_py()):
            return cls(fetch, slice(where[0].as_py(), where[0].as_py() + n))  # a run of rows: no copy
        return cls(fetch, where)


class _ListRows:
    """Rows with Python lists for columns: the values of many rows at once."""

    def __init__(self, base: Rows, columns: list[str]):
        self.keys = base.keys.to_pylist()
        self._lists = {c: base.column(c).to_pylist() for c in columns}

    def value(self, name: str, k: int):
        return self._lists[name][k]


class Overlay(MutableMapping):
    """image id -> value: `base` rows (sorted by id) under a dict of changes.

    make(rows, lo, hi) builds the value of the base rows lo..hi-1 (one id; several rows only
    when `grouped`); unmake(value) gives its rows back as tuples in `columns` order. A grouped
    value is a list changed in place by its users: it moves into the dict when first read."""

    def __init__(self, columns: list[str], make, unmake, base: Rows | None = None, grouped: bool = False,
                 types: dict[str, pa.DataType] | None = None):
        self.columns, self._make, self._unmake, self.grouped = columns, make, unmake, grouped
        self.types = types or {}  # Arrow types of the columns (else inferred from the values)
        self.base = base
        self._changed: dict = {}
        self._dropped: set[str] = set()  # base ids deleted since
        self._added = 0  # ids in _changed that the base lacks

    # ---------------------------------------------------------------- the base
    def _span(self, key: str) -> tuple[int, int]:
        """Rows lo..hi-1 of the base with id `key` (lo == hi: none)."""
        base = self.base
        if base is None or not len(base) or not isinstance(key, str):
            return 0, 0
        keys = base.keys
        lo, hi = 0, len(keys)
        while lo < hi:  # bisect_left: Arrow orders strings by UTF-8 bytes, as Python orders code points
            mid = (lo + hi) // 2
            if keys[mid].as_py() < key:
                lo = mid + 1
            else:
                hi = mid
        end = lo
        while end < len(keys) and keys[end].as_py() == key:
            end += 1
            if not self.grouped:
                break
        return lo, end

    def _in_base(self, key: str) -> bool:
        lo, hi = self._span(key)
        return hi > lo

    # ---------------------------------------------------------------- the mapping
    def __getitem__(self, key):
        if key in self._changed:
            return self._changed[key]
        if key in self._dropped:
            raise KeyError(key)
        lo, hi = self._span(key)
        if hi == lo:
            raise KeyError(key)
        value = self._make(self.base, lo, hi)
        if self.grouped:  # its users change it in place
            self._changed[key] = value
        return value

    def __setitem__(self, key, value) -> None:
        if key not in self._changed and not (key in self._dropped or self._in_base(key)):
            self._added += 1
        self._changed[key] = value
        self._dropped.discard(key)

    def __delitem__(self, key) -> None:
        if key in self._dropped:
            raise KeyError(key)
        in_base = self._in_base(key)
        if key in self._changed:
            del self._changed[key]
            if in_base:
                self._dropped.add(key)
            else:
                self._added -= 1
        elif in_base:
            self._dropped.add(key)
        else:
            raise KeyError(key)

    def __contains__(self, key) -> bool:
        if key in self._changed:
            return True
        return key not in self._dropped and self._in_base(key)

    def __len__(self) -> int:
        base_ids = len(self.base.keys) if self.base is not None else 0
        if self.grouped and base_ids:
            base_ids = len(pc.unique(self.base.keys))
        return base_ids - len(self._dropped) + self._added

    def __iter__(self) -> Iterator[str]:
        hidden = self._dropped | self._changed.keys()
        if self.base is not None:
            seen = None
            for key in self.base.keys.to_pylist():
                if key not in hidden and key != seen:
                    seen = key
                    yield key
        yield from list(self._changed)

    def items(self):
        """(id, value) pairs in bulk: the base's columns converted once, not row by row (a
        grouped value read this way is a copy: change one through `self[id]`)."""
        out = list(self._changed.items())
        if self.base is None or not len(self.base):
            return out
        hidden = self._dropped | self._changed.keys()
        rows = _ListRows(self.base, self.columns)
        keys = rows.keys
        lo = 0
        while lo < len(keys):
            hi = lo + 1
            while self.grouped and hi < len(keys) and keys[hi] == keys[lo]:
                hi += 1
            if keys[lo] not in hidden:
                out.append((keys[lo], self._make(rows, lo, hi)))
            lo = hi
        return out

    def values(self):
        return [v for _, v in self.items()]

    # ---------------------------------------------------------------- in bulk
    def table(self, columns: list[str] | None = None, types: dict[str, pa.DataType] | None = None) -> pa.Table:
        """image_id + `columns` (default all) of every entry, sorted by id: the base's rows
        that did not change (one vectorised filter) and the changed entries' rows."""
        columns = self.columns if columns is None else columns
        types = {**self.types, **(types or {})}
        parts = []
        if self.base is not None and len(self.base):
            base = pa.table({"image_id": self.base.keys, **{c: self.base.column(c) for c in columns}})
            hidden = self._dropped | self._changed.keys()
            if hidden:
                base = base.filter(pc.invert(pc.is_in(base.column("image_id"),
                                                      value_set=pa.array(sorted(hidden), pa.string()))))
            parts.append(base)
        rows = [(key, *row) for key, value in self._changed.items() for row in self._unmake(value)]
        if rows or not parts:
            where = [self.columns.index(c) + 1 for c in columns]
            parts.append(pa.table({"image_id": pa.array([r[0] for r in rows], pa.string()),
                                   **{c: pa.array([r[w] for r in rows], types.get(c))
                                      for c, w in zip(columns, where)}}))
        if len(parts) > 1:
            parts = [parts[0], parts[1].cast(parts[0].schema)]
            table = pa.concat_tables(parts)
        else:
            table = parts[0]
        if self._changed:  # the base alone is sorted already
            keys = [("image_id", "ascending")] + ([("committed_at", "ascending")]
                                                  if self.grouped and "committed_at" in columns else [])
            table = table.sort_by(keys)
        return table

    def keys_sorted(self) -> list[str]:
        """Every id, sorted (vectorised; one Python string per id at the end)."""
        keys = self.table([]).column("image_id")
        if self.grouped:
            keys = pc.unique(keys)
        return keys.to_pylist()
