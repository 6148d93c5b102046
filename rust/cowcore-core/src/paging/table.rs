//! Page-table levels and index arithmetic ([`Level`], [`Paging`]).
//!
//! Models `pgd_index`/`p4d_index`/`pud_index`/`pmd_index`/`pte_index` and
//! `CONFIG_PGTABLE_LEVELS` of `arch/x86/include/asm/pgtable_64_types.h`.

use crate::addr::VirtAddr;

/// A paging level, top (PGD) to bottom (PTE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// The root (`pgd_t`; PML4 with 4 levels, PML5 with 5).
    Pgd,
    /// `p4d_t` (only a real level with 5-level paging).
    P4d,
    /// `pud_t` (PDPT).
    Pud,
    /// `pmd_t` (PD); may hold a 2 MiB leaf.
    Pmd,
    /// `pte_t` (PT).
    Pte,
}

impl Level {
    /// Every level, top (PGD) to bottom (PTE); a 4-level machine skips [`Level::P4d`].
    pub const ALL: [Self; 5] = [Self::Pgd, Self::P4d, Self::Pud, Self::Pmd, Self::Pte];

    /// The level's name as `WalkLevel.level` reports it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pgd => "pgd",
            Self::P4d => "p4d",
            Self::Pud => "pud",
            Self::Pmd => "pmd",
            Self::Pte => "pte",
        }
    }
}

/// The paging geometry of a machine: 4 or 5 levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    levels: u8,
}

const LEVELS4: [(Level, u32); 4] = [
    (Level::Pgd, 39),
    (Level::Pud, 30),
    (Level::Pmd, 21),
    (Level::Pte, 12),
];
const LEVELS5: [(Level, u32); 5] = [
    (Level::Pgd, 48),
    (Level::P4d, 39),
    (Level::Pud, 30),
    (Level::Pmd, 21),
    (Level::Pte, 12),
];

impl Paging {
    /// 4- or 5-level paging; `None` for any other count.
    #[must_use]
    pub const fn new(levels: u8) -> Option<Self> {
        match levels {
            4 | 5 => Some(Self { levels }),
            _ => None,
        }
    }

    /// Number of levels.
    #[must_use]
    pub const fn levels(self) -> u8 {
        self.levels
    }

    /// The levels, top first, each with the shift of its index (`PGDIR_SHIFT` ...).
    #[must_use]
    pub fn table_levels(self) -> &'static [(Level, u32)] {
        if self.levels == 5 {
            &LEVELS5
        } else {
            &LEVELS4
        }
    }

    /// End of user space: `2^47` (4-level) or `2^56` (5-level); DESIGN.md "Addresses".
    #[must_use]
    pub const fn user_end(self) -> u64 {
        if self.levels == 5 {
            1 << 56
        } else {
            1 << 47
        }
    }

    /// Index of `addr` in a table whose entries each span `1 << shift` bytes.
    #[must_use]
    pub const fn index(addr: VirtAddr, shift: u32) -> usize {
        ((addr.as_u64() >> shift) & 511) as usize
    }

    /// Position of the PMD level in [`Self::table_levels`].
    #[must_use]
    pub const fn pmd_depth(self) -> usize {
        self.levels as usize - 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices() {
        let p = Paging::new(4).unwrap();
        let a = VirtAddr::new(0x7f00_0020_3000);
        let idx: Vec<usize> = p
            .table_levels()
            .iter()
            .map(|&(_, s)| Paging::index(a, s))
            .collect();
        assert_eq!(idx, [254, 0, 1, 3]);
        assert_eq!(p.user_end(), 1 << 47);
        assert_eq!(Paging::new(5).unwrap().table_levels().len(), 5);
        assert!(Paging::new(3).is_none());
        assert_eq!(p.pmd_depth(), 2);
        assert_eq!(Level::P4d.name(), "p4d");
    }
}
