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
from collections.abc import Callable
from importlib.resources.abc import Traversable
from pathlib import Path

from cowcore.kernel.build import (
    BuildError,
    CompilerNotFoundError,
    build_c,
    cache_dir,
    package_source,
)
from cowcore.kernel.compile import (
    CompiledScenario,
    ScenarioSyntaxError,
    compile_scenario,
    decode_scenario,
)
from cowcore.kernel.initramfs import write_initramfs
from cowcore.kernel.modules import ModuleError, guest_modules

__all__ = [
    "KERNEL_ARGS",
    "QEMU_ARGS",
    "Progress",
    "ProgressCallback",
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


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far one boot has got, reported while QEMU runs (for a progress line).

    ``booted`` turns true when the probe has printed its first line (the kernel is up and
    ``/init`` runs); ``done`` counts the scenarios whose end marker has arrived, of ``total``
    run in this boot; ``seconds`` since QEMU started.
    """

    booted: bool
    done: int
    total: int
    seconds: float


ProgressCallback = Callable[[Progress], None]
POLL_SECONDS = 0.2


class _OutputWatcher:
    """Follows the probe's output file while QEMU writes it, counting ended scenarios."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.booted = False
        self.done = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()  # an unfinished line waits for the next poll
        self.booted = self.booted or bool(data)
        self.done += sum(1 for line in lines if line.strip().startswith(b'{"end":'))


def _boot(
    vmlinuz: Path,
    initrd: Path,
    workdir: Path,
    timeout: float,
    total: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[str, float]:
    """Boot once; return what the probe printed on the second serial port and the seconds.

    QEMU's output file is followed while it runs, so that ``progress`` (if given) hears of
    the boot and of every finished scenario, at most every ``POLL_SECONDS``; it is called
    once before QEMU starts and once after it exits, whatever happened in between.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise RunnerError(
            "qemu-system-x86_64 not found (apt install qemu-system-x86); it boots the kernel"
        )
    console, output = workdir / "console.log", workdir / "output.jsonl"
    qemu_log = workdir / "qemu.log"
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
    watcher = _OutputWatcher(output)

    def report(seconds: float) -> None:
        if progress is not None:
            watcher.poll()
            progress(Progress(watcher.booted, watcher.done, total, seconds))

    report(0.0)
    start = time.monotonic()
    # QEMU's own messages go to a file, not a pipe: nobody reads a pipe while we poll.
    with qemu_log.open("wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - start > timeout:
                    raise RunnerError(
                        f"the kernel run did not finish within {timeout:.0f}s; console tail:\n"
                        + _tail(console)
                    )
                report(time.monotonic() - start)
        finally:  # a timeout, an error in the callback, Ctrl-C: never leave QEMU running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.monotonic() - start
    report(seconds)
    if returncode != 0:
        raise RunnerError(
            f"qemu failed (exit {returncode}): {_tail(qemu_log, 20)[-1000:]}\n"
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
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Run ``(name, text)`` scenarios in one boot of ``vmlinuz``; observation lines of each.

    Every scenario runs in fresh processes with the THP settings reset; a scenario with a
    syntax error is answered without the kernel. ``keep_dir`` keeps the initramfs and logs.
    ``progress`` hears how the boot goes (see :class:`Progress`); there is no boot, and no
    call, when every scenario has a syntax error.
    """
    compiled: list[tuple[str, CompiledScenario | ScenarioSyntaxError]] = []
    for name, text in scenarios:
        try:
            compiled.append((name, compile_scenario(name, text)))
        except ScenarioSyntaxError as err:
            compiled.append((name, err))
    return _run_compiled(compiled, vmlinuz, timeout, cache, keep_dir, progress)


def _initramfs_files(vmlinuz: Path, payload: bytes) -> dict[str, bytes]:
    """The initramfs besides ``/init``: the compiled scenarios, and the swap device's modules
    as ``/module-NN-NAME.ko`` listed in load order in ``/modules`` (none when the kernel's
    modules were not fetched: the probe then answers `pageout` with an error)."""
    files = {"scenarios": payload}
    try:
        modules = guest_modules(vmlinuz)
    except ModuleError as err:
        raise RunnerError(str(err)) from None
    names = [f"module-{i:02d}-{name}.ko" for i, (name, _) in enumerate(modules)]
    files.update({n: image for n, (_, image) in zip(names, modules, strict=True)})
    if names:
        files["modules"] = "".join(f"{n}\n" for n in names).encode()
    return files


def _run_compiled(
    compiled: list[tuple[str, CompiledScenario | ScenarioSyntaxError]],
    vmlinuz: Path,
    timeout: float,
    cache: Path | None,
    keep_dir: Path | None,
    progress: ProgressCallback | None,
) -> RunResult:
    """Boot once for the compiled scenarios; a syntax error is its scenario's whole output."""
    if not vmlinuz.is_file():
        raise RunnerError(f"kernel {vmlinuz} does not exist (see `cowcore kernel fetch`)")
    to_run = [c for _, c in compiled if isinstance(c, CompiledScenario)]
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
            write_initramfs(initrd, probe.read_bytes(), _initramfs_files(vmlinuz, payload))
            text, boot_seconds = _boot(vmlinuz, initrd, work, timeout, len(to_run), progress)
        outputs = _split(text, len(to_run))
    it = iter(outputs)
    for _, item in compiled:
        if isinstance(item, ScenarioSyntaxError):
            results.append([json.dumps(item.observation(), separators=(",", ":"))])
        else:
            results.append(next(it))
    return RunResult([name for name, _ in compiled], results, boot_seconds)


def run_files(
    paths: list[Path],
    vmlinuz: Path,
    timeout: float = DEFAULT_TIMEOUT,
    cache: Path | None = None,
    keep_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> RunResult:
    """Run scenario files (named after the file without ``.cow``) in one boot.

    A file that is not UTF-8 is answered like a syntax error, without the kernel:
    ``{"error":"line N: FILE is not UTF-8 text (byte 0x..)"}`` at its first undecodable byte.
    """
    compiled: list[tuple[str, CompiledScenario | ScenarioSyntaxError]] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise RunnerError(f"cannot read {path}: {err.strerror}") from None
        name = path.name[:-4] if path.name.endswith(".cow") else path.name
        try:
            compiled.append((name, compile_scenario(name, decode_scenario(data, str(path)))))
        except ScenarioSyntaxError as err:
            compiled.append((name, err))
    return _run_compiled(compiled, vmlinuz, timeout, cache, keep_dir, progress)


def run_scenario(
    text: str, vmlinuz: Path, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, object]]:
    """Run one scenario text on ``vmlinuz``; its observations as dicts (keys in order)."""
    result = run_texts([("scenario", text)], vmlinuz, timeout=timeout)
    return [json.loads(line) for line in result.lines[0]]
