"""Simulated physical memory: a deterministic binary buddy allocator and frame contents.

Models the page allocator's buddy system (mm/page_alloc.c: ``__rmqueue_smallest``,
``expand``, ``__free_one_page``) with the determinism rule of DESIGN.md: allocate from the
smallest order that has a free block, taking the lowest-addressed block of that order and
keeping the lower half of every split. Page-table pages and folios come from the same pool.

Frame contents are modelled only as far as the simulator needs them: a page-table frame holds
512 64-bit entries, and a data frame holds the 64-bit value at its first byte.
"""

from __future__ import annotations

import heapq

from cowcore.errors import OutOfMemoryError

MAX_ORDER = 10
"""The largest buddy block: 2^10 pages = 4 MiB (the kernel's ``MAX_PAGE_ORDER``)."""

PAGE_SIZE = 4096
ENTRIES_PER_TABLE = 512


class BuddyAllocator:
    """Free lists per order with lowest-address-first allocation.

    Each order keeps a set of free block starts (the truth) and a heap of candidates (which
    may hold stale starts that are no longer free; they are skipped lazily).
    """

    def __init__(self, total_frames: int) -> None:
        if total_frames <= 0 or total_frames % (1 << 9):
            raise ValueError("the number of frames must be a positive multiple of 512")
        self.total_frames = total_frames
        self._free: list[set[int]] = [set() for _ in range(MAX_ORDER + 1)]
        self._heaps: list[list[int]] = [[] for _ in range(MAX_ORDER + 1)]
        self.free_count = 0
        pfn = 0
        while pfn < total_frames:
            order = MAX_ORDER
            while pfn % (1 << order) or pfn + (1 << order) > total_frames:
                order -= 1
            self._push(order, pfn)
            self.free_count += 1 << order
            pfn += 1 << order

    def _push(self, order: int, pfn: int) -> None:
        self._free[order].add(pfn)
        heapq.heappush(self._heaps[order], pfn)

    def _pop_lowest(self, order: int) -> int | None:
        heap, free = self._heaps[order], self._free[order]
        while heap:
            pfn = heapq.heappop(heap)
            if pfn in free:
                free.remove(pfn)
                return pfn
        return None

    def can_allocate(self, order: int) -> bool:
        """Whether a block of this order is available (no state change)."""
        return any(self._free[j] for j in range(order, MAX_ORDER + 1))

    def alloc(self, order: int) -> int:
        """Allocate ``2^order`` contiguous, naturally aligned frames; return the first pfn.

        Raises:
            OutOfMemoryError: no free block of that order or larger.
        """
        for found in range(order, MAX_ORDER + 1):
            if self._free[found]:
                pfn = self._pop_lowest(found)
                assert pfn is not None
                # expand(): keep the lower half, give the upper halves back.
                for half in range(found - 1, order - 1, -1):
                    self._push(half, pfn + (1 << half))
                self.free_count -= 1 << order
                return pfn
        raise OutOfMemoryError(f"no free block of order {order} ({(1 << order) * 4} KiB)")

    def free(self, pfn: int, order: int) -> None:
        """Return a block, merging it with its buddy as long as the buddy is free."""
        self.free_count += 1 << order
        while order < MAX_ORDER:
            buddy = pfn ^ (1 << order)
            if buddy not in self._free[order]:
                break
            self._free[order].remove(buddy)  # its heap entry goes stale
            pfn = min(pfn, buddy)
            order += 1
        self._push(order, pfn)

    def is_free(self, pfn: int) -> bool:
        """Whether ``pfn`` lies inside a free block (slow; used by ``check()``)."""
        for order in range(MAX_ORDER + 1):
            start = pfn & ~((1 << order) - 1)
            if start in self._free[order]:
                return True
        return False


class PhysMem:
    """All frames of the machine: the allocator plus what the frames hold."""

    def __init__(self, total_frames: int) -> None:
        self.buddy = BuddyAllocator(total_frames)
        self.tables: dict[int, list[int]] = {}
        """Page-table frames: pfn -> 512 raw entries."""
        self.content: dict[int, int] = {}
        """Data frames: pfn -> the 64-bit value at the first byte (absent means 0)."""

    @property
    def total_frames(self) -> int:
        return self.buddy.total_frames

    def alloc_table(self) -> int:
        """Allocate a zeroed page-table frame (``pte_alloc_one``/``__pmd_alloc``...)."""
        pfn = self.buddy.alloc(0)
        self.tables[pfn] = [0] * ENTRIES_PER_TABLE
        return pfn

    def free_table(self, pfn: int) -> None:
        del self.tables[pfn]
        self.buddy.free(pfn, 0)

    def alloc_data(self, order: int) -> int:
        """Allocate zeroed data frames for a folio of ``order``."""
        pfn = self.buddy.alloc(order)
        for p in range(pfn, pfn + (1 << order)):
            self.content.pop(p, None)
        return pfn

    def free_data(self, pfn: int, order: int) -> None:
        for p in range(pfn, pfn + (1 << order)):
            self.content.pop(p, None)
        self.buddy.free(pfn, order)
