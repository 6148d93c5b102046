"""Issue 15's policies on hand-built cases whose fault counts are derived by hand, on every
backend (the Rust twins are in rust/cowcore-core/tests/policies.rs).

The seed commit's case: P writes a 64K folio (16 PTEs), forks, and the child exits. Every PTE
of P is then read-only and not anon-exclusive, and only P maps the folio (refcount and large
mapcount 16), so 6.15 reuses each page on its own write fault: 16 faults, each
``LARGE_EXCLUSIVE``. ``cow_reuse_fault_around`` makes the first reuse upgrade the other 15
PTEs (1 fault); ``cow_reuse_remember_exclusive`` keeps 16 faults, 15 of them decided by the
memo; ``mm_id_exact`` reuses where a stale shared bit makes the two-slot tracker copy.
"""

from __future__ import annotations

import pytest

from cowcore import Access, AccessFlags, Machine, Outcome, Reason
from cowcore.errors import InvalidArgumentError
from cowcore.explain import explain
from cowcore.scenario import Scenario, ScenarioSyntaxError, run_scenario
from tests.conftest import MachineFactory, MiB

PAGE = 4096
PAGES = 16
NEW_POLICIES = (
    "cow_reuse_remember_exclusive",
    "cow_reuse_fault_around",
    "cow_reuse_fault_around_window",
    "mm_id_exact",
)


def folio_64k(m: Machine, *policies: str) -> int:
    """64K mTHP on, ``policies`` on, and the init process holding one written 64K folio."""
    m.thp.sizes["64K"] = "always"
    for name in policies:
        setattr(m.policy, name, True)
    a = m.init.mmap(2 * MiB)
    m.init.write(a, PAGES * PAGE, value=1)
    return a


def writes_after_child_exit(m: Machine, *policies: str) -> list[Access]:
    a = folio_64k(m, *policies)
    m.init.fork().exit()
    before = m.stats().faults_wp
    recs = [m.init.access(a + i * PAGE, True, value=100 + i) for i in range(PAGES)]
    assert m.stats().faults_wp - before == sum(r.faults for r in recs)
    # nothing was copied: the folio is still P's, written in place
    assert m.init.read(a, PAGES * PAGE) == [100 + i for i in range(PAGES)]
    assert m.stats()["cow_copy"] == 0
    m.check()
    return recs


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "6.15"])
def test_new_policies_are_off_under_every_profile(
    make_machine: MachineFactory, kernel: str
) -> None:
    m = make_machine(kernel)
    for name in NEW_POLICIES:
        assert getattr(m.policy, name) is False
        assert name in {spec.name for spec in m.policy.specs}
    setattr(m.policy, NEW_POLICIES[0], True)
    assert m.policy.cow_reuse_remember_exclusive is True
    with pytest.raises(InvalidArgumentError):
        m.policy.mm_id_exact = 1  # type: ignore[assignment]


def test_without_policies_each_page_faults_once(make_machine: MachineFactory) -> None:
    recs = writes_after_child_exit(make_machine())
    assert [(r.outcome, r.reason, r.faults) for r in recs] == [
        (Outcome.COW_REUSE, Reason.LARGE_EXCLUSIVE, 1)
    ] * PAGES
    assert not any(AccessFlags.FAULT_AROUND in r.flags for r in recs)


def test_fault_around_takes_one_fault_instead_of_sixteen(make_machine: MachineFactory) -> None:
    recs = writes_after_child_exit(make_machine(), "cow_reuse_fault_around")
    first, rest = recs[0], recs[1:]
    assert (first.outcome, first.reason, first.faults) == (
        Outcome.COW_REUSE,
        Reason.LARGE_EXCLUSIVE,
        1,
    )
    assert AccessFlags.FAULT_AROUND in first.flags
    assert [(r.outcome, r.faults) for r in rest] == [(Outcome.NO_FAULT, 0)] * (PAGES - 1)


def pte_mapped_2m_after_child_exit(m: Machine, *policies: str) -> int:
    """A written 2M folio of the init process, remapped by PTEs (an mprotect round trip on
    one page splits the PMD), shared with a child that has exited: every page's next write
    reuses it (6.15)."""
    m.thp.sizes["2M"] = "always"
    for name in policies:
        setattr(m.policy, name, True)
    a = m.init.mmap(4 * MiB)
    a = (a + 2 * MiB - 1) & ~(2 * MiB - 1)
    m.init.write(a, 2 * MiB, value=1)
    m.init.mprotect(a, PAGE, "r")
    m.init.mprotect(a, PAGE, "rw")
    assert m.init.translate(a).page_size == PAGE
    m.init.fork().exit()
    return a


def test_fault_around_window_bounds_the_upgrade(make_machine: MachineFactory) -> None:
    """With the window, the first write (page 20) upgrades only the other pages of its
    aligned 16-page window, 16..31: page 31 then takes no fault, page 32 and page 15 do."""
    m = make_machine()
    a = pte_mapped_2m_after_child_exit(m, "cow_reuse_fault_around", "cow_reuse_fault_around_window")
    first = m.init.access(a + 20 * PAGE, True, value=2)
    assert (first.outcome, first.reason) == (Outcome.COW_REUSE, Reason.LARGE_EXCLUSIVE)
    assert AccessFlags.FAULT_AROUND in first.flags
    assert [m.init.access(a + i * PAGE, True, value=3).faults for i in (16, 31, 32, 15)] == [
        0,
        0,
        1,
        1,
    ]
    m.check()


@pytest.mark.parametrize(("window", "faults"), [(False, 1), (True, 512 // 16)])
def test_fault_around_window_faults_once_per_window(
    make_machine: MachineFactory, window: bool, faults: int
) -> None:
    """Writing every page of a PTE-mapped 2M folio after fork and child exit: fault-around
    takes one fault for the folio (upgrading the other 511 PTEs); with the window, one per
    16-page window: 512 / 16 = 32, each upgrading 15."""
    m = make_machine()
    policies = ["cow_reuse_fault_around"] + (["cow_reuse_fault_around_window"] if window else [])
    a = pte_mapped_2m_after_child_exit(m, *policies)
    recs = [m.init.access(a + i * PAGE, True, value=3) for i in range(512)]
    assert sum(r.faults for r in recs) == faults
    faulted = [i for i, r in enumerate(recs) if r.faults]
    assert faulted == list(range(0, 512, 512 // faults))
    assert all(AccessFlags.FAULT_AROUND in recs[i].flags for i in faulted)
    assert m.stats()["cow_copy"] == 0
    assert m.init.read(a, 2 * MiB) == [3] * 512
    m.check()


def test_memo_decides_every_fault_after_the_first(make_machine: MachineFactory) -> None:
    recs = writes_after_child_exit(make_machine(), "cow_reuse_remember_exclusive")
    assert (recs[0].reason, recs[0].faults) == (Reason.LARGE_EXCLUSIVE, 1)
    assert [(r.outcome, r.reason, r.faults) for r in recs[1:]] == [
        (Outcome.COW_REUSE, Reason.LARGE_MEMO_EXCLUSIVE, 1)
    ] * (PAGES - 1)


def test_fork_forgets_the_memo(make_machine: MachineFactory) -> None:
    """Another mm mapping the folio (fork's dup) forgets the memo: P's next write runs the
    full check and copies, and the child never sees P's writes."""
    m = make_machine()
    a = folio_64k(m, "cow_reuse_remember_exclusive")
    m.init.fork().exit()
    assert m.init.access(a, True, value=7).reason is Reason.LARGE_EXCLUSIVE
    child = m.init.fork()
    r = m.init.access(a + PAGE, True, value=8)
    assert (r.outcome, r.reason) == (Outcome.COW_COPY, Reason.LARGE_MAYBE_SHARED)
    assert child.read(a, 2 * PAGE) == [7, 1]


def test_partial_unmap_forgets_the_memo(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = folio_64k(m, "cow_reuse_remember_exclusive")
    m.init.fork().exit()
    assert m.init.access(a, True, value=7).reason is Reason.LARGE_EXCLUSIVE
    assert m.init.access(a + PAGE, True, value=7).reason is Reason.LARGE_MEMO_EXCLUSIVE
    m.init.munmap(a + 15 * PAGE, PAGE)
    assert m.init.access(a + 2 * PAGE, True, value=7).reason is Reason.LARGE_EXCLUSIVE


@pytest.mark.parametrize("exact", [False, True])
def test_exact_tracking_reuses_where_two_slots_copy(
    make_machine: MachineFactory, exact: bool
) -> None:
    """Three processes: P and C1 hold the two MM-id slots, C2 is untracked. P and C1 exit;
    each frees its slot, and neither time does a slot own every remaining mapping (C2's 16
    are in none), so the shared bit stays set with C2 the only mapper: the two-slot tracker
    copies, the exact one reuses."""
    m = make_machine()
    a = folio_64k(m, *(["mm_id_exact"] if exact else []))
    c1, c2 = m.init.fork(), m.init.fork()
    m.init.exit()
    c1.exit()
    f = m.folio(c2.translate(a).pfn or 0)
    assert f.maybe_mapped_shared and f.large_mapcount == 16 == f.refcount
    assert [(s.mm_id, s.mapcount) for s in f.mm_ids] == [(0, 0), (0, 0)]
    r = c2.access(a, True, value=9)
    if exact:
        assert (r.outcome, r.reason) == (Outcome.COW_REUSE, Reason.LARGE_EXACT_EXCLUSIVE)
    else:
        assert (r.outcome, r.reason) == (Outcome.COW_COPY, Reason.LARGE_MAYBE_SHARED)


def test_exact_tracking_still_copies_a_shared_folio(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = folio_64k(m, *NEW_POLICIES)
    c1, c2 = m.init.fork(), m.init.fork()
    c1.exit()
    for p, value in ((m.init, 9), (c2, 10)):
        r = p.access(a + (value - 9) * PAGE, True, value=value)
        assert (r.outcome, r.reason) == (Outcome.COW_COPY, Reason.LARGE_MAYBE_SHARED)
    assert c2.read(a, 2 * PAGE) == [1, 10]
    assert m.init.read(a, 2 * PAGE) == [9, 1]


def test_fault_around_stays_in_the_vma(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = folio_64k(m, "cow_reuse_fault_around")
    m.init.fork().exit()
    mid = a + 8 * PAGE
    m.init.mprotect(mid, 8 * PAGE, "r")
    assert AccessFlags.FAULT_AROUND in m.init.access(a, True, value=5).flags
    assert [m.init.access(a + i * PAGE, True, value=5).faults for i in range(1, 8)] == [0] * 7
    m.init.mprotect(mid, 8 * PAGE, "rw")
    r = m.init.access(mid, True, value=5)
    assert (r.outcome, r.faults) == (Outcome.COW_REUSE, 1)


def _stats_after(policy_lines: str, backend: str) -> dict[str, object]:
    text = (
        "kernel 6.15\nthp size 64K always\n"
        + policy_lines
        + "P mmap A 2M\nP write A 0 64K\nP fork C\nC exit\nP write A 0 64K 2\nstats\n"
    )
    obs = run_scenario(text, backend=backend)
    return obs[-1]["stats"]  # type: ignore[return-value]


def test_scenario_policy_statement(backend: str) -> None:
    """``policy NAME on|off`` sets the toggle from its line on; the fault counts of the seed
    case follow (16 reuses without fault-around, 1 with it)."""
    plain = _stats_after("", backend)
    around = _stats_after("policy cow_reuse_fault_around on\n", backend)
    assert plain["pgreuse"] == 16 and around["pgreuse"] == 1
    assert (
        _stats_after(
            "policy cow_reuse_fault_around on\npolicy cow_reuse_fault_around off\n", backend
        )
        == plain
    )
    with pytest.raises(ScenarioSyntaxError, match="line 1: unknown policy 'bogus'"):
        Scenario.parse("policy bogus on\n")
    with pytest.raises(ScenarioSyntaxError, match="line 1: bad policy setting"):
        Scenario.parse("policy mm_id_exact yes\n")


def test_explain_says_what_the_policy_did(make_machine: MachineFactory) -> None:
    """``explain`` names the memo, the exact tracker and fault-around in its line."""
    recs = writes_after_child_exit(make_machine(), "cow_reuse_fault_around")
    assert "fault-around" in explain(recs[0], write=True)
    recs = writes_after_child_exit(make_machine(), "cow_reuse_remember_exclusive")
    assert "cow_reuse_remember_exclusive" in explain(recs[1], write=True)
    assert "fault-around" not in explain(recs[1], write=True)
