"""One English line per access: what the kernel did and which condition decided it.

:func:`explain` turns an :class:`~cowcore.outcome.Access` record (and, when the caller has
them, the process's name, the address as ``MAPPING+OFFSET`` and the folio as it was *before*
the access) into a line such as::

    P write A+0x3000: COW copy: large folio (64K) maybe mapped shared (MM ids 1,2) -> f7
    C read B+0x0: zero page: first touch, PTE none (do_anonymous_page) -> zero
    P write A+0x0: new 64K folio: first touch, PTE none (do_anonymous_page)
        (orders allowed 64K,2M; fit 64K; empty 64K; 2M failed) -> f512

Each :class:`~cowcore.outcome.Outcome` and each :class:`~cowcore.outcome.Reason` has one
phrase (:data:`OUTCOME_PHRASES`, :data:`REASON_PHRASES`) that names the kernel condition
(``PageAnonExclusive``, ``folio_maybe_mapped_shared()``, ...), never a bare code number. The
folio snapshot, when given, fills in what the condition looked at: the folio's size, its
refcount and large mapcount, the MM ids of its two owner slots (``folio->_mm_id``), and
its pins and swap-cache slot where extra references are why a write copied.
"""

from __future__ import annotations

from cowcore.outcome import Access, AccessFlags, MapLevel, Outcome, Reason
from cowcore.protocol import FolioSnapshot
from cowcore.units import format_size

PAGE = 4096

OUTCOME_PHRASES: dict[Outcome, str] = {
    Outcome.NO_FAULT: "no fault",
    Outcome.ANON_ALLOC: "new {size} folio",
    Outcome.ZERO_PAGE: "zero page",
    Outcome.HUGE_ZERO_PAGE: "huge zero page",
    Outcome.COW_REUSE: "COW reuse",
    Outcome.COW_COPY: "COW copy",
    Outcome.PMD_REUSE: "huge PMD reuse",
    Outcome.PMD_SPLIT_COPY: "huge PMD split, COW copy",
    Outcome.UNSHARE: "unshare (FAULT_FLAG_UNSHARE)",
    Outcome.SEGFAULT: "SIGSEGV",
    Outcome.OUT_OF_MEMORY: "out of memory (VM_FAULT_OOM), nothing changed",
    Outcome.SWAP_IN: "swap-in (do_swap_page) of a {size} folio",
}
"""What the kernel did, one phrase per :class:`Outcome` (``{size}``: the folio's size)."""

REASON_PHRASES: dict[Reason, str] = {
    Reason.NONE: "already mapped with the access allowed",
    Reason.PTE_NONE: "first touch, PTE none (do_anonymous_page)",
    Reason.PMD_NONE: "first touch, PMD none (do_huge_pmd_anonymous_page)",
    Reason.ANON_EXCLUSIVE: "page is PageAnonExclusive",
    Reason.SMALL_SOLE_REF: "small folio, this mapping its only reference (wp_can_reuse_anon_folio)",
    Reason.SMALL_OTHER_REFS: "small folio with other references (wp_can_reuse_anon_folio)",
    Reason.LARGE_NO_PTE_REUSE: "large folio before 6.15: a PTE-mapped large folio is never reused",
    Reason.LARGE_LAST_MAPPED: "large folio, last page mapped (folio_large_mapcount() <= 1)",
    Reason.LARGE_MAYBE_SHARED: "large folio maybe mapped shared (folio_maybe_mapped_shared())",
    Reason.LARGE_EXTRA_REFS: "large folio with extra references "
    "(folio_ref_count() != folio_large_mapcount())",
    Reason.LARGE_EXCLUSIVE: "large folio exclusively mapped by this mm "
    "(__wp_can_reuse_large_anon_folio)",
    Reason.ZERO_PAGE: "write to the zero page (vm_normal_page() is NULL)",
    Reason.HUGE_ZERO_NEW_THP: "write to the huge zero page, new THP (do_huge_zero_wp_pmd)",
    Reason.HUGE_ZERO_FALLBACK: "write to the huge zero page without a new THP: PMD split",
    Reason.PMD_ANON_EXCLUSIVE: "THP head page is PageAnonExclusive (do_huge_pmd_wp_page)",
    Reason.PMD_SOLE_REF: "THP's only reference is this PMD (do_huge_pmd_wp_page)",
    Reason.PMD_SHARED: "THP shared: PMD split (__split_huge_pmd)",
    Reason.SEGV_UNMAPPED: "no VMA covers the address (SEGV_MAPERR)",
    Reason.SEGV_PROTECTION: "the VMA forbids the access (SEGV_ACCERR, access_error)",
    Reason.LARGE_MEMO_EXCLUSIVE: "large folio remembered exclusive to this mm by an earlier "
    "fault (policy cow_reuse_remember_exclusive: no mapcount/refcount checks)",
    Reason.LARGE_EXACT_EXCLUSIVE: "large folio maybe mapped shared by the two MM-id slots "
    "but mapped only by this mm (policy mm_id_exact)",
    Reason.SWAP_FRESH: "read into a new folio outside the swap cache, certainly exclusive "
    "(a slot of count 1 on a synchronous device)",
    Reason.SWAP_EXCLUSIVE: "the swap entry's exclusive marker (pte_swp_exclusive())",
    Reason.SWAP_SOLE_REF: "the folio's only reference is this fault once the swap cache went "
    "(should_try_to_free_swap)",
    Reason.SWAP_MAYBE_SHARED: "maybe shared: mapped read-only (no exclusive marker, other "
    "references)",
}
"""Why, one phrase per :class:`Reason`, naming the kernel condition that decided."""

_LARGE = frozenset(
    {
        Reason.LARGE_NO_PTE_REUSE,
        Reason.LARGE_LAST_MAPPED,
        Reason.LARGE_MAYBE_SHARED,
        Reason.LARGE_EXTRA_REFS,
        Reason.LARGE_EXCLUSIVE,
        Reason.LARGE_MEMO_EXCLUSIVE,
        Reason.LARGE_EXACT_EXCLUSIVE,
    }
)


def order_size(order: int) -> str:
    """The size of an order-``order`` folio: 4 -> ``"64K"``, 9 -> ``"2M"``."""
    return format_size(PAGE << order)


def orders_text(mask: int) -> str:
    """A mask of orders (bit k = order k) as sizes, lowest first: ``"64K,2M"``; ``"none"``."""
    sizes = [order_size(k) for k in range(16) if mask >> k & 1]
    return ",".join(sizes) if sizes else "none"


def evidence(access: Access) -> str:
    """The order-choice evidence of a not-present fault (``alloc_anon_folio``,
    ``thp_vma_allowable_orders``, ``thp_vma_suitable_orders``, the ``pte_range_none``
    loop), or ``""`` when the fault had none (reads, faults with every mTHP size off)."""
    if not access.orders_allowed and not access.orders_failed:
        return ""
    parts = [
        f"orders allowed {orders_text(access.orders_allowed)}",
        f"fit {orders_text(access.orders_fit)}",
        f"empty {orders_text(access.orders_empty)}",
    ]
    if access.orders_failed:
        parts.append(f"{orders_text(access.orders_failed)} failed")
    return "(" + "; ".join(parts) + ")"


def _mm_ids(folio: FolioSnapshot) -> str:
    ids = [str(slot.mm_id) for slot in folio.mm_ids if slot.mm_id]
    if not ids:
        return ""
    return ("MM id " if len(ids) == 1 else "MM ids ") + ",".join(ids)


def _not_mappings(folio: FolioSnapshot) -> list[str]:
    """The references of ``folio`` that are not mappings and that the snapshot can name: its
    pins and its swap cache's (a GUP reference, ``ref``, has no count of its own)."""
    parts: list[str] = []
    if folio.maybe_dma_pinned:
        parts.append(f"_pincount {folio.pincount}" if folio.order else "maybe DMA-pinned")
    if folio.swap_slot is not None:
        parts.append(f"in the swap cache (slot {folio.swap_slot})")
    return parts


def reason_text(reason: Reason, folio: FolioSnapshot | None = None) -> str:
    """:data:`REASON_PHRASES` of ``reason``, with what the condition looked at in ``folio``
    (the folio *before* the access) when given: its size, refcount, mapcounts, MM ids, and the
    references that are not mappings (pins, the swap cache) where they are why it was copied."""
    phrase = REASON_PHRASES[reason]
    if folio is None:
        return phrase
    size = order_size(folio.order)
    if reason in _LARGE:
        head, _, tail = phrase.partition("large folio")
        detail: list[str] = []
        if reason in (
            Reason.LARGE_MAYBE_SHARED,
            Reason.LARGE_EXCLUSIVE,
            Reason.LARGE_EXACT_EXCLUSIVE,
        ):
            ids = _mm_ids(folio)
            if ids:
                detail.append(ids)
        elif reason is Reason.LARGE_EXTRA_REFS:
            detail.append(f"refcount {folio.refcount}, large mapcount {folio.large_mapcount}")
            detail.extend(_not_mappings(folio))
        elif reason is Reason.LARGE_LAST_MAPPED:
            detail.append(f"large mapcount {folio.large_mapcount}")
        extra = f" [{'; '.join(detail)}]" if detail else ""
        return f"{head}large folio ({size}){tail}{extra}"
    if reason is Reason.SMALL_OTHER_REFS:
        return f"{phrase} [{'; '.join([f'refcount {folio.refcount}', *_not_mappings(folio)])}]"
    if reason is Reason.SMALL_SOLE_REF:
        return f"{phrase} [refcount {folio.refcount}]"
    if reason in (Reason.PMD_SHARED, Reason.PMD_SOLE_REF):
        return f"{phrase} [refcount {folio.refcount}, entire mapcount {folio.entire_mapcount}]"
    return phrase


def outcome_text(access: Access) -> str:
    """:data:`OUTCOME_PHRASES` of the access's outcome (with the new folio's size)."""
    return OUTCOME_PHRASES[access.outcome].format(size=order_size(access.order))


def frame_text(access: Access) -> str:
    """The frame the access landed in when the caller has no name for it: ``pfn 0x1a3``
    (``zero``/``hzero`` for the zero pages are the caller's to give: only it knows)."""
    pfn = access.pfn
    return "-" if pfn is None else f"pfn {pfn:#x}"


def explain(
    access: Access,
    *,
    write: bool,
    who: str = "",
    where: str = "",
    folio: FolioSnapshot | None = None,
    frame: str | None = None,
    op: str | None = None,
) -> str:
    """One English line for one access.

    Args:
        access: the record.
        write: whether it was a store (the record does not say when no fault was taken).
        who: the process's name or label (``P``, ``pid 4``), if any.
        where: the address as the caller names it (``A+0x3000``, ``0x7f..``), if any.
        folio: the snapshot of the folio the page was in *before* the access
            (``m.folio(pfn)``), which names the counts and MM ids the decision looked at.
        frame: the name of the frame the access landed in (``f7``, ``zero``); by default
            its pfn.
        op: the operation's name when it is neither a read nor a write (``unshare``: the
            record of one page of ``Process.unshare``).

    Returns:
        ``"WHO OP WHERE: OUTCOME: REASON [EVIDENCE] -> FRAME"``, shorter when the record
        has nothing to say (no reason for a fault-free access, no frame for a refused one).
    """
    op = op or ("write" if write else "read")
    head = " ".join(part for part in (who, op, where) if part)
    text = f"{head}: {outcome_text(access)}"
    if access.outcome is Outcome.NO_FAULT:
        level = {MapLevel.PMD: "huge PMD", MapLevel.PTE: "PTE"}.get(access.level, "entry")
        text += f" (mapped by a {level})"
    elif access.split_reason is not Reason.NONE and access.split_reason is not access.reason:
        # two faults: the split's reason, then the retried PTE fault's
        split = REASON_PHRASES[access.split_reason]
        text += f": {split}; then {reason_text(access.reason, folio)}"
    else:
        text += f": {reason_text(access.reason, folio)}"
    ev = evidence(access)
    if ev:
        text += f" {ev}"
    if AccessFlags.FELL_BACK in access.flags and not access.orders_failed:
        text += " (fell back)"
    if AccessFlags.FAULT_AROUND in access.flags:
        text += " (fault-around: the folio's other PTEs made writable)"
    if access.phys is not None:
        text += f" -> {frame if frame is not None else frame_text(access)}"
    return text
