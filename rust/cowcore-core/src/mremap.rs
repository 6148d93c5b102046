//! `mremap` of a range of one private anonymous mapping to a new address, without a change
//! of size (mm/mremap.c: `mremap_to` with `MREMAP_FIXED`, or `MREMAP_MAYMOVE` to a fresh
//! address).
//!
//! `move_vma` copies the VMA to the destination (`copy_vma`: the new VMA keeps the moved
//! range's `vm_pgoff` and `anon_vma`, and merges with neighbours where those allow), moves
//! the page tables (`move_page_tables`), then unmaps the old range, which is empty by then
//! (`do_vmi_munmap`: the VMA is split, the tables no VMA needs any more are freed). Pages
//! move with their frames: refcounts, mapcounts, MM-id slots and anon-exclusive bits do not
//! change, only where the mm maps them.
//!
//! `move_page_tables` goes extent by extent, an extent ending at the next PUD or PMD
//! boundary of either side: a whole PMD table moves with its PUD entry (`move_normal_pud`,
//! x86 has `CONFIG_HAVE_MOVE_PUD`) when the extent is a whole PUD on both sides, a huge
//! PMD moves whole (`move_huge_pmd`) when the extent is a whole PMD on both sides, and is
//! split (`split_huge_pmd`) otherwise; a whole PTE table moves with its PMD entry
//! (`move_normal_pmd`, `CONFIG_HAVE_MOVE_PMD`) when the extent is a whole PMD, and
//! otherwise its entries move one by one into a destination table (`move_ptes`). Moved
//! entries are marked soft-dirty (`move_soft_dirty_pte`, `move_soft_dirty_pmd`), entries
//! of a moved table are not. From 6.7 a move that starts its VMA is first aligned down to
//! the PMD boundary where that is safe (`try_realign_addr`), so its first table moves whole.
//!
//! The destination tables are allocated first, in the order the kernel's loop allocates
//! them (`alloc_new_pud`, `alloc_new_pmd`, `pte_alloc`), and nothing is moved until all
//! exist: a move that runs out of memory frees them and changes nothing (where the kernel
//! would move the entries back, `move_vma`'s error path).

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_SIZE};
use crate::error::CowError;
use crate::events::Event;
use crate::fault::{alloc_table, split_huge_pmd};
use crate::kernel::Kernel;
use crate::mm::{Mm, Vma};
use crate::paging::entry::{PageTableEntry, SWP_SOFT_DIRTY};
use crate::paging::table::Paging;
use crate::physmem::{PhysMem, TableFrame};

/// The bytes one PUD entry maps.
const PUD_SIZE: u64 = 1 << 30;

/// An entry: its table and index.
type Slot = (TableFrame, usize);

/// What `move_page_tables` does with one extent, decided before anything moves.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// `move_normal_pud`: the PUD entry (and the PMD table under it) moves.
    Pud { old: Slot, new: Slot, old_addr: u64 },
    /// `move_huge_pmd`: the huge PMD (and its deposited table) moves.
    HugePmd { old: Slot, new: Slot, old_addr: u64 },
    /// `move_normal_pmd`: the PMD entry (and the PTE table under it) moves.
    Table { old: Slot, new: Slot, old_addr: u64 },
    /// `split_huge_pmd` if the old PMD is huge, then `move_ptes` of the extent into the
    /// destination PTE table.
    Ptes {
        old: Slot,
        new_table: TableFrame,
        old_addr: u64,
        new_addr: u64,
        len: u64,
    },
}

impl Kernel {
    /// `mremap(addr, length, length, MREMAP_MAYMOVE [| MREMAP_FIXED, new_addr])`: moves
    /// `[addr, addr + length)`, which must lie inside one VMA, to `new_addr` (whatever is
    /// mapped there is unmapped first) or, without it, to a fresh address chosen as `mmap`
    /// chooses one for `addr % 2M + length` bytes, plus `addr % 2M`, so that the range
    /// keeps its offset in its 2 MiB block (docs/scenario-format.md, `mremap`). Returns the
    /// new address.
    pub(crate) fn mremap(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        new_addr: Option<VirtAddr>,
    ) -> Result<VirtAddr, CowError> {
        let (start, end) = self.check_range(addr, length)?;
        let mm = self.mm(pid)?;
        let new_start = if let Some(n) = new_addr {
            let (ns, ne) = self.check_range(n, length)?;
            if ns < end && ne > start {
                return Err(CowError::InvalidArgument(format!(
                    "mremap: [{ns}, {ne}) overlaps the range moved, [{start}, {end}) (EINVAL)"
                )));
            }
            // mremap_to: the destination is unmapped first (do_munmap), then the source is
            // looked up (vma_to_resize), so a bad source fails after the unmap.
            self.munmap(pid, ns, length)?;
            ns
        } else {
            source_vma(mm, start, end)?;
            let off = start.as_u64() % PMD_SIZE;
            let placed = get_unmapped_area(mm, off + length)?;
            VirtAddr::new(placed + off)
        };
        let vma = source_vma(self.mm(pid)?, start, end)?;
        let new_end = VirtAddr::new(new_start.as_u64() + length);
        // copy_vma: an anon_vma-less VMA takes the new address as its pgoff ("to increase
        // its chance of merging").
        let pgoff = if vma.anon_vma {
            vma.page_index(start)
        } else {
            new_start.as_u64() >> 12
        };
        let moved = Vma {
            start: new_start,
            end: new_end,
            pgoff,
            ..vma
        };
        let steps = self.plan_move(pid, &vma, start, end, new_start)?;
        let mm = self.mm_mut(pid)?;
        if new_addr.is_none() {
            // As after mmap: the cursor goes 2 MiB below the block placed.
            let placed = new_start.as_u64() - start.as_u64() % PMD_SIZE;
            mm.cursor = placed.saturating_sub(PMD_SIZE);
        }
        let i = mm.vmas.partition_point(|v| v.start < new_start);
        mm.vmas.insert(i, moved);
        mm.merge();
        let (mm_id, asid) = (mm.mm_id, mm.asid);
        for step in steps {
            self.move_step(step, (mm_id, asid), &vma)?;
        }
        // The old range, empty now, is unmapped (do_vmi_munmap): the VMA is split and the
        // tables no VMA needs are freed.
        self.munmap(pid, start, length)?;
        Ok(new_start)
    }

    /// The first half of `move_page_tables`: the loop over the extents, deciding each
    /// one's step and allocating the destination tables it needs, in the kernel's order.
    /// On running out of memory, the tables allocated so far are freed.
    fn plan_move(
        &mut self,
        pid: u32,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
        new_start: VirtAddr,
    ) -> Result<Vec<Step>, CowError> {
        let mm = self.mm(pid)?;
        let pgd = mm.pgd;
        let (mut old, mut new) = (start.as_u64(), new_start.as_u64());
        let old_end = end.as_u64();
        if self.cfg.mremap_realigns() && can_realign(mm, vma, old, new, old_end - old) {
            old &= !(PMD_SIZE - 1);
            new &= !(PMD_SIZE - 1);
        }
        let paging = self.paging;
        let mut log: Vec<(TableFrame, usize, TableFrame)> = Vec::new();
        let mut steps = Vec::new();
        let r = (|| {
            while old < old_end {
                let mut extent = get_extent(PUD_SIZE, old, old_end, new);
                let upper_depth = paging.pmd_depth() - 1;
                let Some(pud_from) = old_slot(&self.mem, paging, pgd, old, upper_depth) else {
                    (old, new) = (old + extent, new + extent);
                    continue;
                };
                let pud_to = alloc_slot(&mut self.mem, paging, pgd, new, upper_depth, &mut log)?;
                if extent == PUD_SIZE && self.mem.entry(pud_to.0, pud_to.1).is_none() {
                    steps.push(Step::Pud {
                        old: pud_from,
                        new: pud_to,
                        old_addr: old,
                    });
                    (old, new) = (old + extent, new + extent);
                    continue;
                }
                extent = get_extent(PMD_SIZE, old, old_end, new);
                let pmd_depth = paging.pmd_depth();
                let Some(old_pmd) = old_slot(&self.mem, paging, pgd, old, pmd_depth) else {
                    (old, new) = (old + extent, new + extent);
                    continue;
                };
                let new_pmd = alloc_slot(&mut self.mem, paging, pgd, new, pmd_depth, &mut log)?;
                let oe = self.mem.entry(old_pmd.0, old_pmd.1);
                let dest_none = self.mem.entry(new_pmd.0, new_pmd.1).is_none();
                if !oe.is_present() {
                    return Err(CowError::invariant(
                        "mremap",
                        format!("a PMD entry at {old:#x} is neither none nor present"),
                    ));
                }
                if extent == PMD_SIZE && dest_none {
                    let (o, n) = (old_pmd, new_pmd);
                    steps.push(if oe.is_huge() {
                        Step::HugePmd {
                            old: o,
                            new: n,
                            old_addr: old,
                        }
                    } else {
                        Step::Table {
                            old: o,
                            new: n,
                            old_addr: old,
                        }
                    });
                    (old, new) = (old + extent, new + extent);
                    continue;
                }
                // pte_alloc at the destination, then move_ptes (after a split of a huge PMD).
                let ne = self.mem.entry(new_pmd.0, new_pmd.1);
                let new_table = if ne.is_none() {
                    let t = alloc_table(&mut self.mem)?;
                    self.mem.set_entry(new_pmd.0, new_pmd.1, t.entry());
                    log.push((new_pmd.0, new_pmd.1, t));
                    t
                } else {
                    TableFrame::of(ne)
                };
                steps.push(Step::Ptes {
                    old: old_pmd,
                    new_table,
                    old_addr: old,
                    new_addr: new,
                    len: extent,
                });
                (old, new) = (old + extent, new + extent);
            }
            Ok(())
        })();
        if let Err(e) = r {
            for &(parent, idx, t) in log.iter().rev() {
                self.mem.set_entry(parent, idx, PageTableEntry::NONE);
                self.mem.free_table(t);
            }
            return Err(e);
        }
        Ok(steps)
    }

    /// The second half of `move_page_tables`: one planned step.
    fn move_step(&mut self, step: Step, ids: (u32, u64), vma: &Vma) -> Result<(), CowError> {
        let asid = ids.1;
        match step {
            Step::Pud { old, new, old_addr } => {
                let e = self.mem.entry(old.0, old.1);
                self.mem.set_entry(old.0, old.1, PageTableEntry::NONE);
                self.mem.set_entry(new.0, new.1, e);
                self.flush(asid, old_addr, PUD_SIZE);
            }
            Step::Table { old, new, old_addr } => {
                let e = self.mem.entry(old.0, old.1);
                self.mem.set_entry(old.0, old.1, PageTableEntry::NONE);
                self.mem.set_entry(new.0, new.1, e);
                self.flush(asid, old_addr, PMD_SIZE);
            }
            Step::HugePmd { old, new, old_addr } => {
                let e = self.mem.entry(old.0, old.1);
                self.mem.set_entry(old.0, old.1, PageTableEntry::NONE);
                let t = self.mem.withdraw(old.0, old.1).ok_or_else(|| {
                    CowError::invariant("deposit", "moved huge PMD without a deposit")
                })?;
                self.mem.deposit(new.0, new.1, t);
                self.mem.set_entry(new.0, new.1, e.mksoft_dirty());
                self.flush(asid, old_addr, PMD_SIZE);
            }
            Step::Ptes {
                old,
                new_table,
                old_addr,
                new_addr,
                len,
            } => {
                if self.mem.entry(old.0, old.1).is_huge() {
                    let haddr = VirtAddr::new(old_addr).align_down(PMD_SIZE);
                    split_huge_pmd(&mut self.mem, &mut self.events, ids, vma, old, haddr)?;
                }
                let old_table = TableFrame::of(self.mem.entry(old.0, old.1));
                let (i, j) = (
                    Paging::index(VirtAddr::new(old_addr), 12),
                    Paging::index(VirtAddr::new(new_addr), 12),
                );
                let n = (len / PAGE_SIZE) as usize;
                let mut present = false;
                for k in 0..n {
                    let e = self.mem.entry(old_table, i + k);
                    if e.is_none() {
                        continue;
                    }
                    self.mem.set_entry(old_table, i + k, PageTableEntry::NONE);
                    let moved = if e.is_present() {
                        present = true;
                        e.mksoft_dirty()
                    } else {
                        // move_soft_dirty_pte: a swap entry gets `pte_swp_mksoft_dirty`.
                        PageTableEntry::from_raw(e.raw() | SWP_SOFT_DIRTY.bits())
                    };
                    self.mem.set_entry(new_table, j + k, moved);
                }
                if present {
                    self.flush(asid, old_addr, len);
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, asid: u64, start: u64, len: u64) {
        self.events.emit(Event::TlbFlush {
            asid,
            start,
            end: start + len,
        });
    }
}

/// The VMA that holds all of `[start, end)` (`vma_to_resize`: none at `start`, or a range
/// that crosses its end, is `EFAULT`).
fn source_vma(mm: &Mm, start: VirtAddr, end: VirtAddr) -> Result<Vma, CowError> {
    mm.find_vma(start)
        .map(|i| mm.vmas[i])
        .filter(|v| end <= v.end)
        .ok_or_else(|| {
            CowError::InvalidAddress(format!(
                "mremap: [{start}, {end}) does not lie inside one mapping (EFAULT)"
            ))
        })
}

/// Where `mmap` would place `length` bytes (top-down below the cursor, 2 MiB-aligned,
/// clear of every VMA by 2 MiB; DESIGN.md "Addresses").
pub(crate) fn get_unmapped_area(mm: &Mm, length: u64) -> Result<u64, CowError> {
    use crate::machine::USER_START;
    let mut cursor = mm.cursor;
    loop {
        let start = cursor
            .checked_sub(length)
            .map(|s| s & !(PMD_SIZE - 1))
            .filter(|&s| s >= USER_START)
            .ok_or_else(|| {
                CowError::InvalidAddress(format!(
                    "no room for a mapping of {length} bytes below {:#x} (ENOMEM)",
                    mm.cursor
                ))
            })?;
        let lowest = mm
            .vmas
            .iter()
            .filter(|v| v.start.as_u64() <= start + length && v.end.as_u64() >= start)
            .map(|v| v.start.as_u64())
            .min();
        match lowest {
            None => return Ok(start),
            Some(low) => cursor = low.saturating_sub(PMD_SIZE),
        }
    }
}

/// `get_extent`: from `old` to the next `size` boundary of the old or the new side,
/// whichever is nearer, and at most to `old_end`.
fn get_extent(size: u64, old: u64, old_end: u64, new: u64) -> u64 {
    let mask = !(size - 1);
    let extent = ((old + size) & mask).wrapping_sub(old).min(old_end - old);
    extent.min(((new + size) & mask).wrapping_sub(new))
}

/// `can_realign_addr` (6.7): the move starts its VMA (the moved VMA starts at `new`), is
/// misaligned equally on both sides, reaches the next PMD boundary, and nothing is mapped
/// between either start and the boundary below it (`can_align_down`). The destination VMA
/// is not in the list yet: nothing may be mapped in the destination's block below `new`.
fn can_realign(mm: &Mm, vma: &Vma, old: u64, new: u64, len: u64) -> bool {
    let mask = PMD_SIZE - 1;
    let (old_align, new_align) = (old & mask, new & mask);
    if len < PMD_SIZE - old_align || old_align == 0 || old_align != new_align {
        return false;
    }
    vma.start.as_u64() == old && !mm.overlaps(old & !mask, old) && !mm.overlaps(new & !mask, new)
}

/// The entry at `depth` covering `addr`, if the tables above it exist and it is not none
/// (`get_old_pud`, `get_old_pmd`).
fn old_slot(
    mem: &PhysMem,
    paging: Paging,
    pgd: TableFrame,
    addr: u64,
    depth: usize,
) -> Option<Slot> {
    let levels = paging.table_levels();
    let mut table = pgd;
    for &(_, shift) in &levels[..depth] {
        let e = mem.entry(table, Paging::index(VirtAddr::new(addr), shift));
        if !e.is_present() || e.is_huge() {
            return None;
        }
        table = TableFrame::of(e);
    }
    let i = Paging::index(VirtAddr::new(addr), levels[depth].1);
    (!mem.entry(table, i).is_none()).then_some((table, i))
}

/// The entry at `depth` covering `addr`, allocating the tables above it that are missing
/// (`alloc_new_pud`, `alloc_new_pmd`); each allocation is logged for undoing.
fn alloc_slot(
    mem: &mut PhysMem,
    paging: Paging,
    pgd: TableFrame,
    addr: u64,
    depth: usize,
    log: &mut Vec<(TableFrame, usize, TableFrame)>,
) -> Result<Slot, CowError> {
    let levels = paging.table_levels();
    let mut table = pgd;
    for &(_, shift) in &levels[..depth] {
        let i = Paging::index(VirtAddr::new(addr), shift);
        let e = mem.entry(table, i);
        table = if e.is_none() {
            let t = alloc_table(mem)?;
            mem.set_entry(table, i, t.entry());
            log.push((table, i, t));
            t
        } else {
            TableFrame::of(e)
        };
    }
    Ok((table, Paging::index(VirtAddr::new(addr), levels[depth].1)))
}

#[cfg(test)]
mod tests {
    use crate::{CowError, Machine, Pfn, Profile, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;
    const M2: u64 = 2 << 20;

    fn at(a: VirtAddr, off: u64) -> VirtAddr {
        VirtAddr::new(a.as_u64() + off)
    }

    #[test]
    fn small_pages_move_with_their_frames_and_the_old_range_is_a_hole() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let base = m.free_frames();
        let a = m.mmap(1, 8 * K4).unwrap();
        m.write(1, a, 8 * K4, 5).unwrap();
        let pfns: Vec<_> = (0..4)
            .map(|i| m.translate(1, at(a, (2 + i) * K4)).unwrap().pfn)
            .collect();
        let free = m.free_frames();
        let b = m.mremap(1, at(a, 2 * K4), 4 * K4, None).unwrap();
        // A fresh 2M block below the mapping, the range's offset in its block kept.
        assert_eq!(b.as_u64() % M2, 2 * K4);
        assert!(b < a);
        for i in 0..4 {
            assert_eq!(m.translate(1, at(b, i * K4)).unwrap().pfn, pfns[i as usize]);
            assert!(m.translate(1, at(a, (2 + i) * K4)).unwrap().pfn.is_none());
        }
        // One PTE table for the destination (the PMD table of this 1G is shared).
        assert_eq!(m.free_frames(), free - 1);
        assert_eq!(m.vmas(1).unwrap().len(), 3);
        assert_eq!(m.read(1, b, 4 * K4).unwrap(), vec![5; 4]);
        assert!(matches!(
            m.read(1, at(a, 2 * K4), K4),
            Err(CowError::Segfault { .. })
        ));
        m.check().unwrap();
        // The source's PTE table stays: its 2M still holds the rest of the mapping.
        m.munmap(1, a, 8 * K4).unwrap();
        m.munmap(1, b, 4 * K4).unwrap();
        assert_eq!(m.free_frames(), base);
        m.exit(1).unwrap();
    }

    #[test]
    fn a_whole_aligned_thp_stays_pmd_mapped() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_12).unwrap();
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, M2).unwrap();
        m.write(1, a, K4, 1).unwrap();
        let o = m.observe(1, a, K4).unwrap()[0];
        let b = m.mremap(1, a, M2, None).unwrap();
        assert_eq!(b.as_u64() % M2, 0);
        let n = m.observe(1, b, K4).unwrap()[0];
        assert_eq!((n.pfn, n.folio_pages, n.mapcount), (o.pfn, 512, 1));
        assert_eq!(m.stats().thp_split_pmd, 0);
        let f = m.folio(Pfn::new(o.pfn)).unwrap();
        assert_eq!((f.refcount, f.entire_mapcount), (1, 1));
        // The moved PMD is soft-dirty (move_soft_dirty_pmd).
        assert!(m
            .translate(1, b)
            .unwrap()
            .steps
            .last()
            .unwrap()
            .entry
            .is_soft_dirty());
        m.check().unwrap();
    }

    #[test]
    fn a_range_that_cuts_a_thp_splits_it() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, M2).unwrap();
        m.write(1, a, K4, 1).unwrap();
        let head = m.observe(1, a, K4).unwrap()[0].pfn;
        let b = m.mremap(1, at(a, 16 * K4), 16 * K4, None).unwrap();
        assert_eq!(m.stats().thp_split_pmd, 1);
        let o = m.observe(1, b, K4).unwrap()[0];
        assert_eq!((o.pfn, o.folio_pages, o.mapcount), (head + 16, 512, 1));
        let f = m.folio(Pfn::new(head)).unwrap();
        assert_eq!(
            (f.refcount, f.large_mapcount, f.entire_mapcount),
            (512, 512, 0)
        );
        m.check().unwrap();
    }

    #[test]
    fn fixed_replaces_and_rejects_overlap_and_crossing() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        let d = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 3).unwrap();
        m.write(1, d, 4 * K4, 9).unwrap();
        assert!(matches!(
            m.mremap(1, a, 4 * K4, Some(at(a, K4))),
            Err(CowError::InvalidArgument(s)) if s.ends_with("(EINVAL)")
        ));
        assert!(matches!(
            m.mremap(1, a, 8 * K4, None),
            Err(CowError::InvalidAddress(s)) if s.ends_with("(EFAULT)")
        ));
        let b = m.mremap(1, a, 2 * K4, Some(d)).unwrap();
        assert_eq!(b, d);
        assert_eq!(m.read(1, d, 4 * K4).unwrap(), vec![3, 3, 9, 9]);
        m.check().unwrap();
    }

    #[test]
    fn out_of_memory_moves_nothing() {
        let mut m = Machine::new(4 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 4 * K4).unwrap();
        m.write(1, a, 4 * K4, 3).unwrap();
        // Every frame taken: the destination's PTE table cannot be allocated.
        let h = m.mmap(1, 1 << 30).unwrap();
        let mut off = 0;
        while m.free_frames() > 0 {
            m.write(1, at(h, off), K4, 1).unwrap();
            off += K4;
        }
        let before = (m.free_frames(), m.vmas(1).unwrap());
        assert_eq!(m.mremap(1, a, 4 * K4, None), Err(CowError::OutOfMemory));
        assert_eq!((m.free_frames(), m.vmas(1).unwrap()), before);
        m.check().unwrap();
    }

    /// `mm_id_exact` after a partial mremap: the folio is mapped at two places of one mm,
    /// both found through the pages' linear index.
    #[test]
    fn mm_id_exact_counts_a_partly_moved_folio() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        m.set_policy("mm_id_exact", true).unwrap();
        let a = m.mmap(1, M2).unwrap();
        m.write(1, a, K4, 1).unwrap(); // one 64K folio
        let head = m.observe(1, a, K4).unwrap()[0].pfn;
        let b = m.mremap(1, at(a, 8 * K4), 8 * K4, None).unwrap();
        // Two more mms take the folio, then leave: the slots say "shared" forever.
        for _ in 0..2 {
            let c = m.fork(1).unwrap();
            m.exit(c).unwrap();
        }
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        m.write(1, b, K4, 2).unwrap();
        // Reused in place: the exact count found all 16 pages in this mm.
        assert_eq!(m.observe(1, b, K4).unwrap()[0].pfn, head + 8);
        assert_eq!(m.read(1, b, K4).unwrap(), vec![2]);
        m.check().unwrap();
    }
}
