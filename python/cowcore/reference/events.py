"""What the reference kernel counts, as events (include/linux/vm_event_item.h, huge_mm.h).

Every counted thing is an :class:`Event` emitted on the kernel's one channel
(:meth:`~cowcore.reference.kernel.Kernel.emit`); :class:`Stats` is a fold over those events,
so that the counters and the events can never disagree. The kinds are named after the
kernel's counters: ``count_mthp_stat(order, MTHP_STAT_*)`` for the per-size mTHP stats,
``count_vm_event(...)`` for the vmstat events, and three of the simulator's own (the fault
types and the COW copies).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from cowcore.protocol import THP_SIZES

SIZE_OF_ORDER = {order: name for name, order in THP_SIZES.items()}


class EventKind(Enum):
    """One kind per counter; the value is the counter's name in ``stats()``."""

    ANON_FAULT_ALLOC = "anon_fault_alloc"
    """``MTHP_STAT_ANON_FAULT_ALLOC``: a fault allocated a large folio of ``order``."""
    ANON_FAULT_FALLBACK = "anon_fault_fallback"
    """``MTHP_STAT_ANON_FAULT_FALLBACK``: a fault could not get a folio of ``order``."""
    SPLIT = "split"
    """``MTHP_STAT_SPLIT``: a large folio of ``order`` was split (no path emits it yet: the
    model never splits a folio; the counter exists, at zero, as in the core)."""
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


PER_SIZE = frozenset({EventKind.ANON_FAULT_ALLOC, EventKind.ANON_FAULT_FALLBACK, EventKind.SPLIT})
"""The kinds counted per mTHP size; they carry the folio order."""


@dataclass(frozen=True, slots=True)
class Event:
    """One counted occurrence. ``order`` is the folio order for the per-size kinds (2..9,
    ``count_mthp_stat`` ignores others) and 0 for the rest."""

    kind: EventKind
    order: int = 0


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

    @classmethod
    def fold(cls, events: Iterable[Event]) -> Stats:
        """The counters that ``events`` add up to, from zero."""
        stats = cls()
        for event in events:
            stats.count(event)
        return stats

    def count(self, event: Event) -> None:
        """Add one event to its counter (``count_mthp_stat``/``count_vm_event``)."""
        if event.kind in PER_SIZE:
            counts: dict[str, int] = getattr(self, event.kind.value)
            counts[SIZE_OF_ORDER[event.order]] += 1
        else:
            setattr(self, event.kind.value, getattr(self, event.kind.value) + 1)

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
        }
