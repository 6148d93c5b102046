"""Hand-derived tests of drop_caches and the deferred-split shrinker (issue 16), on both
backends. Counts follow from the rules in DESIGN.md/CHANGELOG: a split keeps every frame,
each page becomes an order-0 folio whose refcount and mapcount are its PTE mappings, unmapped
pages are freed, and a reference beyond the mappings makes can_split_folio refuse."""

from __future__ import annotations

import pytest

import cowcore

K = 4096


def _pfn(p: cowcore.Process, addr: int) -> int:
    pfn = p.translate(addr).pfn
    assert pfn is not None
    return pfn


@pytest.fixture(params=["rust", "reference"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _machine(backend: str, profile: str = "6.12") -> tuple[cowcore.Machine, cowcore.Process, int]:
    m = cowcore.Machine(memory=64 << 20, backend=backend, kernel=profile)
    m.thp.sizes["64K"] = "always"
    p = m.init
    a = p.mmap(2 << 20)
    p.write(a, 64 * 1024, 1)  # one 64K folio, all 16 pages non-zero
    return m, p, a


def test_partial_64k_folio_is_split_and_its_unmapped_pages_freed(backend: str) -> None:
    m, p, a = _machine(backend)
    frames = [_pfn(p, a + i * K) for i in range(16)]
    free = m.free_frames()
    p.madvise(a, 4 * K, "dontneed")  # 12 of 16 pages stay mapped: partially mapped
    m.drop_caches()
    s = m.stats()
    assert s.split["64K"] == 1 and s.nr_anon["64K"] == 0
    assert s.nr_anon_partially_mapped["64K"] == 0
    for i in range(4, 16):
        f = m.folio(frames[i])
        assert f.pfn == frames[i] and f.refcount == 1 and f.order == 0  # same frame
    assert m.free_frames() == free + 4  # the 4 dropped pages, freed only by the split
    m.check()


def test_split_after_fork_lets_the_parent_reuse(backend: str) -> None:
    m, p, a = _machine(backend)
    p.madvise(a + 12 * K, 4 * K, "dontneed")
    c = p.fork()
    m.drop_caches()
    assert m.folio(_pfn(p, a)).refcount == 2  # mapped by P and C
    c.exit()
    before = _pfn(p, a + K)
    p.write(a + K, K, 2)  # an order-0 folio mapped once: reused, not copied (6.12)
    assert _pfn(p, a + K) == before
    assert m.stats().pgreuse == 1
    m.check()


def test_a_ref_blocks_the_split(backend: str) -> None:
    m, p, a = _machine(backend)
    p.ref(a, K)
    p.madvise(a + 8 * K, 8 * K, "dontneed")
    m.drop_caches()
    s = m.stats()
    assert s.split["64K"] == 0 and s.split_failed["64K"] == 1
    assert m.folio(_pfn(p, a)).order == 4  # still whole, still queued
    p.unref(a, K)
    m.drop_caches()
    assert m.stats().split["64K"] == 1
    m.check()


def test_trace_shows_the_split_and_the_refusal(backend: str) -> None:
    """``cowcore trace`` reports ``drop_caches``' splits and refusals with the line."""
    from cowcore.outcome import EventRecord  # noqa: PLC0415
    from cowcore.scenario import Scenario  # noqa: PLC0415
    from cowcore.trace import format_event, trace_scenario  # noqa: PLC0415

    text = "\n".join(
        [
            "kernel 6.12",
            "thp size 64K always",
            "P mmap A 2M",
            "P write A 0 64K 1",
            "P ref A 0 4K",
            "P madvise A 32K 32K dontneed",
            "drop_caches",
            "P unref A 0 4K",
            "drop_caches",
        ]
    )
    lines: list[str] = []

    def on_event(line: int, e: EventRecord) -> None:
        lines.append(format_event(line, e))

    trace_scenario(Scenario.parse(text), backend=backend, on_event=on_event)
    shown = [x for x in lines if "split" in x]
    assert len(shown) == 2
    assert shown[0].startswith("line 7: split refused: the 64K folio at frame ")
    assert shown[1].startswith("line 9: split: the 64K folio at frame ")
    assert "16 order-0 folios" in shown[1]
