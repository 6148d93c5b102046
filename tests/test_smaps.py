"""smaps and smaps_rollup (fs/proc/task_mmu.c; docs/accounting.md), on every backend.

The expectations are the kernel's arithmetic written out: ``smaps_account`` divides each page
among its ``folio_precise_page_mapcount`` mappers in fixed point (``<< PSS_SHIFT``) and
counts it shared at 2 or more; x86's ``vm_page_prot`` carries the accessed bit, so a fresh
entry is young, and fork's ``pte_mkold``/``pmd_mkold`` makes the child's copies old.
"""

from __future__ import annotations

import pytest

import cowcore
from cowcore import Smaps
from cowcore.protocol import PSS_SHIFT
from tests.conftest import KiB, MachineFactory, MiB

PAGE = 4096
FULL = PAGE << PSS_SHIFT
"""The PSS of one page mapped once, in fixed point."""


def only(p: cowcore.Process) -> Smaps:
    (s,) = p.smaps()
    return s


def private(nbytes: int, *, referenced: int | None = None) -> dict[str, int]:
    """The accumulators of ``nbytes`` of fresh anonymous memory mapped by one process."""
    return {
        "rss": nbytes,
        "pss": nbytes << PSS_SHIFT,
        "pss_dirty": nbytes << PSS_SHIFT,
        "shared_clean": 0,
        "shared_dirty": 0,
        "private_clean": 0,
        "private_dirty": nbytes,
        "referenced": nbytes if referenced is None else referenced,
        "anonymous": nbytes,
    }


def sums(s: Smaps) -> dict[str, int]:
    return {k: getattr(s, k) for k in private(0)}


def thp_region(p: cowcore.Process, size: int = 2 * MiB) -> int:
    """A mapping of ``2 * size`` with a ``size``-aligned address inside it."""
    a = p.mmap(2 * size)
    return (a + size - 1) & ~(size - 1)


def test_fresh_4k_pages(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    a = m.init.mmap(64 * KiB)
    m.init.write(a, 3 * PAGE)
    s = only(m.init)
    assert (s.start, s.end, s.prot, s.flags, s.size) == (a, a + 64 * KiB, "rw", (), 64 * KiB)
    assert sums(s) == private(3 * PAGE)
    assert (s.anon_huge_pages, s.swap, s.swap_pss) == (0, 0, 0)
    assert s.kb()["Rss"] == 12 and s.kb()["Pss"] == 12


def test_fresh_64k_folio_counts_all_its_ptes(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    m.thp.sizes["64K"] = "always"
    a = thp_region(m.init, 64 * KiB)
    m.init.write(a + 5 * PAGE)
    assert m.init.observe(a)[0].folio_pages == 16
    s = only(m.init)
    assert sums(s) == private(64 * KiB)  # 16 young dirty PTEs
    assert s.anon_huge_pages == 0, "AnonHugePages counts PMD mappings only"


def test_fresh_2m_thp_is_anon_huge(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    m.thp.sizes["2M"] = "always"
    a = thp_region(m.init)
    m.init.write(a)
    s = only(m.init)
    assert sums(s) == private(2 * MiB)
    assert s.anon_huge_pages == 2 * MiB and s.kb()["AnonHugePages"] == 2048


def test_zero_pages_are_not_counted(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    a = m.init.mmap(64 * KiB)
    m.init.read(a, 4 * PAGE)
    assert m.init.observe(a)[0].frame_kind == "zero"
    assert sums(only(m.init)) == private(0)
    m.thp.sizes["2M"] = "always"
    b = thp_region(m.init)
    m.init.read(b)
    assert m.init.observe(b)[0].frame_kind == "huge_zero"
    assert all(sums(s) == private(0) and s.anon_huge_pages == 0 for s in m.init.smaps())


def test_fork_shares_and_halves_pss(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    a = m.init.mmap(64 * KiB)
    m.init.write(a, 4 * PAGE)
    c = m.init.fork()
    # The child's PTEs are pte_mkold; on 7.x (the 6.15 profile) each folio got
    # PG_referenced at its fault, which every process mapping it counts.
    child_ref = 4 * PAGE if profile == "6.15" else 0
    for p, young in ((m.init, 4 * PAGE), (c, child_ref)):
        s = only(p)
        assert (s.rss, s.shared_dirty, s.private_dirty, s.shared_clean) == (
            4 * PAGE,
            4 * PAGE,
            0,
            0,
        )
        assert s.pss == s.pss_dirty == 4 * (FULL // 2)
        assert s.referenced == young
    c.read(a)  # the MMU sets the accessed bit of the child's PTE
    assert only(c).referenced == max(PAGE, child_ref)
    c.exit()
    assert sums(only(m.init)) == private(4 * PAGE)


def test_fork_of_a_pmd_thp(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    m.thp.sizes["2M"] = "always"
    a = thp_region(m.init)
    m.init.write(a)
    c = m.init.fork()
    for p in (m.init, c):
        (s,) = [s for s in p.smaps() if s.rss]
        assert (s.rss, s.anon_huge_pages, s.shared_dirty, s.pss) == (
            2 * MiB,
            2 * MiB,
            2 * MiB,
            512 * (FULL // 2),
        )
    assert [s.referenced for s in c.smaps()] == [2 * MiB if profile == "6.15" else 0]


def test_referenced_follows_touch_and_the_lru_batch(
    make_machine: MachineFactory, profile: str
) -> None:
    """A FOLL_TOUCH read (``touch``) marks a PTE-mapped folio referenced for every process
    that maps it; on 6.12 a small folio still in the per-CPU LRU-add batch loses the mark when
    the batch drains (here: a large folio's fault), on 7.x every faulted folio is marked
    anyway (tests/kernel/scenarios/referenced-lru-batch-4K.cow)."""
    m = make_machine(profile)
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, PAGE)
    p.touch(a)
    c = p.fork()
    assert only(c).referenced == PAGE  # the child's PTE is old: this is PG_referenced
    m.thp.sizes["64K"] = "always"
    b = thp_region(p, 64 * KiB)
    p.write(b)  # a 64K folio: folio_add_lru moves the whole batch to the LRU
    assert [s.referenced for s in c.smaps() if s.rss] == [PAGE if profile == "6.15" else 0]
    p.touch(a)  # on the LRU now: the mark stays
    assert [s.referenced for s in c.smaps() if s.rss] == [PAGE]


def test_touch_leaves_pmd_mapped_thps_alone(make_machine: MachineFactory) -> None:
    """``follow_huge_pmd`` only touches the PMD, which a read does not change on x86."""
    m = make_machine("6.12")
    m.thp.sizes["2M"] = "always"
    a = thp_region(m.init)
    m.init.write(a)
    c = m.init.fork()
    c.touch(a, 2 * MiB)
    assert [s.referenced for s in c.smaps() if s.rss] == [0]
    m.init.munmap(a + 2 * MiB - PAGE, PAGE)  # splits the parent's PMD; the child's stays
    m.init.touch(a, PAGE)  # a PTE of the folio now: the whole folio is marked
    assert [s.referenced for s in c.smaps() if s.rss] == [2 * MiB]


def test_touch_checks_its_range(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(64 * KiB)
    m.init.touch(a - 64 * KiB, 256 * KiB)  # holes are skipped, nothing is faulted in
    assert m.init.rss_anon() == 0
    with pytest.raises(cowcore.InvalidArgumentError):
        m.init.touch(a + 1, PAGE)


def test_cow_copy_and_reuse(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    a = m.init.mmap(64 * KiB)
    m.init.write(a, 4 * PAGE)
    c = m.init.fork()
    c.write(a)  # wp_page_copy: the child's new page is its own, the parent's too now
    for p in (m.init, c):
        s = only(p)
        assert (s.private_dirty, s.shared_dirty) == (PAGE, 3 * PAGE)
        assert s.pss == FULL + 3 * (FULL // 2)
    assert m.stats().cow_copy == 1
    m.init.write(a)  # mapped once: do_wp_page reuses it
    assert m.stats().pgreuse == 1
    assert (only(m.init).private_dirty, only(m.init).pss) == (PAGE, FULL + 3 * (FULL // 2))


def test_partial_munmap_of_a_shared_large_folio(make_machine: MachineFactory, profile: str) -> None:
    """Per page, not per folio: the half the child unmapped is the parent's alone again."""
    m = make_machine(profile)
    m.thp.sizes["64K"] = "always"
    a = thp_region(m.init, 64 * KiB)
    m.init.write(a, 64 * KiB)
    c = m.init.fork()
    c.munmap(a, 32 * KiB)
    (s,) = [s for s in m.init.smaps() if s.rss]
    assert (s.rss, s.private_dirty, s.shared_dirty) == (64 * KiB, 32 * KiB, 32 * KiB)
    assert s.pss == 8 * FULL + 8 * (FULL // 2)
    (s,) = [s for s in c.smaps() if s.rss]
    assert (s.rss, s.shared_dirty, s.pss) == (32 * KiB, 32 * KiB, 8 * (FULL // 2))


def test_partial_munmap_of_a_pmd_thp(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    m.thp.sizes["2M"] = "always"
    a = thp_region(m.init)
    m.init.write(a)
    m.init.munmap(a + 1 * MiB, 1 * MiB)  # the PMD is split; 256 PTEs stay
    s = next(s for s in m.init.smaps() if s.start <= a < s.end)
    assert sums(s) == private(1 * MiB)
    assert s.anon_huge_pages == 0


def test_mprotect_splits_the_vma_and_keeps_the_bits(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile)
    a = m.init.mmap(4 * PAGE)
    m.init.write(a, 4 * PAGE)
    m.init.mprotect(a + PAGE, 2 * PAGE, "r")
    s = m.init.smaps()
    assert [(r.start, r.end, r.prot) for r in s] == [
        (a, a + PAGE, "rw"),
        (a + PAGE, a + 3 * PAGE, "r"),
        (a + 3 * PAGE, a + 4 * PAGE, "rw"),
    ]
    # pte_modify keeps A and D (D as SavedDirty on the read-only entries: still pte_dirty).
    assert [sums(r) for r in s] == [private(PAGE), private(2 * PAGE), private(PAGE)]
    m.init.mprotect(a, 4 * PAGE, "none")
    assert sums(only(m.init)) == private(4 * PAGE), "PROT_NONE entries are pte_present"


def test_dontneed(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    m.thp.sizes["64K"] = "always"
    a = thp_region(m.init, 64 * KiB)
    m.init.write(a, 64 * KiB)
    m.init.madvise(a + 16 * KiB, 16 * KiB, "dontneed")
    (s,) = [s for s in m.init.smaps() if s.rss]
    assert sums(s) == private(48 * KiB)


def test_pss_of_three_sharers_rounds_down_per_page(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile)
    a = m.init.mmap(2 * PAGE)
    m.init.write(a, 2 * PAGE)
    m.init.fork()
    m.init.fork()
    s = only(m.init)
    assert s.pss == 2 * (FULL // 3)  # each page's share truncated, then added
    assert s.kb()["Pss"] == (2 * (FULL // 3)) >> (10 + PSS_SHIFT) == 2


def test_rollup_rounds_once(make_machine: MachineFactory, profile: str) -> None:
    """Four one-page VMAs shared by three: each smaps line says 1 kB of PSS (1.33 kB
    truncated), the rollup 5 kB (4 x 1.33 truncated once)."""
    m = make_machine(profile)
    a = m.init.mmap(8 * PAGE)
    m.init.write(a, 8 * PAGE)
    for i in range(1, 8, 2):
        m.init.munmap(a + i * PAGE, PAGE)
    m.init.fork()
    m.init.fork()
    per_vma = m.init.smaps()
    assert len(per_vma) == 4
    assert [r.kb()["Pss"] for r in per_vma] == [(FULL // 3) >> (10 + PSS_SHIFT)] * 4 == [1] * 4
    rollup = m.init.smaps_rollup()
    assert rollup.pss == 4 * (FULL // 3)
    assert rollup.kb()["Pss"] == (4 * (FULL // 3)) >> (10 + PSS_SHIFT) == 5
    assert (rollup.start, rollup.end) == (a, a + 7 * PAGE)
    assert rollup.kb()["Rss"] == sum(r.kb()["Rss"] for r in per_vma) == 16


def test_rollup_of_no_vma(make_machine: MachineFactory) -> None:
    m = make_machine()
    assert m.init.smaps() == []
    r = m.init.smaps_rollup()
    assert (r.start, r.end, r.rss, r.pss) == (0, 0, 0, 0)


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_backends_agree(kernel: str) -> None:
    """The same history on every backend gives the same records."""
    results = []
    for backend in cowcore.BACKENDS:
        m = cowcore.Machine(kernel, backend=backend)
        m.thp.sizes["64K"] = "always"
        m.thp.sizes["2M"] = "always"
        a = m.init.mmap(8 * MiB)
        m.init.write(a, 3 * MiB)
        c = m.init.fork()
        c.write(a + 2 * MiB + 4 * KiB)
        c.munmap(a + 2 * MiB + 64 * KiB, 96 * KiB)
        m.init.fork()
        results.append([p.smaps() for p in m.processes()])
    assert all(r == results[0] for r in results)
