"""A real program's smaps against the simulator's (cowcore.native_smaps, smapsnative.c;
docs/accounting.md "Checked against a real kernel on the host").

The native runs happen on the machine under test: each is skipped with the precise reason
where the host cannot be compared (not Linux, no gcc, smaps unreadable, a THP knob the
simulator cannot mirror, a THP size the host does not enable, or a mismatch that
:func:`cowcore.native_smaps.explain` attributes to the host's background work). The other
tests check the pieces (sysfs parsing, the profile choice, the mismatch patterns, the
simulated arithmetic) anywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cowcore.native_smaps import (
    COMPARED,
    STEPS,
    Comparison,
    HostNotComparableError,
    HostThp,
    Pattern,
    Snapshot,
    compare,
    explain,
    host_profile,
    host_thp,
    simulate,
)

RUNS = {
    # 4K pages: the child copies pages 0..36; the parent then reuses 20..36 (the child no
    # longer maps them) and copies 37..60.
    "4k": Pattern(1024, "nohugepage", 0, 37, 20, 41),
    # No madvise: whatever the host's knobs give unadvised memory.
    "default": Pattern(1024, "none", 0, 37, 20, 41),
    # PMD THPs: the child's write splits its first PMD; the parent's writes cross the PMD
    # boundary at page 512 and split both of its PMDs (the folios are shared with the child).
    "pmd": Pattern(4096, "hugepage", 3, 37, 500, 30),
    # mTHP: a 1 MiB VMA cannot hold a 2M folio, so MADV_HUGEPAGE faults use the largest
    # smaller size the host enables.
    "mthp": Pattern(1024, "hugepage", 3, 37, 10, 40),
}

NEVER = HostThp("never", {"2M": "inherit"}, True)


def _requirement(run: str, thp: HostThp) -> str | None:
    """Why ``run`` cannot exercise what it is for on a host with ``thp``, or None."""
    sizes = thp.effective("hugepage")
    knobs = f"enabled={thp.enabled}, " + ", ".join(f"{s}={m}" for s, m in thp.sizes.items())
    if run == "pmd" and "2M" not in sizes:
        return f"the host gives MADV_HUGEPAGE memory no PMD THP ({knobs})"
    if run == "mthp" and not [s for s in sizes if s != "2M"]:
        return (
            f"the host enables no THP size below 2M for MADV_HUGEPAGE memory ({knobs}); "
            "setting hugepages-<N>kB/enabled needs root and changes every process on the "
            "host, so the test does not"
        )
    return None


@pytest.mark.parametrize("run", list(RUNS))
def test_real_program_smaps_match_the_simulator(run: str, backend: str) -> None:
    """Every compared kB line of the region's VMA, after every step, in both processes."""
    try:
        reason = _requirement(run, host_thp())
        if reason:
            pytest.skip(reason)
        cmp = compare(RUNS[run], backend)
    except HostNotComparableError as err:
        pytest.skip(str(err))
    diffs = cmp.diffs()
    if diffs:
        cause = explain(cmp)
        if cause is not None:
            pytest.skip(f"{cause}: {'; '.join(diffs)}")
    assert not diffs, f"profile {cmp.profile}, {cmp.thp}, host: {cmp.activity}"
    for host, sim in zip(cmp.host, cmp.simulated, strict=True):
        # The host's rollup also counts libc, the stack and the heap: it holds the region.
        for key in ("Rss", "Pss", "Private_Dirty", "Anonymous", "AnonHugePages"):
            assert host.rollup[key] >= host.vma[key], (host.step, host.who, key)
        # The simulator's rollup is over the region's one VMA: the same lines.
        assert {k: sim.rollup[k] for k in COMPARED} == {k: sim.vma[k] for k in COMPARED}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_host_thp_reads_the_selected_knobs(tmp_path: Path) -> None:
    _write(tmp_path / "enabled", "always [madvise] never\n")
    _write(tmp_path / "use_zero_page", "0\n")
    _write(tmp_path / "hugepages-2048kB/enabled", "always [inherit] madvise never\n")
    _write(tmp_path / "hugepages-64kB/enabled", "[always] inherit madvise never\n")
    _write(tmp_path / "hugepages-1024kB/enabled", "always inherit madvise [never]\n")
    # 6.18 has an 8kB directory for shmem only: no `enabled`, ignored.
    _write(tmp_path / "hugepages-8kB/shmem_enabled", "always inherit [never]\n")
    thp = host_thp(tmp_path)
    assert thp == HostThp("madvise", {"1M": "never", "2M": "inherit", "64K": "always"}, False)
    assert thp.effective("hugepage") == ["2M", "64K"]
    assert thp.effective("none") == ["64K"]
    assert thp.effective("nohugepage") == []


def test_host_thp_refuses_what_the_simulator_cannot_mirror(tmp_path: Path) -> None:
    _write(tmp_path / "enabled", "always [madvise] never\n")
    _write(tmp_path / "hugepages-8kB/enabled", "[always] inherit madvise never\n")
    with pytest.raises(HostNotComparableError, match="no 8K THP size"):
        host_thp(tmp_path)
    _write(tmp_path / "hugepages-8kB/enabled", "always inherit madvise [never]\n")
    _write(tmp_path / "enabled", "[sometimes] never\n")
    with pytest.raises(HostNotComparableError, match="sometimes"):
        host_thp(tmp_path)


def test_host_without_thp_is_never(tmp_path: Path) -> None:
    thp = host_thp(tmp_path / "absent")
    assert thp.enabled == "never" and thp.effective("hugepage") == []


@pytest.mark.parametrize(
    ("release", "profile"),
    [
        ("6.12.48+deb13-amd64", "6.12"),
        ("6.14.0", "6.12"),
        ("6.15.1", "6.15"),
        ("6.18.44-fc-v1147", "6.15"),
        ("7.2.0-rc1", "6.15"),
    ],
)
def test_host_profile_follows_the_release(release: str, profile: str) -> None:
    assert host_profile(release) == profile


def test_simulated_steps_are_the_patterns_arithmetic(backend: str) -> None:
    """4K pages: after the child's writes each process has ``child_pages`` private pages
    and shares the rest; after the parent's, every page either wrote is private to both."""
    pat = RUNS["4k"]
    snaps, stats = simulate(pat, "6.15", NEVER, backend)
    assert stats == {"thp_fault_fallback": 0, "thp_split_pmd": 0, "thp_collapse_alloc": 0}
    assert [(s.step, s.who) for s in snaps] == [
        (STEPS[0], "parent"),
        (STEPS[1], "parent"),
        (STEPS[1], "child"),
        (STEPS[2], "parent"),
        (STEPS[2], "child"),
        (STEPS[3], "parent"),
    ]
    total = pat.kib // 4
    written = set(range(pat.child_first, pat.child_first + pat.child_pages))
    for snap in snaps:
        if snap.step == "parent_wrote":
            written |= set(range(pat.parent_first, pat.parent_first + pat.parent_pages))
        private = total if snap.step in {"written", "child_exited"} else len(written)
        shared = total - private
        assert snap.vma["Rss"] == total * 4
        assert snap.vma["Private_Dirty"] == private * 4, snap
        assert snap.vma["Shared_Dirty"] == shared * 4, snap
        assert snap.vma["Pss"] == private * 4 + shared * 2, snap


def _cmp(
    host_ahp: list[int],
    sim_ahp: list[int],
    rss: tuple[int, int] = (4096, 4096),
    grew: dict[str, int] | None = None,
    sim_splits: int = 0,
) -> Comparison:
    """A comparison of a PMD run whose snapshots differ in the given lines only."""

    def snaps(ahp: list[int], rss: int) -> list[Snapshot]:
        return [
            Snapshot(
                step, "parent", {**dict.fromkeys(COMPARED, 0), "Rss": rss, "AnonHugePages": a}, {}
            )
            for step, a in zip(STEPS, ahp, strict=True)
        ]

    return Comparison(
        RUNS["pmd"],
        "6.15",
        NEVER,
        snaps(host_ahp, rss[0]),
        snaps(sim_ahp, rss[1]),
        ["DAMON 0/0 on (paddr; schemes: pageout)"],
        {"thp_fault_fallback": 0, "thp_split_pmd": 0, "thp_collapse_alloc": 0, **(grew or {})},
        {"thp_fault_fallback": 0, "thp_split_pmd": sim_splits, "thp_collapse_alloc": 0},
    )


def test_explain_names_the_host_side_patterns_with_their_evidence() -> None:
    full, half = [4096] * 4, [2048] * 4
    assert _cmp(full, full).diffs() == []
    assert explain(_cmp(full, full)) is None
    fallback = explain(_cmp(half, full, grew={"thp_fault_fallback": 1}))
    assert fallback is not None and "fell back" in fallback
    later = [4096, 2048, 2048, 2048]
    split = explain(_cmp(later, full, grew={"thp_split_pmd": 3}, sim_splits=2))
    assert split is not None and "split behind" in split and "pageout" in split
    collapse = explain(_cmp(full, later, grew={"thp_collapse_alloc": 1}))
    assert collapse is not None and "khugepaged" in collapse


def test_explain_leaves_the_rest_to_fail() -> None:
    full, half, later = [4096] * 4, [2048] * 4, [4096, 2048, 2048, 2048]
    # The same shapes without their evidence in /proc/vmstat: the simulator's fault.
    assert explain(_cmp(half, full)) is None
    assert explain(_cmp(later, full, grew={"thp_split_pmd": 2}, sim_splits=2)) is None
    assert explain(_cmp(full, later)) is None
    # Anything beyond AnonHugePages is the accounting under test.
    assert explain(_cmp(half, full, rss=(4092, 4096), grew={"thp_fault_fallback": 1})) is None
