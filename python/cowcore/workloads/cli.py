"""``cowcore workload NAME --param k=v ...``: one run of a workload, its row printed."""

from __future__ import annotations

import argparse
import json
import sys

from cowcore.errors import CowError, InvalidArgumentError
from cowcore.workloads import REGISTRY, Scalar, get

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def parse_value(name: str, default: Scalar | None, text: str) -> Scalar:
    """``text`` as the type of the parameter's default (``policy.<name>`` is a bool, any
    other parameter without a default a string).

    Raises:
        InvalidArgumentError: not a value of that type.
    """
    kind: type = type(default) if default is not None else str
    if default is None and name.startswith("policy."):
        kind = bool
    try:
        if kind is bool:
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise InvalidArgumentError(
            f"parameter {name!r} takes {kind.__name__} values, not {text!r}"
        ) from None
    return text


def _params(name: str, given: list[str]) -> dict[str, Scalar]:
    workload = get(name)
    defaults = workload.resolve({})
    params: dict[str, Scalar] = {}
    for item in given:
        key, eq, value = item.partition("=")
        if not eq:
            raise InvalidArgumentError(f"--param takes KEY=VALUE, not {item!r}")
        params[key] = parse_value(key, defaults.get(key), value)
    return params


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
