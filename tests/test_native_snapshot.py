"""The snapshot workload on the host's kernel against the simulator (cowcore.native_snapshot,
snapshotnative.c; docs/workloads.md "Checked against the host's kernel").

The native runs happen on the machine under test: each is skipped with the precise reason
where the host cannot be compared (not Linux, no gcc, smaps unreadable, a base page other
than 4 KiB, or a difference that :func:`cowcore.native_snapshot.explain` attributes to the
host paging the heap out, with its evidence). The other tests check the pieces anywhere.
"""

from __future__ import annotations

import subprocess

import pytest

from cowcore.errors import InvalidArgumentError
from cowcore.kernel.build import BuildError, build_c, package_source
from cowcore.native_smaps import CFLAGS, HostNotComparableError, check_host
from cowcore.native_snapshot import (
    Reading,
    SnapshotComparison,
    _resolve,
    compare,
    explain,
    main,
    plan_text,
    run_native,
    simulate,
)
from cowcore.workloads import get
from cowcore.workloads.snapshot import steps

RUNS: dict[str, dict[str, str | int | float]] = {
    # The workload's defaults on a smaller heap: one-page values at uniform keys.
    "uniform": {"heap": "32M", "samples": 16, "writes_per_s": 40000.0},
    # Hot keys: many writes land on pages already copied (reuses in the parent).
    "gaussian": {"heap": "16M", "pattern": "gaussian", "sigma": 0.02, "writes_per_s": 80000.0},
    # Values that straddle page boundaries, written in key order.
    "sequential": {
        "heap": "16M",
        "pattern": "sequential",
        "value_size": 3000,
        "writes_per_s": 40000.0,
        "seed": 3,
    },
}


@pytest.mark.parametrize("run", list(RUNS))
def test_real_child_private_dirty_matches_the_simulator(run: str, backend: str) -> None:
    """The child's Private_Dirty of the heap after every step, host and simulator equal."""
    try:
        cmp = compare(RUNS[run], backend)
    except HostNotComparableError as err:
        pytest.skip(str(err))
    diffs = cmp.diffs()
    if diffs:
        cause = explain(cmp)
        if cause is not None:
            pytest.skip(f"{cause}: {'; '.join(diffs)}")
    assert not diffs, f"kernel {cmp.release}, profile {cmp.params['kernel']}: {cmp.activity}"
    # The run exercises what it is for: the child's private share grows as the parent copies.
    assert len(cmp.host) == cmp.params["samples"]
    assert 0 < cmp.simulated[0] <= cmp.simulated[-1] < cmp.heap_kb
    for reading in cmp.host:
        assert reading.vma["Rss"] == reading.vma["Size"] == cmp.heap_kb
        assert reading.vma["AnonHugePages"] == 0  # MADV_NOHUGEPAGE: 4 KiB pages


def test_the_simulated_readings_are_the_distinct_pages_written() -> None:
    """4 KiB pages: after each step the child holds alone every page the parent has written
    so far (its first write to a page copies it; later ones reuse the copy)."""
    params = _resolve(RUNS["gaussian"], "6.15")
    seen: set[int] = set()
    expected = []
    for st in steps(params):
        if st.alive:
            seen.update(st.pages.tolist())
            expected.append(len(seen) * 4)
    assert simulate(params) == expected
    writes = sum(st.writes for st in steps(params) if st.alive)
    assert len(seen) < writes  # hot keys: some writes hit a page already copied


def test_plan_text_is_the_programs_input() -> None:
    params = _resolve(
        {
            "heap": "64K",
            "value_size": 4096,
            "pattern": "sequential",
            "samples": 2,
            "scan_mb_s": 1 / 16,
            "writes_per_s": 32.0,
            "seed": 1,
        },
        "6.15",
    )
    plan = [st for st in steps(params) if st.alive]
    # 16 pages scanned in 1 s: 32 writes of whole pages from a random key on, 16 a step.
    text = plan_text(plan, 16).splitlines()
    assert text[0] == "16 2"
    first = plan[0].pages.tolist()
    assert text[1] == "0 8 16 " + " ".join(map(str, first))
    assert first == [(first[0] + i) % 16 for i in range(16)]
    assert text[2].startswith("8 16 16 ")


def test_the_comparison_sets_the_machine_itself() -> None:
    with pytest.raises(InvalidArgumentError, match=r"sets thp\.64K"):
        _resolve({"thp.64K": "always"}, "6.15")
    with pytest.raises(InvalidArgumentError, match="sets kernel"):
        _resolve({"kernel": "6.12"}, "6.15")
    assert _resolve({}, "6.12")["thp.enabled"] == "never"


def test_the_program_without_writes_and_with_a_bad_plan() -> None:
    params = _resolve({"heap": "64K", "samples": 2, "writes_per_s": 0.0}, "6.15")
    try:
        readings, _ = run_native(params)
        exe = build_c(package_source("cowcore", "snapshotnative.c"), "snapshotnative", CFLAGS)
    except (HostNotComparableError, BuildError) as err:
        pytest.skip(str(err))
    # No writes: the child shares every page, none is private to it.
    assert [(r.step, r.vma["Private_Dirty"], r.vma["Rss"]) for r in readings] == [
        (0, 0, 64),
        (1, 0, 64),
    ]
    for plan, message in [
        ("4 1\n0 4 1 4\n", "page index"),
        ("4 1\n3 2 0\n", "scan range"),
        ("4 2\n0 4 0\n", "expected a number"),
    ]:
        proc = subprocess.run([str(exe)], input=plan, capture_output=True, text=True, check=False)
        assert proc.returncode == 1 and message in proc.stderr, (plan, proc.stderr)


def _cmp(host: list[int], sim: list[int], rss: int = 64, pswpout: int = 0) -> SnapshotComparison:
    readings = [
        Reading(i, {"Size": 64, "Rss": rss, "Private_Dirty": kb}) for i, kb in enumerate(host)
    ]
    return SnapshotComparison(
        dict(get("snapshot").defaults),
        "6.18",
        readings,
        sim,
        ["DAMON 0/0 on"],
        {"pswpout": pswpout},
    )


def test_explain_names_a_page_out_only_with_its_evidence() -> None:
    assert _cmp([4, 8], [4, 8]).diffs() == []
    assert explain(_cmp([4, 8], [4, 8])) is None
    assert _cmp([4, 4], [4, 8]).diffs() == ["step 1: host 4 kB != simulator 8 kB"]
    paged = explain(_cmp([4, 4], [4, 8], rss=60, pswpout=1))
    assert paged is not None and "paged heap pages out" in paged and "pswpout +1" in paged
    # The same shape without the evidence, or with every page resident: the simulator's.
    assert explain(_cmp([4, 4], [4, 8], rss=60)) is None
    assert explain(_cmp([4, 4], [4, 8], pswpout=1)) is None


def test_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-p", "thp.64K=always"]) == 2
    assert "sets thp.64K itself" in capsys.readouterr().err
    try:
        check_host()
    except HostNotComparableError as err:
        pytest.skip(str(err))
    args = ["-p", "heap=4M", "-p", "samples=3", "-p", "writes_per_s=20000.0"]
    status = main(args)
    out = capsys.readouterr()
    if status == 2:  # no gcc, a base page other than 4K: the comparison's own reason
        pytest.skip(out.err.strip())
    lines = out.out.splitlines()
    assert status == 0, out.out
    assert lines[2].split() == ["step", "host", "Private_Dirty", "(kB)", "simulator", "(kB)"]
    rows = [line.split() for line in lines[3:6]]
    assert [r[0] for r in rows] == ["0", "1", "2"] and all(r[1] == r[2] for r in rows)
    assert lines[6].startswith("3/3 readings equal")
