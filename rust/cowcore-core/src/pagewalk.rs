//! One range walker over the page tables, in the spirit of the kernel's `mm/pagewalk.c`.
//!
//! [`walk_page_range`] visits `[start, end)` of one mm top-down, lowest address first, and
//! calls the client's [`PageWalk`] callbacks (the kernel's `struct mm_walk_ops`): one per
//! upper-level entry that points to a table (`pgd_entry`/`p4d_entry`/`pud_entry`), one per
//! huge PMD leaf (`pmd_entry` on a `pmd_trans_huge` entry), one per PTE table with the part
//! of the range it covers (`pmd_entry` on a table: the clients batch the PTEs of one folio,
//! so they take the whole table range rather than one `pte_entry` call per PTE), and one per
//! hole (`pte_hole`: a none entry at any level). The walker is generic over the client, so
//! each client's walk is monomorphised: no dynamic dispatch in the loops.
//!
//! The walker reads the tables through [`PageWalk::mem`] and never writes them; the
//! callbacks may change the entry they are given (clear it, split a huge PMD into a table,
//! ...), and the walker does not look at that entry again.

use crate::error::CowError;
use crate::paging::entry::PageTableEntry;
use crate::paging::table::{Level, Paging};
use crate::physmem::{PhysMem, TableFrame};

/// Where one entry is: its table, its index, the level of the table, the depth of that
/// level in `Paging::table_levels`, and the part `[addr, next)` of the walked range that
/// the entry covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryAt {
    pub level: Level,
    pub depth: usize,
    pub table: TableFrame,
    pub index: usize,
    pub entry: PageTableEntry,
    /// The bytes one entry of this level maps (`PMD_SIZE` at the PMD level).
    pub span: u64,
    pub addr: u64,
    pub next: u64,
}

/// The callbacks of a walk (`struct mm_walk_ops`). Only `mem` is required; every other
/// callback does nothing by default.
pub(crate) trait PageWalk {
    /// The physical memory the tables live in.
    fn mem(&self) -> &PhysMem;

    /// An upper-level entry (above the PMD) that points to a table, before the walk
    /// descends into it (`pgd_entry`, `p4d_entry`, `pud_entry`).
    #[inline]
    fn upper_entry(&mut self, _at: EntryAt) -> Result<(), CowError> {
        Ok(())
    }

    /// A huge PMD leaf (`pmd_entry` with `pmd_trans_huge`), present or `PROT_NONE`;
    /// `[at.addr, at.next)` may be part of its 2 MiB.
    #[inline]
    fn huge_pmd(&mut self, _at: EntryAt) -> Result<(), CowError> {
        Ok(())
    }

    /// A PMD entry pointing to the PTE table `pte_table` (`pmd_entry`, then the PTEs of
    /// `[at.addr, at.next)`).
    #[inline]
    fn pte_table(&mut self, _at: EntryAt, _pte_table: TableFrame) -> Result<(), CowError> {
        Ok(())
    }

    /// A none entry at `at.level`: nothing is mapped in `[at.addr, at.next)`
    /// (`pte_hole`; not called for none PTEs, which `pte_table` sees).
    #[inline]
    fn hole(&mut self, _at: EntryAt) -> Result<(), CowError> {
        Ok(())
    }
}

/// `walk_page_range`: walks `[start, end)` below the root table `pgd`.
#[inline]
pub(crate) fn walk_page_range<W: PageWalk>(
    w: &mut W,
    paging: Paging,
    pgd: TableFrame,
    start: u64,
    end: u64,
) -> Result<(), CowError> {
    walk_level(w, paging, 0, pgd, start, end)
}

/// The entries of `table` (at `depth`) that cover `[s, e)`, in address order.
fn walk_level<W: PageWalk>(
    w: &mut W,
    paging: Paging,
    depth: usize,
    table: TableFrame,
    s: u64,
    e: u64,
) -> Result<(), CowError> {
    let (level, shift) = paging.table_levels()[depth];
    debug_assert!(level != Level::Pte, "the walk stops at the PMD level");
    let span = 1u64 << shift;
    let mut a = s;
    while a < e {
        let next = ((a & !(span - 1)) + span).min(e);
        let index = ((a >> shift) & 511) as usize;
        let entry = w.mem().entry(table, index);
        let at = EntryAt {
            level,
            depth,
            table,
            index,
            entry,
            span,
            addr: a,
            next,
        };
        if entry.is_none() {
            w.hole(at)?;
        } else if level == Level::Pmd {
            if entry.is_huge() {
                w.huge_pmd(at)?;
            } else {
                w.pte_table(at, TableFrame::of(entry))?;
            }
        } else {
            w.upper_entry(at)?;
            walk_level(w, paging, depth + 1, TableFrame::of(entry), a, next)?;
        }
        a = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Machine, Profile, ThpSizeMode, VirtAddr};

    /// Records what a walk reports.
    struct Record<'a> {
        mem: &'a PhysMem,
        seen: Vec<(&'static str, Level, u64, u64)>,
    }

    impl PageWalk for Record<'_> {
        fn mem(&self) -> &PhysMem {
            self.mem
        }
        fn upper_entry(&mut self, at: EntryAt) -> Result<(), CowError> {
            self.seen.push(("upper", at.level, at.addr, at.next));
            Ok(())
        }
        fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
            self.seen.push(("huge", at.level, at.addr, at.next));
            Ok(())
        }
        fn pte_table(&mut self, at: EntryAt, _t: TableFrame) -> Result<(), CowError> {
            self.seen.push(("ptes", at.level, at.addr, at.next));
            Ok(())
        }
        fn hole(&mut self, at: EntryAt) -> Result<(), CowError> {
            self.seen.push(("hole", at.level, at.addr, at.next));
            Ok(())
        }
    }

    #[test]
    fn visits_holes_tables_and_huge_pmds_in_address_order() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 6 << 20).unwrap().as_u64(); // 2 MiB-aligned
        m.write(1, VirtAddr::new(a + 4096), 4096, 1).unwrap(); // a PTE table
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        m.write(1, VirtAddr::new(a + (4 << 20)), 4096, 1).unwrap(); // a huge PMD
        let pgd = m.mm(1).unwrap().pgd;
        let mut r = Record {
            mem: &m.k.mem,
            seen: Vec::new(),
        };
        let (s, e) = (a + 8192, a + (6 << 20) - 4096);
        walk_page_range(&mut r, m.k.paging, pgd, s, e).unwrap();
        let pmd = |k, s, e| (k, Level::Pmd, s, e);
        assert_eq!(
            r.seen,
            [
                ("upper", Level::Pgd, s, e),
                ("upper", Level::Pud, s, e),
                pmd("ptes", s, a + (2 << 20)),
                pmd("hole", a + (2 << 20), a + (4 << 20)),
                pmd("huge", a + (4 << 20), e),
            ]
        );
        // Outside every mapping the walk sees one hole at the top.
        r.seen.clear();
        walk_page_range(&mut r, m.k.paging, pgd, 0x1000, 0x2000).unwrap();
        assert_eq!(r.seen, [("hole", Level::Pgd, 0x1000, 0x2000)]);
    }
}
