//! `madvise(MADV_COLLAPSE)`: the synchronous collapse of `mm/khugepaged.c` (issue 16).
//!
//! `madvise_collapse` works on the whole PMD-aligned 2 MiB blocks inside the range, one at
//! a time, with `cc->is_khugepaged == false`, so khugepaged's sysfs limits do not apply: any
//! number of none or zero-page PTEs (their pages of the new THP are zero-filled) and of
//! pages shared with another process. Each block goes through `hpage_collapse_scan_pmd`
//! (`collapse_scan_pmd` in 7.x) and, if the scan passes, `collapse_huge_page`:
//!
//! 1. `alloc_charge_folio`: a fresh PMD-order folio (`ThpCollapseAlloc`; or
//!    `ThpCollapseAllocFailed` and [`ScanResult::AllocHugePageFail`]);
//! 2. `hugepage_vma_revalidate`: the VMA must have an `anon_vma` ([`ScanResult::PageAnon`]);
//! 3. `pmdp_collapse_flush`: the PMD entry is cleared and the 2 MiB range flushed;
//! 4. `__collapse_huge_page_isolate`: the scan's checks again (nothing changes in between
//!    here), each large folio isolated from the LRU once (one extra reference);
//! 5. `__collapse_huge_page_copy`: every page copied, a none/zero page zero-filled; then
//!    `__collapse_huge_page_copy_succeeded` clears the PTEs and removes the rmaps (page by
//!    page before 7.x, a `folio_pte_batch` at a time since:
//!    [`crate::KernelConfig::collapse_batches_ptes`]; a large folio left partially mapped
//!    is queued for deferred split), `MM_ANONPAGES` grows by the none/zero pages, a small
//!    folio is freed with its last reference, a large one when its isolation reference is
//!    dropped after the loop;
//! 6. the emptied PTE table is deposited with the new PMD (`pgtable_trans_huge_deposit`: no
//!    table is allocated or freed), which maps the folio writable (if the VMA is), dirty
//!    and anon-exclusive (`map_anon_folio_pmd_nopf`: no fault counter moves).
//!
//! The call returns [`ScanResult::Succeed`] when every block ended PMD-mapped
//! (`SCAN_PMD_MAPPED` counts), else the last failure, whose errno is
//! `madvise_collapse_errno`'s ([`ScanResult::errno`]).

use crate::addr::{VirtAddr, PMD_NR, PMD_ORDER, PMD_SIZE};
use crate::error::CowError;
use crate::events::{Event, Events};
use crate::folio::FolioRef;
use crate::kernel::{proc_mut, Kernel};
use crate::mm::{Mm, VmFlags, Vma};
use crate::paging::entry::{PageTableEntry, PteFlags};
use crate::paging::walk::{pmd_loc, PmdLoc};
use crate::physmem::{PhysMem, TableFrame};

/// The result of `madvise(MADV_COLLAPSE)` and of each 2 MiB block it tries: the kernel's
/// `enum scan_result` members (mm/khugepaged.c, `SCAN_*`) that the model can produce. The
/// numbers are `cowcore.protocol.ScanResult`'s and the `cause` of `Collapse` events.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScanResult {
    /// `SCAN_FAIL`.
    Fail = 0,
    /// `SCAN_SUCCEED`: the block collapsed (for a call: every block is PMD-mapped now).
    Succeed = 1,
    /// `SCAN_PMD_NULL` (`SCAN_NO_PTE_TABLE` in 7.x): no page table maps the block.
    PmdNull = 2,
    /// `SCAN_PMD_MAPPED`: a huge PMD maps the block already; counts as collapsed.
    PmdMapped = 3,
    /// `SCAN_PAGE_RO`: no PTE of the block is writable (6.1, 6.12).
    PageRo = 4,
    /// `SCAN_PAGE_COUNT`: a folio has references beyond its mappings (a GUP ref or pin).
    PageCount = 5,
    /// `SCAN_PAGE_ANON`: the VMA has no `anon_vma`, found again after the allocation
    /// (`hugepage_vma_revalidate`); the VMA check refuses such a VMA first.
    PageAnon = 6,
    /// `SCAN_VMA_CHECK`: the VMA refuses `MADV_COLLAPSE` (`thp_vma_allowable_order`):
    /// `VM_NOHUGEPAGE`, no `anon_vma`, or no whole aligned 2 MiB block in it.
    VmaCheck = 7,
    /// `SCAN_ALLOC_HUGE_PAGE_FAIL`: no free PMD-size block.
    AllocHugePageFail = 8,
}

impl ScanResult {
    /// `madvise_collapse_errno`: `None` for success, else the errno's name (`ENOMEM` for
    /// no THP, `EAGAIN` for a reference, `EINVAL` for everything else).
    #[must_use]
    pub const fn errno(self) -> Option<&'static str> {
        match self {
            Self::Succeed | Self::PmdMapped => None,
            Self::AllocHugePageFail => Some("ENOMEM"),
            Self::PageCount => Some("EAGAIN"),
            _ => Some("EINVAL"),
        }
    }

    /// Whether `madvise_collapse` goes on with the next block after this failure (its
    /// whitelist); any other failure ends the call.
    #[must_use]
    pub const fn continues(self) -> bool {
        matches!(self, Self::PmdNull | Self::PageRo | Self::PageCount)
    }
}

/// Whether an aligned 2 MiB block lies inside `vma` (the highest one that could,
/// `ALIGN_DOWN(vm_end - HPAGE_PMD_SIZE)`, must not start below `vm_start`).
fn holds_pmd_block(vma: &Vma) -> bool {
    vma.end
        .as_u64()
        .checked_sub(PMD_SIZE)
        .is_some_and(|last| last & !(PMD_SIZE - 1) >= vma.start.as_u64())
}

/// Whether a PTE is none or maps the shared zero page (`pte_none_or_zero`).
fn none_or_zero(mem: &PhysMem, e: PageTableEntry) -> bool {
    e.is_none() || (e.is_present() && e.frame() == mem.zero_pfn)
}

impl Kernel {
    /// `madvise(addr, length, MADV_COLLAPSE)` of `pid`: the range must be fully mapped (as
    /// for `madvise`); `madvise_walk_vmas` hands each VMA's part to
    /// [`Self::madvise_collapse`] and stops at the first error.
    ///
    /// # Errors
    /// A bad range, unmapped pages (`InvalidAddress`), an unknown pid; the collapse's own
    /// failures are results, not errors.
    pub(crate) fn collapse(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<ScanResult, CowError> {
        let (start, end) = self.checked_mapped_range("MADV_COLLAPSE", pid, addr, length)?;
        let mut a = start;
        while a < end {
            let mm = self.mm(pid)?;
            let Some(v) = mm.vmas.iter().find(|v| v.contains(a)).copied() else {
                return Err(CowError::invariant("collapse", format!("no VMA at {a}")));
            };
            let part_end = v.end.min(end);
            let result = self.madvise_collapse(pid, &v, a, part_end)?;
            if result.errno().is_some() {
                return Ok(result);
            }
            a = part_end;
        }
        Ok(ScanResult::Succeed)
    }

    /// `madvise_collapse` for `[start, end)` inside `vma`.
    fn madvise_collapse(
        &mut self,
        pid: u32,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<ScanResult, CowError> {
        // thp_vma_allowable_order() without sysfs enforcement (TVA_FORCED_COLLAPSE): the THP
        // modes, even never, do not matter; a VM_NOHUGEPAGE VMA refuses, and so does one that
        // holds no whole aligned 2 MiB block (outside a fault the check tries the VMA's last
        // one, thp_vma_suitable_order(vma, vm_end - HPAGE_PMD_SIZE)), and one without an
        // anon_vma (only zero pages ever mapped: recorded, collapse-zero-pages).
        if vma.flags.contains(VmFlags::NOHUGEPAGE) || !vma.anon_vma || !holds_pmd_block(vma) {
            return Ok(ScanResult::VmaCheck);
        }
        let hstart = start.as_u64().next_multiple_of(PMD_SIZE);
        let hend = end.as_u64() & !(PMD_SIZE - 1);
        if hstart >= hend {
            return Ok(ScanResult::Succeed);
        }
        self.mem.lru_add_drain(); // lru_add_drain_all()
        let (mut thps, mut last_fail) = (0, ScanResult::Fail);
        let asid = self.mm(pid)?.asid;
        for addr in (hstart..hend).step_by(PMD_SIZE as usize) {
            let result = self.collapse_single_pmd(pid, addr)?;
            self.events.emit(Event::Collapse {
                asid,
                start: addr,
                result,
            });
            if matches!(result, ScanResult::Succeed | ScanResult::PmdMapped) {
                thps += 1;
                continue;
            }
            last_fail = result;
            if !result.continues() {
                break;
            }
        }
        Ok(if thps == (hend - hstart) / PMD_SIZE {
            ScanResult::Succeed
        } else {
            last_fail
        })
    }

    /// `hpage_collapse_scan_pmd` of the block at `haddr`, then `collapse_huge_page`.
    fn collapse_single_pmd(&mut self, pid: u32, haddr: u64) -> Result<ScanResult, CowError> {
        let pgd = self.mm(pid)?.pgd;
        let PmdLoc::Found(pmd_table, pmd_i) = pmd_loc(&self.mem, self.paging, pgd, haddr) else {
            return Ok(ScanResult::PmdNull);
        };
        let pmd = self.mem.entry(pmd_table, pmd_i);
        if pmd.is_none() {
            return Ok(ScanResult::PmdNull); // find_pmd_or_thp_or_none()
        }
        if pmd.is_huge() {
            return Ok(ScanResult::PmdMapped); // the huge zero PMD too (pmd_trans_huge)
        }
        let table = TableFrame::of(pmd);
        let scan = self.collapse_scan_ptes(table)?;
        if scan != ScanResult::Succeed {
            return Ok(scan);
        }
        self.collapse_huge_page(pid, haddr, (pmd_table, pmd_i), table)
    }

    /// The PTE checks of the scan (and of `__collapse_huge_page_isolate`) for
    /// `MADV_COLLAPSE`: none and zero-page entries pass; a folio with a reference beyond its
    /// mappings (`folio_expected_ref_count() != folio_ref_count()`) is
    /// [`ScanResult::PageCount`]; before 7.x one PTE must be writable
    /// ([`ScanResult::PageRo`]).
    fn collapse_scan_ptes(&self, table: TableFrame) -> Result<ScanResult, CowError> {
        let mut writable = false;
        for &raw in self.mem.table(table) {
            let e = PageTableEntry::from_raw(raw);
            if none_or_zero(&self.mem, e) {
                continue;
            }
            if !e.is_present() {
                return Err(CowError::NotModelled(
                    "MADV_COLLAPSE of a block with a swap entry: the swap-in of \
                     __collapse_huge_page_swapin is not modelled"
                        .to_string(),
                ));
            }
            writable |= e.is_writable();
            let folio = self.mem.page_folio(e.frame());
            if self.mem.swap.folio_swap(folio.pfn()).is_some() {
                return Err(CowError::NotModelled(
                    "MADV_COLLAPSE of a block with a folio in the swap cache: its release \
                     after the copy (free_swap_cache) is not modelled"
                        .to_string(),
                ));
            }
            let f = self.mem.folio(folio);
            if f.folio_ref_count() != f.folio_mapcount() {
                return Ok(ScanResult::PageCount);
            }
        }
        if self.cfg.collapse_needs_writable_pte() && !writable {
            return Ok(ScanResult::PageRo);
        }
        Ok(ScanResult::Succeed)
    }

    /// `collapse_huge_page` once the scan passed (steps 1-6 of the module doc).
    fn collapse_huge_page(
        &mut self,
        pid: u32,
        haddr: u64,
        (pmd_table, pmd_i): (TableFrame, usize),
        table: TableFrame,
    ) -> Result<ScanResult, CowError> {
        let batches = self.cfg.collapse_batches_ptes();
        let Self {
            procs, mem, events, ..
        } = self;
        let Some(new) = mem.alloc_folio(PMD_ORDER) else {
            events.emit(Event::ThpCollapseAllocFailed);
            return Ok(ScanResult::AllocHugePageFail);
        };
        let new_pfn = new.pfn();
        events.emit(Event::FolioAlloc {
            pfn: u64::from(new_pfn),
            order: PMD_ORDER,
        });
        events.emit(Event::ThpCollapseAlloc);
        let mm = proc_mut(procs, pid)?;
        let Some(vma) = mm
            .vmas
            .iter()
            .find(|v| v.contains(VirtAddr::new(haddr)))
            .copied()
        else {
            return Err(CowError::invariant(
                "collapse",
                format!("no VMA at {haddr:#x}"),
            ));
        };
        if !vma.anon_vma {
            // hugepage_vma_revalidate(expect_anon): SCAN_PAGE_ANON, the folio goes back.
            mem.folio_put_refs(new, 1, events);
            return Ok(ScanResult::PageAnon);
        }
        // pmdp_collapse_flush()
        mem.set_entry(pmd_table, pmd_i, PageTableEntry::from_raw(0));
        events.emit(Event::TlbFlush {
            asid: mm.asid,
            start: haddr,
            end: haddr + PMD_SIZE,
        });
        // __collapse_huge_page_isolate(): each large folio once (folio_isolate_lru).
        let mut isolated: Vec<FolioRef> = Vec::new();
        for i in 0..PMD_NR as usize {
            let e = mem.entry(table, i);
            if none_or_zero(mem, e) {
                continue;
            }
            let f = mem.page_folio(e.frame());
            if mem.folio(f).folio_test_large() && !isolated.contains(&f) {
                mem.folio_ref_add(f, 1);
                isolated.push(f);
            }
        }
        // __collapse_huge_page_copy(): page by page into the new folio.
        for i in 0..PMD_NR as usize {
            let e = mem.entry(table, i);
            let dst = new_pfn + i as u32;
            if none_or_zero(mem, e) {
                events.emit(Event::PagesZeroed {
                    pfn: u64::from(dst),
                    nr: 1,
                });
                continue;
            }
            let src = e.frame();
            mem.content[dst as usize] = mem.content[src as usize];
            events.emit(Event::PagesCopied {
                src: u64::from(src),
                dst: u64::from(dst),
                nr: 1,
            });
        }
        copy_succeeded(mem, events, mm, table, batches);
        for f in isolated {
            mem.folio_put_refs(f, 1, events); // folio_putback_lru()
        }
        // The emptied table becomes the new PMD's deposit; map_anon_folio_pmd_nopf().
        mem.deposit(pmd_table, pmd_i, table);
        mem.add_new_anon_rmap(new, mm.mm_id);
        mem.folio_add_lru(new);
        let mut pmd = PageTableEntry::of_frame(new_pfn, vma.page_prot() | PteFlags::HUGE).mkdirty();
        if vma.flags.contains(VmFlags::WRITE) {
            pmd = pmd.mkwrite();
        }
        mem.set_entry(pmd_table, pmd_i, pmd);
        Ok(ScanResult::Succeed)
    }
}

/// `__collapse_huge_page_copy_succeeded`: clears every PTE of the block; a none/zero one
/// adds a page to `MM_ANONPAGES` (the THP now backs it), a present one loses its rmap and
/// its reference (a `folio_pte_batch` of one large folio's consecutive pages at once where
/// the profile batches, one page at a time otherwise), a folio left partially mapped is
/// queued for deferred split.
fn copy_succeeded(
    mem: &mut PhysMem,
    events: &mut Events,
    mm: &mut Mm,
    table: TableFrame,
    batches: bool,
) {
    let mut i = 0;
    while i < PMD_NR as usize {
        let e = mem.entry(table, i);
        if none_or_zero(mem, e) {
            mm.rss_anon += 1;
            mem.set_entry(table, i, PageTableEntry::from_raw(0));
            i += 1;
            continue;
        }
        let pfn = e.frame();
        let f = mem.page_folio(pfn);
        let nr = if batches && mem.folio(f).folio_test_large() {
            mem.folio_pte_batch(table, i, PMD_NR as usize, e, f, true)
        } else {
            1
        };
        for j in i..i + nr {
            mem.set_entry(table, j, PageTableEntry::from_raw(0));
        }
        if mem.remove_rmap_ptes(f, pfn, nr as u32, mm.mm_id) {
            mem.deferred_split_folio(f, events);
        }
        mem.folio_put_refs(f, nr as u32, events);
        i += nr;
    }
}

#[cfg(test)]
mod tests {
    use super::ScanResult;
    use crate::{Machine, Profile, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;
    const M2: u64 = 2 << 20;

    fn order(m: &Machine, pid: u32, a: VirtAddr) -> u32 {
        let pfn = m.translate(pid, a).unwrap().pfn.unwrap();
        m.folio(pfn).unwrap().order
    }

    /// 512 small folios: one THP allocated, 512 folios freed (free frames unchanged), the
    /// content copied, the page count unchanged, no table allocated (the old one is the
    /// deposit).
    #[test]
    fn small_pages_collapse() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_12).unwrap();
        let a = m.mmap(1, M2).unwrap();
        m.write(1, a, M2, 3).unwrap();
        m.write(1, VirtAddr::new(a.as_u64() + K4), K4, 9).unwrap();
        let (free, tables) = (m.free_frames(), m.vmstat().nr_page_table_pages);
        assert_eq!(m.collapse(1, a, M2).unwrap(), ScanResult::Succeed);
        assert_eq!(order(&m, 1, a), 9);
        assert_eq!(m.read(1, a, 2 * K4).unwrap(), vec![3, 9]);
        assert_eq!(m.free_frames(), free);
        assert_eq!(m.vmstat().nr_page_table_pages, tables);
        assert_eq!(m.vmstat().nr_anon_pages, 512);
        assert_eq!(m.stats().thp_collapse_alloc, 1);
        m.check().unwrap();
    }

    /// A GUP reference makes the block `SCAN_PAGE_COUNT` (EAGAIN); nothing changes.
    #[test]
    fn ref_is_eagain() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, M2).unwrap();
        m.write(1, a, M2, 3).unwrap();
        m.ref_pages(1, a, K4).unwrap();
        let r = m.collapse(1, a, M2).unwrap();
        assert_eq!((r, r.errno()), (ScanResult::PageCount, Some("EAGAIN")));
        assert_eq!(order(&m, 1, a), 0);
        assert_eq!(m.stats().thp_collapse_alloc, 0);
        m.check().unwrap();
    }

    /// After fork every PTE is read-only: 6.12 refuses (`SCAN_PAGE_RO`), 6.15 collapses.
    #[test]
    fn read_only_block_by_profile() {
        for (profile, want) in [
            (Profile::V6_12, ScanResult::PageRo),
            (Profile::V6_15, ScanResult::Succeed),
        ] {
            let mut m = Machine::new(16 << 20, 4, profile).unwrap();
            let a = m.mmap(1, M2).unwrap();
            m.write(1, a, M2, 3).unwrap();
            let c = m.fork(1).unwrap();
            assert_eq!(m.collapse(1, a, M2).unwrap(), want);
            assert_eq!(m.read(c, a, K4).unwrap(), vec![3]);
            m.check().unwrap();
        }
    }

    /// A VMA without a whole aligned 2 MiB block is refused (`SCAN_VMA_CHECK`, EINVAL),
    /// whatever the range: a 1M mapping, even for one page of it.
    #[test]
    fn small_vma_is_refused() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 1 << 20).unwrap();
        m.write(1, a, K4, 3).unwrap();
        let r = m.collapse(1, a, K4).unwrap();
        assert_eq!((r, r.errno()), (ScanResult::VmaCheck, Some("EINVAL")));
        m.check().unwrap();
    }

    /// A PTE-mapped 64K folio is removed page by page on 6.12 (queued for deferred split
    /// once on the way) and as one batch on 6.15 (not queued); freed either way.
    #[test]
    fn mthp_removal_page_by_page_or_batched() {
        for (profile, deferred) in [(Profile::V6_12, 1), (Profile::V6_15, 0)] {
            let mut m = Machine::new(16 << 20, 4, profile).unwrap();
            m.set_thp_size(4, ThpSizeMode::Always).unwrap();
            let a = m.mmap(1, M2).unwrap();
            m.write(1, a, 16 * K4, 3).unwrap();
            assert_eq!(order(&m, 1, a), 4);
            assert_eq!(m.collapse(1, a, M2).unwrap(), ScanResult::Succeed);
            let s = m.stats();
            assert_eq!(s.split_deferred[2], deferred);
            assert_eq!((s.nr_anon[2], s.nr_anon_partially_mapped[2]), (0, 0));
            m.check().unwrap();
        }
    }
}
