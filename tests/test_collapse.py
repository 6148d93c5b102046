"""MADV_COLLAPSE (mm/khugepaged.c ``madvise_collapse``): hand-derived cases on both
backends, with counts that follow from the kernel's steps (DESIGN.md "MADV_COLLAPSE")."""

from __future__ import annotations

import pytest

import cowcore
from cowcore import ScanResult
from cowcore.errors import InvalidAddressError
from cowcore.outcome import EventCode
from tests.conftest import KiB, MachineFactory, MiB

PAGE = 4 * KiB


def test_small_pages_become_one_thp(make_machine: MachineFactory) -> None:
    """512 small folios (THP never) are copied into one new PMD-mapped THP: one folio
    allocated, 512 freed, the content kept, the PTE table kept as the PMD's deposit."""
    m = make_machine("6.12")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * MiB, value=1)
    p.write(a + PAGE, value=7)
    free, tables = m.free_frames(), m.vmstat().nr_page_table_pages
    assert p.collapse(a, 2 * MiB) is ScanResult.SUCCEED
    o = p.observe(a, 2 * PAGE)
    assert [(x.folio_pages, x.mapcount, x.exclusive) for x in o] == [(512, 1, True)] * 2
    assert p.read(a, 2 * PAGE) == [1, 7]
    # 512 small frames back, 512 taken by the THP; no table allocated or freed.
    assert m.free_frames() == free
    assert m.vmstat().nr_page_table_pages == tables
    step = p.translate(a).steps[-1]
    assert {"PS", "RW", "D"} <= set(step.flags)
    s = m.stats()
    assert (s.thp_collapse_alloc, s.thp_fault_alloc, s.nr_anon["2M"]) == (1, 0, 1)
    # The THP is exclusive and writable: the next write faults nothing.
    faults = s.faults_wp + s.faults_write
    p.write(a, value=3)
    assert m.stats().faults_wp + m.stats().faults_write == faults
    assert p.smaps()[0].kb()["AnonHugePages"] == 2048


def test_holes_and_zero_pages_are_zero_filled(make_machine: MachineFactory) -> None:
    """None and zero-page PTEs have no limit for MADV_COLLAPSE; their pages of the THP are
    zero-filled and MM_ANONPAGES grows by them (510 pages here)."""
    m = make_machine("6.15")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, value=1)
    p.read(a + 2 * PAGE)  # the shared zero page
    assert p.smaps()[0].kb()["Rss"] == 4  # the zero page is not counted
    with m.record() as rec:
        assert p.collapse(a, 2 * MiB) is ScanResult.SUCCEED
    assert p.read(a, 3 * PAGE) == [1, 0, 0]
    assert p.smaps()[0].kb()["Anonymous"] == 2048
    kinds = [e.kind for e in rec.records()]
    assert kinds.count(EventCode.PAGES_ZEROED) == 511
    assert kinds.count(EventCode.PAGES_COPIED) == 1
    assert kinds.count(EventCode.COLLAPSE) == 1
    assert kinds.count(EventCode.FOLIO_FREE) == 1  # the one small folio


def test_nothing_faulted_is_einval(make_machine: MachineFactory) -> None:
    """A VMA never faulted has no anon_vma: refused as a whole (SCAN_VMA_CHECK). With one, a
    block with no page table under it is SCAN_PMD_NULL. Both are EINVAL; nothing is
    allocated."""
    m = make_machine()
    p = m.init
    a = p.mmap(4 * MiB)
    r = p.collapse(a, 4 * MiB)
    assert (r, r.errno) == (ScanResult.VMA_CHECK, "EINVAL")
    p.read(a)  # the zero page: still no anon_vma
    assert p.collapse(a, 4 * MiB) is ScanResult.VMA_CHECK
    p.write(a, value=1)  # an anon_vma; the second block's PMD entry is none
    r = p.collapse(a + 2 * MiB, 2 * MiB)
    assert (r, r.errno) == (ScanResult.PMD_NULL, "EINVAL")
    assert m.stats().thp_collapse_alloc == 0


def test_only_whole_aligned_blocks(make_machine: MachineFactory) -> None:
    """The blocks are ALIGN(start) .. ALIGN_DOWN(end): [1M, 4M) holds one, [0, 1M) none."""
    m = make_machine()
    p = m.init
    a = p.mmap(4 * MiB)
    p.write(a, 4 * MiB, value=1)
    assert p.collapse(a, 1 * MiB) is ScanResult.SUCCEED
    assert m.stats().thp_collapse_alloc == 0
    assert p.collapse(a + 1 * MiB, 3 * MiB) is ScanResult.SUCCEED
    assert [x.folio_pages for x in p.observe(a)] == [1]
    assert [x.folio_pages for x in p.observe(a + 2 * MiB)] == [512]
    assert m.stats().thp_collapse_alloc == 1


def test_a_ref_is_eagain_and_the_next_block_still_collapses(
    make_machine: MachineFactory,
) -> None:
    """SCAN_PAGE_COUNT (refcount 2, mapcount 1) is EAGAIN; madvise_collapse goes on with the
    next block (a whitelisted failure) and returns the last failure's errno."""
    m = make_machine()
    p = m.init
    a = p.mmap(4 * MiB)
    p.write(a, 4 * MiB, value=1)
    p.ref(a + PAGE, PAGE)
    r = p.collapse(a, 4 * MiB)
    assert (r, r.errno) == (ScanResult.PAGE_COUNT, "EAGAIN")
    assert [x.folio_pages for x in p.observe(a)] == [1]
    assert [x.folio_pages for x in p.observe(a + 2 * MiB)] == [512]
    p.unref(a + PAGE, PAGE)
    assert p.collapse(a, 4 * MiB) is ScanResult.SUCCEED
    assert m.stats().thp_collapse_alloc == 2


@pytest.mark.parametrize(("kernel", "expected"), [("6.12", "EINVAL"), ("6.15", None)])
def test_read_only_after_fork(make_machine: MachineFactory, kernel: str, expected: str) -> None:
    """Right after fork every PTE is read-only: 6.12 refuses the block (SCAN_PAGE_RO), 7.x
    collapses it; the child keeps its 512 small pages either way."""
    m = make_machine(kernel)
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * MiB, value=1)
    c = p.fork()
    assert p.collapse(a, 2 * MiB).errno == expected
    pages = 1 if expected else 512
    assert [x.folio_pages for x in p.observe(a)] == [pages]
    o = c.observe(a)[0]
    collapsed = pages == 512
    assert (o.folio_pages, o.mapcount, o.exclusive) == (1, 2 - collapsed, collapsed)
    p.write(a, value=2)
    assert c.read(a) == [1]


def test_one_writable_pte_is_enough(make_machine: MachineFactory) -> None:
    """6.12 needs one writable PTE in the block: the parent's written page after fork."""
    m = make_machine("6.12")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * MiB, value=1)
    c = p.fork()
    p.write(a, value=2)
    assert p.collapse(a, 2 * MiB) is ScanResult.SUCCEED
    assert p.read(a, 2 * PAGE) == [2, 1]
    assert c.read(a, 2 * PAGE) == [1, 1]
    # The shared pages lost the parent's mapping: mapcount 1 in the child, which pagemap
    # reports as exclusive (PM_MMAP_EXCLUSIVE: mapped once).
    assert [(x.mapcount, x.exclusive) for x in c.observe(a + PAGE)] == [(1, True)]


@pytest.mark.parametrize(("kernel", "deferred"), [("6.12", 1), ("6.15", 0)])
def test_pte_mapped_thp_is_copied_not_reused(
    make_machine: MachineFactory, kernel: str, deferred: int
) -> None:
    """A PMD-mapped THP split by mprotect is copied into a new THP and freed. 6.12 removes
    the rmaps page by page, so the first removal leaves it partially mapped (one deferred
    split counted); 7.x removes the 512 PTEs as one batch and counts nothing."""
    m = make_machine(kernel)
    m.thp.sizes["2M"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * MiB, value=1)
    p.mprotect(a + PAGE, PAGE, "r")
    p.mprotect(a + PAGE, PAGE, "rw")
    old = p.translate(a).pfn
    assert p.collapse(a, 2 * MiB) is ScanResult.SUCCEED
    assert p.translate(a).pfn != old
    s = m.stats()
    assert (s.thp_deferred_split_page, s.nr_anon["2M"], s.nr_anon_partially_mapped["2M"]) == (
        deferred,
        1,
        0,
    )


def test_nohugepage_and_pmd_mapped(make_machine: MachineFactory) -> None:
    """A VM_NOHUGEPAGE VMA is refused (SCAN_VMA_CHECK, EINVAL); a PMD-mapped block counts
    as collapsed without an allocation."""
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, value=1)
    p.madvise(a, 2 * MiB, "nohugepage")
    assert p.collapse(a, 2 * MiB) is ScanResult.VMA_CHECK
    m.thp.sizes["2M"] = "always"
    b = p.mmap(2 * MiB)
    p.write(b, value=1)
    assert p.collapse(b, 2 * MiB) is ScanResult.SUCCEED
    assert m.stats().thp_collapse_alloc == 0


def test_no_free_block_is_enomem(make_machine: MachineFactory) -> None:
    """alloc_charge_folio fails: THP_COLLAPSE_ALLOC_FAILED, ENOMEM, nothing changed."""
    m = make_machine(memory="4M")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 64 * PAGE, value=1)
    r = p.collapse(a, 2 * MiB)
    assert (r, r.errno) == (ScanResult.ALLOC_HUGE_PAGE_FAIL, "ENOMEM")
    assert m.stats().thp_collapse_alloc_failed == 1
    assert [x.folio_pages for x in p.observe(a)] == [1]


def test_unmapped_pages_are_an_error(make_machine: MachineFactory) -> None:
    m = make_machine()
    p = m.init
    a = p.mmap(4 * MiB)
    p.munmap(a + 2 * MiB, PAGE)
    with pytest.raises(InvalidAddressError, match="ENOMEM"):
        p.collapse(a, 4 * MiB)


def test_the_backends_agree_after_collapses() -> None:
    """Both backends, the same program: the same frames, the same events."""
    if len(cowcore.BACKENDS) < 2:
        pytest.skip("one backend in this build")
    records = []
    for backend in cowcore.BACKENDS:
        m = cowcore.Machine("6.12", backend=backend, memory="16M")
        m.thp.sizes["64K"] = "always"
        p = m.init
        a = p.mmap(4 * MiB)
        with m.record() as rec:
            p.write(a, 4 * MiB, value=3)
            c = p.fork()
            p.write(a + 2 * MiB, value=4)
            p.collapse(a, 4 * MiB)
            c.write(a, value=5)
        pfns = [p.translate(a + i * PAGE).pfn for i in range(0, 1024, 7)]
        records.append((pfns, rec.records(), m.stats()))
        m.check()
    assert records[0] == records[1]


def test_a_vma_without_a_whole_block_is_refused(make_machine: MachineFactory) -> None:
    """Outside a fault, thp_vma_allowable_order() checks that the VMA holds an aligned 2M
    block: a 1M mapping, or a 2M block that mprotect cut into three VMAs, is SCAN_VMA_CHECK
    (EINVAL, recorded: collapse-split-vma), even for a range holding no block at all."""
    m = make_machine()
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 2 * MiB, value=1)
    p.mprotect(a + PAGE, PAGE, "r")
    r = p.collapse(a, 2 * MiB)
    assert (r, r.errno) == (ScanResult.VMA_CHECK, "EINVAL")
    p.mprotect(a + PAGE, PAGE, "rw")  # merged back: one VMA
    assert p.collapse(a, 2 * MiB) is ScanResult.SUCCEED
    b = p.mmap(1 * MiB)
    p.write(b, value=2)
    assert p.collapse(b, PAGE) is ScanResult.VMA_CHECK
