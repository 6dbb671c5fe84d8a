"""Listing sources and cutting work units: a pure function, tested on its own."""

import fsspec
import pytest

from lowrank_batch.pipeline.units import SourceFile, list_sources, make_units


def files(*names):
    return [SourceFile(f"file:///src/{n}", n, 10, "e") for n in names]


def test_batches_in_id_order_and_tars_alone():
    units = make_units(files("b.png", "a.png", "s1.tar", "c.dcm", "d.png", "s0.tar"), batch_size=2)
    assert [[f.rel for f in u.files] for u in units] == [["a.png", "b.png"], ["c.dcm", "d.png"], ["s0.tar"], ["s1.tar"]]


def test_units_are_deterministic_and_distinct():
    names = [f"img{i:03d}.png" for i in range(50)]
    first, second = make_units(files(*names), 7), make_units(files(*reversed(names)), 7)
    assert first == second
    assert len({u.unit_id for u in first}) == len(first) == 8
    assert sum(len(u.files) for u in first) == 50


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size"):
        make_units(files("a.png"), 0)


def test_list_sources_local_and_memory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(b"1")
    (tmp_path / "sub" / "b.dcm").write_bytes(b"22")
    listed = list_sources(str(tmp_path))
    assert [(f.rel, f.size) for f in listed] == [("a.png", 1), ("sub/b.dcm", 2)]
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/x/one.png", b"abc")
    fs.pipe("/bucket/x/deep/two.png", b"de")
    mem = list_sources("memory://bucket/x")
    assert [(f.rel, f.size, f.uri) for f in mem] == [
        ("deep/two.png", 2, "memory:///bucket/x/deep/two.png"), ("one.png", 3, "memory:///bucket/x/one.png")]
