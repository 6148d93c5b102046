"""The ``cowcore`` command line.

``cowcore run FILE...`` runs scenarios on the simulator and prints their observations;
``cowcore trace FILE`` runs one and explains every fault (:mod:`cowcore.trace`);
``cowcore report FILE`` runs one and reports its memory as smem, pmap -X and thpmaps would
(:mod:`cowcore.report`; ``cowcore run --report`` appends the same report);
``cowcore replay TRACE`` replays a memory trace (:mod:`cowcore.replay`);
``cowcore kernel run|fetch`` runs them on real Linux kernels under QEMU (:mod:`cowcore.kernel`);
``cowcore calibrate`` fits the cost model to this host (:mod:`cowcore.calibrate`);
``cowcore sweep``, ``compare`` and ``plot`` run, compare and draw studies
(:mod:`cowcore.sweep`, :mod:`cowcore.compare`, :mod:`cowcore.plot`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cowcore import __version__
from cowcore.bench import register as register_bench_command
from cowcore.calibrate import register as register_calibrate_command
from cowcore.compare import register as register_compare_command
from cowcore.errors import CowError, ScenarioError
from cowcore.kernel.cli import register as register_kernel_commands
from cowcore.kernel.compile import ScenarioEncodingError, decode_scenario
from cowcore.machine import BACKENDS, DEFAULT_BACKEND
from cowcore.plot import register as register_plot_command
from cowcore.protocol import KERNEL_PROFILES
from cowcore.report import add_report_options, parse_cont, report_scenario, report_text
from cowcore.scenario import Scenario, ScenarioSyntaxError, dumps
from cowcore.study import register as register_study_command
from cowcore.sweep import register as register_sweep_command
from cowcore.workloads.cli import register as register_workload_command


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
            if args.report:
                status = max(status, _report_scenario(scenario, args, observations=True))
                continue
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


def _read_scenario(path: str) -> Scenario | int:
    """The parsed scenario, or the exit status after printing why there is none."""
    name = Path(path).name.removesuffix(".cow")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        print(f"cowcore: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        return Scenario.parse(decode_scenario(data, path), name)
    except (ScenarioEncodingError, ScenarioSyntaxError) as exc:
        print(dumps({"error": str(exc)}), flush=True)
        return 1


def _report_scenario(scenario: Scenario, args: argparse.Namespace, *, observations: bool) -> int:
    """Run ``scenario`` and print its report (``cowcore report``, ``cowcore run --report``);
    the observations too if ``observations``, else only an error observation. A run-time
    error is reported, then the state it stopped in; the status is then 1."""

    def show(obs: dict[str, object]) -> None:
        if observations or "error" in obs:
            print(dumps(obs), flush=True)

    result = report_scenario(
        scenario,
        backend=args.backend,
        kernel=args.kernel,
        check=args.check,
        cont=args.cont_orders,
        on_observation=show,
    )
    print(report_text(result.report, args), flush=True)
    return 1 if result.error is not None else 0


def _report(args: argparse.Namespace) -> int:
    scenario = _read_scenario(args.file)
    if isinstance(scenario, int):
        return scenario
    try:
        return _report_scenario(scenario, args, observations=False)
    except CowError as exc:  # a bad backend name, an invariant broken under --check
        print(f"cowcore: {args.file}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _trace(args: argparse.Namespace) -> int:
    # Imported here: the trace needs numpy, which `cowcore run` does not.
    from cowcore.outcome import EventRecord  # noqa: PLC0415
    from cowcore.trace import (  # noqa: PLC0415
        TraceEntry,
        format_entry,
        format_event,
        trace_scenario,
    )

    scenario = _read_scenario(args.file)
    if isinstance(scenario, int):
        return scenario
    cost = None
    if args.cost is not None:
        from cowcore.cost import load  # noqa: PLC0415

        cost = load(args.cost or None)

    def show(entry: TraceEntry) -> None:
        if args.json or args.all or entry.faulted:
            print(format_entry(entry, args.json), flush=True)

    def show_observation(obs: dict[str, object]) -> None:
        if "error" in obs or args.observations:
            print(dumps(obs), flush=True)

    def show_event(line: int, event: EventRecord) -> None:
        if not args.json:
            print(format_event(line, event), flush=True)

    try:
        trace = trace_scenario(
            scenario,
            backend=args.backend,
            kernel=args.kernel,
            check=args.check,
            on_entry=show,
            on_observation=show_observation,
            on_event=show_event if args.events else None,
            cost=cost,
        )
    except CowError as exc:  # a bad backend name, an invariant broken under --check
        print(f"cowcore: {args.file}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 1 if trace.error is not None else 0


def _replay(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from cowcore import replay as rp  # noqa: PLC0415  (needs numpy)

    try:
        if args.format == "lackey":
            with open(args.trace, errors="replace") as f:
                trace = rp.parse_lackey(f, instructions=args.instructions)
        else:
            trace = rp.read_trace(args.trace)
        result = rp.replay(
            trace,
            kernel=args.kernel,
            backend=args.backend,
            thp=rp.parse_thp(args.thp),
            auto_map=args.auto_map or args.format == "lackey",
        )
        if args.out:
            rp.write_records(result.records, args.out)
    except OSError as exc:
        print(f"cowcore: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except CowError as exc:
        print(f"cowcore: {args.trace}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        for row in rp.record_rows(result.records):
            print(json.dumps(row, separators=(",", ":")))
        return 0
    summary = result.summary()
    if args.summary:
        print(
            json.dumps(
                {
                    "accesses": len(result.records),
                    "by_outcome": rp.summary_by_outcome(summary),
                    "by_reason": {f"{o}/{r}": n for (o, r), n in sorted(summary.items())},
                }
            )
        )
        return 0
    print(rp.format_summary(summary, len(result.records)))
    return 0


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--kernel`` and ``--check``: how the commands that run a scenario
    (``run``, ``trace``, ``report``) build its machine."""
    parser.add_argument(
        "--backend",
        default=DEFAULT_BACKEND,
        choices=BACKENDS,
        help="simulation backend (default: %(default)s)",
    )
    parser.add_argument(
        "--kernel",
        choices=KERNEL_PROFILES,
        default=None,
        help="override the scenario's kernel profile",
    )
    parser.add_argument(
        "--check", action="store_true", help="verify every invariant after each statement"
    )


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
    add_scenario_options(run)
    run.add_argument(
        "--report",
        action="store_true",
        help="after each scenario's observations, print the report of `cowcore report` "
        "(the options below apply to it)",
    )
    add_report_options(run)
    run.set_defaults(func=_run)
    report = sub.add_parser(
        "report",
        help="run a scenario and report its memory as smem, pmap -X and thpmaps would",
        description="Run a .cow scenario and print, for its final state, a per-process table "
        "in smem's convention, a per-mapping table in pmap -X style and a thpmaps breakdown "
        "of each mapping's anonymous memory (docs/accounting.md, 'Reports').",
    )
    report.add_argument("file", metavar="FILE", help="scenario file")
    add_scenario_options(report)
    add_report_options(report)
    report.set_defaults(func=_report)
    trace = sub.add_parser(
        "trace",
        help="run a scenario and explain every fault",
        description="Run a .cow scenario as `cowcore run` does, doing its reads and writes as "
        "recorded accesses, and print one line per fault: what the kernel did and which "
        "condition decided it.",
    )
    trace.add_argument("file", metavar="FILE", help="scenario file")
    add_scenario_options(trace)
    trace.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per access record (every access, faulting or not)",
    )
    trace.add_argument("--all", action="store_true", help="also print accesses without a fault")
    trace.add_argument(
        "--observations",
        action="store_true",
        help="also print the scenario's observations (errors are always printed)",
    )
    trace.add_argument(
        "--events",
        action="store_true",
        help="also print the fork, zap (munmap, exit, MADV_DONTNEED), mprotect and collapse "
        "events (one per 2M block, with its result), and the folio splits of drop_caches",
    )
    trace.add_argument(
        "--cost",
        nargs="?",
        const="",
        default=None,
        metavar="COSTS.toml",
        help="add each access's estimated time under the cost model (this host's calibration "
        "by default, see `cowcore calibrate`; an estimate): accesses are then made one by one",
    )
    trace.set_defaults(func=_trace)
    replay = sub.add_parser(
        "replay",
        help="replay a memory trace (canonical table or valgrind lackey)",
        description="Replay a memory trace through the simulator and summarise what each "
        "access did (see docs/embedding.md, 'Traces in').",
    )
    replay.add_argument("trace", metavar="TRACE", help="trace file")
    replay.add_argument(
        "--format",
        choices=("canonical", "lackey"),
        default="canonical",
        help="canonical: a table (.csv, .parquet, .npy); lackey: valgrind --tool=lackey "
        "--trace-mem=yes output (default: %(default)s)",
    )
    replay.add_argument("--kernel", choices=KERNEL_PROFILES, default="6.15")
    replay.add_argument("--backend", default=DEFAULT_BACKEND, choices=BACKENDS)
    replay.add_argument(
        "--thp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a THP setting before the replay: enabled=always, 64K=always, zero_page=off "
        "(repeatable)",
    )
    replay.add_argument(
        "--auto-map",
        action="store_true",
        help="map each 2M region on its first touch (always on for lackey)",
    )
    replay.add_argument(
        "--instructions",
        action="store_true",
        help="lackey: replay instruction fetches (I lines) as reads too",
    )
    replay.add_argument("--out", metavar="FILE", help="write the records (.npy, .csv, .parquet)")
    shown = replay.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print one JSON object per record")
    shown.add_argument("--summary", action="store_true", help="print the summary as JSON")
    replay.set_defaults(func=_replay)
    register_kernel_commands(sub)
    register_bench_command(sub)
    register_calibrate_command(sub)
    register_workload_command(sub)
    register_sweep_command(sub)
    register_compare_command(sub)
    register_plot_command(sub)
    register_study_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cowcore`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "cont"):
        try:
            args.cont_orders = [parse_cont(size) for size in args.cont]
        except ValueError as exc:
            parser.error(str(exc))
    if args.command == "run" and not args.report:
        given = [args.json, args.totals, args.unit, args.cont, args.inc_empty]
        if any(given):
            parser.error(
                "the report options (--json, -t, -k, -m, --abbreviate, --cont, "
                "--inc-empty) need --report"
            )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
