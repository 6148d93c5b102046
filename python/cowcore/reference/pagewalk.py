"""One range walker over the page tables (mm/pagewalk.c).

The kernel's ``walk_page_range`` visits a range of an mm level by level and calls the
``struct mm_walk_ops`` callbacks it is given: ``pgd_entry``/``p4d_entry``/``pud_entry`` for
the upper levels, ``pmd_entry`` for each PMD (a table or a huge leaf), ``pte_entry`` for each
PTE, and ``pte_hole`` where a page table is missing. Zap, mprotect, fork and ``check()`` are
clients of this walker here, as smaps, collapse, pageout and mremap will be: each one says
what it does with an entry, and the walk (the address arithmetic, the hole skipping, the
order of the visit) is written once.

The visit is depth-first, lowest address first, and each callback runs before the walk
descends below its entry: the order in which the clients allocate and free frames follows
from it, which the determinism contract (DESIGN.md) depends on.

Levels are numbered from the root: 0 is the PGD, ``levels - 2`` the PMD and ``levels - 1``
the PTE level (the P4D exists only with five levels).
"""

from __future__ import annotations

from enum import Enum

from cowcore.reference import paging as pg
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Vma


class WalkAction(Enum):
    """What ``pmd_entry`` asks of the walk next (``walk->action``)."""

    SUBTREE = 0
    """``ACTION_SUBTREE``: walk the PTEs below this PMD, if it (still) points to a table. A
    callback that splits a huge PMD returns this to have the new PTEs walked."""
    CONTINUE = 1
    """``ACTION_CONTINUE``: go on with the next PMD; the PTEs below were handled."""


class WalkOps:
    """``struct mm_walk_ops``: every callback is optional (the defaults do nothing).

    Subclass it and override the callbacks a walk needs. ``vma`` is the VMA being walked
    (``walk->vma``), set by :func:`walk_page_range`; ``None`` for a walk without VMAs.
    """

    vma: Vma | None = None

    def table_entry(self, level: int, table: int, idx: int, addr: int, end: int) -> None:
        """``pgd_entry``/``p4d_entry``/``pud_entry``: the present entry ``idx`` of ``table``
        at ``level`` (above the PMD), covering ``[addr, end)`` of the walk. Called before the
        walk descends into the table it points to. (An entry there that is neither none nor
        present raises :class:`InvariantError`: no kind of swap entry lives above the PMD.)"""

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        """``pmd_entry``: the non-none PMD ``idx`` of ``table``, covering ``[addr, end)``: a
        huge leaf (``pmd_trans_huge``), a PTE table, or (none exist yet) a PMD migration
        entry, which the client must refuse or handle. The walk re-reads the entry after the
        callback, so a callback may split a huge PMD and return ``SUBTREE``; it descends only
        into a present table."""
        return WalkAction.SUBTREE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        """``pte_entry``: the non-none PTE ``ptes[i]`` for ``addr`` (present, or a swap entry
        that the client must refuse or handle, see ``paging.entry_kind``); the walked range
        ends at index ``end`` of the same table. Returns how many PTEs it handled (at least
        one), so that a client can take a ``folio_pte_batch`` at once. None PTEs are not
        reported (no client needs them)."""
        return 1

    def pte_hole(self, addr: int, end: int, level: int) -> None:
        """``pte_hole``: ``[addr, end)`` has no page table below ``level`` (its entry at
        ``level`` is none)."""


def level_shift(k: Kernel, level: int) -> int:
    """log2 of the bytes one entry of a table at ``level`` covers."""
    return pg.PAGE_SHIFT + 9 * (k.levels - 1 - level)


def address_space_end(k: Kernel) -> int:
    """The end of what the root table covers (2^48, or 2^57 with five levels)."""
    return 1 << level_shift(k, -1)


def walk_page_range(k: Kernel, mm: Mm, start: int, end: int, ops: WalkOps) -> None:
    """``walk_page_range``: walk ``[start, end)`` of every VMA that meets it, lowest first,
    with ``ops.vma`` set to the VMA being walked."""
    for vma in mm.overlapping(start, end):
        walk_page_vma(k, mm, vma, ops, max(start, vma.start), min(end, vma.end))


def walk_page_vma(
    k: Kernel, mm: Mm, vma: Vma, ops: WalkOps, start: int | None = None, end: int | None = None
) -> None:
    """``walk_page_vma``: walk ``vma`` (or ``[start, end)`` of it)."""
    ops.vma = vma
    walk_pgd_range(
        k, mm.pgd, vma.start if start is None else start, vma.end if end is None else end, ops
    )


def walk_pgd_range(k: Kernel, pgd: int, start: int, end: int, ops: WalkOps) -> None:
    """``walk_pgd_range``: walk ``[start, end)`` of the tables under ``pgd``, VMAs or not
    (``walk_page_range_novma``, which ``check()`` uses over the whole address space)."""
    if start < end:
        _walk_level(k, 0, pgd, start, end, ops)


def _walk_level(k: Kernel, level: int, table: int, start: int, end: int, ops: WalkOps) -> None:
    """``walk_p4d_range``/``walk_pud_range``/``walk_pmd_range``: one table above the PTEs."""
    shift = level_shift(k, level)
    entries = k.phys.tables[table]
    is_pmd = level == k.levels - 2
    addr = start
    while addr < end:
        nxt = min(((addr >> shift) + 1) << shift, end)
        idx = (addr >> shift) & 0x1FF
        entry = entries[idx]
        if not entry:
            ops.pte_hole(addr, nxt, level)
        elif is_pmd:
            if ops.pmd_entry(table, idx, addr, nxt) is WalkAction.SUBTREE:
                entry = entries[idx]  # the callback may have split or cleared it
                if pg.is_present(entry) and not entry & pg.PS:
                    _walk_ptes(k, pg.entry_pfn(entry), addr, nxt, ops)
        elif pg.is_present(entry):
            ops.table_entry(level, table, idx, addr, nxt)
            _walk_level(k, level + 1, pg.entry_pfn(entry), addr, nxt, ops)
        else:
            raise pg.not_modelled(entry, addr, "page walk")  # no swap entries above the PMD
        addr = nxt


def _walk_ptes(k: Kernel, table: int, start: int, end: int, ops: WalkOps) -> None:
    """``walk_pte_range``: the PTEs of ``[start, end)`` in one table, batches as the
    callback takes them."""
    ptes = k.phys.tables[table]
    i = (start >> pg.PAGE_SHIFT) & 0x1FF
    stop = i + ((end - start) >> pg.PAGE_SHIFT)
    base = start - (i << pg.PAGE_SHIFT)
    while i < stop:
        if ptes[i]:
            nr = ops.pte_entry(ptes, i, stop, base + (i << pg.PAGE_SHIFT))
            assert nr >= 1, "pte_entry must handle at least one PTE"
            i += nr
        else:
            i += 1
