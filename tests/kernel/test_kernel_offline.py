"""Tests of the kernel runner that need no kernel: compiler, initramfs, fetch config, CLI, and
the shape of the recordings."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cowcore.kernel import cli
from cowcore.kernel.compile import ScenarioSyntaxError, compile_scenario, parse_size
from cowcore.kernel.fetch import archive_uri
from cowcore.kernel.initramfs import write_initramfs
from cowcore.kernel.runner import RunnerError, _split

HERE = Path(__file__).resolve().parent
PAGE_KEYS = [
    "proc",
    "map",
    "off",
    "present",
    "frame",
    "folio_pages",
    "mapcount",
    "exclusive",
    "content",
]
STATS_KEYS = ["anon_fault_alloc", "anon_fault_fallback", "split"]


def test_parse_size() -> None:
    assert parse_size("4K") == 4096
    assert parse_size("2M") == 2 << 20
    assert parse_size("1G") == 1 << 30
    assert parse_size("8192") == 8192
    assert parse_size("4k") is None
    assert parse_size("-4K") is None


def test_compile_names_and_lines() -> None:
    text = "# c\nkernel 6.12\nthp size 64K always\nP mmap A 2M\n\nP fork C  # x\n"
    text += "C write A 4K 8K 7\nthp zero_page off\nstats\n"
    c = compile_scenario("s", text)
    assert c.lines == [
        "P 0 P",
        "P 1 C",
        "M 0 A",
        "K 3 hugepages-64kB/enabled always",
        "C 4 0 mmap 0 2097152",
        "C 6 0 fork 1",
        "C 7 1 write 0 4096 8192 7",
        "K 8 use_zero_page 0",
        "X 9",
    ]
    assert c.framed(3).startswith("S 3\n") and c.framed(3).endswith("Z\n")


@pytest.mark.parametrize(
    "line",
    [
        "P frobnicate A",  # unknown verb
        "P mmap A 0",  # zero length
        "P mmap A 100",  # misaligned
        "P write A 2K 4K",  # misaligned offset
        "P write A 0 4K x",  # bad value
        "P mprotect A 0 4K wx",  # bad protection
        "P madvise A 0 4K free",  # unknown advice
        "thp size 8K always",  # not an mTHP size
        "thp enabled inherit",  # inherit is per size only
        "kernel 5.10",  # unknown profile
        "P exit now",  # extra token
        "9P exit",  # bad identifier
        "stats now",
    ],
)
def test_syntax_errors(line: str) -> None:
    with pytest.raises(ScenarioSyntaxError) as info:
        compile_scenario("s", "P mmap A 2M\n" + line + "\n")
    assert info.value.line == 2
    assert info.value.observation()["error"].startswith("line 2: ")


def test_initramfs_is_valid_newc(tmp_path: Path) -> None:
    out = tmp_path / "initrd"
    write_initramfs(out, b"\x7fELF-init", {"scenarios": b"S 0\nZ\n"})
    data = out.read_bytes()
    assert data.startswith(b"070701") and b"TRAILER!!!" in data and len(data) % 4 == 0
    if shutil.which("cpio"):
        listing = (
            subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True, check=True)
            .stdout.decode()
            .split()
        )
        assert listing == ["dev", "dev/console", "dev/ttyS1", "proc", "sys", "init", "scenarios"]


def test_split_output() -> None:
    text = '{"begin":0}\n{"a":1}\n{"end":0}\n{"begin":1}\n{"end":1}\n{"done":true}\n'
    assert _split(text, 2) == [['{"a":1}'], []]
    with pytest.raises(RunnerError):
        _split('{"begin":0}\n', 1)


def test_archive_uri_from_deb822(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: x-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n"
        "Signed-By: /k.gpg\n"
    )
    assert archive_uri(d, tmp_path / "none") == ("http://mirror.example/debian", "/k.gpg")


def test_archive_uri_from_list(tmp_path: Path) -> None:
    lst = tmp_path / "sources.list"
    lst.write_text("# x\ndeb [arch=amd64 signed-by=/a.gpg] http://m/debian bookworm main\n")
    assert archive_uri(tmp_path / "nodir", lst) == ("http://m/debian", "/a.gpg")


def test_cli_missing_kernel_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        ["run", str(HERE / "scenarios" / "seed-32K.cow"), "--kernel", str(tmp_path / "nope")]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_module_entry_point_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cowcore.kernel", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "--kernel" in proc.stdout


def _recordings() -> list[Path]:
    return sorted((HERE / "expected").glob("*/*.jsonl"))


def test_recordings_are_exact_observation_lines() -> None:
    """Every recorded line is compact JSON with the keys in the format's order."""
    assert _recordings()
    for path in _recordings():
        for line in path.read_text().splitlines():
            obj = json.loads(line)
            assert json.dumps(obj, separators=(",", ":")) == line, path
            if "proc" in obj:
                assert list(obj) == PAGE_KEYS, path
                if not obj["present"]:
                    assert all(obj[k] is None for k in PAGE_KEYS[4:]), path
            elif "stats" in obj:
                keys = list(obj["stats"])
                assert keys[:3] == STATS_KEYS, path
                assert set(keys[3:]) <= {"thp_fault_alloc", "thp_split_pmd"}, path
            else:
                assert list(obj) == ["error"] and obj["error"].startswith("line "), path


def test_syntax_error_scenarios_match_recordings() -> None:
    """Scenarios with a syntax error never reach the kernel: their recording is the error."""
    errors: dict[str, dict[str, str]] = {}
    for cow in sorted((HERE / "scenarios").glob("*.cow")):
        try:
            compile_scenario(cow.stem, cow.read_text())
        except ScenarioSyntaxError as err:
            errors[cow.stem] = err.observation()
    assert errors, "the suite should hold a syntax-error scenario"
    for name, error in errors.items():
        for series in (HERE / "expected").iterdir():
            recorded = (series / f"{name}.jsonl").read_text().splitlines()
            assert [json.loads(x) for x in recorded] == [error]
