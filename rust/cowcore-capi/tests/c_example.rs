//! `examples/replay.c` built with the system C compiler against the static and the shared
//! library, run on `examples/trace.txt`, and its output compared with the same trace run on
//! the core directly; and `tests/c/smoke.cpp`, the header as C++.
//!
//! The C compiler is `$CC` (default `cc`), the C++ one `$CXX` (default `c++`). These tests
//! fail (not skip) without them: CI installs gcc.

use cowcore_core::{Access, AccessFlags, Event, Machine, Reason, VirtAddr};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");

/// Where cargo put `libcowcore_capi.{a,so}` for this test build: next to the test binary
/// (`target/<profile>/deps`), built together with the rlib the test links.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        if dir.join("libcowcore_capi.a").exists() {
            return dir.to_path_buf();
        }
    }
    panic!("no libcowcore_capi.a near {}", exe.display());
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles and links; panics with the compiler's output on failure.
fn compile(compiler: &str, args: &[&str], output: &Path) {
    let mut cmd = Command::new(compiler);
    cmd.args(args)
        .arg(format!("-I{CRATE}/include"))
        .arg("-o")
        .arg(output);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler} ({e}); set CC/CXX"));
    assert!(
        out.status.success(),
        "{compiler} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run(exe: &Path, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// The static library's link line: the library, then what the Rust standard library needs
/// from the system (`rustc --print native-static-libs` on Linux, glibc).
fn static_link() -> Vec<String> {
    let lib = lib_dir().join("libcowcore_capi.a");
    let mut v = vec![lib.display().to_string()];
    v.extend(["-lpthread", "-ldl", "-lm"].map(String::from));
    v
}

fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => s.parse().unwrap(),
    }
}

/// `CamelCase` → `CAMEL_CASE`, the names the C API prints (Python's).
fn screaming(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            s.push('_');
        }
        s.push(c.to_ascii_uppercase());
    }
    s
}

fn reason_name(r: Reason) -> String {
    screaming(&format!("{r:?}"))
}

fn event_name(e: &Event) -> String {
    let debug = format!("{e:?}");
    let name = debug.split([' ', '{', '(']).next().unwrap();
    if name == "PgReuse" {
        return "PGREUSE".into();
    }
    screaming(name)
}

/// What replay.c prints, computed with the core: the same trace, parsed here.
fn expected(profile: &str) -> String {
    let trace = std::fs::read_to_string(format!("{CRATE}/examples/trace.txt")).unwrap();
    let mut m = Machine::new(64 << 20, 4, profile.parse().unwrap()).unwrap();
    m.record_events(true);
    let mut s = format!("cowcore {}, profile {profile}\n", env!("CARGO_PKG_VERSION"));
    let mut counts: BTreeMap<u8, (String, u64)> = BTreeMap::new();
    let mut total = 0;
    for (i, line) in trace.lines().enumerate() {
        let line_no = i as u64 + 1;
        let text = line.split('#').next().unwrap();
        let tok: Vec<&str> = text.split_whitespace().collect();
        let Some(&op) = tok.first() else { continue };
        let pid_at = |k: usize| tok.get(k).map_or(1, |p| num(p) as u32);
        match op {
            "read" | "write" => {
                let (addr, pid) = (num(tok[1]), pid_at(2));
                let a: Access = m
                    .access(pid, VirtAddr::new(addr), op == "write", line_no)
                    .unwrap();
                let phys = a
                    .phys()
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:#x}"));
                let outcome = screaming(&format!("{:?}", a.outcome));
                writeln!(
                    s,
                    "{op:<5} pid {pid} 0x{addr:012x}: {outcome}/{} phys {phys} order {} faults {}{}{}",
                    reason_name(a.reason),
                    a.order,
                    a.faults,
                    if a.flags.contains(AccessFlags::COPIED) { " copied" } else { "" },
                    if a.flags.contains(AccessFlags::ZEROED) { " zeroed" } else { "" },
                )
                .unwrap();
            }
            "mmap" => {
                m.mmap_fixed(1, VirtAddr::new(num(tok[1])), num(tok[2]))
                    .unwrap();
            }
            "thp" => m
                .set_thp_size(num(tok[1]) as u32, tok[2].parse().unwrap())
                .unwrap(),
            "fork" => {
                let pid = pid_at(1);
                let child = m.fork(pid).unwrap();
                writeln!(s, "fork  pid {pid} -> {child}").unwrap();
            }
            "exit" => m.exit(num(tok[1]) as u32).unwrap(),
            "munmap" => m
                .munmap(pid_at(3), VirtAddr::new(num(tok[1])), num(tok[2]))
                .unwrap(),
            "mprotect" => m
                .mprotect(
                    pid_at(4),
                    VirtAddr::new(num(tok[1])),
                    num(tok[2]),
                    tok[3].parse().unwrap(),
                )
                .unwrap(),
            _ => panic!("trace line {line_no}: {op}"),
        }
        for e in m.take_events() {
            counts.entry(e.code()).or_insert((event_name(&e), 0)).1 += 1;
            total += 1;
        }
    }
    writeln!(s, "events {total}").unwrap();
    for (name, n) in counts.values() {
        writeln!(s, "  {name:<20} {n}").unwrap();
    }
    let st = m.stats();
    writeln!(
        s,
        "stats faults read {} write {} wp {} cow_copy {} pgreuse {}",
        st.faults_read, st.faults_write, st.faults_wp, st.cow_copy, st.pgreuse
    )
    .unwrap();
    s
}

#[test]
fn replay_c_prints_what_the_core_does() {
    let dir = out_dir();
    let src = format!("{CRATE}/examples/replay.c");
    let flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];
    let static_exe = dir.join("replay-static");
    let mut args: Vec<String> = flags.map(String::from).to_vec();
    args.push(src.clone());
    args.extend(static_link());
    compile(
        &cc(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &static_exe,
    );
    let shared_exe = dir.join("replay-shared");
    let libs = lib_dir().display().to_string();
    let mut args: Vec<String> = flags.map(String::from).to_vec();
    args.extend([
        src,
        format!("-L{libs}"),
        format!("-Wl,-rpath,{libs}"),
        "-lcowcore_capi".into(),
    ]);
    compile(
        &cc(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &shared_exe,
    );
    let trace = format!("{CRATE}/examples/trace.txt");
    for profile in ["6.15", "6.12"] {
        let want = expected(profile);
        assert!(want.contains("COW_COPY/") && want.contains("SEGFAULT/"));
        for exe in [&static_exe, &shared_exe] {
            assert_eq!(run(exe, &[&trace, profile]), want, "{}", exe.display());
        }
    }
    // A failed call: exit status 1, the status name and the library's message.
    let out = Command::new(&static_exe)
        .args([&trace, "6.13"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("6.13"),
        "{err}"
    );
}

#[test]
fn header_is_cpp() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let exe = out_dir().join("smoke-cpp");
    let mut args: Vec<String> = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"]
        .map(String::from)
        .to_vec();
    args.push(format!("{CRATE}/tests/c/smoke.cpp"));
    args.extend(static_link());
    compile(
        &cxx,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &exe,
    );
    assert_eq!(run(&exe, &[]), "ok\n");
}
