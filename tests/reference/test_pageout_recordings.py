"""The reference backend reproduces the exploratory ``pageout`` recordings (issue 16).

``tests/kernel/exploratory/pageout/out-<line>.txt`` holds what each ``*.cow`` there printed
on the real kernels (each scenario's lines follow its ``{"scenario":...}`` line). Each
scenario is run on the reference backend under the profile the line is held to (6.1, 6.12,
and 6.15 for 7.2 and 7.3) and compared as the conformance suite compares
(``compare_observations``), and more strictly for the swap counters: a ``stats`` key the
kernel printed must be printed, and one it did not print must not be (the simulator's own
``pgreuse``/``cow_copy`` aside). Scenarios without a recording yet are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cowcore
from cowcore.scenario import EXTRA_STATS

HERE = Path(__file__).resolve().parents[1] / "kernel" / "exploratory" / "pageout"
LINES = {"6.1": "6.1", "6.12": "6.12", "7.2": "6.15", "7.3": "6.15"}


def recordings(line: str) -> dict[str, list[dict[str, object]]]:
    """The recorded observations of each scenario on ``line``, by scenario name."""
    out: dict[str, list[dict[str, object]]] = {}
    current: list[dict[str, object]] | None = None
    for text in (HERE / f"out-{line}.txt").read_text().splitlines():
        if not text.startswith("{"):
            continue
        obs = json.loads(text)
        if "scenario" in obs:
            current = out.setdefault(str(obs["scenario"]), [])
            continue
        assert current is not None
        current.append(obs)
    return out


CASES = [
    pytest.param(line, path, id=f"{line}-{path.stem}")
    for line in LINES
    for path in sorted(HERE.glob("*.cow"))
]


@pytest.mark.parametrize(("line", "path"), CASES)
def test_reference_reproduces_pageout_recording(line: str, path: Path) -> None:
    recorded = recordings(line)
    if path.stem not in recorded:
        pytest.skip(f"{path.name} has no {line} recording yet")
    expected = recorded[path.stem]
    actual = cowcore.run_scenario(
        path.read_text(), backend="reference", kernel=LINES[line], check=True
    )
    diffs = cowcore.compare_observations(expected, actual)
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if "stats" in e and "stats" in a:
            es, as_ = e["stats"], a["stats"]
            assert isinstance(es, dict) and isinstance(as_, dict)
            printed = set(as_) - set(EXTRA_STATS)
            if printed != set(es):
                diffs.append(f"#{i} stats keys: {sorted(es)} != {sorted(printed)}")
    assert not diffs, f"{path.name} on {line}:\n" + "\n".join(diffs)
