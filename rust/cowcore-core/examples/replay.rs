//! Replays a small memory trace through the core and prints what every access did: the
//! Rust twin of `rust/cowcore-capi/examples/replay.c` and `examples/replay.py` (same trace
//! format, same output).
//!
//! ```text
//! cargo run -p cowcore-core --example replay -- rust/cowcore-capi/examples/trace.txt [6.12]
//! ```
//!
//! Trace lines: `mmap ADDR LEN | thp ORDER MODE | read ADDR [PID] | write ADDR [PID] |
//! fork [PID] | exit PID | munmap ADDR LEN [PID] | mprotect ADDR LEN PROT [PID]`; `#`
//! starts a comment; numbers are decimal or `0x` hex; PID is 1 unless given. A write stores
//! the line number.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use cowcore_core::events::EVENT_NAMES;
use cowcore_core::{AccessFlags, CowError, Machine, Profile, VirtAddr};

fn number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a number: {text}"))
}

fn pid(tok: &[&str], i: usize) -> Result<u32, String> {
    tok.get(i).map_or(Ok(1), |t| Ok(number(t)? as u32))
}

fn run(path: &str, profile: &str) -> Result<(), String> {
    let trace = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let profile: Profile = profile.parse().map_err(|e: CowError| e.to_string())?;
    let mut m = Machine::new(64 << 20, 4, profile).map_err(|e| e.to_string())?;
    m.record_events(true);
    println!(
        "cowcore {}, profile {}",
        env!("CARGO_PKG_VERSION"),
        profile.as_str()
    );
    let mut counts: BTreeMap<u8, u64> = BTreeMap::new();
    let mut total = 0u64;
    for (n, raw) in trace.lines().enumerate() {
        let line = n + 1;
        let text = raw.split('#').next().unwrap_or("");
        let tok: Vec<&str> = text.split_whitespace().collect();
        let Some(&op) = tok.first() else { continue };
        let err = |e: CowError| format!("line {line}: {op}: {e}");
        match (op, tok.len()) {
            ("read" | "write", 2 | 3) => {
                let addr = number(tok[1])?;
                let p = pid(&tok, 2)?;
                let r = m
                    .access(p, VirtAddr::new(addr), op == "write", line as u64)
                    .map_err(err)?;
                let phys = r
                    .phys()
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:#x}"));
                println!(
                    "{op:<5} pid {p} {addr:#014x}: {}/{} phys {phys} order {} faults {}{}{}",
                    r.outcome.name(),
                    r.reason.name(),
                    r.order,
                    r.faults,
                    if r.flags.contains(AccessFlags::COPIED) {
                        " copied"
                    } else {
                        ""
                    },
                    if r.flags.contains(AccessFlags::ZEROED) {
                        " zeroed"
                    } else {
                        ""
                    },
                );
            }
            ("mmap", 3) => {
                m.mmap_fixed(1, VirtAddr::new(number(tok[1])?), number(tok[2])?)
                    .map_err(err)?;
            }
            ("thp", 3) => {
                let mode = tok[2].parse().map_err(err)?;
                m.set_thp_size(number(tok[1])? as u32, mode).map_err(err)?;
            }
            ("fork", 1 | 2) => {
                let p = pid(&tok, 1)?;
                let child = m.fork(p).map_err(err)?;
                println!("fork  pid {p} -> {child}");
            }
            ("exit", 2) => m.exit(number(tok[1])? as u32).map_err(err)?,
            ("munmap", 3 | 4) => {
                let (a, len) = (number(tok[1])?, number(tok[2])?);
                m.munmap(pid(&tok, 3)?, VirtAddr::new(a), len)
                    .map_err(err)?;
            }
            ("mprotect", 4 | 5) => {
                let (a, len) = (number(tok[1])?, number(tok[2])?);
                let prot = Machine::parse_prot(tok[3]).map_err(err)?;
                m.mprotect(pid(&tok, 4)?, VirtAddr::new(a), len, prot)
                    .map_err(err)?;
            }
            _ => return Err(format!("line {line}: cannot parse the {op} line")),
        }
        // As a host simulator would, between its own steps.
        m.drain_events(|e| {
            *counts.entry(e.code()).or_default() += 1;
            total += 1;
        });
    }
    println!("events {total}");
    for (code, n) in counts {
        println!("  {:<20} {n}", EVENT_NAMES[usize::from(code)]);
    }
    let s = m.stats();
    println!(
        "stats faults read {} write {} wp {} cow_copy {} pgreuse {}",
        s.faults_read, s.faults_write, s.faults_wp, s.cow_copy, s.pgreuse
    );
    m.check().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: replay TRACE [PROFILE]");
        return ExitCode::from(2);
    };
    match run(path, args.get(2).map_or("6.15", String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
