"""The public API fuzzed with hypothesis: random calls with random arguments (valid ones,
near misses, wrong types) on every backend in lockstep.

Every call either succeeds or raises a ``CowError`` subclass (never a ``TypeError``,
``OverflowError``, ``PanicException``...); every backend gives the same outcome (value, or
exception class and, for a segmentation fault, address and reason); ``check()`` holds
after every call; and at the end every backend is in the same state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import cowcore
from cowcore import CowError, SegmentationFault

PAGE = 4096
MiB = 1 << 20
RAW = st.sampled_from(
    [
        0,
        1,
        PAGE - 1,
        PAGE,
        1 << 47,
        (1 << 47) - PAGE,
        1 << 56,
        1 << 63,
        (1 << 64) - PAGE,
        (1 << 64) - 1,
        1 << 64,
        -1,
        -PAGE,
        None,
        "4096",
        4096.0,
        True,
        1 << 100,
    ]
)
LENGTHS = st.sampled_from(
    [
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
        1 << 63,
        -PAGE,
        None,
        "4K",
        4096.0,
        False,
    ]
)
MMAP_LENGTHS = st.sampled_from(
    [PAGE, 16 * PAGE, 64 << 10, 2 * MiB, 4 * MiB, 1 << 46, 1 << 47, 0, 100, -PAGE, 1 << 64, "2M"]
)
PROTS = st.sampled_from(["none", "r", "rw", "rwx", "", None, 1])
ADVICES = st.sampled_from(
    [
        "hugepage",
        "nohugepage",
        "dontneed",
        "dontfork",
        "dofork",
        "wipeonfork",
        "keeponfork",
        "free",
        None,
    ]
)
VALUES = st.sampled_from([0, 1, 7, (1 << 64) - 1, 1 << 64, -1, None, 2.5])


@st.composite
def calls(draw: st.DrawFn) -> tuple[Any, ...]:
    """(method, process choice, args): addresses are offsets into a known mapping (pages
    and odd bytes) or raw values."""
    which = draw(st.integers(0, 1 << 16))
    addr: Any = (
        "map",
        draw(st.integers(0, 1 << 16)),
        draw(st.integers(-4, 600)),
        draw(st.sampled_from([0, 0, 0, 1, 2048])),
    )
    if draw(st.integers(0, 5)) == 0:
        addr = ("raw", draw(RAW))
    method = draw(
        st.sampled_from(
            [
                "mmap",
                "munmap",
                "mprotect",
                "madvise",
                "write",
                "write",
                "write",
                "read",
                "fork",
                "fork",
                "exit",
                "translate",
                "observe",
                "folio",
                "thp",
                "policy",
            ]
        )
    )
    if method == "mmap":
        return method, which, (draw(MMAP_LENGTHS),)
    if method in ("munmap", "read", "observe"):
        return method, which, (addr, draw(LENGTHS))
    if method == "mprotect":
        return method, which, (addr, draw(LENGTHS), draw(PROTS))
    if method == "madvise":
        return method, which, (addr, draw(LENGTHS), draw(ADVICES))
    if method == "write":
        return method, which, (addr, draw(LENGTHS), draw(VALUES))
    if method == "translate":
        return method, which, (addr,)
    if method == "folio":
        return method, which, (draw(st.one_of(st.integers(-2, 5000), RAW)),)
    if method == "thp":
        size = draw(st.sampled_from([*cowcore.protocol.THP_SIZES, "8K", None]))
        mode = draw(st.sampled_from(["always", "madvise", "inherit", "never", "bad", None]))
        return method, which, (size, mode)
    if method == "policy":
        name = draw(st.sampled_from(["cow_reuse_pte_mapped_thp", "huge_zero_wp_alloc", "x"]))
        return method, which, (name, draw(st.sampled_from([True, False, 1, None])))
    return method, which, ()


class Side:
    """One backend's machine and the mappings it made."""

    def __init__(self, backend: str, profile: str) -> None:
        self.m = cowcore.Machine(profile, backend=backend, memory="8M")
        self.maps: list[int] = []
        self.procs = [self.m.init]

    def resolve(self, a: Any) -> Any:
        if isinstance(a, tuple) and a and a[0] == "raw":
            return a[1]
        if isinstance(a, tuple) and a and a[0] == "map":
            if not self.maps:
                return 0x1000
            _, which, page, byte = a
            return max(0, self.maps[which % len(self.maps)] + page * PAGE + byte)
        return a

    def call(self, method: str, which: int, args: tuple[Any, ...]) -> Any:
        p = self.procs[which % len(self.procs)]  # exited processes stay in the list
        args = tuple(self.resolve(a) for a in args)
        if method == "mmap":
            addr = p.mmap(*args)
            if args[0] <= 4 * MiB:  # keep the huge ones out of the ranges drawn later
                self.maps.append(addr)
            return addr
        if method == "fork":
            child = p.fork()
            self.procs.append(child)
            return child.pid
        if method == "folio":
            return self.m.folio(*args)
        if method == "thp":
            self.m.thp.sizes[args[0]] = args[1]
            return None
        if method == "policy":
            setattr(self.m.policy, args[0], args[1])
            return None
        if method == "exit" and len(self.m.processes()) == 1 and p.alive:
            return None  # keep one process, so the run goes on
        return getattr(p, method)(*args)

    def state(self) -> Any:
        out: list[Any] = [self.m.free_frames(), self.m.stats()]
        for p in self.m.processes():
            vmas = p.vmas()
            out.append((p.pid, vmas, [p.observe(s, min(e - s, 4 * MiB)) for s, e, _, _ in vmas]))
        return out


def outcome(side: Side, call: tuple[Any, ...]) -> tuple[str, Any]:
    try:
        return "ok", side.call(*call)
    except SegmentationFault as exc:
        return "raise", (type(exc).__name__, exc.addr, exc.reason)
    except CowError as exc:
        return "raise", (type(exc).__name__,)
    except TypeError as exc:  # only `del thp.sizes[...]` may raise it; never called here
        raise AssertionError(f"{call} raised {exc!r}") from exc


@given(
    profile=st.sampled_from(["6.12", "6.15"]),
    program=st.lists(calls(), min_size=1, max_size=40),
)
def test_random_calls_agree_and_keep_invariants(profile: str, program: list[Any]) -> None:
    sides = [Side(b, profile) for b in cowcore.BACKENDS]
    for call in program:
        results = [outcome(s, call) for s in sides]
        assert all(r == results[0] for r in results), (call, results)
        for s in sides:
            s.m.check()
    states = [s.state() for s in sides]
    assert all(st_ == states[0] for st_ in states)
    for s in sides:
        for p in s.m.processes():
            p.exit()
        s.m.check()
        assert s.m.free_frames() == s.m.total_frames - 513
