"""The scenario language fuzzed with hypothesis (fast; ``HYPOTHESIS_PROFILE=long`` for more).

* any text: ``Scenario.parse`` returns or raises ``ScenarioSyntaxError``, nothing else;
  ``run_scenario`` never raises;
* statements built from the grammar's own tokens, mostly valid, some not: every backend
  prints exactly the same lines (``check()`` after every statement), the run stops at the
  first error with a line-numbered error observation, and nothing but a ``CowError``
  subclass ever escapes ``Scenario.run``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

import cowcore
from cowcore import Scenario, ScenarioError, ScenarioSyntaxError
from cowcore.scenario import Observation, dumps

PROCS = ["P", "P", "P", "C", "C", "D", "E"]
MAPS = ["A", "A", "A", "B", "Z"]
# (valid tokens, invalid ones); an invalid token is drawn one time in 40
OFFSETS = (["0", "4K", "8K", "60K", "64K", "1M", "2044K", "2M"], ["3000", "131072G", "-4K", "4k"])
LENGTHS = (["4K", "8K", "16K", "64K", "128K", "1M", "2M", "2G"], ["0", "100", "x"])
MMAP_LENGTHS = (["4K", "64K", "1M", "2M", "4M", "1G", "2G"], ["0", "3000"])
VALUES = (["0", "1", "7", "18446744073709551615"], ["18446744073709551616", "-1", "07"])
SIZES = (["16K", "32K", "64K", "128K", "256K", "512K", "1M", "2M", "2048K"], ["8K", "4M"])
SIZE_MODES = (["always", "always", "madvise", "inherit", "never"], ["sometimes"])
MODES = (["always", "madvise", "never"], ["inherit"])
PROTS = (["r", "rw", "none"], ["x"])
ADVICES = (
    ["hugepage", "nohugepage", "dontneed", "dontfork", "dofork", "wipeonfork", "keeponfork"],
    ["free"],
)
ZERO = (["on", "off"], ["yes"])
KERNELS = (["6.12", "6.15"], ["6.13"])


@st.composite
def statement(draw: st.DrawFn) -> str:
    def tok(pool: tuple[list[str], list[str]]) -> str:
        valid, invalid = pool
        return draw(st.sampled_from(invalid if draw(st.integers(0, 39)) == 0 else valid))

    proc = draw(st.sampled_from(PROCS))
    name = draw(st.sampled_from(MAPS))

    def rng() -> str:
        return f"{name} {tok(OFFSETS)} {tok(LENGTHS)}"

    choices: list[Callable[[], str]] = [
        lambda: f"{proc} mmap {name} {tok(MMAP_LENGTHS)}",
        lambda: f"{proc} write {rng()}",
        lambda: f"{proc} write {rng()} {tok(VALUES)}",
        lambda: f"{proc} write {rng()} {tok(VALUES)}",
        lambda: f"{proc} read {rng()}",
        # observe prints a line per page even past the mapping's end: no 2G ranges
        lambda: f"{proc} observe {name} {tok(OFFSETS)} {tok((LENGTHS[0][:-1], LENGTHS[1]))}",
        lambda: f"{proc} observe {name} {tok(OFFSETS)} {tok((LENGTHS[0][:-1], LENGTHS[1]))}",
        lambda: f"{proc} munmap {rng()}",
        lambda: f"{proc} mprotect {rng()} {tok(PROTS)}",
        lambda: f"{proc} madvise {rng()} {tok(ADVICES)}",
        lambda: f"{proc} fork {draw(st.sampled_from(PROCS))}",
        lambda: f"{proc} fork {draw(st.sampled_from(PROCS))}",
        lambda: f"{proc} exit",
        lambda: "stats",
        lambda: f"thp size {tok(SIZES)} {tok(SIZE_MODES)}",
        lambda: f"thp enabled {tok(MODES)}",
        lambda: f"thp zero_page {tok(ZERO)}",
        lambda: f"kernel {tok(KERNELS)}",
        lambda: "# a comment",
    ]
    return choices[draw(st.integers(0, len(choices) - 1))]()


scenarios = st.lists(statement(), min_size=1, max_size=25).map(
    lambda lines: "P mmap A 2M\n" + "\n".join(lines) + "\n"
)


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


@given(scenarios)
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
