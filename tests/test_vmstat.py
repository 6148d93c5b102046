"""vmstat, the per-size mTHP stats and meminfo, on every backend (docs/accounting.md).

The expectations are the kernel's bookkeeping written out: ``NR_ANON_MAPPED`` counts the pages
some entry maps (``__folio_add_rmap``/``__folio_remove_rmap``), ``nr_anon`` the large folios
that exist (``folio_add_new_anon_rmap`` +1, the free path -1), and an unmap that leaves a
large folio with some pages mapped by nothing and others still mapped by PTEs puts it on the
deferred-split queue once (``deferred_split_folio(folio, true)``: ``split_deferred`` +1,
``nr_anon_partially_mapped`` +1 until it is freed).
"""

from __future__ import annotations

import pytest

import cowcore
from cowcore import Meminfo, MthpStats
from cowcore.outcome import EventCode
from tests.conftest import KiB, MachineFactory, MiB

PAGE = 4096


def aligned(p: cowcore.Process, size: int) -> int:
    """An address aligned to ``size`` inside a fresh mapping of ``2 * size``."""
    a = p.mmap(2 * size)
    return (a + size - 1) & ~(size - 1)


def mthp(m: cowcore.Machine, size: str) -> MthpStats:
    return m.mthp_stats()[size]


def test_fresh_machine(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile, memory="64M")
    v = m.vmstat()
    assert (v.nr_anon_pages, v.nr_anon_transparent_hugepages) == (0, 0)
    assert v.nr_page_table_pages == 1  # init's PGD
    assert v.nr_free_pages == m.free_frames()
    assert all(s == MthpStats(0, 0, 0, 0, 0, 0, 0) for s in m.mthp_stats().values())
    assert list(m.mthp_stats()) == ["16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M"]
    info = m.meminfo()
    assert info == Meminfo(65536, m.free_frames() * 4, 0, 0, 4)
    assert info.lines()["MemTotal"] == 65536


def test_dontneed_of_part_of_a_folio_queues_it_once(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile, memory="64M")
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = aligned(p, 64 * KiB)
    p.write(a, 64 * KiB)
    assert mthp(m, "64K") == MthpStats(1, 0, 0, 0, 1, 0, 0)
    assert m.vmstat().nr_anon_pages == 16
    p.madvise(a, 2 * PAGE, "dontneed")
    assert mthp(m, "64K") == MthpStats(1, 0, 0, 1, 1, 1, 0)
    assert m.vmstat().nr_anon_pages == 14
    p.madvise(a + 4 * PAGE, PAGE, "dontneed")  # already queued: no second count
    assert mthp(m, "64K").split_deferred == 1
    p.madvise(a, 64 * KiB, "dontneed")  # the rest: freed, and off the queue
    assert mthp(m, "64K") == MthpStats(1, 0, 0, 1, 0, 0, 0)
    assert m.vmstat().nr_anon_pages == 0


def test_unmapping_what_another_mm_still_maps_is_not_partial(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile, memory="64M")
    m.thp.sizes["32K"] = "always"
    p = m.init
    a = aligned(p, 32 * KiB)
    p.write(a, 32 * KiB)
    c = p.fork()
    p.madvise(a, 3 * PAGE, "dontneed")  # the child still maps every page
    assert mthp(m, "32K").split_deferred == 0
    assert m.vmstat().nr_anon_pages == 8
    c.exit()  # now pages 0..2 are mapped by nothing, 3..7 by the parent
    assert mthp(m, "32K") == MthpStats(1, 0, 0, 1, 1, 1, 0)
    assert m.vmstat().nr_anon_pages == 5
    p.exit()
    assert mthp(m, "32K") == MthpStats(1, 0, 0, 1, 0, 0, 0)


def test_copy_after_the_child_exits(make_machine: MachineFactory, profile: str) -> None:
    """KS Appendix A step 4b: on 6.12 the write copies page 3 of the parent's 64K folio and
    the folio becomes partially mapped; on 6.15 it is reused and nothing is queued."""
    m = make_machine(profile, memory="64M")
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = aligned(p, 64 * KiB)
    p.write(a, 64 * KiB)
    p.fork().exit()
    p.write(a + 3 * PAGE)
    copied = profile == "6.12"
    assert mthp(m, "64K").split_deferred == int(copied)
    assert mthp(m, "64K").nr_anon_partially_mapped == int(copied)
    assert m.vmstat().nr_anon_pages == 16  # 15 of the folio and the copy, or the folio
    assert m.stats().cow_copy == int(copied)


def test_pmd_thp_split_then_partial_munmap(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile, memory="64M")
    m.thp.enabled = "always"
    p = m.init
    a = aligned(p, 2 * MiB)
    p.write(a)
    v = m.vmstat()
    assert (v.nr_anon_pages, v.nr_anon_transparent_hugepages, v.thp_fault_alloc) == (512, 1, 1)
    assert m.meminfo().anon_huge_pages == 2048
    p.munmap(a + 2 * MiB - 64 * KiB, 64 * KiB)  # splits the PMD, then unmaps 16 PTEs
    v = m.vmstat()
    assert (v.nr_anon_pages, v.nr_anon_transparent_hugepages) == (496, 0)
    assert (v.thp_split_pmd, v.thp_deferred_split_page) == (1, 1)
    assert mthp(m, "2M") == MthpStats(1, 0, 0, 1, 1, 1, 0)
    assert m.meminfo().anon_huge_pages == 0


def test_whole_pmd_unmap_is_not_partial(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile, memory="64M")
    m.thp.enabled = "always"
    p = m.init
    a = aligned(p, 2 * MiB)
    p.write(a)
    c = p.fork()
    p.munmap(a, 2 * MiB)
    assert m.vmstat().nr_anon_transparent_hugepages == 1  # the child's PMD still maps it
    c.exit()
    assert mthp(m, "2M") == MthpStats(1, 0, 0, 0, 0, 0, 0)
    assert m.vmstat().nr_anon_pages == 0


def test_thp_fault_fallback_counts_with_the_2m_fallback(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile, memory="4M")  # no free 2M block once the tables are taken
    m.thp.enabled = "always"
    p = m.init
    a = aligned(p, 2 * MiB)
    p.write(a)
    v = m.vmstat()
    assert v.thp_fault_fallback == mthp(m, "2M").anon_fault_fallback == 1
    assert v.thp_fault_alloc == 0 and v.nr_anon_pages == 1


def test_events_fold_into_the_counters(make_machine: MachineFactory) -> None:
    m = make_machine("6.12", memory="64M")
    m.thp.sizes["16K"] = "always"
    p = m.init
    a = aligned(p, 16 * KiB)
    with m.record() as rec:
        p.write(a, 16 * KiB)
        head = p.observe(a)[0].pfn
        p.munmap(a, PAGE)
        p.munmap(a + PAGE, 3 * PAGE)
    kinds = [r.kind for r in rec.records() if r.kind >= EventCode.DEFERRED_SPLIT]
    assert kinds == [EventCode.DEFERRED_SPLIT, EventCode.DEFERRED_UNQUEUE]
    split = next(r for r in rec.records() if r.kind == EventCode.DEFERRED_SPLIT)
    assert (split.order, split.pfn) == (2, head)
    assert mthp(m, "16K") == MthpStats(1, 0, 0, 1, 0, 0, 0)


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_backends_agree(kernel: str) -> None:
    if "rust" not in cowcore.BACKENDS:
        pytest.skip("the Rust extension is not built")
    out = []
    for backend in ("rust", "reference"):
        m = cowcore.Machine(kernel, backend=backend, memory="64M")
        m.thp.sizes["64K"] = "always"
        m.thp.enabled = "always"
        p = m.init
        a = aligned(p, 2 * MiB)
        p.write(a, 2 * MiB)
        b = aligned(p, 64 * KiB)
        p.write(b, 64 * KiB)
        c = p.fork()
        p.madvise(a, 8 * KiB, "dontneed")
        c.write(b + PAGE)
        c.exit()
        p.munmap(b + 60 * KiB, PAGE)
        out.append((m.vmstat(), m.mthp_stats(), m.meminfo(), m.stats()))
    assert out[0] == out[1]


def test_munmap_splits_both_cut_thps_before_zapping(make_machine: MachineFactory) -> None:
    """munmap cuts its VMA first (``__split_vma``: ``vma_adjust_trans_huge`` splits a huge PMD
    a cut lands in) and zaps after, so both THPs a range cuts are split before either is
    queued as partially mapped (found by the long differential run: the core used to split
    each while zapping, as MADV_DONTNEED does)."""
    m = make_machine("6.12", memory="64M")
    m.thp.enabled = "always"
    p = m.init
    a = aligned(p, 4 * MiB)
    p.write(a, 4 * MiB, 1)  # two PMD THPs
    with m.record() as rec:
        p.munmap(a + MiB, 2 * MiB)
    kinds = [r.kind for r in rec.records()]
    assert kinds[:4] == [EventCode.THP_SPLIT_PMD, EventCode.TLB_FLUSH] * 2
    assert kinds[4:6] == [EventCode.DEFERRED_SPLIT] * 2
    assert mthp(m, "2M").nr_anon_partially_mapped == 2
