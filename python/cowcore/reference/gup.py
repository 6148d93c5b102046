"""Getting user pages (mm/gup.c): the read a debugger or ``/proc/<pid>/mem`` makes, with
``FOLL_TOUCH``; and the references and pins a process holds (issue 16): ``ref``
(``FOLL_GET``, vmsplice) and ``pin`` (``FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE``, io_uring).

``follow_page_pte`` with ``FOLL_TOUCH`` calls ``folio_mark_accessed`` on the folio of a
present PTE (not on the zero page, which has no folio); ``follow_huge_pmd`` only calls
``touch_pmd``, which on x86 changes a PMD for a write alone, so a read of a PMD-mapped THP
marks nothing. Nothing is faulted in: callers read only pages that are present.
"""

from __future__ import annotations

from cowcore.errors import InvalidArgumentError, OutOfMemoryError
from cowcore.outcome import Access, MapLevel
from cowcore.reference import fault
from cowcore.reference import paging as pg
from cowcore.reference.fault import PF_PROT, PF_USER, PF_WRITE
from cowcore.reference.kernel import Kernel
from cowcore.reference.mm import GupHold, Mm
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


def _faultin(k: Kernel, mm: Mm, addr: int, write: bool) -> int:
    """``faultin_page`` until ``follow_page_mask`` finds the page (``__get_user_pages``): a
    read fault where nothing is mapped, and for ``write`` (``FOLL_WRITE``) a write fault
    where the entry is not writable (COW copy or reuse as the profile decides; a PMD that
    falls back is split and faulted again by PTE). Returns the frame behind ``addr``. No
    access is made: A and D are the fault's, nothing is stored."""
    vma = mm.find_vma(addr)
    assert vma is not None
    for _ in range(4):
        pmd_slot = k.pmd_slot(mm, addr)
        if pmd_slot is not None and pg.is_huge(pmd := k.entry(*pmd_slot)):
            if not write or pmd & pg.RW:
                return pg.entry_pfn(pmd) + ((addr >> pg.PAGE_SHIFT) & 0x1FF)
            fault.handle_mm_fault(k, mm, vma, addr, PF_USER | PF_WRITE | PF_PROT, fault.Trace())
            continue
        pte_slot = k.pte_slot(mm, addr)
        pte = k.entry(*pte_slot) if pte_slot is not None else 0
        if pte & pg.P and (not write or pte & pg.RW):
            return pg.entry_pfn(pte)
        code = PF_USER | (PF_WRITE if write else 0) | (PF_PROT if pte & pg.P else 0)
        fault.handle_mm_fault(k, mm, vma, addr, code, fault.Trace())
    raise AssertionError(f"GUP at {addr:#x} did not resolve")


def gup_get(k: Kernel, mm: Mm, start: int, end: int, pin: bool) -> None:
    """``ref`` (``get_user_pages_fast`` without ``FOLL_WRITE``, as vmsplice takes pages) or
    ``pin`` (``FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE``, as io_uring registers a buffer) of
    every page of ``[start, end)``; the caller has checked the access. Page by page as
    ``__get_user_pages`` goes: fault in, then ``try_grab_folio``, so a later page's fault
    sees the earlier references. A ``ref`` never unshares (``gup_must_unshare`` needs
    ``FOLL_PIN``); a longterm pin never pins the zero page (it write-faults first). A pin
    sets ``MMF_HAS_PINNED`` first. On an error nothing is held; the faults done stay."""
    if pin:
        mm.has_pinned = True
    pages: list[int] = []
    try:
        for addr in range(start, end, pg.PAGE_SIZE):
            pfn = _faultin(k, mm, addr, pin)
            folio = k.page_folio.get(pfn)
            if folio is not None:
                folio.gup_grab(pin)
            pages.append(pfn)
    except OutOfMemoryError:
        _release(k, pages, pin)
        raise
    mm.holds.append(GupHold(start, end - start, pin, pages))


def gup_put(k: Kernel, pid: int, mm: Mm, start: int, end: int, pin: bool) -> None:
    """``unref``/``unpin``: drop the latest hold taken on exactly ``[start, end)``."""
    for i in range(len(mm.holds) - 1, -1, -1):
        h = mm.holds[i]
        if h.pin == pin and h.start == start and h.length == end - start:
            del mm.holds[i]
            _release(k, h.pages, pin)
            return
    what = "pin" if pin else "ref"
    raise InvalidArgumentError(f"process {pid} holds no {what} of [{start:#x}, {end:#x})")


def gup_exit(k: Kernel, mm: Mm) -> None:
    """Every hold dropped in the order taken (``exit_files`` after ``exit_mm``: a held
    folio is freed here, not by the zap)."""
    holds, mm.holds = mm.holds, []
    for h in holds:
        _release(k, h.pages, h.pin)


def _release(k: Kernel, pages: list[int], pin: bool) -> None:
    """``unpin_user_pages`` / ``put_page`` of each page in address order."""
    for pfn in pages:
        folio = k.page_folio.get(pfn)
        if folio is not None:
            k.put_folio(folio, folio.gup_refs(pin))


PVM_MAX_PAGES_PER_LOOP = 2 * 4096 // 8
"""Pages ``process_vm_rw_single_vec`` pins with one ``pin_user_pages_remote`` call
(``PVM_MAX_KMALLOC_PAGES / sizeof(struct page *)``, mm/process_vm_access.c)."""


def unshare(k: Kernel, mm: Mm, start: int, end: int) -> list[Access]:
    """A short R/O ``FOLL_PIN`` of ``[start, end)`` taken and dropped by another process, as
    ``process_vm_readv()`` does (no ``FOLL_LONGTERM``, no ``FOLL_WRITE``); the caller has
    checked the access. Page by page: a read fault where nothing is mapped; then, while
    ``gup_must_unshare`` holds (an anonymous page that is not anon-exclusive; for a huge PMD
    the head's flag), the unshare fault (:func:`fault.handle_unshare_fault`). The zero pages
    are not anonymous: a short pin leaves them. One record per page (``UNSHARE`` where the
    unshare fault ran).

    The pins are held while the batch goes on: ``process_vm_rw_single_vec`` pins up to
    :data:`PVM_MAX_PAGES_PER_LOOP` pages with one ``pin_user_pages_remote`` and unpins them
    after the copy, so a later page of the same large folio in the batch sees the earlier
    pages' pins as extra references and is copied, not reused (recorded on 7.2/7.3:
    ``unshare-child-exited-64K``). ``FOLL_PIN`` sets ``MMF_HAS_PINNED`` on the target mm."""
    mm.has_pinned = True
    out: list[Access] = []
    pinned: list[int] = []
    try:
        _unshare_pages(k, mm, start, end, out, pinned)
    finally:
        _release(k, pinned, True)
    return out


def _unshare_pages(
    k: Kernel, mm: Mm, start: int, end: int, out: list[Access], pinned: list[int]
) -> None:
    """The pages of :func:`unshare`, batch by batch; ``pinned`` holds the current batch's
    pins (the caller drops what an error leaves in it)."""
    for addr in range(start, end, pg.PAGE_SIZE):
        if len(out) % PVM_MAX_PAGES_PER_LOOP == 0:
            _release(k, pinned, True)  # unpin_user_pages_dirty_lock of the batch
            pinned.clear()
        vma = mm.find_vma(addr)
        assert vma is not None
        trace = fault.Trace()
        for _ in range(4):
            pmd_slot = k.pmd_slot(mm, addr)
            huge = pmd_slot is not None and pg.is_huge(k.entry(*pmd_slot))
            if huge:
                assert pmd_slot is not None
                head = pg.entry_pfn(k.entry(*pmd_slot))
                pfn = head + ((addr >> pg.PAGE_SHIFT) & 0x1FF)
            else:
                pte_slot = k.pte_slot(mm, addr)
                pte = k.entry(*pte_slot) if pte_slot is not None else 0
                if not pte & pg.P:
                    fault.handle_mm_fault(k, mm, vma, addr, PF_USER, trace)
                    continue
                head = pfn = pg.entry_pfn(pte)
            folio = k.page_folio.get(pfn)
            if folio is not None and not folio.anon_exclusive[(head if huge else pfn) - folio.pfn]:
                fault.handle_unshare_fault(k, mm, vma, addr, trace)
                continue
            if folio is not None:
                folio.gup_grab(True)  # try_grab_folio(FOLL_PIN), held until the batch ends
                pinned.append(pfn)
            level = MapLevel.PMD if huge else MapLevel.PTE
            out.append(
                trace.record(
                    pfn << pg.PAGE_SHIFT, level, folio.order if folio else (9 if huge else 0)
                )
            )
            break
        else:
            raise AssertionError(f"unshare at {addr:#x} did not resolve")
