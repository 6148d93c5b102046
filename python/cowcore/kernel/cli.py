"""The ``cowcore kernel`` command line: ``run`` scenarios on a real kernel, ``fetch`` kernels.

``register(subparsers)`` adds the ``kernel`` sub-command to the main ``cowcore`` parser;
``main(argv)`` runs it standalone (``python -m cowcore.kernel ...``). Expected failures
(missing qemu, missing kernel, boot timeout, bad files) print one clear message to stderr and
exit with status 1, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from cowcore.kernel.fetch import FetchError, fetch_kernels, load_kernels
from cowcore.kernel.runner import DEFAULT_TIMEOUT, RunnerError, run_files

__all__ = ["default_kernels_dir", "main", "register", "resolve_kernel"]


def default_kernels_dir() -> Path:
    """``$COWCORE_KERNELS_DIR``, else ``.kernels`` in the current directory."""
    env = os.environ.get("COWCORE_KERNELS_DIR")
    if env:
        return Path(env)
    return Path.cwd() / ".kernels"


def resolve_kernel(value: str) -> Path:
    """A vmlinuz path, or a kernel line such as ``6.12`` looked up in the fetched kernels."""
    path = Path(value)
    if path.is_file():
        return path
    if re.fullmatch(r"\d+\.\d+", value):
        directory = default_kernels_dir()
        for kernel in load_kernels(directory):
            if kernel.series == value:
                return kernel.vmlinuz
        raise RunnerError(
            f"no fetched {value} kernel in {directory} (run `cowcore kernel fetch {directory}`)"
        )
    raise RunnerError(f"kernel {value} does not exist")


def _cmd_run(args: argparse.Namespace) -> int:
    vmlinuz = resolve_kernel(args.kernel)
    paths = [Path(f) for f in args.files]
    result = run_files(
        paths, vmlinuz, timeout=args.timeout, keep_dir=Path(args.keep) if args.keep else None
    )
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    several = len(paths) > 1
    for name, lines in zip(result.names, result.lines, strict=True):
        if several:
            sys.stdout.write('{"scenario":"' + name + '"}\n')
        sys.stdout.write("".join(line + "\n" for line in lines))
        if out_dir is not None:
            (out_dir / f"{name}.jsonl").write_text("".join(line + "\n" for line in lines))
    sys.stdout.flush()
    print(
        f"cowcore kernel run: {len(paths)} scenario(s) on {vmlinuz} in {result.boot_seconds:.1f}s",
        file=sys.stderr,
    )
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    kernels = fetch_kernels(Path(args.dir), refresh=args.refresh, also=args.also)
    for kernel in kernels:
        print(f"{kernel.series} {kernel.version} {kernel.vmlinuz}")
    return 0


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
        "file's observations when several files are given).",
    )
    run.add_argument("files", nargs="+", metavar="FILE", help=".cow scenario files")
    run.add_argument(
        "--kernel",
        required=True,
        metavar="VMLINUZ",
        help="a vmlinuz, or a fetched kernel line such as 6.12",
    )
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
        "the newest 7.x of unstable/trixie-backports into DIR (apt with a "
        "private configuration); print series, version and vmlinuz path.",
    )
    fetch.add_argument("dir", metavar="DIR")
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
