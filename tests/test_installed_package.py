"""The package works as a wheel installs it: no source checkout beside it.

A wheel holds exactly ``python/cowcore`` (with the built extension). These tests copy that
directory to a temporary ``site`` directory, run Python there with the copy first on
``sys.path`` and the current directory a fresh temporary one, and check that the C programs
the package ships (the kernel probe, the bench's native baseline) build from the package's own
files into the user's cache, and that nothing under the repository is read or compiled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cowcore.kernel.build import cache_dir
from cowcore.kernel.fetch import load_kernels

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "python" / "cowcore"

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")

Run = Callable[[str], subprocess.CompletedProcess[str]]


@pytest.fixture
def installed(tmp_path: Path) -> tuple[Run, Path]:
    """A copy of the package laid out as a wheel installs it, and a function that runs Python
    code against it from an empty working directory. gcc is wrapped so that every call is
    logged (one line of arguments per call) to ``tmp_path/gcc.log``."""
    site = tmp_path / "site"
    shutil.copytree(PACKAGE, site / "cowcore", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    tools = tmp_path / "bin"
    tools.mkdir()
    log = tmp_path / "gcc.log"
    real_gcc = shutil.which("gcc")
    wrapper = tools / "gcc"
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{log}'\nexec '{real_gcc}' \"$@\"\n")
    wrapper.chmod(0o755)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COWCORE_", "XDG_")) and k != "PYTHONPATH"
    }
    env.update(
        PYTHONPATH=str(site),
        HOME=str(tmp_path / "home"),
        PATH=f"{tools}{os.pathsep}{env.get('PATH', '')}",
    )

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    return run, tmp_path


def _gcc_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "gcc.log"
    return log.read_text().splitlines() if log.exists() else []


@needs_gcc
def test_probe_builds_from_the_installed_package(installed: tuple[Run, Path]) -> None:
    run, tmp_path = installed
    proc = run(
        "import cowcore, cowcore.kernel.runner as r\n"
        "print(cowcore.__file__)\n"
        "print(r.build_probe())\n"
    )
    assert proc.returncode == 0, proc.stderr
    module, binary = proc.stdout.splitlines()
    assert Path(module).is_relative_to(tmp_path / "site"), "the copy must be the one imported"
    assert Path(binary).parent == tmp_path / "home" / ".cache" / "cowcore"
    assert Path(binary).name.startswith("probe-") and Path(binary).is_file()
    calls = _gcc_calls(tmp_path)
    assert len(calls) == 1
    assert str(tmp_path / "site" / "cowcore" / "kernel" / "probe.c") in calls[0]
    assert str(REPO) not in calls[0]


@needs_gcc
def test_native_baseline_builds_from_the_installed_package(
    installed: tuple[Run, Path],
) -> None:
    run, tmp_path = installed
    proc = run("import json, cowcore.bench as b\nprint(json.dumps(b.native(2)))\n")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    phases = ("first_write", "fork", "reuse", "copy")
    assert all(figures[k] > 0 for k in phases), figures
    calls = _gcc_calls(tmp_path)
    assert len(calls) == 1
    assert str(tmp_path / "site" / "cowcore" / "cownative.c") in calls[0]
    assert str(REPO) not in calls[0]
    built = list((tmp_path / "home" / ".cache" / "cowcore").glob("cownative-*"))
    assert len(built) == 1
    # A second run uses the cached binary: gcc is not called again.
    assert run("import cowcore.bench as b\nb.native(2)\n").returncode == 0
    assert len(_gcc_calls(tmp_path)) == 1


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COWCORE_KERNEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "cowcore"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec ignores these
    assert cache_dir() == tmp_path / "home" / ".cache" / "cowcore"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "cowcore"
    monkeypatch.setenv("COWCORE_KERNEL_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"


def _kernels_with_612() -> Path | None:
    """The kernels directory of the live kernel tests (``$COWCORE_KERNELS_DIR``, else the
    checkout's ``.kernels``) if it holds a fetched 6.12."""
    directory = Path(os.environ.get("COWCORE_KERNELS_DIR") or REPO / ".kernels")
    return directory if any(k.series == "6.12" for k in load_kernels(directory)) else None


@needs_gcc
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu is not installed")
@pytest.mark.skipif(_kernels_with_612() is None, reason="no fetched 6.12 kernel")
def test_kernel_run_from_the_installed_package(installed: tuple[Run, Path]) -> None:
    """``cowcore kernel run`` end to end from the copy, in an empty directory: the 6.12
    recording of seed-32K, with the kernels directory given by ``--kernels``."""
    run, tmp_path = installed
    kernels = _kernels_with_612()
    scenario = REPO / "tests" / "kernel" / "scenarios" / "seed-32K.cow"
    proc = run(
        "import sys\nfrom cowcore.cli import main\n"
        f"sys.exit(main(['kernel', 'run', {str(scenario)!r}, '--kernel', '6.12', "
        f"'--kernels', {str(kernels)!r}]))\n"
    )
    assert proc.returncode == 0, proc.stderr
    expected = REPO / "tests" / "kernel" / "expected" / "6.12" / "seed-32K.jsonl"
    assert proc.stdout == expected.read_text()
    assert str(REPO) not in "".join(_gcc_calls(tmp_path))
