"""Folios and their rmap counters (mm/rmap.c, include/linux/rmap.h; KS §1.2, §1.5, §1.6).

Counters are kept *logical* (the kernel stores mapcounts biased by -1): a free MM-ID slot is
``(0, 0)``, an unmapped page has mapcount 0. The model follows ``CONFIG_PAGE_MAPCOUNT`` (the
default, and what the Debian kernels measured run), so per-page mapcounts exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cowcore.protocol import GUP_PIN_COUNTING_BIAS

HPAGE_PMD_ORDER = 9


@dataclass(slots=True)
class Folio:
    """``struct folio`` for an anonymous folio of order 0 or 2..9."""

    pfn: int
    order: int
    serial: int
    refcount: int = 0
    page_mapcount: list[int] = field(default_factory=list)
    """Per page: PTE mappings of that page (``page->_mapcount + 1``)."""
    large_mapcount: int = 0
    """Page-table entries (PTEs and PMDs) mapping any part of the folio; large folios only."""
    entire_mapcount: int = 0
    """PMD mappings of the whole folio."""
    nr_pages_mapped: int = 0
    """Pages with a PTE mapping (``_nr_pages_mapped`` without the ENTIRELY_MAPPED bias)."""
    mm_ids: list[int] = field(default_factory=lambda: [0, 0])
    mm_id_mapcount: list[int] = field(default_factory=lambda: [0, 0])
    shared: bool = False
    """``FOLIO_MM_IDS_SHARED_BIT``: "maybe mapped shared"."""
    anon_exclusive: list[bool] = field(default_factory=list)
    referenced: bool = False
    """``PG_referenced`` (``folio_mark_accessed``; smaps counts it as ``Referenced``)."""
    partially_mapped: bool = False
    """``PG_partially_mapped``: queued for deferred split as partially mapped (set once by
    ``deferred_split_folio``, never cleared while the folio lives)."""
    exclusive_memo: bool = False
    """The ``cow_reuse_remember_exclusive`` memo (a policy, no kernel has it): a write fault
    found the folio exclusive to the mm mapping it, and the large mapcount has not changed
    since. Every large-mapcount update forgets it (:meth:`add_large_mapcount`,
    :meth:`sub_large_mapcount`)."""
    pincount: int = 0
    """``_pincount`` (large folios; a small folio's pins hide in its refcount)."""
    mm_mapcounts: dict[int, int] = field(default_factory=dict)
    """The ``mm_id_exact`` tracker (a policy, no kernel has it): every mm's share of
    ``large_mapcount``, kept by the same updates as the two slots but without their limit,
    so that "mapped by another mm" is known exactly."""
    swapcache: int | None = None
    """``folio->swap`` while ``PG_swapcache``: the first of the folio's slots in the swap
    cache (the folio covers ``nr_pages`` consecutive slots from it and holds one reference
    per page for the cache), ``None`` outside it (:mod:`.swap`)."""
    dirty: bool = False
    """``PG_dirty``, as the swap model needs it: set by ``add_to_swap``, by an unmap of a
    dirty PTE and by ``folio_free_swap``; cleared when reclaim writes the folio out."""

    def __post_init__(self) -> None:
        n = 1 << self.order
        if not self.page_mapcount:
            self.page_mapcount = [0] * n
        if not self.anon_exclusive:
            self.anon_exclusive = [False] * n

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    @property
    def is_large(self) -> bool:
        return self.order > 0

    def mapcount(self) -> int:
        """``folio_mapcount``."""
        if self.is_large:
            return self.large_mapcount
        return self.page_mapcount[0]

    def gup_grab(self, pin: bool) -> None:
        """``try_grab_folio(folio, 1, flags)`` (mm/gup.c) for one page: ``FOLL_GET`` adds a
        reference; ``FOLL_PIN`` adds one and ``_pincount`` + 1 on a large folio,
        ``GUP_PIN_COUNTING_BIAS`` on a small one. The exclusive memo is forgotten: the folio
        now has a reference that is not a mapping."""
        self.exclusive_memo = False
        if pin and not self.is_large:
            self.refcount += GUP_PIN_COUNTING_BIAS
            return
        self.refcount += 1
        if pin:
            self.pincount += 1

    def gup_refs(self, pin: bool) -> int:
        """The references one page's ``gup_put_folio`` drops (after ``_pincount`` - 1 on a
        large folio, done here)."""
        if not pin:
            return 1
        if self.is_large:
            self.pincount -= 1
            return 1
        return GUP_PIN_COUNTING_BIAS

    def maybe_dma_pinned(self) -> bool:
        """``folio_maybe_dma_pinned``: ``_pincount > 0`` (large), refcount >= 1024 (small; a
        false positive with 1024 plain references, as in the kernel)."""
        if self.is_large:
            return self.pincount > 0
        return self.refcount >= GUP_PIN_COUNTING_BIAS

    def precise_page_mapcount(self, idx: int) -> int:
        """What ``/proc/kpagecount`` reports: the page's PTE mappings plus PMD mappings."""
        return self.page_mapcount[idx] + self.entire_mapcount

    def maybe_mapped_shared(self) -> bool:
        """``folio_maybe_mapped_shared`` (6.15, include/linux/mm.h)."""
        if not self.is_large:
            return self.page_mapcount[0] > 1
        if self.large_mapcount <= 1:
            return False
        return self.shared

    # -- MM-owner slots (include/linux/rmap.h, KS §1.5) ----------------------------------

    def mapped_only_by(self, mm_id: int) -> bool:
        """The ``mm_id_exact`` answer: every mapping of the folio is one of ``mm_id``'s."""
        return self.mm_mapcounts.get(mm_id, 0) == self.large_mapcount

    def _track(self, mm_id: int, diff: int) -> None:
        """The unbounded per-mm count of :attr:`mm_mapcounts`, and the memo forgotten: the
        large mapcount changes."""
        self.exclusive_memo = False
        n = self.mm_mapcounts.get(mm_id, 0) + diff
        if n:
            self.mm_mapcounts[mm_id] = n
        else:
            self.mm_mapcounts.pop(mm_id, None)

    def set_large_mapcount(self, n: int, mm_id: int) -> None:
        """``folio_set_large_mapcount``: the first mapping of a brand-new folio."""
        self._track(mm_id, n)
        self.large_mapcount = n
        self.mm_ids[0], self.mm_id_mapcount[0] = mm_id, n

    def add_large_mapcount(self, diff: int, mm_id: int) -> None:
        """``folio_add_large_mapcount``: ``diff`` new entries by ``mm_id``."""
        self._track(mm_id, diff)
        new = self.large_mapcount + diff
        self.large_mapcount = new
        ids, counts = self.mm_ids, self.mm_id_mapcount
        if ids[0] == mm_id:
            counts[0] += diff
        elif ids[1] == mm_id:
            counts[1] += diff
        elif ids[0] == 0:
            ids[0], counts[0] = mm_id, diff
            if new != diff:  # someone else already maps it
                self.shared = True
        elif ids[1] == 0:
            ids[1], counts[1] = mm_id, diff
            self.shared = True
        # else: both slots belong to other mms; this mm stays untracked.

    def sub_large_mapcount(self, diff: int, mm_id: int) -> None:
        """``folio_sub_large_mapcount``: ``diff`` entries of ``mm_id`` go away."""
        self._track(mm_id, -diff)
        new = self.large_mapcount - diff
        self.large_mapcount = new
        ids, counts = self.mm_ids, self.mm_id_mapcount
        for i in (0, 1):
            if ids[i] == mm_id:
                counts[i] -= diff
                if counts[i] > 0:
                    return  # this mm still maps it: no re-evaluation of the shared bit
                ids[i], counts[i] = 0, 0
                break
        # The slot was freed, or the mm was untracked: one slot owning every remaining
        # mapping (or nothing mapped at all) proves exclusivity.
        if counts[0] == new or counts[1] == new:
            self.shared = False

    # -- rmap add/remove (mm/rmap.c, KS §1.6) --------------------------------------------

    def add_new_anon_rmap(self, mm_id: int, exclusive: bool, pmd_mapped: bool) -> None:
        """``folio_add_new_anon_rmap``: the first mapping of a new folio."""
        if not self.is_large:
            self.page_mapcount[0] = 1
            self.anon_exclusive[0] = exclusive
        elif not pmd_mapped:
            for i in range(self.nr_pages):
                self.page_mapcount[i] = 1
                self.anon_exclusive[i] = exclusive
            self.set_large_mapcount(self.nr_pages, mm_id)
            self.nr_pages_mapped = self.nr_pages
        else:
            self.entire_mapcount = 1
            self.set_large_mapcount(1, mm_id)
            self.anon_exclusive[0] = exclusive

    def add_rmap_ptes(self, first: int, nr: int, mm_id: int, exclusive: bool) -> None:
        """``folio_add_anon_rmap_ptes`` (also the fork dup of PTEs, minus the AE change)."""
        for i in range(first, first + nr):
            self.page_mapcount[i] += 1
            if self.page_mapcount[i] == 1 and self.is_large:
                self.nr_pages_mapped += 1
            if exclusive:
                self.anon_exclusive[i] = True
        if self.is_large:
            self.add_large_mapcount(nr, mm_id)

    def add_rmap_pmd(self, mm_id: int) -> None:
        """The PMD-level dup at fork (``folio_try_dup_anon_rmap_pmd`` success path)."""
        self.entire_mapcount += 1
        self.add_large_mapcount(1, mm_id)

    def remove_rmap_ptes(self, first: int, nr: int, mm_id: int) -> bool:
        """``folio_remove_rmap_ptes``: the large-mapcount update first, then the pages.

        Returns ``partially_mapped`` of ``__folio_remove_rmap`` (``CONFIG_PAGE_MAPCOUNT``):
        a page became mapped by nothing while others stay mapped by PTEs and no PMD maps
        the folio; the caller then queues it (``deferred_split_folio``).
        """
        if self.is_large:
            self.sub_large_mapcount(nr, mm_id)
        unmapped = 0
        for i in range(first, first + nr):
            self.page_mapcount[i] -= 1
            if self.page_mapcount[i] == 0 and self.is_large:
                self.nr_pages_mapped -= 1
                unmapped += 1
        # Like the kernel, unmapping leaves PG_anon_exclusive as it is: an unmapped page of a
        # partially mapped folio is never mapped again, so the stale flag is harmless.
        return unmapped > 0 and self.entire_mapcount == 0 and self.nr_pages_mapped > 0

    def remove_rmap_pmd(self, mm_id: int) -> bool:
        """``folio_remove_rmap_pmd``. Returns ``partially_mapped``: the last PMD went while
        some, not all, pages stay mapped by PTEs."""
        self.sub_large_mapcount(1, mm_id)
        self.entire_mapcount -= 1
        return self.entire_mapcount == 0 and 0 < self.nr_pages_mapped < self.nr_pages

    def dup_ptes(self, first: int, nr: int, child_mm_id: int) -> None:
        """``folio_try_dup_anon_rmap_ptes`` (no pins modelled, so it never fails)."""
        for i in range(first, first + nr):
            self.anon_exclusive[i] = False
            self.page_mapcount[i] += 1
        if self.is_large:
            self.add_large_mapcount(nr, child_mm_id)

    def dup_pmd(self, child_mm_id: int) -> None:
        """``folio_try_dup_anon_rmap_pmd``."""
        self.anon_exclusive[0] = False
        self.entire_mapcount += 1
        self.add_large_mapcount(1, child_mm_id)
