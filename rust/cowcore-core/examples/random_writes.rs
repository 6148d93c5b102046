//! The "random writes after fork" workload of BENCHMARKS.md without Python, for profiling
//! the core alone (`perf record cargo run --profile profiling --example random_writes`):
//! 64 MiB written, forked (the child lives), then 20 000 single-page writes at random
//! pages of the parent in one `write_pages` batch, then the same pages again (no faults).
//! Only the batches are timed; they run `ROUNDS` times on clones of the forked machine (or,
//! with `FRESH=1` in the environment, on freshly built ones, whose frame arrays the host
//! has not backed yet) and the best ns per page is printed.

use std::time::Instant;

use cowcore_core::{Machine, Profile, VirtAddr};

const BYTES: u64 = 64 << 20;
const WRITES: u32 = 20_000;
const ROUNDS: u64 = 200;

/// A small xorshift generator: the workload only needs a fixed, well-spread sequence.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() -> Result<(), cowcore_core::CowError> {
    let mut best = f64::INFINITY;
    let mut again = f64::INFINITY;
    let mut base = Machine::new(4 << 30, 4, Profile::V6_15)?;
    let a = base.mmap(1, BYTES)?;
    base.write(1, a, BYTES, 1)?;
    base.fork(1)?;
    for round in 1..=ROUNDS {
        // A clone of the forked machine: the setup is not in a profile of the batch.
        let mut m = if std::env::var_os("FRESH").is_some() {
            let mut m = Machine::new(4 << 30, 4, Profile::V6_15)?;
            let a2 = m.mmap(1, BYTES)?;
            m.write(1, a2, BYTES, 1)?;
            m.fork(1)?;
            m
        } else {
            base.clone()
        };
        let mut s = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let addrs: Vec<VirtAddr> = (0..WRITES)
            .map(|_| VirtAddr::new(a.as_u64() + (xorshift(&mut s) % (BYTES >> 12)) * 4096))
            .collect();
        let t = Instant::now();
        m.write_pages(1, &addrs, 2)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(WRITES));
        let t = Instant::now();
        m.write_pages(1, &addrs, 3)?;
        again = again.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(WRITES));
    }
    eprintln!("random writes after fork: {best:.1} ns/page, the same pages again (no fault): {again:.1} ns/page (best of {ROUNDS})");
    Ok(())
}
