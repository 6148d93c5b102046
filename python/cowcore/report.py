"""``cowcore report``: a scenario's final state as smem, ``pmap -X`` and thpmaps report it.

docs/accounting.md ("Reports") is the contract. The report has three views, each a pure
function of one :class:`Report`:

- :func:`format_smem`: one row per live process in smem's convention (PID, name, Swap, USS,
  PSS, RSS; smem's column order, widths, sort by PSS and ``-t`` totals row).
- :func:`format_pmap`: one row per VMA in the style of procps ``pmap -X``, with the
  scenario's mapping name in the ``Mapping`` column.
- :func:`format_thpmaps`: each VMA's anonymous memory broken down by how its THPs are mapped,
  with the names and rules of the kernel's ``tools/mm/thpmaps`` (:func:`thp_breakdown`).

:func:`collect` is the only part that reads the machine: it takes what those tools read on a
real system, the kB lines of ``/proc/PID/smaps`` and ``smaps_rollup`` (``Process.smaps()``,
``Process.smaps_rollup()``) and, for thpmaps, the pagemap and kpageflags view of each page
(``Process.observe``), reduced to the three facts thpmaps uses. A :class:`Report` holds kB
values only, as the tools see them, so its JSON form (:meth:`Report.as_json`) round-trips
exactly (:meth:`Report.from_json`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from cowcore.errors import ScenarioError
from cowcore.machine import Machine, Process
from cowcore.protocol import SMAPS_KB_FIELDS, PageObservation, Smaps
from cowcore.scenario import Observation, Scenario, _Runner

PAGE_SHIFT = 12
PMD_ORDER = 9
"""``HPAGE_PMD_ORDER`` on x86-64 (thpmaps reads it from ``hpage_pmd_size``)."""

SMAPS_FIELDS: tuple[str, ...] = ("Size", *SMAPS_KB_FIELDS)
"""The kB lines a :class:`MappingReport` keeps: ``Size`` and the lines the model computes."""

PMAP_FIELDS: tuple[str, ...] = (
    "Size",
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Referenced",
    "Anonymous",
    "AnonHugePages",
    "Swap",
    "SwapPss",
)
"""The columns of the ``pmap -X`` table: the smaps lines ``pmap -X`` shows that the model
computes, in smaps order, plus ``AnonHugePages`` (which ``pmap`` shows only with ``-XX``)."""

Unit = Literal["kB", "MB", "abbreviate"]
"""How the smem table prints amounts: kB (smem's default), MB (``-m``), or smem's own
``--abbreviate`` (``smem -k``: the largest unit with a suffix)."""


def _kb_name(order: int) -> str:
    """thpmaps' ``odkb``: the size of an ``order`` block in kB."""
    return f"{(1 << (order + PAGE_SHIFT)) >> 10}kB"


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MappingReport:
    """One VMA: its range, ``maps``-style permissions, the scenario mapping(s) it lies in,
    its smaps kB lines and its thpmaps breakdown."""

    start: int
    end: int
    perm: str
    """As ``/proc/PID/maps`` prints it: ``rw-p``, ``r--p`` or ``---p``."""
    mapping: str
    """The scenario's name of the mapping the VMA lies in (names joined by ``,`` if it
    spans several; empty if none)."""
    smaps: dict[str, int]
    """``Size`` and the smaps lines of the model, in kB as the kernel prints them."""
    thp: dict[str, int]
    """:func:`thp_breakdown` of the VMA, in kB, every statistic (zeros included); empty
    for a VMA thpmaps skips (no access permission, or ``Rss`` 0)."""


@dataclass(frozen=True, slots=True)
class ProcessReport:
    """One live process: its pid, scenario name, VMAs and ``smaps_rollup`` kB lines."""

    pid: int
    name: str
    mappings: tuple[MappingReport, ...]
    rollup: dict[str, int]
    """``/proc/PID/smaps_rollup`` in kB: rounded once over the sums, so it may exceed the
    sum of the per-VMA lines (docs/accounting.md)."""

    def total(self, line: str) -> int:
        """The sum of one smaps line over the VMAs, as smem adds them (``pidtotals``)."""
        return sum(m.smaps[line] for m in self.mappings)

    @property
    def uss(self) -> int:
        """smem's USS: ``Private_Clean + Private_Dirty``, summed over the VMAs (kB)."""
        return self.total("Private_Clean") + self.total("Private_Dirty")

    @property
    def pss(self) -> int:
        return self.total("Pss")

    @property
    def rss(self) -> int:
        return self.total("Rss")

    @property
    def swap(self) -> int:
        return self.total("Swap")

    def smem(self) -> dict[str, int]:
        """The smem row's amounts in kB, in smem's column order."""
        return {"Swap": self.swap, "USS": self.uss, "PSS": self.pss, "RSS": self.rss}


@dataclass(frozen=True, slots=True)
class Report:
    """What ``cowcore report`` prints: the live processes of the final state, by pid."""

    kernel: str
    processes: tuple[ProcessReport, ...]
    cont: tuple[int, ...] = field(default=())
    """The orders of the ``--cont`` block sizes the thpmaps breakdowns include (in the JSON
    form: the sizes in kB)."""

    def totals(self) -> dict[str, int]:
        """smem's ``-t`` row: the number of processes and the sum of each amount."""
        out = {"processes": len(self.processes)}
        for key in ("Swap", "USS", "PSS", "RSS"):
            out[key] = sum(p.smem()[key] for p in self.processes)
        return out

    def as_json(self) -> dict[str, object]:
        """The report as plain JSON values: everything :meth:`from_json` needs, plus the
        smem amounts of each process and the totals row (derived, checked on the way back)."""
        return {
            "kernel": self.kernel,
            "cont": [(1 << (o + PAGE_SHIFT)) >> 10 for o in self.cont],
            "processes": [
                {
                    "pid": p.pid,
                    "name": p.name,
                    "smem": p.smem(),
                    "rollup": dict(p.rollup),
                    "mappings": [
                        {
                            "start": m.start,
                            "end": m.end,
                            "perm": m.perm,
                            "mapping": m.mapping,
                            "smaps": dict(m.smaps),
                            "thp": dict(m.thp),
                        }
                        for m in p.mappings
                    ],
                }
                for p in self.processes
            ],
            "totals": self.totals(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Report:
        """The report :meth:`as_json` wrote (its derived values must agree).

        Raises:
            ValueError: ``data`` is not what :meth:`as_json` writes.
        """
        try:
            procs = []
            for p in _list(data["processes"]):
                mappings = tuple(
                    MappingReport(
                        _int(m["start"]),
                        _int(m["end"]),
                        str(m["perm"]),
                        str(m["mapping"]),
                        _kb_dict(m["smaps"]),
                        _kb_dict(m["thp"]),
                    )
                    for m in _list(p["mappings"])
                )
                procs.append(
                    ProcessReport(_int(p["pid"]), str(p["name"]), mappings, _kb_dict(p["rollup"]))
                )
            cont = tuple(parse_cont(f"{c}K") for c in _ints(data["cont"]))
            report = cls(str(data["kernel"]), tuple(procs), cont)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"not a cowcore report: {exc!r}") from exc
        if report.as_json() != dict(data):
            raise ValueError("not a cowcore report: its derived values disagree")
        return report


def _list(value: object) -> list[dict[str, object]]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, not {type(value).__name__}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, not {type(value).__name__}")
    return value


def _ints(value: object) -> list[int]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, not {type(value).__name__}")
    return [_int(v) for v in value]


def _kb_dict(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, not {type(value).__name__}")
    return {str(k): _int(v) for k, v in value.items()}


# -- thpmaps ---------------------------------------------------------------------------------


class ThpPage(NamedTuple):
    """What thpmaps learns of one present page from pagemap and kpageflags, for a page of
    a THP (``KPF_THP``: a large anonymous folio)."""

    vfn: int
    """Virtual page number (address >> 12)."""
    pfn: int
    folio_pages: int
    """Pages in its folio: with the buddy allocator's natural alignment, the page is the
    folio's head (``KPF_COMPOUND_HEAD``) iff ``pfn % folio_pages == 0``, and the page after
    it is a tail (``KPF_COMPOUND_TAIL``) iff ``(pfn + 1) % folio_pages != 0``."""

    @property
    def head(self) -> bool:
        return self.pfn % self.folio_pages == 0


def thp_pages(observations: Iterable[PageObservation]) -> list[ThpPage]:
    """The pages of large anonymous folios among ``observations``, in address order: the
    pages thpmaps keeps (``vma_parse``: present in pagemap, ``KPF_THP`` in kpageflags).

    The zero page is not a THP; the huge zero page is one for kpageflags, but not anonymous
    (thpmaps would count it as ``file-thp-*``, which this anonymous-only report leaves out).
    """
    return [
        ThpPage(o.addr >> PAGE_SHIFT, o.pfn, o.folio_pages)
        for o in observations
        if o.present
        and o.frame_kind == "normal"
        and o.pfn is not None
        and o.folio_pages is not None
        and o.folio_pages > 1
    ]


def _runs(pages: Sequence[ThpPage]) -> list[tuple[int, int]]:
    """thpmaps' ``cont_ranges_all``: the maximal index ranges ``[i, j)`` over which both the
    virtual and the physical page numbers go up by one."""
    runs: list[tuple[int, int]] = []
    i = 0
    for k in range(1, len(pages) + 1):
        if (
            k == len(pages)
            or pages[k].vfn != pages[k - 1].vfn + 1
            or pages[k].pfn != pages[k - 1].pfn + 1
        ):
            runs.append((i, k))
            i = k
    return runs


def thp_breakdown(
    pages: Sequence[ThpPage], anon_huge_pages_kb: int, cont: Sequence[int] = ()
) -> dict[str, int]:
    """One VMA's anonymous THP statistics, in kB, named and computed as
    ``tools/mm/thpmaps`` does (``thp_parse``, ``cont_parse``), every one (zeros included),
    in thpmaps' order.

    In each run of pages contiguous in both virtual and physical memory, pages before the
    first folio head, and the pages of a last folio that continues past the run, are
    ``anon-thp-pte-partial``; each whole folio in between counts under its size, as
    ``aligned`` if its first virtual page is a multiple of its size, else ``unaligned``.
    PMD-mapped THPs are ``anon-thp-pmd-aligned-2048kB``, which thpmaps takes from smaps'
    ``AnonHugePages`` and subtracts from the PMD-sized aligned count (clamped at 0).
    For each order in ``cont``, ``anon-cont-pte-aligned-<size>kB`` counts the blocks of that
    size, aligned in virtual memory, lying in one folio, in runs whose virtual and physical
    offsets agree modulo the size (less the PMD-mapped pages); ``anon-cont-pmd-aligned-
    <size>kB`` is ``AnonHugePages``, as thpmaps has it.

    Args:
        pages: the VMA's THP pages in address order (:func:`thp_pages`).
        anon_huge_pages_kb: the VMA's ``AnonHugePages`` line.
        cont: block orders (thpmaps ``--cont``), each in ``[1, PMD_ORDER]``.
    """
    aligned = [0] * (PMD_ORDER + 1)
    unaligned = [0] * (PMD_ORDER + 1)
    partial = 0
    runs = _runs(pages)
    for start, stop in runs:
        end = stop
        heads = [k for k in range(start, stop) if pages[k].head]
        # Pages of a folio partly mapped at the front: the run starts on a tail.
        partial += (heads[0] if heads else end) - start
        if heads:
            last = pages[end - 1]
            if (last.pfn + 1) % last.folio_pages != 0:
                # The page after the run is a tail: its last folio is partly mapped.
                nr = end - heads.pop()
                end -= nr
                partial += nr
        for head, after in zip(heads, [*heads[1:], end][: len(heads)], strict=True):
            nr = after - head
            order = nr.bit_length() - 1
            if pages[head].vfn % nr == 0:
                aligned[order] += nr
            else:
                unaligned[order] += nr
    pmd_pages = (anon_huge_pages_kb << 10) >> PAGE_SHIFT
    aligned[PMD_ORDER] = max(0, aligned[PMD_ORDER] - pmd_pages)

    def kb(nr: int) -> int:
        return (nr << PAGE_SHIFT) >> 10

    out = {f"anon-thp-pmd-aligned-{_kb_name(PMD_ORDER)}": anon_huge_pages_kb}
    for order in range(2, PMD_ORDER + 1):
        out[f"anon-thp-pte-aligned-{_kb_name(order)}"] = kb(aligned[order])
    for order in range(2, PMD_ORDER + 1):
        out[f"anon-thp-pte-unaligned-{_kb_name(order)}"] = kb(unaligned[order])
    out["anon-thp-pte-partial"] = kb(partial)
    for order in cont:
        out[f"anon-cont-pmd-aligned-{_kb_name(order)}"] = anon_huge_pages_kb
        out[f"anon-cont-pte-aligned-{_kb_name(order)}"] = kb(
            max(0, _cont_blocks(pages, runs, order) - pmd_pages)
        )
    return out


def _cont_blocks(pages: Sequence[ThpPage], runs: Sequence[tuple[int, int]], order: int) -> int:
    """thpmaps' ``cont_parse``: pages in naturally aligned ``1 << order`` blocks that lie in
    one folio, over the runs whose virtual and physical offsets in such a block agree."""
    nr_cont = 1 << order
    total = 0
    for start, stop in runs:
        vfn, pfn = pages[start].vfn, pages[start].pfn
        if pfn % nr_cont != vfn % nr_cont:
            continue
        k = start + (-vfn % nr_cont)
        while k + nr_cont <= stop:
            if not any(pages[x].head for x in range(k + 1, k + nr_cont)):
                total += nr_cont
            k += nr_cont
    return total


def parse_cont(text: str) -> int:
    """thpmaps' ``size2order``: a ``--cont`` size (``64K``, ``2M``, ``8192``) as an order.

    Raises:
        ValueError: not a power-of-2 number of pages in ``[2, 512]``.
    """
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    unit = units.get(text[-1:].upper(), 1)
    digits = text[:-1] if text[-1:].upper() in units else text
    if not digits.isdigit():
        raise ValueError(f"--cont {text}: an integer size with an optional K, M or G unit")
    size = int(digits) * unit
    pages = size >> PAGE_SHIFT
    if size % (1 << PAGE_SHIFT) or pages < 2 or pages & (pages - 1):
        raise ValueError(f"--cont {text}: a power-of-2 number of pages, at least 2")
    order = pages.bit_length() - 1
    if order > PMD_ORDER:
        raise ValueError(f"--cont {text}: at most the PMD size (2M)")
    return order


# -- collecting ------------------------------------------------------------------------------

_PERM = {"none": "---p", "r": "r--p", "rw": "rw-p"}


def perm(prot: str) -> str:
    """``/proc/PID/maps`` permissions of a private anonymous VMA of protection ``prot``."""
    return _PERM[prot]


def smaps_kb(record: Smaps) -> dict[str, int]:
    """``Size`` and the kB lines of one smaps record, as the kernel prints them."""
    return {"Size": record.size >> 10, **record.kb()}


def mapping_names(start: int, end: int, maps: Mapping[str, tuple[int, int]]) -> str:
    """The names of the scenario mappings (name -> (start, size as created)) that
    ``[start, end)`` meets, in address order, joined by ``,``."""
    met = sorted((a, name) for name, (a, size) in maps.items() if a < end and start < a + size)
    return ",".join(name for _, name in met)


def process_report(
    name: str, p: Process, maps: Mapping[str, tuple[int, int]], cont: Sequence[int] = ()
) -> ProcessReport:
    """Read one live process: its smaps, its rollup and, for each VMA thpmaps looks at
    (some access permission and ``Rss`` above 0), its pages."""
    # Both reads before the page observations (which change nothing in the model, and read
    # nothing that would on a kernel: thpmaps reads pagemap and kpageflags, no page content).
    records = p.smaps()
    rollup = p.smaps_rollup().kb()
    mappings = []
    for record in records:
        lines = smaps_kb(record)
        thp: dict[str, int] = {}
        if record.prot != "none" and lines["Rss"] > 0:
            pages = thp_pages(p.observe_iter(record.start, record.size))
            thp = thp_breakdown(pages, lines["AnonHugePages"], cont)
        mappings.append(
            MappingReport(
                record.start,
                record.end,
                perm(record.prot),
                mapping_names(record.start, record.end, maps),
                lines,
                thp,
            )
        )
    return ProcessReport(p.pid, name, tuple(mappings), rollup)


def collect(
    machine: Machine,
    procs: Mapping[str, Process],
    maps: Mapping[str, Mapping[str, tuple[int, int]]],
    cont: Sequence[int] = (),
) -> Report:
    """The report of the live processes among ``procs`` (scenario name -> process), by
    pid; ``maps`` gives each process's scenario mappings (name -> (start, size))."""
    live = sorted((p.pid, name, p) for name, p in procs.items() if p.alive)
    return Report(
        machine.kernel,
        tuple(process_report(name, p, maps.get(name, {}), cont) for _, name, p in live),
        tuple(cont),
    )


@dataclass(slots=True)
class ScenarioReport:
    """A scenario run for its report: the observations, the run-time error if it stopped
    early (the report is then of the state it stopped in), and the report."""

    observations: list[Observation]
    report: Report
    error: ScenarioError | None = None


def report_scenario(
    scenario: Scenario,
    *,
    backend: str,
    kernel: str | None = None,
    check: bool = False,
    cont: Sequence[int] = (),
    on_observation: Callable[[Observation], None] | None = None,
) -> ScenarioReport:
    """Run ``scenario`` as ``Scenario.run`` does and report its final state."""
    runner = _Runner(kernel or scenario.kernel or "6.15", backend, check, on_observation)
    error: ScenarioError | None = None
    try:
        runner.run(scenario.statements)
    except ScenarioError as exc:
        error = exc
    report = collect(runner.m, runner.procs, runner.maps, cont)
    return ScenarioReport(runner.observations, report, error)


# -- formatting ------------------------------------------------------------------------------


def smem_units(kb: int) -> str:
    """smem's ``units`` (``--abbreviate``) of an amount in kB: ``0``, or one decimal and the
    largest suffix that keeps it under 1024 (``512.0K``, ``1.0M``)."""
    if kb == 0:
        return "0"
    x = float(kb * 1024)
    suffixes = ("", "K", "M", "G", "T")
    i = 0
    while i < len(suffixes) - 1 and x >= 1024:
        x /= 1024.0
        i += 1
    return f"{x:.1f}{suffixes[i]}"


def _amount(kb: int, unit: Unit) -> str:
    if unit == "kB":
        return str(kb)
    if unit == "MB":
        return "0" if kb == 0 else f"{kb / 1024:.1f}M"
    return smem_units(kb)


def format_smem(report: Report, *, totals: bool = False, unit: Unit = "kB") -> str:
    """The per-process table as smem prints it (``showpids``/``showtable``): columns PID,
    name, Swap, USS, PSS, RSS (smem's ``-c 'pid command swap uss pss rss'``), amounts right
    in 8 columns, rows sorted by PSS, and with ``totals`` a dashed line and a row with the
    number of processes and each column's sum (smem ``-t``)."""
    width = max([4, *(len(p.name) for p in report.processes)])
    fmt = f"%5s %-{width}.{width}s %8s %8s %8s %8s "
    header = fmt % ("PID", "Name", "Swap", "USS", "PSS", "RSS")
    lines = [header.rstrip()]
    # smem sorts the rows on (PSS, the row's cells): ties go by pid
    for p in sorted(report.processes, key=lambda p: (p.pss, p.pid)):
        cells = (_amount(a, unit) for a in (p.swap, p.uss, p.pss, p.rss))
        lines.append((fmt % (p.pid, p.name, *cells)).rstrip())
    if totals:
        t = report.totals()
        lines.append("-" * len(header))
        cells = (_amount(t[k], unit) for k in ("Swap", "USS", "PSS", "RSS"))
        lines.append((fmt % (t["processes"], "", *cells)).rstrip())
    return "\n".join(lines)


def format_pmap(report: Report) -> str:
    """The per-VMA tables as procps ``pmap -X`` prints them (``print_extended_maps``): for
    each process a ``PID:   name`` line, the right-justified header, one row per VMA (the
    address in hex as smaps prints it), and a footer of ``=`` and the totals in ``KB``; a
    column is as wide as its name or its total."""
    out: list[str] = []
    for p in report.processes:
        out.append(f"{p.pid}:   {p.name}")
        addresses = [f"{m.start:x}" for m in p.mappings]
        aw = max([len("Address"), *map(len, addresses)])
        pw = max([len("Perm"), *(len(m.perm) for m in p.mappings)])
        widths = [max(len(f), len(str(p.total(f)))) for f in PMAP_FIELDS]
        head = [f"{'Address':>{aw}}", f"{'Perm':>{pw}}"]
        head += [f"{f:>{w}}" for f, w in zip(PMAP_FIELDS, widths, strict=True)]
        out.append(" ".join([*head, "Mapping"]))
        for m, address in zip(p.mappings, addresses, strict=True):
            cells = [f"{address:>{aw}}", f"{m.perm:>{pw}}"]
            cells += [f"{m.smaps[f]:>{w}}" for f, w in zip(PMAP_FIELDS, widths, strict=True)]
            out.append(" ".join([*cells, m.mapping]).rstrip())
        gap = " " * (aw + 1 + pw + 1)
        out.append(gap + " ".join("=" * w for w in widths))
        totals = [f"{p.total(f):>{w}}" for f, w in zip(PMAP_FIELDS, widths, strict=True)]
        out.append(gap + " ".join([*totals, "KB"]))
    return "\n".join(out)


THPMAPS_HEADER = "       PID             START              END PROT   OFFSET   DEV    INODE OBJECT"


def format_thpmaps(report: Report, *, inc_empty: bool = False) -> str:
    """The thpmaps breakdowns as ``thpmaps --pid`` prints them (``vma_print``,
    ``stats_print``): a header, then for each VMA its maps-style line (the pid first, the
    scenario's mapping name as the object) and its non-zero statistics (all with
    ``inc_empty``), in kB with the share of the VMA's ``Anonymous``."""
    out = [THPMAPS_HEADER]
    for p in report.processes:
        for m in p.mappings:
            out.append(
                f"{p.pid:010d}: {m.start:016x}-{m.end:016x} {m.perm} {0:08x} "
                f"{0:02x}:{0:02x} {0:08x} {m.mapping}".rstrip()
            )
            anon = m.smaps["Anonymous"]
            for label, value in m.thp.items():
                if value or inc_empty:
                    pad = " " * max(0, 32 - len(label) - 1)
                    share = f" ({value / anon:3.0%})" if anon > 0 else ""
                    out.append(f"{label}:{pad}{value:8} kB{share}")
    return "\n".join(out)


def format_report(
    report: Report, *, totals: bool = False, unit: Unit = "kB", inc_empty: bool = False
) -> str:
    """The three views, each under a title line."""
    return "\n\n".join(
        [
            "# processes (smem)\n" + format_smem(report, totals=totals, unit=unit),
            "# mappings (pmap -X)\n" + format_pmap(report),
            "# THPs (thpmaps)\n" + format_thpmaps(report, inc_empty=inc_empty),
        ]
    )


def dumps(report: Report) -> str:
    """The ``--json`` output: one line."""
    return json.dumps(report.as_json(), separators=(",", ":"))


# -- command line ----------------------------------------------------------------------------


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``cowcore report`` that ``cowcore run --report`` shares."""
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "-t", "--totals", action="store_true", help="add a totals row to the process table"
    )
    units = parser.add_mutually_exclusive_group()
    units.add_argument(
        "-k",
        dest="unit",
        action="store_const",
        const="kB",
        help="process table in kB (default)",
    )
    units.add_argument(
        "-m", dest="unit", action="store_const", const="MB", help="process table in MB"
    )
    units.add_argument(
        "--abbreviate",
        dest="unit",
        action="store_const",
        const="abbreviate",
        help="process table with unit suffixes, as smem -k prints it",
    )
    parser.add_argument(
        "--cont",
        action="append",
        default=[],
        metavar="SIZE",
        help="thpmaps --cont: also count memory mapped in aligned blocks of SIZE (64K, "
        "2M...; repeatable)",
    )
    parser.add_argument(
        "--inc-empty",
        action="store_true",
        help="thpmaps --inc-empty: show the statistics that are 0 too",
    )


def report_text(report: Report, args: argparse.Namespace) -> str:
    """The report as the options in ``args`` (:func:`add_report_options`) ask."""
    if args.json:
        return dumps(report)
    return format_report(
        report, totals=args.totals, unit=args.unit or "kB", inc_empty=args.inc_empty
    )
