"""munmap, exit and MADV_DONTNEED: counters, PMD splits and freeing (KS §5, §6.1)."""

from __future__ import annotations

from tests.conftest import KiB, MachineFactory, MiB


def test_exit_frees_everything(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["64K"] = "always"
    m.thp.sizes["2M"] = "always"
    free0 = m.free_frames()
    c = m.init.fork()
    a = c.mmap(8 * MiB)
    c.write(a, 2 * MiB)
    c.read(a + 2 * MiB)
    c.write(a + 4 * MiB + 12 * KiB)
    g = c.fork()
    c.exit()
    g.exit()
    assert m.free_frames() == free0
    assert [p.pid for p in m.processes()] == [1]


def test_munmap_frees_page_tables(make_machine: MachineFactory) -> None:
    m = make_machine()
    free0 = m.free_frames()
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    assert free0 - m.free_frames() == 4  # PUD, PMD, PTE tables and the page
    m.init.munmap(a, 2 * MiB)
    assert m.free_frames() == free0


def test_partial_munmap_splits_the_pmd(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, value=1)
    head = m.init.translate(a).pfn or 0
    m.init.munmap(a + 1 * MiB, 1 * MiB)
    assert m.stats()["thp_split_pmd"] == 1
    f = m.folio(head)
    assert f.large_mapcount == 256 and f.entire_mapcount == 0 and f.refcount == 256
    assert all(f.anon_exclusive[:256]), "the split inherits the PMD's exclusivity"
    assert m.init.observe(a + 1 * MiB)[0].present is False
    assert "RW" in m.init.translate(a).steps[-1].flags


def test_partial_unmap_in_child_after_fork(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    m.thp.sizes["32K"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 32 * KiB)
    c = m.init.fork()
    c.munmap(a, 16 * KiB)
    m.init.write(a + 16 * KiB)  # the child still maps pages 4..7: copy
    assert m.init.observe(a + 16 * KiB)[0].folio_pages == 1
    c.munmap(a + 16 * KiB, 16 * KiB)  # now the parent owns the rest
    m.init.write(a + 20 * KiB)
    assert m.init.observe(a + 20 * KiB)[0].folio_pages == 8


def test_dontneed_keeps_vma_and_refaults_zero(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.write(a, value=4)
    m.init.madvise(a, 4 * KiB, "dontneed")
    assert m.init.observe(a)[0].present is False
    assert m.init.read(a) == [0]


def test_munmap_of_unmapped_range_is_fine(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.munmap(a + 4 * MiB, 2 * MiB)
    m.init.munmap(a, 2 * MiB)
    m.init.munmap(a, 2 * MiB)
    assert m.init.vmas() == []
