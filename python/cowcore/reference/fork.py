"""fork(): ``dup_mmap`` and ``copy_page_range`` (kernel/fork.c, mm/memory.c; KS §3).

The child gets every VMA but the DONTCOPY ones; WIPEONFORK VMAs arrive empty; for the rest
the page tables are copied entry by entry, sharing every anonymous page with the child: both
sides lose write permission and PageAnonExclusive, the folio gains a reference and a mapcount
per entry, and the child's MM id enters the folio's owner slots. PTEs that map consecutive
pages of one large folio are copied as one batch, as ``folio_pte_batch`` lets the kernel do.
"""

from __future__ import annotations

from cowcore.reference import paging as pg
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Process, Vma

# Bits that may differ inside one fork batch (``folio_pte_batch``: Accessed and Write are
# ignored, soft-dirty is ignored while soft-dirty tracking is off; Dirty must match for
# private mappings). The PFN must advance by one per entry.
_BATCH_IGNORE = pg.A | pg.RW | pg.SOFT_DIRTY | pg.PFN_MASK


def fork(k: Kernel, parent: Process) -> Process:
    """Fork ``parent``; fails as a whole with :class:`OutOfMemoryError` before any change
    when the child's page tables cannot be allocated (DESIGN.md)."""
    assert parent.mm is not None
    k.require_frames(1 + _count_child_tables(k, parent.mm))
    child = k.new_process(mmap_cursor=parent.mm.mmap_cursor)
    assert child.mm is not None
    for vma in parent.mm.vmas:
        if vma.dontcopy:
            continue
        cvma = vma.copy()
        child.mm.insert(cvma)
        if vma.wipeonfork:
            cvma.anon_vma = False  # the child starts this range afresh
            continue
        if vma.anon_vma:  # vma_needs_copy()
            _copy_level(k, parent.mm, child.mm, vma, 0, parent.mm.pgd, child.mm.pgd, 0)
    return child


def _span(k: Kernel, level: int) -> int:
    """Bytes covered by one entry of a table of ``level`` (0 = the root)."""
    return 1 << (pg.PAGE_SHIFT + 9 * (k.levels - 1 - level))


def _child_table(k: Kernel, dst_table: int, idx: int) -> int:
    entry = k.entry(dst_table, idx)
    if entry:
        return pg.entry_pfn(entry)
    new = k.phys.alloc_table()
    k.set_entry(dst_table, idx, pg.make_entry(new, pg.TABLE_ENTRY))
    return new


def _copy_level(
    k: Kernel, src: Mm, dst: Mm, vma: Vma, level: int, src_table: int, dst_table: int, base: int
) -> None:
    """Copy the entries of one table that fall inside ``vma`` (copy_p4d/pud/pmd_range)."""
    span = _span(k, level)
    first = max(vma.start, base)
    last = min(vma.end, base + span * 512)
    for idx in range((first - base) // span, (last - 1 - base) // span + 1):
        addr = base + idx * span
        entry = k.entry(src_table, idx)
        if not pg.is_present(entry):
            continue
        if level == k.pmd_level():
            if entry & pg.PS:
                _copy_huge_pmd(k, src, dst, src_table, dst_table, idx)
                continue
            child_ptes = _child_table(k, dst_table, idx)
            lo = max(vma.start, addr)
            hi = min(vma.end, addr + span)
            _copy_pte_range(k, dst, pg.entry_pfn(entry), child_ptes, lo, hi)
        else:
            child = _child_table(k, dst_table, idx)
            _copy_level(k, src, dst, vma, level + 1, pg.entry_pfn(entry), child, addr)


def _copy_huge_pmd(k: Kernel, src: Mm, dst: Mm, src_table: int, dst_table: int, idx: int) -> None:
    """``copy_huge_pmd``: share a THP (or the huge zero page) as one PMD (KS §3.2)."""
    pmd = k.entry(src_table, idx)
    deposit = k.phys.alloc_table()
    head = pg.entry_pfn(pmd)
    if not k.is_huge_zero_pfn(head):
        folio = k.page_folio[head]
        folio.refcount += 1
        folio.dup_pmd(dst.mm_id)
    k.set_entry(src_table, idx, pg.wrprotect(pmd))
    k.set_entry(dst_table, idx, pg.mkold(pg.wrprotect(pmd)))
    k.deposits[(dst_table, idx)] = deposit


def _copy_pte_range(k: Kernel, dst: Mm, src_ptes: int, dst_ptes: int, lo: int, hi: int) -> None:
    """``copy_pte_range`` -> ``copy_present_ptes`` over ``[lo, hi)`` of one PTE table."""
    src_tab = k.phys.tables[src_ptes]
    dst_tab = k.phys.tables[dst_ptes]
    i = pg.index_at(lo, k.levels, k.levels - 1)
    end = i + (hi - lo) // pg.PAGE_SIZE
    while i < end:
        pte = src_tab[i]
        if not pg.is_present(pte):
            i += 1
            continue
        pfn = pg.entry_pfn(pte)
        if k.is_zero_pfn(pfn):
            dst_tab[i] = pg.mkold(pte)  # no folio: just copy the special entry
            i += 1
            continue
        folio = k.page_folio[pfn]
        page = pfn - folio.pfn
        nr = 1
        if folio.is_large:
            limit = min(end - i, folio.nr_pages - page)
            while nr < limit:
                nxt = src_tab[i + nr]
                if (
                    not pg.is_present(nxt)
                    or pg.entry_pfn(nxt) != pfn + nr
                    or (nxt & ~_BATCH_IGNORE) != (pte & ~_BATCH_IGNORE)
                ):
                    break
                nr += 1
        folio.refcount += nr
        folio.dup_ptes(page, nr, dst.mm_id)
        any_writable = any(src_tab[j] & pg.RW for j in range(i, i + nr))
        value = pte | (pg.RW if any_writable else 0)
        if any_writable:  # __copy_present_ptes(): write-protect both sides of a COW mapping
            for j in range(i, i + nr):
                src_tab[j] = pg.wrprotect(src_tab[j])
            value = pg.wrprotect(value)
        value = pg.mkold(value)
        flags = value & ~pg.PFN_MASK
        for j in range(nr):
            dst_tab[i + j] = pg.make_entry(pfn + j, flags)
        i += nr


def _count_child_tables(k: Kernel, mm: Mm) -> int:
    """How many frames fork will allocate for the child's tables (a dry run of the copy)."""
    needed: set[tuple[int, int]] = set()  # (level of the table, base address it covers)
    deposits = 0

    def visit(level: int, table: int, base: int, vma: Vma) -> None:
        nonlocal deposits
        span = _span(k, level)
        first = max(vma.start, base)
        last = min(vma.end, base + span * 512)
        for idx in range((first - base) // span, (last - 1 - base) // span + 1):
            entry = k.entry(table, idx)
            if not pg.is_present(entry):
                continue
            addr = base + idx * span
            if level == k.pmd_level() and entry & pg.PS:
                deposits += 1
                continue
            needed.add((level + 1, addr))
            if level < k.pmd_level():
                visit(level + 1, pg.entry_pfn(entry), addr, vma)

    for vma in mm.vmas:
        if not vma.dontcopy and not vma.wipeonfork and vma.anon_vma:
            visit(0, mm.pgd, 0, vma)
    return len(needed) + deposits
