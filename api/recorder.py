"""Write request logs and usage off the request path, in batches.

    recorder.submit(log)        # from a request: a list append, no I/O
    await recorder.run()        # lifespan task: one store transaction per batch
    recorder.stop(); await recorder.drain()   # at shutdown: everything submitted reaches the store

A batch that the store refuses stays in the buffer and is retried; when the
buffer is full the oldest records go first and are counted (``dropped``), so a
store outage cannot exhaust the worker's memory. A clean shutdown waits for
the buffer to empty (up to ``drain``'s timeout).
"""

from __future__ import annotations

from .batching import BatchBuffer
from .store import RequestLog, Store


class Recorder(BatchBuffer[RequestLog]):
    what = "request logs"
    max_backoff = 10.0

    def __init__(self, store: Store, *, batch_size: int = 500, interval: float = 0.5, max_buffer: int = 100_000):
        super().__init__(batch_size=batch_size, interval=interval, max_buffer=max_buffer)
        self.store = store

    @property
    def written(self) -> int:
        return self.sent

    async def send(self, batch: list[RequestLog]) -> None:
        await self.store.record(batch)
