//! Unmapping: `munmap`, `exit` and `MADV_DONTNEED` (KS §5, §6.1), and page-table freeing.
//!
//! Models `unmap_vmas`/`zap_pmd_range`/`zap_pte_range`/`zap_huge_pmd`: rmaps are removed as
//! the entries are cleared, folio references are gathered and dropped at the end of the
//! call (the `mmu_gather` flush, `tlb_finish_mmu`), and tables are freed after that
//! (`free_pgtables`): on `munmap`, every table whose span no longer overlaps a VMA; on exit,
//! all of them, bottom-up, the PGD last.

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_NR, PMD_SIZE};
use crate::error::CowError;
use crate::machine::{Machine, PmdLoc};
use crate::paging::entry::PageTableEntry;
use crate::paging::table::{Level, Paging};

/// Gathered references after which a zap drops them before it goes on (the kernel's
/// `tlb_flush_mmu` when a batch is full), so that an `exit` of 8M pages does not hold 64 MiB
/// of gather. Unobservable: a folio whose count reaches zero here has no mapping left to
/// zap (refcount >= mapcount), and the buddy allocator's state depends only on which
/// frames are free, not on the order they were freed in (merging is eager).
const GATHER_BATCH: usize = 1 << 16;

impl Machine {
    /// Unmaps `[addr, addr+length)`; unmapped pages in the range are fine.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`], range errors.
    pub fn munmap(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        self.zap_vmas_in(pid, start, end)?;
        self.flush_gather();
        let mm = self.mm_mut(pid)?;
        mm.remove_range(start, end);
        let pgd = mm.pgd;
        self.free_unused_tables(pid, pgd, 0, start.as_u64(), end.as_u64())?;
        Ok(())
    }

    /// `MADV_DONTNEED` over a fully mapped range: zap, never free tables.
    pub(crate) fn madvise_dontneed(
        &mut self,
        pid: u32,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), CowError> {
        self.zap_vmas_in(pid, start, end)?;
        self.flush_gather();
        Ok(())
    }

    /// Ends a process: zaps every VMA, drops the gathered references, frees every table
    /// (bottom-up, lowest address first, the PGD last) and then the mm id.
    ///
    /// # Errors
    /// [`CowError::NoSuchProcess`].
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Machine, Profile};
    ///
    /// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
    /// let a = m.mmap(1, 16 * 4096)?;
    /// m.write(1, a, 16 * 4096, 1)?;
    /// let free = m.free_frames();
    /// let child = m.fork(1)?; // the child's page tables: PGD, PUD, PMD and PTE tables
    /// assert_eq!(m.free_frames(), free - 4);
    /// m.write(child, a, 4096, 2)?; // and a COW copy of one page
    /// m.exit(child)?;
    /// // The copy and the tables are freed; the shared pages lose the child's references.
    /// assert_eq!(m.free_frames(), free);
    /// assert_eq!(m.folio(m.translate(1, a)?.pfn.expect("mapped"))?.refcount, 1);
    /// assert_eq!(m.pids(), [1]);
    /// assert!(m.exit(child).is_err()); // the pid is gone for good
    /// # Ok::<(), cowcore_core::CowError>(())
    /// ```
    pub fn exit(&mut self, pid: u32) -> Result<(), CowError> {
        let mm = self.mm(pid)?;
        let (pgd, mm_id) = (mm.pgd, mm.mm_id);
        let vmas = mm.vmas.clone();
        for v in &vmas {
            self.zap_range(pid, v.start.as_u64(), v.end.as_u64())?;
        }
        self.flush_gather();
        self.free_subtree(0, pgd);
        self.mem.free_table(pgd);
        self.used_mm_ids.remove(&mm_id);
        self.procs[(pid - 1) as usize] = None;
        Ok(())
    }

    /// Zaps the parts of `[start, end)` that lie inside VMAs.
    fn zap_vmas_in(&mut self, pid: u32, start: VirtAddr, end: VirtAddr) -> Result<(), CowError> {
        let parts: Vec<(u64, u64)> = self
            .mm(pid)?
            .vmas
            .iter()
            .filter(|v| v.start < end && v.end > start)
            .map(|v| (v.start.max(start).as_u64(), v.end.min(end).as_u64()))
            .collect();
        for (s, e) in parts {
            self.zap_range(pid, s, e)?;
        }
        Ok(())
    }

    /// `unmap_page_range` over `[s, e)`, which lies inside one VMA or several.
    fn zap_range(&mut self, pid: u32, s: u64, e: u64) -> Result<(), CowError> {
        let mm = self.mm(pid)?;
        let (pgd, mm_id) = (mm.pgd, mm.mm_id);
        let mut a = s;
        let mut freed_pages: u64 = 0;
        while a < e {
            let next = ((a & !(PMD_SIZE - 1)) + PMD_SIZE).min(e);
            match self.pmd_loc(pgd, a) {
                PmdLoc::Hole(to) => {
                    a = to;
                    continue;
                }
                PmdLoc::Found(pmd_t, pmd_i) => {
                    let pmde = self.entry(pmd_t, pmd_i);
                    if pmde.is_huge() {
                        if a % PMD_SIZE == 0 && next - a == PMD_SIZE {
                            freed_pages += self.zap_huge_pmd(mm_id, pmd_t, pmd_i)?;
                        } else {
                            let mm = self.mm(pid)?;
                            let vma = mm
                                .find_vma(VirtAddr::new(a))
                                .map(|i| mm.vmas[i])
                                .ok_or_else(|| CowError::invariant("zap", "no VMA at split"))?;
                            let haddr = VirtAddr::new(a).align_down(PMD_SIZE);
                            self.split_huge_pmd(mm_id, &vma, pmd_t, pmd_i, haddr)?;
                            let t = self.entry(pmd_t, pmd_i).pfn().as_u64() as u32;
                            freed_pages += self.zap_pte_range(mm_id, t, a, next);
                        }
                    } else if !pmde.is_none() {
                        let t = pmde.pfn().as_u64() as u32;
                        freed_pages += self.zap_pte_range(mm_id, t, a, next);
                    }
                }
            }
            a = next;
            if self.gather.len() >= GATHER_BATCH {
                self.flush_gather();
            }
        }
        let mm = self.mm_mut(pid)?;
        mm.rss_anon = mm.rss_anon.saturating_sub(freed_pages);
        Ok(())
    }

    /// `zap_huge_pmd`: clear the PMD, remove the rmap, free the deposited table; returns the
    /// anon pages unmapped.
    fn zap_huge_pmd(&mut self, mm_id: u32, pmd_t: u32, pmd_i: usize) -> Result<u64, CowError> {
        let pmde = self.entry(pmd_t, pmd_i);
        self.set_entry(pmd_t, pmd_i, PageTableEntry::NONE);
        let t = self
            .deposits
            .remove(&Self::deposit_key(pmd_t, pmd_i))
            .ok_or_else(|| CowError::invariant("deposit", "zapped huge PMD without a deposit"))?;
        self.mem.free_table(t);
        if pmde.is_special() {
            return Ok(0);
        }
        let h = pmde.pfn().as_u64() as u32;
        self.mem.remove_rmap_pmd(h, mm_id);
        self.gather.push((h, 1));
        Ok(PMD_NR)
    }

    /// `zap_pte_range` over `[a, next)` of one PTE table; batches the PTEs of one folio
    /// (`folio_pte_batch` ignoring A/D/soft-dirty/RW). Returns the anon pages unmapped.
    fn zap_pte_range(&mut self, mm_id: u32, t: u32, a: u64, next: u64) -> u64 {
        let mut i = Paging::index(VirtAddr::new(a), 12);
        let end_i = i + ((next - a) / PAGE_SIZE) as usize;
        let mut pages = 0;
        while i < end_i {
            let e = self.entry(t, i);
            if e.is_none() {
                i += 1;
                continue;
            }
            if e.is_special() {
                self.set_entry(t, i, PageTableEntry::NONE);
                i += 1;
                continue;
            }
            let p = e.pfn().as_u64() as u32;
            let h = self.mem.folio_head(p);
            let nr = if self.mem.is_large(h) {
                self.pte_batch(t, i, end_i, e, h, true)
            } else {
                1
            };
            for j in 0..nr {
                self.set_entry(t, i + j, PageTableEntry::NONE);
            }
            self.mem.remove_rmap_ptes(h, p, nr as u32, mm_id);
            self.gather.push((h, nr as u32));
            pages += nr as u64;
            i += nr;
        }
        pages
    }

    /// `folio_pte_batch`: how many PTEs from index `i` (below `end_i`) map consecutive
    /// pages of the folio at `h` with the same bits, ignoring A, RW and soft-dirty (and D
    /// when `ignore_dirty`).
    pub(crate) fn pte_batch(
        &self,
        t: u32,
        i: usize,
        end_i: usize,
        e0: PageTableEntry,
        h: u32,
        ignore_dirty: bool,
    ) -> usize {
        let norm = |e: PageTableEntry| {
            let e = if ignore_dirty { e.mkclean() } else { e };
            e.clear_soft_dirty().mkold().wrprotect()
        };
        let p0 = e0.pfn().as_u64();
        let folio_end = u64::from(h) + (1u64 << self.mem.order(h));
        let expected = norm(e0);
        let tab = self.mem.table(t);
        let mut n = 1;
        while i + n < end_i && p0 + (n as u64) < folio_end {
            let e = PageTableEntry::from_raw(tab[i + n]);
            let want = expected.with_pfn(crate::addr::Pfn::new(p0 + n as u64));
            if !e.is_present() || norm(e) != want {
                break;
            }
            n += 1;
        }
        n
    }

    /// `free_pgtables` after `munmap`: frees every table (not the PGD) below `table` whose
    /// span overlaps `[s, e)` and no longer overlaps any VMA, children before parents.
    fn free_unused_tables(
        &mut self,
        pid: u32,
        table: u32,
        depth: usize,
        s: u64,
        e: u64,
    ) -> Result<(), CowError> {
        let levels = self.paging.table_levels();
        let (level, shift) = levels[depth];
        if level == Level::Pte {
            return Ok(());
        }
        let span = 1u64 << shift;
        let mut a = s & !(span - 1);
        while a < e {
            let idx = Paging::index(VirtAddr::new(a), shift);
            let ent = self.entry(table, idx);
            if !ent.is_none() && !ent.is_huge() {
                let child = ent.pfn().as_u64() as u32;
                self.free_unused_tables(pid, child, depth + 1, s.max(a), e.min(a + span))?;
                if !self.mm(pid)?.overlaps(a, a + span) {
                    self.free_subtree(depth + 1, child);
                    self.mem.free_table(child);
                    self.set_entry(table, idx, PageTableEntry::NONE);
                }
            }
            a += span;
        }
        Ok(())
    }

    /// Frees every table below the table `table` at `depth` (not `table` itself),
    /// lowest address first, children before parents.
    pub(crate) fn free_subtree(&mut self, depth: usize, table: u32) {
        let levels = self.paging.table_levels();
        if levels[depth].0 == Level::Pte {
            return;
        }
        for idx in 0..512 {
            let ent = self.entry(table, idx);
            if ent.is_none() || ent.is_huge() {
                continue;
            }
            let child = ent.pfn().as_u64() as u32;
            self.free_subtree(depth + 1, child);
            self.mem.free_table(child);
            self.set_entry(table, idx, PageTableEntry::NONE);
        }
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
