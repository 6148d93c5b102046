"""Address spaces: ``struct mm_struct`` and ``struct vm_area_struct`` (only what COW needs)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cowcore.reference.paging import PAGE_COPY, PAGE_NONE, PAGE_SHIFT

MMAP_TOP = 0x7F0000000000
"""Where top-down mmap placement starts (DESIGN.md, Addresses)."""

# VMA flags that the model keeps (include/linux/mm.h).
VM_READ = "read"
VM_WRITE = "write"
VM_HUGEPAGE = "hugepage"
VM_NOHUGEPAGE = "nohugepage"
VM_DONTCOPY = "dontcopy"
VM_WIPEONFORK = "wipeonfork"


@dataclass(slots=True)
class Vma:
    """A ``vm_area_struct`` of a private anonymous mapping: ``[start, end)``."""

    start: int
    end: int
    read: bool = True
    write: bool = True
    hugepage: bool = False
    nohugepage: bool = False
    dontcopy: bool = False
    wipeonfork: bool = False
    anon_vma: bool = False
    """Whether the VMA has an ``anon_vma`` yet (set by the first allocating fault)."""
    pgoff: int = -1
    """``vm_pgoff`` in pages: the linear page index of ``start`` (``start >> 12`` for a new
    mapping, which ``-1`` stands for). A split keeps it linear; ``mremap`` keeps the moved
    range's (``copy_vma``), so that an anonymous folio's pages keep their index wherever
    they move. Neighbours merge only with contiguous indices (``can_vma_merge_after``)."""

    def __post_init__(self) -> None:
        if self.pgoff < 0:
            self.pgoff = self.start >> PAGE_SHIFT

    def page_index(self, addr: int) -> int:
        """``linear_page_index``: the page index of ``addr`` in this VMA."""
        return self.pgoff + ((addr - self.start) >> PAGE_SHIFT)

    def flags(self) -> tuple[str, ...]:
        names = (VM_READ, VM_WRITE, VM_HUGEPAGE, VM_NOHUGEPAGE, VM_DONTCOPY, VM_WIPEONFORK)
        values = (
            self.read,
            self.write,
            self.hugepage,
            self.nohugepage,
            self.dontcopy,
            self.wipeonfork,
        )
        return tuple(n for n, v in zip(names, values, strict=True) if v)

    def same_flags(self, other: Vma) -> bool:
        return self.flags() == other.flags()

    def page_prot(self) -> int:
        """``vm_page_prot``: PAGE_COPY for readable private mappings, PAGE_NONE otherwise."""
        return PAGE_COPY if self.read else PAGE_NONE

    def copy(self, **changes: object) -> Vma:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(slots=True)
class GupHold:
    """One ``ref`` or ``pin`` a process holds (issue 16): the range it was taken on and the
    frame behind each page of it then (zero pages included: they hold no count). The frames
    are what is released: the pages may have been unmapped or replaced since."""

    start: int
    length: int
    pin: bool
    """``FOLL_PIN`` (else ``FOLL_GET``)."""
    pages: list[int]


@dataclass(slots=True)
class Mm:
    """An address space: id, page-table root, VMAs sorted by address, the mmap cursor, and
    its count of mapped anonymous pages."""

    mm_id: int
    pgd: int
    asid: int
    """The address-space id (``Machine.asid``): 1 for init, the next number per fork,
    never reused."""
    vmas: list[Vma] = field(default_factory=list)
    mmap_cursor: int = MMAP_TOP
    rss_anon: int = 0
    """``MM_ANONPAGES`` (``get_mm_counter(mm, MM_ANONPAGES)``, the RssAnon of
    /proc/PID/status in pages): +1 per anonymous page a PTE maps, +512 per PMD-mapped THP;
    the zero pages are not counted. Updated where the kernel calls ``add_mm_counter`` /
    ``inc_mm_counter``: do_anonymous_page, wp_page_copy (from the zero page only: a copy
    of an anonymous page replaces one anonymous page by another), map_anon_folio_pmd,
    zap_present_ptes / zap_huge_pmd, copy_present_ptes / copy_huge_pmd (the child's); a PMD
    split leaves it as it is. ``check()`` recomputes it from the page tables."""
    holds: list[GupHold] = field(default_factory=list)
    """The GUP references and pins this process holds, in the order taken (a pipe holding
    vmsplice()d pages, an io_uring's registered buffers); not inherited by a fork, dropped at
    exit after the unmap."""
    has_pinned: bool = False
    """``MMF_HAS_PINNED``: set by the first ``FOLL_PIN`` of this mm, never cleared, not
    inherited (``MMF_INIT_MASK`` leaves it out)."""

    def find_vma(self, addr: int) -> Vma | None:
        """The VMA containing ``addr`` (``vma_lookup``)."""
        for vma in self.vmas:
            if vma.start <= addr < vma.end:
                return vma
            if vma.start > addr:
                break
        return None

    def overlapping(self, start: int, end: int) -> list[Vma]:
        return [v for v in self.vmas if v.start < end and v.end > start]

    def covered(self, start: int, end: int) -> bool:
        """Whether every page of ``[start, end)`` lies in some VMA."""
        addr = start
        for vma in self.vmas:
            if vma.end <= addr:
                continue
            if vma.start > addr:
                return False
            addr = vma.end
            if addr >= end:
                return True
        return addr >= end

    def insert(self, vma: Vma) -> None:
        self.vmas.append(vma)
        self.vmas.sort(key=lambda v: v.start)

    def merge_adjacent(self) -> None:
        """Merge neighbouring VMAs with equal flags and contiguous ``vm_pgoff`` (``vma_merge``,
        ``can_vma_merge_after``; anon_vmas are compatible: within one mm such neighbours come
        from the same mapping or one of them has none)."""
        merged: list[Vma] = []
        for vma in self.vmas:
            if (
                merged
                and merged[-1].end == vma.start
                and merged[-1].same_flags(vma)
                and merged[-1].page_index(vma.start) == vma.pgoff
            ):
                last = merged[-1]
                last.end = vma.end
                last.anon_vma = last.anon_vma or vma.anon_vma
            else:
                merged.append(vma)
        self.vmas = merged


@dataclass(slots=True)
class Process:
    """A simulated process: its pid and its mm (``None`` once it has exited)."""

    pid: int
    mm: Mm | None
