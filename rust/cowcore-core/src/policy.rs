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
    /// Linux 6.10–6.14: a PTE-mapped large folio is never reused; a huge-zero write splits.
    V6_12,
    /// Linux 6.15+: MM-ID tracking and reuse of PTE-mapped large folios; a huge-zero write
    /// allocates a THP (`do_huge_zero_wp_pmd`).
    V6_15,
}

impl Profile {
    /// `"6.12"` or `"6.15"`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V6_12 => "6.12",
            Self::V6_15 => "6.15",
        }
    }
}

impl FromStr for Profile {
    type Err = CowError;
    fn from_str(s: &str) -> Result<Self, CowError> {
        match s {
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

/// Names of the policy toggles ([`Policy::get`]).
pub const POLICY_NAMES: [&str; 2] = ["cow_reuse_pte_mapped_thp", "huge_zero_wp_alloc"];

/// `THP_ORDERS_ALL_ANON`: orders 2..=9.
pub const THP_ORDERS_ALL_ANON: u32 = 0b11_1111_1100;

/// The per-size modes a freshly booted kernel has: `2M` (order 9, the last slot) at `inherit`,
/// every mTHP size `never`.
const BOOT_SIZES: [ThpSizeMode; 8] = {
    let mut sizes = [ThpSizeMode::Never; 8];
    sizes[7] = ThpSizeMode::Inherit;
    sizes
};

/// The THP settings and toggles of one machine.
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
}

impl Policy {
    /// The start-of-run settings under `profile`.
    #[must_use]
    pub fn new(profile: Profile) -> Self {
        Self {
            enabled: ThpMode::Never,
            sizes: BOOT_SIZES,
            use_zero_page: true,
            cow_reuse_pte_mapped_thp: profile == Profile::V6_15,
            huge_zero_wp_alloc: profile == Profile::V6_15,
        }
    }

    /// The mode of one order (2..=9).
    #[must_use]
    pub fn size_mode(&self, order: u32) -> ThpSizeMode {
        self.sizes[(order - 2) as usize]
    }

    /// A toggle by name (`cow_reuse_pte_mapped_thp`, `huge_zero_wp_alloc`).
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn get(&self, name: &str) -> Result<bool, CowError> {
        match name {
            "cow_reuse_pte_mapped_thp" => Ok(self.cow_reuse_pte_mapped_thp),
            "huge_zero_wp_alloc" => Ok(self.huge_zero_wp_alloc),
            _ => Err(CowError::InvalidArgument(format!(
                "unknown policy {name:?}"
            ))),
        }
    }

    /// Sets a toggle by name.
    ///
    /// # Errors
    /// [`CowError::InvalidArgument`] for an unknown name.
    pub fn set(&mut self, name: &str, value: bool) -> Result<(), CowError> {
        match name {
            "cow_reuse_pte_mapped_thp" => {
                self.cow_reuse_pte_mapped_thp = value;
                Ok(())
            }
            "huge_zero_wp_alloc" => {
                self.huge_zero_wp_alloc = value;
                Ok(())
            }
            _ => Err(CowError::InvalidArgument(format!(
                "unknown policy {name:?}"
            ))),
        }
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
}
