//! `/proc/<pid>/smaps` of the anonymous VMAs, as `fs/proc/task_mmu.c` computes it
//! (docs/accounting.md).
//!
//! `show_smap` -> `smap_gather_stats` -> `walk_page_vma` with `smaps_walk_ops`, whose
//! `pmd_entry` is `smaps_pte_range`: a huge PMD goes to `smaps_pmd_entry`, each PTE to
//! `smaps_pte_entry`, and both end in `smaps_account`, which fills the accumulators of
//! `struct mem_size_stats` ([`SmapsInfo`]): bytes, and the PSS sums in fixed point
//! (`<< PSS_SHIFT`). The walk is [`Smaps`], a client of the one range walker.
//!
//! What the model leaves out: swap and migration entries (none exist; one met here is an
//! invariant error), and the `PG_referenced`, `PG_young` and `PG_dirty` flags of an
//! anonymous folio. The flags change no line: of the paths that set them on an anonymous
//! folio (reclaim, swap-in, page idle tracking, the split of a dirty PMD) the model has only
//! the split, `__split_huge_pmd_locked`, which also makes every new PTE dirty, and the model
//! never cleans an anonymous PTE. Both profiles run with `CONFIG_PAGE_MAPCOUNT`
//! ([`KernelConfig::per_page_mapcounts`](crate::KernelConfig::per_page_mapcounts)), so
//! `smaps_account` takes the per-page `folio_precise_page_mapcount` path under both.
//!
//! Cost: a PTE is a handful of reads of the packed frame arrays, no allocation; a PMD-mapped
//! THP is one step unless some of its pages are also mapped by PTEs (then each of its 512
//! pages has its own mapcount, as the kernel's loop reads them).

use crate::addr::{PAGE_SIZE, PMD_SIZE};
use crate::error::CowError;
use crate::folio::{Folio, FOLIO_PAGES_MAPPED};
use crate::kernel::Kernel;
use crate::mm::{Prot, Vma};
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::{EntryKind, PageTableEntry};
use crate::physmem::{PhysMem, TableFrame};
use crate::swap::entry_slot;

/// `PSS_SHIFT`: the PSS sums are kept in bytes `<< PSS_SHIFT`, so that dividing a page
/// among its mappers loses little (`fs/proc/task_mmu.c`).
pub const PSS_SHIFT: u32 = 12;

/// The smaps of one VMA (`show_smap`): its range, protection and flags as
/// [`Machine::vmas`](crate::Machine::vmas) reports them, and the accumulators of `struct
/// mem_size_stats` that `__show_smap` prints, kept as the kernel keeps them: bytes, and
/// `pss`, `pss_dirty`, `swap_pss` in fixed point (bytes `<<` [`PSS_SHIFT`]).
///
/// # Examples
///
/// ```rust
/// use cowcore_core::{Machine, Profile, PSS_SHIFT};
///
/// let mut m = Machine::new(8 << 20, 4, Profile::V6_15)?;
/// let a = m.mmap(1, 3 << 12)?;
/// m.write(1, a, 2 << 12, 1)?; // two fresh pages; the third stays unmapped
/// m.fork(1)?;
/// let s = &m.smaps(1)?[0];
/// assert_eq!((s.rss, s.shared_dirty, s.private_dirty), (8192, 8192, 0));
/// assert_eq!(s.pss >> PSS_SHIFT, 4096); // each page shared by two: half of each
/// # Ok::<(), cowcore_core::CowError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsInfo {
    /// `vm_start`.
    pub start: u64,
    /// `vm_end` (exclusive).
    pub end: u64,
    /// The VMA's protection.
    pub prot: Prot,
    /// The VMA's flag names beyond the protection, as `vmas()` names them.
    pub flags: Vec<&'static str>,
    /// `Rss` (`resident`).
    pub rss: u64,
    /// `Pss`, fixed point.
    pub pss: u64,
    /// `Pss_Dirty`, fixed point.
    pub pss_dirty: u64,
    /// `Shared_Clean`.
    pub shared_clean: u64,
    /// `Shared_Dirty`.
    pub shared_dirty: u64,
    /// `Private_Clean`.
    pub private_clean: u64,
    /// `Private_Dirty`.
    pub private_dirty: u64,
    /// `Referenced`.
    pub referenced: u64,
    /// `Anonymous`.
    pub anonymous: u64,
    /// `AnonHugePages` (`anonymous_thp`): PMD-mapped anonymous THPs only.
    pub anon_huge_pages: u64,
    /// `Swap`: bytes of swap entries (issue 16).
    pub swap: u64,
    /// `SwapPss`, fixed point: each swap entry's 4 KiB shared by its slot's map count.
    pub swap_pss: u64,
}

/// `struct mem_size_stats`, the accumulators of one walk.
#[derive(Debug, Clone, Copy, Default)]
struct MemSizeStats {
    resident: u64,
    pss: u64,
    pss_dirty: u64,
    shared_clean: u64,
    shared_dirty: u64,
    private_clean: u64,
    private_dirty: u64,
    referenced: u64,
    anonymous: u64,
    anonymous_thp: u64,
    swap: u64,
    swap_pss: u64,
}

impl MemSizeStats {
    /// `smaps_page_accumulate`: `size` bytes with PSS share `pss` (fixed point) go to the
    /// dirty or clean, private or shared sums.
    #[inline]
    fn smaps_page_accumulate(&mut self, size: u64, pss: u64, dirty: bool, private: bool) {
        self.pss += pss;
        if dirty {
            self.pss_dirty += pss;
            if private {
                self.private_dirty += size;
            } else {
                self.shared_dirty += size;
            }
        } else if private {
            self.private_clean += size;
        } else {
            self.shared_clean += size;
        }
    }

    /// `smaps_account` for a present entry mapping `nr` pages of `folio` from page `first`
    /// (one page for a PTE; the whole folio for a PMD, `compound`).
    ///
    /// `folio_ref_count == 1` means the folio is mapped exactly once: all of it private, at
    /// full PSS. Otherwise each page on its own: `folio_precise_page_mapcount` (its PTE
    /// mappings plus the folio's PMD mappings); 2 or more makes it shared, at PSS
    /// `(PAGE_SIZE << PSS_SHIFT) / mapcount`, rounded down per page. Pages with the same
    /// mapcount add the same share, so a run of them is one step (`n` times the share,
    /// never the share of `n` pages, which would round differently).
    #[inline]
    fn smaps_account(&mut self, folio: Folio<'_>, first: u32, nr: u32, young: bool, dirty: bool) {
        let size = u64::from(nr) * PAGE_SIZE;
        self.anonymous += size; // folio_test_anon
        self.resident += size;
        if young || folio.folio_test_referenced() {
            // pte_young || folio_test_young || folio_test_referenced (the model has no
            // page_idle tracking, so no PG_young)
            self.referenced += size;
        }
        if folio.folio_ref_count() == 1 {
            self.smaps_page_accumulate(size, size << PSS_SHIFT, dirty, true);
            return;
        }
        if !folio.folio_test_large() {
            // An order-0 folio: its precise mapcount is its page's (no entire mapping).
            self.accumulate_pages(1, folio.folio_page_mapcount(0), dirty);
            return;
        }
        let entire = folio.folio_entire_mapcount() as u32;
        if nr > 1 && folio.folio_nr_pages_mapped_raw() & FOLIO_PAGES_MAPPED == 0 {
            // No page has a PTE mapping: every page's precise mapcount is the entire one.
            self.accumulate_pages(u64::from(nr), entire, dirty);
            return;
        }
        // Page by page as the kernel loops, a run of equal mapcounts at a time.
        let end = first + nr;
        let mut i = first;
        while i < end {
            let mapcount = folio.folio_page_mapcount(i);
            let mut j = i + 1;
            while j < end && folio.folio_page_mapcount(j) == mapcount {
                j += 1;
            }
            self.accumulate_pages(u64::from(j - i), mapcount + entire, dirty);
            i = j;
        }
    }

    /// `n` pages of precise mapcount `mapcount`, each as the kernel's per-page loop adds it.
    #[inline]
    fn accumulate_pages(&mut self, n: u64, mapcount: u32, dirty: bool) {
        let mut pss = PAGE_SIZE << PSS_SHIFT;
        if mapcount >= 2 {
            pss /= u64::from(mapcount);
        }
        self.smaps_page_accumulate(n * PAGE_SIZE, n * pss, dirty, mapcount < 2);
    }
}

/// The smaps walk of one VMA (`smaps_walk_ops` with its `struct mem_size_stats`).
struct Smaps<'a> {
    mem: &'a PhysMem,
    mss: MemSizeStats,
}

impl Smaps<'_> {
    /// `smaps_pte_entry`'s swap part (issue 16): `Swap` + 4 KiB, `SwapPss` + 4 KiB divided
    /// by the slot's map count (`swp_swapcount`), in fixed point as the kernel divides it.
    fn swap_entry(&mut self, e: PageTableEntry, addr: u64) -> Result<(), CowError> {
        let EntryKind::Swap(s) = e.kind() else {
            return Err(CowError::invariant(
                "swap-entry",
                format!(
                    "smaps: an entry {:#x} at {addr:#x} of no known kind",
                    e.raw()
                ),
            ));
        };
        self.mss.swap += PAGE_SIZE;
        let mapcount = u64::from(self.mem.swap.count(entry_slot(s)));
        let full = PAGE_SIZE << PSS_SHIFT;
        self.mss.swap_pss += if mapcount >= 2 { full / mapcount } else { full };
        Ok(())
    }
}

/// `smaps_pte_range`: a huge PMD is `smaps_pmd_entry`, a PTE table is `smaps_pte_entry`
/// for each PTE of the range.
impl PageWalk for Smaps<'_> {
    #[inline]
    fn mem(&self) -> &PhysMem {
        self.mem
    }

    /// `smaps_pmd_entry`: `vm_normal_page_pmd` is NULL for the huge zero folio (not
    /// counted at all); an anonymous THP adds `HPAGE_PMD_SIZE` to `AnonHugePages` and is
    /// accounted whole (`compound`), with the PMD's A and D bits.
    fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
        let e = at.entry;
        if e.is_special() {
            return Ok(());
        }
        let folio = self.mem.folio(self.mem.page_folio(e.frame()));
        self.mss.anonymous_thp += PMD_SIZE;
        let nr = folio.folio_nr_pages();
        self.mss
            .smaps_account(folio, 0, nr, e.is_young(), e.is_dirty());
        Ok(())
    }

    /// `smaps_pte_entry` for each PTE of `[at.addr, at.next)`: a none PTE is skipped, the
    /// zero page is not counted (`vm_normal_page` is NULL for it), any other present PTE
    /// is accounted with its A and D bits. PTEs that map the next pages of the same large
    /// folio with the same bits are accounted in one step: each page still adds what its
    /// own `smaps_pte_entry` would (a large folio mapped by several PTEs never takes the
    /// `folio_ref_count == 1` shortcut), so the sums are the kernel's, for less work.
    fn pte_table(&mut self, at: EntryAt, t: TableFrame) -> Result<(), CowError> {
        let mem = self.mem;
        let first = ((at.addr >> 12) & 511) as usize;
        let last = first + ((at.next - at.addr) / PAGE_SIZE) as usize;
        let ptes = &mem.table(t)[first..last];
        let mut i = 0;
        while i < ptes.len() {
            let e = PageTableEntry::from_raw(ptes[i]);
            if e.is_none() {
                i += 1;
                continue;
            }
            if !e.is_present() {
                self.swap_entry(e, at.addr + i as u64 * PAGE_SIZE)?;
                i += 1;
                continue;
            }
            if e.is_special() {
                i += 1;
                continue;
            }
            let pfn = e.frame();
            let folio = mem.folio(mem.page_folio(pfn));
            let page = pfn - folio.folio_ref().pfn();
            let mut n = 1;
            if folio.folio_test_large() {
                let max = (ptes.len() - i).min((folio.folio_nr_pages() - page) as usize);
                while n < max && ptes[i + n] == e.with_frame(pfn + n as u32).raw() {
                    n += 1;
                }
            }
            self.mss
                .smaps_account(folio, page, n as u32, e.is_young(), e.is_dirty());
            i += n;
        }
        Ok(())
    }
}

impl Kernel {
    /// `show_smap` for every VMA of `pid`, lowest first.
    pub(crate) fn smaps(&self, pid: u32) -> Result<Vec<SmapsInfo>, CowError> {
        let mm = self.mm(pid)?;
        mm.vmas
            .iter()
            .map(|v| {
                let s = self.smap_gather_stats(mm.pgd, v)?;
                Ok(SmapsInfo {
                    start: v.start.as_u64(),
                    end: v.end.as_u64(),
                    prot: v.prot(),
                    flags: v.flags.names(),
                    rss: s.resident,
                    pss: s.pss,
                    pss_dirty: s.pss_dirty,
                    shared_clean: s.shared_clean,
                    shared_dirty: s.shared_dirty,
                    private_clean: s.private_clean,
                    private_dirty: s.private_dirty,
                    referenced: s.referenced,
                    anonymous: s.anonymous,
                    anon_huge_pages: s.anonymous_thp,
                    swap: s.swap,
                    swap_pss: s.swap_pss,
                })
            })
            .collect()
    }

    /// `smap_gather_stats`: the walk of one VMA (`walk_page_vma`).
    fn smap_gather_stats(&self, pgd: TableFrame, v: &Vma) -> Result<MemSizeStats, CowError> {
        let mut w = Smaps {
            mem: &self.mem,
            mss: MemSizeStats::default(),
        };
        walk_page_range(&mut w, self.paging, pgd, v.start.as_u64(), v.end.as_u64())?;
        Ok(w.mss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Machine, Profile, ThpSizeMode, VirtAddr};

    const K: u64 = 1 << PSS_SHIFT;

    fn machine() -> Machine {
        Machine::new(32 << 20, 4, Profile::V6_15).unwrap()
    }

    #[test]
    fn fresh_pages_are_private_dirty_referenced() {
        let mut m = machine();
        let a = m.mmap(1, 16 << 12).unwrap();
        m.write(1, a, 3 << 12, 7).unwrap();
        m.read(1, VirtAddr::new(a.as_u64() + (4 << 12)), 4096)
            .unwrap(); // zero page
        let s = &m.smaps(1).unwrap()[0];
        assert_eq!((s.start, s.end), (a.as_u64(), a.as_u64() + (16 << 12)));
        assert_eq!(s.rss, 3 << 12);
        assert_eq!(s.private_dirty, 3 << 12);
        assert_eq!(s.referenced, 3 << 12);
        assert_eq!(s.pss, (3 << 12) * K);
        assert_eq!(s.pss_dirty, s.pss);
        assert_eq!(s.shared_dirty + s.shared_clean + s.private_clean, 0);
    }

    #[test]
    fn pmd_thp_is_one_compound_step_and_halves_after_fork() {
        // 6.12: no PG_referenced from the fault, so only the accessed bits count.
        let mut m = Machine::new(32 << 20, 4, Profile::V6_12).unwrap();
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 4 << 20).unwrap();
        let h = VirtAddr::new((a.as_u64() + PMD_SIZE - 1) & !(PMD_SIZE - 1));
        m.write(1, h, 4096, 1).unwrap();
        let s = m.smaps(1).unwrap();
        assert_eq!((s[0].rss, s[0].anon_huge_pages), (PMD_SIZE, PMD_SIZE));
        let c = m.fork(1).unwrap();
        for pid in [1, c] {
            let s = &m.smaps(pid).unwrap()[0];
            assert_eq!((s.shared_dirty, s.pss), (PMD_SIZE, PMD_SIZE * K / 2));
        }
        // The child never touched it: its PMD is old.
        assert_eq!(m.smaps(c).unwrap()[0].referenced, 0);
    }

    /// A run of PTEs of one 64K folio is accounted in one step with the page-by-page sums:
    /// after a fork and a COW copy of page 3 by the parent, the child's page 3 is private,
    /// the 15 others shared (PSS halves, rounded per page).
    #[test]
    fn ptes_of_one_folio_add_up_page_by_page() {
        let mut m = machine();
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        let h = VirtAddr::new((a.as_u64() + (64 << 10) - 1) & !((64 << 10) - 1));
        m.write(1, h, 64 << 10, 1).unwrap();
        let c = m.fork(1).unwrap();
        m.write(1, VirtAddr::new(h.as_u64() + (3 << 12)), 4096, 2)
            .unwrap();
        let s = &m.smaps(c).unwrap()[0];
        assert_eq!(
            (s.rss, s.private_dirty, s.shared_dirty),
            (16 << 12, 1 << 12, 15 << 12)
        );
        assert_eq!(s.pss, (1 << 12) * K + 15 * ((4096 * K) / 2));
    }

    #[test]
    fn three_sharers_round_down_per_page() {
        let mut m = machine();
        let a = m.mmap(1, 4096).unwrap();
        m.write(1, a, 4096, 1).unwrap();
        m.fork(1).unwrap();
        m.fork(1).unwrap();
        let s = &m.smaps(1).unwrap()[0];
        assert_eq!(s.pss, (4096 * K) / 3);
    }
}
