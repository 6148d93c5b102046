"""``cowcore replay``: canonical traces through the facade, the record files, and a real
program's lackey trace."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cowcore.cli import main
from cowcore.errors import InvalidArgumentError
from cowcore.outcome import Outcome, Reason
from cowcore.replay import (
    OPS,
    RECORD_DTYPE,
    TRACE_DTYPE,
    parse_lackey,
    read_trace,
    replay,
    write_records,
)

A = 0x10_0000_0000
CSV = f"""pid,op,address,length,child
7,mmap,{A:#x},2097152,
7,write,{A:#x},12288,
7,fork,0,0,9
9,read,{A + 0x1010:#x},1,
7,write,{A + 0xFF8:#x},16,
9,exit,0,0,
7,write,{A + 0x2000:#x},1,
"""


def _trace(tmp_path: Path, text: str = CSV) -> np.ndarray:
    path = tmp_path / "t.csv"
    path.write_text(text)
    return read_trace(path)


def test_canonical_replay(backend: str, tmp_path: Path) -> None:
    r = replay(_trace(tmp_path), backend=backend)
    rec = r.records
    assert rec.dtype == RECORD_DTYPE
    got = [(int(x["row"]), int(x["pid"]), Outcome(x["outcome"]).name) for x in rec]
    assert got == [
        (1, 7, "ANON_ALLOC"),  # three pages, first touch
        (1, 7, "ANON_ALLOC"),
        (1, 7, "ANON_ALLOC"),
        (3, 9, "NO_FAULT"),  # the child reads the page it inherited
        (4, 7, "COW_COPY"),  # 16 bytes across a page boundary: two pages, both shared
        (4, 7, "COW_COPY"),
        (6, 7, "COW_REUSE"),  # the child is gone: the last page is the parent's alone
    ]
    assert [int(a) for a in rec["addr"]] == [
        A,
        A + 0x1000,
        A + 0x2000,
        A + 0x1010,
        A + 0xFF8,
        A + 0x1000,
        A + 0x2000,
    ]
    assert Reason(rec["reason"][4]) is Reason.SMALL_OTHER_REFS
    assert Reason(rec["reason"][6]) is Reason.SMALL_SOLE_REF
    assert rec["write"].tolist() == [1, 1, 1, 0, 1, 1, 1]
    assert r.summary()[("COW_COPY", "SMALL_OTHER_REFS")] == 2
    assert r.machine.stats().cow_copy == 2


def test_auto_map_and_thp(backend: str) -> None:
    """Without mmap rows, ``auto_map`` maps each touched 2M region; THP settings apply."""
    t = np.zeros(3, dtype=TRACE_DTYPE)
    t["pid"] = 1
    t["op"] = OPS.index("write")
    t["address"] = [A + 5, A + 0x20_0000, A + 0x20_0000 + 4096]
    t["length"] = 1
    unmapped = replay(t, backend=backend).records  # no mapping: each access a segfault
    assert {Reason(r) for r in unmapped["reason"]} == {Reason.SEGV_UNMAPPED}
    r = replay(t, backend=backend, auto_map=True, thp={"64K": "always"})
    assert [Outcome(o) for o in r.records["outcome"]] == [
        Outcome.ANON_ALLOC,
        Outcome.ANON_ALLOC,
        Outcome.NO_FAULT,
    ]
    assert r.records["order"].tolist() == [4, 4, 4]
    assert [(v.start, v.end) for v in r.machine.init.vmas()] == [(A, A + (4 << 20))]


def test_unknown_pid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="pid 8"):
        replay(_trace(tmp_path, f"pid,op,address,length\n7,mmap,{A},4096\n8,read,{A},1\n"))


def test_record_files(tmp_path: Path) -> None:
    rec = replay(_trace(tmp_path)).records
    write_records(rec, tmp_path / "r.npy")
    assert np.array_equal(np.load(tmp_path / "r.npy"), rec)
    write_records(rec, tmp_path / "r.csv")
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert len(lines) == len(rec) + 1
    assert lines[0].startswith("row,pid,write,addr,phys,outcome,reason")
    assert "COW_COPY,SMALL_OTHER_REFS" in lines[5]
    if importlib.util.find_spec("pyarrow") is not None:
        write_records(rec, tmp_path / "r.parquet")
        pq = importlib.import_module("pyarrow.parquet")
        assert pq.read_table(tmp_path / "r.parquet").num_rows == len(rec)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    assert main(["replay", str(path), "--summary", "--out", str(tmp_path / "r.npy")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accesses"] == 7
    assert summary["by_outcome"] == {"ANON_ALLOC": 3, "COW_COPY": 2, "COW_REUSE": 1, "NO_FAULT": 1}
    assert len(np.load(tmp_path / "r.npy")) == 7
    assert main(["replay", str(path), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["outcome"] for row in rows][-1] == "COW_REUSE"
    assert main(["replay", str(path)]) == 0
    assert capsys.readouterr().out.startswith("7 accesses\n")
    assert main(["replay", str(tmp_path / "missing.csv")]) == 2


PROGRAM = r"""
#include <stdlib.h>
int main(void) {
    volatile char *buf = malloc(NPAGES * 4096);
    for (int i = 0; i < NPAGES; i++) buf[i * 4096] = (char)i;
    return buf[4096] == 1 ? 0 : 1;
}
"""


def test_lackey_trace_of_a_real_program(tmp_path: Path) -> None:
    """A program that writes N pages of a malloc'd buffer: replaying its lackey trace
    reports at least N first-touch writes that allocate anonymous memory."""
    missing = [tool for tool in ("valgrind", "gcc") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI installs {' and '.join(missing)} (.ci/run), but it is missing")
        pytest.skip(f"{' and '.join(missing)} not installed")
    n = 40
    (tmp_path / "p.c").write_text(PROGRAM)
    subprocess.run(
        ["gcc", "-O1", f"-DNPAGES={n}", "-o", str(tmp_path / "p"), str(tmp_path / "p.c")],
        check=True,
    )
    log = tmp_path / "p.lackey"
    subprocess.run(
        ["valgrind", "--tool=lackey", "--trace-mem=yes", f"--log-file={log}", str(tmp_path / "p")],
        check=True,
        capture_output=True,
    )
    with open(log) as f:
        trace = parse_lackey(f)
    assert len(trace) > n
    r = replay(trace, auto_map=True)
    outcomes = r.records["outcome"]
    writes = r.records["write"].astype(bool)
    assert not (outcomes == Outcome.SEGFAULT).any()
    assert not (outcomes == Outcome.OUT_OF_MEMORY).any()
    allocs = (outcomes == Outcome.ANON_ALLOC) & writes
    assert int(allocs.sum()) >= n
    # the buffer's pages: n stores one page apart, each a first touch
    stores = r.records[writes & (outcomes == Outcome.ANON_ALLOC)]["addr"] >> np.uint64(12)
    runs = np.diff(np.sort(stores)) == 1
    assert int(runs.sum()) >= n - 1


def test_cli_lackey_excerpt(capsys: pytest.CaptureFixture[str]) -> None:
    """The checked-in excerpt replays with every region mapped on first touch."""
    excerpt = Path(__file__).parent / "data" / "lackey-excerpt.txt"
    assert main(["replay", str(excerpt), "--format", "lackey", "--summary"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accesses"] == 9  # 6 stores, 1 load, 1 modify (a load and a store)
    assert "SEGFAULT" not in summary["by_outcome"]
    assert summary["by_reason"]["ANON_ALLOC/PTE_NONE"] >= 1
