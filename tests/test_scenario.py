"""The .cow language: parsing, errors by line, frame naming, stats, comparison."""

from __future__ import annotations

import pytest

from cowcore import Scenario, ScenarioSyntaxError, compare_observations, run_scenario
from cowcore.scenario import SMAPS_NOT_COMPARED, Observation

HEAD = "thp size 32K always\nP mmap A 2M\n"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("P mmap A 2M\nP jump A 0 4K\n", 2, "unknown verb"),
        ("P mmap A 3000\n", 1, "not a multiple of 4K"),
        ("P mmap A 0\n", 1, "must not be zero"),
        ("P write A 0 4K 1 2\n", 1, "wrong number"),
        ("P write A 0 4K -1\n", 1, "bad value"),
        ("P observe A 2K 4K\n", 1, "not a multiple of 4K"),
        ("thp size 8K always\n", 1, "bad THP size"),
        ("thp enabled sometimes\n", 1, "bad THP mode"),
        ("kernel 6.13\n", 1, "unknown kernel"),
        ("kernel 6.12\nkernel 6.15\n", 2, "second 'kernel'"),
        ("9P exit\n", 1, "bad process name"),
        ("P madvise A 0 4K free\n", 1, "unknown advice"),
        ("P write A 0 4K 007\n", 1, "bad value"),
        ("P observe A 131072G 4K\n", 1, "beyond the address space"),
        ("P observe A 131071G 2G\n", 1, "range is beyond"),
        ("P mprotect A 0 4K x\n", 1, "bad protection"),
    ],
)
def test_syntax_errors_stop_before_anything_runs(text: str, line: int, message: str) -> None:
    with pytest.raises(ScenarioSyntaxError, match=message) as info:
        Scenario.parse("# comment\n\n" + text)
    assert info.value.line == line + 2
    out = run_scenario("P mmap A 2M\nstats\n" + text)
    assert len(out) == 1 and str(out[0]["error"]).startswith(f"line {line + 2}:")


@pytest.mark.parametrize(
    ("stmt", "message"),
    [
        ("Q write A 0 4K", "unknown process Q"),
        ("P write B 0 4K", "no mapping B"),
        ("P write A 4M 4K", "offset 4194304 is not mapped"),
        ("P mprotect A 2M 4K r", "offset 2097152 is not mapped"),
        ("P mmap A 4K", "already has a mapping A"),
        ("P mmap B 2G", "over 1G"),
        ("P fork P", "already used"),
        ("P mprotect A 0 4K r\nP write A 0 8K", "SIGSEGV at offset 0 of A (protection)"),
        ("P munmap A 4K 4K\nP read A 0 8K", "SIGSEGV at offset 4096 of A (unmapped)"),
        ("P munmap A 4K 4K\nP madvise A 0 8K dontneed", "ENOMEM"),
        ("P fork C\nC exit\nC write A 0 4K", "has exited"),
        ("P smaps B", "no mapping B"),
        ("Q smaps A", "unknown process Q"),
        ("P fork C\nC exit\nC smaps A", "has exited"),
    ],
)
def test_run_time_errors(stmt: str, message: str) -> None:
    text = HEAD + "P observe A 0 4K\n" + stmt + "\nP observe A 0 4K\n"
    out = run_scenario(text)
    assert len(out) == 2 and out[0]["proc"] == "P"
    err = str(out[-1]["error"])
    assert message in err
    assert err.startswith(f"line {text.count(chr(10)) - 1}:")


def test_failed_write_changes_nothing() -> None:
    out = run_scenario(HEAD + "P write A 0 8K 3\nP mprotect A 4K 4K r\nP write A 0 8K 9\n")
    assert "error" in out[-1]
    text = HEAD + "P write A 0 8K 3\nP mprotect A 4K 4K r\nP read A 0 4K\nP observe A 0 4K\n"
    assert run_scenario(text)[0]["content"] == 3


def test_frames_are_named_by_first_appearance_and_retired() -> None:
    text = (
        "P mmap A 2M\nP write A 0 8K 1\nP observe A 4K 4K\nP observe A 0 8K\n"
        "P madvise A 0 8K dontneed\nP write A 0 8K 2\nP observe A 0 8K\n"
    )
    frames = [o["frame"] for o in run_scenario(text)]
    # The freed frames come back from the allocator but are new frames to the format.
    assert frames == ["f0", "f1", "f0", "f2", "f3"]


def test_ranges_past_the_mapping_end_behave_as_the_kernel_runner() -> None:
    out = run_scenario(
        "P mmap A 8K\nP write A 0 8K 3\nP observe A 4K 4K\nP munmap A 4K 1M\n"
        "P observe A 0 8K\nthp size 2048K always\nstats\n"
    )
    assert [o.get("present") for o in out[:3]] == [True, True, False]
    assert out[2]["off"] == 4096 and out[2]["frame"] is None
    assert "error" not in out[-1]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("P mmap A 8K\nP observe A 4K 8K\n", 2),
        ("P mmap A 8K\nP observe A 8K 4K\n", 2),
        # The mapping as created counts, not what is left of it after munmap.
        ("P mmap A 8K\nP munmap A 0 8K\nP observe A 0 8K\nP observe A 0 12K\n", 4),
        # A huge range on a small mapping is refused before anything is observed.
        ("P mmap A 2M\nP observe A 0 1024G\n", 2),
    ],
)
def test_observe_must_lie_inside_the_mapping_as_created(text: str, line: int) -> None:
    error = str(run_scenario(text)[-1]["error"])
    assert error.startswith(f"line {line}: observe A: the range ends at offset")
    assert "past the end of the mapping as created" in error


def test_observation_keys_and_absent_pages() -> None:
    out = run_scenario("P mmap A 2M\nP observe A 0 4K\n")
    assert list(out[0]) == [
        "proc",
        "map",
        "off",
        "present",
        "frame",
        "folio_pages",
        "mapcount",
        "exclusive",
        "content",
    ]
    assert out[0]["present"] is False and out[0]["frame"] is None


def test_smaps_keys_sums_and_zeros() -> None:
    """``smaps`` prints the format's keys in its order; a fault of one 64K folio and of one
    4K page count what they map; a mapping with no VMA left prints zeros."""
    text = (
        "thp size 64K always\nP mmap A 2M\nP mmap B 2M\nP smaps A\nP write A 0 4K\n"
        "P smaps A\nP munmap A 0 2M\nP smaps A\nthp size 64K never\nP write B 0 4K\n"
        "P smaps B\n"
    )
    out: list[dict[str, object]] = []
    for obs in run_scenario(text):
        fields = obs["smaps"]
        assert isinstance(fields, dict)
        out.append(fields)
    fields = ["Rss", "Pss", "Pss_Dirty", "Shared_Clean", "Shared_Dirty", "Private_Clean"]
    fields += ["Private_Dirty", "Referenced", "Anonymous", "AnonHugePages", "Swap", "SwapPss"]
    assert [list(o) for o in out] == [["proc", "map", *fields]] * 4
    empty, one_folio, unmapped, one_page = out
    assert empty == {"proc": "P", "map": "A", **dict.fromkeys(fields, 0)}
    assert unmapped == empty
    assert one_folio["Rss"] == one_folio["Private_Dirty"] == one_folio["Anonymous"] == 64
    assert one_page["Rss"] == one_page["Pss"] == 4 and one_page["map"] == "B"


def test_stats_print_only_nonzero() -> None:
    out = run_scenario(HEAD + "P write A 0 32K\nP fork C\nC exit\nP write A 0 4K\nstats\n")
    assert out[-1] == {
        "stats": {
            "anon_fault_alloc": {"32K": 1},
            "anon_fault_fallback": {},
            "split": {},
            "split_deferred": {},
            "nr_anon": {"32K": 1},
            "nr_anon_partially_mapped": {},
            "pgreuse": 1,
        }
    }
    out = run_scenario(
        HEAD + "P write A 0 32K\nP fork C\nC exit\nP write A 0 4K\nstats\n", kernel="6.12"
    )
    assert out[-1]["stats"] == {  # 6.12 copies page 0, which leaves the folio partially mapped
        "anon_fault_alloc": {"32K": 1},
        "anon_fault_fallback": {},
        "split": {},
        "split_deferred": {"32K": 1},
        "nr_anon": {"32K": 1},
        "nr_anon_partially_mapped": {"32K": 1},
        "cow_copy": 1,
    }


def test_kernel_statement_picks_the_profile_and_argument_overrides() -> None:
    text = (
        "kernel 6.12\n" + HEAD + "P write A 0 32K\nP fork C\nC exit\nP write A 0 4K\n"
        "P observe A 0 4K\n"
    )
    assert run_scenario(text)[0]["folio_pages"] == 1
    assert run_scenario(text, kernel="6.15")[0]["folio_pages"] == 8


def test_children_inherit_mapping_names() -> None:
    out = run_scenario("P mmap A 2M\nP write A 0 4K 7\nP fork C\nC observe A 0 4K\n")
    assert out[0]["proc"] == "C" and out[0]["content"] == 7


def test_compare_observations() -> None:
    page: Observation = {
        "proc": "P",
        "map": "A",
        "off": 0,
        "present": True,
        "frame": "f0",
        "folio_pages": 8,
        "mapcount": 1,
        "exclusive": True,
        "content": 1,
    }
    counters: dict[str, object] = {
        "anon_fault_alloc": {"32K": 1},
        "anon_fault_fallback": {},
        "split": {},
    }
    stats: Observation = {"stats": counters}
    mine: Observation = {
        "stats": {
            "anon_fault_alloc": {"32K": 1, "64K": 0},
            "anon_fault_fallback": {},
            "split": {},
            "pgreuse": 3,
        }
    }
    assert compare_observations([page, stats], [page, mine]) == []
    assert compare_observations([page], [{**page, "frame": "f1"}])
    assert compare_observations([stats], [{"stats": {**counters, "thp_split_pmd": 1}}])
    assert compare_observations([{"error": "line 3: x"}], [{"error": "line 3: y"}]) == []
    assert compare_observations([{"error": "line 3: x"}], [{"error": "line 4: x"}])
    assert compare_observations([page], [])


def test_smaps_comparison_compares_every_key() -> None:
    """``smaps`` observations are compared on every key (``SMAPS_NOT_COMPARED`` is empty
    since ``PG_referenced`` is modelled), ``Referenced`` included."""
    base = {"proc": "P", "map": "A", "Rss": 64, "Pss": 64, "Referenced": 64}
    assert frozenset() == SMAPS_NOT_COMPARED
    diffs = compare_observations([{"smaps": base}], [{"smaps": {**base, "Referenced": 0}}])
    assert diffs == ["#0 smaps Referenced: 64 != 0"]
    diffs = compare_observations([{"smaps": base}], [{"smaps": {**base, "Pss": 32}}])
    assert diffs == ["#0 smaps Pss: 64 != 32"]
