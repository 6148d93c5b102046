"""The command line's file handling fuzzed with hypothesis (``HYPOTHESIS_PROFILE=long`` for more).

Any bytes as a ``.cow`` file (invalid UTF-8, NULs, odd line breaks, huge numbers, very long
lines, mostly-valid statements with junk spliced in):

* ``cowcore run FILE`` (in process, ``cli.main``) never raises, exits 0 or 1, exits 1 exactly
  when it printed an error line, which is then its last line, prints only JSON lines on
  stdout and nothing on stderr;
* the kernel runner's front end (``decode_scenario`` then ``compile_scenario``, what
  ``cowcore kernel run`` does before it boots anything) raises nothing but its
  ``ScenarioSyntaxError``; a file that is not UTF-8 gets the same error line from both.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cowcore.cli import main
from cowcore.kernel.compile import (
    ScenarioEncodingError,
    ScenarioSyntaxError,
    compile_scenario,
    decode_scenario,
)
from tests.strategies import VERB_WORDS

TOKENS = [
    *["P", "P", "C", "A", "A", "B", "0", "4K", "64K", "2M", "1G", "7"],
    *VERB_WORDS,  # every word of the verb table: mmap, write, thp, size, stats, kernel, ...
    *["rw", "r", "none", "dontneed", "wipeonfork", "always"],
    *["never", "inherit", "off", "6.12", "6.15", "#"],
    # near misses and huge numbers
    *["99999999999999999999999999999G", "18446744073709551616", "18446744073709551615"],
    *["-4K", "0x10", "4k", "007", "\uff14K", "\ufeffP", "é", "4K\x00", "", "2048K"],
]
SEPARATORS = [" ", " ", " ", "\t", "\n", "\n", "\r\n", "\r", "\x00", "\x0b", "\x0c"]
SEPARATORS += ["\x1c", "\x85", "\u2028", "  \n"]
JUNK = [b"\xff", b"\xc3", b"\xe9", b"\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00"]


ANY_DIGITS = 100_000


@st.composite
def cow_files(draw: st.DrawFn, max_digits: int = ANY_DIGITS) -> bytes:
    """Raw bytes, or statements of the grammar's tokens with odd separators, then perhaps
    junk bytes spliced in and a very long line appended (a number of at most
    ``max_digits`` digits, a comment, or many tokens)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=400))
    parts = draw(
        st.lists(st.tuples(st.sampled_from(TOKENS), st.sampled_from(SEPARATORS)), max_size=60)
    )
    data = ("P mmap A 2M\n" + "".join(t + s for t, s in parts)).encode()
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(JUNK)) + data[at:]
    long = draw(st.sampled_from(["", "comment", "token", "tokens"]))
    size = draw(st.integers(10_000, 100_000))
    data += {
        "": b"",
        "comment": b"# " + b"x" * size + b"\n",
        "token": b"P write A 0 4K " + b"9" * min(size, max_digits) + b"\n",
        "tokens": b"P write" + b" A" * (size // 2) + b"\n",
    }[long]
    return data


def _run_cli(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["run", str(path)])
    return status, out.getvalue(), err.getvalue()


@given(cow_files())
def test_cowcore_run_handles_any_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.cow"
        path.write_bytes(data)
        status, out, err = _run_cli(path)
    assert status in (0, 1)
    assert err == ""
    lines = [json.loads(line) for line in out.splitlines()]
    errors = [i for i, obs in enumerate(lines) if "error" in obs]
    assert (status == 1) == bool(errors)
    if errors:
        assert errors == [len(lines) - 1], "the error line is the one last line"
        assert list(lines[-1]) == ["error"] and lines[-1]["error"].startswith("line ")
    encoding_error: ScenarioEncodingError | None = None
    try:
        decode_scenario(data, str(path))
    except ScenarioEncodingError as exc:
        encoding_error = exc
    if encoding_error is not None:  # both commands print the same line
        assert lines == [{"error": str(encoding_error)}]


@given(cow_files())
def test_kernel_compiler_raises_only_its_syntax_error(data: bytes) -> None:
    error: ScenarioSyntaxError | None = None
    try:
        compile_scenario("fuzz", decode_scenario(data, "fuzz.cow"))
    except ScenarioSyntaxError as exc:  # anything else fails the test
        error = exc
    if error is not None:
        assert error.line >= 1
        assert error.observation() == {"error": f"line {error.line}: {error.message}"}
