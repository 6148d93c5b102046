"""What one access did and why: the :class:`Access` record, its codes, and the numpy layouts.

An access is one user load or store of one byte (``Process.access``). Its record says where
the byte landed physically, what the kernel did (:class:`Outcome`), the decision exit that
chose it (:class:`Reason`: one code per condition of ``do_wp_page``,
``wp_can_reuse_anon_folio``, ``__wp_can_reuse_large_anon_folio``, ``do_huge_pmd_wp_page``,
``do_anonymous_page``), and, for a not-present write fault, the evidence of the folio-order
choice (``alloc_anon_folio``). ``docs/access-and-events.md`` is the contract both backends
keep. The numbers are those of the Rust core's ``#[repr(u8)]`` enums: new codes are added,
none is renumbered.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    ACCESS_DTYPE: np.dtype[np.void]
    """The numpy dtype of :meth:`cowcore.Process.access_batch` results."""
    EVENT_DTYPE: np.dtype[np.void]
    """The numpy dtype of a recording's events (:attr:`cowcore.Recording.events`)."""


class Outcome(IntEnum):
    """What the kernel did for one access (the last fault's decision)."""

    NO_FAULT = 0
    ANON_ALLOC = 1
    ZERO_PAGE = 2
    HUGE_ZERO_PAGE = 3
    COW_REUSE = 4
    COW_COPY = 5
    PMD_REUSE = 6
    PMD_SPLIT_COPY = 7
    UNSHARE = 8
    SEGFAULT = 9
    OUT_OF_MEMORY = 10
    SWAP_IN = 11
    """``do_swap_page`` mapped the page from a swap entry (read, or a write mapped writable at
    once); a write that goes on to ``do_wp_page`` reports that fault's outcome."""


class Reason(IntEnum):
    """The decision exit, named after the kernel condition (see the Rust ``Reason``)."""

    NONE = 0
    PTE_NONE = 1
    PMD_NONE = 2
    ANON_EXCLUSIVE = 3
    SMALL_SOLE_REF = 4
    SMALL_OTHER_REFS = 5
    LARGE_NO_PTE_REUSE = 6
    LARGE_LAST_MAPPED = 7
    LARGE_MAYBE_SHARED = 8
    LARGE_EXTRA_REFS = 9
    LARGE_EXCLUSIVE = 10
    ZERO_PAGE = 11
    HUGE_ZERO_NEW_THP = 12
    HUGE_ZERO_FALLBACK = 13
    PMD_ANON_EXCLUSIVE = 14
    PMD_SOLE_REF = 15
    PMD_SHARED = 16
    SEGV_UNMAPPED = 17
    SEGV_PROTECTION = 18
    LARGE_MEMO_EXCLUSIVE = 19
    """``cow_reuse_remember_exclusive`` (a policy): reused on the folio's exclusive memo."""
    LARGE_EXACT_EXCLUSIVE = 20
    """``mm_id_exact`` (a policy): maybe shared by the two MM-id slots, exclusive in fact."""
    SWAP_FRESH = 21
    """``do_swap_page``: read into a new folio outside the swap cache, certainly exclusive."""
    SWAP_EXCLUSIVE = 22
    """``do_swap_page``: the swap entry's exclusive bit (``pte_swp_exclusive``)."""
    SWAP_SOLE_REF = 23
    """``do_swap_page``: reference count 1 once the swap cache was freed."""
    SWAP_MAYBE_SHARED = 24
    """``do_swap_page``: mapped read-only, maybe shared."""


class MapLevel(IntEnum):
    """The level of the entry mapping the page after the access."""

    NONE = 0
    PTE = 1
    PMD = 2


class AccessFlags(IntFlag):
    """What the kernel did along the way."""

    FIRST_TOUCH = 1 << 0
    ZEROED = 1 << 1
    COPIED = 1 << 2
    SPLIT = 1 << 3
    FELL_BACK = 1 << 4
    FAULT_AROUND = 1 << 5
    """``cow_reuse_fault_around`` (a policy): the reuse made other PTEs of the folio writable."""
    SWAP_IN = 1 << 6
    """A fault of the access swapped in (read from a slot or found in the swap cache)."""


NO_PHYS = (1 << 64) - 1
"""``phys`` of an access that did not complete, in the raw (numpy/C) form."""


@dataclass(frozen=True, slots=True)
class Access:
    """The record of one access (``docs/access-and-events.md``)."""

    phys: int | None
    """``pfn << 12 | offset`` of the byte, or ``None`` (segfault, out of memory)."""
    outcome: Outcome
    reason: Reason
    split_reason: Reason
    """Why a huge PMD was split first (``PMD_SHARED``/``HUGE_ZERO_FALLBACK``), or ``NONE``."""
    level: MapLevel
    order: int
    """The order of the folio the byte landed in (zero page 0, huge zero page 9)."""
    faults: int
    flags: AccessFlags
    error_code: int
    """The x86 page-fault error code of the first fault, or 0."""
    orders_allowed: int
    orders_fit: int
    orders_empty: int
    orders_failed: int

    @property
    def pfn(self) -> int | None:
        """The frame accessed, or ``None``."""
        return None if self.phys is None else self.phys >> 12

    @classmethod
    def from_raw(cls, row: tuple[int, ...]) -> Access:
        """From the raw fields in :data:`ACCESS_FIELDS` order (as numpy and Rust lay them)."""
        (phys, outcome, reason, split, level, order, faults, flags, *_pad, code) = row[:10]
        allowed, fit, empty, failed = row[10:14]
        return cls(
            phys=None if phys == NO_PHYS else phys,
            outcome=Outcome(outcome),
            reason=Reason(reason),
            split_reason=Reason(split),
            level=MapLevel(level),
            order=order,
            faults=faults,
            flags=AccessFlags(flags),
            error_code=code,
            orders_allowed=allowed,
            orders_fit=fit,
            orders_empty=empty,
            orders_failed=failed,
        )

    def raw(self) -> tuple[int, ...]:
        """The raw fields in :data:`ACCESS_FIELDS` order (padding zero)."""
        return (
            NO_PHYS if self.phys is None else self.phys,
            int(self.outcome),
            int(self.reason),
            int(self.split_reason),
            int(self.level),
            self.order,
            self.faults,
            int(self.flags),
            0,
            self.error_code,
            self.orders_allowed,
            self.orders_fit,
            self.orders_empty,
            self.orders_failed,
            0,
        )


ACCESS_FIELDS: tuple[tuple[str, str], ...] = (
    ("phys", "<u8"),
    ("outcome", "u1"),
    ("reason", "u1"),
    ("split_reason", "u1"),
    ("level", "u1"),
    ("order", "u1"),
    ("faults", "u1"),
    ("flags", "u1"),
    ("reserved", "u1"),
    ("error_code", "<u4"),
    ("orders_allowed", "<u2"),
    ("orders_fit", "<u2"),
    ("orders_empty", "<u2"),
    ("orders_failed", "<u2"),
    ("reserved2", "<u4"),
)
"""The Rust ``#[repr(C)] Access`` layout (32 bytes, no implicit padding): the numpy dtype
of ``access_batch`` results is ``numpy.dtype(list(ACCESS_FIELDS))``."""

ACCESS_SIZE = 32


class EventCode(IntEnum):
    """The kind of an event record (the Rust ``Event`` variant), as a stable number.

    ``stats()`` is the fold of the first eleven and of ``THP_COLLAPSE_ALLOC``/
    ``THP_COLLAPSE_ALLOC_FAILED`` (counters), of ``FOLIO_ALLOC``/``FOLIO_FREE``
    (the per-size ``nr_anon`` gauge) and of ``DEFERRED_SPLIT``/``DEFERRED_UNQUEUE`` (the
    deferred-split counters and gauge); the others report what changed memory and what work
    the kernel did (``docs/access-and-events.md``).
    """

    FAULT_READ = 1
    FAULT_WRITE = 2
    FAULT_WP = 3
    ANON_FAULT_ALLOC = 4
    ANON_FAULT_FALLBACK = 5
    SPLIT = 6
    THP_FAULT_ALLOC = 7
    THP_SPLIT_PMD = 8
    PGREUSE = 9
    COW_COPY = 10
    HUGE_ZERO_WRITE = 11
    FOLIO_ALLOC = 12
    FOLIO_FREE = 13
    PAGES_ZEROED = 14
    PAGES_COPIED = 15
    FORK = 16
    ZAP = 17
    MPROTECT = 18
    TLB_FLUSH = 19
    DEFERRED_SPLIT = 20
    DEFERRED_UNQUEUE = 21
    SPLIT_FAILED = 22
    THP_COLLAPSE_ALLOC = 23
    THP_COLLAPSE_ALLOC_FAILED = 24
    COLLAPSE = 25
    SWAP_OUT = 26
    """``shrink_folio_list`` wrote a folio (``pfn``, ``order``; ``nr`` pages written, 0 when
    its zero-filled pages were only marked in the zeromap)."""
    SWAP_IN = 27
    """``do_swap_page`` read a folio (``pfn``, ``order``; ``nr`` pages read, 0 for zero
    slots)."""
    SWPOUT_FALLBACK = 28
    """A large folio of ``order`` found no swap slots and was split (``swpout_fallback``)."""
    SWPIN_FALLBACK = 29
    """A large swap-in of ``order`` found no memory (``swpin_fallback``)."""


class ZapCause(IntEnum):
    """Why entries were zapped (``Zap`` events)."""

    UNMAP = 0
    EXIT = 1
    DONTNEED = 2


WHOLE_MM_END = (1 << 64) - 1
"""``end`` of a ``TLB_FLUSH``/``ZAP`` that covers the whole address space (start 0)."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event, flat: the fields a kind does not use are 0.

    ``asid`` is the address space (``FORK``: the parent; ``asid2`` the child); ``pfn`` the
    folio's first frame (``FOLIO_ALLOC``/``FOLIO_FREE``/``PAGES_ZEROED``/``DEFERRED_SPLIT``/
    ``DEFERRED_UNQUEUE``/``SPLIT``/``SPLIT_FAILED``, with ``order``) or the copy's
    source (``PAGES_COPIED``, ``pfn2`` its destination); ``start``/``end`` the range
    (``ZAP``, ``MPROTECT``, ``TLB_FLUSH``, ``COLLAPSE``: one 2 MiB block, with its
    :class:`cowcore.protocol.ScanResult` in ``cause``); ``nr`` the frames zeroed or copied,
    or the PTEs (``FORK``, ``ZAP``, ``MPROTECT``); ``pmds`` the huge PMDs of those three.
    """

    kind: EventCode
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

    def raw(self) -> tuple[int, ...]:
        """The fields in :data:`EVENT_FIELDS` order (padding zero)."""
        return (
            int(self.kind),
            self.order,
            self.cause,
            0,
            0,
            self.asid,
            self.asid2,
            self.pfn,
            self.pfn2,
            self.start,
            self.end,
            self.nr,
            self.pmds,
        )

    @classmethod
    def from_raw(cls, row: tuple[int, ...]) -> EventRecord:
        """From the fields in :data:`EVENT_FIELDS` order."""
        kind, order, cause, _pad, _pad2, asid, asid2, pfn, pfn2, start, end, nr, pmds = row
        return cls(EventCode(kind), order, cause, asid, asid2, pfn, pfn2, start, end, nr, pmds)


EVENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("kind", "u1"),
    ("order", "u1"),
    ("cause", "u1"),
    ("reserved", "u1"),
    ("reserved2", "<u4"),
    ("asid", "<u8"),
    ("asid2", "<u8"),
    ("pfn", "<u8"),
    ("pfn2", "<u8"),
    ("start", "<u8"),
    ("end", "<u8"),
    ("nr", "<u8"),
    ("pmds", "<u8"),
)
"""The Rust ``#[repr(C)] EventRecord`` layout (72 bytes)."""

EVENT_SIZE = 72


@cache
def _dtypes() -> dict[str, Any]:
    """The numpy dtypes, made on first use: ``import cowcore`` does not import numpy (which
    costs about 0.2 s, and whose OpenBLAS thread pool slows the simulator's own page
    faults on the host; BENCHMARKS.md), only the calls that return arrays do."""
    import numpy as np  # noqa: PLC0415 (loaded on first use, see above)

    dtypes = {
        "ACCESS_DTYPE": np.dtype(list(ACCESS_FIELDS)),
        "EVENT_DTYPE": np.dtype(list(EVENT_FIELDS)),
    }
    assert dtypes["ACCESS_DTYPE"].itemsize == ACCESS_SIZE
    assert dtypes["EVENT_DTYPE"].itemsize == EVENT_SIZE
    return dtypes


def __getattr__(name: str) -> Any:
    """``ACCESS_DTYPE`` and ``EVENT_DTYPE``, made on first use (:func:`_dtypes`)."""
    if name in ("ACCESS_DTYPE", "EVENT_DTYPE"):
        return _dtypes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
