//! The page walker: translation without faulting, and the hardware access check.
//!
//! Models the x86-64 MMU walk (KS §8.1): from the root, one entry per level, stopping at a
//! none entry or a leaf (a 2 MiB PMD with PSE, or a PTE). A permitted access sets A (and D
//! on a write) in the leaf like the hardware does; a forbidden one reports the page-fault
//! error code of `arch/x86/include/asm/trap_pf.h` (KS §8.4).

use super::entry::PageTableEntry;
use super::table::{Level, Paging};
use crate::addr::{Pfn, VirtAddr, PAGE_SIZE, PMD_SIZE};
use crate::physmem::{PhysMem, TableFrame};

/// `X86_PF_PROT`: the fault hit a present entry.
pub const PF_PROT: u32 = 1 << 0;
/// `X86_PF_WRITE`.
pub const PF_WRITE: u32 = 1 << 1;
/// `X86_PF_USER`.
pub const PF_USER: u32 = 1 << 2;

/// The x86 page-fault error code of a user access: 0x4 first read, 0x6 first write, 0x7 a
/// write to a present read-only entry (a COW fault).
#[must_use]
pub const fn error_code(write: bool, present: bool) -> u32 {
    let mut c = PF_USER;
    if write {
        c |= PF_WRITE;
    }
    if present {
        c |= PF_PROT;
    }
    c
}

/// One step of a walk: level, table frame, index, raw entry (`WalkStep` of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStep {
    /// The level of the table.
    pub level: Level,
    /// The frame of the table.
    pub table: Pfn,
    /// The index in the table.
    pub index: usize,
    /// The entry read.
    pub entry: PageTableEntry,
}

/// The result of a walk (`TranslationRow` of the protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// The steps taken, top first.
    pub steps: Vec<WalkStep>,
    /// The 4 KiB frame mapping the address, if any (present or `PROT_NONE` leaf).
    pub pfn: Option<Pfn>,
    /// 4096 or 2 MiB when mapped.
    pub page_size: Option<u64>,
}

/// Where a walk ended: the leaf entry's location (table frame and index) and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leaf {
    pub level: Level,
    pub table: TableFrame,
    pub index: usize,
    pub entry: PageTableEntry,
}

/// Walks without allocating; returns the leaf entry for `addr`: a present or `PROT_NONE`
/// leaf, or a software (swap) entry where the walk stopped; `None` at a none entry.
pub(crate) fn find_leaf(
    mem: &PhysMem,
    paging: Paging,
    pgd: TableFrame,
    addr: VirtAddr,
) -> Option<Leaf> {
    let mut table = pgd;
    for &(level, shift) in paging.table_levels() {
        let index = Paging::index(addr, shift);
        let entry = mem.entry(table, index);
        if entry.is_none() {
            return None;
        }
        if !entry.is_present() || level == Level::Pte || (level == Level::Pmd && entry.is_huge()) {
            return Some(Leaf {
                level,
                table,
                index,
                entry,
            });
        }
        table = TableFrame::of(entry);
    }
    None
}

/// Where the walk to a PMD entry stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PmdLoc {
    /// The PMD table frame and the index of the entry.
    Found(TableFrame, usize),
    /// An upper entry is none; nothing is mapped below `addr` up to this address.
    Hole(u64),
}

/// Walks to the PMD entry of `addr` without allocating (`pmd_off`, stopping at a
/// `p4d_none`/`pud_none` entry).
pub(crate) fn pmd_loc(mem: &PhysMem, paging: Paging, pgd: TableFrame, addr: u64) -> PmdLoc {
    let mut table = pgd;
    for &(_, shift) in &paging.table_levels()[..paging.pmd_depth()] {
        let e = mem.entry(table, Paging::index(VirtAddr::new(addr), shift));
        if e.is_none() {
            let span = 1u64 << shift;
            return PmdLoc::Hole((addr & !(span - 1)).saturating_add(span));
        }
        table = TableFrame::of(e);
    }
    PmdLoc::Found(table, Paging::index(VirtAddr::new(addr), 21))
}

/// Walks `addr` and records every step (`translate()`); takes no fault.
pub(crate) fn translate(
    mem: &PhysMem,
    paging: Paging,
    pgd: TableFrame,
    addr: VirtAddr,
) -> Translation {
    let mut steps = Vec::with_capacity(5);
    let mut table = pgd;
    for &(level, shift) in paging.table_levels() {
        let index = Paging::index(addr, shift);
        let entry = mem.entry(table, index);
        steps.push(WalkStep {
            level,
            table: table.pfn(),
            index,
            entry,
        });
        if !entry.is_present() {
            break;
        }
        if level == Level::Pte {
            return Translation {
                steps,
                pfn: Some(entry.pfn()),
                page_size: Some(PAGE_SIZE),
            };
        }
        if level == Level::Pmd && entry.is_huge() {
            let off = (addr.as_u64() & (PMD_SIZE - 1)) / PAGE_SIZE;
            return Translation {
                steps,
                pfn: entry.pfn().checked_add(off),
                page_size: Some(PMD_SIZE),
            };
        }
        table = TableFrame::of(entry);
    }
    Translation {
        steps,
        pfn: None,
        page_size: None,
    }
}

/// Whether the MMU lets the access through the leaf `e`: present with P (not
/// `PROT_NONE`), and writable for a write. Shared by [`hw_access`] and the fast paths of
/// `read`/`write`, so that a new kind of entry changes one place.
#[inline]
pub(crate) const fn hw_permits(e: PageTableEntry, write: bool) -> bool {
    e.is_present() && !e.is_protnone() && (!write || e.is_writable())
}

/// The leaf after the MMU's permitted access: A set, and D for a write.
#[inline]
pub(crate) const fn hw_accessed(e: PageTableEntry, write: bool) -> PageTableEntry {
    let n = e.mkyoung();
    if write {
        n.hw_dirty()
    } else {
        n
    }
}

/// The hardware access: if the leaf permits it (present with P, and RW for a write), set A
/// (and D for a write) and return the 4 KiB frame; otherwise return the error code.
#[inline]
pub(crate) fn hw_access(
    mem: &mut PhysMem,
    paging: Paging,
    pgd: TableFrame,
    addr: VirtAddr,
    write: bool,
) -> Result<u32, u32> {
    hw_access_leaf(mem, paging, pgd, addr, write).map(|(pfn, _)| pfn)
}

/// [`hw_access`], also saying at which level the leaf was (a PTE or a huge PMD).
#[inline]
pub(crate) fn hw_access_leaf(
    mem: &mut PhysMem,
    paging: Paging,
    pgd: TableFrame,
    addr: VirtAddr,
    write: bool,
) -> Result<(u32, Level), u32> {
    let Some(leaf) = find_leaf(mem, paging, pgd, addr) else {
        return Err(error_code(write, false));
    };
    let e = leaf.entry;
    if !hw_permits(e, write) {
        // A swap entry has P clear; `PROT_NONE` and read-only entries are present.
        return Err(error_code(write, e.is_present()));
    }
    let n = hw_accessed(e, write);
    if n != e {
        mem.set_entry(leaf.table, leaf.index, n);
    }
    let base = e.frame();
    Ok(if leaf.level == Level::Pmd {
        (
            base + ((addr.as_u64() & (PMD_SIZE - 1)) / PAGE_SIZE) as u32,
            Level::Pmd,
        )
    } else {
        (base, leaf.level)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paging::entry::PAGE_COPY;

    #[test]
    fn codes() {
        assert_eq!(error_code(false, false), 0x4);
        assert_eq!(error_code(true, false), 0x6);
        assert_eq!(error_code(true, true), 0x7);
    }

    #[test]
    fn walk_sets_accessed_and_dirty() {
        let mut mem = PhysMem::new(512);
        let p = Paging::new(4).unwrap();
        let t: Vec<TableFrame> = (0..4).map(|_| mem.alloc_table().unwrap()).collect();
        let a = VirtAddr::new(0x7f00_0020_3000);
        for i in 0..3 {
            let (_, s) = p.table_levels()[i];
            let e = t[i + 1].entry();
            mem.set_entry(t[i], Paging::index(a, s), e);
        }
        let leaf = PageTableEntry::new(Pfn::new(100), PAGE_COPY).mkold();
        mem.set_entry(t[3], 3, leaf);
        assert_eq!(hw_access(&mut mem, p, t[0], a, true), Err(0x7));
        assert_eq!(hw_access(&mut mem, p, t[0], a, false), Ok(100));
        assert!(mem.entry(t[3], 3).is_young());
        let tr = translate(&mem, p, t[0], a);
        assert_eq!(tr.steps.len(), 4);
        assert_eq!(tr.pfn, Some(Pfn::new(100)));
        assert_eq!(
            hw_access(&mut mem, p, t[0], VirtAddr::new(0x1000), false),
            Err(0x4)
        );
    }
}
