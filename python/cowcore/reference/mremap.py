"""``mremap`` of a range of one private anonymous mapping to a new address, without a change
of size (mm/mremap.c: ``mremap_to`` with ``MREMAP_FIXED``, or to a fresh address).

``move_vma`` copies the VMA to the destination (``copy_vma``: the new VMA keeps the moved
range's ``vm_pgoff`` and ``anon_vma``), moves the page tables (``move_page_tables``), then
unmaps the old range, empty by then (``do_vmi_munmap``). Pages move with their frames: no
refcount, mapcount, MM-id slot or anon-exclusive bit changes.

``move_page_tables`` goes extent by extent, each ending at the next PUD or PMD boundary of
either side: ``move_normal_pud`` moves a whole PMD table when the extent is a whole PUD on
both sides; ``move_huge_pmd`` moves a huge PMD (with its deposited table) when the extent is
a whole PMD, which is split (``split_huge_pmd``) otherwise; ``move_normal_pmd`` moves a whole
PTE table; otherwise ``move_ptes`` moves the entries one by one into a destination table
(``pte_alloc``). Moved entries become soft-dirty (``move_soft_dirty_pte``/``_pmd``); the
entries of a moved table do not. From 6.7, ``try_realign_addr`` first aligns a move that
starts its VMA down to the PMD boundary where nothing else is mapped.

The destination tables are allocated first, in the kernel loop's order, and nothing moves
until all exist: running out of memory frees them and changes nothing (where the kernel
moves the entries back).
"""

from __future__ import annotations

from dataclasses import dataclass

from cowcore.errors import InvalidAddressError
from cowcore.reference import paging as pg
from cowcore.reference import vma_ops
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Vma

PUD_SIZE = 1 << 30


@dataclass(frozen=True, slots=True)
class _Step:
    """One extent's step: ``kind`` is ``"pud"`` (``move_normal_pud``), ``"huge"``
    (``move_huge_pmd``), ``"table"`` (``move_normal_pmd``) or ``"ptes"`` (split if huge,
    then ``move_ptes`` into ``new_table``)."""

    kind: str
    old: tuple[int, int]
    new: tuple[int, int]
    old_addr: int
    new_addr: int
    length: int
    new_table: int = 0


def source_vma(mm: Mm, start: int, end: int) -> Vma:
    """The VMA holding all of ``[start, end)`` (``vma_to_resize``: ``EFAULT`` otherwise)."""
    vma = mm.find_vma(start)
    if vma is None or end > vma.end:
        raise InvalidAddressError(
            f"mremap: [{start:#x}, {end:#x}) does not lie inside one mapping (EFAULT)"
        )
    return vma


def move_vma(k: Kernel, mm: Mm, start: int, end: int, new_start: int, fresh: bool) -> None:
    """``move_vma``: the VMA copy, the page-table move, the unmap of the old range. With
    ``fresh`` the mmap cursor goes 2 MiB below the block placed, as after ``mmap``. The
    destination is free (a ``MREMAP_FIXED`` destination was unmapped by the caller)."""
    vma = source_vma(mm, start, end)
    length = end - start
    # copy_vma: an anon_vma-less VMA takes the new address as its pgoff.
    pgoff = vma.page_index(start) if vma.anon_vma else new_start >> pg.PAGE_SHIFT
    steps = _plan(k, mm, vma, start, end, new_start)
    if fresh:
        mm.mmap_cursor = new_start - start % pg.PMD_SIZE - pg.PMD_SIZE
    mm.insert(vma.copy(start=new_start, end=new_start + length, pgoff=pgoff))
    mm.merge_adjacent()
    for step in steps:
        _move(k, mm, vma, step)
    vma_ops.munmap(k, mm, start, end)


def _extent(size: int, old: int, old_end: int, new: int) -> int:
    """``get_extent``: to the nearer ``size`` boundary of either side, at most to the end."""
    extent = min(((old + size) & ~(size - 1)) - old, old_end - old)
    return min(extent, ((new + size) & ~(size - 1)) - new)


def _can_realign(mm: Mm, vma: Vma, old: int, new: int, length: int) -> bool:
    """``can_realign_addr`` and ``can_align_down`` for the old and the new start."""
    mask = pg.PMD_SIZE - 1
    old_align, new_align = old & mask, new & mask
    if length < pg.PMD_SIZE - old_align or not old_align or old_align != new_align:
        return False
    return (
        vma.start == old
        and not mm.overlapping(old & ~mask, old)
        and not mm.overlapping(new & ~mask, new)
    )


def _old_slot(k: Kernel, mm: Mm, addr: int, level: int) -> tuple[int, int] | None:
    """The non-none entry of ``level`` covering ``addr`` (``get_old_pud``/``get_old_pmd``)."""
    table = k.table_for(mm, addr, level, None)
    if table is None:
        return None
    idx = pg.index_at(addr, k.levels, level)
    return (table, idx) if k.entry(table, idx) else None


def _plan(k: Kernel, mm: Mm, vma: Vma, start: int, end: int, new_start: int) -> list[_Step]:
    """The loop of ``move_page_tables``: each extent's step, the destination tables it needs
    allocated as the kernel allocates them (``alloc_new_pud``, ``alloc_new_pmd``,
    ``pte_alloc``). Out of memory: the tables allocated are freed, nothing else changed."""
    old, new, old_end = start, new_start, end
    if k.profile_config.mremap_realigns and _can_realign(mm, vma, old, new, end - start):
        old &= ~(pg.PMD_SIZE - 1)
        new &= ~(pg.PMD_SIZE - 1)
    pmd_level = k.pmd_level()
    allocated: list[tuple[int, int, int]] = []
    steps: list[_Step] = []
    try:
        while old < old_end:
            extent = _extent(PUD_SIZE, old, old_end, new)
            pud = _old_slot(k, mm, old, pmd_level - 1)
            if pud is None:
                old, new = old + extent, new + extent
                continue
            table = k.table_for(mm, new, pmd_level - 1, allocated)
            assert table is not None
            new_pud = (table, pg.index_at(new, k.levels, pmd_level - 1))
            if extent == PUD_SIZE and not k.entry(*new_pud):
                steps.append(_Step("pud", pud, new_pud, old, new, extent))
                old, new = old + extent, new + extent
                continue
            extent = _extent(pg.PMD_SIZE, old, old_end, new)
            pmd = _old_slot(k, mm, old, pmd_level)
            if pmd is None:
                old, new = old + extent, new + extent
                continue
            table = k.table_for(mm, new, pmd_level, allocated)
            assert table is not None
            new_pmd = (table, pg.index_at(new, k.levels, pmd_level))
            entry = k.entry(*pmd)
            if not pg.is_present(entry):
                raise pg.not_modelled(entry, old, "mremap")
            if extent == pg.PMD_SIZE and not k.entry(*new_pmd):
                kind = "huge" if entry & pg.PS else "table"
                steps.append(_Step(kind, pmd, new_pmd, old, new, extent))
                old, new = old + extent, new + extent
                continue
            dest = k.entry(*new_pmd)
            if dest:
                new_table = pg.entry_pfn(dest)
            else:
                new_table = k.phys.alloc_table()  # pte_alloc
                k.set_entry(*new_pmd, pg.make_entry(new_table, pg.TABLE_ENTRY))
                allocated.append((*new_pmd, new_table))
            steps.append(_Step("ptes", pmd, new_pmd, old, new, extent, new_table))
            old, new = old + extent, new + extent
    except BaseException:
        k.undo_tables(allocated)
        raise
    return steps


def _move(k: Kernel, mm: Mm, vma: Vma, step: _Step) -> None:
    """One planned step of ``move_page_tables``, with its TLB flush of the old range."""
    if step.kind in ("pud", "table", "huge"):
        entry = k.entry(*step.old)
        k.set_entry(*step.old, 0)
        if step.kind == "huge":
            k.deposits[step.new] = k.deposits.pop(step.old)
            entry |= pg.SOFT_DIRTY  # move_soft_dirty_pmd
        k.set_entry(*step.new, entry)
        k.tlb_flush(mm, step.old_addr, step.old_addr + step.length)
        return
    if pg.is_huge(k.entry(*step.old)):
        k.split_huge_pmd(mm, step.old_addr, *step.old)
    old_ptes = k.phys.tables[pg.entry_pfn(k.entry(*step.old))]
    new_ptes = k.phys.tables[step.new_table]
    i = (step.old_addr >> pg.PAGE_SHIFT) & 0x1FF
    j = (step.new_addr >> pg.PAGE_SHIFT) & 0x1FF
    present = False
    for n in range(step.length >> pg.PAGE_SHIFT):
        entry = old_ptes[i + n]
        if not entry:
            continue
        old_ptes[i + n] = 0
        if pg.is_present(entry):
            present = True
            entry |= pg.SOFT_DIRTY  # move_soft_dirty_pte
        else:
            entry = pg.swp_mksoft_dirty(entry)  # move_soft_dirty_pte of a swap entry
        new_ptes[j + n] = entry
    if present:
        k.tlb_flush(mm, step.old_addr, step.old_addr + step.length)
