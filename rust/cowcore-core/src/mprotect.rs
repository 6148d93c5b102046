//! `mprotect` and `madvise` (mm/mprotect.c, mm/madvise.c).
//!
//! A flag change splits VMAs at the range's edges (`__split_vma`), splitting a huge PMD
//! that a cut lands inside (`vma_adjust_trans_huge`), sets the new flags and re-merges
//! equal neighbours. `mprotect` then rewrites the entries of the changed VMAs with
//! `pte_modify` and upgrades exclusive anonymous pages to writable
//! (`can_change_pte_writable`, `MM_CP_TRY_CHANGE_WRITABLE`).

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_SIZE};
use crate::error::CowError;
use crate::events::Event;
use crate::fault::split_huge_pmd;
use crate::kernel::Kernel;
use crate::mm::{Advice, Prot, VmFlags, Vma};
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::{PageTableEntry, PteFlags};
use crate::paging::table::Paging;
use crate::paging::walk::{self, PmdLoc};
use crate::physmem::{PhysMem, TableFrame};

impl Kernel {
    /// Changes the protection of a fully mapped range.
    pub(crate) fn mprotect(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        prot: Prot,
    ) -> Result<(), CowError> {
        let (start, end) = self.checked_mapped_range("mprotect", pid, addr, length)?;
        let changed = self.change_vma_flags(pid, start, end, |f| {
            (f - (VmFlags::READ | VmFlags::WRITE)) | prot.vm_flags()
        })?;
        let (pgd, asid) = (self.mm(pid)?.pgd, self.mm(pid)?.asid);
        let (mut ptes, mut pmds, mut flush) = (0, 0, false);
        for v in changed {
            let cp = change_protection(&mut self.mem, self.paging, pgd, &v);
            (ptes, pmds, flush) = (ptes + cp.ptes, pmds + cp.pmds, flush || cp.changed);
        }
        let (start, end) = (start.as_u64(), end.as_u64());
        if flush {
            // The flush at the end of change_protection, needed only when an entry's value
            // changed (x86 pte_needs_flush: re-granting rw to a page still shared after
            // fork leaves its entry as it was).
            self.events.emit(Event::TlbFlush { asid, start, end });
        }
        self.events.emit(Event::Mprotect {
            asid,
            start,
            end,
            ptes,
            pmds,
        });
        Ok(())
    }
    /// Applies an advice to a fully mapped range.
    pub(crate) fn madvise(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        advice: Advice,
    ) -> Result<(), CowError> {
        let (start, end) = self.checked_mapped_range("madvise", pid, addr, length)?;
        if advice == Advice::DontNeed {
            return self.madvise_dontneed(pid, start, end);
        }
        self.change_vma_flags(pid, start, end, |f| advice.apply(f).unwrap_or(f))?;
        Ok(())
    }

    /// The checked range of `op` (`"mprotect"` or `"madvise"`, for the message), which must
    /// be fully mapped.
    pub(crate) fn checked_mapped_range(
        &self,
        op: &str,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<(VirtAddr, VirtAddr), CowError> {
        let mm = self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        if !mm.fully_mapped(start, end) {
            return Err(CowError::InvalidAddress(format!(
                "{op} [{start}, {end}) includes unmapped pages (ENOMEM)"
            )));
        }
        Ok((start, end))
    }

    /// Splits, re-flags and re-merges the VMAs of `[start, end)` whose flags change under
    /// `f`; returns the changed pieces (with their new flags).
    fn change_vma_flags(
        &mut self,
        pid: u32,
        start: VirtAddr,
        end: VirtAddr,
        f: impl Fn(VmFlags) -> VmFlags,
    ) -> Result<Vec<Vma>, CowError> {
        let mm = self.mm(pid)?;
        let ids = (mm.mm_id, mm.asid);
        let pieces: Vec<Vma> = mm
            .vmas
            .iter()
            .filter(|v| v.start < end && v.end > start && f(v.flags) != v.flags)
            .copied()
            .collect();
        // vma_adjust_trans_huge: a cut inside a huge PMD splits it first.
        for v in &pieces {
            for cut in [start, end] {
                if cut > v.start && cut < v.end && !cut.is_aligned(PMD_SIZE) {
                    self.split_pmd_at(pid, ids, v, cut)?;
                }
            }
        }
        let mm = self.mm_mut(pid)?;
        let mut changed = Vec::with_capacity(pieces.len());
        for v in &pieces {
            let s = v.start.max(start);
            let e = v.end.min(end);
            mm.split_at(s);
            mm.split_at(e);
            if let Some(i) = mm.find_vma(s) {
                mm.vmas[i].flags = f(v.flags);
                changed.push(mm.vmas[i]);
            }
        }
        mm.merge();
        Ok(changed)
    }

    /// Splits the huge PMD covering `addr`, if any.
    pub(crate) fn split_pmd_at(
        &mut self,
        pid: u32,
        ids: (u32, u64),
        vma: &Vma,
        addr: VirtAddr,
    ) -> Result<(), CowError> {
        let pgd = self.mm(pid)?.pgd;
        if let PmdLoc::Found(t, i) = walk::pmd_loc(&self.mem, self.paging, pgd, addr.as_u64()) {
            if self.mem.entry(t, i).is_huge() {
                split_huge_pmd(
                    &mut self.mem,
                    &mut self.events,
                    ids,
                    vma,
                    (t, i),
                    addr.align_down(PMD_SIZE),
                )?;
            }
        }
        Ok(())
    }
}

/// `change_protection` over one VMA with its new flags (KS §8.3): a walk of the VMA.
/// Returns the walk's counts: the present PTEs and huge PMDs rewritten, and whether any
/// changed value.
fn change_protection<'a>(
    mem: &'a mut PhysMem,
    paging: Paging,
    pgd: TableFrame,
    vma: &Vma,
) -> ChangeProt<'a> {
    let mut cp = ChangeProt {
        mem,
        newprot: vma.page_prot(),
        try_write: vma.flags.contains(VmFlags::WRITE),
        ptes: 0,
        pmds: 0,
        changed: false,
    };
    let r = walk_page_range(&mut cp, paging, pgd, vma.start.as_u64(), vma.end.as_u64());
    debug_assert!(r.is_ok(), "change_protection's callbacks do not fail");
    cp
}

/// The walk of `change_protection`: the new protection and whether to try making
/// entries writable (`MM_CP_TRY_CHANGE_WRITABLE`).
struct ChangeProt<'a> {
    mem: &'a mut PhysMem,
    newprot: PteFlags,
    try_write: bool,
    ptes: u64,
    pmds: u64,
    changed: bool,
}

impl PageWalk for ChangeProt<'_> {
    #[inline]
    fn mem(&self) -> &PhysMem {
        self.mem
    }

    /// `change_huge_pmd`: the whole PMD (a cut inside it was split before).
    fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
        let n = modified(
            self.mem,
            at.entry,
            self.newprot | PteFlags::HUGE,
            self.try_write,
        );
        self.mem.set_entry(at.table, at.index, n);
        self.pmds += 1;
        self.changed |= n != at.entry;
        Ok(())
    }

    /// `change_pte_range`: every present (or `PROT_NONE`) PTE of the range.
    fn pte_table(&mut self, at: EntryAt, pte_table: TableFrame) -> Result<(), CowError> {
        let first = Paging::index(VirtAddr::new(at.addr), 12);
        let n = ((at.next - at.addr) / PAGE_SIZE) as usize;
        for j in first..first + n {
            let pte = self.mem.entry(pte_table, j);
            if pte.is_present() {
                let m = modified(self.mem, pte, self.newprot, self.try_write);
                self.mem.set_entry(pte_table, j, m);
                self.ptes += 1;
                self.changed |= m != pte;
            }
        }
        Ok(())
    }
}

/// `pte_modify` then, with `MM_CP_TRY_CHANGE_WRITABLE`, `pte_mkwrite` if
/// `can_change_pte_writable`: not `PROT_NONE`, a normal anonymous page that is
/// `PageAnonExclusive` (the head page for a PMD).
fn modified(
    mem: &PhysMem,
    old: PageTableEntry,
    newprot: PteFlags,
    try_write: bool,
) -> PageTableEntry {
    let n = old.modify(newprot);
    if try_write && !n.is_writable() && !n.is_protnone() && !n.is_special() {
        let p = n.frame();
        if mem.is_folio(p) && mem.anon_exclusive(p) {
            return n.mkwrite();
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use crate::{CowError, Machine, Profile, Prot, SegvReason, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    #[test]
    fn upgrade_only_exclusive_pages() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 1).unwrap();
        let c = m.fork(1).unwrap();
        m.write(1, a, K4, 2).unwrap(); // page 0: copy, exclusive
        m.mprotect(1, a, 4 * K4, Prot::Read).unwrap();
        assert_eq!(m.vmas(1).unwrap()[0].prot, Prot::Read);
        m.mprotect(1, a, 4 * K4, Prot::ReadWrite).unwrap();
        let w = |m: &Machine, off| m.translate(1, VirtAddr::new(a.as_u64() + off)).unwrap();
        assert!(w(&m, 0).steps.last().unwrap().entry.is_writable());
        assert!(!w(&m, K4).steps.last().unwrap().entry.is_writable());
        assert_eq!(m.vmas(1).unwrap().len(), 1);
        m.exit(c).unwrap();
        m.check().unwrap();
    }

    #[test]
    fn prot_none_is_present_but_faults() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 3).unwrap();
        m.mprotect(1, VirtAddr::new(a.as_u64() + K4), K4, Prot::None)
            .unwrap();
        assert_eq!(m.vmas(1).unwrap().len(), 3);
        let o = m.observe(1, a, 2 * K4).unwrap();
        assert!(o[1].present && o[1].content == 3);
        let e = m.read(1, a, 2 * K4).unwrap_err();
        assert_eq!(
            e,
            CowError::Segfault {
                addr: VirtAddr::new(a.as_u64() + K4),
                reason: SegvReason::Protection
            }
        );
        assert!(matches!(
            m.mprotect(1, a, 8 * K4, Prot::Read),
            Err(CowError::InvalidAddress(_))
        ));
        m.mprotect(1, a, 4 * K4, Prot::ReadWrite).unwrap();
        assert_eq!(m.read(1, a, 4 * K4).unwrap(), vec![3; 4]);
        m.check().unwrap();
    }

    #[test]
    fn cut_inside_a_thp_splits_it() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        m.write(1, a, K4, 1).unwrap();
        m.mprotect(1, a, 2 << 20, Prot::Read).unwrap(); // whole PMD: no split
        assert_eq!(m.stats().thp_split_pmd, 0);
        m.mprotect(1, VirtAddr::new(a.as_u64() + K4), K4, Prot::ReadWrite)
            .unwrap();
        assert_eq!(m.stats().thp_split_pmd, 1);
        // The head page is exclusive: its PTE in the RW piece... page 1 is AE too (split
        // copies AE to every page), so it became writable.
        let t = m.translate(1, VirtAddr::new(a.as_u64() + K4)).unwrap();
        assert!(t.steps.last().unwrap().entry.is_writable());
        m.check().unwrap();
    }
}
