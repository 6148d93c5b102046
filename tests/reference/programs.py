"""Random programs over one reference backend, for the reference's own property tests.

A program is a list of ``(op, page, count)`` steps on one 4 MiB mapping of the first
process; each step acts on the process ``page % len(pids)``. Steps the kernel would refuse
(segfaults, OOM, unmapped ranges) change nothing and are skipped; an ``InvariantError`` is a
bug and propagates.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from cowcore.errors import CowError, InvariantError
from cowcore.reference.backend import ReferenceBackend

PAGE = 4096
MAPPING_PAGES = 1024
OPS = ["write", "read", "fork", "dontneed", "munmap", "mprotect", "thp"]

Step = tuple[str, int, int]


def programs(max_count: int, max_size: int) -> st.SearchStrategy[list[Step]]:
    """Lists of steps, each touching at most ``max_count`` pages."""
    return st.lists(
        st.tuples(
            st.sampled_from(OPS), st.integers(0, MAPPING_PAGES - 1), st.integers(1, max_count)
        ),
        max_size=max_size,
    )


def run_program(
    ref: ReferenceBackend,
    steps: list[Step],
    thp_size: str,
    after_step: Callable[[list[int]], None],
) -> None:
    """Run ``steps`` on ``ref`` (``thp`` steps toggle ``enabled`` and ``thp_size``), calling
    ``after_step(pids)`` after each one."""
    pid = ref.init_pid()
    base = ref.mmap(pid, MAPPING_PAGES * PAGE)
    pids = [pid]
    for op, page, drawn in steps:
        count = min(drawn, MAPPING_PAGES - page)
        addr, length = base + page * PAGE, count * PAGE
        p = pids[page % len(pids)]
        try:
            if op == "write":
                ref.write(p, addr, length, page + 1)
            elif op == "read":
                ref.read(p, addr, length)
            elif op == "fork":
                pids.append(ref.fork(p))
            elif op == "dontneed":
                ref.madvise(p, addr, length, "dontneed")
            elif op == "munmap":
                ref.munmap(p, addr, length)
            elif op == "mprotect":
                ref.mprotect(p, addr, length, "r" if count % 2 else "rw")
            else:
                ref.set_thp_enabled("always" if count % 2 else "never")
                ref.set_thp_size(thp_size, "always" if count % 3 else "never")
        except InvariantError:
            raise
        except CowError:  # segfaults, OOM, unmapped ranges: refused, state unchanged
            pass
        after_step(pids)
