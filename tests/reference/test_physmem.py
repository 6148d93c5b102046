"""The buddy allocator's determinism contract (DESIGN.md, Physical memory)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cowcore.errors import OutOfMemoryError
from cowcore.reference.physmem import MAX_ORDER, BuddyAllocator


def test_lowest_block_of_smallest_order_first() -> None:
    b = BuddyAllocator(2048)
    assert b.alloc(0) == 0
    assert b.alloc(9) == 512  # order-9 block split off the first 4M block
    assert b.alloc(0) == 1  # the lower halves stay in the small free lists
    assert b.alloc(1) == 2
    assert b.alloc(2) == 4


def test_free_merges_buddies_back() -> None:
    b = BuddyAllocator(1024)
    pfns = [b.alloc(0) for _ in range(4)]
    assert pfns == [0, 1, 2, 3]
    for p in pfns:
        b.free(p, 0)
    assert b.free_count == 1024
    assert b.alloc(MAX_ORDER) == 0  # fully merged back into one 4M block


def test_out_of_memory_names_the_order() -> None:
    b = BuddyAllocator(512)
    b.alloc(9)
    with pytest.raises(OutOfMemoryError, match="order 0"):
        b.alloc(0)


def test_fragmentation_blocks_large_orders() -> None:
    b = BuddyAllocator(512)
    pfns = [b.alloc(0) for _ in range(512)]
    for p in pfns[::2]:
        b.free(p, 0)
    assert b.free_count == 256
    assert not b.can_allocate(1)
    with pytest.raises(OutOfMemoryError):
        b.alloc(1)


def test_size_must_be_a_multiple_of_512() -> None:
    with pytest.raises(ValueError, match="multiple of 512"):
        BuddyAllocator(1000)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 4)), max_size=60))
def test_alloc_free_conserves_frames(ops: list[tuple[bool, int]]) -> None:
    b = BuddyAllocator(1024)
    held: list[tuple[int, int]] = []
    for do_alloc, order in ops:
        if do_alloc or not held:
            try:
                pfn = b.alloc(order)
            except OutOfMemoryError:
                continue
            assert pfn % (1 << order) == 0, "blocks are naturally aligned"
            for other, o in held:
                assert pfn + (1 << order) <= other or other + (1 << o) <= pfn, "overlap"
            held.append((pfn, order))
        else:
            pfn, o = held.pop(order % len(held))
            b.free(pfn, o)
        assert b.free_count + sum(1 << o for _, o in held) == 1024
    for pfn, o in held:
        b.free(pfn, o)
    assert b.alloc(MAX_ORDER) == 0
