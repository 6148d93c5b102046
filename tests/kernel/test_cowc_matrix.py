"""cow.c's anonymous test matrix (issue 16): the files, the recordings and the assertion.

The scenarios ``scenarios/cowc-*.cow`` are made by ``cowc_matrix.py``; test_conformance.py
already holds both backends to their recordings on every line. Here: the files are exactly what
the generator makes, every recording and the simulator's output on every profile pass cow.c's
own assertion (:func:`cowc_matrix.check`), the checker fails a run that leaks, and the table in
docs/cowc-matrix.md is the one the recordings give.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

import cowcore

from . import cowc_matrix as matrix
from .test_conformance import profile_for

HERE = Path(__file__).resolve().parent
EXPECTED = HERE / "expected"
VERSIONS = sorted(p.name for p in EXPECTED.iterdir() if p.is_dir())
CASES = matrix.cases()

Observation = dict[str, Any]


def recording(version: str, case: matrix.Case) -> list[Observation]:
    """The observations recorded for ``case`` on kernel line ``version``."""
    path = EXPECTED / version / f"{case.name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_name(name: str) -> matrix.Case:
    """The case called ``name``."""
    return next(c for c in CASES if c.name == name)


def test_files_are_what_the_generator_makes() -> None:
    on_disk = {p.stem: p.read_text() for p in (HERE / "scenarios").glob(f"{matrix.PREFIX}*.cow")}
    made = {c.name: c.text for c in CASES}
    assert sorted(on_disk) == sorted(made), "run: python tests/kernel/cowc_matrix.py"
    stale = [name for name in made if on_disk[name] != made[name]]
    assert not stale, f"differ from the generator (python tests/kernel/cowc_matrix.py): {stale}"


def test_the_matrix_is_complete() -> None:
    # 11 tests x (base + PMD + 4 setups at each of 4 THP sizes, and the swapped-out twins of
    # base, PMD, PTE-mapped and single PTE); names are unique.
    swapped = 1 + 1 + 2 * len(matrix.THP_SIZES)
    assert len(CASES) == 11 * (1 + 1 + 4 * len(matrix.THP_SIZES) + swapped)
    assert sum(c.setup.swap for c in CASES) == 11 * swapped
    assert len({c.name for c in CASES}) == len(CASES)
    for case in CASES:
        assert case.observes, case.name
        roles = {o.role for o in case.observes}
        assert "writer" in roles, case.name
        assert roles & {"before", "pinned"}, case.name


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_recording_passes_cowc(version: str, case: matrix.Case) -> None:
    observations = recording(version, case)
    if profile_for(version) == "6.1" and case.mthp:
        # A PMD-only kernel refuses the mTHP size: the one line, at the `thp size` statement.
        assert matrix.thp_size_error(case, observations), observations
        return
    problems = matrix.check(case, observations)
    assert not problems, f"{case.name} on {version}:\n" + "\n".join(problems)


@pytest.mark.parametrize("profile", ["6.1", "6.12", "6.15"])
@pytest.mark.parametrize("backend", cowcore.BACKENDS)
def test_simulator_passes_cowc(backend: str, profile: str) -> None:
    # One test per backend and profile over the whole matrix (without --check, which the
    # conformance test already runs on every scenario): cow.c's assertion on the output.
    failed = {}
    for case in CASES:
        out = cowcore.run_scenario(case.text, backend=backend, kernel=profile)
        if profile == "6.1" and case.mthp:
            assert matrix.thp_size_error(case, out), case.name
            continue
        problems = matrix.check(case, out)
        if problems:
            failed[case.name] = problems
    assert not failed, failed


# -- the checker can fail ----------------------------------------------------------------------


def _pages(observations: list[Observation], role: matrix.Role, case: matrix.Case) -> list[int]:
    """Indices into ``observations`` of the pages of the observes with ``role``."""
    out, i = [], 0
    page_indices = [k for k, o in enumerate(observations) if "present" in o]
    for obs in case.observes:
        for _ in range(obs.pages):
            if obs.role == role:
                out.append(page_indices[i])
            i += 1
    return out


def test_checker_passes_a_good_run() -> None:
    case = by_name("cowc-pte-cow-in-parent-64K")
    assert matrix.check(case, recording("7.3", case)) == []


def test_checker_catches_the_protected_side_seeing_the_write() -> None:
    # cow.c's "Leak from parent into child": the child reads 0xff.
    case = by_name("cowc-pte-cow-in-parent-64K")
    bad = copy.deepcopy(recording("7.3", case))
    bad[_pages(bad, "protected", case)[3]]["content"] = matrix.WRITTEN
    problems = matrix.check(case, bad)
    # The child's frame is the one it held before the write, so both rules fire.
    assert len(problems) == 2, problems
    assert "the write leaked" in problems[0] and "content 255, not 1" in problems[1]


def test_checker_catches_a_write_to_a_frame_the_pipe_holds() -> None:
    # vmsplice() + unmap in child: had the parent's write reused the page, the pipe would read
    # the new content. Give the writer's page the frame the child's pipe holds.
    case = by_name("cowc-base-vmsplice-in-child-4K")
    bad = copy.deepcopy(recording("6.12", case))
    held = bad[_pages(bad, "before", case)[0]]["frame"]
    bad[_pages(bad, "writer", case)[0]]["frame"] = held
    problems = matrix.check(case, bad)
    assert len(problems) == 1 and "the write leaked" in problems[0], problems


def test_checker_catches_a_pin_that_misses_the_write() -> None:
    # "Longterm R/W pin is not reliable": the write went to a new frame, not the pinned one.
    case = by_name("cowc-pmd-iouring-ro-2M")
    bad = copy.deepcopy(recording("7.3", case))
    bad[_pages(bad, "writer", case)[-1]]["frame"] = "f999"
    problems = matrix.check(case, bad)
    assert len(problems) == 1 and "not to the pinned frame" in problems[0], problems


def test_checker_catches_missing_and_absent_pages() -> None:
    case = by_name("cowc-single-pte-ro-pin-on-shared-16K")
    good = recording("7.3", case)
    assert matrix.check(case, good[:-2])  # a page observation short
    bad = copy.deepcopy(good)
    bad[_pages(bad, "writer", case)[0]]["present"] = False
    assert any("not present" in p for p in matrix.check(case, bad))
    assert matrix.check(case, [{"error": "line 3: thp size 16K: ..."}])


def test_outcome_words() -> None:
    assert (
        matrix.outcome(
            by_name("cowc-base-cow-in-parent-4K"),
            recording("7.3", by_name("cowc-base-cow-in-parent-4K")),
        )
        == "copy"
    )
    c = by_name("cowc-pmd-iouring-fork-2M")
    assert matrix.outcome(c, recording("7.3", c)) == "fork: copy; write: reuse"
    c = by_name("cowc-pte-ro-pin-on-ro-exclusive-64K")
    assert matrix.outcome(c, recording("7.3", c)) == "unshare: reuse"
    c = by_name("cowc-pte-cow-in-parent-64K")
    assert matrix.outcome(c, recording("6.1", c)) == "no mTHP"


def test_the_doc_table_is_the_recordings() -> None:
    text = matrix.DOC.read_text()
    start = text.index(matrix.TABLE_START) + len(matrix.TABLE_START)
    end = text.index(matrix.TABLE_END)
    assert text[start:end] == matrix.render_table(matrix.load_recordings()), (
        "re-render: python tests/kernel/cowc_matrix.py --table"
    )


def test_a_test_can_be_limited_to_setups() -> None:
    # cow.c runs its collapse tests on the PMD setup alone: one field of the entry says so.
    base, pmd = (next(s for s in matrix.SETUPS if s.slug == slug) for slug in ("base", "pmd"))
    limited = matrix.Test("t", "test_t", "T", lambda r: [], setups=("pmd",))
    assert limited.runs_on(pmd) and not limited.runs_on(base)
    assert all(t.runs_on(base) and t.runs_on(pmd) for t in matrix.TESTS)
