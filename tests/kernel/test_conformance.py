"""(a) The simulator reproduces every recorded real-kernel output, on every backend.

Each ``scenarios/NAME.cow`` has recordings ``expected/<version>/NAME.jsonl`` made on real
Debian kernels by the kernel runner. Version 6.12 is checked against the ``6.12`` profile and
every later version against ``6.15``. A disagreement is fixed in the simulator, never in the
recording.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cowcore

HERE = Path(__file__).resolve().parent
SCENARIOS = sorted((HERE / "scenarios").glob("*.cow"))
VERSIONS = sorted(p.name for p in (HERE / "expected").iterdir() if p.is_dir())


def profile_for(version: str) -> str:
    major, minor = (int(x) for x in version.split(".")[:2])
    return "6.12" if (major, minor) < (6, 15) else "6.15"


CASES = [
    pytest.param(version, path, id=f"{version}-{path.stem}")
    for version in VERSIONS
    for path in SCENARIOS
    if (HERE / "expected" / version / f"{path.stem}.jsonl").exists()
]


def test_the_suite_is_complete() -> None:
    assert len(SCENARIOS) >= 40
    assert "6.12" in VERSIONS
    assert any(profile_for(v) == "6.15" for v in VERSIONS)
    for version in VERSIONS:
        missing = [
            p.stem
            for p in SCENARIOS
            if not (HERE / "expected" / version / f"{p.stem}.jsonl").exists()
        ]
        assert not missing, f"no {version} recording for {missing}"


@pytest.mark.parametrize("backend", cowcore.BACKENDS)
@pytest.mark.parametrize(("version", "path"), CASES)
def test_simulator_reproduces_kernel(backend: str, version: str, path: Path) -> None:
    lines = (HERE / "expected" / version / f"{path.stem}.jsonl").read_text().splitlines()
    expected = [json.loads(line) for line in lines if line.strip()]
    actual = cowcore.run_scenario(
        path.read_text(), backend=backend, kernel=profile_for(version), check=True
    )
    diffs = cowcore.compare_observations(expected, actual)
    assert not diffs, f"{path.name} on {version}:\n" + "\n".join(diffs)
