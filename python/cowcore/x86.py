"""The x86-64 page-table entry format (arch/x86/include/asm/pgtable_types.h; KS §8.2).

Entries are 64-bit integers. These constants are the hardware's and Linux's bit positions;
:func:`flag_names` decodes an entry for display (``Translation.steps[i].flags``).
"""

from __future__ import annotations

P = 1 << 0
RW = 1 << 1
US = 1 << 2
PWT = 1 << 3
PCD = 1 << 4
A = 1 << 5
D = 1 << 6
PS = 1 << 7
PROTNONE = 1 << 8  # _PAGE_GLOBAL reused when P=0
SPECIAL = 1 << 9
UFFD_WP = 1 << 10
SOFT_DIRTY = 1 << 11
SAVED_DIRTY = 1 << 58
NX = 1 << 63

PFN_MASK = ((1 << 52) - 1) & ~((1 << 12) - 1)

FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (P, "P"),
    (RW, "RW"),
    (US, "US"),
    (PWT, "PWT"),
    (PCD, "PCD"),
    (A, "A"),
    (D, "D"),
    (PS, "PS"),
    (PROTNONE, "PROTNONE"),
    (SPECIAL, "SPECIAL"),
    (UFFD_WP, "UFFD_WP"),
    (SOFT_DIRTY, "SOFT_DIRTY"),
    (SAVED_DIRTY, "SAVED_DIRTY"),
    (NX, "NX"),
)


def flag_names(entry: int) -> tuple[str, ...]:
    """The names of the bits set in ``entry``, lowest bit first (the PFN is not a flag)."""
    return tuple(name for bit, name in FLAG_NAMES if entry & bit)
