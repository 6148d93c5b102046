"""The public API fuzzed with hypothesis: random calls with random arguments (valid ones,
near misses, wrong types) on every backend in lockstep.

Every call either succeeds or raises a ``CowError`` subclass (never a ``TypeError``,
``OverflowError``, ``PanicException``...); every backend gives the same outcome (value, or
exception class and message and, for a segmentation fault, address and reason; an
out-of-memory error's message is the one thing that may differ); ``check()`` holds after
every call; and at the end every backend is in the same state.

Arguments are ints or numpy integers (which the API takes as ints), and the batch calls get
their addresses as lists, numpy arrays, ``array('Q')``/``array('q')`` and other iterables.
The calls and their arguments come from ``tests/strategies.py`` (shared with
``fuzz/fuzz_api.py``); this file is the harness.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import cowcore
from cowcore import CowError, OutOfMemoryError, SegmentationFault
from tests.strategies import KERNELS, api_calls, as_int_type, container, writes_flags

PAGE = 4096
MiB = 1 << 20


class Side:
    """One backend's machine and the mappings it made."""

    def __init__(self, backend: str, profile: str) -> None:
        self.m = cowcore.Machine(profile, backend=backend, memory="8M")
        self.maps: list[int] = []
        self.pending_batch = 0
        self.procs = [self.m.init]

    def resolve(self, a: Any) -> Any:
        if isinstance(a, tuple) and a and a[0] == "as":
            return as_int_type(a[1], self.resolve(a[2]))
        if isinstance(a, tuple) and a and a[0] == "batch":
            return container(a[1], [self.resolve(x) for x in a[2]])
        if isinstance(a, tuple) and a and a[0] == "raw":
            return a[1]
        if isinstance(a, tuple) and a and a[0] == "writes":
            return writes_flags(a[1], self.pending_batch, a[2])
        if isinstance(a, tuple) and a and a[0] == "map":
            if not self.maps:
                return 0x1000
            _, which, page, byte = a
            return max(0, self.maps[which % len(self.maps)] + page * PAGE + byte)
        return a

    def call(self, method: str, which: int, args: tuple[Any, ...]) -> Any:
        p = self.procs[which % len(self.procs)]  # exited processes stay in the list
        if method == "access_batch":  # the flags' count follows the addresses'
            self.pending_batch = len(args[0][2])
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
        if method == "pid_max":
            self.m.pid_max = args[0]
            return self.m.pid_max
        if method == "drop_caches":
            self.m.drop_caches()
            return None
        if method == "exit" and len(self.m.processes()) == 1 and p.alive:
            return None  # keep one process, so the run goes on
        if method == "observe_iter":
            return list(itertools.islice(p.observe_iter(args[0], args[1], chunk=args[2]), 80))
        if method == "write_pages":
            return p.write_pages(*args)
        if method == "read_pages":
            return p.read_pages(args[0])
        if method == "access":
            return p.access(args[0], args[1], value=args[2])
        if method == "unshare":  # the records, comparable
            return p.unshare(*args).tolist()
        if method == "access_batch":
            return p.access_batch(args[0], args[1], value=args[2]).tobytes()
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
        return "raise", (type(exc).__name__, exc.addr, exc.reason, str(exc))
    except OutOfMemoryError as exc:  # the reference names the frames it needed
        return "raise", (type(exc).__name__,)
    except CowError as exc:
        return "raise", (type(exc).__name__, str(exc))
    except TypeError as exc:  # only `del thp.sizes[...]` may raise it; never called here
        raise AssertionError(f"{call} raised {exc!r}") from exc


@given(
    profile=st.sampled_from(KERNELS),
    program=st.lists(api_calls(), min_size=1, max_size=40),
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
