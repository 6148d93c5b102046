"""``cowcore.explain``: one English line per access record, one phrase per code."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cowcore.explain import (
    OUTCOME_PHRASES,
    REASON_PHRASES,
    evidence,
    explain,
    orders_text,
    reason_text,
)
from cowcore.outcome import Access, AccessFlags, MapLevel, Outcome, Reason
from cowcore.protocol import FolioSnapshot, MmIdSlot


def _access(**fields: object) -> Access:
    base: dict[str, object] = {
        "phys": 7 << 12,
        "outcome": Outcome.NO_FAULT,
        "reason": Reason.NONE,
        "split_reason": Reason.NONE,
        "level": MapLevel.PTE,
        "order": 0,
        "faults": 0,
        "flags": AccessFlags(0),
        "error_code": 0,
        "orders_allowed": 0,
        "orders_fit": 0,
        "orders_empty": 0,
        "orders_failed": 0,
    }
    base.update(fields)
    return Access(**base)  # type: ignore[arg-type]


def _folio(
    order: int, ids: tuple[int, int], *, refcount: int = 2, shared: bool = True
) -> FolioSnapshot:
    n = 1 << order
    return FolioSnapshot(
        pfn=0x100,
        order=order,
        refcount=refcount,
        page_mapcounts=(1,) * n,
        large_mapcount=refcount,
        entire_mapcount=0,
        nr_pages_mapped=n,
        mm_ids=(MmIdSlot(ids[0], 1), MmIdSlot(ids[1], 1)),
        maybe_mapped_shared=shared,
        anon_exclusive=(False,) * n,
        serial=3,
    )


def test_every_outcome_and_reason_has_a_phrase() -> None:
    assert set(OUTCOME_PHRASES) == set(Outcome)
    assert set(REASON_PHRASES) == set(Reason)
    phrases = [*OUTCOME_PHRASES.values(), *REASON_PHRASES.values()]
    assert len(set(phrases)) == len(phrases), "two codes share a phrase"
    for phrase in phrases:
        assert phrase.strip()
        assert not re.fullmatch(r"[\d\s]+", phrase)


def test_every_reason_phrase_reaches_the_line() -> None:
    for reason in Reason:
        if reason is Reason.NONE:
            continue
        line = explain(
            _access(outcome=Outcome.COW_COPY, reason=reason, faults=1), write=True, who="P"
        )
        assert REASON_PHRASES[reason] in line


def test_cow_copy_of_a_shared_large_folio_names_the_mm_ids() -> None:
    a = _access(
        outcome=Outcome.COW_COPY,
        reason=Reason.LARGE_MAYBE_SHARED,
        faults=1,
        flags=AccessFlags.COPIED,
        error_code=7,
    )
    line = explain(a, write=True, who="P", where="A+0x3000", folio=_folio(4, (1, 2)), frame="f7")
    assert line == (
        "P write A+0x3000: COW copy: large folio (64K) maybe mapped shared "
        "(folio_maybe_mapped_shared()) [MM ids 1,2] -> f7"
    )


def test_reuse_names_the_one_owner() -> None:
    a = _access(outcome=Outcome.COW_REUSE, reason=Reason.LARGE_EXCLUSIVE, faults=1, order=3)
    line = explain(a, write=True, who="P", where="A+0x0", folio=_folio(3, (1, 0), shared=False))
    assert "COW reuse: large folio (32K) exclusively mapped" in line
    assert "[MM id 1]" in line
    assert line.endswith("-> pfn 0x7")


def test_extra_references_name_the_pins_and_the_swap_cache() -> None:
    """Why a write copied: the references that are not mappings, as far as the snapshot
    names them (a large folio's ``_pincount``, an order-0 folio's pin bias, the swap cache's
    slot); a plain GUP reference shows only in the refcount."""
    pinned = dataclasses.replace(_folio(4, (1, 0), refcount=19), pincount=3)
    assert reason_text(Reason.LARGE_EXTRA_REFS, pinned).endswith(
        "[refcount 19, large mapcount 19; _pincount 3]"
    )
    small = dataclasses.replace(_folio(0, (0, 0), refcount=1026), swap_slot=5)
    assert reason_text(Reason.SMALL_OTHER_REFS, small).endswith(
        "[refcount 1026; maybe DMA-pinned; in the swap cache (slot 5)]"
    )
    plain = _folio(0, (0, 0), refcount=2)
    assert reason_text(Reason.SMALL_OTHER_REFS, plain).endswith("[refcount 2]")
    assert not plain.maybe_dma_pinned and small.maybe_dma_pinned and pinned.maybe_dma_pinned


def test_zero_page_read() -> None:
    a = _access(
        outcome=Outcome.ZERO_PAGE,
        reason=Reason.PTE_NONE,
        faults=1,
        flags=AccessFlags.FIRST_TOUCH,
        error_code=4,
    )
    line = explain(a, write=False, who="C", where="B+0x0", frame="zero")
    assert line == "C read B+0x0: zero page: first touch, PTE none (do_anonymous_page) -> zero"


def test_new_folio_lists_the_order_evidence() -> None:
    a = _access(
        outcome=Outcome.ANON_ALLOC,
        reason=Reason.PTE_NONE,
        order=4,
        faults=1,
        flags=AccessFlags.FIRST_TOUCH | AccessFlags.ZEROED | AccessFlags.FELL_BACK,
        orders_allowed=(1 << 4) | (1 << 9),
        orders_fit=1 << 4,
        orders_empty=1 << 4,
        orders_failed=1 << 9,
    )
    line = explain(a, write=True, who="P", where="A+0x0", frame="f512")
    assert line.startswith("P write A+0x0: new 64K folio: first touch")
    assert line.endswith("(orders allowed 64K,2M; fit 64K; empty 64K; 2M failed) -> f512")


def test_refused_access_has_no_frame() -> None:
    a = _access(
        phys=None, outcome=Outcome.SEGFAULT, reason=Reason.SEGV_PROTECTION, level=MapLevel.NONE
    )
    line = explain(a, write=True, who="P", where="A+0x0")
    assert line == "P write A+0x0: SIGSEGV: the VMA forbids the access (SEGV_ACCERR, access_error)"


def test_split_then_copy_says_both() -> None:
    a = _access(
        outcome=Outcome.PMD_SPLIT_COPY,
        reason=Reason.SMALL_OTHER_REFS,
        split_reason=Reason.PMD_SHARED,
        faults=2,
        flags=AccessFlags.SPLIT | AccessFlags.COPIED,
    )
    line = explain(a, write=True)
    assert REASON_PHRASES[Reason.PMD_SHARED] in line
    assert line.index(REASON_PHRASES[Reason.PMD_SHARED]) < line.index(
        REASON_PHRASES[Reason.SMALL_OTHER_REFS]
    )


def test_no_fault_names_the_level() -> None:
    assert "(mapped by a huge PMD)" in explain(_access(level=MapLevel.PMD), write=False)


@pytest.mark.parametrize(
    ("mask", "text"), [(0, "none"), (1, "4K"), ((1 << 2) | (1 << 9), "16K,2M")]
)
def test_orders_text(mask: int, text: str) -> None:
    assert orders_text(mask) == text


def test_no_evidence_without_masks() -> None:
    assert evidence(_access(outcome=Outcome.ANON_ALLOC, reason=Reason.PTE_NONE)) == ""
