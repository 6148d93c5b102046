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

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_NR, PMD_SIZE};
use crate::error::CowError;
use crate::events::{Event, Events};
use crate::fault::{alloc_table, split_huge_pmd};
use crate::kernel::Kernel;
use crate::mm::{Mm, VmFlags, Vma};
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::{EntryKind, PageTableEntry, SwapEntry, SWP_EXCLUSIVE};
use crate::paging::table::Paging;
use crate::physmem::{PhysMem, TableFrame};
use crate::swap::entry_slot;

/// The copy of one parent's page tables into a child's (`copy_page_range` over the VMAs
/// that need it): physical memory and the paging geometry, nothing else.
#[derive(Debug)]
struct ForkCopy<'a> {
    mem: &'a mut PhysMem,
    /// The event channel (a pinned page's copy, a pinned THP's split).
    events: &'a mut Events,
    /// `MMF_HAS_PINNED` of the parent: only then can a page need copying at fork
    /// (`folio_needs_cow_for_dma`), so only then the per-page path runs.
    has_pinned: bool,
    /// The parent's mm id and address-space id (a pinned THP's PMD is split in it).
    parent: (u32, u64),
    /// The VMA being copied (`dst_vma`: its protection for a copied page's PTE).
    vma: Option<Vma>,
    /// The child's mm id (`dst_vma->vm_mm`).
    child_id: u32,
    /// The child's table at each depth of the walk (`dst_pgd`, `dst_p4d`, ...).
    dst: [TableFrame; 5],
    /// The child's new `MM_ANONPAGES`.
    rss: u64,
    /// Present PTEs copied (zero-page PTEs included), for the `Fork` event.
    ptes: u64,
    /// Huge PMDs copied (the huge zero PMD included).
    pmds: u64,
}

/// Counts the child tables (and PMD deposits) a copy allocates; `seen` holds the child
/// tables already counted, by depth and the address their span starts at.
struct CountCopy<'a> {
    mem: &'a PhysMem,
    seen: BTreeSet<(usize, u64)>,
    n: u64,
    /// `MMF_HAS_PINNED` of the parent.
    has_pinned: bool,
    /// The pages `copy_present_page` will allocate (pinned anon-exclusive pages).
    pages: u64,
}

impl CountCopy<'_> {
    /// Whether fork must copy page `p` now: `folio_try_dup_anon_rmap_*` refuses an
    /// anon-exclusive page of a folio that may be pinned in an mm with `MMF_HAS_PINNED`.
    fn must_copy(&self, p: u32) -> bool {
        self.has_pinned
            && self.mem.anon_exclusive(p)
            && self.mem.folio_maybe_dma_pinned(self.mem.page_folio(p))
    }
}

impl PageWalk for CountCopy<'_> {
    #[inline]
    fn mem(&self) -> &PhysMem {
        self.mem
    }

    fn upper_entry(&mut self, at: EntryAt) -> Result<(), CowError> {
        self.n += u64::from(self.seen.insert((at.depth, at.addr & !(at.span - 1))));
        Ok(())
    }

    fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
        // The deposit table, or for a pinned THP the child's PTE table after the split and
        // a copy of each of its pages (the head's AE goes to every PTE).
        self.n += 1;
        if !at.entry.is_special() && self.must_copy(at.entry.frame()) {
            self.pages += PMD_NR;
        }
        Ok(())
    }

    fn pte_table(&mut self, at: EntryAt, pte_table: TableFrame) -> Result<(), CowError> {
        self.n += u64::from(self.seen.insert((at.depth, at.addr & !(at.span - 1))));
        if self.has_pinned {
            let first = ((at.addr >> 12) & 511) as usize;
            let last = first + ((at.next - at.addr) >> 12) as usize;
            for &raw in &self.mem.table(pte_table)[first..last] {
                let e = PageTableEntry::from_raw(raw);
                if e.is_present() && !e.is_special() && self.must_copy(e.frame()) {
                    self.pages += 1;
                }
            }
        }
        Ok(())
    }
}

/// `copy_p4d_range`/`copy_pud_range`/`copy_pmd_range` as a walk of the parent's tables:
/// each upper entry gets the child's table below it, each huge PMD `copy_huge_pmd`, each
/// PTE table `copy_pte_range`.
impl PageWalk for ForkCopy<'_> {
    #[inline]
    fn mem(&self) -> &PhysMem {
        self.mem
    }

    fn upper_entry(&mut self, at: EntryAt) -> Result<(), CowError> {
        self.dst[at.depth + 1] = self.child_table(self.dst[at.depth], at.index)?;
        Ok(())
    }

    fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
        let dst = self.dst[at.depth];
        if self.has_pinned && !at.entry.is_special() {
            let head = at.entry.frame();
            let folio = self.mem.page_folio(head);
            if self.mem.anon_exclusive(head) && self.mem.folio_maybe_dma_pinned(folio) {
                // copy_huge_pmd: folio_try_dup_anon_rmap_pmd refuses a maybe-pinned
                // exclusive THP; "split and retry the fault on PTEs" (__split_huge_pmd in
                // the parent, -EAGAIN), then copy_pmd_range goes on with copy_pte_range.
                let vma = self
                    .vma
                    .ok_or_else(|| CowError::invariant("fork", "no VMA"))?;
                let haddr = VirtAddr::new(at.addr & !(PMD_SIZE - 1));
                split_huge_pmd(
                    self.mem,
                    self.events,
                    self.parent,
                    &vma,
                    (at.table, at.index),
                    haddr,
                )?;
                let t = TableFrame::of(self.mem.entry(at.table, at.index));
                let child = self.child_table(dst, at.index)?;
                self.rss += self.copy_pte_range(t, child, at.addr, at.next, self.child_id)?;
                return Ok(());
            }
        }
        self.rss += self.copy_huge_pmd(at.table, dst, at.index, self.child_id)?;
        self.pmds += 1;
        Ok(())
    }

    fn pte_table(&mut self, at: EntryAt, pte_table: TableFrame) -> Result<(), CowError> {
        let child = self.child_table(self.dst[at.depth], at.index)?;
        self.rss += self.copy_pte_range(pte_table, child, at.addr, at.next, self.child_id)?;
        Ok(())
    }
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
        // vma_needs_copy: only VMAs with an anon_vma (a WIPEONFORK child VMA has none).
        let needs_copy = || copied.iter().filter(|v| v.anon_vma);
        let has_pinned = parent.has_pinned;
        let parent_ids = (parent.mm_id, parent.asid);
        let mut count = CountCopy {
            mem: &self.mem,
            seen: BTreeSet::new(),
            n: 1, // the child's PGD
            has_pinned,
            pages: 0,
        };
        for v in needs_copy() {
            walk_page_range(
                &mut count,
                self.paging,
                parent_pgd,
                v.start.as_u64(),
                v.end.as_u64(),
            )?;
        }
        let (need, pages) = (count.n, count.pages);
        if self.mem.nr_free() < need + pages {
            return Err(CowError::OutOfMemory);
        }
        // alloc_pid, after copy_mm in copy_process: pids 1..pid_max-1 can be in use at once.
        // Live processes are the MM ids in use (each mm holds one until it exits). The
        // kernel finds the pids gone after the copy and undoes it (the parent keeps its
        // write-protected PTEs); the check comes first here so that a failed fork changes
        // nothing (DESIGN.md "Errors").
        let processes = self.used_mm_ids.len() as u32;
        if processes >= self.pid_max - 1 {
            return Err(CowError::ProcessLimit {
                processes,
                pid_max: self.pid_max,
            });
        }
        self.mem.reserve_tables(need);
        let mm_id = lowest_free_mm_id(&self.used_mm_ids);
        let pgd = alloc_table(&mut self.mem)?;
        let mut f = ForkCopy {
            mem: &mut self.mem,
            events: &mut self.events,
            has_pinned,
            parent: parent_ids,
            vma: None,
            child_id: mm_id,
            dst: [pgd; 5],
            rss: 0,
            ptes: 0,
            pmds: 0,
        };
        for v in needs_copy() {
            f.vma = Some(*v);
            walk_page_range(
                &mut f,
                self.paging,
                parent_pgd,
                v.start.as_u64(),
                v.end.as_u64(),
            )?;
        }
        let (rss, ptes, pmds) = (f.rss, f.ptes, f.pmds);
        let child_pid = self.procs.len() as u32 + 1;
        let parent = self.mm(pid)?.asid;
        let asid = self.new_asid();
        self.used_mm_ids.insert(mm_id);
        self.procs.push(Some(Mm {
            holds: Vec::new(),
            has_pinned: false,
            pid: child_pid,
            mm_id,
            asid,
            pgd,
            vmas: copied,
            cursor,
            rss_anon: rss,
        }));
        // dup_mmap ends with flush_tlb_mm(oldmm): the parent's entries were write-protected.
        self.events.emit(Event::TlbFlush {
            asid: parent,
            start: 0,
            end: u64::MAX,
        });
        self.events.emit(Event::Fork {
            parent,
            child: asid,
            ptes,
            pmds,
        });
        Ok(child_pid)
    }
}

/// The child's entry in `copy_present_ptes` for a COW mapping: a writable parent entry
/// (`writable`: any of the batch's) is write-protected in the child as in the parent
/// (`pte_wrprotect` after `pte_mkwrite` of the batch), and the child's entry is old
/// (`pte_mkold`). Shared by the batch copy and the order-0 fast path
/// (`PhysMem::copy_small_ptes`).
#[inline]
pub(crate) const fn cow_child_pte(pte: PageTableEntry, writable: bool) -> PageTableEntry {
    let v = if writable {
        pte.mkwrite().wrprotect()
    } else {
        pte
    };
    v.mkold()
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
            let folio = self.mem.page_folio(ent.frame());
            self.mem.folio_ref_add(folio, 1);
            self.mem.dup_anon_rmap_pmd(folio, child_id);
            rss = PMD_NR;
        }
        self.mem.set_entry(src, idx, ent.wrprotect());
        self.mem.set_entry(dst, idx, ent.wrprotect().mkold());
        self.mem.deposit(dst, idx, t);
        Ok(rss)
    }

    /// `copy_pte_range` → `copy_present_ptes` (KS §3.3), without swap entries; in an mm
    /// with `MMF_HAS_PINNED`, [`Self::copy_pte_range_pinned`].
    fn copy_pte_range(
        &mut self,
        src: TableFrame,
        dst: TableFrame,
        a: u64,
        e: u64,
        child_id: u32,
    ) -> Result<u64, CowError> {
        if self.has_pinned {
            return self.copy_pte_range_pinned(src, dst, a, e, child_id);
        }
        Ok(self.copy_pte_range_unpinned(src, dst, a, e, child_id))
    }

    /// `copy_pte_range` of an mm that never pinned: no page can need a copy.
    fn copy_pte_range_unpinned(
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
            self.ptes += pages;
            i = next;
            if i == end_i {
                break;
            }
            let pte = self.mem.entry(src, i);
            if let EntryKind::Swap(s) = pte.kind() {
                self.copy_swap_pte(src, dst, i, s);
                i += 1;
                continue;
            }
            if pte.is_special() {
                // vm_normal_page() == NULL: copy the entry (never writable).
                self.mem.set_entry(dst, i, pte.mkold());
                self.ptes += 1;
                i += 1;
                continue;
            }
            let p = pte.frame();
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
            self.ptes += nr as u64;
            if any_writable {
                self.mem.wrprotect_ptes(src, i, nr);
            }
            self.mem
                .set_ptes(dst, i, nr, cow_child_pte(pte, any_writable));
            i += nr;
        }
        rss
    }
}

impl ForkCopy<'_> {
    /// `copy_nonpresent_pte` for a swap entry (issue 16): the child gets the entry, the
    /// slot one more reference (`swap_duplicate`), and the exclusive bit is cleared in both
    /// ("Mark the swap entry as shared": `pte_swp_clear_exclusive`). Not a present PTE: not
    /// counted in the `Fork` event, and no RSS of anonymous pages.
    fn copy_swap_pte(&mut self, src: TableFrame, dst: TableFrame, i: usize, s: SwapEntry) {
        self.mem.swap.dup(entry_slot(s));
        let shared = PageTableEntry::from_raw(self.mem.entry(src, i).raw() & !SWP_EXCLUSIVE.bits());
        self.mem.set_entry(src, i, shared);
        self.mem.set_entry(dst, i, shared);
    }

    /// `copy_pte_range` of an mm with `MMF_HAS_PINNED`: `copy_present_ptes` asks
    /// `folio_try_dup_anon_rmap_ptes` for each batch, which refuses (`-EBUSY`) when the
    /// folio may be pinned (`folio_needs_cow_for_dma`: `MMF_HAS_PINNED` and
    /// `folio_maybe_dma_pinned`) and a page of the batch is anon-exclusive. The batch then
    /// falls back page by page (`-EAGAIN`, a preallocated page, no batching while it is
    /// held; 6.1 has no batching at all): an anon-exclusive page is copied into the child
    /// at once (`copy_present_page`), the others are shared as usual. No fast path: this
    /// runs only where a pin was ever taken.
    fn copy_pte_range_pinned(
        &mut self,
        src: TableFrame,
        dst: TableFrame,
        a: u64,
        e: u64,
        child_id: u32,
    ) -> Result<u64, CowError> {
        let mut i = Paging::index(VirtAddr::new(a), 12);
        let end_i = i + ((e - a) / PAGE_SIZE) as usize;
        let mut rss = 0;
        while i < end_i {
            let pte = self.mem.entry(src, i);
            if pte.is_none() {
                i += 1;
                continue;
            }
            if let EntryKind::Swap(s) = pte.kind() {
                self.copy_swap_pte(src, dst, i, s);
                i += 1;
                continue;
            }
            self.ptes += 1;
            if pte.is_special() {
                self.mem.set_entry(dst, i, pte.mkold());
                i += 1;
                continue;
            }
            let p = pte.frame();
            let folio = self.mem.page_folio(p);
            let nr = if self.mem.folio(folio).folio_test_large() && end_i - i > 1 {
                self.mem.folio_pte_batch(src, i, end_i, pte, folio, false)
            } else {
                1
            };
            self.ptes += nr as u64 - 1;
            rss += nr as u64;
            let pinned = self.mem.folio_maybe_dma_pinned(folio);
            if pinned && (p..p + nr as u32).any(|q| self.mem.anon_exclusive(q)) {
                for j in 0..nr {
                    let q = p + j as u32;
                    if self.mem.anon_exclusive(q) {
                        self.copy_present_page(dst, i + j, q)?;
                    } else {
                        self.share_ptes(src, dst, i + j, 1, child_id);
                    }
                }
            } else {
                self.share_ptes(src, dst, i, nr, child_id);
            }
            i += nr;
        }
        Ok(rss)
    }

    /// The sharing half of `copy_present_ptes` for `nr` PTEs of one folio from entry `i`:
    /// references and `folio_try_dup_anon_rmap_ptes` (AE cleared), both sides
    /// write-protected where any was writable, the child's entries old.
    fn share_ptes(&mut self, src: TableFrame, dst: TableFrame, i: usize, nr: usize, child: u32) {
        let pte = self.mem.entry(src, i);
        let p = pte.frame();
        let folio = self.mem.page_folio(p);
        let any_writable = self.mem.any_writable(src, i, nr);
        self.mem.folio_ref_add(folio, nr as i32);
        self.mem.dup_anon_rmap_ptes(folio, p, nr as u32, child);
        if any_writable {
            self.mem.wrprotect_ptes(src, i, nr);
        }
        self.mem
            .set_ptes(dst, i, nr, cow_child_pte(pte, any_writable));
    }

    /// `copy_present_page` (mm/memory.c): the child gets its own copy of the parent's
    /// pinned page `src_page` at once, a new exclusive order-0 folio
    /// (`folio_add_new_anon_rmap(RMAP_EXCLUSIVE)`, `folio_add_lru_vma`) mapped by
    /// `maybe_mkwrite(pte_mkdirty(mk_pte(...)))`; the parent's entry stays as it was
    /// (writable if it was). The page is the `folio_prealloc` of the `-EAGAIN` retry,
    /// allocated right before the copy.
    fn copy_present_page(
        &mut self,
        dst: TableFrame,
        i: usize,
        src_page: u32,
    ) -> Result<(), CowError> {
        let vma = self
            .vma
            .ok_or_else(|| CowError::invariant("fork", "no VMA"))?;
        let new = self.mem.alloc_folio(0).ok_or(CowError::OutOfMemory)?;
        let d = u64::from(new.pfn());
        self.events.emit(Event::FolioAlloc { pfn: d, order: 0 });
        self.events.emit(Event::PagesCopied {
            src: u64::from(src_page),
            dst: d,
            nr: 1,
        });
        self.mem.content[new.pfn() as usize] = self.mem.content[src_page as usize];
        self.mem.add_new_anon_rmap(new, self.child_id);
        self.mem.folio_add_lru(new);
        let mut e = PageTableEntry::of_frame(new.pfn(), vma.page_prot()).mkdirty();
        if vma.flags.contains(VmFlags::WRITE) {
            e = e.mkwrite();
        }
        self.mem.set_entry(dst, i, e);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Advice, CowError, Machine, Profile, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    #[test]
    fn fork_past_pid_max_fails_and_changes_nothing() {
        let mut m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 1).unwrap();
        m.set_pid_max(crate::PID_MAX_MIN.into()).unwrap();
        for _ in 0..crate::PID_MAX_MIN - 2 {
            m.fork(1).unwrap();
        }
        let (free, pids) = (m.free_frames(), m.pids());
        let refcount = m
            .folio(m.translate(1, a).unwrap().pfn.unwrap())
            .unwrap()
            .refcount;
        let err = m.fork(1).unwrap_err();
        assert_eq!(
            err,
            CowError::ProcessLimit {
                processes: crate::PID_MAX_MIN - 1,
                pid_max: crate::PID_MAX_MIN
            }
        );
        assert_eq!(
            err.to_string(),
            "fork: no free pid (EAGAIN): 300 processes, the most pid_max 301 allows"
        );
        assert_eq!((m.free_frames(), m.pids()), (free, pids));
        let f = m.folio(m.translate(1, a).unwrap().pfn.unwrap()).unwrap();
        assert_eq!(f.refcount, refcount);
        m.check().unwrap();
        // A process that exits frees its slot; raising pid_max makes room too.
        m.exit(2).unwrap();
        let child = m.fork(1).unwrap();
        assert_eq!(child, crate::PID_MAX_MIN); // pids are not reused
        assert!(matches!(m.fork(1), Err(CowError::ProcessLimit { .. })));
        m.set_pid_max(u64::from(crate::PID_MAX_MIN) + 1).unwrap();
        m.fork(child).unwrap();
        m.check().unwrap();
    }

    #[test]
    fn pid_max_range() {
        let mut m = Machine::new(4 << 20, 4, Profile::V6_15).unwrap();
        assert_eq!(m.pid_max(), crate::PID_MAX_LIMIT);
        for bad in [0, 300, u64::from(crate::PID_MAX_LIMIT) + 1, u64::MAX] {
            let e = m.set_pid_max(bad).unwrap_err();
            assert_eq!(
                e,
                CowError::InvalidArgument(format!("pid_max must be in [301, 4194304], not {bad}"))
            );
        }
        assert_eq!(m.pid_max(), crate::PID_MAX_LIMIT);
    }

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
