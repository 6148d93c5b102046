"""``Mm.rss_anon`` (the kernel's MM_ANONPAGES) in the reference: where it moves, and that it
always equals what the page tables map (recomputed here page by page, independently of the
walker ``check()`` uses)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cowcore.errors import InvariantError
from cowcore.reference import paging as pg
from cowcore.reference.backend import ReferenceBackend
from cowcore.reference.mm import Mm
from tests.reference.programs import Step, programs, run_program

MB = 1 << 20
PAGE = 4096


def _mm(ref: ReferenceBackend, pid: int) -> Mm:
    mm = ref._k.procs[pid].mm
    assert mm is not None
    return mm


def rss(ref: ReferenceBackend, pid: int) -> int:
    return _mm(ref, pid).rss_anon


def mapped_anon_pages(ref: ReferenceBackend, pid: int) -> int:
    """Every 4 KiB page of every VMA whose walk ends at a leaf mapping a folio's page."""
    k, mm = ref._k, _mm(ref, pid)
    n = 0
    for vma in mm.vmas:
        for addr in range(vma.start, vma.end, PAGE):
            res = pg.walk(k.phys.tables, mm.pgd, k.levels, addr)
            if not pg.is_present(res.entry) or res.level < k.pmd_level():
                continue
            pfn = pg.entry_pfn(res.entry)
            n += pfn in k.page_folio
    return n


def test_where_rss_anon_moves() -> None:
    ref = ReferenceBackend("6.15", 4096, 4)
    pid = ref.init_pid()
    a = ref.mmap(pid, 8 * MB)
    ref.read(pid, a, 4 * PAGE)  # zero page: not counted
    assert rss(ref, pid) == 0
    ref.write(pid, a, PAGE, 1)  # wp_page_copy from the zero page
    ref.write(pid, a + 8 * PAGE, 2 * PAGE, 1)  # do_anonymous_page
    assert rss(ref, pid) == 3
    ref.set_thp_enabled("always")
    ref.read(pid, a + 2 * MB, PAGE)  # the huge zero page: not counted
    assert rss(ref, pid) == 3
    ref.write(pid, a + 4 * MB, PAGE, 2)  # a PMD-mapped THP
    assert rss(ref, pid) == 3 + 512
    child = ref.fork(pid)
    assert rss(ref, child) == 3 + 512  # the child gets what it maps
    ref.write(child, a, PAGE, 3)  # a COW copy replaces an anon page: no change
    assert rss(ref, child) == 3 + 512
    ref.munmap(pid, a + 4 * MB, 16 * PAGE)  # splits the PMD, zaps 16 of its pages
    assert rss(ref, pid) == 3 + 512 - 16
    ref.madvise(pid, a, 2 * MB, "dontneed")
    assert rss(ref, pid) == 512 - 16
    ref.munmap(child, a, 8 * MB)
    assert rss(ref, child) == 0
    for p in (pid, child):
        assert rss(ref, p) == mapped_anon_pages(ref, p)
    ref.check()


def test_check_catches_a_wrong_rss_anon() -> None:
    ref = ReferenceBackend("6.15", 1024, 4)
    pid = ref.init_pid()
    a = ref.mmap(pid, 2 * MB)
    ref.write(pid, a, 3 * PAGE, 1)
    ref.check()
    _mm(ref, pid).rss_anon += 1
    with pytest.raises(InvariantError, match="rss"):
        ref.check()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["6.12", "6.15"]), programs(max_count=600, max_size=25))
def test_rss_anon_matches_the_page_tables(profile: str, steps: list[Step]) -> None:
    ref = ReferenceBackend(profile, 2048, 4)

    def matches(pids: list[int]) -> None:
        for q in pids:
            assert rss(ref, q) == mapped_anon_pages(ref, q)

    run_program(ref, steps, "64K", matches)
    ref.check()
