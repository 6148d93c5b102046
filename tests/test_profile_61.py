"""The ``kernel="6.1"`` profile on every backend: hand-checkable cases of what makes 6.1 differ
from 6.12 (tests/kernel/PROVENANCE.md, "The 6.1 line"), each beside the 6.12 answer so that
the test fails if the profile were only an alias.

- PMD-size THP only: ``thp.sizes`` has ``2M`` alone; any other size is an
  ``InvalidArgumentError`` in the kernel runner's words, and a scenario's ``thp size`` line for
  it is an error at that line.
- No per-size counters: ``mthp_stats()`` is empty and the ``stats`` observation has no
  per-size keys (the simulator still counts the events: ``stats()`` keeps its maps).
- pagemap's exclusive bit of a PMD mapping is the head page's (``pagemap_pmd_range()`` of 6.1
  reads ``page_mapcount(pmd_page(pmd))`` once for the 512 entries).
- Otherwise 6.12's rules: no reuse of a PTE-mapped large folio (but of its last mapped page,
  whose folio has no other reference), a huge-zero write splits.
"""

from __future__ import annotations

import pytest

import cowcore
from cowcore.errors import InvalidArgumentError
from cowcore.protocol import NO_MTHP_SIZES, THP_SIZES
from tests.conftest import MachineFactory

PAGE = 4096
PMD = 2 << 20


def test_only_the_pmd_size_exists(make_machine: MachineFactory) -> None:
    m = make_machine("6.1", memory="16M")
    assert m.config.anon_thp_orders == (9,)
    assert list(m.thp.sizes) == ["2M"] and len(m.thp.sizes) == 1
    assert dict(m.thp.sizes) == {"2M": "inherit"}
    assert "2M" in m.thp.sizes and "64K" not in m.thp.sizes
    for size in ("16K", "64K", "1M"):
        message = f"THP size {size}: {NO_MTHP_SIZES}"
        with pytest.raises(InvalidArgumentError) as raised:
            m.thp.sizes[size] = "always"
        assert str(raised.value) == message
        with pytest.raises(InvalidArgumentError) as raised:
            m.thp.sizes[size]  # reading a size that does not exist fails too
        assert str(raised.value) == message
    m.thp.sizes["2M"] = "never"
    assert dict(m.thp.sizes) == {"2M": "never"}
    # the other profiles have every size
    assert len(make_machine("6.12", memory="16M").thp.sizes) == 8


def test_the_2m_setting_is_the_effective_enabled(make_machine: MachineFactory) -> None:
    """6.1 has one knob, ``enabled``; the kernel runner writes the effective 2M setting to it,
    so ``2M never`` under ``enabled always`` gives no THP, and ``inherit`` under ``madvise``
    gives one only where ``MADV_HUGEPAGE`` asked."""
    m = make_machine("6.1", memory="16M")
    p = m.init
    m.thp.enabled = "always"
    m.thp.sizes["2M"] = "never"
    a = p.mmap(PMD)
    p.write(a)
    assert p.observe(a)[0].folio_pages == 1
    m.thp.sizes["2M"] = "inherit"
    m.thp.enabled = "madvise"
    b, c = p.mmap(PMD), p.mmap(PMD)
    p.madvise(b, PMD, "hugepage")
    p.write(b)
    p.write(c)
    assert (p.observe(b)[0].folio_pages, p.observe(c)[0].folio_pages) == (512, 1)
    assert m.vmstat().thp_fault_alloc == 1


def _child_alive(m: cowcore.Machine) -> tuple[cowcore.Process, cowcore.Process, int]:
    """``pmd-thp-child-alive``: a PMD THP, fork, the parent writes page 0 (its PMD is split
    and page 0 copied); the child still maps the whole folio by its PMD."""
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(PMD)
    p.write(a, PAGE, 1)
    c = p.fork()
    p.write(a, PAGE, 2)
    return p, c, a


@pytest.mark.parametrize(("kernel", "page1_exclusive"), [("6.1", True), ("6.12", False)])
def test_pagemap_exclusive_of_a_pmd_is_the_head_pages(
    make_machine: MachineFactory, kernel: str, page1_exclusive: bool
) -> None:
    p, c, a = _child_alive(make_machine(kernel, memory="16M"))
    head, page1 = c.observe(a, 2 * PAGE)
    # the head page is mapped only by the child's PMD now: mapcount 1, exclusive
    assert (head.folio_pages, head.mapcount, head.exclusive, head.content) == (512, 1, True, 1)
    # page 1 is mapped by the child's PMD and the parent's PTE: mapcount 2 on every kernel;
    # 6.1 copies the head page's exclusive bit to all 512 entries, 6.12 tests each page
    assert (page1.pfn, page1.mapcount) == (p.observe(a + PAGE)[0].pfn, 2)
    assert page1.exclusive is page1_exclusive
    # a PTE-mapped page is per page under both: the parent's page 1 is shared
    assert not p.observe(a + PAGE)[0].exclusive
    assert [o.exclusive for o in c.observe(a, PMD)] == [True] + [page1_exclusive] * 511


def test_no_per_size_counters(make_machine: MachineFactory) -> None:
    m = make_machine("6.1", memory="16M")
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(PMD)
    p.write(a)
    assert m.mthp_stats() == {}
    assert m.vmstat().thp_fault_alloc == 1
    assert m.stats().anon_fault_alloc["2M"] == 1  # the simulator's fold keeps its maps
    assert set(make_machine("6.12", memory="16M").mthp_stats()) == set(THP_SIZES)


SCENARIO = """\
thp enabled always
P mmap A 2M
P write A 0 4K
P fork C
P write A 0 4K
stats
thp size 64K always
P observe A 0 4K
"""


def test_scenario_stats_and_the_size_error(backend: str) -> None:
    """The ``stats`` line of 6.1 has the vmstat counters only; the ``thp size 64K`` line is an
    error at its line with the probe's text, after what was observed before it."""
    out = cowcore.run_scenario("kernel 6.1\n" + SCENARIO, backend=backend)
    assert out == [
        {"stats": {"thp_fault_alloc": 1, "thp_split_pmd": 1, "cow_copy": 1}},
        {"error": f"line 8: thp size 64K: {NO_MTHP_SIZES}"},
    ]
    full = cowcore.run_scenario(SCENARIO, backend=backend, kernel="6.12")
    assert full[0] == {
        "stats": {
            "anon_fault_alloc": {"2M": 1},
            "anon_fault_fallback": {},
            "split": {},
            "thp_fault_alloc": 1,
            "thp_split_pmd": 1,
            "split_deferred": {},
            "nr_anon": {"2M": 1},
            "nr_anon_partially_mapped": {},
            "cow_copy": 1,
        }
    }
    assert len(full) == 2 and "error" not in full[1]


@pytest.mark.parametrize("kernel", ["6.1", "6.12"])
def test_cow_rules_are_612s(make_machine: MachineFactory, kernel: str) -> None:
    """A page of a PTE-mapped large folio that was shared is copied, even once the other
    process has exited (``munmap-partial-pmd``), and a write to the huge zero PMD splits it
    and copies 4K (``huge-zero-write``): the 6.12 rules, the toggles' defaults off."""
    m = make_machine(kernel, memory="16M")
    assert not any(m.policy.as_dict().values())  # every toggle off, issue 15's too
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(PMD)
    p.write(a, PMD, 1)
    c = p.fork()
    p.munmap(a + PMD - PAGE, PAGE)  # splits the parent's PMD: PTE-mapped now
    c.exit()
    before = p.observe(a)[0]
    p.write(a, PAGE, 2)
    after = p.observe(a)[0]
    assert (before.folio_pages, after.folio_pages) == (512, 1)
    assert after.pfn != before.pfn and m.stats().cow_copy == 1 and m.stats().pgreuse == 0
    z = p.mmap(PMD)
    p.read(z)
    assert p.observe(z)[0].frame_kind == "huge_zero"
    p.write(z, PAGE, 3)
    assert [o.frame_kind for o in p.observe(z, 2 * PAGE)] == ["normal", "zero"]


def test_the_kernel_statement_names_the_profile() -> None:
    assert cowcore.Scenario.parse("kernel 6.1\nstats\n").kernel == "6.1"


@pytest.mark.parametrize(("kernel", "reused"), [("6.1", True), ("6.12", False)])
def test_the_last_mapped_page_of_a_large_folio(
    make_machine: MachineFactory, kernel: str, reused: bool
) -> None:
    """6.1's ``do_wp_page()`` asks ``page_count(page)`` of every anonymous page, large folio or
    not: a page of a 2M THP that was shared (not anon-exclusive) is reused once it is the only
    page of the folio still mapped (count 1); 6.12's ``wp_can_reuse_anon_folio()`` refuses
    every large folio. cow.c's "R/O GUP pin on R/O-mapped previously-shared page" with a single
    PTE of a THP (``cowc-single-pte-ro-pin-on-ro-previously-shared-2M``, recorded on 6.1.176)."""
    m = make_machine(kernel, memory="16M")
    m.thp.enabled = "always"
    p = m.init
    a = p.mmap(PMD)
    p.write(a, PMD, 1)
    p.madvise(a + PAGE, PMD - PAGE, "dontneed")  # one PTE of the THP left
    p.fork().exit()
    before = p.observe(a)[0]
    assert (before.folio_pages, before.mapcount) == (512, 1)
    p.write(a, PAGE, 2)  # the folio's count: 1 (this PTE)
    after = p.observe(a)[0]
    assert (after.pfn == before.pfn) is reused
    assert (m.stats().pgreuse, m.stats().cow_copy) == ((1, 0) if reused else (0, 1))
    # Two pages mapped (count 2): copied on both.
    b = p.mmap(PMD)
    p.write(b, PMD, 1)
    p.madvise(b + 2 * PAGE, PMD - 2 * PAGE, "dontneed")
    p.fork().exit()
    first = p.observe(b)[0]
    p.write(b, PAGE, 2)
    assert p.observe(b)[0].pfn != first.pfn
