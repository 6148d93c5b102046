"""The workloads (cowcore.workloads, docs/workloads.md): small cases whose numbers follow from
the kernel's rules, determinism, both backends agreeing, and parameter errors."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pytest

import cowcore
from cowcore.cli import main
from cowcore.errors import InvalidArgumentError
from cowcore.workloads import REGISTRY, Scalar, WorkloadResult, get
from cowcore.workloads.snapshot import keys_to_pages


def run(name: str, **params: Scalar) -> WorkloadResult:
    workload = get(name)
    return workload.run(workload.resolve(params))


SMALL: Mapping[str, dict[str, Scalar]] = {
    "snapshot": {"heap": "4M", "samples": 8, "writes_per_s": 20000.0, "after_s": 0.01},
    "prefork": {"heap": "2M", "workers": 3, "refork": True},
    "fork_exec": {"size": "1M", "write_fraction": 0.5},
    "micro": {"size": "4M", "mode": "reuse-byte"},
    "anon_cow_seq": {"size": "2M", "nr_task": 3, "interleave": 100},
    "anon_cow_rand": {"size": "2M", "nr_task": 3, "interleave": 100},
}
"""A small case of every workload (each test below covers every registered one)."""


def test_every_workload_has_a_small_case() -> None:
    """Every workload the package registers (tests may register their own, as the sweep
    tests do: those are not the package's)."""
    shipped = {
        name for name, w in REGISTRY.items() if w.run.__module__.startswith("cowcore.workloads")
    }
    assert set(SMALL) == shipped


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("thp", ["4K", "64K", "2M"])
def test_backends_agree(name: str, thp: str, profile: str) -> None:
    if "rust" not in cowcore.BACKENDS:
        pytest.skip("the native extension is not built")
    knobs: dict[str, Scalar] = {} if thp == "4K" else {f"thp.{thp}": "always"}
    if name == "micro":
        knobs = {"folio": thp}
    results = [
        run(name, **SMALL[name], **knobs, kernel=profile, backend=backend)
        for backend in ("rust", "reference")
    ]
    assert results[0].metrics == results[1].metrics
    assert results[0].timeline == results[1].timeline


@pytest.mark.parametrize("name", sorted(SMALL))
def test_same_seed_same_result(name: str, backend: str) -> None:
    first = run(name, **SMALL[name], backend=backend, **{"thp.64K": "always"})
    again = run(name, **SMALL[name], backend=backend, **{"thp.64K": "always"})
    assert first == again
    assert first.workload == name
    assert set(first.metrics) == set(get(name).metrics)
    row = first.row()
    assert row["workload"] == name and row["backend"] == backend
    if first.timeline:
        keys = list(first.timeline[0])
        assert keys[0] == "step"
        assert all(list(r) == keys for r in first.timeline)


def test_the_seed_matters() -> None:
    a = run("snapshot", heap="4M", writes_per_s=20000.0, seed=1)
    b = run("snapshot", heap="4M", writes_per_s=20000.0, seed=2)
    assert a.metrics["parent_writes"] == b.metrics["parent_writes"]
    assert a.metrics != b.metrics


# --- snapshot ---------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["uniform", "gaussian", "sequential"])
def test_snapshot_cow_size_is_the_pages_the_parent_copied(pattern: str, backend: str) -> None:
    """With 4K pages every parent copy leaves the child the only mapper of the original,
    which smaps then counts as the child's Private_Dirty (one page each)."""
    r = run(
        "snapshot", heap="8M", pattern=pattern, writes_per_s=50000.0, samples=5, backend=backend
    ).metrics
    assert int(r["copies"]) > 0 and r["reuses"] == 0
    assert r["current_cow_size_kb"] == 4 * r["copies"]
    assert r["current_cow_peak_kb"] == r["current_cow_size_kb"]  # it only grows


def test_snapshot_sequential_whole_pages_copy_each_write() -> None:
    """Sequential 4 KiB values: each write is a new page until the key space wraps."""
    r = run("snapshot", heap="8M", value_size=4096, pattern="sequential", writes_per_s=10000.0)
    m = r.metrics
    writes = round(10000 * (8 / 256))  # 8 MiB at 256 MiB/s of scan
    assert m["parent_writes"] == writes == m["pages_written"] == m["copies"]
    assert m["current_cow_size_kb"] == 4 * writes


def test_snapshot_without_writes_costs_nothing() -> None:
    m = run("snapshot", heap="4M", writes_per_s=0.0).metrics
    assert m["copies"] == m["faults"] == m["current_cow_peak_kb"] == 0


def test_snapshot_value_spanning_pages() -> None:
    """A 6000-byte value at key 0 covers pages 0 and 1; at key 1, pages 1 and 2."""
    pages = keys_to_pages(np.array([0, 1, 2], dtype=np.int64), 6000)
    assert pages.tolist() == [0, 1, 1, 2, 2, 3, 4]


def test_snapshot_after_the_child_exits(profile: str) -> None:
    """64K folios: after the child exits, the parent's writes reuse on 6.15 and copy on
    6.12 (no reuse of PTE-mapped large folios); while it runs, every write copies."""
    r = run(
        "snapshot",
        heap="8M",
        value_size=4096,
        pattern="sequential",
        writes_per_s=10000.0,
        after_s=0.01,
        samples=4,
        kernel=profile,
        **{"thp.64K": "always"},
    )
    during = r.timeline[3]
    after = r.timeline[-1]
    assert during["child_alive"] and not after["child_alive"]
    assert during["copies"] == during["parent_writes"] and during["reuses"] == 0
    later = int(after["parent_writes"]) - int(during["parent_writes"])
    assert later == 100
    if profile == "6.15":
        assert after["reuses"] == later and after["copies"] == during["copies"]
    else:
        assert after["reuses"] == 0 and after["copies"] == after["parent_writes"]


# --- prefork ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3])
def test_prefork_mm_id_slots(workers: int, profile: str, backend: str) -> None:
    """Puma-style pool (worker 0 forks the others), every worker writing every page of
    64K folios, in turn. The last writer of a folio is its only mapper: with two MMs 6.15
    reuses it; with three, the folio overflowed its two MM-id slots at fork, its
    maybe-shared bit stays set, and 6.15 copies 15 pages of 16 it could have reused (the
    16th it copies anyway: ``folio_large_mapcount() <= 1``); 6.12 never reuses."""
    pages = 256
    m = run(
        "prefork",
        heap="1M",
        workers=workers,
        warm=1.0,
        dirty=0.0,
        fork_from="worker0",
        kernel=profile,
        backend=backend,
        **{"thp.64K": "always"},
    ).metrics
    avoidable = pages * 15 // 16
    if profile == "6.15" and workers == 2:
        assert (m["copies"], m["reuses"], m["avoidable_copies"]) == (pages, pages, 0)
    else:
        assert m["copies"] == workers * pages and m["reuses"] == 0
        assert m["avoidable_copies"] == avoidable
    assert m["slot_overflow_copies"] == (avoidable if profile == "6.15" and workers == 3 else 0)


def test_prefork_master_keeps_everything_shared() -> None:
    """A master that holds the heap maps every folio, so no copy is avoidable; each worker's
    USS is the pages it copied."""
    r = run("prefork", heap="4M", workers=4, warm=0.25, dirty=0.0)
    m = r.metrics
    assert m["avoidable_copies"] == 0
    assert m["copies"] == 4 * 256  # a quarter of 1024 pages, in each worker
    workers = [row for row in r.timeline if row["role"] == "worker"]
    assert [row["uss_kb"] for row in workers] == [1024] * 4
    assert r.timeline[0]["role"] == "master"


def test_refork_shares_the_warm_pages() -> None:
    """Pitchfork: workers forked from a warmed mold do not copy the warm pages again."""
    plain = run("prefork", heap="4M", workers=4, warm=0.25, dirty=0.0).metrics
    refork = run("prefork", heap="4M", workers=4, warm=0.25, dirty=0.0, refork=True)
    assert [row["role"] for row in refork.timeline] == ["mold"] + ["worker"] * 4
    assert refork.metrics["worker_uss_kb_max"] == 0
    assert int(refork.metrics["total_memory_kb"]) < int(plain["total_memory_kb"])


# --- fork_exec --------------------------------------------------------------------------


def test_fork_exec_wasted_memory(profile: str, backend: str) -> None:
    """One 64K folio, the child gone, the parent writes 8 of its 16 pages: 6.15 reuses
    them in place; 6.12 copies them and keeps the folio, half mapped (32 kB wasted)."""
    m = run(
        "fork_exec",
        size="64K",
        write_fraction=0.5,
        kernel=profile,
        backend=backend,
        **{"thp.64K": "always"},
    ).metrics
    assert m["pages_written"] == 8 and m["mapped_kb"] == 64
    if profile == "6.15":
        assert (m["reuses"], m["copies"], m["wasted_kb"], m["partially_mapped_folios"]) == (
            8,
            0,
            0,
            0,
        )
    else:
        assert (m["reuses"], m["copies"], m["wasted_kb"], m["partially_mapped_folios"]) == (
            0,
            8,
            32,
            1,
        )
        assert m["folio_kb"] == 96


@pytest.mark.parametrize(
    ("exec_first", "fraction", "expect_612", "expect_615"),
    [
        # the child gone, half the folio written: 6.12 copies 8 pages out of it, the
        # first copy leaves it partially mapped (flagged, counted, still allocated);
        # 6.15 reuses in place and nothing is partially mapped
        (True, 0.5, (1, 1, 1), (0, 0, 0)),
        # the whole folio written: 6.12 flags it at the first copy and frees it at the
        # last (the event stays counted, the gauge goes back to 0); 6.15 reuses
        (True, 1.0, (1, 0, 0), (0, 0, 0)),
        # the child alive while the parent writes half: both copy (the folio is shared);
        # the child's exit then leaves the 8 unwritten pages mapped and 8 mapped by no one
        (False, 0.5, (1, 1, 1), (1, 1, 1)),
        # the child alive, everything written: the child's exit unmaps the whole folio,
        # which is freed without ever being partially mapped
        (False, 1.0, (0, 0, 0), (0, 0, 0)),
    ],
)
def test_fork_exec_deferred_split_counters(
    exec_first: bool,
    fraction: float,
    expect_612: tuple[int, int, int],
    expect_615: tuple[int, int, int],
    profile: str,
    backend: str,
) -> None:
    """One 64K folio, memset, fork, exec, the parent writes: the kernel's counters
    (``split_deferred`` since the fork, ``nr_anon_partially_mapped`` at the end) against
    the count the workload derives from the access records, by hand."""
    m = run(
        "fork_exec",
        size="64K",
        write_fraction=fraction,
        exec_first=exec_first,
        kernel=profile,
        backend=backend,
        **{"thp.64K": "always"},
    ).metrics
    got = (
        m["split_deferred.64K"],
        m["nr_anon_partially_mapped.64K"],
        m["partially_mapped_folios"],
    )
    assert got == (expect_612 if profile == "6.12" else expect_615)
    assert m["thp_deferred_split_page"] == 0  # PMD-sized folios only
    others = [
        k for k in m if k.startswith(("split_deferred.", "nr_anon_partially")) and "64K" not in k
    ]
    assert all(m[k] == 0 for k in others)


@pytest.mark.parametrize("thp", ["16K", "64K", "2M"])
@pytest.mark.parametrize("exec_first", [True, False])
def test_fork_exec_counters_agree_with_the_records(
    thp: str, exec_first: bool, profile: str, backend: str
) -> None:
    """On a random quarter of a 4M buffer's pages, the kernel's gauge counts exactly the
    folios the records show partly copied away, and its event count is at least that
    (a folio copied away entirely was counted, then freed). For 2M folios the vmstat
    counter ``thp_deferred_split_page`` counts the same folios as ``split_deferred``."""
    m = run(
        "fork_exec",
        size="4M",
        write_fraction=0.25,
        exec_first=exec_first,
        seed=3,
        kernel=profile,
        backend=backend,
        **{f"thp.{thp}": "always"},
    ).metrics
    partial = m["partially_mapped_folios"]
    assert m[f"nr_anon_partially_mapped.{thp}"] == partial
    assert int(m[f"split_deferred.{thp}"]) >= int(partial)
    assert m["thp_deferred_split_page"] == (m["split_deferred.2M"] if thp == "2M" else 0)
    # a partially mapped folio wastes at least one page
    assert (int(m["wasted_kb"]) > 0) == (int(partial) > 0)


def test_fork_exec_small_pages_waste_nothing(profile: str) -> None:
    m = run("fork_exec", size="1M", write_fraction=0.5, kernel=profile).metrics
    assert m["reuses"] == 128 and m["wasted_kb"] == 0


# --- micro ------------------------------------------------------------------------------


@pytest.mark.parametrize("folio", ["4K", "64K"])
@pytest.mark.parametrize("mode", ["reuse-byte", "child-reuse-byte"])
def test_micro_reuse(folio: str, mode: str, profile: str, backend: str) -> None:
    """The sole remaining mapper writes a byte a page: a small folio is reused on both
    profiles (refcount 1); a PTE-mapped 64K folio only on 6.15."""
    m = run("micro", mode=mode, folio=folio, size="2M", kernel=profile, backend=backend).metrics
    pages = 512
    if folio == "4K" or profile == "6.15":
        assert (m["reuses"], m["copies"]) == (pages, 0)
    else:
        assert (m["reuses"], m["copies"], m["pages_copied"]) == (0, pages, pages)
    assert m["faults"] == pages


def test_micro_fork_and_munmap() -> None:
    ptes = run("micro", mode="fork", folio="64K", size="4M").metrics
    assert (ptes["fork_ptes"], ptes["fork_pmds"], ptes["faults"]) == (1024, 0, 0)
    # PMD-sized THPs are PTE-mapped first, as in the series' benchmarks
    pte_mapped = run("micro", mode="fork", folio="2M", size="4M").metrics
    assert (pte_mapped["fork_ptes"], pte_mapped["fork_pmds"]) == (1024, 0)
    pmds = run("micro", mode="fork", folio="2M", size="4M", pte_mapped=False).metrics
    assert (pmds["fork_ptes"], pmds["fork_pmds"]) == (0, 2)
    unmap = run("micro", mode="munmap", folio="64K", size="4M").metrics
    assert (unmap["zap_ptes"], unmap["frames_freed"]) == (1024, 1024)  # no fork: all freed
    cow = run("micro", mode="cow-byte", folio="64K", size="4M").metrics
    assert cow["copies"] == cow["pages_copied"] == cow["frames_allocated"] == 1024


# --- anon_cow ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anon_cow_seq", "anon_cow_rand"])
def test_anon_cow_every_child_copies_every_page(name: str, backend: str) -> None:
    """The parent stays, so every child's write to every page copies it."""
    m = run(name, size="1M", nr_task=3, interleave=64, backend=backend).metrics
    assert m["copies"] == m["wp_faults"] == 3 * 256
    assert int(m["memory_peak_kb"]) >= 3 * 1024 + 1024


# --- parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("snapshot", {"heapsize": "1M"}, "no parameter 'heapsize'"),
        ("snapshot", {"heap": 1 << 20}, "must be a str"),
        ("snapshot", {"heap": "1000"}, "multiple of 4K"),
        ("snapshot", {"heap": "lots"}, "bad size"),
        ("snapshot", {"pattern": "zipf"}, "pattern must be one of"),
        ("snapshot", {"heap": "4K", "value_size": 8192}, "larger than the heap"),
        ("snapshot", {"scan_mb_s": 0.0}, "scan_mb_s must be > 0"),
        ("snapshot", {"samples": 0}, "samples must be > 0"),
        ("snapshot", {"heap": "600G"}, "largest machine"),
        ("prefork", {"dirty": 1.5}, "dirty must be in [0, 1]"),
        ("prefork", {"fork_from": "zygote"}, "fork_from must be one of"),
        ("prefork", {"workers": 0}, "workers must be > 0"),
        ("fork_exec", {"write_fraction": -0.1}, "write_fraction must be in [0, 1]"),
        ("micro", {"mode": "reuse"}, "mode must be one of"),
        ("micro", {"folio": "8K"}, "folio must be one of"),
        ("micro", {"folio": "2M", "size": "3M"}, "multiple of the folio size"),
        ("anon_cow_seq", {"nr_task": -1}, "nr_task must be > 0"),
        ("snapshot", {"kernel": "5.10", "heap": "4M"}, "kernel profile"),
    ],
)
def test_bad_parameters(name: str, params: dict[str, Scalar], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message.replace("[", r"\[")):
        run(name, **params)


def test_unknown_workload() -> None:
    with pytest.raises(InvalidArgumentError, match=r"no workload 'redis'.*snapshot"):
        get("redis")


# --- command line -----------------------------------------------------------------------


def test_cli_prints_the_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workload", "micro", "-p", "size=2M", "-p", "kernel=6.12", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row == run("micro", size="2M", kernel="6.12").row()


def test_cli_timeline_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["workload", "snapshot", "-p", "heap=4M", "-p", "samples=3", "--json", "--timeline"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["step"] for r in doc["timeline"]] == [0, 1, 2]
    assert main(["workload", "snapshot", "-p", "samples=many"]) == 2
    assert "takes int values, not 'many'" in capsys.readouterr().err
    assert main(["workload", "prefork", "-p", "refork=maybe"]) == 2
    assert main(["workload", "prefork", "-p", "heap"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
