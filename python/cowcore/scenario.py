"""The ``.cow`` scenario language (docs/scenario-format.md): parse, run, compare.

A scenario is parsed completely before it runs, so syntax errors (unknown verb, bad token,
misaligned or zero length) stop it before anything happens. Run-time errors stop it after
the observations already made; the failing statement changes nothing. Either way the last
observation is ``{"error": "line N: ..."}``.

Frames are named by first appearance (``f0``, ``f1``, ...); a frame is identified by its PFN
*and* the allocation serial of its folio, so a frame that is freed and handed out again gets
a new name, as the format requires. The zero pages are ``zero`` and ``hzero``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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
    PROTS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
    PageObservation,
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


@dataclass(frozen=True, slots=True)
class Statement:
    """One parsed statement: ``proc`` is ``None`` for global statements."""

    line: int
    proc: str | None
    verb: str
    args: tuple[str | int, ...]


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
            if stmt.verb == "kernel":
                if kernel is not None:
                    raise ScenarioSyntaxError(lineno, "a second 'kernel' statement")
                kernel = str(stmt.args[0])
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


def _parse_statement(lineno: int, tokens: list[str]) -> Statement:
    head = tokens[0]
    if head == "kernel":
        _arity(lineno, tokens, 2)
        if tokens[1] not in KERNEL_PROFILES:
            raise ScenarioSyntaxError(lineno, f"unknown kernel profile {tokens[1]!r}")
        return Statement(lineno, None, "kernel", (tokens[1],))
    if head == "stats":
        _arity(lineno, tokens, 1)
        return Statement(lineno, None, "stats", ())
    if head == "thp":
        return _parse_thp(lineno, tokens)
    proc = _ident(lineno, head, "process")
    if len(tokens) < 2:
        raise ScenarioSyntaxError(lineno, f"'{head}' needs a verb")
    verb, rest = tokens[1], tokens[2:]
    args: tuple[str | int, ...]
    if verb == "mmap":
        _arity(lineno, tokens, 4)
        args = (
            _ident(lineno, rest[0], "mapping"),
            _size(lineno, rest[1], "length", page_aligned=True, nonzero=True),
        )
    elif verb in ("munmap", "observe", "read"):
        _arity(lineno, tokens, 5)
        args = _range(lineno, rest)
    elif verb == "write":
        _arity(lineno, tokens, 5, 6)
        value = 1
        if len(rest) == 4:
            if not VALUE.match(rest[3]) or len(rest[3].lstrip("0")) > MAX_DIGITS:
                raise ScenarioSyntaxError(lineno, f"bad value {rest[3][:24]!r}: 0 .. 2^64-1")
            value = int(rest[3])
            if value >= 1 << 64:
                raise ScenarioSyntaxError(lineno, f"bad value {rest[3]!r}: 0 .. 2^64-1")
        args = (*_range(lineno, rest), value)
    elif verb == "mprotect":
        _arity(lineno, tokens, 6)
        if rest[3] not in PROTS:
            raise ScenarioSyntaxError(lineno, f"bad protection {rest[3]!r}")
        args = (*_range(lineno, rest), rest[3])
    elif verb == "madvise":
        _arity(lineno, tokens, 6)
        if rest[3] not in ADVICES:
            raise ScenarioSyntaxError(lineno, f"unknown advice {rest[3]!r}")
        args = (*_range(lineno, rest), rest[3])
    elif verb == "fork":
        _arity(lineno, tokens, 3)
        args = (_ident(lineno, rest[0], "process"),)
    elif verb == "exit":
        _arity(lineno, tokens, 2)
        args = ()
    else:
        raise ScenarioSyntaxError(lineno, f"unknown verb {verb!r}")
    return Statement(lineno, proc, verb, args)


def _parse_thp(lineno: int, tokens: list[str]) -> Statement:
    if len(tokens) >= 2 and tokens[1] == "enabled":
        _arity(lineno, tokens, 3)
        if tokens[2] not in THP_MODES:
            raise ScenarioSyntaxError(lineno, f"bad THP mode {tokens[2]!r}")
        return Statement(lineno, None, "thp_enabled", (tokens[2],))
    if len(tokens) >= 2 and tokens[1] == "size":
        _arity(lineno, tokens, 4)
        # Any spelling of an allowed size works (2M or 2048K), as in the kernel runner.
        by_bytes = {parse_size(name): name for name in THP_SIZES}
        try:
            size = by_bytes.get(parse_size(tokens[2]))
        except InvalidArgumentError:
            size = None
        if size is None:
            raise ScenarioSyntaxError(lineno, f"bad THP size {tokens[2]!r}")
        if tokens[3] not in THP_SIZE_MODES:
            raise ScenarioSyntaxError(lineno, f"bad THP size mode {tokens[3]!r}")
        return Statement(lineno, None, "thp_size", (size, tokens[3]))
    if len(tokens) >= 2 and tokens[1] == "zero_page":
        _arity(lineno, tokens, 3)
        if tokens[2] not in ("on", "off"):
            raise ScenarioSyntaxError(lineno, f"bad zero_page setting {tokens[2]!r}")
        return Statement(lineno, None, "thp_zero_page", (tokens[2],))
    raise ScenarioSyntaxError(lineno, f"bad thp statement {' '.join(tokens)!r}")


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
        m = self.machine
        assert m is not None
        if st.proc is None:
            if st.verb == "thp_enabled":
                m.thp.enabled = str(st.args[0])  # type: ignore[assignment]
            elif st.verb == "thp_size":
                m.thp.sizes[str(st.args[0])] = str(st.args[1])
            elif st.verb == "thp_zero_page":
                m.thp.use_zero_page = st.args[0] == "on"
            elif st.verb == "stats":
                self.emit({"stats": format_stats(m.stats())})
            return
        p = self.proc(st.proc)
        a = st.args
        if st.verb == "mmap":
            name, length = str(a[0]), int(a[1])
            if name in self.maps[st.proc]:
                raise _RunError(f"process {st.proc} already has a mapping {name}")
            if length > MAX_MAPPING:
                raise _RunError(f"mapping {name} of {length} bytes is over 1G")
            self.maps[st.proc][name] = (p.mmap(length), length)
        elif st.verb == "fork":
            child = str(a[0])
            if child in self.used_names:
                raise _RunError(f"process name {child} was already used")
            self.procs[child] = p.fork()
            self.used_names.add(child)
            self.maps[child] = dict(self.maps[st.proc])
        elif st.verb == "exit":
            p.exit()
        else:
            name, off, length = str(a[0]), int(a[1]), int(a[2])
            self.ranged(st, p, name, off, length)

    def ranged(self, st: Statement, p: Process, name: str, off: int, length: int) -> None:
        """A statement on ``NAME OFF LEN``. An ``observe`` must lie inside the mapping as
        created, so that one line can never ask for more observations than the mapping has
        pages; pages past the mapping's end are otherwise treated as the kernel runner treats
        them: unmapped (skipped by munmap, an error for every other verb)."""
        assert st.proc is not None
        start, size = self.mapping(st.proc, name)
        inside = max(0, min(length, size - off))
        if st.verb == "observe":
            if inside < length:
                raise _RunError(
                    f"observe {name}: the range ends at offset {off + length}, past the end of "
                    f"the mapping as created ({size} bytes)"
                )
            for i, o in enumerate(p.observe(start + off, length)):
                self.emit(self.page_observation(st.proc, name, off + i * PAGE, o))
            return
        if st.verb == "munmap":
            if inside:
                p.munmap(start + off, inside)
            return
        if inside < length:
            raise _RunError(f"{st.verb} {name}: page at offset {off + inside} is not mapped")
        addr = start + off
        if st.verb in ("write", "read"):
            try:
                if st.verb == "write":
                    p.write(addr, length, int(st.args[3]))
                else:
                    p.read(addr, length)
            except SegmentationFault as exc:
                raise _RunError(
                    f"SIGSEGV at offset {exc.addr - start} of {name} ({exc.reason})"
                ) from None
        else:
            try:
                if st.verb == "mprotect":
                    p.mprotect(addr, length, str(st.args[3]))  # type: ignore[arg-type]
                elif st.verb == "madvise":
                    p.madvise(addr, length, str(st.args[3]))  # type: ignore[arg-type]
            except InvalidAddressError:
                raise _RunError(
                    f"{st.verb} {name}: range includes unmapped pages (ENOMEM)"
                ) from None

    def page_observation(self, proc: str, name: str, off: int, o: object) -> Observation:
        assert isinstance(o, PageObservation)
        if not o.present:
            return _absent_page(proc, name, off)
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


KERNEL_STATS = ("anon_fault_alloc", "anon_fault_fallback", "split")
VMSTAT_STATS = ("thp_fault_alloc", "thp_split_pmd")
EXTRA_STATS = ("pgreuse", "cow_copy")


def format_stats(stats: Mapping[str, object]) -> dict[str, object]:
    """The ``stats`` observation: per-size maps holding only the non-zero sizes, then the
    vmstat counters and the simulator's extras when non-zero."""
    out: dict[str, object] = {}
    for key in KERNEL_STATS:
        sizes = stats[key]
        assert isinstance(sizes, dict)
        out[key] = {size: n for size, n in sizes.items() if n}
    for key in (*VMSTAT_STATS, *EXTRA_STATS):
        value = stats.get(key, 0)
        if value:
            out[key] = value
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


def compare_observations(expected: list[Observation], actual: list[Observation]) -> list[str]:
    """Differences between two observation lists, as the format defines agreement.

    Page observations must be equal; ``stats`` are compared over the counters both sides
    print (a missing size counts as 0); error observations are compared by line number only.
    Returns an empty list when they agree.
    """
    diffs: list[str] = []
    if len(expected) != len(actual):
        diffs.append(f"{len(expected)} observations expected, {len(actual)} made")
    for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
        if "stats" in e and "stats" in a:
            es, as_ = e["stats"], a["stats"]
            assert isinstance(es, dict) and isinstance(as_, dict)
            for key in (set(es) & set(as_)) - set(VMSTAT_STATS):
                ev, av = es[key], as_[key]
                if isinstance(ev, dict) and isinstance(av, dict):
                    for size in set(ev) | set(av):
                        if ev.get(size, 0) != av.get(size, 0):
                            diffs.append(
                                f"#{i} stats {key}[{size}]: {ev.get(size, 0)} != {av.get(size, 0)}"
                            )
                elif ev != av:
                    diffs.append(f"#{i} stats {key}: {ev} != {av}")
            for key in VMSTAT_STATS:  # printed only when non-zero, so absence means 0
                if es.get(key, 0) != as_.get(key, 0):
                    diffs.append(f"#{i} stats {key}: {es.get(key, 0)} != {as_.get(key, 0)}")
        elif "error" in e and "error" in a:
            el = str(e["error"]).split(":", 1)[0]
            al = str(a["error"]).split(":", 1)[0]
            if el != al:
                diffs.append(f"#{i} error at {el} expected, got {a['error']}")
        elif e != a:
            diffs.append(f"#{i}: expected {dumps(e)}\n      got      {dumps(a)}")
    return diffs
