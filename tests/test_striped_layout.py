"""Pure logic: libradosstriper layout arithmetic, piece names, mount option parsing."""
from __future__ import annotations

import pytest

from radosfs.options import OptionError, parse_options, parse_size
from radosfs.store.ownership import NO_OVERRIDE, Ownership
from radosfs.store.striper import Layout, parse_layout, piece_name, split_piece

MiB = 1 << 20


def reference_map(layout: Layout, offset: int) -> tuple[int, int]:
    """libradosstriper's file->object mapping, byte by byte (RadosStriperImpl::...)."""
    su, sc, os_ = layout.stripe_unit, layout.stripe_count, layout.object_size
    blockno, in_block = divmod(offset, su)
    stripeno, stripepos = divmod(blockno, sc)
    objectsetno, unit = divmod(stripeno, os_ // su)
    return objectsetno * sc + stripepos, unit * su + in_block


@pytest.mark.parametrize("layout", [Layout(), Layout(64 << 10, 3, 256 << 10),
                                    Layout(MiB, 4, 4 * MiB)])
def test_extents_cover_the_range_exactly(layout):
    for offset, length in [(0, 1), (0, 10 * MiB), (123457, 5 * MiB + 17), (4 * MiB - 1, 2)]:
        extents = layout.extents(offset, length)
        assert sum(e[2] for e in extents) == length
        pos = offset
        for objectno, obj_off, n, file_off in extents:
            assert file_off == pos
            assert reference_map(layout, file_off) == (objectno, obj_off)
            assert reference_map(layout, file_off + n - 1) == (objectno, obj_off + n - 1)
            pos += n


def test_default_layout_pieces():
    layout = Layout()
    assert layout.object_count(10 * MiB) == 3
    assert [layout.object_length(i, 10 * MiB) for i in range(3)] == [4 * MiB, 4 * MiB, 2 * MiB]
    assert layout.object_length(3, 10 * MiB) == 0


def test_object_length_matches_reference_for_striped_layout():
    layout = Layout(64 << 10, 3, 256 << 10)
    size = 5 * MiB + 12345
    lengths = {}
    for off in range(0, size, 4096):
        obj, obj_off = reference_map(layout, min(off + 4095, size - 1))
        lengths[obj] = max(lengths.get(obj, 0), obj_off + 1)
    for obj in range(layout.object_count(size)):
        assert layout.object_length(obj, size) == lengths.get(obj, 0), obj


def test_piece_names_round_trip():
    assert piece_name("a/b.iso", 0) == "a/b.iso.0000000000000000"
    assert piece_name("x", 255) == "x.00000000000000ff"
    assert split_piece("a/b.iso.00000000000000ff") == ("a/b.iso", 255)
    assert split_piece("a/b.iso") is None
    assert split_piece(".0000000000000000") is None


def test_parse_layout_needs_all_fields():
    good = {"striper.layout.stripe_unit": b"4194304", "striper.layout.stripe_count": b"1",
            "striper.layout.object_size": b"4194304", "striper.size": b"10"}
    assert parse_layout(good) == (Layout(), 10)
    assert parse_layout({k: v for k, v in good.items() if k != "striper.size"}) is None
    assert parse_layout(dict(good, **{"striper.layout.object_size": b"1000"})) is None


def test_bad_layout_is_refused():
    with pytest.raises(Exception):
        Layout(4 * MiB, 1, 6 * MiB)


def test_options():
    mo = parse_options(["conf=/x.conf,id=backup,ro", "uid=12,gid=34,umask=027,cache_size=2G"])
    assert (mo.conf, mo.name, mo.ro, mo.uid, mo.gid) == ("/x.conf", "client.backup", True, 12, 34)
    assert mo.file_mode() == 0o640 and mo.dir_mode() == 0o750
    assert mo.cache_size == 2 << 30
    assert parse_options(["name=client.x,defaults,_netdev"]).name == "client.x"
    for bad in ["frobnicate", "uid=abc", "conf=", "cache_size=lots"]:
        with pytest.raises(OptionError):
            parse_options([bad])
    assert parse_size("512M") == 512 * MiB and parse_size("1.5G") == 3 << 29


def test_ownership_encoding():
    o = Ownership(0o600, 1000, None)
    assert Ownership.decode(o.encode()) == o
    assert Ownership.decode(b"") == NO_OVERRIDE
    assert Ownership.decode(b"mode=0755 junk uid=x") == Ownership(0o755, None, None)
    assert o.merged(gid=5) == Ownership(0o600, 1000, 5)
