//! Getting user pages (`mm/gup.c`): the read a debugger or `/proc/<pid>/mem` makes
//! (`FOLL_TOUCH`), and the references and pins a process holds (issue 16): `ref` (`FOLL_GET`,
//! as vmsplice's `get_user_pages_fast` takes them) and `pin` (`FOLL_PIN | FOLL_LONGTERM |
//! FOLL_WRITE`, as `io_uring`'s buffer registration takes them); and the short R/O pin
//! another process takes with `process_vm_readv()`, whose unshare faults are `unshare`.
//!
//! `follow_page_pte` with `FOLL_TOUCH` calls `folio_mark_accessed` on the folio of a
//! present PTE (not on the zero page, which has no folio); `follow_huge_pmd` only calls
//! `touch_pmd`, which on x86 changes a PMD for a write alone, so a read of a PMD-mapped THP
//! marks nothing (both measured: docs/accounting.md, "Referenced"). Nothing is faulted in:
//! the callers read only pages that are present (the kernel runner's `observe` reads
//! `/proc/<pid>/pagemap` first).

use crate::addr::PAGE_SIZE;
use crate::error::CowError;
use crate::fault::NoRecord;
use crate::folio::FolioRef;
use crate::kernel::{capacity_hint, Kernel};
use crate::mm::GupHold;
use crate::outcome::{Access, MapLevel};
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::PageTableEntry;
use crate::paging::table::Level;
use crate::paging::walk;
use crate::physmem::{PhysMem, TableFrame};
use crate::VirtAddr;

/// The walk that finds the folios a `FOLL_TOUCH` read of a range marks: those of its
/// present, normal PTEs, each once per run of PTEs mapping it.
struct TouchWalk<'a> {
    mem: &'a PhysMem,
    folios: Vec<FolioRef>,
}

impl PageWalk for TouchWalk<'_> {
    fn mem(&self) -> &PhysMem {
        self.mem
    }

    fn pte_table(&mut self, at: EntryAt, t: TableFrame) -> Result<(), CowError> {
        let first = ((at.addr >> 12) & 511) as usize;
        let last = first + ((at.next - at.addr) >> 12) as usize;
        for &raw in &self.mem.table(t)[first..last] {
            let e = PageTableEntry::from_raw(raw);
            if !e.is_present() || e.is_special() {
                continue;
            }
            let f = self.mem.page_folio(e.frame());
            if self.folios.last() != Some(&f) {
                self.folios.push(f);
            }
        }
        Ok(())
    }
}

impl Kernel {
    /// A read of `[addr, addr + length)` of `pid` through `/proc/<pid>/mem` as GUP does it
    /// (`FOLL_TOUCH`): every folio that a present PTE of the range maps is marked accessed
    /// (`PG_referenced`). Holes and PMD-mapped THPs are left alone; no content changes.
    pub(crate) fn touch(&mut self, pid: u32, addr: VirtAddr, length: u64) -> Result<(), CowError> {
        let mm = self.mm(pid)?;
        let (start, end) = self.check_range(addr, length)?;
        let mut w = TouchWalk {
            mem: &self.mem,
            folios: Vec::new(),
        };
        for v in mm.vmas.iter().filter(|v| v.start < end && v.end > start) {
            let (s, e) = (v.start.max(start).as_u64(), v.end.min(end).as_u64());
            walk_page_range(&mut w, self.paging, mm.pgd, s, e)?;
        }
        let folios = w.folios;
        for f in folios {
            self.mem.folio_mark_accessed(f);
        }
        Ok(())
    }
}

impl Kernel {
    /// `faultin_page` until `follow_page_mask` finds the page (`__get_user_pages`): a
    /// read fault where nothing is mapped, and for `write` (`FOLL_WRITE`) a write fault
    /// where the entry is not writable (`do_wp_page`/`do_huge_pmd_wp_page`: COW copy or
    /// reuse, as the profile decides; a PMD that falls back is split and faulted again by
    /// PTE). Returns the frame behind `addr` (a zero page's included). No access is made:
    /// the A and D bits are the fault's, nothing is stored.
    fn gup_faultin(&mut self, pid: u32, addr: VirtAddr, write: bool) -> Result<u32, CowError> {
        let pgd = self.mm(pid)?.pgd;
        for _ in 0..4 {
            let leaf = walk::find_leaf(&self.mem, self.paging, pgd, addr);
            let present = leaf.is_some_and(|l| l.entry.is_present() && !l.entry.is_protnone());
            if let Some(l) = leaf.filter(|l| present && (!write || l.entry.is_writable())) {
                let base = l.entry.frame();
                return Ok(if l.level == Level::Pmd {
                    base + ((addr.as_u64() >> 12) & 511) as u32
                } else {
                    base
                });
            }
            let code = walk::error_code(write, present);
            self.fault(pid, addr, write, &mut NoRecord)?
                .handle_mm_fault(leaf, code)?;
        }
        Err(CowError::invariant(
            "fault-retry",
            format!("GUP at {addr} keeps faulting"),
        ))
    }

    /// `ref` (`pin == false`: `get_user_pages_fast` without `FOLL_WRITE`, as vmsplice takes
    /// pages) or `pin` (`pin_user_pages` with `FOLL_LONGTERM | FOLL_WRITE`, as `io_uring`
    /// registers a buffer) of every page of `[addr, addr + length)` of `pid`, held until
    /// [`Self::gup_put`] or exit. Page by page, as `__get_user_pages` goes: fault the page
    /// in ([`Self::gup_faultin`]), then `try_grab_folio` it
    /// ([`PhysMem::gup_grab_folio`]), so a later page's fault sees the references taken on
    /// the earlier ones. A `ref` never unshares (`gup_must_unshare` is false without
    /// `FOLL_PIN`); a longterm pin never pins the zero page (it write-faults first). A pin
    /// sets `MMF_HAS_PINNED` first (`mm_set_has_pinned_flag`). On an error nothing is held
    /// (the references taken are dropped); the faults done stay, as a failed `write`'s do.
    pub(crate) fn gup_get(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        pin: bool,
    ) -> Result<(), CowError> {
        let (start, end) = self.check_access(pid, addr, length, pin)?;
        if pin {
            self.mm_mut(pid)?.has_pinned = true;
        }
        let mut pages = Vec::with_capacity(capacity_hint(start, end));
        let mut a = start;
        while a < end {
            match self.gup_faultin(pid, a, pin) {
                Ok(pfn) => {
                    if self.mem.is_folio(pfn) {
                        let f = self.mem.page_folio(pfn);
                        self.mem.gup_grab_folio(f, 1, pin);
                    }
                    pages.push(pfn);
                }
                Err(e) => {
                    self.gup_release(&pages, pin);
                    return Err(e);
                }
            }
            a = VirtAddr::new(a.as_u64() + PAGE_SIZE);
        }
        self.mm_mut(pid)?.holds.push(GupHold {
            start: start.as_u64(),
            length,
            pin,
            pages,
        });
        Ok(())
    }

    /// `unref`/`unpin`: drops the latest hold of `pid` taken by [`Self::gup_get`] on exactly
    /// `[addr, addr + length)` with the same `pin`; `InvalidArgument` if there is none.
    pub(crate) fn gup_put(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
        pin: bool,
    ) -> Result<(), CowError> {
        let (start, end) = self.check_range(addr, length)?;
        let mm = self.mm_mut(pid)?;
        let Some(i) = mm
            .holds
            .iter()
            .rposition(|h| h.pin == pin && h.start == start.as_u64() && h.length == length)
        else {
            return Err(CowError::InvalidArgument(format!(
                "process {pid} holds no {} of [{start}, {end})",
                if pin { "pin" } else { "ref" }
            )));
        };
        let h = mm.holds.remove(i);
        self.gup_release(&h.pages, h.pin);
        Ok(())
    }

    /// Drops every hold of `pid` in the order taken (`exit_files` after `exit_mm`: the
    /// pipe or the ring goes after the unmap, so a held folio is freed here, not by the
    /// zap).
    pub(crate) fn gup_exit(&mut self, pid: u32) -> Result<(), CowError> {
        let holds = std::mem::take(&mut self.mm_mut(pid)?.holds);
        for h in holds {
            self.gup_release(&h.pages, h.pin);
        }
        Ok(())
    }

    /// `unpin_user_pages` / `put_page` of each page, in address order (zero pages hold
    /// nothing).
    fn gup_release(&mut self, pages: &[u32], pin: bool) {
        for &p in pages {
            if self.mem.is_folio(p) {
                let f = self.mem.page_folio(p);
                self.mem.gup_put_folio(f, 1, pin, &mut self.events);
            }
        }
    }
}

/// Pages `process_vm_rw_single_vec` pins with one `pin_user_pages_remote` call
/// (`PVM_MAX_KMALLOC_PAGES / sizeof(struct page *)` in `mm/process_vm_access.c`: two pages of
/// page pointers).
pub(crate) const PVM_MAX_PAGES_PER_LOOP: usize = 2 * 4096 / 8;

impl Kernel {
    /// `unshare`: a short read-only `FOLL_PIN` of `[addr, addr + length)` of `pid` taken and
    /// dropped by another process, as `process_vm_readv()` does (`pin_user_pages_remote`,
    /// no `FOLL_LONGTERM`, no `FOLL_WRITE`). Page by page as `__get_user_pages` goes: a read
    /// fault where nothing is mapped; then, while `gup_must_unshare` holds (an anonymous
    /// page that is not anon-exclusive; for a huge PMD the head's flag), the unshare fault
    /// ([`Fault::handle_unshare_fault`](crate::fault::Fault)): reuse marks the page
    /// exclusive, a copy maps a new exclusive page read-only, a shared PMD THP is split and
    /// the page unshared by PTE. The zero pages are not anonymous: a short pin leaves them.
    /// The pins are held while the batch goes on: `process_vm_rw_single_vec` pins up to
    /// [`PVM_MAX_PAGES_PER_LOOP`] pages with one `pin_user_pages_remote` call and unpins them
    /// after the copy, so a later page of the same large folio in the batch sees the earlier
    /// pages' pins as references beyond the mappings and is copied, not reused (recorded on
    /// 7.2/7.3: `unshare-child-exited-64K` reuses the range's first page of the folio and
    /// copies the rest). The pin sets `MMF_HAS_PINNED` on the target mm
    /// (`mm_set_has_pinned_flag` for every `FOLL_PIN`), and forgets the exclusive memo.
    ///
    /// Returns one [`Access`] record per page: `phys` and `level`/`order` of the page
    /// afterwards, the faults taken (`error_code` is the read fault's, 0 for an unshare
    /// fault), and for an unshared page [`crate::Outcome::Unshare`] with the reason of the
    /// reuse or copy decision (and `COPIED`/`SPLIT`). Errors as a read's; an out-of-memory
    /// copy stops the call with the pages before it unshared.
    pub(crate) fn unshare(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        length: u64,
    ) -> Result<Vec<Access>, CowError> {
        let (start, end) = self.check_access(pid, addr, length, false)?;
        let pgd = self.mm(pid)?.pgd;
        self.mm_mut(pid)?.has_pinned = true;
        let mut out = Vec::with_capacity(capacity_hint(start, end));
        let mut pinned = Vec::new();
        let result = self.unshare_pages(pid, pgd, start, end, &mut out, &mut pinned);
        self.gup_release(&pinned, true);
        result.map(|()| out)
    }

    /// The pages of [`Self::unshare`], batch by batch; `pinned` holds the pins of the
    /// current batch (the caller drops what an error leaves in it).
    fn unshare_pages(
        &mut self,
        pid: u32,
        pgd: TableFrame,
        start: VirtAddr,
        end: VirtAddr,
        out: &mut Vec<Access>,
        pinned: &mut Vec<u32>,
    ) -> Result<(), CowError> {
        let mut a = start;
        while a < end {
            if out.len() % PVM_MAX_PAGES_PER_LOOP == 0 {
                // unpin_user_pages_dirty_lock of the batch, before the next one is pinned
                self.gup_release(pinned, true);
                pinned.clear();
            }
            let mut rec = Access::default();
            let mut done = false;
            for _ in 0..4 {
                let leaf = walk::find_leaf(&self.mem, self.paging, pgd, a);
                let present = leaf.is_some_and(|l| l.entry.is_present() && !l.entry.is_protnone());
                let Some(l) = leaf.filter(|_| present) else {
                    let code = walk::error_code(false, false);
                    self.fault(pid, a, false, &mut rec)?
                        .handle_mm_fault(leaf, code)?;
                    continue;
                };
                let base = l.entry.frame();
                let huge = l.level == Level::Pmd;
                let pfn = if huge {
                    base + ((a.as_u64() >> 12) & 511) as u32
                } else {
                    base
                };
                let anon = self.mem.is_folio(pfn);
                if anon && !self.mem.anon_exclusive(if huge { base } else { pfn }) {
                    self.fault(pid, a, false, &mut rec)?
                        .handle_unshare_fault(l)?;
                    continue;
                }
                if anon {
                    // try_grab_folio(FOLL_PIN), held until the batch ends
                    let f = self.mem.page_folio(pfn);
                    self.mem.gup_grab_folio(f, 1, true);
                    pinned.push(pfn);
                }
                rec.phys = u64::from(pfn) << 12;
                rec.level = if huge { MapLevel::Pmd } else { MapLevel::Pte };
                rec.order = self.mem.order(pfn) as u8;
                done = true;
                break;
            }
            if !done {
                return Err(CowError::invariant(
                    "fault-retry",
                    format!("unshare at {a} keeps faulting"),
                ));
            }
            out.push(rec);
            a = VirtAddr::new(a.as_u64() + PAGE_SIZE);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::folio::GUP_PIN_COUNTING_BIAS;
    use crate::{CowError, Machine, Outcome, Pfn, Profile, Reason, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    fn machine(profile: Profile) -> (Machine, VirtAddr) {
        let mut m = Machine::new(64 << 20, 4, profile).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        (m, a)
    }

    fn pfn(m: &Machine, pid: u32, a: VirtAddr) -> Pfn {
        m.translate(pid, a).unwrap().pfn.unwrap()
    }

    fn refcount(m: &Machine, pid: u32, a: VirtAddr) -> i64 {
        m.folio(pfn(m, pid, a)).unwrap().refcount
    }

    /// A `ref` adds one reference (1 + 1 = 2): the page that fork shared and the child
    /// gave back can no longer be reused by a write (`SMALL_OTHER_REFS`).
    #[test]
    fn ref_blocks_reuse() {
        let (mut m, a) = machine(Profile::V6_15);
        m.write(1, a, K4, 5).unwrap();
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        m.ref_pages(1, a, K4).unwrap();
        assert_eq!(refcount(&m, 1, a), 2);
        let r = m.access(1, a, true, 6).unwrap();
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::CowCopy, Reason::SmallOtherRefs)
        );
        m.check().unwrap();
        assert!(matches!(
            m.unref_pages(1, a, 2 * K4),
            Err(CowError::InvalidArgument(_))
        ));
        m.unref_pages(1, a, K4).unwrap(); // the old folio, no longer mapped, is freed
        m.check().unwrap();
    }

    /// A pin adds the bias on a small folio, one reference a page on a large one; a fork
    /// then copies the pinned page (the parent's stays writable and its own).
    #[test]
    fn pin_counts_and_fork_copies() {
        let (mut m, a) = machine(Profile::V6_15);
        m.write(1, a, K4, 5).unwrap();
        m.pin_pages(1, a, K4).unwrap();
        assert_eq!(refcount(&m, 1, a), 1 + i64::from(GUP_PIN_COUNTING_BIAS));
        let c = m.fork(1).unwrap();
        assert_ne!(pfn(&m, c, a), pfn(&m, 1, a));
        assert_eq!(m.access(1, a, true, 7).unwrap().faults, 0);
        assert_eq!(m.read(c, a, K4).unwrap(), vec![5]);
        m.check().unwrap();

        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        let b = VirtAddr::new(a.as_u64() + (1 << 20));
        m.write(1, b, 16 * K4, 1).unwrap();
        m.pin_pages(1, VirtAddr::new(b.as_u64() + K4), 2 * K4)
            .unwrap();
        assert_eq!(refcount(&m, 1, b), 16 + 2);
        let c2 = m.fork(1).unwrap();
        // every anon-exclusive page of the pinned folio is copied, none shared
        for i in 0..16 {
            let at = VirtAddr::new(b.as_u64() + i * K4);
            assert_ne!(pfn(&m, c2, at), pfn(&m, 1, at));
        }
        assert_eq!(refcount(&m, 1, b), 16 + 2);
        m.check().unwrap();
        m.exit(1).unwrap();
        m.check().unwrap();
    }

    /// The unshare fault: a page shared with a child is copied and mapped read-only; a page
    /// only this mm maps is marked exclusive in place; the zero page is left alone.
    #[test]
    fn unshare_reuse_copy_zero() {
        let (mut m, a) = machine(Profile::V6_12);
        m.write(1, a, 2 * K4, 5).unwrap();
        let c = m.fork(1).unwrap();
        let recs = m.unshare(1, a, K4).unwrap();
        assert_eq!(
            (recs[0].outcome, recs[0].reason),
            (Outcome::Unshare, Reason::SmallOtherRefs)
        );
        assert_ne!(pfn(&m, c, a), pfn(&m, 1, a));
        let w = m.access(1, a, true, 6).unwrap();
        assert_eq!(
            (w.outcome, w.reason),
            (Outcome::CowReuse, Reason::AnonExclusive)
        );
        m.exit(c).unwrap();
        let second = VirtAddr::new(a.as_u64() + K4);
        let before = pfn(&m, 1, second);
        let recs = m.unshare(1, second, K4).unwrap();
        assert_eq!(
            (recs[0].outcome, recs[0].reason),
            (Outcome::Unshare, Reason::SmallSoleRef)
        );
        assert_eq!(pfn(&m, 1, second), before);
        let hole = VirtAddr::new(a.as_u64() + 8 * K4);
        assert_eq!(
            m.unshare(1, hole, K4).unwrap()[0].outcome,
            Outcome::ZeroPage
        );
        assert_eq!(m.stats().pgreuse, 1);
        m.check().unwrap();
    }

    /// The batch's pins are held until it ends: in a 64K folio after fork and the child's
    /// exit (6.15), the first page is reused and its pin makes the other 15 copy.
    #[test]
    fn unshare_holds_the_batch_pins() {
        let (mut m, a) = machine(Profile::V6_15);
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        m.write(1, a, 16 * K4, 5).unwrap();
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        let recs = m.unshare(1, a, 16 * K4).unwrap();
        assert_eq!(recs[0].reason, Reason::LargeExclusive);
        assert!(recs[1..]
            .iter()
            .all(|r| (r.outcome, r.reason) == (Outcome::Unshare, Reason::LargeExtraRefs)));
        assert_eq!(refcount(&m, 1, a), 1);
        m.check().unwrap();
    }
}
