//! Per-access records (issue 12) without Python: the pure-Rust loop of
//! [`Machine::access`] that BENCHMARKS.md compares `Process.access_batch` with, the same
//! through [`Machine::access_batch`], and the cost of recording events.
//!
//! ```text
//! cargo run --release --example access_loop -- [PAGES] [ROUNDS] [ONLY]
//! ```
//!
//! prints one JSON object on stdout: the best (over `ROUNDS`) nanoseconds per access, or
//! per page for the event rows. `PAGES` (a power of two, default 32768: 128 MiB) pages of
//! one mapping are accessed once each, at `base + perm(i) * 4096 + (8 * i) % 4096` with
//! `perm(i) = (i * 0x9E37_79B1) mod PAGES` (a permutation: the multiplier is odd), the same
//! addresses that `cowcore.bench.access_addresses` makes for the Python side
//! (`benches/access_ratios.py` runs both in one go):
//!
//! * `present_read`, `present_write`: loads / stores to pages written before (no fault);
//! * `first_touch`: stores to a fresh mapping (every access an anonymous allocation);
//! * `cow_copy`: stores after a fork whose child lives (every access a COW copy);
//! * `events_off`, `events_on`: write all pages, fork, write them all again (COW copies),
//!   the child exits; per page, with event recording off, then on (the events taken at
//!   the end, inside the timing).
//!
//! Only the accesses are timed; each round builds its machine afresh. `ONLY` (one workload
//! name, e.g. `present_read`) runs that one alone, for a profiler.

use std::time::Instant;

use cowcore_core::{Access, AccessKinds, CowError, Machine, Profile, VirtAddr};

/// The addresses of the workload (see the crate-level comment).
fn addresses(base: u64, pages: u64) -> Vec<u64> {
    (0..pages)
        .map(|i| base + ((i * 0x9E37_79B1) & (pages - 1)) * 4096 + (8 * i) % 4096)
        .collect()
}

/// The machine state a workload starts from; returns the machine and the addresses.
fn setup(kind: &str, pages: u64) -> Result<(Machine, Vec<u64>), CowError> {
    let mut m = Machine::new(4 << 30, 4, Profile::V6_15)?;
    let len = pages * 4096;
    let base = m.mmap(1, len)?;
    if kind != "first_touch" {
        m.write(1, base, len, 1)?;
    }
    if kind == "cow_copy" {
        m.fork(1)?;
    }
    Ok((m, addresses(base.as_u64(), pages)))
}

/// Seconds for the accesses of one round: one `access` call each (`batch` false), or one
/// `access_batch` call.
fn accesses(kind: &str, pages: u64, batch: bool) -> Result<f64, CowError> {
    let (mut m, addrs) = setup(kind, pages)?;
    let write = kind != "present_read";
    let mut out = vec![Access::default(); addrs.len()];
    let start = Instant::now();
    if batch {
        let kinds = if write {
            AccessKinds::Writes
        } else {
            AccessKinds::Reads
        };
        m.access_batch(1, &addrs, kinds, 2, &mut out)?;
    } else {
        for (&a, o) in addrs.iter().zip(out.iter_mut()) {
            *o = m.access(1, VirtAddr::new(a), write, 2)?;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // The records are used (and checked), so the loop cannot be optimised away.
    let expect = match kind {
        "first_touch" => cowcore_core::Outcome::AnonAlloc,
        "cow_copy" => cowcore_core::Outcome::CowCopy,
        _ => cowcore_core::Outcome::NoFault,
    };
    assert!(
        out.iter().all(|r| r.outcome == expect),
        "{kind}: {:?}",
        out[0]
    );
    Ok(secs)
}

/// Seconds for the fork/write/COW workload with event recording on or off.
fn events(pages: u64, record: bool) -> Result<f64, CowError> {
    let mut m = Machine::new(4 << 30, 4, Profile::V6_15)?;
    let len = pages * 4096;
    let base = m.mmap(1, len)?;
    m.record_events(record);
    let start = Instant::now();
    m.write(1, base, len, 1)?;
    let child = m.fork(1)?;
    m.write(1, base, len, 2)?;
    m.exit(child)?;
    let kept = m.take_events().len();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(kept > 0, record);
    Ok(secs)
}

fn best(rounds: u32, mut f: impl FnMut() -> Result<f64, CowError>) -> Result<f64, CowError> {
    let mut b = f64::INFINITY;
    for _ in 0..rounds {
        b = b.min(f()?);
    }
    Ok(b)
}

fn main() -> Result<(), CowError> {
    let mut args = std::env::args().skip(1);
    let pages: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 15);
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let only = args.next();
    assert!(pages.is_power_of_two(), "PAGES must be a power of two");
    let per = |secs: f64| secs * 1e9 / f64::from(pages);
    let n = u64::from(pages);
    let mut fields = Vec::new();
    for kind in ["present_read", "present_write", "first_touch", "cow_copy"] {
        if only.as_deref().is_some_and(|o| o != kind) {
            continue;
        }
        let looped = best(rounds, || accesses(kind, n, false))?;
        let batch = best(rounds, || accesses(kind, n, true))?;
        fields.push(format!("\"{kind}_loop\": {:.2}", per(looped)));
        fields.push(format!("\"{kind}_batch\": {:.2}", per(batch)));
    }
    if only.as_deref().is_none_or(|o| o == "events") {
        let off = best(rounds, || events(n, false))?;
        let on = best(rounds, || events(n, true))?;
        fields.push(format!("\"events_off\": {:.2}", per(off)));
        fields.push(format!("\"events_on\": {:.2}", per(on)));
    }
    let json = format!("{{{}}}", fields.join(", "));
    // One line of JSON for benches/access_ratios.py.
    std::io::Write::write_all(&mut std::io::stdout(), format!("{json}\n").as_bytes())
        .map_err(|e| CowError::InvalidArgument(e.to_string()))?;
    Ok(())
}
