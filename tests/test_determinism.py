"""Determinism: the same scenario gives byte-identical output on every run and on every
backend, for every scenario of the conformance suite and the examples, under both
profiles, and the same through the ``cowcore run`` command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cowcore
from cowcore.errors import OutOfMemoryError
from cowcore.scenario import _message, dumps

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted(
    [*(ROOT / "tests" / "kernel" / "scenarios").glob("*.cow"), *(ROOT / "examples").glob("*.cow")]
)


def text(path: Path, backend: str, kernel: str | None) -> str:
    out = cowcore.run_scenario(path.read_text(), backend=backend, kernel=kernel, name=path.stem)
    return "".join(dumps(obs) + "\n" for obs in out)


def test_there_are_scenarios() -> None:
    assert len(FILES) > 50


@pytest.mark.parametrize("kernel", [None, "6.12", "6.15"])
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_same_output_every_run_and_backend(path: Path, kernel: str | None) -> None:
    outputs = {(b, run): text(path, b, kernel) for b in cowcore.BACKENDS for run in (1, 2)}
    first = next(iter(outputs.values()))
    for key, out in outputs.items():
        assert out == first, f"{path.name} {key} differs"


def test_error_text_does_not_depend_on_the_backend() -> None:
    """Regression: an mprotect/madvise over unmapped pages printed the backend's own
    message, which the Rust core and the reference word differently."""
    scenario = "P mmap A 8K\nP munmap A 4K 4K\nP madvise A 0 8K dontneed\n"
    outs = {b: cowcore.run_scenario(scenario, backend=b) for b in cowcore.BACKENDS}
    assert all(out == outs["reference"] for out in outs.values())
    assert outs["reference"] == [
        {"error": "line 3: madvise A: range includes unmapped pages (ENOMEM)"}
    ]


def test_cli_output_is_byte_identical() -> None:
    outs = []
    for backend in cowcore.BACKENDS:
        for _ in range(2):
            run = subprocess.run(
                [sys.executable, "-m", "cowcore", "run", "--backend", backend, *map(str, FILES)],
                capture_output=True,
                timeout=600,
                check=False,
            )
            assert run.returncode in (0, 1), run.stderr[-2000:]
            outs.append(run.stdout)
    assert outs[0] and all(out == outs[0] for out in outs)


def test_backend_errors_print_backend_independent_text() -> None:
    """Errors that reach a scenario from the backend print their class, not the backend's
    own wording (e.g. an out-of-memory error, which needs gigabytes of writes to provoke)."""
    assert _message(OutOfMemoryError("no free block of order 0 (4 KiB)")) == "out of memory"
    assert _message(OutOfMemoryError("out of memory")) == "out of memory"
    assert _message(cowcore.InvalidAddressError("no room")) == "invalid address (ENOMEM)"
    assert _message(cowcore.InvalidArgumentError("x")) == "InvalidArgumentError"
