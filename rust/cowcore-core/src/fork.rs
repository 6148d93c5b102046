//! Fork: `dup_mmap` and `copy_page_range` (KS §3).
//!
//! The child gets a fresh mm (lowest free mm id, next pid) and a copy of the parent's VMAs
//! in address order, minus `VM_DONTCOPY` ones; `VM_WIPEONFORK` VMAs are copied without page
//! tables. Page tables are copied on demand, top-down, in address order; present PTEs of
//! one large folio are copied in `folio_pte_batch` batches; writable COW entries are
//! write-protected in both processes; the child's entries are old. Before anything
//! changes, the page-table frames the child needs are counted and the fork fails as a
//! whole if they are not free (DESIGN.md "Errors").

use std::collections::BTreeSet;

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_NR};
use crate::error::CowError;
use crate::fault::alloc_table;
use crate::kernel::Kernel;
use crate::mm::{Mm, VmFlags, Vma};
use crate::paging::table::{Level, Paging};
use crate::physmem::{PhysMem, TableFrame};

/// The copy of one parent's page tables into a child's (`copy_page_range` over the VMAs
/// that need it): physical memory and the paging geometry, nothing else.
#[derive(Debug)]
struct ForkCopy<'a> {
    mem: &'a mut PhysMem,
    paging: Paging,
}

impl Kernel {
    /// `dup_mmap`: forks a process; returns the child's pid.
    pub(crate) fn fork(&mut self, pid: u32) -> Result<u32, CowError> {
        let parent = self.mm(pid)?;
        let (parent_pgd, cursor) = (parent.pgd, parent.cursor);
        let copied: Vec<_> = parent
            .vmas
            .iter()
            .filter(|v| !v.flags.contains(VmFlags::DONTCOPY))
            .map(|v| Vma {
                anon_vma: v.anon_vma && !v.flags.contains(VmFlags::WIPEONFORK),
                ..*v
            })
            .collect();
        let mut f = ForkCopy {
            mem: &mut self.mem,
            paging: self.paging,
        };
        let mut seen = BTreeSet::new();
        let mut need = 1u64; // the child's PGD
                             // vma_needs_copy: only VMAs with an anon_vma (a WIPEONFORK child VMA has none).
        let needs_copy = || copied.iter().filter(|v| v.anon_vma);
        for v in needs_copy() {
            need += f.count_copy(0, parent_pgd, v.start.as_u64(), v.end.as_u64(), &mut seen);
        }
        if f.mem.nr_free() < need {
            return Err(CowError::OutOfMemory);
        }
        f.mem.reserve_tables(need);
        let mm_id = lowest_free_mm_id(&self.used_mm_ids);
        let pgd = alloc_table(f.mem)?;
        let mut rss = 0;
        for v in needs_copy() {
            rss += f.copy_level(0, parent_pgd, pgd, v.start.as_u64(), v.end.as_u64(), mm_id)?;
        }
        let child_pid = self.procs.len() as u32 + 1;
        self.used_mm_ids.insert(mm_id);
        self.procs.push(Some(Mm {
            pid: child_pid,
            mm_id,
            pgd,
            vmas: copied,
            cursor,
            rss_anon: rss,
        }));
        Ok(child_pid)
    }
}

/// The lowest free mm id (`mm_alloc_id`: an IDA from `MM_ID_MIN`).
fn lowest_free_mm_id(used: &BTreeSet<u32>) -> u32 {
    let mut id = 1;
    for &u in used {
        if u != id {
            break;
        }
        id += 1;
    }
    id
}

impl ForkCopy<'_> {
    /// Counts the child tables (and PMD deposits) that copying `[s, e)` below the parent
    /// table `src` at `depth` allocates; `seen` holds the child tables already counted.
    fn count_copy(
        &self,
        depth: usize,
        src: TableFrame,
        s: u64,
        e: u64,
        seen: &mut BTreeSet<(usize, u64)>,
    ) -> u64 {
        let (level, shift) = self.paging.table_levels()[depth];
        let span = 1u64 << shift;
        let mut n = 0;
        let mut a = s;
        while a < e {
            let base = a & !(span - 1);
            let next = (base + span).min(e);
            let ent = self.mem.entry(src, Paging::index(VirtAddr::new(a), shift));
            if !ent.is_none() {
                if level == Level::Pmd && ent.is_huge() {
                    n += 1; // deposit table
                } else {
                    if seen.insert((depth, base)) {
                        n += 1;
                    }
                    if level != Level::Pmd {
                        let child = TableFrame::of(ent);
                        n += self.count_copy(depth + 1, child, a, next, seen);
                    }
                }
            }
            a = next;
        }
        n
    }

    /// Returns the child table under entry `idx` of `dst`, allocating it if none.
    fn child_table(&mut self, dst: TableFrame, idx: usize) -> Result<TableFrame, CowError> {
        let e = self.mem.entry(dst, idx);
        if e.is_none() {
            let t = alloc_table(self.mem)?;
            self.mem.set_entry(dst, idx, t.entry());
            Ok(t)
        } else {
            Ok(TableFrame::of(e))
        }
    }

    /// `copy_p4d_range`/`copy_pud_range`/`copy_pmd_range`: copies `[s, e)` from the parent
    /// table `src` to the child table `dst` at `depth`. Returns the child's new anon pages.
    fn copy_level(
        &mut self,
        depth: usize,
        src: TableFrame,
        dst: TableFrame,
        s: u64,
        e: u64,
        child_id: u32,
    ) -> Result<u64, CowError> {
        let (level, shift) = self.paging.table_levels()[depth];
        let span = 1u64 << shift;
        let mut rss = 0;
        let mut a = s;
        while a < e {
            let next = ((a & !(span - 1)) + span).min(e);
            let idx = Paging::index(VirtAddr::new(a), shift);
            let ent = self.mem.entry(src, idx);
            if !ent.is_none() {
                if level == Level::Pmd {
                    if ent.is_huge() {
                        rss += self.copy_huge_pmd(src, dst, idx, child_id)?;
                    } else {
                        let child = self.child_table(dst, idx)?;
                        rss += self.copy_pte_range(TableFrame::of(ent), child, a, next, child_id);
                    }
                } else {
                    let child = self.child_table(dst, idx)?;
                    rss +=
                        self.copy_level(depth + 1, TableFrame::of(ent), child, a, next, child_id)?;
                }
            }
            a = next;
        }
        Ok(rss)
    }

    /// `copy_huge_pmd` (KS §3.2), without pins.
    fn copy_huge_pmd(
        &mut self,
        src: TableFrame,
        dst: TableFrame,
        idx: usize,
        child_id: u32,
    ) -> Result<u64, CowError> {
        let t = alloc_table(self.mem)?;
        let ent = self.mem.entry(src, idx);
        let mut rss = 0;
        if !ent.is_special() {
            let folio = self.mem.page_folio(ent.pfn().as_u64() as u32);
            self.mem.folio_ref_add(folio, 1);
            self.mem.dup_anon_rmap_pmd(folio, child_id);
            rss = PMD_NR;
        }
        self.mem.set_entry(src, idx, ent.wrprotect());
        self.mem.set_entry(dst, idx, ent.wrprotect().mkold());
        self.mem.deposit(dst, idx, t);
        Ok(rss)
    }

    /// `copy_pte_range` → `copy_present_ptes` (KS §3.3), without pins or swap entries.
    fn copy_pte_range(
        &mut self,
        src: TableFrame,
        dst: TableFrame,
        a: u64,
        e: u64,
        child_id: u32,
    ) -> u64 {
        let mut i = Paging::index(VirtAddr::new(a), 12);
        let end_i = i + ((e - a) / PAGE_SIZE) as usize;
        let mut rss = 0;
        while i < end_i {
            let (next, pages) = self.mem.copy_small_ptes(src, dst, i, end_i);
            rss += pages;
            i = next;
            if i == end_i {
                break;
            }
            let pte = self.mem.entry(src, i);
            if pte.is_special() {
                // vm_normal_page() == NULL: copy the entry (never writable).
                self.mem.set_entry(dst, i, pte.mkold());
                i += 1;
                continue;
            }
            let p = pte.pfn().as_u64() as u32;
            let folio = self.mem.page_folio(p);
            let nr = if self.mem.folio(folio).folio_test_large() && end_i - i > 1 {
                self.mem.folio_pte_batch(src, i, end_i, pte, folio, false)
            } else {
                1
            };
            let any_writable = self.mem.any_writable(src, i, nr);
            self.mem.folio_ref_add(folio, nr as i32);
            self.mem.dup_anon_rmap_ptes(folio, p, nr as u32, child_id);
            rss += nr as u64;
            let mut v = pte;
            if any_writable {
                v = v.mkwrite();
                self.mem.wrprotect_ptes(src, i, nr);
                v = v.wrprotect();
            }
            self.mem.set_ptes(dst, i, nr, v.mkold());
            i += nr;
        }
        rss
    }
}

#[cfg(test)]
mod tests {
    use crate::{Advice, CowError, Machine, Profile, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    #[test]
    fn fork_oom_changes_nothing() {
        let mut m = Machine::new(4 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        let mut n = 0;
        while m.free_frames() > 2 {
            m.write(1, VirtAddr::new(a.as_u64() + n * K4), K4, 1)
                .unwrap();
            n += 1;
        }
        let free = m.free_frames();
        assert_eq!(m.fork(1), Err(CowError::OutOfMemory));
        assert_eq!(m.free_frames(), free);
        assert_eq!(m.pids(), vec![1]);
        m.check().unwrap();
    }

    #[test]
    fn batch_dup_and_flags() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(3, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        m.write(1, a, 8 * K4, 1).unwrap();
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        m.write(1, a, K4, 2).unwrap(); // reuse: PTE 0 writable again, others R/O
        let c2 = m.fork(1).unwrap();
        let head = m.translate(1, a).unwrap().pfn.unwrap();
        let f = m.folio(head).unwrap();
        assert_eq!(f.mm_ids, [(1, 8), (2, 8)]); // mm id 2 is reused
        assert_eq!(m.mm_id(c2).unwrap(), 2);
        assert!(f.anon_exclusive.iter().all(|x| !x));
        let t = m.translate(c2, a).unwrap();
        let leaf = t.steps.last().unwrap().entry;
        assert!(!leaf.is_writable() && !leaf.is_young() && leaf.is_dirty());
        m.check().unwrap();
    }

    #[test]
    fn dontfork_wipeonfork_and_zero_only_vmas() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        let z = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 5).unwrap();
        m.read(1, z, 4 * K4).unwrap(); // zero page only: no anon_vma, not copied
        m.madvise(1, a, K4, Advice::WipeOnFork).unwrap();
        m.madvise(1, VirtAddr::new(a.as_u64() + K4), K4, Advice::DontFork)
            .unwrap();
        let c = m.fork(1).unwrap();
        let o = m.observe(c, a, K4).unwrap();
        assert!(!o[0].present);
        assert!(m.observe(c, VirtAddr::new(a.as_u64() + K4), K4).is_ok());
        assert_eq!(m.vmas(c).unwrap().len(), 3);
        assert!(
            m.observe(c, VirtAddr::new(a.as_u64() + 2 * K4), 2 * K4)
                .unwrap()[0]
                .present
        );
        assert!(!m.observe(c, z, K4).unwrap()[0].present);
        m.check().unwrap();
    }
}
