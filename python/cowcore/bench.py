"""``cowcore bench``: the benchmark table of BENCHMARKS.md, measured in one run.

Every workload goes through the public API (:class:`cowcore.Machine`), so the Rust core and
the pure-Python reference do exactly the same work; the native baseline is ``cownative.c``,
shipped in this package (the real kernel doing the same fork/write patterns), built with the
host's gcc into the user's cache directory (:mod:`cowcore.kernel.build`) on first use; without
gcc the native columns stay empty and ``cowcore bench`` says why on stderr. Figures are per
4 KiB page (or per call) and the table prints ratios, which is what a shared, noisy machine can
measure.

The same workload functions are timed by pytest-benchmark in ``benches/``.

Times are the CPU time of the measuring process (``time.process_time``; the native side uses
``CLOCK_PROCESS_CPUTIME_ID``, which includes the kernel's work in the process's context,
e.g. ``copy_page_range`` in the parent's ``fork``), so that other load on a shared machine
does not count; each figure is the best of a few rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

import cowcore
from cowcore.kernel.build import BuildError, build_c, package_source
from cowcore.outcome import Outcome

MiB = 1 << 20
GiB = 1 << 30
PAGE = 4096

Phases = dict[str, float]


def _timed(phases: Phases, name: str, fn: Callable[[], object]) -> None:
    t = time.process_time()
    fn()
    phases[name] = time.process_time() - t


def fork_exit_rewrite(
    backend: str, nbytes: int, size: str | None = None, memory: str = "4G"
) -> Phases:
    """Write all, fork, the child exits, write all again (every write a reuse fault)."""
    m = cowcore.Machine("6.15", backend=backend, memory=memory)
    if size:
        m.thp.sizes[size] = "always"
    p = m.init
    a = p.mmap(nbytes)
    out: Phases = {}
    _timed(out, "first_write", lambda: p.write(a, nbytes))
    child: list[cowcore.Process] = []
    _timed(out, "fork", lambda: child.append(p.fork()))
    _timed(out, "exit", child[0].exit)
    _timed(out, "reuse", lambda: p.write(a, nbytes, value=2))
    return out


def cow_copy(backend: str, nbytes: int, size: str | None = None) -> Phases:
    """Write all, fork, the parent writes all while the child lives (every write copies)."""
    m = cowcore.Machine("6.15", backend=backend, memory="4G")
    if size:
        m.thp.sizes[size] = "always"
    p = m.init
    a = p.mmap(nbytes)
    p.write(a, nbytes)
    p.fork()
    out: Phases = {}
    _timed(out, "copy", lambda: p.write(a, nbytes, value=2))
    return out


SWAP_BENCH_MIB = 512
"""The most :func:`pageout_swapin` pages out in the table: half the 1 GiB swap device, whose
first slot is its header (a full device would leave the last folio in memory)."""


def pageout_swapin(backend: str, nbytes: int, size: str | None = None) -> Phases:
    """Write all, page it all out (``MADV_PAGEOUT``: whole folios to swap slots), then read
    it all back (the swap-in fault; 64K folios come back whole on 6.15). Keep ``nbytes``
    below the swap device's 1 GiB (:data:`SWAP_BENCH_MIB`)."""
    m = cowcore.Machine("6.15", backend=backend, memory="4G")
    if size:
        m.thp.sizes[size] = "always"
    p = m.init
    a = p.mmap(nbytes)
    p.write(a, nbytes)
    out: Phases = {}
    _timed(out, "pageout", lambda: p.pageout(a, nbytes))
    _timed(out, "swapin", lambda: p.read(a, nbytes))
    return out


def prefork_server(backend: str, nbytes: int, children: int = 64) -> Phases:
    """A pre-fork server: the parent writes its heap, forks ``children`` workers; each reads
    the whole heap, every 8th writes its first eighth (COW copies), then all exit."""
    m = cowcore.Machine("6.15", backend=backend, memory="4G")
    p = m.init
    a = p.mmap(nbytes)
    p.write(a, nbytes)

    def serve() -> None:
        kids = [p.fork() for _ in range(children)]
        for i, k in enumerate(kids):
            k.read(a, nbytes)
            if i % 8 == 0:
                k.write(a, nbytes // 8, value=i + 2)
        for k in kids:
            k.exit()

    out: Phases = {}
    _timed(out, "serve", serve)
    return out


def random_writes(
    backend: str, nbytes: int, writes: int, seed: int = 1, batch: bool = False
) -> Phases:
    """Write all, fork (the child lives), then ``writes`` single-page writes at random pages
    of the parent (copy faults at first, then plain stores): one API call each, or with
    ``batch`` one ``write_pages`` call for all of them."""
    m = cowcore.Machine("6.15", backend=backend, memory="4G")
    p = m.init
    a = p.mmap(nbytes)
    p.write(a, nbytes)
    p.fork()
    rng = random.Random(seed)
    addrs = [a + rng.randrange(nbytes // PAGE) * PAGE for _ in range(writes)]

    def run() -> None:
        if batch:
            p.write_pages(addrs)
            return
        w = p.write
        for x in addrs:
            w(x)

    out: Phases = {}
    _timed(out, "random", run)
    return out


def single_write(backend: str, calls: int) -> Phases:
    """``calls`` single-page writes to one mapped, writable page (no fault): per-call cost."""
    m = cowcore.Machine("6.15", backend=backend, memory="64M")
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a)

    def run() -> None:
        w = p.write
        for _ in range(calls):
            w(a)

    out: Phases = {}
    _timed(out, "call", run)
    return out


# -- per-access records and events (issue 12) ---------------------------------------------

ACCESS_KINDS = ("present_read", "present_write", "first_touch", "cow_copy")
"""The ``access_batch`` workloads: loads / stores to written pages (no fault), stores to a
fresh mapping (anonymous allocations), stores after a fork whose child lives (COW copies)."""

_EXPECTED = {
    "present_read": Outcome.NO_FAULT,
    "present_write": Outcome.NO_FAULT,
    "first_touch": Outcome.ANON_ALLOC,
    "cow_copy": Outcome.COW_COPY,
}


def access_addresses(base: int, pages: int) -> npt.NDArray[np.uint64]:
    """One byte address in each of ``pages`` pages from ``base`` (a power of two), in a
    scattered order: ``base + perm(i) * 4096 + (8 * i) % 4096`` with ``perm(i) = (i *
    0x9E3779B1) mod pages``, the addresses of ``examples/access_loop.rs`` in the Rust core."""
    if pages & (pages - 1):
        raise ValueError("pages must be a power of two")
    i = np.arange(pages, dtype=np.uint64)
    perm = (i * np.uint64(0x9E3779B1)) & np.uint64(pages - 1)
    return np.uint64(base) + perm * np.uint64(PAGE) + (np.uint64(8) * i) % np.uint64(PAGE)


def access_batch_run(kind: str, pages: int) -> float:
    """Seconds (wall clock, like the Rust example) of one ``access_batch`` call over the
    ``kind`` workload of ``pages`` pages, from a numpy ``uint64`` array; the setup is not
    timed. Every record is checked to have the workload's outcome."""
    m = cowcore.Machine("6.15", memory="4G")
    p = m.init
    n = pages * PAGE
    a = p.mmap(n)
    if kind != "first_touch":
        p.write(a, n)
    if kind == "cow_copy":
        p.fork()
    addrs = access_addresses(a, pages)
    write = kind != "present_read"
    t = time.perf_counter()
    out = p.access_batch(addrs, write, value=2)
    secs = time.perf_counter() - t
    if not (out["outcome"] == _EXPECTED[kind]).all():
        raise RuntimeError(f"{kind}: unexpected outcome {Outcome(int(out['outcome'][0]))!r}")
    return secs


def events_run(pages: int, record: bool) -> float:
    """Seconds (wall clock) of: write ``pages`` pages, fork, write them all again (COW
    copies), the child exits; inside ``with m.record()`` and reading ``rec.events`` (a numpy
    array) at the end when ``record``."""
    m = cowcore.Machine("6.15", memory="4G")
    p = m.init
    n = pages * PAGE
    a = p.mmap(n)

    def work() -> None:
        p.write(a, n)
        c = p.fork()
        p.write(a, n, value=2)
        c.exit()

    t = time.perf_counter()
    if record:
        with m.record() as rec:
            work()
        kept = len(rec.events)
    else:
        work()
        kept = 0
    secs = time.perf_counter() - t
    if (kept > 0) != record:
        raise RuntimeError("recording kept no events" if record else "events kept")
    return secs


def access_rows(pages: int = 1 << 15, rounds: int = 5) -> dict[str, float]:
    """Best of ``rounds``, nanoseconds per access (``access_batch`` rows, keys
    ``<kind>_batch``) or per page (``events_off``, ``events_on``): the Python side of
    ``benches/access_ratios.py``."""
    out: dict[str, float] = {}
    for kind in ACCESS_KINDS:
        out[f"{kind}_batch"] = min(access_batch_run(kind, pages) for _ in range(rounds))
    out["events_off"] = min(events_run(pages, False) for _ in range(rounds))
    out["events_on"] = min(events_run(pages, True) for _ in range(rounds))
    return {k: v / pages * 1e9 for k, v in out.items()}


# -- the native baseline ------------------------------------------------------------------


NATIVE_CFLAGS = ["-O2", "-Wall", "-Wextra"]


class NativeBaselineError(Exception):
    """The native baseline could not be built or run; the message says why."""


def native(mib: int, thp: bool = False) -> dict[str, float]:
    """Run the native baseline on ``mib`` MiB: nanoseconds per 4 KiB page by phase.

    Raises:
        NativeBaselineError: gcc is missing, the build failed, or the program failed.
    """
    try:
        exe = build_c(package_source("cowcore", "cownative.c"), "cownative", NATIVE_CFLAGS)
    except BuildError as err:
        raise NativeBaselineError(str(err)) from None
    args = [str(exe), str(mib)] + (["thp"] if thp else [])
    proc = subprocess.run(args, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        raise NativeBaselineError(
            f"{' '.join(args)} failed (exit {proc.returncode}): {proc.stderr.strip()}"
        )
    result: dict[str, float] = json.loads(proc.stdout)
    return result


def _native_or_note(mib: int, thp: bool, notes: list[str]) -> dict[str, float] | None:
    """:func:`native`, or None with the reason appended to ``notes`` (once per reason)."""
    try:
        return native(mib, thp)
    except NativeBaselineError as err:
        if str(err) not in notes:
            notes.append(str(err))
        return None


def thp_setting() -> str:
    """What the native side's THP knobs say (they may not be writable here)."""
    base = Path("/sys/kernel/mm/transparent_hugepage")
    try:
        enabled = (base / "enabled").read_text().strip()
        k64 = (base / "hugepages-64kB" / "enabled").read_text().strip()
    except OSError:
        return "unknown"
    return f"enabled: {enabled}; hugepages-64kB: {k64}"


# -- scale (one subprocess per size) -------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def scale_child(gib: int, memory: str) -> dict[str, float]:
    """In a fresh process: ``gib`` GiB of 4K pages written, forked, the child exits, all
    rewritten, on a machine of ``memory``. Returns seconds per phase and memory figures."""
    before = _status_kib("VmRSS")
    nbytes = gib * GiB
    t = time.process_time()
    m = cowcore.Machine("6.15", memory=memory)
    boot = time.process_time() - t
    after_boot = _status_kib("VmRSS")
    p = m.init
    a = p.mmap(nbytes)
    out: dict[str, float] = {"boot": boot}
    t = time.process_time()
    p.write(a, nbytes)
    out["first_write"] = time.process_time() - t
    written = _status_kib("VmRSS")
    t = time.process_time()
    c = p.fork()
    out["fork"] = time.process_time() - t
    t = time.process_time()
    c.exit()
    out["exit"] = time.process_time() - t
    t = time.process_time()
    p.write(a, nbytes, value=2)
    out["reuse"] = time.process_time() - t
    peak = _status_kib("VmHWM")
    out["boot_rss_mib"] = (after_boot - before) / 1024
    out["written_growth_bytes_per_page"] = (written - before) * 1024 / (nbytes / PAGE)
    out["peak_growth_bytes_per_page"] = (peak - before) * 1024 / (nbytes / PAGE)
    out["peak_rss_mib"] = peak / 1024
    return out


def scale(gib: int, memory: str = "64G") -> dict[str, float]:
    """Runs :func:`scale_child` in a subprocess so that runs don't share memory."""
    code = f"import json, cowcore.bench as b; print(json.dumps(b.scale_child({gib}, {memory!r})))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


# -- the table --------------------------------------------------------------------------


def _per_page(phases: Phases, nbytes: int) -> dict[str, float]:
    return {k: v / (nbytes / PAGE) * 1e9 for k, v in phases.items()}


def _best(fn: Callable[[], Phases], rounds: int) -> Phases:
    best: Phases = {}
    for _ in range(rounds):
        for k, v in fn().items():
            best[k] = min(best.get(k, v), v)
    return best


def table(
    rust_mib: int = 1024, ref_mib: int = 16, rounds: int = 5, scale_gib: tuple[int, ...] = ()
) -> str:
    """Measures everything once and returns the Markdown table of BENCHMARKS.md."""
    lines: list[str] = []
    add = lines.append
    notes: list[str] = []
    nat4 = _native_or_note(rust_mib, False, notes)
    natthp = _native_or_note(rust_mib, True, notes)
    for note in notes:
        print(f"cowcore bench: no native baseline: {note}", file=sys.stderr, flush=True)
    add(f"rust at {rust_mib} MiB, reference at {ref_mib} MiB (same shape), best of {rounds}")
    if notes:
        add("native: not measured (" + "; ".join(n.splitlines()[0] for n in notes) + ")")
    add(f"native THP: {thp_setting()}")
    add("native 4K rows: MADV_NOHUGEPAGE; native 64K rows: MADV_HUGEPAGE, i.e. 2M PMD THPs")
    add("(64K mTHP is `never` here and sysfs is read-only): informative, not like for like")
    add("")
    add(
        "| workload | phase | rust ns/page | reference ns/page | ref/rust | native ns/page "
        "| native/rust |"
    )
    add("|---|---|---:|---:|---:|---:|---:|")
    native_key = {"fork": "fork", "reuse": "reuse", "copy": "copy", "first_write": "first_write"}

    def row(
        name: str, rust: dict[str, float], ref: dict[str, float], nat: dict[str, float] | None
    ) -> None:
        for phase, r in rust.items():
            f = ref[phase]
            n = nat.get(native_key.get(phase, ""), 0.0) if nat else 0.0
            ncol = f"{n:.1f} | {n / r:.1f}x" if n else "- | -"
            add(f"| {name} | {phase} | {r:.1f} | {f:.0f} | {f / r:.0f}x | {ncol} |")

    for label, size, nat in (("4K pages", None, nat4), ("64K mTHP", "64K", natthp)):
        rust = _per_page(
            _best(partial(fork_exit_rewrite, "rust", rust_mib * MiB, size), rounds), rust_mib * MiB
        )
        ref = _per_page(
            _best(partial(fork_exit_rewrite, "reference", ref_mib * MiB, size), 1), ref_mib * MiB
        )
        rust["total"] = sum(rust.values())
        ref["total"] = sum(ref.values())
        row(f"write, fork, exit, rewrite ({label})", rust, ref, nat)
        rust = _per_page(
            _best(partial(cow_copy, "rust", rust_mib * MiB, size), rounds), rust_mib * MiB
        )
        ref = _per_page(
            _best(partial(cow_copy, "reference", ref_mib * MiB, size), 1), ref_mib * MiB
        )
        row(f"COW copy after fork ({label})", rust, ref, nat)
        swap_mib = min(rust_mib, SWAP_BENCH_MIB)
        rust = _per_page(
            _best(partial(pageout_swapin, "rust", swap_mib * MiB, size), rounds), swap_mib * MiB
        )
        ref = _per_page(
            _best(partial(pageout_swapin, "reference", ref_mib * MiB, size), 1), ref_mib * MiB
        )
        row(f"MADV_PAGEOUT, read back ({label}, {swap_mib} MiB)", rust, ref, None)
    pre = 4 * MiB
    rust = _per_page(_best(lambda: prefork_server("rust", pre), rounds), pre)
    ref = _per_page(_best(lambda: prefork_server("reference", pre), 1), pre)
    row("pre-fork server, 4 MiB, 64 children", rust, ref, None)
    # The per-call rows take ~0.1 s a round on Rust, so more rounds cost little and steady
    # the figures on a shared machine; the reference gets two.
    rand, short = 20000, 4 * rounds
    rust = _per_page(_best(lambda: random_writes("rust", 64 * MiB, rand), short), rand * PAGE)
    ref = _per_page(_best(lambda: random_writes("reference", 64 * MiB, rand), 2), rand * PAGE)
    add("")
    add(f"per-call rows: Rust best of {short}, reference best of 2")
    add("")
    add("| per call | rust ns/call | reference ns/call | ref/rust |")
    add("|---|---:|---:|---:|")
    add(
        f"| random single-page write after fork (64 MiB, {rand} calls) | {rust['random']:.0f} "
        f"| {ref['random']:.0f} | {ref['random'] / rust['random']:.0f}x |"
    )
    rust = _per_page(
        _best(lambda: random_writes("rust", 64 * MiB, rand, batch=True), short), rand * PAGE
    )
    ref = _per_page(
        _best(lambda: random_writes("reference", 64 * MiB, rand, batch=True), 2), rand * PAGE
    )
    add(
        f"| random writes after fork, one `write_pages` call (64 MiB, {rand} pages) "
        f"| {rust['random']:.0f} | {ref['random']:.0f} | {ref['random'] / rust['random']:.0f}x |"
    )
    calls = 200000
    rust = _per_page(_best(lambda: single_write("rust", calls), short), calls * PAGE)
    ref = _per_page(_best(lambda: single_write("reference", calls // 10), 2), calls // 10 * PAGE)
    add(
        f"| single-page write, no fault (`proc.write(addr)`) | {rust['call']:.0f} "
        f"| {ref['call']:.0f} | {ref['call'] / rust['call']:.0f}x |"
    )
    if scale_gib:
        add("")
        add("scale rows: best of 3 fresh processes per size")
        add("")
        add(
            "| scale (64 GiB machine, 4K pages) | first write ns/page | fork ns/page "
            "| exit ns/page | rewrite ns/page | RSS growth B/page after write "
            "| peak growth B/page | peak RSS MiB |"
        )
        add("|---|---:|---:|---:|---:|---:|---:|---:|")
        for g in scale_gib:
            # Best of three fresh processes: the host's own page-fault cost (which backs the
            # simulator's memory) varies from one minute to the next on a shared machine.
            s = _best(partial(scale, g), 3)
            n = g * GiB / PAGE
            add(
                f"| {g} GiB | {s['first_write'] / n * 1e9:.1f} | {s['fork'] / n * 1e9:.1f} "
                f"| {s['exit'] / n * 1e9:.1f} | {s['reuse'] / n * 1e9:.1f} "
                f"| {s['written_growth_bytes_per_page']:.1f} "
                f"| {s['peak_growth_bytes_per_page']:.1f} | {s['peak_rss_mib']:.0f} |"
            )
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore bench`` to the command line."""
    p = sub.add_parser("bench", help="print the benchmark table (Rust, reference, native)")
    p.add_argument("--mib", type=int, default=1024, help="Rust workload size (default 1024)")
    p.add_argument("--ref-mib", type=int, default=16, help="reference size (default 16)")
    p.add_argument("--rounds", type=int, default=5, help="best of N for Rust (default 5)")
    p.add_argument("--scale", default="", help="GiB sizes for the scale runs, e.g. 1,4,16,32")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    sizes = tuple(int(x) for x in args.scale.split(",") if x)
    print(table(args.mib, args.ref_mib, args.rounds, sizes), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="cowcore.bench")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["bench", *sys.argv[1:]])
    sys.exit(_main(ns))
