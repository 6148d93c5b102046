"""``cowcore report``: the thpmaps rules on hand-made page lists, the three tables and the
JSON form on fork scenarios whose numbers are known by hand, and the command line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

import cowcore
from cowcore.cli import main
from cowcore.report import (
    PMD_ORDER,
    Report,
    ThpPage,
    format_pmap,
    format_smem,
    format_thpmaps,
    parse_cont,
    report_scenario,
    smem_units,
    thp_breakdown,
)
from cowcore.scenario import Scenario, ScenarioSyntaxError

FORK_4K = """\
kernel {kernel}
thp enabled never
P mmap A 2M
P write A 0 2M
P fork C
"""

FORK_2M = """\
kernel {kernel}
thp enabled always
P mmap A 2M
P write A 0 2M
P fork C
"""

FORK_64K = """\
kernel {kernel}
thp enabled never
thp size 64K always
P mmap A 2M
P write A 0 2M
P fork C
"""


def _report(text: str, backend: str, kernel: str = "6.15", cont: tuple[int, ...] = ()) -> Report:
    result = report_scenario(Scenario.parse(text.format(kernel=kernel)), backend=backend, cont=cont)
    assert result.error is None, result.error
    return result.report


def _by_name(report: Report) -> dict[str, dict[str, int]]:
    return {p.name: p.smem() for p in report.processes}


# -- thpmaps rules on page lists -------------------------------------------------------------


def _folio(
    vfn: int, pfn: int, pages: int, first: int = 0, last: int | None = None
) -> list[ThpPage]:
    """Pages ``first..last`` of a folio of ``pages`` pages whose head is ``pfn``, mapped from
    ``vfn`` on (page ``i`` of the folio at ``vfn + i``)."""
    stop = pages if last is None else last
    return [ThpPage(vfn + i, pfn + i, pages) for i in range(first, stop)]


def _nonzero(stats: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in stats.items() if v}


def test_thp_names_and_order() -> None:
    """Every statistic thpmaps prints for anonymous memory, in its order."""
    names = list(thp_breakdown([], 0, cont=[parse_cont("64K")]))
    sizes = [f"{4 << order}kB" for order in range(2, PMD_ORDER + 1)]
    assert names == [
        "anon-thp-pmd-aligned-2048kB",
        *(f"anon-thp-pte-aligned-{s}" for s in sizes),
        *(f"anon-thp-pte-unaligned-{s}" for s in sizes),
        "anon-thp-pte-partial",
        "anon-cont-pmd-aligned-64kB",
        "anon-cont-pte-aligned-64kB",
    ]


@pytest.mark.parametrize(
    ("pages", "anon_huge", "expected"),
    [
        # a whole 64K folio at a 64K-aligned address
        (_folio(0x100, 0x40, 16), 0, {"anon-thp-pte-aligned-64kB": 64}),
        # the same at an address 32K off the 64K grid
        (_folio(0x108, 0x40, 16), 0, {"anon-thp-pte-unaligned-64kB": 64}),
        # two 64K folios back to back in both spaces: two aligned folios
        (_folio(0x100, 0x40, 16) + _folio(0x110, 0x50, 16), 0, {"anon-thp-pte-aligned-64kB": 128}),
        # only the first half mapped: the page after the run is a tail
        (_folio(0x100, 0x40, 16, last=8), 0, {"anon-thp-pte-partial": 32}),
        # only the second half: the run starts on a tail
        (_folio(0x108, 0x40, 16, first=8), 0, {"anon-thp-pte-partial": 32}),
        # page 0 replaced (COW copy): pages 1..15 are partial
        (_folio(0x100, 0x40, 16, first=1), 0, {"anon-thp-pte-partial": 60}),
        # a 2M folio mapped by a PMD: AnonHugePages, not counted again by PTE
        (_folio(0x200, 0x400, 512), 2048, {"anon-thp-pmd-aligned-2048kB": 2048}),
        # the same folio mapped by PTEs
        (_folio(0x200, 0x400, 512), 0, {"anon-thp-pte-aligned-2048kB": 2048}),
        # a 16K and a 32K folio, physically apart
        (_folio(0x104, 0x44, 4) + _folio(0x108, 0x88, 8), 0,
         {"anon-thp-pte-aligned-16kB": 16, "anon-thp-pte-aligned-32kB": 32}),
    ],
)  # fmt: skip
def test_thp_breakdown(pages: list[ThpPage], anon_huge: int, expected: dict[str, int]) -> None:
    assert _nonzero(thp_breakdown(pages, anon_huge)) == expected


def test_cont_blocks() -> None:
    """``--cont 64K``: a PTE-mapped 2M folio gives 32 blocks; a 64K folio mapped 32K off
    the grid gives none; a 128K folio of which 96K is mapped from its start gives one."""
    cont = [parse_cont("64K")]
    pte_2m = thp_breakdown(_folio(0x200, 0x400, 512), 0, cont)
    assert pte_2m["anon-cont-pte-aligned-64kB"] == 2048
    pmd_2m = thp_breakdown(_folio(0x200, 0x400, 512), 2048, cont)
    assert pmd_2m["anon-cont-pte-aligned-64kB"] == 0
    assert pmd_2m["anon-cont-pmd-aligned-64kB"] == 2048
    assert thp_breakdown(_folio(0x108, 0x48, 16), 0, cont)["anon-cont-pte-aligned-64kB"] == 0
    part = thp_breakdown(_folio(0x100, 0x40, 32, last=24), 0, cont)
    assert part["anon-cont-pte-aligned-64kB"] == 64
    assert part["anon-thp-pte-partial"] == 96


@pytest.mark.parametrize(
    ("text", "order"), [("8K", 1), ("64K", 4), ("64k", 4), ("2M", 9), ("65536", 4)]
)
def test_parse_cont(text: str, order: int) -> None:
    assert parse_cont(text) == order


@pytest.mark.parametrize("text", ["4K", "48K", "4M", "x", "K", "1000"])
def test_parse_cont_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--cont"):
        parse_cont(text)


def test_smem_units() -> None:
    """smem's ``units`` of kB amounts."""
    assert [smem_units(kb) for kb in (0, 1, 1023, 1024, 1536, 1 << 20)] == [
        "0",
        "1.0K",
        "1023.0K",
        "1.0M",
        "1.5M",
        "1.0G",
    ]


# -- fork scenarios with numbers known by hand -----------------------------------------------


def test_fork_4k(backend: str) -> None:
    """2 MiB of 4K pages written by P, then fork, C alive: every page is shared by two, so
    each has RSS 2 MiB, PSS 1 MiB, USS 0; after C writes the first 1 MiB, each process
    has 1 MiB private and 1 MiB shared: USS 1 MiB, PSS 1.5 MiB."""
    report = _report(FORK_4K, backend)
    assert _by_name(report) == {
        name: {"Swap": 0, "USS": 0, "PSS": 1024, "RSS": 2048} for name in ("P", "C")
    }
    report = _report(FORK_4K + "C write A 0 1M\n", backend)
    assert _by_name(report) == {
        name: {"Swap": 0, "USS": 1024, "PSS": 1536, "RSS": 2048} for name in ("P", "C")
    }
    for p in report.processes:
        (vma,) = p.mappings
        assert vma.mapping == "A"
        assert vma.perm == "rw-p"
        assert vma.smaps["Shared_Dirty"] == 1024
        assert vma.smaps["Private_Dirty"] == 1024
        assert vma.smaps["Size"] == 2048
        assert _nonzero(vma.thp) == {}  # no THP at all
        assert p.rollup["Pss"] == 1536


def test_smem_sums_the_lines_rollup_rounds_once(backend: str) -> None:
    """Two 4K pages in each of three mappings, each page mapped by three processes: each
    VMA's Pss is 2 * 4096 / 3 bytes (2.67 kB), printed as 2 kB; smem adds the three lines
    (6 kB), smaps_rollup rounds the sum once (6 * 4096 / 3 bytes, 8 kB less the fixed
    point's rounding down per page: 7 kB)."""
    text = "kernel {kernel}\n" + "".join(
        f"P mmap {n} 8K\nP write {n} 0 8K\n" for n in ("A", "B", "C")
    )
    report = _report(text + "P fork C1\nP fork C2\n", backend)
    assert [p.name for p in report.processes] == ["P", "C1", "C2"]
    for p in report.processes:
        assert [m.smaps["Pss"] for m in p.mappings] == [2, 2, 2]
        assert sorted(m.mapping for m in p.mappings) == ["A", "B", "C"]
        assert p.pss == 6
        assert p.rollup["Pss"] == 7
        assert p.rss == p.rollup["Rss"] == 24


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_fork_2m(backend: str, kernel: str) -> None:
    """A PMD-mapped 2M THP, fork, C alive: each maps it by a PMD, PSS 1 MiB each."""
    report = _report(FORK_2M, backend, kernel)
    assert _by_name(report) == {
        name: {"Swap": 0, "USS": 0, "PSS": 1024, "RSS": 2048} for name in ("P", "C")
    }
    for p in report.processes:
        (vma,) = p.mappings
        assert vma.smaps["AnonHugePages"] == 2048
        assert _nonzero(vma.thp) == {"anon-thp-pmd-aligned-2048kB": 2048}


@pytest.mark.parametrize(
    ("kernel", "p_thp"),
    [
        # 6.15 reuses the folio in place: still 32 whole aligned 64K folios
        ("6.15", {"anon-thp-pte-aligned-64kB": 2048}),
        # 6.12 copies page 0: the first folio is mapped from its second page on
        ("6.12", {"anon-thp-pte-aligned-64kB": 1984, "anon-thp-pte-partial": 60}),
    ],
)
def test_fork_64k(backend: str, kernel: str, p_thp: dict[str, int]) -> None:
    """32 64K folios, fork: both see 32 aligned 64K folios; after C exits and P writes
    page 0, the seed's reuse (6.15) or copy (6.12) shows in P's breakdown."""
    report = _report(FORK_64K, backend, kernel, cont=(parse_cont("64K"),))
    for p in report.processes:
        (vma,) = p.mappings
        assert _nonzero(vma.thp) == {
            "anon-thp-pte-aligned-64kB": 2048,
            "anon-cont-pte-aligned-64kB": 2048,
        }
    report = _report(FORK_64K + "C exit\nP write A 0 4K\n", backend, kernel)
    (p,) = report.processes
    assert p.name == "P"
    assert _nonzero(p.mappings[0].thp) == p_thp
    assert p.uss == p.rss == 2048


def test_dontneed_splits_the_picture(backend: str) -> None:
    """MADV_DONTNEED of 8K in the middle of a 64K folio: the folio's other 56K are
    partial (two runs: one ending before a tail, one starting on a tail)."""
    text = FORK_64K.replace("P fork C\n", "P madvise A 16K 8K dontneed\n")
    report = _report(text, backend)
    (vma,) = report.processes[0].mappings
    assert _nonzero(vma.thp) == {"anon-thp-pte-aligned-64kB": 1984, "anon-thp-pte-partial": 56}


def test_mprotect_splits_the_vma(backend: str) -> None:
    """An mprotect in the middle splits the VMA: three rows of mapping A; the PROT_NONE one
    gets no thpmaps statistics, as thpmaps skips it."""
    text = FORK_4K.replace("P fork C\n", "P mprotect A 1M 512K none\n")
    report = _report(text, backend)
    (p,) = report.processes
    assert [(m.perm, m.mapping, m.smaps["Size"]) for m in p.mappings] == [
        ("rw-p", "A", 1024),
        ("---p", "A", 512),
        ("rw-p", "A", 512),
    ]
    assert p.mappings[1].thp == {}
    assert p.rss == 2048


SCENARIOS = sorted((Path(__file__).parent / "kernel" / "scenarios").glob("*.cow"))


@pytest.mark.skipif(len(cowcore.BACKENDS) < 2, reason="one backend in this build")
def test_backends_agree_on_every_scenario() -> None:
    """The report (smaps lines, rollups, thpmaps breakdowns with --cont 64K) is the same on
    both backends at the end of every conformance scenario that parses."""
    checked = 0
    for path in SCENARIOS:
        try:
            scenario = Scenario.parse(path.read_text(), path.stem)
        except ScenarioSyntaxError:
            continue  # the scenarios of syntax errors
        reports = [
            report_scenario(scenario, backend=b, cont=(parse_cont("64K"),)).report
            for b in cowcore.BACKENDS
        ]
        assert all(r == reports[0] for r in reports), path.name
        checked += 1
    assert checked > 50


# -- tables ------------------------------------------------------------------------------------


def test_smem_table(backend: str) -> None:
    report = _report(FORK_4K + "C write A 0 512K\nP mmap B 2M\nP write B 0 1M\n", backend)
    lines = format_smem(report, totals=True).splitlines()
    assert lines[0].split() == ["PID", "Name", "Swap", "USS", "PSS", "RSS"]
    rows = [line.split() for line in lines[1:3]]
    # sorted by PSS: C (512K private, 1.5M shared) before P (1.5M private, 1.5M shared)
    assert [r[1] for r in rows] == ["C", "P"]
    assert rows[0][2:] == ["0", "512", "1280", "2048"]
    assert rows[1][2:] == ["0", "1536", "2304", "3072"]
    assert set(lines[3]) == {"-"}
    assert lines[4].split() == ["2", "0", "2048", "3584", "5120"]
    assert len(lines) == 5
    mb = format_smem(report, totals=True, unit="MB").splitlines()
    assert mb[1].split()[2:] == ["0", "0.5M", "1.2M", "2.0M"]
    assert mb[4].split() == ["2", "0", "2.0M", "3.5M", "5.0M"]
    assert len(format_smem(report).splitlines()) == 3  # no totals


def test_pmap_table(backend: str) -> None:
    report = _report(FORK_2M + "P mmap B 4M\nP write B 0 4K\n", backend)
    text = format_pmap(report)
    blocks = text.split("\n")
    p = next(p for p in report.processes if p.name == "P")
    start = blocks.index(f"{p.pid}:   P")
    header = blocks[start + 1].split()
    assert header == [
        "Address", "Perm", "Size", "Rss", "Pss", "Pss_Dirty", "Referenced", "Anonymous",
        "AnonHugePages", "Swap", "SwapPss", "Mapping",
    ]  # fmt: skip
    rows = [blocks[start + 2].split(), blocks[start + 3].split()]
    by_name = {r[-1]: r for r in rows}
    b = p.mappings[0]  # mmap goes top-down: B lies below A
    assert b.mapping == "B"
    # a 4K write to B faults a whole PMD-mapped THP (thp enabled always), not shared
    assert by_name["B"][:5] == [f"{b.start:x}", "rw-p", "4096", "2048", "2048"]
    assert by_name["A"][1:5] == ["rw-p", "2048", "2048", "1024"]
    assert by_name["A"][header.index("AnonHugePages")] == "2048"
    assert set(blocks[start + 4].replace(" ", "")) == {"="}
    totals = blocks[start + 5].split()
    assert totals[:3] == ["6144", "4096", "3072"]
    assert totals[-1] == "KB"
    # every row is as wide as the header up to the Mapping column
    cut = blocks[start + 1].index("Mapping")
    assert all(len(blocks[start + k][:cut].rstrip()) == cut - 1 for k in (2, 3))


def test_thpmaps_text(backend: str) -> None:
    report = _report(FORK_64K + "C exit\nP write A 0 4K\n", backend, "6.12")
    lines = format_thpmaps(report).splitlines()
    assert lines[0].split()[:3] == ["PID", "START", "END"]
    (p,) = report.processes
    a = p.mappings[0]
    assert lines[1] == (f"{p.pid:010d}: {a.start:016x}-{a.end:016x} rw-p 00000000 00:00 00000000 A")
    assert lines[2:] == [
        "anon-thp-pte-aligned-64kB:          1984 kB (97%)",
        "anon-thp-pte-partial:                 60 kB ( 3%)",
    ]
    every = format_thpmaps(report, inc_empty=True).splitlines()
    assert len(every) == 2 + len(a.thp)


# -- JSON and the command line -----------------------------------------------------------------


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    return status, out.getvalue()


def _scenario_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.cow"
    path.write_text(text)
    return str(path)


def test_json_round_trips(backend: str, tmp_path: Path) -> None:
    path = _scenario_file(tmp_path, FORK_64K.format(kernel="6.12") + "C write A 0 4K\n")
    status, out = _cli("report", path, "--json", "--cont", "64K", "--backend", backend)
    assert status == 0
    data = json.loads(out)
    report = Report.from_json(data)
    assert report.as_json() == data
    assert report == _report(FORK_64K + "C write A 0 4K\n", backend, "6.12", cont=(4,))
    assert data["totals"] == {
        "processes": 2,
        **{k: sum(p["smem"][k] for p in data["processes"]) for k in ("Swap", "USS", "PSS", "RSS")},
    }
    bad = dict(data, totals={"processes": 3})
    with pytest.raises(ValueError, match="derived"):
        Report.from_json(bad)
    with pytest.raises(ValueError, match="not a cowcore report"):
        Report.from_json({"kernel": "6.15"})


def test_report_command_text(tmp_path: Path) -> None:
    path = _scenario_file(tmp_path, FORK_4K.format(kernel="6.15"))
    status, out = _cli("report", path, "-t", "-m")
    assert status == 0
    assert out.startswith("# processes (smem)\n")
    assert "# mappings (pmap -X)\n" in out
    assert "# THPs (thpmaps)\n" in out
    assert "1.0M" in out  # PSS in MB


def test_run_report(tmp_path: Path) -> None:
    """``run --report`` prints the observations, then the report; an error stops the run
    and the report shows the state it stopped in."""
    path = _scenario_file(tmp_path, FORK_4K.format(kernel="6.15") + "P observe A 0 4K\n")
    status, out = _cli("run", path, "--report", "--json")
    assert status == 0
    first, second = out.splitlines()
    assert json.loads(first)["map"] == "A"
    assert len(json.loads(second)["processes"]) == 2
    path = _scenario_file(tmp_path, FORK_4K.format(kernel="6.15") + "C write B 0 4K\n")
    status, out = _cli("run", path, "--report", "--json")
    assert status == 1
    first, second = out.splitlines()
    assert "error" in json.loads(first)
    assert len(json.loads(second)["processes"]) == 2
    status, out = _cli("report", path)
    assert status == 1
    assert out.splitlines()[0].startswith('{"error":')


def test_report_options_need_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _scenario_file(tmp_path, FORK_4K.format(kernel="6.15"))
    with pytest.raises(SystemExit) as exc:
        main(["run", path, "-t"])
    assert exc.value.code == 2
    assert "need --report" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", path, "--cont", "48K"])
