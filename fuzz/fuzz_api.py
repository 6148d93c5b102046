"""atheris harness: random public-API calls with random arguments, every backend in
lockstep. Each call must succeed or raise a ``CowError`` subclass, the same outcome on
every backend (class and message; an out-of-memory error's message may differ);
``check()`` holds after every call; when every process has exited all memory is free.
Ints are passed as ints or numpy integers, and the batch calls' addresses as lists, numpy
arrays, ``array('Q')``/``array('q')``, tuples or generators. The values come from
``tests/strategies.py`` (shared with ``tests/test_fuzz_api.py``); see fuzz/README.md.
"""

# ruff: noqa: B023 (each call closure runs within its own loop iteration)
from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports():
    import cowcore
    from cowcore import CowError, OutOfMemoryError, SegmentationFault

# The names, sizes and values to draw from are the tests' (tests/strategies.py), shared so that
# what the fuzzer tries and what CI tries are written once.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.strategies import (
    API_ADVICES,
    API_LENGTHS,
    API_METHODS,
    API_MMAP_LENGTHS,
    API_PID_MAX,
    API_POLICY_NAMES,
    API_POLICY_VALUES,
    API_PROTS,
    API_THP_MODES,
    API_THP_SIZES,
    API_WRITE_FLAGS,
    CONTAINERS,
    INT_TYPES,
    KERNELS,
    OBSERVE_CHUNKS,
    PAGE_BYTES,
    RAW_ADDRESSES,
    WRITES_KINDS,
    as_int_type,
    container,
    writes_flags,
)

PAGE = 4096
MiB = 1 << 20


def arguments(fdp: atheris.FuzzedDataProvider, maps: list[int]) -> tuple[Any, Any]:
    """An address (mostly inside a mapping) and a length, decoded once for all backends."""
    if maps and fdp.ConsumeIntInRange(0, 5):
        base = maps[fdp.ConsumeIntInRange(0, len(maps) - 1)]
        addr: Any = base + PAGE * fdp.ConsumeIntInRange(-4, 600) + fdp.PickValueInList(PAGE_BYTES)
    else:
        addr = fdp.PickValueInList(RAW_ADDRESSES)
    return addr, fdp.PickValueInList(API_LENGTHS)


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
    profile = fdp.PickValueInList(KERNELS)
    memory = fdp.PickValueInList(["4M", "6M", "8M", "16M"])
    ms = [cowcore.Machine(profile, backend=b, memory=memory) for b in cowcore.BACKENDS]
    procs = [[m.init] for m in ms]
    maps: list[int] = []
    for _ in range(fdp.ConsumeIntInRange(0, 40)):
        method = fdp.PickValueInList(API_METHODS)
        who = fdp.ConsumeIntInRange(0, 63)
        addr, length = arguments(fdp, maps)
        addr = as_int_type(fdp.PickValueInList(INT_TYPES), addr)
        extra: Any = as_int_type(fdp.PickValueInList(INT_TYPES), fdp.ConsumeIntInRange(0, 1 << 64))
        batch: list[Any] = [arguments(fdp, maps)[0] for _ in range(fdp.ConsumeIntInRange(0, 12))]
        kind = fdp.PickValueInList(CONTAINERS)
        if method == "mmap":
            length = fdp.PickValueInList(API_MMAP_LENGTHS)
        elif method == "mprotect":
            extra = fdp.PickValueInList(API_PROTS)
        elif method == "madvise":
            extra = fdp.PickValueInList(API_ADVICES)
        elif method == "pid_max":
            extra = fdp.PickValueInList(API_PID_MAX)
        elif method in ("thp", "policy"):
            extra = (fdp.ConsumeIntInRange(0, 63), fdp.ConsumeIntInRange(0, 63))
        elif method == "observe_iter":
            extra = fdp.PickValueInList(OBSERVE_CHUNKS)
        elif method == "mremap":  # a fresh address, or MREMAP_FIXED onto a mapping
            extra = None if not maps or fdp.ConsumeBool() else maps[0] + PAGE * 8
        elif method == "access":
            extra = fdp.PickValueInList(API_WRITE_FLAGS)
        elif method == "access_batch":
            bits = [fdp.ConsumeBool() for _ in range(fdp.ConsumeIntInRange(1, 4))]
            extra = (fdp.PickValueInList(WRITES_KINDS), bits)

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
                size = API_THP_SIZES[extra[0] % len(API_THP_SIZES)]
                m.thp.sizes[size] = API_THP_MODES[extra[1] % len(API_THP_MODES)]
                return None
            if method == "pid_max":
                m.pid_max = extra
                return m.pid_max
            if method == "drop_caches":
                m.drop_caches()
                return None
            if method == "policy":
                name = API_POLICY_NAMES[extra[0] % len(API_POLICY_NAMES)]
                setattr(m.policy, name, API_POLICY_VALUES[extra[1] % len(API_POLICY_VALUES)])
                return None
            if method == "translate":
                return p.translate(addr)
            if method == "observe_iter":
                return list(itertools.islice(p.observe_iter(addr, length, chunk=extra), 80))
            if method == "write_pages":
                return p.write_pages(container(kind, batch), extra)
            if method == "read_pages":
                return p.read_pages(container(kind, batch))
            if method == "access":
                return p.access(addr, extra, value=length)
            if method == "access_batch":
                writes = writes_flags(extra[0], len(batch), extra[1])
                return p.access_batch(container(kind, batch), writes, value=length).tobytes()
            if method == "unshare":  # issue 16: the records, comparable
                return p.unshare(addr, length).tobytes()
            if method in ("write", "mprotect", "madvise"):
                return getattr(p, method)(addr, length, extra)
            if method == "mremap":
                return p.mremap(addr, length, extra)
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
