"""Recordings of the event stream: ``with machine.record() as rec:``.

While a recording is open the backend keeps every event it emits (docs/access-and-events.md:
the counted ones, and what changes memory: folio allocations and frees, pages zeroed and
copied, fork, zap, mprotect, TLB flushes); outside one it keeps only the counters, which
costs nothing. The events are readable as a numpy structured array (:attr:`Recording.events`,
:data:`cowcore.outcome.EVENT_DTYPE`, no Python object per event), as typed records
(:meth:`Recording.records`), and, where pyarrow is installed, as an Arrow table
(:meth:`Recording.to_arrow`, and the Arrow PyCapsule stream interface, so that polars or
DuckDB read a recording directly).
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from cowcore import outcome
from cowcore.errors import InvalidArgumentError
from cowcore.outcome import EventCode, EventRecord

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from cowcore.cost import CostModel, Estimate
    from cowcore.protocol import Backend


def _events(raw: bytes) -> npt.NDArray[np.void]:
    import numpy as np  # noqa: PLC0415 (numpy loads on first use: outcome._dtypes)

    return np.frombuffer(raw, dtype=outcome.EVENT_DTYPE)


class Recording:
    """The events emitted while it is open (a context manager from
    :meth:`cowcore.Machine.record`); readable during and after the ``with`` block."""

    def __init__(self, backend: Backend) -> None:
        self._b = backend
        self._chunks: list[bytes] = []
        self._open = False

    def __enter__(self) -> Recording:
        self._b.record(True)
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._drain()
        self._open = False
        self._b.record(False)

    def _drain(self) -> None:
        if self._open:
            raw = self._b.take_events()
            if raw:
                self._chunks.append(raw)

    @property
    def events(self) -> npt.NDArray[np.void]:
        """Every event so far, in emission order, as a structured array of
        :data:`~cowcore.outcome.EVENT_DTYPE` (fields: ``kind`` (an
        :class:`~cowcore.outcome.EventCode`), ``order``, ``cause``, ``asid``, ``asid2``,
        ``pfn``, ``pfn2``, ``start``, ``end``, ``nr``, ``pmds``)."""
        self._drain()
        if len(self._chunks) > 1:
            self._chunks = [b"".join(self._chunks)]
        return _events(self._chunks[0] if self._chunks else b"")

    def drain(self) -> npt.NDArray[np.void]:
        """The events since the last :meth:`drain` (or the start), which the recording then
        forgets: for consumers that stream events into their own model step by step (a
        TLB model draining after each batch) without the recording growing."""
        self._drain()
        raw = b"".join(self._chunks)
        self._chunks = []
        return _events(raw)

    def __len__(self) -> int:
        return len(self.events)

    def records(self) -> list[EventRecord]:
        """The events as typed records (one Python object each: for reading, not for
        millions of events)."""
        return [EventRecord.from_raw(tuple(int(x) for x in row)) for row in self.events.tolist()]

    def counts(self) -> dict[EventCode, int]:
        """How many events of each kind."""
        import numpy as np  # noqa: PLC0415 (numpy loads on first use: outcome._dtypes)

        kinds, n = np.unique(self.events["kind"], return_counts=True)
        return {EventCode(int(k)): int(c) for k, c in zip(kinds, n, strict=True)}

    def estimate(self, model: CostModel | None = None) -> Estimate:
        """The estimated time of the recorded work under a cost model (the calibrated one
        of this host by default, see :func:`cowcore.cost.load`): an estimate, see
        docs/cost-model.md."""
        from cowcore.cost import estimate_recording  # noqa: PLC0415 (cost loads numpy)

        return estimate_recording(self.events, model)

    def to_arrow(self) -> Any:
        """The events as a ``pyarrow.Table`` (one column per field but the padding;
        ``kind`` as its name, dictionary-encoded).

        Raises:
            InvalidArgumentError: pyarrow is not installed (``pip install pyarrow``).
        """
        try:
            import pyarrow as pa  # noqa: PLC0415 (optional: only this method needs it)
        except ImportError:
            raise InvalidArgumentError(
                "Recording.to_arrow needs pyarrow: pip install pyarrow"
            ) from None
        import numpy as np  # noqa: PLC0415 (numpy loads on first use: outcome._dtypes)

        ev = self.events
        names = [EventCode(k).name.lower() for k in range(1, max(EventCode) + 1)]
        columns: dict[str, Any] = {
            "kind": pa.DictionaryArray.from_arrays(
                pa.array(ev["kind"].astype(np.int32) - 1), pa.array(names)
            )
        }
        for field in outcome.EVENT_DTYPE.names or ():
            if field not in ("kind", "reserved", "reserved2"):
                columns[field] = pa.array(ev[field])
        return pa.table(columns)

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """The Arrow PyCapsule stream interface (through pyarrow)."""
        return self.to_arrow().__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Recording {state}, {len(self)} events>"
