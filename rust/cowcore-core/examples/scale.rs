//! A scale smoke test: a 64 GiB machine (16M frames), 4 GiB of touched anonymous memory in
//! 4 processes, a fork and COW writes; prints timings and the process's peak RSS so that the
//! per-page memory budget (BENCHMARKS.md "Targets": under 24 bytes of simulator memory per
//! mapped 4 KiB page beyond its PTE; 20 bytes a frame as built) can be checked by eye.

use std::time::Instant;

use cowcore_core::{Machine, Profile, VirtAddr};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), cowcore_core::CowError> {
    let t = Instant::now();
    let mut m = Machine::new(64 << 30, 4, Profile::V6_15)?;
    eprintln!(
        "boot 64 GiB: {:?}, peak RSS {} MiB",
        t.elapsed(),
        rss_kib() / 1024
    );
    let gib = 1u64 << 30;
    let mut bases = Vec::new();
    for _ in 0..4 {
        bases.push(m.mmap(1, gib)?);
    }
    let t = Instant::now();
    for b in &bases {
        m.write(1, *b, gib, 1)?;
    }
    let pages = 4 * gib / 4096;
    eprintln!(
        "write-fault {pages} pages: {:?} ({} ns/page), peak RSS {} MiB",
        t.elapsed(),
        t.elapsed().as_nanos() / u128::from(pages),
        rss_kib() / 1024
    );
    let t = Instant::now();
    let c = m.fork(1)?;
    eprintln!("fork of {pages} pages: {:?}", t.elapsed());
    let t = Instant::now();
    m.write(c, VirtAddr::new(bases[0].as_u64()), gib, 2)?;
    eprintln!("COW-copy 262144 pages: {:?}", t.elapsed());
    let t = Instant::now();
    m.exit(c)?;
    m.exit(1)?;
    eprintln!(
        "exit both: {:?}; free {} of {}",
        t.elapsed(),
        m.free_frames(),
        m.total_frames()
    );
    eprintln!("peak RSS {} MiB", rss_kib() / 1024);
    Ok(())
}
