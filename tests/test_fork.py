"""fork(): what the child gets and what both sides lose (KS §3)."""

from __future__ import annotations

import pytest

from cowcore import OutOfMemoryError
from tests.conftest import KiB, MachineFactory, MiB


def test_fork_shares_and_write_protects(make_machine: MachineFactory) -> None:
    """Appendix A step 2: one batch of 16 PTEs."""
    m = make_machine()
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 64 * KiB)
    c = p.fork()
    f = m.folio(p.translate(a).pfn or 0)
    assert f.refcount == 32 and f.large_mapcount == 32 and f.page_mapcounts == (2,) * 16
    assert f.mm_ids[0].mm_id == p.mm_id and f.mm_ids[1].mm_id == c.mm_id
    assert f.mm_ids[1].mapcount == 16 and f.maybe_mapped_shared and not any(f.anon_exclusive)
    for proc in (p, c):
        leaf = proc.translate(a).steps[-1].flags
        assert "RW" not in leaf and "SAVED_DIRTY" in leaf and "D" not in leaf
    assert "A" in p.translate(a).steps[-1].flags
    assert "A" not in c.translate(a).steps[-1].flags, "the child's copy is old"
    assert [o.pfn for o in c.observe(a, 64 * KiB)] == [o.pfn for o in p.observe(a, 64 * KiB)]


def test_mm_ids_are_lowest_free_and_reused(make_machine: MachineFactory) -> None:
    m = make_machine()
    c1, c2 = m.init.fork(), m.init.fork()
    assert (m.init.mm_id, c1.mm_id, c2.mm_id) == (1, 2, 3)
    c1.exit()
    c3 = m.init.fork()
    assert c3.mm_id == 2 and c3.pid == 4, "mm ids are reused, pids are not"


def test_dontfork_and_wipeonfork(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 16 * KiB, value=5)
    m.init.madvise(a, 4 * KiB, "wipeonfork")
    m.init.madvise(a + 4 * KiB, 4 * KiB, "dontfork")
    c = m.init.fork()
    assert [o.present for o in c.observe(a, 16 * KiB)] == [False, False, True, True]
    assert c.read(a) == [0], "a wiped range reads zeros"
    with pytest.raises(Exception, match="unmapped"):
        c.read(a + 4 * KiB)
    assert [v[2] for v in c.vmas()] == ["rw", "rw"]
    m.init.madvise(a, 16 * KiB, "keeponfork")
    m.init.madvise(a, 16 * KiB, "dofork")
    assert len(m.init.vmas()) == 1, "VMAs merge back once their flags agree"


def test_zero_page_only_vma_is_not_copied(make_machine: MachineFactory) -> None:
    """No anon_vma until a fault allocates, so vma_needs_copy() is false."""
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.read(a)
    c = m.init.fork()
    assert c.observe(a)[0].present is False
    m.init.write(a + 4096)
    c2 = m.init.fork()
    assert c2.observe(a)[0].frame_kind == "zero"


def test_huge_zero_pmd_is_copied(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.read(a)
    c = m.init.fork()
    assert c.observe(a)[0].frame_kind == "huge_zero"


def test_fork_out_of_memory_changes_nothing(make_machine: MachineFactory) -> None:
    m = make_machine(memory="4M")  # 1024 frames; 514 go to the zero pages and the PGD
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 504 * 4096)  # 3 tables + 504 pages: 3 frames left, fork needs 4
    assert m.free_frames() == 3
    before = (m.init.translate(a).steps[-1].entry, m.stats(), m.folio(m.init.translate(a).pfn or 0))
    with pytest.raises(OutOfMemoryError):
        m.init.fork()
    after = (m.init.translate(a).steps[-1].entry, m.stats(), m.folio(m.init.translate(a).pfn or 0))
    assert after == before and m.free_frames() == 3
    assert [p.pid for p in m.processes()] == [1]
    m.init.munmap(a + 8 * KiB, 8 * KiB)
    c = m.init.fork()  # now it fits
    assert c.read(a) == [1]


def test_write_out_of_memory_stops_at_the_faulting_page(make_machine: MachineFactory) -> None:
    m = make_machine(memory="4M")
    a = m.init.mmap(4 * MiB)
    with pytest.raises(OutOfMemoryError):
        m.init.write(a, 4 * MiB, value=2)
    done = m.init.observe(a, 4 * MiB)
    n = sum(o.present for o in done)
    assert n > 0 and all(o.present for o in done[:n]) and not any(o.present for o in done[n:])
    assert m.free_frames() in (0, 1), "only the page (and maybe its undone table) failed"


def test_five_level_paging(make_machine: MachineFactory) -> None:
    m = make_machine(levels=5)
    a = m.init.mmap(2 * MiB)
    m.init.write(a, value=3)
    t = m.init.translate(a)
    assert [s.level for s in t.steps] == ["pgd", "p4d", "pud", "pmd", "pte"]
    c = m.init.fork()
    assert c.read(a) == [3]
