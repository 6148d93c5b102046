"""Anonymous faults: the zero pages, mTHP order selection, PMD THP (KS §2)."""

from __future__ import annotations

import pytest

from cowcore import Machine
from tests.conftest import KiB, MachineFactory, MiB


def obs(m: Machine, addr: int, length: int = 4096) -> list[tuple[object, ...]]:
    return [
        (o.frame_kind, o.folio_pages, o.mapcount, o.exclusive, o.content)
        for o in m.init.observe(addr, length)
    ]


def test_read_maps_the_shared_zero_page(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    assert m.init.read(a, 8 * KiB) == [0, 0]
    assert obs(m, a, 8 * KiB) == [("zero", 1, 0, False, 0)] * 2
    t = m.init.translate(a)
    assert t.page_size == 4096 and "RW" not in t.steps[-1].flags
    assert "SPECIAL" in t.steps[-1].flags


def test_write_after_read_of_zero_page_copies(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.read(a)
    m.init.write(a, value=7)
    assert obs(m, a) == [("normal", 1, 1, True, 7)]
    assert m.stats()["cow_copy"] == 1


@pytest.mark.parametrize(
    ("size", "pages"),
    [("16K", 4), ("32K", 8), ("64K", 16), ("128K", 32), ("256K", 64), ("512K", 128), ("1M", 256)],
)
def test_each_mthp_size_maps_the_whole_folio_writable(
    make_machine: MachineFactory, size: str, pages: int
) -> None:
    m = make_machine()
    m.thp.sizes[size] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a + 4096)
    o = m.init.observe(a, pages * 4096)
    assert {x.folio_pages for x in o} == {pages}
    assert [x.pfn for x in o] == list(range(o[0].pfn or 0, (o[0].pfn or 0) + pages))
    assert all("RW" in m.init.translate(a + i * 4096).steps[-1].flags for i in range(pages))
    assert m.stats()["anon_fault_alloc"] == {**dict.fromkeys(m.thp.sizes, 0), size: 1}
    f = m.folio(o[0].pfn or 0)
    assert f.refcount == pages and f.large_mapcount == pages
    assert f.mm_ids[0].mm_id == m.init.mm_id and f.mm_ids[0].mapcount == pages


def test_largest_fitting_order_wins_and_fallback_by_vma_size(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["64K"] = "always"
    m.thp.sizes["256K"] = "always"
    a = m.init.mmap(128 * KiB)
    m.init.write(a, 128 * KiB)
    assert {o.folio_pages for o in m.init.observe(a, 128 * KiB)} == {16}
    s = m.stats()
    assert s["anon_fault_alloc"]["64K"] == 2  # type: ignore[index]
    assert s["anon_fault_fallback"]["256K"] == 0  # type: ignore[index]


def test_non_empty_ptes_force_a_smaller_order(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["16K"] = "always"
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.read(a + 60 * KiB)  # zero page in the last 4K of the first 64K block
    m.init.write(a)
    assert m.init.observe(a)[0].folio_pages == 4


def test_inherit_follows_enabled_and_madvise(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["32K"] = "inherit"
    m.thp.enabled = "madvise"
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    assert m.init.observe(a)[0].folio_pages == 1
    m.init.madvise(a, 2 * MiB, "hugepage")
    m.init.write(a + 64 * KiB)
    assert m.init.observe(a + 64 * KiB)[0].folio_pages == 8


def test_madvise_mode_needs_the_advice(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["64K"] = "madvise"
    a = m.init.mmap(2 * MiB)
    m.init.write(a)
    assert m.init.observe(a)[0].folio_pages == 1
    m.init.madvise(a, 2 * MiB, "hugepage")
    m.init.write(a + 64 * KiB)
    assert m.init.observe(a + 64 * KiB)[0].folio_pages == 16
    m.init.madvise(a, 2 * MiB, "nohugepage")
    m.init.write(a + 128 * KiB)
    assert m.init.observe(a + 128 * KiB)[0].folio_pages == 1


def test_pmd_thp_write_fault(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.enabled = "always"
    m.thp.sizes["2M"] = "inherit"
    a = m.init.mmap(4 * MiB)
    m.init.write(a + 8 * KiB, value=3)
    o = m.init.observe(a, 16 * KiB)
    assert [x.content for x in o] == [0, 0, 3, 0]
    assert {x.folio_pages for x in o} == {512} and all(x.exclusive for x in o)
    t = m.init.translate(a)
    assert t.page_size == 2 * MiB and "PS" in t.steps[-1].flags and "RW" in t.steps[-1].flags
    f = m.folio(o[0].pfn or 0)
    assert (f.refcount, f.large_mapcount, f.entire_mapcount) == (1, 1, 1)
    s = m.stats()
    assert s["thp_fault_alloc"] == 1 and s["anon_fault_alloc"]["2M"] == 1  # type: ignore[index]


def test_pmd_thp_needs_an_aligned_2m_block_in_the_vma(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 * MiB - 64 * KiB)
    m.init.write(a)
    assert m.init.observe(a)[0].folio_pages == 16
    assert m.stats()["anon_fault_fallback"]["2M"] == 0  # type: ignore[index]


def test_read_of_pmd_range_maps_the_huge_zero_page(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    assert m.init.read(a + 4096) == [0]
    assert obs(m, a + 4096) == [("huge_zero", 512, 0, False, 0)]


def test_read_with_zero_page_off_allocates_a_thp(make_machine: MachineFactory) -> None:
    m = make_machine()
    m.thp.sizes["2M"] = "always"
    m.thp.use_zero_page = False
    a = m.init.mmap(2 * MiB)
    m.init.read(a)
    assert obs(m, a) == [("normal", 512, 1, True, 0)]


@pytest.mark.parametrize(("kernel", "pages", "splits"), [("6.12", 1, 1), ("6.15", 512, 0)])
def test_write_to_huge_zero_page(
    make_machine: MachineFactory, kernel: str, pages: int, splits: int
) -> None:
    """7.2 allocates a whole THP (do_huge_zero_wp_pmd); 6.12 splits and copies 4K."""
    m = make_machine(kernel)
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.read(a, 8 * KiB)
    m.init.write(a, value=9)
    o = m.init.observe(a, 8 * KiB)
    assert o[0].folio_pages == pages and o[0].content == 9
    assert m.stats()["thp_split_pmd"] == splits
    if kernel == "6.12":
        assert o[1].frame_kind == "zero"


def test_oom_falls_back_order_by_order(make_machine: MachineFactory) -> None:
    m = make_machine(memory="4M")
    m.thp.sizes["1M"] = "always"
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 * MiB)
    b = m.init.mmap(2 * MiB)
    m.init.write(a)  # 1M folio
    m.init.write(b)  # the rest of memory is fragmented below 1M
    s = m.stats()
    assert s["anon_fault_alloc"]["1M"] == 1  # type: ignore[index]
    assert s["anon_fault_fallback"]["1M"] == 1  # type: ignore[index]
    assert m.init.observe(b)[0].folio_pages == 16
