"""Entry kinds (none, present, swap, migration): a not-present entry that is not none is
refused by every path, never treated as empty (planted through the reference's internals,
since no operation creates one yet)."""

from __future__ import annotations

import pytest

from cowcore.errors import InvariantError
from cowcore.reference import paging as pg
from cowcore.reference.backend import ReferenceBackend

MB = 1 << 20
MASK64 = (1 << 64) - 1


def swp_entry(swap_type: int, offset: int) -> int:
    """x86-64 ``__swp_entry``: the type in the top five bits, the offset inverted from bit 9
    (arch/x86/include/asm/pgtable_64.h)."""
    return (swap_type << 59) | (((~offset << 14) & MASK64) >> 5)


def test_entry_kind_classifies_like_the_kernel() -> None:
    assert pg.entry_kind(0) is pg.EntryKind.NONE
    assert pg.entry_kind(pg.make_entry(9, pg.PAGE_COPY)) is pg.EntryKind.PRESENT
    prot_none = pg.modify(pg.make_entry(9, pg.PAGE_COPY), pg.PAGE_NONE)
    assert not prot_none & pg.P
    assert pg.entry_kind(prot_none) is pg.EntryKind.PRESENT  # pte_present: PROT_NONE too
    assert pg.entry_kind(swp_entry(0, 0)) is pg.EntryKind.SWAP
    assert pg.entry_kind(swp_entry(3, 12345)) is pg.EntryKind.SWAP
    for t in pg.SWP_MIGRATION_TYPES:
        assert pg.entry_kind(swp_entry(t, 7)) is pg.EntryKind.MIGRATION
    assert not swp_entry(1, 1) & (pg.P | pg.PROTNONE)


def _machine() -> tuple[ReferenceBackend, int, int]:
    ref = ReferenceBackend("6.15", 4096, 4)
    pid = ref.init_pid()
    addr = ref.mmap(pid, 4 * MB)
    ref.write(pid, addr, 2 * 4096, 1)
    return ref, pid, addr


def _mm(ref: ReferenceBackend, pid: int):  # type: ignore[no-untyped-def]
    mm = ref._k.procs[pid].mm
    assert mm is not None
    return mm


@pytest.mark.parametrize("entry", [swp_entry(2, 99), swp_entry(26, 5)])
def test_a_swap_pte_is_refused_not_overwritten(entry: int) -> None:
    ref, pid, addr = _machine()
    k = ref._k
    slot = k.pte_slot(_mm(ref, pid), addr + 4096)
    assert slot is not None
    k.set_entry(*slot, entry)  # as if the page had been swapped out
    free = ref.free_frames()
    for access in (
        lambda: ref.read(pid, addr + 4096, 4096),
        lambda: ref.write(pid, addr + 4096, 4096, 5),
    ):
        with pytest.raises(InvariantError, match="entry-kind") as err:
            access()
        assert err.value.invariant == "entry-kind"
        assert k.entry(*slot) == entry
    assert ref.free_frames() == free  # no table or folio was allocated for it
    # The range operations meet it too (each stops there; the state is broken anyway).
    for op in (lambda: ref.fork(pid), lambda: ref.mprotect(pid, addr, 2 * 4096, "r")):
        with pytest.raises(InvariantError, match="entry-kind"):
            op()
        assert k.entry(*slot) == entry
    with pytest.raises(InvariantError, match="entry-kind"):
        ref.check()
    with pytest.raises(InvariantError, match="entry-kind"):
        ref.madvise(pid, addr, 4 * MB, "dontneed")
    assert k.entry(*slot) == entry


def test_a_pmd_migration_entry_is_not_taken_for_a_hole() -> None:
    ref, pid, addr = _machine()
    k = ref._k
    mm = _mm(ref, pid)
    pmd_table = k.table_for(mm, addr, k.pmd_level(), None)
    assert pmd_table is not None
    idx = pg.index_at(addr + 2 * MB, k.levels, k.pmd_level())
    assert k.entry(pmd_table, idx) == 0
    entry = swp_entry(25, 0x1234)
    k.set_entry(pmd_table, idx, entry)
    free = ref.free_frames()
    for access in (
        lambda: ref.read(pid, addr + 2 * MB, 4096),
        lambda: ref.write(pid, addr + 2 * MB, 4096, 1),
    ):
        with pytest.raises(InvariantError, match="entry-kind"):
            access()
    assert k.entry(pmd_table, idx) == entry  # no PTE table was installed over it
    assert ref.free_frames() == free
    assert ref.read(pid, addr, 4096) == [1]  # the rest of the range still works
    with pytest.raises(InvariantError, match="entry-kind"):
        ref.munmap(pid, addr, 4 * MB)
