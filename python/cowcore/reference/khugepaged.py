"""``madvise(MADV_COLLAPSE)``: the synchronous collapse of mm/khugepaged.c (issue 16).

``madvise_collapse`` works on the whole PMD-aligned 2 MiB blocks inside the range, one at a
time, with ``cc->is_khugepaged == false``, so khugepaged's sysfs limits do not apply: any
number of none or zero-page PTEs (their pages of the new THP are zero-filled) and of pages
shared with another process. Each block goes through ``hpage_collapse_scan_pmd`` (6.12's
name; ``collapse_scan_pmd`` later) and, if the scan passes, ``collapse_huge_page``:

1. ``alloc_charge_folio``: a fresh PMD-order folio (``THP_COLLAPSE_ALLOC``, or
   ``THP_COLLAPSE_ALLOC_FAILED`` and ``SCAN_ALLOC_HUGE_PAGE_FAIL``);
2. ``hugepage_vma_revalidate``: the VMA must have an ``anon_vma`` (``SCAN_PAGE_ANON``);
3. ``pmdp_collapse_flush``: the PMD entry is cleared and the 2 MiB range flushed;
4. ``__collapse_huge_page_isolate``: the scan's checks again (nothing changes in between
   here), each folio isolated from the LRU (one extra reference, a large folio once);
5. ``__collapse_huge_page_copy``: every page copied, a none/zero page zero-filled; then
   ``__collapse_huge_page_copy_succeeded`` clears the PTEs and removes the rmaps (page by page
   before 7.x, a ``folio_pte_batch`` at a time since: ``collapse_batches_ptes``; a large folio
   left partially mapped is queued for deferred split), ``MM_ANONPAGES`` grows by the
   none/zero pages, a small folio goes back and is freed with its last reference, a large one
   when its isolation reference is dropped after the loop;
6. the emptied PTE table is deposited with the new PMD (``pgtable_trans_huge_deposit``: no
   table is allocated or freed), which maps the folio writable (if the VMA is), dirty and
   anon-exclusive (``map_anon_folio_pmd_nopf``; no fault counter moves).

The result of the call is 0 when every block ended PMD-mapped (``SCAN_PMD_MAPPED`` counts),
else ``madvise_collapse_errno`` of the last failure (:class:`cowcore.protocol.ScanResult`).
"""

from __future__ import annotations

from cowcore.errors import NotModelledError
from cowcore.protocol import CONTINUE_SCAN_RESULTS, ScanResult
from cowcore.reference import paging as pg
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import HPAGE_PMD_ORDER, Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Vma

_BATCH_IGNORED = pg.A | pg.D | pg.RW | pg.SOFT_DIRTY
"""The PTE bits ``folio_pte_batch()`` (no ``FPB_RESPECT_*`` flag) does not compare."""


def madvise(k: Kernel, mm: Mm, start: int, end: int) -> ScanResult:
    """``madvise(start, end - start, MADV_COLLAPSE)`` over a range the caller found mapped:
    ``madvise_walk_vmas`` hands each VMA's part to :func:`madvise_collapse` and stops at the
    first error."""
    addr = start
    while addr < end:
        vma = mm.find_vma(addr)
        assert vma is not None, "the caller checked that the range is mapped"
        part_end = min(end, vma.end)
        result = madvise_collapse(k, mm, vma, addr, part_end)
        if result.errno is not None:
            return result
        addr = part_end
    return ScanResult.SUCCEED


def madvise_collapse(k: Kernel, mm: Mm, vma: Vma, start: int, end: int) -> ScanResult:
    """``madvise_collapse`` for ``[start, end)`` inside ``vma``."""
    # thp_vma_allowable_order() without sysfs enforcement (TVA_FORCED_COLLAPSE): the THP
    # modes, even never, do not matter; a VM_NOHUGEPAGE VMA refuses, and so does one that
    # holds no whole aligned 2 MiB block (outside a fault the check tries the VMA's last
    # one, thp_vma_suitable_order(vma, vm_end - HPAGE_PMD_SIZE)), and one without an
    # anon_vma (only zero pages ever mapped: recorded, collapse-zero-pages).
    if vma.nohugepage or not vma.anon_vma or not _holds_pmd_block(vma):
        return ScanResult.VMA_CHECK
    hstart = (start + pg.PMD_SIZE - 1) & ~(pg.PMD_SIZE - 1)
    hend = end & ~(pg.PMD_SIZE - 1)
    if hstart >= hend:
        return ScanResult.SUCCEED
    k.lru_add_drain()  # lru_add_drain_all(): no small folio waits off the LRU
    thps = 0
    last_fail = ScanResult.FAIL
    for addr in range(hstart, hend, pg.PMD_SIZE):
        result = _collapse_single_pmd(k, mm, vma, addr)
        k.emit(
            Event(
                EventKind.COLLAPSE,
                cause=int(result),
                asid=mm.asid,
                start=addr,
                end=addr + pg.PMD_SIZE,
            )
        )
        if result in (ScanResult.SUCCEED, ScanResult.PMD_MAPPED):
            thps += 1
            continue
        last_fail = result
        if result not in CONTINUE_SCAN_RESULTS:
            break
    blocks = (hend - hstart) // pg.PMD_SIZE
    return ScanResult.SUCCEED if thps == blocks else last_fail


def _holds_pmd_block(vma: Vma) -> bool:
    """Whether an aligned 2 MiB block lies inside ``vma`` (the highest one that could:
    ``ALIGN_DOWN(vm_end - HPAGE_PMD_SIZE)``, which must not start below ``vm_start``)."""
    last = (vma.end - pg.PMD_SIZE) & ~(pg.PMD_SIZE - 1)
    return vma.end >= pg.PMD_SIZE and last >= vma.start


def _collapse_single_pmd(k: Kernel, mm: Mm, vma: Vma, addr: int) -> ScanResult:
    """``hpage_collapse_scan_pmd`` of the block at ``addr``, then ``collapse_huge_page``."""
    slot = k.pmd_slot(mm, addr)
    pmd = k.entry(*slot) if slot is not None else 0
    if not pmd:
        return ScanResult.PMD_NULL  # find_pmd_or_thp_or_none()
    if pg.is_huge(pmd):
        return ScanResult.PMD_MAPPED  # the huge zero PMD too (pmd_trans_huge)
    assert slot is not None
    table = pg.entry_pfn(pmd)
    result = _scan_ptes(k, k.phys.tables[table])
    if result is not ScanResult.SUCCEED:
        return result
    return _collapse_huge_page(k, mm, vma, addr, slot, table)


def _scan_ptes(k: Kernel, ptes: list[int]) -> ScanResult:
    """The PTE checks of the scan (and of ``__collapse_huge_page_isolate``) for
    MADV_COLLAPSE: none and zero-page entries pass; a folio with a reference beyond its
    mappings (a GUP ref or pin: ``folio_expected_ref_count() != folio_ref_count()``) is
    ``SCAN_PAGE_COUNT``; before 7.x the block needs one writable PTE (``SCAN_PAGE_RO``). A
    swap entry or a swap-cache folio in the block raises :class:`NotModelledError`."""
    writable = False
    for pte in ptes:
        if not pte or (pg.is_present(pte) and k.is_zero_pfn(pg.entry_pfn(pte))):
            continue
        if not pg.is_present(pte):
            # __collapse_huge_page_swapin is not modelled (issue 16)
            raise NotModelledError(
                "MADV_COLLAPSE of a block with a swap entry: the swap-in of "
                "__collapse_huge_page_swapin is not modelled"
            )
        writable |= bool(pte & pg.RW)
        folio = k.page_folio[pg.entry_pfn(pte)]
        if folio.swapcache is not None:
            # is_refcount_suitable() counts the cache's references, and the copy's
            # free_swap_cache() releases them: neither is modelled yet (issue 16)
            raise NotModelledError(
                "MADV_COLLAPSE of a block with a folio in the swap cache: its release after "
                "the copy (free_swap_cache) is not modelled"
            )
        if folio.refcount != folio.mapcount():
            return ScanResult.PAGE_COUNT
    if k.profile_config.collapse_needs_writable_pte and not writable:
        return ScanResult.PAGE_RO
    return ScanResult.SUCCEED


def _collapse_huge_page(
    k: Kernel, mm: Mm, vma: Vma, haddr: int, slot: tuple[int, int], table: int
) -> ScanResult:
    """``collapse_huge_page`` once the scan passed (steps 1-6 of the module doc)."""
    if not k.phys.buddy.can_allocate(HPAGE_PMD_ORDER):
        k.emit(Event(EventKind.THP_COLLAPSE_ALLOC_FAILED))
        return ScanResult.ALLOC_HUGE_PAGE_FAIL
    new = k.alloc_folio(HPAGE_PMD_ORDER)
    k.emit(Event(EventKind.THP_COLLAPSE_ALLOC))
    if not vma.anon_vma:
        k.free_unused_folio(new)  # hugepage_vma_revalidate(expect_anon): SCAN_PAGE_ANON
        return ScanResult.PAGE_ANON
    k.set_entry(*slot, 0)  # pmdp_collapse_flush()
    k.tlb_flush(mm, haddr, haddr + pg.PMD_SIZE)
    ptes = k.phys.tables[table]
    isolated: list[Folio] = []  # the compound_pagelist, in the order first met
    for pte in ptes:
        if not pte or k.is_zero_pfn(pg.entry_pfn(pte)):
            continue
        folio = k.page_folio[pg.entry_pfn(pte)]
        if folio.is_large and folio not in isolated:
            folio.refcount += 1  # folio_isolate_lru()
            isolated.append(folio)
    # __collapse_huge_page_copy(): page by page into the new folio.
    for i, pte in enumerate(ptes):
        dst = new.pfn + i
        if not pte or k.is_zero_pfn(pg.entry_pfn(pte)):
            k.emit(Event(EventKind.PAGES_ZEROED, pfn=dst, nr=1))  # clear_user_highpage
            continue
        src = pg.entry_pfn(pte)
        k.set_content(dst, k.content(src))
        k.emit(Event(EventKind.PAGES_COPIED, pfn=src, pfn2=dst, nr=1))
    _copy_succeeded(k, mm, ptes)
    for folio in isolated:
        k.put_folio(folio, 1)  # folio_putback_lru(): the isolation reference
    # The emptied table becomes the new PMD's deposit; map_anon_folio_pmd_nopf().
    k.deposits[slot] = table
    new.refcount = 1
    new.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=True)
    if k.profile_config.per_size_thp_stats:
        # deferred_split_folio(folio, false) for a collapsed THP too (6.12+: in
        # collapse_huge_page, later inside map_anon_folio_pmd_nopf): the shrinker splits it
        # when underused (recorded: split-collapsed-underused); the core queues it in
        # add_new_anon_rmap (KernelConfig::queues_pmd_thp_at_fault).
        k.deferred_queue.add(new.pfn)
    k.folio_add_lru(new)
    entry = pg.mkdirty(pg.make_entry(new.pfn, vma.page_prot() | pg.PS))
    if vma.write:
        entry = pg.mkwrite(entry)
    k.set_entry(*slot, entry)
    return ScanResult.SUCCEED


def _copy_succeeded(k: Kernel, mm: Mm, ptes: list[int]) -> None:
    """``__collapse_huge_page_copy_succeeded``: clear every PTE of the block; a none/zero
    one adds a page to ``MM_ANONPAGES`` (the THP now backs it), a present one loses its rmap
    and its reference (a batch of one large folio's consecutive pages at once where the
    profile batches, one page at a time otherwise)."""
    i = 0
    while i < pg.HPAGE_PMD_NR:
        pte = ptes[i]
        if not pte or k.is_zero_pfn(pg.entry_pfn(pte)):
            mm.rss_anon += 1
            ptes[i] = 0
            i += 1
            continue
        pfn = pg.entry_pfn(pte)
        folio = k.page_folio[pfn]
        nr = 1
        if folio.is_large and k.profile_config.collapse_batches_ptes:
            # folio_pte_batch(): the following PTEs map the following pages of the folio
            # with the same bits but A, D, RW and soft-dirty.
            last = folio.pfn + folio.nr_pages
            want = pte & ~_BATCH_IGNORED
            while (
                i + nr < pg.HPAGE_PMD_NR
                and pfn + nr < last
                and pg.is_present(ptes[i + nr])
                and ptes[i + nr] & ~_BATCH_IGNORED == want + (nr << pg.PAGE_SHIFT)
            ):
                nr += 1
        for j in range(i, i + nr):
            ptes[j] = 0
        if folio.remove_rmap_ptes(pfn - folio.pfn, nr, mm.mm_id):
            k.deferred_split_folio(folio)
        k.put_folio(folio, nr)
        i += nr
