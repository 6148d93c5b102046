//! Issue 15's policies on hand-built cases whose fault counts are derived by hand.
//!
//! The case of the seed commit: a process maps a 64K folio (16 PTEs), forks, and the child
//! exits. Every PTE of the parent is then read-only and not anon-exclusive, the folio's
//! refcount and mapcount are 16 and only the parent maps it, so 6.15 reuses each page on its
//! own write fault: 16 faults. `cow_reuse_fault_around` makes the first reuse upgrade the
//! other 15 PTEs (1 fault); `cow_reuse_remember_exclusive` keeps the 16 faults but decides
//! 15 of them on the memo.

use cowcore_core::{
    AccessFlags, CowError, Machine, Outcome, Profile, Reason, ThpSizeMode, VirtAddr, PAGE_SIZE,
};

const PAGES: u64 = 16; // a 64K folio (order 4)

/// A 6.15 machine with 64K mTHP on, `policies` set, and pid 1 holding one fully written
/// 64K folio at the returned address.
fn machine(policies: &[&str]) -> Result<(Machine, u64), CowError> {
    let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
    m.set_thp_size(4, ThpSizeMode::Always)?;
    for name in policies {
        m.set_policy(name, true)?;
    }
    let a = m.mmap(1, 2 << 20)?.as_u64();
    m.write(1, VirtAddr::new(a), PAGES * PAGE_SIZE, 1)?;
    assert_eq!(
        m.folio(m.translate(1, VirtAddr::new(a))?.pfn.unwrap())?
            .order,
        4
    );
    Ok((m, a))
}

/// The parent's write of every page after fork and the child's exit: the records.
fn writes_after_child_exit(policies: &[&str]) -> Result<Vec<cowcore_core::Access>, CowError> {
    let (mut m, a) = machine(policies)?;
    let child = m.fork(1)?;
    m.exit(child)?;
    let faults_before = m.stats().faults_wp;
    let mut recs = Vec::new();
    for i in 0..PAGES {
        recs.push(m.access(1, VirtAddr::new(a + i * PAGE_SIZE), true, 100 + i)?);
        m.check()?;
    }
    let faults = recs.iter().map(|r| u64::from(r.faults)).sum::<u64>();
    assert_eq!(m.stats().faults_wp - faults_before, faults);
    // Nothing was copied: the folio is still the parent's, written in place.
    let v = m.read(1, VirtAddr::new(a), PAGES * PAGE_SIZE)?;
    assert_eq!(v, (0..PAGES).map(|i| 100 + i).collect::<Vec<_>>());
    Ok(recs)
}

#[test]
fn without_policies_each_page_faults_once() -> Result<(), CowError> {
    let recs = writes_after_child_exit(&[])?;
    for r in &recs {
        assert_eq!(
            (r.outcome, r.reason, r.faults),
            (Outcome::CowReuse, Reason::LargeExclusive, 1)
        );
        assert!(!r.flags.contains(AccessFlags::FAULT_AROUND));
    }
    Ok(())
}

#[test]
fn fault_around_takes_one_fault_instead_of_sixteen() -> Result<(), CowError> {
    let recs = writes_after_child_exit(&["cow_reuse_fault_around"])?;
    let first = recs[0];
    assert_eq!(
        (first.outcome, first.reason, first.faults),
        (Outcome::CowReuse, Reason::LargeExclusive, 1)
    );
    assert!(first.flags.contains(AccessFlags::FAULT_AROUND));
    for r in &recs[1..] {
        assert_eq!((r.outcome, r.faults), (Outcome::NoFault, 0), "{r:?}");
    }
    Ok(())
}

#[test]
fn memo_decides_every_fault_after_the_first() -> Result<(), CowError> {
    let recs = writes_after_child_exit(&["cow_reuse_remember_exclusive"])?;
    assert_eq!(
        (recs[0].reason, recs[0].faults),
        (Reason::LargeExclusive, 1)
    );
    for r in &recs[1..] {
        assert_eq!(
            (r.outcome, r.reason, r.faults),
            (Outcome::CowReuse, Reason::LargeMemoExclusive, 1)
        );
    }
    Ok(())
}

/// A fork after the memo was set makes the folio forget it: the parent's next write is
/// decided by the full check again (the child maps the folio: copy), and the child never
/// sees the parent's writes.
#[test]
fn fork_forgets_the_memo() -> Result<(), CowError> {
    let (mut m, a) = machine(&["cow_reuse_remember_exclusive"])?;
    let c1 = m.fork(1)?;
    m.exit(c1)?;
    let r = m.access(1, VirtAddr::new(a), true, 7)?;
    assert_eq!(r.reason, Reason::LargeExclusive); // remembered from here on
    let c2 = m.fork(1)?;
    let r = m.access(1, VirtAddr::new(a + PAGE_SIZE), true, 8)?;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::CowCopy, Reason::LargeMaybeShared)
    );
    assert_eq!(m.read(c2, VirtAddr::new(a), 2 * PAGE_SIZE)?, vec![7, 1]);
    m.check()
}

/// A partial unmap forgets the memo: the next fault runs the checks.
#[test]
fn munmap_forgets_the_memo() -> Result<(), CowError> {
    let (mut m, a) = machine(&["cow_reuse_remember_exclusive"])?;
    let c = m.fork(1)?;
    m.exit(c)?;
    assert_eq!(
        m.access(1, VirtAddr::new(a), true, 7)?.reason,
        Reason::LargeExclusive
    );
    assert_eq!(
        m.access(1, VirtAddr::new(a + PAGE_SIZE), true, 7)?.reason,
        Reason::LargeMemoExclusive
    );
    m.munmap(1, VirtAddr::new(a + 15 * PAGE_SIZE), PAGE_SIZE)?;
    let r = m.access(1, VirtAddr::new(a + 2 * PAGE_SIZE), true, 7)?;
    assert_eq!(r.reason, Reason::LargeExclusive);
    m.check()
}

/// Three processes: the parent's slot and the first child's are the two tracked; the second
/// child goes untracked. The parent and the first child exit: each frees its slot, and
/// neither time does a slot own every remaining mapping (the untracked child's 16 are in
/// none), so the shared bit stays set with only the second child mapping the folio: the
/// two-slot tracker copies, the exact one reuses.
#[test]
fn exact_tracking_reuses_where_two_slots_copy() -> Result<(), CowError> {
    for exact in [false, true] {
        let policies: &[&str] = if exact { &["mm_id_exact"] } else { &[] };
        let (mut m, a) = machine(policies)?;
        let (c1, c2) = (m.fork(1)?, m.fork(1)?);
        m.exit(1)?;
        m.exit(c1)?;
        let f = m.folio(m.translate(c2, VirtAddr::new(a))?.pfn.unwrap())?;
        assert!(f.maybe_mapped_shared && f.large_mapcount == 16 && f.refcount == 16);
        assert_eq!(f.mm_ids, [(0, 0), (0, 0)]);
        let r = m.access(c2, VirtAddr::new(a), true, 9)?;
        let want = if exact {
            (Outcome::CowReuse, Reason::LargeExactExclusive)
        } else {
            (Outcome::CowCopy, Reason::LargeMaybeShared)
        };
        assert_eq!((r.outcome, r.reason), want);
        m.check()?;
    }
    Ok(())
}

/// Exact tracking never reuses a folio that another mm still maps.
#[test]
fn exact_tracking_still_copies_a_shared_folio() -> Result<(), CowError> {
    let (mut m, a) = machine(&["mm_id_exact", "cow_reuse_fault_around"])?;
    let (c1, c2) = (m.fork(1)?, m.fork(1)?);
    m.exit(c1)?;
    let r = m.access(1, VirtAddr::new(a), true, 9)?;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::CowCopy, Reason::LargeMaybeShared)
    );
    let r = m.access(c2, VirtAddr::new(a + PAGE_SIZE), true, 10)?;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::CowCopy, Reason::LargeMaybeShared)
    );
    assert_eq!(m.read(c2, VirtAddr::new(a), 2 * PAGE_SIZE)?, vec![1, 10]);
    assert_eq!(m.read(1, VirtAddr::new(a), 2 * PAGE_SIZE)?, vec![9, 1]);
    m.check()
}

/// Fault-around stays inside the VMA: with the folio's second half in a read-only VMA, the
/// first write upgrades pages 1..7 only; once the VMA is writable again, page 8 faults.
#[test]
fn fault_around_stays_in_the_vma() -> Result<(), CowError> {
    let (mut m, a) = machine(&["cow_reuse_fault_around"])?;
    let c = m.fork(1)?;
    m.exit(c)?;
    let mid = VirtAddr::new(a + 8 * PAGE_SIZE);
    m.mprotect(1, mid, 8 * PAGE_SIZE, Machine::parse_prot("r")?)?;
    let r = m.access(1, VirtAddr::new(a), true, 5)?;
    assert!(r.flags.contains(AccessFlags::FAULT_AROUND));
    for i in 1..8 {
        assert_eq!(
            m.access(1, VirtAddr::new(a + i * PAGE_SIZE), true, 5)?
                .faults,
            0
        );
    }
    m.mprotect(1, mid, 8 * PAGE_SIZE, Machine::parse_prot("rw")?)?;
    let r = m.access(1, mid, true, 5)?;
    assert_eq!((r.outcome, r.faults), (Outcome::CowReuse, 1));
    m.check()
}

/// `cow_reuse_fault_around_window` on a 256K folio (64 pages) after fork and the child's
/// exit: writing every page takes one fault per aligned 16-page window (pages 0, 16, 32,
/// 48), each upgrading the window's other 15 PTEs; without the window, one fault in all.
#[test]
fn fault_around_window_faults_once_per_sixteen_pages() -> Result<(), CowError> {
    for (window, faulted) in [(false, vec![0]), (true, vec![0, 16, 32, 48])] {
        let mut m = Machine::new(16 << 20, 4, Profile::V6_15)?;
        m.set_thp_size(6, ThpSizeMode::Always)?;
        m.set_policy("cow_reuse_fault_around", true)?;
        m.set_policy("cow_reuse_fault_around_window", window)?;
        let a = m.mmap(1, 2 << 20)?.as_u64();
        m.write(1, VirtAddr::new(a), 64 * PAGE_SIZE, 1)?;
        let child = m.fork(1)?;
        m.exit(child)?;
        let mut got = Vec::new();
        for i in 0..64 {
            let r = m.access(1, VirtAddr::new(a + i * PAGE_SIZE), true, 7)?;
            if r.faults > 0 {
                assert_eq!(
                    (r.outcome, r.reason),
                    (Outcome::CowReuse, Reason::LargeExclusive)
                );
                assert!(r.flags.contains(AccessFlags::FAULT_AROUND));
                got.push(i);
            }
        }
        assert_eq!(got, faulted, "window {window}");
        m.check()?;
    }
    Ok(())
}
