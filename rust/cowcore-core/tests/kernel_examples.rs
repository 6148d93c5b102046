//! The ten kernel examples (`tests/data/`, copied from the shared kernel recordings): the
//! `6.12` profile must print `expected/6.12/`, the `6.15` profile `expected/7.2/`.
//!
//! A tiny `.cow` driver: statements map 1:1 onto `Machine` methods; frames are named by
//! first appearance of `(pfn, serial)` exactly as the scenario format says.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use cowcore_core::{
    Advice, FrameKind, Machine, Profile, Prot, Stats, ThpMode, ThpSizeMode, VirtAddr,
};

fn parse_size(s: &str) -> u64 {
    let (num, mult) = match s.as_bytes().last() {
        Some(b'K') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().expect("size") * mult
}

struct Driver {
    m: Machine,
    procs: HashMap<String, u32>,
    maps: HashMap<(String, String), u64>,
    names: HashMap<(u64, u64), String>,
    out: Vec<String>,
}

impl Driver {
    fn new(profile: Profile) -> Self {
        let m = Machine::new(256 << 20, 4, profile).unwrap();
        let mut procs = HashMap::new();
        procs.insert("P".to_string(), m.init_pid());
        Self {
            m,
            procs,
            maps: HashMap::new(),
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

    fn stats_line(s: &Stats) -> String {
        let map = |c: &[u64; 8]| {
            let parts: Vec<String> = Stats::by_size(c)
                .into_iter()
                .filter(|(_, v)| *v != 0)
                .map(|(n, v)| format!("\"{n}\":{v}"))
                .collect();
            format!("{{{}}}", parts.join(","))
        };
        let mut line = format!(
            "{{\"stats\":{{\"anon_fault_alloc\":{},\"anon_fault_fallback\":{},\"split\":{}",
            map(&s.anon_fault_alloc),
            map(&s.anon_fault_fallback),
            map(&s.split)
        );
        if s.thp_fault_alloc != 0 {
            write!(line, ",\"thp_fault_alloc\":{}", s.thp_fault_alloc).unwrap();
        }
        if s.thp_split_pmd != 0 {
            write!(line, ",\"thp_split_pmd\":{}", s.thp_split_pmd).unwrap();
        }
        line.push_str("}}");
        line
    }

    fn run_line(&mut self, line: &str) {
        let line = line.split('#').next().unwrap().trim();
        if line.is_empty() {
            return;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        match t[0] {
            "kernel" => {}
            "thp" => match t[1] {
                "enabled" => self.m.set_thp_enabled(t[2].parse::<ThpMode>().unwrap()),
                "size" => {
                    self.m
                        .set_thp_size_by_name(t[2], t[3].parse::<ThpSizeMode>().unwrap())
                        .unwrap();
                }
                "zero_page" => self.m.set_use_zero_page(t[2] == "on"),
                other => panic!("thp {other}"),
            },
            "stats" => self.out.push(Self::stats_line(self.m.stats())),
            proc_name => {
                let pid = self.procs[proc_name];
                let range = |d: &Self| {
                    let base = d.maps[&(proc_name.to_string(), t[2].to_string())];
                    (VirtAddr::new(base + parse_size(t[3])), parse_size(t[4]))
                };
                match t[1] {
                    "mmap" => {
                        let a = self.m.mmap(pid, parse_size(t[3])).unwrap();
                        self.maps
                            .insert((proc_name.into(), t[2].into()), a.as_u64());
                    }
                    "munmap" => {
                        let (a, l) = range(self);
                        self.m.munmap(pid, a, l).unwrap();
                    }
                    "mprotect" => {
                        let (a, l) = range(self);
                        self.m
                            .mprotect(pid, a, l, t[5].parse::<Prot>().unwrap())
                            .unwrap();
                    }
                    "madvise" => {
                        let (a, l) = range(self);
                        self.m
                            .madvise(pid, a, l, t[5].parse::<Advice>().unwrap())
                            .unwrap();
                    }
                    "write" => {
                        let (a, l) = range(self);
                        let v = t.get(5).map_or(1, |v| v.parse().unwrap());
                        self.m.write(pid, a, l, v).unwrap();
                    }
                    "read" => {
                        let (a, l) = range(self);
                        self.m.read(pid, a, l).unwrap();
                    }
                    "fork" => {
                        let c = self.m.fork(pid).unwrap();
                        self.procs.insert(t[2].into(), c);
                        let inherited: Vec<_> = self
                            .maps
                            .iter()
                            .filter(|((p, _), _)| p == proc_name)
                            .map(|((_, n), a)| (n.clone(), *a))
                            .collect();
                        for (n, a) in inherited {
                            self.maps.insert((t[2].into(), n), a);
                        }
                    }
                    "exit" => self.m.exit(pid).unwrap(),
                    "observe" => {
                        let (a, l) = range(self);
                        let off0 = parse_size(t[3]);
                        let rows = self.m.observe(pid, a, l).unwrap();
                        for (i, r) in rows.into_iter().enumerate() {
                            let off = off0 + i as u64 * 4096;
                            let head = format!(
                                "{{\"proc\":\"{proc_name}\",\"map\":\"{}\",\"off\":{off}",
                                t[2]
                            );
                            let s = if r.present {
                                let f = self.frame_name(r.kind, r.pfn, r.serial);
                                format!(
                                    "{head},\"present\":true,\"frame\":\"{f}\",\"folio_pages\":{},\"mapcount\":{},\"exclusive\":{},\"content\":{}}}",
                                    r.folio_pages, r.mapcount, r.exclusive, r.content
                                )
                            } else {
                                format!("{head},\"present\":false,\"frame\":null,\"folio_pages\":null,\"mapcount\":null,\"exclusive\":null,\"content\":null}}")
                            };
                            self.out.push(s);
                        }
                    }
                    other => panic!("verb {other}"),
                }
            }
        }
        self.m
            .check()
            .unwrap_or_else(|e| panic!("after `{line}`: {e}"));
    }
}

fn run(name: &str, profile: Profile, expected_dir: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let src = std::fs::read_to_string(dir.join("scenarios").join(format!("{name}.cow"))).unwrap();
    let want = std::fs::read_to_string(
        dir.join("expected")
            .join(expected_dir)
            .join(format!("{name}.jsonl")),
    )
    .unwrap();
    let mut d = Driver::new(profile);
    for line in src.lines() {
        d.run_line(line);
    }
    let got = d.out.join("\n");
    assert_eq!(got.trim(), want.trim(), "{name} under {profile:?}");
    // Every process exits: all frames except the zero pages come back.
    for pid in d.m.pids() {
        d.m.exit(pid).unwrap();
    }
    d.m.check().unwrap();
    assert_eq!(d.m.free_frames(), d.m.total_frames() - 513);
    let _ = BTreeMap::<u8, u8>::new();
}

macro_rules! example {
    ($fn612:ident, $fn615:ident, $name:literal) => {
        #[test]
        fn $fn612() {
            run($name, Profile::V6_12, "6.12");
        }
        #[test]
        fn $fn615() {
            run($name, Profile::V6_15, "7.2");
        }
    };
}

example!(child_alive_32k_612, child_alive_32k_615, "child-alive-32K");
example!(
    dontneed_in_child_32k_612,
    dontneed_in_child_32k_615,
    "dontneed-in-child-32K"
);
example!(fallback_order_612, fallback_order_615, "fallback-order");
example!(grandchild_32k_612, grandchild_32k_615, "grandchild-32K");
example!(
    mprotect_roundtrip_32k_612,
    mprotect_roundtrip_32k_615,
    "mprotect-roundtrip-32K"
);
example!(
    pmd_thp_child_alive_612,
    pmd_thp_child_alive_615,
    "pmd-thp-child-alive"
);
example!(
    pmd_thp_fork_exit_612,
    pmd_thp_fork_exit_615,
    "pmd-thp-fork-exit"
);
example!(seed_32k_612, seed_32k_615, "seed-32K");
example!(wipeonfork_612, wipeonfork_615, "wipeonfork");
example!(zero_page_read_612, zero_page_read_615, "zero-page-read");
