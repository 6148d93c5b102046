//! Folio splits by the deferred-split shrinker (issue 16): `drop_caches`, the reverse map it
//! needs, and `split_folio`.
//!
//! * `Kernel::drop_caches` (public as `Machine::drop_caches`) models writing 2 to
//!   `/proc/sys/vm/drop_caches`: `drop_slab()` runs the shrinkers, among them `deferred_split_scan()` (`mm/huge_memory.c`), which walks
//!   the deferred-split queue (`PhysMem::deferred_queue`) and splits each partially mapped
//!   folio, and (6.12+) each PMD THP queued at its fault that `thp_underused` finds
//!   underused; a fully used one leaves the queue.
//! * `Kernel::rmap_walk` answers which `(mm, address)` map a folio, the question
//!   `rmap_walk_anon` answers from `folio->mapping` (the `anon_vma`) and `folio->index`:
//!   here, a walk of the page tables of every VMA that has an `anon_vma`, in pid order and
//!   address order. It is the one place a split (and later swap-out and collapse) finds the
//!   mappings of a folio in every process; `check()` holds that it finds exactly the entries
//!   that the folio's counters account for.
//! * `Kernel::split_folio` is `split_folio()` → `__folio_split` to order 0 for an anonymous
//!   folio: `can_split_folio`, the PMD mappings split first (`unmap_folio` with
//!   `TTU_SPLIT_HUGE_PMD`), the frames carved into order-0 folios
//!   (`PhysMem::split_folio_frames`), the zero-filled pages remapped to the shared zero page
//!   (6.12+, `try_to_map_unused_to_zeropage`), and the pages nothing maps freed, tails first
//!   and the head last (`free_page_and_swap_cache` of the tails, then the shrinker's
//!   `folio_put`).

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_ORDER, PMD_SIZE};
use crate::error::CowError;
use crate::events::Event;
use crate::fault::split_huge_pmd;
use crate::folio::FolioRef;
use crate::kernel::Kernel;
use crate::paging::entry::{PageTableEntry, PteFlags};
use crate::paging::walk::{self, PmdLoc};
use crate::physmem::TableFrame;

/// `khugepaged_max_ptes_none` as the kernel runner sets it (0, so that khugepaged can never
/// collapse behind a scenario's back): `thp_underused` then finds a THP underused as soon as
/// one of its pages is zero-filled. The kernel's default (511) would make it never.
pub const MAX_PTES_NONE: u32 = 0;

/// One entry mapping a folio, as the reverse map finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RmapHit {
    /// The process.
    pub pid: u32,
    /// The address the entry maps (the PMD's start for a PMD mapping).
    pub addr: VirtAddr,
    /// A huge PMD maps the whole folio there (else one PTE maps one page).
    pub pmd: bool,
}

impl Kernel {
    /// The `rmap_walk_anon` of every folio whose head is in `heads`: each entry that maps
    /// one of them, by head, in pid order then address order. Only VMAs with an `anon_vma`
    /// can map anonymous folios (`anon_vma_prepare` before the first one is mapped), as only
    /// they are on an `anon_vma`'s interval tree.
    #[must_use]
    pub(crate) fn rmap_walk(&self, heads: &BTreeSet<u32>) -> BTreeMap<u32, Vec<RmapHit>> {
        let mut out: BTreeMap<u32, Vec<RmapHit>> = BTreeMap::new();
        if heads.is_empty() {
            return out;
        }
        let mem = &self.mem;
        for mm in self.procs.iter().flatten() {
            for v in mm.vmas.iter().filter(|v| v.anon_vma) {
                let (start, end) = (v.start.as_u64(), v.end.as_u64());
                let mut a = start;
                while a < end {
                    let next = ((a | (PMD_SIZE - 1)) + 1).min(end);
                    let (t, i) = match walk::pmd_loc(mem, self.paging, mm.pgd, a) {
                        PmdLoc::Hole(h) => {
                            a = h.max(next);
                            continue;
                        }
                        PmdLoc::Found(t, i) => (t, i),
                    };
                    let e = mem.entry(t, i);
                    if e.is_huge() {
                        if !e.is_special() && heads.contains(&e.frame()) {
                            out.entry(e.frame()).or_default().push(RmapHit {
                                pid: mm.pid,
                                addr: VirtAddr::new(a & !(PMD_SIZE - 1)),
                                pmd: true,
                            });
                        }
                    } else if e.is_present() {
                        let pt = TableFrame::of(e);
                        let mut p = a;
                        while p < next {
                            let pe = mem.entry(pt, ((p >> 12) & 511) as usize);
                            if pe.is_present() && !pe.is_special() && mem.is_folio(pe.frame()) {
                                let h = mem.page_folio(pe.frame()).pfn();
                                if heads.contains(&h) {
                                    out.entry(h).or_default().push(RmapHit {
                                        pid: mm.pid,
                                        addr: VirtAddr::new(p),
                                        pmd: false,
                                    });
                                }
                            }
                            p += PAGE_SIZE;
                        }
                    }
                    a = next;
                }
            }
        }
        out
    }

    /// `drop_caches` (2): the deferred-split shrinker walks the queue once, in ascending
    /// head-frame order (DESIGN.md "Splits"). A partially mapped folio is split; one that
    /// cannot be split stays queued and counts `split_failed` once (the kernel counts it
    /// once per `drop_slab()` pass, and how many passes run depends on what the other
    /// caches free: 1 to 3 in the kernel runner's guest, so the format does not print these
    /// counters). A folio queued at its fault (6.12+) is split if underused, and leaves the
    /// queue either way.
    ///
    /// # Errors
    /// [`CowError::Invariant`] if a PMD mapping has no deposited table.
    pub(crate) fn drop_caches(&mut self) -> Result<(), CowError> {
        if self.mem.deferred_queue.is_empty() {
            return Ok(());
        }
        let queue: BTreeSet<u32> = self.mem.deferred_queue.clone();
        let mut hits = self.rmap_walk(&queue);
        for head in queue {
            let folio = FolioRef::new_head(head);
            let partially = self.mem.folio_test_partially_mapped(folio);
            if !partially && !self.thp_underused(folio) {
                self.mem.deferred_queue.remove(&head);
                continue;
            }
            let mappings = hits.remove(&head).unwrap_or_default();
            if !self.can_split_folio(folio) {
                if !partially {
                    self.mem.deferred_queue.remove(&head);
                }
                self.events.emit(Event::SplitFailed {
                    pfn: u64::from(head),
                    order: self.mem.order(head),
                });
                continue;
            }
            self.split_folio(folio, &mappings)?;
        }
        Ok(())
    }

    /// `thp_underused` (6.12): a PMD-size folio with more than [`MAX_PTES_NONE`] zero-filled
    /// pages (a page's content is its first word in this model, the rest being zero).
    fn thp_underused(&self, folio: FolioRef) -> bool {
        let head = folio.pfn();
        let order = self.mem.order(head);
        if order != PMD_ORDER {
            return false;
        }
        let zero = (head..head + (1 << order))
            .filter(|&p| self.mem.content[p as usize] == 0)
            .count();
        zero > MAX_PTES_NONE as usize
    }

    /// `can_split_folio(folio, 1, NULL)` as the shrinker asks it: mapped, and no reference
    /// but its mappings (the shrinker's own reference is left out of both sides).
    fn can_split_folio(&self, folio: FolioRef) -> bool {
        let f = self.mem.folio(folio);
        let mapcount = f.folio_mapcount();
        // The swap cache's references are expected ones (`extra_pins`).
        let cache = if self.mem.swap.folio_swap(folio.pfn()).is_some() {
            f.folio_nr_pages() as i32
        } else {
            0
        };
        mapcount > 0 && f.folio_ref_count() == mapcount + cache
    }

    /// Splits every PMD mapping among `mappings` (the reverse map's, of one folio of `nr`
    /// pages) into PTEs (`split_huge_pmd_address`), and returns the mappings as PTE
    /// mappings, in the reverse map's order: `unmap_folio` before a split, `try_to_unmap`
    /// (`TTU_SPLIT_HUGE_PMD`) before a swap-out.
    pub(crate) fn split_pmd_mappings(
        &mut self,
        mappings: &[RmapHit],
        nr: u32,
    ) -> Result<Vec<RmapHit>, CowError> {
        let mut ptes: Vec<RmapHit> = Vec::with_capacity(mappings.len());
        for h in mappings {
            if !h.pmd {
                ptes.push(*h);
                continue;
            }
            let mm = self.procs[h.pid as usize - 1]
                .as_ref()
                .ok_or_else(|| CowError::invariant("rmap", "a mapping in an exited mm"))?;
            let vma = &mm.vmas[mm
                .find_vma(h.addr)
                .ok_or_else(|| CowError::invariant("rmap", "a mapping outside every VMA"))?];
            let PmdLoc::Found(t, i) =
                walk::pmd_loc(&self.mem, self.paging, mm.pgd, h.addr.as_u64())
            else {
                return Err(CowError::invariant("rmap", "a PMD mapping without a PMD"));
            };
            split_huge_pmd(
                &mut self.mem,
                &mut self.events,
                (mm.mm_id, mm.asid),
                vma,
                (t, i),
                h.addr,
            )?;
            for j in 0..u64::from(nr) {
                ptes.push(RmapHit {
                    pid: h.pid,
                    addr: VirtAddr::new(h.addr.as_u64() + j * PAGE_SIZE),
                    pmd: false,
                });
            }
        }
        Ok(ptes)
    }

    /// `split_folio()` of an anonymous large folio that [`Self::can_split_folio`] accepted,
    /// whose mappings the reverse map found (`mappings`).
    pub(crate) fn split_folio(
        &mut self,
        folio: FolioRef,
        mappings: &[RmapHit],
    ) -> Result<(), CowError> {
        let head = folio.pfn();
        let order = self.mem.order(head);
        let nr = 1u32 << order;
        // unmap_folio: PMD mappings are split first (split_huge_pmd_address, freeze), so
        // that every page is mapped by PTEs; the folio's counters are then those of PTEs.
        let mut ptes = self.split_pmd_mappings(mappings, nr)?;
        ptes.sort_unstable();
        if self.mem.folio_test_partially_mapped(folio) {
            self.events.emit(Event::DeferredUnqueue {
                pfn: u64::from(head),
                order,
            });
        }
        self.mem.deferred_queue.remove(&head);
        self.events.emit(Event::Split {
            pfn: u64::from(head),
            order,
        });
        let cached = self.mem.swap.cache.get(&head).copied();
        self.mem.split_folio_frames(folio);
        if let Some(c) = cached {
            // __split_huge_page of a folio in the swap cache: each page keeps its slot in
            // the cache, with one cache reference (issue 16).
            self.mem.swap.cache.remove(&head);
            for i in 0..nr {
                let p = head + i;
                self.mem.folio_ref_add(FolioRef::new_head(p), 1);
                self.mem.swap.add_to_cache(p, c.slot + i, 1, 0, c.dirty);
            }
        }
        if self.cfg.queues_pmd_thp_at_fault() {
            self.map_unused_to_zeropage(head, nr, &ptes)?;
        }
        // __split_huge_page frees the tails nothing maps; the shrinker's folio_put the head.
        for p in (head + 1..head + nr).chain(core::iter::once(head)) {
            if self.mem.folio(FolioRef::new_head(p)).folio_ref_count() == 0 {
                self.mem.free_folio(p);
                self.events.emit(Event::FolioFree {
                    pfn: u64::from(p),
                    order: 0,
                });
            }
        }
        Ok(())
    }

    /// `remap_page(folio, nr, RMP_USE_SHARED_ZEROPAGE)`'s `try_to_map_unused_to_zeropage`:
    /// each PTE of a split page that is zero-filled maps the shared zero page instead
    /// (`pte_mkspecial(pfn_pte(zero_pfn, vm_page_prot))`, `MM_ANONPAGES` − 1), so the page
    /// loses that mapping and its reference.
    fn map_unused_to_zeropage(
        &mut self,
        head: u32,
        nr: u32,
        ptes: &[RmapHit],
    ) -> Result<(), CowError> {
        for h in ptes {
            let Some(mm) = self.procs[h.pid as usize - 1].as_mut() else {
                continue;
            };
            let Some(leaf) = walk::find_leaf(&self.mem, self.paging, mm.pgd, h.addr) else {
                continue;
            };
            let p = leaf.entry.frame();
            if !(head..head + nr).contains(&p) || self.mem.content[p as usize] != 0 {
                continue;
            }
            let vi = mm
                .find_vma(h.addr)
                .ok_or_else(|| CowError::invariant("rmap", "a mapping outside every VMA"))?;
            let prot = mm.vmas[vi].page_prot();
            let z = PageTableEntry::of_frame(self.mem.zero_pfn, prot | PteFlags::SPECIAL);
            self.mem.set_entry(leaf.table, leaf.index, z);
            let f = FolioRef::new_head(p);
            let partial = self.mem.remove_rmap_ptes(f, p, 1, mm.mm_id);
            debug_assert!(!partial);
            self.mem.folio_ref_add(f, -1);
            mm.rss_anon -= 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::{Advice, Machine, Pfn, Profile, ThpMode, VirtAddr};

    const K4: u64 = 4096;
    const M1: u64 = 1 << 20;

    /// A machine with 2M THPs always and one 2M mapping fully written (one PMD THP).
    fn pmd_machine(profile: Profile, written: u64) -> (Machine, VirtAddr) {
        let mut m = Machine::new(64 << 20, 4, profile).unwrap();
        m.set_thp_enabled(ThpMode::Always);
        let a = m.mmap(1, 2 * M1).unwrap();
        m.write(1, a, written, 1).unwrap();
        (m, a)
    }

    fn pfn(m: &Machine, pid: u32, a: VirtAddr) -> Pfn {
        m.translate(pid, a).unwrap().pfn.unwrap()
    }

    /// Half of a PMD THP dropped: the madvise splits the PMD (the folio stays whole,
    /// partially mapped), `drop_caches` splits the folio: 256 order-0 folios on the same
    /// frames, each with refcount 1, and the 256 dropped pages freed.
    #[test]
    fn a_partially_mapped_thp_is_split_in_place() {
        for profile in [Profile::V6_1, Profile::V6_12, Profile::V6_15] {
            let (mut m, a) = pmd_machine(profile, 2 * M1);
            let head = pfn(&m, 1, a);
            m.madvise(1, a.checked_add(M1).unwrap(), M1, Advice::DontNeed)
                .unwrap();
            let free = m.free_frames();
            assert_eq!(m.folio(head).unwrap().order, 9);
            m.drop_caches().unwrap();
            let s = m.stats();
            assert_eq!((s.split[7], s.thp_split_page, s.nr_anon[7]), (1, 1, 0));
            assert_eq!(m.free_frames(), free + 256);
            let last = a.checked_add(M1 - K4).unwrap();
            let f = m.folio(pfn(&m, 1, last)).unwrap();
            assert_eq!((f.order, f.refcount, f.pfn), (0, 1, head.as_u64() + 255));
            assert_eq!(m.rss_anon(1).unwrap(), 256);
            m.check().unwrap();
        }
    }

    /// The child's PMD keeps the folio whole until it exits; then the folio is partially
    /// mapped, split by `drop_caches`, and the parent's write to a page fork left read-only
    /// reuses it (an order-0 folio mapped once). Without the split 6.12 would copy.
    #[test]
    fn after_the_split_a_write_reuses() {
        let (mut m, a) = pmd_machine(Profile::V6_12, 2 * M1);
        let c = m.fork(1).unwrap();
        m.madvise(1, a.checked_add(M1).unwrap(), M1, Advice::DontNeed)
            .unwrap();
        assert_eq!(m.stats().thp_deferred_split_page, 0); // C's PMD maps every page
        m.exit(c).unwrap();
        assert_eq!(m.stats().thp_deferred_split_page, 1);
        m.drop_caches().unwrap();
        let before = pfn(&m, 1, a);
        m.write(1, a, K4, 2).unwrap();
        assert_eq!(pfn(&m, 1, a), before);
        assert_eq!((m.stats().pgreuse, m.stats().cow_copy), (1, 0));
        m.check().unwrap();
    }

    /// 6.12+: a THP written in one page is queued at its fault and underused (511 zero-filled
    /// pages): `drop_caches` splits it, maps the 511 pages to the zero page and frees them.
    /// 6.1 queues nothing at fault: the THP stays.
    #[test]
    fn an_underused_thp_is_split_on_6_12() {
        for (profile, split) in [(Profile::V6_1, false), (Profile::V6_12, true)] {
            let (mut m, a) = pmd_machine(profile, K4);
            let free = m.free_frames();
            m.drop_caches().unwrap();
            let s = m.stats();
            assert_eq!(s.thp_split_page, u64::from(split));
            if split {
                assert_eq!(s.thp_split_pmd, 1);
                assert_eq!(m.free_frames(), free + 511);
                assert_eq!(m.rss_anon(1).unwrap(), 1);
                let t = m.translate(1, a.checked_add(K4).unwrap()).unwrap();
                assert_eq!(t.pfn.unwrap().as_u64(), u64::from(m.k.mem.zero_pfn));
            } else {
                assert_eq!(m.folio(pfn(&m, 1, a)).unwrap().order, 9);
            }
            m.check().unwrap();
        }
    }

    /// A `ref` is a reference beyond the mappings: the split is refused once per
    /// `drop_caches` (`split_failed`), the folio stays whole and queued; after `unref` it is
    /// split.
    #[test]
    fn a_reference_blocks_the_split() {
        let (mut m, a) = pmd_machine(Profile::V6_15, 2 * M1);
        m.ref_pages(1, a, K4).unwrap();
        m.madvise(1, a.checked_add(M1).unwrap(), M1, Advice::DontNeed)
            .unwrap();
        m.drop_caches().unwrap();
        m.drop_caches().unwrap();
        let s = m.stats();
        assert_eq!(
            (s.split_failed[7], s.thp_split_page_failed, s.split[7]),
            (2, 2, 0)
        );
        assert_eq!(m.folio(pfn(&m, 1, a)).unwrap().order, 9);
        m.unref_pages(1, a, K4).unwrap();
        m.drop_caches().unwrap();
        assert_eq!(m.stats().split[7], 1);
        m.check().unwrap();
    }

    /// The reverse map finds a PMD THP at the same address in the parent and the child.
    #[test]
    fn rmap_walk_finds_every_mm() {
        let (mut m, a) = pmd_machine(Profile::V6_15, 2 * M1);
        let c = m.fork(1).unwrap();
        let head = pfn(&m, 1, a).as_u64() as u32;
        let hits = m.k.rmap_walk(&BTreeSet::from([head]));
        let got: Vec<(u32, u64, bool)> = hits[&head]
            .iter()
            .map(|h| (h.pid, h.addr.as_u64(), h.pmd))
            .collect();
        assert_eq!(got, [(1, a.as_u64(), true), (c, a.as_u64(), true)]);
    }
}
