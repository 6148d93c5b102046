"""The verb table of ``cowcore.scenario`` against the two other places that spell the language.

* docs/scenario-format.md: its statement tables list exactly the rows of ``VERBS``;
* the kernel runner's compiler (``cowcore.kernel.compile``), which keeps a parser of its own
  because it is the oracle: on a corpus built from the table (every verb with its arguments
  valid, one too few, one too many, and each argument spoiled in turn) both parsers accept the
  same statements and reject the others at the same line. A verb added to the table and not
  to the compiler (or the other way round) fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cowcore import Scenario, ScenarioSyntaxError
from cowcore.kernel import compile as kcompile
from cowcore.scenario import VERBS, Verb

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "P mmap A 2M\n# two lines before the statement under test\n"
LINE = PREFIX.count("\n") + 1

# A valid token and some invalid ones for each kind of argument the table's syntax names.
GOOD = {"PROFILE": "6.15", "SIZE": "64K", "NAME": "A", "OFF": "4K", "LEN": "8K"}
GOOD |= {"ADVICE": "dontneed", "[VALUE]": "7", "C": "C", "POLICY": "mm_id_exact"}
GOOD |= {"NEW": "B"}
BAD = {
    "PROFILE": ["6.13", "615"],
    "SIZE": ["8K", "4M", "x", "64k"],
    "NAME": ["1A", "A-B", "Ä"],
    "OFF": ["3000", "-4K", "4k", "0x1000", "128T", "99999999999999999999999K"],
    "LEN": ["0", "100", "x", "128T", "1.5M"],
    "ADVICE": ["free", "DONTNEED"],
    "[VALUE]": ["07", "-1", "18446744073709551616", "1e3", "+1"],
    "C": ["1C", "C.D"],
    "POLICY": ["bogus", "MM_ID_EXACT", "cow_reuse"],
    "NEW": ["1B", "B-C"],
}


def _args(verb: Verb[Any]) -> list[str]:
    skip = len(verb.words) + (1 if verb.process else 0)
    return verb.syntax.split()[skip:]


def _good(arg: str) -> str:
    return arg.split("|", maxsplit=1)[0] if "|" in arg else GOOD[arg]


def _bad(arg: str) -> list[str]:
    return ["bogus", arg.rsplit("|", maxsplit=1)[-1].upper()] if "|" in arg else BAD[arg]


def _corpus() -> list[str]:
    out = [
        "thp",
        "thp bogus always",
        "thp size",
        "P",
        "P bogus A",
        "1P exit",
        "P-Q exit",
        "P kernel 6.15",
        "P stats",
        "P thp enabled always",
        "P policy mm_id_exact on",
        "policy",
        "kernel",
        "stats now",
        "P write A 0 4K 1 2",
        "P write A 0 4K 0",
        "P write A 0 4K 18446744073709551615",
        "thp size 2048K always",
        "P munmap A 127T 2T",
        "P observe A 0 131071G",
    ]
    for verb in VERBS:
        head = ("P " if verb.process else "") + " ".join(verb.words)
        args = [_good(a) for a in _args(verb)]
        low = verb.arity[0]
        out.append(" ".join([head, *args[:low]]))
        out.append(" ".join([head, *args]))
        if low:
            out.append(" ".join([head, *args[: low - 1]]))
        out.append(" ".join([head, *args, "4K"]))
        for i, arg in enumerate(_args(verb)):
            for bad in _bad(arg):
                out.append(" ".join([head, *args[:i], bad, *args[i + 1 :]]))
    return out


def _simulator(text: str) -> int | None:
    try:
        Scenario.parse(text)
    except ScenarioSyntaxError as exc:
        return exc.line
    return None


def _kernel_runner(text: str) -> int | None:
    try:
        kcompile.compile_scenario("s", text)
    except kcompile.ScenarioSyntaxError as exc:
        return exc.line
    return None


def test_the_table_has_one_row_per_statement_kind() -> None:
    kinds = [v.kind for v in VERBS]
    assert len(set(kinds)) == len(kinds)
    spelled = [(v.process, v.words) for v in VERBS]
    assert len(set(spelled)) == len(spelled)
    assert {v.words for v in VERBS if v.process}.isdisjoint({("kernel",), ("stats",)})


def test_the_docs_list_exactly_the_table() -> None:
    text = (ROOT / "docs" / "scenario-format.md").read_text()
    cells = re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE)
    documented = [c.replace("\\|", "|") for c in cells]
    assert sorted(documented) == sorted(v.syntax for v in VERBS)


def test_arity_comes_from_the_syntax() -> None:
    by_syntax = {v.syntax: v for v in VERBS}
    assert by_syntax["P write NAME OFF LEN [VALUE]"].arity == (3, 4)
    assert by_syntax["P write NAME OFF LEN [VALUE]"].words == ("write",)
    assert by_syntax["thp size SIZE always|madvise|inherit|never"].words == ("thp", "size")
    assert by_syntax["thp size SIZE always|madvise|inherit|never"].arity == (2, 2)
    assert by_syntax["P exit"].arity == (0, 0)
    assert by_syntax["stats"].words == ("stats",)


CORPUS = _corpus()


def test_the_corpus_has_both_outcomes() -> None:
    outcomes = [_simulator(PREFIX + s) for s in CORPUS]
    assert outcomes.count(None) >= len(VERBS)
    assert outcomes.count(LINE) >= 3 * len(VERBS)


@pytest.mark.parametrize("stmt", CORPUS)
def test_simulator_and_kernel_runner_parse_alike(stmt: str) -> None:
    text = PREFIX + stmt + "\nP observe A 0 4K\n"
    sim, kernel = _simulator(text), _kernel_runner(text)
    assert sim == kernel, f"{stmt!r}: simulator {sim}, kernel runner {kernel}"
    assert sim in (None, LINE)


@pytest.mark.parametrize("stmt", CORPUS)
def test_every_parsed_statement_is_typed(stmt: str) -> None:
    try:
        (*_, parsed, _) = Scenario.parse(PREFIX + stmt + "\nP observe A 0 4K\n").statements
    except ScenarioSyntaxError:
        return
    assert parsed.line == LINE
    assert type(parsed) in {v.kind for v in VERBS}
