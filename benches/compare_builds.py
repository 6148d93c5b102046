"""Before/after: the same workloads on two builds of cowcore, alternating, in one run.

    python benches/compare_builds.py BEFORE_SITE [--mib 1024] [--rounds 3] [--kinds 4K,batch]

``BEFORE_SITE`` is a directory with another build of the ``cowcore`` package on it (e.g.
``git archive <rev> | tar -x -C /tmp/base && cd /tmp/base && maturin build --release`` and
``pip install --no-deps --target BEFORE_SITE`` the wheel); the installed build is "after".
Each measurement runs in a fresh subprocess, before and after alternating, best of
``--rounds``, in CPU time of the process (``time.process_time``). Prints ns per 4 KiB page
(per call for ``call``; per page of the batch for ``batch``: 20 000 random pages of 64 MiB
after a fork in one ``write_pages`` call, then the same pages again, which no longer fault),
the speed-up and the change in percent (a budget such as "within 5%" reads off it). The
workloads are written out here, not imported from :mod:`cowcore.bench`, so that they also
run on builds that predate it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

WORKLOAD = r"""
import json, sys, time
import cowcore
mib, kind = int(sys.argv[1]), sys.argv[2]
n = mib << 20
pages = n / 4096
out = {}
if kind in ("4K", "64K"):
    m = cowcore.Machine("6.15", memory="4G")
    if kind == "64K":
        m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(n)
    t = time.process_time(); p.write(a, n); out["first_write"] = time.process_time() - t
    t = time.process_time(); c = p.fork(); out["fork"] = time.process_time() - t
    t = time.process_time(); c.exit(); out["exit"] = time.process_time() - t
    t = time.process_time(); p.write(a, n, value=2); out["reuse"] = time.process_time() - t
    c = p.fork()
    t = time.process_time(); p.write(a, n, value=3); out["copy"] = time.process_time() - t
    out = {k: v / pages * 1e9 for k, v in out.items()}
elif kind == "batch":
    import random
    n = 64 << 20
    m = cowcore.Machine("6.15", memory="4G")
    p = m.init
    a = p.mmap(n)
    p.write(a, n)
    p.fork()
    rng = random.Random(1)
    addrs = [a + rng.randrange(n // 4096) * 4096 for _ in range(20000)]
    t = time.process_time(); p.write_pages(addrs); out["write_pages"] = time.process_time() - t
    t = time.process_time(); p.write_pages(addrs, 2); out["again"] = time.process_time() - t
    out = {k: v / len(addrs) * 1e9 for k, v in out.items()}
else:
    m = cowcore.Machine("6.15", memory="64M")
    p = m.init
    a = p.mmap(2 << 20)
    p.write(a)
    calls = 200000
    b = m._b
    t = time.process_time()
    for _ in range(calls):
        p.write(a)
    out["proc.write"] = (time.process_time() - t) / calls * 1e9
    t = time.process_time()
    for _ in range(calls):
        b.write(1, a, 4096, 1)
    out["backend.write"] = (time.process_time() - t) / calls * 1e9
print(json.dumps(out))
"""


def measure(site: str | None, mib: int, kind: str) -> dict[str, float]:
    env_code = f"import sys; sys.path.insert(0, {site!r})\n" if site else ""
    out = subprocess.run(
        [sys.executable, "-c", env_code + WORKLOAD, str(mib), kind],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("before_site")
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--kinds",
        default="4K,64K,call,batch",
        help="workloads, comma-separated (batch needs write_pages on both builds)",
    )
    args = ap.parse_args()
    print("| workload | phase | before ns | after ns | speed-up | after vs before |")
    print("|---|---|---:|---:|---:|---:|")
    for kind in args.kinds.split(","):
        best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
        for _ in range(args.rounds):
            for label, site in (("before", args.before_site), ("after", None)):
                for k, v in measure(site, args.mib, kind).items():
                    best[label][k] = min(best[label].get(k, v), v)
        for phase, after in best["after"].items():
            before = best["before"][phase]
            change = (after / before - 1) * 100
            print(
                f"| {kind} | {phase} | {before:.1f} | {after:.1f} | {before / after:.2f}x "
                f"| {change:+.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
