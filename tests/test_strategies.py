"""The shared generators (``tests/strategies.py``) cover what they say they cover."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import find, given, settings

from cowcore import Scenario, ScenarioSyntaxError
from cowcore.protocol import ADVICES, PROTS, THP_MODES, THP_SIZE_MODES
from cowcore.scenario import VERBS, Verb
from tests import strategies as gen


def test_every_verb_has_a_form_and_every_argument_a_table() -> None:
    assert {syntax for syntax, _ in gen.FORMS} == {v.syntax for v in VERBS}
    assert set(gen.STATEMENT_WEIGHTS) <= {v.syntax for v in VERBS}
    for _, form in gen.FORMS:
        for kind, text in form:
            assert kind == "word" or text in gen.SCENARIO_TOKENS


def test_valid_tokens_make_statements_that_parse() -> None:
    for syntax, form in gen.FORMS:
        for i in range(4):  # each valid token of every argument at least once, cycling

            def first(key: str, i: int = i) -> str:
                valid = gen.SCENARIO_TOKENS[key][0]
                return valid[i % len(valid)]

            text = gen.scenario_statement(form, first)
            if "observe" in syntax or "mmap" in syntax:
                text = text.replace("2G", "1M")  # the table's 2G is past 1G at run time only
            Scenario.parse(text)


def test_invalid_tokens_make_syntax_errors() -> None:
    for _, form in gen.FORMS:
        for key in {text for kind, text in form if kind == "arg"}:
            for bad in gen.SCENARIO_TOKENS[key][1]:

                def pick(k: str, key: str = key, bad: str = bad) -> str:
                    return bad if k == key else gen.SCENARIO_TOKENS[k][0][0]

                try:
                    Scenario.parse(gen.scenario_statement(form, pick))
                except ScenarioSyntaxError:
                    continue
                raise AssertionError(f"{gen.scenario_statement(form, pick)!r} parsed")


def test_the_vocabularies_are_the_packages() -> None:
    assert set(gen.WEIGHTED_ADVICES) == set(ADVICES)
    assert set(gen.WEIGHTED_SIZE_MODES) == set(THP_SIZE_MODES)
    assert set(gen.SCENARIO_TOKENS["r|rw|none"][0]) == set(PROTS)
    assert set(gen.SCENARIO_TOKENS["always|madvise|never"][0]) == set(THP_MODES)
    assert set(gen.API_ADVICES) > set(ADVICES) and set(gen.API_PROTS) > set(PROTS)


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v.syntax.split()[1 if v.process else 0])
def test_scenario_statements_reach_every_verb(verb: Verb[Any]) -> None:
    def spells(line: str) -> bool:
        words = line.split()[1:] if verb.process else line.split()
        return tuple(words[: len(verb.words)]) == verb.words

    line = find(
        gen.scenario_statements(), spells, settings=settings(database=None, max_examples=5000)
    )
    assert spells(line)


@given(gen.api_calls())
def test_api_calls_name_a_known_method(call: tuple[object, ...]) -> None:
    assert call[0] in gen.API_METHODS
