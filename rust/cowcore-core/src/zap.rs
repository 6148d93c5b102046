//! Unmapping: `munmap`, `exit` and `MADV_DONTNEED` (KS §5, §6.1), and page-table freeing.
//!
//! Models `unmap_vmas`/`zap_pmd_range`/`zap_pte_range`/`zap_huge_pmd`: rmaps are removed as
//! the entries are cleared, folio references are gathered and dropped at the end of the
//! call (the `mmu_gather` flush, `tlb_finish_mmu`), and tables are freed after that
//! (`free_pgtables`): on `munmap`, every table whose span no longer overlaps a VMA; on exit,
//! all of them, bottom-up, the PGD last. The zap runs over [`Zap`], the context of one
//! `unmap_vmas` (the mm's id, root, VMAs and `MM_ANONPAGES`, physical memory, the gather).

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_NR, PMD_SIZE};
use crate::error::CowError;
use crate::events::{Event, Events, ZapCause};
use crate::fault::split_huge_pmd;
use crate::folio::FolioRef;
use crate::kernel::{proc_mut, Kernel};
use crate::mm::{vma_lookup, Mm, Vma};
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::{EntryKind, PageTableEntry, SwapEntry};
use crate::paging::table::{Level, Paging};
use crate::physmem::{PhysMem, TableFrame};
use crate::swap::entry_slot;

/// Gathered references after which a zap drops them before it goes on (the kernel's
/// `tlb_flush_mmu` when a batch is full), so that an `exit` of 8M pages does not hold 64 MiB
/// of gather. Unobservable: a folio whose count reaches zero here has no mapping left to
/// zap (refcount >= mapcount), and the buddy allocator's state depends only on which
/// frames are free, not on the order they were freed in (merging is eager).
const GATHER_BATCH: usize = 1 << 16;

/// One `unmap_vmas` over an mm (`struct zap_details` with the `mmu_gather`).
#[derive(Debug)]
pub(crate) struct Zap<'a> {
    mm_id: u32,
    asid: u64,
    /// Present PTEs and huge PMDs cleared so far (for the `Zap` event).
    ptes: u64,
    pmds: u64,
    pgd: TableFrame,
    vmas: &'a [Vma],
    /// `MM_ANONPAGES` of the mm.
    rss_anon: &'a mut u64,
    mem: &'a mut PhysMem,
    /// The `mmu_gather`: `(folio head, references)` to drop at the end.
    gather: &'a mut Vec<(FolioRef, u32)>,
    paging: Paging,
    events: &'a mut Events,
}

impl Kernel {
    /// The zap context of process `pid`.
    fn zap(&mut self, pid: u32) -> Result<Zap<'_>, CowError> {
        let Self {
            procs,
            mem,
            gather,
            paging,
            events,
            ..
        } = self;
        let Mm {
            mm_id,
            asid,
            pgd,
            vmas,
            rss_anon,
            ..
        } = proc_mut(procs, pid)?;
        Ok(Zap {
            mm_id: *mm_id,
            asid: *asid,
            ptes: 0,
            pmds: 0,
            pgd: *pgd,
            vmas,
            rss_anon,
            mem,
            gather,
            paging: *paging,
            events,
        })
    }

    /// `munmap`: zaps `[addr, addr+length)`, removes it from the VMA list and frees the
    /// tables no VMA needs any more (`free_pgtables`).
    pub(crate) fn munmap(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        let mm = self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        let ids = (mm.mm_id, mm.asid);
        // __split_vma before any zap: a cut inside a huge PMD splits it first
        // (vma_adjust_trans_huge), the start's cut, then the end's.
        let cuts: Vec<(Vma, VirtAddr)> = [start, end]
            .into_iter()
            .filter(|cut| !cut.is_aligned(PMD_SIZE))
            .filter_map(|cut| {
                mm.vmas
                    .iter()
                    .find(|v| v.start < cut && cut < v.end)
                    .map(|v| (*v, cut))
            })
            .collect();
        let overlaps = mm.vmas.iter().any(|v| v.start < end && v.end > start);
        for (v, cut) in &cuts {
            self.split_pmd_at(pid, ids, v, *cut)?;
        }
        if overlaps {
            self.mem.lru_add_drain(); // unmap_region
        }
        let mut z = self.zap(pid)?;
        z.zap_vmas_in(start, end)?;
        z.finish(ZapCause::Unmap, start.as_u64(), end.as_u64());
        let Self {
            procs, mem, paging, ..
        } = self;
        let mm = proc_mut(procs, pid)?;
        mm.remove_range(start, end);
        free_unused_tables(mem, *paging, mm, mm.pgd, 0, start.as_u64(), end.as_u64());
        Ok(())
    }

    /// `MADV_DONTNEED` over a fully mapped range: zap, never free tables.
    pub(crate) fn madvise_dontneed(
        &mut self,
        pid: u32,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), CowError> {
        self.mem.lru_add_drain(); // zap_page_range_single
        let mut z = self.zap(pid)?;
        z.zap_vmas_in(start, end)?;
        z.finish(ZapCause::DontNeed, start.as_u64(), end.as_u64());
        Ok(())
    }

    /// `exit_mmap`: zaps every VMA, drops the gathered references, frees every table
    /// (bottom-up, lowest address first, the PGD last) and then the mm id.
    pub(crate) fn exit(&mut self, pid: u32) -> Result<(), CowError> {
        self.mm(pid)?;
        self.mem.lru_add_drain(); // exit_mmap
        let mut z = self.zap(pid)?;
        for v in z.vmas {
            z.zap_range(v.start.as_u64(), v.end.as_u64())?;
        }
        z.finish(ZapCause::Exit, 0, u64::MAX);
        let (pgd, mm_id) = (z.pgd, z.mm_id);
        free_subtree(&mut self.mem, self.paging, 0, pgd);
        self.mem.free_table(pgd);
        self.gup_exit(pid)?;
        self.used_mm_ids.remove(&mm_id);
        self.procs[(pid - 1) as usize] = None;
        Ok(())
    }
}

/// `zap_pmd_range`: a huge PMD wholly inside the range is zapped (`zap_huge_pmd`), one
/// that the range cuts is split first (`__split_huge_pmd`); a PTE table is zapped
/// entry by entry (`zap_pte_range`). `MM_ANONPAGES` drops by the pages unmapped.
impl PageWalk for Zap<'_> {
    #[inline]
    fn mem(&self) -> &PhysMem {
        self.mem
    }

    fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
        let freed = if at.addr % PMD_SIZE == 0 && at.next - at.addr == PMD_SIZE {
            self.zap_huge_pmd(at.table, at.index)?
        } else {
            let vma = vma_lookup(self.vmas, VirtAddr::new(at.addr))
                .map(|i| &self.vmas[i])
                .ok_or_else(|| CowError::invariant("zap", "no VMA at split"))?;
            let haddr = VirtAddr::new(at.addr).align_down(PMD_SIZE);
            split_huge_pmd(
                self.mem,
                self.events,
                (self.mm_id, self.asid),
                vma,
                (at.table, at.index),
                haddr,
            )?;
            let t = TableFrame::of(self.mem.entry(at.table, at.index));
            self.zap_pte_range(t, at.addr, at.next)
        };
        *self.rss_anon = self.rss_anon.saturating_sub(freed);
        self.tlb_flush_if_full();
        Ok(())
    }

    fn pte_table(&mut self, at: EntryAt, pte_table: TableFrame) -> Result<(), CowError> {
        let freed = self.zap_pte_range(pte_table, at.addr, at.next);
        *self.rss_anon = self.rss_anon.saturating_sub(freed);
        self.tlb_flush_if_full();
        Ok(())
    }
}

impl Zap<'_> {
    /// Zaps the parts of `[start, end)` that lie inside VMAs.
    fn zap_vmas_in(&mut self, start: VirtAddr, end: VirtAddr) -> Result<(), CowError> {
        let vmas = self.vmas;
        for v in vmas.iter().filter(|v| v.start < end && v.end > start) {
            self.zap_range(v.start.max(start).as_u64(), v.end.min(end).as_u64())?;
        }
        Ok(())
    }

    /// Drops the gathered references (`tlb_finish_mmu`), in zap order; each folio freed
    /// is a `FolioFree` event.
    fn tlb_finish_mmu(&mut self) {
        for (h, n) in self.gather.drain(..) {
            self.mem.free_swap_cache(h, self.events); // free_pages_and_swap_cache
            self.mem.folio_put_refs(h, n, self.events);
        }
    }

    /// The end of one zapping call over `[start, end)`: the gathered references go, then
    /// the TLB flush of the range if any entry was cleared, then the `Zap` event
    /// (docs/access-and-events.md).
    fn finish(&mut self, cause: ZapCause, start: u64, end: u64) {
        self.tlb_finish_mmu();
        let (asid, ptes, pmds) = (self.asid, self.ptes, self.pmds);
        if ptes + pmds > 0 {
            self.events.emit(Event::TlbFlush { asid, start, end });
        }
        self.events.emit(Event::Zap {
            asid,
            cause,
            start,
            end,
            ptes,
            pmds,
        });
    }

    /// `unmap_page_range` over `[s, e)`, which lies inside one VMA or several: a walk
    /// whose callbacks are `zap_pmd_range`'s cases.
    fn zap_range(&mut self, s: u64, e: u64) -> Result<(), CowError> {
        walk_page_range(self, self.paging, self.pgd, s, e)
    }

    /// Drops the gathered references once the batch is full (`tlb_flush_mmu`).
    fn tlb_flush_if_full(&mut self) {
        if self.gather.len() >= GATHER_BATCH {
            self.tlb_finish_mmu();
        }
    }

    /// `zap_huge_pmd`: clear the PMD, remove the rmap, free the deposited table; returns the
    /// anon pages unmapped.
    fn zap_huge_pmd(&mut self, pmd_table: TableFrame, pmd_i: usize) -> Result<u64, CowError> {
        let pmde = self.mem.entry(pmd_table, pmd_i);
        self.mem.set_entry(pmd_table, pmd_i, PageTableEntry::NONE);
        self.pmds += 1;
        let t = self
            .mem
            .withdraw(pmd_table, pmd_i)
            .ok_or_else(|| CowError::invariant("deposit", "zapped huge PMD without a deposit"))?;
        self.mem.free_table(t);
        if pmde.is_special() {
            return Ok(0);
        }
        let folio = self.mem.page_folio(pmde.frame());
        if self.mem.remove_rmap_pmd(folio, self.mm_id) {
            self.mem.deferred_split_folio(folio, self.events);
        }
        self.gather.push((folio, 1));
        Ok(PMD_NR)
    }

    /// `zap_nonpresent_ptes` of a swap entry: the entry goes and its slot's reference with it
    /// (`free_swap_and_cache_nr`). Out of line: the loop over present entries stays as it was.
    #[cold]
    #[inline(never)]
    fn zap_swap_entry(&mut self, t: TableFrame, i: usize, s: SwapEntry) {
        self.mem.set_entry(t, i, PageTableEntry::NONE);
        Kernel::free_swap_and_cache(self.mem, self.events, entry_slot(s));
    }

    /// `zap_pte_range` over `[a, next)` of one PTE table; batches the PTEs of one folio
    /// (`folio_pte_batch` ignoring A/D/soft-dirty/RW). Returns the anon pages unmapped.
    fn zap_pte_range(&mut self, t: TableFrame, a: u64, next: u64) -> u64 {
        let mut i = Paging::index(VirtAddr::new(a), 12);
        let end_i = i + ((next - a) / PAGE_SIZE) as usize;
        let mut pages = 0;
        while i < end_i {
            let e = self.mem.entry(t, i);
            if e.is_none() {
                i += 1;
                continue;
            }
            if !e.is_present() {
                if let EntryKind::Swap(s) = e.kind() {
                    self.zap_swap_entry(t, i, s);
                    i += 1;
                    continue;
                }
            }
            if e.is_special() {
                self.mem.set_entry(t, i, PageTableEntry::NONE);
                self.ptes += 1;
                i += 1;
                continue;
            }
            let p = e.frame();
            let folio = self.mem.page_folio(p);
            let nr = if self.mem.folio(folio).folio_test_large() {
                self.mem.folio_pte_batch(t, i, end_i, e, folio, true)
            } else {
                1
            };
            for j in 0..nr {
                self.mem.set_entry(t, i + j, PageTableEntry::NONE);
            }
            if self.mem.remove_rmap_ptes(folio, p, nr as u32, self.mm_id) {
                self.mem.deferred_split_folio(folio, self.events);
            }
            self.gather.push((folio, nr as u32));
            pages += nr as u64;
            self.ptes += nr as u64;
            i += nr;
        }
        pages
    }
}

/// `free_pgtables` after `munmap`: frees every table (not the PGD) below `table` whose
/// span overlaps `[s, e)` and no longer overlaps any VMA of `mm`, children before parents.
fn free_unused_tables(
    mem: &mut PhysMem,
    paging: Paging,
    mm: &Mm,
    table: TableFrame,
    depth: usize,
    s: u64,
    e: u64,
) {
    let (level, shift) = paging.table_levels()[depth];
    if level == Level::Pte {
        return;
    }
    let span = 1u64 << shift;
    let mut a = s & !(span - 1);
    while a < e {
        let idx = Paging::index(VirtAddr::new(a), shift);
        let ent = mem.entry(table, idx);
        if !ent.is_none() && !ent.is_huge() {
            let child = TableFrame::of(ent);
            free_unused_tables(mem, paging, mm, child, depth + 1, s.max(a), e.min(a + span));
            if !mm.overlaps(a, a + span) {
                free_subtree(mem, paging, depth + 1, child);
                mem.free_table(child);
                mem.set_entry(table, idx, PageTableEntry::NONE);
            }
        }
        a += span;
    }
}

/// Frees every table below the table `table` at `depth` (not `table` itself),
/// lowest address first, children before parents (`free_pgd_range`).
fn free_subtree(mem: &mut PhysMem, paging: Paging, depth: usize, table: TableFrame) {
    if paging.table_levels()[depth].0 == Level::Pte {
        return;
    }
    for idx in 0..512 {
        let ent = mem.entry(table, idx);
        if ent.is_none() || ent.is_huge() {
            continue;
        }
        let child = TableFrame::of(ent);
        free_subtree(mem, paging, depth + 1, child);
        mem.free_table(child);
        mem.set_entry(table, idx, PageTableEntry::NONE);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Advice, Machine, Profile, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    #[test]
    fn munmap_frees_tables_and_dontneed_keeps_them() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let base = m.free_frames();
        let a = m.mmap(1, 2 << 20).unwrap();
        m.write(1, a, 4 * K4, 1).unwrap();
        assert_eq!(m.free_frames(), base - 3 - 4);
        m.madvise(1, a, 4 * K4, Advice::DontNeed).unwrap();
        assert_eq!(m.free_frames(), base - 3);
        m.munmap(1, a, 2 << 20).unwrap();
        assert_eq!(m.free_frames(), base);
        m.check().unwrap();
    }

    #[test]
    fn partial_unmap_splits_a_thp() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        m.write(1, a, K4, 1).unwrap();
        m.munmap(1, VirtAddr::new(a.as_u64() + K4), K4).unwrap();
        assert_eq!(m.stats().thp_split_pmd, 1);
        let o = m.observe(1, a, 3 * K4).unwrap();
        assert!(o[0].present && !o[1].present && o[2].present);
        assert_eq!(o[0].folio_pages, 512);
        let f = m.folio(crate::Pfn::new(o[0].pfn)).unwrap();
        assert_eq!(
            (f.refcount, f.large_mapcount, f.entire_mapcount),
            (511, 511, 0)
        );
        m.check().unwrap();
        m.exit(1).unwrap();
        assert_eq!(m.free_frames(), m.total_frames() - 513);
    }

    #[test]
    fn exit_frees_the_mm_id() {
        let mut m = Machine::new(16 << 20, 5, Profile::V6_12).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        m.write(1, a, K4, 1).unwrap();
        let c = m.fork(1).unwrap();
        let g = m.fork(c).unwrap();
        assert_eq!(m.mm_id(g).unwrap(), 3);
        m.exit(c).unwrap();
        let d = m.fork(1).unwrap();
        assert_eq!((d, m.mm_id(d).unwrap()), (4, 2));
        m.check().unwrap();
    }
}
