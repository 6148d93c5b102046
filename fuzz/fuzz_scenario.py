"""atheris harness: the scenario parser and runner on arbitrary bytes.

The input is decoded as text; half the time it is used as is (the parser must return or
raise ``ScenarioSyntaxError``), half the time its bytes pick statements from the grammar's
own tokens, so that most inputs parse and run. A parsed scenario runs on every backend with
``check()`` after each statement; the outputs must be identical, and only ``CowError``
subclasses may escape. See fuzz/README.md.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import cowcore
    from cowcore import CowError, Scenario, ScenarioError, ScenarioSyntaxError

PROCS = ["P", "C", "D", "E"]
MAPS = ["A", "B"]
OFFSETS = ["0", "4K", "8K", "60K", "64K", "1M", "2044K", "2M", "3000", "-4K"]
LENGTHS = ["4K", "8K", "16K", "64K", "128K", "1M", "2M", "2G", "0", "100"]
WORDS = {
    "size": ["16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M", "8K"],
    "mode": ["always", "madvise", "inherit", "never", "bad"],
    "prot": ["r", "rw", "none", "x"],
    "advice": [
        "hugepage",
        "nohugepage",
        "dontneed",
        "dontfork",
        "dofork",
        "wipeonfork",
        "keeponfork",
        "free",
    ],
}


def grammar(fdp: atheris.FuzzedDataProvider) -> str:
    lines = ["P mmap A 2M"]
    for _ in range(fdp.ConsumeIntInRange(0, 30)):
        pick = fdp.PickValueInList
        proc, name = pick(PROCS), pick(MAPS)
        rng = f"{name} {pick(OFFSETS)} {pick(LENGTHS)}"
        verb = fdp.ConsumeIntInRange(0, 12)
        lines.append(
            [
                f"{proc} mmap {name} {pick(LENGTHS)}",
                f"{proc} write {rng} {fdp.ConsumeIntInRange(0, 1 << 64)}",
                f"{proc} read {rng}",
                # observe prints a line per page even past the mapping's end: keep it short
                f"{proc} observe {name} {pick(OFFSETS)} {pick(LENGTHS[:-3])}",
                f"{proc} munmap {rng}",
                f"{proc} mprotect {rng} {pick(WORDS['prot'])}",
                f"{proc} madvise {rng} {pick(WORDS['advice'])}",
                f"{proc} fork {pick(PROCS)}",
                f"{proc} exit",
                f"thp size {pick(WORDS['size'])} {pick(WORDS['mode'])}",
                f"thp enabled {pick(WORDS['mode'])}",
                f"thp zero_page {pick(['on', 'off'])}",
                "stats",
            ][verb]
        )
    return "\n".join(lines) + "\n"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    fdp = atheris.FuzzedDataProvider(data)
    text = grammar(fdp) if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(2000)
    try:
        scenario = Scenario.parse(text)
    except ScenarioSyntaxError:
        return
    outs = []
    for backend in cowcore.BACKENDS:
        try:
            outs.append(scenario.run(backend=backend, check=True))
        except ScenarioError as exc:
            outs.append(exc.observations)
        except CowError as exc:  # an InvariantError from check(): a bug
            raise AssertionError(f"{backend}: {exc!r}\n{text}") from exc
    if any(out != outs[0] for out in outs):
        raise AssertionError(f"backends disagree on\n{text}")


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
