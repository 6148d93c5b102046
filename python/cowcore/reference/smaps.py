"""``/proc/<pid>/smaps`` of the anonymous VMAs (fs/proc/task_mmu.c; docs/accounting.md).

``show_smap`` -> ``smap_gather_stats`` -> ``walk_page_vma`` with ``smaps_walk_ops``, whose
``pmd_entry`` is ``smaps_pte_range``: a huge PMD goes to ``smaps_pmd_entry``, each PTE to
``smaps_pte_entry``, and both end in ``smaps_account``, which fills ``struct
mem_size_stats`` (:class:`MemSizeStats`): bytes, and the PSS sums in fixed point
(``<< PSS_SHIFT``).

``Referenced`` is the entry's accessed bit or the folio's ``PG_referenced``
(:meth:`~cowcore.reference.kernel.Kernel.folio_add_lru`, ``touch``). What the model leaves
out: swap and migration entries (none exist), ``PG_young`` (page idle tracking) and
``PG_dirty`` of an anonymous folio, which changes no line here: the only path the model has
that sets it, the split of a dirty PMD (``__split_huge_pmd_locked``), also makes every new PTE
dirty, and the model never cleans an anonymous PTE. Locked, LazyFree and KSM are not in the
record.

Both profiles run with ``CONFIG_PAGE_MAPCOUNT``, so ``smaps_account`` takes the per-page
``folio_precise_page_mapcount`` path under both (the ``CONFIG_NO_PAGE_MAPCOUNT`` branch of
6.15+, ``folio_average_page_mapcount`` and ``folio_maybe_mapped_shared``, is not modelled).
"""

from __future__ import annotations

from dataclasses import dataclass

from cowcore.protocol import PSS_SHIFT, Smaps
from cowcore.reference import paging as pg
from cowcore.reference import swap
from cowcore.reference.folio import Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Vma
from cowcore.reference.pagewalk import WalkAction, WalkOps, walk_page_vma


@dataclass(slots=True)
class MemSizeStats:
    """``struct mem_size_stats``: the accumulators that ``__show_smap`` prints."""

    resident: int = 0
    pss: int = 0
    pss_dirty: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    referenced: int = 0
    anonymous: int = 0
    anonymous_thp: int = 0
    swap: int = 0
    swap_pss: int = 0


def smaps_page_accumulate(
    mss: MemSizeStats, size: int, pss: int, dirty: bool, private: bool
) -> None:
    """``smaps_page_accumulate``: add ``size`` bytes with PSS share ``pss`` (fixed point) to
    the dirty or clean, private or shared sums."""
    mss.pss += pss
    if dirty:
        mss.pss_dirty += pss
        if private:
            mss.private_dirty += size
        else:
            mss.shared_dirty += size
    elif private:
        mss.private_clean += size
    else:
        mss.shared_clean += size


def smaps_account(
    mss: MemSizeStats, folio: Folio, first: int, nr: int, young: bool, dirty: bool
) -> None:
    """``smaps_account`` for a present entry mapping pages ``first .. first+nr`` of
    ``folio`` (one page for a PTE, the whole folio for a PMD, ``compound``).

    ``folio_ref_count == 1`` means the folio is mapped exactly once: all of it private, at
    full PSS. Otherwise each page on its own: ``folio_precise_page_mapcount`` (its PTE
    mappings plus the folio's PMD mappings); 2 or more makes it shared, at PSS
    ``(PAGE_SIZE << PSS_SHIFT) / mapcount``, rounded down per page.
    """
    size = nr * pg.PAGE_SIZE
    mss.anonymous += size  # folio_test_anon
    mss.resident += size
    if young or folio.referenced:  # pte_young || folio_test_young || folio_test_referenced
        mss.referenced += size
    if folio.refcount == 1:
        smaps_page_accumulate(mss, size, size << PSS_SHIFT, dirty, True)
        return
    for i in range(first, first + nr):
        mapcount = folio.precise_page_mapcount(i)
        pss = pg.PAGE_SIZE << PSS_SHIFT
        if mapcount >= 2:
            pss //= mapcount
        smaps_page_accumulate(mss, pg.PAGE_SIZE, pss, dirty, mapcount < 2)


class _SmapsOps(WalkOps):
    """``smaps_walk_ops``: ``smaps_pte_range`` as ``pmd_entry`` (a huge PMD) and
    ``pte_entry`` (one PTE, ``smaps_pte_entry``)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.mss = MemSizeStats()

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        """``smaps_pmd_entry`` for a huge PMD (``pmd_trans_huge_lock`` succeeds); a table's
        PTEs are walked."""
        pmd = self.k.entry(table, idx)
        if not pg.is_present(pmd):
            raise pg.not_modelled(pmd, addr, "smaps")  # a PMD migration entry
        if not pmd & pg.PS:
            return WalkAction.SUBTREE
        head = pg.entry_pfn(pmd)
        if not self.k.is_huge_zero_pfn(head):  # vm_normal_page_pmd: NULL for the huge zero
            folio = self.k.page_folio[head]
            self.mss.anonymous_thp += pg.PMD_SIZE  # folio_test_anon
            smaps_account(self.mss, folio, 0, folio.nr_pages, bool(pmd & pg.A), pg.is_dirty(pmd))
        return WalkAction.CONTINUE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        """``smaps_pte_entry``: a present PTE of a normal page is accounted; the zero page
        is not (``vm_normal_page`` is NULL for it)."""
        pte = ptes[i]
        if not pg.is_present(pte):
            if not swap.is_swap_pte(pte):
                raise pg.not_modelled(pte, addr, "smaps")  # a migration entry
            # the swap part of smaps_pte_entry: Swap, and SwapPss by swp_swapcount
            self.mss.swap += pg.PAGE_SIZE
            mapcount = self.k.swap.count(pg.swp_offset(pte))
            pss = pg.PAGE_SIZE << PSS_SHIFT
            self.mss.swap_pss += pss // mapcount if mapcount >= 2 else pss
            return 1
        pfn = pg.entry_pfn(pte)
        if not self.k.is_zero_pfn(pfn):
            folio = self.k.page_folio[pfn]
            smaps_account(self.mss, folio, pfn - folio.pfn, 1, bool(pte & pg.A), pg.is_dirty(pte))
        return 1


def smap_gather_stats(k: Kernel, mm: Mm, vma: Vma) -> MemSizeStats:
    """``smap_gather_stats``: walk one VMA (``walk_page_vma``) with ``smaps_walk_ops``."""
    ops = _SmapsOps(k)
    walk_page_vma(k, mm, vma, ops)
    return ops.mss


def smaps(k: Kernel, mm: Mm) -> list[Smaps]:
    """``show_smap`` for every VMA, lowest first: the range, protection and flags as
    ``vmas()`` reports them, and the accumulators."""
    out = []
    for vma in mm.vmas:
        s = smap_gather_stats(k, mm, vma)
        prot = "rw" if vma.write else ("r" if vma.read else "none")
        extra = tuple(f for f in vma.flags() if f not in ("read", "write"))
        out.append(
            Smaps(
                start=vma.start,
                end=vma.end,
                prot=prot,
                flags=extra,
                rss=s.resident,
                pss=s.pss,
                pss_dirty=s.pss_dirty,
                shared_clean=s.shared_clean,
                shared_dirty=s.shared_dirty,
                private_clean=s.private_clean,
                private_dirty=s.private_dirty,
                referenced=s.referenced,
                anonymous=s.anonymous,
                anon_huge_pages=s.anonymous_thp,
                swap=s.swap,
                swap_pss=s.swap_pss,
            )
        )
    return out
