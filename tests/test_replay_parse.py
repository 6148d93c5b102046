"""Reading traces (``cowcore.replay``): the canonical table in its three files, and lackey."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cowcore.replay import (
    OPS,
    READ,
    TRACE_DTYPE,
    WRITE,
    TraceFormatError,
    _pages,
    parse_lackey,
    parse_thp,
    read_trace,
)

EXCERPT = Path(__file__).parent / "data" / "lackey-excerpt.txt"

CSV = """pid,op,address,length,child
7,mmap,0x200000,2097152,
7,write,0x200000,8192,
7,fork,0,0,9
9,read,0x201010,1,
9,exit,0,0,
"""


def test_lackey_excerpt() -> None:
    """The checked-in excerpt (30 lines of a real run): 6 stores, 1 load and 1 modify,
    instruction fetches skipped, ``==pid==`` lines ignored."""
    text = EXCERPT.read_text().splitlines()
    assert len(text) == 30
    t = parse_lackey(text)
    stores = sum(1 for line in text if line.startswith(" S"))
    loads = sum(1 for line in text if line.startswith(" L"))
    modifies = sum(1 for line in text if line.startswith(" M"))
    assert (stores, loads, modifies) == (6, 1, 1)
    assert len(t) == stores + loads + 2 * modifies
    assert int((t["op"] == WRITE).sum()) == stores + modifies
    # the modify is a load then a store of the same bytes, in the trace's order
    m = [i for i, a in enumerate(t["address"].tolist()) if a == 0x04033E06]
    assert [int(t["op"][i]) for i in m] == [READ, WRITE]
    assert m[1] == m[0] + 1
    assert t["address"][0] == 0x1FFF000748
    assert t["length"][0] == 8
    assert set(t["pid"].tolist()) == {1}


def test_lackey_instructions_on_request() -> None:
    text = EXCERPT.read_text().splitlines()
    fetches = sum(1 for line in text if line.startswith("I "))
    assert fetches > 0
    with_i = parse_lackey(text, instructions=True)
    assert len(with_i) == len(parse_lackey(text)) + fetches
    assert int((with_i["op"] == READ).sum()) == fetches + 2


def test_lackey_ignores_other_lines() -> None:
    assert len(parse_lackey(["==1== S 1000,8", "garbage", "", " X 1000,4"])) == 0


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    t = read_trace(path)
    assert t.dtype == TRACE_DTYPE
    assert [OPS[o] for o in t["op"].tolist()] == ["mmap", "write", "fork", "read", "exit"]
    assert t["address"].tolist() == [0x200000, 0x200000, 0, 0x201010, 0]
    assert t["child"][2] == 9
    assert t["pid"].tolist() == [7, 7, 7, 9, 9]


def test_npy_with_string_ops(tmp_path: Path) -> None:
    arr = np.array(
        [(1, "write", 0x1000, 4096), (1, "READ", 0x1000, 1)],
        dtype=[("pid", "<i8"), ("op", "U8"), ("address", "<u8"), ("length", "<u8")],
    )
    np.save(tmp_path / "t.npy", arr)
    t = read_trace(tmp_path / "t.npy")
    assert t["op"].tolist() == [WRITE, READ]


def test_parquet(tmp_path: Path) -> None:
    if importlib.util.find_spec("pyarrow") is None:
        pytest.skip("pyarrow not installed")
    pa = importlib.import_module("pyarrow")  # optional, and without type stubs
    pq = importlib.import_module("pyarrow.parquet")

    pq.write_table(
        pa.table({"pid": [1, 1], "op": ["write", "exit"], "address": [4096, 0], "length": [1, 0]}),
        tmp_path / "t.parquet",
    )
    t = read_trace(tmp_path / "t.parquet")
    assert t["op"].tolist() == [WRITE, OPS.index("exit")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pid,op,address\n1,jump,0\n", "unknown op"),
        ("pid,op\n1,read\n", "no column address"),
        ("pid,op,address\n1,read,zz\n", "not a number"),
        ("pid,op,address\n1,fork,0\n", "child"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(TraceFormatError, match=message):
        read_trace(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="unknown trace file type"):
        read_trace(tmp_path / "t.txt")


def test_pages_of_accesses() -> None:
    """An access touches every page of its bytes: the byte itself on its first page, then
    each later page's first byte."""
    t = np.zeros(3, dtype=TRACE_DTYPE)
    t["address"] = [0x1FF8, 0x5000, 0x7123]
    t["length"] = [16, 0, 0x2000]
    pages, rows = _pages(t)
    assert pages.tolist() == [0x1FF8, 0x2000, 0x5000, 0x7123, 0x8000, 0x9000]
    assert rows.tolist() == [0, 0, 1, 2, 2, 2]


def test_parse_thp() -> None:
    assert parse_thp(["enabled=always", "64K = never"]) == {"enabled": "always", "64K": "never"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_thp(["always"])
