"""Sizes written the way the scenario format and the kernel's sysfs names write them."""

from __future__ import annotations

import re

from cowcore.errors import InvalidArgumentError

_SIZE = re.compile(r"^([0-9]+)([KMG]?)$")
_MEMORY = re.compile(r"^([0-9]+)([KMGT]?)$")
_MULT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """``"4K"`` -> 4096, ``"2M"`` -> 2097152, ``"123"`` -> 123 (binary suffixes only).

    Raises:
        InvalidArgumentError: not a decimal number with an optional K, M or G suffix.
    """
    m = _SIZE.match(text)
    if m is None:
        raise InvalidArgumentError(f"bad size {text!r}: a decimal number with optional K, M or G")
    return decimal(m.group(1), "size") * _MULT[m.group(2)]


def parse_memory(text: str) -> int:
    """A machine's memory size: :func:`parse_size`'s spelling plus ``T`` (``"1T"`` -> 2^40).
    The scenario format's sizes stop at ``G`` (its kernel compiler keeps its own parser);
    ``T`` is for ``Machine(memory=...)`` only.

    Raises:
        InvalidArgumentError: not a decimal number with an optional K, M, G or T suffix.
    """
    m = _MEMORY.match(text)
    if m is None:
        raise InvalidArgumentError(
            f"bad size {text!r}: a decimal number with optional K, M, G or T"
        )
    return decimal(m.group(1), "size") * _MULT[m.group(2)]


MAX_DIGITS = 20
"""No quantity of the model needs more digits (2^64 has 20); longer numbers are refused
before conversion, since ``int()`` refuses more than 4300 digits with a ``ValueError``."""


def decimal(digits: str, what: str) -> int:
    """A string of ASCII digits as an int, refusing more than :data:`MAX_DIGITS` significant
    digits with an :class:`InvalidArgumentError` (leading zeros do not count).

    Raises:
        InvalidArgumentError: the number has more than :data:`MAX_DIGITS` digits.
    """
    significant = digits.lstrip("0") or "0"
    if len(significant) > MAX_DIGITS:
        raise InvalidArgumentError(
            f"bad {what} {digits[:12]}...: more than {MAX_DIGITS} digits (at most 2^64-1)"
        )
    return int(significant)


def format_size(nbytes: int) -> str:
    """The shortest exact spelling: 65536 -> ``"64K"``, 2097152 -> ``"2M"``."""
    for suffix in ("G", "M", "K"):
        if nbytes and nbytes % _MULT[suffix] == 0:
            return f"{nbytes // _MULT[suffix]}{suffix}"
    return str(nbytes)
