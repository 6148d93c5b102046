"""Issue 15's study (``cowcore study seed-future-work``, python/cowcore/study.py): the quick
study produces every output, numbers that can be derived by hand come out, the study's
drivers agree with the registered workloads, and the committed outputs are what the
generator makes of the committed data (and, for a few cheap rows, of a fresh run)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cowcore import Machine
from cowcore import study as s
from cowcore.cli import main
from cowcore.cost import DEFAULT
from cowcore.workloads import get

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "studies" / "seed-future-work"
DOC = ROOT / "docs" / "studies" / "seed-future-work.md"
V615 = s.CONFIGS[3]
PAGES = (4 << 20) // 4096  # the quick micro region


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("study")
    doc = out / "doc.md"
    doc.write_text("".join(f"<!-- study:{n} -->\nold\n<!-- /study:{n} -->\n" for n in BLOCKS))
    argv = ["study", "seed-future-work", "--quick", "--out", str(out), "--doc", str(doc)]
    assert main(argv) == 0  # the command line, as the document says to run it
    return out


BLOCKS = (
    *(f"{kind}-{wl}" for kind in ("counts", "cost") for wl in s.WORKLOADS),
    "pools",
    "survivor",
    "headline-fault_around",
    "headline-numbers",
    "headline-pools",
)


def test_quick_study_writes_every_output(quick: Path) -> None:
    for name in (
        "cases.csv",
        "pools.csv",
        "survivor.csv",
        "tables.md",
        "faults-latency.png",
        "fault-around-waste.png",
        "mm-id-slots.png",
    ):
        assert (quick / name).stat().st_size > 0, name
    cases = s.read_csv(quick / "cases.csv")
    assert len(cases) == len(list(s.cases()))
    assert set(s.render(quick)) == set(BLOCKS)
    doc = (quick / "doc.md").read_text()
    assert "old" not in doc
    for name, body in s.render(quick).items():
        assert f"<!-- study:{name} -->\n{body}<!-- /study:{name} -->" in doc


def test_fault_around_takes_one_fault_per_64k_folio() -> None:
    off = s.run_case(V615, "64K", "off", "reuse-byte", s.QUICK)
    fa = s.run_case(V615, "64K", "fault_around", "reuse-byte", s.QUICK)
    assert off["faults"] == off["reuses"] == PAGES
    assert fa["faults"] == fa["reuses"] == fa["fault_around_faults"] == PAGES // 16
    # each of those faults wrote its own PTE and upgraded the folio's 15 others
    assert fa["ptes_upgraded"] == PAGES - PAGES // 16
    assert fa["max_entries_per_fault"] == 16
    assert fa["never_written"] == 0  # reuse-byte writes every page
    # the worst access: one reuse fault plus 15 PTE rewrites at the model's mprotect_entry
    worst = DEFAULT.fault_wp + 15 * DEFAULT.mprotect_entry
    assert fa["worst_fault_us"] == round(worst / 1e3, 3)
    assert off["worst_fault_us"] == round(DEFAULT.fault_wp / 1e3, 3)


def test_fault_around_window_takes_one_fault_per_16_pages_of_a_2m_folio() -> None:
    """The window variant on a PTE-mapped 2M folio: one fault per aligned 16-page window,
    each upgrading 15 PTEs, the worst access as a 64K folio's whole-folio fault-around."""
    w = s.run_case(V615, "2M", "fault_around_window", "reuse-byte", s.QUICK)
    assert w["faults"] == w["reuses"] == w["fault_around_faults"] == PAGES // 16
    assert w["ptes_upgraded"] == PAGES - PAGES // 16
    assert w["max_entries_per_fault"] == 16
    worst = DEFAULT.fault_wp + 15 * DEFAULT.mprotect_entry
    assert w["worst_fault_us"] == round(worst / 1e3, 3)


def test_memo_keeps_the_faults_and_decides_all_but_the_first_of_each_folio() -> None:
    memo = s.run_case(V615, "64K", "remember_exclusive", "reuse-byte", s.QUICK)
    assert memo["faults"] == memo["reuses"] == PAGES
    assert memo["memo_reuses"] == PAGES - PAGES // 16
    assert memo["est_ms"] == s.run_case(V615, "64K", "off", "reuse-byte", s.QUICK)["est_ms"]


@pytest.mark.parametrize("config", [s.CONFIGS[0], s.CONFIGS[1]])
def test_policies_change_nothing_without_pte_mapped_reuse(config: s.Config) -> None:
    """Every write copies on 6.12; on 6.1 all but the write to each 2M folio's last mapped
    page, which nothing else references then (6.1's do_wp_page reuses it): PAGES // 512
    reuses. Every policy set gives the same row."""
    rows = [s.run_case(config, "2M", p, "reuse-byte", s.QUICK) for p in s.POLICY_SETS]
    sole = PAGES // 512 if config.kernel == "6.1" else 0
    assert {(r["faults"], r["reuses"], r["copies"], r["est_ms"]) for r in rows} == {
        (PAGES, sole, PAGES - sole, rows[0]["est_ms"])
    }


def test_fault_around_waste_in_fork_exec() -> None:
    """Half the pages written at random: every folio the parent touches is upgraded whole,
    so the never-written pages are the pages of touched folios that were not written."""
    row = s.run_case(V615, "64K", "fault_around", "fork_exec", s.QUICK)
    fa = {k: int(v) for k, v in row.items() if isinstance(v, int)}
    assert fa["never_written"] == fa["ptes_upgraded"] - (fa["writes"] - fa["faults"])
    assert 0 < fa["never_written"] <= fa["pages"] - fa["writes"]


def test_exact_tracker_removes_the_slot_overflow_copies_of_a_3_process_pool() -> None:
    w = get("prefork")
    params = {**s.POOL_SHAPES["worker0-all"], "heap": "2M", "workers": 3, "thp.64K": "always"}
    two = w.run(w.resolve(params)).metrics
    exact = w.run(w.resolve({**params, "policy.mm_id_exact": True})).metrics
    assert int(two["slot_overflow_copies"]) > 0
    assert exact["slot_overflow_copies"] == 0
    # the exact tracker reuses those pages, and the 16th of each folio the two-slot
    # tracker copies anyway (its last page)
    folios = (2 << 20) // (64 << 10)
    assert two["slot_overflow_copies"] == 15 * folios
    assert int(two["copies"]) - int(exact["copies"]) == 16 * folios
    assert int(exact["reuses"]) - int(two["reuses"]) == 16 * folios


def test_survivor_without_a_slot_copies_with_three_processes() -> None:
    rows = s.run_survivor(replace(s.QUICK, pool_sizes=(2, 3), pool_folios=("64K",)))
    by = {(r["processes"], r["survivor"], r["tracker"]): r for r in rows}
    half = (2 << 20) // 4096 // 2
    assert by[(2, "last", "two-slot")]["copies"] == 0
    assert by[(3, "first", "two-slot")]["copies"] == 0
    assert by[(3, "last", "two-slot")]["copies"] == half
    assert by[(3, "last", "exact")]["copies"] == 0
    assert int(by[(3, "last", "exact")]["exact_reuses"]) > 0


@pytest.mark.parametrize("workload", s.WORKLOADS)
@pytest.mark.parametrize(
    ("config", "folio"), [(s.CONFIGS[3], "16K"), (s.CONFIGS[3], "2M"), (s.CONFIGS[1], "64K")]
)
@pytest.mark.parametrize("policy", ["off", "all"])
def test_drivers_agree_with_the_registered_workloads(
    workload: str, config: s.Config, folio: str, policy: str
) -> None:
    row = s.run_case(config, folio, policy, workload, s.QUICK)
    w = get(s.registered(workload))
    params = {
        **s.workload_params(workload, s.QUICK, folio),
        **s.machine_params(config, folio, policy),
    }
    ref = w.run(w.resolve(params)).metrics
    for key in ("faults", "reuses", "copies"):
        assert row[key] == ref[key], key


def test_meter_shadow_matches_the_page_tables() -> None:
    m = Machine("6.15")
    m.thp.sizes["64K"] = "always"
    m.policy.cow_reuse_fault_around = True
    p = m.init
    npages = 512
    base = p.mmap(npages * 4096)
    p.write(base, npages * 4096)
    child = p.fork()
    meter = s.Meter(m, base, npages, DEFAULT)
    meter.track(p)
    child.exit()
    pages = np.random.default_rng(1).choice(npages, 100, replace=False).astype(np.int64)
    meter.write(p, pages)
    rw = [("RW" in p.translate(base + i * 4096).steps[-1].flags) for i in range(npages)]
    assert meter.writable[p.pid].tolist() == rw
    metrics = meter.close()
    assert metrics["ptes_upgraded"] == sum(rw) - int(metrics["faults"])


def test_fill_doc_refuses_an_unknown_block() -> None:
    with pytest.raises(KeyError):
        s.fill_doc("<!-- study:nope -->\n<!-- /study:nope -->", {})


def test_committed_tables_and_doc_are_rendered_from_the_committed_data() -> None:
    blocks = s.render(COMMITTED)
    tables = (COMMITTED / "tables.md").read_text()
    doc = DOC.read_text()
    for name, body in blocks.items():
        assert f"## {name}\n\n{body}\n" in tables, name
    assert s.fill_doc(doc, blocks) == doc


@pytest.mark.parametrize(
    ("config", "folio", "policy", "workload"),
    [
        (s.CONFIGS[3], "64K", "fault_around", "reuse-byte"),
        (s.CONFIGS[3], "2M", "all", "child-reuse-byte"),
        (s.CONFIGS[2], "128K", "remember_exclusive", "fork_exec"),
        (s.CONFIGS[0], "2M", "off", "cow-byte"),
    ],
)
def test_committed_rows_are_what_a_fresh_run_gives(
    config: s.Config, folio: str, policy: str, workload: str
) -> None:
    committed = {
        (r["config"], r["folio"], r["policy"], r["workload"]): r
        for r in s.read_csv(COMMITTED / "cases.csv")
    }[(config.label, folio, policy, workload)]
    fresh = s.run_case(config, folio, policy, workload, s.FULL)
    assert {k: str(v) for k, v in fresh.items()} == committed


def test_the_documents_prose_holds_in_the_committed_data() -> None:
    """The conclusions' words that are not generated blocks, checked against the data."""
    by = {
        (r["config"], r["folio"], r["policy"], r["workload"]): r
        for r in s.read_csv(COMMITTED / "cases.csv")
    }

    def worst(folio: str, policy: str, workload: str = "reuse-byte") -> float:
        return float(by[("6.15", folio, policy, workload)]["worst_fault_us"])

    copy = worst("64K", "off", "cow-byte")
    assert round(copy, 1) == 2.8 and round(worst("64K", "off"), 1) == 0.8
    # "at 2M ... about 8 times a 4K COW copy", "up to 128K it stays below a copy"
    assert 7.5 <= worst("2M", "fault_around") / copy < 8.5
    assert worst("128K", "fault_around") < copy < worst("256K", "fault_around")
    # "16,384 -> 1,024 at 64K, -> 32 at 2M"; "15 of 16 at 64K"
    assert by[("6.15", "64K", "fault_around", "reuse-byte")]["faults"] == "1024"
    assert by[("6.15", "2M", "fault_around", "reuse-byte")]["faults"] == "32"
    memo = by[("6.15", "64K", "remember_exclusive", "reuse-byte")]
    assert int(memo["memo_reuses"]) * 16 == int(memo["reuses"]) * 15
    # the window: "every folio of 64K and more then behaves as a 64K folio does under
    # whole-folio fault-around (1,024 faults, 1.513 ms, worst access 1.478 µs, below a 4K
    # copy), against 0.7568 ms and 23.649 µs for whole 2M folios"; "4,096 at every size from
    # 64K to 1M with or without the window"
    fa_64k = by[("6.15", "64K", "fault_around", "reuse-byte")]
    for folio in ("64K", "128K", "256K", "512K", "1M", "2M"):
        w = by[("6.15", folio, "fault_around_window", "reuse-byte")]
        assert [w[k] for k in ("faults", "est_ms", "worst_fault_us")] == [
            fa_64k[k] for k in ("faults", "est_ms", "worst_fault_us")
        ]
    assert (fa_64k["faults"], fa_64k["est_ms"], fa_64k["worst_fault_us"]) == (
        "1024",
        "1.513",
        "1.478",
    )
    assert worst("2M", "fault_around_window") < copy
    fa_2m = by[("6.15", "2M", "fault_around", "reuse-byte")]
    assert (fa_2m["est_ms"], fa_2m["worst_fault_us"]) == ("0.7568", "23.649")
    for folio in ("64K", "128K", "256K", "512K", "1M"):
        for policy in ("fault_around", "fault_around_window"):
            assert by[("6.15", folio, policy, "fork_exec")]["never_written"] == "4096"
    # "-89% at 64K in reuse-byte"
    off64 = float(by[("6.15", "64K", "off", "reuse-byte")]["est_ms"])
    fa64 = float(by[("6.15", "64K", "fault_around", "reuse-byte")]["est_ms"])
    assert round(100 * (fa64 - off64) / off64) == -89
    # "mm_id_exact changes nothing with one other process"; "the 6.12 what-if ... behaves as
    # 6.15 in every row"
    counts = ("faults", "reuses", "copies")
    for (cfg, folio, policy, wl), r in by.items():
        off = by[(cfg, folio, "off", wl)]
        if policy == "mm_id_exact":
            assert [r[k] for k in counts] == [off[k] for k in counts]
        if cfg == "6.12+reuse":
            assert [r[k] for k in counts] == [by[("6.15", folio, policy, wl)][k] for k in counts]
    # "about half the buffer" (fork_exec), "nearly half the heap" (snapshot), at 64K
    fe = by[("6.15", "64K", "fault_around", "fork_exec")]
    sn = by[("6.15", "64K", "fault_around", "snapshot")]
    assert 0.45 <= int(fe["never_written"]) / int(fe["pages"]) <= 0.55
    assert 0.4 <= int(sn["never_written"]) / int(sn["pages"]) < 0.5
    pools = {
        (r["shape"], r["folio"], int(r["processes"]), r["tracker"]): r
        for r in s.read_csv(COMMITTED / "pools.csv")
    }

    def saved(shape: str, folio: str, n: int) -> int:
        two, ex = pools[(shape, folio, n, "two-slot")], pools[(shape, folio, n, "exact")]
        return int(two["copies"]) - int(ex["copies"])

    heap_pages = (16 << 20) // 4096
    ns = sorted({k[2] for k in pools})
    # "the whole 16 MiB heap in worker0-all, two thirds of it in worker0-warm at 16K", "does not
    # grow with N", "no copy anywhere at N = 2", "default: never"
    assert {saved("worker0-all", "64K", n) for n in ns if n >= 3} == {heap_pages}
    assert 0.6 <= saved("worker0-warm", "16K", 3) / heap_pages <= 0.7
    assert all(saved(k[0], k[1], 2) == 0 for k in pools)
    assert all(saved("default", k[1], k[2]) == 0 for k in pools)
    surv = {
        (r["folio"], int(r["processes"]), r["survivor"], r["tracker"]): r
        for r in s.read_csv(COMMITTED / "survivor.csv")
    }
    # "PMD-mapped 2M folios never pay ... every 2M row is 0"
    assert all(saved(k[0], "2M", k[2]) == 0 for k in pools)
    assert all(r["copies"] == "0" for k, r in surv.items() if k[0] == "2M")
    # "8 MiB of a 16 MiB heap of which it writes half"
    extra = int(surv[("64K", 3, "last", "two-slot")]["memory_end_kb"]) - int(
        surv[("64K", 3, "last", "exact")]["memory_end_kb"]
    )
    assert extra == 8 << 10


def test_command_line_errors_say_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.md"
    argv = ["study", "seed-future-work", "--quick", "--out", str(tmp_path), "--doc", str(missing)]
    assert main(argv) == 2
    assert f"--doc {missing}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "cases.csv").exists()  # refused before anything ran


def test_render_only_rewrites_the_outputs_from_the_data(quick: Path, tmp_path: Path) -> None:
    for name in s.DATA:
        (tmp_path / f"{name}.csv").write_bytes((quick / f"{name}.csv").read_bytes())
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- study:pools -->\n<!-- /study:pools -->\n")
    argv = ["study", "seed-future-work", "--render-only", "--out", str(tmp_path)]
    assert main([*argv, "--doc", str(doc)]) == 0
    assert (tmp_path / "tables.md").read_text() == (quick / "tables.md").read_text()
    assert (
        doc.read_text()
        == f"<!-- study:pools -->\n{s.render(quick)['pools']}<!-- /study:pools -->\n"
    )
