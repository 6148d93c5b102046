"""The real-kernel conformance runner: plays `.cow` scenarios on Linux in QEMU.

``cowcore kernel fetch`` downloads two Debian kernels (before and after the COW reuse of
PTE-mapped large folios) into the kernels directory; ``cowcore kernel run FILE... --kernel X.Y``
boots one (or any ``vmlinuz``) with a static probe as ``/init`` and prints the observations
that the kernel itself reports, in the format of ``docs/scenario-format.md``. The recordings
in ``tests/kernel/expected/`` come from here. This package imports nothing else from cowcore,
so it works while the simulator does not.
"""

from cowcore.kernel.compile import ScenarioSyntaxError, compile_scenario
from cowcore.kernel.fetch import FetchError, Kernel, fetch_kernels, load_kernels
from cowcore.kernel.runner import RunnerError, RunResult, run_files, run_scenario, run_texts

__all__ = [
    "FetchError",
    "Kernel",
    "RunResult",
    "RunnerError",
    "ScenarioSyntaxError",
    "compile_scenario",
    "fetch_kernels",
    "load_kernels",
    "run_files",
    "run_scenario",
    "run_texts",
]
