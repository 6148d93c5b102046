"""The ``.cow`` scenario language (docs/scenario-format.md): parse, run, compare.

A scenario is parsed completely before it runs, so syntax errors (unknown verb, bad token,
misaligned or zero length) stop it before anything happens. Run-time errors stop it after
the observations already made; the failing statement changes nothing. Either way the last
observation is ``{"error": "line N: ..."}``.

Frames are named by first appearance (``f0``, ``f1``, ...); a frame is identified by its PFN
*and* the allocation serial of its folio, so a frame that is freed and handed out again gets
a new name, as the format requires. The zero pages are ``zero`` and ``hzero``.

Every statement kind is a frozen dataclass (``Mmap``, ``Write``, ``ThpSize``, ...), and one
table, ``VERBS``, drives both halves: each row gives the statement's syntax (from which the
parser takes the verb's words and arity), its argument parser and the runner's method for it.
The kernel runner's compiler (``cowcore.kernel.compile``) keeps its own parser on purpose (it is
the oracle); tests/test_scenario_verbs.py checks that the two accept the same statements.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeAlias, TypeVar, cast

from cowcore.errors import (
    CowError,
    InvalidAddressError,
    InvalidArgumentError,
    OutOfMemoryError,
    ScenarioError,
    SegmentationFault,
)
from cowcore.machine import DEFAULT_BACKEND, Machine, Process
from cowcore.protocol import (
    ADVICES,
    KERNEL_PROFILES,
    NO_MTHP_SIZES,
    POLICIES,
    PROTS,
    SMAPS_KB_FIELDS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
    Advice,
    KernelProfile,
    PageObservation,
    Prot,
    ThpMode,
    ThpSizeMode,
)
from cowcore.units import MAX_DIGITS, parse_size

Observation = dict[str, object]

PAGE = 4096
MAX_MAPPING = 1 << 30
ADDRESS_LIMIT = 1 << 47
"""x86-64 user space with 4-level paging ends here: a larger offset or length cannot be real."""
VALUE = re.compile(r"^(0|[1-9][0-9]*)$")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PAGE_KEYS = (
    "proc",
    "map",
    "off",
    "present",
    "frame",
    "folio_pages",
    "mapcount",
    "exclusive",
    "content",
)


class ScenarioSyntaxError(CowError):
    """A statement that cannot be parsed; ``line`` is its 1-based line number."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(f"line {line}: {message}")


# The statements, one frozen dataclass per kind, each with the 1-based ``line`` it came from.
# What each one means is in docs/scenario-format.md; how each is spelled, parsed and run is
# its row of ``VERBS`` (below the runner).


@dataclass(frozen=True, slots=True)
class Kernel:
    """``kernel PROFILE``: read by ``Scenario.parse`` (the profile to run); running it does
    nothing."""

    line: int
    profile: KernelProfile


@dataclass(frozen=True, slots=True)
class Stats:
    """``stats``: one observation of the counters."""

    line: int


@dataclass(frozen=True, slots=True)
class DropCaches:
    """``drop_caches``: the shrinkers run once; the deferred-split queue's splits the
    partially mapped large folios waiting there (``Machine.drop_caches``)."""

    line: int


@dataclass(frozen=True, slots=True)
class ThpEnabled:
    """``thp enabled MODE``: ``transparent_hugepage/enabled``."""

    line: int
    mode: ThpMode


@dataclass(frozen=True, slots=True)
class ThpSize:
    """``thp size SIZE MODE``; ``size`` is the canonical name (``2M`` for ``2048K``)."""

    line: int
    size: str
    mode: ThpSizeMode


@dataclass(frozen=True, slots=True)
class ThpZeroPage:
    """``thp zero_page on|off``: ``transparent_hugepage/use_zero_page``."""

    line: int
    on: bool


@dataclass(frozen=True, slots=True)
class SetPolicy:
    """``policy NAME on|off``: one simulator policy toggle (``Machine.policy.NAME``) from this
    line on; the kernel runner ignores it, as it ignores ``kernel``."""

    line: int
    name: str
    on: bool


@dataclass(frozen=True, slots=True)
class Mmap:
    """``PROC mmap NAME LEN``."""

    line: int
    proc: str
    name: str
    length: int


@dataclass(frozen=True, slots=True)
class Ranged:
    """A statement on a range ``NAME OFF LEN`` of one of ``proc``'s mappings."""

    line: int
    proc: str
    name: str
    off: int
    length: int


@dataclass(frozen=True, slots=True)
class Munmap(Ranged):
    """``PROC munmap NAME OFF LEN``."""


@dataclass(frozen=True, slots=True)
class Read(Ranged):
    """``PROC read NAME OFF LEN``."""


@dataclass(frozen=True, slots=True)
class Observe(Ranged):
    """``PROC observe NAME OFF LEN``."""


@dataclass(frozen=True, slots=True)
class Write(Ranged):
    """``PROC write NAME OFF LEN [VALUE]`` (``value`` 1 when the line gives none)."""

    value: int


@dataclass(frozen=True, slots=True)
class Mprotect(Ranged):
    """``PROC mprotect NAME OFF LEN r|rw|none``."""

    prot: Prot


@dataclass(frozen=True, slots=True)
class Madvise(Ranged):
    """``PROC madvise NAME OFF LEN ADVICE``."""

    advice: Advice


@dataclass(frozen=True, slots=True)
class Mremap(Ranged):
    """``PROC mremap NAME OFF LEN NEW``: the range moves to a fresh address as mapping NEW."""

    new: str


@dataclass(frozen=True, slots=True)
class Ref(Ranged):
    """``PROC ref NAME OFF LEN``: a reference on every page, as vmsplice() into a pipe."""


@dataclass(frozen=True, slots=True)
class Unref(Ranged):
    """``PROC unref NAME OFF LEN``: drops the references of an earlier ``ref`` of the range."""


@dataclass(frozen=True, slots=True)
class Pin(Ranged):
    """``PROC pin NAME OFF LEN``: a long-term writable pin, as io_uring buffer registration."""


@dataclass(frozen=True, slots=True)
class Unpin(Ranged):
    """``PROC unpin NAME OFF LEN``: releases the pin of an earlier ``pin`` of the range."""


@dataclass(frozen=True, slots=True)
class Unshare(Ranged):
    """``PROC unshare NAME OFF LEN``: a short R/O pin by another process (process_vm_readv)."""


@dataclass(frozen=True, slots=True)
class Collapse(Ranged):
    """``PROC collapse NAME OFF LEN``: ``madvise(MADV_COLLAPSE)``, printing its result."""


@dataclass(frozen=True, slots=True)
class Pageout(Ranged):
    """``PROC pageout NAME OFF LEN``: ``madvise(MADV_PAGEOUT)``, reclaim to swap now."""


@dataclass(frozen=True, slots=True)
class Smaps:
    """``PROC smaps NAME``: one observation of the mapping's smaps lines."""

    line: int
    proc: str
    name: str


@dataclass(frozen=True, slots=True)
class Fork:
    """``PROC fork CHILD``."""

    line: int
    proc: str
    child: str


@dataclass(frozen=True, slots=True)
class Exit:
    """``PROC exit``."""

    line: int
    proc: str


Statement: TypeAlias = (
    Kernel
    | Stats
    | DropCaches
    | ThpEnabled
    | ThpSize
    | ThpZeroPage
    | SetPolicy
    | Mmap
    | Munmap
    | Read
    | Observe
    | Write
    | Mprotect
    | Madvise
    | Pageout
    | Smaps
    | Mremap
    | Fork
    | Exit
)
"""One parsed statement (``Scenario.statements`` holds them in order)."""
S = TypeVar("S", bound=Statement)


@dataclass(slots=True)
class Scenario:
    """A parsed scenario. ``kernel`` is the profile its ``kernel`` statement names, if any."""

    statements: list[Statement]
    kernel: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Scenario:
        """Parse a whole scenario.

        Raises:
            ScenarioSyntaxError: at the first statement that does not parse.
        """
        statements: list[Statement] = []
        kernel: str | None = None
        for lineno, raw in enumerate(text.splitlines(), start=1):
            tokens = raw.split("#", 1)[0].split()
            if not tokens:
                continue
            stmt = _parse_statement(lineno, tokens)
            if isinstance(stmt, Kernel):
                if kernel is not None:
                    raise ScenarioSyntaxError(lineno, "a second 'kernel' statement")
                kernel = stmt.profile
            statements.append(stmt)
        return cls(statements, kernel, name)

    def run(
        self,
        *,
        backend: str = DEFAULT_BACKEND,
        kernel: str | None = None,
        check: bool = False,
        on_observation: Callable[[Observation], None] | None = None,
    ) -> list[Observation]:
        """Run on a fresh machine and return the observations.

        Args:
            backend: the simulation backend.
            kernel: overrides the scenario's own ``kernel`` statement (default ``6.15``).
            check: run ``Machine.check()`` after every statement.
            on_observation: called with each observation as it is made (for streaming).

        Raises:
            ScenarioError: a run-time error; its ``observations`` hold what was observed
                before, and its ``line`` the failing statement.
        """
        runner = _Runner(kernel or self.kernel or "6.15", backend, check, on_observation)
        return runner.run(self.statements)


def _size(lineno: int, token: str, what: str, *, page_aligned: bool, nonzero: bool) -> int:
    try:
        value = parse_size(token)
    except InvalidArgumentError as err:
        raise ScenarioSyntaxError(lineno, f"bad {what}: {err}") from None
    if page_aligned and value % PAGE:
        raise ScenarioSyntaxError(lineno, f"{what} {token} is not a multiple of 4K")
    if nonzero and value == 0:
        raise ScenarioSyntaxError(lineno, f"{what} must not be zero")
    if value >= ADDRESS_LIMIT:
        raise ScenarioSyntaxError(lineno, f"{what} {token} is beyond the address space")
    return value


def _ident(lineno: int, token: str, what: str) -> str:
    if not IDENT.match(token):
        raise ScenarioSyntaxError(lineno, f"bad {what} name {token!r}")
    return token


def _arity(lineno: int, tokens: Sequence[str], low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(tokens) <= high:
        raise ScenarioSyntaxError(lineno, f"'{' '.join(tokens)}': wrong number of arguments")


def _range(lineno: int, tokens: Sequence[str]) -> tuple[str, int, int]:
    name = _ident(lineno, tokens[0], "mapping")
    off = _size(lineno, tokens[1], "offset", page_aligned=True, nonzero=False)
    length = _size(lineno, tokens[2], "length", page_aligned=True, nonzero=True)
    if off + length > ADDRESS_LIMIT:
        raise ScenarioSyntaxError(lineno, "range is beyond the address space")
    return name, off, length


# Argument parsers, one per verb: ``(line, proc, args)`` to a statement, where ``args`` are the
# tokens after the verb's words (their number is already checked against the verb's syntax)
# and ``proc`` is the process name ("" for a global statement). The order of the checks is
# the order of the error messages a line with several faults gets: keep it.


def _parse_kernel(lineno: int, _proc: str, args: Sequence[str]) -> Kernel:
    if args[0] not in KERNEL_PROFILES:
        raise ScenarioSyntaxError(lineno, f"unknown kernel profile {args[0]!r}")
    return Kernel(lineno, cast(KernelProfile, args[0]))


def _parse_stats(lineno: int, _proc: str, _args: Sequence[str]) -> Stats:
    return Stats(lineno)


def _parse_drop_caches(lineno: int, _proc: str, _args: Sequence[str]) -> DropCaches:
    return DropCaches(lineno)


def _parse_thp_enabled(lineno: int, _proc: str, args: Sequence[str]) -> ThpEnabled:
    if args[0] not in THP_MODES:
        raise ScenarioSyntaxError(lineno, f"bad THP mode {args[0]!r}")
    return ThpEnabled(lineno, cast(ThpMode, args[0]))


def _parse_thp_size(lineno: int, _proc: str, args: Sequence[str]) -> ThpSize:
    # Any spelling of an allowed size works (2M or 2048K), as in the kernel runner.
    by_bytes = {parse_size(name): name for name in THP_SIZES}
    try:
        size = by_bytes.get(parse_size(args[0]))
    except InvalidArgumentError:
        size = None
    if size is None:
        raise ScenarioSyntaxError(lineno, f"bad THP size {args[0]!r}")
    if args[1] not in THP_SIZE_MODES:
        raise ScenarioSyntaxError(lineno, f"bad THP size mode {args[1]!r}")
    return ThpSize(lineno, size, cast(ThpSizeMode, args[1]))


def _parse_thp_zero_page(lineno: int, _proc: str, args: Sequence[str]) -> ThpZeroPage:
    if args[0] not in ("on", "off"):
        raise ScenarioSyntaxError(lineno, f"bad zero_page setting {args[0]!r}")
    return ThpZeroPage(lineno, args[0] == "on")


_POLICY_NAMES = frozenset(spec.name for spec in POLICIES)


def _parse_policy(lineno: int, _proc: str, args: Sequence[str]) -> SetPolicy:
    if args[0] not in _POLICY_NAMES:
        raise ScenarioSyntaxError(
            lineno, f"unknown policy {args[0]!r}: one of {', '.join(sorted(_POLICY_NAMES))}"
        )
    if args[1] not in ("on", "off"):
        raise ScenarioSyntaxError(lineno, f"bad policy setting {args[1]!r}: on or off")
    return SetPolicy(lineno, args[0], args[1] == "on")


def _parse_mmap(lineno: int, proc: str, args: Sequence[str]) -> Mmap:
    name = _ident(lineno, args[0], "mapping")
    return Mmap(
        lineno, proc, name, _size(lineno, args[1], "length", page_aligned=True, nonzero=True)
    )


def _parse_munmap(lineno: int, proc: str, args: Sequence[str]) -> Munmap:
    return Munmap(lineno, proc, *_range(lineno, args))


def _parse_read(lineno: int, proc: str, args: Sequence[str]) -> Read:
    return Read(lineno, proc, *_range(lineno, args))


def _parse_observe(lineno: int, proc: str, args: Sequence[str]) -> Observe:
    return Observe(lineno, proc, *_range(lineno, args))


def _parse_write(lineno: int, proc: str, args: Sequence[str]) -> Write:
    value = 1
    if len(args) == 4:
        if not VALUE.match(args[3]) or len(args[3].lstrip("0")) > MAX_DIGITS:
            raise ScenarioSyntaxError(lineno, f"bad value {args[3][:24]!r}: 0 .. 2^64-1")
        value = int(args[3])
        if value >= 1 << 64:
            raise ScenarioSyntaxError(lineno, f"bad value {args[3]!r}: 0 .. 2^64-1")
    return Write(lineno, proc, *_range(lineno, args), value)


def _parse_mprotect(lineno: int, proc: str, args: Sequence[str]) -> Mprotect:
    if args[3] not in PROTS:
        raise ScenarioSyntaxError(lineno, f"bad protection {args[3]!r}")
    return Mprotect(lineno, proc, *_range(lineno, args), cast(Prot, args[3]))


def _parse_madvise(lineno: int, proc: str, args: Sequence[str]) -> Madvise:
    if args[3] not in ADVICES:
        raise ScenarioSyntaxError(lineno, f"unknown advice {args[3]!r}")
    return Madvise(lineno, proc, *_range(lineno, args), cast(Advice, args[3]))


def _parse_mremap(lineno: int, proc: str, args: Sequence[str]) -> Mremap:
    return Mremap(lineno, proc, *_range(lineno, args), _ident(lineno, args[3], "mapping"))


def _parse_ref(lineno: int, proc: str, args: Sequence[str]) -> Ref:
    return Ref(lineno, proc, *_range(lineno, args))


def _parse_unref(lineno: int, proc: str, args: Sequence[str]) -> Unref:
    return Unref(lineno, proc, *_range(lineno, args))


def _parse_pin(lineno: int, proc: str, args: Sequence[str]) -> Pin:
    return Pin(lineno, proc, *_range(lineno, args))


def _parse_unpin(lineno: int, proc: str, args: Sequence[str]) -> Unpin:
    return Unpin(lineno, proc, *_range(lineno, args))


def _parse_unshare(lineno: int, proc: str, args: Sequence[str]) -> Unshare:
    return Unshare(lineno, proc, *_range(lineno, args))


def _parse_collapse(lineno: int, proc: str, args: Sequence[str]) -> Collapse:
    return Collapse(lineno, proc, *_range(lineno, args))


def _parse_pageout(lineno: int, proc: str, args: Sequence[str]) -> Pageout:
    return Pageout(lineno, proc, *_range(lineno, args))


def _parse_smaps(lineno: int, proc: str, args: Sequence[str]) -> Smaps:
    return Smaps(lineno, proc, _ident(lineno, args[0], "mapping"))


def _parse_fork(lineno: int, proc: str, args: Sequence[str]) -> Fork:
    return Fork(lineno, proc, _ident(lineno, args[0], "process"))


def _parse_exit(lineno: int, proc: str, _args: Sequence[str]) -> Exit:
    return Exit(lineno, proc)


def _parse_statement(lineno: int, tokens: list[str]) -> Statement:
    """One statement through the verb table: a global statement is found by its first word
    (and its second, for ``thp``), a process statement by the word after the process name."""
    head = tokens[0]
    if head in _GLOBAL_HEADS:
        verb = _GLOBAL.get(tuple(tokens[:1])) or _GLOBAL.get(tuple(tokens[:2]))
        if verb is None:
            raise ScenarioSyntaxError(lineno, f"bad {head} statement {' '.join(tokens)!r}")
        proc = ""
    else:
        proc = _ident(lineno, head, "process")
        if len(tokens) < 2:
            raise ScenarioSyntaxError(lineno, f"'{head}' needs a verb")
        verb = _PROCESS.get((tokens[1],))
        if verb is None:
            raise ScenarioSyntaxError(lineno, f"unknown verb {tokens[1]!r}")
    skip = len(verb.words) + (1 if verb.process else 0)
    low, high = verb.arity
    _arity(lineno, tokens, skip + low, skip + high)
    stmt: Statement = verb.parse(lineno, proc, tokens[skip:])
    return stmt


def _absent_page(proc: str, name: str, off: int) -> Observation:
    """The observation of a page that nothing maps: every key after ``present`` is null."""
    return dict(zip(PAGE_KEYS, (proc, name, off, False, None, None, None, None, None), strict=True))


class _RunError(Exception):
    """A run-time error of the statement being run (turned into the error observation)."""


def _message(exc: Exception) -> str:
    """The error observation's text: the runner's own messages, and for errors that come
    from the backend a text of their class only, since each backend words its messages its
    own way and a scenario's output must be the same on every backend."""
    if isinstance(exc, _RunError):
        return str(exc)
    if isinstance(exc, OutOfMemoryError):
        return "out of memory"
    if isinstance(exc, InvalidAddressError):
        return "invalid address (ENOMEM)"
    return type(exc).__name__


@dataclass(slots=True)
class _Runner:
    kernel: str
    backend: str
    check: bool
    sink: Callable[[Observation], None] | None
    observations: list[Observation] = field(default_factory=list)
    procs: dict[str, Process] = field(default_factory=dict)
    used_names: set[str] = field(default_factory=set)
    maps: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    frame_names: dict[tuple[int, int], str] = field(default_factory=dict)
    machine: Machine | None = None

    def emit(self, obs: Observation) -> None:
        self.observations.append(obs)
        if self.sink is not None:
            self.sink(obs)

    def run(self, statements: list[Statement]) -> list[Observation]:
        m = self.machine = Machine(self.kernel, backend=self.backend)
        self.procs["P"] = m.init
        self.used_names.add("P")
        self.maps["P"] = {}
        for stmt in statements:
            try:
                self.step(stmt)
            except (_RunError, CowError) as exc:
                message = _message(exc)
                self.emit({"error": f"line {stmt.line}: {message}"})
                raise ScenarioError(stmt.line, message, self.observations) from exc
            if self.check:
                m.check()
        return self.observations

    def proc(self, name: str) -> Process:
        proc = self.procs.get(name)
        if proc is None:
            raise _RunError(f"unknown process {name}")
        if not proc.alive:
            raise _RunError(f"process {name} has exited")
        return proc

    def mapping(self, pname: str, name: str) -> tuple[int, int]:
        mapping = self.maps[pname].get(name)
        if mapping is None:
            raise _RunError(f"process {pname} has no mapping {name}")
        return mapping

    def step(self, st: Statement) -> None:
        """Run one statement (its row of ``VERBS``); on an error it changes nothing."""
        _BY_KIND[type(st)].run(self, st)

    # The runner methods, one per verb (the ``run`` column of ``VERBS``).

    def run_kernel(self, st: Kernel) -> None:
        """Nothing to do: ``Scenario.parse`` has read the profile."""

    def run_stats(self, st: Stats) -> None:
        per_size = self.m.config.per_size_thp_stats
        swpin = PRINTS_SWPIN.get(self.m.config.profile, True)
        self.emit({"stats": format_stats(self.m.stats(), per_size=per_size, swpin=swpin)})

    def run_drop_caches(self, st: DropCaches) -> None:
        self.m.drop_caches()

    def run_thp_enabled(self, st: ThpEnabled) -> None:
        self.m.thp.enabled = st.mode

    def run_thp_size(self, st: ThpSize) -> None:
        """On a kernel with PMD-size THP only (``kernel 6.1``) a size other than 2M is an
        error at its line, in the kernel runner's words (docs/scenario-format.md)."""
        if THP_SIZES[st.size] not in self.m.config.anon_thp_orders:
            raise _RunError(f"thp size {st.size}: {NO_MTHP_SIZES}")
        self.m.thp.sizes[st.size] = st.mode

    def run_thp_zero_page(self, st: ThpZeroPage) -> None:
        self.m.thp.use_zero_page = st.on

    def run_policy(self, st: SetPolicy) -> None:
        setattr(self.m.policy, st.name, st.on)

    def run_mmap(self, st: Mmap) -> None:
        p = self.proc(st.proc)
        if st.name in self.maps[st.proc]:
            raise _RunError(f"process {st.proc} already has a mapping {st.name}")
        if st.length > MAX_MAPPING:
            raise _RunError(f"mapping {st.name} of {st.length} bytes is over 1G")
        self.maps[st.proc][st.name] = (p.mmap(st.length), st.length)

    def run_fork(self, st: Fork) -> None:
        p = self.proc(st.proc)
        if st.child in self.used_names:
            raise _RunError(f"process name {st.child} was already used")
        self.procs[st.child] = p.fork()
        self.used_names.add(st.child)
        self.maps[st.child] = dict(self.maps[st.proc])

    def run_exit(self, st: Exit) -> None:
        self.proc(st.proc).exit()

    def run_observe(self, st: Observe) -> None:
        """An ``observe`` must lie inside the mapping as created, so that one line can never
        ask for more observations than the mapping has pages."""
        p, start, size, inside = self.ranged(st)
        if inside < st.length:
            raise _RunError(
                f"observe {st.name}: the range ends at offset {st.off + st.length}, past the end "
                f"of the mapping as created ({size} bytes)"
            )
        for i, o in enumerate(p.observe(start + st.off, st.length)):
            self.emit(self.page_observation(st.proc, st.name, st.off + i * PAGE, o))
        # The kernel runner reads each present page's content through /proc/<pid>/mem, a
        # GUP with FOLL_TOUCH that marks the folio accessed (smaps Referenced).
        p.touch(start + st.off, st.length)

    def run_smaps(self, st: Smaps) -> None:
        """For each smaps line, the sum of the kB values that ``/proc/<pid>/smaps`` prints
        for the VMAs lying inside the mapping's range (``show_smap`` rounds per VMA, so a
        mapping that mprotect split into three VMAs may print less than one VMA would;
        docs/accounting.md). A mapping with no VMA left prints zeros."""
        p = self.proc(st.proc)
        start, size = self.mapping(st.proc, st.name)
        sums = dict.fromkeys(SMAPS_KB_FIELDS, 0)
        for vma in p.smaps():
            if start <= vma.start and vma.end <= start + size:
                for key, kb in vma.kb().items():
                    sums[key] += kb
        self.emit({"smaps": {"proc": st.proc, "map": st.name, **sums}})

    def run_munmap(self, st: Munmap) -> None:
        p, start, _, inside = self.ranged(st)
        if inside:
            p.munmap(start + st.off, inside)

    def run_write(self, st: Write) -> None:
        p, start = self.mapped(st, "write")
        with self.sigsegv(st, start):
            p.write(start + st.off, st.length, st.value)

    def run_read(self, st: Read) -> None:
        p, start = self.mapped(st, "read")
        with self.sigsegv(st, start):
            p.read(start + st.off, st.length)

    def run_mprotect(self, st: Mprotect) -> None:
        p, start = self.mapped(st, "mprotect")
        with self.enomem(st, "mprotect"):
            p.mprotect(start + st.off, st.length, st.prot)

    def run_madvise(self, st: Madvise) -> None:
        p, start = self.mapped(st, "madvise")
        with self.enomem(st, "madvise"):
            p.madvise(start + st.off, st.length, st.advice)

    def run_mremap(self, st: Mremap) -> None:
        """``mremap`` to a fresh address (:meth:`cowcore.Process.mremap` without
        ``new_addr``: where ``mmap`` would place the range, plus its offset in its 2 MiB
        block), recorded as mapping ``NEW`` of the process (and of its later children). The
        range must be mapped and lie inside one VMA (``EFAULT`` otherwise)."""
        p, start = self.mapped(st, "mremap")
        if st.new in self.maps[st.proc]:
            raise _RunError(f"process {st.proc} already has a mapping {st.new}")
        try:
            new = p.mremap(start + st.off, st.length)
        except InvalidAddressError as exc:
            if "(EFAULT)" in str(exc):
                raise _RunError(
                    f"mremap {st.name}: the range is not inside one mapping (EFAULT)"
                ) from None
            raise
        self.maps[st.proc][st.new] = (new, st.length)

    def run_ref(self, st: Ref) -> None:
        self.gup(st, "ref")

    def run_unref(self, st: Unref) -> None:
        self.gup(st, "unref")

    def run_pin(self, st: Pin) -> None:
        self.gup(st, "pin")

    def run_unpin(self, st: Unpin) -> None:
        self.gup(st, "unpin")

    def run_unshare(self, st: Unshare) -> None:
        """Prints nothing: the unshare faults show in later observations."""
        p, start = self.mapped(st, "unshare")
        with self.sigsegv(st, start):
            p.unshare(start + st.off, st.length)

    def run_collapse(self, st: Collapse) -> None:
        """``madvise(MADV_COLLAPSE)`` of a range that must be mapped (as for ``madvise``);
        prints ``{"collapse":PROC,"map":NAME,"result":0 or "ERRNO"}``."""
        p, start = self.mapped(st, "collapse")
        with self.enomem(st, "collapse"):
            result = p.collapse(start + st.off, st.length)
        errno = result.errno
        self.emit({"collapse": st.proc, "map": st.name, "result": 0 if errno is None else errno})

    def run_pageout(self, st: Pageout) -> None:
        """``madvise(MADV_PAGEOUT)`` of a range that must be mapped (as for ``madvise``);
        prints nothing: the swap entries show in later observations."""
        p, start = self.mapped(st, "pageout")
        with self.enomem(st, "pageout"):
            p.pageout(start + st.off, st.length)

    def gup(self, st: Ranged, verb: Literal["ref", "unref", "pin", "unpin"]) -> None:
        """The references and pins (docs/scenario-format.md, "References, pins and moves"):
        every page of the range must lie inside the mapping; an ``unref``/``unpin`` of a range
        that no earlier ``ref``/``pin`` of exactly that range holds is an error."""
        p, start = self.mapped(st, verb)
        op = {"ref": p.ref, "unref": p.unref, "pin": p.pin, "unpin": p.unpin}[verb]
        with self.sigsegv(st, start):
            try:
                op(start + st.off, st.length)
            except InvalidArgumentError:
                held = "pin" if verb == "unpin" else "ref"
                raise _RunError(
                    f"{verb} {st.name}: no {held} of offset {st.off} length {st.length} is held"
                ) from None

    # Helpers of the ranged verbs.

    @property
    def m(self) -> Machine:
        assert self.machine is not None
        return self.machine

    def ranged(self, st: Ranged) -> tuple[Process, int, int, int]:
        """The process, the mapping's start and size as created, and how many bytes of the
        range lie inside it. Pages past the mapping's end are treated as the kernel runner
        treats them: unmapped (skipped by munmap, an error for every other verb)."""
        p = self.proc(st.proc)
        start, size = self.mapping(st.proc, st.name)
        return p, start, size, max(0, min(st.length, size - st.off))

    def mapped(self, st: Ranged, verb: str) -> tuple[Process, int]:
        """``ranged`` for a verb that needs every page of the range inside the mapping."""
        p, start, _, inside = self.ranged(st)
        if inside < st.length:
            raise _RunError(f"{verb} {st.name}: page at offset {st.off + inside} is not mapped")
        return p, start

    @staticmethod
    @contextmanager
    def sigsegv(st: Ranged, start: int) -> Iterator[None]:
        try:
            yield
        except SegmentationFault as exc:
            raise _RunError(
                f"SIGSEGV at offset {exc.addr - start} of {st.name} ({exc.reason})"
            ) from None

    @staticmethod
    @contextmanager
    def enomem(st: Ranged, verb: str) -> Iterator[None]:
        try:
            yield
        except InvalidAddressError:
            raise _RunError(f"{verb} {st.name}: range includes unmapped pages (ENOMEM)") from None

    def page_observation(self, proc: str, name: str, off: int, o: object) -> Observation:
        assert isinstance(o, PageObservation)
        if not o.present:
            obs = _absent_page(proc, name, off)
            if o.frame_kind == "swap":
                obs["frame"] = "swap"  # pagemap's PM_SWAP
            return obs
        if o.frame_kind == "zero":
            frame = "zero"
        elif o.frame_kind == "huge_zero":
            frame = "hzero"
        else:
            key = (int(o.pfn or 0), int(o.serial or 0))
            frame = self.frame_names.get(key) or ""
            if not frame:
                frame = self.frame_names[key] = f"f{len(self.frame_names)}"
        return dict(
            zip(
                PAGE_KEYS,
                (proc, name, off, True, frame, o.folio_pages, o.mapcount, o.exclusive, o.content),
                strict=True,
            )
        )


@dataclass(frozen=True, slots=True)
class Verb(Generic[S]):
    """One row of the verb table: how a statement is written, parsed and run.

    ``syntax`` is the statement as docs/scenario-format.md writes it in its tables (``P`` for the
    process, upper-case words and ``a|b`` choices for arguments, ``[VALUE]`` for an optional one):
    the words before the first argument say where the parser looks the verb up, and the count of
    arguments is the statement's arity. ``parse`` builds the statement from the arguments;
    ``run`` is the runner's method for it.
    """

    syntax: str
    kind: type[S]
    parse: Callable[[int, str, Sequence[str]], S]
    run: Callable[[_Runner, S], None]
    process: bool = field(init=False)
    """A process statement (``PROC VERB ...``), not a global one."""
    words: tuple[str, ...] = field(init=False)
    """The literal words that name the verb: ``("thp", "size")``, ``("mmap",)``."""
    arity: tuple[int, int] = field(init=False)
    """The fewest and the most argument tokens after the words."""

    def __post_init__(self) -> None:
        # Derived once from the syntax (frozen: set through object.__setattr__).
        process = self.syntax.startswith("P ")
        tokens = self.syntax.split()[1 if process else 0 :]
        words: list[str] = []
        for token in tokens:
            if not re.fullmatch(r"[a-z_]+", token):
                break
            words.append(token)
        args = tokens[len(words) :]
        optional = sum(1 for a in args if a.startswith("["))
        object.__setattr__(self, "process", process)
        object.__setattr__(self, "words", tuple(words))
        object.__setattr__(self, "arity", (len(args) - optional, len(args)))


VERBS: tuple[Verb[Any], ...] = (
    Verb("kernel PROFILE", Kernel, _parse_kernel, _Runner.run_kernel),
    Verb(
        "thp enabled always|madvise|never", ThpEnabled, _parse_thp_enabled, _Runner.run_thp_enabled
    ),
    Verb(
        "thp size SIZE always|madvise|inherit|never", ThpSize, _parse_thp_size, _Runner.run_thp_size
    ),
    Verb("thp zero_page on|off", ThpZeroPage, _parse_thp_zero_page, _Runner.run_thp_zero_page),
    Verb("policy POLICY on|off", SetPolicy, _parse_policy, _Runner.run_policy),
    Verb("stats", Stats, _parse_stats, _Runner.run_stats),
    Verb("drop_caches", DropCaches, _parse_drop_caches, _Runner.run_drop_caches),
    Verb("P mmap NAME LEN", Mmap, _parse_mmap, _Runner.run_mmap),
    Verb("P munmap NAME OFF LEN", Munmap, _parse_munmap, _Runner.run_munmap),
    Verb("P mprotect NAME OFF LEN r|rw|none", Mprotect, _parse_mprotect, _Runner.run_mprotect),
    Verb("P madvise NAME OFF LEN ADVICE", Madvise, _parse_madvise, _Runner.run_madvise),
    Verb("P write NAME OFF LEN [VALUE]", Write, _parse_write, _Runner.run_write),
    Verb("P read NAME OFF LEN", Read, _parse_read, _Runner.run_read),
    Verb("P fork C", Fork, _parse_fork, _Runner.run_fork),
    Verb("P exit", Exit, _parse_exit, _Runner.run_exit),
    Verb("P observe NAME OFF LEN", Observe, _parse_observe, _Runner.run_observe),
    Verb("P smaps NAME", Smaps, _parse_smaps, _Runner.run_smaps),
    Verb("P mremap NAME OFF LEN NEW", Mremap, _parse_mremap, _Runner.run_mremap),
    Verb("P ref NAME OFF LEN", Ref, _parse_ref, _Runner.run_ref),
    Verb("P unref NAME OFF LEN", Unref, _parse_unref, _Runner.run_unref),
    Verb("P pin NAME OFF LEN", Pin, _parse_pin, _Runner.run_pin),
    Verb("P unpin NAME OFF LEN", Unpin, _parse_unpin, _Runner.run_unpin),
    Verb("P unshare NAME OFF LEN", Unshare, _parse_unshare, _Runner.run_unshare),
    Verb("P collapse NAME OFF LEN", Collapse, _parse_collapse, _Runner.run_collapse),
    Verb("P pageout NAME OFF LEN", Pageout, _parse_pageout, _Runner.run_pageout),
)
"""Every statement of the language, in the order of docs/scenario-format.md. A new verb is one
statement class, one parser, one runner method and one row here (see CONTRIBUTING.md)."""
_GLOBAL = {v.words: v for v in VERBS if not v.process}
_GLOBAL_HEADS = frozenset(words[0] for words in _GLOBAL)
_PROCESS = {v.words: v for v in VERBS if v.process}
_BY_KIND: dict[type[Any], Verb[Any]] = {v.kind: v for v in VERBS}


KERNEL_STATS = ("anon_fault_alloc", "anon_fault_fallback", "split")
VMSTAT_STATS = ("thp_fault_alloc", "thp_split_pmd")
DEFERRED_STATS = ("split_deferred", "nr_anon", "nr_anon_partially_mapped")
"""The per-size counters of the second edition (the deferred-split queue): ``nr_anon*`` are
current values (the kernel runner prints them relative to the start of the run)."""
DEFERRED_VMSTAT = (
    "thp_deferred_split_page",
    "thp_split_page",
    "thp_fault_fallback",
    "thp_collapse_alloc",
    "thp_collapse_alloc_failed",
)
"""The vmstat counters of the second edition (and of ``collapse``), printed only when
non-zero."""
EXTRA_STATS = ("pgreuse", "cow_copy")
SWAP_SIZE_STATS = ("swpout", "swpout_fallback", "swpin", "swpin_fallback")
"""The swap device's per-size counters (issue 16), each printed only when some size is
non-zero, so that the recordings made before the swap device keep their lines."""
SWAP_VMSTAT = ("pswpin", "pswpout", "thp_swpout", "thp_swpout_fallback")
"""The swap device's vmstat counters, printed when non-zero."""
PRINTS_SWPIN: dict[str, bool] = {"6.1": False, "6.12": False, "6.15": True}
"""Whether the profile's kernel has the ``swpin``/``swpin_fallback`` files (7.x; 6.12 counts
the events but has no such file, 6.1 has no per-size files at all). A printer fact, not a
model one (the model counts the same events under every profile)."""


def format_stats(
    stats: Mapping[str, object], *, per_size: bool = True, swpin: bool = True
) -> dict[str, object]:
    """The ``stats`` observation: per-size maps holding only the non-zero sizes, then the
    vmstat counters when non-zero, then the second edition's counters the same way, then
    the simulator's extras when non-zero. ``per_size=False`` (a profile whose kernel has no
    per-size counters, ``KernelConfig.per_size_thp_stats``: 6.1) leaves the maps out; then
    the swap maps that have a non-zero size (``swpin=False``: not the ``swpin`` ones, 6.12),
    then the swap vmstat counters when non-zero."""
    out: dict[str, object] = {}

    def sizes(key: str) -> None:
        if not per_size:
            return
        counts = stats[key]
        assert isinstance(counts, Mapping)
        out[key] = {size: n for size, n in counts.items() if n}

    def nonzero(key: str) -> None:
        value = stats.get(key, 0)
        if value:
            out[key] = value

    for key in KERNEL_STATS:
        sizes(key)
    for key in VMSTAT_STATS:
        nonzero(key)
    for key in DEFERRED_STATS:
        sizes(key)
    for key in SWAP_SIZE_STATS:
        counts = stats.get(key)
        if not per_size or not isinstance(counts, Mapping) or not any(counts.values()):
            continue
        if key.startswith("swpin") and not swpin:
            continue
        sizes(key)
    for key in (*DEFERRED_VMSTAT, *SWAP_VMSTAT, *EXTRA_STATS):
        nonzero(key)
    return out


def run_scenario(
    text: str,
    *,
    backend: str = DEFAULT_BACKEND,
    kernel: str | None = None,
    check: bool = False,
    name: str | None = None,
) -> list[Observation]:
    """Parse and run a scenario; return every observation, ending with the error
    observation if the scenario failed (the same lines ``cowcore run`` prints)."""
    try:
        scenario = Scenario.parse(text, name)
    except ScenarioSyntaxError as exc:
        return [{"error": str(exc)}]
    try:
        return scenario.run(backend=backend, kernel=kernel, check=check)
    except ScenarioError as exc:
        return exc.observations


def dumps(obs: Observation) -> str:
    """One observation as the format prints it: compact JSON, keys in order."""
    return json.dumps(obs, separators=(",", ":"))


SMAPS_NOT_COMPARED: frozenset[str] = frozenset()
"""The ``smaps`` keys :func:`compare_observations` skips: none. (``Referenced`` was skipped
until the folio's ``PG_referenced`` was modelled: set by a ``FOLL_TOUCH`` read such as the
probe's ``/proc/<pid>/mem`` read and, on 7.x, by every fault; cleared on 6.12 when a folio
leaves the per-CPU LRU-add batch; docs/accounting.md.)"""


def compare_observations(expected: list[Observation], actual: list[Observation]) -> list[str]:
    """Differences between two observation lists, as the format defines agreement.

    Page observations must be equal; ``stats`` are compared over the counters both sides
    print (a missing size counts as 0); ``smaps`` over every key but
    :data:`SMAPS_NOT_COMPARED`; error observations are compared by line number only.
    Returns an empty list when they agree.
    """
    diffs: list[str] = []
    if len(expected) != len(actual):
        diffs.append(f"{len(expected)} observations expected, {len(actual)} made")
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if "stats" in e and "stats" in a:
            es, as_ = e["stats"], a["stats"]
            assert isinstance(es, dict) and isinstance(as_, dict)
            for key in (set(es) & set(as_)) - {*VMSTAT_STATS, *DEFERRED_VMSTAT, *SWAP_VMSTAT}:
                ev, av = es[key], as_[key]
                if isinstance(ev, dict) and isinstance(av, dict):
                    for size in set(ev) | set(av):
                        if ev.get(size, 0) != av.get(size, 0):
                            diffs.append(
                                f"#{i} stats {key}[{size}]: {ev.get(size, 0)} != {av.get(size, 0)}"
                            )
                elif ev != av:
                    diffs.append(f"#{i} stats {key}: {ev} != {av}")
            # Printed only when non-zero, so absence means 0; the second edition's only
            # between two sides that print its per-size maps (a recording made before them
            # does not print these counters at all) or that print no per-size keys at all (a
            # kernel without per-size counters, 6.1, whose recordings all print them).
            vmstat: tuple[str, ...] = (*VMSTAT_STATS, *SWAP_VMSTAT)
            both_deferred = "split_deferred" in es and "split_deferred" in as_
            no_per_size = "anon_fault_alloc" not in es and "anon_fault_alloc" not in as_
            if both_deferred or no_per_size:
                vmstat += DEFERRED_VMSTAT
            for key in vmstat:
                if es.get(key, 0) != as_.get(key, 0):
                    diffs.append(f"#{i} stats {key}: {es.get(key, 0)} != {as_.get(key, 0)}")
        elif "smaps" in e and "smaps" in a:
            em, am = e["smaps"], a["smaps"]
            assert isinstance(em, dict) and isinstance(am, dict)
            for key in em.keys() - SMAPS_NOT_COMPARED:
                if em[key] != am.get(key):
                    diffs.append(f"#{i} smaps {key}: {em[key]} != {am.get(key)}")
        elif "error" in e and "error" in a:
            el = str(e["error"]).split(":", 1)[0]
            al = str(a["error"]).split(":", 1)[0]
            if el != al:
                diffs.append(f"#{i} error at {el} expected, got {a['error']}")
        elif e != a:
            diffs.append(f"#{i}: expected {dumps(e)}\n      got      {dumps(a)}")
    return diffs
