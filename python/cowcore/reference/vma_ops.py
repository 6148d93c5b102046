"""mmap, munmap, mprotect, madvise and exit on the reference machine (mm/mmap.c,
mm/mprotect.c, mm/madvise.c, kernel/exit.c)."""

from __future__ import annotations

from cowcore.errors import InvalidAddressError
from cowcore.outcome import WHOLE_MM_END, ZapCause
from cowcore.reference import gup, swap
from cowcore.reference import paging as pg
from cowcore.reference.events import Event, EventKind
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import Mm, Process, Vma
from cowcore.reference.pagewalk import WalkAction, WalkOps, walk_page_vma
from cowcore.reference.zap import Gather, free_unused_tables, zap_range

USER_START = 0x200000
"""Lowest address mmap hands out (below it lie the NULL guard and the program image)."""


def mmap(mm: Mm, length: int) -> int:
    """A private anonymous read/write mapping, top-down and 2 MiB aligned (DESIGN.md).

    The mapping never overlaps or touches a VMA (one placed by :func:`mmap_fixed`): while
    some VMA meets the candidate ``[start, start + length]`` (ends included), the cursor
    moves 2 MiB below the lowest such VMA and the candidate is recomputed.
    """
    start = get_unmapped_area(mm, length)
    mm.mmap_cursor = start - pg.PMD_SIZE
    mm.insert(Vma(start=start, end=start + length))
    return start


def get_unmapped_area(mm: Mm, length: int) -> int:
    """Where :func:`mmap` places ``length`` bytes (the cursor is not moved)."""
    cursor = mm.mmap_cursor
    while True:
        start = (cursor - length) & ~(pg.PMD_SIZE - 1)
        if start < USER_START:
            raise InvalidAddressError(
                f"no room for a mapping of {length} bytes below {cursor:#x} (ENOMEM)"
            )
        met = [v.start for v in mm.vmas if v.start <= start + length and v.end >= start]
        if not met:
            return start
        cursor = min(met) - pg.PMD_SIZE


def mmap_fixed(mm: Mm, start: int, end: int) -> None:
    """A private anonymous read/write mapping at ``[start, end)`` exactly
    (``MAP_FIXED_NOREPLACE``): refused if it meets an existing VMA (EEXIST); merged with
    neighbours of equal flags (``vma_merge_new_range``). The mmap cursor does not move."""
    if mm.overlapping(start, end):
        raise InvalidAddressError(
            f"range [{start:#x}, {end:#x}) overlaps an existing mapping (EEXIST)"
        )
    mm.insert(Vma(start=start, end=end))
    mm.merge_adjacent()


def munmap(k: Kernel, mm: Mm, start: int, end: int) -> None:
    """Unmap ``[start, end)``; pages that are not mapped are fine (KS §5)."""
    if any(v.start < end and v.end > start for v in mm.vmas):
        k.lru_add_drain()  # unmap_region
    k.split_vma_boundary(mm, start)
    k.split_vma_boundary(mm, end)
    tlb = Gather()
    zap_range(k, mm, start, end, tlb)
    mm.vmas = [v for v in mm.vmas if v.end <= start or v.start >= end]
    tlb.finish(k)
    free_unused_tables(k, mm, everything=False)
    tlb.report(k, mm, ZapCause.UNMAP, start, end)


def exit_mm(k: Kernel, proc: Process) -> None:
    """``exit_mmap`` then ``__mmdrop``: zap everything, free the tables, free the MM id."""
    mm = proc.mm
    assert mm is not None
    k.lru_add_drain()
    tlb = Gather()
    for vma in mm.vmas:
        zap_range(k, mm, vma.start, vma.end, tlb)
    mm.vmas = []
    tlb.finish(k)
    free_unused_tables(k, mm, everything=True)
    tlb.report(k, mm, ZapCause.EXIT, 0, WHOLE_MM_END)
    gup.gup_exit(k, mm)
    k.mm_ids_in_use.discard(mm.mm_id)
    proc.mm = None


def require_mapped(mm: Mm, start: int, end: int, what: str) -> None:
    """``madvise``'s ENOMEM: every page of ``[start, end)`` must lie inside a VMA."""
    if not mm.covered(start, end):
        raise InvalidAddressError(f"{what} [{start:#x}, {end:#x}) includes unmapped pages (ENOMEM)")


def _apply_flags(k: Kernel, mm: Mm, start: int, end: int, changes: dict[str, bool]) -> list[Vma]:
    """Set VMA flags over ``[start, end)``, splitting only the VMAs whose flags change
    (``mprotect_fixup``/``madvise_update_vma`` return early otherwise). Returns the VMAs
    that changed; the caller merges afterwards."""
    changed: list[Vma] = []
    for vma in list(mm.overlapping(start, end)):
        if all(getattr(vma, name) == value for name, value in changes.items()):
            continue
        lo, hi = max(start, vma.start), min(end, vma.end)  # before the split moves vma.end
        k.split_vma_boundary(mm, lo)
        k.split_vma_boundary(mm, hi)
    for vma in mm.overlapping(start, end):
        if all(getattr(vma, name) == value for name, value in changes.items()):
            continue
        for name, value in changes.items():
            setattr(vma, name, value)
        changed.append(vma)
    return changed


def mprotect(k: Kernel, mm: Mm, start: int, end: int, prot: str) -> None:
    """Change protection (mm/mprotect.c). Upgrading to read/write makes writable again only
    the entries of anon-exclusive pages (``can_change_pte_writable``), so pages shared at
    fork stay read-only and keep taking write faults.

    Events: the PMD splits at the range's ends, then a flush of ``[start, end)`` if any
    entry's value changed (x86 ``pte_needs_flush``: an upgrade that leaves a shared page's
    entry as it was needs none), then ``MPROTECT`` (always) with the present entries
    rewritten, changed or not."""
    require_mapped(mm, start, end, "mprotect")
    changes = {"read": prot != "none", "write": prot == "rw"}
    ptes = pmds = 0
    changed = False
    for vma in _apply_flags(k, mm, start, end, changes):
        ops = _change_protection(k, mm, vma)
        ptes, pmds = ptes + ops.ptes, pmds + ops.pmds
        changed = changed or ops.changed
    mm.merge_adjacent()
    if changed:
        k.tlb_flush(mm, start, end)
    k.emit(Event(EventKind.MPROTECT, asid=mm.asid, start=start, end=end, nr=ptes, pmds=pmds))


def _change_protection(k: Kernel, mm: Mm, vma: Vma) -> _ChangeProtOps:
    """``change_protection`` over one VMA with its new ``vm_page_prot``: a page walk;
    returns the walk, which counts the entries rewritten."""
    ops = _ChangeProtOps(k, vma.page_prot(), vma.write)
    walk_page_vma(k, mm, vma, ops)
    return ops


class _ChangeProtOps(WalkOps):
    """``change_pmd_range`` -> ``change_huge_pmd`` / ``change_pte_range``; counts the
    present entries rewritten (the kernel's ``pages``; a huge PMD counts once) and notes
    whether any of them changed value."""

    def __init__(self, k: Kernel, newprot: int, writable: bool) -> None:
        self.k, self.newprot, self.writable = k, newprot, writable
        self.ptes = 0
        self.pmds = 0
        self.changed = False

    def pmd_entry(self, table: int, idx: int, addr: int, end: int) -> WalkAction:
        """``change_huge_pmd``; VMA boundaries inside a THP split it earlier."""
        pmd = self.k.entry(table, idx)
        if not pg.is_present(pmd):
            raise pg.not_modelled(pmd, addr, "mprotect")  # change_huge_pmd's migration case
        if not pmd & pg.PS:
            return WalkAction.SUBTREE
        new = pg.modify(pmd, self.newprot | pg.PS)
        if self.writable and _exclusive_anon(self.k, pg.entry_pfn(pmd)):
            new = pg.mkwrite(new)
        self.k.set_entry(table, idx, new)
        self.pmds += 1
        self.changed = self.changed or new != pmd
        return WalkAction.CONTINUE

    def pte_entry(self, ptes: list[int], i: int, end: int, addr: int) -> int:
        """``change_pte_range`` for one present PTE."""
        if not pg.is_present(ptes[i]):
            if not swap.is_swap_pte(ptes[i]):
                raise pg.not_modelled(ptes[i], addr, "mprotect")  # a migration entry
            return 1  # change_pte_range leaves a swap entry as it is
        new = pg.modify(ptes[i], self.newprot)
        if self.writable and _exclusive_anon(self.k, pg.entry_pfn(new)):
            new = pg.mkwrite(new)
        self.changed = self.changed or new != ptes[i]
        ptes[i] = new
        self.ptes += 1
        return 1


def _exclusive_anon(k: Kernel, pfn: int) -> bool:
    """``can_change_pte_writable`` for a private mapping: an anon page that is AE."""
    folio = k.page_folio.get(pfn)
    return folio is not None and folio.anon_exclusive[pfn - folio.pfn]


_ADVICE_FLAGS: dict[str, dict[str, bool]] = {
    "hugepage": {"hugepage": True, "nohugepage": False},
    "nohugepage": {"hugepage": False, "nohugepage": True},
    "dontfork": {"dontcopy": True},
    "dofork": {"dontcopy": False},
    "wipeonfork": {"wipeonfork": True},
    "keeponfork": {"wipeonfork": False},
}


def madvise(k: Kernel, mm: Mm, start: int, end: int, advice: str) -> None:
    """MADV_DONTNEED zaps (keeping the VMAs and tables); the others change VMA flags."""
    require_mapped(mm, start, end, "madvise")
    if advice == "dontneed":
        k.lru_add_drain()  # zap_page_range_single
        tlb = Gather()
        zap_range(k, mm, start, end, tlb)
        tlb.finish(k)
        tlb.report(k, mm, ZapCause.DONTNEED, start, end)
        return
    _apply_flags(k, mm, start, end, _ADVICE_FLAGS[advice])
    mm.merge_adjacent()
