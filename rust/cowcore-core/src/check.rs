//! `Machine::check`: recompute every counter from the page tables and compare.
//!
//! Checks the invariants of KS §1.3 (and the bookkeeping around them): one reference per
//! mapping and no leaked folio, mapcounts (per page, large, entire, `_nr_pages_mapped`)
//! equal to the entries that map the folio, sane MM-ID slots with no false-negative shared
//! bit, "no writable PTE maps a page that is not anon-exclusive", an exclusive page mapped
//! by one mm only, RSS, page tables reachable exactly once, deposits, and the free count.

use std::collections::{BTreeMap, BTreeSet};

use crate::addr::{VirtAddr, PAGE_SIZE};
use crate::error::CowError;
use crate::folio::{FolioRef, ENTIRELY_MAPPED, MM_ID_DUMMY};
use crate::kernel::Kernel;
use crate::mm::Mm;
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::{EntryKind, PageTableEntry};
use crate::paging::table::Level;
use crate::physmem::{PhysMem, TableFrame, ENTRIES, ST_FOLIO, ST_FREE, ST_TABLE, ST_ZERO};
use crate::split::RmapHit;
use crate::stats::Stats;
use crate::swap::entry_slot;

#[derive(Default)]
struct FolioAcc {
    ptes: u32,
    pmds: u32,
    /// References held by GUP (`ref`: 1 a page; `pin`: 1024 a page of a small folio, 1 of
    /// a large one).
    gup_refs: i32,
    /// Pins of pages of a large folio (`_pincount`).
    pins: u32,
    /// References of the swap cache (`nr_pages` while the folio is in it).
    cache_refs: i32,
    per_mm: BTreeMap<u32, u32>,
    pages: BTreeMap<u32, u32>,
}

struct Walk {
    folios: BTreeMap<u32, FolioAcc>,
    /// Every entry that maps a folio, by head, in pid then address order: what the reverse
    /// map must answer (`rmap`).
    mappings: BTreeMap<u32, Vec<RmapHit>>,
    tables: BTreeSet<TableFrame>,
    exclusive_owner: BTreeMap<u32, u32>,
    rss: u64,
    huge: usize,
    /// Swap PTEs by the slot they name.
    swap_ptes: BTreeMap<u32, u32>,
}

/// The walk of one mm's tables for `check`: every table frame once, every leaf checked.
struct CheckWalk<'a> {
    k: &'a Kernel,
    mm: &'a Mm,
    w: &'a mut Walk,
}

impl PageWalk for CheckWalk<'_> {
    fn mem(&self) -> &PhysMem {
        &self.k.mem
    }

    fn upper_entry(&mut self, at: EntryAt) -> Result<(), CowError> {
        let t = TableFrame::of(at.entry);
        self.k.check_table_frame(self.mm.pid, t, at.addr, self.w)
    }

    fn huge_pmd(&mut self, at: EntryAt) -> Result<(), CowError> {
        let loc = (at.table, at.index);
        self.k
            .check_leaf(self.mm, Level::Pmd, at.span, loc, at.entry, at.addr, self.w)
    }

    fn pte_table(&mut self, at: EntryAt, pte_table: TableFrame) -> Result<(), CowError> {
        self.k
            .check_table_frame(self.mm.pid, pte_table, at.addr, self.w)?;
        for idx in 0..ENTRIES {
            let e = self.k.mem.entry(pte_table, idx);
            if !e.is_none() {
                let addr = at.addr + ((idx as u64) << 12);
                let loc = (pte_table, idx);
                self.k
                    .check_leaf(self.mm, Level::Pte, PAGE_SIZE, loc, e, addr, self.w)?;
            }
        }
        Ok(())
    }
}

/// The gauges recomputed from the folios and their mappings: `NR_ANON_MAPPED`,
/// `NR_ANON_THPS`, and per size `nr_anon` and `nr_anon_partially_mapped`.
#[derive(Default)]
struct Gauges {
    anon_mapped: u64,
    anon_thps: u64,
    nr_anon: [u64; 8],
    partially_mapped: [u64; 8],
}

impl Gauges {
    /// Adds one live folio. A large folio that is partially mapped now (some pages mapped
    /// by PTEs, others by nothing, no PMD) must carry `PG_partially_mapped`: it was flagged
    /// when the unmap that made it so happened (`deferred_split_folio`), unless a swap cache
    /// was ever used (a swap-cache folio is never flagged).
    fn add(&mut self, m: &PhysMem, folio: FolioRef, acc: &FolioAcc) -> Result<(), CowError> {
        let f = m.folio(folio);
        let (order, nr) = (f.folio_order(), u64::from(f.folio_nr_pages()));
        let ptes_mapped = acc.pages.len() as u64;
        if acc.pmds > 0 {
            self.anon_mapped += nr;
            self.anon_thps += nr;
        } else {
            self.anon_mapped += ptes_mapped;
        }
        Stats::gauge_mthp(&mut self.nr_anon, order, 1);
        let flagged = m.folio_test_partially_mapped(folio);
        if flagged {
            Stats::gauge_mthp(&mut self.partially_mapped, order, 1);
        }
        let partial = order >= 2 && acc.pmds == 0 && ptes_mapped > 0 && ptes_mapped < nr;
        // A folio that became partially mapped while in the swap cache was not flagged
        // (`deferred_split_folio` excludes swap-cache folios) and stays so once the cache
        // lets it go: after any swap-cache use the flag may lag (issue 16's long run).
        if partial && !flagged && !m.swap.ever_cached {
            return Err(bad(
                "deferred-split",
                format!(
                    "folio {}: {ptes_mapped} of {nr} pages mapped but not partially mapped",
                    folio.pfn()
                ),
            ));
        }
        Ok(())
    }

    fn compare(&self, m: &PhysMem, s: &Stats) -> Result<(), CowError> {
        let pairs = [
            ("NR_ANON_MAPPED", self.anon_mapped, m.nr_anon_mapped),
            ("NR_ANON_THPS", self.anon_thps, m.nr_anon_thps),
        ];
        for (name, want, have) in pairs {
            if want != have {
                return Err(bad(
                    "vmstat",
                    format!("{name} {have} but {want} pages mapped"),
                ));
            }
        }
        if self.nr_anon != s.nr_anon {
            return Err(bad(
                "vmstat",
                format!("nr_anon {:?} but {:?} folios", s.nr_anon, self.nr_anon),
            ));
        }
        if self.partially_mapped != s.nr_anon_partially_mapped {
            return Err(bad(
                "deferred-split",
                format!(
                    "nr_anon_partially_mapped {:?} but {:?} folios flagged",
                    s.nr_anon_partially_mapped, self.partially_mapped
                ),
            ));
        }
        Ok(())
    }
}

fn bad(name: &'static str, msg: String) -> CowError {
    CowError::invariant(name, msg)
}

impl Kernel {
    /// Recomputes every counter from the page tables and compares (KS §1.3).
    pub(crate) fn check(&self) -> Result<(), CowError> {
        let mut w = Walk {
            folios: BTreeMap::new(),
            mappings: BTreeMap::new(),
            tables: BTreeSet::new(),
            exclusive_owner: BTreeMap::new(),
            rss: 0,
            huge: 0,
            swap_ptes: BTreeMap::new(),
        };
        let mut ids = BTreeSet::new();
        for mm in self.procs.iter().flatten() {
            if !ids.insert(mm.mm_id) {
                return Err(bad("mm-id", format!("mm id {} used twice", mm.mm_id)));
            }
            for pair in mm.vmas.windows(2) {
                if pair[0].end > pair[1].start || pair[0].start >= pair[0].end {
                    return Err(bad(
                        "leaf-in-vma",
                        format!("pid {}: VMAs overlap or are empty", mm.pid),
                    ));
                }
            }
            w.rss = 0;
            if !w.tables.insert(mm.pgd) {
                return Err(bad(
                    "table-unique",
                    format!("PGD {} shared", mm.pgd.frame()),
                ));
            }
            let (_, top_shift) = self.paging.table_levels()[0];
            let mut c = CheckWalk {
                k: self,
                mm,
                w: &mut w,
            };
            walk_page_range(&mut c, self.paging, mm.pgd, 0, 512 << top_shift)?;
            if w.rss != mm.rss_anon {
                return Err(bad(
                    "rss",
                    format!(
                        "pid {}: MM_ANONPAGES {} but {} pages mapped",
                        mm.pid, mm.rss_anon, w.rss
                    ),
                ));
            }
        }
        if ids != self.used_mm_ids {
            return Err(bad(
                "mm-id",
                format!("live ids {ids:?} vs allocated {:?}", self.used_mm_ids),
            ));
        }
        self.check_rmap(&w)?;
        self.check_deferred_queue(&w)?;
        self.count_holds(&mut w)?;
        self.check_swap(&mut w)?;
        for (head, acc) in &w.folios {
            self.check_folio(*head, acc)?;
        }
        for &head in self.mem.pincount.keys() {
            if w.folios.get(&head).is_none_or(|a| a.pins == 0) {
                return Err(bad(
                    "pincount",
                    format!("folio {head} has a pincount but no pin is held"),
                ));
            }
        }
        self.check_frames(&w)
    }

    /// The swap device (issue 16): each slot's count is the number of swap PTEs naming it,
    /// no swap PTE names a free slot, no slot is kept with neither count nor cache folio,
    /// every folio in the swap cache is a live folio whose slots point back to it, and
    /// its `nr_pages` references are counted.
    fn check_swap(&self, w: &mut Walk) -> Result<(), CowError> {
        let sw = &self.mem.swap;
        for (&slot, &n) in &w.swap_ptes {
            if sw.count(slot) != n {
                return Err(bad(
                    "swap-count",
                    format!("slot {slot:#x}: count {} but {n} swap PTEs", sw.count(slot)),
                ));
            }
        }
        for (&slot, x) in &sw.slots {
            if slot == 0 || slot >= crate::swap::SWAP_SLOTS {
                return Err(bad(
                    "swap-slot",
                    format!("slot {slot:#x} is not a usable slot"),
                ));
            }
            if x.count != w.swap_ptes.get(&slot).copied().unwrap_or(0) {
                return Err(bad(
                    "swap-count",
                    format!("slot {slot:#x}: count {} but no such swap PTEs", x.count),
                ));
            }
            if x.count == 0 && x.cache.is_none() {
                return Err(bad("swap-free", format!("slot {slot:#x} is free but kept")));
            }
            if let Some(h) = x.cache {
                if !sw.cache.contains_key(&h) {
                    return Err(bad(
                        "swap-cache",
                        format!("slot {slot:#x} names folio {h}, which is not in the swap cache"),
                    ));
                }
            }
        }
        for (&h, c) in &sw.cache {
            if self.mem.state(h) != ST_FOLIO || self.mem.page_folio(h).pfn() != h {
                return Err(bad(
                    "swap-cache",
                    format!("folio {h} in the swap cache is not a live folio"),
                ));
            }
            let nr = 1u32 << self.mem.order(h);
            if (c.slot..c.slot + nr).any(|s| sw.lookup(s) != Some(h)) {
                return Err(bad(
                    "swap-cache",
                    format!(
                        "folio {h}: its slots from {:#x} do not all point back to it",
                        c.slot
                    ),
                ));
            }
            w.folios.entry(h).or_default().cache_refs += nr as i32;
        }
        Ok(())
    }

    /// The reverse map (`split.rs`, `rmap_walk`) finds exactly the entries the page-table
    /// walk found mapping each folio, in the same order (`rmap`): no mapping of a folio
    /// escapes a split (or, later, swap-out and collapse), and none lies in a VMA without an
    /// `anon_vma`.
    fn check_rmap(&self, w: &Walk) -> Result<(), CowError> {
        let heads: BTreeSet<u32> = w.mappings.keys().copied().collect();
        let found = self.rmap_walk(&heads);
        if found != w.mappings {
            let head = heads
                .iter()
                .find(|h| found.get(h) != w.mappings.get(h))
                .copied()
                .unwrap_or_default();
            return Err(bad(
                "rmap",
                format!(
                    "folio {head}: the reverse map finds {:?} but the page tables hold {:?}",
                    found.get(&head),
                    w.mappings.get(&head)
                ),
            ));
        }
        Ok(())
    }

    /// The deferred-split queue holds live large folios only: every `PG_partially_mapped`
    /// one, and otherwise only PMD-size THPs queued at their fault (6.12+:
    /// `queues_pmd_thp_at_fault`) (`deferred-queue`).
    fn check_deferred_queue(&self, w: &Walk) -> Result<(), CowError> {
        let m = &self.mem;
        for &head in &m.deferred_queue {
            let live = m.is_folio(head) && m.page_folio(head).pfn() == head;
            let f = FolioRef::new_head(head);
            let ok = live
                && m.order(head) >= 2
                && (m.folio_test_partially_mapped(f)
                    || (self.cfg.queues_pmd_thp_at_fault() && m.order(head) == 9));
            if !ok {
                return Err(bad(
                    "deferred-queue",
                    format!("frame {head} is queued for deferred split but may not be"),
                ));
            }
        }
        for &head in w.folios.keys() {
            if m.folio_test_partially_mapped(FolioRef::new_head(head))
                && !m.deferred_queue.contains(&head)
            {
                return Err(bad(
                    "deferred-queue",
                    format!("folio {head} is partially mapped but not queued"),
                ));
            }
        }
        Ok(())
    }

    /// Adds the references every process holds (`ref`, `pin`) to the folios they hold,
    /// mapped or not, and checks that a pinned page that is mapped is anon-exclusive (KS
    /// §1.3: "a pinned anon page is always AE"; for a PMD mapping the head's flag).
    fn count_holds(&self, w: &mut Walk) -> Result<(), CowError> {
        let m = &self.mem;
        for mm in self.procs.iter().flatten() {
            for h in &mm.holds {
                for &p in &h.pages {
                    if !m.is_folio(p) {
                        continue;
                    }
                    let f = m.page_folio(p);
                    let large = m.folio(f).folio_test_large();
                    let acc = w.folios.entry(f.pfn()).or_default();
                    acc.gup_refs += match (h.pin, large) {
                        (true, false) => crate::folio::GUP_PIN_COUNTING_BIAS as i32,
                        _ => 1,
                    };
                    if h.pin && large {
                        acc.pins += 1;
                    }
                    let mapped_ae = if acc.pmds > 0 {
                        Some(m.anon_exclusive(f.pfn()))
                    } else if m.page_mapcount(p) > 0 {
                        Some(m.anon_exclusive(p))
                    } else {
                        None
                    };
                    if h.pin && mapped_ae == Some(false) {
                        return Err(bad(
                            "pinned-exclusive",
                            format!(
                                "pid {}: pinned frame {p} is mapped but not anon-exclusive",
                                mm.pid
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The checks of one leaf entry `e` (a PTE, or a huge PMD) at `addr`, entry `idx` of
    /// `table`, in `mm`.
    #[allow(clippy::too_many_lines, clippy::too_many_arguments)]
    fn check_leaf(
        &self,
        mm: &Mm,
        level: Level,
        span: u64,
        (table, idx): (TableFrame, usize),
        e: PageTableEntry,
        addr: u64,
        w: &mut Walk,
    ) -> Result<(), CowError> {
        let (pid, mm_id) = (mm.pid, mm.mm_id);
        if !e.is_present() {
            let EntryKind::Swap(s) = e.kind() else {
                return Err(bad(
                    "table-entry",
                    format!("pid {pid}: non-present entry at {addr:#x}"),
                ));
            };
            if level != Level::Pte || s.swp_type() != crate::swap::SWAP_TYPE {
                return Err(bad(
                    "swap-entry",
                    format!(
                        "pid {pid}: a swap entry at {addr:#x} of type {} at {level:?}",
                        s.swp_type()
                    ),
                ));
            }
            if mm.find_vma(VirtAddr::new(addr)).is_none() {
                return Err(bad(
                    "leaf-in-vma",
                    format!("pid {pid}: swap entry at {addr:#x} outside any VMA"),
                ));
            }
            *w.swap_ptes.entry(entry_slot(s)).or_default() += 1;
            return Ok(());
        }
        let Some(vi) = mm.find_vma(VirtAddr::new(addr)) else {
            return Err(bad(
                "leaf-in-vma",
                format!("pid {pid}: leaf at {addr:#x} outside any VMA"),
            ));
        };
        if mm.vmas[vi].end.as_u64() < addr + span {
            return Err(bad(
                "leaf-in-vma",
                format!("pid {pid}: leaf at {addr:#x} crosses a VMA end"),
            ));
        }
        let pfn = e.frame();
        if level == Level::Pmd {
            w.huge += 1;
            match self.mem.deposited(table, idx) {
                Some(t) if self.mem.state(t.frame()) == ST_TABLE && w.tables.insert(t) => {}
                _ => {
                    return Err(bad(
                        "pmd-deposit",
                        format!("pid {pid}: huge PMD at {addr:#x}"),
                    ))
                }
            }
        }
        if e.is_special() {
            let ok = self.mem.state(pfn) == ST_ZERO
                && (if level == Level::Pmd {
                    pfn == self.mem.huge_zero_pfn
                } else {
                    pfn == self.mem.zero_pfn
                });
            if !ok || e.is_writable() {
                return Err(bad(
                    "zero-page-readonly",
                    format!("pid {pid}: bad special entry at {addr:#x}"),
                ));
            }
            return Ok(());
        }
        if self.mem.state(pfn) != ST_FOLIO {
            return Err(bad(
                "mapped-frame-is-folio",
                format!("pid {pid}: entry at {addr:#x} maps a non-folio frame"),
            ));
        }
        let head = self.mem.page_folio(pfn).pfn();
        w.mappings.entry(head).or_default().push(RmapHit {
            pid,
            addr: VirtAddr::new(addr),
            pmd: level == Level::Pmd,
        });
        let acc = w.folios.entry(head).or_default();
        *acc.per_mm.entry(mm_id).or_default() += 1;
        if level == Level::Pmd {
            if pfn != head || self.mem.order(head) != 9 {
                return Err(bad(
                    "mapped-frame-is-folio",
                    format!("pid {pid}: PMD at {addr:#x} maps no THP head"),
                ));
            }
            acc.pmds += 1;
            w.rss += 512;
        } else {
            acc.ptes += 1;
            *acc.pages.entry(pfn).or_default() += 1;
            w.rss += 1;
        }
        // KS §1.3.4: a writable entry maps an exclusive page (the head for a PMD).
        if e.is_writable() && !self.mem.anon_exclusive(pfn) {
            return Err(bad(
                "writable-implies-exclusive",
                format!("pid {pid}: writable entry at {addr:#x} maps non-exclusive frame {pfn}"),
            ));
        }
        if self.mem.anon_exclusive(pfn) {
            if let Some(&other) = w.exclusive_owner.get(&pfn) {
                if other != mm_id {
                    return Err(bad(
                        "anon-exclusive",
                        format!("exclusive frame {pfn} mapped by mm {other} and mm {mm_id}"),
                    ));
                }
            }
            w.exclusive_owner.insert(pfn, mm_id);
        }
        Ok(())
    }

    /// That the entry above points to a page-table frame reached once (`table-unique`).
    fn check_table_frame(
        &self,
        pid: u32,
        t: TableFrame,
        addr: u64,
        w: &mut Walk,
    ) -> Result<(), CowError> {
        if self.mem.state(t.frame()) != ST_TABLE || !w.tables.insert(t) {
            return Err(bad(
                "table-unique",
                format!("pid {pid}: table {} at {addr:#x} bad or shared", t.pfn()),
            ));
        }
        Ok(())
    }

    /// Refcount = mappings + GUP references, `_pincount` = pinned pages held, and the
    /// exclusive memo never beside a GUP reference (issue 16).
    fn check_gup(&self, head: u32, mappings: i32, acc: &FolioAcc) -> Result<(), CowError> {
        let m = &self.mem;
        let f = m.folio(m.page_folio(head));
        if f.folio_ref_count() != mappings + acc.gup_refs + acc.cache_refs {
            return Err(bad(
                "refcount",
                format!(
                    "folio {head}: refcount {} but {mappings} mappings, {} GUP references \
                     and {} of the swap cache",
                    f.folio_ref_count(),
                    acc.gup_refs,
                    acc.cache_refs
                ),
            ));
        }
        if m.folio_pincount(f.folio_ref()) != acc.pins {
            return Err(bad(
                "pincount",
                format!(
                    "folio {head}: pincount {} but {} pinned pages held",
                    m.folio_pincount(f.folio_ref()),
                    acc.pins
                ),
            ));
        }
        if f.folio_test_exclusive_memo() && acc.gup_refs > 0 {
            return Err(bad(
                "exclusive-memo",
                format!("folio {head}: remembered exclusive but GUP holds references"),
            ));
        }
        Ok(())
    }

    /// The per-folio invariants: refcount, mapcounts, MM-id slots, shared bit, memo.
    fn check_folio(&self, head: u32, acc: &FolioAcc) -> Result<(), CowError> {
        let m = &self.mem;
        let f = m.folio(m.page_folio(head));
        let mappings = (acc.ptes + acc.pmds) as i32;
        self.check_gup(head, mappings, acc)?;
        let nr = f.folio_nr_pages();
        for p in head..head + nr {
            let want = acc.pages.get(&p).copied().unwrap_or(0);
            if m.page_mapcount(p) != want {
                return Err(bad(
                    "page-mapcount",
                    format!(
                        "frame {p}: page mapcount {} but {want} PTEs",
                        m.page_mapcount(p)
                    ),
                ));
            }
        }
        if !f.folio_test_large() {
            return Ok(());
        }
        if f.folio_large_mapcount() != mappings {
            return Err(bad(
                "large-mapcount",
                format!(
                    "folio {head}: large mapcount {} but {mappings}",
                    f.folio_large_mapcount()
                ),
            ));
        }
        if f.folio_entire_mapcount() != acc.pmds as i32 {
            return Err(bad(
                "entire-mapcount",
                format!("folio {head}: {}", f.folio_entire_mapcount()),
            ));
        }
        let want_npm = acc.pages.len() as i32 + if acc.pmds > 0 { ENTIRELY_MAPPED } else { 0 };
        if f.folio_nr_pages_mapped_raw() != want_npm {
            return Err(bad(
                "nr-pages-mapped",
                format!(
                    "folio {head}: {:#x} want {want_npm:#x}",
                    f.folio_nr_pages_mapped_raw()
                ),
            ));
        }
        let s = f.folio_mm_slots();
        let mut total = 0;
        for i in 0..2 {
            let (id, c) = (s.ids[i], s.counts[i]);
            if (id == MM_ID_DUMMY) != (c == -1) || c < -1 {
                return Err(bad(
                    "mm-id-slot",
                    format!("folio {head}: slot {i} = ({id}, {c})"),
                ));
            }
            if id != MM_ID_DUMMY {
                let actual = acc.per_mm.get(&id).copied().unwrap_or(0) as i32;
                if c + 1 > actual {
                    return Err(bad(
                        "mm-id-slot",
                        format!(
                            "folio {head}: slot {i} mm {id} counts {} > {actual} entries",
                            c + 1
                        ),
                    ));
                }
                total += c + 1;
            }
        }
        if s.ids[0] != MM_ID_DUMMY && s.ids[0] == s.ids[1] {
            return Err(bad(
                "mm-id-slot",
                format!("folio {head}: both slots hold mm {}", s.ids[0]),
            ));
        }
        if total > mappings {
            return Err(bad(
                "mm-id-slot",
                format!("folio {head}: slots {total} > {mappings}"),
            ));
        }
        if !s.shared && acc.per_mm.len() > 1 {
            return Err(bad(
                "shared-bit",
                format!(
                    "folio {head}: mapped by {} mms but the shared bit is clear",
                    acc.per_mm.len()
                ),
            ));
        }
        check_exclusive_memo(f.folio_test_exclusive_memo(), head, acc)
    }

    fn check_frames(&self, w: &Walk) -> Result<(), CowError> {
        let m = &self.mem;
        let mut free = 0u64;
        let mut tables = 0u64;
        let mut gauges = Gauges::default();
        let mut p = 0u32;
        while p < m.nr_frames() {
            match m.state(p) {
                ST_FREE => free += 1,
                ST_TABLE => {
                    tables += 1;
                    if !w.tables.contains(&TableFrame::at(p)) {
                        return Err(bad(
                            "table-reachable",
                            format!("table frame {p} is not reachable"),
                        ));
                    }
                }
                ST_FOLIO => {
                    let h = m.page_folio(p).pfn();
                    if h == p {
                        let Some(acc) = w.folios.get(&h) else {
                            return Err(bad(
                                "no-unmapped-folio",
                                format!("folio {h} is allocated but not mapped"),
                            ));
                        };
                        gauges.add(m, m.page_folio(h), acc)?;
                    }
                }
                _ => {
                    if p != self.mem.zero_pfn
                        && !(self.mem.huge_zero_pfn..self.mem.huge_zero_pfn + 512).contains(&p)
                    {
                        return Err(bad("zero-page-readonly", format!("frame {p} marked zero")));
                    }
                }
            }
            p += 1;
        }
        if free != m.nr_free() {
            return Err(bad(
                "frame-conservation",
                format!("{free} free frames, allocator says {}", m.nr_free()),
            ));
        }
        if tables != m.nr_tables {
            return Err(bad(
                "vmstat",
                format!("{tables} table frames, NR_PAGETABLE {}", m.nr_tables),
            ));
        }
        gauges.compare(m, self.events.stats())?;
        if self.mem.deposits.len() != w.huge {
            return Err(bad(
                "pmd-deposit",
                format!(
                    "{} deposits for {} huge PMDs",
                    self.mem.deposits.len(),
                    w.huge
                ),
            ));
        }
        for &t in self.mem.deposits.values() {
            if (0..512).any(|i| !self.mem.entry(t, i).is_none()) {
                return Err(bad(
                    "pmd-deposit",
                    format!("deposited table {} is not empty", t.frame()),
                ));
            }
        }
        Ok(())
    }
}

/// The `cow_reuse_remember_exclusive` memo (issue 15) is sound only while one mm maps the
/// folio: any other mapping must have made it forget (folio.rs, `forget_exclusive_memo`).
fn check_exclusive_memo(memo: bool, head: u32, acc: &FolioAcc) -> Result<(), CowError> {
    if memo && acc.per_mm.len() > 1 {
        return Err(bad(
            "exclusive-memo",
            format!(
                "folio {head}: remembered exclusive but mapped by {} mms",
                acc.per_mm.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Machine, Profile, VirtAddr};

    #[test]
    fn detects_a_broken_refcount() {
        let mut m = Machine::new(8 << 20, 4, Profile::V6_15).unwrap();
        let a = m.mmap(1, 1 << 20).unwrap();
        m.write(1, a, 4096, 1).unwrap();
        m.check().unwrap();
        let pfn = m.translate(1, a).unwrap().pfn.unwrap().as_u64() as u32;
        let f = m.k.mem.page_folio(pfn);
        m.k.mem.folio_ref_add(f, 1);
        let e = m.check().unwrap_err();
        assert!(
            matches!(
                e,
                crate::CowError::Invariant {
                    name: "refcount",
                    ..
                }
            ),
            "{e}"
        );
        m.k.mem.folio_ref_add(f, -1);
        m.check().unwrap();
        let _ = VirtAddr::new(0);
    }
}
