"""Replay a small memory trace through cowcore and print what every access did: the Python
twin of ``rust/cowcore-capi/examples/replay.c`` and ``rust/cowcore-core/examples/replay.rs``
(same trace format, same output, byte for byte).

    python examples/replay.py rust/cowcore-capi/examples/trace.txt [6.12] [--backend reference]

Trace lines: ``mmap ADDR LEN | thp ORDER MODE | read ADDR [PID] | write ADDR [PID] |
fork [PID] | exit PID | munmap ADDR LEN [PID] | mprotect ADDR LEN PROT [PID]``; ``#`` starts
a comment; numbers are decimal or ``0x`` hex; PID is 1 unless given. A write stores the line
number.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import cowcore
from cowcore import AccessFlags, EventCode

THP_SIZE_OF_ORDER = {
    2: "16K",
    3: "32K",
    4: "64K",
    5: "128K",
    6: "256K",
    7: "512K",
    8: "1M",
    9: "2M",
}


def replay(path: str, kernel: str, backend: str) -> None:
    m = cowcore.Machine(kernel, backend=backend, memory="64M")
    print(f"cowcore {cowcore.__version__}, profile {kernel}")
    procs = {1: m.init}
    counts: Counter[int] = Counter()
    with open(path, encoding="utf-8") as f, m.record() as rec:
        for line, raw in enumerate(f, start=1):
            tok = raw.split("#")[0].split()
            if not tok:
                continue
            op, args = tok[0], [int(t, 0) if t[0].isdigit() else t for t in tok[1:]]
            if op in ("read", "write") and len(args) in (1, 2):
                pid = args[1] if len(args) == 2 else 1
                r = procs[pid].access(args[0], op == "write", value=line)
                phys = "-" if r.phys is None else hex(r.phys)
                extra = (" copied" if AccessFlags.COPIED in r.flags else "") + (
                    " zeroed" if AccessFlags.ZEROED in r.flags else ""
                )
                print(
                    f"{op:<5} pid {pid} {args[0]:#014x}: {r.outcome.name}/{r.reason.name} "
                    f"phys {phys} order {r.order} faults {r.faults}{extra}"
                )
            elif op == "mmap" and len(args) == 2:
                m.init.mmap_fixed(args[0], args[1])
            elif op == "thp" and len(args) == 2:
                m.thp.sizes[THP_SIZE_OF_ORDER[args[0]]] = args[1]  # type: ignore[assignment]
            elif op == "fork" and len(args) <= 1:
                pid = args[0] if args else 1
                child = procs[pid].fork()
                procs[child.pid] = child
                print(f"fork  pid {pid} -> {child.pid}")
            elif op == "exit" and len(args) == 1:
                procs[args[0]].exit()
            elif op == "munmap" and len(args) in (2, 3):
                procs[args[2] if len(args) == 3 else 1].munmap(args[0], args[1])
            elif op == "mprotect" and len(args) in (3, 4):
                procs[args[3] if len(args) == 4 else 1].mprotect(args[0], args[1], args[2])
            else:
                sys.exit(f"line {line}: cannot parse the {op} line")
            # As a host simulator would, between its own steps.
            counts.update(int(k) for k in rec.drain()["kind"])
    print(f"events {sum(counts.values())}")
    for code in sorted(counts):
        print(f"  {EventCode(code).name:<20} {counts[code]}")
    s = m.stats()
    print(
        f"stats faults read {s.faults_read} write {s.faults_write} wp {s.faults_wp} "
        f"cow_copy {s.cow_copy} pgreuse {s.pgreuse}"
    )
    m.check()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace")
    ap.add_argument("kernel", nargs="?", default="6.15")
    ap.add_argument("--backend", default=cowcore.DEFAULT_BACKEND, choices=cowcore.BACKENDS)
    a = ap.parse_args()
    replay(a.trace, a.kernel, a.backend)


if __name__ == "__main__":
    main()
