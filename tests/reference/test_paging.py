"""Entry helpers and the read-only walk (arch/x86 pgtable.h semantics)."""

from __future__ import annotations

from cowcore.reference import paging as pg


def test_wrprotect_moves_dirty_to_saved_dirty_and_back() -> None:
    e = pg.make_entry(5, pg.P | pg.RW | pg.US | pg.A | pg.D)
    ro = pg.wrprotect(e)
    assert not ro & pg.RW and not ro & pg.D and ro & pg.SAVED_DIRTY
    assert pg.is_dirty(ro)
    rw = pg.mkwrite(ro)
    assert rw & pg.RW and rw & pg.D and not rw & pg.SAVED_DIRTY
    assert pg.entry_pfn(rw) == 5


def test_mkdirty_on_readonly_uses_saved_dirty() -> None:
    e = pg.mkdirty(pg.PAGE_COPY)
    assert e & pg.SAVED_DIRTY and e & pg.SOFT_DIRTY and not e & pg.D


def test_modify_to_none_and_back_keeps_pfn_and_dirty() -> None:
    e = pg.make_entry(77, pg.mkwrite(pg.mkdirty(pg.PAGE_COPY)))
    none = pg.modify(e, pg.PAGE_NONE)
    assert not none & pg.P and none & pg.PROTNONE and pg.is_present(none)
    assert pg.entry_pfn(none) == 77 and pg.is_dirty(none) and not none & pg.RW
    back = pg.modify(none, pg.PAGE_COPY)
    assert back & pg.P and not back & pg.RW and pg.is_dirty(back)


def test_index_at_four_and_five_levels() -> None:
    addr = (3 << 39) | (5 << 30) | (7 << 21) | (9 << 12)
    assert [pg.index_at(addr, 4, lvl) for lvl in range(4)] == [3, 5, 7, 9]
    addr5 = (2 << 48) | addr
    assert [pg.index_at(addr5, 5, lvl) for lvl in range(5)] == [2, 3, 5, 7, 9]


def test_walk_stops_at_none_and_at_huge_pmd() -> None:
    tables = {0: [0] * 512, 1: [0] * 512, 2: [0] * 512}
    tables[0][0] = pg.make_entry(1, pg.TABLE_ENTRY)
    tables[1][0] = pg.make_entry(2, pg.TABLE_ENTRY)
    tables[2][1] = pg.make_entry(512, pg.PAGE_COPY | pg.PS)
    res = pg.walk(tables, 0, 4, 0x200000 + 0x3000)
    assert res.level == 2 and pg.is_huge(res.entry)
    assert [s[0] for s in res.steps] == ["pgd", "pud", "pmd"]
    res = pg.walk(tables, 0, 4, 0x400000)
    assert res.level == 2 and res.entry == 0


def test_swap_entry_encoding_and_its_software_bits() -> None:
    """``__swp_entry(0, 5)`` and its exclusive marker as raw values, the same ones the Rust
    core's ``swap_entry_bits`` test checks (paging/entry.rs), so the two encodings agree."""
    e = pg.swp_entry_to_pte(0, 5)
    assert e == 0x07FF_FFFF_FFFF_F400
    x = pg.swp_mkexclusive(e)
    assert x == 0x07FF_FFFF_FFFF_F408
    assert pg.entry_kind(x) is pg.EntryKind.SWAP
    assert pg.swp_exclusive(x) and not pg.swp_exclusive(e)
    assert (pg.swp_type(x), pg.swp_offset(x)) == (0, 5)
    assert pg.swp_clear_exclusive(x) == e
    d = pg.swp_mksoft_dirty(e)
    assert d & pg.SWP_SOFT_DIRTY and pg.swp_offset(d) == 5 and not pg.swp_exclusive(d)
    assert (pg.SWP_EXCLUSIVE, pg.SWP_SOFT_DIRTY, pg.SWP_UFFD_WP) == (1 << 3, 1 << 1, 1 << 2)
    for swap_type, offset in ((3, 12345), (23, (1 << 50) - 1), (0, 0)):
        entry = pg.swp_entry_to_pte(swap_type, offset)
        assert (pg.swp_type(entry), pg.swp_offset(entry)) == (swap_type, offset)
        assert not entry & (pg.P | pg.PROTNONE | pg.SWP_EXCLUSIVE)
