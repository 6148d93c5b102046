"""The ``cowcore kernel`` command line: ``run`` scenarios on a real kernel, ``fetch`` kernels.

``register(subparsers)`` adds the ``kernel`` sub-command to the main ``cowcore`` parser;
``main(argv)`` runs it standalone (``python -m cowcore.kernel ...``). Expected failures
(missing qemu, missing kernel, boot timeout, bad files) print one clear message to stderr and
exit with status 1, without a traceback. ``kernel run`` also exits with status 1 when a
scenario printed an error line, as ``cowcore run`` does, after printing every scenario's output
and writing the ``--out`` files. On a terminal it keeps one progress line on stderr.

The kernels directory, which ``fetch`` fills and ``run --kernel X.Y`` reads, is chosen the same
way by both: ``--kernels DIR``, else ``$COWCORE_KERNELS_DIR``, else the user's data directory
(``$XDG_DATA_HOME/cowcore/kernels``, else ``~/.local/share/cowcore/kernels``). A source
checkout's ``.kernels`` is used only when named (``.ci/run`` and the test suite do).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import TextIO

from cowcore.kernel.compile import PROFILES
from cowcore.kernel.fetch import (
    DEBIAN_LINES,
    FetchError,
    fetch_kernels,
    fetchable_lines,
    load_kernels,
)
from cowcore.kernel.runner import DEFAULT_TIMEOUT, Progress, RunnerError, run_files

__all__ = [
    "KERNELS_ENV",
    "KernelsDir",
    "ProgressLine",
    "choose_kernels_dir",
    "default_kernels_dir",
    "main",
    "register",
    "resolve_kernel",
]

KERNELS_ENV = "COWCORE_KERNELS_DIR"
_LINE = re.compile(r"\d+\.\d+")


@dataclasses.dataclass(frozen=True)
class KernelsDir:
    """The kernels directory that ``fetch`` fills and ``run`` reads, and how it was chosen
    (``--kernels``, ``$COWCORE_KERNELS_DIR`` or the default), for messages."""

    path: Path
    chosen_by: str


def default_kernels_dir() -> Path:
    """``$XDG_DATA_HOME/cowcore/kernels`` (when that is an absolute path, as the XDG base
    directory specification requires), else ``~/.local/share/cowcore/kernels``.

    Kernels are data the user downloaded once and keeps (tens of MB), not a cache that may
    vanish, hence the data directory; one place for every working directory and checkout.
    """
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"
    return base / "cowcore" / "kernels"


def choose_kernels_dir(option: str | None) -> KernelsDir:
    """The kernels directory: the ``--kernels`` option, else ``$COWCORE_KERNELS_DIR``, else
    :func:`default_kernels_dir`. ``fetch`` and ``run`` both choose it this way, so that
    ``run --kernel X.Y`` finds what ``fetch`` got."""
    if option:
        return KernelsDir(Path(option), "--kernels")
    env = os.environ.get(KERNELS_ENV)
    if env:
        return KernelsDir(Path(env), f"${KERNELS_ENV}")
    return KernelsDir(
        default_kernels_dir(), f"the default; choose another with --kernels DIR or ${KERNELS_ENV}"
    )


def _fetch_command(kernels: KernelsDir, also: str | None) -> str:
    """The ``cowcore kernel fetch`` command that fills ``kernels`` (plus ``--also``)."""
    where = f" --kernels {kernels.path}" if kernels.chosen_by == "--kernels" else ""
    return f"cowcore kernel fetch{where}" + (f" --also {also}" if also else "")


def resolve_kernel(value: str, kernels: KernelsDir | None = None) -> Path:
    """A vmlinuz path, or a kernel line such as ``6.12`` looked up in the fetched kernels.

    Raises:
        RunnerError: no such file, or no such line fetched; the message says where it looked
            (and how that directory was chosen), which lines are there, and which lines
            ``cowcore kernel fetch`` can get.
    """
    path = Path(value)
    if path.is_file():
        return path
    if not _LINE.fullmatch(value):
        raise RunnerError(f"--kernel {value}: no such file, and not a kernel line such as 6.12")
    kernels = kernels or choose_kernels_dir(None)
    fetched = load_kernels(kernels.path)
    for kernel in fetched:
        if kernel.series == value:
            return kernel.vmlinuz
    have = ", ".join(k.series for k in fetched) or "none"
    lines = [
        f"no fetched {value} kernel in {kernels.path} ({kernels.chosen_by})",
        f"fetched there: {have}",
        f"`cowcore kernel fetch` gets {fetchable_lines()}",
    ]
    if value in PROFILES and value not in DEBIAN_LINES:
        newer = [k.series for k in fetched if k.series.startswith("7.")]
        lines.append(
            f"{value} is the simulator's behaviour profile (`kernel {value}`), not a kernel "
            "line that Debian's suites carry: the real kernels behind it are the 7.x lines"
            + (
                f"; use --kernel {newer[-1]}"
                if newer
                else f"; get one with `{_fetch_command(kernels, None)}`"
            )
        )
    elif value in DEBIAN_LINES:
        lines.append(f"get it with `{_fetch_command(kernels, None)}`")
    else:
        lines.append(
            f"try `{_fetch_command(kernels, value)}` (it fails if Debian has no {value} image)"
        )
    raise RunnerError("\n  ".join(lines))


class ProgressLine:
    """A one-line progress report on a terminal, rewritten in place (``\\r``): the boot, then
    scenarios done of the total, with the seconds since QEMU started. A stream that is not a
    terminal (a log file, a CI pipe) gets nothing, so that logs hold only real messages."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.active = stream.isatty()
        self.width = 0
        self.last = ""

    def __call__(self, progress: Progress) -> None:
        """Show ``progress`` (a :data:`~cowcore.kernel.runner.ProgressCallback`)."""
        if not self.active:
            return
        if progress.booted:
            state = f"{progress.done}/{progress.total} scenarios"
        else:
            state = f"booting {self.label}"
        self._write(f"cowcore kernel run: {state}, {progress.seconds:.0f}s")

    def clear(self) -> None:
        """Blank the line and return to its start, so the next message prints cleanly."""
        if self.active and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0
            self.last = ""

    def _write(self, text: str) -> None:
        if text == self.last:  # polled five times a second: most polls change nothing
            return
        self.last = text
        # Padded to the longest text so far: a shorter line must cover a longer one.
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = max(self.width, len(text))


def _has_error(lines: list[str]) -> bool:
    """Whether a scenario's output holds an error line (``{"error":"line N: ..."}``)."""
    for line in lines:
        obj = json.loads(line)
        if isinstance(obj, dict) and "error" in obj:
            return True
    return False


def _cmd_run(args: argparse.Namespace) -> int:
    vmlinuz = resolve_kernel(args.kernel, choose_kernels_dir(args.kernels))
    paths = [Path(f) for f in args.files]
    line = ProgressLine(sys.stderr, args.kernel)
    try:
        result = run_files(
            paths,
            vmlinuz,
            timeout=args.timeout,
            keep_dir=Path(args.keep) if args.keep else None,
            progress=line,
        )
    finally:
        line.clear()
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    several = len(paths) > 1
    failed = 0
    for name, lines in zip(result.names, result.lines, strict=True):
        if several:
            sys.stdout.write(json.dumps({"scenario": name}, separators=(",", ":")) + "\n")
        sys.stdout.write("".join(line + "\n" for line in lines))
        if out_dir is not None:
            (out_dir / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
        failed += _has_error(lines)
    sys.stdout.flush()
    print(
        f"cowcore kernel run: {len(paths)} scenario(s) on {vmlinuz} in {result.boot_seconds:.1f}s"
        + (f", {failed} with an error" if failed else ""),
        file=sys.stderr,
    )
    # The same contract as `cowcore run`: a scenario error is status 1 (after all the output).
    return 1 if failed else 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    if args.dir and args.kernels and Path(args.dir) != Path(args.kernels):
        raise FetchError(
            f"two kernels directories given: DIR {args.dir} and --kernels {args.kernels}"
        )
    directory = choose_kernels_dir(args.kernels or args.dir).path
    kernels = fetch_kernels(directory, refresh=args.refresh, also=args.also)
    for kernel in kernels:
        print(f"{kernel.series} {kernel.version} {kernel.vmlinuz}")
    return 0


_KERNELS_HELP = (
    f"the kernels directory (default: ${KERNELS_ENV}, else $XDG_DATA_HOME/cowcore/kernels, "
    "else ~/.local/share/cowcore/kernels); fetch and run agree on it"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``kernel run`` and ``kernel fetch`` to an argparse sub-parsers object."""
    kernel = subparsers.add_parser(
        "kernel",
        help="run scenarios on real Linux kernels in QEMU",
        description="Run .cow scenarios on real Linux kernels (QEMU TCG) and fetch kernels.",
    )
    sub = kernel.add_subparsers(dest="kernel_command", metavar="{run,fetch}")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="run scenarios on a kernel, print the observations",
        description="Boot KERNEL once, run every FILE in fresh processes, "
        'print the observation lines (a {"scenario":NAME} line before each '
        "file's observations when several files are given). Exit status 1 when a scenario "
        "printed an error line (after all the output), as `cowcore run`. On a terminal, "
        "stderr shows the progress (boot, scenarios done, seconds).",
    )
    run.add_argument("files", nargs="+", metavar="FILE", help=".cow scenario files")
    run.add_argument(
        "--kernel",
        required=True,
        metavar="VMLINUZ",
        help="a vmlinuz, or a fetched kernel line such as 6.12 (looked up in the kernels "
        "directory)",
    )
    run.add_argument("--kernels", metavar="DIR", help=_KERNELS_HELP)
    run.add_argument("--out", metavar="DIR", help="also write DIR/NAME.jsonl per scenario")
    run.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"boot timeout (default {DEFAULT_TIMEOUT:.0f})",
    )
    run.add_argument("--keep", metavar="DIR", help="keep the initramfs and the console log in DIR")
    run.set_defaults(kernel_func=_cmd_run)
    fetch = sub.add_parser(
        "fetch",
        help="download the 6.12 and newest 7.x Debian kernels",
        description="Download the newest 6.12 kernel of Debian trixie and "
        "the newest 7.x of unstable/trixie-backports into the kernels directory (apt with a "
        "private configuration); print series, version and vmlinuz path.",
    )
    fetch.add_argument(
        "dir",
        nargs="?",
        metavar="DIR",
        help="the kernels directory (the same as --kernels DIR, kept for older scripts)",
    )
    fetch.add_argument("--kernels", metavar="DIR", help=_KERNELS_HELP)
    fetch.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="X.Y",
        help="fetch the newest image of this line too (e.g. 7.2)",
    )
    fetch.add_argument(
        "--refresh",
        action="store_true",
        help="look for newer images even if DIR already has kernels",
    )
    fetch.set_defaults(kernel_func=_cmd_fetch)
    kernel.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed ``kernel`` command; expected failures become a message and status 1."""
    try:
        return int(args.kernel_func(args))
    except (RunnerError, FetchError) as err:
        print(f"cowcore kernel: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m cowcore.kernel {run,fetch} ...``."""
    parser = argparse.ArgumentParser(prog="python -m cowcore.kernel")
    subparsers = parser.add_subparsers(dest="command", metavar="kernel")
    register(subparsers)
    args = parser.parse_args(["kernel", *(argv if argv is not None else sys.argv[1:])])
    return run_command(args)
