"""The conformance suite against real kernels: a fresh run must equal the recordings exactly.

For every kernel fetched by ``cowcore kernel fetch`` (``$COWCORE_KERNELS_DIR``, default
``.kernels/`` at the repository root) that has recordings in ``tests/kernel/expected/<X.Y>/``,
all scenarios of ``tests/kernel/scenarios/`` run in one boot and every scenario's observation
lines must equal its ``.jsonl`` recording byte for byte.

Without qemu or kernels the tests are skipped with the reason; in CI (``CI`` set) with
``COWCORE_REQUIRE_KERNELS=1`` that is a failure instead, so a broken CI setup cannot pass
silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cowcore.kernel.fetch import Kernel, load_kernels
from cowcore.kernel.runner import RunResult, run_files

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
EXPECTED = HERE / "expected"
REPO = HERE.parents[1]


def _kernels_dir() -> Path:
    return Path(os.environ.get("COWCORE_KERNELS_DIR") or REPO / ".kernels")


def _required() -> bool:
    return bool(os.environ.get("CI")) and os.environ.get("COWCORE_REQUIRE_KERNELS") == "1"


def _unavailable(reason: str) -> None:
    """Skip, or fail when CI requires the kernels."""
    if _required():
        pytest.fail(f"COWCORE_REQUIRE_KERNELS=1 but {reason}")
    pytest.skip(reason)


def _recorded_series() -> list[str]:
    return sorted(p.name for p in EXPECTED.iterdir() if p.is_dir())


def _scenario_files() -> list[Path]:
    return sorted(SCENARIOS.glob("*.cow"))


@pytest.fixture(scope="module")
def kernels() -> dict[str, Kernel]:
    """The fetched kernels that have recordings, by series."""
    if shutil.which("qemu-system-x86_64") is None:
        _unavailable("qemu-system-x86_64 is not installed (apt install qemu-system-x86)")
    if shutil.which("gcc") is None:
        _unavailable("gcc is not installed (needed to build the static probe)")
    directory = _kernels_dir()
    fetched = {k.series: k for k in load_kernels(directory)}
    if not fetched:
        _unavailable(
            f"no kernels in {directory} (run `cowcore kernel fetch --kernels {directory}`)"
        )
    usable = {s: k for s, k in fetched.items() if s in _recorded_series()}
    if _required():
        missing = [s for s in fetched if s not in usable]
        if missing:
            pytest.fail(
                f"fetched kernel line(s) {missing} have no recordings in {EXPECTED}: record "
                "them with `cowcore kernel run tests/kernel/scenarios/*.cow --kernel X.Y "
                f"--kernels {directory} --out tests/kernel/expected/X.Y` (twice, check "
                "identical)"
            )
        if "6.12" not in usable or not any(s.startswith("7.") for s in usable):
            pytest.fail(f"need a 6.12 and a 7.x kernel with recordings, have {sorted(usable)}")
    return usable


_runs: dict[str, RunResult] = {}


def _run(kernel: Kernel) -> RunResult:
    """One boot per kernel for all scenarios (cached across the parametrized tests)."""
    if kernel.series not in _runs:
        _runs[kernel.series] = run_files(_scenario_files(), kernel.vmlinuz)
    return _runs[kernel.series]


def test_suite_size() -> None:
    """The suite holds at least 40 scenarios and every one has a recording for every line."""
    names = {p.stem for p in _scenario_files()}
    assert len(names) >= 40
    for series in _recorded_series():
        recorded = {p.stem for p in (EXPECTED / series).glob("*.jsonl")}
        assert recorded == names, f"expected/{series} does not match scenarios/"


@pytest.mark.parametrize("series", _recorded_series())
def test_kernel_matches_recordings(kernels: dict[str, Kernel], series: str) -> None:
    """A fresh run on the real kernel prints exactly the recorded observations."""
    if series not in kernels:
        if _required() and (series == "6.12" or not any(s.startswith("7.") for s in kernels)):
            pytest.fail(f"no fetched {series} kernel")
        pytest.skip(f"no fetched {series} kernel in {_kernels_dir()}")
    result = _run(kernels[series])
    mismatches: list[str] = []
    for name, lines in zip(result.names, result.lines, strict=True):
        expected = (EXPECTED / series / f"{name}.jsonl").read_text().splitlines()
        if lines != expected:
            mismatches.append(name)
    assert not mismatches, f"{series}: fresh kernel output differs from the recordings of " + (
        ", ".join(mismatches)
    )
