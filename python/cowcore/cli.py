"""The ``cowcore`` command line.

``cowcore run FILE...`` runs scenarios on the simulator and prints their observations;
``cowcore kernel run|fetch`` runs them on real Linux kernels under QEMU (:mod:`cowcore.kernel`);
``cowcore calibrate`` fits the cost model to this host (:mod:`cowcore.calibrate`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cowcore import __version__
from cowcore.bench import register as register_bench_command
from cowcore.calibrate import register as register_calibrate_command
from cowcore.errors import CowError, ScenarioError
from cowcore.kernel.cli import register as register_kernel_commands
from cowcore.kernel.compile import ScenarioEncodingError, decode_scenario
from cowcore.machine import BACKENDS, DEFAULT_BACKEND
from cowcore.scenario import Scenario, ScenarioSyntaxError, dumps


def _run(args: argparse.Namespace) -> int:
    status = 0
    many = len(args.files) > 1
    for path in args.files:
        name = Path(path).name.removesuffix(".cow")
        if many:
            print(dumps({"scenario": name}), flush=True)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            print(f"cowcore: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return 2
        try:
            # Decoded here rather than by the parser, with the kernel runner's rule, so that
            # both commands answer a file that is not UTF-8 with the same error line.
            text = decode_scenario(data, path)
        except ScenarioEncodingError as exc:
            print(dumps({"error": str(exc)}), flush=True)
            status = 1
            continue
        try:
            scenario = Scenario.parse(text, name)
            scenario.run(
                backend=args.backend,
                kernel=args.kernel,
                check=args.check,
                on_observation=lambda obs: print(dumps(obs), flush=True),
            )
        except ScenarioSyntaxError as exc:
            print(dumps({"error": str(exc)}), flush=True)
            status = 1
        except ScenarioError:
            status = 1  # the error observation was already printed
        except CowError as exc:  # a bad backend name, an invariant broken under --check
            print(f"cowcore: {path}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cowcore",
        description="Simulate Linux anonymous memory, fork and copy-on-write on x86-64.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run .cow scenarios on the simulator",
        description="Run .cow scenarios and print their observations as JSON lines.",
    )
    run.add_argument("files", nargs="+", metavar="FILE", help="scenario files")
    run.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help="simulation backend (default: %(default)s)",
    )
    run.add_argument(
        "--kernel",
        choices=("6.12", "6.15"),
        default=None,
        help="override the scenario's kernel profile",
    )
    run.add_argument(
        "--check", action="store_true", help="verify every invariant after each statement"
    )
    run.set_defaults(func=_run)
    register_kernel_commands(sub)
    register_bench_command(sub)
    register_calibrate_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowcore`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
