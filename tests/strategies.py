"""What the property tests, the hypothesis fuzz tests and the atheris harnesses in ``fuzz/``
generate, defined once: the names, sizes and values they draw from, and the generators of
operations and statements.

* **Vocabularies** come from the package (``cowcore.protocol``'s tuples of THP modes,
  protections and advices; the scenario language's verb table ``cowcore.scenario.VERBS``), so a
  new advice or a new verb is generated without an edit here. Where a test weights a value
  (``dontneed`` twice, say) the weighting is written here.
* **Token tables** of the scenario language: ``(valid, invalid)`` per argument of the verb
  table's syntax. ``scenario_statements()`` (hypothesis) and ``scenario_statement(pick)`` (any
  picker: atheris' ``FuzzedDataProvider``) build statements of every verb from them; a verb
  whose syntax names an argument without a table fails ``tests/test_strategies.py``.
* **API arguments**: raw addresses, lengths, protections, advices and values for the public
  ``Machine``/``Process`` calls (valid ones, near misses and wrong types), the ways an int or a
  batch of addresses can be passed (``as_int_type``, ``container``), and ``api_calls()``.
* **Operations** of the lockstep model and of the isolation programs (``program_ops()``).

The fuzzers in ``fuzz/`` import this module (they put the repository on ``sys.path``); what
they keep of their own is the harness: how input bytes pick from these tables, what is checked.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st

from cowcore import protocol
from cowcore.protocol import (
    ADVICES,
    KERNEL_PROFILES,
    PROTS,
    THP_MODES,
    THP_SIZE_MODES,
    THP_SIZES,
)
from cowcore.scenario import VERBS

PAGE = 4096
KiB = 1 << 10
MiB = 1 << 20

# -- vocabularies ------------------------------------------------------------------------------

KERNELS: list[str] = list(KERNEL_PROFILES)
"""Every profile, 6.1 included: the generators and harnesses that set THP sizes accept that a
size the profile lacks (6.1 has 2M only) is refused, the same way on every backend (the
lockstep model checks it, the API fuzzers compare the error)."""
SIZES: list[str] = list(THP_SIZES)
"""THP sizes by sysfs name, 16K .. 2M."""
WEIGHTED_SIZE_MODES: list[str] = ["always", *THP_SIZE_MODES]
"""Per-size THP modes, ``always`` twice: large folios are what COW is about."""
WEIGHTED_ADVICES: list[str] = ["dontneed", *ADVICES]
"""Advices, ``dontneed`` twice: it is the one that frees memory under a live mapping."""
POLICIES: list[str] = [spec.name for spec in protocol.POLICIES]
"""The ``machine.policy`` toggles, from the policy table."""
LEVELS: list[int] = [4, 4, 5]

# -- the scenario language ---------------------------------------------------------------------

VERB_WORDS: list[str] = list(dict.fromkeys(word for verb in VERBS for word in verb.words))
"""Every word that names a statement (``kernel``, ``thp``, ``enabled``, ..., ``mmap``, ...)."""

Tokens = tuple[list[str], list[str]]
"""(valid tokens, invalid ones) for one kind of argument."""

SCENARIO_PROCS = ["P", "P", "P", "C", "C", "D", "E"]
SCENARIO_MAPS = ["A", "A", "A", "B", "Z"]
OFFSETS: Tokens = (
    ["0", "4K", "8K", "60K", "64K", "1M", "2044K", "2M"],
    ["3000", "131072G", "-4K", "4k"],
)
LENGTHS: Tokens = (["4K", "8K", "16K", "64K", "128K", "1M", "2M", "2G"], ["0", "100", "x"])
OBSERVE_LENGTHS: Tokens = (LENGTHS[0][:-1], LENGTHS[1])
"""An ``observe`` line prints one observation per page: no 2G ranges."""
MMAP_LENGTHS: Tokens = (["4K", "64K", "1M", "2M", "4M", "1G", "2G"], ["0", "3000"])
VALUES: Tokens = (["0", "1", "7", "18446744073709551615"], ["18446744073709551616", "-1", "07"])
SCENARIO_TOKENS: dict[str, Tokens] = {
    "P": (SCENARIO_PROCS, []),
    "C": (SCENARIO_PROCS, []),
    "NAME": (SCENARIO_MAPS, []),
    "NEW": (SCENARIO_MAPS, []),
    "OFF": OFFSETS,
    "LEN": LENGTHS,
    "LEN@observe": OBSERVE_LENGTHS,
    "LEN@mmap": MMAP_LENGTHS,
    "[VALUE]": VALUES,
    "SIZE": ([*SIZES, "2048K"], ["8K", "4M"]),
    "PROFILE": (KERNELS, ["6.13"]),
    "ADVICE": (list(ADVICES), ["free"]),
    "always|madvise|never": (list(THP_MODES), ["inherit"]),
    "always|madvise|inherit|never": (WEIGHTED_SIZE_MODES, ["sometimes"]),
    "r|rw|none": (list(PROTS), ["x"]),
    "on|off": (["on", "off"], ["yes"]),
    "POLICY": (POLICIES, ["bogus"]),
}
"""Token tables by argument of the verb table's syntax; ``ARG@verb`` where one verb's argument
draws from a table of its own."""
STATEMENT_WEIGHTS = {"P write NAME OFF LEN [VALUE]": 3, "P observe NAME OFF LEN": 2, "P fork C": 2}
"""How many times a statement is listed among the forms (the others once)."""

Slot = tuple[str, str]
"""One slot of a statement form: ``("word", text)`` or ``("arg", key of SCENARIO_TOKENS)``."""


def statement_forms() -> list[tuple[str, list[Slot]]]:
    """Every statement of ``cowcore.scenario.VERBS`` as (syntax, slots), heavier ones repeated."""
    forms: list[tuple[str, list[Slot]]] = []
    for verb in VERBS:
        slots: list[Slot] = [("arg", "P")] if verb.process else []
        slots += [("word", word) for word in verb.words]
        for token in verb.syntax.split()[len(slots) :]:
            key = f"{token}@{verb.words[-1]}"
            key = key if key in SCENARIO_TOKENS else token
            if key not in SCENARIO_TOKENS:
                raise KeyError(
                    f"tests/strategies.py has no token table for {token} ({verb.syntax})"
                )
            slots.append(("arg", key))
        forms += [(verb.syntax, slots)] * STATEMENT_WEIGHTS.get(verb.syntax, 1)
    return forms


FORMS = statement_forms()


def scenario_statement(form: list[Slot], pick: Callable[[str], str | None]) -> str:
    """A statement of ``form``; ``pick(key)`` gives the token of an argument (``None`` leaves
    an optional one out)."""
    words: list[str] = []
    for kind, text in form:
        token = text if kind == "word" else pick(text)
        if token is not None:
            words.append(token)
    return " ".join(words)


@st.composite
def scenario_statements(draw: st.DrawFn) -> str:
    """One statement of any verb, mostly valid: an argument is invalid one time in 40, an
    optional one is left out half the time; now and then a comment line."""

    def pick(key: str) -> str | None:
        if key.startswith("[") and draw(st.booleans()):
            return None
        valid, invalid = SCENARIO_TOKENS[key]
        pool = invalid if invalid and draw(st.integers(0, 39)) == 0 else valid
        return draw(st.sampled_from(pool))

    index = draw(st.integers(0, len(FORMS)))
    if index == len(FORMS):
        return "# a comment"
    proc = draw(st.sampled_from(SCENARIO_PROCS))
    name = draw(st.sampled_from(SCENARIO_MAPS))
    # one process and one mapping per statement (a fork's child is drawn afresh)
    fixed = {"P": proc, "NAME": name}
    return scenario_statement(
        FORMS[index][1], lambda key: fixed[key] if key in fixed else pick(key)
    )


scenario_texts = st.lists(scenario_statements(), min_size=1, max_size=25).map(
    lambda lines: "P mmap A 2M\n" + "\n".join(lines) + "\n"
)
"""Whole scenarios: a 2M mapping ``A`` of ``P``, then up to 25 statements."""

# -- public API arguments ----------------------------------------------------------------------

RAW_ADDRESSES: list[Any] = [
    *[0, 1, PAGE - 1, PAGE, 1 << 47, (1 << 47) - PAGE, 1 << 56, 1 << 63],
    *[(1 << 64) - PAGE, (1 << 64) - 1, 1 << 64, -1, -PAGE],
    *[None, "4096", 4096.0, True, 1 << 100],
]
"""Addresses that are no page of a mapping: edges of the address space and of the int types,
negative numbers and wrong types."""
API_LENGTHS: list[Any] = [
    *[PAGE, 2 * PAGE, 16 * PAGE, 64 << 10, MiB, 2 * MiB, 4 * MiB],
    *[0, 1, PAGE + 1, 1 << 47, (1 << 64) - PAGE, 1 << 63, -PAGE],
    *[None, "4K", 4096.0, False],
]
API_MMAP_LENGTHS: list[Any] = [
    *[PAGE, 16 * PAGE, 64 << 10, 2 * MiB, 4 * MiB, 1 << 46, 1 << 47],
    *[0, 100, -PAGE, -1, 1 << 64, "2M", "x"],
]
API_PROTS: list[Any] = [*PROTS, "rwx", "x", "", None, 1]
API_ADVICES: list[Any] = [*ADVICES, "free", None]
API_VALUES: list[Any] = [0, 1, 7, (1 << 64) - 1, 1 << 64, -1, None, 2.5]
API_THP_SIZES: list[Any] = [*SIZES, "8K", None]
API_THP_MODES: list[Any] = [*THP_SIZE_MODES, "bad", None]
API_POLICY_NAMES: list[str] = [*POLICIES, "x"]
API_POLICY_VALUES: list[Any] = [True, False, 1, None, 0, "y"]
API_PID_MAX: list[Any] = [301, 302, 4 * 1024 * 1024, 300, 0, -1, (4 << 20) + 1, 1 << 64]
API_PID_MAX += [None, "301", True, np.uint64(400)]
"""``Machine.pid_max`` values: the sysctl's range ``[301, 4M]``, its edges, and near misses."""
OBSERVE_CHUNKS: list[Any] = [1, 3, 64, 1 << 16, 0, -1, (1 << 20) + 1, None]
PAGE_BYTES = [0, 0, 0, 1, 2048]
"""Byte offsets into a page for an address inside a mapping: mostly page-aligned."""
INT_TYPES = ["int", "int", "int", "uint64", "int64", "uint32", "bool_"]
"""How an int argument is passed: as is, or as a numpy scalar of that type (when the value
fits it; ``bool_`` when it is 0 or 1, which must be refused as ``bool`` is)."""
CONTAINERS = ["list", "list", "uint64", "int64", "array-Q", "array-q", "strided", "big-endian"]
CONTAINERS += ["uint32", "float64", "2d", "tuple", "generator", "scalars"]
"""How a batch call's addresses are passed (a container that cannot hold them is a list)."""
API_METHODS = [
    *["mmap", "munmap", "mprotect", "madvise", "write", "read", "fork", "exit"],
    *["translate", "observe", "observe_iter", "write_pages", "read_pages", "folio"],
    *["thp", "policy", "access", "access_batch", "mmap_fixed", "touch", "pid_max", "mremap"],
    *["ref", "unref", "pin", "unpin", "unshare", "drop_caches", "collapse", "pageout"],
]
"""Every call ``api_calls`` makes (``thp``: a per-size THP mode; ``policy``: a toggle;
``pid_max``: sets ``Machine.pid_max``; ``drop_caches``: ``Machine.drop_caches``)."""
API_METHOD_WEIGHTS = {"write": 3, "fork": 2, "access_batch": 2}
API_WRITE_FLAGS: list[Any] = [True, False, True, False, 1, 0, None, "yes", np.bool_(True)]
"""``access``'s ``write``: bools, and near misses that must be refused."""
WRITES_KINDS = ["all", "all", "list", "bool-array", "uint8-array", "int64-array"]
WRITES_KINDS += ["bad-value", "short", "long", "2d", "float-array", "none", "string"]
"""How ``access_batch``'s write flags are passed."""


def writes_flags(kind: str, n: int, bits: list[bool]) -> Any:
    """``access_batch``'s ``writes`` for ``n`` addresses in a container of ``kind`` (the
    bad kinds must be refused with ``InvalidArgumentError``, nothing done)."""
    flags = (bits * (n // max(len(bits), 1) + 1))[:n] if bits else [False] * n
    makers: dict[str, Callable[[], Any]] = {
        "all": lambda: bool(bits and bits[0]),
        "list": lambda: flags,
        "bool-array": lambda: np.array(flags, dtype=np.bool_),
        "uint8-array": lambda: np.array(flags, dtype=np.uint8),
        "int64-array": lambda: np.array(flags, dtype=np.int64),
        "bad-value": lambda: [2, *flags[1:]] if n else [2],
        "short": lambda: flags[:-1] if n else [True],
        "long": lambda: [*flags, True],
        "2d": lambda: np.array([flags], dtype=np.bool_),
        "float-array": lambda: np.array(flags, dtype=np.float64),
        "none": lambda: None,
        "string": lambda: "yes",
    }
    return makers[kind]()


def as_int_type(kind: str, value: Any) -> Any:
    """``value`` as a numpy scalar of ``kind`` when it is an int that fits; else as is."""
    if kind == "int" or type(value) is not int:
        return value
    if kind == "bool_":
        return np.bool_(value) if value in (0, 1) else value
    info = np.iinfo(kind)
    return getattr(np, kind)(value) if info.min <= value <= info.max else value


def container(kind: str, values: list[Any]) -> Any:
    """The addresses of a batch call in a container of ``kind`` (a list when they do not fit
    it: numpy would raise before the call). Make it afresh for each backend: a call may
    consume it (a generator)."""
    makers: dict[str, Callable[[], Any]] = {
        "uint64": lambda: np.array(values, dtype=np.uint64),
        "int64": lambda: np.array(values, dtype=np.int64),
        "array-Q": lambda: array.array("Q", values),
        "array-q": lambda: array.array("q", values),
        "strided": lambda: np.repeat(np.array(values, dtype=np.uint64), 2)[::2],
        "big-endian": lambda: np.array(values, dtype=">u8"),
        "uint32": lambda: np.array(values, dtype=np.uint32),
        "float64": lambda: np.array(values, dtype=np.float64),
        "2d": lambda: np.array([values], dtype=np.uint64),
        "tuple": lambda: tuple(values),
        "generator": lambda: (v for v in values),
        "scalars": lambda: [as_int_type("uint64", v) for v in values],
    }
    if kind not in makers:
        return values
    try:
        return makers[kind]()
    except (OverflowError, TypeError, ValueError):
        return values


def _weighted(values: list[str], weights: dict[str, int]) -> list[str]:
    return [v for v in values for _ in range(weights.get(v, 1))]


@st.composite
def api_calls(draw: st.DrawFn) -> tuple[Any, ...]:
    """(method, process choice, args) of one public-API call. An address is ``("map", which,
    page, byte)`` (an offset into one of the mappings made so far, resolved per backend),
    ``("raw", value)``, wrapped in ``("as", int type, ...)``; a batch is ``("batch", container,
    [addresses])``."""
    which = draw(st.integers(0, 1 << 16))
    addr: Any = (
        "map",
        draw(st.integers(0, 1 << 16)),
        draw(st.integers(-4, 600)),
        draw(st.sampled_from(PAGE_BYTES)),
    )
    if draw(st.integers(0, 5)) == 0:
        addr = ("raw", draw(st.sampled_from(RAW_ADDRESSES)))
    addr = ("as", draw(st.sampled_from(INT_TYPES)), addr)
    method = draw(st.sampled_from(_weighted(API_METHODS, API_METHOD_WEIGHTS)))
    lengths = st.sampled_from(API_LENGTHS)
    if method == "mmap":
        return method, which, (draw(st.sampled_from(API_MMAP_LENGTHS)),)
    if method in (
        *("munmap", "read", "observe", "touch", "ref", "unref", "pin", "unpin", "unshare"),
        *("collapse", "pageout"),
    ):
        return method, which, (addr, draw(lengths))
    if method == "mprotect":
        return method, which, (addr, draw(lengths), draw(st.sampled_from(API_PROTS)))
    if method == "madvise":
        return method, which, (addr, draw(lengths), draw(st.sampled_from(API_ADVICES)))
    if method == "write":
        stored = ("as", draw(st.sampled_from(INT_TYPES)), draw(st.sampled_from(API_VALUES)))
        return method, which, (addr, draw(lengths), stored)
    if method == "observe_iter":
        return method, which, (addr, draw(lengths), draw(st.sampled_from(OBSERVE_CHUNKS)))
    if method in ("write_pages", "read_pages"):
        # pages of the known mappings, with now and then a raw value among them
        pages: list[Any] = draw(
            st.lists(
                st.tuples(
                    st.integers(0, 1 << 16),
                    st.integers(-4, 600),
                    st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2048]),
                ).map(lambda t: ("map", *t)),
                max_size=12,
            )
        )
        if pages and draw(st.integers(0, 5)) == 0:
            pages[draw(st.integers(0, len(pages) - 1))] = (
                "raw",
                draw(st.sampled_from(RAW_ADDRESSES)),
            )
        value = draw(st.sampled_from([1, 7, (1 << 64) - 1]) | st.sampled_from(API_VALUES))
        batch = ("batch", draw(st.sampled_from(CONTAINERS)), pages)
        return method, which, (batch, ("as", draw(st.sampled_from(INT_TYPES)), value))
    if method == "access":
        stored = ("as", draw(st.sampled_from(INT_TYPES)), draw(st.sampled_from(API_VALUES)))
        return method, which, (addr, draw(st.sampled_from(API_WRITE_FLAGS)), stored)
    if method == "access_batch":
        byte_addrs: list[Any] = draw(
            st.lists(
                st.tuples(
                    st.integers(0, 1 << 16),
                    st.integers(-4, 600),
                    st.sampled_from([0, 0, 1, 8, 2048, 4095]),
                ).map(lambda t: ("map", *t)),
                max_size=12,
            )
        )
        if byte_addrs and draw(st.integers(0, 5)) == 0:
            byte_addrs[draw(st.integers(0, len(byte_addrs) - 1))] = (
                "raw",
                draw(st.sampled_from(RAW_ADDRESSES)),
            )
        writes = (
            "writes",
            draw(st.sampled_from(WRITES_KINDS)),
            draw(st.lists(st.booleans(), min_size=1, max_size=4)),
        )
        stored = ("as", draw(st.sampled_from(INT_TYPES)), draw(st.sampled_from(API_VALUES)))
        batch = ("batch", draw(st.sampled_from(CONTAINERS)), byte_addrs)
        return method, which, (batch, writes, stored)
    if method == "mmap_fixed":
        return method, which, (addr, draw(st.sampled_from(API_MMAP_LENGTHS)))
    if method == "mremap":
        # to a fresh address, or onto another place of the mappings (MREMAP_FIXED)
        to = ("map", draw(st.integers(0, 1 << 16)), draw(st.integers(-4, 600)), 0)
        return method, which, (addr, draw(lengths), draw(st.sampled_from([None, None, to])))
    if method == "translate":
        return method, which, (addr,)
    if method == "folio":
        return (
            method,
            which,
            (draw(st.one_of(st.integers(-2, 5000), st.sampled_from(RAW_ADDRESSES))),),
        )
    if method == "thp":
        return (
            method,
            which,
            (draw(st.sampled_from(API_THP_SIZES)), draw(st.sampled_from(API_THP_MODES))),
        )
    if method == "policy":
        name = draw(st.sampled_from(API_POLICY_NAMES))
        return method, which, (name, draw(st.sampled_from(API_POLICY_VALUES)))
    if method == "pid_max":
        return method, which, (draw(st.sampled_from(API_PID_MAX)),)
    return method, which, ()


# -- the lockstep model and the isolation programs --------------------------------------------

kernels = st.sampled_from(KERNELS)
NEW_POLICIES = [
    "cow_reuse_remember_exclusive",
    "cow_reuse_fault_around",
    "cow_reuse_fault_around_window",
    "mm_id_exact",
]
"""Issue 15's policies, off under every profile: the lockstep model draws which start on."""
new_policies = st.lists(st.sampled_from(NEW_POLICIES), unique=True)
levels = st.sampled_from(LEVELS)
large_sizes = st.lists(st.sampled_from(SIZES), max_size=3, unique=True)
"""THP sizes to turn on at the start (most runs use large folios)."""
mmap_pages = st.sampled_from([1, 3, 16, 128, 512, 700, 1024])
"""Lengths of the model's mappings in pages: odd ones, one PMD, and more than one."""
prots = st.sampled_from(list(PROTS))
advices = st.sampled_from(WEIGHTED_ADVICES)
thp_modes = st.sampled_from(list(THP_MODES))
size_modes = st.sampled_from(WEIGHTED_SIZE_MODES)
thp_sizes = st.sampled_from(SIZES)

PROGRAM_PAGES = 512
"""An isolation program works on one 2 MiB mapping: PMD THPs possible."""

Op = tuple[Any, ...]


@st.composite
def program_ranges(draw: st.DrawFn) -> tuple[int, int]:
    """A page range of the program's mapping, mostly small, sometimes the whole 2 MiB."""
    if draw(st.integers(0, 9)) == 0:
        return 0, PROGRAM_PAGES
    first = draw(st.integers(0, PROGRAM_PAGES - 1))
    count = draw(st.integers(1, min(PROGRAM_PAGES - first, 64)))
    return first, count


def program_ops() -> st.SearchStrategy[Op]:
    """One operation of an isolation program (``tests/programs.py``): writes (three times as
    likely), reads, forks (twice), exits, MADV_DONTNEED, mprotect, munmap, a ``touch`` (a
    read from outside, which must change nothing any process reads), an ``mremap`` round trip
    (out to a fresh address, optionally written there, and back), and issue 16's ``ref``,
    ``pin`` (held until a later ``drop`` of the process's newest hold, or exit),
    ``unshare``, ``drop_caches`` (folio splits) and ``collapse`` (MADV_COLLAPSE of the whole
    mapping), and ``pageout`` (MADV_PAGEOUT: pages go to swap and come back on the next
    access), none of which may change what any process reads."""
    who = st.integers(0, 1 << 16)  # taken modulo the live processes when applied
    return st.one_of(
        st.tuples(st.just("write"), who, program_ranges()),
        st.tuples(st.just("write"), who, program_ranges()),
        st.tuples(st.just("write"), who, program_ranges()),
        st.tuples(st.just("read"), who, program_ranges()),
        st.tuples(st.just("fork"), who, st.booleans()),
        st.tuples(st.just("fork"), who, st.booleans()),
        st.tuples(st.just("exit"), who),
        st.tuples(st.just("dontneed"), who, program_ranges()),
        st.tuples(st.just("mprotect"), who, program_ranges(), prots),
        st.tuples(st.just("munmap"), who, program_ranges()),
        st.tuples(st.just("touch"), who, program_ranges()),
        st.tuples(st.just("mremap"), who, program_ranges(), st.booleans()),
        st.tuples(st.just("ref"), who, program_ranges()),
        st.tuples(st.just("pin"), who, program_ranges()),
        st.tuples(st.just("drop"), who),
        st.tuples(st.just("unshare"), who, program_ranges()),
        st.tuples(st.just("drop_caches"), who),
        st.tuples(st.just("collapse"), who),
        st.tuples(st.just("pageout"), who, program_ranges()),
        st.tuples(st.just("pageout"), who, program_ranges()),
    )


@st.composite
def program_setups(draw: st.DrawFn) -> dict[str, Any]:
    """THP sizes to turn on (most programs use large folios: they are what COW is about)."""
    return {"sizes": draw(large_sizes), "zero_page": draw(st.booleans())}
