"""Exhaustion: a machine out of physical memory fails cleanly.

* an access that finds no frame raises ``OutOfMemoryError`` at the faulting page: the pages
  before it are done, it and the rest are untouched, every invariant holds;
* a fork that cannot get its page-table frames fails as a whole: no child, parent unchanged;
* a fork past ``pid_max - 1`` processes fails as a whole with ``ProcessLimitError`` (EAGAIN),
  after the check for table frames (``copy_mm`` comes before ``alloc_pid``);
* large-folio allocation falls back order by order (``anon_fault_fallback``) before that;
* a COW copy that finds no frame fails without touching either side, while 6.15's reuse
  needs no frame at all;
* both backends agree on all of it, including in random lockstep runs on small machines.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import pytest
from hypothesis import settings

import cowcore
from cowcore import InvalidArgumentError, OutOfMemoryError, ProcessLimitError
from cowcore.protocol import THP_SIZES
from tests.conftest import MachineFactory, MiB
from tests.model import LockstepModel, skip_unless_backends

PAGE = 4096


def fill(p: cowcore.Process, size: int = 64 * MiB) -> tuple[int, int]:
    """Map ``size`` bytes and write them until memory runs out; returns (addr, pages
    written). Every page access is atomic, so this leaves exactly no free frame for one
    more 4K page plus whatever tables it would need."""
    a = p.mmap(size)
    with pytest.raises(OutOfMemoryError):
        p.write(a, size, 7)
    obs = p.observe(a, size)
    done = next(i for i, o in enumerate(obs) if not o.present)
    assert all(o.content == 7 for o in obs[:done]) and not any(o.present for o in obs[done:])
    return a, done


FAULT_EVENTS = ("faults_read", "faults_write", "faults_wp", "anon_fault_fallback")
"""Counters of fault *events*: a fault that fails for want of memory still happened (the
kernel counts it, and the failed allocations), so these may change on an OOM."""


def state(m: cowcore.Machine) -> Any:
    """Everything a failing call must leave alone (fault-event counters aside)."""
    procs = []
    for p in m.processes():
        vmas = p.vmas()
        pages = [p.observe(s, e - s) for s, e, _, _ in vmas]
        # a "normal" frame is a present page: its pfn is set
        pfns = {cast(int, o.pfn) for obs in pages for o in obs if o.frame_kind == "normal"}
        procs.append((p.pid, vmas, pages, sorted({m.folio(pfn) for pfn in pfns}, key=str)))
    stats = {k: v for k, v in m.stats().items() if k not in FAULT_EVENTS}
    return m.free_frames(), stats, procs


def test_oom_at_the_faulting_page(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile, memory="4M")
    p = m.init
    a, done = fill(p, 4 * MiB)
    assert m.free_frames() == 0
    m.check()
    before = state(m)
    with pytest.raises(OutOfMemoryError):
        p.write(a + done * PAGE, PAGE, 9)
    assert state(m) == before
    assert p.read(a + done * PAGE, PAGE) == [0]  # the zero page needs no frame
    assert m.free_frames() == 0
    # pages already there are still readable and writable without memory
    assert p.read(a, done * PAGE) == [7] * done
    p.write(a, PAGE, 8)
    m.check()


@pytest.mark.parametrize("call", ["read", "read_pages"])
def test_a_failed_read_keeps_the_faults_before_it(
    make_machine: MachineFactory, profile: str, call: str
) -> None:
    """A read that runs out of memory for a page table at page k keeps pages 0..k-1 mapped
    (the zero page), as DESIGN.md and the README say: each page access is atomic."""
    m = make_machine(profile, memory="4M")
    p = m.init
    b = p.mmap(4 * MiB)
    p.write(b, PAGE, 1)  # the PTE table of b's first 2M block now exists
    fill(p, 4 * MiB)
    start = b + 2 * MiB - 8 * PAGE  # 8 pages in that table, then a block without one
    pages = [start + i * PAGE for i in range(16)]

    def read() -> list[int]:
        return p.read(start, 16 * PAGE) if call == "read" else p.read_pages(pages)

    with pytest.raises(OutOfMemoryError):
        read()
    obs = p.observe(start, 16 * PAGE)
    assert [o.frame_kind for o in obs[:8]] == ["zero"] * 8
    assert not any(o.present for o in obs[8:])
    m.check()


def test_oom_then_freeing_lets_it_continue(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile, memory="4M")
    a, done = fill(m.init, 4 * MiB)
    m.init.madvise(a, 4 * PAGE, "dontneed")
    assert m.free_frames() == 4
    m.init.write(a + done * PAGE, 4 * PAGE, 3)  # the freed frames serve the next pages
    assert m.init.read(a + done * PAGE, 4 * PAGE) == [3] * 4
    m.check()


def test_fork_without_table_frames_fails_as_a_whole(
    make_machine: MachineFactory, profile: str
) -> None:
    m = make_machine(profile, memory="4M")
    p = m.init
    a, _ = fill(p, 4 * MiB)
    for spare in range(0, 4):
        if spare:
            p.madvise(a + (spare - 1) * PAGE, PAGE, "dontneed")
        before = state(m)
        assert m.free_frames() == spare
        with pytest.raises(OutOfMemoryError):
            p.fork()  # a PGD, PUD, PMD and PTE table: four frames
        assert state(m) == before
        assert [q.pid for q in m.processes()] == [1]
        m.check()
    p.madvise(a + 3 * PAGE, PAGE, "dontneed")
    c = p.fork()
    assert c.pid == 2 and m.free_frames() == 0  # pid 2: the failed forks used no pid
    assert c.read(a + 4 * PAGE) == [7]
    with pytest.raises(OutOfMemoryError):
        c.write(a + 4 * PAGE, PAGE, 1)  # the COW copy finds no frame: nothing changes
    assert c.read(a + 4 * PAGE) == [7] and p.read(a + 4 * PAGE) == [7]
    c.exit()
    m.check()


LIMIT_MESSAGE = "fork: no free pid (EAGAIN): 300 processes, the most pid_max 301 allows"


def test_fork_past_pid_max_fails_as_a_whole(make_machine: MachineFactory, profile: str) -> None:
    """``alloc_pid``: pid_max - 1 processes at most; the next fork fails with EAGAIN
    (``ProcessLimitError``) and changes nothing. An exit makes room; pids are not reused."""
    m = make_machine(profile, memory="16M")
    assert m.pid_max == cowcore.PID_MAX_LIMIT == 4 * 1024 * 1024
    p = m.init
    a = p.mmap(16 * PAGE)
    p.write(a, 16 * PAGE, 7)
    m.pid_max = 301  # PID_MAX_MIN, the smallest the sysctl takes
    children = [p.fork() for _ in range(299)]
    assert len(m.processes()) == 300
    before = state(m)
    with pytest.raises(ProcessLimitError) as e:
        p.fork()
    assert str(e.value) == LIMIT_MESSAGE
    with pytest.raises(ProcessLimitError, match="EAGAIN"):
        children[-1].fork()
    assert state(m) == before
    m.check()
    children[0].exit()
    c = p.fork()
    assert c.pid == 301  # the next pid, not the freed one
    with pytest.raises(ProcessLimitError):
        c.fork()
    m.pid_max = 302
    assert c.fork().read(a) == [7]
    m.check()


def test_out_of_memory_comes_before_the_pid_limit(
    make_machine: MachineFactory, profile: str
) -> None:
    """``copy_process`` calls ``copy_mm`` before ``alloc_pid``: a fork that has neither
    table frames nor a pid fails for want of memory."""
    m = make_machine(profile, memory="4M")
    p = m.init
    m.pid_max = 301
    for _ in range(299):
        p.fork()
    fill(p, 4 * MiB)
    with pytest.raises(OutOfMemoryError):
        p.fork()


@pytest.mark.parametrize("value", [0, 300, 4 * 1024 * 1024 + 1, 1 << 64])
def test_pid_max_range(make_machine: MachineFactory, value: int) -> None:
    m = make_machine(memory="4M")
    with pytest.raises(InvalidArgumentError, match=f"^pid_max must be in .*, not {value}$"):
        m.pid_max = value
    assert m.pid_max == cowcore.PID_MAX_LIMIT
    # The backends check it too, with the same words, when the façade is bypassed.
    if value < 1 << 64:
        with pytest.raises(InvalidArgumentError) as e:
            m._b.set_pid_max(value)
        assert str(e.value) == f"pid_max must be in [301, 4194304], not {value}"


def test_large_folios_fall_back_order_by_order(make_machine: MachineFactory) -> None:
    m = make_machine("6.15", memory="4M")
    for size in THP_SIZES:
        m.thp.sizes[size] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    # After boot, 4M holds the zero page at 0, the PGD at 1, the huge zero folio at
    # 512..1023: the largest free block is 256..511, order 8 (1M).
    p.write(a)
    s = m.stats()
    assert s["anon_fault_fallback"] == {**dict.fromkeys(THP_SIZES, 0), "2M": 1}
    assert s["anon_fault_alloc"] == {**dict.fromkeys(THP_SIZES, 0), "1M": 1}
    p.write(a + MiB)  # no order 8 left: 1M falls back, 512K (128..255) fits
    s = m.stats()
    assert s["anon_fault_fallback"] == {**dict.fromkeys(THP_SIZES, 0), "2M": 1, "1M": 1}
    assert s["anon_fault_alloc"] == {**dict.fromkeys(THP_SIZES, 0), "1M": 1, "512K": 1}
    with pytest.raises(OutOfMemoryError):
        p.write(a, 2 * MiB)
    s = m.stats()
    # every size was tried and failed before the first 4K page was taken
    fallback = cast(dict[str, int], s["anon_fault_fallback"])  # per-size counts, as above
    assert all(n >= 1 for n in fallback.values())
    assert m.free_frames() == 0
    m.check()


def test_pmd_thp_falls_back_to_small_pages(make_machine: MachineFactory, profile: str) -> None:
    m = make_machine(profile, memory="4M")
    m.thp.sizes["2M"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.write(a, 16 * PAGE, 5)
    assert m.stats()["thp_fault_alloc"] == 0
    assert m.stats()["anon_fault_fallback"]["2M"] == 1  # type: ignore[index]
    assert p.observe(a)[0].folio_pages == 1
    m.check()


def test_reuse_needs_no_memory_but_a_copy_does(make_machine: MachineFactory, profile: str) -> None:
    """After the child exits, 6.15 reuses the parent's 64K folio in place even with no free
    frame; 6.12 must copy a 4K page and so fails, changing nothing."""
    m = make_machine(profile, memory="4M")
    m.thp.sizes["64K"] = "always"
    p = m.init
    b = p.mmap(2 * MiB)
    p.write(b, 64 << 10, 1)
    p.fork().exit()
    fill(p, 4 * MiB)
    before = state(m)
    if profile == "6.15":
        p.write(b, PAGE, 2)
        assert m.stats()["pgreuse"] == 1
    else:
        with pytest.raises(OutOfMemoryError):
            p.write(b, PAGE, 2)
        assert state(m) == before
    m.check()


def test_huge_zero_write_without_a_thp_falls_back(
    make_machine: MachineFactory, profile: str
) -> None:
    """A write to the huge zero PMD wants a fresh 2M folio under 6.15; with none free it
    splits and copies one 4K page, as 6.12 always does (DESIGN.md, Profiles)."""
    m = make_machine(profile, memory="8M")
    m.thp.sizes["2M"] = "always"
    p = m.init
    a = p.mmap(2 * MiB)
    p.read(a)
    assert p.observe(a)[0].frame_kind == "huge_zero"
    # 8M: the only blocks of order >= 9 are 1024..2047; two PMD THPs take them
    t = p.mmap(4 * MiB)
    p.write(t, PAGE, 3)
    p.write(t + 2 * MiB, PAGE, 3)
    assert m.stats()["thp_fault_alloc"] == 3 - 1  # the huge zero read allocated none
    free = m.free_frames()
    p.write(a + PAGE, PAGE, 5)
    s = m.stats()
    assert s["huge_zero_write"] == 0 and s["thp_split_pmd"] == 1
    if profile == "6.15":
        assert s["anon_fault_fallback"]["2M"] == 1  # type: ignore[index]
    assert p.read(a, 3 * PAGE) == [0, 5, 0]
    obs = p.observe(a, 3 * PAGE)
    assert [o.frame_kind for o in obs] == ["zero", "normal", "zero"]
    assert obs[1].folio_pages == 1
    assert m.free_frames() == free - 1
    m.check()


@pytest.mark.parametrize("memory", ["4M", "6M", "8M"])
def test_exhaustion_is_the_same_on_both_backends(memory: str, profile: str) -> None:
    skip_unless_backends("rust", "reference")
    outs = []
    for backend in ("rust", "reference"):
        m = cowcore.Machine(profile, backend=backend, memory=memory)
        m.thp.sizes["64K"] = "always"
        m.thp.sizes["2M"] = "always"
        p = m.init
        a, done = fill(p, 16 * MiB)
        children: list[cowcore.Process | None] = []
        for _ in range(8):
            try:
                children.append(p.fork())
            except OutOfMemoryError:
                children.append(None)
            p.madvise(a + len(children) * 64 * PAGE, 64 * PAGE, "dontneed")
        m.check()
        outs.append((done, [c and c.pid for c in children], state(m)))
    assert outs[0] == outs[1]


class SmallMachineLockstep(LockstepModel):
    """The differential state machine on machines that run out of memory."""

    backends: ClassVar[tuple[str, ...]] = ("reference", "rust")
    may_oom: ClassVar[bool] = True


@pytest.mark.parametrize("memory", ["4M", "6M"])
def test_lockstep_on_small_machines(memory: str) -> None:
    skip_unless_backends("rust", "reference")

    class Model(SmallMachineLockstep):
        pass

    Model.memory = memory
    case = Model.TestCase
    case.settings = settings(case.settings, max_examples=max(8, settings().max_examples // 10))
    case().runTest()
