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
