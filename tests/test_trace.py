"""``cowcore trace``: the seed's explanation on both profiles, the same run as ``cowcore run``,
and, on every recorded conformance scenario, claims that agree with the frames."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

import cowcore
from cowcore.cli import main
from cowcore.outcome import AccessFlags, Outcome, Reason
from cowcore.scenario import Scenario, _Runner
from cowcore.trace import TraceEntry, _TraceRunner, trace_scenario
from tests.kernel.test_conformance import CASES, profile_for

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed.cow"
EXAMPLES = sorted((ROOT / "examples").glob("*.cow"))
SAME_RUN = [
    # the examples on every backend; the conformance scenarios on the default one (fast)
    *(pytest.param(b, p, id=f"{b}-{p.stem}") for b in cowcore.BACKENDS for p in EXAMPLES),
    *(
        pytest.param(cowcore.DEFAULT_BACKEND, p, id=p.stem)
        for p in sorted((ROOT / "tests" / "kernel" / "scenarios").glob("*.cow"))
    ),
]
EXPECTED = ROOT / "tests" / "kernel" / "expected"


@pytest.mark.parametrize(
    ("kernel", "outcome", "reason", "phrase"),
    [
        ("6.15", Outcome.COW_REUSE, Reason.LARGE_EXCLUSIVE, "large folio (64K) exclusively mapped"),
        ("6.12", Outcome.COW_COPY, Reason.LARGE_NO_PTE_REUSE, "large folio (64K) before 6.15"),
    ],
)
def test_seed(backend: str, kernel: str, outcome: Outcome, reason: Reason, phrase: str) -> None:
    """The seed: after fork and the child's exit, the write to the PTE-mapped 64K folio is
    reused in place on 6.15 and copied on 6.12."""
    trace = trace_scenario(Scenario.parse(SEED.read_text()), backend=backend, kernel=kernel)
    assert trace.error is None
    faults = [e for e in trace.entries if e.faulted]
    assert [(e.line, e.access.outcome) for e in faults] == [
        (6, Outcome.ANON_ALLOC),
        (9, outcome),
    ]
    first, last = faults
    assert first.access.order == 4
    assert not first.before.present
    assert last.access.reason is reason
    assert last.before.pfn is not None
    assert (last.access.pfn == last.before.pfn) is (outcome is Outcome.COW_REUSE)
    assert phrase in last.explain()
    assert last.explain().startswith("line 9: P write A+0x0: ")
    # 16 accesses for the 64K write, one for the 4K write
    assert len(trace.entries) == 17


def test_cli_prints_one_line_per_fault(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(SEED), "--kernel", "6.12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "COW copy" in lines[1]
    assert "large folio (64K) before 6.15" in lines[1]

    assert main(["trace", str(SEED), "--all"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 17

    assert main(["trace", str(SEED), "--events"]) == 0
    out = capsys.readouterr().out
    assert "line 7: fork: asid 1 -> asid 2, copied 16 PTEs" in out
    assert "line 8: zap (exit) asid 2" in out


def test_events_say_why_each_block_did_not_collapse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``collapse`` statement's events: one line per 2M block, with its result and why."""
    path = tmp_path / "collapse.cow"
    path.write_text(
        "thp size 2M never\nP mmap A 4M\nP write A 0 4M 1\nP ref A 4K 4K\nP collapse A 0 4M\n"
    )
    assert main(["trace", str(path), "--events"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if "collapse" in x]
    assert len(lines) == 2
    assert "PAGE_COUNT (EAGAIN): a folio has references beyond its mappings" in lines[0]
    assert lines[1].endswith("SUCCEED: collapsed into a new PMD-mapped THP")


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", str(SEED), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 17
    assert set(rows[0]) >= {"line", "proc", "op", "addr", "outcome", "reason", "flags", "phys"}
    assert rows[0]["outcome"] == "ANON_ALLOC"
    assert rows[0]["flags"] == "FIRST_TOUCH|ZEROED"
    assert rows[-1]["reason"] == "LARGE_EXCLUSIVE"


def test_cli_error_statement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A statement that fails prints the error observation `cowcore run` prints."""
    path = tmp_path / "bad.cow"
    path.write_text("P mmap A 2M\nP mprotect A 0 2M r\nP write A 0 8K\n")
    assert main(["trace", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [json.dumps(cowcore.run_scenario(path.read_text())[-1], separators=(",", ":"))]


def _final_state(r: _Runner) -> list[object]:
    """What a run leaves: the counters and every live process's mappings, observed."""
    m = r.machine
    assert m is not None
    state: list[object] = [dict(m.stats()), m.free_frames()]
    for name, p in sorted(r.procs.items()):
        if p.alive:
            for mapping, (start, size) in sorted(r.maps[name].items()):
                state.append((name, mapping, p.observe(start, size)))
    return state


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
@pytest.mark.parametrize(("backend", "path"), SAME_RUN)
def test_trace_runs_the_scenario_as_run_does(backend: str, kernel: str, path: Path) -> None:
    """Same observations, same final state (counters, free frames, every page)."""
    try:
        scenario = Scenario.parse(path.read_text())
    except cowcore.ScenarioSyntaxError:
        pytest.skip("a scenario that does not parse")
    plain = _Runner(kernel, backend, False, None)
    traced = _TraceRunner(kernel, backend, False, None)
    results = []
    for runner in (plain, traced):
        with contextlib.suppress(cowcore.ScenarioError):
            runner.run(scenario.statements)
        results.append((runner.observations, _final_state(runner)))
    assert results[0] == results[1]


def _check_claim(runner: _TraceRunner, e: TraceEntry) -> None:
    """What the record says against the frames: before the statement (``e.before``) and in
    the page tables right after the access."""
    a, before = e.access, e.before
    now = runner.procs[e.proc].translate(e.addr).pfn
    assert now == a.pfn, f"{e.explain()}: the page is at {now}"
    where = e.explain()
    if AccessFlags.SWAP_IN in a.flags or a.outcome is Outcome.SWAP_IN:
        # the page was in swap: what a reuse or copy after the swap-in saw has no frame before
        assert before.frame_kind == "swap", where
    if before.frame_kind == "swap":
        # in swap when the statement began (an earlier page's large swap-in may have brought
        # it back): no frame to compare
        assert a.outcome in (
            Outcome.NO_FAULT,
            Outcome.SWAP_IN,
            Outcome.COW_REUSE,
            Outcome.COW_COPY,
            Outcome.UNSHARE,
        ), where
    elif a.outcome in (Outcome.COW_REUSE, Outcome.PMD_REUSE):
        assert before.present and before.pfn == a.pfn, f"reuse moved the page: {where}"
    elif a.outcome in (Outcome.COW_COPY, Outcome.PMD_SPLIT_COPY):
        assert before.present and before.pfn != a.pfn, f"copy kept the frame: {where}"
    elif a.outcome in (Outcome.ZERO_PAGE, Outcome.HUGE_ZERO_PAGE):
        assert not before.present, where
    elif a.outcome is Outcome.ANON_ALLOC:
        if a.reason is Reason.HUGE_ZERO_NEW_THP:
            assert before.frame_kind == "huge_zero", where
        else:
            assert not before.present, where
    elif a.outcome is Outcome.NO_FAULT and before.present:
        assert before.pfn == a.pfn, where


@pytest.mark.parametrize(("version", "path"), CASES)
def test_trace_agrees_with_recorded_frames(version: str, path: Path) -> None:
    """For every recorded conformance scenario: the traced run reproduces the recording
    (whose frames, named by first appearance, match the simulator's), and every access's
    claim agrees with the simulator's frames before and after it: a reuse keeps the page's
    frame, a copy changes it, a first touch finds nothing."""
    backend = cowcore.DEFAULT_BACKEND
    runner = _TraceRunner(profile_for(version), backend, False, None)
    runner.on_entry = lambda e: _check_claim(runner, e)
    try:
        runner.run(Scenario.parse(path.read_text()).statements)
    except cowcore.ScenarioError:
        pass  # the error observation is the last one
    except cowcore.ScenarioSyntaxError as exc:
        runner.observations.append({"error": str(exc)})
    lines = (EXPECTED / version / f"{path.stem}.jsonl").read_text().splitlines()
    expected = [json.loads(line) for line in lines if line.strip()]
    diffs = cowcore.compare_observations(expected, runner.observations)
    assert not diffs, "\n".join(diffs)


def test_cost_prices_each_access_by_its_events() -> None:
    """``--cost``: each access made alone and priced by the events it emitted, under a given
    model (here the built-in table): a fault costs at least its fault's price, an access
    without a fault costs nothing, and the machine ends as the batched trace leaves it."""
    from cowcore.cost import DEFAULT  # noqa: PLC0415

    scenario = Scenario.parse(SEED.read_text(encoding="utf-8"))
    priced = trace_scenario(scenario, cost=DEFAULT)
    plain = trace_scenario(scenario)
    assert [e.access for e in priced.entries] == [e.access for e in plain.entries]
    assert priced.observations == plain.observations
    for e in priced.entries:
        assert e.est_ns is not None
        if e.access.faults == 0:
            assert e.est_ns == 0
        else:
            assert e.est_ns >= min(DEFAULT.fault_write, DEFAULT.fault_wp)
    assert "us est.)" in priced.entries[0].explain()
