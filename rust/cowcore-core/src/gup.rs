//! Getting user pages from outside the process (`mm/gup.c`): for now the read a debugger
//! or `/proc/<pid>/mem` makes, `FOLL_TOUCH` and nothing else.
//!
//! `follow_page_pte` with `FOLL_TOUCH` calls `folio_mark_accessed` on the folio of a
//! present PTE (not on the zero page, which has no folio); `follow_huge_pmd` only calls
//! `touch_pmd`, which on x86 changes a PMD for a write alone, so a read of a PMD-mapped THP
//! marks nothing (both measured: docs/accounting.md, "Referenced"). Nothing is faulted in:
//! the callers read only pages that are present (the kernel runner's `observe` reads
//! `/proc/<pid>/pagemap` first).

use crate::error::CowError;
use crate::folio::FolioRef;
use crate::kernel::Kernel;
use crate::pagewalk::{walk_page_range, EntryAt, PageWalk};
use crate::paging::entry::PageTableEntry;
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
