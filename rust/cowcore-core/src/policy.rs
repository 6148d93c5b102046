//! THP policy: the sysfs settings, the kernel profile and the non-sysfs toggles.
//!
//! Models `/sys/kernel/mm/transparent_hugepage/{enabled,use_zero_page}`, the per-size
//! `hugepages-<N>kB/enabled` files (the `huge_anon_orders_{always,madvise,inherit}` masks of
//! `mm/huge_memory.c`) and `__thp_vma_allowable_orders()` for anonymous VMAs (KS §2.4 step A).

use crate::error::CowError;
use crate::mm::VmFlags;
use core::str::FromStr;

/// Which kernel behaviour to follow (DESIGN.md "Profiles").
///
/// # Examples
///
/// The profile sets the defaults of the toggles (the crate README shows what the reuse
/// toggle changes):
///
/// ```rust
/// use cowcore_core::{Machine, Profile};
///
/// let p: Profile = "6.12".parse()?;
/// assert_eq!((p, p.as_str()), (Profile::V6_12, "6.12"));
/// assert!("6.13".parse::<Profile>().is_err());
/// for (profile, on) in [(Profile::V6_12, false), (Profile::V6_15, true)] {
///     let m = Machine::new(8 << 20, 4, profile)?;
///     assert_eq!(m.policy("cow_reuse_pte_mapped_thp")?, on);
///     assert_eq!(m.policy("huge_zero_wp_alloc")?, on);
/// }
/// # Ok::<(), cowcore_core::CowError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Linux 6.1 (Debian bookworm): PMD-size THP only (no `hugepages-<N>kB` directories, no
    /// per-size counters), pagemap's PMD exclusive bit from the head page, and otherwise the
    /// COW rules of 6.12 (`tests/kernel/PROVENANCE.md`, "The 6.1 line").
    V6_1,
    /// Linux 6.10–6.14: a PTE-mapped large folio is never reused; a huge-zero write splits.
    V6_12,
    /// Linux 6.15+: MM-ID tracking and reuse of PTE-mapped large folios; a huge-zero write
    /// allocates a THP (`do_huge_zero_wp_pmd`).
    V6_15,
}

impl Profile {
    /// Every profile, oldest first.
    pub const ALL: [Self; 3] = [Self::V6_1, Self::V6_12, Self::V6_15];

    /// `"6.1"`, `"6.12"` or `"6.15"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
            Self::V6_15 => "6.15",
        }
    }

    /// What this profile's kernel does, resolved once: code asks the [`KernelConfig`] a
    /// capability question rather than comparing profiles.
    #[must_use]
    pub const fn config(self) -> KernelConfig {
        match self {
            // 6.1: `hugepage_vma_check()` knows one size (the PMD), `pagemap_pmd_range()`
            // reads `page_mapcount()` of the head page once per PMD, and the COW rules are
            // 6.12's but for the last page of a large folio (`do_wp_page()` refuses a page
            // that is not `PageAnonExclusive` when its folio's refcount is over 1, which a
            // PTE-mapped large folio's is while two of its pages are mapped).
            Self::V6_1 => KernelConfig {
                profile: self,
                per_page_mapcounts: true,
                mm_ids: true,
                anon_thp_orders: THP_ORDERS_PMD,
                per_size_thp_stats: false,
                reuses_pte_mapped_large_folios: false,
                allocates_on_huge_zero_write: false,
                pagemap_pmd_exclusive_from_first_page: true,
                faulted_folios_referenced: false,
                collapse_needs_writable_pte: true,
                collapse_batches_ptes: false,
                mremap_realigns: false,
                reuses_sole_ref_large_pages: true,
                swap_zeromap: false,
                swapin_large: false,
                swapin_large_shared: false,
            },
            Self::V6_12 => KernelConfig {
                profile: self,
                per_page_mapcounts: true,
                mm_ids: true,
                anon_thp_orders: THP_ORDERS_ALL_ANON,
                per_size_thp_stats: true,
                reuses_pte_mapped_large_folios: false,
                allocates_on_huge_zero_write: false,
                pagemap_pmd_exclusive_from_first_page: false,
                faulted_folios_referenced: false,
                collapse_needs_writable_pte: true,
                collapse_batches_ptes: false,
                mremap_realigns: true,
                reuses_sole_ref_large_pages: false,
                swap_zeromap: true,
                swapin_large: true,
                swapin_large_shared: false,
            },
            Self::V6_15 => KernelConfig {
                profile: self,
                per_page_mapcounts: true,
                mm_ids: true,
                anon_thp_orders: THP_ORDERS_ALL_ANON,
                per_size_thp_stats: true,
                reuses_pte_mapped_large_folios: true,
                allocates_on_huge_zero_write: true,
                pagemap_pmd_exclusive_from_first_page: true,
                faulted_folios_referenced: true,
                collapse_needs_writable_pte: false,
                collapse_batches_ptes: true,
                mremap_realigns: true,
                reuses_sole_ref_large_pages: false,
                swap_zeromap: true,
                swapin_large: true,
                swapin_large_shared: true,
            },
        }
    }
}

/// The capabilities of one kernel profile (DESIGN.md "Profiles"), resolved once from a
/// [`Profile`] by [`Profile::config`]. Every behaviour that differs between kernels is a
/// question asked of this value (`cfg.reuses_pte_mapped_large_folios()`), never a comparison
/// of versions at the call site, so that a new profile is one more row in [`Profile::config`].
///
/// Where a capability can also be switched per machine, a policy toggle ([`POLICIES`]) takes
/// its default from it, and the code asks the toggle.
///
/// # Examples
///
/// ```rust
/// use cowcore_core::Profile;
///
/// let (old, new) = (Profile::V6_12.config(), Profile::V6_15.config());
/// assert!(!old.reuses_pte_mapped_large_folios() && new.reuses_pte_mapped_large_folios());
/// assert!(new.pagemap_pmd_exclusive_from_first_page());
/// assert!(new.has_thp_order(4) && !new.has_thp_order(1) && !new.has_thp_order(10));
/// assert_eq!(new.profile(), Profile::V6_15);
/// ```
// Independent yes/no capabilities, one per kernel behaviour: not states of one machine.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelConfig {
    profile: Profile,
    per_page_mapcounts: bool,
    mm_ids: bool,
    anon_thp_orders: u32,
    per_size_thp_stats: bool,
    reuses_pte_mapped_large_folios: bool,
    allocates_on_huge_zero_write: bool,
    pagemap_pmd_exclusive_from_first_page: bool,
    faulted_folios_referenced: bool,
    collapse_needs_writable_pte: bool,
    collapse_batches_ptes: bool,
    mremap_realigns: bool,
    reuses_sole_ref_large_pages: bool,
    swap_zeromap: bool,
    swapin_large: bool,
    swapin_large_shared: bool,
}

impl KernelConfig {
    /// The profile this configuration was resolved from (for display only).
    #[must_use]
    pub const fn profile(self) -> Profile {
        self.profile
    }

    /// Each page of a large folio keeps its own mapcount (`page->_mapcount`,
    /// `CONFIG_PAGE_MAPCOUNT`); `/proc/kpagecount` and the pagemap exclusive bit read it.
    /// True under every profile modelled.
    #[must_use]
    pub const fn per_page_mapcounts(self) -> bool {
        self.per_page_mapcounts
    }

    /// Large folios keep two MM-owner slots and the "maybe mapped shared" bit
    /// (`folio->_mm_id[]`, `CONFIG_MM_ID`, 6.15). The simulator maintains them under every
    /// profile (they are bookkeeping that only the reuse decision reads), so this is true
    /// for both; a profile without them would turn it off.
    #[must_use]
    pub const fn mm_ids(self) -> bool {
        self.mm_ids
    }

    /// The anonymous large-folio orders that exist, as a bitmask: `THP_ORDERS_ALL_ANON`
    /// (orders 2..=9 on x86-64 with 4 KiB pages) since 6.8's multi-size THP, only the PMD
    /// order 9 before (6.1).
    #[must_use]
    pub const fn anon_thp_orders(self) -> u32 {
        self.anon_thp_orders
    }

    /// Whether anonymous folios of `order` exist (a `hugepages-<N>kB` directory).
    #[must_use]
    pub const fn has_thp_order(self, order: u32) -> bool {
        order < 32 && self.anon_thp_orders & (1 << order) != 0
    }

    /// The kernel keeps per-size THP counters (`hugepages-<N>kB/stats/`: `anon_fault_alloc`
    /// and the others, `count_mthp_stat()`, added from 6.10 to 6.12); without them (6.1) only the
    /// `/proc/vmstat` events exist. The simulator counts the same events under every profile;
    /// this says whether the kernel would show the per-size ones.
    #[must_use]
    pub const fn per_size_thp_stats(self) -> bool {
        self.per_size_thp_stats
    }

    /// `do_wp_page` may reuse a PTE-mapped large folio that one mm maps exclusively
    /// (`__wp_can_reuse_large_anon_folio`, 6.15); before that it always copies. The
    /// default of the `cow_reuse_pte_mapped_thp` toggle.
    #[must_use]
    pub const fn reuses_pte_mapped_large_folios(self) -> bool {
        self.reuses_pte_mapped_large_folios
    }

    /// A write to the huge zero PMD allocates a fresh PMD-mapped THP
    /// (`do_huge_zero_wp_pmd`, ≈6.14+); before that it splits the PMD and copies one
    /// 4 KiB page. The default of the `huge_zero_wp_alloc` toggle.
    #[must_use]
    pub const fn allocates_on_huge_zero_write(self) -> bool {
        self.allocates_on_huge_zero_write
    }

    /// pagemap reports the exclusive bit (`PM_MMAP_EXCLUSIVE`) of a PMD mapping once, from
    /// its first page, for all 512 entries (`pagemap_pmd_range()`: measured on 7.2, and on
    /// 6.1, whose version reads `page_mapcount(pmd_page(pmd))`); 6.12 tests every 4 KiB page
    /// (the commit "`fs/proc/task_mmu`: properly detect `PM_MMAP_EXCLUSIVE` per page of
    /// PMD-mapped THPs").
    #[must_use]
    pub const fn pagemap_pmd_exclusive_from_first_page(self) -> bool {
        self.pagemap_pmd_exclusive_from_first_page
    }

    /// `move_page_tables` first aligns a move that starts a VMA down to the PMD boundary
    /// when source and destination are equally misaligned, the range reaches the next
    /// boundary and nothing is mapped below either start (`try_realign_addr`, 6.7), so that
    /// the first PTE table moves whole (`move_normal_pmd`). 6.1 moves PTE by PTE there.
    #[must_use]
    pub const fn mremap_realigns(self) -> bool {
        self.mremap_realigns
    }

    /// A folio a fault maps gets `PG_referenced` as it is added to the LRU
    /// (`folio_add_lru()` in fault context calls `folio_mark_accessed()` under MGLRU; measured
    /// on 7.2 and 7.3). Without it (6.12), entering the LRU clears the flag
    /// (`lru_gen_add_folio`), so a mark made while a small folio waits in the per-CPU
    /// LRU-add batch is lost when the batch drains.
    #[must_use]
    pub const fn faulted_folios_referenced(self) -> bool {
        self.faulted_folios_referenced
    }

    /// `do_wp_page` decides a page of a large folio as it decides a small page, by the
    /// folio's reference count: it reuses the page when that count is 1, that is when no
    /// other page of the folio is mapped and nothing else holds a reference (6.1's
    /// `do_wp_page()`: `page_count(page)` checks for every anonymous page; measured by the
    /// `cowc-*-ro-pin-on-ro-previously-shared-2M` scenarios on 6.1.176). Later kernels
    /// (`wp_can_reuse_anon_folio()`, 6.12) refuse every large folio before 6.15.
    #[must_use]
    pub const fn reuses_sole_ref_large_pages(self) -> bool {
        self.reuses_sole_ref_large_pages
    }

    /// A PMD-size THP goes on the deferred-split queue when a fault maps it
    /// (`deferred_split_folio(folio, false)` in `map_anon_folio_pmd`, 6.12's "split
    /// underused THPs"), and the shrinker splits it if `thp_underused` (split.rs); a
    /// successful anonymous split maps the zero-filled pages to the shared zero page
    /// (`remap_page(..., RMP_USE_SHARED_ZEROPAGE)`). Measured on 6.12, 7.2 and 7.3
    /// (`split-underused`, `split-zero-pages-*`); 6.1 has neither. Not exported: it follows
    /// `per_size_thp_stats` on every profile (both arrived in 6.10-6.12).
    #[must_use]
    pub const fn queues_pmd_thp_at_fault(self) -> bool {
        self.per_size_thp_stats
    }

    /// `MADV_COLLAPSE` refuses a 2 MiB block none of whose PTEs is writable (`SCAN_PAGE_RO`
    /// in `hpage_collapse_scan_pmd()` and `__collapse_huge_page_isolate()`, `EINVAL`): a
    /// block that fork left read-only in both processes. Measured on 6.1 and 6.12; 7.2 and
    /// 7.3 collapse such a block.
    #[must_use]
    pub const fn collapse_needs_writable_pte(self) -> bool {
        self.collapse_needs_writable_pte
    }

    /// `__collapse_huge_page_copy_succeeded()` removes the rmap of a large folio's
    /// consecutive PTEs as one `folio_pte_batch` (7.x), so a folio the collapse unmaps whole
    /// is never partially mapped on the way; 6.1 and 6.12 go page by page, and the first page
    /// removed queues the folio for deferred split (recorded: `split_deferred` on 6.12).
    #[must_use]
    pub const fn collapse_batches_ptes(self) -> bool {
        self.collapse_batches_ptes
    }

    /// A zero-filled folio is not written to swap: its slots are marked in the zeromap and
    /// its swap-in reads nothing (`swap_writepage` → `swap_zeromap_folio_set`, 6.12+).
    #[must_use]
    pub const fn swap_zeromap(self) -> bool {
        self.swap_zeromap
    }

    /// The swap-in fault may read a large folio (mTHP below PMD order) at once
    /// (`alloc_swap_folio`, 6.12+).
    #[must_use]
    pub const fn swapin_large(self) -> bool {
        self.swapin_large
    }

    /// The large swap-in also for a slot shared by a fork (count > 1), through the swap
    /// cache (7.x); before, only the `SWP_SYNCHRONOUS_IO` bypass (count 1) reads large.
    #[must_use]
    pub const fn swapin_large_shared(self) -> bool {
        self.swapin_large_shared
    }
}

impl FromStr for Profile {
    type Err = CowError;
    fn from_str(s: &str) -> Result<Self, CowError> {
        match s {
            "6.1" => Ok(Self::V6_1),
            "6.12" => Ok(Self::V6_12),
            "6.15" => Ok(Self::V6_15),
            _ => Err(CowError::InvalidArgument(format!(
                "unknown kernel profile {s:?}"
            ))),
        }
    }
}

/// `transparent_hugepage/enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThpMode {
    /// `always`.
    Always,
    /// `madvise`.
    Madvise,
    /// `never`.
    Never,
}

impl ThpMode {
    /// Every mode, in sysfs order.
    pub const ALL: [Self; 3] = [Self::Always, Self::Madvise, Self::Never];

    /// The sysfs spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Madvise => "madvise",
            Self::Never => "never",
        }
    }
}

impl FromStr for ThpMode {
    type Err = CowError;
    fn from_str(s: &str) -> Result<Self, CowError> {
        match s {
            "always" => Ok(Self::Always),
            "madvise" => Ok(Self::Madvise),
            "never" => Ok(Self::Never),
            _ => Err(CowError::InvalidArgument(format!("unknown THP mode {s:?}"))),
        }
    }
}

/// `hugepages-<N>kB/enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThpSizeMode {
    /// `always`.
    Always,
    /// `madvise`.
    Madvise,
    /// `inherit` (follow `transparent_hugepage/enabled`).
    Inherit,
    /// `never`.
    Never,
}

impl ThpSizeMode {
    /// Every mode, in sysfs order.
    pub const ALL: [Self; 4] = [Self::Always, Self::Madvise, Self::Inherit, Self::Never];

    /// The sysfs spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Madvise => "madvise",
            Self::Inherit => "inherit",
            Self::Never => "never",
        }
    }
}

impl FromStr for ThpSizeMode {
    type Err = CowError;
    fn from_str(s: &str) -> Result<Self, CowError> {
        match s {
            "always" => Ok(Self::Always),
            "madvise" => Ok(Self::Madvise),
            "inherit" => Ok(Self::Inherit),
            "never" => Ok(Self::Never),
            _ => Err(CowError::InvalidArgument(format!(
                "unknown THP size mode {s:?}"
            ))),
        }
    }
}

/// The anonymous THP sizes by sysfs name, with their order (`THP_ORDERS_ALL_ANON`).
pub const THP_SIZES: [(&str, u32); 8] = [
    ("16K", 2),
    ("32K", 3),
    ("64K", 4),
    ("128K", 5),
    ("256K", 6),
    ("512K", 7),
    ("1M", 8),
    ("2M", 9),
];

/// The order of a THP size name (`"64K"` → 4).
///
/// # Errors
/// [`CowError::InvalidArgument`] for an unknown size.
pub fn size_order(name: &str) -> Result<u32, CowError> {
    THP_SIZES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, o)| o)
        .ok_or_else(|| CowError::InvalidArgument(format!("unknown THP size {name:?}")))
}

/// The sysfs name of an order in 2..=9.
#[must_use]
pub fn size_name(order: u32) -> &'static str {
    THP_SIZES[(order - 2) as usize].0
}

/// `THP_ORDERS_ALL_ANON`: orders 2..=9.
pub const THP_ORDERS_ALL_ANON: u32 = 0b11_1111_1100;

/// The PMD order alone (`HPAGE_PMD_ORDER` = 9): the one THP size of a kernel without
/// multi-size THP (before 6.8).
pub const THP_ORDERS_PMD: u32 = 1 << 9;

/// Why a THP size other than 2M cannot be read or set on a kernel with PMD-size THP only:
/// the words of the kernel runner's probe (`probe.c`, "kernels without mTHP"), so that a
/// scenario prints the same error line on the simulator and on the kernel.
pub const NO_MTHP_SIZES: &str =
    "this kernel has PMD-size (2M) THP only, no /sys/kernel/mm/transparent_hugepage/hugepages-*kB";

/// The per-size modes a freshly booted kernel has: `2M` (order 9, the last slot) at `inherit`,
/// every mTHP size `never`.
const BOOT_SIZES: [ThpSizeMode; 8] = {
    let mut sizes = [ThpSizeMode::Never; 8];
    sizes[7] = ThpSizeMode::Inherit;
    sizes
};

/// One policy toggle: a behaviour that is not a sysfs setting, with a default per profile.
/// Declared once, in [`POLICIES`]: [`Policy::new`], [`Policy::get`] and [`Policy::set`] work
/// from it, the binding exports it (`cowcore._cowcore.Machine.policies()`), and the Python
/// facade and the docs read that.
#[derive(Clone, Copy)]
pub struct PolicySpec {
    /// The toggle's name (`machine.policy.<name>` in Python, the scenario `policy` statement).
    pub name: &'static str,
    /// One line on what it changes, naming the kernel function.
    pub doc: &'static str,
    /// Its default under a kernel configuration (the capability it overrides).
    default: fn(KernelConfig) -> bool,
    /// The field of [`Policy`] that holds it.
    field: fn(&mut Policy) -> &mut bool,
}

impl PolicySpec {
    /// The toggle's default under `cfg`.
    #[must_use]
    pub fn default_for(&self, cfg: KernelConfig) -> bool {
        (self.default)(cfg)
    }

    /// The toggle of that name.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn find(name: &str) -> Result<&'static Self, CowError> {
        POLICIES
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| CowError::InvalidArgument(format!("unknown policy {name:?}")))
    }
}

impl core::fmt::Debug for PolicySpec {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PolicySpec")
            .field("name", &self.name)
            .field("doc", &self.doc)
            .finish_non_exhaustive()
    }
}

/// Every policy toggle, in the order they are listed (DESIGN.md "Profiles").
///
/// # Examples
///
/// ```rust
/// use cowcore_core::{Profile, POLICIES};
///
/// let reuse = POLICIES.iter().find(|p| p.name == "cow_reuse_pte_mapped_thp").unwrap();
/// assert!(!reuse.default_for(Profile::V6_12.config()));
/// assert!(reuse.default_for(Profile::V6_15.config()));
/// ```
pub const POLICIES: &[PolicySpec] = &[
    PolicySpec {
        name: "cow_reuse_pte_mapped_thp",
        doc: "a write fault may reuse a PTE-mapped large folio that one mm maps exclusively \
              (__wp_can_reuse_large_anon_folio, 6.15)",
        default: KernelConfig::reuses_pte_mapped_large_folios,
        field: |p| &mut p.cow_reuse_pte_mapped_thp,
    },
    PolicySpec {
        name: "huge_zero_wp_alloc",
        doc: "a write to the huge zero PMD allocates a fresh PMD-mapped THP \
              (do_huge_zero_wp_pmd, 6.14+) instead of splitting it and copying one 4 KiB page",
        default: KernelConfig::allocates_on_huge_zero_write,
        field: |p| &mut p.huge_zero_wp_alloc,
    },
    // The seed commit's future work and its series' known imprecision (issue 15): no kernel
    // has these, so they are off under every profile (DESIGN.md "Policies").
    PolicySpec {
        name: "cow_reuse_remember_exclusive",
        doc: "when __wp_can_reuse_large_anon_folio finds a large folio exclusive to this mm, \
              remember it on the folio; later write faults on its pages reuse without the \
              mapcount/refcount checks until its mapcount changes (not in any kernel)",
        default: |_| false,
        field: |p| &mut p.cow_reuse_remember_exclusive,
    },
    PolicySpec {
        name: "cow_reuse_fault_around",
        doc: "when a write fault reuses a PTE-mapped large folio, also make writable (and \
              anon-exclusive) this mm's other PTEs of the folio in the same VMA and page \
              table (wp_page_reuse; not in any kernel)",
        default: |_| false,
        field: |p| &mut p.cow_reuse_fault_around,
    },
    PolicySpec {
        name: "cow_reuse_fault_around_window",
        doc: "with cow_reuse_fault_around, upgrade only the PTEs in the naturally aligned \
              16-page (64 KiB) window around the faulting page, the default \
              fault_around_bytes of do_fault_around for file read faults (not in any kernel)",
        default: |_| false,
        field: |p| &mut p.cow_reuse_fault_around_window,
    },
    PolicySpec {
        name: "mm_id_exact",
        doc: "an idealised MM-id tracker that knows every mm mapping a large folio: \
              __wp_can_reuse_large_anon_folio's 'maybe mapped shared' answer is exact \
              instead of the two-slot approximation (not in any kernel)",
        default: |_| false,
        field: |p| &mut p.mm_id_exact,
    },
];

/// The THP settings and toggles of one machine.
// Independent switches, one per behaviour (the POLICIES table), not states of one machine.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `transparent_hugepage/enabled` (starts `never`, as a scenario run does).
    pub enabled: ThpMode,
    /// Per-size modes for orders 2..=9: the kernel's boot defaults, `2M` at `inherit` and every
    /// other size `never` (`hugepage_init_sysfs()` in `mm/huge_memory.c` sets only the PMD order to
    /// inherit).
    pub sizes: [ThpSizeMode; 8],
    /// `transparent_hugepage/use_zero_page` (starts on).
    pub use_zero_page: bool,
    /// Reuse PTE-mapped large folios in `do_wp_page` (6.15's
    /// `__wp_can_reuse_large_anon_folio`); defaults per profile.
    pub cow_reuse_pte_mapped_thp: bool,
    /// A write to the huge zero PMD allocates a fresh PMD-mapped THP
    /// (`do_huge_zero_wp_pmd`, ≈6.14+); off: split + 4K copy. Defaults per profile.
    pub huge_zero_wp_alloc: bool,
    /// Remember on a large folio that `__wp_can_reuse_large_anon_folio` found it exclusive
    /// to the faulting mm, and reuse its other pages on that memo alone (issue 15; off
    /// under every profile).
    pub cow_reuse_remember_exclusive: bool,
    /// When a PTE-mapped large folio is reused, make this mm's other PTEs of it in the same
    /// VMA and page table writable too (issue 15; off under every profile).
    pub cow_reuse_fault_around: bool,
    /// Limit `cow_reuse_fault_around` to the aligned 16-page window around the fault
    /// (issue 15's study: the latency of a whole 2M folio's upgrade; off under every profile).
    pub cow_reuse_fault_around_window: bool,
    /// Answer "maybe mapped shared" exactly (every mm mapping the folio known), not from the
    /// two MM-id slots (issue 15; off under every profile).
    pub mm_id_exact: bool,
}

impl Policy {
    /// The start-of-run settings under `profile`.
    #[must_use]
    pub fn new(profile: Profile) -> Self {
        Self::with_config(profile.config())
    }

    /// The start-of-run settings of a kernel configured as `cfg`: sysfs as booted, every
    /// toggle of [`POLICIES`] at its default.
    #[must_use]
    pub fn with_config(cfg: KernelConfig) -> Self {
        let mut policy = Self {
            enabled: ThpMode::Never,
            sizes: BOOT_SIZES,
            use_zero_page: true,
            cow_reuse_pte_mapped_thp: false,
            huge_zero_wp_alloc: false,
            cow_reuse_remember_exclusive: false,
            cow_reuse_fault_around: false,
            cow_reuse_fault_around_window: false,
            mm_id_exact: false,
        };
        for spec in POLICIES {
            *(spec.field)(&mut policy) = spec.default_for(cfg);
        }
        policy
    }

    /// The mode of one order (2..=9).
    #[must_use]
    pub fn size_mode(&self, order: u32) -> ThpSizeMode {
        self.sizes[(order - 2) as usize]
    }

    /// A toggle of [`POLICIES`] by name.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn get(&self, name: &str) -> Result<bool, CowError> {
        let spec = PolicySpec::find(name)?;
        // `field` hands out the place for writing; reading it from a copy keeps one accessor
        // per toggle (a `Policy` is a few bytes, and this is not a hot path).
        Ok(*(spec.field)(&mut self.clone()))
    }

    /// Sets a toggle of [`POLICIES`] by name.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn set(&mut self, name: &str, value: bool) -> Result<(), CowError> {
        *(PolicySpec::find(name)?.field)(self) = value;
        Ok(())
    }

    /// `__thp_vma_allowable_orders()` for an anonymous VMA in the page-fault path: the
    /// bitmask of orders (2..=9) that sysfs and the VMA flags allow.
    ///
    /// # Examples
    ///
    /// ```rust
    /// use cowcore_core::{Policy, Profile, ThpMode, ThpSizeMode, VmFlags};
    ///
    /// let mut p = Policy::new(Profile::V6_15);
    /// p.sizes[4 - 2] = ThpSizeMode::Always; // 64K (order 4)
    /// p.sizes[9 - 2] = ThpSizeMode::Inherit; // 2M (order 9) follows `enabled`
    /// p.enabled = ThpMode::Madvise;
    /// assert_eq!(p.allowable_orders(VmFlags::empty()), 1 << 4);
    /// assert_eq!(p.allowable_orders(VmFlags::HUGEPAGE), (1 << 4) | (1 << 9)); // MADV_HUGEPAGE
    /// assert_eq!(p.allowable_orders(VmFlags::HUGEPAGE | VmFlags::NOHUGEPAGE), 0);
    /// ```
    #[must_use]
    pub fn allowable_orders(&self, vm_flags: VmFlags) -> u32 {
        if vm_flags.contains(VmFlags::NOHUGEPAGE) {
            return 0;
        }
        let hugepage = vm_flags.contains(VmFlags::HUGEPAGE);
        let mut mask = 0;
        for order in 2..=9u32 {
            let bit = 1 << order;
            let inherit_ok =
                self.enabled == ThpMode::Always || (hugepage && self.enabled == ThpMode::Madvise);
            let on = match self.size_mode(order) {
                ThpSizeMode::Always => true,
                ThpSizeMode::Madvise => hugepage,
                ThpSizeMode::Inherit => inherit_ok,
                ThpSizeMode::Never => false,
            };
            if on {
                mask |= bit;
            }
        }
        mask & THP_ORDERS_ALL_ANON
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let mut p = Policy::new(Profile::V6_12);
        assert!(!p.cow_reuse_pte_mapped_thp);
        assert_eq!(p.allowable_orders(VmFlags::empty()), 0);
        assert_eq!(p.size_mode(9), ThpSizeMode::Inherit, "2M boots at inherit");
        assert!((2..9).all(|order| p.size_mode(order) == ThpSizeMode::Never));
        p.sizes[2] = ThpSizeMode::Always; // 64K
        assert_eq!(p.allowable_orders(VmFlags::empty()), 1 << 4);
        p.enabled = ThpMode::Madvise;
        assert_eq!(p.allowable_orders(VmFlags::empty()), 1 << 4);
        assert_eq!(p.allowable_orders(VmFlags::HUGEPAGE), (1 << 4) | (1 << 9));
        assert_eq!(
            p.allowable_orders(VmFlags::HUGEPAGE | VmFlags::NOHUGEPAGE),
            0
        );
        assert_eq!(size_order("1M").unwrap(), 8);
        assert!(size_order("8K").is_err());
        assert_eq!(size_name(9), "2M");
        assert!("sometimes".parse::<ThpMode>().is_err());
        assert_eq!("6.15".parse::<Profile>().unwrap(), Profile::V6_15);
        assert!(p.set("nope", true).is_err());
    }

    #[test]
    fn policy_table_drives_new_get_set() {
        let names: Vec<_> = POLICIES.iter().map(|p| p.name).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "policy names are unique");
        for profile in Profile::ALL {
            let cfg = profile.config();
            assert_eq!(cfg.profile(), profile);
            let mut p = Policy::new(profile);
            for spec in POLICIES {
                assert_eq!(
                    p.get(spec.name).unwrap(),
                    spec.default_for(cfg),
                    "{}",
                    spec.name
                );
                let flipped = !spec.default_for(cfg);
                p.set(spec.name, flipped).unwrap();
                assert_eq!(p.get(spec.name).unwrap(), flipped);
                // each toggle has its own field: the others keep their defaults
                for other in POLICIES.iter().filter(|o| o.name != spec.name) {
                    assert_eq!(p.get(other.name).unwrap(), other.default_for(cfg));
                }
                p.set(spec.name, !flipped).unwrap();
            }
            assert_eq!(p, Policy::new(profile));
        }
        assert!(Policy::new(Profile::V6_12).get("nope").is_err());
    }

    #[test]
    fn capabilities_per_profile() {
        let (old, new) = (Profile::V6_12.config(), Profile::V6_15.config());
        let v61 = Profile::V6_1.config();
        assert_eq!(v61.anon_thp_orders(), 1 << 9);
        assert!(v61.has_thp_order(9) && (2..9).all(|order| !v61.has_thp_order(order)));
        assert!(!v61.per_size_thp_stats() && old.per_size_thp_stats() && new.per_size_thp_stats());
        assert!(v61.pagemap_pmd_exclusive_from_first_page());
        assert!(!v61.reuses_pte_mapped_large_folios() && !v61.allocates_on_huge_zero_write());
        assert!(!v61.faulted_folios_referenced() && v61.per_page_mapcounts() && v61.mm_ids());
        assert_eq!("6.1".parse::<Profile>().unwrap(), Profile::V6_1);
        assert_eq!(Profile::V6_1.as_str(), "6.1");
        assert!(!old.reuses_pte_mapped_large_folios());
        assert!(!old.allocates_on_huge_zero_write());
        assert!(!old.pagemap_pmd_exclusive_from_first_page());
        assert!(new.reuses_pte_mapped_large_folios());
        assert!(new.allocates_on_huge_zero_write());
        assert!(new.pagemap_pmd_exclusive_from_first_page());
        for cfg in [old, new] {
            assert!(cfg.per_page_mapcounts() && cfg.mm_ids());
            assert_eq!(cfg.anon_thp_orders(), THP_ORDERS_ALL_ANON);
            for &(_, order) in &THP_SIZES {
                assert!(cfg.has_thp_order(order));
            }
            assert!(!cfg.has_thp_order(0) && !cfg.has_thp_order(1) && !cfg.has_thp_order(40));
        }
    }
}
