"""atheris harness: the scenario parser and runner on arbitrary bytes.

The input is decoded as text; half the time it is used as is (the parser must return or
raise ``ScenarioSyntaxError``), half the time its bytes pick statements of every verb from
the grammar's own tokens (``tests/strategies.py``), so that most inputs parse and run. A
parsed scenario runs on every backend with ``check()`` after each statement; the outputs
must be identical, and only ``CowError`` subclasses may escape. See fuzz/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import cowcore
    from cowcore import CowError, Scenario, ScenarioError, ScenarioSyntaxError

# The statements and their tokens are the tests' (tests/strategies.py, built from the verb
# table of cowcore.scenario): a new verb is fuzzed here without an edit.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.strategies import FORMS, SCENARIO_TOKENS, scenario_statement


def grammar(fdp: atheris.FuzzedDataProvider) -> str:
    """A 2M mapping, then up to 30 statements of any verb of the verb table, their arguments
    picked from the tests' token tables (an invalid one a time in 40, so that most scenarios
    parse and run), a write's value from 0 .. 2^64."""

    def pick(key: str) -> str | None:
        if key.startswith("[") and fdp.ConsumeBool():
            return None
        if key == "[VALUE]":
            return str(fdp.ConsumeIntInRange(0, 1 << 64))  # 2^64 itself is invalid
        valid, invalid = SCENARIO_TOKENS[key]
        pool = invalid if invalid and fdp.ConsumeIntInRange(0, 39) == 0 else valid
        return str(fdp.PickValueInList(pool))

    lines = ["P mmap A 2M"]
    for _ in range(fdp.ConsumeIntInRange(0, 30)):
        _, form = FORMS[fdp.ConsumeIntInRange(0, len(FORMS) - 1)]
        lines.append(scenario_statement(form, pick))
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
