"""Folio splits by the deferred-split shrinker (issue 16): ``drop_caches``, the reverse map it
needs, and ``split_folio`` (the reference's copy of ``rust/cowcore-core/src/split.rs``).

* :func:`drop_caches` writes 2 to ``/proc/sys/vm/drop_caches``: ``drop_slab()`` runs the
  shrinkers, among them ``deferred_split_scan()`` (mm/huge_memory.c), which walks the
  deferred-split queue (:attr:`Kernel.deferred_queue`, ascending head frame: DESIGN.md
  "Splits") and splits each partially mapped folio, and (6.12+) each PMD THP queued at its
  fault that ``thp_underused`` finds underused; a fully used one leaves the queue.
* :func:`rmap_walk` answers which ``(pid, address)`` map a folio, the question
  ``rmap_walk_anon`` answers from the folio's ``anon_vma`` and index: here a walk of the page
  tables of every VMA that has an ``anon_vma``, in pid order then address order.
* :func:`split_folio` is ``split_folio()`` to order 0 for an anonymous folio.
"""

from __future__ import annotations

from dataclasses import dataclass

from cowcore.reference import paging as pg
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import HPAGE_PMD_ORDER, Folio
from cowcore.reference.kernel import Kernel

MAX_PTES_NONE = 0
"""``khugepaged_max_ptes_none`` as the kernel runner sets it (0): ``thp_underused`` then finds
a THP underused as soon as one of its pages is zero-filled."""


@dataclass(frozen=True, order=True)
class RmapHit:
    """One entry mapping a folio: the process, the address (a PMD's start), and whether a
    huge PMD maps the whole folio there."""

    pid: int
    addr: int
    pmd: bool


def rmap_walk(k: Kernel, heads: set[int]) -> dict[int, list[RmapHit]]:
    """The ``rmap_walk_anon`` of every folio whose head is in ``heads``: each entry mapping
    one of them, by head, in pid order then address order. Only VMAs with an ``anon_vma`` can
    map anonymous folios."""
    out: dict[int, list[RmapHit]] = {}
    if not heads:
        return out
    for pid in sorted(k.procs):
        mm = k.procs[pid].mm
        if mm is None:
            continue
        for vma in mm.vmas:
            if not vma.anon_vma:
                continue
            a = vma.start
            while a < vma.end:
                nxt = min((a | (pg.PMD_SIZE - 1)) + 1, vma.end)
                slot = k.pmd_slot(mm, a)
                if slot is not None:
                    e = k.entry(*slot)
                    if pg.is_huge(e):
                        h = pg.entry_pfn(e)
                        if not e & pg.SPECIAL and h in heads:
                            out.setdefault(h, []).append(RmapHit(pid, a & ~(pg.PMD_SIZE - 1), True))
                    elif pg.is_present(e):
                        ptes = k.phys.tables[pg.entry_pfn(e)]
                        for p in range(a, nxt, pg.PAGE_SIZE):
                            pe = ptes[(p >> 12) & 511]
                            if not pg.is_present(pe) or pe & pg.SPECIAL:
                                continue
                            folio = k.page_folio.get(pg.entry_pfn(pe))
                            if folio is not None and folio.pfn in heads:
                                out.setdefault(folio.pfn, []).append(RmapHit(pid, p, False))
                a = nxt
    return out


def drop_caches(k: Kernel) -> None:
    """``drop_caches`` (2): the deferred-split shrinker walks the queue once, in ascending
    head-frame order. A partially mapped folio is split; one that cannot be split stays queued
    and counts ``SPLIT_FAILED`` once. A folio queued at its fault (6.12+) is split if
    underused and leaves the queue either way."""
    if not k.deferred_queue:
        return
    queue = sorted(k.deferred_queue)
    hits = rmap_walk(k, set(queue))
    for head in queue:
        folio = k.page_folio[head]
        partially = folio.partially_mapped
        if not partially and not _thp_underused(k, folio):
            k.deferred_queue.discard(head)
            continue
        mappings = hits.pop(head, [])
        mapcount = folio.large_mapcount
        cache = folio.nr_pages if folio.swapcache is not None else 0
        if not (mapcount > 0 and folio.refcount == mapcount + cache):  # can_split_folio
            if not partially:
                k.deferred_queue.discard(head)
            k.emit(Event(EventKind.SPLIT_FAILED, folio.order, pfn=head))
            continue
        split_folio(k, folio, mappings)


def _thp_underused(k: Kernel, folio: Folio) -> bool:
    """``thp_underused``: a PMD-size folio with more than :data:`MAX_PTES_NONE` zero-filled
    pages (a page's content is its first word in this model)."""
    if folio.order != HPAGE_PMD_ORDER:
        return False
    zero = sum(
        1 for p in range(folio.pfn, folio.pfn + folio.nr_pages) if not k.phys.content.get(p, 0)
    )
    return zero > MAX_PTES_NONE


def split_folio(k: Kernel, folio: Folio, mappings: list[RmapHit]) -> None:
    """``split_folio()`` of an anonymous large folio that ``can_split_folio`` accepted: PMD
    mappings split first (``unmap_folio``), the pages carved into order-0 folios on the same
    frames (refcount = PTE mappings, mapcount and ``PageAnonExclusive`` kept,
    ``PG_referenced`` from the head, the allocation serial kept), the zero-filled pages
    remapped to the shared zero page (6.12+), and the pages nothing maps freed, tails first
    and the head last."""
    head, order, nr = folio.pfn, folio.order, folio.nr_pages
    ptes: list[RmapHit] = []
    for h in mappings:
        if not h.pmd:
            ptes.append(h)
            continue
        mm = k.procs[h.pid].mm
        assert mm is not None
        slot = k.pmd_slot(mm, h.addr)
        assert slot is not None
        k.split_huge_pmd(mm, h.addr, *slot)
        ptes.extend(RmapHit(h.pid, h.addr + j * pg.PAGE_SIZE, False) for j in range(nr))
    ptes.sort()
    if folio.partially_mapped:
        k.emit(Event(EventKind.DEFERRED_UNQUEUE, order, pfn=head))
    k.deferred_queue.discard(head)
    k.emit(Event(EventKind.SPLIT, order, pfn=head))
    first = folio.swapcache
    for i in range(nr):
        m = folio.page_mapcount[i]
        piece = Folio(
            pfn=head + i,
            order=0,
            serial=folio.serial,
            refcount=m,
            page_mapcount=[m],
            anon_exclusive=[folio.anon_exclusive[i]],
            referenced=folio.referenced,
            dirty=folio.dirty,
        )
        if first is not None:
            # A swap-cache folio splits into swap-cache pages, one slot and reference each.
            piece.swapcache = first + i
            piece.refcount += 1
            k.swap.slots[first + i].cache = piece
        k.page_folio[head + i] = piece
    if k.profile_config.per_size_thp_stats:  # KernelConfig::queues_pmd_thp_at_fault
        _map_unused_to_zeropage(k, head, nr, ptes)
    for p in [*range(head + 1, head + nr), head]:
        piece = k.page_folio[p]
        if piece.refcount == 0:
            k._free_folio(piece)


def _map_unused_to_zeropage(k: Kernel, head: int, nr: int, ptes: list[RmapHit]) -> None:
    """``try_to_map_unused_to_zeropage``: each PTE of a split page that is zero-filled maps the
    shared zero page instead (``MM_ANONPAGES`` - 1), and the page loses that mapping."""
    for h in ptes:
        mm = k.procs[h.pid].mm
        if mm is None:
            continue
        slot = k.pte_slot(mm, h.addr)
        if slot is None:
            continue
        e = k.entry(*slot)
        p = pg.entry_pfn(e)
        if not head <= p < head + nr or k.phys.content.get(p, 0):
            continue
        vma = mm.find_vma(h.addr)
        assert vma is not None
        k.set_entry(*slot, pg.make_entry(k.zero_pfn, vma.page_prot() | pg.SPECIAL))
        piece = k.page_folio[p]
        piece.page_mapcount[0] -= 1
        piece.refcount -= 1
        mm.rss_anon -= 1
