"""atheris harness: random public-API calls with random arguments, every backend in
lockstep. Each call must succeed or raise a ``CowError`` subclass, the same outcome on
every backend (class and message; an out-of-memory error's message may differ);
``check()`` holds after every call; when every process has exited all memory is free.
Ints are passed as ints or numpy integers, and the batch calls' addresses as lists, numpy
arrays, ``array('Q')``/``array('q')`` or tuples. See fuzz/README.md.
"""

# ruff: noqa: B023 (each call closure runs within its own loop iteration)
from __future__ import annotations

import array
import itertools
import sys
from typing import Any

import atheris
import numpy as np

with atheris.instrument_imports():
    import cowcore
    from cowcore import CowError, OutOfMemoryError, SegmentationFault

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
    "observe_iter",
    "write_pages",
    "read_pages",
    "folio",
    "thp",
    "policy",
]
INT_TYPES = ["int", "int", "int", "uint64", "int64", "uint32", "bool_"]
CONTAINERS = ["list", "list", "uint64", "int64", "array-Q", "array-q", "strided", "big-endian"]
CONTAINERS += ["uint32", "float64", "2d", "tuple", "scalars"]


def as_int_type(kind: str, value: Any) -> Any:
    """``value`` as a numpy scalar of ``kind`` when it is an int that fits; else as is."""
    if kind == "int" or type(value) is not int:
        return value
    if kind == "bool_":
        return np.bool_(value) if value in (0, 1) else value
    info = np.iinfo(kind)
    return getattr(np, kind)(value) if info.min <= value <= info.max else value


def container(kind: str, values: list[Any]) -> Any:
    """The addresses of a batch call in a container of ``kind`` (a list when they do not
    fit it). Made afresh for each backend: the call may consume it."""
    makers: dict[str, Any] = {
        "uint64": lambda: np.array(values, dtype=np.uint64),
        "int64": lambda: np.array(values, dtype=np.int64),
        "array-Q": lambda: array.array("Q", values),
        "array-q": lambda: array.array("q", values),
        "strided": lambda: np.repeat(np.array(values, dtype=np.uint64), 2)[::2],
        "big-endian": lambda: np.array(values, dtype=">u8"),
        "uint32": lambda: np.array(values, dtype=np.uint32),
        "float64": lambda: np.array(values, dtype=np.float64),
        "2d": lambda: np.array([values], dtype=np.uint64),
        "tuple": lambda: tuple(values),
        "scalars": lambda: [as_int_type("uint64", v) for v in values],
    }
    if kind not in makers:
        return values
    try:
        return makers[kind]()
    except (OverflowError, TypeError, ValueError):
        return values


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
        return "raise", (type(exc).__name__, exc.addr, exc.reason, str(exc))
    except OutOfMemoryError as exc:  # the reference names the frames it needed
        return "raise", (type(exc).__name__,)
    except CowError as exc:
        return "raise", (type(exc).__name__, str(exc))


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
        addr = as_int_type(fdp.PickValueInList(INT_TYPES), addr)
        extra: Any = as_int_type(fdp.PickValueInList(INT_TYPES), fdp.ConsumeIntInRange(0, 1 << 64))
        batch: list[Any] = [arguments(fdp, maps)[0] for _ in range(fdp.ConsumeIntInRange(0, 12))]
        kind = fdp.PickValueInList(CONTAINERS)
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
        elif method == "observe_iter":
            extra = fdp.PickValueInList([1, 3, 64, 1 << 16, 0, -1, (1 << 20) + 1, None])

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
            if method == "observe_iter":
                return list(itertools.islice(p.observe_iter(addr, length, chunk=extra), 80))
            if method == "write_pages":
                return p.write_pages(container(kind, batch), extra)
            if method == "read_pages":
                return p.read_pages(container(kind, batch))
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
