"""Issue 16's references, pins and unshare faults on hand-derived cases, on every backend
(the Rust twins are the unit tests of rust/cowcore-core/src/gup.rs).

Each expected count is derived by hand from the kernel rules cited in the code: a ``ref``
adds one reference per page (``try_grab_folio`` with ``FOLL_GET``), a ``pin`` adds
``GUP_PIN_COUNTING_BIAS`` (1024) to a small folio and one reference per page to a large one,
a fork copies a maybe-pinned folio's anon-exclusive pages (``copy_present_page``), and the
unshare fault of a short R/O pin reuses or copies as ``do_wp_page`` decides.
"""

from __future__ import annotations

import numpy as np
import pytest

from cowcore import Access, AccessFlags, Machine, Outcome, Process, Reason
from cowcore.errors import InvalidArgumentError, OutOfMemoryError, SegmentationFault
from cowcore.scenario import Scenario, run_scenario
from cowcore.trace import trace_scenario
from tests.conftest import MachineFactory, MiB

PAGE = 4096
BIAS = 1024


def pfn(p: Process, addr: int) -> int:
    t = p.translate(addr)
    assert t.pfn is not None
    return t.pfn


def refcount(m: Machine, p: Process, addr: int) -> int:
    return m.folio(pfn(p, addr)).refcount


def records(raw: object) -> list[Access]:
    assert isinstance(raw, np.ndarray)
    return [Access.from_raw(tuple(row.tolist())) for row in raw]


def small_page(m: Machine) -> int:
    a = m.init.mmap(2 * MiB)
    m.init.write(a, PAGE, value=5)
    return a


# -- ref / unref ------------------------------------------------------------------------


def test_ref_counts_one_per_page_and_blocks_reuse(make_machine: MachineFactory) -> None:
    """A page shared with a child that exited has refcount 1 and is reused on write
    (``SMALL_SOLE_REF``); with a ``ref`` held it has 2 and is copied (``SMALL_OTHER_REFS``)."""
    m = make_machine("6.15")
    a = small_page(m)
    m.init.fork().exit()
    assert refcount(m, m.init, a) == 1
    m.init.ref(a, PAGE)
    assert refcount(m, m.init, a) == 2
    m.check()
    rec = m.init.access(a, True, value=6)
    assert (rec.outcome, rec.reason) == (Outcome.COW_COPY, Reason.SMALL_OTHER_REFS)


def test_ref_without_ref_reuses(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    a = small_page(m)
    m.init.fork().exit()
    rec = m.init.access(a, True, value=6)
    assert (rec.outcome, rec.reason) == (Outcome.COW_REUSE, Reason.SMALL_SOLE_REF)


def test_ref_read_faults_holes_to_the_zero_page(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    a = m.init.mmap(2 * MiB)
    m.init.ref(a, 2 * PAGE)
    obs = m.init.observe(a, 2 * PAGE)
    assert [o.frame_kind for o in obs] == ["zero", "zero"]
    assert m.init.rss_anon() == 0
    assert m.stats().faults_read == 2
    m.init.unref(a, 2 * PAGE)


def test_unref_needs_the_exact_range(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    m.init.ref(a, PAGE)
    with pytest.raises(InvalidArgumentError, match="holds no ref"):
        m.init.unref(a, 2 * PAGE)
    with pytest.raises(InvalidArgumentError, match="holds no pin"):
        m.init.unpin(a, PAGE)  # a ref is not a pin
    m.init.unref(a, PAGE)
    with pytest.raises(InvalidArgumentError, match="holds no ref"):
        m.init.unref(a, PAGE)
    assert refcount(m, m.init, a) == 1


def test_a_reference_outlives_the_mapping(make_machine: MachineFactory) -> None:
    """munmap with a ref held frees nothing; the folio goes with the unref."""
    m = make_machine()
    free0 = m.free_frames()
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 4 * PAGE, value=1)
    m.init.ref(a, 4 * PAGE)
    after_write = m.free_frames()
    assert free0 - after_write > 4  # the pages and their tables
    m.init.munmap(a, 4 * PAGE)  # the rest of the VMA keeps the tables
    m.check()
    assert m.free_frames() == after_write  # no data frame came back
    m.init.unref(a, 4 * PAGE)
    m.check()
    assert m.free_frames() == after_write + 4


def test_exit_drops_the_references_after_the_unmap(make_machine: MachineFactory) -> None:
    m = make_machine()
    child = m.init.fork()
    free0 = m.free_frames()
    a = child.mmap(2 * MiB)
    child.write(a, 3 * PAGE, value=1)
    child.ref(a, 3 * PAGE)
    child.pin(a, PAGE)
    child.exit()
    m.check()
    assert m.free_frames() == free0 + 1  # everything the child had, its PGD too


# -- pin / unpin ------------------------------------------------------------------------


def test_pin_small_adds_the_bias(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    assert not m.folio(pfn(m.init, a)).maybe_dma_pinned
    m.init.pin(a, PAGE)
    f = m.folio(pfn(m.init, a))
    # an order-0 folio has no _pincount: its pin is the bias in the refcount
    assert (f.refcount, f.pincount, f.maybe_dma_pinned) == (1 + BIAS, 0, True)
    m.check()
    m.init.unpin(a, PAGE)
    f = m.folio(pfn(m.init, a))
    assert (f.refcount, f.maybe_dma_pinned) == (1, False)


def test_pin_large_adds_one_per_page(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 16 * PAGE, value=1)
    m.init.ref(a, PAGE)  # a reference is not a pin
    f = m.folio(pfn(m.init, a))
    assert (f.refcount, f.pincount, f.maybe_dma_pinned) == (16 + 1, 0, False)
    m.init.pin(a + 4 * PAGE, 3 * PAGE)
    f = m.folio(pfn(m.init, a))
    assert (f.refcount, f.pincount, f.maybe_dma_pinned) == (16 + 1 + 3, 3, True)
    m.check()
    m.init.unpin(a + 4 * PAGE, 3 * PAGE)
    f = m.folio(pfn(m.init, a))
    assert (f.refcount, f.pincount, f.maybe_dma_pinned) == (16 + 1, 0, False)


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "6.15"])
def test_snapshot_names_the_swap_cache(make_machine: MachineFactory, kernel: str) -> None:
    """A page held by a reference stays in the swap cache when MADV_PAGEOUT unmaps it
    (``shrink_folio_list``: ``is_page_cache_freeable`` fails), with the cache's reference
    and its slot: the device's first, as slot 0 is its header. 6.1 and 6.12 keep it there
    when the read maps it back; 7.x frees it once it is mapped again (``do_swap_page``)."""
    m = make_machine(kernel)
    p = m.init
    a = p.mmap(4 * PAGE)
    p.write(a, 4 * PAGE, value=7)
    p.ref(a, PAGE)
    frame = pfn(p, a)
    assert m.folio(frame).swap_slot is None
    p.pageout(a, PAGE)
    f = m.folio(frame)
    assert (f.refcount, f.swap_slot) == (2, 1)  # the reference and the swap cache's
    p.read(a, PAGE)
    assert pfn(p, a) == frame
    f = m.folio(frame)
    if kernel == "6.15":
        assert (f.refcount, f.swap_slot) == (2, None)
    else:
        assert (f.refcount, f.swap_slot) == (3, 1)
    p.unref(a, PAGE)


def test_pin_write_faults_a_shared_page_exclusive(make_machine: MachineFactory) -> None:
    """The child pins a page it shares: the write fault copies it (refcount 2)."""
    m = make_machine()
    a = small_page(m)
    child = m.init.fork()
    child.pin(a, PAGE)
    assert pfn(child, a) != pfn(m.init, a)
    (o,) = child.observe(a, PAGE)
    assert (o.exclusive, o.content) == (True, 5)
    assert m.stats()["cow_copy"] == 1


def test_pin_of_a_hole_allocates_not_the_zero_page(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = m.init.mmap(2 * MiB)
    m.init.pin(a, PAGE)
    (o,) = m.init.observe(a, PAGE)
    assert o.frame_kind == "normal"
    assert m.stats().faults_write == 1


def test_pin_needs_a_writable_range(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    m.init.mprotect(a, PAGE, "r")
    with pytest.raises(SegmentationFault):
        m.init.pin(a, PAGE)
    assert refcount(m, m.init, a) == 1


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "6.15"])
def test_fork_copies_a_pinned_page_at_once(make_machine: MachineFactory, kernel: str) -> None:
    """CVE-2020-29374's case: the parent's pinned page stays the parent's and writable; the
    child gets its own copy at fork, so no write crosses in either direction."""
    m = make_machine(kernel)
    a = small_page(m)
    m.init.pin(a, PAGE)
    before = pfn(m.init, a)
    child = m.init.fork()
    assert pfn(m.init, a) == before
    assert pfn(child, a) != before
    assert m.init.access(a, True, value=7).outcome is Outcome.NO_FAULT  # still writable
    assert child.read(a, PAGE) == [5]
    child.write(a, PAGE, value=9)
    assert m.init.read(a, PAGE) == [7]
    m.check()


def test_fork_copies_every_exclusive_page_of_a_pinned_large_folio(
    make_machine: MachineFactory,
) -> None:
    """Pins are per folio: a pin of one page makes fork copy all 16 anon-exclusive pages of
    the 64K folio, and share none."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 16 * PAGE, value=1)
    m.init.pin(a, PAGE)
    child = m.init.fork()
    obs = child.observe(a, 16 * PAGE)
    assert all(o.exclusive and o.folio_pages == 1 for o in obs)
    assert refcount(m, m.init, a) == 16 + 1
    m.check()


def test_fork_splits_a_pinned_pmd_thp(make_machine: MachineFactory) -> None:
    m = make_machine("6.15")
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(4 * MiB)
    m.init.write(a, 2 * MiB, value=3)
    m.init.pin(a, PAGE)
    child = m.init.fork()
    assert m.stats().thp_split_pmd == 1
    assert m.init.translate(a).page_size == PAGE
    (o,) = child.observe(a + 5 * PAGE, PAGE)
    assert (o.exclusive, o.folio_pages, o.content) == (True, 1, 3)
    m.check()


def test_fork_shares_pages_of_an_unpinned_mm(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    m.init.ref(a, PAGE)  # a reference is not a pin
    child = m.init.fork()
    assert pfn(child, a) == pfn(m.init, a)


def test_fork_fails_as_a_whole_without_frames_for_the_copies(
    make_machine: MachineFactory,
) -> None:
    m = make_machine("6.15", memory="4M")
    m.thp.enabled = "never"
    a = m.init.mmap(2 * MiB)
    n = m.free_frames() - 8
    m.init.write(a, n * PAGE, value=1)
    m.init.pin(a, n * PAGE)
    free = m.free_frames()
    with pytest.raises(OutOfMemoryError):
        m.init.fork()
    assert m.free_frames() == free
    assert len(m.processes()) == 1
    m.init.unpin(a, n * PAGE)


# -- unshare ----------------------------------------------------------------------------


def test_unshare_copies_a_shared_page_read_only(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    child = m.init.fork()
    (rec,) = records(m.init.unshare(a, PAGE))
    assert (rec.outcome, rec.reason) == (Outcome.UNSHARE, Reason.SMALL_OTHER_REFS)
    assert rec.flags & AccessFlags.COPIED and rec.faults == 1
    assert pfn(m.init, a) != pfn(child, a)
    (o,) = m.init.observe(a, PAGE)
    assert (o.exclusive, o.content) == (True, 5)
    # read-only but exclusive: the next write reuses it
    w = m.init.access(a, True, value=8)
    assert (w.outcome, w.reason) == (Outcome.COW_REUSE, Reason.ANON_EXCLUSIVE)
    assert child.read(a, PAGE) == [5]
    assert m.stats().pgreuse == 1


def test_unshare_reuses_a_page_no_one_else_maps(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    m.init.fork().exit()
    before = pfn(m.init, a)
    (rec,) = records(m.init.unshare(a, PAGE))
    assert (rec.outcome, rec.reason) == (Outcome.UNSHARE, Reason.SMALL_SOLE_REF)
    assert pfn(m.init, a) == before
    assert m.stats().pgreuse == 0  # the unshare reuse is not wp_page_reuse
    assert m.init.access(a, True, value=1).reason is Reason.ANON_EXCLUSIVE


def test_unshare_reuses_only_the_first_page_of_a_folio_in_a_batch(
    make_machine: MachineFactory,
) -> None:
    """A 64K folio after fork and the child's exit (6.15, which reuses PTE-mapped large
    folios): the short pins are held for the whole batch, so the first page's pin is a
    reference beyond the mappings when the second page faults: page 0 is reused, pages 1-15
    are copied (recorded: unshare-child-exited-64K on 7.2/7.3)."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 16 * PAGE, value=3)
    m.init.fork().exit()
    recs = records(m.init.unshare(a, 16 * PAGE))
    assert [(r.outcome, r.reason) for r in recs] == [(Outcome.UNSHARE, Reason.LARGE_EXCLUSIVE)] + [
        (Outcome.UNSHARE, Reason.LARGE_EXTRA_REFS)
    ] * 15
    assert [o.folio_pages for o in m.init.observe(a, 16 * PAGE)] == [16] + [1] * 15
    assert m.folio(pfn(m.init, a)).refcount == 1  # the batch's pins are gone
    m.check()


def test_unshare_batches_are_1024_pages(make_machine: MachineFactory) -> None:
    """The pins are dropped every 1024 pages (``process_vm_rw_single_vec``): a 64K folio
    whose pages 0-3 end one batch and 4-15 start the next is reused at page 0 and, once the
    first batch's pins are gone, again at page 4 (its mapcount, 13, then equals its
    refcount)."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    before = 1020  # exclusive small pages first: no unshare fault, a pin each
    lead = m.init.mmap(8 * MiB)
    a = (lead + 4 * MiB) & ~(2 * MiB - 1)
    start = a - before * PAGE
    m.thp.sizes["64K"] = "never"
    m.init.write(start, before * PAGE, value=1)
    m.thp.sizes["64K"] = "always"
    m.init.write(a, 16 * PAGE, value=3)
    m.init.fork().exit()
    m.init.write(start, before * PAGE, value=2)  # the small pages: exclusive again
    recs = records(m.init.unshare(start, (before + 16) * PAGE))
    folio = recs[before:]
    reused = [i for i, r in enumerate(folio) if r.reason is Reason.LARGE_EXCLUSIVE]
    assert reused == [0, 4]
    assert all(r.reason is Reason.LARGE_EXTRA_REFS for i, r in enumerate(folio) if i not in (0, 4))
    assert all(r.outcome is Outcome.NO_FAULT for r in recs[:before])
    m.check()


def test_unshare_leaves_exclusive_and_zero_pages(make_machine: MachineFactory) -> None:
    m = make_machine()
    a = small_page(m)
    z = m.init.mmap(2 * MiB)
    (rec,) = records(m.init.unshare(a, PAGE))
    assert (rec.outcome, rec.faults) == (Outcome.NO_FAULT, 0)
    zero = records(m.init.unshare(z, 2 * PAGE))
    assert [r.outcome for r in zero] == [Outcome.ZERO_PAGE] * 2
    assert [o.frame_kind for o in m.init.observe(z, 2 * PAGE)] == ["zero", "zero"]


def test_unshare_of_a_shared_pmd_splits_then_copies(make_machine: MachineFactory) -> None:
    m = make_machine("6.12")
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(4 * MiB)
    m.init.write(a, 2 * MiB, value=3)
    child = m.init.fork()
    (rec,) = records(m.init.unshare(a, PAGE))
    assert rec.outcome is Outcome.UNSHARE
    assert rec.split_reason is Reason.PMD_SHARED
    assert rec.flags & AccessFlags.SPLIT and rec.flags & AccessFlags.COPIED
    assert rec.faults == 2
    assert child.read(a, PAGE) == [3]


def test_unshare_of_a_sole_pmd_marks_it_exclusive(make_machine: MachineFactory) -> None:
    m = make_machine("6.12")
    m.thp.sizes["2M"] = "always"
    a = m.init.mmap(4 * MiB)
    m.init.write(a, 2 * MiB, value=3)
    m.init.fork().exit()
    (rec,) = records(m.init.unshare(a, PAGE))
    assert (rec.outcome, rec.reason) == (Outcome.UNSHARE, Reason.PMD_SOLE_REF)
    w = m.init.access(a, True, value=1)
    assert (w.outcome, w.reason) == (Outcome.PMD_REUSE, Reason.PMD_ANON_EXCLUSIVE)


# -- the memo of issue 15 ---------------------------------------------------------------


def test_a_ref_forgets_the_exclusive_memo(make_machine: MachineFactory) -> None:
    """With the memo set, a write would reuse at once; a ``ref`` makes it forget, so the
    next write checks refcounts and copies (``LARGE_EXTRA_REFS``)."""
    m = make_machine("6.15")
    m.thp.sizes["64K"] = "always"
    m.policy.cow_reuse_remember_exclusive = True
    a = m.init.mmap(2 * MiB)
    m.init.write(a, 16 * PAGE, value=1)
    m.init.fork().exit()
    assert m.init.access(a, True, value=2).reason is Reason.LARGE_EXCLUSIVE  # memo set
    m.init.ref(a + PAGE, PAGE)
    m.check()
    rec = m.init.access(a + 2 * PAGE, True, value=2)
    assert (rec.outcome, rec.reason) == (Outcome.COW_COPY, Reason.LARGE_EXTRA_REFS)


# -- the scenario statements ------------------------------------------------------------


def test_scenario_statements(backend: str) -> None:
    text = """kernel 6.15
P mmap A 16K
P write A 0 16K 1
P ref A 0 4K
P fork C
P write A 0 4K 2
C pin A 4K 4K
P unshare A 8K 4K
P observe A 0 12K
C unpin A 4K 4K
P unref A 0 4K
P unref A 0 4K
"""
    out = run_scenario(text, backend=backend)
    assert [o.get("content") for o in out[:3]] == [2, 1, 1]
    # page 1: C pinned (copied) its own; page 2: unshared by P; page 0: copied by the write
    assert [o.get("exclusive") for o in out[:3]] == [True, True, True]
    assert len({o.get("frame") for o in out[:3]}) == 3
    assert out[-1] == {"error": "line 12: unref A: no ref of offset 0 length 4096 is held"}


def test_trace_explains_each_unshared_page(backend: str) -> None:
    text = "kernel 6.15\nP mmap A 8K\nP write A 0 8K 1\nP fork C\nP unshare A 0 8K\n"
    trace = trace_scenario(Scenario.parse(text), backend=backend)
    assert trace.error is None
    unshared = [e for e in trace.entries if e.op == "unshare"]
    assert [(e.off, e.access.outcome) for e in unshared] == [
        (0, Outcome.UNSHARE),
        (PAGE, Outcome.UNSHARE),
    ]
    assert unshared[0].folio is not None and unshared[0].folio.refcount == 2
    assert unshared[0].explain().startswith("line 5: P unshare A+0x0: unshare")
    assert unshared[0].as_json()["op"] == "unshare"
