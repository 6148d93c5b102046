"""``madvise(MADV_PAGEOUT)`` and the reclaim of what it collects (mm/madvise.c, mm/vmscan.c,
mm/rmap.c; issue 16).

:func:`pageout` walks the range VMA by VMA and 2 MiB block by block
(``madvise_cold_or_pageout_pte_range`` is called per PMD): it collects the block's folios
that are exclusive to this mapping, in address order, and reclaims them at the end of the
block (``reclaim_pages``) before going on. :func:`shrink_folio` is ``shrink_folio_list`` for
one folio with references ignored: swap slots and the swap cache (``add_to_swap``), the unmap
of every PTE to a swap entry (``try_to_unmap``), the write (``swap_writepage``, or the
zeromap) and the free (``__remove_mapping``).
"""

from __future__ import annotations

from cowcore.reference import paging as pg
from cowcore.reference import swap
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm
from cowcore.reference.split import rmap_walk, split_folio


def pageout(k: Kernel, mm: Mm, start: int, end: int) -> None:
    """``madvise_pageout`` of ``[start, end)`` (the caller checked it is mapped): every VMA,
    every PMD block in address order, each block's folios reclaimed before the next."""
    k.lru_add_drain()  # madvise_pageout: lru_add_drain() first
    for vma in mm.overlapping(start, end):
        lo, hi = max(start, vma.start), min(end, vma.end)
        addr = lo
        while addr < hi:
            nxt = min((addr | (pg.PMD_SIZE - 1)) + 1, hi)
            work = _pageout_pmd(k, mm, addr, nxt)
            while work:  # reclaim_pages -> shrink_folio_list, in order
                folio = work.pop(0)
                if k.page_folio.get(folio.pfn) is folio:
                    shrink_folio(k, folio, work)
            addr = nxt


def maybe_mapped_shared(k: Kernel, folio: Folio) -> bool:
    """The sharing test of ``madvise_cold_or_pageout_pte_range`` for a large folio:
    ``folio_maybe_mapped_shared`` (7.x, the MM-id slots), ``folio_likely_mapped_shared``
    (6.12: the first page's mapcount), ``folio_estimated_sharers() > 1`` (6.1: the first
    page's mapcount, 0 when it is unmapped: ``pageout-2M-head-unmapped``)."""
    if k.profile_config.reuses_pte_mapped_large_folios:  # CONFIG_MM_ID's answer (6.15)
        return folio.maybe_mapped_shared()
    if not folio.is_large:
        return folio.page_mapcount[0] > 1
    if not k.profile_config.per_size_thp_stats:  # 6.1: folio_estimated_sharers
        return folio.precise_page_mapcount(0) > 1
    mapcount = folio.mapcount()
    if mapcount <= 1:
        return False
    if folio.entire_mapcount or mapcount > folio.nr_pages:
        return True
    return folio.page_mapcount[0] > 1


def _refs_expected(folio: Folio) -> int:
    """The references a large folio holds for its mappings and the swap cache."""
    maps = sum(folio.page_mapcount) + folio.entire_mapcount
    return maps + (folio.nr_pages if folio.swapcache is not None else 0)


def try_split(k: Kernel, folio: Folio) -> bool:
    """``split_folio`` of a large folio from reclaim or ``madvise`` (to order 0): refused
    (``SPLIT_FAILED``) when a reference beyond the mappings and the swap cache holds it.
    Unmapping a PTE-mapped folio page by page (``unmap_folio`` -> ``try_to_migrate``) leaves
    it partially mapped first (``deferred_split_folio``, counted); a PMD mapping is frozen
    whole on 6.12+, split to PTEs first on 6.1 (counted there too)."""
    if folio.refcount != _refs_expected(folio):
        k.emit(Event(EventKind.SPLIT_FAILED, folio.order, pfn=folio.pfn))
        return False
    pte_mapped = folio.entire_mapcount == 0
    if (pte_mapped or not k.profile_config.per_size_thp_stats) and folio.swapcache is None:
        k.deferred_split_folio(folio)
    hits = rmap_walk(k, {folio.pfn}).get(folio.pfn, [])
    split_folio(k, folio, hits)
    return True


def _pageout_pmd(k: Kernel, mm: Mm, start: int, end: int) -> list[Folio]:
    """``madvise_cold_or_pageout_pte_range`` for one PMD block: the folios to reclaim."""
    slot = k.pmd_slot(mm, start)
    if slot is None:
        return []
    pmd = k.entry(*slot)
    if not pmd:
        return []
    if pg.is_huge(pmd):
        head = pg.entry_pfn(pmd)
        if k.is_huge_zero_pfn(head):
            return []
        folio = k.page_folio[head]
        if maybe_mapped_shared(k, folio):
            return []
        if end - start == pg.PMD_SIZE:
            return [folio]
        if not try_split(k, folio):
            return []
    table_slot = k.pte_slot(mm, start)
    if table_slot is None:
        return []
    table = table_slot[0]
    ptes = k.phys.tables[table]
    out: list[Folio] = []
    i = (start >> pg.PAGE_SHIFT) & 0x1FF
    stop = i + ((end - start) >> pg.PAGE_SHIFT)
    batches = len(k.profile_config.anon_thp_orders) > 1  # folio_pte_batch here since mTHP
    while i < stop:
        pte = ptes[i]
        if not pg.is_present(pte) or pte & pg.SPECIAL:
            i += 1
            continue
        pfn = pg.entry_pfn(pte)
        folio = k.page_folio[pfn]
        nr = 1
        if folio.is_large:
            limit = min(stop - i, folio.nr_pages - (pfn - folio.pfn))
            while (
                nr < limit
                and pg.is_present(ptes[i + nr])
                and pg.entry_pfn(ptes[i + nr]) == pfn + nr
            ):
                nr += 1
            if nr < folio.nr_pages or not batches:
                if maybe_mapped_shared(k, folio):
                    if not batches:
                        break  # 6.1: folio_estimated_sharers > 1 -> break
                    i += nr
                    continue
                if not try_split(k, folio):
                    if not batches:
                        break
                    i += nr
                    continue
                continue  # nr = 0: the same PTE again, now of a small folio
        if folio.mapcount() != folio.nr_pages:
            i += nr
            continue
        out.append(folio)
        i += nr
    return out


def shrink_folio(k: Kernel, folio: Folio, work: list[Folio]) -> None:
    """``shrink_folio_list`` for one folio, references ignored (``reclaim_pages``). A large
    folio that finds no run of slots is split (``split_folio_to_list``: the tail pages go to
    the end of ``work``) and its head page tried again at once."""
    if folio.swapcache is None:
        if folio.maybe_dma_pinned():
            return  # folio_maybe_dma_pinned: activate
        if folio.is_large and folio.refcount != _refs_expected(folio):
            return  # can_split_folio fails: keep it
        first = k.swap.alloc(folio.order)
        if first is None:
            if not folio.is_large:
                return  # activate_locked
            # add_to_swap failed: split (counted once it split) and retry the pages
            head, nr, order = folio.pfn, folio.nr_pages, folio.order
            if not try_split(k, folio):
                return
            k.emit(Event(EventKind.SWPOUT_FALLBACK, order))
            work.extend(k.page_folio[p] for p in range(head + 1, head + nr) if p in k.page_folio)
            if head in k.page_folio:
                shrink_folio(k, k.page_folio[head], work)
            return
        swap.add_to_swap(k, folio, first)
    try_to_unmap(k, folio)
    if folio.refcount != folio.nr_pages:
        return  # is_page_cache_freeable fails: a GUP reference; stays in the swap cache
    if folio.dirty:
        swap_writepage(k, folio)
    swap.delete_from_swap_cache(k, folio)  # __remove_mapping, then the folio is freed


def try_to_unmap(k: Kernel, folio: Folio) -> None:
    """``try_to_unmap`` (``try_to_unmap_one`` through the reverse map): a huge PMD is split
    first; each PTE mapping a page of the folio becomes a swap entry of that page's slot,
    exclusive as the page was (``PageAnonExclusive``), soft-dirty kept; the slot count + 1
    (``swap_duplicate``); a dirty PTE dirties the folio; the rmap and the reference go,
    ``MM_ANONPAGES`` - 1 (``MM_SWAPENTS`` + 1). No TLB flush event: reclaim's flush is a
    deferred batch (``try_to_unmap_flush``), not a range of one mm."""
    first = folio.swapcache
    assert first is not None
    for hit in rmap_walk(k, {folio.pfn}).get(folio.pfn, []):
        mm = k.procs[hit.pid].mm
        assert mm is not None
        if hit.pmd:
            slot = k.pmd_slot(mm, hit.addr)
            assert slot is not None
            k.split_huge_pmd(mm, hit.addr, *slot)
            addrs = [hit.addr + j * pg.PAGE_SIZE for j in range(folio.nr_pages)]
        else:
            addrs = [hit.addr]
        for addr in addrs:
            pte_slot = k.pte_slot(mm, addr)
            assert pte_slot is not None
            pte = k.entry(*pte_slot)
            page = pg.entry_pfn(pte) - folio.pfn
            if pg.is_dirty(pte):
                folio.dirty = True
            entry = swap.make_swap_pte(
                first + page, folio.anon_exclusive[page], bool(pte & pg.SOFT_DIRTY)
            )
            # The TLB flush is reclaim's deferred batch (TTU_BATCH_FLUSH,
            # try_to_unmap_flush), not a flush of this mm's range: no TLB_FLUSH event.
            k.set_entry(*pte_slot, entry)
            swap.swap_duplicate(k, first + page)
            folio.remove_rmap_ptes(page, 1, mm.mm_id)
            folio.refcount -= 1
            mm.rss_anon -= 1


def swap_writepage(k: Kernel, folio: Folio) -> None:
    """``pageout`` -> ``swap_writepage``: a zero-filled folio only sets the zeromap bits of
    its slots (``swap_zeromap``: 6.12+); otherwise the pages' contents go to the slots
    (``PSWPOUT``, ``MTHP_STAT_SWPOUT``, ``THP_SWPOUT``). The folio is clean afterwards."""
    first = folio.swapcache
    assert first is not None
    nr = folio.nr_pages
    zero = all(not k.content(folio.pfn + i) for i in range(nr))
    if zero and k.profile_config.swap_zeromap:
        for i in range(nr):
            k.swap.slots[first + i].zero = True
        written = 0
    else:
        for i in range(nr):
            slot = k.swap.slots[first + i]
            slot.zero = False
            slot.content = k.content(folio.pfn + i)
        written = nr
    folio.dirty = False
    k.emit(Event(EventKind.SWAP_OUT, folio.order, pfn=folio.pfn, nr=written))
