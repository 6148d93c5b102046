"""fork(): ``dup_mmap`` and ``copy_page_range`` (kernel/fork.c, mm/memory.c; KS §3).

The child gets every VMA but the DONTCOPY ones; WIPEONFORK VMAs arrive empty; for the rest
the page tables are copied entry by entry, sharing every anonymous page with the child: both
sides lose write permission and PageAnonExclusive, the folio gains a reference and a mapcount
per entry, and the child's MM id enters the folio's owner slots. PTEs that map consecutive
pages of one large folio are copied as one batch, as ``folio_pte_batch`` lets the kernel do.
"""

from __future__ import annotations

from cowcore.outcome import WHOLE_MM_END
from cowcore.reference import paging as pg
from cowcore.reference import swap
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Process, Vma
from cowcore.reference.pagewalk import WalkAction, WalkOps, level_shift, walk_page_vma

# Bits that may differ inside one fork batch (``folio_pte_batch``: Accessed and Write are
# ignored, soft-dirty is ignored while soft-dirty tracking is off; Dirty must match for
# private mappings). The PFN must advance by one per entry.
_BATCH_IGNORE = pg.A | pg.RW | pg.SOFT_DIRTY | pg.PFN_MASK


def fork(k: Kernel, parent: Process) -> Process:
    """Fork ``parent``; fails as a whole with :class:`OutOfMemoryError` before any change
    when the child's page tables cannot be allocated (DESIGN.md), then with
    :class:`ProcessLimitError` when ``pid_max - 1`` processes live.

    Events: what the copy emits (nothing), then ``flush_tlb_mm(oldmm)`` (``dup_mmap``, always:
    ``TLB_FLUSH`` of the parent's whole address space), then ``FORK`` with the entries
    copied."""
    assert parent.mm is not None
    k.require_frames(1 + _count_child_tables(k, parent.mm))
    # alloc_pid comes after copy_mm in copy_process; the kernel undoes the copy when the pids
    # have run out, the simulator checks first so that a failed fork changes nothing.
    k.require_pid()
    child = k.new_process(mmap_cursor=parent.mm.mmap_cursor)
    assert child.mm is not None
    ops = _CopyOps(k, child.mm, parent.mm)
    for vma in parent.mm.vmas:
        if vma.dontcopy:
            continue
        cvma = vma.copy()
        child.mm.insert(cvma)
        ops.vma = cvma
        if vma.wipeonfork:
            cvma.anon_vma = False  # the child starts this range afresh
            continue
        if vma.anon_vma:  # vma_needs_copy()
            walk_page_vma(k, parent.mm, vma, ops)
    k.tlb_flush(parent.mm, 0, WHOLE_MM_END)
    k.emit(
        Event(
            EventKind.FORK,
            asid=parent.mm.asid,
            asid2=child.mm.asid,
            nr=ops.ptes,
            pmds=ops.pmds,
        )
    )
    return child


def _child_table(k: Kernel, dst_table: int, idx: int) -> int:
    entry = k.entry(dst_table, idx)
    if entry:
        return pg.entry_pfn(entry)
    new = k.phys.alloc_table()
    k.set_entry(dst_table, idx, pg.make_entry(new, pg.TABLE_ENTRY))
    return new


class _CopyOps(WalkOps):
    """``copy_page_range`` as a walk of the parent's tables: each present entry above the
    PTEs gets its child table (``copy_p4d/pud/pmd_range`` allocate them on the way down),
    huge PMDs are shared whole, PTEs in batches. Counts the present PTEs (zero-page ones
    included) and the huge PMDs (the huge zero one included) it copies."""

    def __init__(self, k: Kernel, dst: Mm, src: Mm) -> None:
        self.k, self.dst, self.src = k, dst, src
        self.vma: Vma | None = None
        """The child's VMA being copied (``dst_vma``)."""
        self.ptes = 0
        self.pmds = 0
        self.dst_tables = [dst.pgd] + [0] * (k.levels - 1)
        """The child's table at each level for the parent table being walked there."""

    def table_entry(self, level: int, table: int, idx: int, addr: int, end: int) -> None:
        self.dst_tables[level + 1] = _child_table(self.k, self.dst_tables[level], idx)

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        level = self.k.pmd_level()
        pmd = self.k.entry(table, idx)
        if not pg.is_present(pmd):
            raise pg.not_modelled(pmd, addr, "fork")  # copy_huge_pmd's migration entry case
        if pmd & pg.PS:
            head = pg.entry_pfn(pmd)
            if _must_copy(self.k, self.src, head):
                # copy_huge_pmd: folio_try_dup_anon_rmap_pmd refuses a maybe-pinned exclusive
                # THP: "split and retry the fault on PTEs" (__split_huge_pmd in the parent,
                # -EAGAIN); copy_pmd_range goes on with copy_pte_range below it.
                self.k.split_huge_pmd(self.src, addr, table, idx)
                self.dst_tables[level + 1] = _child_table(self.k, self.dst_tables[level], idx)
                return WalkAction.SUBTREE
            _copy_huge_pmd(self.k, self.dst, table, self.dst_tables[level], idx)
            self.pmds += 1
            return WalkAction.CONTINUE
        self.dst_tables[level + 1] = _child_table(self.k, self.dst_tables[level], idx)
        return WalkAction.SUBTREE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        dst_tab = self.k.phys.tables[self.dst_tables[-1]]
        if not pg.is_present(ptes[i]):
            if not swap.is_swap_pte(ptes[i]):
                raise pg.not_modelled(ptes[i], addr, "fork")  # a migration entry
            # copy_nonpresent_pte: the slot gains the child's PTE; "Mark the swap entry as
            # shared": the exclusive bit goes in both.
            swap.swap_duplicate(self.k, pg.swp_offset(ptes[i]))
            ptes[i] = pg.swp_clear_exclusive(ptes[i])
            dst_tab[i] = ptes[i]
            return 1
        assert self.vma is not None
        nr = _copy_present_ptes(self.k, self.dst, ptes, dst_tab, i, end, self.src, self.vma)
        self.ptes += nr
        return nr


def _copy_huge_pmd(k: Kernel, dst: Mm, src_table: int, dst_table: int, idx: int) -> None:
    """``copy_huge_pmd``: share a THP (or the huge zero page) as one PMD (KS §3.2)."""
    pmd = k.entry(src_table, idx)
    deposit = k.phys.alloc_table()
    head = pg.entry_pfn(pmd)
    if not k.is_huge_zero_pfn(head):
        folio = k.page_folio[head]
        folio.refcount += 1
        folio.dup_pmd(dst.mm_id)
        dst.rss_anon += pg.HPAGE_PMD_NR  # add_mm_counter(dst_mm, MM_ANONPAGES, HPAGE_PMD_NR)
    k.set_entry(src_table, idx, pg.wrprotect(pmd))
    k.set_entry(dst_table, idx, pg.mkold(pg.wrprotect(pmd)))
    k.deposits[(dst_table, idx)] = deposit


def _must_copy(k: Kernel, src: Mm, pfn: int) -> bool:
    """Whether fork must copy page ``pfn`` now (``folio_try_dup_anon_rmap_*`` refuses it):
    an anon-exclusive page of a folio that may be pinned (``folio_needs_cow_for_dma``:
    ``MMF_HAS_PINNED`` and ``folio_maybe_dma_pinned``)."""
    if not src.has_pinned:
        return False
    folio = k.page_folio.get(pfn)
    return folio is not None and folio.anon_exclusive[pfn - folio.pfn] and folio.maybe_dma_pinned()


def _copy_present_page(k: Kernel, dst: Mm, vma: Vma, dst_tab: list[int], i: int, pfn: int) -> None:
    """``copy_present_page`` (mm/memory.c): the child gets its own copy of the parent's
    pinned page at once, a new exclusive order-0 folio mapped
    ``maybe_mkwrite(pte_mkdirty(mk_pte(...)))``; the parent's entry stays as it was. The
    page is the ``folio_prealloc`` of the ``-EAGAIN`` retry, allocated right before."""
    new = k.alloc_folio(0)
    k.set_content(new.pfn, k.content(pfn))
    k.emit(Event(EventKind.PAGES_COPIED, pfn=pfn, pfn2=new.pfn, nr=1))
    new.refcount = 1
    new.add_new_anon_rmap(dst.mm_id, exclusive=True, pmd_mapped=False)
    k.folio_add_lru(new)
    flags = pg.mkdirty(vma.page_prot())
    if vma.write:
        flags = pg.mkwrite(flags)
    dst_tab[i] = pg.make_entry(new.pfn, flags)
    dst.rss_anon += 1


def _copy_present_ptes(
    k: Kernel,
    dst: Mm,
    src_tab: list[int],
    dst_tab: list[int],
    i: int,
    end: int,
    src: Mm,
    vma: Vma,
) -> int:
    """``copy_present_ptes`` for the batch that starts at ``src_tab[i]`` (``end`` bounds it);
    returns the number of PTEs copied.

    In an mm with ``MMF_HAS_PINNED``, ``folio_try_dup_anon_rmap_ptes`` refuses a batch of a
    maybe-pinned folio with an anon-exclusive page (``-EBUSY``); the batch then goes page by
    page (``-EAGAIN``, a preallocated page, no batching while it is held; 6.1 never batches):
    an anon-exclusive page is copied into the child at once (:func:`_copy_present_page`),
    the others are shared as usual."""
    pte = src_tab[i]
    pfn = pg.entry_pfn(pte)
    if k.is_zero_pfn(pfn):
        dst_tab[i] = pg.mkold(pte)  # no folio: just copy the special entry
        return 1
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
    if src.has_pinned and folio.maybe_dma_pinned() and any(folio.anon_exclusive[page : page + nr]):
        for j in range(nr):
            if folio.anon_exclusive[page + j]:
                _copy_present_page(k, dst, vma, dst_tab, i + j, pfn + j)
            else:
                _share_ptes(k, dst, folio, src_tab, dst_tab, i + j, 1)
        return nr
    _share_ptes(k, dst, folio, src_tab, dst_tab, i, nr)
    return nr


def _share_ptes(
    k: Kernel, dst: Mm, folio: Folio, src_tab: list[int], dst_tab: list[int], i: int, nr: int
) -> None:
    """The sharing half of ``copy_present_ptes`` for ``nr`` PTEs of ``folio`` from ``i``."""
    pte = src_tab[i]
    pfn = pg.entry_pfn(pte)
    page = pfn - folio.pfn
    folio.refcount += nr
    folio.dup_ptes(page, nr, dst.mm_id)
    dst.rss_anon += nr  # copy_present_ptes: add_mm_counter(dst_vma->vm_mm, MM_ANONPAGES, nr)
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


def _count_child_tables(k: Kernel, mm: Mm) -> int:
    """How many frames fork will allocate for the child's tables (a dry run of the copy:
    the same walk, counting instead of allocating)."""
    ops = _CountOps(k, mm)
    for vma in mm.vmas:
        if not vma.dontcopy and not vma.wipeonfork and vma.anon_vma:
            walk_page_vma(k, mm, vma, ops)
    return len(ops.needed) + ops.deposits + ops.pages


class _CountOps(WalkOps):
    """Counts the child tables (by level and the base address they cover; VMAs sharing a
    table count it once), the PMD deposits (or, for a pinned THP, the child's PTE table
    after the split) and the pinned pages (``copy_present_page``) that :class:`_CopyOps`
    would allocate."""

    def __init__(self, k: Kernel, mm: Mm) -> None:
        self.k, self.mm = k, mm
        self.needed: set[tuple[int, int]] = set()
        self.deposits = 0
        self.pages = 0

    def table_entry(self, level: int, table: int, idx: int, addr: int, end: int) -> None:
        base = addr & ~((1 << level_shift(self.k, level)) - 1)
        self.needed.add((level + 1, base))

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        pmd = self.k.entry(table, idx)
        if not pg.is_present(pmd):
            raise pg.not_modelled(pmd, addr, "fork")
        if pmd & pg.PS:
            self.deposits += 1
            if _must_copy(self.k, self.mm, pg.entry_pfn(pmd)):
                self.pages += pg.HPAGE_PMD_NR
            return WalkAction.CONTINUE
        self.table_entry(self.k.pmd_level(), table, idx, addr, end)
        return WalkAction.SUBTREE if self.mm.has_pinned else WalkAction.CONTINUE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        if pg.is_present(ptes[i]) and _must_copy(self.k, self.mm, pg.entry_pfn(ptes[i])):
            self.pages += 1
        return 1
