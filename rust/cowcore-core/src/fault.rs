//! Page faults: `handle_mm_fault()` and the anonymous fault handlers (KS §2, §4).
//!
//! A page access walks the tables like the MMU (`walk::hw_access`); when the walk faults,
//! the handler runs and the access is retried (the retried instruction sets A, and D for a
//! write). Counters: `faults_read` for a read fault, `faults_write` for a write fault on a
//! not-present entry, `faults_wp` for a write to a present read-only entry.
//!
//! The handlers are methods of [`Fault`], the context of one fault (the kernel's
//! `struct vm_fault`): it borrows the faulting mm's counters, its VMA, physical memory,
//! the configuration and the counters, and nothing else, so no handler looks the process
//! up again or copies the VMA.

use crate::addr::{VirtAddr, PAGE_SIZE, PMD_NR, PMD_ORDER, PMD_SIZE};
use crate::error::{CowError, SegvReason};
use crate::events::{Event, Events};
use crate::folio::{Folio, FolioRef};
use crate::kernel::{access_error, proc_mut, Kernel};
use crate::mm::{Mm, VmFlags, Vma};
use crate::outcome::{Access, AccessFlags, AccessKinds, MapLevel, Outcome, Reason};
use crate::paging::entry::{EntryKind, PageTableEntry, PteFlags};
use crate::paging::table::{Level, Paging};
use crate::paging::walk::{self, hw_accessed, hw_permits, Leaf, PmdLoc, PF_PROT};
use crate::physmem::{PhysMem, TableFrame};
use crate::policy::{KernelConfig, Policy};

/// One fault (`struct vm_fault`): the faulting address and access, the VMA, the mm's id,
/// root table and `MM_ANONPAGES`, and the state the handlers change.
#[derive(Debug)]
pub(crate) struct Fault<'a, R: Recorder> {
    /// `vmf->address`.
    pub(crate) address: VirtAddr,
    /// `FAULT_FLAG_WRITE`.
    pub(crate) write: bool,
    /// `FAULT_FLAG_UNSHARE` (issue 16): a R/O pin found the page not anon-exclusive
    /// (`gup_must_unshare`); only [`Fault::handle_unshare_fault`] sets it.
    unshare: bool,
    /// `vmf->vma` (its `anon_vma` is set by the first fault that allocates).
    pub(crate) vma: &'a mut Vma,
    /// The mm's other VMAs, below and above `vma` (the `mm_id_exact` tracker's rmap walk).
    others: (&'a [Vma], &'a [Vma]),
    /// `vma->vm_mm->mm_id`.
    pub(crate) mm_id: u32,
    /// The mm's address-space id (for `TlbFlush` events).
    asid: u64,
    /// `vma->vm_mm->pgd`.
    pub(crate) pgd: TableFrame,
    /// `get_mm_counter(vma->vm_mm, MM_ANONPAGES)`.
    pub(crate) rss_anon: &'a mut u64,
    pub(crate) mem: &'a mut PhysMem,
    pub(crate) cfg: &'a Policy,
    /// The profile's capabilities (the swap-in's large-folio rules).
    pub(crate) kcfg: KernelConfig,
    paging: Paging,
    pub(crate) events: &'a mut Events,
    /// The record of the access this fault is part of: each handler writes its decision
    /// (through [`Fault::record`]).
    rec: &'a mut R,
}

/// Where a fault writes its decision: the caller's [`Access`] (`access`, `access_batch`),
/// or [`NoRecord`] for `read`/`write`/`*_pages`, whose callers never see a record. The
/// handlers are monomorphised over it, so those paths do no record-keeping at all (issue
/// 12: with no one listening, the `cowcore bench` table stays as it was; BENCHMARKS.md
/// "Per-access records and events").
pub(crate) trait Recorder: std::fmt::Debug {
    /// The record to write into, if any.
    fn get(&mut self) -> Option<&mut Access>;
}

impl Recorder for Access {
    #[inline]
    fn get(&mut self) -> Option<&mut Access> {
        Some(self)
    }
}

/// No record: every write to it is compiled out.
#[derive(Debug)]
pub(crate) struct NoRecord;

impl Recorder for NoRecord {
    #[inline]
    fn get(&mut self) -> Option<&mut Access> {
        None
    }
}

impl Kernel {
    /// The context of a fault at `addr` (which `check_access` has found inside a VMA):
    /// borrows the process's mm and VMA, physical memory, the policy and the counters.
    // Inlined: returned out of line, the `Result<Fault, CowError>` cost the COW-reuse
    // benchmark a third of its time (one call per fault; BENCHMARKS.md numbers hold with it).
    #[inline]
    pub(crate) fn fault<'s, R: Recorder>(
        &'s mut self,
        pid: u32,
        address: VirtAddr,
        write: bool,
        rec: &'s mut R,
    ) -> Result<Fault<'s, R>, CowError> {
        let Self {
            procs,
            mem,
            policy,
            events,
            paging,
            cfg,
            ..
        } = self;
        let mm = proc_mut(procs, pid)?;
        let i = mm
            .find_vma(address)
            .ok_or_else(|| CowError::invariant("access", format!("no VMA at {address}")))?;
        let Mm {
            mm_id,
            asid,
            pgd,
            vmas,
            rss_anon,
            ..
        } = mm;
        let (below, rest) = vmas.split_at_mut(i);
        let (vma, above) = rest
            .split_first_mut()
            .ok_or_else(|| CowError::invariant("access", "VMA index out of range"))?;
        Ok(Fault {
            address,
            write,
            unshare: false,
            vma,
            others: (below, above),
            mm_id: *mm_id,
            asid: *asid,
            pgd: *pgd,
            rss_anon,
            mem,
            cfg: policy,
            kcfg: *cfg,
            paging: *paging,
            events,
            rec,
        })
    }

    /// One page access (a load or a store of the first 8 bytes), faulting as needed.
    ///
    /// Each round walks like the MMU; a write to a present read-only leaf is a
    /// write-protect fault (`faults_wp`, handled by `do_huge_pmd_wp_page`/`do_wp_page`), any
    /// other fault is a not-present fault (`faults_read`/`faults_write`). A PMD write fault
    /// that falls back (split) is retried as a new fault at the PTE level, as the reference
    /// does, so it counts two write-protect faults.
    pub(crate) fn access_page(
        &mut self,
        pid: u32,
        addr: VirtAddr,
        write: bool,
        value: u64,
    ) -> Result<u64, CowError> {
        let pgd = self.mm(pid)?.pgd;
        for _ in 0..4 {
            match walk::hw_access(&mut self.mem, self.paging, pgd, addr, write) {
                Ok(pfn) => {
                    let c = &mut self.mem.content[pfn as usize];
                    if write {
                        *c = value;
                    }
                    return Ok(*c);
                }
                Err(code) => {
                    let leaf = walk::find_leaf(&self.mem, self.paging, pgd, addr);
                    self.fault(pid, addr, write, &mut NoRecord)?
                        .handle_mm_fault(leaf, code)?;
                }
            }
        }
        Err(CowError::invariant(
            "fault-retry",
            format!("access at {addr} keeps faulting"),
        ))
    }

    /// One access of one byte at `addr` with its record (docs/access-and-events.md): a
    /// load, or a store of `value` in the page's first 8 bytes. A refused access (SIGSEGV)
    /// and an out-of-memory fault are outcomes with nothing changed; only a bad pid is an
    /// error.
    pub(crate) fn access(
        &mut self,
        pid: u32,
        addr: u64,
        write: bool,
        value: u64,
    ) -> Result<Access, CowError> {
        let mut rec = Access::default();
        let page = VirtAddr::new(addr & !(PAGE_SIZE - 1));
        let mm = self.mm(pid)?;
        let refused = if addr >= self.paging.user_end() {
            Some(Reason::SegvUnmapped)
        } else {
            match access_error(mm, page, write) {
                Ok(_) => None,
                Err(CowError::Segfault {
                    reason: SegvReason::Protection,
                    ..
                }) => Some(Reason::SegvProtection),
                Err(_) => Some(Reason::SegvUnmapped),
            }
        };
        if let Some(reason) = refused {
            rec.outcome = Outcome::Segfault;
            rec.reason = reason;
            rec.phys = Access::NO_PHYS;
            return Ok(rec);
        }
        let pgd = mm.pgd;
        for _ in 0..4 {
            match walk::hw_access_leaf(&mut self.mem, self.paging, pgd, page, write) {
                Ok((pfn, level)) => {
                    let c = &mut self.mem.content[pfn as usize];
                    if write {
                        *c = value;
                    }
                    rec.phys = (u64::from(pfn) << 12) | (addr & (PAGE_SIZE - 1));
                    rec.level = if level == Level::Pmd {
                        MapLevel::Pmd
                    } else {
                        MapLevel::Pte
                    };
                    rec.order = self.mem.order(pfn) as u8;
                    return Ok(rec);
                }
                Err(code) => {
                    let leaf = walk::find_leaf(&self.mem, self.paging, pgd, page);
                    let r = self
                        .fault(pid, page, write, &mut rec)?
                        .handle_mm_fault(leaf, code);
                    match r {
                        Ok(()) => {}
                        Err(CowError::OutOfMemory) => {
                            rec.outcome = Outcome::OutOfMemory;
                            rec.phys = Access::NO_PHYS;
                            return Ok(rec);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(CowError::invariant(
            "fault-retry",
            format!("access at {page} keeps faulting"),
        ))
    }

    /// [`Self::access`] for each address in order, into `out` (the same length).
    pub(crate) fn access_batch(
        &mut self,
        pid: u32,
        addrs: &[u64],
        kinds: AccessKinds<'_>,
        value: u64,
        out: &mut [Access],
    ) -> Result<(), CowError> {
        self.mm(pid)?;
        if out.len() != addrs.len() {
            return Err(CowError::InvalidArgument(format!(
                "the output holds {} records for {} addresses: the lengths must be equal",
                out.len(),
                addrs.len()
            )));
        }
        if let AccessKinds::PerAccess(w) = kinds {
            if w.len() != addrs.len() {
                return Err(CowError::InvalidArgument(format!(
                    "{} write flags for {} addresses: the lengths must be equal",
                    w.len(),
                    addrs.len()
                )));
            }
        }
        for (i, (&a, o)) in addrs.iter().zip(out.iter_mut()).enumerate() {
            *o = self.access(pid, a, kinds.is_write(i), value)?;
        }
        Ok(())
    }

    /// The accesses of one `read`/`write` over `[start, end)`, lowest address first
    /// (DESIGN.md "Order of operations"), the range already checked by `check_access`.
    ///
    /// The MMU's side of an access that does not fault (set A, and D for a write, on the
    /// leaf; load or store the page's first 8 bytes) is done here inline for every page
    /// of the 2 MiB region whose PTE table (or huge PMD) was found once, instead of a full
    /// walk per page; the first page that would fault goes through [`Self::access_page`],
    /// and the region is looked up again after it. Loaded values go to `out` when given.
    pub(crate) fn access_range(
        &mut self,
        pid: u32,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
        value: u64,
        mut out: Option<&mut Vec<u64>>,
    ) -> Result<(), CowError> {
        let pgd = self.mm(pid)?.pgd;
        let (mut a, end) = (start.as_u64(), end.as_u64());
        // The PMD entry's location for the current 2 MiB region. A fault never moves or
        // frees an existing PMD table (it may fill the entry, or split it), so the location
        // stays valid across the faults of the region; a hole is looked up again.
        let mut loc: Option<(u64, TableFrame, usize)> = None;
        // The page whose fault `pte_fault` took last: if its retry does not go through, it
        // takes the full path of `access_page` (which bounds the retries).
        let mut retried = u64::MAX;
        while a < end {
            let region = a & !(PMD_SIZE - 1);
            let region_end = (region + PMD_SIZE).min(end);
            if loc.is_none_or(|(r, _, _)| r != region) {
                loc = match walk::pmd_loc(&self.mem, self.paging, pgd, a) {
                    PmdLoc::Found(t, i) => Some((region, t, i)),
                    PmdLoc::Hole(_) => None,
                };
            }
            if let Some((_, pmd_table, pmd_i)) = loc {
                let pmde = self.mem.entry(pmd_table, pmd_i);
                if pmde.is_present() && !pmde.is_protnone() {
                    if pmde.is_huge() {
                        a = access_huge(
                            &mut self.mem,
                            (pmd_table, pmd_i),
                            a,
                            region_end,
                            (write, value),
                            &mut out,
                        );
                        if a == region_end {
                            continue;
                        }
                    } else {
                        let t = TableFrame::of(pmde);
                        a = self
                            .mem
                            .access_ptes(t, a, region_end, write, value, &mut out);
                        if a == region_end {
                            continue;
                        }
                        if a != retried && self.pte_fault(pid, t, a, write)? {
                            // The fault is handled; the retried access is the fast path's.
                            retried = a;
                            continue;
                        }
                    }
                }
            }
            let v = self.access_page(pid, VirtAddr::new(a), write, value)?;
            if let Some(o) = out.as_deref_mut() {
                o.push(v);
            }
            a += PAGE_SIZE;
        }
        Ok(())
    }

    /// The faults of a page whose PTE table `t` the caller has found, for the two cases
    /// it can tell from the PTE alone: a none PTE (a not-present fault) and a write to a
    /// present, read-only PTE (a write-protect fault). It hands them to the same dispatch
    /// as [`Self::access_page`] (`Fault::handle_mm_fault`) without its two walks. Returns
    /// `false` (nothing done) for any other entry, which takes the full path.
    fn pte_fault(
        &mut self,
        pid: u32,
        t: TableFrame,
        a: u64,
        write: bool,
    ) -> Result<bool, CowError> {
        let addr = VirtAddr::new(a);
        let i = Paging::index(addr, 12);
        let entry = self.mem.entry(t, i);
        let leaf = match entry.kind() {
            EntryKind::None => None,
            EntryKind::Present if write && !entry.is_writable() => Some(Leaf {
                level: Level::Pte,
                table: t,
                index: i,
                entry,
            }),
            // Anything else (a software entry included) takes `access_page`'s full path.
            _ => return Ok(false),
        };
        // The fault the MMU would report, through the same dispatch as `access_page`.
        let code = walk::error_code(write, leaf.is_some());
        self.fault(pid, addr, write, &mut NoRecord)?
            .handle_mm_fault(leaf, code)?;
        Ok(true)
    }
}

/// The non-faulting accesses through a huge PMD leaf from `a` to `end` (one 2 MiB
/// region); returns where it stopped (`a` itself if the leaf forbids the access).
fn access_huge(
    mem: &mut PhysMem,
    (pmd_table, pmd_i): (TableFrame, usize),
    a: u64,
    end: u64,
    (write, value): (bool, u64),
    out: &mut Option<&mut Vec<u64>>,
) -> u64 {
    let e = mem.entry(pmd_table, pmd_i);
    if !hw_permits(e, write) {
        return a;
    }
    let n = hw_accessed(e, write);
    if n != e {
        mem.set_entry(pmd_table, pmd_i, n);
    }
    let base = e.pfn().as_u64() as usize;
    let first = base + ((a & (PMD_SIZE - 1)) / PAGE_SIZE) as usize;
    let pages = ((end - a) / PAGE_SIZE) as usize;
    let c = &mut mem.content[first..first + pages];
    if write {
        c.fill(value);
    }
    if let Some(o) = out.as_deref_mut() {
        o.extend_from_slice(c);
    }
    end
}

impl<R: Recorder> Fault<'_, R> {
    /// Writes into the access's record, if there is one (see [`Recorder`]).
    #[inline]
    pub(crate) fn record(&mut self, f: impl FnOnce(&mut Access)) {
        if let Some(r) = self.rec.get() {
            f(r);
        }
    }

    /// `handle_mm_fault` → `__handle_mm_fault` after the MMU reported `code` for the walk
    /// that ended at `leaf`: a write to a present, non-`PROT_NONE` leaf is a write-protect
    /// fault (`do_huge_pmd_wp_page` or `do_wp_page`), anything else a not-present fault.
    ///
    /// The dispatch is a `match` on the kind of the entry where the walk stopped, as in
    /// `handle_pte_fault`: a software entry (swap, migration) is an error, never an empty
    /// entry to overwrite.
    pub(crate) fn handle_mm_fault(mut self, leaf: Option<Leaf>, code: u32) -> Result<(), CowError> {
        let kind = leaf.map_or(EntryKind::None, |l| l.entry.kind());
        self.record(|r| {
            r.faults += 1;
            if r.faults == 1 {
                r.error_code = code;
                if kind == EntryKind::None {
                    r.flags |= AccessFlags::FIRST_TOUCH;
                }
            }
        });
        // The PTE that goes on to do_wp_page: one call site here, so that it stays inlined
        // as before the swap-in fault (callgrind: BENCHMARKS.md, issue 16's swap).
        let wp = match (kind, leaf) {
            (EntryKind::Present, Some(l)) if self.write && code & PF_PROT != 0 => {
                self.events.emit(Event::FaultWp);
                if l.level == Level::Pmd {
                    self.do_huge_pmd_wp_page(l.table, l.index)?;
                    None
                } else {
                    Some(l)
                }
            }
            // A `PROT_NONE` leaf lies in a `PROT_NONE` VMA, which `access_error` refuses
            // first (no NUMA hinting faults): it takes the not-present path, as before.
            (EntryKind::None | EntryKind::Present | EntryKind::ProtNone, _) => {
                self.count_not_present();
                self.handle_none_fault()?;
                None
            }
            // do_swap_page → do_wp_page for a write that it mapped read-only.
            (EntryKind::Swap(s), Some(l)) => {
                self.count_not_present();
                self.do_swap_page(l, s)?.then_some(l)
            }
            (EntryKind::Swap(_), None) => {
                return Err(CowError::invariant(
                    "swap-entry",
                    "a swap entry without a leaf",
                ));
            }
        };
        if let Some(l) = wp {
            self.do_wp_page(l.table, l.index)?;
        }
        Ok(())
    }

    /// The unshare fault (`FAULT_FLAG_UNSHARE`, issue 16) of the present anonymous page at
    /// `leaf` that a R/O `FOLL_PIN` found not anon-exclusive (`gup_must_unshare` in
    /// `follow_page_pte`/`follow_huge_pmd` returns `-EMLINK`, `faultin_page` faults with
    /// `FAULT_FLAG_UNSHARE`): `handle_pte_fault` sends it to `do_wp_page`, a huge PMD to
    /// `do_huge_pmd_wp_page`, both with `unshare` set (their reuse only marks the page
    /// exclusive; their copy maps the new page read-only and clean). A shared PMD is split
    /// (`VM_FAULT_FALLBACK`): the caller faults again at the PTE level. Counted in
    /// none of `faults_read`/`faults_write`/`faults_wp` (it is neither a read nor a write);
    /// the record's `error_code` stays 0 (no hardware fault).
    pub(crate) fn handle_unshare_fault(mut self, leaf: Leaf) -> Result<(), CowError> {
        self.unshare = true;
        self.record(|r| r.faults += 1);
        if leaf.level == Level::Pmd {
            self.do_huge_pmd_wp_page(leaf.table, leaf.index)?;
        } else {
            self.do_wp_page(leaf.table, leaf.index)?;
        }
        Ok(())
    }

    /// Counts a not-present fault: `faults_write` or `faults_read`.
    fn count_not_present(&mut self) {
        if self.write {
            self.events.emit(Event::FaultWrite);
        } else {
            self.events.emit(Event::FaultRead);
        }
    }

    /// `anon_vma_prepare`: the VMA has an `anon_vma` from now on.
    pub(crate) fn anon_vma_prepare(&mut self) {
        self.vma.anon_vma = true;
    }

    /// `__handle_mm_fault` for a not-present PTE/PMD (KS §2.2): allocate the upper tables,
    /// try a PMD THP where allowed, else `do_anonymous_page`. On failure every table this
    /// fault allocated is freed again, so a failed access changes nothing.
    fn handle_none_fault(&mut self) -> Result<(), CowError> {
        let mut log = TableLog::default();
        let r = self.none_fault_inner(&mut log);
        if r.is_err() {
            for &(parent, idx, t) in log.items[..log.n].iter().rev() {
                self.mem.set_entry(parent, idx, PageTableEntry::NONE);
                self.mem.free_table(t);
            }
        }
        r
    }

    fn none_fault_inner(&mut self, log: &mut TableLog) -> Result<(), CowError> {
        let (pmd_table, pmd_i) = self.pmd_alloc_logged(log)?;
        let pmde = self.mem.entry(pmd_table, pmd_i);
        if pmde.is_none() {
            let orders = self.cfg.allowable_orders(self.vma.flags);
            if orders & (1 << PMD_ORDER) != 0
                && self.do_huge_pmd_anonymous_page(pmd_table, pmd_i, orders)?
            {
                return Ok(());
            }
            // The PTE table is `do_anonymous_page`'s `pte_alloc`: running out of memory for
            // it is that handler's exit (docs/access-and-events.md), after a PMD fallback too.
            self.record(|r| r.reason = Reason::PteNone);
            let t = alloc_table(self.mem)?;
            self.mem.set_entry(pmd_table, pmd_i, t.entry());
            log.push(pmd_table, pmd_i, t);
        }
        let pte_table = TableFrame::of(self.mem.entry(pmd_table, pmd_i));
        self.do_anonymous_page(pte_table)
    }

    /// `pmd_alloc` & co. with every allocation recorded in `log`.
    fn pmd_alloc_logged(&mut self, log: &mut TableLog) -> Result<(TableFrame, usize), CowError> {
        let mut table = self.pgd;
        for &(_, shift) in &self.paging.table_levels()[..self.paging.pmd_depth()] {
            let idx = Paging::index(self.address, shift);
            let e = self.mem.entry(table, idx);
            table = if e.is_none() {
                let t = alloc_table(self.mem)?;
                self.mem.set_entry(table, idx, t.entry());
                log.push(table, idx, t);
                t
            } else {
                TableFrame::of(e)
            };
        }
        Ok((table, Paging::index(self.address, 21)))
    }

    /// `do_anonymous_page` + `alloc_anon_folio` (KS §2.3, §2.4).
    fn do_anonymous_page(&mut self, pte_table: TableFrame) -> Result<(), CowError> {
        let prot = self.vma.page_prot();
        self.record(|r| r.reason = Reason::PteNone);
        if !self.write {
            let e = PageTableEntry::of_frame(self.mem.zero_pfn, prot | PteFlags::SPECIAL);
            self.mem
                .set_entry(pte_table, Paging::index(self.address, 12), e);
            self.record(|r| r.outcome = Outcome::ZeroPage);
            return Ok(());
        }
        let mut orders = self.anon_orders(pte_table);
        let mut chosen = None;
        while orders != 0 {
            let order = orders.ilog2();
            if let Some(f) = self.mem.alloc_folio(order) {
                chosen = Some((f, order));
                break;
            }
            self.events.emit(Event::AnonFaultFallback { order });
            self.record(|r| r.orders_failed |= 1 << order);
            self.record(|r| r.flags |= AccessFlags::FELL_BACK);
            orders &= !(1 << order);
        }
        let (folio, order) = match chosen {
            Some(c) => c,
            None => (self.mem.alloc_folio(0).ok_or(CowError::OutOfMemory)?, 0),
        };
        let nr = 1u32 << order;
        let base = self.address.align_down(PAGE_SIZE << order);
        let base_i = Paging::index(base, 12);
        self.mem.folio_ref_add(folio, nr as i32 - 1);
        *self.rss_anon += u64::from(nr);
        self.new_folio_zeroed(folio, order);
        if order > 0 {
            // count_mthp_stat(order, MTHP_STAT_ANON_FAULT_ALLOC): large folios only.
            self.events.emit(Event::AnonFaultAlloc { order });
        }
        self.record(|r| r.outcome = Outcome::AnonAlloc);
        self.mem.add_new_anon_rmap(folio, self.mm_id);
        self.mem.folio_add_lru(folio);
        let h = folio.pfn();
        let e = make_writable_dirty(PageTableEntry::of_frame(h, prot), self.vma);
        for i in 0..nr {
            self.mem
                .set_entry(pte_table, base_i + i as usize, e.with_frame(h + i));
        }
        self.anon_vma_prepare();
        Ok(())
    }

    /// The candidate mTHP orders of a write fault (KS §2.4 steps A–C): allowed by policy,
    /// naturally aligned block inside the VMA, block of `pte_none` entries.
    fn anon_orders(&mut self, pte_table: TableFrame) -> u32 {
        let (start, end, addr) = (self.vma.start, self.vma.end, self.address);
        let mut orders = self.cfg.allowable_orders(self.vma.flags) & ((1 << PMD_ORDER) - 1);
        self.record(|r| r.orders_allowed |= orders as u16);
        while orders != 0 {
            let order = orders.ilog2();
            let size = PAGE_SIZE << order;
            let block = addr.align_down(size);
            if block >= start && block.as_u64() + size <= end.as_u64() {
                break;
            }
            orders &= !(1 << order);
        }
        self.record(|r| r.orders_fit |= orders as u16);
        while orders != 0 {
            let order = orders.ilog2();
            let first = Paging::index(addr.align_down(PAGE_SIZE << order), 12);
            if (first..first + (1 << order)).all(|i| self.mem.entry(pte_table, i).is_none()) {
                break;
            }
            orders &= !(1 << order);
        }
        self.record(|r| r.orders_empty |= orders as u16);
        orders
    }

    /// A new folio of `order` was allocated and zeroed (`folio_zero_user`): its events and
    /// the record's flag.
    fn new_folio_zeroed(&mut self, folio: FolioRef, order: u32) {
        let pfn = u64::from(folio.pfn());
        self.events.emit(Event::FolioAlloc { pfn, order });
        self.events.emit(Event::PagesZeroed {
            pfn,
            nr: 1 << order,
        });
        self.record(|r| r.flags |= AccessFlags::ZEROED);
    }

    /// The TLB entries of `[start, start + len)` of this mm are invalidated.
    fn flush_tlb(&mut self, start: VirtAddr, len: u64) {
        self.events.emit(Event::TlbFlush {
            asid: self.asid,
            start: start.as_u64(),
            end: start.as_u64() + len,
        });
    }

    /// `do_huge_pmd_anonymous_page` (KS §2.5). `Ok(false)` is `VM_FAULT_FALLBACK`.
    ///
    /// `allowable` is `thp_vma_allowable_orders`'s mask. The order evidence is kept only
    /// for a fault that may allocate (a write, or a read with the huge zero page off); a
    /// range that does not fit adds only the allowed orders, for a write
    /// (docs/access-and-events.md).
    fn do_huge_pmd_anonymous_page(
        &mut self,
        pmd_table: TableFrame,
        pmd_i: usize,
        allowable: u32,
    ) -> Result<bool, CowError> {
        let haddr = self.address.align_down(PMD_SIZE);
        if haddr < self.vma.start || haddr.as_u64() + PMD_SIZE > self.vma.end.as_u64() {
            if self.write {
                self.record(|r| r.orders_allowed |= allowable as u16);
            }
            return Ok(false);
        }
        self.record(|r| r.reason = Reason::PmdNone);
        if self.write || !self.cfg.use_zero_page {
            self.record(|r| {
                r.orders_allowed |= allowable as u16;
                r.orders_fit |= 1 << PMD_ORDER;
                r.orders_empty |= 1 << PMD_ORDER;
            });
        }
        let prot = self.vma.page_prot() | PteFlags::HUGE;
        if !self.write && self.cfg.use_zero_page {
            let t = alloc_table(self.mem)?;
            let e = PageTableEntry::of_frame(self.mem.huge_zero_pfn, prot | PteFlags::SPECIAL);
            self.mem.set_entry(pmd_table, pmd_i, e);
            self.mem.deposit(pmd_table, pmd_i, t);
            self.anon_vma_prepare(); // anon_vma_prepare ran before the zero branch
            self.record(|r| r.outcome = Outcome::HugeZeroPage);
            return Ok(true);
        }
        let Some(folio) = self.mem.alloc_folio(PMD_ORDER) else {
            self.pmd_fallback();
            return Ok(false);
        };
        self.new_folio_zeroed(folio, PMD_ORDER);
        let t = match alloc_table(self.mem) {
            Ok(t) => t,
            Err(e) => {
                self.mem.folio_put_refs(folio, 1, self.events);
                return Err(e);
            }
        };
        self.map_anon_folio_pmd(folio, pmd_table, pmd_i);
        self.mem.deposit(pmd_table, pmd_i, t);
        self.record(|r| r.outcome = Outcome::AnonAlloc);
        Ok(true)
    }

    /// No order-9 block for a PMD THP: counted, recorded, and the fault falls back.
    fn pmd_fallback(&mut self) {
        self.events
            .emit(Event::AnonFaultFallback { order: PMD_ORDER });
        self.record(|r| r.orders_failed |= 1 << PMD_ORDER);
        self.record(|r| r.flags |= AccessFlags::FELL_BACK);
    }

    /// `map_anon_folio_pmd`: map a fresh order-9 folio with a writable, dirty PMD.
    fn map_anon_folio_pmd(&mut self, folio: FolioRef, pmd_table: TableFrame, pmd_i: usize) {
        let prot = self.vma.page_prot() | PteFlags::HUGE;
        self.mem.add_new_anon_rmap(folio, self.mm_id);
        self.mem.folio_add_lru(folio);
        let e = make_writable_dirty(PageTableEntry::of_frame(folio.pfn(), prot), self.vma);
        self.mem.set_entry(pmd_table, pmd_i, e);
        *self.rss_anon += PMD_NR;
        self.events.emit(Event::ThpFaultAlloc);
        self.events.emit(Event::AnonFaultAlloc { order: PMD_ORDER });
        self.anon_vma_prepare();
    }

    /// The swap cache's part of the reuse checks (issue 16): `wp_can_reuse_anon_folio` frees
    /// the swap cache of a small folio whose only other reference it is
    /// (`folio_ref_count(folio) > 1 + folio_test_swapcache(folio)` copies first), and
    /// `__wp_can_reuse_large_anon_folio` that of a large folio mapped more than once and
    /// only by this mm; `folio_free_swap` fails while a PTE still names one of the slots.
    #[cold]
    #[inline(never)]
    fn wp_free_swap(&mut self, folio_ref: FolioRef, page: u32, small: bool) {
        let f = self.mem.folio(folio_ref);
        let try_free = if small {
            f.folio_ref_count() <= 2
        } else {
            self.cfg.cow_reuse_pte_mapped_thp
                && !(self.cfg.cow_reuse_remember_exclusive && f.folio_test_exclusive_memo())
                && f.folio_large_mapcount() > 1
                && (!f.folio_mm_slots().shared
                    || (self.cfg.mm_id_exact && self.folio_mapped_only_here(folio_ref, page)))
        };
        if try_free {
            self.mem.folio_free_swap(folio_ref, self.events);
        }
    }

    /// `do_wp_page` for a private anonymous mapping (KS §4.1–4.4).
    pub(crate) fn do_wp_page(
        &mut self,
        pte_table: TableFrame,
        pte_i: usize,
    ) -> Result<(), CowError> {
        let pte = self.mem.entry(pte_table, pte_i);
        // vm_normal_page(): NULL for the zero page (special).
        let page = (!pte.is_special()).then(|| pte.frame());
        if let Some(p) = page {
            let folio_ref = self.mem.page_folio(p);
            let small = !self.mem.folio(folio_ref).folio_test_large();
            let ae = self.mem.anon_exclusive(p);
            // wp_can_reuse_anon_folio: a small folio not on the LRU yet, whose count (with
            // the batch's reference) is at most 3, is moved there first (lru_add_drain).
            if !ae
                && small
                && self.mem.folio_in_lru_batch(folio_ref)
                && self.mem.folio(folio_ref).folio_ref_count() <= 2
            {
                self.mem.lru_add_drain();
            }
            if !ae && self.mem.swap.folio_swap(folio_ref.pfn()).is_some() {
                self.wp_free_swap(folio_ref, p, small);
            }
            let folio = self.mem.folio(folio_ref);
            let reason = if ae {
                Reason::AnonExclusive
            } else if small {
                // wp_can_reuse_anon_folio: only the mapping's own reference.
                if folio.folio_ref_count() == 1 {
                    Reason::SmallSoleRef
                } else {
                    Reason::SmallOtherRefs
                }
            } else if self.cfg.cow_reuse_pte_mapped_thp {
                if self.cfg.cow_reuse_remember_exclusive && folio.folio_test_exclusive_memo() {
                    Reason::LargeMemoExclusive
                } else {
                    wp_can_reuse_large_anon_folio(folio, || {
                        self.cfg.mm_id_exact && self.folio_mapped_only_here(folio_ref, p)
                    })
                }
            } else if self.mem.reuses_sole_ref_large_pages && folio.folio_ref_count() == 1 {
                // 6.1's do_wp_page: page_count(page) == 1 for a page of a large folio too,
                // when no other page of it is mapped (reported as a sole reference).
                Reason::SmallSoleRef
            } else {
                Reason::LargeNoPteReuse
            };
            self.record(|r| r.reason = reason);
            let large_reuse = matches!(
                reason,
                Reason::LargeExclusive | Reason::LargeExactExclusive | Reason::LargeMemoExclusive
            );
            if large_reuse || matches!(reason, Reason::AnonExclusive | Reason::SmallSoleRef) {
                if self.cfg.cow_reuse_remember_exclusive
                    && reason != Reason::LargeMemoExclusive
                    && large_reuse
                {
                    self.mem.folio_set_exclusive_memo(folio_ref);
                }
                if self.unshare {
                    // do_wp_page with FAULT_FLAG_UNSHARE: SetPageAnonExclusive, and return
                    // before wp_page_reuse (no write bit, no PGREUSE).
                    self.mem.set_anon_exclusive(p, true);
                    self.record(|r| r.outcome = Outcome::Unshare);
                    return Ok(());
                }
                // wp_page_reuse.
                self.mem.set_anon_exclusive(p, true);
                let mut n = pte.mkyoung().mkdirty();
                let writable = self.vma.flags.contains(VmFlags::WRITE);
                if writable {
                    n = n.mkwrite();
                }
                self.mem.set_entry(pte_table, pte_i, n);
                if large_reuse && writable && self.cfg.cow_reuse_fault_around {
                    self.cow_reuse_fault_around(pte_table, pte_i, folio_ref, p);
                }
                self.events.emit(Event::PgReuse);
                self.record(|r| r.outcome = Outcome::CowReuse);
                return Ok(());
            }
        } else {
            self.record(|r| r.reason = Reason::ZeroPage);
        }
        self.wp_page_copy(pte_table, pte_i, page)
    }

    /// The `mm_id_exact` tracker's answer (a policy, no kernel has it): whether every
    /// mapping of the large `folio` is one of this mm's, computed from this mm's page tables
    /// rather than from the two MM-id slots: the count an unbounded per-mm tracker would
    /// keep. The pages are found as the kernel's rmap finds them (`vma_address`): page `j`
    /// of the folio has the linear index of the faulting `page` plus `j - page`, and in
    /// each VMA of this mm whose `vm_pgoff` range holds that index it can only be mapped at
    /// the address of that index. `mremap` moves pages with their index (`copy_vma` keeps
    /// `vm_pgoff`), so a folio that is partly moved is still found whole, at two places.
    fn folio_mapped_only_here(&self, folio: FolioRef, page: u32) -> bool {
        let f = self.mem.folio(folio);
        let head = folio.pfn();
        let nr = u64::from(f.folio_nr_pages());
        let Some(head_index) = self
            .vma
            .page_index(self.address)
            .checked_sub(u64::from(page - head))
        else {
            return false;
        };
        let (below, above) = self.others;
        let vmas = below
            .iter()
            .chain(core::iter::once(&*self.vma))
            .chain(above);
        let mut own = 0u64;
        for v in vmas.filter(|v| v.anon_vma) {
            for j in 0..nr {
                let Some(a) = v.index_address(head_index + j) else {
                    continue;
                };
                let Some(leaf) = walk::find_leaf(self.mem, self.paging, self.pgd, a) else {
                    continue;
                };
                let e = leaf.entry;
                if !e.is_present() || e.is_special() {
                    continue;
                }
                let mapped = match leaf.level {
                    Level::Pte => e.frame() == head + j as u32,
                    // A PMD mapping counts once in the large mapcount: at its head page.
                    _ => j == 0 && e.frame() == head,
                };
                own += u64::from(mapped);
            }
        }
        i32::try_from(own).is_ok_and(|own| own == f.folio_large_mapcount())
    }

    /// `cow_reuse_fault_around` (a policy, no kernel has it; the seed commit's "faulting
    /// around"): after `wp_page_reuse` of `page` of the large `folio`, the other PTEs of
    /// this page table inside the VMA that map pages of the same folio and are not writable
    /// become writable (`pte_mkwrite`, A and D left to the MMU), their pages anon-exclusive,
    /// so that their first writes take no fault. The folio was just found exclusive to this
    /// mm (or remembered so), which is what makes each of those pages reusable too. No TLB
    /// flush: a permission upgrade needs none on x86. Sets [`AccessFlags::FAULT_AROUND`]
    /// when it changed at least one PTE. With `cow_reuse_fault_around_window`, only the
    /// naturally aligned [`FAULT_AROUND_PAGES`]-page window around the fault is upgraded,
    /// as `do_fault_around` bounds a file read fault's mapping of its neighbours.
    fn cow_reuse_fault_around(
        &mut self,
        pte_table: TableFrame,
        pte_i: usize,
        folio: FolioRef,
        page: u32,
    ) {
        let nr = u64::from(self.mem.folio(folio).folio_nr_pages());
        let addr = self.address.align_down(PAGE_SIZE).as_u64();
        let Some(folio_start) = addr.checked_sub(u64::from(page - folio.pfn()) * PAGE_SIZE) else {
            return;
        };
        // The bound: the page table, or the window (which lies inside it).
        let (bound_start, bound_size) = if self.cfg.cow_reuse_fault_around_window {
            let size = FAULT_AROUND_PAGES * PAGE_SIZE;
            (addr & !(size - 1), size)
        } else {
            (addr & !(PMD_SIZE - 1), PMD_SIZE)
        };
        let lo = folio_start.max(self.vma.start.as_u64()).max(bound_start);
        let hi = (folio_start + nr * PAGE_SIZE)
            .min(self.vma.end.as_u64())
            .min(bound_start + bound_size);
        let mut made = false;
        for a in (lo..hi).step_by(PAGE_SIZE as usize) {
            let i = ((a >> 12) & 511) as usize;
            let e = self.mem.entry(pte_table, i);
            if i == pte_i
                || !e.is_present()
                || e.is_special()
                || e.is_protnone()
                || e.is_writable()
                || self.mem.page_folio(e.frame()) != folio
            {
                continue;
            }
            self.mem.set_anon_exclusive(e.frame(), true);
            self.mem.set_entry(pte_table, i, e.mkwrite());
            made = true;
        }
        if made {
            self.record(|r| r.flags |= AccessFlags::FAULT_AROUND);
        }
    }

    /// `wp_page_copy` (KS §4.4): a new order-0 folio replaces the PTE; the old folio loses
    /// its mapping and (at the end of the fault) the mapping's reference.
    // Inlined into its one caller, as it was before issue 12 grew it: out of line (plain
    // `#[inline]` is not enough), the call and its saved registers cost the COW-copy
    // benchmark about 50 instructions a fault (callgrind over examples/phases.rs).
    #[expect(clippy::inline_always, reason = "measured: see the comment above")]
    #[inline(always)]
    fn wp_page_copy(
        &mut self,
        pte_table: TableFrame,
        pte_i: usize,
        page: Option<u32>,
    ) -> Result<(), CowError> {
        let new = self.mem.alloc_folio(0).ok_or(CowError::OutOfMemory)?;
        let old_folio = page.map(|p| self.mem.page_folio(p));
        if let Some(f) = old_folio {
            self.mem.folio_ref_add(f, 1); // folio_get before the copy
        }
        let dst = u64::from(new.pfn());
        self.events.emit(Event::FolioAlloc { pfn: dst, order: 0 });
        if let Some(p) = page {
            self.events.emit(Event::PagesCopied {
                src: u64::from(p),
                dst,
                nr: 1,
            });
            self.record(|r| r.flags |= AccessFlags::COPIED);
        } else {
            self.events.emit(Event::PagesZeroed { pfn: dst, nr: 1 });
            self.record(|r| r.flags |= AccessFlags::ZEROED);
        }
        self.mem.content[new.pfn() as usize] = page.map_or(0, |p| self.mem.content[p as usize]);
        let fresh = PageTableEntry::of_frame(new.pfn(), self.vma.page_prot());
        let e = if self.unshare {
            // wp_page_copy with FAULT_FLAG_UNSHARE: read-only and clean, soft-dirty kept.
            let old = self.mem.entry(pte_table, pte_i);
            if old.is_soft_dirty() {
                fresh.mksoft_dirty()
            } else {
                fresh
            }
        } else {
            make_writable_dirty(fresh, self.vma)
        };
        self.mem.add_new_anon_rmap(new, self.mm_id);
        self.mem.folio_add_lru(new);
        if page.is_none() {
            *self.rss_anon += 1;
        }
        self.mem.set_entry(pte_table, pte_i, e);
        // ptep_clear_flush: the old read-only translation goes.
        self.flush_tlb(self.address.align_down(PAGE_SIZE), PAGE_SIZE);
        if let (Some(p), Some(f)) = (page, old_folio) {
            if self.mem.remove_rmap_ptes(f, p, 1, self.mm_id) {
                self.mem.deferred_split_folio(f, self.events);
            }
            // `if (page_copied) free_swap_cache(old_folio)`: an unmapped swap-cache folio
            // frees its swap space when no PTE names it.
            self.mem.free_swap_cache(f, self.events);
            self.mem.folio_put_refs(f, 2, self.events);
        }
        let unshare = self.unshare;
        self.record(|r| {
            r.outcome = if unshare {
                Outcome::Unshare
            } else if r.flags.contains(AccessFlags::SPLIT) {
                Outcome::PmdSplitCopy
            } else {
                Outcome::CowCopy
            };
        });
        self.events.emit(Event::CowCopy);
        self.anon_vma_prepare();
        Ok(())
    }

    /// `do_huge_pmd_wp_page` (KS §4.5). `Ok(false)` is `VM_FAULT_FALLBACK` (PMD split).
    fn do_huge_pmd_wp_page(
        &mut self,
        pmd_table: TableFrame,
        pmd_i: usize,
    ) -> Result<bool, CowError> {
        let pmde = self.mem.entry(pmd_table, pmd_i);
        let haddr = self.address.align_down(PMD_SIZE);
        if pmde.is_special() {
            if self.cfg.huge_zero_wp_alloc {
                // do_huge_zero_wp_pmd.
                if let Some(f) = self.mem.alloc_folio(PMD_ORDER) {
                    self.new_folio_zeroed(f, PMD_ORDER);
                    self.flush_tlb(haddr, PMD_SIZE); // pmdp_huge_clear_flush
                    self.map_anon_folio_pmd(f, pmd_table, pmd_i);
                    self.events.emit(Event::HugeZeroWrite);
                    self.record(|r| r.reason = Reason::HugeZeroNewThp);
                    self.record(|r| r.outcome = Outcome::AnonAlloc);
                    return Ok(true);
                }
                self.pmd_fallback();
            }
            self.split_for_fault((pmd_table, pmd_i), haddr, Reason::HugeZeroFallback)?;
            return Ok(false);
        }
        let h = pmde.frame();
        let folio = self.mem.folio(self.mem.page_folio(h));
        let reuse = if folio.folio_test_anon_exclusive(0) {
            Some(Reason::PmdAnonExclusive)
        } else if folio.folio_ref_count() == 1 {
            Some(Reason::PmdSoleRef)
        } else {
            None
        };
        if let Some(reason) = reuse {
            self.record(|r| r.reason = reason);
            if self.unshare {
                // do_huge_pmd_wp_page with FAULT_FLAG_UNSHARE: the `reuse:` exit returns
                // before the PMD is made writable; only the head is marked exclusive.
                self.mem.set_anon_exclusive(h, true);
                self.record(|r| r.outcome = Outcome::Unshare);
                return Ok(true);
            }
            self.record(|r| r.outcome = Outcome::PmdReuse);
            self.mem.set_anon_exclusive(h, true);
            let mut n = pmde.mkyoung().mkdirty();
            if self.vma.flags.contains(VmFlags::WRITE) {
                n = n.mkwrite();
            }
            self.mem.set_entry(pmd_table, pmd_i, n);
            // No PGREUSE here: the kernel counts it only in wp_page_reuse(), the PTE path.
            return Ok(true);
        }
        self.split_for_fault((pmd_table, pmd_i), haddr, Reason::PmdShared)?;
        Ok(false)
    }

    /// `__split_huge_pmd` from a write fault (`VM_FAULT_FALLBACK` follows), recorded.
    fn split_for_fault(
        &mut self,
        pmd: (TableFrame, usize),
        haddr: VirtAddr,
        why: Reason,
    ) -> Result<(), CowError> {
        self.record(|r| r.reason = why);
        self.record(|r| r.split_reason = why);
        self.record(|r| r.flags |= AccessFlags::SPLIT);
        split_huge_pmd(
            self.mem,
            self.events,
            (self.mm_id, self.asid),
            self.vma,
            pmd,
            haddr,
        )
    }
}

/// `pte_alloc_one` & co.: a page-table frame, or `OutOfMemory`.
pub(crate) fn alloc_table(mem: &mut PhysMem) -> Result<TableFrame, CowError> {
    mem.alloc_table().ok_or(CowError::OutOfMemory)
}

/// The `cow_reuse_fault_around_window` policy's window, in pages: 64 KiB, the default
/// `fault_around_bytes` (mm/memory.c) that bounds `do_fault_around` for file read faults.
pub(crate) const FAULT_AROUND_PAGES: u64 = 16;

/// `__wp_can_reuse_large_anon_folio` (6.15, KS §4.3): the exit it takes, in the kernel's
/// order; [`Reason::LargeExclusive`] reuses. Where the shared bit is set, `exactly_exclusive`
/// is asked (the `mm_id_exact` policy: false when the policy is off): if it knows that only
/// this mm maps the folio, the checks go on and a reuse is [`Reason::LargeExactExclusive`],
/// the decision the two-slot approximation cost.
// Inlined into do_wp_page: out of line (plain `#[inline]`, once do_wp_page was inlined into
// handle_mm_fault again) it cost the write 64K workload 1.2 M instructions (callgrind).
#[expect(clippy::inline_always, reason = "measured: see the comment above")]
#[inline(always)]
fn wp_can_reuse_large_anon_folio(
    folio: Folio<'_>,
    exactly_exclusive: impl FnOnce() -> bool,
) -> Reason {
    let mapcount = folio.folio_large_mapcount();
    if mapcount <= 1 {
        return Reason::LargeLastMapped;
    }
    let exclusive = if folio.folio_mm_slots().shared {
        if !exactly_exclusive() {
            return Reason::LargeMaybeShared;
        }
        Reason::LargeExactExclusive
    } else {
        Reason::LargeExclusive
    };
    if mapcount == folio.folio_ref_count() {
        exclusive
    } else {
        Reason::LargeExtraRefs
    }
}

/// `__split_huge_pmd_locked` (KS §6.1, non-freeze): the deposited table replaces the
/// PMD; a huge zero PMD becomes 512 zero-page PTEs; a THP PMD becomes 512 PTEs with the
/// PMD's write/young/dirty/soft-dirty bits, AE copied from the head to every page.
pub(crate) fn split_huge_pmd(
    mem: &mut PhysMem,
    events: &mut Events,
    (mm_id, asid): (u32, u64),
    vma: &Vma,
    (pmd_table, pmd_i): (TableFrame, usize),
    haddr: VirtAddr,
) -> Result<(), CowError> {
    let pmde = mem.entry(pmd_table, pmd_i);
    let t = mem.withdraw(pmd_table, pmd_i).ok_or_else(|| {
        CowError::invariant(
            "deposit",
            format!("huge PMD at {haddr} has no deposited table"),
        )
    })?;
    events.emit(Event::ThpSplitPmd);
    // pmdp_invalidate: the huge translation goes.
    events.emit(Event::TlbFlush {
        asid,
        start: haddr.as_u64(),
        end: haddr.as_u64() + PMD_SIZE,
    });
    let prot = vma.page_prot();
    if pmde.is_special() {
        let z = PageTableEntry::of_frame(mem.zero_pfn, prot | PteFlags::SPECIAL);
        for i in 0..512 {
            mem.set_entry(t, i, z);
        }
    } else {
        let h = pmde.frame();
        let folio = mem.page_folio(h);
        let ae = mem.anon_exclusive(h);
        mem.folio_ref_add(folio, PMD_NR as i32 - 1);
        mem.add_anon_rmap_ptes(folio, h, PMD_NR as u32, mm_id, ae);
        let mut e = PageTableEntry::of_frame(h, prot);
        if pmde.is_writable() {
            e = e.mkwrite();
        }
        if !pmde.is_young() {
            e = e.mkold();
        }
        if pmde.is_dirty() {
            e = e.mkdirty();
        }
        if pmde.is_soft_dirty() {
            e = e.mksoft_dirty();
        }
        for i in 0..512u32 {
            mem.set_entry(t, i as usize, e.with_frame(h + i));
        }
        // Every page is PTE-mapped now: never partially mapped.
        let partial = mem.remove_rmap_pmd(folio, mm_id);
        debug_assert!(!partial);
    }
    mem.set_entry(pmd_table, pmd_i, t.entry());
    Ok(())
}

/// `maybe_mkwrite(pte_mkdirty(entry), vma)`.
fn make_writable_dirty(e: PageTableEntry, vma: &Vma) -> PageTableEntry {
    let d = e.mkdirty();
    if vma.flags.contains(VmFlags::WRITE) {
        d.mkwrite()
    } else {
        d
    }
}

/// Tables allocated by one fault, to free again if the fault fails (at most one per level).
#[derive(Debug)]
struct TableLog {
    items: [(TableFrame, usize, TableFrame); 5],
    n: usize,
}

impl Default for TableLog {
    fn default() -> Self {
        let none = TableFrame::of(PageTableEntry::NONE);
        Self {
            items: [(none, 0, none); 5],
            n: 0,
        }
    }
}

impl TableLog {
    fn push(&mut self, parent: TableFrame, idx: usize, table: TableFrame) {
        self.items[self.n] = (parent, idx, table);
        self.n += 1;
    }
}

#[cfg(test)]
mod tests {
    use crate::{CowError, Machine, Profile, ThpMode, ThpSizeMode, VirtAddr};

    const K4: u64 = 4096;

    fn machine(profile: Profile, mem: u64) -> (Machine, VirtAddr) {
        let mut m = Machine::new(mem, 4, profile).unwrap();
        let a = m.mmap(1, 2 << 20).unwrap();
        (m, a)
    }

    fn pfn(m: &Machine, pid: u32, a: VirtAddr) -> u64 {
        m.translate(pid, a).unwrap().pfn.unwrap().as_u64()
    }

    /// The seed commit: fork, child exit, parent write of a PTE-mapped 32K folio.
    #[test]
    fn seed_reuse_vs_copy() {
        for (profile, reused) in [(Profile::V6_15, true), (Profile::V6_12, false)] {
            let (mut m, a) = machine(profile, 16 << 20);
            m.set_thp_size(3, ThpSizeMode::Always).unwrap();
            m.write(1, a, 8 * K4, 1).unwrap();
            let before = pfn(&m, 1, VirtAddr::new(a.as_u64() + 2 * K4));
            let c = m.fork(1).unwrap();
            m.exit(c).unwrap();
            m.write(1, VirtAddr::new(a.as_u64() + 2 * K4), K4, 2)
                .unwrap();
            let after = pfn(&m, 1, VirtAddr::new(a.as_u64() + 2 * K4));
            assert_eq!(before == after, reused, "{profile:?}");
            assert_eq!(m.stats().pgreuse, u64::from(reused));
            assert_eq!(m.stats().cow_copy, u64::from(!reused));
            assert_eq!(m.stats().faults_wp, 1);
            m.check().unwrap();
        }
    }

    /// KS Appendix A step 3a: the child still maps the folio, so the parent copies and the
    /// shared bit stays set.
    #[test]
    fn child_alive_copies() {
        let (mut m, a) = machine(Profile::V6_15, 16 << 20);
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        m.write(1, a, 16 * K4, 1).unwrap();
        let head = pfn(&m, 1, a);
        m.fork(1).unwrap();
        m.write(1, VirtAddr::new(a.as_u64() + 3 * K4), K4, 9)
            .unwrap();
        let f = m.folio(crate::Pfn::new(head)).unwrap();
        assert_eq!((f.refcount, f.large_mapcount), (31, 31));
        assert_eq!(f.mm_ids, [(1, 15), (2, 16)]);
        assert!(f.maybe_mapped_shared);
        assert_eq!(m.stats().cow_copy, 1);
        assert_eq!(
            m.read(2, VirtAddr::new(a.as_u64() + 3 * K4), K4).unwrap(),
            vec![1]
        );
        m.check().unwrap();
    }

    /// A write to the huge zero PMD: 6.15 maps a fresh THP, 6.12 splits and copies 4K.
    #[test]
    fn huge_zero_write_per_profile() {
        for profile in [Profile::V6_15, Profile::V6_12] {
            let (mut m, a) = machine(profile, 16 << 20);
            m.set_thp_enabled(ThpMode::Always);
            m.set_thp_size(9, ThpSizeMode::Inherit).unwrap();
            m.read(1, a, K4).unwrap();
            assert_eq!(
                m.observe(1, a, K4).unwrap()[0].kind,
                crate::FrameKind::HugeZero
            );
            m.write(1, a, K4, 5).unwrap();
            let s = m.stats().clone();
            if profile == Profile::V6_15 {
                assert_eq!(
                    (s.huge_zero_write, s.thp_fault_alloc, s.faults_wp),
                    (1, 1, 1)
                );
                assert_eq!(m.translate(1, a).unwrap().page_size, Some(2 << 20));
            } else {
                assert_eq!((s.thp_split_pmd, s.cow_copy, s.faults_wp), (1, 1, 2));
                let o = m.observe(1, VirtAddr::new(a.as_u64() + K4), K4).unwrap()[0];
                assert_eq!(o.kind, crate::FrameKind::Zero);
            }
            m.check().unwrap();
        }
    }

    /// No order-9 block: the 6.15 huge-zero write falls back (counted) to split + copy.
    #[test]
    fn huge_zero_write_fallback() {
        let (mut m, a) = machine(Profile::V6_15, 4 << 20);
        m.set_thp_size(9, ThpSizeMode::Always).unwrap();
        m.read(1, a, K4).unwrap();
        m.write(1, a, K4, 5).unwrap();
        let s = m.stats();
        assert_eq!(
            (s.huge_zero_write, s.anon_fault_fallback[7], s.thp_split_pmd),
            (0, 1, 1)
        );
        m.check().unwrap();
    }

    /// A software (swap) entry is never taken for an empty one: the access reports an
    /// invariant error and the entry stays (issue 11: not-present entries were all
    /// treated as none, so a swap entry would have been overwritten).
    #[test]
    fn swap_entry_is_not_overwritten() {
        use crate::paging::entry::SwapEntry;
        use crate::physmem::TableFrame;
        let (mut m, a) = machine(Profile::V6_15, 16 << 20);
        m.write(1, a, 2 * K4, 1).unwrap();
        let t = m.translate(1, a).unwrap();
        let pte = t.steps[3];
        let table = TableFrame::at(pte.table.as_u64() as u32);
        let swp = SwapEntry::to_pte(1, 42);
        m.k.mem.set_entry(table, pte.index + 1, swp);
        for write in [false, true] {
            let b = VirtAddr::new(a.as_u64() + K4);
            let r = if write {
                m.write(1, b, K4, 2)
            } else {
                m.read(1, b, K4).map(|_| ())
            };
            assert!(matches!(r, Err(CowError::Invariant { .. })), "{r:?}");
            assert_eq!(m.k.mem.entry(table, pte.index + 1), swp);
        }
        assert!(!m.observe(1, a, 2 * K4).unwrap()[1].present);
        assert_eq!(m.read(1, a, K4).unwrap(), [1]); // the page before is untouched
    }

    /// The three decision exits the public API cannot reach yet, from a state set up
    /// directly: a read-only PTE of an anon-exclusive page (the kernel gets one from
    /// soft-dirty tracking, `clear_refs`), a large folio with a reference that is not a
    /// mapping (a pin, the swap cache; issue 16), and a read-only huge PMD whose head is
    /// anon-exclusive.
    #[test]
    fn reasons_behind_states_the_api_cannot_make() {
        use crate::{Outcome, Reason};
        // ANON_EXCLUSIVE: 4K page, fork + exit leaves it read-only and not exclusive; mark it.
        let (mut m, a) = machine(Profile::V6_15, 16 << 20);
        m.write(1, a, K4, 1).unwrap();
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        let p = pfn(&m, 1, a) as u32;
        m.k.mem.set_anon_exclusive(p, true);
        let r = m.access(1, a, true, 2).unwrap();
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::CowReuse, Reason::AnonExclusive)
        );
        assert_eq!(pfn(&m, 1, a), u64::from(p));
        m.check().unwrap();

        // LARGE_EXTRA_REFS: a 64K folio exclusive to the parent, plus one reference.
        let (mut m, a) = machine(Profile::V6_15, 16 << 20);
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        m.write(1, a, 16 * K4, 1).unwrap();
        let c = m.fork(1).unwrap();
        m.exit(c).unwrap();
        let folio = m.k.mem.page_folio(pfn(&m, 1, a) as u32);
        m.k.mem.folio_ref_add(folio, 1);
        let r = m.access(1, a, true, 2).unwrap();
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::CowCopy, Reason::LargeExtraRefs)
        );
        m.k.mem.folio_ref_add(folio, -1);
        m.check().unwrap();

        // PMD_ANON_EXCLUSIVE: a PMD THP shared with a child (refcount 2), head marked.
        let (mut m, a) = machine(Profile::V6_15, 16 << 20);
        m.set_thp_enabled(ThpMode::Always);
        m.write(1, a, K4, 1).unwrap();
        let c = m.fork(1).unwrap();
        let head = pfn(&m, 1, a) as u32;
        m.k.mem.set_anon_exclusive(head, true);
        let r = m.access(1, a, true, 2).unwrap();
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::PmdReuse, Reason::PmdAnonExclusive)
        );
        m.k.mem.set_anon_exclusive(head, false);
        m.exit(c).unwrap();
    }

    /// An OOM in a fault frees the tables it allocated: nothing changes.
    #[test]
    fn oom_is_atomic() {
        let (mut m, a) = machine(Profile::V6_15, 4 << 20);
        // Fill memory with order-0 pages.
        let mut n = 0;
        while m.free_frames() > 0 {
            match m.write(1, VirtAddr::new(a.as_u64() + n * K4), K4, 1) {
                Ok(()) => n += 1,
                Err(e) => {
                    assert_eq!(e, CowError::OutOfMemory);
                    break;
                }
            }
        }
        let b = m.mmap(1, 2 << 20).unwrap();
        let free = m.free_frames();
        let t = m.translate(1, b).unwrap();
        assert_eq!(m.write(1, b, K4, 1), Err(CowError::OutOfMemory));
        assert_eq!(m.free_frames(), free);
        assert_eq!(m.translate(1, b).unwrap(), t);
        m.check().unwrap();
    }

    /// mTHP order selection: a 128K VMA with 64K and 256K enabled uses 64K folios; a
    /// zero-page PTE in the block forces order 0.
    #[test]
    fn order_selection() {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15).unwrap();
        m.set_thp_size(4, ThpSizeMode::Always).unwrap();
        m.set_thp_size(6, ThpSizeMode::Always).unwrap();
        let a = m.mmap(1, 128 << 10).unwrap();
        m.read(1, VirtAddr::new(a.as_u64() + 64 * 1024), K4)
            .unwrap();
        m.write(1, a, 128 << 10, 1).unwrap();
        let o = m.observe(1, a, 128 << 10).unwrap();
        assert_eq!(o[0].folio_pages, 16);
        assert_eq!(o[16].folio_pages, 1);
        assert_eq!(o[17].folio_pages, 1);
        assert_eq!(m.stats().anon_fault_alloc[2], 1);
        m.check().unwrap();
    }
}
