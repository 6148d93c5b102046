"""x86-64 page-table entries and the page walk (arch/x86/include/asm/pgtable_types.h).

Entries are plain 64-bit integers with the hardware layout; tables are 512-entry frames in
:class:`~cowcore.reference.physmem.PhysMem`. Four levels by default (PGD, PUD, PMD, PTE; the
P4D is folded), five with LA57.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cowcore.errors import InvariantError
from cowcore.x86 import (
    FLAG_NAMES,
    NX,
    PCD,
    PFN_MASK,
    PROTNONE,
    PS,
    PWT,
    RW,
    SAVED_DIRTY,
    SOFT_DIRTY,
    SPECIAL,
    UFFD_WP,
    US,
    A,
    D,
    P,
    flag_names,
)

# Re-exported so the reference modules can say ``pg.RW`` next to ``pg.mkwrite``.
__all__ = [
    "FLAG_NAMES",
    "NX",
    "PCD",
    "PFN_MASK",
    "PROTNONE",
    "PS",
    "PWT",
    "RW",
    "SAVED_DIRTY",
    "SOFT_DIRTY",
    "SPECIAL",
    "UFFD_WP",
    "US",
    "A",
    "D",
    "P",
    "flag_names",
]

TABLE_ENTRY = P | RW | US | A | D
"""A non-leaf entry (the kernel's ``_PAGE_TABLE``)."""

PAGE_COPY = P | US | A | NX
"""``vm_page_prot`` of a private readable mapping (writable or not: no RW, KS §8.3)."""

PAGE_NONE = PROTNONE | A
"""``vm_page_prot`` of a PROT_NONE mapping."""

CHG_MASK = PFN_MASK | PCD | PWT | SPECIAL | A | D | SAVED_DIRTY | SOFT_DIRTY | UFFD_WP
"""``_PAGE_CHG_MASK``: what ``pte_modify`` keeps from the old entry."""

PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
HPAGE_PMD_NR = 512

LEVEL_NAMES_4 = ("pgd", "pud", "pmd", "pte")
LEVEL_NAMES_5 = ("pgd", "p4d", "pud", "pmd", "pte")


def entry_pfn(entry: int) -> int:
    return (entry & PFN_MASK) >> PAGE_SHIFT


def make_entry(pfn: int, flags: int) -> int:
    return (pfn << PAGE_SHIFT) | flags


def is_present(entry: int) -> bool:
    """``pte_present``: the hardware P bit, or a PROT_NONE entry (P=0, PROTNONE=1)."""
    return bool(entry & (P | PROTNONE))


class EntryKind(Enum):
    """What a page-table entry is, as the fault and zap paths ask before anything else."""

    NONE = "none"
    """``pte_none``: nothing mapped, nothing remembered."""
    PRESENT = "present"
    """``pte_present``: maps a frame (or a table), PROT_NONE entries included."""
    SWAP = "swap"
    """``is_swap_pte``: not present and not none, a swap entry (``do_swap_page``). The model
    creates none yet; every handler refuses one rather than overwrite it."""
    MIGRATION = "migration"
    """A swap-format entry of a migration type (``is_migration_entry``); refused alike."""


SWP_TYPE_BITS = 5
"""x86-64 keeps the swap type in the top five bits of a not-present entry
(``__swp_type`` in arch/x86/include/asm/pgtable_64.h)."""

SWP_MIGRATION_TYPES = range(25, 28)
"""``SWP_MIGRATION_READ``, ``_READ_EXCLUSIVE``, ``_WRITE`` (include/linux/swap.h): the three
types after ``MAX_SWAPFILES`` (24 with device-private, hwpoison and PTE-marker types
configured, as in the Debian kernels) and ``SWP_HWPOISON``."""


SWP_OFFSET_SHIFT = 9 + SWP_TYPE_BITS
"""``SWP_OFFSET_SHIFT``: the offset is kept inverted from bit ``SWP_OFFSET_FIRST_BIT`` (9), in
the bits the type does not use (``__swp_entry``, arch/x86/include/asm/pgtable_64.h)."""

_MASK64 = (1 << 64) - 1

SWP_EXCLUSIVE = PWT
"""``_PAGE_SWP_EXCLUSIVE`` (bit 3): the exclusive marker of a swap entry, the page's
``PG_anon_exclusive`` when it was unmapped for swap-out; bits 1 to 4 are outside the type and
offset fields, so the software bits of a swap entry borrow them."""

SWP_SOFT_DIRTY = RW
"""``_PAGE_SWP_SOFT_DIRTY`` (bit 1): soft-dirty in a swap entry."""

SWP_UFFD_WP = US
"""``_PAGE_SWP_UFFD_WP`` (bit 2): userfaultfd write-protect in a swap entry."""


def swp_entry_to_pte(swap_type: int, offset: int) -> int:
    """``swp_entry_to_pte(__swp_entry(type, offset))``: the type in the top five bits, the
    offset inverted from bit 9."""
    inverted = ((~offset << SWP_OFFSET_SHIFT) & _MASK64) >> SWP_TYPE_BITS
    return inverted | (swap_type << (64 - SWP_TYPE_BITS))


def swp_type(entry: int) -> int:
    """``__swp_type`` of a swap entry."""
    return entry >> (64 - SWP_TYPE_BITS)


def swp_offset(entry: int) -> int:
    """``__swp_offset`` of a swap entry."""
    return ((~entry << SWP_TYPE_BITS) & _MASK64) >> SWP_OFFSET_SHIFT


def swp_exclusive(entry: int) -> bool:
    """``pte_swp_exclusive``: ``do_swap_page`` maps the page writable at once when set, and
    ``copy_nonpresent_pte`` clears it in the parent at fork."""
    return bool(entry & SWP_EXCLUSIVE)


def swp_mkexclusive(entry: int) -> int:
    """``pte_swp_mkexclusive``."""
    return entry | SWP_EXCLUSIVE


def swp_clear_exclusive(entry: int) -> int:
    """``pte_swp_clear_exclusive``."""
    return entry & ~SWP_EXCLUSIVE


def swp_mksoft_dirty(entry: int) -> int:
    """``pte_swp_mksoft_dirty``."""
    return entry | SWP_SOFT_DIRTY


def entry_kind(entry: int) -> EntryKind:
    """Classify an entry (``pte_none``, ``pte_present``, ``is_swap_pte``,
    ``is_migration_entry``)."""
    if not entry:
        return EntryKind.NONE
    if is_present(entry):
        return EntryKind.PRESENT
    if entry >> (64 - SWP_TYPE_BITS) in SWP_MIGRATION_TYPES:
        return EntryKind.MIGRATION
    return EntryKind.SWAP


def not_modelled(entry: int, addr: int, where: str) -> InvariantError:
    """The error for a not-present, non-none entry met by ``where``: the model has no swap
    and no migration, so such an entry means broken state; it is never treated as none."""
    kind = entry_kind(entry).value
    return InvariantError(
        "entry-kind", f"{where}: {kind} entry {entry:#x} at {addr:#x} (not modelled)"
    )


def is_huge(entry: int) -> bool:
    """A PMD leaf (``pmd_trans_huge``)."""
    return is_present(entry) and bool(entry & PS)


def mkwrite(entry: int) -> int:
    """``pte_mkwrite``: set RW and move SavedDirty back to Dirty."""
    entry |= RW
    if entry & SAVED_DIRTY:
        entry = (entry & ~SAVED_DIRTY) | D
    return entry


def wrprotect(entry: int) -> int:
    """``pte_wrprotect``: clear RW and move Dirty to SavedDirty (x86-64 since 6.6, KS §8.3)."""
    entry &= ~RW
    if entry & D:
        entry = (entry & ~D) | SAVED_DIRTY
    return entry


def mkdirty(entry: int) -> int:
    """``pte_mkdirty``: Dirty and soft-dirty; Dirty becomes SavedDirty on a read-only entry."""
    if entry & RW:
        return entry | D | SOFT_DIRTY
    return (entry & ~D) | SAVED_DIRTY | SOFT_DIRTY


def mkold(entry: int) -> int:
    return entry & ~A


def modify(entry: int, newprot: int) -> int:
    """``pte_modify``: keep the PFN and software/status bits, take the rest from ``newprot``.

    Like the kernel it never leaves Write=0 with Dirty=1: a read-only result holds its dirty
    state in SavedDirty.
    """
    val = (entry & CHG_MASK) | (newprot & ~CHG_MASK)
    if val & RW:
        if val & SAVED_DIRTY:
            val = (val & ~SAVED_DIRTY) | D
    elif val & D:
        val = (val & ~D) | SAVED_DIRTY
    return val


def is_dirty(entry: int) -> bool:
    return bool(entry & (D | SAVED_DIRTY))


@dataclass(slots=True)
class WalkResult:
    """Where the walk for one address ended.

    ``table`` and ``index`` locate the last entry read (a PTE, a huge PMD, or the first
    none entry met); ``level`` is its index in the level names (``levels - 1`` for a PTE).
    ``steps`` lists ``(level name, table pfn, index, entry)`` from the top.
    """

    level: int
    table: int
    index: int
    entry: int
    steps: list[tuple[str, int, int, int]]


def index_at(addr: int, levels: int, level: int) -> int:
    """Index of ``addr`` in a table of ``level`` (0 = the root)."""
    shift = PAGE_SHIFT + 9 * (levels - 1 - level)
    return (addr >> shift) & 0x1FF


def walk(tables: dict[int, list[int]], root: int, levels: int, addr: int) -> WalkResult:
    """Read-only walk: follow non-leaf entries from the root until a leaf or a none entry.

    Sets no bits and allocates nothing (``translate``/``observe``; the accessing walk lives in
    :mod:`cowcore.reference.fault`).
    """
    names = LEVEL_NAMES_5 if levels == 5 else LEVEL_NAMES_4
    table = root
    steps: list[tuple[str, int, int, int]] = []
    for level in range(levels):
        idx = index_at(addr, levels, level)
        entry = tables[table][idx]
        steps.append((names[level], table, idx, entry))
        last = level == levels - 1
        if last or not is_present(entry) or (level == levels - 2 and entry & PS):
            return WalkResult(level, table, idx, entry, steps)
        table = entry_pfn(entry)
    raise AssertionError("unreachable")
