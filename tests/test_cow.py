"""The write-protect fault after fork: reuse or copy, under both profiles (KS §4)."""

from __future__ import annotations

import pytest

from cowcore import Machine, Process
from tests.conftest import KiB, MachineFactory, MiB

REUSES = {"6.12": False, "6.15": True}


def mthp_after_fork(m: Machine, size: str = "64K", pages: int = 16) -> tuple[Process, int]:
    m.thp.sizes[size] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, pages * 4096, value=1)
    return p.fork(), a


def test_seed_reuse_after_child_exit(make_machine: MachineFactory, profile: str) -> None:
    """The seed commit: a PTE-mapped mTHP, fork, child exits, parent writes (Appendix A)."""
    m = make_machine(profile)
    child, a = mthp_after_fork(m)
    before = m.init.translate(a + 3 * 4096).pfn
    child.exit()
    f = m.folio(before or 0)
    assert not f.maybe_mapped_shared and f.refcount == 16 == f.large_mapcount
    m.init.write(a + 3 * 4096, value=2)
    after = m.init.observe(a + 3 * 4096)[0]
    assert (after.pfn == before) is REUSES[profile]
    assert after.content == 2 and after.exclusive
    s = m.stats()
    assert s["pgreuse"] == (1 if REUSES[profile] else 0)
    assert s["cow_copy"] == (0 if REUSES[profile] else 1)
    if REUSES[profile]:
        f = m.folio(after.pfn or 0)
        assert f.anon_exclusive[3] and sum(f.anon_exclusive) == 1
        assert "RW" in m.init.translate(a + 3 * 4096).steps[-1].flags
        assert "RW" not in m.init.translate(a + 4 * 4096).steps[-1].flags
        m.init.write(a + 5 * 4096)  # every later page reuses too, one fault each
        assert m.stats()["pgreuse"] == 2
    else:
        assert m.init.observe(a + 3 * 4096)[0].folio_pages == 1


def test_child_alive_copies_on_every_profile(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    child, a = mthp_after_fork(m)
    shared = m.init.translate(a).pfn
    m.init.write(a, value=2)
    mine = m.init.observe(a)[0]
    assert mine.pfn != shared and mine.folio_pages == 1 and mine.content == 2
    theirs = child.observe(a)[0]
    assert theirs.pfn == shared and theirs.content == 1 and theirs.exclusive
    f = m.folio(shared or 0)
    assert f.maybe_mapped_shared and f.refcount == 31 and f.mm_ids[0].mapcount == 15
    assert child.read(a) == [1], "the child never sees the parent's write"


def test_child_writes_first_then_parent(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    child, a = mthp_after_fork(m)
    child.write(a, 16 * 4096, value=5)  # the child copies all 16 pages
    f = m.folio(m.init.translate(a).pfn or 0)
    assert f.refcount == 16 and f.mm_ids[1].mm_id == 0
    assert f.maybe_mapped_shared is False, "the child's slot emptied: the bit is re-evaluated"
    m.init.write(a, value=6)
    assert (m.init.translate(a).pfn == f.pfn) is REUSES[profile]
    assert child.read(a, 8192) == [5, 5] and m.init.read(a, 8192) == [6, 1]


def test_dontneed_in_live_child(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    child, a = mthp_after_fork(m)
    child.madvise(a, 64 * KiB, "dontneed")
    m.init.write(a, value=2)
    assert m.init.observe(a)[0].folio_pages == (16 if REUSES[profile] else 1)
    assert child.observe(a)[0].present is False


def test_partial_dontneed_in_child_keeps_the_folio_shared(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    child, a = mthp_after_fork(m)
    child.madvise(a + 32 * KiB, 32 * KiB, "dontneed")
    m.init.write(a + 48 * KiB)  # a page the child no longer maps: folio still shared
    assert m.init.observe(a + 48 * KiB)[0].folio_pages == 1


def test_grandchild(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    child, a = mthp_after_fork(m, "32K", 8)
    grandchild = child.fork()
    grandchild.exit()
    m.init.write(a, value=2)
    assert m.init.observe(a)[0].folio_pages == 1  # the child still maps it
    child.exit()
    m.init.write(a + 4096, value=3)
    assert m.init.observe(a + 4096)[0].folio_pages == 8


def test_three_live_mms_leave_a_stale_shared_bit(make_machine: MachineFactory) -> None:
    """With three mms the untracked one can end up the sole mapper: reuse is refused."""
    m = make_machine("6.15")
    m.thp.sizes["32K"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 32 * KiB)
    c1 = m.init.fork()
    c2 = m.init.fork()  # untracked: both slots taken
    pfn = m.init.translate(a).pfn or 0
    c1.exit()  # slot 1 freed: parent 8 + untracked 8 = 16 left, slot 0 == 8: no clear
    m.init.munmap(a, 2 * MiB)  # slot 0 freed: 8 left, both slots 0: no clear
    f = m.folio(pfn)
    assert f.large_mapcount == 8 and f.mm_ids[0].mm_id == 0 and f.mm_ids[1].mm_id == 0
    assert f.maybe_mapped_shared
    c2.write(a, value=4)
    assert c2.observe(a)[0].folio_pages == 1, "false positive: the untracked mm copies"


def test_mprotect_roundtrip_keeps_shared_pages_readonly(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile)
    child, a = mthp_after_fork(m, "32K", 8)
    child.exit()
    m.init.mprotect(a, 32 * KiB, "r")
    m.init.mprotect(a, 32 * KiB, "rw")
    assert "RW" not in m.init.translate(a).steps[-1].flags
    m.init.write(a, value=2)
    assert m.init.observe(a)[0].folio_pages == (8 if REUSES[profile] else 1)


def test_policy_toggle_overrides_profile(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    m.policy.cow_reuse_pte_mapped_thp = False
    child, a = mthp_after_fork(m)
    child.exit()
    m.init.write(a)
    assert m.init.observe(a)[0].folio_pages == 1
    m2 = make_machine("6.12")
    m2.policy.cow_reuse_pte_mapped_thp = True
    child, a = mthp_after_fork(m2)
    child.exit()
    m2.init.write(a)
    assert m2.init.observe(a)[0].folio_pages == 16


def test_last_mapped_page_is_copied_not_reused(make_machine: MachineFactory) -> None:
    """large_mapcount <= 1: copy, so the large folio can be freed."""
    m = make_machine("6.15")
    child, a = mthp_after_fork(m)
    child.exit()
    m.init.madvise(a + 4096, 15 * 4096, "dontneed")
    pfn = m.init.translate(a).pfn
    m.init.write(a)
    o = m.init.observe(a)[0]
    assert o.pfn != pfn and o.folio_pages == 1


def test_small_folio_reuse_after_child_exit(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile)
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    pfn = m.init.translate(a).pfn
    child = m.init.fork()
    child.exit()
    m.init.write(a, value=2)
    assert m.init.translate(a).pfn == pfn and m.stats()["pgreuse"] == 1


@pytest.mark.parametrize("exit_child", [False, True])
def test_pmd_thp_after_fork(make_machine: MachineFactory, profile: str, exit_child: bool) -> None:
    m = make_machine(profile)
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, value=1)
    head = m.init.translate(a).pfn
    child = m.init.fork()
    f = m.folio(head or 0)
    assert (f.refcount, f.large_mapcount, f.entire_mapcount) == (2, 2, 2)
    if exit_child:
        child.exit()
        m.init.write(a + 4096, value=2)  # refcount 1: the PMD is reused on every kernel
        assert m.init.translate(a).page_size == 2 * MiB
        assert m.init.observe(a + 4096)[0].pfn == (head or 0) + 1
        assert m.stats()["thp_split_pmd"] == 0
        return
    m.init.write(a, value=2)  # Appendix B: split the parent's PMD, copy 4K
    assert m.stats()["thp_split_pmd"] == 1
    f = m.folio(head or 0)
    assert (f.refcount, f.large_mapcount, f.entire_mapcount) == (512, 512, 1)
    assert f.mm_ids[0].mapcount == 511 and f.maybe_mapped_shared
    o = m.init.observe(a, 8192)
    assert o[0].folio_pages == 1 and o[1].pfn == (head or 0) + 1 and o[1].mapcount == 2
    child.exit()  # Appendix B step 4: the parent alone, 511 == 511
    f = m.folio(head or 0)
    assert not f.maybe_mapped_shared and f.refcount == 511
    m.init.write(a + 4096, value=3)
    assert (m.init.translate(a + 4096).pfn == (head or 0) + 1) is REUSES[profile]
