"""Issue 12's per-access ratios, measured in one run: ``Process.access_batch`` from a numpy
``uint64`` array against the pure-Rust loop of ``Machine::access`` over the same addresses
(present pages, first touch, COW copies), and event recording on against off.

    python benches/access_ratios.py [--pages 32768] [--rounds 5]

Runs ``cargo run --release --example access_loop`` (rust/cowcore-core/examples/access_loop.rs,
which prints the Rust side as JSON) and then :func:`cowcore.bench.access_rows` (the Python
side, on the installed ``cowcore``), and prints a Markdown table with the ratios beside
issue 12's targets. Both sides time wall-clock best-of-rounds (the Rust example has no CPU
clock); nothing is asserted. Needs cargo.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cowcore.bench import ACCESS_KINDS, access_rows

ROOT = Path(__file__).resolve().parent.parent
CARGO = ("cargo", "run", "-q", "--release", "-p", "cowcore-core", "--example", "access_loop")
TARGETS = {
    "present_read": 2.0,
    "present_write": 2.0,
    "first_touch": 1.3,
    "cow_copy": 1.3,
}


def rust_rows(pages: int, rounds: int) -> dict[str, float]:
    """The Rust example's figures (ns per access / per page)."""
    out = subprocess.run(
        [*CARGO, "--", str(pages), str(rounds)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=1 << 15, help="a power of two")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rust = rust_rows(args.pages, args.rounds)
    py = access_rows(args.pages, args.rounds)
    print(f"{args.pages} pages, best of {args.rounds}, wall clock")
    print()
    print(
        "| workload | Rust `access` loop ns | Rust `access_batch` ns "
        "| Python `access_batch` ns | Python / Rust loop | target |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ACCESS_KINDS:
        r, rb, p = rust[f"{kind}_loop"], rust[f"{kind}_batch"], py[f"{kind}_batch"]
        print(f"| {kind} | {r:.1f} | {rb:.1f} | {p:.1f} | {p / r:.2f}x | <= {TARGETS[kind]:.1f}x |")
    print()
    print(
        "| events (write, fork, COW write, exit) | off ns/page | on ns/page | on / off | target |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, rows in (
        ("Rust (`record_events`, `take_events`)", rust),
        ("Python (`m.record()`)", py),
    ):
        off, on = rows["events_off"], rows["events_on"]
        print(f"| {label} | {off:.1f} | {on:.1f} | {on / off:.2f}x | <= 2.0x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
