"""What the reference kernel counts, as events (include/linux/vm_event_item.h, huge_mm.h).

Every counted thing is an :class:`Event` emitted on the kernel's one channel
(:meth:`~cowcore.reference.kernel.Kernel.emit`); :class:`Stats` is a fold over those events,
so that the counters and the events can never disagree. The counted kinds are named after the
kernel's counters: ``count_mthp_stat(order, MTHP_STAT_*)`` for the per-size mTHP stats,
``count_vm_event(...)`` for the vmstat events, and three of the simulator's own (the fault
types and the COW copies). The other kinds (issue 12) count nothing: they report what changed
memory (folios allocated and freed, frames zeroed and copied, fork, zaps, mprotect, TLB
flushes), in the order ``docs/access-and-events.md`` gives.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from cowcore.outcome import EventCode, EventRecord
from cowcore.protocol import THP_SIZES

HPAGE_PMD_ORDER = 9

SIZE_OF_ORDER = {order: name for name, order in THP_SIZES.items()}


class EventKind(Enum):
    """One kind per counter (the value is the counter's name in ``stats()``), then the kinds
    that count nothing (:data:`COUNTED` tells them apart)."""

    ANON_FAULT_ALLOC = "anon_fault_alloc"
    """``MTHP_STAT_ANON_FAULT_ALLOC``: a fault allocated a large folio of ``order``."""
    ANON_FAULT_FALLBACK = "anon_fault_fallback"
    """``MTHP_STAT_ANON_FAULT_FALLBACK``: a fault could not get a folio of ``order``."""
    SPLIT = "split"
    """``MTHP_STAT_SPLIT``: a large folio of ``order`` was split (``split_folio``, by the
    deferred-split shrinker of ``drop_caches``; ``THP_SPLIT_PAGE`` for 2M); the folio leaves
    ``nr_anon`` of its size."""
    THP_FAULT_ALLOC = "thp_fault_alloc"
    """``THP_FAULT_ALLOC``: a fault mapped a new PMD-size THP."""
    THP_SPLIT_PMD = "thp_split_pmd"
    """``THP_SPLIT_PMD``: a huge PMD was remapped by PTEs (``__split_huge_pmd_locked``)."""
    PGREUSE = "pgreuse"
    """``PGREUSE``: ``do_wp_page`` reused the page (``wp_page_reuse``)."""
    COW_COPY = "cow_copy"
    """The simulator's: ``wp_page_copy`` copied a page."""
    FAULTS_READ = "faults_read"
    """The simulator's: a read access faulted."""
    FAULTS_WRITE = "faults_write"
    """The simulator's: a write access faulted on a not-present entry."""
    FAULTS_WP = "faults_wp"
    """The simulator's: a write access faulted on a present read-only entry."""
    HUGE_ZERO_WRITE = "huge_zero_write"
    """The simulator's: ``do_huge_zero_wp_pmd`` replaced the huge zero page by a THP."""
    FOLIO_ALLOC = "folio_alloc"
    """An anonymous folio was allocated (``pfn``, ``order``)."""
    FOLIO_FREE = "folio_free"
    """A folio's last reference went and it was freed (``pfn``, ``order``)."""
    PAGES_ZEROED = "pages_zeroed"
    """``nr`` frames from ``pfn`` were zero-filled (``folio_zero_user``,
    ``clear_user_highpage``)."""
    PAGES_COPIED = "pages_copied"
    """``nr`` frames were copied from ``pfn`` to ``pfn2`` (``copy_user_highpage``)."""
    FORK = "fork"
    """``dup_mmap`` copied the tables of ``asid`` into ``asid2``: ``nr`` PTEs, ``pmds`` PMDs."""
    ZAP = "zap"
    """``munmap``/``exit``/``MADV_DONTNEED`` (``cause``) cleared ``nr`` PTEs and ``pmds`` huge
    PMDs of ``asid`` in ``[start, end)``."""
    MPROTECT = "mprotect"
    """``mprotect`` rewrote ``nr`` PTEs and ``pmds`` huge PMDs of ``asid`` in
    ``[start, end)``."""
    TLB_FLUSH = "tlb_flush"
    """The TLB entries of ``[start, end)`` of ``asid`` were invalidated (``[0, 2^64-1)``: the
    whole address space, ``flush_tlb_mm``)."""
    DEFERRED_SPLIT = "deferred_split"
    """``deferred_split_folio(folio, true)``: an unmap left the large folio at ``pfn`` of
    ``order`` partially mapped and it was queued, flagged ``PG_partially_mapped``
    (``MTHP_STAT_SPLIT_DEFERRED``, ``THP_DEFERRED_SPLIT_PAGE`` for 2M,
    ``MTHP_STAT_NR_ANON_PARTIALLY_MAPPED`` + 1). Once per folio."""
    SPLIT_FAILED = "split_failed"
    """``split_folio()`` refused a folio of ``order`` at ``pfn`` (``can_split_folio``: references
    beyond its mappings): ``MTHP_STAT_SPLIT_FAILED``, ``THP_SPLIT_PAGE_FAILED`` for 2M."""
    DEFERRED_UNQUEUE = "deferred_unqueue"
    """A partially mapped folio left the deferred-split queue as it was freed
    (``__folio_unqueue_deferred_split``): ``MTHP_STAT_NR_ANON_PARTIALLY_MAPPED`` - 1."""
    THP_COLLAPSE_ALLOC = "thp_collapse_alloc"
    """``THP_COLLAPSE_ALLOC``: a collapse allocated its THP (``alloc_charge_folio``)."""
    THP_COLLAPSE_ALLOC_FAILED = "thp_collapse_alloc_failed"
    """``THP_COLLAPSE_ALLOC_FAILED``: a collapse found no free PMD-size block."""
    COLLAPSE = "collapse"
    """``MADV_COLLAPSE`` tried the 2 MiB block ``[start, end)`` of ``asid``; ``cause`` is the
    block's :class:`cowcore.protocol.ScanResult` (why it did or did not collapse)."""
    SWAP_OUT = "swap_out"
    """``shrink_folio_list`` wrote the folio at ``pfn`` of ``order`` to swap (``pageout`` ->
    ``swap_writepage``): ``nr`` pages written (``PSWPOUT``; ``MTHP_STAT_SWPOUT`` and
    ``THP_SWPOUT`` for a large folio), 0 when its zero-filled pages were only marked in the
    swap zeromap (nothing counted)."""
    SWAP_IN = "swap_in"
    """``do_swap_page`` read the folio at ``pfn`` of ``order`` from swap: ``nr`` pages read
    (``PSWPIN``; ``MTHP_STAT_SWPIN`` for a large folio), 0 for zero-map slots."""
    SWPOUT_FALLBACK = "swpout_fallback"
    """A large folio of ``order`` found no swap slots and is split (``MTHP_STAT_SWPOUT_FALLBACK``,
    ``THP_SWPOUT_FALLBACK`` for 2M)."""
    SWPIN_FALLBACK = "swpin_fallback"
    """A large swap-in of ``order`` found no memory (``MTHP_STAT_SWPIN_FALLBACK``)."""


PER_SIZE = frozenset({EventKind.ANON_FAULT_ALLOC, EventKind.ANON_FAULT_FALLBACK, EventKind.SPLIT})
"""The kinds counted per mTHP size; they carry the folio order."""

CODES: dict[EventKind, EventCode] = {
    EventKind.FAULTS_READ: EventCode.FAULT_READ,
    EventKind.FAULTS_WRITE: EventCode.FAULT_WRITE,
    EventKind.FAULTS_WP: EventCode.FAULT_WP,
    EventKind.ANON_FAULT_ALLOC: EventCode.ANON_FAULT_ALLOC,
    EventKind.ANON_FAULT_FALLBACK: EventCode.ANON_FAULT_FALLBACK,
    EventKind.SPLIT: EventCode.SPLIT,
    EventKind.THP_FAULT_ALLOC: EventCode.THP_FAULT_ALLOC,
    EventKind.THP_SPLIT_PMD: EventCode.THP_SPLIT_PMD,
    EventKind.PGREUSE: EventCode.PGREUSE,
    EventKind.COW_COPY: EventCode.COW_COPY,
    EventKind.HUGE_ZERO_WRITE: EventCode.HUGE_ZERO_WRITE,
    EventKind.FOLIO_ALLOC: EventCode.FOLIO_ALLOC,
    EventKind.FOLIO_FREE: EventCode.FOLIO_FREE,
    EventKind.PAGES_ZEROED: EventCode.PAGES_ZEROED,
    EventKind.PAGES_COPIED: EventCode.PAGES_COPIED,
    EventKind.FORK: EventCode.FORK,
    EventKind.ZAP: EventCode.ZAP,
    EventKind.MPROTECT: EventCode.MPROTECT,
    EventKind.TLB_FLUSH: EventCode.TLB_FLUSH,
    EventKind.DEFERRED_SPLIT: EventCode.DEFERRED_SPLIT,
    EventKind.DEFERRED_UNQUEUE: EventCode.DEFERRED_UNQUEUE,
    EventKind.SPLIT_FAILED: EventCode.SPLIT_FAILED,
    EventKind.THP_COLLAPSE_ALLOC: EventCode.THP_COLLAPSE_ALLOC,
    EventKind.THP_COLLAPSE_ALLOC_FAILED: EventCode.THP_COLLAPSE_ALLOC_FAILED,
    EventKind.COLLAPSE: EventCode.COLLAPSE,
    EventKind.SWAP_OUT: EventCode.SWAP_OUT,
    EventKind.SWAP_IN: EventCode.SWAP_IN,
    EventKind.SWPOUT_FALLBACK: EventCode.SWPOUT_FALLBACK,
    EventKind.SWPIN_FALLBACK: EventCode.SWPIN_FALLBACK,
}
"""The stable number of each kind (``cowcore.outcome.EventCode``, the Rust ``Event::code``)."""

COUNTED = frozenset(
    {kind for kind, code in CODES.items() if code <= EventCode.HUGE_ZERO_WRITE}
    | {EventKind.THP_COLLAPSE_ALLOC, EventKind.THP_COLLAPSE_ALLOC_FAILED}
)
"""The kinds that move a counter by one each (the first eleven codes, and the collapse's
allocation counters)."""

GAUGED = frozenset(
    {
        EventKind.FOLIO_ALLOC,
        EventKind.FOLIO_FREE,
        EventKind.DEFERRED_SPLIT,
        EventKind.DEFERRED_UNQUEUE,
    }
)
"""The kinds that move the per-size gauges ``nr_anon`` and ``nr_anon_partially_mapped``
(and ``DEFERRED_SPLIT`` its counters); the remaining kinds count nothing."""


SWAP_KINDS = frozenset(
    {EventKind.SWAP_OUT, EventKind.SWAP_IN, EventKind.SWPOUT_FALLBACK, EventKind.SWPIN_FALLBACK}
)
"""The swap device's kinds (issue 16): counted by pages (``nr``) or per size."""


@dataclass(frozen=True, slots=True)
class Event:
    """One occurrence, with the payload fields of :class:`cowcore.outcome.EventRecord` (those
    a kind does not use stay 0). ``order`` is the folio order for the per-size kinds (2..9,
    ``count_mthp_stat`` ignores others) and for ``FOLIO_ALLOC``/``FOLIO_FREE``."""

    kind: EventKind
    order: int = 0
    cause: int = 0
    asid: int = 0
    asid2: int = 0
    pfn: int = 0
    pfn2: int = 0
    start: int = 0
    end: int = 0
    nr: int = 0
    pmds: int = 0

    def record(self) -> EventRecord:
        """The flat record of this event, with its numeric kind."""
        return EventRecord(
            CODES[self.kind],
            self.order,
            self.cause,
            self.asid,
            self.asid2,
            self.pfn,
            self.pfn2,
            self.start,
            self.end,
            self.nr,
            self.pmds,
        )

    def raw(self) -> tuple[int, ...]:
        """The fields in ``cowcore.outcome.EVENT_FIELDS`` order (padding zero)."""
        return self.record().raw()


@dataclass(slots=True)
class Stats:
    """The counters, as a fold over the events (mTHP per-size stats, vmstat, and the
    simulator's own)."""

    anon_fault_alloc: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    anon_fault_fallback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    thp_fault_alloc: int = 0
    thp_split_pmd: int = 0
    pgreuse: int = 0
    cow_copy: int = 0
    faults_read: int = 0
    faults_write: int = 0
    faults_wp: int = 0
    huge_zero_write: int = 0
    split_deferred: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    nr_anon: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    nr_anon_partially_mapped: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(THP_SIZES, 0)
    )
    thp_fault_fallback: int = 0
    thp_split_page: int = 0
    thp_deferred_split_page: int = 0
    split_failed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    thp_split_page_failed: int = 0
    thp_collapse_alloc: int = 0
    thp_collapse_alloc_failed: int = 0
    pswpin: int = 0
    pswpout: int = 0
    thp_swpout: int = 0
    thp_swpout_fallback: int = 0
    swpout: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    swpout_fallback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    swpin: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))
    swpin_fallback: dict[str, int] = field(default_factory=lambda: dict.fromkeys(THP_SIZES, 0))

    @classmethod
    def fold(cls, events: Iterable[Event]) -> Stats:
        """The counters that ``events`` add up to, from zero."""
        stats = cls()
        for event in events:
            stats.count(event)
        return stats

    def count(self, event: Event) -> None:
        """Add one event to its counters (``count_mthp_stat``/``count_vm_event``, and the
        gauges ``mod_mthp_stat`` keeps); a kind that counts nothing is ignored."""
        kind, size = event.kind, SIZE_OF_ORDER.get(event.order)
        pmd = event.order == HPAGE_PMD_ORDER
        if kind in GAUGED:
            if size is not None:  # mod_mthp_stat ignores orders without a sysfs directory
                if kind is EventKind.FOLIO_ALLOC:
                    self.nr_anon[size] += 1
                elif kind is EventKind.FOLIO_FREE:
                    self.nr_anon[size] -= 1
                elif kind is EventKind.DEFERRED_SPLIT:
                    self.split_deferred[size] += 1
                    self.nr_anon_partially_mapped[size] += 1
                else:
                    self.nr_anon_partially_mapped[size] -= 1
            if kind is EventKind.DEFERRED_SPLIT and pmd:
                self.thp_deferred_split_page += 1
            return
        if kind in SWAP_KINDS:
            self._count_swap(event, size, pmd)
            return
        if kind is EventKind.SPLIT_FAILED:
            if size is not None:
                self.split_failed[size] += 1
            if pmd:
                self.thp_split_page_failed += 1
            return
        if kind not in COUNTED:
            return
        if kind in PER_SIZE:
            counts: dict[str, int] = getattr(self, kind.value)
            counts[SIZE_OF_ORDER[event.order]] += 1
            # The vmstat event counted beside the 2M one (vma_alloc_anon_folio_pmd,
            # __split_folio_to_order).
            if pmd and kind is EventKind.ANON_FAULT_FALLBACK:
                self.thp_fault_fallback += 1
            if kind is EventKind.SPLIT:
                self.nr_anon[SIZE_OF_ORDER[event.order]] -= 1  # mod_mthp_stat(NR_ANON, -1)
                if pmd:
                    self.thp_split_page += 1
        else:
            setattr(self, kind.value, getattr(self, kind.value) + 1)

    def _count_swap(self, event: Event, size: str | None, pmd: bool) -> None:
        """The swap counters: ``PSWPOUT``/``PSWPIN`` by pages (``count_vm_events``), the
        per-size ``MTHP_STAT_SWPOUT``/``SWPIN`` once per large folio written or read (none
        for zero-map folios: ``swap_writepage``/``swap_read_folio`` return before counting),
        and the fallbacks."""
        kind = event.kind
        if kind is EventKind.SWAP_OUT:
            self.pswpout += event.nr
            if event.nr and size is not None:
                self.swpout[size] += 1
            if event.nr and pmd:
                self.thp_swpout += 1
        elif kind is EventKind.SWAP_IN:
            self.pswpin += event.nr
            if event.nr and size is not None:
                self.swpin[size] += 1
        elif kind is EventKind.SWPOUT_FALLBACK:
            if size is not None:
                self.swpout_fallback[size] += 1
            if pmd:
                self.thp_swpout_fallback += 1
        elif size is not None:
            self.swpin_fallback[size] += 1

    def as_dict(self) -> dict[str, object]:
        return {
            "anon_fault_alloc": dict(self.anon_fault_alloc),
            "anon_fault_fallback": dict(self.anon_fault_fallback),
            "split": dict(self.split),
            "thp_fault_alloc": self.thp_fault_alloc,
            "thp_split_pmd": self.thp_split_pmd,
            "pgreuse": self.pgreuse,
            "cow_copy": self.cow_copy,
            "faults_read": self.faults_read,
            "faults_write": self.faults_write,
            "faults_wp": self.faults_wp,
            "huge_zero_write": self.huge_zero_write,
            "split_deferred": dict(self.split_deferred),
            "nr_anon": dict(self.nr_anon),
            "nr_anon_partially_mapped": dict(self.nr_anon_partially_mapped),
            "thp_fault_fallback": self.thp_fault_fallback,
            "thp_split_page": self.thp_split_page,
            "thp_deferred_split_page": self.thp_deferred_split_page,
            "split_failed": dict(self.split_failed),
            "thp_split_page_failed": self.thp_split_page_failed,
            "thp_collapse_alloc": self.thp_collapse_alloc,
            "thp_collapse_alloc_failed": self.thp_collapse_alloc_failed,
            "pswpin": self.pswpin,
            "pswpout": self.pswpout,
            "thp_swpout": self.thp_swpout,
            "thp_swpout_fallback": self.thp_swpout_fallback,
            "swpout": dict(self.swpout),
            "swpout_fallback": dict(self.swpout_fallback),
            "swpin": dict(self.swpin),
            "swpin_fallback": dict(self.swpin_fallback),
        }
