"""(a) The simulator reproduces every recorded real-kernel output, on every backend.

Each ``scenarios/NAME.cow`` has recordings ``expected/<version>/NAME.jsonl`` made on real
Debian kernels by the kernel runner. Version 6.1 is checked against the ``6.1`` profile, 6.12
against ``6.12`` and every later version against ``6.15``. A disagreement is fixed in the
simulator, never in the recording. A recorded line whose profile the simulator does not have
(none, since the ``6.1`` profile came) would be skipped with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cowcore
from cowcore.protocol import KERNEL_PROFILES

HERE = Path(__file__).resolve().parent
SCENARIOS = sorted((HERE / "scenarios").glob("*.cow"))
VERSIONS = sorted(p.name for p in (HERE / "expected").iterdir() if p.is_dir())


def profile_for(version: str) -> str:
    """The simulator profile a recorded kernel line is held to."""
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) < (6, 12):
        return "6.1"
    return "6.12" if (major, minor) < (6, 15) else "6.15"


def _missing_profile(version: str) -> pytest.MarkDecorator:
    """Skip a line whose profile the simulator does not have yet, saying so."""
    profile = profile_for(version)
    return pytest.mark.skipif(
        profile not in KERNEL_PROFILES,
        reason=f"the simulator has no kernel={profile!r} profile; the {version} recordings "
        "are checked on the real kernel by test_kernel_live.py",
    )


CASES = [
    pytest.param(version, path, id=f"{version}-{path.stem}", marks=_missing_profile(version))
    for version in VERSIONS
    for path in SCENARIOS
    if (HERE / "expected" / version / f"{path.stem}.jsonl").exists()
]


def test_profile_for() -> None:
    assert profile_for("6.1") == "6.1"
    assert profile_for("6.12") == "6.12"
    assert profile_for("7.2") == profile_for("7.10") == "6.15"


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
