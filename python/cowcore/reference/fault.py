"""User accesses and the page-fault handlers (mm/memory.c, mm/huge_memory.c; KS §2, §4).

An access walks the page tables like the MMU; when the leaf does not allow it, the fault is
handled as ``handle_mm_fault`` would and the access is retried, as the faulting instruction
is. The error code of each fault follows the x86 layout (KS §8.4).
"""

from __future__ import annotations

from enum import Enum

from cowcore.errors import OutOfMemoryError
from cowcore.reference import paging as pg
from cowcore.reference.events import Event, EventKind
from cowcore.reference.folio import HPAGE_PMD_ORDER, Folio
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Vma

# x86 page-fault error code bits (arch/x86/include/asm/trap_pf.h).
PF_PROT = 1 << 0
PF_WRITE = 1 << 1
PF_USER = 1 << 2


class Outcome(Enum):
    """What a huge-PMD handler did: handled, or fall back to the PTE level."""

    DONE = 0
    FALLBACK = 1


def access(k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool) -> int:
    """One user load or store to the page of ``addr``; returns the 4 KiB frame accessed.

    Walks like the MMU: a leaf that allows the access gets Accessed (and Dirty for a store)
    set; otherwise a page fault is raised with the x86 error code and handled by
    :func:`handle_mm_fault`, and the access is retried, as the faulting instruction is.
    The caller has checked that ``vma`` allows the access (``access_error``). Raises
    :class:`OutOfMemoryError` with nothing changed when a fault cannot get memory.
    """
    for _ in range(4):  # a fault resolves in at most: split, copy; then the access succeeds
        pmd_slot = k.pmd_slot(mm, addr)
        if pmd_slot is not None and pg.is_huge(pmd := k.entry(*pmd_slot)):
            if not write or pmd & pg.RW:
                k.set_entry(*pmd_slot, pmd | pg.A | (pg.D if write else 0))
                return pg.entry_pfn(pmd) + ((addr >> pg.PAGE_SHIFT) & 0x1FF)
            handle_mm_fault(k, mm, vma, addr, PF_USER | PF_WRITE | PF_PROT)
            continue
        pte_slot = k.pte_slot(mm, addr)
        pte = k.entry(*pte_slot) if pte_slot is not None else 0
        if pte_slot is not None and pte & pg.P and (not write or pte & pg.RW):
            k.set_entry(*pte_slot, pte | pg.A | (pg.D if write else 0))
            return pg.entry_pfn(pte)
        code = PF_USER | (PF_WRITE if write else 0) | (PF_PROT if pte & pg.P else 0)
        handle_mm_fault(k, mm, vma, addr, code)
    raise AssertionError(f"access to {addr:#x} did not resolve")


def handle_mm_fault(k: Kernel, mm: Mm, vma: Vma, addr: int, code: int) -> None:
    """One page fault with its x86 error code (``do_user_addr_fault`` -> ``handle_mm_fault``):
    counted by type, then dispatched on what the entries are (``__handle_mm_fault``)."""
    write = bool(code & PF_WRITE)
    if code & PF_PROT:
        assert write, "read faults on present entries are refused by access_error()"
        k.emit(Event(EventKind.FAULTS_WP))
    elif write:
        k.emit(Event(EventKind.FAULTS_WRITE))
    else:
        k.emit(Event(EventKind.FAULTS_READ))
    allocated: list[tuple[int, int, int]] = []
    try:
        _handle_fault(k, mm, vma, addr, write, allocated)
    except OutOfMemoryError:
        k.undo_tables(allocated)
        raise


def _handle_fault(
    k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool, allocated: list[tuple[int, int, int]]
) -> None:
    """``__handle_mm_fault``: allocate the tables down to the PMD, dispatch on the PMD's
    kind, then allocate the PTE table and dispatch on the PTE's (``handle_pte_fault``).
    Tables allocated here are recorded in ``allocated`` for the caller to undo on OOM."""
    pmd_table = k.table_for(mm, addr, k.pmd_level(), allocated)
    assert pmd_table is not None
    pmd_idx = pg.index_at(addr, k.levels, k.pmd_level())
    pmd = k.entry(pmd_table, pmd_idx)
    match pg.entry_kind(pmd):
        case pg.EntryKind.NONE:
            if HPAGE_PMD_ORDER in k.thp.allowable_orders(vma):
                outcome = do_huge_pmd_anonymous_page(k, mm, vma, addr, write, pmd_table, pmd_idx)
                if outcome is Outcome.DONE:
                    return
        case pg.EntryKind.PRESENT if pmd & pg.PS:
            assert write and not pmd & pg.RW, "the access would have succeeded"
            do_huge_pmd_wp_page(k, mm, vma, addr, pmd_table, pmd_idx)
            return
        case pg.EntryKind.PRESENT:
            pass  # a PTE table: the fault is handled at the PTE level
        case pg.EntryKind.SWAP | pg.EntryKind.MIGRATION:
            raise pg.not_modelled(pmd, addr, "PMD fault")  # is_swap_pmd: pmd_migration_entry_wait
    pte_table = k.table_for(mm, addr, k.levels - 1, allocated)
    assert pte_table is not None
    pte_idx = pg.index_at(addr, k.levels, k.levels - 1)
    pte = k.entry(pte_table, pte_idx)
    match pg.entry_kind(pte):
        case pg.EntryKind.NONE:
            do_anonymous_page(k, mm, vma, addr, write, pte_table)  # do_pte_missing
        case pg.EntryKind.PRESENT if pte & pg.P:
            assert write and not pte & pg.RW, "the access would have succeeded"
            do_wp_page(k, mm, vma, addr, pte_table, pte_idx)
        case pg.EntryKind.PRESENT:
            raise pg.not_modelled(pte, addr, "PROT_NONE PTE fault")  # do_numa_page
        case pg.EntryKind.SWAP | pg.EntryKind.MIGRATION:
            raise pg.not_modelled(pte, addr, "PTE fault")  # do_swap_page


def do_huge_pmd_anonymous_page(
    k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool, pmd_table: int, pmd_idx: int
) -> Outcome:
    """A fault on a none PMD where a PMD-size THP is allowed (KS §2.5)."""
    haddr = addr & ~(pg.PMD_SIZE - 1)
    if haddr < vma.start or haddr + pg.PMD_SIZE > vma.end:
        return Outcome.FALLBACK  # thp_vma_suitable_order(): not counted as a fallback
    prot = vma.page_prot()
    if not write and k.thp.use_zero_page:
        deposit = k.phys.alloc_table()
        k.deposits[(pmd_table, pmd_idx)] = deposit
        k.set_entry(pmd_table, pmd_idx, pg.make_entry(k.huge_zero_pfn, prot | pg.PS | pg.SPECIAL))
        vma.anon_vma = True  # anon_vma_prepare() ran before the zero-page branch
        return Outcome.DONE
    if not k.phys.buddy.can_allocate(HPAGE_PMD_ORDER):
        # vma_alloc_anon_folio_pmd() failure
        k.emit(Event(EventKind.ANON_FAULT_FALLBACK, HPAGE_PMD_ORDER))
        return Outcome.FALLBACK
    folio = k.alloc_folio(HPAGE_PMD_ORDER)
    try:
        deposit = k.phys.alloc_table()
    except OutOfMemoryError:
        k.free_unused_folio(folio)
        raise
    map_anon_folio_pmd(k, mm, vma, folio, pmd_table, pmd_idx)
    k.deposits[(pmd_table, pmd_idx)] = deposit
    return Outcome.DONE


def map_anon_folio_pmd(
    k: Kernel, mm: Mm, vma: Vma, folio: Folio, pmd_table: int, pmd_idx: int
) -> None:
    """``map_anon_folio_pmd``: install a new exclusive THP with one writable PMD."""
    folio.refcount = 1
    folio.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=True)
    entry = pg.mkdirty(pg.make_entry(folio.pfn, vma.page_prot() | pg.PS))
    if vma.write:
        entry = pg.mkwrite(entry)
    k.set_entry(pmd_table, pmd_idx, entry)
    mm.rss_anon += pg.HPAGE_PMD_NR  # add_mm_counter(mm, MM_ANONPAGES, HPAGE_PMD_NR)
    k.emit(Event(EventKind.THP_FAULT_ALLOC))
    k.emit(Event(EventKind.ANON_FAULT_ALLOC, HPAGE_PMD_ORDER))
    vma.anon_vma = True


def anon_orders(k: Kernel, vma: Vma, addr: int, pte_table: int) -> list[int]:
    """The mTHP orders to try for a write fault, highest first (``alloc_anon_folio``).

    Policy (sysfs and VMA advice), then suitability (the aligned block lies in the VMA;
    ``thp_vma_suitable_orders`` drops orders from the top until one fits), then emptiness
    (the first order from the top whose aligned block of PTEs is all none).
    """
    orders = [o for o in k.thp.allowable_orders(vma) if o < HPAGE_PMD_ORDER]
    while orders:
        base = addr & ~((pg.PAGE_SIZE << orders[0]) - 1)
        if base >= vma.start and base + (pg.PAGE_SIZE << orders[0]) <= vma.end:
            break
        orders.pop(0)
    ptes = k.phys.tables[pte_table]
    while orders:
        nr = 1 << orders[0]
        first = pg.index_at(addr, k.levels, k.levels - 1) & ~(nr - 1)
        if not any(ptes[first : first + nr]):
            break
        orders.pop(0)
    return orders


def do_anonymous_page(k: Kernel, mm: Mm, vma: Vma, addr: int, write: bool, pte_table: int) -> None:
    """A fault on a none PTE (KS §2.3, §2.4)."""
    prot = vma.page_prot()
    idx = pg.index_at(addr, k.levels, k.levels - 1)
    assert k.entry(pte_table, idx) == 0, "do_anonymous_page on a PTE that is not none"
    if not write:
        # The shared zero page, read-only and special; no anon_vma is prepared for it.
        k.set_entry(pte_table, idx, pg.make_entry(k.zero_pfn, prot | pg.SPECIAL))
        return
    folio: Folio | None = None
    for order in anon_orders(k, vma, addr, pte_table):
        if k.phys.buddy.can_allocate(order):
            folio = k.alloc_folio(order)
            break
        k.emit(Event(EventKind.ANON_FAULT_FALLBACK, order))
    if folio is None:
        folio = k.alloc_folio(0)  # OutOfMemoryError propagates: VM_FAULT_OOM
    nr = folio.nr_pages
    first = idx & ~(nr - 1)
    folio.refcount = nr
    folio.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=False)
    flags = prot
    if vma.write:
        flags = pg.mkwrite(pg.mkdirty(flags))
    for i in range(nr):
        k.set_entry(pte_table, first + i, pg.make_entry(folio.pfn + i, flags))
    mm.rss_anon += nr  # add_mm_counter(vma->vm_mm, MM_ANONPAGES, nr_pages)
    if folio.order:
        k.emit(Event(EventKind.ANON_FAULT_ALLOC, folio.order))
    vma.anon_vma = True


def can_reuse_anon_folio(k: Kernel, folio: Folio) -> bool:
    """``wp_can_reuse_anon_folio`` (KS §4.2, §4.3).

    Small folios: the only reference is our mapping. Large folios: never before 6.15
    (``cow_reuse_pte_mapped_thp`` off); since 6.15, ``__wp_can_reuse_large_anon_folio``.
    """
    if not folio.is_large:
        return folio.refcount == 1
    if not k.toggles["cow_reuse_pte_mapped_thp"]:
        return False
    if folio.large_mapcount <= 1:
        return False  # copy the last mapped page; the large folio can then be freed
    if folio.shared:
        return False
    return folio.large_mapcount == folio.refcount


def do_wp_page(k: Kernel, mm: Mm, vma: Vma, addr: int, pte_table: int, idx: int) -> None:
    """A write to a present, read-only PTE in a writable VMA: reuse or copy (KS §4.1)."""
    pte = k.entry(pte_table, idx)
    pfn = pg.entry_pfn(pte)
    if not k.is_zero_pfn(pfn):
        folio = k.page_folio[pfn]
        page = pfn - folio.pfn
        if folio.anon_exclusive[page] or can_reuse_anon_folio(k, folio):
            folio.anon_exclusive[page] = True
            # wp_page_reuse(): young, dirty, writable.
            k.set_entry(pte_table, idx, pg.mkwrite(pg.mkdirty(pte | pg.A)))
            k.emit(Event(EventKind.PGREUSE))
            return
        wp_page_copy(k, mm, vma, pte_table, idx, folio)
        return
    wp_page_copy(k, mm, vma, pte_table, idx, None)


def wp_page_copy(k: Kernel, mm: Mm, vma: Vma, pte_table: int, idx: int, old: Folio | None) -> None:
    """Copy the page into a new order-0 folio and map it writable (KS §4.4).

    ``old`` is ``None`` for the zero page (the new page is zero-filled).
    """
    pte = k.entry(pte_table, idx)
    pfn = pg.entry_pfn(pte)
    new = k.alloc_folio(0)  # OutOfMemoryError propagates with nothing changed
    if old is not None:
        k.set_content(new.pfn, k.content(pfn))
    new.refcount = 1
    new.add_new_anon_rmap(mm.mm_id, exclusive=True, pmd_mapped=False)
    flags = vma.page_prot()
    if vma.write:
        flags = pg.mkwrite(pg.mkdirty(flags))
    k.set_entry(pte_table, idx, pg.make_entry(new.pfn, flags))
    if old is not None:
        old.remove_rmap_ptes(pfn - old.pfn, 1, mm.mm_id)
        k.put_folio(old, 1)
    else:
        mm.rss_anon += 1  # inc_mm_counter(mm, MM_ANONPAGES): the zero page was not counted
    vma.anon_vma = True
    k.emit(Event(EventKind.COW_COPY))


def do_huge_pmd_wp_page(
    k: Kernel, mm: Mm, vma: Vma, addr: int, pmd_table: int, pmd_idx: int
) -> None:
    """A write to a read-only huge PMD: reuse the THP, or split and fall back (KS §4.5)."""
    pmd = k.entry(pmd_table, pmd_idx)
    head = pg.entry_pfn(pmd)
    if k.is_huge_zero_pfn(head):
        if k.toggles["huge_zero_wp_alloc"]:
            # do_huge_zero_wp_pmd() (since 6.14): replace by a fresh writable THP.
            if k.phys.buddy.can_allocate(HPAGE_PMD_ORDER):
                folio = k.alloc_folio(HPAGE_PMD_ORDER)
                map_anon_folio_pmd(k, mm, vma, folio, pmd_table, pmd_idx)
                k.emit(Event(EventKind.HUGE_ZERO_WRITE))
                return
            k.emit(Event(EventKind.ANON_FAULT_FALLBACK, HPAGE_PMD_ORDER))
        k.split_huge_pmd(mm, addr, pmd_table, pmd_idx)
        return
    folio = k.page_folio[head]
    if folio.anon_exclusive[0] or folio.refcount == 1:
        folio.anon_exclusive[0] = True
        k.set_entry(pmd_table, pmd_idx, pg.mkwrite(pg.mkdirty(pmd | pg.A)))
        return
    k.split_huge_pmd(mm, addr, pmd_table, pmd_idx)
