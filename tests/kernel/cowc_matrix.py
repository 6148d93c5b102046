"""cow.c's anonymous test matrix as conformance scenarios (issue 16), and cow.c's assertion.

tools/testing/selftests/mm/cow.c runs every test of ``anon_test_cases`` on every setup
(``do_run_with_base_page``, ``do_run_with_thp`` with ``THP_RUN_PMD``, ``THP_RUN_PTE``,
``THP_RUN_SINGLE_PTE``, ``THP_RUN_PARTIAL_MREMAP``, ``THP_RUN_PARTIAL_SHARED``) at every THP size
the kernel offers. This module translates each (setup, test, size) that the scenario language
can express into ``scenarios/cowc-<setup>-<test>-<size>.cow`` and says, for every ``observe`` it
writes, what cow.c's assertion demands of it, so that :func:`check` can hold a recording (or the
simulator's output) to that assertion.

Adding a setup or a test is one entry in :data:`SETUPS` or :data:`TESTS`; adding a size is one
entry in :data:`THP_SIZES`. ``python tests/kernel/cowc_matrix.py`` rewrites the files (and
removes ``cowc-*`` files that are no longer generated); ``tests/kernel/test_cowc_matrix.py``
fails when the files on disk differ from what this module makes.

Values: cow.c fills the memory with ``memset(mem, 1, size)`` and the writer with
``memset(mem, 0xff, size)``; a scenario stores 1 (:data:`ORIGINAL`) and 255 (:data:`WRITTEN`) at
the first byte of every page, which is what an observation's ``content`` shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SCENARIOS_DIR = Path(__file__).resolve().parent / "scenarios"
EXPECTED_DIR = Path(__file__).resolve().parent / "expected"
DOC = Path(__file__).resolve().parents[2] / "docs" / "cowc-matrix.md"
TABLE_START = "<!-- table: generated from the recordings by tests/kernel/cowc_matrix.py -->\n"
TABLE_END = "<!-- end of table -->"
PREFIX = "cowc-"

PAGE = 4096
PMD = 2 << 20
ORIGINAL = 1
WRITTEN = 255

#: The THP sizes of the matrix. cow.c runs every size the kernel offers (16K..1M mTHP and 2M on
#: x86-64). We record the smallest mTHP (16K, order 2: the fewest pages a large folio can
#: have), 64K (the size most mTHP users pick, and that of the other conformance scenarios), the
#: largest mTHP (1M, 256 PTE-mapped pages) and the PMD size (2M, the only size with the
#: ``THP_RUN_PMD`` setup and the only one 6.1 has). 32K..512K behave like their neighbours in
#: every rule the kernels apply (no code path depends on an order between 2 and 8).
THP_SIZES = (16 << 10, 64 << 10, 1 << 20, PMD)

#: An ``observe`` of more pages than this is sampled (first two pages and the last), to keep the
#: recordings small: the writes still cover the whole range, as cow.c's ``memset`` does.
FULL_OBSERVE_PAGES = 16

Role = Literal["start", "before", "pinned", "writer", "protected"]
"""What cow.c's assertion asks of an ``observe``.

- ``start``: the writer's pages as the setup left them, before the test's first step (the R/O
  pin tests only, so that the frames show whether the pin reused or copied); present, showing
  :data:`ORIGINAL`. It is taken before the fork, since on 6.1 an ``observe`` between the fork and
  the pin of a small page changes what the pin does (PROVENANCE.md, "References, pins and
  unshare").
- ``before``: the frames the protected side holds (the other process's mapping, or the pages in a
  pipe) and their content, observed before the write. After the write, every observation of one
  of those frames must still show that content: a write that reached it is cow.c's "leak".
- ``pinned``: the frames a pin (io_uring fixed buffer, or the short R/O pin of ``unshare``)
  holds, observed after the pin. After the write the writer must map exactly those frames (the
  pin sees the write; cow.c's "Longterm R/W (R/O) pin is not reliable" otherwise).
- ``writer``: the writer's pages after its write: present, showing :data:`WRITTEN`.
- ``protected``: the other process's pages after the write: present, showing :data:`ORIGINAL`.
"""


def size_name(size: int) -> str:
    """``4K``, ``64K``, ``1M``, ``2M``: a size as the scenario language writes it."""
    if size % (1 << 20) == 0:
        return f"{size >> 20}M"
    return f"{size >> 10}K"


@dataclass(frozen=True)
class Range:
    """The bytes ``[off, off+length)`` of mapping ``name``: cow.c's ``mem`` and ``size``."""

    name: str
    off: int
    length: int

    def text(self) -> str:
        """The range as a statement writes it (``A 0 64K``)."""
        return f"{self.name} {size_name(self.off) if self.off else 0} {size_name(self.length)}"

    def sub(self, off: int, length: int) -> Range:
        """The part ``[off, off+length)`` of this range (offsets relative to its start)."""
        return Range(self.name, self.off + off, length)


@dataclass(frozen=True)
class Observe:
    """One ``PROC observe`` statement and what cow.c's assertion asks of its pages."""

    proc: str
    range: Range
    role: Role

    def text(self) -> str:
        """The statement."""
        return f"{self.proc} observe {self.range.text()}"

    @property
    def pages(self) -> int:
        """How many observations the statement prints."""
        return self.range.length // PAGE


Step = str | Observe


def observe(proc: str, r: Range, role: Role) -> list[Step]:
    """``observe`` statements for range ``r``: all of it, or a sample of a large range."""
    pages = r.length // PAGE
    if pages <= FULL_OBSERVE_PAGES:
        return [Observe(proc, r, role)]
    return [
        Observe(proc, r.sub(0, 2 * PAGE), role),
        Observe(proc, r.sub(r.length - PAGE, PAGE), role),
    ]


@dataclass(frozen=True)
class Setup:
    """One of cow.c's ways of preparing ``mem`` (``do_run_with_base_page``/``do_run_with_thp``).

    ``build(size)`` returns the statements after the THP settings and the range the test gets.
    ``thp`` is False for the base page (no THP sizes at all), ``pmd_only`` for ``THP_RUN_PMD``.
    """

    slug: str
    title: str
    build: Callable[[int], tuple[list[str], Range]]
    thp: bool = True
    pmd_only: bool = False
    swap: bool = False
    """A ``*_SWAPOUT`` setup: the range is paged out after the setup (``MADV_PAGEOUT``), and
    the tests' reads of it (cow.c's ``memcpy``/``memcmp``) become ``read`` statements, which
    swap the pages back in, before the observations of the sides that read."""

    def sizes(self) -> tuple[int, ...]:
        """The sizes this setup runs at, as cow.c's ``run_anon_test_case`` picks them."""
        if not self.thp:
            return (PAGE,)
        if self.pmd_only:
            return (PMD,)
        return THP_SIZES


def _base(_size: int) -> tuple[list[str], Range]:
    # do_run_with_base_page: one page, MADV_NOHUGEPAGE, memset 1.
    return ["P mmap A 4K", "P madvise A 0 4K nohugepage", f"P write A 0 4K {ORIGINAL}"], Range(
        "A", 0, PAGE
    )


def _thp(size: int) -> list[str]:
    # do_run_with_thp: a THP-aligned area with MADV_HUGEPAGE, the first write faults the THP,
    # then memset 1 over all of it.
    return [
        "P mmap A 2M",
        f"P madvise A 0 {size_name(size)} hugepage",
        f"P write A 0 {size_name(size)} {ORIGINAL}",
    ]


def _pmd(size: int) -> tuple[list[str], Range]:
    return _thp(size), Range("A", 0, size)


def _pte(size: int) -> tuple[list[str], Range]:
    # THP_RUN_PTE: one subpage R/O and back splits the PMD (a no-op for an mTHP).
    return [*_thp(size), "P mprotect A 4K 4K r", "P mprotect A 4K 4K rw"], Range("A", 0, size)


def _single_pte(size: int) -> tuple[list[str], Range]:
    # THP_RUN_SINGLE_PTE: MADV_DONTNEED all but the first subpage; the test gets that one page.
    rest = size_name(size - PAGE)
    return [*_thp(size), f"P madvise A 4K {rest} dontneed"], Range("A", 0, PAGE)


def _partial_mremap(size: int) -> tuple[list[str], Range]:
    # THP_RUN_PARTIAL_MREMAP: the upper half moves elsewhere (B); the test gets the lower half,
    # which stays in place, a part of a folio whose other part is mapped at another address.
    half = size_name(size // 2)
    return [*_thp(size), f"P mremap A {half} {half} B"], Range("A", 0, size // 2)


def _partial_shared(size: int) -> tuple[list[str], Range]:
    # THP_RUN_PARTIAL_SHARED: only the first subpage is shared with a child that exits at once
    # (MADV_DONTFORK on the rest), then MADV_DOFORK again.
    rest = size_name(size - PAGE)
    statements = [
        *_thp(size),
        f"P madvise A 4K {rest} dontfork",
        "P fork S",
        "S exit",
        f"P madvise A 4K {rest} dofork",
    ]
    return statements, Range("A", 0, size)


def _swapped(
    build: Callable[[int], tuple[list[str], Range]],
) -> Callable[[int], tuple[list[str], Range]]:
    # run_with_*_swap / THP_RUN_*_SWAPOUT: MADV_PAGEOUT of the range after the setup (cow.c
    # then skips the test unless every page is swapped: the recordings show they are).
    def build_swapped(size: int) -> tuple[list[str], Range]:
        statements, r = build(size)
        return [*statements, f"P pageout {r.text()}"], r

    return build_swapped


#: cow.c's setups that the language can express, in cow.c's order (run_anon_test_case: the
#: base page, then per size the PMD THP, the PTE-mapped THP and the single PTE, each followed
#: by its swapped-out twin, then the partial mremap and the partial share).
SETUPS: tuple[Setup, ...] = (
    Setup("base", "with base page", _base, thp=False),
    Setup("base-swap", "with swapped out base page", _swapped(_base), thp=False, swap=True),
    Setup("pmd", "with THP", _pmd, pmd_only=True),
    Setup("pmd-swap", "with swapped-out THP", _swapped(_pmd), pmd_only=True, swap=True),
    Setup("pte", "with PTE-mapped THP", _pte),
    Setup("pte-swap", "with swapped-out, PTE-mapped THP", _swapped(_pte), swap=True),
    Setup("single-pte", "with single PTE of THP", _single_pte),
    Setup(
        "single-pte-swap", "with single PTE of swapped-out THP", _swapped(_single_pte), swap=True
    ),
    Setup("partial-mremap", "with partially mremap()'ed THP", _partial_mremap),
    Setup("partial-shared", "with partially shared THP", _partial_shared),
)


def _mprotect_roundtrip(r: Range) -> list[Step]:
    return [f"P mprotect {r.text()} r", f"P mprotect {r.text()} rw"]


def _cow_in_parent(r: Range, *, mprotect: bool) -> list[Step]:
    # do_test_cow_in_parent with child_memcmp_fn: the child keeps its copy of the content, the
    # parent (after an mprotect R/O and back, for the "mprotect() optimization") writes.
    steps: list[Step] = ["P fork C", *observe("C", r, "before")]
    if mprotect:
        steps += _mprotect_roundtrip(r)
    steps += [f"P write {r.text()} {WRITTEN}", *observe("P", r, "writer")]
    return steps + observe("C", r, "protected")


def _vmsplice_in_child(r: Range, *, mprotect: bool) -> list[Step]:
    # child_vmsplice_memcmp_fn: the child vmsplice()s the range into a pipe (ref) and unmaps it;
    # the parent writes; the pipe must still hold the old content.
    steps: list[Step] = ["P fork C", *observe("C", r, "before")]
    steps += [f"C ref {r.text()}", f"C munmap {r.text()}"]
    if mprotect:
        steps += _mprotect_roundtrip(r)
    return [*steps, f"P write {r.text()} {WRITTEN}", *observe("P", r, "writer")]


def _vmsplice_in_parent(r: Range, *, before_fork: bool) -> list[Step]:
    # do_test_vmsplice_in_parent: the parent vmsplice()s (before or after the fork) and unmaps;
    # the child writes; the parent's pipe must still hold the old content.
    steps: list[Step] = [*observe("P", r, "before"), f"P ref {r.text()}", "P fork C"]
    if not before_fork:
        steps = ["P fork C", *observe("P", r, "before"), f"P ref {r.text()}"]
    steps += [f"P munmap {r.text()}", f"C write {r.text()} {WRITTEN}"]
    return steps + observe("C", r, "writer")


def _iouring(r: Range, *, use_fork: bool) -> list[Step]:
    # do_test_iouring: a long-term R/W pin (io_uring fixed buffer), then fork (the child stays
    # alive) or an mprotect R/O and back; the parent's write must be visible through the pin.
    steps: list[Step] = [f"P pin {r.text()}", *observe("P", r, "pinned")]
    steps += ["P fork C"] if use_fork else _mprotect_roundtrip(r)
    steps += [f"P write {r.text()} {WRITTEN}", *observe("P", r, "writer")]
    if use_fork:
        steps += observe("C", r, "protected")
    return steps


def _ro_pin(
    r: Range, *, test: Literal["shared", "previously-shared", "ro-exclusive"]
) -> list[Step]:
    # do_test_ro_pin with a short R/O pin (unshare) for the long-term one: after the pin the page
    # must be exclusive to the parent, so the write lands on the pinned frame.
    steps: list[Step] = observe("P", r, "start")
    if test == "shared":
        steps += ["P fork C"]
    elif test == "previously-shared":
        steps += ["P fork C", "C exit"]
    else:
        steps += _mprotect_roundtrip(r)
    steps += [f"P unshare {r.text()}", *observe("P", r, "pinned")]
    steps += [f"P write {r.text()} {WRITTEN}", *observe("P", r, "writer")]
    if test == "shared":
        steps += observe("C", r, "protected")
    return steps


@dataclass(frozen=True)
class Test:
    """One of cow.c's ``anon_test_cases``: its function's name, its description, the steps."""

    slug: str
    function: str
    title: str
    steps: Callable[[Range], list[Step]]
    setups: tuple[str, ...] = ()
    """The setups (slugs) it runs on; all of them when empty. cow.c's ``anon_thp_test_cases``
    (the collapse tests, once the language has ``collapse``) run on the PMD setup alone."""

    def runs_on(self, setup: Setup) -> bool:
        """Whether cow.c runs this test on ``setup``."""
        return not self.setups or setup.slug in self.setups


#: cow.c's ``anon_test_cases`` that the language can express, in cow.c's order. The GUP-fast
#: R/O pin tests have no counterpart (``unshare`` takes the slow path).
TESTS: tuple[Test, ...] = (
    Test(
        "cow-in-parent",
        "test_cow_in_parent",
        "Basic COW after fork()",
        lambda r: _cow_in_parent(r, mprotect=False),
    ),
    Test(
        "cow-in-parent-mprotect",
        "test_cow_in_parent_mprotect",
        "Basic COW after fork() with mprotect() optimization",
        lambda r: _cow_in_parent(r, mprotect=True),
    ),
    Test(
        "vmsplice-in-child",
        "test_vmsplice_in_child",
        "vmsplice() + unmap in child",
        lambda r: _vmsplice_in_child(r, mprotect=False),
    ),
    Test(
        "vmsplice-in-child-mprotect",
        "test_vmsplice_in_child_mprotect",
        "vmsplice() + unmap in child with mprotect() optimization",
        lambda r: _vmsplice_in_child(r, mprotect=True),
    ),
    Test(
        "vmsplice-before-fork",
        "test_vmsplice_before_fork",
        "vmsplice() before fork(), unmap in parent after fork()",
        lambda r: _vmsplice_in_parent(r, before_fork=True),
    ),
    Test(
        "vmsplice-after-fork",
        "test_vmsplice_after_fork",
        "vmsplice() + unmap in parent after fork()",
        lambda r: _vmsplice_in_parent(r, before_fork=False),
    ),
    Test(
        "iouring-ro",
        "test_iouring_ro",
        "R/O-mapping a page registered as iouring fixed buffer",
        lambda r: _iouring(r, use_fork=False),
    ),
    Test(
        "iouring-fork",
        "test_iouring_fork",
        "fork() with an iouring fixed buffer",
        lambda r: _iouring(r, use_fork=True),
    ),
    Test(
        "ro-pin-on-shared",
        "test_ro_pin_on_shared",
        "R/O GUP pin on R/O-mapped shared page",
        lambda r: _ro_pin(r, test="shared"),
    ),
    Test(
        "ro-pin-on-ro-previously-shared",
        "test_ro_pin_on_ro_previously_shared",
        "R/O GUP pin on R/O-mapped previously-shared page",
        lambda r: _ro_pin(r, test="previously-shared"),
    ),
    Test(
        "ro-pin-on-ro-exclusive",
        "test_ro_pin_on_ro_exclusive",
        "R/O GUP pin on R/O-mapped exclusive page",
        lambda r: _ro_pin(r, test="ro-exclusive"),
    ),
)


@dataclass(frozen=True)
class Case:
    """One generated scenario: a (setup, test, size) of cow.c's matrix."""

    setup: Setup
    test: Test
    size: int
    steps: tuple[Step, ...]
    text: str

    @property
    def name(self) -> str:
        """``cowc-<setup>-<test>-<size>``, the scenario's file name without ``.cow``."""
        return f"{PREFIX}{self.setup.slug}-{self.test.slug}-{size_name(self.size)}"

    @property
    def observes(self) -> list[Observe]:
        """The ``observe`` statements, in order."""
        return [s for s in self.steps if isinstance(s, Observe)]

    @property
    def mthp(self) -> bool:
        """Whether the scenario sets an mTHP size (so 6.1 answers with the ``thp size`` error)."""
        return self.setup.thp and self.size != PMD


def make_case(setup: Setup, test: Test, size: int) -> Case:
    """The scenario for one cell of the matrix."""
    statements, r = setup.build(size)
    steps = tuple(test.steps(r))
    if setup.swap:
        # cow.c's sides read the memory they check (memcpy of the old content, memcmp after
        # the write): on a swapped-out range those reads are what swaps the pages back in.
        read_first: list[Step] = []
        for s in steps:
            if isinstance(s, Observe) and s.role in ("before", "protected"):
                read_first.append(f"{s.proc} read {s.range.text()}")
            read_first.append(s)
        steps = tuple(read_first)
    lines = [
        f'# cow.c {test.function}: "{test.title}" ... {setup.title}'
        + (f" ({size >> 10} kB)" if setup.thp else ""),
        "# Generated by tests/kernel/cowc_matrix.py; edit the generator, not this file.",
    ]
    if setup.thp:
        # run_anon_test_case: the PMD size to never unless it is the size under test.
        if size != PMD:
            lines.append("thp size 2M never")
        lines.append(f"thp size {size_name(size)} always")
    lines += statements
    lines += [s.text() if isinstance(s, Observe) else s for s in steps]
    lines.append("stats")
    return Case(setup, test, size, steps, "\n".join(lines) + "\n")


def cases() -> list[Case]:
    """Every cell of the matrix, setups outermost as cow.c's loops run them."""
    return [
        make_case(s, t, size) for s in SETUPS for size in s.sizes() for t in TESTS if t.runs_on(s)
    ]


# -- cow.c's assertion over observations -------------------------------------------------------


def thp_size_error(case: Case, observations: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the output is the one line a PMD-only kernel (6.1) prints for an mTHP size."""
    return (
        case.mthp
        and len(observations) == 1
        and "error" in observations[0]
        and f"thp size {size_name(case.size)}" in str(observations[0]["error"])
    )


def check(case: Case, observations: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every way ``observations`` (a recording or the simulator's output) breaks cow.c's assertion.

    An empty list means the run passed cow.c's test. The rules are those of :data:`Role`: the
    frames the protected side holds keep their content through the writer's write (no leak from
    writer to protected side), the protected process still reads the original content, the
    writer reads what it wrote, and a pinned frame is the one the writer writes to. Every
    ``observe`` must have printed its pages, each present, in the scenario's order.
    """
    pages = [o for o in observations if "present" in o]
    errors = [str(o["error"]) for o in observations if "error" in o]
    problems = [f"the run stopped: {e}" for e in errors]
    expected = sum(o.pages for o in case.observes)
    if len(pages) != expected:
        return [*problems, f"{len(pages)} page observations, the scenario makes {expected}"]
    held: dict[str, int] = {}  # frame -> content, of the protected side before the write
    pinned: dict[tuple[str, int], str] = {}  # (map, off) -> frame the pin holds
    i = 0
    for obs in case.observes:
        for k in range(obs.pages):
            page = pages[i]
            i += 1
            off = obs.range.off + k * PAGE
            where = f"{obs.proc} {obs.range.name} +{size_name(off) if off else 0} ({obs.role})"
            if (page["proc"], page["map"], page["off"]) != (obs.proc, obs.range.name, off):
                problems.append(
                    f"{where}: the observation is of {page['proc']} {page['map']} +{page['off']}"
                )
                continue
            if not page["present"]:
                # before the test, a swapped-out setup's pages are still in swap
                if not (obs.role == "start" and case.setup.swap and page["frame"] == "swap"):
                    problems.append(f"{where}: not present")
                continue
            frame, content = str(page["frame"]), page["content"]
            if obs.role == "before":
                if content != ORIGINAL:
                    problems.append(f"{where}: content {content} before the write, not {ORIGINAL}")
                held[frame] = content
                continue
            if obs.role == "start":
                if content != ORIGINAL:
                    problems.append(f"{where}: content {content} before the test, not {ORIGINAL}")
                continue
            if obs.role == "pinned":
                pinned[(obs.range.name, off)] = frame
                continue
            if frame in held and content != held[frame]:
                problems.append(
                    f"{where}: frame {frame}, which the protected side holds, shows {content} "
                    f"instead of {held[frame]}: the write leaked"
                )
            want = WRITTEN if obs.role == "writer" else ORIGINAL
            if content != want:
                problems.append(f"{where}: content {content}, not {want}")
            held_by_pin = pinned.get((obs.range.name, off)) if obs.role == "writer" else None
            if held_by_pin is not None and frame != held_by_pin:
                problems.append(
                    f"{where}: the write went to frame {frame}, not to the pinned frame "
                    f"{held_by_pin}: the pin does not see it"
                )
    return problems


def _summary(words: Sequence[str]) -> str:
    """One phrase for what happened to the observed pages, first page first."""
    if not words:
        return "?"
    if all(w == words[0] for w in words):
        return words[0]
    if all(w == words[1] for w in words[1:]):
        return f"{words[0]} first, {words[1]} rest"
    return ", ".join(words)


def outcome(case: Case, observations: Sequence[Mapping[str, Any]]) -> str:
    """What the kernel (or the simulator) did in one run, in the words of docs/cowc-matrix.md.

    ``copy``/``reuse``: whether the writer's write landed on a new frame or on the frame the
    other side holds; ``write: reuse``: on the pinned frame; ``unshare: reuse``/``copy``: whether
    the R/O pin kept the page or gave the writer a new one; ``fork: copy``: fork gave the child
    its own copy of a pinned page; ``unshare: swap-in as 64K``: the page was swapped out before
    the pin, which left it in a folio of that size (the swapped-in one, or a 4K copy).
    ``reuse first, copy rest``: the first observed page differs from the
    others. ``no mTHP``: a PMD-only kernel refused the ``thp size`` line.
    """
    if thp_size_error(case, observations):
        return "no mTHP"
    pages = [o for o in observations if "present" in o]
    if any("error" in o for o in observations) or len(pages) != sum(o.pages for o in case.observes):
        return "error"
    frames: dict[tuple[str, str, int], str] = {}
    sizes: dict[tuple[str, str, int], int] = {}  # the folio size of each frame observed
    i = 0
    for obs in case.observes:
        for k in range(obs.pages):
            key = (obs.role, obs.proc, obs.range.off + k * PAGE)
            frames.setdefault(key, str(pages[i]["frame"]))
            sizes.setdefault(key, int(pages[i]["folio_pages"] or 0) * PAGE)
            i += 1

    def compare(a: Role, b: Role, same: str, new: str) -> str:
        words = [
            same
            if frames[(b, pb, off)] == frames[(a, pa, off)]
            else (
                f"swap-in as {size_name(sizes[(b, pb, off)])}"
                if frames[(a, pa, off)] == "swap"
                else new
            )
            for (ra, pa, off) in frames
            if ra == a
            for (rb, pb, offb) in frames
            if rb == b and offb == off
        ]
        return _summary(words)

    roles = {role for (role, _, _) in frames}
    if "start" in roles:
        return "unshare: " + compare("start", "pinned", "reuse", "copy")
    if "pinned" in roles and "protected" in roles:
        return "fork: " + compare("pinned", "protected", "share", "copy") + "; write: reuse"
    if "pinned" in roles:
        return "write: " + compare("pinned", "writer", "reuse", "copy")
    return compare("before", "writer", "reuse", "copy")


def render_table(recordings: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]) -> str:
    """The markdown table of docs/cowc-matrix.md from the recordings of every kernel line.

    ``recordings`` maps a kernel line (``6.12``) to scenario names and their observations.
    Rows are (setup, test), columns the sizes; a cell lists what each line did, lines with the
    same outcome merged (``6.12, 7.2, 7.3: copy``). A PMD-only kernel's ``no mTHP`` is left out.
    """
    versions = sorted(recordings, key=lambda v: tuple(int(x) for x in v.split(".")))
    sizes = sorted({c.size for c in cases()})
    by_cell = {(c.setup.slug, c.test.slug, c.size): c for c in cases()}
    head = "| setup | test | " + " | ".join(size_name(s) for s in sizes) + " |"
    lines = [head, "|" + "---|" * (2 + len(sizes))]
    for setup in SETUPS:
        for test in (t for t in TESTS if t.runs_on(setup)):
            cells = []
            for size in sizes:
                case = by_cell.get((setup.slug, test.slug, size))
                if case is None:
                    cells.append("")
                    continue
                said: dict[str, list[str]] = {}
                for v in versions:
                    what = outcome(case, recordings[v][case.name])
                    if what != "no mTHP":  # 6.1 at an mTHP size: said once, under the table
                        said.setdefault(what, []).append(v)
                cells.append(
                    "; ".join(
                        what if len(said) == 1 else f"{', '.join(vs)}: {what}"
                        for what, vs in said.items()
                    )
                )
            lines.append(f"| {setup.slug} | {test.slug} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_all(directory: Path = SCENARIOS_DIR) -> list[Path]:
    """Write every case to ``directory`` and remove ``cowc-*.cow`` files no case makes."""
    made = cases()
    names = {c.name for c in made}
    for stale in directory.glob(f"{PREFIX}*.cow"):
        if stale.stem not in names:
            stale.unlink()
    paths = []
    for c in made:
        path = directory / f"{c.name}.cow"
        if not path.exists() or path.read_text() != c.text:
            path.write_text(c.text)
        paths.append(path)
    return paths


def load_recordings(expected: Path = EXPECTED_DIR) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The recordings of every case on every kernel line in ``expected``."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for line_dir in sorted(p for p in expected.iterdir() if p.is_dir()):
        out[line_dir.name] = {
            c.name: [
                json.loads(text)
                for text in (line_dir / f"{c.name}.jsonl").read_text().splitlines()
                if text.strip()
            ]
            for c in cases()
        }
    return out


def write_table(doc: Path = DOC) -> None:
    """Replace the table in docs/cowc-matrix.md with the one the recordings give."""
    text = doc.read_text()
    start = text.index(TABLE_START) + len(TABLE_START)
    end = text.index(TABLE_END)
    doc.write_text(text[:start] + render_table(load_recordings()) + text[end:])


def main(argv: Sequence[str]) -> None:
    """``cowc_matrix.py [DIR]`` writes the scenarios; ``--table`` re-renders the doc's table."""
    if argv[:1] == ["--table"]:
        write_table()
        return
    written = write_all(Path(argv[0]) if argv else SCENARIOS_DIR)
    print(f"{len(written)} scenarios")


if __name__ == "__main__":
    main(sys.argv[1:])
