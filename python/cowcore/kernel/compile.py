"""Parse and syntax-check `.cow` scenarios and compile them for the probe.

The probe (``probe.c`` in this package) is kept simple by doing the language work here: this
module applies the lexical and syntax rules of ``docs/scenario-format.md`` and turns a scenario
into a line format with names replaced by indices and sizes by byte counts (described at the top
of ``probe.c``). Syntax errors are found before anything runs, exactly as the format requires:
a scenario with a syntax error never reaches the kernel, its whole output is the error line.
Run-time errors (unknown process or mapping, exited process, access to an unmapped page, ...)
depend on the state of the run and are detected by the probe, which knows the line numbers
because every compiled statement carries its source line.

This module is independent of the simulator's own parser on purpose: the kernel runner is the
oracle, so it must not share code (or bugs) with the thing it checks.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = [
    "PAGE",
    "PROFILES",
    "CompiledScenario",
    "ScenarioEncodingError",
    "ScenarioSyntaxError",
    "compile_scenario",
    "decode_scenario",
    "parse_size",
]

PAGE = 4096
MAX_PROCS = 64  # probe.c MAXPROC
MAX_MAPS = 64  # probe.c MAXMAP
# User space on x86-64 with 4-level paging ends at 2^47: a range beyond it cannot be real.
ADDRESS_LIMIT = 1 << 47

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE = re.compile(r"^([0-9]+)([KMG]?)$")
_VALUE = re.compile(r"^(0|[1-9][0-9]*)$")
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
# thp size SIZE -> the sysfs directory hugepages-<kB>kB.
_THP_SIZES = {
    s: f"hugepages-{s // 1024}kB"
    for s in (16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20)
}
# The simulator's behaviour profiles that a `kernel` statement may name.
PROFILES = frozenset({"6.1", "6.12", "6.15"})
_ENABLED = {"always", "madvise", "never"}
_SIZE_ENABLED = {"always", "madvise", "inherit", "never"}
_PROTS = {"r", "rw", "none"}
_ADVICE = {"hugepage", "nohugepage", "dontneed", "dontfork", "dofork", "wipeonfork", "keeponfork"}
_GLOBAL = {"kernel", "thp", "stats", "policy", "drop_caches"}
# The simulator's policy toggles that a `policy` statement may name (its own copy: see
# CONTRIBUTING.md "Independence").
POLICIES = frozenset(
    {
        "cow_reuse_pte_mapped_thp",
        "huge_zero_wp_alloc",
        "cow_reuse_remember_exclusive",
        "cow_reuse_fault_around",
        "cow_reuse_fault_around_window",
        "mm_id_exact",
    }
)


class ScenarioSyntaxError(Exception):
    """A syntax error: the scenario's whole output is ``{"error":"line N: ..."}``."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message

    def observation(self) -> dict[str, str]:
        """The error line exactly as the format prints it."""
        return {"error": f"line {self.line}: {self.message}"}


class ScenarioEncodingError(ScenarioSyntaxError):
    """A scenario file that is not UTF-8 text; ``line`` holds its first undecodable byte."""


def decode_scenario(data: bytes, label: str) -> str:
    """The text of a scenario file, which must be UTF-8.

    Shared by ``cowcore run`` and ``cowcore kernel run`` so that both answer a file that is not
    text with the same error line (decoding is file handling, not modelled behaviour, so the
    oracle and the simulator may share it). Lines are counted as the parsers count them
    (``str.splitlines``), so the number agrees with any later syntax error.

    Raises:
        ScenarioEncodingError: at the line of the first byte that is not UTF-8; the message
            names ``label`` (the file as the user gave it) and the byte.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start].decode("utf-8")  # valid: the error is the first one
        line = len((before + "x").splitlines())
        raise ScenarioEncodingError(
            line, f"{label} is not UTF-8 text (byte 0x{data[err.start]:02x})"
        ) from None


@dataclasses.dataclass
class CompiledScenario:
    """A syntax-checked scenario in the probe's line format (without the S/Z framing)."""

    name: str
    lines: list[str]

    def framed(self, index: int) -> str:
        """The scenario as it goes into ``/scenarios``: ``S index``, the lines, ``Z``."""
        return "".join(f"{line}\n" for line in [f"S {index}", *self.lines, "Z"])


# More significant digits than this make a number above 2^64, beyond every limit checked here;
# such a number is not converted exactly (``int()`` refuses strings of over 4300 digits).
_MAX_DIGITS = 20


def parse_size(token: str) -> int | None:
    """Bytes of a size token (decimal with an optional K, M or G suffix), or None.

    A number of more than 20 significant digits comes back as ``2**70`` times the suffix:
    the exact value does not matter, it is beyond the address space either way.
    """
    m = _SIZE.match(token)
    if m is None:
        return None
    digits = m.group(1).lstrip("0")
    number = 1 << 70 if len(digits) > _MAX_DIGITS else int(digits or "0")
    return number * _SUFFIX[m.group(2)]


class _Compiler:
    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: dict[str, int] = {"P": 0}
        self.maps: dict[str, int] = {}
        self.body: list[str] = []
        self.lineno = 0

    def error(self, message: str) -> ScenarioSyntaxError:
        return ScenarioSyntaxError(self.lineno, message)

    def proc(self, name: str) -> int:
        if not _IDENT.match(name):
            raise self.error(f"bad process name {name!r}")
        if name not in self.procs:
            if len(self.procs) >= MAX_PROCS:
                raise self.error(f"more than {MAX_PROCS} process names (probe limit)")
            self.procs[name] = len(self.procs)
        return self.procs[name]

    def mapping(self, name: str) -> int:
        if not _IDENT.match(name):
            raise self.error(f"bad mapping name {name!r}")
        if name not in self.maps:
            if len(self.maps) >= MAX_MAPS:
                raise self.error(f"more than {MAX_MAPS} mapping names (probe limit)")
            self.maps[name] = len(self.maps)
        return self.maps[name]

    def size(self, token: str, what: str, allow_zero: bool) -> int:
        value = parse_size(token)
        if value is None:
            raise self.error(f"bad {what} {token!r}")
        if value % PAGE:
            raise self.error(f"{what} {token} is not a multiple of 4K")
        if value == 0 and not allow_zero:
            raise self.error(f"{what} is zero")
        if value >= ADDRESS_LIMIT:
            raise self.error(f"{what} {token} is beyond the address space")
        return value

    def range(self, words: list[str], verb: str) -> tuple[int, int, int]:
        if len(words) < 3:
            raise self.error(f"{verb} needs NAME OFF LEN")
        m = self.mapping(words[0])
        off = self.size(words[1], "offset", allow_zero=True)
        length = self.size(words[2], "length", allow_zero=False)
        if off + length > ADDRESS_LIMIT:
            raise self.error("range is beyond the address space")
        return m, off, length

    def statement(self, words: list[str]) -> None:
        head, args = words[0], words[1:]
        if head == "kernel":
            if len(args) != 1 or args[0] not in PROFILES:
                raise self.error("kernel wants one of " + " ".join(sorted(PROFILES)))
            return  # the kernel runner ignores the profile
        if head == "policy":
            if len(args) != 2 or args[0] not in POLICIES or args[1] not in ("on", "off"):
                raise self.error(
                    "policy wants NAME on|off, NAME one of " + " ".join(sorted(POLICIES))
                )
            return  # a simulator toggle: the kernel runner ignores it
        if head == "stats":
            if args:
                raise self.error("stats takes no arguments")
            self.body.append(f"X {self.lineno}")
            return
        if head == "drop_caches":
            if args:
                raise self.error("drop_caches takes no arguments")
            self.body.append(f"D {self.lineno}")
            return
        if head == "thp":
            self.thp(args)
            return
        if len(args) < 1:
            raise self.error(f"statement {head!r} has no verb")
        p = self.proc(head)
        verb, rest = args[0], args[1:]
        out: list[str]
        if verb == "mmap":
            if len(rest) != 2:
                raise self.error("mmap needs NAME LEN")
            m = self.mapping(rest[0])
            length = self.size(rest[1], "length", allow_zero=False)
            out = ["mmap", str(m), str(length)]
        elif verb in (
            "munmap",
            "read",
            "observe",
            "ref",
            "unref",
            "pin",
            "unpin",
            "unshare",
            "pageout",
            "collapse",
        ):
            if len(rest) != 3:
                raise self.error(f"{verb} needs NAME OFF LEN")
            m, off, length = self.range(rest, verb)
            out = [verb, str(m), str(off), str(length)]
        elif verb == "mprotect":
            if len(rest) != 4:
                raise self.error("mprotect needs NAME OFF LEN r|rw|none")
            m, off, length = self.range(rest, verb)
            if rest[3] not in _PROTS:
                raise self.error(f"bad protection {rest[3]!r}")
            out = [verb, str(m), str(off), str(length), rest[3]]
        elif verb == "madvise":
            if len(rest) != 4:
                raise self.error("madvise needs NAME OFF LEN ADVICE")
            m, off, length = self.range(rest, verb)
            if rest[3] not in _ADVICE:
                raise self.error(f"bad advice {rest[3]!r}")
            out = [verb, str(m), str(off), str(length), rest[3]]
        elif verb == "write":
            if len(rest) not in (3, 4):
                raise self.error("write needs NAME OFF LEN [VALUE]")
            m, off, length = self.range(rest, verb)
            value = 1
            if len(rest) == 4:
                if (
                    not _VALUE.match(rest[3])
                    or len(rest[3]) > _MAX_DIGITS
                    or int(rest[3]) >= 1 << 64
                ):
                    raise self.error(f"bad value {rest[3]!r}")
                value = int(rest[3])
            out = [verb, str(m), str(off), str(length), str(value)]
        elif verb == "mremap":
            if len(rest) != 4:
                raise self.error("mremap needs NAME OFF LEN NEW")
            m, off, length = self.range(rest[:3], verb)
            out = [verb, str(m), str(off), str(length), str(self.mapping(rest[3]))]
        elif verb == "smaps":
            if len(rest) != 1:
                raise self.error("smaps needs NAME")
            out = [verb, str(self.mapping(rest[0]))]
        elif verb == "fork":
            if len(rest) != 1:
                raise self.error("fork needs a child name")
            out = [verb, str(self.proc(rest[0]))]
        elif verb == "exit":
            if rest:
                raise self.error("exit takes no arguments")
            out = [verb]
        else:
            raise self.error(f"unknown verb {verb!r}")
        self.body.append(" ".join(["C", str(self.lineno), str(p), *out]))

    def thp(self, args: list[str]) -> None:
        if len(args) == 2 and args[0] == "enabled":
            if args[1] not in _ENABLED:
                raise self.error(f"bad thp enabled value {args[1]!r}")
            self.body.append(f"K {self.lineno} enabled {args[1]}")
        elif len(args) == 3 and args[0] == "size":
            size = parse_size(args[1])
            if size is None or size not in _THP_SIZES:
                raise self.error(f"bad thp size {args[1]!r}")
            if args[2] not in _SIZE_ENABLED:
                raise self.error(f"bad thp size setting {args[2]!r}")
            self.body.append(f"K {self.lineno} {_THP_SIZES[size]}/enabled {args[2]}")
        elif len(args) == 2 and args[0] == "zero_page":
            if args[1] not in ("on", "off"):
                raise self.error(f"bad thp zero_page value {args[1]!r}")
            self.body.append(f"K {self.lineno} use_zero_page {1 if args[1] == 'on' else 0}")
        else:
            raise self.error("thp wants: enabled MODE | size SIZE MODE | zero_page on|off")

    def compile(self, text: str) -> CompiledScenario:
        for self.lineno, raw in enumerate(text.splitlines(), start=1):
            words = raw.split("#", 1)[0].split()
            if words:
                self.statement(words)
        header = [f"P {i} {n}" for n, i in self.procs.items()]
        header += [f"M {i} {n}" for n, i in self.maps.items()]
        return CompiledScenario(self.name, header + self.body)


def compile_scenario(name: str, text: str) -> CompiledScenario:
    """Compile one scenario; raises ScenarioSyntaxError at the first syntax error."""
    return _Compiler(name).compile(text)
