"""``cowcore workload NAME --param k=v ...``: one run of a workload, its row printed."""

from __future__ import annotations

import argparse
import json
import sys

from cowcore.errors import CowError
from cowcore.workloads import REGISTRY, Scalar, get, parse_assignments, typed_params


def _params(name: str, given: list[str]) -> dict[str, Scalar]:
    """``--param KEY=VALUE`` items as the workload's typed parameters."""
    return typed_params(name, parse_assignments(given))


def _main(args: argparse.Namespace) -> int:
    try:
        workload = get(args.name)
        result = workload.run(workload.resolve(_params(args.name, args.param)))
    except CowError as exc:
        print(f"cowcore workload: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc = {"row": result.row(), "timeline": list(result.timeline) if args.timeline else None}
        print(json.dumps(doc if args.timeline else result.row()))
        return 0
    for key, value in result.row().items():
        print(f"{key:24} {value}")
    if args.timeline and result.timeline:
        keys = list(result.timeline[0])
        print()
        print("\t".join(keys))
        for row in result.timeline:
            print("\t".join(str(row[k]) for k in keys))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``cowcore workload`` to the command line."""
    p = sub.add_parser(
        "workload",
        help="run one workload (snapshot, prefork, ...) and print its result row",
        description="Run one workload of cowcore.workloads with the given parameters and "
        "print its row: every parameter (defaults filled in), then every metric. See "
        "docs/workloads.md.",
    )
    p.add_argument("name", choices=sorted(REGISTRY), metavar="NAME", help="the workload")
    p.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (repeatable): heap=4G, thp.64K=always, kernel=6.12, ...",
    )
    p.add_argument("--json", action="store_true", help="print the row as one JSON object")
    p.add_argument(
        "--timeline",
        action="store_true",
        help="also print the timeline (with --json: {'row': ..., 'timeline': [...]})",
    )
    p.set_defaults(func=_main)
