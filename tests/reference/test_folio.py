"""MM-owner slot tracking (include/linux/rmap.h; kernel-semantics.md §1.5)."""

from __future__ import annotations

from cowcore.reference.folio import Folio


def new_folio(order: int = 4, mm: int = 1) -> Folio:
    f = Folio(pfn=0, order=order, serial=1)
    f.refcount = f.nr_pages
    f.add_new_anon_rmap(mm, exclusive=True, pmd_mapped=False)
    return f


def test_new_pte_mapped_folio_belongs_to_one_mm() -> None:
    f = new_folio()
    assert f.large_mapcount == 16
    assert (f.mm_ids, f.mm_id_mapcount) == ([1, 0], [16, 0])
    assert not f.shared and not f.maybe_mapped_shared()
    assert all(f.anon_exclusive) and f.nr_pages_mapped == 16


def test_fork_then_child_exit_clears_shared() -> None:
    """Appendix A steps 2 and 3b."""
    f = new_folio()
    f.dup_ptes(0, 16, child_mm_id=2)
    assert f.shared and f.mm_ids == [1, 2] and f.large_mapcount == 32
    assert not any(f.anon_exclusive)
    f.remove_rmap_ptes(0, 16, mm_id=2)
    assert f.mm_ids == [1, 0] and f.mm_id_mapcount == [16, 0]
    assert not f.shared


def test_shared_stays_while_unmapping_mm_keeps_mappings() -> None:
    """Appendix A step 3a: the parent copies one page; its slot still counts 15."""
    f = new_folio()
    f.dup_ptes(0, 16, child_mm_id=2)
    f.remove_rmap_ptes(3, 1, mm_id=1)
    assert f.mm_id_mapcount == [15, 16] and f.shared


def test_third_mm_is_untracked_and_leaves_a_false_positive() -> None:
    f = new_folio()
    f.dup_ptes(0, 16, child_mm_id=2)
    f.add_rmap_ptes(0, 16, mm_id=3, exclusive=False)  # e.g. a grandchild
    assert f.mm_ids == [1, 2] and f.large_mapcount == 48
    f.remove_rmap_ptes(0, 16, mm_id=1)  # slot 0 freed: 32 left, slot 1 counts 16 -> no clear
    assert f.shared
    f.remove_rmap_ptes(0, 16, mm_id=2)  # both slots free, 16 left by the untracked mm
    assert f.shared, "the untracked sole mapper keeps a stale shared bit"
    assert f.maybe_mapped_shared()


def test_untracked_unmap_reevaluates() -> None:
    f = new_folio()
    f.dup_ptes(0, 16, child_mm_id=2)
    f.add_rmap_ptes(0, 16, mm_id=3, exclusive=False)
    f.remove_rmap_ptes(0, 16, mm_id=2)  # slot 1 freed; slot 0 (16) != 32 left
    assert f.shared
    f.remove_rmap_ptes(0, 16, mm_id=3)  # untracked mm goes: slot 0 holds all 16 -> clear
    assert not f.shared and f.large_mapcount == 16


def test_pmd_mapping_counts_once() -> None:
    f = Folio(pfn=0, order=9, serial=1)
    f.refcount = 1
    f.add_new_anon_rmap(1, exclusive=True, pmd_mapped=True)
    assert f.large_mapcount == 1 and f.entire_mapcount == 1
    assert f.anon_exclusive[0] and not any(f.anon_exclusive[1:])
    f.dup_pmd(2)
    assert f.large_mapcount == 2 and f.entire_mapcount == 2 and f.shared
    assert f.precise_page_mapcount(7) == 2


def test_small_folio_has_no_slots() -> None:
    f = new_folio(order=0)
    f.dup_ptes(0, 1, child_mm_id=2)
    assert f.page_mapcount == [2] and f.mm_ids == [0, 0] and f.maybe_mapped_shared()
