"""atheris harness: random public-API calls with random arguments, every backend in
lockstep. Each call must succeed or raise a ``CowError`` subclass, the same outcome on
every backend; ``check()`` holds after every call; when every process has exited all
memory is free. See fuzz/README.md.
"""

# ruff: noqa: B023 (each call closure runs within its own loop iteration)
from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    import cowcore
    from cowcore import CowError, SegmentationFault

PAGE = 4096
MiB = 1 << 20
SPECIAL = [
    0,
    1,
    PAGE - 1,
    PAGE,
    1 << 47,
    (1 << 47) - PAGE,
    1 << 63,
    (1 << 64) - PAGE,
    1 << 64,
    -1,
    -PAGE,
    None,
    "4096",
    4096.0,
    True,
]
LENGTHS = [
    PAGE,
    2 * PAGE,
    16 * PAGE,
    64 << 10,
    MiB,
    2 * MiB,
    4 * MiB,
    0,
    1,
    PAGE + 1,
    1 << 47,
    (1 << 64) - PAGE,
    -PAGE,
    None,
    4096.0,
]
METHODS = [
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "write",
    "read",
    "fork",
    "exit",
    "translate",
    "observe",
    "folio",
    "thp",
    "policy",
]


def arguments(fdp: atheris.FuzzedDataProvider, maps: list[int]) -> tuple[Any, Any]:
    """An address (mostly inside a mapping) and a length, decoded once for all backends."""
    if maps and fdp.ConsumeIntInRange(0, 5):
        base = maps[fdp.ConsumeIntInRange(0, len(maps) - 1)]
        addr: Any = (
            base + PAGE * fdp.ConsumeIntInRange(-4, 600) + fdp.PickValueInList([0, 0, 0, 1, 2048])
        )
    else:
        addr = fdp.PickValueInList(SPECIAL)
    return addr, fdp.PickValueInList(LENGTHS)


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except SegmentationFault as exc:
        return "raise", (type(exc).__name__, exc.addr, exc.reason)
    except CowError as exc:
        return "raise", (type(exc).__name__,)


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    fdp = atheris.FuzzedDataProvider(data)
    profile = fdp.PickValueInList(["6.12", "6.15"])
    memory = fdp.PickValueInList(["4M", "6M", "8M", "16M"])
    ms = [cowcore.Machine(profile, backend=b, memory=memory) for b in cowcore.BACKENDS]
    procs = [[m.init] for m in ms]
    maps: list[int] = []
    for _ in range(fdp.ConsumeIntInRange(0, 40)):
        method = fdp.PickValueInList(METHODS)
        who = fdp.ConsumeIntInRange(0, 63)
        addr, length = arguments(fdp, maps)
        extra: Any = fdp.ConsumeIntInRange(0, 1 << 64)
        if method == "mmap":
            length = fdp.PickValueInList([PAGE, 64 << 10, 2 * MiB, 4 * MiB, 1 << 46, 0, -1, "x"])
        elif method == "mprotect":
            extra = fdp.PickValueInList(["none", "r", "rw", "x", None])
        elif method == "madvise":
            extra = fdp.PickValueInList(
                [
                    "hugepage",
                    "nohugepage",
                    "dontneed",
                    "dontfork",
                    "dofork",
                    "wipeonfork",
                    "keeponfork",
                    "free",
                ]
            )
        elif method in ("thp", "policy"):
            extra = (fdp.ConsumeIntInRange(0, 9), fdp.ConsumeIntInRange(0, 5))

        def call(i: int) -> Any:
            m, ps = ms[i], procs[i]
            p = ps[who % len(ps)]
            if method == "mmap":
                return p.mmap(length)
            if method == "fork":
                ps.append(p.fork())
                return ps[-1].pid
            if method == "exit":
                return None if len(m.processes()) == 1 and p.alive else p.exit()
            if method == "folio":
                return m.folio(addr if not isinstance(addr, int) else addr % 5000)
            if method == "thp":
                sizes = [*cowcore.protocol.THP_SIZES, "8K"]
                modes = ["always", "madvise", "inherit", "never", "bad", None]
                m.thp.sizes[sizes[extra[0] % len(sizes)]] = modes[extra[1]]
                return None
            if method == "policy":
                names = ["cow_reuse_pte_mapped_thp", "huge_zero_wp_alloc", "x"]
                setattr(m.policy, names[extra[0] % 3], [True, False, 1, None, 0, "y"][extra[1]])
                return None
            if method == "translate":
                return p.translate(addr)
            if method in ("write", "mprotect", "madvise"):
                return getattr(p, method)(addr, length, extra)
            return getattr(p, method)(addr, length)

        results = [outcome(lambda i=i: call(i)) for i in range(len(ms))]
        if any(r != results[0] for r in results):
            raise AssertionError(f"{method}: backends disagree: {results}")
        if method == "mmap" and results[0][0] == "ok" and length <= 4 * MiB:
            maps.append(results[0][1])
        for m in ms:
            m.check()
    for m in ms:
        for p in m.processes():
            p.exit()
        m.check()
        if m.free_frames() != m.total_frames - 513:
            raise AssertionError("a frame leaked")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
