"""atheris harness: the command line's file handling on arbitrary bytes.

The input is written to a ``.cow`` file as is: ``cowcore run FILE`` (in process) must exit 0
or 1, exit 1 exactly when it printed an error line, which is then its last line, print only
JSON lines on stdout and nothing on stderr; and the kernel runner's front end
(``decode_scenario`` then ``compile_scenario``) must raise nothing but its
``ScenarioSyntaxError``. A file that is not UTF-8 must get the same error line from both.
See fuzz/README.md; ``tests/test_fuzz_cli.py`` is the hypothesis version that CI runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from cowcore.cli import main as cli_main
    from cowcore.kernel.compile import (
        ScenarioEncodingError,
        ScenarioSyntaxError,
        compile_scenario,
        decode_scenario,
    )

WORKDIR = Path(tempfile.mkdtemp(prefix="fuzz-cli-"))
COW = WORKDIR / "fuzz.cow"


def check_cli(data: bytes) -> None:
    COW.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli_main(["run", str(COW)])
    if status not in (0, 1) or err.getvalue():
        raise AssertionError(f"status {status}, stderr {err.getvalue()!r}")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    errors = [i for i, obs in enumerate(lines) if "error" in obs]
    if (status == 1) != bool(errors) or errors not in ([], [len(lines) - 1]):
        raise AssertionError(f"status {status} with error lines at {errors} of {len(lines)}")
    try:
        decode_scenario(data, str(COW))
    except ScenarioEncodingError as exc:
        if lines != [{"error": str(exc)}]:
            raise AssertionError(f"the encoding error differs: {lines}") from None


def check_compiler(data: bytes) -> None:
    with contextlib.suppress(ScenarioSyntaxError):
        compile_scenario("fuzz", decode_scenario(data, "fuzz.cow"))


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    check_compiler(data)
    check_cli(data)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
