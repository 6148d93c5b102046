//! The `cowcore bench` workloads "write, fork, exit, rewrite" and "COW copy after fork"
//! (4K pages and 64K mTHP) without Python, for profiling the core alone and for
//! before/after comparisons of two commits (it builds against any core since the event
//! channel):
//!
//! ```text
//! cargo run --release --example phases -- [MIB] [ROUNDS]      # best ns/page per phase (stderr)
//! cargo build --profile profiling --example phases
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='phases::reuse' \
//!     target/profiling/examples/phases 64 1                    # instructions of one phase
//! ```
//!
//! Each phase is its own non-inlined function (`phases::first_write`, `fork`, `exit`,
//! `reuse`, `copy`) so that a profiler can single it out.

use std::time::Instant;

use cowcore_core::{CowError, Machine, Profile, ThpSizeMode, VirtAddr};

#[inline(never)]
fn first_write(m: &mut Machine, a: VirtAddr, n: u64) -> Result<(), CowError> {
    m.write(1, a, n, 1)
}

#[inline(never)]
fn fork(m: &mut Machine) -> Result<u32, CowError> {
    m.fork(1)
}

#[inline(never)]
fn exit(m: &mut Machine, pid: u32) -> Result<(), CowError> {
    m.exit(pid)
}

/// Every page a COW-reuse fault (the child has exited).
#[inline(never)]
fn reuse(m: &mut Machine, a: VirtAddr, n: u64) -> Result<(), CowError> {
    m.write(1, a, n, 2)
}

/// Every page a COW-copy fault (the child lives).
#[inline(never)]
fn copy(m: &mut Machine, a: VirtAddr, n: u64) -> Result<(), CowError> {
    m.write(1, a, n, 3)
}

/// One round: seconds per phase, in the order of `NAMES`.
fn round(mib: u32, order: Option<u32>) -> Result<[f64; 5], CowError> {
    let len = u64::from(mib) << 20;
    let mut m = Machine::new(4 << 30, 4, Profile::V6_15)?;
    if let Some(o) = order {
        m.set_thp_size(o, ThpSizeMode::Always)?;
    }
    let addr = m.mmap(1, len)?;
    let mut out = [0.0; 5];
    let start = Instant::now();
    first_write(&mut m, addr, len)?;
    out[0] = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let child = fork(&mut m)?;
    out[1] = start.elapsed().as_secs_f64();
    let start = Instant::now();
    exit(&mut m, child)?;
    out[2] = start.elapsed().as_secs_f64();
    let start = Instant::now();
    reuse(&mut m, addr, len)?;
    out[3] = start.elapsed().as_secs_f64();
    fork(&mut m)?;
    let start = Instant::now();
    copy(&mut m, addr, len)?;
    out[4] = start.elapsed().as_secs_f64();
    Ok(out)
}

const NAMES: [&str; 5] = ["first_write", "fork", "exit", "reuse", "copy"];

fn main() -> Result<(), CowError> {
    let mut args = std::env::args().skip(1);
    let mib: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let rounds: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let pages = f64::from(mib) * 256.0;
    for (label, order) in [("4K", None), ("64K", Some(4))] {
        let mut best = [f64::INFINITY; 5];
        for _ in 0..rounds {
            for (b, v) in best.iter_mut().zip(round(mib, order)?) {
                *b = b.min(v);
            }
        }
        for (name, v) in NAMES.iter().zip(best) {
            eprintln!("{label} {name} {:.1} ns/page", v * 1e9 / pages);
        }
    }
    Ok(())
}
