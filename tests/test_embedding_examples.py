"""The three embedding examples replay the same trace to the same output, byte for byte:
``examples/replay.py`` (Python, on every backend), ``rust/cowcore-core/examples/replay.rs``
(Rust) and ``rust/cowcore-capi/examples/replay.c`` (C: its own test, ``c_example.rs``, holds
it to the core's answers). Each prints the outcome, reason and physical address of every
access (docs/embedding.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cowcore

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "rust/cowcore-capi/examples/trace.txt"


def python_example(kernel: str, backend: str) -> str:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples/replay.py"),
            str(TRACE),
            kernel,
            "--backend",
            backend,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_python_example_on_every_backend(kernel: str) -> None:
    outputs = {b: python_example(kernel, b) for b in cowcore.BACKENDS}
    first = next(iter(outputs.values()))
    assert all(o == first for o in outputs.values()), outputs
    lines = first.splitlines()
    assert lines[0] == f"cowcore {cowcore.__version__}, profile {kernel}"
    # the seed's decision, in words the reader can grep for
    reuse = "COW_REUSE/LARGE_EXCLUSIVE" if kernel == "6.15" else "COW_COPY/LARGE_NO_PTE_REUSE"
    assert any(reuse in line for line in lines), first
    assert any("SEGFAULT/SEGV_PROTECTION phys -" in line for line in lines)


@pytest.mark.parametrize("kernel", ["6.12", "6.15"])
def test_rust_example_prints_what_python_prints(kernel: str) -> None:
    cargo = shutil.which("cargo")
    if cargo is None or not (ROOT / "Cargo.toml").exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the Rust example: cargo is not on PATH")
        pytest.skip("needs cargo and the source tree")
    rust = subprocess.run(
        [cargo, "run", "-q", "-p", "cowcore-core", "--example", "replay", "--", str(TRACE), kernel],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert rust == python_example(kernel, cowcore.DEFAULT_BACKEND)
