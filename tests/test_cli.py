"""The ``cowcore`` command line: output format, several files, errors, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cowcore
from cowcore.cli import main

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "seed.cow"


def test_run_prints_observation_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(SEED)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 17
    assert all(line == json.dumps(json.loads(line), separators=(",", ":")) for line in lines)
    assert json.loads(lines[0])["folio_pages"] == 16


def test_several_files_get_scenario_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.cow"
    bad.write_text("P mmap A 2M\nP observe A 0 4K\nP write B 0 4K\n")
    assert main(["run", str(SEED), str(bad)]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"scenario": "seed"}
    assert lines[18] == {"scenario": "bad"}
    assert lines[-1] == {"error": "line 3: process P has no mapping B"}


def test_kernel_override_and_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--kernel", "6.12", "--check", str(SEED)]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["folio_pages"] == 1, "6.12 copied the written page"


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "/nonexistent.cow"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_console_script_has_no_traceback_on_errors(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.cow"
    bad.write_text("P frobnicate\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cowcore", "run", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout.strip() == '{"error":"line 1: unknown verb \'frobnicate\'"}'
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"P mmap A 2M\n\xff\n", 2),
        (b"\xc3", 1),  # a sequence cut short by the end of the file
        (b"# caf\xc3\xa9\r\nP mmap A 2M\r\nP write A 0 4K # \xe9t\xe9\n", 3),  # CRLF, Latin-1
        (b"P mmap A 2M\rP observe A 0 4K\x00\r\x80", 3),  # a lone CR ends a line too
    ],
)
def test_undecodable_file_is_an_error_line(
    data: bytes, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not UTF-8 gets the contract's error line (naming the file and the line
    of its first undecodable byte) and status 1; the files after it still run."""
    bad = tmp_path / "bad.cow"
    bad.write_bytes(data)
    assert main(["run", str(bad), str(SEED)]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0] == {"scenario": "bad"}
    assert set(lines[1]) == {"error"}
    assert lines[1]["error"].startswith(f"line {line}: {bad} is not UTF-8 text (byte 0x")
    assert lines[2] == {"scenario": "seed"} and len(lines) == 20


def test_undecodable_file_from_the_console_script(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.cow"
    bad.write_bytes(b"# r\xe9sum\xe9\nP mmap A 2M\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cowcore", "run", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"error": f"line 1: {bad} is not UTF-8 text (byte 0xe9)"}
    assert proc.stderr == ""


@pytest.mark.parametrize(
    "statement",
    [
        "P write A 0 4K " + "9" * 5000,
        "P write A " + "9" * 5000 + "K 4K",
        "P write A 0 4K " + "1" + "0" * 20,
        "P mmap B " + "4" * 21 + "K",
    ],
)
def test_huge_number_is_an_error_line(
    statement: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cow = tmp_path / "huge.cow"
    cow.write_text(f"P mmap A 2M\n{statement}\n")
    assert main(["run", str(cow)]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["error"].startswith("line 2: ")


@pytest.mark.skipif(
    "rust" not in cowcore.BACKENDS, reason="the table compares Rust with the reference"
)
def test_bench_prints_every_row_with_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    """``cowcore bench`` at toy sizes: every workload row is there, each ratio a positive
    number computed from the two columns beside it (no times are checked)."""
    assert main(["bench", "--mib", "4", "--ref-mib", "1", "--rounds", "1"]) == 0
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and not line.startswith("| workload") and "---" not in line
    ]
    labels = {r[0] for r in rows}
    for want in (
        "write, fork, exit, rewrite (4K pages)",
        "COW copy after fork (64K mTHP)",
        "MADV_PAGEOUT, read back (4K pages, 4 MiB)",
        "MADV_PAGEOUT, read back (64K mTHP, 4 MiB)",
        "pre-fork server, 4 MiB, 64 children",
        "random writes after fork, one `write_pages` call (64 MiB, 20000 pages)",
        "single-page write, no fault (`proc.write(addr)`)",
    ):
        assert want in labels
    fault_rows = [r for r in rows if len(r) == 7]
    call_rows = [r for r in rows if len(r) == 4 and r[0] != "per call"]
    # 13 rows before issue 16, then pageout and swap-in for 4K and 64K
    assert len(fault_rows) == 17 and len(call_rows) == 3
    for r in fault_rows:
        rust, ref, ratio = float(r[2]), float(r[3]), float(r[4].rstrip("x"))
        assert rust > 0 and ratio == pytest.approx(ref / rust, rel=0.01, abs=1)
    if shutil.which("gcc") is not None:  # the native baseline ships in the package
        native = [r for r in fault_rows if r[1] in ("first_write", "fork", "reuse", "copy")]
        assert native and all(float(r[5]) > 0 for r in native), native
    for r in call_rows:
        rust, ref, ratio = float(r[1]), float(r[2]), float(r[3].rstrip("x"))
        assert rust > 0 and ratio == pytest.approx(ref / rust, rel=0.01, abs=1)


@pytest.mark.skipif(
    "rust" not in cowcore.BACKENDS, reason="the table compares Rust with the reference"
)
def test_bench_without_gcc_says_why_native_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without gcc the native columns are ``-`` and stderr says that gcc is missing (it used
    to leave the columns empty without a word)."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no gcc
    monkeypatch.setenv("COWCORE_KERNEL_CACHE", str(tmp_path / "cache"))  # no cached build
    assert main(["bench", "--mib", "4", "--ref-mib", "1", "--rounds", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.count("gcc not found") == 1, err
    assert "cowcore bench: no native baseline" in err
    assert "native: not measured (gcc not found" in out
    rows = [line for line in out.splitlines() if line.startswith("| write, fork, exit")]
    assert rows and all(line.endswith("| - | - |") for line in rows), rows
