"""Run `.cow` scenarios on a real Linux kernel in QEMU (``cowcore kernel run``).

Steps: compile the scenarios (syntax errors are answered here, without the kernel), build the
static probe (``probe.c``, shipped in this package) with ``gcc -static`` into the user's cache
directory (:mod:`cowcore.kernel.build`), pack it as ``/init`` with the compiled scenarios into
an initramfs, boot the kernel once for all of them, and split what the probe printed on the
guest's second serial port into one list of observation lines per scenario.

QEMU runs with TCG (``-accel tcg -cpu max``): KVM on the project's machines fails with an
emulation error in the kernel's decompressor, and TCG boots a Debian kernel to ``/init`` in a
few seconds. The first serial port gets the kernel console (kept for error messages), the second
one the probe's JSON lines, so that kernel messages can never interleave with observations.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
from importlib.resources.abc import Traversable
from pathlib import Path

from cowcore.kernel.build import (
    BuildError,
    CompilerNotFoundError,
    build_c,
    cache_dir,
    package_source,
)
from cowcore.kernel.compile import CompiledScenario, ScenarioSyntaxError, compile_scenario
from cowcore.kernel.initramfs import write_initramfs

__all__ = [
    "KERNEL_ARGS",
    "QEMU_ARGS",
    "RunResult",
    "RunnerError",
    "build_probe",
    "cache_dir",
    "probe_source",
    "run_files",
    "run_scenario",
    "run_texts",
]

# -m 1024: room for 1G sparse mappings (overcommit is on) and every folio size.
QEMU_ARGS = [
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-m",
    "1024",
    "-nographic",
    "-no-reboot",
    "-monitor",
    "none",
]
# panic=-1: reboot at once on a panic, which -no-reboot turns into a QEMU exit.
# proc_mem.force_override=always: read PROT_NONE pages through /proc/<pid>/mem on 7.x kernels
# (6.12's Debian config already has CONFIG_PROC_MEM_ALWAYS_FORCE).
# nokaslr: one physical layout every boot (frame names do not depend on it, but fewer moving
# parts make a failure easier to reproduce).
KERNEL_ARGS = "console=ttyS0 panic=-1 nokaslr quiet loglevel=4 proc_mem.force_override=always"
PROBE_CFLAGS = ["-static", "-O2", "-Wall", "-Wextra"]
DEFAULT_TIMEOUT = 600.0


class RunnerError(Exception):
    """The kernel run failed (missing tool, boot failure, timeout); the message says why."""


@dataclasses.dataclass
class RunResult:
    """Observation lines per scenario (exact JSON text), and timing of the boot."""

    names: list[str]
    lines: list[list[str]]
    boot_seconds: float


def probe_source() -> Traversable:
    """``probe.c``, shipped in this package (``cowcore/kernel/probe.c``)."""
    try:
        return package_source(__package__ or "cowcore.kernel", "probe.c")
    except BuildError as err:
        raise RunnerError(str(err)) from None


def build_probe(cache: Path | None = None) -> Path:
    """Compile the probe (static, so it runs as /init with no libraries) into the cache
    directory of :func:`cowcore.kernel.build.cache_dir`; cached by source hash."""
    try:
        return build_c(probe_source(), "probe", PROBE_CFLAGS, cache)
    except CompilerNotFoundError:
        raise RunnerError(
            "gcc not found: the probe is built with gcc -static (apt install gcc libc6-dev)"
        ) from None
    except BuildError as err:
        raise RunnerError(str(err)) from None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def _boot(vmlinuz: Path, initrd: Path, workdir: Path, timeout: float) -> tuple[str, float]:
    """Boot once; return what the probe printed on the second serial port and the seconds."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise RunnerError(
            "qemu-system-x86_64 not found (apt install qemu-system-x86); it boots the kernel"
        )
    console, output = workdir / "console.log", workdir / "output.jsonl"
    cmd = [
        qemu,
        *QEMU_ARGS,
        "-kernel",
        str(vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        KERNEL_ARGS,
        "-serial",
        f"file:{console}",
        "-serial",
        f"file:{output}",
    ]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RunnerError(
            f"the kernel run did not finish within {timeout:.0f}s; console tail:\n" + _tail(console)
        ) from None
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RunnerError(
            f"qemu failed (exit {proc.returncode}): {proc.stderr.strip()[-1000:]}\n"
            f"console tail:\n{_tail(console)}"
        )
    text = output.read_text(errors="replace") if output.exists() else ""
    if '{"done":true}' not in text:
        raise RunnerError(
            "the probe did not finish (kernel panic or probe crash); console tail:\n"
            + _tail(console)
        )
    return text, seconds


def _split(text: str, count: int) -> list[list[str]]:
    """Cut the probe's output into per-scenario lines using its begin/end markers."""
    per: list[list[str] | None] = [None] * count
    current: list[str] | None = None
    index = -1
    for raw in text.replace("\r", "").splitlines():
        line = raw.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise RunnerError(f"the probe printed a malformed line: {line[:200]!r}") from None
        if isinstance(obj, dict) and set(obj) == {"begin"}:
            index, current = int(obj["begin"]), []
        elif isinstance(obj, dict) and set(obj) == {"end"}:
            if current is None or int(obj["end"]) != index:
                raise RunnerError("the probe's output is out of order")
            per[index], current = current, None
        elif isinstance(obj, dict) and set(obj) == {"done"}:
            break
        elif current is not None:
            current.append(line)
    missing = [i for i, lines in enumerate(per) if lines is None]
    if missing:
        raise RunnerError(f"the probe printed nothing for scenario(s) {missing}")
    return [lines or [] for lines in per]


def run_texts(
    scenarios: list[tuple[str, str]],
    vmlinuz: Path,
    timeout: float = DEFAULT_TIMEOUT,
    cache: Path | None = None,
    keep_dir: Path | None = None,
) -> RunResult:
    """Run ``(name, text)`` scenarios in one boot of ``vmlinuz``; observation lines of each.

    Every scenario runs in fresh processes with the THP settings reset; a scenario with a
    syntax error is answered without the kernel. ``keep_dir`` keeps the initramfs and logs.
    """
    if not vmlinuz.is_file():
        raise RunnerError(f"kernel {vmlinuz} does not exist (see `cowcore kernel fetch`)")
    compiled: list[CompiledScenario | ScenarioSyntaxError] = []
    for name, text in scenarios:
        try:
            compiled.append(compile_scenario(name, text))
        except ScenarioSyntaxError as err:
            compiled.append(err)
    to_run = [c for c in compiled if isinstance(c, CompiledScenario)]
    results: list[list[str]] = []
    boot_seconds = 0.0
    outputs: list[list[str]] = []
    if to_run:
        probe = build_probe(cache)
        payload = "".join(c.framed(i) for i, c in enumerate(to_run)).encode()
        with tempfile.TemporaryDirectory(prefix="cowcore-kernel-") as tmp:
            work = keep_dir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            initrd = work / "initramfs.cpio"
            write_initramfs(initrd, probe.read_bytes(), {"scenarios": payload})
            text, boot_seconds = _boot(vmlinuz, initrd, work, timeout)
        outputs = _split(text, len(to_run))
    it = iter(outputs)
    for item in compiled:
        if isinstance(item, ScenarioSyntaxError):
            results.append([json.dumps(item.observation(), separators=(",", ":"))])
        else:
            results.append(next(it))
    return RunResult([name for name, _ in scenarios], results, boot_seconds)


def run_files(
    paths: list[Path],
    vmlinuz: Path,
    timeout: float = DEFAULT_TIMEOUT,
    cache: Path | None = None,
    keep_dir: Path | None = None,
) -> RunResult:
    """Run scenario files (named after the file without ``.cow``) in one boot."""
    scenarios: list[tuple[str, str]] = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as err:
            raise RunnerError(f"cannot read {path}: {err.strerror}") from None
        name = path.name[:-4] if path.name.endswith(".cow") else path.name
        scenarios.append((name, text))
    return run_texts(scenarios, vmlinuz, timeout=timeout, cache=cache, keep_dir=keep_dir)


def run_scenario(
    text: str, vmlinuz: Path, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, object]]:
    """Run one scenario text on ``vmlinuz``; its observations as dicts (keys in order)."""
    result = run_texts([("scenario", text)], vmlinuz, timeout=timeout)
    return [json.loads(line) for line in result.lines[0]]
