"""The reference's event channel: the counters are the fold of the events emitted."""

from __future__ import annotations

from hypothesis import given, settings

from cowcore.reference.backend import ReferenceBackend
from cowcore.reference.events import COUNTED, PER_SIZE, Event, EventKind, Stats
from tests.reference.programs import Step, programs, run_program

MB = 1 << 20
PAGE = 4096


def recording(ref: ReferenceBackend) -> list[Event]:
    events: list[Event] = []
    ref._k.listeners.append(events.append)
    return events


def test_a_scenario_emits_every_kind_and_folds_to_the_stats() -> None:
    ref = ReferenceBackend("6.15", 4096, 4)  # 16 MiB
    events = recording(ref)
    pid = ref.init_pid()
    ref.set_thp_enabled("always")
    a = ref.mmap(pid, 8 * MB)
    ref.write(pid, a, PAGE, 1)  # THP_FAULT_ALLOC, ANON_FAULT_ALLOC(9)
    ref.read(pid, a + 2 * MB, PAGE)  # FAULTS_READ: the huge zero PMD
    ref.write(pid, a + 2 * MB, PAGE, 2)  # FAULTS_WP, HUGE_ZERO_WRITE
    ref.set_policy("huge_zero_wp_alloc", False)
    ref.read(pid, a + 4 * MB, PAGE)
    ref.write(pid, a + 4 * MB, PAGE, 3)  # THP_SPLIT_PMD, then COW_COPY of the zero page
    ref.set_thp_enabled("never")
    ref.set_thp_size("64K", "always")
    ref.write(pid, a + 6 * MB, PAGE, 4)  # ANON_FAULT_ALLOC(4)
    ref.write(pid, a + 6 * MB + 64 * 1024, PAGE, 4)
    child = ref.fork(pid)
    ref.write(pid, a + 4 * MB, PAGE, 5)  # COW_COPY (shared order-0 folio)
    ref.write(child, a + 4 * MB, PAGE, 6)  # PGREUSE (now only the child maps it)
    ref.mprotect(pid, a + 6 * MB, 16 * PAGE, "r")  # MPROTECT
    ref.exit(child)  # ZAP, FOLIO_FREE
    ref.madvise(pid, a + 6 * MB, 2 * PAGE, "dontneed")  # DEFERRED_SPLIT of the 64K folio
    ref.ref(pid, a + 6 * MB + 2 * PAGE, PAGE)
    # SPLIT of the 2M THP at a (queued at its fault, underused: 511 zero-filled pages) and
    # SPLIT_FAILED of the 64K folio (the ref is a reference beyond its mappings).
    ref.drop_caches()
    ref.unref(pid, a + 6 * MB + 2 * PAGE, PAGE)
    ref.munmap(pid, a + 6 * MB, 64 * 1024)  # DEFERRED_UNQUEUE as it is freed
    ref.pageout(pid, a + 6 * MB + 64 * 1024, 64 * 1024)  # SWAP_OUT of the second 64K folio
    ref.read(pid, a + 6 * MB + 64 * 1024, PAGE)  # SWAP_IN, whole
    # Exhaust memory so that mTHP and PMD allocations fall back (ANON_FAULT_FALLBACK).
    b = ref.mmap(pid, 16 * MB)
    ref.set_thp_size("2M", "always")
    pages = 0
    while ref.free_frames() > 4:  # down to single frames: 64K fails, order 0 does not
        ref.write(pid, b + pages * PAGE, PAGE, 7)
        pages += 1
    last = (b + (pages - 1) * PAGE) & ~(2 * MB - 1)
    assert ref.collapse(pid, last, 2 * MB) == 8  # THP_COLLAPSE_ALLOC_FAILED: ENOMEM
    ref.munmap(pid, b, 16 * MB)
    assert ref.collapse(pid, a + 4 * MB, 2 * MB) == 1  # COLLAPSE, THP_COLLAPSE_ALLOC
    ref.check()

    kinds = {e.kind for e in events}
    # The swap fallbacks need a full device or a large swap-in without memory
    # (test_access_outcomes.py covers SWPIN_FALLBACK).
    assert kinds == set(EventKind) - {EventKind.SWPOUT_FALLBACK, EventKind.SWPIN_FALLBACK}
    assert {e.order for e in events if e.kind is EventKind.ANON_FAULT_FALLBACK} >= {4, 9}
    counted = [e for e in events if e.kind in COUNTED]
    assert all((e.kind in PER_SIZE) == (e.order >= 2) for e in counted)
    assert Stats.fold(events).as_dict() == ref.stats()


@settings(max_examples=25, deadline=None)
@given(programs(max_count=64, max_size=30))
def test_random_programs_fold_to_the_stats(steps: list[Step]) -> None:
    ref = ReferenceBackend("6.12", 2048, 4)
    events = recording(ref)

    def folds(_pids: list[int]) -> None:
        assert Stats.fold(events).as_dict() == ref.stats()

    run_program(ref, steps, "16K", folds)
    ref.check()


def test_no_listener_by_default_and_listeners_see_every_event() -> None:
    ref = ReferenceBackend("6.15", 1024, 4)
    assert ref._k.listeners == []
    first, second = recording(ref), recording(ref)
    pid = ref.init_pid()
    a = ref.mmap(pid, 2 * MB)
    ref.write(pid, a, 4 * PAGE, 1)
    assert first == second
    assert [e for e in first if e.kind in COUNTED] == [Event(EventKind.FAULTS_WRITE)] * 4
    assert ref.stats()["faults_write"] == 4
