//! Every kernel recording of the repository replayed on the core, read in place from
//! `tests/kernel/` at the top of the repository: `scenarios/NAME.cow` against
//! `expected/<version>/NAME.jsonl`, version 6.1 with `Profile::V6_1`, 6.12 with `Profile::V6_12`
//! and every later version with `Profile::V6_15` (as `tests/kernel/test_conformance.py` does
//! for the Python package).
//!
//! A small `.cow` driver of its own: a syntax pass over the whole file first (a syntax error is
//! the whole output), then one `Machine` call per statement with the runner's run-time checks
//! (unknown or exited process, unknown mapping, a name used twice, a mapping over 1G, a range
//! past the mapping's end) and `check()` after each. Frames are named by first appearance of
//! `(pfn, serial)`. Observations are compared as the format defines agreement
//! (docs/scenario-format.md): pages exactly, `stats` over the counters both sides print (a
//! missing size or vmstat counter counts as 0), error lines by their line number only.
//!
//! When the crate is built alone (from `cargo package`, without the repository around it)
//! there is nothing to read: the test says so on stderr and passes. Inside the repository a
//! missing suite is a failure.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use cowcore_core::{
    Advice, FrameKind, Machine, Observation, Profile, Prot, SmapsInfo, Stats, ThpMode, ThpSizeMode,
    VirtAddr, PSS_SHIFT,
};

const PAGE: u64 = 4096;
const MAX_MAPPING: u64 = 1 << 30;
const ADDRESS_LIMIT: u64 = 1 << 47;
const THP_SIZES: [&str; 8] = ["16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M"];
const VMSTAT: [&str; 2] = ["thp_fault_alloc", "thp_split_pmd"];
/// The swap device's vmstat counters (issue 16), printed when non-zero and compared with
/// absence meaning 0, as `cowcore.scenario.SWAP_VMSTAT`.
const SWAP_VMSTAT: [&str; 4] = ["pswpin", "pswpout", "thp_swpout", "thp_swpout_fallback"];
/// The vmstat counters of the format's second edition, compared (absence meaning 0) only
/// between two sides that print its per-size `split_deferred` map, as
/// `cowcore.scenario.compare_observations` does: older recordings do not print them.
const DEFERRED_VMSTAT: [&str; 5] = [
    "thp_deferred_split_page",
    "thp_split_page",
    "thp_fault_fallback",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
];
/// The `smaps` keys comparisons skip (as `cowcore.scenario.SMAPS_NOT_COMPARED`): none
/// since `Referenced` follows the folio's `PG_referenced` too.
const SMAPS_NOT_COMPARED: [&str; 0] = [];
/// The keys of a `smaps` observation after `proc` and `map`, in the format's order.
const SMAPS_FIELDS: [&str; 12] = [
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "AnonHugePages",
    "Swap",
    "SwapPss",
];

/// `tests/kernel/` of the repository, or `None` when the crate is not inside one.
fn suite_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let suite = root.join("tests/kernel");
    if suite.join("scenarios").is_dir() {
        return Some(suite);
    }
    let workspace = fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    assert!(
        !workspace.contains("rust/cowcore-core"),
        "{} is missing from the repository",
        suite.display()
    );
    eprintln!(
        "kernel_examples: SKIPPED, no kernel recordings to replay: {} does not exist (the crate \
         is built outside the cowcore repository, as `cargo package` leaves it); run the tests \
         in the repository to replay them",
        suite.display()
    );
    None
}

// ---------------------------------------------------------------------------------------------
// Syntax: the checks of docs/scenario-format.md, enough to find the same line as the parsers.

fn size(token: &str) -> Option<u64> {
    let (digits, mult) = match token.as_bytes().last()? {
        b'K' => (&token[..token.len() - 1], 1u64 << 10),
        b'M' => (&token[..token.len() - 1], 1 << 20),
        b'G' => (&token[..token.len() - 1], 1 << 30),
        _ => (token, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too large to be exact is beyond the address space either way.
    Some(digits.parse::<u64>().ok()?.saturating_mul(mult))
}

fn ident(token: &str) -> bool {
    let mut bytes = token.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn aligned(token: &str, nonzero: bool) -> bool {
    size(token).is_some_and(|v| v % PAGE == 0 && (v != 0 || !nonzero) && v < ADDRESS_LIMIT)
}

fn range_ok(args: &[&str]) -> bool {
    ident(args[0])
        && aligned(args[1], false)
        && aligned(args[2], true)
        && size(args[1]).unwrap() + size(args[2]).unwrap() <= ADDRESS_LIMIT
}

fn thp_size_name(token: &str) -> Option<&'static str> {
    let bytes = size(token)?;
    THP_SIZES.into_iter().find(|n| size(n) == Some(bytes))
}

fn value(token: &str) -> Option<u64> {
    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
    if canonical && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

/// Whether one statement (its tokens) is well formed.
fn valid(t: &[&str]) -> bool {
    match (t[0], t.len()) {
        ("kernel", 2) => t[1].parse::<Profile>().is_ok(),
        ("stats" | "drop_caches", 1) => true,
        ("thp", 3) if t[1] == "enabled" => t[2].parse::<ThpMode>().is_ok(),
        ("thp", 4) if t[1] == "size" => {
            thp_size_name(t[2]).is_some() && t[3].parse::<ThpSizeMode>().is_ok()
        }
        ("thp", 3) if t[1] == "zero_page" => matches!(t[2], "on" | "off"),
        ("policy", 3) => {
            cowcore_core::PolicySpec::find(t[1]).is_ok() && matches!(t[2], "on" | "off")
        }
        ("kernel" | "stats" | "thp" | "policy" | "drop_caches", _) => false,
        (proc, n) if n >= 2 && ident(proc) => {
            let a = &t[2..];
            match (t[1], a.len()) {
                ("mmap", 2) => ident(a[0]) && aligned(a[1], true),
                (
                    "munmap" | "read" | "observe" | "write" | "ref" | "unref" | "pin" | "unpin"
                    | "unshare" | "collapse" | "pageout",
                    3,
                ) => range_ok(a),
                ("write", 4) => value(a[3]).is_some() && range_ok(a),
                ("mprotect", 4) => a[3].parse::<Prot>().is_ok() && range_ok(a),
                ("madvise", 4) => a[3].parse::<Advice>().is_ok() && range_ok(a),
                ("smaps" | "fork", 1) => ident(a[0]),
                ("mremap", 4) => range_ok(&a[..3]) && ident(a[3]),
                ("exit", 0) => true,
                _ => false,
            }
        }
        _ => false,
    }
}

/// The statements with their line numbers, or the line of the first syntax error.
fn parse(text: &str) -> Result<Vec<(usize, Vec<&str>)>, usize> {
    let mut out = Vec::new();
    let mut kernel = false;
    for (i, raw) in text.lines().enumerate() {
        let t: Vec<&str> = raw.split('#').next().unwrap().split_whitespace().collect();
        if t.is_empty() {
            continue;
        }
        if !valid(&t) || (t[0] == "kernel" && kernel) {
            return Err(i + 1);
        }
        kernel |= t[0] == "kernel";
        out.push((i + 1, t));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The driver.

struct Driver {
    m: Machine,
    /// pid and whether it is alive, by process name (every name ever used).
    procs: HashMap<String, (u32, bool)>,
    /// (start, size as created) by process name and mapping name.
    maps: HashMap<String, BTreeMap<String, (u64, u64)>>,
    names: HashMap<(u64, u64), String>,
    out: Vec<String>,
}

impl Driver {
    fn new(profile: Profile) -> Self {
        // 4 levels, as the Python `Machine`; 256M of memory, which every scenario of the suite
        // fits in (the Python default of 4G makes a debug build of this test ten times slower).
        let m = Machine::new(256 << 20, 4, profile).unwrap();
        let procs = HashMap::from([("P".to_string(), (m.init_pid(), true))]);
        let maps = HashMap::from([("P".to_string(), BTreeMap::new())]);
        Self {
            m,
            procs,
            maps,
            names: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn frame_name(&mut self, kind: FrameKind, pfn: u64, serial: u64) -> String {
        match kind {
            FrameKind::Zero => "zero".into(),
            FrameKind::HugeZero => "hzero".into(),
            _ => {
                let n = self.names.len();
                self.names
                    .entry((pfn, serial))
                    .or_insert_with(|| format!("f{n}"))
                    .clone()
            }
        }
    }

    /// The `stats` observation; without the per-size maps on a kernel that has no per-size
    /// counters (6.1: only the `/proc/vmstat` events, each when non-zero).
    fn stats_line(s: &Stats, per_size: bool, prints_swpin: bool) -> String {
        let map = |c: &[u64; 8]| {
            let parts: Vec<String> = Stats::by_size(c)
                .into_iter()
                .filter(|(_, v)| *v != 0)
                .map(|(n, v)| format!("\"{n}\":{v}"))
                .collect();
            format!("{{{}}}", parts.join(","))
        };
        // Every key is written with a leading comma, the first one's dropped at the end.
        let mut line = String::new();
        if per_size {
            for (key, c) in [
                ("anon_fault_alloc", &s.anon_fault_alloc),
                ("anon_fault_fallback", &s.anon_fault_fallback),
                ("split", &s.split),
            ] {
                write!(line, ",\"{key}\":{}", map(c)).unwrap();
            }
        }
        for (key, v) in [
            ("thp_fault_alloc", s.thp_fault_alloc),
            ("thp_split_pmd", s.thp_split_pmd),
        ] {
            if v != 0 {
                write!(line, ",\"{key}\":{v}").unwrap();
            }
        }
        if per_size {
            for (key, c) in [
                ("split_deferred", &s.split_deferred),
                ("nr_anon", &s.nr_anon),
                ("nr_anon_partially_mapped", &s.nr_anon_partially_mapped),
            ] {
                write!(line, ",\"{key}\":{}", map(c)).unwrap();
            }
            // The swap maps, each only when some size is non-zero (the recordings made
            // before the swap device keep their lines); 6.12 has no `swpin` files.
            for (key, c) in [
                ("swpout", &s.swpout),
                ("swpout_fallback", &s.swpout_fallback),
                ("swpin", &s.swpin),
                ("swpin_fallback", &s.swpin_fallback),
            ] {
                if c.iter().any(|&n| n != 0) && (prints_swpin || !key.starts_with("swpin")) {
                    write!(line, ",\"{key}\":{}", map(c)).unwrap();
                }
            }
        }
        for (key, v) in [
            ("thp_deferred_split_page", s.thp_deferred_split_page),
            ("thp_split_page", s.thp_split_page),
            ("thp_fault_fallback", s.thp_fault_fallback),
            ("thp_collapse_alloc", s.thp_collapse_alloc),
            ("thp_collapse_alloc_failed", s.thp_collapse_alloc_failed),
            ("pswpin", s.pswpin),
            ("pswpout", s.pswpout),
            ("thp_swpout", s.thp_swpout),
            ("thp_swpout_fallback", s.thp_swpout_fallback),
        ] {
            if v != 0 {
                write!(line, ",\"{key}\":{v}").unwrap();
            }
        }
        format!(
            "{{\"stats\":{{{}}}}}",
            line.strip_prefix(',').unwrap_or(&line)
        )
    }

    fn pid(&self, name: &str) -> Result<u32, String> {
        match self.procs.get(name) {
            None => Err(format!("unknown process {name}")),
            Some((_, false)) => Err(format!("process {name} has exited")),
            Some((pid, true)) => Ok(*pid),
        }
    }

    /// The range's start address, its length, and how much of it lies inside the mapping.
    fn range(&self, proc: &str, a: &[&str]) -> Result<(u64, u64, u64, u64), String> {
        let (start, created) = *self.maps[proc]
            .get(a[0])
            .ok_or_else(|| format!("process {proc} has no mapping {}", a[0]))?;
        let (off, len) = (size(a[1]).unwrap(), size(a[2]).unwrap());
        Ok((start + off, off, len, len.min(created.saturating_sub(off))))
    }

    /// `P mremap NAME OFF LEN NEW`: the range moves to a fresh address as the mapping NEW
    /// (docs/scenario-format.md, "Moves").
    fn mremap(&mut self, proc: &str, pid: u32, a: &[&str]) -> Result<(), String> {
        let (addr, _, len, inside) = self.range(proc, a)?;
        if inside < len {
            return Err(format!("mremap {}: past the mapping's end", a[0]));
        }
        if self.maps[proc].contains_key(a[3]) {
            return Err(format!("process {proc} already has a mapping {}", a[3]));
        }
        let new = self
            .m
            .mremap(pid, VirtAddr::new(addr), len, None)
            .map_err(|e| e.to_string())?
            .as_u64();
        self.maps
            .get_mut(proc)
            .unwrap()
            .insert(a[3].into(), (new, len));
        Ok(())
    }

    /// `P collapse NAME OFF LEN`: `MADV_COLLAPSE`, then its result line
    /// (docs/scenario-format.md, "Collapse").
    fn collapse(
        &mut self,
        proc: &str,
        pid: u32,
        name: &str,
        addr: VirtAddr,
        len: u64,
    ) -> Result<(), String> {
        let r = self.m.collapse(pid, addr, len).map_err(|e| e.to_string())?;
        let result = r.errno().map_or("0".into(), |e| format!("\"{e}\""));
        self.out.push(format!(
            "{{\"collapse\":\"{proc}\",\"map\":\"{name}\",\"result\":{result}}}"
        ));
        Ok(())
    }

    /// The `smaps` line: per field, the sum of the kB values smaps prints for each VMA lying
    /// inside the mapping's range (rounded per VMA, as `__show_smap` prints them).
    fn smaps(&mut self, proc: &str, name: &str, vmas: &[SmapsInfo]) -> Result<(), String> {
        let (start, created) = *self.maps[proc]
            .get(name)
            .ok_or_else(|| format!("process {proc} has no mapping {name}"))?;
        let mut sums = [0u64; 12];
        for v in vmas
            .iter()
            .filter(|v| start <= v.start && v.end <= start + created)
        {
            let (k, f) = (10, 10 + PSS_SHIFT);
            let kb = [
                v.rss >> k,
                v.pss >> f,
                v.pss_dirty >> f,
                v.shared_clean >> k,
                v.shared_dirty >> k,
                v.private_clean >> k,
                v.private_dirty >> k,
                v.referenced >> k,
                v.anonymous >> k,
                v.anon_huge_pages >> k,
                v.swap >> k,
                v.swap_pss >> f,
            ];
            for (sum, x) in sums.iter_mut().zip(kb) {
                *sum += x;
            }
        }
        let mut line = format!("{{\"smaps\":{{\"proc\":\"{proc}\",\"map\":\"{name}\"");
        for (key, v) in SMAPS_FIELDS.iter().zip(sums) {
            write!(line, ",\"{key}\":{v}").unwrap();
        }
        line.push_str("}}");
        self.out.push(line);
        Ok(())
    }

    /// One observation line per page.
    fn observe(&mut self, proc: &str, name: &str, off: u64, rows: &[Observation]) {
        for (i, r) in rows.iter().enumerate() {
            let off = off + i as u64 * PAGE;
            let head = format!("{{\"proc\":\"{proc}\",\"map\":\"{name}\",\"off\":{off}");
            let line = if r.kind == FrameKind::Swap {
                // pagemap's PM_SWAP: a swap entry, never read
                format!(
                    "{head},\"present\":false,\"frame\":\"swap\",\"folio_pages\":null,\
                     \"mapcount\":null,\"exclusive\":null,\"content\":null}}"
                )
            } else if r.present {
                let f = self.frame_name(r.kind, r.pfn, r.serial);
                format!(
                    "{head},\"present\":true,\"frame\":\"{f}\",\"folio_pages\":{},\
                     \"mapcount\":{},\"exclusive\":{},\"content\":{}}}",
                    r.folio_pages, r.mapcount, r.exclusive, r.content
                )
            } else {
                format!(
                    "{head},\"present\":false,\"frame\":null,\"folio_pages\":null,\
                     \"mapcount\":null,\"exclusive\":null,\"content\":null}}"
                )
            };
            self.out.push(line);
        }
    }

    /// Run one statement; an error leaves the machine as it was.
    fn step(&mut self, t: &[&str]) -> Result<(), String> {
        let err = |e: cowcore_core::CowError| e.to_string();
        match t[0] {
            "kernel" => {}
            "policy" => self.m.set_policy(t[1], t[2] == "on").map_err(err)?,
            "drop_caches" => self.m.drop_caches().map_err(err)?,
            "stats" => {
                let per_size = self.m.config().per_size_thp_stats();
                // 7.x has the `swpin` files; 6.12 counts but has none (a printer fact, as
                // `cowcore.scenario.PRINTS_SWPIN`).
                let prints_swpin = self.m.profile() == Profile::V6_15;
                self.out
                    .push(Self::stats_line(self.m.stats(), per_size, prints_swpin));
            }
            "thp" => match t[1] {
                "enabled" => self.m.set_thp_enabled(t[2].parse().unwrap()),
                "size" => self
                    .m
                    .set_thp_size_by_name(thp_size_name(t[2]).unwrap(), t[3].parse().unwrap())
                    .map_err(err)?,
                _ => self.m.set_use_zero_page(t[2] == "on"),
            },
            proc => {
                let pid = self.pid(proc)?;
                let a = &t[2..];
                match t[1] {
                    "mmap" => {
                        let length = size(a[1]).unwrap();
                        if self.maps[proc].contains_key(a[0]) {
                            return Err(format!("process {proc} already has a mapping {}", a[0]));
                        }
                        if length > MAX_MAPPING {
                            return Err(format!("mapping {} is over 1G", a[0]));
                        }
                        let start = self.m.mmap(pid, length).map_err(err)?.as_u64();
                        let maps = self.maps.get_mut(proc).unwrap();
                        maps.insert(a[0].into(), (start, length));
                    }
                    "fork" => {
                        if self.procs.contains_key(a[0]) {
                            return Err(format!("process name {} was already used", a[0]));
                        }
                        let child = self.m.fork(pid).map_err(err)?;
                        self.procs.insert(a[0].into(), (child, true));
                        self.maps.insert(a[0].into(), self.maps[proc].clone());
                    }
                    "exit" => {
                        self.m.exit(pid).map_err(err)?;
                        self.procs.insert(proc.into(), (pid, false));
                    }
                    "smaps" => {
                        let vmas = self.m.smaps(pid).map_err(err)?;
                        self.smaps(proc, a[0], &vmas)?;
                    }
                    "mremap" => self.mremap(proc, pid, a)?,
                    "munmap" => {
                        let (addr, _, _, inside) = self.range(proc, a)?;
                        if inside != 0 {
                            self.m
                                .munmap(pid, VirtAddr::new(addr), inside)
                                .map_err(err)?;
                        }
                    }
                    verb => {
                        let (addr, off, len, inside) = self.range(proc, a)?;
                        if inside < len {
                            return Err(format!("{verb} {}: past the mapping's end", a[0]));
                        }
                        let addr = VirtAddr::new(addr);
                        match verb {
                            "write" => {
                                let v = a.get(3).map_or(1, |v| value(v).unwrap());
                                self.m.write(pid, addr, len, v).map_err(err)?;
                            }
                            "read" => drop(self.m.read(pid, addr, len).map_err(err)?),
                            "mprotect" => {
                                let protection = a[3].parse().unwrap();
                                self.m.mprotect(pid, addr, len, protection).map_err(err)?;
                            }
                            "madvise" => {
                                let advice = a[3].parse().unwrap();
                                self.m.madvise(pid, addr, len, advice).map_err(err)?;
                            }
                            "observe" => {
                                let rows = self.m.observe(pid, addr, len).map_err(err)?;
                                self.observe(proc, a[0], off, &rows);
                                // The probe reads each present page through /proc/<pid>/mem.
                                self.m.touch(pid, addr, len).map_err(err)?;
                            }
                            // Issue 16's references, pins and the unshare faults of a
                            // short R/O pin (docs/scenario-format.md).
                            "ref" => self.m.ref_pages(pid, addr, len).map_err(err)?,
                            "unref" => self.m.unref_pages(pid, addr, len).map_err(err)?,
                            "pin" => self.m.pin_pages(pid, addr, len).map_err(err)?,
                            "unpin" => self.m.unpin_pages(pid, addr, len).map_err(err)?,
                            "unshare" => drop(self.m.unshare(pid, addr, len).map_err(err)?),
                            "collapse" => self.collapse(proc, pid, a[0], addr, len)?,
                            "pageout" => self.m.pageout(pid, addr, len).map_err(err)?,
                            other => unreachable!("verb {other} passed the syntax check"),
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Run a scenario as the format says: its observations, ending with an error line if it fails.
fn run(text: &str, profile: Profile) -> Vec<String> {
    let statements = match parse(text) {
        Ok(s) => s,
        Err(line) => return vec![format!("{{\"error\":\"line {line}: syntax error\"}}")],
    };
    let mut d = Driver::new(profile);
    for (line, t) in &statements {
        if let Err(message) = d.step(t) {
            d.out
                .push(format!("{{\"error\":\"line {line}: {message}\"}}"));
            break;
        }
        d.m.check()
            .unwrap_or_else(|e| panic!("line {line} `{}`: {e}", t.join(" ")));
    }
    // Every process exits: all frames except the zero pages (1 + 512) come back.
    for pid in d.m.pids() {
        d.m.exit(pid).unwrap();
    }
    d.m.check().unwrap();
    assert_eq!(d.m.free_frames(), d.m.total_frames() - 513);
    d.out
}

// ---------------------------------------------------------------------------------------------
// Comparison: a JSON reader for the observation lines, and the format's rules of agreement.

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(u64),
    Str(String),
    Obj(BTreeMap<String, Json>),
}

fn json(text: &str) -> Json {
    fn value(s: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Json {
        match s.peek().copied() {
            Some('{') => {
                s.next();
                let mut obj = BTreeMap::new();
                while s.peek() != Some(&'}') {
                    let Json::Str(key) = value(s) else {
                        panic!("a key")
                    };
                    assert_eq!(s.next(), Some(':'));
                    obj.insert(key, value(s));
                    if s.peek() == Some(&',') {
                        s.next();
                    }
                }
                s.next();
                Json::Obj(obj)
            }
            Some('"') => {
                s.next();
                let mut out = String::new();
                loop {
                    match s.next().expect("a closing quote") {
                        '"' => break Json::Str(out),
                        '\\' => out.push(s.next().unwrap()),
                        c => out.push(c),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let mut n = String::new();
                while s.peek().is_some_and(char::is_ascii_digit) {
                    n.push(s.next().unwrap());
                }
                Json::Num(n.parse().unwrap())
            }
            _ => {
                let word: String =
                    std::iter::from_fn(|| s.next_if(char::is_ascii_alphabetic)).collect();
                match word.as_str() {
                    "null" => Json::Null,
                    "true" => Json::Bool(true),
                    "false" => Json::Bool(false),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    let text = text.trim();
    let mut chars = text.chars().peekable();
    let v = value(&mut chars);
    assert!(chars.next().is_none(), "trailing text in {text}");
    v
}

fn field<'a>(obs: &'a Json, key: &str) -> Option<&'a Json> {
    match obs {
        Json::Obj(o) => o.get(key),
        _ => None,
    }
}

/// `compare_observations` of `cowcore.scenario`: the differences, empty when they agree.
fn compare(expected: &[Json], actual: &[Json]) -> Vec<String> {
    let mut diffs = Vec::new();
    if expected.len() != actual.len() {
        diffs.push(format!(
            "{} observations expected, {} made",
            expected.len(),
            actual.len()
        ));
    }
    let count = |m: &BTreeMap<String, Json>, k: &str| match m.get(k) {
        Some(Json::Num(n)) => *n,
        _ => 0,
    };
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        match (
            field(e, "stats"),
            field(a, "stats"),
            field(e, "error"),
            field(a, "error"),
        ) {
            (Some(Json::Obj(es)), Some(Json::Obj(as_)), _, _) => {
                for (key, ev) in es {
                    let Some(av) = as_.get(key) else { continue };
                    match (ev, av) {
                        _ if VMSTAT.contains(&key.as_str())
                            || DEFERRED_VMSTAT.contains(&key.as_str())
                            || SWAP_VMSTAT.contains(&key.as_str()) => {}
                        (Json::Obj(em), Json::Obj(am)) => {
                            for size in em.keys().chain(am.keys()) {
                                let (x, y) = (count(em, size), count(am, size));
                                if x != y {
                                    diffs.push(format!("#{i} stats {key}[{size}]: {x} != {y}"));
                                }
                            }
                        }
                        _ if ev != av => diffs.push(format!("#{i} stats {key}: {ev:?} != {av:?}")),
                        _ => {}
                    }
                }
                // The second edition's vmstat counters are compared between two sides that
                // print its per-size maps, or that print no per-size keys at all (a kernel
                // without per-size counters, 6.1, whose recordings all print them); a
                // recording made before the second edition prints neither.
                let both_deferred =
                    es.contains_key("split_deferred") && as_.contains_key("split_deferred");
                let no_per_size =
                    !es.contains_key("anon_fault_alloc") && !as_.contains_key("anon_fault_alloc");
                let deferred: &[&str] = if both_deferred || no_per_size {
                    &DEFERRED_VMSTAT
                } else {
                    &[]
                };
                for key in VMSTAT.iter().chain(&SWAP_VMSTAT).chain(deferred) {
                    let (x, y) = (count(es, key), count(as_, key));
                    if x != y {
                        diffs.push(format!("#{i} stats {key}: {x} != {y}"));
                    }
                }
            }
            _ if matches!((field(e, "smaps"), field(a, "smaps")), (Some(_), Some(_))) => {
                if let (Some(Json::Obj(es)), Some(Json::Obj(as_))) =
                    (field(e, "smaps"), field(a, "smaps"))
                {
                    for (key, ev) in es {
                        let av = as_.get(key);
                        if !SMAPS_NOT_COMPARED.contains(&key.as_str()) && av != Some(ev) {
                            diffs.push(format!("#{i} smaps {key}: {ev:?} != {av:?}"));
                        }
                    }
                }
            }
            (_, _, Some(Json::Str(ee)), Some(Json::Str(ae))) => {
                let (el, al) = (ee.split(':').next(), ae.split(':').next());
                if el != al {
                    diffs.push(format!("#{i} error at {el:?} expected, got {ae}"));
                }
            }
            _ if e != a => diffs.push(format!("#{i}: expected {e:?}\n      got      {a:?}")),
            _ => {}
        }
    }
    diffs
}

/// The profile a recorded kernel line is held to: 6.1 to 6.11 (only 6.1 is recorded) the 6.1
/// profile, 6.12 to 6.14 the 6.12 one, every later line 6.15's.
///
/// # Panics
/// On a line older than 6.1: every recorded line must have a profile.
fn profile_for(version: &str) -> Profile {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(
        (major, minor) >= (6, 1),
        "no simulator profile for the {version} recordings"
    );
    if (major, minor) < (6, 12) {
        Profile::V6_1
    } else if (major, minor) < (6, 15) {
        Profile::V6_12
    } else {
        Profile::V6_15
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
}

#[test]
fn every_recording_replays() {
    let Some(suite) = suite_dir() else { return };
    let scenarios: Vec<PathBuf> = sorted_entries(&suite.join("scenarios"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cow"))
        .collect();
    let versions: Vec<PathBuf> = sorted_entries(&suite.join("expected"))
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    assert!(scenarios.len() >= 40, "only {} scenarios", scenarios.len());
    assert!(
        versions.len() >= 2,
        "only {} recorded versions",
        versions.len()
    );
    let (mut runs, mut failures) = (0, Vec::new());
    for version in &versions {
        let name = version.file_name().unwrap().to_str().unwrap();
        let profile = profile_for(name);
        for cow in &scenarios {
            let stem = cow.file_stem().unwrap().to_str().unwrap();
            let recording = version.join(format!("{stem}.jsonl"));
            let want = fs::read_to_string(&recording)
                .unwrap_or_else(|e| panic!("{}: {e}", recording.display()));
            let expected: Vec<Json> = want
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(json)
                .collect();
            let text = fs::read_to_string(cow).unwrap();
            let actual: Vec<Json> = run(&text, profile).iter().map(|l| json(l)).collect();
            let diffs = compare(&expected, &actual);
            if !diffs.is_empty() {
                failures.push(format!("{stem} on {name}:\n  {}", diffs.join("\n  ")));
            }
            runs += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "kernel_examples: {runs} recordings replayed ({} scenarios x {} versions)",
        scenarios.len(),
        versions.len()
    );
}

#[test]
fn the_comparison_follows_the_format() {
    let obs = |lines: &[&str]| lines.iter().map(|l| json(l)).collect::<Vec<_>>();
    let page = r#"{"proc":"P","map":"A","off":0,"present":true,"frame":"f0","folio_pages":1,"mapcount":1,"exclusive":true,"content":1}"#;
    let other = page.replace("\"content\":1", "\"content\":2");
    let kernel = r#"{"stats":{"anon_fault_alloc":{"64K":1},"anon_fault_fallback":{},"split":{}}}"#;
    let sim = r#"{"stats":{"anon_fault_alloc":{"64K":1,"2M":0},"anon_fault_fallback":{},"split":{},"pgreuse":3}}"#;
    let vm = r#"{"stats":{"anon_fault_alloc":{"64K":1},"anon_fault_fallback":{},"split":{},"thp_split_pmd":1}}"#;
    assert!(compare(&obs(&[page, kernel]), &obs(&[page, sim])).is_empty());
    assert!(!compare(&obs(&[page]), &obs(&[&other])).is_empty());
    assert!(!compare(&obs(&[kernel]), &obs(&[vm])).is_empty());
    assert!(!compare(&obs(&[page]), &obs(&[page, page])).is_empty());
    let (e5, e5b, e6) = (
        r#"{"error":"line 5: unknown process Q"}"#,
        r#"{"error":"line 5: syntax error"}"#,
        r#"{"error":"line 6: unknown process Q"}"#,
    );
    assert!(compare(&obs(&[e5]), &obs(&[e5b])).is_empty());
    assert!(!compare(&obs(&[e5]), &obs(&[e6])).is_empty());
    // Without per-size maps on either side (6.1), the second edition's vmstat counters count.
    let v61 = r#"{"stats":{"thp_fault_alloc":1,"thp_deferred_split_page":1}}"#;
    let v61_missing = r#"{"stats":{"thp_fault_alloc":1}}"#;
    assert!(compare(&obs(&[v61]), &obs(&[v61])).is_empty());
    assert!(!compare(&obs(&[v61]), &obs(&[v61_missing])).is_empty());
}

#[test]
fn each_recorded_line_has_its_profile() {
    assert_eq!(profile_for("6.1"), Profile::V6_1);
    assert_eq!(profile_for("6.12"), Profile::V6_12);
    assert_eq!(profile_for("7.2"), Profile::V6_15);
    assert_eq!(profile_for("7.10"), Profile::V6_15);
}

#[test]
fn pmd_only_profile_refuses_mthp_sizes_and_prints_no_per_size_stats() {
    let text = "thp enabled always\nP mmap A 2M\nP write A 0 4K\nstats\nthp size 64K always\n";
    let out = run(text, Profile::V6_1);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0], r#"{"stats":{"thp_fault_alloc":1}}"#);
    assert!(out[1].starts_with(r#"{"error":"line 5: "#), "{}", out[1]);
    assert!(out[1].contains("PMD-size (2M) THP only"), "{}", out[1]);
    let out = run(text, Profile::V6_12);
    assert!(
        out[0].starts_with(r#"{"stats":{"anon_fault_alloc":{"2M":1}"#),
        "{}",
        out[0]
    );
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn syntax_and_run_time_errors_stop_at_their_line() {
    let text = "P mmap A 2M\nP write A 0 4K\nP observe A 0 4K\nP write A 0 100\n";
    assert_eq!(
        run(text, Profile::V6_15),
        ["{\"error\":\"line 4: syntax error\"}"]
    );
    let text = "P mmap A 2M\n\n# c\nP fork C\nC exit\nC write A 0 4K\nP observe A 0 4K\n";
    let out = run(text, Profile::V6_15);
    assert_eq!(out, ["{\"error\":\"line 6: process C has exited\"}"]);
    for bad in [
        "P write A 0 4K 07",
        "kernel 6.13",
        "thp size 8K always",
        "P fork 1C",
        "P exit 1",
    ] {
        assert_eq!(
            parse(&format!("P mmap A 2M\n{bad}\n")).unwrap_err(),
            2,
            "{bad}"
        );
    }
    assert!(
        parse("kernel 6.12\nthp size 2048K always\nP write A 4K 8K 18446744073709551615\n").is_ok()
    );
}
