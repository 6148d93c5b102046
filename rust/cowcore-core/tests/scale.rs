//! The largest machine (`MAX_MEMORY`, 1 TiB) boots and runs, and costs the host only the
//! frames in use (the per-frame arrays and the table pool are reserved untouched, so these
//! tests run in a few MiB of RSS). The fill to the very top frame is `#[ignore]`d: it uses
//! every frame, about 5 GiB of host memory (`cargo test --release -p cowcore-core --test
//! scale -- --ignored`; `benches/scale_1t.py top` measures the same through Python).

use cowcore_core::{
    CowError, Machine, Pfn, Profile, ThpMode, VirtAddr, MAX_MEMORY, PAGE_SIZE, PMD_SIZE,
};

const TOTAL: u64 = MAX_MEMORY / PAGE_SIZE;

fn at(a: VirtAddr, pages: u64) -> VirtAddr {
    VirtAddr::new(a.as_u64() + pages * PAGE_SIZE)
}

#[test]
fn one_tib_boots_and_forks() {
    assert_eq!(MAX_MEMORY, 1 << 40);
    let mut m = Machine::new(MAX_MEMORY, 4, Profile::V6_15).unwrap();
    assert_eq!(m.total_frames(), TOTAL);
    assert_eq!(m.free_frames(), TOTAL - 514);
    let a = m.mmap(1, 64 << 30).unwrap();
    m.write(1, a, 16 * PAGE_SIZE, 7).unwrap();
    let child = m.fork(1).unwrap();
    m.write(child, a, PAGE_SIZE, 9).unwrap();
    m.write(1, at(a, 1), PAGE_SIZE, 8).unwrap();
    assert_eq!(m.read(1, a, 2 * PAGE_SIZE).unwrap(), [7, 8]);
    assert_eq!(m.read(child, a, 2 * PAGE_SIZE).unwrap(), [9, 7]);
    assert_eq!(m.stats().cow_copy, 2);
    m.check().unwrap();
    m.exit(child).unwrap();
    m.check().unwrap();
}

#[test]
fn above_one_tib_is_refused() {
    for memory in [MAX_MEMORY + PMD_SIZE, 2 * MAX_MEMORY, 1 << 44] {
        assert_eq!(
            Machine::new(memory, 4, Profile::V6_15).unwrap_err(),
            CowError::InvalidArgument(format!(
                "memory must be a multiple of 2M in [4M, 1T], not {memory}"
            ))
        );
    }
}

/// Every frame in use, then the top frame mapped by a PTE, copied on write after fork, and
/// every invariant recomputed.
#[test]
#[ignore = "uses every frame of 1 TiB: about 5 GiB of host memory"]
fn one_tib_to_the_top() {
    let mut m = Machine::new(MAX_MEMORY, 4, Profile::V6_15).unwrap();
    m.set_thp_enabled(ThpMode::Always);
    let heap = m.mmap(1, MAX_MEMORY).unwrap();
    for i in 0.. {
        let a = VirtAddr::new(heap.as_u64() + i * PMD_SIZE);
        match m.write(1, a, PAGE_SIZE, 1) {
            Ok(()) => {}
            Err(CowError::OutOfMemory) => break,
            Err(e) => panic!("{e}"),
        }
    }
    m.set_thp_enabled(ThpMode::Never);
    let small = m.mmap(1, PMD_SIZE).unwrap();
    let mut top = None;
    for p in 0..512 {
        match m.write(1, at(small, p), PAGE_SIZE, 3) {
            Ok(()) => {}
            Err(CowError::OutOfMemory) => break,
            Err(e) => panic!("{e}"),
        }
        let pfn = m.translate(1, at(small, p)).unwrap().pfn.unwrap();
        if pfn == Pfn::new(TOTAL - 1) {
            top = Some(at(small, p));
        }
    }
    let top = top.expect("a 4K page landed in the last frame");
    m.munmap(1, heap, 4 << 30).unwrap();
    let child = m.fork(1).unwrap();
    m.write(child, top, PAGE_SIZE, 4).unwrap();
    m.write(1, top, PAGE_SIZE, 5).unwrap();
    assert_eq!(m.translate(1, top).unwrap().pfn, Some(Pfn::new(TOTAL - 1)));
    assert_eq!(
        (
            m.read(1, top, PAGE_SIZE).unwrap(),
            m.read(child, top, PAGE_SIZE).unwrap()
        ),
        (vec![5], vec![4])
    );
    m.check().unwrap();
}
