"""The conformance suite against real kernels: a fresh run must equal the recordings exactly.

For every kernel fetched by ``cowcore kernel fetch`` (``$COWCORE_KERNELS_DIR``, default
``.kernels/`` at the repository root) that has recordings in ``tests/kernel/expected/<X.Y>/``,
all scenarios of ``tests/kernel/scenarios/`` run in one boot and every scenario's observation
lines must equal its ``.jsonl`` recording byte for byte.

A fetched line with no recordings yet (Debian published a newer 7.x than the recordings) is
checked against the recordings of the newest recorded line of the same major version: if they
agree the suite passes with a notice saying so, and if they do not it fails with the exact
command that records the new line. So a landing never depends on what the archive published
that day, and a behaviour change in a new kernel is never missed.

Without qemu or kernels the tests are skipped with the reason; in CI (``CI`` set) with
``COWCORE_REQUIRE_KERNELS=1`` that is a failure instead, so a broken CI setup cannot pass
silently.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cowcore.kernel.fetch import DEBIAN_LINES, Kernel, load_kernels
from cowcore.kernel.modules import guest_modules
from cowcore.kernel.runner import RunResult, run_files, run_texts

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


def _series_key(series: str) -> tuple[int, ...]:
    return tuple(int(part) for part in series.split("."))


def newest_recorded_line(series: str, recorded: list[str]) -> str | None:
    """The newest recorded line of the same major version as ``series`` and older than it."""
    key = _series_key(series)
    older = [s for s in recorded if _series_key(s)[0] == key[0] and _series_key(s) < key]
    return max(older, key=_series_key, default=None)


def record_command(series: str) -> str:
    """The command that records a kernel line (run it twice and check the output is equal)."""
    return (
        f"cowcore kernel run tests/kernel/scenarios/*.cow --kernel {series} "
        f"--kernels {_kernels_dir()} --out tests/kernel/expected/{series}"
    )


@pytest.fixture(scope="module")
def fetched() -> dict[str, Kernel]:
    """Every fetched kernel, by series (skips, or fails in CI, when none can run)."""
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
    if _required():
        recorded = _recorded_series()
        checkable = [
            s for s in fetched if s in recorded or newest_recorded_line(s, recorded) is not None
        ]
        named = [s for s in DEBIAN_LINES if s in recorded]
        if any(s not in checkable for s in named) or not any(s.startswith("7.") for s in checkable):
            pytest.fail(
                f"need a {', a '.join(named)} and a 7.x kernel that recordings can check, "
                f"have {sorted(fetched)}"
            )
    return fetched


@pytest.fixture(scope="module")
def kernels(fetched: dict[str, Kernel]) -> dict[str, Kernel]:
    """The fetched kernels that have recordings, by series."""
    return {s: k for s, k in fetched.items() if s in _recorded_series()}


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


def _mismatches(result: RunResult, series: str) -> list[str]:
    """The scenarios whose fresh output differs from the recordings of ``series``."""
    return [
        name
        for name, lines in zip(result.names, result.lines, strict=True)
        if lines != (EXPECTED / series / f"{name}.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize("series", _recorded_series())
def test_kernel_matches_recordings(kernels: dict[str, Kernel], series: str) -> None:
    """A fresh run on the real kernel prints exactly the recorded observations."""
    if series not in kernels:
        if _required() and series in DEBIAN_LINES:
            pytest.fail(f"no fetched {series} kernel")
        pytest.skip(f"no fetched {series} kernel in {_kernels_dir()}")
    mismatches = _mismatches(_run(kernels[series]), series)
    assert not mismatches, f"{series}: fresh kernel output differs from the recordings of " + (
        ", ".join(mismatches)
    )


def test_unrecorded_lines_match_the_newest_recorded_line(
    fetched: dict[str, Kernel], capsys: pytest.CaptureFixture[str]
) -> None:
    """A fetched line without recordings must print what the newest recorded line printed."""
    recorded = _recorded_series()
    unrecorded = sorted((s for s in fetched if s not in recorded), key=_series_key)
    if not unrecorded:
        pytest.skip("every fetched kernel line has recordings")
    failures: list[str] = []
    for series in unrecorded:
        base = newest_recorded_line(series, recorded)
        if base is None:
            failures.append(
                f"{series} has no recordings and no older {_series_key(series)[0]}.x line to be "
                f"checked against: record it with `{record_command(series)}` (twice, identical)"
            )
            continue
        mismatches = _mismatches(_run(fetched[series]), base)
        if mismatches:
            failures.append(
                f"{fetched[series].version} differs from the {base} recordings in "
                f"{', '.join(mismatches)}: the new kernel behaves differently; record it with "
                f"`{record_command(series)}` (twice, identical) and look at what changed"
            )
            continue
        with capsys.disabled():
            print(
                f"\nnotice: kernel {fetched[series].version} has no recordings of its own; it "
                f"printed exactly the {base} recordings for all {len(_scenario_files())} "
                f"scenarios (record it with `{record_command(series)}`)"
            )
    assert not failures, "\n".join(failures)


def test_newest_recorded_line() -> None:
    """The line an unrecorded kernel is checked against: same major, newest older line."""
    recorded = ["6.1", "6.12", "7.2", "7.3"]
    assert newest_recorded_line("7.4", recorded) == "7.3"
    assert newest_recorded_line("6.13", recorded) == "6.12"
    assert newest_recorded_line("7.10", [*recorded, "7.9"]) == "7.9"
    assert newest_recorded_line("7.1", recorded) is None
    assert newest_recorded_line("8.0", recorded) is None


# The swap device (zram, loaded from the kernel's own modules) that `pageout` needs. Hand-derived
# expectations, true on every line recorded so far: MADV_PAGEOUT reclaims the private page at 0
# (its PTE becomes a swap entry: pagemap bit 62) and leaves the page at 4K, which the child
# still maps, where it is (madvise_cold_or_pageout_pte_range skips a folio mapped more than
# once); one page is written to swap and, after the read that swaps it back in, one is read.
SWAP_PROBE = """\
P mmap A 8K
P write A 0 8K 7
P fork C
C write A 0 4K 9
P pageout A 0 8K
P observe A 0 8K
P smaps A
P read A 0 4K
P observe A 0 4K
stats
"""


def _swap_lines(kernel: Kernel) -> list[dict[str, object]]:
    return [json.loads(line) for line in run_texts([("swap", SWAP_PROBE)], kernel.vmlinuz).lines[0]]


@pytest.mark.parametrize("series", _recorded_series())
def test_guest_has_a_swap_device(fetched: dict[str, Kernel], series: str) -> None:
    """`pageout` reclaims to the guest's zram swap device: the page observes as
    ``"frame":"swap"`` with the other keys null, smaps counts it in Swap, and a read brings
    it back with its content (a kernels directory fetched before `pageout` lacks the zram
    module of the 7.x lines: `cowcore kernel fetch` adds it)."""
    if series not in fetched:
        pytest.skip(f"no fetched {series} kernel in {_kernels_dir()}")
    if not guest_modules(fetched[series].vmlinuz):
        _unavailable(
            f"the {series} kernel in {_kernels_dir()} has no zram module (fetched before "
            f"`pageout`): `cowcore kernel fetch --kernels {_kernels_dir()}` adds it"
        )
    out = _swap_lines(fetched[series])
    assert "error" not in out[0], out[0]
    swapped, kept, smaps, back, stats = out
    assert swapped["present"] is False and swapped["frame"] == "swap"
    assert all(swapped[k] is None for k in ("folio_pages", "mapcount", "exclusive", "content"))
    assert kept["present"] is True and kept["mapcount"] == 2
    assert isinstance(smaps, dict) and smaps["smaps"]["Swap"] == 4  # type: ignore[index]
    assert smaps["smaps"]["Rss"] == 4  # type: ignore[index]
    assert back["present"] is True and back["content"] == 7 and back["mapcount"] == 1
    counters = stats["stats"]
    assert isinstance(counters, dict)
    assert counters["pswpout"] == 1 and counters["pswpin"] == 1
