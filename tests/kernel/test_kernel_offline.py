"""Tests of the kernel runner that need no kernel: compiler, initramfs, fetch config, CLI, and
the shape of the recordings."""

from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cowcore.kernel import cli, fetch
from cowcore.kernel.compile import ScenarioSyntaxError, compile_scenario, parse_size
from cowcore.kernel.fetch import archive_uri, modules_dir
from cowcore.kernel.initramfs import write_initramfs
from cowcore.kernel.modules import guest_modules
from cowcore.kernel.runner import Progress, RunnerError, _initramfs_files, _split
from cowcore.protocol import SMAPS_KB_FIELDS

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
# The swap maps (issue 16) are printed only when some size is non-zero.
SWAP_SIZE_MAPS = ("swpout", "swpout_fallback", "swpin", "swpin_fallback")
STATS_SIZE_MAPS = ("split_deferred", "nr_anon", "nr_anon_partially_mapped", *SWAP_SIZE_MAPS)
STATS_OPTIONAL_KEYS = [
    "thp_fault_alloc",
    "thp_split_pmd",
    *STATS_SIZE_MAPS,
    "thp_deferred_split_page",
    "thp_split_page",
    "thp_fault_fallback",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
    "pswpin",
    "pswpout",
    "thp_swpout",
    "thp_swpout_fallback",
]
# Kernel lines before multi-size THP (no hugepages-<kB>kB directories in sysfs).
PMD_ONLY_LINES = {"6.1"}
# Every /proc/vmstat event the probe's stats may print (probe.c print_stats()).
PROBE_VMSTAT_KEYS = {k for k in STATS_OPTIONAL_KEYS if k not in STATS_SIZE_MAPS}


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


def test_compile_refs_pins_unshare() -> None:
    """The five statements of issue 16's first slice compile to `C LINE PROC VERB MAP OFF LEN`."""
    text = "P mmap A 2M\n"
    text += "".join(f"P {verb} A 4K 8K\n" for verb in ("ref", "unref", "pin", "unpin", "unshare"))
    c = compile_scenario("s", text)
    assert c.lines[-5:] == [
        "C 2 0 ref 0 4096 8192",
        "C 3 0 unref 0 4096 8192",
        "C 4 0 pin 0 4096 8192",
        "C 5 0 unpin 0 4096 8192",
        "C 6 0 unshare 0 4096 8192",
    ]


def test_compile_pageout() -> None:
    """`P pageout NAME OFF LEN` (the kernel side of issue 16's swap) compiles like the other
    ranged verbs; the probe turns it into madvise(MADV_PAGEOUT)."""
    c = compile_scenario("s", "P mmap A 2M\nP pageout A 64K 8K\n")
    assert c.lines[-1] == "C 2 0 pageout 0 65536 8192"


def test_initramfs_lists_the_modules_in_load_order(tmp_path: Path) -> None:
    """The runner packs zram and its dependencies as ``module-NN-NAME.ko`` files and lists
    them in ``/modules`` in load order; without unpacked modules there is neither."""
    root = tmp_path / "6.1/lib/modules/6.1.0-amd64/kernel"
    for name, modinfo in (
        ("drivers/block/zram/zram.ko", b"depends=zsmalloc"),
        ("mm/zsmalloc.ko", b"depends="),
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"ELF\0" + modinfo + b"\0")
    vmlinuz = tmp_path / "6.1/boot/vmlinuz-6.1.0-amd64"
    vmlinuz.parent.mkdir(parents=True)
    vmlinuz.write_bytes(b"not a kernel")
    files = _initramfs_files(vmlinuz, b"S 0\nZ\n")
    assert files["modules"] == b"module-00-zsmalloc.ko\nmodule-01-zram.ko\n"
    assert files["module-01-zram.ko"] == b"ELF\0depends=zsmalloc\0"
    assert files["scenarios"] == b"S 0\nZ\n"
    bare = tmp_path / "7.3/usr/lib/modules/7.3.1-amd64/vmlinuz"
    bare.parent.mkdir(parents=True)
    bare.write_bytes(b"not a kernel")
    assert _initramfs_files(bare, b"") == {"scenarios": b""}


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
        "P write A 0 4K " + "9" * 5000,  # past int()'s 4300 digits: a ValueError once
        "P write A " + "9" * 5000 + "K 4K",
        "thp size " + "9" * 5000 + "K always",
        "P ref A 0 4K 1",  # extra token
        "P pin A 0",  # no length
        "P unshare A 2K 4K",  # misaligned offset
        "P unpin A 0 0",  # zero length
        "P pageout A 0",  # no length
        "P pageout A 0 4K dontneed",  # extra token
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


def test_kernel_lines_match_their_debian_packages() -> None:
    """bookworm names every 6.1 upload linux-image-6.1.0-ABI-amd64; 6.1 must not take 6.12."""
    six_one, six_twelve = fetch._line_re("6", "1"), fetch._line_re("6", "12")
    assert six_one.match("linux-image-6.1.0-50-amd64")
    assert six_one.match("linux-image-6.1.0-50-amd64-unsigned")
    assert not six_one.match("linux-image-6.12.117+deb13-amd64")
    assert not six_one.match("linux-image-6.1.0-50-cloud-amd64")
    assert six_twelve.match("linux-image-6.12.117+deb13-amd64")
    assert not six_twelve.match("linux-image-6.1.0-50-amd64")
    assert fetch._kernel_release("linux-image-6.1.0-50-amd64") == "6.1.0-50-amd64"
    assert "bookworm" in fetch.SUITES and {"bookworm"} == fetch.OLDEST_LINE_SUITES


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
                if not obj["present"]:  # not mapped, or a swap entry (pagemap's PM_SWAP)
                    assert obj["frame"] in (None, "swap"), path
                    assert all(obj[k] is None for k in PAGE_KEYS[5:]), path
            elif "collapse" in obj:
                assert list(obj) == ["collapse", "map", "result"], path
                result = obj["result"]
                assert result == 0 or (isinstance(result, str) and result.startswith("E")), path
            elif "smaps" in obj:
                assert list(obj) == ["smaps"], path
                assert list(obj["smaps"]) == ["proc", "map", *SMAPS_KB_FIELDS], path
                assert all(isinstance(v, int) for v in list(obj["smaps"].values())[2:]), path
            elif "stats" in obj and path.parent.name in PMD_ONLY_LINES:
                # No per-size stats files on these kernels: only vmstat events, when non-zero.
                assert set(obj["stats"]) <= PROBE_VMSTAT_KEYS, path
                assert all(v > 0 for v in obj["stats"].values()), path
            elif "stats" in obj:
                keys = list(obj["stats"])
                assert keys[:3] == STATS_KEYS, path
                # The optional keys, each at most once and in the format's order.
                assert [k for k in STATS_OPTIONAL_KEYS if k in keys] == keys[3:], path
                for key in keys[3:]:
                    value = obj["stats"][key]
                    if key in STATS_SIZE_MAPS:
                        assert isinstance(value, dict) and 0 not in value.values(), path
                        assert value or key not in SWAP_SIZE_MAPS, path
                    else:  # vmstat counters are printed only when non-zero
                        assert isinstance(value, int) and value != 0, path
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


# -- where kernels live: fetch and run agree --------------------------------------------------


def _fake_kernels(directory: Path, series: list[str]) -> dict[str, Path]:
    """A kernels directory as ``fetch`` leaves it (manifest, vmlinuz files and the zram
    module the guest's swap device needs), without apt."""
    rows, paths = [], {}
    for s in series:
        vmlinuz = directory / s / "boot" / f"vmlinuz-{s}.1-amd64"
        vmlinuz.parent.mkdir(parents=True)
        vmlinuz.write_bytes(b"not a kernel")
        zram = directory / s / "lib/modules" / f"{s}.1-amd64/kernel/drivers/block/zram/zram.ko"
        zram.parent.mkdir(parents=True)
        zram.write_bytes(b"\0name=zram\0depends=\0")
        rows.append(
            {
                "series": s,
                "package": f"linux-image-{s}.1-amd64",
                "version": f"{s}.1-1",
                "vmlinuz": str(vmlinuz.relative_to(directory)),
            }
        )
        paths[s] = vmlinuz
    (directory / "kernels.json").write_text(json.dumps(rows))
    return paths


@pytest.fixture
def no_kernels_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME, no kernels or XDG variables, and a working directory that is not the
    checkout; returns the default kernels directory under that HOME."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("COWCORE_KERNELS_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "home" / ".local" / "share" / "cowcore" / "kernels"


def test_kernels_dir_option_then_env_then_data_dir(
    no_kernels_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = cli.choose_kernels_dir(None)
    assert chosen.path == no_kernels_env and chosen.chosen_by.startswith("the default")
    monkeypatch.setenv("XDG_DATA_HOME", "relative")  # ignored, as the XDG spec says
    assert cli.choose_kernels_dir(None).path == no_kernels_env
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert cli.choose_kernels_dir(None).path == tmp_path / "data" / "cowcore" / "kernels"
    monkeypatch.setenv("COWCORE_KERNELS_DIR", str(tmp_path / "env"))
    assert cli.choose_kernels_dir(None) == cli.KernelsDir(tmp_path / "env", "$COWCORE_KERNELS_DIR")
    assert cli.choose_kernels_dir("opt") == cli.KernelsDir(Path("opt"), "--kernels")


@pytest.mark.parametrize("how", ["option", "positional", "env", "default"])
def test_fetch_and_run_agree_on_the_kernels_dir(
    how: str,
    no_kernels_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What ``fetch`` reports is what ``run --kernel X.Y`` boots, however the directory is
    given (a complete directory makes ``fetch`` a no-op, so no apt runs here)."""
    directory = no_kernels_env if how == "default" else tmp_path / "kernels"
    paths = _fake_kernels(directory, ["6.1", "6.12", "7.3"])
    fetch_args = {
        "option": ["--kernels", str(directory)],
        "positional": [str(directory)],
        "env": [],
        "default": [],
    }[how]
    if how == "env":
        monkeypatch.setenv("COWCORE_KERNELS_DIR", str(directory))
    assert cli.main(["fetch", *fetch_args]) == 0
    fetched = [line.split()[2] for line in capsys.readouterr().out.splitlines()]
    assert fetched == [str(paths["6.1"]), str(paths["6.12"]), str(paths["7.3"])]
    run_option = str(directory) if how in ("option", "positional") else None
    kernels = cli.choose_kernels_dir(run_option)
    assert cli.resolve_kernel("6.1", kernels) == paths["6.1"]
    assert cli.resolve_kernel("6.12", kernels) == paths["6.12"]
    assert cli.resolve_kernel("7.3", kernels) == paths["7.3"]


def test_fetch_refuses_two_different_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["fetch", str(tmp_path / "a"), "--kernels", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "two kernels directories" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("how", "chosen_by"),
    [
        ("option", "(--kernels)"),
        ("env", "($COWCORE_KERNELS_DIR)"),
        ("default", "(the default; choose another with --kernels DIR or $COWCORE_KERNELS_DIR)"),
    ],
)
def test_missing_kernel_says_where_it_looked(
    how: str,
    chosen_by: str,
    no_kernels_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory = no_kernels_env if how == "default" else tmp_path / "kernels"
    _fake_kernels(directory, ["6.12"])
    argv = ["run", str(HERE / "scenarios" / "seed-32K.cow"), "--kernel", "7.3"]
    if how == "option":
        argv += ["--kernels", str(directory)]
    if how == "env":
        monkeypatch.setenv("COWCORE_KERNELS_DIR", str(directory))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"no fetched 7.3 kernel in {directory} {chosen_by}" in err
    assert "fetched there: 6.12" in err
    fetch = "cowcore kernel fetch" + (f" --kernels {directory}" if how == "option" else "")
    assert f"`{fetch} --also 7.3`" in err
    assert "Traceback" not in err


def test_missing_kernel_names_the_lines_that_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """6.15 is a simulator profile, never a Debian kernel: the message names the fetched
    lines and what fetch can get, and points at the 7.x kernel rather than at a fetch that
    cannot succeed."""
    _fake_kernels(tmp_path, ["6.12", "7.2", "7.3"])
    seed = str(HERE / "scenarios" / "seed-32K.cow")
    assert cli.main(["run", seed, "--kernel", "6.15", "--kernels", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "fetched there: 6.12, 7.2, 7.3" in err
    assert (
        "6.1 from Debian bookworm, 6.12 from trixie and the newest 7.x from trixie-backports "
        "or unstable" in err
    )
    assert "`--also X.Y`" in err
    assert "use --kernel 7.3" in err
    assert "--also 6.15" not in err
    empty = tmp_path / "empty"
    assert cli.main(["run", seed, "--kernel", "6.15", "--kernels", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "fetched there: none" in err
    assert f"get one with `cowcore kernel fetch --kernels {empty}`" in err


# -- kernel run with a stand-in QEMU: exit status, progress, undecodable files ----------------

FAKE_QEMU = """\
import json, os, sys, time
args = sys.argv[1:]
console, output = [args[i + 1][len("file:"):] for i, a in enumerate(args) if a == "-serial"]
with open(console, "w") as f:
    f.write("fake kernel booted\\n")
with open(output, "w") as out:
    for i, lines in enumerate(json.loads(os.environ["FAKE_PROBE_OUTPUT"])):
        out.write(json.dumps({"begin": i}) + "\\n")
        out.writelines(line + "\\n" for line in lines)
        out.flush()
        time.sleep(float(os.environ.get("FAKE_PROBE_DELAY", "0")))
        out.write(json.dumps({"end": i}) + "\\n")
        out.flush()
    out.write('{"done":true}\\n')
"""
OBS = '{"proc":"P","map":"A","off":0,"present":false}'
ERR = '{"error":"line 2: process P has no mapping B"}'


class FakeTty(io.StringIO):
    """A stderr that claims to be a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Put stand-ins for qemu-system-x86_64 and gcc first on PATH; the returned function sets
    what the fake probe prints per scenario and returns a vmlinuz to pass as --kernel."""
    tools = tmp_path / "tools"
    tools.mkdir()
    qemu = tools / "qemu-system-x86_64"
    qemu.write_text(f"#!{sys.executable}\n{FAKE_QEMU}")
    gcc = tools / "gcc"  # writes its -o file: the probe's contents do not matter here
    gcc.write_text('#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\necho probe > "$2"\n')
    for tool in (qemu, gcc):
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("COWCORE_KERNEL_CACHE", str(tmp_path / "cache"))
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"not a kernel")

    def configure(outputs: list[list[str]], delay: float = 0.0) -> Path:
        monkeypatch.setenv("FAKE_PROBE_OUTPUT", json.dumps(outputs))
        monkeypatch.setenv("FAKE_PROBE_DELAY", str(delay))
        return vmlinuz

    return configure


def _scenarios(tmp_path: Path, *texts: bytes) -> list[str]:
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"s{i}.cow"
        path.write_bytes(text)
        paths.append(str(path))
    return paths


GOOD = b"P mmap A 2M\nP observe A 0 4K\n"


def test_kernel_run_exits_1_after_a_scenario_error(
    fake_qemu: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Status 1 as `cowcore run` has it, with every scenario's output printed and written."""
    vmlinuz = fake_qemu([[ERR], [OBS]])
    files = _scenarios(tmp_path, b"P mmap A 2M\nP write B 0 4K\n", GOOD)
    out_dir = tmp_path / "out"
    assert cli.main(["run", *files, "--kernel", str(vmlinuz), "--out", str(out_dir)]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ['{"scenario":"s0"}', ERR, '{"scenario":"s1"}', OBS]
    assert (out_dir / "s0.jsonl").read_text() == ERR + "\n"
    assert (out_dir / "s1.jsonl").read_text() == OBS + "\n"
    assert "1 with an error" in captured.err
    # Without an error the status stays 0.
    fake_qemu([[OBS]])
    assert cli.main(["run", files[1], "--kernel", str(vmlinuz)]) == 0


def test_kernel_run_exits_1_after_a_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A syntax error never reaches the kernel (no boot here), and is still status 1."""
    (vmlinuz := tmp_path / "vmlinuz").write_bytes(b"")
    files = _scenarios(tmp_path, b"P frobnicate\n")
    assert cli.main(["run", *files, "--kernel", str(vmlinuz)]) == 1
    assert capsys.readouterr().out == '{"error":"line 1: unknown verb \'frobnicate\'"}\n'


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"P mmap A 2M\n\xff\n", 2),
        (b"\xc3", 1),  # a truncated sequence at the end of the file
        (b"# caf\xc3\xa9 ok\r\nP mmap A 2M\r\nP write A 0 4K # \xe9\n", 3),  # CRLF, Latin-1
        (b"P mmap A 2M\rP observe A 0 4K\x00\r\x80", 3),  # CR alone ends a line too
    ],
)
def test_kernel_run_undecodable_file_is_one_error_line(
    data: bytes,
    line: int,
    fake_qemu: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not a traceback: the file's output is one error line naming the file and the line of
    its first undecodable byte; the other files still run; status 1."""
    vmlinuz = fake_qemu([[OBS]])
    bad, good = _scenarios(tmp_path, data, GOOD)
    assert cli.main(["run", bad, good, "--kernel", str(vmlinuz)]) == 1
    captured = capsys.readouterr()
    out = [json.loads(x) for x in captured.out.splitlines()]
    assert out[0] == {"scenario": "s0"} and out[2:] == [{"scenario": "s1"}, json.loads(OBS)]
    assert set(out[1]) == {"error"}
    assert out[1]["error"].startswith(f"line {line}: {bad} is not UTF-8 text (byte 0x")
    assert "Traceback" not in captured.err


def test_kernel_run_shows_progress_on_a_terminal(
    fake_qemu: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vmlinuz = fake_qemu([[OBS], [OBS], [OBS]], delay=0.3)
    files = _scenarios(tmp_path, GOOD, GOOD, GOOD)
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert cli.main(["run", *files, "--kernel", str(vmlinuz)]) == 0
    err = tty.getvalue()
    updates = [u for u in err.split("\r") if u.strip()]
    assert updates[0].startswith(f"cowcore kernel run: booting {vmlinuz}, 0s")
    assert any(u.startswith("cowcore kernel run: 3/3 scenarios, ") for u in updates)
    done = [int(u.split()[3].split("/")[0]) for u in updates if "scenarios, " in u]
    assert done == sorted(done), "the count only grows"
    # The line is blanked before the summary, which starts at the line's beginning.
    last = err.rsplit("\r", 1)[1]
    assert last.startswith("cowcore kernel run: 3 scenario(s) on ") and last.endswith("s\n")
    assert len(capsys.readouterr().out.splitlines()) == 6


def test_kernel_run_shows_no_progress_when_stderr_is_not_a_terminal(
    fake_qemu: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vmlinuz = fake_qemu([[OBS]], delay=0.3)
    assert cli.main(["run", *_scenarios(tmp_path, GOOD), "--kernel", str(vmlinuz)]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.startswith("cowcore kernel run: 1 scenario(s) on ") and err.count("\n") == 1


def test_progress_line_counts_and_clears() -> None:
    tty = FakeTty()
    line = cli.ProgressLine(tty, "6.12")
    line(Progress(booted=False, done=0, total=12, seconds=1.2))
    line(Progress(booted=True, done=5, total=12, seconds=10.6))
    line(Progress(booted=True, done=5, total=12, seconds=10.9))  # the same text: not rewritten
    line.clear()
    longest = "cowcore kernel run: 5/12 scenarios, 11s"
    assert tty.getvalue() == (
        "\rcowcore kernel run: booting 6.12, 1s\r" + longest + "\r" + " " * len(longest) + "\r"
    )
    quiet = io.StringIO()
    silent = cli.ProgressLine(quiet, "6.12")
    silent(Progress(booted=True, done=1, total=1, seconds=1.0))
    silent.clear()
    assert quiet.getvalue() == ""


# -- the swap device's modules ----------------------------------------------------------------


def test_guest_modules_come_with_their_dependencies_first(tmp_path: Path) -> None:
    """zram and the modules its ``.modinfo`` names in ``depends=`` (recursively, each before
    the modules that need it, decompressed); a dependency without a module file is built in.
    Both layouts of an unpacked image are found (``boot/`` and ``usr/lib/modules/REL/``)."""
    root = tmp_path / "7.3/usr/lib/modules/7.3.1-amd64"
    vmlinuz = root / "vmlinuz"
    files = {
        "drivers/block/zram/zram.ko.xz": b"\0depends=zsmalloc,lz4hc-compress,builtin_one\0",
        "mm/zsmalloc.ko.xz": b"\0depends=\0",
        "lib/lz4/lz4hc_compress.ko.xz": b"\0depends=zsmalloc\0",
        "lib/unrelated.ko.xz": b"\0depends=\0",
    }
    for name, modinfo in files.items():
        path = root / "kernel" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(b"ELF" + modinfo))
    vmlinuz.write_bytes(b"not a kernel")
    assert modules_dir(vmlinuz) == root
    loaded = guest_modules(vmlinuz)
    assert [name for name, _ in loaded] == ["zsmalloc", "lz4hc_compress", "zram"]
    assert loaded[-1][1].startswith(b"ELF\0depends=zsmalloc")
    bare = tmp_path / "6.1/boot/vmlinuz-6.1.0-amd64"
    bare.parent.mkdir(parents=True)
    bare.write_bytes(b"not a kernel")
    assert modules_dir(bare) is None and guest_modules(bare) == []


def test_fetch_adds_the_modules_a_split_image_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernels directory fetched before `pageout` has only the vmlinuz of a split-packaged
    7.x image: the next fetch downloads ``linux-modules-REL`` of the same version and unpacks it
    beside the vmlinuz, and nothing else (apt is faked: the archive lists what is fetched)."""
    paths = _fake_kernels(tmp_path, ["6.1", "6.12"])
    release = "7.3.1+deb13-amd64"
    vmlinuz = tmp_path / "7.3/usr/lib/modules" / release / "vmlinuz"
    vmlinuz.parent.mkdir(parents=True)
    vmlinuz.write_bytes(b"not a kernel")
    manifest = json.loads((tmp_path / "kernels.json").read_text())
    manifest.append(
        {
            "series": "7.3",
            "package": f"linux-image-{release}",
            "version": "7.3.1-1",
            "vmlinuz": str(vmlinuz.relative_to(tmp_path)),
        }
    )
    (tmp_path / "kernels.json").write_text(json.dumps(manifest))
    images = {
        r["package"]: (r["version"], s)
        for r, s in zip(manifest, ["bookworm", "trixie", "unstable"], strict=True)
    }
    downloads: list[str] = []

    def run(self: object, tool: str, *args: str, cwd: Path | None = None) -> str:
        if args[:1] == ("pkgnames",):
            return "\n".join(images) + "\n"
        if args[:1] == ("madison",):
            return "".join(
                f"{p} | {v} | http://x {s}/main amd64 Packages\n" for p, (v, s) in images.items()
            )
        return ""

    def download(apt: object, package: str, version: str, debs: Path) -> Path:
        downloads.append(f"{package}={version}")
        return debs / f"{package}_{version}_amd64.deb"

    def unpack(deb: Path, dest: Path) -> None:
        assert deb.name.startswith(f"linux-modules-{release}_")
        zram = dest / "usr/lib/modules" / release / "kernel/drivers/block/zram/zram.ko.xz"
        zram.parent.mkdir(parents=True)
        zram.write_bytes(lzma.compress(b"ELF\0depends=\0"))

    monkeypatch.setattr(fetch, "archive_uri", lambda: ("http://x/debian", "/k.gpg"))
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(fetch._Apt, "run", run)
    monkeypatch.setattr(fetch, "_download", download)
    monkeypatch.setattr(fetch, "_unpack", unpack)
    monkeypatch.setattr(fetch, "_compare_versions", lambda a, b: (a > b) - (a < b))
    kernels = fetch.fetch_kernels(tmp_path, log=False)
    assert downloads == [f"linux-modules-{release}=7.3.1-1"]
    assert [k.vmlinuz for k in kernels] == [paths["6.1"], paths["6.12"], vmlinuz]
    assert [name for name, _ in guest_modules(vmlinuz)] == ["zram"]
    assert fetch.fetch_kernels(tmp_path, log=False) == kernels  # complete now: a no-op
    assert len(downloads) == 1
