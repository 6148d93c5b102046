"""Unmapping pages and freeing page tables (mm/memory.c zap path, mm/mmap.c; KS §5).

``munmap``, ``exit`` and ``MADV_DONTNEED`` all zap: huge PMDs fully inside the range are
removed whole (``zap_huge_pmd``), partially covered ones are split first; PTEs mapping
consecutive pages of one folio are removed as one batch. The rmap is updated as entries are
cleared; the folio references are dropped at the end of the call, as ``tlb_finish_mmu``
does, and only then are page tables freed. The gather counts the entries cleared, for the
call's ``TLB_FLUSH`` and ``ZAP`` events (:func:`report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cowcore.outcome import ZapCause
from cowcore.reference import paging as pg
from cowcore.reference import swap
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm
from cowcore.reference.pagewalk import WalkAction, WalkOps, walk_page_range


@dataclass(slots=True)
class Gather:
    """An ``mmu_gather``: what to release once the entries are gone, and how many present
    entries were cleared (zero-page ones included; a huge PMD counts once, in ``pmds``)."""

    refs: list[tuple[Folio, int]] = field(default_factory=list)
    tables: list[int] = field(default_factory=list)
    ptes: int = 0
    pmds: int = 0

    def finish(self, k: Kernel) -> None:
        """``tlb_finish_mmu``: drop the folio references, then free gathered tables."""
        for folio, nr in self.refs:
            swap.free_swap_cache(k, folio)  # free_pages_and_swap_cache
            k.put_folio(folio, nr)
        for table in self.tables:
            k.phys.free_table(table)
        self.refs.clear()
        self.tables.clear()

    def report(self, k: Kernel, mm: Mm, cause: ZapCause, start: int, end: int) -> None:
        """The events that close a zap call (after the frees of :meth:`finish`): the flush
        of the call's range if any entry was cleared, then ``ZAP`` (always)."""
        if self.ptes or self.pmds:
            k.tlb_flush(mm, start, end)
        k.emit(
            Event(
                EventKind.ZAP,
                cause=int(cause),
                asid=mm.asid,
                start=start,
                end=end,
                nr=self.ptes,
                pmds=self.pmds,
            )
        )


def zap_range(k: Kernel, mm: Mm, start: int, end: int, tlb: Gather) -> None:
    """``unmap_page_range`` over every VMA that meets ``[start, end)``: a walk whose
    callbacks are ``zap_pmd_range``'s PMD step and ``zap_pte_range``'s PTE step."""
    walk_page_range(k, mm, start, end, _ZapOps(k, mm, tlb))


class _ZapOps(WalkOps):
    """The zap as a page walk (``zap_pmd_range`` -> ``zap_pte_range``)."""

    def __init__(self, k: Kernel, mm: Mm, tlb: Gather) -> None:
        self.k, self.mm, self.tlb = k, mm, tlb

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        """A huge PMD fully inside the range goes whole (``zap_huge_pmd``); one partly inside
        is split first (``__split_huge_pmd``) and its PTEs are zapped."""
        pmd = self.k.entry(table, idx)
        if not pg.is_present(pmd):
            raise pg.not_modelled(pmd, addr, "zap")  # zap_huge_pmd's migration entry case
        if pmd & pg.PS:
            if end - addr == pg.PMD_SIZE:
                _zap_huge_pmd(self.k, self.mm, table, idx, self.tlb)
                return WalkAction.CONTINUE
            self.k.split_huge_pmd(self.mm, addr, table, idx)
        return WalkAction.SUBTREE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        """``zap_present_ptes``: clear a batch of PTEs mapping consecutive pages of one folio
        and remove their rmap; the references go to the gather."""
        pte = ptes[i]
        if not pg.is_present(pte):
            if not swap.is_swap_pte(pte):
                raise pg.not_modelled(pte, addr, "zap")  # a migration entry
            # zap_nonpresent_ptes -> free_swap_and_cache_nr (MM_SWAPENTS - 1)
            ptes[i] = 0
            swap.free_swap_and_cache(self.k, pg.swp_offset(pte))
            return 1
        k = self.k
        pfn = pg.entry_pfn(pte)
        if k.is_zero_pfn(pfn):
            ptes[i] = 0
            self.tlb.ptes += 1
            return 1
        folio = k.page_folio[pfn]
        page = pfn - folio.pfn
        nr = 1
        if folio.is_large:  # folio_pte_batch(): any bits may differ, the PFNs must follow
            limit = min(end - i, folio.nr_pages - page)
            while (
                nr < limit
                and pg.is_present(ptes[i + nr])
                and pg.entry_pfn(ptes[i + nr]) == pfn + nr
            ):
                nr += 1
        for j in range(i, i + nr):
            ptes[j] = 0
        if folio.remove_rmap_ptes(page, nr, self.mm.mm_id):
            self.k.deferred_split_folio(folio)
        self.mm.rss_anon -= nr  # add_mm_counter(mm, MM_ANONPAGES, -nr)
        self.tlb.refs.append((folio, nr))
        self.tlb.ptes += nr
        return nr


def _zap_huge_pmd(k: Kernel, mm: Mm, table: int, idx: int, tlb: Gather) -> None:
    """``zap_huge_pmd``: remove a whole PMD mapping and its deposited table."""
    pmd = k.entry(table, idx)
    k.set_entry(table, idx, 0)
    head = pg.entry_pfn(pmd)
    if not k.is_huge_zero_pfn(head):
        folio = k.page_folio[head]
        if folio.remove_rmap_pmd(mm.mm_id):
            k.deferred_split_folio(folio)
        mm.rss_anon -= pg.HPAGE_PMD_NR  # add_mm_counter(mm, MM_ANONPAGES, -HPAGE_PMD_NR)
        tlb.refs.append((folio, 1))
    tlb.tables.append(k.deposits.pop((table, idx)))
    tlb.pmds += 1


def free_unused_tables(k: Kernel, mm: Mm, everything: bool) -> None:
    """Free page tables whose whole span no longer meets a VMA (``free_pgtables``).

    With ``everything`` (exit), every table including the root goes. Order: lowest address
    first, children before their parent.
    """

    def visit(level: int, table: int, base: int) -> None:
        span = 1 << (pg.PAGE_SHIFT + 9 * (k.levels - 1 - level))
        entries = k.phys.tables[table]
        for idx, entry in enumerate(entries):
            if level == k.levels - 1 or not pg.is_present(entry):
                continue
            if level == k.pmd_level() and entry & pg.PS:
                continue
            lo = base + idx * span
            child = pg.entry_pfn(entry)
            if everything or not mm.overlapping(lo, lo + span):
                _free_subtree(k, level + 1, child)
                entries[idx] = 0
            else:
                visit(level + 1, child, lo)

    visit(0, mm.pgd, 0)
    if everything:
        k.phys.free_table(mm.pgd)


def _free_subtree(k: Kernel, level: int, table: int) -> None:
    entries = k.phys.tables[table]
    if level < k.levels - 1:
        for entry in entries:
            if pg.is_present(entry):
                assert not (level == k.pmd_level() and entry & pg.PS), "huge PMD left mapped"
                _free_subtree(k, level + 1, pg.entry_pfn(entry))
    else:
        assert not any(entries), "freeing a PTE table that still maps pages"
    k.phys.free_table(table)
