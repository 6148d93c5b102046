"""Getting user pages from outside the process (mm/gup.c): the read a debugger or
``/proc/<pid>/mem`` makes, with ``FOLL_TOUCH``.

``follow_page_pte`` with ``FOLL_TOUCH`` calls ``folio_mark_accessed`` on the folio of a
present PTE (not on the zero page, which has no folio); ``follow_huge_pmd`` only calls
``touch_pmd``, which on x86 changes a PMD for a write alone, so a read of a PMD-mapped THP
marks nothing. Nothing is faulted in: callers read only pages that are present.
"""

from __future__ import annotations

from cowcore.reference import paging as pg
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm
from cowcore.reference.pagewalk import WalkAction, WalkOps, walk_page_range


class _TouchOps(WalkOps):
    """Marks the folio of every present, normal PTE; skips huge PMDs."""

    def __init__(self, k: Kernel) -> None:
        self.k = k

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        pmd = self.k.entry(table, idx)
        return WalkAction.CONTINUE if pmd & pg.PS else WalkAction.SUBTREE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        pte = ptes[i]
        if pg.is_present(pte):
            pfn = pg.entry_pfn(pte)
            if not self.k.is_zero_pfn(pfn):
                self.k.page_folio[pfn].referenced = True  # folio_mark_accessed
        return 1


def touch(k: Kernel, mm: Mm, start: int, end: int) -> None:
    """A ``FOLL_TOUCH`` read of ``[start, end)`` of ``mm`` (holes skipped)."""
    walk_page_range(k, mm, start, end, _TouchOps(k))
