"""The scenario language fuzzed with hypothesis (fast; ``HYPOTHESIS_PROFILE=long`` for more).

* any text: ``Scenario.parse`` returns or raises ``ScenarioSyntaxError``, nothing else;
  ``run_scenario`` never raises;
* statements of every verb of the verb table built from the grammar's own tokens
  (``tests/strategies.py``), mostly valid, some not: every backend
  prints exactly the same lines (``check()`` after every statement), the run stops at the
  first error with a line-numbered error observation, and nothing but a ``CowError``
  subclass ever escapes ``Scenario.run``.
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

import cowcore
from cowcore import Scenario, ScenarioError, ScenarioSyntaxError
from cowcore.scenario import Observation, dumps
from tests.strategies import scenario_texts


@given(st.text(max_size=300))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    with contextlib.suppress(ScenarioSyntaxError):
        Scenario.parse(text)
    out = cowcore.run_scenario(text, backend="reference")
    assert isinstance(out, list)


@given(
    st.lists(
        st.sampled_from(
            [
                "P",
                "mmap",
                "A",
                "4K",
                "2M",
                "write",
                "0",
                "fork",
                "C",
                "exit",
                "thp",
                "size",
                "64K",
                "always",
                "kernel",
                "6.15",
                "#",
                "\t",
                " ",
                "observe",
                "stats",
                "read",
                "\n",
            ]
        ),
        max_size=60,
    )
)
def test_token_soup_parses_or_fails_cleanly(tokens: list[str]) -> None:
    text = " ".join(tokens)
    with contextlib.suppress(ScenarioSyntaxError):
        Scenario.parse(text)


@given(scenario_texts)
def test_every_backend_prints_the_same_lines(text: str) -> None:
    outs: dict[str, list[Observation]] = {}
    failed: ScenarioError | None
    for backend in cowcore.BACKENDS:
        try:
            scenario = Scenario.parse(text)
        except ScenarioSyntaxError as exc:
            outs[backend] = [{"error": str(exc)}]
            continue
        try:
            outs[backend] = scenario.run(backend=backend, check=True)
        except ScenarioError as exc:
            failed = exc
            outs[backend] = exc.observations
        else:
            failed = None
        if failed is not None:
            assert outs[backend][-1] == {"error": f"line {failed.line}: {failed.message}"}
        assert outs[backend] == cowcore.run_scenario(text, backend=backend)
    lines = {b: [dumps(o) for o in out] for b, out in outs.items()}
    first = next(iter(lines.values()))
    assert all(v == first for v in lines.values()), lines
    assert all("error" not in o for o in next(iter(outs.values()))[:-1])
